"""SVG in: :func:`read_svg` turns an SVG drawing into a :class:`shapegrad.Render` and its parameters.

Its one concern is reading the document: the XML is checked first
(:mod:`shapegrad.io.svg_safe`: no entity is expanded, nothing external is
read, element count and depth are limited), styles, ``<use>``, transforms,
``viewBox`` and arcs are resolved by :mod:`svgelements`, and each painted
layer (fill, then stroke, of each element, in document order) is mapped to a
shapegrad kind by :mod:`shapegrad.io.svg_shapes`.

Supported: ``path`` (all commands, absolute and relative, several subpaths),
``rect`` (``rx``/``ry``), ``circle``, ``ellipse``, ``polygon``, ``polyline``,
``line``, ``g`` and ``use`` (internal references) with nested ``transform``
(matrix, translate, scale, rotate, skewX, skewY); ``viewBox`` with
``width``/``height`` and ``preserveAspectRatio``; ``fill`` and ``stroke``
(named colours, ``#rgb``, ``#rrggbb``, ``rgb()``, ``none``, ``currentColor``),
``fill-opacity``, ``stroke-opacity``, ``stroke-width``, ``fill-rule``,
``opacity``, through attributes, ``style="..."``, ``<style>`` rules (simple
selectors) and inheritance from groups.

Approximated or skipped, each with one :class:`SVGWarning` per feature per
file naming it: ``opacity`` on a group (or on an element with both a fill and
a stroke) is multiplied into each shape's own opacity, which differs from SVG
where the shapes under it overlap; gradient and pattern paints (``url(#...)``)
are drawn in the mean colour of their stops (patterns: not drawn);
``stroke-linecap``/``stroke-linejoin`` other than round are drawn round
(where the path has ends / corners); dashes are drawn solid; strokes under a
non-uniform scale get the mean width; ``clip-path``, ``mask``, ``filter`` and
markers are ignored; ``text``, ``image``, external ``use``, ``foreignObject``
are skipped.
"""

import io
import math
import os
import re
import warnings
import xml.etree.ElementTree as ElementTree

import numpy as np
import svgelements

from shapegrad.io import svg_shapes
from shapegrad.io.svg_safe import (
    XLINK,
    SVGError,
    SVGWarning,
    check_path_data,
    local_name,
    parse_svg_xml,
)
from shapegrad.render.render import Render

__all__ = ["DEFAULT_MAX_SIDE", "SVG_SOFTNESS", "SVGError", "SVGWarning", "read_svg", "svg_layers"]

# The Render's edge width for SVG drawings. cairo and browsers anti-alias by box filtering: an edge
# on a pixel boundary leaves the next pixel centre (0.5 px away) untouched, where sigmoid(-4 d / s)
# gives 0.119 at s = 1 and 0.065 at s = 0.75. Measured against cairosvg on 12 bootstrap icons at
# 64 px: 87 % (s = 1) and 99.96 % (s = 0.75) of pixels within 0.1 (docs/svg.md).
SVG_SOFTNESS = 0.75
DEFAULT_MAX_SIDE = 512  # size=None: the SVG's own size in pixels, shrunk to at most this on its longer side

# Elements drawn, or read for what they define; anything else of the SVG namespace is skipped with a warning.
_KNOWN = {
    "svg", "g", "defs", "path", "rect", "circle", "ellipse", "line", "polyline", "polygon", "use", "symbol",
    "title", "desc", "metadata", "style", "linearGradient", "radialGradient", "stop", "a", "switch",
}
_SKIPPED = {"text": "text", "image": "images", "foreignObject": "foreignObject", "pattern": None,
            "clipPath": None, "mask": None, "filter": None, "marker": None}
_SVG_NS = "{http://www.w3.org/2000/svg}"
_URL = re.compile(r"url\(\s*['\"]?#([^)'\"]+)['\"]?\s*\)")


class _Notes:
    """The features of one file that were skipped or approximated: one warning each, at the end."""

    def __init__(self, name):
        self.name, self.seen = name, {}

    def add(self, feature, what):
        self.seen.setdefault(feature, what)

    def warn(self):
        for feature, what in self.seen.items():
            warnings.warn(f"{self.name}: {feature}: {what}", SVGWarning, stacklevel=3)


def _style(elem):
    """``style="a: b; c: d"`` as a dict."""
    out = {}
    for item in elem.get("style", "").split(";"):
        key, colon, value = item.partition(":")
        if colon:
            out[key.strip()] = value.strip()
    return out


