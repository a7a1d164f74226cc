"""Cubic Bézier paths and strokes (sdf.cubic_path, sdf.cubic_stroke, the path/stroke kinds):
exact values, a dense-flattening reference in NumPy, fill rules, float64 finite differences,
and hypothesis hunts for NaN/Inf in values and gradients."""

import math

import numpy as np
import pytest
from hypothesis import example, given
from hypothesis import strategies as st
from keras import ops

from helpers import (
    adversarial, adversarial_array, assert_finite, check_gradients, jit_for_many_calls, to_numpy, value_and_grad,
)
from shapegrad import Render
from shapegrad.render import primitives, sdf
from shapegrad.render.primitives import RenderSpec, parse_kinds, primitive


def f32(x):
    return np.asarray(x, np.float32)


def lines(corners):
    """Nodes ``(3V, 2)`` of a closed polygon drawn with straight cubics (controls at 1/3, 2/3)."""
    corners = np.asarray(corners, np.float64)
    ends = np.roll(corners, -1, axis=0)
    return np.stack([corners, (2 * corners + ends) / 3, (corners + 2 * ends) / 3], 1).reshape(-1, 2)


def circle(center, radius, segments=4, turn=1.0):
    """Nodes ``(3M, 2)`` of a cubic circle (radial error 2.7e-4 of the radius for M = 4), ``turn`` = -1 reversed."""
    a = turn * 2 * np.pi * np.arange(segments) / segments
    k = 4 / 3 * np.tan(np.pi / (2 * segments)) * radius
    p = np.asarray(center) + radius * np.stack([np.cos(a), np.sin(a)], 1)
    t = turn * np.stack([-np.sin(a), np.cos(a)], 1)
    return np.stack([p, p + k * t, np.roll(p - k * t, -1, axis=0)], 1).reshape(-1, 2)


def grid(h):
    return np.stack(np.meshgrid(np.arange(h, dtype=np.float64), np.arange(h, dtype=np.float64), indexing="ij"), -1)


def dense(nodes, closed=True, per=300):
    """Points ``(M, per + 1, 2)`` of each segment, float64."""
    nodes = np.asarray(nodes, np.float64)
    p, a, b = nodes[0::3], nodes[1::3], nodes[2::3]
    if closed:
        e = np.roll(p, -1, axis=0)
    else:
        p, a, b, e = nodes[0:-1:3], nodes[1::3], nodes[2::3], nodes[3::3]
    t = np.linspace(0, 1, per + 1)[:, None, None]
    c = (1 - t) ** 3 * p + 3 * t * (1 - t) ** 2 * a + 3 * t * t * (1 - t) * b + t**3 * e
    return np.transpose(c, (1, 0, 2))


def reference(points, subpaths, closed=True):
    """Winding number (a dense flattening's ray crossings) and distance to every curve, float64."""
    pts = np.asarray(points, np.float64).reshape(-1, 2)
    winding, dmin = np.zeros(len(pts), int), np.full(len(pts), np.inf)
    for nodes in subpaths:
        c = dense(nodes, closed)
        v, w = c[:, :-1].reshape(-1, 2), c[:, 1:].reshape(-1, 2)
        vn, wn = v[None] - pts[:, None], w[None] - pts[:, None]
        er = wn[..., 0] - vn[..., 0]
        cross = vn[..., 0] * wn[..., 1] - vn[..., 1] * wn[..., 0]
        crossing = ((vn[..., 0] > 0) != (wn[..., 0] > 0)) & (cross * er < 0)
        winding += (crossing * np.sign(er)).sum(1).astype(int)
        e = w - v
        h = np.clip(((pts[:, None] - v[None]) * e[None]).sum(-1) / np.maximum((e * e).sum(-1), 1e-300), 0, 1)
        q = pts[:, None] - v[None] - h[..., None] * e[None]
        dmin = np.minimum(dmin, np.sqrt((q * q).sum(-1)).min(1))
    shape = np.shape(points)[:-1]
    return winding.reshape(shape), dmin.reshape(shape)


_PATHS = {}


def path(points, nodes, rule="nonzero"):
    """``sdf.cubic_path``, compiled on JAX once per rule and shapes (eager JAX compiles every op instead)."""
    key = rule, np.shape(points), np.shape(nodes)  # one function per rule and shapes
    if key not in _PATHS:
        _PATHS[key] = jit_for_many_calls(lambda p, v: sdf.cubic_path(p, v, rule))
    return to_numpy(_PATHS[key](f32(points), f32(nodes)))


