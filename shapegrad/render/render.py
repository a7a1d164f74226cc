"""The ``Render`` layer: many primitives of several kinds per image, composited, with finite gradients.

Its one concern is turning a flat vector of normalised parameters into an
image: each kind's signed distance (:mod:`shapegrad.sdf`, mapped here by
:func:`distance_function`), coverage and compositing (:mod:`shapegrad.raster`),
and the memory-saving schedules of the backward pass. What each number of the
vector means (fields, units, the registry of kinds) is the schema,
:mod:`shapegrad.primitives`; its names are re-exported here for compatibility.

Example:
    >>> import keras
    >>> import numpy as np
    >>> from shapegrad.render.render import Render
    >>> layer = Render("disk*2", resolution=16)
    >>> layer.spec.size, [s.field.name for s in layer.spec.fields_of(0)]
    (10, ['center', 'radius', 'color', 'opacity'])
    >>> x = np.array([[0.5, 0.5, 0.25, 1.0, 1.0, 0.2, 0.2, 0.1, 0.5, 1.0]], "float32")
    >>> image = keras.ops.convert_to_numpy(layer(x))
    >>> image.shape, round(float(image[0, 8, 8, 0]), 3), round(float(image[0, 0, 15, 0]), 3)
    ((1, 16, 16, 1), 1.0, 0.0)
"""

import collections
import functools
import math
import numbers

import keras
import numpy as np
from keras import ops

from shapegrad import _validate
from shapegrad.ops import autodiff, numerics, safe
from shapegrad.render import kernels, raster, sdf
from shapegrad.render.primitives import (  # noqa: F401  (re-exported: the schema used to live here)
    FAR,
    FIELD_KINDS,
    Field,
    FieldSlice,
    Primitive,
    RenderSpec,
    format_shapes,
    height_width,
    parse_shapes,
    path_layout,
    primitive,
    primitive_kinds,
    spec_table,
)

__all__ = [
    "FIELD_KINDS",
    "Field",
    "FieldSlice",
    "Primitive",
    "Render",
    "RenderSpec",
    "distance_function",
    "format_shapes",
    "parse_shapes",
    "primitive",
    "primitive_kinds",
    "spec_table",
]

def _px(values, name, n):
    return float(n) * values[name]


# Directions shorter than this (largest component) read as zero, i.e. (1, 0),
# with zero gradient: the true gradient of a unit vector grows like 1 / |d|,
# and times a distance of up to 1e13 px it would overflow float32 below ~1e-25.
_TINY_DIRECTION = 1e-12


def clean_direction(d):
    """``d`` ``(..., 2)`` with directions whose largest component is below the smallest usable (``_TINY_DIRECTION``) set to 0."""
    small = ops.max(ops.abs(d), axis=-1, keepdims=True) < _TINY_DIRECTION
    return ops.where(small, ops.zeros_like(d), d)


def _dir(values, name):
    d = clean_direction(values[name])
    return safe.safe_normalize(d, fallback=ops.cast(ops.convert_to_tensor([1.0, 0.0]), d.dtype))


def _disk(grid, v, n, pixels=None):
    center, radius = _px(v, "center", n), _px(v, "radius", n)[..., 0]
    if pixels is not None:  # Render's fast path: kernels.DiskKernel and its parameters
        return kernels.DiskKernel(*pixels), (center[..., 0], center[..., 1], sdf.nonneg(radius))
    return sdf.disk(grid, center, radius)


def _ellipse(grid, v, n, pixels=None):
    center, radii, u = _px(v, "center", n), _px(v, "radii", n), _dir(v, "direction")
    if pixels is not None:
        radii = sdf.nonneg(radii)
        return kernels.EllipseKernel(*pixels), (
            center[..., 0], center[..., 1], radii[..., 0], radii[..., 1], u[..., 0], u[..., 1]
        )
    return sdf.ellipse_on_axis(grid, center, radii, u)


def _box(grid, v, n, pixels=None):
    center, half, u = _px(v, "center", n), _px(v, "half_size", n), _dir(v, "direction")
    corner = v["corner"][..., 0] * numerics.minimum(half[..., 0], half[..., 1])
    if pixels is not None:  # the clamps of sdf.box_on_axis, on the parameters
        h0, h1, rc = sdf.box_clamps(half, corner)
        return kernels.BoxKernel(*pixels), (center[..., 0], center[..., 1], h0, h1, u[..., 0], u[..., 1], rc)
    return sdf.box_on_axis(grid, center, half, u, corner)


def _segment(grid, v, n):
    return sdf.segment(grid, _px(v, "a", n), _px(v, "b", n), _px(v, "half_width", n)[..., 0])


