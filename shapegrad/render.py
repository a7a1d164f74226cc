"""The ``Render`` layer and the parameter specs of every primitive.

An encoder emits, per image, one flat vector of *normalised* parameters; a
:class:`Render` layer turns it into an image. This module says what each
number means:

- :class:`Field`: one named group of numbers (a centre, a radius, a
  direction, a colour...), with its *kind*, its normalised range, the range
  to sample synthetic scenes from, and the map to natural units (pixels,
  degrees).
- :class:`Primitive`: a kind of shape (``"disk"``, ``"box"``...): its fields
  and how they become a signed distance (:mod:`shapegrad.sdf`).
- :class:`RenderSpec` (``Render(...).spec``): where every field of every shape
  sits in the flat parameter vector.

Normalised units (``N`` is the resolution in pixels; pixel ``(i, j)`` is the
point ``(i, j)``, as in :class:`shapegrad.Cones`):

========== ===================================== =================== ===========
kind       normalised value ``v``                natural value       range of v
========== ===================================== =================== ===========
position   fraction of the image, ``(row, col)`` ``N * v`` pixels   [0, 1]
size       fraction of the image size            ``N * v`` pixels    [0, 1]
direction  2-vector, any non-zero length         ``atan2(v1, v0)``   [-1, 1]
                                                 degrees
angle      fraction of pi                        ``180 * v`` degrees [0, 1]
fraction   dimensionless ratio                   ``v``               [0, 1]
color      intensity per channel                 ``v``               [0, 1]
opacity    alpha                                 ``v``               [0, 1]
========== ===================================== =================== ===========

A sigmoid head fits every kind but ``direction``, which wants a 2-vector (for
example a ``tanh`` pair, or a normalised one); a zero direction (largest
component below 1e-12) is read as ``(1, 0)`` (down the rows), with zero
gradient.

Example:
    >>> import keras
    >>> import numpy as np
    >>> from shapegrad.render import Render
    >>> layer = Render("disk*2", resolution=16)
    >>> layer.spec.size, [s.field.name for s in layer.spec.fields_of(0)]
    (10, ['center', 'radius', 'color', 'opacity'])
    >>> x = np.array([[0.5, 0.5, 0.25, 1.0, 1.0, 0.2, 0.2, 0.1, 0.5, 1.0]], "float32")
    >>> image = keras.ops.convert_to_numpy(layer(x))
    >>> image.shape, round(float(image[0, 8, 8, 0]), 3), round(float(image[0, 0, 15, 0]), 3)
    ((1, 16, 16, 1), 1.0, 0.0)
"""

import dataclasses
import functools
import math
import numbers
import re

import keras
import numpy as np
from keras import ops

from shapegrad import _validate, raster, safe, sdf

__all__ = [
    "FIELD_KINDS",
    "Field",
    "FieldSlice",
    "Primitive",
    "Render",
    "RenderSpec",
    "format_shapes",
    "parse_shapes",
    "primitive",
    "primitive_kinds",
    "spec_table",
]

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
# Parameters are clipped to this magnitude before use, as in Cones: 1e12 image
# sizes away the picture no longer changes, and N * v cannot overflow.
_FAR = 1e12


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
        """Map normalised values ``(..., size)`` to natural units (NumPy).

        Positions and sizes become pixels, angles degrees, a direction ``(..., 2)``
        becomes one angle ``(..., 1)`` in degrees in ``[0, period)``.
        """
        v = np.asarray(values, dtype=np.float64)
        if self.kind in ("position", "size"):
            return resolution * v
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
            return v / resolution
        if self.kind == "angle":
            return v / 180.0
        if self.kind == "direction":
            rad = np.radians(v[..., 0])
            return np.stack([np.cos(rad), np.sin(rad)], axis=-1)
        return v


def _position(name, doc, typical=(0.2, 0.8)):
    return Field(name, 2, "position", 0.0, 1.0, typical, doc)


def _size(name, size, doc, typical):
    return Field(name, size, "size", 0.0, 1.0, typical, doc)


