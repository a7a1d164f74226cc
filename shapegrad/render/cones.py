"""The ``Cones`` layer: one soft cone per image, a thin wrapper over :mod:`shapegrad.sdf`, with a hand-derived backward pass."""

import math

import keras
from keras import ops

from shapegrad import _validate
from shapegrad.ops import autodiff, numerics, safe
from shapegrad.render import kernels, sdf
from shapegrad.render.primitives import FAR, RenderSpec, height_width
from shapegrad.render.raster import pixel_grid

__all__ = ["Cones"]

# The apex N * a is split as N * a_hi + N * a_lo with a_hi on a 2**-12 grid. For apexes
# inside the image (|a| <= 1) and integer N <= 2048, N * a_hi and the pixel offsets
# p - N * a_hi are exact in float32, so the image matches a float64 evaluation to about
# 1e-6 even for resolutions that are not powers of two. Far outside (|a| >= 4096 / N) the
# split is no longer exact, but the offsets are then large and their 6e-8 relative
# rounding is harmless.
_GRID = 4096.0


@keras.saving.register_keras_serializable(package="shapegrad")
class Cones(keras.layers.Layer):
    """Draw one soft cone (a 2-D wedge) per sample, with gradients that are never NaN.

    Input ``(batch, 5)``: ``[a0, a1, d0, d1, s]`` per sample. Output
    ``(batch, N, N, 1)`` in the layer's compute dtype (``(batch, H, W, 1)``
    for ``resolution=(H, W)``). The layout is ``layer.spec``, a
    :class:`shapegrad.primitives.RenderSpec` of one ``"cone"`` without colour
    or opacity: fields ``apex`` (2, position), ``axis`` (2, direction) and
    ``half_angle`` (1, angle: ``180 * s`` degrees). Conventions:

    - pixel ``(i, j)`` (row, column) is the point ``p = (i, j)``;
    - the apex is ``c = N * (a0, a1)`` (``(H a0, W a1)`` on a non-square
      image, as every position in :mod:`shapegrad.primitives`);
    - the axis is the direction of ``(d0, d1)`` (any non-zero length);
    - the half-angle is ``pi * s`` (``s = 0.5``: a half-plane, ``s >= 1``: all);
    - ``theta`` is the angle at the apex between ``p - c`` and the axis, in
      ``[0, pi]``.

    ``edge="angle"`` (default) gives ``sigmoid(sharpness * (pi * s - theta))``
    with ``sharpness = N`` per radian (``min(H, W)`` on a non-square image): the same image as the original
    ``acos(clip(dot(...)))`` layer (within 1e-5 of a float64 evaluation), but
    computed as ``atan2(|cross|, |dot|)`` in the axis frame, whose gradient is
    finite everywhere. ``edge="distance"`` gives
    ``sigmoid(-sharpness * signed_distance)`` with the Euclidean distance in
    pixels to the cone's boundary (:func:`shapegrad.sdf.cone`), so the edge has
    one width everywhere; ``sharpness`` (1 / softness) defaults to 2 per pixel,
    the angle mode's sharpness at half an image from the apex.

    Degenerate inputs, all with finite values and finite gradients:

    - the apex pixel (``p = c`` exactly) counts as lying on the axis
      (``theta = 0``), so its value is ``sigmoid(sharpness * pi * s)`` in angle
      mode and 0.5 in distance mode (the apex is on the boundary);
    - a zero axis ``(0, 0)`` is read as ``(1, 0)`` (pointing down the rows),
      with zero gradient with respect to ``(d0, d1)``; tiny and huge axes
      (1e-30, 1e30) are exact, the gradient scaling like ``1 / |d|``;
    - ``a`` and ``s`` are clipped to ``[-1e12, 1e12]`` (beyond that the image
      cannot change in float32).

    One limit is the arithmetic's, not the layer's: in distance mode the
    gradient with respect to ``(d0, d1)`` is the apex's distance in pixels
    divided by ``|d|`` (times that of a unit axis), which exceeds float32 when
    that ratio passes about 1e37 (an axis of length 1e-30 with an apex 1e9
    images away). Angle mode has no such factor.

    The geometry is computed in float32 (float64 under a float64 policy)
    whatever the dtype policy (inputs are not autocast), and the image is cast
    to the compute dtype, so the layer works under ``mixed_float16`` and
    ``mixed_bfloat16``.

    Args:
        resolution: ``N`` (square) or ``(H, W)``, in pixels. ``layer.resolution``
            is an int for a square layer; ``layer.height``, ``layer.width`` always.
        edge: ``"angle"`` or ``"distance"``.
        sharpness: edge sharpness, per radian (angle) or per pixel (distance);
            ``None`` for the defaults above (``layer.default_sharpness``).

    Example:
        >>> import numpy as np
        >>> layer = Cones(32)
        >>> x = np.array([[0.5, 0.5, 0.0, 1.0, 0.25]], "float32")
        >>> image = keras.ops.convert_to_numpy(layer(x))
        >>> image.shape, bool(image[0, 16, 28, 0] > 0.99), bool(image[0, 16, 4, 0] < 0.01)
        ((1, 32, 32, 1), True, True)
        >>> layer.spec.size, [s.field.name for s in layer.spec.fields_of(0)], layer.default_sharpness
        (5, ['apex', 'axis', 'half_angle'], 32.0)
    """

    def __init__(self, resolution, edge="angle", sharpness=None, **kwargs):
        kwargs.pop("autocast", None)
        super().__init__(autocast=False, **kwargs)
        self.resolution = _validate.resolution("resolution", resolution)
        self.height, self.width = height_width(self.resolution)
        self.channels = 1
        self.edge = _validate.one_of("edge", edge, ("angle", "distance"))
        self.sharpness = _validate.positive_number("sharpness", sharpness, allow_none=True)
        self.spec = RenderSpec("cone", self.resolution, channels=1, appearance=False)
        self.supports_masking = False

    def build(self, input_shape):
        _validate.last_dim("Cones", input_shape, 5, "[a0, a1, d0, d1, s] per sample")
        self.built = True

    def compute_output_shape(self, input_shape):
        _validate.last_dim("Cones", input_shape, 5, "[a0, a1, d0, d1, s] per sample")
        return (input_shape[0], self.height, self.width, 1)

    @property
    def default_sharpness(self):
        """The sharpness when :meth:`call` is given none: the layer's, else ``N`` per radian
        (``min(H, W)``) in angle mode and 2 per pixel in distance mode."""
        if self.sharpness is not None:
            return self.sharpness
        return 2.0 if self.edge == "distance" else float(min(self.height, self.width))

    @property
    def geometry_dtype(self):
        """float64 under a float64 policy, else float32 (also for float16/bfloat16 policies)."""
        return "float64" if self.compute_dtype == "float64" else "float32"

    @autodiff.compiled_when_eager(method=True)
    def call(self, inputs, sharpness=None):
        """Render; ``sharpness`` (a float or scalar tensor) overrides the layer's for this call.

        A tensor here lets a training loop anneal the edge from soft to sharp
        (see :mod:`shapegrad.train`) without rebuilding or re-tracing the layer.
        """
        if sharpness is None:
            sharpness = self.default_sharpness
        sharpness = ops.cast(sharpness, self.geometry_dtype)
        if self.edge == "angle":
            x = ops.cast(inputs, self.geometry_dtype)
            image = _angle_image(x, sharpness, self.resolution)
        else:
            image = ops.sigmoid(sharpness * self.logit(inputs))
        return ops.cast(image[..., None], self.compute_dtype)

    def logit(self, inputs):
        """The edge function at sharpness 1, shape ``(batch, H, W)``.

        Angle mode: ``pi * s - theta`` in radians; distance mode: minus the
        signed distance in pixels. The image is ``sigmoid(sharpness * logit)``.
        """
        x = ops.cast(inputs, self.geometry_dtype)
        n = self.resolution
        a = ops.clip(x[:, 0:2], -FAR, FAR)
        d = x[:, 2:4]
        s = ops.clip(x[:, 4], -FAR, FAR)[:, None, None]
        grid = pixel_grid(self.height, self.width, x.dtype)[None]  # (1, H, W, 2)
        if self.edge == "distance":
            apex = (_per_axis(n, x.dtype) * a)[:, None, None, :]
            return -sdf.cone(grid, apex, d[:, None, None, :], math.pi * s)
        return _angle_margin(grid, a, d, s, n)

    def get_config(self):
        config = super().get_config()
        resolution = self.resolution if isinstance(self.resolution, int) else list(self.resolution)
        config.update(resolution=resolution, edge=self.edge, sharpness=self.sharpness)
        return config


