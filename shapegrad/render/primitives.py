"""The parameter schema: what every number of a renderer's parameter vector means.

Its one concern is the layout and the units of the parameters, shared by both
renderers (:class:`shapegrad.Render` and :class:`shapegrad.Cones`, whose
``layer.spec`` is a :class:`RenderSpec`); it holds no rendering math (the
signed distances live in :mod:`shapegrad.sdf`, their use in
:mod:`shapegrad.render`).

- :class:`Field`: one named group of numbers (a centre, a radius, a
  direction, a colour...), with its *kind*, its normalised range, the range
  to sample synthetic scenes from, and the map to natural units (pixels,
  degrees).
- :class:`Primitive`: a kind of shape (``"disk"``, ``"box"``...) and its fields;
  :func:`primitive` and :func:`primitive_kinds` are the registry.
- :func:`parse_shapes` / :func:`format_shapes`: ``"disk*3,box*2"`` and back.
- :class:`RenderSpec`: where every field of every shape sits in the flat
  parameter vector, and the maps to and from natural units.

Normalised units. The image has ``H`` rows and ``W`` columns (``H = W = N``
for a square image); pixel ``(i, j)`` is the point ``(i, j)``; ``S = min(H, W)``:

========== ===================================== ========================= ===========
kind       normalised value ``v``                natural value             range of v
========== ===================================== ========================= ===========
position   fraction of the image, ``(row, col)`` ``(H v0, W v1)`` pixels   [0, 1]
size       fraction of the shorter side          ``S * v`` pixels          [0, 1]
direction  2-vector, any non-zero length         ``atan2(v1, v0)`` degrees [-1, 1]
angle      fraction of pi                        ``180 * v`` degrees       [0, 1]
fraction   dimensionless ratio                   ``v``                     [0, 1]
color      intensity per channel                 ``v``                     [0, 1]
opacity    alpha                                 ``v``                     [0, 1]
========== ===================================== ========================= ===========

Non-square images: a position spans the image on each axis (``v = (0.5,
0.5)`` is the centre of an 80x48 image, as the encoder's coordinate channels
``(i / H, j / W)`` read it), while lengths, directions and angles are those of
the pixel grid, with lengths in units of the shorter side (a disk of radius
``0.5`` touches the long sides of the image). On a square image all of this is
``N * v``.

A sigmoid head fits every kind but ``direction``, which wants a 2-vector (for
example a ``tanh`` pair, or a normalised one); a zero direction (largest
component below 1e-12) is read as ``(1, 0)`` (down the rows), with zero
gradient.

Example:
    >>> spec = RenderSpec("disk*2", resolution=16)
    >>> spec.size, [s.field.name for s in spec.fields_of(0)]
    (10, ['center', 'radius', 'color', 'opacity'])
    >>> natural = spec.to_natural([[0.5, 0.5, 0.25, 1.0, 1.0, 0.2, 0.2, 0.1, 0.5, 1.0]])
    >>> natural[0]["center"].tolist(), natural[0]["radius"].tolist()
    ([[8.0, 8.0]], [[4.0]])
"""

import dataclasses
import numbers
import re

import numpy as np

from shapegrad import _validate

__all__ = [
    "FAR",
    "FIELD_KINDS",
    "Field",
    "FieldSlice",
    "Primitive",
    "RenderSpec",
    "fields_for",
    "format_shapes",
    "parse_kinds",
    "parse_shapes",
    "path_layout",
    "primitive",
    "primitive_kinds",
    "spec_table",
]

# Renderers clip their parameters to this magnitude before use: 1e12 image sizes
# away the picture no longer changes, and N * v cannot overflow float32.
FAR = 1e12

FIELD_KINDS = ("position", "size", "direction", "angle", "fraction", "color", "opacity")
_UNITS = {
    "position": "px",
    "size": "px",
    "direction": "deg",
    "angle": "deg",
    "fraction": "1",
    "color": "1",
    "opacity": "1",
}