def _get(elem, key):
    return _style(elem).get(key, elem.get(key))


def _set(elem, key, value):
    """Set presentation attribute ``key`` (and drop it from ``style``, which would override it)."""
    style = _style(elem)
    if key in style:
        del style[key]
        elem.set("style", ";".join(f"{k}:{v}" for k, v in style.items()))
    elem.set(key, value)


def _number(text, default=1.0):
    try:
        value = float(text.strip().rstrip("%")) / (100 if text.strip().endswith("%") else 1)
    except (AttributeError, ValueError):
        return default
    return min(max(value, 0.0), 1.0) if math.isfinite(value) else default


def _prepare(root, name, notes):
    """Rewrite the checked tree in place for svgelements; notes what is skipped or approximated.

    ``opacity`` becomes, on every element, the product of its own and its
    ancestors' (svgelements would let a child's replace its group's); paints
    ``url(#gradient)`` become the gradient's mean stop colour; path data is
    checked; elements that are not drawn are removed.
    """
    ids = {e.get("id"): e for e in root.iter() if e.get("id") is not None}
    stack = [(root, 1.0)]
    while stack:
        elem, inherited = stack.pop()
        tag = local_name(elem.tag)
        own = _number(_get(elem, "opacity"))
        product = inherited * own
        if own < 1.0 and (tag in ("g", "use", "svg", "symbol", "a", "switch") and _count_painted(elem) > 1):
            notes.add("group opacity", "applied to each shape of the group (differs where they overlap)")
        _set(elem, "opacity", repr(product))
        for key in ("clip-path", "mask", "filter"):
            value = _get(elem, key)
            if value and value != "none":
                notes.add(key, "ignored (drawn without it)")
        if any(_get(elem, k) not in (None, "none") for k in ("marker-start", "marker-mid", "marker-end", "marker")):
            notes.add("markers", "skipped")
        for key in ("fill", "stroke"):
            value = _get(elem, key)
            if value and value.startswith("url("):
                _set(elem, key, _paint_server(value, ids, key, notes))
        if tag == "path":
            try:
                check_path_data(elem.get("d", ""))
            except ValueError as error:
                raise SVGError(f"{name}: bad path data in <path{_id(elem)}>: {error}") from None
        for child in list(elem):
            child_tag = local_name(child.tag)
            if not child.tag.startswith(_SVG_NS) and isinstance(child.tag, str) and child.tag.startswith("{"):
                elem.remove(child)  # other namespaces (editors' metadata) are not drawn by any renderer
                continue
            if child_tag in _SKIPPED:
                if _SKIPPED[child_tag] and _has_content(child):
                    notes.add(_SKIPPED[child_tag], "skipped")
                if child_tag in ("text", "image", "foreignObject"):
                    elem.remove(child)
                continue
            if child_tag == "use":
                href = child.get(XLINK, child.get("href", ""))
                if href and not href.startswith("#"):
                    notes.add("external references", f"skipped (<use href={href!r}> is never read)")
                    elem.remove(child)
                    continue
            elif child_tag not in _KNOWN and not child_tag.startswith("fe"):
                notes.add(f"<{child_tag}>", "skipped")
                elem.remove(child)
                continue
            stack.append((child, product))


def _has_content(elem):
    return len(elem) > 0 or bool((elem.text or "").strip()) or local_name(elem.tag) == "image"


def _count_painted(elem, limit=2):
    count = 0
    for e in elem.iter():
        if local_name(e.tag) in ("path", "rect", "circle", "ellipse", "line", "polyline", "polygon", "use"):
            count += 1
            if count >= limit:
                break
    return count


def _id(elem):
    return f" id={elem.get('id')!r}" if elem.get("id") else ""


def _paint_server(value, ids, key, notes):
    """A ``url(#id)`` paint as one colour: a gradient's mean stop colour (opacity folded in), else ``none``."""
    match = _URL.match(value)
    target = ids.get(match.group(1)) if match else None
    seen = 0
    while target is not None and not list(_stops(target)) and seen < 8:  # stops inherited through href
        href = target.get(XLINK, target.get("href", ""))
        target, seen = ids.get(href[1:]) if href.startswith("#") else None, seen + 1
    stops = list(_stops(target)) if target is not None else []
    if not stops:
        notes.add(f"{key}=url(...)", "paint server without stops (pattern, missing id): not drawn")
        return "none"
    notes.add("gradients", "drawn in the mean colour of their stops")
    rgba = np.mean(stops, axis=0)
    return "rgba({:.0f},{:.0f},{:.0f},{:.4f})".format(*(255 * rgba[:3]), rgba[3])