# ---------------------------------------------------------------- exact values


def test_square_values_either_orientation_and_kinks():
    p = f32([[3, 3], [3, 8], [0, 0], [6, 3], [-1, -1], [3, 0], [2, 1]])
    expected = [-3.0, 2.0, 0.0, 0.0, math.sqrt(2), 0.0, -1.0]
    for corners in ([[0, 0], [6, 0], [6, 6], [0, 6]], [[0, 0], [0, 6], [6, 6], [6, 0]]):
        np.testing.assert_allclose(path(p, lines(corners)[None]), expected, atol=1e-5)
        np.testing.assert_allclose(path(p, lines(corners)[None], "evenodd"), expected, atol=1e-5)


def test_circle_matches_disk_and_quadratic_segments_are_exact():
    q = grid(24)
    d = path(q, circle([12, 11], 9)[None])
    np.testing.assert_allclose(d, np.hypot(q[..., 0] - 12, q[..., 1] - 11) - 9, atol=9 * 3e-4)
    # A quadratic (P, Q, E) raised to a cubic is the same curve: sdf.bezier's distance.
    p0, c, p2 = np.float64([3, 2]), np.float64([20, 10]), np.float64([4, 20])
    nodes = np.stack([p0, p0 + 2 * (c - p0) / 3, p2 + 2 * (c - p2) / 3, p2])[None]
    stroke = to_numpy(sdf.cubic_stroke(f32(q), f32(nodes), 1.5))
    np.testing.assert_allclose(stroke, to_numpy(sdf.bezier(f32(q), f32(p0), f32(c), f32(p2), 1.5)), atol=2e-4)


@pytest.mark.parametrize("rule", ["nonzero", "evenodd"])
def test_sampled_paths_match_a_dense_reference(rule):
    """Star-shaped and perturbed-circle paths: sign exact, distance within 1e-3 px (float32)."""
    n = 24
    spec = RenderSpec("path5" if rule == "nonzero" else "path3eo", n)
    x = spec.sample(6, seed=7).astype(np.float64)
    q = grid(n)
    for row in x:
        nodes = (n * row[spec.get(0, "points").slice]).reshape(1, -1, 2)
        d = path(q, nodes, rule)
        winding, dist = reference(q, nodes)
        r = np.where(winding != 0, -dist, dist)
        assert np.all((d < 0) == (r < 0)) or np.all(np.abs(r[(d < 0) != (r < 0)]) < 1e-3)
        np.testing.assert_allclose(d, r, atol=1e-3)


def test_wild_curves_get_the_sign_right_up_to_the_curve():
    """Random control points (loops, cusps, self-intersections): the winding number of the true curve."""
    rng = np.random.default_rng(0)
    q = grid(20)
    wrong = 0
    for _ in range(8):
        nodes = rng.uniform(1, 19, (1, 9, 2))  # three segments: one shape, compiled once
        for rule in ("nonzero", "evenodd"):
            d = path(q, nodes, rule)
            winding, dist = reference(q, nodes)
            filled = winding != 0 if rule == "nonzero" else winding % 2 == 1
            wrong += int(np.sum(((d < 0) != filled) & (dist > 1e-3)))
    assert wrong == 0