def _direction(name, doc, period):
    return Field(name, 2, "direction", -1.0, 1.0, (-1.0, 1.0), doc, period)


@dataclasses.dataclass(frozen=True)
class Primitive:
    """A kind of shape: its geometric fields and its signed distance.

    Attributes:
        kind: the name used in ``Render(shapes=...)``.
        fields: the geometric fields, in order (colour and opacity follow them
            in the parameter vector, see :meth:`all_fields`).
        distance: ``distance(grid, values, resolution)``: ``grid`` the pixel
            points ``(1, 1, N, N, 2)``, ``values`` a dict of normalised fields
            each ``(B, n, 1, 1, size)``; returns ``(B, n, N, N)`` signed
            distances in pixels.
        doc: one line for the README.
    """

    kind: str
    fields: tuple
    distance: object
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


def _px(values, name, n):
    return float(n) * values[name]


# Directions shorter than this (largest component) read as zero, i.e. (1, 0),
# with zero gradient: the true gradient of a unit vector grows like 1 / |d|,
# and times a distance of up to 1e13 px it would overflow float32 below ~1e-25.
_TINY_DIRECTION = 1e-12


def _clean_direction(d):
    small = ops.max(ops.abs(d), axis=-1, keepdims=True) < _TINY_DIRECTION
    return ops.where(small, ops.zeros_like(d), d)


def _dir(values, name):
    d = _clean_direction(values[name])
    return safe.safe_normalize(d, fallback=ops.cast(ops.convert_to_tensor([1.0, 0.0]), d.dtype))


def _disk(grid, v, n, pixels=None):
    center, radius = _px(v, "center", n), _px(v, "radius", n)[..., 0]
    if pixels is not None:  # Render's fast path: sdf.DiskKernel and its parameters
        return sdf.DiskKernel(*pixels), (center[..., 0], center[..., 1], sdf._nonneg(radius))
    return sdf.disk(grid, center, radius)


def _ellipse(grid, v, n, pixels=None):
    center, radii, u = _px(v, "center", n), _px(v, "radii", n), _dir(v, "direction")
    if pixels is not None:
        radii = sdf._nonneg(radii)
        return sdf.EllipseKernel(*pixels), (
            center[..., 0], center[..., 1], radii[..., 0], radii[..., 1], u[..., 0], u[..., 1]
        )
    return sdf._ellipse(grid, center, radii, u)


def _box(grid, v, n, pixels=None):
    center, half, u = _px(v, "center", n), _px(v, "half_size", n), _dir(v, "direction")
    corner = v["corner"][..., 0] * ops.minimum(half[..., 0], half[..., 1])
    if pixels is not None:  # the clamps of sdf._box, on the parameters
        h = sdf._nonneg(half)
        rc = ops.minimum(sdf._nonneg(corner), ops.minimum(h[..., 0], h[..., 1]))
        return sdf.BoxKernel(*pixels), (
            center[..., 0], center[..., 1], h[..., 0], h[..., 1], u[..., 0], u[..., 1], rc
        )
    return sdf._box(grid, center, half, u, corner)


def _segment(grid, v, n):
    return sdf.segment(grid, _px(v, "a", n), _px(v, "b", n), _px(v, "half_width", n)[..., 0])


def _bezier(grid, v, n):
    return sdf.bezier(
        grid, _px(v, "p0", n), _px(v, "p1", n), _px(v, "p2", n), _px(v, "half_width", n)[..., 0]
    )


def _cone(grid, v, n):
    return sdf.cone(grid, _px(v, "apex", n), _clean_direction(v["axis"]), math.pi * v["half_angle"][..., 0])


def _polygon(grid, v, n, pixels=None):
    verts = _px(v, "vertices", n)  # (B, n, 1, 1, 2V): row, col, row, col, ...
    if pixels is not None:
        size = verts.shape[-1]
        return sdf.PolygonKernel(*pixels, size // 2), tuple(verts[..., k] for k in range(size))
    verts = ops.reshape(verts, tuple(ops.shape(verts)[:-1]) + (-1, 2))  # (B, n, 1, 1, V, 2)
    return sdf.polygon(grid, verts)


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
        _polygon,
        f"simple polygon with {vertices} vertices, convex or not",
        _sample_polygon(vertices),
    )