def _stops(gradient):
    for stop in gradient:
        if local_name(stop.tag) == "stop":
            color = svgelements.Color(_get(stop, "stop-color") or "black")
            alpha = _number(_get(stop, "stop-opacity")) * (color.alpha / 255 if color.value is not None else 0)
            if color.value is not None:
                yield (color.red / 255, color.green / 255, color.blue / 255, alpha)


def _load(source):
    """``(text, name)`` of a file path, an SVG string, or bytes."""
    if isinstance(source, bytes):
        return source, "<svg bytes>"
    if isinstance(source, str) and source.lstrip().startswith("<"):
        return source, "<svg text>"
    if isinstance(source, (str, os.PathLike)):
        path = os.fspath(source)
        try:
            with open(path, "rb") as handle:
                return handle.read(), path
        except OSError as error:
            raise SVGError(f"{path}: cannot be read ({error.strerror or error})") from None
    raise TypeError(f"Expected path_or_text to be a file path or SVG text. Received: path_or_text={source!r}")


def _canvas(size, own_h, own_w):
    """``(H, W, sx, sy, ox, oy)``: the image size and the map from document pixels to device pixels."""
    if size is None:
        scale = min(1.0, DEFAULT_MAX_SIDE / max(own_h, own_w))
        h, w = max(1, round(own_h * scale)), max(1, round(own_w * scale))
        return h, w, w / own_w, h / own_h, 0.0, 0.0
    if isinstance(size, (tuple, list)):
        h, w = size
        scale = min(h / own_h, w / own_w)  # xMidYMid meet on the (H, W) image
        return h, w, scale, scale, (w - own_w * scale) / 2, (h - own_h * scale) / 2
    scale = size / max(own_h, own_w)
    h, w = max(1, round(own_h * scale)), max(1, round(own_w * scale))
    return h, w, w / own_w, h / own_h, 0.0, 0.0


def _check_size(size):
    def positive(v):
        return isinstance(v, (int, np.integer)) and not isinstance(v, bool) and 0 < v <= 16384

    ok = size is None or positive(size) or (
        isinstance(size, (tuple, list)) and len(size) == 2 and all(positive(v) for v in size))
    if not ok:
        raise ValueError("Expected size to be None, a positive integer N (the longer side, at most 16384) or "
                         f"(height, width) positive integers. Received: size={size!r}")
    return tuple(int(v) for v in size) if isinstance(size, (tuple, list)) else size


def svg_layers(path_or_text, *, size=None):
    """The painted layers of an SVG document: ``(layers, (H, W))``, layers as :class:`svg_shapes.Drawn`.

    What :func:`read_svg` draws, before it is packed into kinds; warnings as
    for :func:`read_svg`.
    """
    size = _check_size(size)
    text, name = _load(path_or_text)
    root = parse_svg_xml(text, name)
    notes = _Notes(name)
    _prepare(root, name, notes)
    try:
        document = svgelements.SVG.parse(io.BytesIO(ElementTree.tostring(root)), reify=False, on_error="raise")
        own_w, own_h = float(document.width), float(document.height)
    except (ValueError, TypeError, ArithmeticError, AttributeError) as error:
        raise SVGError(f"{name}: cannot be drawn ({error or type(error).__name__})") from None
    if not (own_w > 0 and own_h > 0 and math.isfinite(own_w * own_h)):
        raise SVGError(f"{name}: has no drawable size (width={own_w:g}, height={own_h:g})")
    h, w, sx, sy, ox, oy = _canvas(size, own_h, own_w)
    # Document (x, y) -> render (row, col) = (Y - 0.5, X - 0.5) of the device point (X, Y).
    device = np.float64([[0.0, sy, oy - 0.5], [sx, 0.0, ox - 0.5]])
    layers = []
    for element in document.elements():
        if isinstance(element, svgelements.Shape) and not isinstance(element, svgelements.Image):
            layers += _element_layers(element, device, notes)
    notes.warn()
    return layers, (h, w)


def _matrix(element, device):
    """2x3 affine: the element's local ``(x, y)`` -> render ``(row, col)``."""
    t = element.transform
    local = np.float64([[t.a, t.c, t.e], [t.b, t.d, t.f], [0, 0, 1]])
    return device @ local