def test_fill_rules_on_a_pentagram_a_figure_eight_and_rings():
    q = f32([[10, 10], [10, 2], [3, 10]])
    star = lines([[10 + 8 * math.cos(a), 10 + 8 * math.sin(a)] for a in np.arange(5) * 4 * np.pi / 5])
    d_nz, d_eo = path(q[:1], star[None]), path(q[:1], star[None], "evenodd")
    assert d_nz[0] < -1 and d_eo[0] > 1  # the centre winds twice: filled under nonzero only
    # A figure-eight: lobes of winding +1 and -1, both filled under both rules, the crossing on the boundary.
    eight = lines([[4, 2], [16, 18], [4, 18], [16, 2]])
    for rule in ("nonzero", "evenodd"):
        d = path(f32([[10, 4], [10, 16], [4, 10], [10, 10]]), eight[None], rule)
        assert d[0] < -1 and d[1] < -1 and d[2] > 1 and abs(d[3]) < 1e-5
    # A ring: outer and inner circles. Same orientation: nonzero fills the hole (and draws no
    # edge at the inner circle), even-odd keeps it; opposite orientation: a hole under both.
    p = f32([[10, 10], [10, 4.5], [10, 6]])  # centre, between the circles, on the inner circle
    for turn in (1.0, -1.0):
        rings = np.stack([circle([10, 10], 8), circle([10, 10], 4, turn=turn)])
        d_nz, d_eo = path(p, rings), path(p, rings, "evenodd")
        assert d_eo[0] > 3 and d_eo[1] < -0.4 and abs(d_eo[2]) < 0.01
        if turn > 0:  # (inside the inner loop the winding number is 2: deep inside, whatever the distance)
            assert d_nz[0] < -3.9 and abs(d_nz[1] + 2.5) < 0.01 and d_nz[2] < -3.9
        else:
            np.testing.assert_allclose(d_nz, d_eo, atol=1e-5)


def test_overlapping_squares_of_one_orientation_are_one_flat_union_without_seam():
    q = grid(20)
    boxes = [(2, 12), (6, 17)]
    squares = np.stack([lines([[lo, lo], [hi, lo], [hi, hi], [lo, hi]]) for lo, hi in boxes])
    d = path(q, squares)
    # The union's outline: each square's outline (densely) less what lies strictly inside the other.
    outline = []
    for (lo, hi), (olo, ohi) in (boxes, boxes[::-1]):
        s = np.linspace(lo, hi, 8 * (hi - lo) + 1)  # every pixel's nearest outline point among them
        pts = np.concatenate([np.stack([s, np.full_like(s, v)], 1) for v in (lo, hi)]
                             + [np.stack([np.full_like(s, v), s], 1) for v in (lo, hi)])
        outline.append(pts[~np.all((pts > olo) & (pts < ohi), axis=1)])
    outline = np.concatenate(outline)
    dist = np.sqrt(((q[:, :, None] - outline) ** 2).sum(-1)).min(-1)
    inside = np.zeros((20, 20), bool)
    for lo, hi in boxes:
        inside[lo : hi + 1, lo : hi + 1] = True
    assert np.all(dist[(d < 0) != inside] == 0)  # either sign on the outline
    # Coverage as that of the union: within 1e-3 of it within 1 px of the outline, saturated
    # (> 0.98) deeper inside (where the winding number is 2 the distance is not computed: deep
    # inside); the interior edges (row and column 6 in the first square, 12 in the second) do not show.
    cover, exact = 1 / (1 + np.exp(np.clip(4 * d, -50, 50))), 1 / (1 + np.exp(np.clip(4 * np.where(inside, -dist, dist), -50, 50)))
    deep = inside & (dist >= 1)
    assert cover[deep].min() > 0.98
    np.testing.assert_allclose(cover[~deep], exact[~deep], atol=1e-3)
    assert cover[6, 7:12].min() > 0.99 and cover[7:12, 6].min() > 0.99
    assert cover[12, 8:16].min() > 0.99 and cover[8:16, 12].min() > 0.99
    # Even-odd: the overlap is a hole.
    assert path(q, squares, "evenodd")[9, 9] > 2


def test_zero_length_padding_segments_change_nothing():
    q = grid(16).reshape(-1, 2)
    tri = lines([[2, 3], [13, 5], [6, 14]])  # 3 segments
    padded = np.concatenate([tri, np.repeat(tri[:1], 6, axis=0)])  # 5 segments, the last 2 points
    expected = path(q, tri[None])
    np.testing.assert_allclose(path(q, padded[None]), expected, atol=1e-5)
    # Padding at the start of a subpath too, and a second subpath of nothing but padding.
    rolled = np.concatenate([np.repeat(tri[:1], 6, axis=0), tri])
    empty = np.repeat(f32([[40, 40]]), 15, axis=0)
    np.testing.assert_allclose(path(q, np.stack([rolled, empty])), expected, atol=1e-5)
    np.testing.assert_allclose(path(q, np.stack([padded, empty]), "evenodd"), expected, atol=1e-5)