_PRIMITIVES = {
    "disk": Primitive(
        "disk",
        (
            _position("center", "centre"),
            _size("radius", 1, "radius", (0.08, 0.25)),
        ),
        _disk,
        "filled circle",
    ),
    "ellipse": Primitive(
        "ellipse",
        (
            _position("center", "centre"),
            _size("radii", 2, "semi-axes along axis 0 and axis 1", (0.06, 0.3)),
            _direction("direction", "axis 0 (row, col); axis 1 is it turned +90 degrees", 180.0),
        ),
        _ellipse,
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
        _box,
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
        _segment,
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
        _bezier,
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
        _cone,
        "2-D wedge, the Cones layer's shape (distance edge)",
    ),
}
_POLYGON = re.compile(r"polygon(\d+)$")
_MAX_VERTICES = 64


def primitive_kinds():
    """Names of the primitives; ``polygon<V>`` (3 <= V <= 64, e.g. ``polygon5``) is also accepted."""
    return tuple(_PRIMITIVES)


def primitive(kind):
    """The :class:`Primitive` called ``kind`` (raises ``ValueError`` if there is none)."""
    if kind in _PRIMITIVES:
        return _PRIMITIVES[kind]
    match = _POLYGON.match(kind) if isinstance(kind, str) else None
    if match and 3 <= int(match.group(1)) <= _MAX_VERTICES:
        return _polygon_primitive(int(match.group(1)), kind)
    raise ValueError(
        f"Expected a primitive kind, one of {list(_PRIMITIVES)} or 'polygon<V>' with "
        f"3 <= V <= {_MAX_VERTICES}. Received: kind={kind!r}"
    )