@dataclasses.dataclass(frozen=True)
class Field:
    """One named group of parameters of a primitive.

    Attributes:
        name: for example ``"center"``.
        size: how many numbers.
        kind: one of :data:`FIELD_KINDS` (see the module docstring for units).
        low, high: the normalised range of each number (what an encoder's
            head should cover; inputs outside it still render, finitely).
        typical: ``(low, high)`` normalised range to sample synthetic scenes
            from (shapes mostly inside the image, not degenerate); unused for
            directions, which are sampled uniformly on the circle.
        period: for ``direction`` fields, the symmetry period in degrees
            (180 for an ellipse or box axis, 360 for a cone axis); else None.
        doc: one line for the README table.
    """

    name: str
    size: int
    kind: str
    low: float
    high: float
    typical: tuple
    doc: str
    period: float = None

    @property
    def unit(self):
        """Natural unit: ``"px"``, ``"deg"`` or ``"1"``."""
        return _UNITS[self.kind]

    def to_natural(self, values, resolution):
        """Map normalised values ``(..., size)`` to natural units (NumPy float64).

        ``resolution``: ``N`` or ``(H, W)``. Positions become pixels
        ``(H v0, W v1)`` (pairs, row first), sizes ``min(H, W) * v`` pixels,
        angles degrees; a direction ``(..., 2)`` becomes one angle ``(..., 1)``
        in degrees in ``[0, period)``.
        """
        v = np.asarray(values, dtype=np.float64)
        if self.kind in ("position", "size"):
            return _scale(self.kind, resolution, v.shape[-1]) * v
        if self.kind == "angle":
            return 180.0 * v
        if self.kind == "direction":
            deg = np.degrees(np.arctan2(v[..., 1:2], v[..., 0:1]))
            return np.mod(deg, self.period)
        return v

    def from_natural(self, values, resolution):
        """Inverse of :meth:`to_natural` (a direction comes back as a unit vector)."""
        v = np.asarray(values, dtype=np.float64)
        if self.kind in ("position", "size"):
            return v / _scale(self.kind, resolution, v.shape[-1])
        if self.kind == "angle":
            return v / 180.0
        if self.kind == "direction":
            rad = np.radians(v[..., 0])
            return np.stack([np.cos(rad), np.sin(rad)], axis=-1)
        return v


def height_width(resolution):
    """``(H, W)`` of a resolution ``N`` or ``(H, W)``."""
    if isinstance(resolution, (list, tuple)):
        return int(resolution[0]), int(resolution[1])
    return int(resolution), int(resolution)