def _bezier(grid, v, n):
    return sdf.bezier(
        grid, _px(v, "p0", n), _px(v, "p1", n), _px(v, "p2", n), _px(v, "half_width", n)[..., 0]
    )


def _cone(grid, v, n):
    return sdf.cone(grid, _px(v, "apex", n), clean_direction(v["axis"]), math.pi * v["half_angle"][..., 0])


def _polygon(grid, v, n, pixels=None):
    verts = _px(v, "vertices", n)  # (B, n, 1, 1, 2V): row, col, row, col, ...
    if pixels is not None:
        size = verts.shape[-1]
        return kernels.PolygonKernel(*pixels, size // 2), tuple(verts[..., k] for k in range(size))
    verts = ops.reshape(verts, tuple(ops.shape(verts)[:-1]) + (-1, 2))  # (B, n, 1, 1, V, 2)
    return sdf.polygon(grid, verts)


def _path(grid, v, n, segments, subpaths, fill_rule):
    nodes = _px(v, "points", n)  # (B, n, 1, 1, 6 M K): row, col, row, col, ...
    nodes = ops.reshape(nodes, tuple(nodes.shape[:-1]) + (subpaths, 3 * segments, 2))
    return sdf.cubic_path(grid, nodes, fill_rule)


def _stroke(grid, v, n, segments, subpaths):
    nodes = _px(v, "points", n)  # (B, n, 1, 1, (6 M + 2) K)
    nodes = ops.reshape(nodes, tuple(nodes.shape[:-1]) + (subpaths, 3 * segments + 1, 2))
    return sdf.cubic_stroke(grid, nodes, _px(v, "half_width", n)[..., 0])


# The signed distance of each kind; every polygon<V> uses _polygon, path and stroke kinds
# _path and _stroke with their layout.
_DISTANCES = {
    "disk": _disk,
    "ellipse": _ellipse,
    "box": _box,
    "triangle": _polygon,
    "segment": _segment,
    "bezier": _bezier,
    "cone": _cone,
}


def distance_function(kind):
    """The signed distance of primitive ``kind``: ``distance(grid, values, n)``.

    ``grid``: the pixel points ``(1, 1, H, W, 2)``; ``values``: a dict of the
    kind's normalised geometric fields (:attr:`Primitive.fields`), each
    ``(B, count, 1, 1, size)``, with positions already in units of ``n``
    pixels on both axes; ``n``: pixels per normalised unit (``N`` on a square
    image). Returns ``(B, count, H, W)`` signed distances in pixels, negative
    inside. Raises ``ValueError`` for an unknown kind.

    The disk, ellipse, box and polygon functions also take ``pixels=(H, W)``
    (Render's fast path): they then return a component kernel of
    :mod:`shapegrad.sdf` for an ``H x W`` image and its parameters, for
    :func:`shapegrad.raster.shape_alpha` (``grid`` is unused).
    """
    prim = primitive(kind)
    if prim.kind in _DISTANCES:
        return _DISTANCES[prim.kind]
    if prim.kind.startswith("polygon"):
        return _polygon
    layout = path_layout(prim.kind)
    if layout is not None:
        segments, subpaths, rule = layout
        if rule is None:
            return functools.partial(_stroke, segments=segments, subpaths=subpaths)
        return functools.partial(_path, segments=segments, subpaths=subpaths, fill_rule=rule)
    raise ValueError(f"Expected a primitive kind with a distance function. Received: kind={kind!r}")


# What _alphas needs of a kind: its geometric fields and its signed distance.
_Drawable = collections.namedtuple("_Drawable", ["kind", "fields", "distance"])


def _drawable(prim):
    return _Drawable(prim.kind, prim.fields, distance_function(prim.kind))


@keras.saving.register_keras_serializable(package="shapegrad")
class Render(keras.layers.Layer):
    """Render several primitives of several kinds per image, in colour, with finite gradients.

    Input ``(batch, P)`` normalised parameters; output
    ``(batch, H, W, channels)`` in the layer's compute dtype (``H = W = N``
    for ``resolution=N``). ``P`` is the sum over ``shapes`` of
    ``count * (geometric fields + channels + 1)``; the layout is
    ``layer.spec`` (a :class:`RenderSpec`), the meaning of each field is in
    :mod:`shapegrad.render.primitives` (``shapegrad.primitives.spec_table()``
    prints it as a table).

    Per shape k: the signed distance ``d_k`` (pixels, :mod:`shapegrad.sdf`) is
    turned into a coverage ``sigmoid(-4 d_k / softness)``
    (:func:`shapegrad.raster.coverage`: an anti-aliased edge about
    ``1.1 * softness`` pixels wide; ``sharpness = 1 / softness`` per pixel,
    see :meth:`call`), multiplied by the shape's opacity, and the
    ``K`` shapes are composited over ``background`` in the order of ``spec``:
    ``"over"`` paints them back to front (:func:`shapegrad.raster.over`),
    ``"union"`` is the order-free probabilistic union
    (:func:`shapegrad.raster.soft_union`).

    Conventions as in :class:`shapegrad.Cones`: pixel ``(i, j)`` is the point
    ``(i, j)``; positions are ``N * v``. On a non-square image
    (``resolution=(H, W)``) a position ``v`` is the point ``(H v0, W v1)``, so
    ``[0, 1]^2`` spans the image on both axes, and lengths (radii, half-sizes,
    stroke widths) are ``min(H, W) * v`` pixels; directions and angles are
    those of the pixel grid, so a disk stays round. The ``cone`` primitive reads
    ``[a0, a1, d0, d1, s]`` like ``Cones`` (then colour and opacity), and with
    colour 1, opacity 1, ``softness=2`` and a zero background it draws the
    same image as ``Cones(N, edge="distance")``.

    Parameters are clipped to ``[-1e12, 1e12]`` (beyond that the image cannot
    change), and colours and opacities to ``[0, 1]`` (so that compositing
    stays a convex combination and cannot overflow, even in float16: a colour
    of 1e30 is drawn as 1; the gradient is 0 outside); the geometry is computed in float32 whatever the dtype policy
    (inputs are not autocast; a layer built with ``dtype="float64"`` computes
    in float64), and the image is cast to the compute dtype, so the layer
    works under ``mixed_float16`` and ``mixed_bfloat16``.

    Args:
        shapes: ``[("disk", 3), ("box", 2)]`` or ``"disk*3,box*2"``; kinds are
            :func:`primitive_kinds`, ``polygon<V>``, ``path<M>[x<K>][eo]`` and
            ``stroke<M>[x<K>]``.
        resolution: ``N`` (a square image) or ``(H, W)``, in pixels.
            ``layer.resolution`` is an int for a square layer; ``layer.height``
            and ``layer.width`` are always there.
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
        >>> wide = Render("disk", resolution=(8, 12))  # 8 rows, 12 columns
        >>> image = keras.ops.convert_to_numpy(wide(np.float32([[0.5, 0.5, 0.25, 1.0, 1.0]])))
        >>> image.shape, bool(image[0, 4, 6, 0] > 0.99), bool(image[0, 4, 10, 0] < 0.01)
        ((1, 8, 12, 1), True, True)
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
        self.resolution = _validate.resolution("resolution", resolution)
        self.height, self.width = height_width(self.resolution)
        self.channels = _validate.positive_int("channels", channels)
        self.softness = _validate.positive_number("softness", softness)
        self.composite = _validate.one_of("composite", composite, raster.COMPOSITES)
        self.background = _background(background, self.channels)
        self.shapes = parse_shapes(shapes)
        self.spec = RenderSpec(self.shapes, self.resolution, self.channels)
        if not (isinstance(recompute, bool) or recompute == "auto"):
            raise ValueError(f"Expected recompute to be True, False or 'auto'. Received: recompute={recompute!r}")
        self.recompute = recompute
        self.supports_masking = False

    def check_input(self, input_shape):
        _validate.last_dim(
            "Render",
            input_shape,
            self.spec.size,
            f"normalised parameters of shapes={format_shapes(self.shapes)!r}, see layer.spec",
        )

    def build(self, input_shape):
        self.check_input(input_shape)
        self.built = True

    def compute_output_shape(self, input_shape):
        self.check_input(input_shape)
        return (input_shape[0], self.height, self.width, self.channels)

    @property
    def default_sharpness(self):
        """The edge sharpness when :meth:`call` is given none: ``1 / softness`` per pixel."""
        return 1.0 / self.softness

    @autodiff.compiled_when_eager(method=True, when=lambda self, *a, **k: len(self.spec.groups) <= _COMPILED_GROUPS)
    def call(self, inputs, sharpness=None):
        """Render; ``sharpness`` (per pixel; a float or scalar tensor) overrides the layer's for this call.

        The coverage is ``sigmoid(-4 d * sharpness)``: ``sharpness`` is
        ``1 / softness`` (default :attr:`default_sharpness`), the same knob
        as ``Cones.call(sharpness=)``. A tensor lets a training loop anneal
        the edges from soft to sharp (:class:`shapegrad.models.Annealed`)
        without re-tracing.
        """
        dtype, x, softness = self._prepare(inputs, sharpness)
        # The image is composited as C planes (B, H, W) (raster.paint_planes: XLA on CPU is
        # several times faster on those than on (B, H, W, C)) and stacked at the end.
        colour = self.background if isinstance(self.background, tuple) else (self.background,) * self.channels
        plane_shape = (ops.shape(x)[0], self.height, self.width)
        background = [ops.broadcast_to(ops.convert_to_tensor(b, dtype), plane_shape) for b in colour]
        backend = keras.backend.backend()
        recompute = self.recompute if self.recompute != "auto" else self.spec.num_shapes >= _AUTO_RECOMPUTE
        if self.composite == "over" and not recompute:
            # Every shape's alpha, then one op for the compositing (raster.over_planes: its backward
            # recomputes the planes under each shape instead of keeping them; 1.09-1.13x on JAX).
            alphas, rgbs = [], []
            for a, colors in self._group_alphas(x, softness):
                for i in range(a.shape[1]):
                    alphas.append(a[:, i])
                    rgbs.append(_rgb(colors[:, i], self.channels))
            return ops.cast(raster.over_planes(alphas, rgbs, background), self.compute_dtype)
        state = raster.start_planes(self.composite, background)
        for schema, count, group in self._groups(x):
            prim = _drawable(schema)
            paint = functools.partial(_paint_shape, prim, self.resolution, self.channels, self.composite)
            if recompute and count > 1 and backend in _SCAN_BACKENDS:
                program = _scan_program(schema.kind, self.resolution, self.channels, self.composite)
                state = program(tuple(state), ops.transpose(group, (1, 0, 2)), softness)
            elif recompute and backend in _CHECKPOINT_BACKENDS:
                paint = keras.remat(paint)
                for i in range(count):
                    state = paint(group[:, i], softness, *state)
            else:
                # Every shape of the group at once, (B, count, H, W).
                alphas, colors = _alphas(prim, self.resolution, self.channels, group, softness)
                for i in range(count):
                    state = raster.paint_planes(self.composite, state, alphas[:, i], _rgb(colors[:, i], self.channels))
        image = ops.stack(raster.finish_planes(self.composite, state, background), axis=-1)
        return ops.cast(image, self.compute_dtype)

    def _prepare(self, inputs, sharpness):
        """``(dtype, x, softness)``: the parameters clipped and scaled as the distances take them."""
        dtype = "float64" if self.compute_dtype == "float64" else "float32"
        if sharpness is None:
            softness = numerics.as_dtype(self.softness, dtype)
        else:
            softness = 1.0 / numerics.as_dtype(sharpness, dtype)
        x = ops.clip(ops.cast(inputs, dtype), -FAR, FAR)
        colors = ops.convert_to_tensor(self._color_mask())
        # Colours to [0, 1] like opacities (a colour of 1e30 made a float16 image inf); gradient 0 outside.
        x = ops.where(colors, ops.where(x > 1.0, 1.0, ops.where(x < 0.0, 0.0, x)), x)
        if self.height != self.width:
            # Positions are (H v0, W v1) px; the distances take everything in units of min(H, W).
            x = x * ops.convert_to_tensor(self._position_scale(), dtype)
        return dtype, x, softness

    def alphas(self, inputs, sharpness=None):
        """Each shape's ``opacity * coverage`` and colour, before compositing.

        ``inputs`` ``(B, P)`` as for :meth:`call`. Returns ``(alphas, colors)``:
        ``(B, K, H, W)`` and ``(B, K, C)`` (colours clipped to ``[0, 1]`` as drawn),
        the ``K`` shapes in the order of ``spec`` (back to front for ``"over"``),
        in float32 (float64 for a float64 layer). Compositing them with
        :func:`shapegrad.raster.composite` (mode ``composite``, ``axis=1``, the
        layer's background) gives the layer's image.

        Example:
            >>> layer = Render("disk*2", resolution=8, channels=3)
            >>> a, c = layer.alphas(layer.spec.sample(2, seed=0))
            >>> tuple(a.shape), tuple(c.shape)
            ((2, 2, 8, 8), (2, 2, 3))
        """
        self.check_input(inputs.shape)
        _, x, softness = self._prepare(inputs, sharpness)
        alphas, colors = zip(*self._group_alphas(x, softness))
        if len(alphas) == 1:
            return alphas[0], colors[0]
        return ops.concatenate(alphas, axis=1), ops.concatenate(colors, axis=1)

    def _groups(self, x):
        """``(schema, count, parameters (B, count, size))`` of each group of ``spec``, from prepared ``x``."""
        for schema, count, start, size in self.spec.groups:
            yield schema, count, ops.reshape(x[:, start : start + count * size], (-1, count, size))

    def _group_alphas(self, x, softness):
        """``(alphas (B, count, H, W), colours (B, count, C))`` of each group, from prepared ``x``."""
        return [
            _alphas(_drawable(schema), self.resolution, self.channels, group, softness)
            for schema, _, group in self._groups(x)
        ]

    def _color_mask(self):
        """``(P,)`` booleans: True on the colour fields."""
        mask = np.zeros(self.spec.size, bool)
        for s in self.spec.slices:
            mask[s.slice] = s.field.kind == "color"
        return mask

    def _position_scale(self):
        """``(P,)`` factors taking position fields from fractions of (H, W) to units of min(H, W)."""
        scale = np.ones(self.spec.size, np.float64)
        pair = np.float64([self.height, self.width]) / min(self.height, self.width)
        for s in self.spec.slices:
            if s.field.kind == "position":
                scale[s.slice] = np.tile(pair, s.field.size // 2)
        return scale

    def get_config(self):
        config = super().get_config()
        config.update(
            shapes=format_shapes(self.shapes),
            resolution=self.resolution if isinstance(self.resolution, int) else list(self.resolution),
            channels=self.channels,
            softness=self.softness,
            composite=self.composite,
            background=list(self.background) if isinstance(self.background, tuple) else self.background,
            recompute=self.recompute,
        )
        return config


def _alphas(prim, n, channels, params, softness):
    """``opacity * coverage`` ``(B, count, H, W)`` and colours ``(B, count, C)`` of ``(B, count, size)`` parameters.

    ``n``: the layer's resolution, ``N`` or ``(H, W)``; positions arrive in
    units of ``min(H, W)`` on both axes. Kinds whose distance function has a
    component kernel (:mod:`shapegrad.sdf`) go through it, with the
    hand-written backward pass of :func:`shapegrad.raster.shape_alpha`; the
    others through their distance and plain autodiff. Same image either way.
    """
    h, w = height_width(n)
    values, offset = {}, 0
    for f in prim.fields:
        values[f.name] = params[:, :, None, None, offset : offset + f.size]  # (B, count, 1, 1, size)
        offset += f.size
    # Alpha outside [0, 1] has no meaning, and K of them multiplied together
    # overflow: clip (the gradient is 0 outside).
    opacity = ops.clip(params[:, :, -1], 0.0, 1.0)[:, :, None, None]
    color = params[:, :, offset : offset + channels]
    if prim.distance in (_disk, _ellipse, _box, _polygon):
        kernel, geometry = prim.distance(None, values, min(h, w), pixels=(h, w))
        softness = numerics.maximum(softness, numerics.as_dtype(raster.MIN_SOFTNESS, softness.dtype))
        return raster.shape_alpha(kernel, geometry, opacity, softness), color
    grid = raster.pixel_grid(h, w, params.dtype)[None, None]  # (1, 1, H, W, 2)
    distance = prim.distance(grid, values, min(h, w))
    return raster.coverage(distance, softness) * opacity, color


def _paint_shape(prim, n, channels, mode, params, softness, *state):
    """Composite one shape, its parameters ``(B, size)``, onto the compositing ``state`` (channel planes)."""
    alpha, color = _alphas(prim, n, channels, params[:, None], softness)
    return raster.paint_planes(mode, state, alpha[:, 0], _rgb(color[:, 0], channels))


def _rgb(color, channels):
    """One shape's colour ``(B, C)`` as ``C`` values ``(B, 1, 1)``, one per channel plane."""
    return [color[:, c][:, None, None] for c in range(channels)]


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
# An eager call on JAX runs as one compiled program up to this many groups (runs of one kind) in its
# spec, op by op beyond: each group is unrolled in the program, and XLA's compile time grows faster
# than the count (JAX, 128 px, one triangle a group: 16 groups 5.8 s, 32 13 s, 128 324 s; op by op
# 2.4-3.4 s the first call).
_COMPILED_GROUPS = 16


@functools.lru_cache(maxsize=128)
def _scan_program(kind, resolution, channels, composite):
    """:func:`_scan` of one kind's shapes as one compiled program, made once per settings.

    A scan of a new Python function is traced and compiled again on every eager
    call (JAX keys its caches on the function), 0.3 s for 8 disks at 32 px;
    this one is reused, so an eager call costs what a compiled one does. Inside
    a traced step (``jit``, ``grad``) it is inlined as any jitted function.
    """
    paint = functools.partial(_paint_shape, _drawable(primitive(kind)), resolution, channels, composite)
    return autodiff.jit(lambda state, params, softness: _scan(keras.remat(paint), state, params, softness))


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