_SHAPES_HELP = (
    "a non-empty list of (kind, count) pairs or a string like 'disk*3,box*2', "
    "with kind one of {kinds} or 'polygon<V>' and count a positive integer"
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
    """The layout of a :class:`Render` layer's parameter vector.

    Shapes are laid out in the order of ``shapes`` (all instances of the first
    kind, then the next...), each shape's fields contiguous, in
    :meth:`Primitive.all_fields` order. That order is also the compositing
    order (shape 0 at the back for ``composite="over"``).

    Attributes:
        shapes: ``((kind, count), ...)``.
        resolution, channels: as in :class:`Render`.
        size: ``P``, the total number of parameters.
        slices: every :class:`FieldSlice`, in vector order.
        num_shapes: ``K``.
    """

    def __init__(self, shapes, resolution, channels=1):
        self.shapes = parse_shapes(shapes)
        self.resolution = int(resolution)
        self.channels = int(channels)
        slices, groups = [], []
        start, k = 0, 0
        for kind, count in self.shapes:
            prim = primitive(kind)
            fields = prim.all_fields(self.channels)
            per_shape = prim.size(self.channels)
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

    def sample(self, batch, seed=0):
        """Normalised parameters ``(batch, P)`` of random, typical scenes (float32 NumPy).

        Every field is drawn uniformly from its ``typical`` range (directions
        uniformly on the unit circle); polygons are star-shaped (so simple)
        and strokes have lengths of 0.3-0.6 image sizes.
        """
        rng = np.random.default_rng(seed)
        out = np.zeros((batch, self.size), np.float64)
        for prim, count, start, per_shape in self.groups:
            for i in range(count):
                custom = prim.sampler(rng, batch) if prim.sampler else {}
                offset = start + i * per_shape
                for f in prim.all_fields(self.channels):
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


@keras.saving.register_keras_serializable(package="shapegrad")
class Render(keras.layers.Layer):
    """Render several primitives of several kinds per image, in colour, with finite gradients.

    Input ``(batch, P)`` normalised parameters; output
    ``(batch, N, N, channels)`` in the layer's compute dtype. ``P`` is the sum
    over ``shapes`` of ``count * (geometric fields + channels + 1)``; the
    layout is ``layer.spec`` (a :class:`RenderSpec`), the meaning of each
    field is in the module docstring and in ``docs/primitives.md``.

    Per shape k: the signed distance ``d_k`` (pixels, :mod:`shapegrad.sdf`) is
    turned into a coverage ``sigmoid(-4 d_k / softness)``
    (:func:`shapegrad.raster.coverage`: an anti-aliased edge about
    ``1.1 * softness`` pixels wide), multiplied by the shape's opacity, and the
    ``K`` shapes are composited over ``background`` in the order of ``spec``:
    ``"over"`` paints them back to front (:func:`shapegrad.raster.over`),
    ``"union"`` is the order-free probabilistic union
    (:func:`shapegrad.raster.soft_union`).

    Conventions as in :class:`shapegrad.Cones`: pixel ``(i, j)`` is the point
    ``(i, j)``; positions are ``N * v``; the ``cone`` primitive reads
    ``[a0, a1, d0, d1, s]`` like ``Cones`` (then colour and opacity), and with
    colour 1, opacity 1, ``softness=2`` and a zero background it draws the
    same image as ``Cones(N, edge="distance")``.

    Parameters are clipped to ``[-1e12, 1e12]`` (beyond that the image cannot
    change) and opacities to ``[0, 1]`` (so that compositing stays a convex
    combination and cannot overflow; the gradient is 0 outside); the geometry is computed in float32 whatever the dtype policy
    (inputs are not autocast; a layer built with ``dtype="float64"`` computes
    in float64), and the image is cast to the compute dtype, so the layer
    works under ``mixed_float16`` and ``mixed_bfloat16``.

    Args:
        shapes: ``[("disk", 3), ("box", 2)]`` or ``"disk*3,box*2"``; kinds are
            :func:`primitive_kinds` and ``polygon<V>``.
        resolution: ``N``, the image height and width in pixels.
        channels: colour channels ``C`` (1: grey, 3: RGB).
        softness: edge width in pixels (> 0).
        composite: ``"over"`` or ``"union"``.
        background: a number, or ``channels`` numbers (a colour).
        recompute: ``True`` keeps the backward pass's memory nearly flat in ``K``: each
            shape's distance, coverage and compositing step is recomputed in
            the backward pass (``keras.remat``) instead of stored, and on JAX
            the shapes of one kind are folded in a two-level ``scan`` whose
            blocks of ``ceil(sqrt(count))`` shapes are recomputed too, so the
            backward keeps about ``2 sqrt(K)`` compositing states (images)
            instead of ~10 per-pixel intermediates per shape (64 disks at
            64 px, batch 16: 16 MiB instead of 289 MiB; see
            ``benchmarks/results.md``). It costs one more forward pass. On
            PyTorch each shape is a checkpoint (one image kept per shape). On
            TensorFlow, and for kinds with one shape on JAX, XLA schedules
            the compiled step itself and the flag has no effect. ``False``:
            plain autodiff, every kind's shapes evaluated at once, faster
            (recomputing costs 5-50 % on JAX, ~2x on PyTorch). ``"auto"``
            (default): ``True`` from 8 shapes on.

    Example:
        >>> import numpy as np
        >>> layer = Render([("disk", 1), ("box", 1)], resolution=32, channels=3)
        >>> layer.spec.size
        18
        >>> x = layer.spec.sample(2, seed=0)
        >>> keras.ops.convert_to_numpy(layer(x)).shape
        (2, 32, 32, 3)
    """

    def __init__(
        self,
        shapes,
        resolution,
        channels=1,
        softness=1.0,
        composite="over",
        background=0.0,
        recompute="auto",
        **kwargs,
    ):
        kwargs.pop("autocast", None)
        super().__init__(autocast=False, **kwargs)
        self.resolution = _validate.positive_int("resolution", resolution)
        self.channels = _validate.positive_int("channels", channels)
        self.softness = _validate.positive_number("softness", softness)
        self.composite = _validate.one_of("composite", composite, raster.COMPOSITES)
        self.background = _background(background, self.channels)
        self.shapes = parse_shapes(shapes)
        self.spec = RenderSpec(self.shapes, self.resolution, self.channels)
        if not (isinstance(recompute, bool) or recompute == "auto"):
            raise ValueError(f"Expected recompute to be True, False or 'auto'. Received: recompute={recompute!r}")
        self.recompute = recompute
        # (primitive, start, size) of every shape, in compositing order.
        self._shapes = [
            (prim, start + i * size, size) for prim, count, start, size in self.spec.groups for i in range(count)
        ]
        self.supports_masking = False

    def _check(self, input_shape):
        _validate.last_dim(
            "Render",
            input_shape,
            self.spec.size,
            f"normalised parameters of shapes={format_shapes(self.shapes)!r}, see layer.spec",
        )

    def build(self, input_shape):
        self._check(input_shape)
        self.built = True

    def compute_output_shape(self, input_shape):
        self._check(input_shape)
        return (input_shape[0], self.resolution, self.resolution, self.channels)

    def call(self, inputs, softness=None):
        """Render; ``softness`` (a float or scalar tensor) overrides the layer's for this call.

        A tensor lets a training loop anneal the edges from soft to sharp
        (:class:`shapegrad.fit.Annealed`) without re-tracing.
        """
        dtype = "float64" if self.compute_dtype == "float64" else "float32"
        softness = ops.cast(self.softness if softness is None else softness, dtype)
        x = ops.clip(ops.cast(inputs, dtype), -_FAR, _FAR)
        # The image is composited as C planes (B, N, N) (raster.paint_planes: XLA on CPU is
        # several times faster on those than on (B, N, N, C)) and stacked at the end.
        colour = self.background if isinstance(self.background, tuple) else (self.background,) * self.channels
        plane_shape = (ops.shape(x)[0], self.resolution, self.resolution)
        background = [ops.broadcast_to(ops.convert_to_tensor(b, dtype), plane_shape) for b in colour]
        state = raster.start_planes(self.composite, background)
        backend = keras.backend.backend()
        recompute = self.recompute if self.recompute != "auto" else self.spec.num_shapes >= _AUTO_RECOMPUTE
        for prim, count, start, size in self.spec.groups:
            group = ops.reshape(x[:, start : start + count * size], (-1, count, size))
            paint = functools.partial(_paint_shape, prim, self.resolution, self.channels, self.composite)
            if recompute and count > 1 and backend in _SCAN_BACKENDS:
                state = _scan(keras.remat(paint), state, ops.transpose(group, (1, 0, 2)), softness)
            elif recompute and backend in _CHECKPOINT_BACKENDS:
                paint = keras.remat(paint)
                for i in range(count):
                    state = paint(group[:, i], softness, *state)
            else:
                # Every shape of the group at once, (B, count, N, N).
                alphas, colors = _alphas(prim, self.resolution, self.channels, group, softness)
                for i in range(count):
                    rgb = [colors[:, i, c][:, None, None] for c in range(self.channels)]
                    state = raster.paint_planes(self.composite, state, alphas[:, i], rgb)
        image = ops.stack(raster.finish_planes(self.composite, state, background), axis=-1)
        return ops.cast(image, self.compute_dtype)

    def get_config(self):
        config = super().get_config()
        config.update(
            shapes=format_shapes(self.shapes),
            resolution=self.resolution,
            channels=self.channels,
            softness=self.softness,
            composite=self.composite,
            background=list(self.background) if isinstance(self.background, tuple) else self.background,
            recompute=self.recompute,
        )
        return config


def _alphas(prim, n, channels, params, softness):
    """``opacity * coverage`` ``(B, count, N, N)`` and colours ``(B, count, C)`` of ``(B, count, size)`` parameters.

    Kinds whose distance function has a component kernel (:mod:`shapegrad.sdf`)
    go through it, with the hand-written backward pass of
    :func:`shapegrad.raster.shape_alpha`; the others through their distance
    and plain autodiff. Same image either way.
    """
    values, offset = {}, 0
    for f in prim.fields:
        values[f.name] = params[:, :, None, None, offset : offset + f.size]  # (B, count, 1, 1, size)
        offset += f.size
    # Alpha outside [0, 1] has no meaning, and K of them multiplied together
    # overflow: clip (the gradient is 0 outside).
    opacity = ops.clip(params[:, :, -1], 0.0, 1.0)[:, :, None, None]
    color = params[:, :, offset : offset + channels]
    if prim.distance in (_disk, _ellipse, _box, _polygon):
        kernel, geometry = prim.distance(None, values, n, pixels=(n, n))
        softness = ops.maximum(softness, ops.cast(raster._MIN_SOFTNESS, softness.dtype))
        return raster.shape_alpha(kernel, geometry, opacity, softness), color
    grid = raster.pixel_grid(n, n, params.dtype)[None, None]  # (1, 1, N, N, 2)
    distance = prim.distance(grid, values, n)
    return raster.coverage(distance, softness) * opacity, color


def _paint_shape(prim, n, channels, mode, params, softness, *state):
    """Composite one shape, its parameters ``(B, size)``, onto the compositing ``state`` (channel planes)."""
    alpha, color = _alphas(prim, n, channels, params[:, None], softness)
    return raster.paint_planes(mode, state, alpha[:, 0], [color[:, 0, c][:, None, None] for c in range(channels)])


# Backends whose compiled loops keep only the loop state per iteration (XLA via
# jax.lax.scan): there, many shapes of one kind are folded in a two-level scan.
_SCAN_BACKENDS = ("jax",)
# Backends where recomputing shape by shape (keras.remat, unrolled) frees memory:
# PyTorch's checkpoints. Under XLA (TensorFlow; JAX outside a scan) the compiler
# schedules the whole step and keeps what it likes: measured, no memory saved, the
# compile time multiplied (3 minutes for 64 shapes on TensorFlow).
_CHECKPOINT_BACKENDS = ("torch",)
# recompute="auto" recomputes from this many shapes on. Measured (benchmarks/results.md):
# recomputing costs time on every backend (JAX 0.6-0.95x, PyTorch ~0.5x) and on PyTorch also
# memory below ~16 shapes (checkpoints' own copies), while at 16 and 64 shapes it saves 6-13x
# (JAX) and 1.5-5.5x (PyTorch).
_AUTO_RECOMPUTE = 8


def _scan(paint, state, params, softness):
    """Fold ``params`` ``(count, B, size)`` into ``state`` with ``paint`` (recomputed in the backward pass).

    Two levels: blocks of ``S = ceil(sqrt(count))`` shapes, each block
    recomputed as a whole in the backward pass, so the backward keeps about
    ``2 S`` compositing states instead of every shape's intermediates.
    """
    count = params.shape[0]

    def one(carry, p):
        return paint(p, softness, *carry), None

    def block(carry, ps):
        return ops.scan(one, carry, ps)[0], None

    size = math.isqrt(count - 1) + 1  # ceil(sqrt(count))
    full = count // size * size
    if full:
        blocks = ops.reshape(params[:full], (full // size, size) + tuple(params.shape[1:]))
        state = ops.scan(keras.remat(block), tuple(state), blocks)[0]
    if full < count:
        state = ops.scan(one, tuple(state), params[full:])[0]
    return state


def _background(value, channels):
    """A float, or a tuple of ``channels`` floats; raises a Keras-style ``ValueError``."""

    def ok(v):
        return isinstance(v, numbers.Real) and not isinstance(v, bool) and math.isfinite(v)

    if ok(value):
        return float(value)
    if isinstance(value, (list, tuple)) and len(value) == channels and all(ok(v) for v in value):
        return tuple(float(v) for v in value)
    raise ValueError(
        f"Expected background to be a finite number or a list of {channels} finite numbers "
        f"(one per channel). Received: background={value!r}"
    )
