"""From SVG geometry to shapegrad kinds: which kind draws an element exactly, and its parameters.

Its one concern is the mapping; it knows nothing of XML or styles
(:mod:`shapegrad.io.svg_read` hands it geometry in pixels and a colour).

Coordinates are those of :class:`shapegrad.Render`: ``(row, col)`` pixels,
pixel ``(i, j)`` at the point ``(i, j)`` (an SVG device point ``(X, Y)``, whose
pixel ``(i, j)`` is the square ``[j, j+1] x [i, i+1]``, is ``(Y - 0.5, X - 0.5)``).

A :class:`Drawn` is one painted layer (a fill, or a stroke) of one element.
Kinds (exact in every case):

- ``disk``: a circle under a transform that keeps it a circle; ``ellipse``:
  a circle or ellipse under any other affine transform (its image is an ellipse);
- ``box``: a rectangle whose transformed sides stay perpendicular (rounded
  corners too, when they stay circular), else ``polygon4`` / a path;
- ``polygon<V>``: a simple polygon of 3 to 64 vertices (else a path);
- ``segment`` / ``bezier``: a stroke of one straight / quadratic piece;
- ``path<M>[x<K>][eo]``: every other fill, ``K`` closed subpaths of ``M`` cubic
  segments (lines and quadratics are exact cubics, arcs come as cubics from
  :mod:`svgelements`); ``stroke<M>[x<K>]``: every other stroke, ``K`` chains.

:func:`pack` lays the layers out in document order: consecutive layers of the
same kind share one entry of ``shapes``; consecutive path (or stroke) layers
share one kind padded to their largest ``M`` and ``K`` while that at most
doubles their work (padding is exact: zero-length segments at a subpath's
start, degenerate subpaths on a point of the outline).

Example:
    >>> d = Drawn("disk", {"center": [7.5, 7.5], "radius": [4.0]}, (1.0, 0.0, 0.0), 1.0)
    >>> shapes, params = pack([d], 16, 16)
    >>> shapes, params.round(4).tolist()
    ([('disk', 1)], [0.4688, 0.4688, 0.25, 1.0, 0.0, 0.0, 1.0])
"""

import dataclasses

import numpy as np

from shapegrad.render.primitives import primitive

__all__ = [
    "MAX_SEGMENTS",
    "MAX_SUBPATHS",
    "Drawn",
    "as_cubic",
    "box_or_polygon",
    "ellipse_or_disk",
    "fill_layers",
    "is_simple_polygon",
    "pack",
    "stroke_layers",
]

MAX_SEGMENTS = 64  # cubic segments per subpath of a path kind (its largest M); longer ones are cut (fill_layers)
MAX_SUBPATHS = 16  # subpaths of a path kind (its largest K); more make several shapes (fill_layers)


