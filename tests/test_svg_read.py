"""read_svg: what each SVG feature becomes (kinds, pixels, colours), warnings, hostile files, the round trip.

Parsing cases are marked ``once``: what read_svg returns does not depend on the
Keras backend. The round trip renders (every backend, tiny images).
"""

import re
import warnings

import numpy as np
import pytest

from helpers import to_numpy
from shapegrad import Render, SVGError, SVGWarning, read_svg
from shapegrad.io import files, svg_safe
from shapegrad.io.svg_read import svg_layers
from shapegrad.render.primitives import path_layout


def svg(body, size='width="16" height="16"', extra=""):
    return f'<svg xmlns="http://www.w3.org/2000/svg" xmlns:xlink="http://www.w3.org/1999/xlink" {size} {extra}>{body}</svg>'


def layers_of(body, quiet=True, **kwargs):
    with warnings.catch_warnings():
        if quiet:
            warnings.simplefilter("error", SVGWarning)  # a parsing case must not warn unless it says so
        return svg_layers(svg(body, **kwargs.pop("doc", {})), **kwargs)[0]


def one(body, **kwargs):
    layers = layers_of(body, **kwargs)
    assert len(layers) == 1, layers
    return layers[0]


def outline(layer):
    """Every node of a path layer (start, controls) as (row, col) pixels, subpath after subpath."""
    return np.concatenate(layer.geometry["subpaths"])


# ----------------------------------------------------------------------------- path commands


SQUARE = [[0.5, 0.5], [0.5, 4.5], [4.5, 4.5], [4.5, 0.5]]  # the corners of x, y in [1, 5], as (row, col)


@pytest.mark.once
@pytest.mark.parametrize("d", ["M1 1 L5 1 L5 5 L1 5 Z", "m1 1 l4 0 l0 4 l-4 0 z", "M1 1 H5 V5 H1 Z", "m1 1 h4 v4 h-4 z",
                               "M1,1 5,1 5,5 1,5z", "M1 1 5 1 5 5 1 5"])
def test_straight_commands_absolute_relative_implicit_and_unclosed_fill_the_same_square(d):
    layer = one(f'<path d="{d}"/>')
    assert layer.family == "fill" and layer.kind() == "path4"
    nodes = layer.geometry["subpaths"][0]
    np.testing.assert_allclose(nodes[::3], SQUARE, atol=1e-12)
    np.testing.assert_allclose(nodes[1], [0.5, 0.5 + 4 / 3], atol=1e-12)  # straight: controls at 1/3, 2/3


CURVES = {
    "C": ("M1 1 C1 5 5 5 5 1", "m1 1 c0 4 4 4 4 0"),
    "S": ("M1 1 C1 3 3 3 3 1 S5 -1 5 1", "m1 1 c0 2 2 2 2 0 s2 -2 2 0"),
    "Q": ("M1 1 Q3 5 5 1", "m1 1 q2 4 4 0"),
    "T": ("M1 1 Q2 3 3 1 T5 1", "m1 1 q1 2 2 0 t2 0"),
    "A": ("M1 3 A2 2 0 0 0 5 3", "m1 3 a2 2 0 0 0 4 0"),
}


@pytest.mark.once
@pytest.mark.parametrize("command", sorted(CURVES))
def test_curve_commands_relative_equal_absolute(command):
    absolute, relative = (outline(one(f'<path d="{d}"/>')) for d in CURVES[command])
    np.testing.assert_allclose(absolute, relative, atol=1e-9)


@pytest.mark.once
def test_quadratic_is_degree_elevated_and_smooth_commands_reflect_the_control():
    q = one('<path d="M1 1 Q3 5 5 1 Z"/>').geometry["subpaths"][0]
    np.testing.assert_allclose(q[:3], [[0.5, 0.5], [0.5 + 8 / 3, 0.5 + 4 / 3], [0.5 + 8 / 3, 4.5 - 4 / 3]], atol=1e-9)
    s = one('<path d="M1 1 C1 3 3 3 3 1 S5 -1 5 1"/>').geometry["subpaths"][0]
    np.testing.assert_allclose(s[4], [-1.5, 2.5], atol=1e-9)  # (3, 3) reflected about (3, 1) is (3, -1)