def test_zero_length_path_has_no_inside_and_no_nan():
    q = grid(8).reshape(-1, 2)
    nodes = np.full((1, 12, 2), 3.0)
    d = path(q, nodes)
    np.testing.assert_allclose(d, np.hypot(q[:, 0] - 3, q[:, 1] - 3), atol=1e-5)
    _, grads = value_and_grad(jit_for_many_calls(lambda p, v: ops.sum(sdf.cubic_path(p, v))), f32(q), f32(nodes))
    assert_finite("zero-length path gradients", *grads)


def test_stroke_is_the_dense_distance_minus_half_width():
    q = grid(20)
    chains = np.stack([
        np.float64([[3, 2], [14, 2], [10, 12], [3, 9], [-3, 6], [8, 19], [17, 17]]),  # 2 segments with a cusp-like turn
        np.float64([[16, 3], [16, 3], [18, 9], [12, 12], [6, 15], [6, 15], [16, 3]]),  # closed, coincident controls
    ])
    d = to_numpy(sdf.cubic_stroke(f32(q), f32(chains), 1.25))
    _, dist = reference(q, chains, closed=False)
    np.testing.assert_allclose(d, dist - 1.25, atol=1e-3)


# ------------------------------------------------------------- gradients


def test_gradients_match_finite_differences(float64):
    # A smooth closed path (a perturbed cubic circle) and points away from its medial axis.
    nodes = circle([10, 10], 7, segments=3)[None] + np.random.default_rng(1).normal(0, 0.4, (1, 9, 2))
    pts = np.float64([[3.2, 9.1], [11.3, 16.8], [10.4, 12.6], [17.9, 10.2], [5.5, 4.1], [13.1, 3.9]])
    check_gradients(jit_for_many_calls(lambda p, v: ops.sum(sdf.cubic_path(p, v))), [pts, nodes], samples=8)
    chain = nodes[:, :7]
    check_gradients(jit_for_many_calls(lambda p, v: ops.sum(sdf.cubic_stroke(p, v, 0.5))), [pts, chain], samples=8)


def test_gradient_on_the_curve_is_the_outward_normal(float64):
    square = lines([[0, 0], [6, 0], [6, 6], [0, 6]])[None]
    for nodes in (square, lines([[0, 0], [0, 6], [6, 6], [6, 0]])[None]):
        for point, normal in (([6.0, 2.0], [1.0, 0.0]), ([3.0, 0.0], [0.0, -1.0])):
            _, (g,) = value_and_grad(lambda p: ops.sum(sdf.cubic_path(p, nodes)), np.float64(point))
            np.testing.assert_allclose(g, normal, atol=1e-9)


# --------------------------------------------- hypothesis: NaN/Inf hunts


@st.composite
def _path_case(draw_, closed):
    """Nodes (1, 6 [+ 1], 2), two segments, with degenerate structure; points on their special places."""
    count = 6 + (0 if closed else 1)  # one shape: compiled once
    nodes = draw_(adversarial_array((count, 2)))
    how = draw_(st.sampled_from(["free", "same", "coincident controls", "straight", "tiny", "axis"]))
    if how == "same":  # every point equal: no length, no area
        nodes[:] = nodes[0]
    elif how == "coincident controls":  # controls on their ends (zero tangents), a cusp
        nodes[1::3] = nodes[0::3][: len(nodes[1::3])]
        nodes[2::3] = nodes[1::3][: len(nodes[2::3])]
    elif how == "straight":
        nodes[1] = nodes[0] + (nodes[3] - nodes[0]) / 3
    elif how == "tiny":
        nodes = nodes * np.float32(1e-30)
    elif how == "axis":  # rows (or columns) shared: horizontal tangents, points on the ray
        nodes[:, draw_(st.integers(0, 1))] = draw_(st.sampled_from([0.0, 1.0, 1e12]))
    pts = draw_(adversarial_array((3, 2)))
    special = [nodes[0], nodes[1], (nodes[0] + nodes[-1]) / 2, [nodes[0][0], nodes[0][1] + 1]]
    pts = np.concatenate([pts, np.asarray(special, np.float32)]).astype(np.float32)
    return pts, nodes[None].astype(np.float32)


_JITTED = {}