def _per_axis(n, dtype):
    """Pixels per unit of a position: ``float(N)``, or the ``(H, W)`` pair as a tensor."""
    if isinstance(n, int):
        return float(n)
    return ops.convert_to_tensor([float(n[0]), float(n[1])], dtype)


def _offsets(grid, a, n):
    """Exact pixel offsets from the apex, ``p - N a = (p - N a_hi) - N a_lo``: two ``(B, H, W)``."""
    a_hi = ops.stop_gradient(ops.round(a * _GRID) / _GRID)
    a_lo = a - a_hi
    scale = _per_axis(n, a.dtype)
    r = (grid - (scale * a_hi)[:, None, None, :]) - (scale * a_lo)[:, None, None, :]
    return r[..., 0], r[..., 1]


# atan(u) ~ u + u^3 * (c0 + c1 u^2 + ... + c4 u^8) on |u| <= tan(pi / 8): a weighted
# least-squares (near-minimax) fit of our own; max error 2e-10 in float64 and
# 1.8e-8 (under one ulp of pi / 8) evaluated in float32.
_ATAN_COEFFICIENTS = (
    -0.33333301349803457,
    0.19997777283271417,
    -0.14232149217662016,
    0.10518351199566547,
    -0.05903261602314606,
)
_TAN_PI_8 = 0.41421356237309503
# Backends compiled by XLA, whose CPU atan2 is a scalar call per element. PyTorch's
# atan2 is one vectorised kernel, where the polynomial would be a dozen eager ones.
_XLA_BACKENDS = ("tensorflow", "jax")