@dataclasses.dataclass
class Drawn:
    """One painted layer of one element, in pixels.

    Attributes:
        family: ``"disk"``, ``"ellipse"``, ``"box"``, ``"polygon"``,
            ``"segment"``, ``"bezier"``, ``"fill"``, ``"filleo"``, ``"stroke"``.
        geometry: ``{field: values}`` in pixels (positions ``(row, col)``,
            directions as unit vectors ``(row, col)``); for ``fill``/``filleo``
            ``{"subpaths": [array (3 m, 2)]}`` (closed, ``m`` segments: start,
            control, control per segment), for ``stroke``
            ``{"subpaths": [array (3 m + 1, 2)], "half_width": [w]}``.
        color: ``(r, g, b)`` in ``[0, 1]``.
        opacity: in ``[0, 1]``.
    """

    family: str
    geometry: dict
    color: tuple
    opacity: float

    def size(self):
        """``(M, K)``: most segments of a subpath and number of subpaths (``(0, 0)`` for the simple kinds)."""
        subpaths = self.geometry.get("subpaths")
        if subpaths is None:
            return 0, 0
        return max((len(s) - (self.family == "stroke")) // 3 for s in subpaths), len(subpaths)

    def kind(self, m=None, k=None):
        """The shapegrad kind that draws it (paths: padded to ``m`` segments and ``k`` subpaths if given)."""
        if self.family == "polygon":
            return f"polygon{len(self.geometry['vertices']) // 2}"
        if self.family not in ("fill", "filleo", "stroke"):
            return self.family
        own_m, own_k = self.size()
        m, k = m or own_m, k or own_k
        base = "stroke" if self.family == "stroke" else "path"
        return f"{base}{m}" + (f"x{k}" if k > 1 else "") + ("eo" if self.family == "filleo" else "")


def ellipse_or_disk(matrix, center, rx, ry, color, opacity):
    """The layer of an ellipse ``(center, rx, ry)`` (axis-aligned, local units) under ``matrix``.

    ``matrix``: 2x3 affine, local ``(x, y)`` -> render ``(row, col)``. An affine image
    of an ellipse is an ellipse: its semi-axes are the singular values of
    ``A diag(rx, ry)``; a ``disk`` if they are equal.
    """
    a = matrix[:, :2] @ np.diag([rx, ry])
    u, s, _ = np.linalg.svd(a)
    c = matrix[:, :2] @ np.asarray(center, float) + matrix[:, 2]
    if abs(s[0] - s[1]) <= 1e-9 * max(s[0], 1e-300):
        return Drawn("disk", {"center": c, "radius": [s[0]]}, color, opacity)
    return Drawn("ellipse", {"center": c, "radii": s, "direction": u[:, 0]}, color, opacity)


def box_or_polygon(matrix, x, y, width, height, corner, color, opacity):
    """The layer of a rectangle (local units, corner radius ``corner``) under ``matrix``, or None.

    A ``box`` when the transformed sides stay perpendicular (and a rounded
    corner stays circular), a ``polygon4`` when the corners are square but the
    sides are skewed; None otherwise (the caller draws a path).
    """
    a = matrix[:, :2] @ np.float64([width, 0.0])
    b = matrix[:, :2] @ np.float64([0.0, height])
    la, lb = np.linalg.norm(a), np.linalg.norm(b)
    if la == 0 or lb == 0:
        return None
    perpendicular = abs(a @ b) <= 1e-9 * la * lb
    if perpendicular:
        scale_a, scale_b = la / width, lb / height
        if corner and abs(scale_a - scale_b) > 1e-9 * scale_a:
            return None  # the rounded corners become elliptic
        c = matrix[:, :2] @ np.float64([x + width / 2, y + height / 2]) + matrix[:, 2]
        half = np.float64([la / 2, lb / 2])
        fraction = min(corner * scale_a / min(half), 1.0) if corner else 0.0
        return Drawn("box", {"center": c, "half_size": half, "direction": a / la, "corner": [fraction]},
                     color, opacity)
    if corner:
        return None
    local = np.float64([[x, y], [x + width, y], [x + width, y + height], [x, y + height]])
    pts = local @ matrix[:, :2].T + matrix[:, 2]
    return Drawn("polygon", {"vertices": pts.ravel()}, color, opacity)


def is_simple_polygon(points):
    """Whether the closed polygon ``points`` ``(V, 2)`` has no repeated vertex and no crossing edges."""
    p = np.asarray(points, float)
    n = len(p)
    if n < 3 or len(np.unique(p.round(9), axis=0)) < n:
        return False
    edges = [(p[i], p[(i + 1) % n]) for i in range(n)]

    def cross(o, a, b):
        return (a[0] - o[0]) * (b[1] - o[1]) - (a[1] - o[1]) * (b[0] - o[0])

    for i in range(n):
        for j in range(i + 1, n):
            if j == i + 1 or (i == 0 and j == n - 1):
                continue  # neighbours share a vertex
            (a, b), (c, d) = edges[i], edges[j]
            d1, d2, d3, d4 = cross(c, d, a), cross(c, d, b), cross(a, b, c), cross(a, b, d)
            if (d1 * d2 <= 0) and (d3 * d4 <= 0):
                return False
    return True


def fill_layers(subpaths, evenodd, color, opacity):
    """The fill of cubic ``subpaths`` (lists of ``(p0, p1, p2, p3)`` pieces): ``(layers, notes)``.

    Subpaths are closed (a straight segment back to the start if needed).
    Usually one layer; more when the path has over :data:`MAX_SUBPATHS`
    subpaths: they are split into groups of subpaths whose bounding boxes
    (1 px apart) do not touch, which draw the same image (no hole or overlap
    crosses a split); a group still too large is cut in order, which can fill
    a hole whose outline lands in another shape (noted). A subpath of more
    than :data:`MAX_SEGMENTS` segments is cut into closed pieces joined to
    its first point by straight chords, travelled once each way: the winding
    numbers are exact, but the path kinds may draw the chords as a faint
    seam (noted). ``notes``: a set of feature names that were approximated.
    """
    closed, notes = [], set()
    for pieces in subpaths:
        if not pieces:
            continue
        start, end = pieces[0][0], pieces[-1][3]
        if np.hypot(*(np.asarray(end) - start)) > 1e-9:
            pieces = pieces + [_line(end, start)]
        chunks = _chunks(pieces, start)
        if len(chunks) > 1:
            notes.add(f"subpaths of more than {MAX_SEGMENTS} segments")
        closed += [np.concatenate([np.asarray(q[:3], float) for q in chunk]) for chunk in chunks]
    if not closed:
        return [], notes
    groups = _disjoint_groups(closed)
    if any(len(g) > MAX_SUBPATHS for g in groups):
        notes.add(f"paths of more than {MAX_SUBPATHS} overlapping subpaths")
    family = "filleo" if evenodd else "fill"
    return [Drawn(family, {"subpaths": g}, color, opacity) for g in _bins(groups)], notes


def _disjoint_groups(subpaths):
    """``subpaths`` grouped so that no two groups' bounding boxes come within 1 px (union-find)."""
    boxes = [(s.min(axis=0) - 1, s.max(axis=0) + 1) for s in subpaths]
    parent = list(range(len(subpaths)))

    def root(i):
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    if len(subpaths) > MAX_SUBPATHS:
        for i in range(len(subpaths)):
            for j in range(i + 1, len(subpaths)):
                if np.all(boxes[i][0] <= boxes[j][1]) and np.all(boxes[j][0] <= boxes[i][1]):
                    parent[root(i)] = root(j)
    groups = {}
    for i, s in enumerate(subpaths):
        groups.setdefault(root(i) if len(subpaths) > MAX_SUBPATHS else 0, []).append(s)
    return list(groups.values())


def _bins(groups):
    """Groups packed in order into lists of at most MAX_SUBPATHS subpaths (a larger group is cut)."""
    bins, current = [], []
    for group in groups:
        for i in range(0, len(group), MAX_SUBPATHS):
            part = group[i : i + MAX_SUBPATHS]
            if len(current) + len(part) > MAX_SUBPATHS:
                bins.append(current)
                current = []
            current = current + part
    return bins + [current] if current else bins


def _chunks(pieces, origin):
    """Closed runs of at most MAX_SEGMENTS pieces whose windings add up to those of ``pieces`` (closed at ``origin``)."""
    if len(pieces) <= MAX_SEGMENTS:
        return [pieces]
    size = MAX_SEGMENTS - 2  # room for the chords to and from the origin
    runs = []
    for i in range(0, len(pieces), size):
        run = list(pieces[i : i + size])
        if np.hypot(*(np.asarray(run[0][0]) - origin)) > 1e-9:
            run.insert(0, _line(origin, run[0][0]))
        if np.hypot(*(np.asarray(run[-1][3]) - origin)) > 1e-9:
            run.append(_line(run[-1][3], origin))
        runs.append(run)
    return runs


def stroke_layers(chains, half_width, color, opacity):
    """The stroke layers of ``chains`` (lists of pieces; a closed one ends at its start).

    One straight piece: ``segment``; one quadratic piece (a ``(p0, q, p3)``
    triple): ``bezier``; else ``stroke`` kinds. Chains longer than
    :data:`MAX_SEGMENTS` are cut, and more than :data:`MAX_SUBPATHS` chains
    make several layers: exact with round caps and joins (a stroke is the
    union of its pieces), but where the pieces overlap a translucent stroke
    is painted twice.
    """
    chains = [c for c in chains if c]
    if not chains:
        return []
    if len(chains) == 1 and len(chains[0]) == 1 and len(chains[0][0]) in (2, 3):
        piece = [np.asarray(p, float) for p in chains[0][0]]
        if len(piece) == 2:
            return [Drawn("segment", {"a": piece[0], "b": piece[1], "half_width": [half_width]}, color, opacity)]
        return [Drawn("bezier", {"p0": piece[0], "p1": piece[1], "p2": piece[2], "half_width": [half_width]},
                      color, opacity)]
    out = []
    for chain in chains:
        chain = [as_cubic(q) for q in chain]
        for i in range(0, len(chain), MAX_SEGMENTS):
            run = chain[i : i + MAX_SEGMENTS]
            out.append(np.concatenate([np.asarray(q[:3], float) for q in run] + [np.asarray(run[-1][3:], float)]))
    return [Drawn("stroke", {"subpaths": out[i : i + MAX_SUBPATHS], "half_width": [half_width]}, color, opacity)
            for i in range(0, len(out), MAX_SUBPATHS)]


def _line(a, b):
    a, b = np.asarray(a, float), np.asarray(b, float)
    return (a, a + (b - a) / 3, a + 2 * (b - a) / 3, b)


def as_cubic(piece):
    """A piece ``(p0, p3)``, ``(p0, q, p3)`` or ``(p0, p1, p2, p3)`` as the cubic ``(p0, p1, p2, p3)`` (exact)."""
    if len(piece) == 2:
        return _line(*piece)
    if len(piece) == 3:
        p0, q, p2 = (np.asarray(p, float) for p in piece)
        return (p0, p0 + 2 / 3 * (q - p0), p2 + 2 / 3 * (q - p2), p2)
    return tuple(np.asarray(p, float) for p in piece)


def _padded_points(layer, m, k):
    """The ``points`` numbers of a path or stroke layer padded to ``m`` segments and ``k`` subpaths (pixels)."""
    rows = []
    stroke = layer.family == "stroke"
    for s in layer.geometry["subpaths"]:
        own = (len(s) - stroke) // 3
        pad = np.repeat(s[:1], 3 * (m - own), axis=0)  # zero-length segments at the subpath's start
        rows.append(np.concatenate([pad, s]) if len(pad) else s)
    anchor = layer.geometry["subpaths"][0][:1]  # a point on the outline: an empty subpath there changes nothing
    rows += [np.repeat(anchor, 3 * m + stroke, axis=0)] * (k - len(rows))
    return np.concatenate(rows).ravel()


def _numbers(layer, kind, height, width, m=None, k=None):
    """The normalised parameters of one layer drawn as ``kind``, in the kind's field order."""
    geometry = dict(layer.geometry)
    if "subpaths" in geometry:
        geometry["points"] = _padded_points(layer, m, k)
    resolution = (height, width)
    out = []
    for field in primitive(kind).all_fields(3):
        if field.name == "color":
            value = np.asarray(layer.color, float)
        elif field.name == "opacity":
            value = np.float64([layer.opacity])
        elif field.kind == "direction":
            value = np.asarray(geometry[field.name], float)
        else:
            value = field.from_natural(np.asarray(geometry[field.name], float), resolution)
        out.append(np.ravel(value))
    return np.concatenate(out)


_PATHS = ("fill", "filleo", "stroke")


def pack(layers, height, width):
    """``(shapes, params)``: the ``[(kind, count), ...]`` of a Render and its ``(P,)`` parameters, in document order.

    Consecutive layers of one simple kind share an entry; consecutive path
    layers of one family (``fill``, ``filleo``, ``stroke``) share a kind
    padded to their largest ``(M, K)`` while the padded work
    (``count * M * K``) stays within twice their own.
    """
    runs = []  # [family or kind, [layers], (m, k)]
    for layer in layers:
        m, k = layer.size()
        last = runs[-1] if runs else None
        if layer.family in _PATHS:
            if last and last[0] == layer.family:
                big_m, big_k = max(last[2][0], m), max(last[2][1], k)
                own = sum(a * b for a, b in (x.size() for x in last[1])) + m * k
                if (len(last[1]) + 1) * big_m * big_k <= 2 * own:
                    last[1].append(layer)
                    last[2] = (big_m, big_k)
                    continue
            runs.append([layer.family, [layer], (m, k)])
        elif last and last[0] == layer.kind():
            last[1].append(layer)
        else:
            runs.append([layer.kind(), [layer], (0, 0)])
    shapes, numbers = [], []
    for key, members, (m, k) in runs:
        kind = members[0].kind(m, k) if key in _PATHS else key
        shapes.append((kind, len(members)))
        numbers += [_numbers(x, kind, height, width, m, k) for x in members]
    params = np.concatenate(numbers) if numbers else np.zeros(0)
    return shapes, params