@pytest.mark.once
def test_arcs_become_cubics_on_the_circle():
    layer = one('<path d="M4 8 A4 4 0 0 1 12 8 A4 4 0 0 1 4 8 Z"/>')
    nodes = layer.geometry["subpaths"][0]
    on_curve = nodes[::3]  # segment ends
    np.testing.assert_allclose(np.hypot(*(on_curve - 7.5).T), 4.0, atol=1e-9)
    # the midpoints of the cubics are on the circle too, within the approximation
    p = np.concatenate([nodes, nodes[:1]])
    for j in range(len(nodes) // 3):
        p0, a, b, p3 = p[3 * j], p[3 * j + 1], p[3 * j + 2], p[3 * j + 3]
        mid = (p0 + 3 * a + 3 * b + p3) / 8
        assert abs(np.hypot(*(mid - 7.5)) - 4.0) < 1.1e-3  # 2.7e-4 radii for a quarter turn


@pytest.mark.once
def test_several_subpaths_and_fill_rules():
    layer = one('<path d="M1 1 h8 v8 h-8 z M3 3 h2 v2 z"/>')
    assert layer.kind() == "path4x2" and len(layer.geometry["subpaths"][1]) == 9  # 3 segments
    eo = one('<path fill-rule="evenodd" d="M1 1 h8 v8 h-8 z M3 3 h2 v2 h-2 z"/>')
    assert eo.family == "filleo" and eo.kind() == "path4x2eo"
    assert one('<g style="fill-rule: evenodd"><path d="M1 1 h8 v8 z"/></g>').kind() == "path3eo"


# ----------------------------------------------------------------------------- elements and transforms


@pytest.mark.once
def test_simple_elements_map_to_exact_kinds():
    disk = one('<circle cx="8" cy="6" r="3"/>')
    assert disk.kind() == "disk" and np.allclose(disk.geometry["center"], [5.5, 7.5]) and disk.geometry["radius"] == [3]
    ellipse = one('<ellipse cx="8" cy="8" rx="4" ry="2"/>')
    assert ellipse.kind() == "ellipse" and np.allclose(ellipse.geometry["radii"], [4, 2])
    assert np.allclose(np.abs(ellipse.geometry["direction"]), [0, 1])  # the long axis along the columns
    box = one('<rect x="2" y="4" width="8" height="4"/>')
    assert box.kind() == "box" and np.allclose(box.geometry["center"], [5.5, 5.5])
    assert np.allclose(box.geometry["half_size"], [4, 2]) and box.geometry["corner"] == [0.0]
    rounded = one('<rect x="2" y="4" width="8" height="4" rx="1"/>')
    assert rounded.kind() == "box" and rounded.geometry["corner"] == [0.5]  # 1 px of a 2 px half-extent
    assert one('<rect x="2" y="4" width="8" height="4" rx="1" ry="2"/>').kind() == "path8"  # elliptic corners: 4 lines, 4 quarter arcs
    assert one('<polygon points="1,1 9,1 5,7"/>').kind() == "polygon3"
    assert one('<polygon points="1,1 9,9 9,1 1,9"/>').kind() == "path4"  # a bow tie is not simple
    assert one('<polyline points="1,1 9,1 5,7"/>').kind() == "path3"  # a polyline is filled, closed
    line = one('<line x1="1" y1="2" x2="9" y2="2" stroke="red" stroke-width="2" stroke-linecap="round"/>')
    assert line.kind() == "segment" and np.allclose(line.geometry["b"], [1.5, 8.5]) and line.geometry["half_width"] == [1]


@pytest.mark.once
def test_transforms_nested_and_each_kind():
    moved = one('<g transform="translate(2 1)"><g transform="matrix(1 0 0 1 1 1)"><circle cx="4" cy="4" r="2"/></g></g>')
    assert np.allclose(moved.geometry["center"], [5.5, 6.5])
    scaled = one('<circle cx="2" cy="4" r="2" transform="scale(2 1)"/>')
    assert scaled.kind() == "ellipse" and np.allclose(sorted(scaled.geometry["radii"]), [2, 4])
    assert one('<circle cx="4" cy="4" r="2" transform="scale(2)"/>').geometry["radius"] == pytest.approx([4])
    turned = one('<rect x="-2" y="-1" width="4" height="2" transform="translate(8 8) rotate(30)"/>')
    assert turned.kind() == "box" and np.allclose(turned.geometry["center"], [7.5, 7.5])
    angle = np.degrees(np.arctan2(*turned.geometry["direction"]))  # (row, col): 30 degrees below the x axis
    assert np.isclose(angle % 180, 30.0)
    assert one('<rect width="4" height="2" transform="skewX(20)"/>').kind() == "polygon4"
    assert one('<rect width="4" height="2" transform="skewY(20)"/>').kind() == "polygon4"
    assert one('<circle cx="4" cy="4" r="2" transform="skewX(30)"/>').kind() == "ellipse"
    path = one('<path d="M0 0 h2 v2 z" transform="rotate(90) scale(2)"/>')
    np.testing.assert_allclose(path.geometry["subpaths"][0][::3], [[-0.5, -0.5], [3.5, -0.5], [3.5, -4.5]], atol=1e-9)


@pytest.mark.once
def test_viewbox_width_height_and_aspect():
    layer = one('<circle cx="4" cy="4" r="2"/>', doc={"size": 'width="32" height="32" viewBox="0 0 8 8"'})
    assert np.allclose(layer.geometry["center"], [15.5, 15.5]) and layer.geometry["radius"] == pytest.approx([8])
    # meet: the 8x8 viewBox in a 32x16 viewport is 16x16, centred
    _, size = svg_layers(svg("", size='width="32" height="16" viewBox="0 0 8 8"'))
    assert size == (16, 32)
    wide = one('<circle cx="4" cy="4" r="2"/>', doc={"size": 'width="32" height="16" viewBox="0 0 8 8"'})
    assert np.allclose(wide.geometry["center"], [7.5, 15.5])
    assert svg_layers(svg("", size='width="1000" height="500"'))[1] == (256, 512)  # default: at most 512
    assert svg_layers(svg("", size='viewBox="0 0 30 20"'), size=60)[1] == (40, 60)
    assert svg_layers(svg("", size='viewBox="0 0 30 20"'), size=(50, 50))[1] == (50, 50)


@pytest.mark.once
@pytest.mark.parametrize("size", [-3, 0, 2.5, "64", (0, 4), (4,), True])
def test_bad_size_is_a_keras_style_error(size):
    with pytest.raises(ValueError, match=r"Expected size to be .* Received: size=" + re.escape(repr(size))):
        read_svg(svg(""), size=size)


# ----------------------------------------------------------------------------- paint


@pytest.mark.once
@pytest.mark.parametrize("fill,rgb", [("red", (1, 0, 0)), ("#0f0", (0, 1, 0)), ("#0000ff", (0, 0, 1)),
                                      ("rgb(255, 128, 0)", (1, 128 / 255, 0)), ("currentColor", (0, 0, 0)),
                                      ("orange", (1, 165 / 255, 0))])
def test_fill_colours(fill, rgb):
    layer = one(f'<circle cx="8" cy="8" r="3" fill="{fill}"/>')
    assert np.allclose(layer.color, rgb) and layer.opacity == 1.0


@pytest.mark.once
def test_style_inheritance_opacity_and_none():
    assert layers_of('<circle cx="8" cy="8" r="3" fill="none"/>') == []
    assert one('<circle cx="8" cy="8" r="3"/>').color == (0, 0, 0)  # SVG's default fill is black
    inherited = one('<g fill="red"><g style="fill: #00f"><circle cx="8" cy="8" r="3"/></g></g>')
    assert inherited.color == (0, 0, 1)
    assert one('<circle cx="8" cy="8" r="3" fill="red" style="fill: lime"/>').color == (0, 1, 0)  # style wins
    faint = one('<circle cx="8" cy="8" r="3" fill-opacity="0.5" opacity="0.5"/>')
    assert faint.opacity == pytest.approx(0.25)
    assert one('<g color="blue"><circle cx="8" cy="8" r="3" fill="currentColor"/></g>').color == (0, 0, 1)
    with pytest.warns(SVGWarning, match="group opacity"):  # multiplied down: 0.5 x 0.5 (svgelements: the child's)
        nested = layers_of('<g opacity="0.5"><circle cx="4" cy="4" r="3" opacity="0.5"/><circle cx="9" cy="9" r="3"/></g>',
                           quiet=False)
    assert [x.opacity for x in nested] == pytest.approx([0.25, 0.5])
    with warnings.catch_warnings():
        warnings.simplefilter("error", SVGWarning)  # one shape under the group: exact, no warning
        assert one('<g opacity="0.5"><circle cx="4" cy="4" r="3"/></g>').opacity == pytest.approx(0.5)


@pytest.mark.once
def test_strokes_width_opacity_and_order():
    fill, stroke = layers_of('<circle cx="8" cy="8" r="4" fill="red" stroke="blue" stroke-width="2" '
                             'stroke-opacity="0.5"/>')
    assert fill.kind() == "disk" and stroke.kind() == "stroke4" and stroke.geometry["half_width"] == [1.0]
    assert stroke.color == (0, 0, 1) and stroke.opacity == pytest.approx(0.5)
    chain = stroke.geometry["subpaths"][0]
    np.testing.assert_allclose(chain[0], chain[-1])  # a closed outline ends where it starts
    thick = one('<path d="M2 2 Q8 14 14 2" fill="none" stroke="#000" stroke-width="3" stroke-linecap="round"/>',
                doc={"size": 'width="32" height="32" viewBox="0 0 16 16"'})
    assert thick.kind() == "bezier" and thick.geometry["half_width"] == [3.0]  # scaled with the viewBox
    polyline = one('<polyline points="1,1 9,1 5,7" fill="none" stroke="red" stroke-linejoin="round" '
                   'stroke-linecap="round"/>')
    assert polyline.kind() == "stroke2"


# ----------------------------------------------------------------------------- warnings


WARNED = {
    "gradients": '<defs><linearGradient id="g"><stop offset="0" stop-color="#f00"/><stop offset="1" stop-color="#00f"/>'
                 '</linearGradient></defs><rect width="8" height="8" fill="url(#g)"/><circle r="2" fill="url(#g)"/>',
    "clip-path": '<clipPath id="c"><rect width="4" height="4"/></clipPath><circle r="2" clip-path="url(#c)"/>',
    "mask": '<mask id="m"><rect width="4" height="4" fill="white"/></mask><circle r="2" mask="url(#m)"/>',
    "filter": '<filter id="f"><feGaussianBlur stdDeviation="1"/></filter><circle r="2" filter="url(#f)"/>',
    "text": '<text x="1" y="10">hi</text><text x="1" y="14">again</text>',
    "images": '<image href="cat.png" width="4" height="4"/>',
    "external references": '<use href="other.svg#a"/>',
    "stroke-linecap=butt": '<path d="M1 1 L9 9" stroke="red"/><line x1="1" y1="1" x2="2" y2="9" stroke="red"/>',
    "stroke-linejoin=miter": '<path d="M1 1 L9 9 L9 1" stroke="red" fill="none" stroke-linecap="round"/>',
    "stroke-dasharray": '<circle cx="8" cy="8" r="4" stroke="red" stroke-dasharray="2 1"/>',
    "fill=url(...)": '<circle r="2" fill="url(#nothing)"/>',
}


@pytest.mark.once
@pytest.mark.parametrize("feature", sorted(WARNED))
def test_each_skipped_feature_warns_once_naming_it(feature):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        read_svg(svg(WARNED[feature]), size=16)
    messages = [str(w.message) for w in caught if issubclass(w.category, SVGWarning)]
    assert len([m for m in messages if f": {feature}:" in m]) == 1, messages
    assert all(m.startswith("<svg text>: ") for m in messages)


@pytest.mark.once
def test_gradient_is_drawn_in_its_mean_colour():
    with pytest.warns(SVGWarning, match="mean colour"):
        layer = layers_of(WARNED["gradients"], quiet=False)[0]
    assert np.allclose(layer.color, (0.5, 0, 0.5), atol=0.01)


# ----------------------------------------------------------------------------- hostile and broken files


BOMB = ('<?xml version="1.0"?><!DOCTYPE lolz [<!ENTITY lol "lol">'
        + "".join(f'<!ENTITY lol{i} "{("&lol%s;" % (i - 1 if i > 1 else "")) * 10}">' for i in range(1, 10))
        + ']><svg xmlns="http://www.w3.org/2000/svg"><text>&lol9;</text></svg>')
HOSTILE = {
    "not XML": ("this is not xml", "not well-formed XML"),
    "not SVG": ("<html><body/></html>", "not an SVG document"),
    "bad path command": (svg('<path d="M0 0 L 4 4 X 3"/>'), "bad path data .* unknown path command 'X'"),
    "path without numbers": (svg('<path d="M0 0 L"/>'), "bad path data"),
    "path not starting with M": (svg('<path d="L1 1"/>'), "must start with M"),
    "external entity": ('<?xml version="1.0"?><!DOCTYPE svg [<!ENTITY x SYSTEM "file:///etc/passwd">]>'
                        '<svg xmlns="http://www.w3.org/2000/svg"><text>&x;</text></svg>', "declares XML entities"),
    "billion laughs": (BOMB, "declares XML entities"),
    "too many elements": (svg("<g/>" * svg_safe.MAX_ELEMENTS), "more than the limit of 100,000 elements"),
    "too deep": (svg("<g>" * svg_safe.MAX_DEPTH + "</g>" * svg_safe.MAX_DEPTH), "deeper than the limit of 100"),
    "use bomb": (svg('<g id="a0"><circle r="1"/></g>' + "".join(
        f'<g id="a{i}">' + f'<use href="#a{i - 1}"/>' * 10 + "</g>" for i in range(1, 7))), "more than the limit"),
    "use cycle": (svg('<g id="a"><use href="#b"/></g><g id="b"><use href="#a"/></g>'), "cycle"),
}


@pytest.mark.once
@pytest.mark.parametrize("case", sorted(HOSTILE))
def test_hostile_or_broken_files_raise_one_clear_error(case, tmp_path):
    text, message = HOSTILE[case]
    path = tmp_path / "bad.svg"
    path.write_text(text)
    with pytest.raises(SVGError, match=message) as error:
        read_svg(str(path))
    assert str(error.value).startswith(f"{path}: ") and "\n" not in str(error.value)
    assert isinstance(error.value, ValueError)


@pytest.mark.once
def test_a_doctype_without_entities_is_fine_and_a_missing_file_is_an_svg_error(tmp_path):
    doctype = '<?xml version="1.0"?><!DOCTYPE svg PUBLIC "-//W3C//DTD SVG 1.1//EN" "http://www.w3.org/svg11.dtd">'
    assert read_svg(doctype + svg('<circle cx="8" cy="8" r="3"/>'))[0].spec.shapes == (("disk", 1),)
    with pytest.raises(SVGError, match="cannot be read"):
        read_svg(str(tmp_path / "missing.svg"))


# ----------------------------------------------------------------------------- rendering


def test_round_trip_of_shapegrads_own_svg():
    # Every kind shapes.svg can hold, in colour, on a coloured background, on a non-square image.
    h, w = 24, 32
    original = Render("disk,box,ellipse,triangle,segment,bezier,polygon5", resolution=(h, w), channels=3,
                      background=[0.2, 0.4, 0.6])
    params = original.spec.sample(1, seed=3)
    params[0, original.spec.get(1, "corner").slice] = 0.3  # a rounded box
    text = files.to_svg(original, params[0])
    renderer, read = read_svg(text, size=(h, w), softness=original.softness)
    assert [k for k, _ in renderer.spec.shapes] == ["disk", "box", "ellipse", "polygon3", "segment", "bezier",
                                                     "polygon5"]
    before, after = to_numpy(original(params))[0], to_numpy(renderer(read))[0]
    # shapes.svg keeps 3 decimals of a pixel (an edge moves <= 5e-4 px: <= 5e-4 in value, the
    # coverage's slope being <= 1 per px) and 8 bits of colour (<= 0.002): 0.01 covers both.
    assert np.abs(before - after).max() < 0.01


def test_round_trip_of_the_path_kinds_in_shapegrads_own_svg():
    h, w = 20, 28
    original = Render("path3x2eo,path4,stroke2", resolution=(h, w), channels=3, background=[0.9, 0.9, 0.8])
    params = original.spec.sample(1, seed=5)
    renderer, read = read_svg(files.to_svg(original, params[0]), size=(h, w), softness=original.softness)
    assert [path_layout(k)[2] for k, _ in renderer.spec.shapes] == ["evenodd", "nonzero", None]
    before, after = to_numpy(original(params))[0], to_numpy(renderer(read))[0]
    assert np.abs(before - after).max() < 0.01  # 3 decimals of a pixel and 8 bits of colour, as above


@pytest.mark.once
def test_many_subpaths_split_into_shapes_exactly_when_apart():
    apart = " ".join(f"M{1 + 4 * (i % 5)} {1 + 4 * (i // 5)} h1 v1 h-1 z" for i in range(20))
    layers = layers_of(f'<path d="{apart}"/>')  # no warning: disjoint groups draw the same image
    assert [x.kind() for x in layers] == ["path4x16", "path4x4"]
    nested = " ".join(f"M{i * 0.4} {i * 0.4} h{15 - i * 0.8} v{15 - i * 0.8} h{i * 0.8 - 15} z" for i in range(18))
    with pytest.warns(SVGWarning, match="paths of more than 16 overlapping subpaths"):
        layers = layers_of(f'<path d="{nested}"/>', quiet=False)
    assert [x.size()[1] for x in layers] == [16, 2]


@pytest.mark.once
def test_a_subpath_of_more_than_64_segments_is_cut_through_its_first_point():
    zigzag = "M1 1 " + " ".join(f"L{1 + 14 * (i + 1) / 70} {1 + (i % 2)}" for i in range(70)) + " L15 15 z"
    with pytest.warns(SVGWarning, match="subpaths of more than 64 segments"):
        layer = one(f'<path d="{zigzag}"/>', quiet=False)
    subpaths = layer.geometry["subpaths"]
    assert len(subpaths) == 2 and all(len(s) // 3 <= 64 for s in subpaths)
    np.testing.assert_allclose(subpaths[1][0], subpaths[0][0])  # the second piece starts at the first point