def _paint(color, paint_opacity, opacity):
    """``((r, g, b), alpha)`` of an svgelements colour, its ``fill-``/``stroke-opacity`` and ``opacity``, or None.

    svgelements keeps ``fill-opacity`` in the colour's 8-bit alpha; the attribute itself is read when given.
    """
    if color is None or color.value is None:
        return None
    own = _number(str(paint_opacity)) if paint_opacity is not None else color.alpha / 255
    alpha = own * opacity
    if alpha <= 0:
        return None
    return (color.red / 255, color.green / 255, color.blue / 255), alpha


def _element_layers(element, device, notes):
    """The fill and stroke layers of one svgelements shape (in that order, as SVG paints them)."""
    matrix = _matrix(element, device)
    opacity = _number(str(element.values.get("opacity", "1")))
    fill = _paint(element.fill, element.values.get("fill-opacity"), opacity)
    stroke = _paint(element.stroke, element.values.get("stroke-opacity"), opacity)
    width = float(element.stroke_width or 0.0)
    if stroke and width <= 0:
        stroke = None
    out = []
    if fill and stroke and opacity < 1:
        notes.add("group opacity", "applied to fill and stroke separately (differs where they overlap)")
    if fill and not isinstance(element, svgelements.SimpleLine):  # a line has no inside
        layer = _simple_fill(element, matrix, *fill)
        if layer is None:
            evenodd = str(element.values.get("fill-rule", "nonzero")).strip() == "evenodd"
            layers, approximated = svg_shapes.fill_layers(_pieces(element, matrix, cubic=True), evenodd, *fill)
            out += layers
            for feature in approximated:
                notes.add(feature, "cut into several pieces (see docs/svg.md)")
        else:
            out.append(layer)
    if stroke:
        out += _stroke(element, matrix, width, stroke, notes)
    return out


def _simple_fill(element, matrix, color, alpha):
    """A disk, ellipse, box or polygon layer when one draws the element exactly, else None."""
    if isinstance(element, (svgelements.Circle, svgelements.Ellipse)):
        if element.rx > 0 and element.ry > 0:
            return svg_shapes.ellipse_or_disk(matrix, (element.cx, element.cy), element.rx, element.ry, color, alpha)
    if isinstance(element, svgelements.Rect):
        rx, ry = float(element.rx or 0), float(element.ry or 0)
        if abs(rx - ry) <= 1e-12 and element.width > 0 and element.height > 0:
            return svg_shapes.box_or_polygon(matrix, element.x, element.y, element.width, element.height, rx,
                                             color, alpha)
    if isinstance(element, svgelements.Polygon):
        points = np.float64([[p.x, p.y] for p in element.points])
        if len(points) > 1 and np.allclose(points[0], points[-1]):
            points = points[:-1]
        pts = points @ matrix[:, :2].T + matrix[:, 2]
        if 3 <= len(pts) <= 64 and svg_shapes.is_simple_polygon(pts):
            return svg_shapes.Drawn("polygon", {"vertices": pts.ravel()}, color, alpha)
    return None


def _pieces(element, matrix, cubic):
    """The element's outline as subpaths of pieces in render pixels, and whether each is closed.

    A piece is ``(p0, p3)`` (line), ``(p0, q, p3)`` (quadratic) or
    ``(p0, p1, p2, p3)`` (cubic; arcs as cubics); with ``cubic`` every piece
    is a cubic. Returns a list of ``(pieces, closed)`` for strokes, or of
    pieces alone for fills (``cubic=True``).
    """
    path = svgelements.Path(element)
    path.transform = svgelements.Matrix()  # the element's transform is in ``matrix`` already
    subpaths, current, closed = [], [], False

    def point(p):
        return matrix[:, :2] @ np.float64([p.x, p.y]) + matrix[:, 2]

    for seg in path:
        if isinstance(seg, svgelements.Move):
            if current:
                subpaths.append((current, closed))
            current, closed = [], False
            continue
        if isinstance(seg, svgelements.Close):
            if seg.start is not None and seg.end is not None and abs(seg.start - seg.end) > 1e-12:
                current.append((point(seg.start), point(seg.end)))
            closed = True
            continue
        if isinstance(seg, svgelements.Line):
            current.append((point(seg.start), point(seg.end)))
        elif isinstance(seg, svgelements.QuadraticBezier):
            current.append((point(seg.start), point(seg.control), point(seg.end)))
        elif isinstance(seg, svgelements.CubicBezier):
            current.append(tuple(point(p) for p in (seg.start, seg.control1, seg.control2, seg.end)))
        elif isinstance(seg, svgelements.Arc):
            current += [tuple(point(p) for p in q) for q in _arc_cubics(seg)]
    if current:
        subpaths.append((current, closed))
    if cubic:
        return [[svg_shapes.as_cubic(q) for q in pieces] for pieces, _ in subpaths]
    return subpaths