def _scale(kind, resolution, size):
    """Pixels per normalised unit of a position or size field of ``size`` numbers."""
    if not isinstance(resolution, (list, tuple)):
        return resolution  # square: N * v, exactly as always
    h, w = height_width(resolution)
    if kind == "size":
        return min(h, w)
    return np.tile(np.float64([h, w]), size // 2)


def _position(name, doc, typical=(0.2, 0.8)):
    return Field(name, 2, "position", 0.0, 1.0, typical, doc)


def _size(name, size, doc, typical):
    return Field(name, size, "size", 0.0, 1.0, typical, doc)


def _direction(name, doc, period):
    return Field(name, 2, "direction", -1.0, 1.0, (-1.0, 1.0), doc, period)


@dataclasses.dataclass(frozen=True)
class Primitive:
    """A kind of shape: its name and its geometric fields.

    Its signed distance is :func:`shapegrad.render.distance_function` (the
    schema holds no math).

    Attributes:
        kind: the name used in ``Render(shapes=...)``.
        fields: the geometric fields, in order (colour and opacity follow them
            in the parameter vector, see :meth:`all_fields`).
        doc: one line for the README.
        sampler: optional ``sampler(rng, count) -> {field name: (count, size)}``
            for fields that are not drawn uniformly from their ``typical`` range.
    """

    kind: str
    fields: tuple
    doc: str
    sampler: object = None

    def all_fields(self, channels):
        """Geometric fields, then ``color`` (``channels`` numbers) and ``opacity``."""
        return self.fields + (
            Field("color", channels, "color", 0.0, 1.0, (0.3, 1.0), "intensity of each channel"),
            Field("opacity", 1, "opacity", 0.0, 1.0, (0.6, 1.0), "alpha; 1 is opaque"),
        )

    def size(self, channels):
        """Number of parameters of one shape."""
        return sum(f.size for f in self.all_fields(channels))



def _sample_polygon(vertices):
    def sample(rng, count):
        # Star-shaped around a centre (hence simple): sorted angles, radii 0.5-1 x R.
        center = rng.uniform(0.35, 0.65, (count, 1, 2))
        radius = rng.uniform(0.15, 0.3, (count, 1, 1))
        gaps = rng.uniform(0.5, 1.0, (count, vertices))
        angles = 2 * np.pi * np.cumsum(gaps, axis=1) / gaps.sum(axis=1, keepdims=True)
        angles += rng.uniform(0, 2 * np.pi, (count, 1))
        r = radius * rng.uniform(0.6 if vertices > 3 else 0.9, 1.0, (count, vertices, 1))
        pts = center + r * np.stack([np.cos(angles), np.sin(angles)], axis=-1)
        return {"vertices": pts.reshape(count, 2 * vertices)}

    return sample


def _sample_stroke(rng, count, control):
    a = rng.uniform(0.15, 0.85, (count, 2))
    angle = rng.uniform(0, 2 * np.pi, count)
    length = rng.uniform(0.3, 0.6, (count, 1))
    b = np.clip(a + length * np.stack([np.cos(angle), np.sin(angle)], -1), 0.05, 0.95)
    out = {"half_width": rng.uniform(0.015, 0.05, (count, 1))}
    if control:
        bend = rng.uniform(-0.35, 0.35, (count, 1)) * np.stack([-np.sin(angle), np.cos(angle)], -1)
        out.update(p0=a, p1=np.clip((a + b) / 2 + bend, 0.0, 1.0), p2=b)
    else:
        out.update(a=a, b=b)
    return out


def _polygon_primitive(vertices, kind):
    return Primitive(
        kind,
        (
            Field(
                "vertices",
                2 * vertices,
                "position",
                0.0,
                1.0,
                (0.15, 0.85),
                f"{vertices} vertices (row, col, row, col, ...) in order, either orientation",
            ),
        ),
        f"simple polygon with {vertices} vertices, convex or not",
        _sample_polygon(vertices),
    )


def _sample_path(segments, subpaths):
    def sample(rng, count):
        # Each subpath a perturbed circle (or, one time in three, a star), either orientation:
        # M points on a circle at jittered angles and radii, with handles along the tangent of
        # the length that draws a circle (4/3 tan(pi / 2M) of the radius), jittered too.
        out = []
        for _ in range(subpaths):
            center = rng.uniform(0.35, 0.65, (count, 1, 2))
            radius = rng.uniform(0.12, 0.3, (count, 1, 1))
            gaps = rng.uniform(0.6, 1.0, (count, segments))
            angles = 2 * np.pi * np.cumsum(gaps, axis=1) / gaps.sum(axis=1, keepdims=True)
            turn = rng.choice([-1.0, 1.0], (count, 1))  # the orientation
            angles = turn * (angles + rng.uniform(0, 2 * np.pi, (count, 1)))
            r = radius * rng.uniform(0.7, 1.0, (count, segments, 1))
            star = rng.uniform(size=(count, 1, 1)) < 1 / 3
            handle = np.where(star, 0.0, 4 / 3 * np.tan(np.pi / (2 * segments))) * rng.uniform(0.7, 1.3, (count, segments, 1))
            radial = np.stack([np.cos(angles), np.sin(angles)], axis=-1)
            tangent = np.stack([-np.sin(angles), np.cos(angles)], axis=-1) * turn[..., None]
            pts = center + r * radial
            start = pts + handle * r * tangent
            end = np.roll(pts - handle * r * tangent, -1, axis=1)
            if segments > 2:  # a star: the controls on the chords, the points alternating in and out
                pts = np.where(star, center + np.where(np.arange(segments)[:, None] % 2, 0.5, 1.0) * r * radial, pts)
                nxt = np.roll(pts, -1, axis=1)
                start = np.where(star, (2 * pts + nxt) / 3, start)
                end = np.where(star, (pts + 2 * nxt) / 3, end)
            out.append(np.stack([pts, start, end], axis=2).reshape(count, 6 * segments))
        return {"points": np.clip(np.concatenate(out, axis=1), 0.02, 0.98)}

    return sample


def _sample_chain(segments, chains):
    def sample(rng, count):
        # A wandering chain: each segment turns by up to 60 degrees, 0.1-0.25 image sizes long,
        # its controls on the tangents at a third of its length.
        out = []
        for _ in range(chains):
            heading = rng.uniform(0, 2 * np.pi, (count, 1)) + np.cumsum(
                rng.uniform(-np.pi / 3, np.pi / 3, (count, segments + 1)), axis=1
            )
            step = rng.uniform(0.1, 0.25, (count, segments, 1))
            direction = np.stack([np.cos(heading), np.sin(heading)], axis=-1)  # (count, M + 1, 2)
            chord = step * (direction[:, :-1] + direction[:, 1:]) / 2
            pts = rng.uniform(0.3, 0.7, (count, 1, 2)) + np.concatenate(
                [np.zeros((count, 1, 2)), np.cumsum(chord, axis=1)], axis=1
            )
            pts = pts - pts.mean(axis=1, keepdims=True) + rng.uniform(0.4, 0.6, (count, 1, 2))
            start = pts[:, :-1] + step / 3 * direction[:, :-1]
            end = pts[:, 1:] - step / 3 * direction[:, 1:]
            nodes = np.concatenate([np.stack([pts[:, :-1], start, end], axis=2).reshape(count, -1), pts[:, -1]], axis=1)
            out.append(nodes)
        return {"points": np.clip(np.concatenate(out, axis=1), 0.02, 0.98), "half_width": rng.uniform(0.015, 0.05, (count, 1))}

    return sample


def _path_primitive(segments, subpaths, evenodd, kind):
    rule = "even-odd" if evenodd else "nonzero"
    return Primitive(
        kind,
        (
            Field(
                "points",
                6 * segments * subpaths,
                "position",
                0.0,
                1.0,
                (0.15, 0.85),
                f"{subpaths} closed subpath(s) of {segments} cubic segments, each segment's start, "
                "control, control (row, col, ...); a subpath's last segment ends at its first point",
            ),
        ),
        f"filled closed cubic Bezier path, {subpaths} subpath(s) of {segments} segments, {rule} fill rule",
        _sample_path(segments, subpaths),
    )


def _stroke_primitive(segments, chains, kind):
    return Primitive(
        kind,
        (
            Field(
                "points",
                (6 * segments + 2) * chains,
                "position",
                0.0,
                1.0,
                (0.15, 0.85),
                f"{chains} open chain(s) of {segments} cubic segments: start, control, control, ..., "
                "end (row, col, ...); a closed outline ends at its start",
            ),
            _size("half_width", 1, "half the stroke width", (0.015, 0.05)),
        ),
        f"stroke along {chains} chain(s) of {segments} cubic Bezier segments, round caps and joins",
        _sample_chain(segments, chains),
    )


_PRIMITIVES = {
    "disk": Primitive(
        "disk",
        (
            _position("center", "centre"),
            _size("radius", 1, "radius", (0.08, 0.25)),
        ),
        "filled circle",
    ),
    "ellipse": Primitive(
        "ellipse",
        (
            _position("center", "centre"),
            _size("radii", 2, "semi-axes along axis 0 and axis 1", (0.06, 0.3)),
            _direction("direction", "axis 0 (row, col); axis 1 is it turned +90 degrees", 180.0),
        ),
        "filled, rotated ellipse",
    ),
    "box": Primitive(
        "box",
        (
            _position("center", "centre"),
            _size("half_size", 2, "half-extents along axis 0 and axis 1", (0.06, 0.25)),
            _direction("direction", "axis 0 (row, col); axis 1 is it turned +90 degrees", 180.0),
            Field(
                "corner",
                1,
                "fraction",
                0.0,
                1.0,
                (0.0, 0.5),
                "corner radius as a fraction of the smaller half-extent",
            ),
        ),
        "filled, rotated rectangle with optionally rounded corners",
    ),
    "triangle": _polygon_primitive(3, "triangle"),
    "segment": Primitive(
        "segment",
        (
            _position("a", "first end"),
            _position("b", "second end"),
            _size("half_width", 1, "half the stroke width", (0.015, 0.05)),
        ),
        "straight stroke with round caps",
        lambda rng, count: _sample_stroke(rng, count, control=False),
    ),
    "bezier": Primitive(
        "bezier",
        (
            _position("p0", "start"),
            _position("p1", "control point"),
            _position("p2", "end"),
            _size("half_width", 1, "half the stroke width", (0.015, 0.05)),
        ),
        "quadratic Bezier stroke with round caps",
        lambda rng, count: _sample_stroke(rng, count, control=True),
    ),
    "cone": Primitive(
        "cone",
        (
            _position("apex", "apex, as Cones' (a0, a1)"),
            _direction("axis", "axis, as Cones' (d0, d1)", 360.0),
            Field(
                "half_angle",
                1,
                "angle",
                0.0,
                1.0,
                (0.1, 0.4),
                "half-angle as a fraction of pi, as Cones' s",
            ),
        ),
        "2-D wedge, the Cones layer's shape (distance edge)",
    ),
}
_POLYGON = re.compile(r"polygon(\d+)$")
_MAX_VERTICES = 64
# path<M>, path<M>x<K>, and with "eo" the even-odd rule; stroke<M>, stroke<M>x<K>.
_PATH = re.compile(r"path(?:(\d+)(?:x(\d+))?)?(eo)?$")
_STROKE = re.compile(r"stroke(\d+)(?:x(\d+))?$")
_MAX_SEGMENTS = 64
_MAX_SUBPATHS = 16
_PATTERNS = (
    f"'polygon<V>' with 3 <= V <= {_MAX_VERTICES}, 'path<M>[x<K>][eo]' or 'stroke<M>[x<K>]' "
    f"with 1 <= M <= {_MAX_SEGMENTS} and 1 <= K <= {_MAX_SUBPATHS} ('path' is 'path4')"
)


def path_layout(kind):
    """``(segments M, subpaths K, fill rule or None)`` of a ``path`` or ``stroke`` kind, else ``None``.

    ``fill rule`` is ``"nonzero"`` or ``"evenodd"`` for a ``path`` kind, ``None``
    for a ``stroke`` (open chains). Sizes out of range give ``None`` too.

    Example:
        >>> path_layout("path4x2eo"), path_layout("path"), path_layout("stroke3"), path_layout("path0")
        ((4, 2, 'evenodd'), (4, 1, 'nonzero'), (3, 1, None), None)
    """
    if not isinstance(kind, str):
        return None
    match, rule = _PATH.match(kind), None
    if match:
        rule = "evenodd" if match.group(3) else "nonzero"
    else:
        match = _STROKE.match(kind)
    if not match:
        return None
    segments = int(match.group(1)) if match.group(1) else 4
    subpaths = int(match.group(2)) if match.group(2) else 1
    if not (1 <= segments <= _MAX_SEGMENTS and 1 <= subpaths <= _MAX_SUBPATHS):
        return None
    return segments, subpaths, rule


def primitive_kinds():
    """Names of the primitives; ``polygon<V>`` (3 <= V <= 64, e.g. ``polygon5``), ``path<M>[x<K>][eo]``
    and ``stroke<M>[x<K>]`` (1 <= M <= 64 cubic segments, 1 <= K <= 16 subpaths) are also accepted."""
    return tuple(_PRIMITIVES)


def primitive(kind):
    """The :class:`Primitive` called ``kind`` (raises ``ValueError`` if there is none)."""
    if kind in _PRIMITIVES:
        return _PRIMITIVES[kind]
    match = _POLYGON.match(kind) if isinstance(kind, str) else None
    if match and 3 <= int(match.group(1)) <= _MAX_VERTICES:
        return _polygon_primitive(int(match.group(1)), kind)
    layout = path_layout(kind)
    if layout is not None:
        segments, subpaths, rule = layout
        if rule is None:
            return _stroke_primitive(segments, subpaths, kind)
        return _path_primitive(segments, subpaths, rule == "evenodd", kind)
    raise ValueError(f"Expected a primitive kind, one of {list(_PRIMITIVES)} or {_PATTERNS}. Received: kind={kind!r}")


def parse_kinds(kinds, name="kinds"):
    """Normalise ``kinds`` (``"disk,box"`` or a sequence of names) to a tuple of distinct primitive kinds.

    Raises ``ValueError`` naming ``name``, the kinds there are, and what was received.

    Example:
        >>> parse_kinds("disk, box")
        ('disk', 'box')
    """
    names = tuple(k.strip() for k in kinds.split(",")) if isinstance(kinds, str) else kinds
    ok = isinstance(names, (list, tuple)) and len(names) > 0 and len(set(names)) == len(names)
    why = ""
    for kind in names if ok else ():
        try:
            primitive(kind)
        except (ValueError, TypeError):
            ok, why = False, f" (unknown kind {kind!r})"
            break
    if not ok:
        raise ValueError(
            f"Expected {name} to be a non-empty list of distinct primitives, each one of "
            f"{list(_PRIMITIVES)} or {_PATTERNS}{why}. Received: {name}={names!r}"
        )
    return tuple(names)


_SHAPES_HELP = (
    "a non-empty list of (kind, count) pairs or a string like 'disk*3,box*2', "
    "with kind one of {kinds}, 'polygon<V>', 'path<M>[x<K>][eo]' or 'stroke<M>[x<K>]' and count a positive integer"
)


def parse_shapes(shapes):
    """Normalise ``shapes`` to a tuple of ``(kind, count)`` pairs.

    Accepts a string ``"disk*3,box*2"`` (``"disk"`` alone means one), or a list
    of ``(kind, count)`` pairs and bare kind names. Raises ``ValueError`` naming
    ``shapes`` and what was received.

    Example:
        >>> parse_shapes("disk*3, box")
        (('disk', 3), ('box', 1))
    """

    def fail(why=""):
        help_ = _SHAPES_HELP.format(kinds=list(_PRIMITIVES))
        raise ValueError(f"Expected shapes to be {help_}{why}. Received: shapes={shapes!r}")

    pairs = []
    if isinstance(shapes, str):
        items = [s.strip() for s in shapes.split(",")]
        for item in items:
            kind, star, count = item.partition("*")
            kind, count = kind.strip(), count.strip()
            if not star:
                count = "1"
            if not re.fullmatch(r"[0-9]+", count):
                fail(f" (bad count {count!r} in {item!r})")
            pairs.append((kind, int(count)))
    elif isinstance(shapes, (list, tuple)):
        for item in shapes:
            if isinstance(item, str):
                pairs.append((item, 1))
            elif isinstance(item, (list, tuple)) and len(item) == 2:
                pairs.append(tuple(item))
            else:
                fail(f" (bad entry {item!r})")
    else:
        fail()
    if not pairs:
        fail(" (no shapes)")
    out = []
    for kind, count in pairs:
        if not isinstance(kind, str):
            fail(f" (bad kind {kind!r})")
        try:
            primitive(kind)
        except ValueError:
            fail(f" (unknown kind {kind!r})")
        if isinstance(count, bool) or not isinstance(count, numbers.Integral) or count <= 0:
            fail(f" (bad count {count!r} for {kind!r})")
        out.append((kind, int(count)))
    return tuple(out)


def format_shapes(pairs):
    """The string form of parsed shapes: ``(('disk', 3), ('box', 1))`` -> ``"disk*3,box*1"``."""
    return ",".join(f"{kind}*{count}" for kind, count in pairs)


@dataclasses.dataclass(frozen=True)
class FieldSlice:
    """Where one field of one shape sits in the flat parameter vector.

    Attributes:
        shape: the shape's index k in compositing order (0 is drawn first).
        kind: its primitive kind.
        instance: its index among the shapes of its kind.
        field: the :class:`Field`.
        start, stop: ``params[..., start:stop]`` holds the field.
    """

    shape: int
    kind: str
    instance: int
    field: Field
    start: int
    stop: int

    @property
    def slice(self):
        return slice(self.start, self.stop)


class RenderSpec:
    """The layout of a renderer's parameter vector: ``Render(...).spec`` and ``Cones(...).spec``.

    Shapes are laid out in the order of ``shapes`` (all instances of the first
    kind, then the next...), each shape's fields contiguous, in
    :meth:`Primitive.all_fields` order. That order is also the compositing
    order (shape 0 at the back for ``composite="over"``).

    Args:
        shapes: as for :func:`parse_shapes`.
        resolution: ``N`` or ``(H, W)`` (see the module docstring for what a
            position means on a non-square image).
        channels: colour channels ``C``.
        appearance: whether each shape has ``color`` and ``opacity`` fields
            after its geometric ones (``Render``); ``False`` for the geometry
            alone (``Cones``: ``apex``, ``axis``, ``half_angle``, 5 numbers).

    Attributes:
        shapes: ``((kind, count), ...)``.
        resolution: ``N`` (an int) for a square image, else ``(H, W)``.
        height, width: ``H`` and ``W`` in pixels.
        channels, appearance: as given.
        size: ``P``, the total number of parameters.
        slices: every :class:`FieldSlice`, in vector order.
        groups: ``(primitive, count, start, size per shape)`` per entry of ``shapes``.
        num_shapes: ``K``.

    Example:
        >>> spec = RenderSpec("cone", (80, 48), appearance=False)
        >>> spec.size, spec.height, spec.width, [s.field.name for s in spec.fields_of(0)]
        (5, 80, 48, ['apex', 'axis', 'half_angle'])
        >>> natural = spec.to_natural([[0.5, 0.5, 0.0, 1.0, 0.25]])[0]
        >>> natural["apex"].tolist(), natural["axis"].tolist(), natural["half_angle"].tolist()
        ([[40.0, 24.0]], [[90.0]], [[45.0]])
        >>> spec.from_natural(spec.to_natural([[0.5, 0.5, 0.0, 1.0, 0.25]])).round(6).tolist()
        [[0.5, 0.5, 0.0, 1.0, 0.25]]
    """

    def __init__(self, shapes, resolution, channels=1, appearance=True):
        self.shapes = parse_shapes(shapes)
        self.resolution = _validate.resolution("resolution", resolution)
        self.height, self.width = height_width(self.resolution)
        self.channels = _validate.positive_int("channels", channels)
        self.appearance = bool(appearance)
        slices, groups = [], []
        start, k = 0, 0
        for kind, count in self.shapes:
            prim = primitive(kind)
            fields = self.shape_fields(prim)
            per_shape = sum(f.size for f in fields)
            groups.append((prim, count, start, per_shape))
            for i in range(count):
                for f in fields:
                    slices.append(FieldSlice(k, kind, i, f, start, start + f.size))
                    start += f.size
                k += 1
        self.slices = tuple(slices)
        self.groups = tuple(groups)  # (primitive, count, start, size per shape)
        self.size = start
        self.num_shapes = k

    def shape_fields(self, prim):
        """The fields of one shape of ``prim`` in this layout (with colour and opacity if ``appearance``)."""
        return prim.all_fields(self.channels) if self.appearance else prim.fields

    def __repr__(self):
        return f"RenderSpec(shapes={format_shapes(self.shapes)!r}, size={self.size})"

    def fields_of(self, shape):
        """The :class:`FieldSlice` list of shape ``k``."""
        return [s for s in self.slices if s.shape == shape]

    def get(self, shape, name):
        """The :class:`FieldSlice` of field ``name`` of shape ``k``."""
        for s in self.slices:
            if s.shape == shape and s.field.name == name:
                return s
        raise KeyError(f"shape {shape} has no field {name!r}")

    def split(self, params):
        """``params`` ``(..., P)`` as a list, one dict ``{name: (..., size)}`` per shape."""
        out = [dict() for _ in range(self.num_shapes)]
        for s in self.slices:
            out[s.shape][s.field.name] = params[..., s.start : s.stop]
        return out

    def to_natural(self, params):
        """Like :meth:`split`, in natural units (pixels, degrees), as NumPy float64."""
        params = np.asarray(params)
        out = [dict() for _ in range(self.num_shapes)]
        for s in self.slices:
            out[s.shape][s.field.name] = s.field.to_natural(params[..., s.slice], self.resolution)
        return out

    def from_natural(self, shapes):
        """Inverse of :meth:`to_natural`: one dict per shape -> ``(..., P)`` normalised float64.

        Directions come back as unit vectors; every field must be present.
        """
        if len(shapes) != self.num_shapes:
            raise ValueError(f"Expected {self.num_shapes} shapes. Received: {len(shapes)} shapes")
        parts = [
            s.field.from_natural(shapes[s.shape][s.field.name], self.resolution) for s in self.slices
        ]
        return np.concatenate([np.asarray(p, np.float64) for p in parts], axis=-1)

    def sample(self, batch, seed=0):
        """Normalised parameters ``(batch, P)`` of random, typical scenes (float32 NumPy).

        Every field is drawn uniformly from its ``typical`` range (directions
        uniformly on the unit circle); polygons are star-shaped (so simple)
        and strokes have lengths of 0.3-0.6 image sizes. ``seed`` is anything
        ``numpy.random.default_rng`` takes, a ``Generator`` included (then it
        is drawn from and advanced).
        """
        rng = np.random.default_rng(seed)
        out = np.zeros((batch, self.size), np.float64)
        for prim, count, start, per_shape in self.groups:
            for i in range(count):
                custom = prim.sampler(rng, batch) if prim.sampler else {}
                offset = start + i * per_shape
                for f in self.shape_fields(prim):
                    if f.name in custom:
                        value = custom[f.name]
                    elif f.kind == "direction":
                        angle = rng.uniform(0, 2 * np.pi, batch)
                        value = np.stack([np.cos(angle), np.sin(angle)], axis=-1)
                    else:
                        value = rng.uniform(*f.typical, (batch, f.size))
                    out[:, offset : offset + f.size] = value
                    offset += f.size
        return out.astype(np.float32)


def fields_for(spec):
    """The fields an encoder's head predicts, ``(name, size, activation)``, of a renderer's ``spec`` (:class:`RenderSpec`).

    Unit vectors for directions, sigmoids for the rest: every other field kind
    (positions, sizes, angles, colours, opacities) has the normalised range
    ``[0, 1]``. Names are ``"<kind><instance>.<field>"``. Works alike for
    ``Render(...).spec`` and ``Cones(...).spec``.
    """
    return tuple(
        (f"{s.kind}{s.instance}.{s.field.name}", s.field.size, "direction" if s.field.kind == "direction" else "fraction")
        for s in spec.slices
    )


def spec_table(channels=1):
    """A Markdown table of every primitive's fields (the README's table)."""
    rows = [
        "| primitive | field | size | kind | normalised range | natural | meaning |",
        "|---|---|---|---|---|---|---|",
    ]
    for kind in primitive_kinds():
        prim = _PRIMITIVES[kind]
        for f in prim.all_fields(channels):
            natural = {
                "position": "N·v px",
                "size": "N·v px",
                "direction": f"atan2(v1, v0) deg, period {f.period:g}" if f.period else "",
                "angle": "180·v deg",
                "fraction": "v",
                "color": "v",
                "opacity": "v",
            }[f.kind]
            size = "C" if f.kind == "color" else str(f.size)
            rows.append(
                f"| {kind} | `{f.name}` | {size} | {f.kind} | [{f.low:g}, {f.high:g}] | {natural} | {f.doc} |"
            )
    return "\n".join(rows)