def _folded_angle(c, t):
    """``atan2(c, t)`` for ``c, t >= 0`` (both zero: 0), in ``[0, pi / 2]``, without a transcendental call.

    XLA on CPU lowers ``atan2`` to a scalar library call per element, about 15x
    the cost of a sigmoid; here it is one division and a polynomial. With
    ``lo = min(c, t)``, ``hi = max(c, t)``: ``atan(lo / hi)``, reduced to
    ``|u| <= tan(pi / 8)`` by ``atan(x) = pi / 4 + atan((x - 1) / (x + 1))``, and
    reflected (``pi / 2 - ...``) where ``c > t``. Used for float32 under XLA
    only; float64 geometry and PyTorch use :func:`shapegrad.safe.safe_atan2`.
    """
    lo, hi = ops.minimum(c, t), ops.maximum(c, t)
    big = lo > _TAN_PI_8 * hi
    num = ops.where(big, lo - hi, lo)
    den = ops.where(big, lo + hi, ops.where(hi > 0, hi, ops.ones_like(hi)))  # the apex: 0 / 1
    u = num / den
    z = u * u
    q = _ATAN_COEFFICIENTS[-1]
    for coefficient in _ATAN_COEFFICIENTS[-2::-1]:
        q = q * z + coefficient
    angle = ops.where(big, math.pi / 4, 0.0) + (u + u * z * q)  # atan(lo / hi), in [0, pi / 4]
    return ops.where(c > t, math.pi / 2 - angle, angle)


def _angle_margin(grid, a, d, s, n):
    """``pi * s - theta`` per pixel, accurate to float32 rounding; shape ``(B, N, N)``."""
    r0, r1 = _offsets(grid, a, n)
    # Unit axis; a zero axis falls back to (1, 0).
    e = safe.safe_normalize(d, fallback=[1.0, 0.0])[:, None, None, :]
    cross = r0 * e[..., 1] - r1 * e[..., 0]
    dot = r0 * e[..., 0] + r1 * e[..., 1]
    # Angle to the nearer of +axis and -axis, in [0, pi/2]; measuring from the
    # nearer one keeps full float32 precision when theta is close to pi.
    if keras.backend.backend() in _XLA_BACKENDS and keras.backend.standardize_dtype(dot.dtype) == "float32":
        folded = _folded_angle(ops.abs(cross), ops.abs(dot))
    else:
        folded = safe.safe_atan2(ops.abs(cross), ops.abs(dot))
    return ops.where(dot >= 0, math.pi * s - folded, folded - math.pi * (1.0 - s))