def _finite(name, fn, pts, nodes):
    if name not in _JITTED:
        _JITTED[name] = jit_for_many_calls(lambda p, v: ops.sum(fn(p, v) * 1e-6)), jit_for_many_calls(fn)
    total, values = _JITTED[name]
    value, grads = value_and_grad(total, pts, nodes)
    assert_finite(f"{name} value", value, to_numpy(values(pts, nodes)))
    assert_finite(f"{name} gradients", *grads)


# Found by the deep profile: a chord between the start and a turning point 1e-10 along a segment
# 1e16 long is 5e-20 (squared, subnormal in float32), and the pixel sits on its start.
_SUBNORMAL_CHORD = (
    np.array([[0, 0], [0, 3.3333332e6], [0, 1], [0, 5e6]], np.float32),
    np.array([[[0, 0], [0, 3.3333332e6], [0, -1.2398503e16], [0, 1e7], [0, 0], [0, 0]]], np.float32),
)


@given(case=_path_case(closed=True), rule=st.sampled_from(["nonzero", "evenodd"]))
@example(case=_SUBNORMAL_CHORD, rule="nonzero")
def test_property_path_values_and_gradients_finite(case, rule):
    _finite(f"path {rule}", lambda p, v: sdf.cubic_path(p, v, rule), *case)


@given(case=_path_case(closed=False), half_width=adversarial(low=-1e4, high=1e4))
def test_property_stroke_values_and_gradients_finite(case, half_width):
    _finite("stroke", lambda p, v: sdf.cubic_stroke(p, v, 0.5), *case)


@given(data=st.data())
def test_property_render_path_kinds_finite(data):
    layer, total = _render()
    how = data.draw(st.sampled_from(["typical", "free", "constant"]))
    x = data.draw(adversarial_array((1, layer.spec.size)))
    if how == "typical":
        x = layer.spec.sample(1, seed=data.draw(st.integers(0, 2**32 - 1)))
    elif how == "constant":  # everything on one place: zero lengths, zero areas
        x[0, :] = data.draw(st.sampled_from([0.0, 0.5, 1e-30, 1.0, 1e30]))
    value, (g,) = value_and_grad(total, x)
    assert_finite("Render path kinds", value, g)
    assert how != "typical" or value > 0.1  # typical scenes draw something


def _render():
    if "render" not in _JITTED:
        layer = Render("path2,path1x2eo,stroke2", (6, 9))  # non-square: positions scaled per axis
        _JITTED["render"] = layer, jit_for_many_calls(lambda x: ops.sum(layer(x)))
    return _JITTED["render"]


# ------------------------------------------------------------- the kinds


@pytest.mark.once
def test_kind_names_and_layouts():
    assert primitives.path_layout("path") == (4, 1, "nonzero")
    assert primitives.path_layout("path6x3eo") == (6, 3, "evenodd")
    assert primitives.path_layout("stroke2x4") == (2, 4, None)
    assert [f.size for f in primitive("path3x2").fields] == [36]
    assert [(f.name, f.size, f.kind) for f in primitive("stroke3").fields] == [("points", 20, "position"), ("half_width", 1, "size")]
    assert parse_kinds("path,path2x2eo,stroke1") == ("path", "path2x2eo", "stroke1")
    spec = RenderSpec("path2x2", 16)
    assert spec.size == 24 + 2 and spec.sample(3).shape == (3, 26)


@pytest.mark.once
@pytest.mark.parametrize("kind", ["path0", "path2x0", "stroke", "stroke0", "path65", "pathx2", "path2eox2"])
def test_bad_kind_names_raise_keras_style(kind):
    with pytest.raises(ValueError, match=rf"Received: kinds=\('{kind}',\)"):
        parse_kinds((kind,))
    with pytest.raises(ValueError, match=rf"Received: kind='{kind}'"):
        primitive(kind)


@pytest.mark.once
def test_sampled_paths_lie_in_the_image_and_have_area():
    spec = RenderSpec("path4,path3x2eo", 32)
    x = spec.sample(50, seed=2)
    for k in range(2):
        pts = x[:, spec.get(k, "points").slice].reshape(50, -1, 3, 2)[:, :, 0]  # the on-curve points
        assert np.all((pts > 0) & (pts < 1))
        area = 0.5 * np.abs(np.sum(pts[..., 0] * np.roll(pts[..., 1], -1, 1) - pts[..., 1] * np.roll(pts[..., 0], -1, 1), 1))
        assert np.all(area > 1e-4)