def _arc_cubics(arc):
    """An elliptic arc as cubics of at most a quarter turn each, ``[(p0, p1, p2, p3)]`` of svgelements Points.

    Each is the standard approximation (tangent lengths ``4/3 tan(dt/4)``), within
    2.7e-4 radii of the arc for a quarter turn.
    """
    if arc.sweep == 0 or arc.rx == 0 or arc.ry == 0:
        return [(arc.start, arc.start, arc.end, arc.end)]
    theta, t0, sweep = arc.get_rotation(), arc.get_start_t(), arc.sweep
    count = max(1, math.ceil(abs(sweep) / (math.pi / 2) - 1e-9))
    dt = sweep / count
    k = 4 / 3 * math.tan(dt / 4)
    cos_r, sin_r = math.cos(theta), math.sin(theta)
    cx, cy, rx, ry = arc.center.x, arc.center.y, arc.rx, arc.ry

    def at(t):
        x, y, dx, dy = rx * math.cos(t), ry * math.sin(t), -rx * math.sin(t), ry * math.cos(t)
        return (svgelements.Point(cx + cos_r * x - sin_r * y, cy + sin_r * x + cos_r * y),
                svgelements.Point(cos_r * dx - sin_r * dy, sin_r * dx + cos_r * dy))

    out = []
    for i in range(count):
        (p0, d0), (p3, d3) = at(t0 + i * dt), at(t0 + (i + 1) * dt)
        out.append((p0, p0 + d0 * k, p3 - d3 * k, p3))
    out[0] = (arc.start,) + out[0][1:]  # the exact ends, as the neighbouring segments have them
    out[-1] = out[-1][:3] + (arc.end,)
    return out


def _stroke(element, matrix, width, stroke, notes):
    det = abs(np.linalg.det(matrix[:, :2]))
    s = np.linalg.svd(matrix[:, :2], compute_uv=False)
    if s[0] - s[1] > 1e-6 * s[0]:
        notes.add("stroke under a non-uniform scale", "drawn with the mean width")
    half = 0.5 * width * math.sqrt(det)
    dash = str(element.values.get("stroke-dasharray", "none")).strip()
    if dash not in ("none", "", "0"):
        notes.add("stroke-dasharray", "dashes drawn solid")
    subpaths = _pieces(element, matrix, cubic=False)
    if isinstance(element, (svgelements.Rect, svgelements.Circle, svgelements.Ellipse, svgelements.Polygon)):
        subpaths = [(pieces, True) for pieces, _ in subpaths]
    chains = []
    for pieces, closed in subpaths:
        if closed and np.hypot(*(pieces[-1][-1] - pieces[0][0])) > 1e-9:
            pieces = pieces + [(pieces[-1][-1], pieces[0][0])]
        chains.append(pieces)
    cap = str(element.values.get("stroke-linecap", "butt")).strip()
    join = str(element.values.get("stroke-linejoin", "miter")).strip()
    if cap != "round" and any(not closed for _, closed in subpaths):
        notes.add(f"stroke-linecap={cap}", "drawn round")
    if join != "round" and any(_has_corner(c, closed) for c, (_, closed) in zip(chains, subpaths)):
        notes.add(f"stroke-linejoin={join}", "drawn round")
    return svg_shapes.stroke_layers(chains, half, *stroke)


def _has_corner(pieces, closed):
    """Whether a chain turns sharply (over 1 degree) where two pieces meet."""
    def tangent(points, end):
        pts = points[::-1] if end else points
        for p in pts[1:]:
            d = (pts[0] - p) if end else (p - pts[0])
            if np.hypot(*d) > 1e-9:
                return d / np.hypot(*d)
        return None

    pairs = list(zip(pieces, pieces[1:])) + ([(pieces[-1], pieces[0])] if closed else [])
    for a, b in pairs:
        ta, tb = tangent(a, True), tangent(b, False)
        if ta is not None and tb is not None and ta @ tb < math.cos(math.radians(1)):
            return True
    return False