def _pixel_sums(w, grid, a, e, n):
    """The four per-sample pixel sums of :func:`_angle_image`'s backward pass, each ``(B,)``.

    ``sum(w)``, ``sum(w * sgn)``, ``sum(-w * sgn * r1 / |r|^2)`` and
    ``sum(w * sgn * r0 / |r|^2)`` with ``r = p - c`` and ``sgn = sign(e x r)``;
    the apex pixel (``|r|^2`` negligible) adds 0 to the last two.

    The image is cut into equal row blocks (``kernels.row_blocks``: 4 on
    TensorFlow, else 1) whose terms are added elementwise before the sum (the
    same sum in another order). TensorFlow's XLA on CPU
    writes every summed map to memory and reads it back (a reduce-window tree),
    and each of the four maps was its own image-sized buffer; folded, the
    per-pixel terms are computed where they are added and only a map of one
    block per sum is written. The offsets, signs and divisions are recomputed
    per block from the pixel grid instead of being kept from the forward pass.
    """
    height = height_width(n)[0]

    def block(start, stop):
        part = slice(start, stop)
        wb = w[:, part]
        r0, r1 = _offsets(grid[:, part], a, n)
        sgn = ops.sign(e[:, None, None, 0] * r1 - e[:, None, None, 1] * r0)
        # (-r1, r0) / |r|^2, as r_i * (1 / |r|^2): each factor at most 1 / |r| <= 1e19, so no product
        # overflows. |r|^2 below the smallest normal (|r| < 1e-19 px in float32) counts as the apex;
        # |r|^2 cannot overflow (|r| <= N * 1e12 after the clip).
        r2 = r0 * r0 + r1 * r1
        apex = numerics.negligible(r2)
        inv_r2 = ops.where(apex, ops.zeros_like(r2), 1.0 / ops.where(apex, ops.ones_like(r2), r2))
        ws = wb * sgn
        return wb, ws, -ws * (r1 * inv_r2), ws * (r0 * inv_r2)

    totals = kernels.fold_rows(height, kernels.row_blocks(height), block)
    return tuple(ops.sum(t, axis=(1, 2)) for t in totals)


def _angle_image(x, sharpness, n):
    """``sigmoid(sharpness * (pi * s - theta))``, ``(B, N, N)``, with a hand-derived backward pass.

    Autodiff of :func:`_angle_margin` keeps several per-pixel intermediates and
    differentiates ``atan2``; the backward here needs none of them. With
    ``r = p - c`` and ``sgn = sign(e x r)``, ``theta`` moves by
    ``sgn * (-r1, r0) / |r|^2`` per unit of ``r`` and by ``-sgn * (-e1, e0) / |d|``
    per unit of ``d``, so per sample::

        dL/da = N * sum(w * sgn * (-r1, r0) / |r|^2)
        dL/dd = (-e1, e0) / |d| * sum(w * sgn)
        dL/ds = pi * sum(w),   w = dL/dy * y (1 - y) * sharpness

    The apex pixel (``|r|^2`` below the smallest normal: ``|r| < 1e-19`` px in
    float32), the axis line (``sgn = 0``), a negligible axis and clipped ``a``
    or ``s`` contribute zero. The forward values are those of
    :func:`_angle_margin`.
    """

    @ops.custom_gradient
    def render(x, k):
        grid = pixel_grid(*height_width(n), x.dtype)[None]
        a = ops.clip(x[:, 0:2], -FAR, FAR)
        d = x[:, 2:4]
        s = ops.clip(x[:, 4], -FAR, FAR)[:, None, None]
        margin = _angle_margin(grid, a, d, s, n)
        image = ops.sigmoid(k * margin)

        def grad(*args, upstream=None):
            if upstream is None:
                (upstream,) = args
            gy = ops.cast(upstream, x.dtype) * image * (1.0 - image)
            w = gy * k
            e = safe.safe_normalize(d, fallback=[1.0, 0.0])
            sum_w, sum_ws, sum_a0, sum_a1 = _pixel_sums(w, grid, a, e, n)
            inside = ops.cast(ops.abs(x[:, 0:2]) <= FAR, x.dtype)
            da = _per_axis(n, x.dtype) * ops.stack([sum_a0, sum_a1], axis=-1) * inside
            # A negligible axis is the fallback (1, 0) in the forward pass: no gradient. Otherwise
            # (-e1, e0) * S / |d|, each component divided separately so a zero one stays 0.
            negligible = numerics.negligible(numerics.max_abs(d))
            length = ops.where(negligible, ops.ones_like(negligible, dtype=d.dtype), safe.safe_norm(d, keepdims=True))
            turn = sum_ws[:, None]
            dd = ops.stack([-e[:, 1:2] * turn, e[:, 0:1] * turn], axis=-1)[:, 0, :] / length
            dd = ops.where(negligible, ops.zeros_like(d), dd)
            ds = math.pi * sum_w * ops.cast(ops.abs(x[:, 4]) <= FAR, x.dtype)
            dk = ops.sum(gy * margin)
            return ops.concatenate([da, dd, ds[:, None]], axis=-1), ops.cast(dk, k.dtype)

        return image, grad

    return render(x, sharpness)