def read_svg(path_or_text, *, size=None, background=1.0, softness=None):
    """Read an SVG drawing: ``(renderer, params)``, with ``renderer(params)`` drawing it.

    Args:
        path_or_text: a file path, or the SVG document itself (a string
            starting with ``<``, or bytes).
        size: the image size: ``None`` (the SVG's own ``width``/``height`` in
            pixels, or its ``viewBox``, shrunk to at most
            :data:`DEFAULT_MAX_SIDE` on the longer side), ``N`` (the longer
            side, aspect kept) or ``(H, W)`` (the drawing fitted inside,
            centred: ``preserveAspectRatio="xMidYMid meet"``).
        background: what shows where nothing is painted (SVG's transparent
            canvas): a number or an RGB triple in ``[0, 1]`` (default white).
            A first element that is an opaque rectangle covering the whole
            image (as in the ``shapes.svg`` that ``shapegrad fit`` writes)
            becomes the background instead.
        softness: the Render's edge width in pixels; default :data:`SVG_SOFTNESS`
            (0.75, nearer to an SVG renderer's anti-aliasing than Render's 1).

    Returns:
        ``renderer``: a :class:`shapegrad.Render` (``channels=3``,
        ``resolution`` ``N`` if square else ``(H, W)``), shapes in document
        order; ``params``: ``(1, P)`` float32 normalised parameters. An SVG
        that paints nothing gives one fully transparent disk.

    Conventions: pixel ``(i, j)`` of the image covers the device square
    ``[j, j+1] x [i, i+1]`` (as in cairo, a browser, ``cairosvg``), so its
    centre, the Render's point ``(i, j)``, is the SVG point mapped to
    ``(j + 0.5, i + 0.5)``. Lengths of the kinds are in units of ``min(H, W)``.

    Raises:
        SVGError: (a ``ValueError``) the file is not XML, declares entities,
            has too many elements or too deep nesting, a bad path, a ``<use>``
            cycle, or cannot be read. Skipped or approximated features each
            give one :class:`SVGWarning`.

    Example:
        >>> import keras
        >>> svg = ('<svg xmlns="http://www.w3.org/2000/svg" width="16" height="16">'
        ...        '<circle cx="8" cy="8" r="4" fill="red"/></svg>')
        >>> renderer, params = read_svg(svg)
        >>> renderer.spec.shapes, params.shape
        ((('disk', 1),), (1, 7))
        >>> image = keras.ops.convert_to_numpy(renderer(params))[0]
        >>> image[7, 7].round(2).tolist(), image[0, 0].round(2).tolist()
        ([1.0, 0.0, 0.0], [1.0, 1.0, 1.0])
    """
    layers, (h, w) = svg_layers(path_or_text, size=size)
    if layers and _covers(layers[0], h, w):
        background = layers[0].color
        layers = layers[1:]
    if not layers:  # nothing painted: one invisible shape (a Render needs one)
        layers = [svg_shapes.Drawn("disk", {"center": [0.0, 0.0], "radius": [0.0]}, (0.0, 0.0, 0.0), 0.0)]
    shapes, params = svg_shapes.pack(layers, h, w)
    if isinstance(background, (list, tuple, np.ndarray)):
        background = [float(v) for v in background]
    softness = SVG_SOFTNESS if softness is None else softness
    renderer = Render(shapes, resolution=h if h == w else (h, w), channels=3, softness=softness,
                      background=background)
    return renderer, params.astype(np.float32)[None]


def _covers(layer, h, w):
    """Whether ``layer`` is an opaque, square-cornered box covering the whole ``h x w`` image."""
    if layer.family != "box" or layer.opacity < 1.0 or layer.geometry["corner"][0] > 0:
        return False
    u = np.abs(np.asarray(layer.geometry["direction"], float))
    if not (np.allclose(u, [1, 0]) or np.allclose(u, [0, 1])):
        return False
    half = layer.geometry["half_size"][::-1] if u[1] > u[0] else layer.geometry["half_size"]
    c = np.asarray(layer.geometry["center"], float)
    eps = 1e-6
    return (c[0] - half[0] <= -0.5 + eps and c[0] + half[0] >= h - 0.5 - eps
            and c[1] - half[1] <= -0.5 + eps and c[1] + half[1] >= w - 0.5 - eps)
