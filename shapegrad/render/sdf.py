"""Signed distance, in pixels, from points to geometric primitives.

Conventions (shared by every function here and by the layers):

- A point is ``(row, col)``; pixel ``(i, j)`` is the point ``(i, j)``.
- ``points`` has shape ``(..., 2)``; every parameter broadcasts against the
  points' leading dimensions like NumPy (for example points ``(1, H, W, 2)``
  with centres ``(B, 1, 1, 2)`` and radii ``(B, 1, 1)``).
- The result has the broadcast leading shape, in pixels, **negative inside**,
  zero on the boundary, positive outside.
- Values and gradients are finite everywhere, including on the boundary, at
  centres and apexes, on medial axes and for degenerate sizes.

Example:
    >>> import numpy as np
    >>> from keras import ops
    >>> from shapegrad.render import sdf
    >>> p = np.array([[0.0, 5.0], [0.0, -5.0]], "float32")
    >>> d = sdf.cone(p, apex=np.zeros(2, "float32"), axis=np.array([0.0, 1.0], "float32"),
    ...              half_angle=np.float32(np.pi / 4))
    >>> ops.convert_to_numpy(d).tolist()
    [-3.535533905029297, 5.0]
"""

import importlib
import math

import keras
from keras import ops

from shapegrad.ops import autodiff, numerics, safe
from shapegrad.render.paths import cubic_path, cubic_stroke

__all__ = ["bezier", "box", "cone", "cubic_path", "cubic_stroke", "disk", "ellipse", "polygon", "segment"]


def _tensor(x, dtype=None):
    if dtype is not None:
        return numerics.as_dtype(x if isinstance(x, (int, float)) else ops.convert_to_tensor(x), dtype)
    x = ops.convert_to_tensor(x)
    return x if "float" in str(x.dtype) else ops.cast(x, "float32")


def _cross(a, b):
    """z-component of the 2-D cross product along the last axis."""
    return a[..., 0] * b[..., 1] - a[..., 1] * b[..., 0]


def _dot(a, b):
    return a[..., 0] * b[..., 0] + a[..., 1] * b[..., 1]


@autodiff.compiled_when_eager
def cone(points, apex, axis, half_angle):
    """Signed distance to a cone (a 2-D wedge) with its apex, axis and half-angle.

    The cone is the set of points whose direction from ``apex`` makes an angle
    of at most ``half_angle`` with ``axis``; its boundary is two rays from the
    apex. The distance to that boundary is ``|r| sin(theta - half_angle)`` while
    the nearest boundary point lies on a ray, and ``|r|`` (the distance to the
    apex) once the angular gap exceeds 90 degrees; ``r = p - apex``.

    Args:
        points: ``(..., 2)`` points ``(row, col)`` in pixels.
        apex: ``(..., 2)`` apex in pixels.
        axis: ``(..., 2)`` axis direction, any length. A zero axis is read as
            ``(1, 0)`` (the +row direction), with zero gradient.
        half_angle: ``(...)`` half-angle in radians. 0 is a ray (nothing
            inside), ``pi / 2`` a half-plane, ``pi`` and more the whole plane but
            a cut along the back ray; negative values are empty.

    Returns:
        ``(...)`` signed distance in pixels, negative inside. At the apex it is 0.

    Example:
        >>> import numpy as np
        >>> float(cone(np.array([3.0, 4.0], "float32"), np.zeros(2, "float32"),
        ...            np.array([0.0, -1.0], "float32"), np.float32(0.25)))
        5.0
    """
    points = _tensor(points)
    dtype = points.dtype
    r = points - _tensor(apex, dtype)
    u = safe.safe_normalize(_tensor(axis, dtype), fallback=ops.cast([1.0, 0.0], dtype))
    theta = safe.safe_atan2(ops.abs(_cross(r, u)), _dot(r, u))
    gap = ops.clip(theta - _tensor(half_angle, dtype), -math.pi / 2, math.pi / 2)
    return safe.safe_norm(r) * ops.sin(gap)


# --------------------------------------------------------------------------
# Helpers shared by the primitives below.
#
# Two tools keep every gradient finite without approximating it:
#
# * Envelope theorem. The distance to a curve is min over its parameter t of
#   |p - c(t)|. The nearest parameter t* is searched for under
#   ``stop_gradient`` (so the search may use divisions, clips and iterations
#   whose own derivatives would be infinite or meaningless), and the distance
#   is then evaluated as |p - c(t*)| with full gradients. At a true minimum
#   dd/dt = 0, so holding t* constant gives the exact gradient.
# * Stopped direction. The unsigned length |q| has gradient q / |q|, which is
#   0 / 0 where q = 0: exactly on the boundary of a polygon, box or ellipse,
#   i.e. at pixels that matter. Writing the signed distance as
#   dot(q, stop_gradient(n)) with n = sign * q / |q| gives the same value and
#   the same gradient where q != 0, and where q = 0 lets n fall back to the
#   outward normal of the boundary: the true gradient of a signed distance on
#   its zero level set.
# --------------------------------------------------------------------------


def _scale_of(*vectors):
    """Largest |component| over several ``(..., 2)`` tensors, constant for gradients, never 0."""
    m = None
    for v in vectors:
        a = ops.max(ops.abs(v), axis=-1)
        m = a if m is None else numerics.maximum(m, a)
    m = ops.stop_gradient(m)
    return ops.where(m > 0, m, ops.ones_like(m))


def _unit(angle_or_direction, dtype, direction=False):
    """Unit vector (cos, sin) of an angle, or a normalised direction ((0, 0) -> (1, 0))."""
    if direction:
        d = _tensor(angle_or_direction, dtype)
        return safe.safe_normalize(d, fallback=ops.cast([1.0, 0.0], dtype))
    a = _tensor(angle_or_direction, dtype)
    return ops.stack([ops.cos(a), ops.sin(a)], axis=-1)


def _to_local(r, u):
    """Coordinates of ``r`` in the frame whose axis 0 is the unit vector ``u`` (axis 1: u turned +90 degrees)."""
    return _dot(r, u), r[..., 1] * u[..., 0] - r[..., 0] * u[..., 1]


def _signed_length(q, inside, normal):
    """``-|q|`` inside, ``|q|`` outside; gradient ``+-q/|q|``, or ``normal`` where ``q = 0``."""
    n = safe.safe_normalize(q)
    sign = ops.where(inside, -ops.ones_like(q[..., 0]), ops.ones_like(q[..., 0]))[..., None]
    zero = ops.all(q == 0, axis=-1, keepdims=True)
    n = ops.stop_gradient(ops.where(zero, normal, sign * n))
    return _dot(q, n)


def _segment_offset(pa, ba):
    """``pa - h * ba`` with ``h`` in [0, 1] the nearest point's parameter (held constant: envelope)."""
    s = _scale_of(pa, ba)
    pa_n, ba_n = pa / s[..., None], ba / s[..., None]
    h = safe.safe_div(_dot(pa_n, ba_n), _dot(ba_n, ba_n))
    h = ops.stop_gradient(ops.clip(h, 0.0, 1.0))
    return pa - h[..., None] * ba


def nonneg(x):
    return numerics.maximum(x, ops.zeros_like(x))


@autodiff.compiled_when_eager
def disk(points, center, radius):
    """Signed distance to a disk.

    ``|p - center| - radius``; exact everywhere. At the centre the value is
    ``-radius`` and the gradient with respect to ``points`` and ``center`` is 0
    (every direction is steepest there).

    Args:
        points: ``(..., 2)`` points ``(row, col)`` in pixels.
        center: ``(..., 2)`` centre in pixels.
        radius: ``(...)`` radius in pixels; negative radii count as 0 (a point,
            with zero gradient with respect to ``radius``).

    Returns:
        ``(...)`` signed distance in pixels, negative inside.

    Example:
        >>> import numpy as np
        >>> from keras import ops
        >>> ops.convert_to_numpy(disk(np.array([[0.0, 0.0], [0.0, 5.0]], "float32"), np.zeros(2, "float32"), 2.0)).tolist()
        [-2.0, 3.0]
    """
    points = _tensor(points)
    dtype = points.dtype
    r = points - _tensor(center, dtype)
    return safe.safe_norm(r) - nonneg(_tensor(radius, dtype))


@autodiff.compiled_when_eager
def segment(points, a, b, half_width):
    """Signed distance to a straight stroke with round caps (a capsule).

    The stroke is every point within ``half_width`` of the segment from ``a``
    to ``b``: ``dist(p, [a, b]) - half_width``, exact. A zero-length segment
    (``a == b``) is a disk of radius ``half_width``. On the centre line the
    value is ``-half_width`` and the gradient with respect to ``points`` is 0
    (the medial axis).

    Args:
        points: ``(..., 2)`` points ``(row, col)`` in pixels.
        a, b: ``(..., 2)`` end points in pixels.
        half_width: ``(...)`` half the stroke width in pixels; negative counts
            as 0 (then nothing is strictly inside).

    Returns:
        ``(...)`` signed distance in pixels, negative inside.

    Example:
        >>> import numpy as np
        >>> from keras import ops
        >>> p = np.array([[0.0, 5.0], [3.0, 12.0]], "float32")
        >>> ops.convert_to_numpy(segment(p, np.zeros(2, "float32"), np.array([0.0, 10.0], "float32"), 1.0)).tolist()
        [-1.0, 2.605551242828369]
    """
    points = _tensor(points)
    dtype = points.dtype
    a = _tensor(a, dtype)
    q = _segment_offset(points - a, _tensor(b, dtype) - a)
    return safe.safe_norm(q) - nonneg(_tensor(half_width, dtype))


@autodiff.compiled_when_eager
def box(points, center, half_size, angle=0.0, corner_radius=0.0):
    """Signed distance to a rotated, optionally rounded, rectangle.

    The box has half-extents ``half_size = (h0, h1)`` along its own axes: axis
    0 points along ``(cos angle, sin angle)`` in ``(row, col)`` coordinates
    (``angle = 0``: axis 0 runs down the rows), axis 1 is axis 0 turned by +90
    degrees. ``corner_radius`` rounds the corners without changing the extent
    (clipped to ``[0, min(h0, h1)]``; the maximum on a square gives a disk).
    Exact Euclidean distance inside and outside.

    On the edges the gradient is the outward normal; on the diagonals inside
    (where two edges are equally near) and at the centre it is one of the
    one-sided values, finite.

    Args:
        points: ``(..., 2)`` points ``(row, col)`` in pixels.
        center: ``(..., 2)`` centre in pixels.
        half_size: ``(..., 2)`` half-extents in pixels; negative values count as 0.
        angle: ``(...)`` rotation in radians.
        corner_radius: ``(...)`` radius of the rounded corners in pixels.

    Returns:
        ``(...)`` signed distance in pixels, negative inside.

    Example:
        >>> import numpy as np
        >>> from keras import ops
        >>> p = np.array([[0.0, 0.0], [0.0, 5.0], [4.0, 5.0]], "float32")
        >>> ops.convert_to_numpy(box(p, np.zeros(2, "float32"), np.array([1.0, 2.0], "float32"))).tolist()
        [-1.0, 3.0, 4.242640495300293]
    """
    points = _tensor(points)
    dtype = points.dtype
    return box_on_axis(points, _tensor(center, dtype), _tensor(half_size, dtype),
                _unit(angle, dtype), _tensor(corner_radius, dtype))


def box_on_axis(points, center, half_size, u, corner_radius):
    """:func:`box` with the orientation given as a unit vector ``u`` (axis 0)."""
    h0, h1, rc = box_clamps(half_size, corner_radius)
    x, y = _to_local(points - center, u)
    q0, q1, corner = box_excess(x, y, h0, h1, rc)
    q = ops.stack([q0, q1], axis=-1)
    q_safe = ops.where(corner[..., None], q, ops.ones_like(q))
    return box_distance(q0, q1, corner, rc, safe.safe_norm(q_safe))


# The box in three steps, shared with its component kernel (shapegrad.render.kernels.BoxKernel),
# which computes the length beyond a corner on separate maps and differentiates by hand.


def box_clamps(half_size, corner_radius):
    """The box's sizes as :func:`box` reads them: ``(h0, h1, rc)``.

    ``half_size`` ``(..., 2)`` with negative values counted as 0, and the corner
    radius ``(...)`` clipped to ``[0, min(h0, h1)]``.
    """
    h = nonneg(half_size)
    h0, h1 = h[..., 0], h[..., 1]
    return h0, h1, numerics.minimum(nonneg(corner_radius), numerics.minimum(h0, h1))


def box_excess(x, y, h0, h1, rc):
    """How far the point ``(x, y)`` (in the box's frame) lies beyond each pair of edges of the box shrunk by ``rc``.

    Returns ``(q0, q1, corner)``: ``corner`` where it is beyond both, so that the
    nearest boundary point is on a rounded corner, ``|(q0, q1)| - rc`` away.
    """
    q0 = ops.abs(x) - (h0 - rc)
    q1 = ops.abs(y) - (h1 - rc)
    return q0, q1, (q0 > 0) & (q1 > 0)


def box_distance(q0, q1, corner, rc, outside):
    """The box's signed distance from :func:`box_excess`'s parts; ``outside`` is ``|(q0, q1)|`` where ``corner``."""
    return ops.where(corner, outside, numerics.maximum(q0, q1)) - rc


@autodiff.compiled_when_eager
def polygon(points, vertices):
    """Signed distance to a simple polygon (convex or not, either orientation).

    The magnitude is the exact distance to the nearest edge (each edge a
    segment, found with the envelope rule); the sign comes from an even-odd
    crossing test, computed with comparisons only (no gradient flows through
    it). Zero-length edges (repeated vertices) and collinear vertices are
    allowed; a polygon with zero area has no inside. On an edge the gradient
    is the edge's outward normal.

    Args:
        points: ``(..., 2)`` points ``(row, col)`` in pixels.
        vertices: ``(..., V, 2)`` vertices in order (``V >= 1``); the last one
            connects back to the first.

    Returns:
        ``(...)`` signed distance in pixels, negative inside.

    Example:
        >>> import numpy as np
        >>> from keras import ops
        >>> tri = np.array([[0.0, 0.0], [4.0, 0.0], [0.0, 4.0]], "float32")
        >>> ops.convert_to_numpy(polygon(np.array([[1.0, 1.0], [-2.0, 1.0]], "float32"), tri)).tolist()
        [-1.0, 2.0]
    """
    points = _tensor(points)
    dtype = points.dtype
    v = _tensor(vertices, dtype)
    w = ops.roll(v, -1, axis=-2)  # the other end of each edge
    e = w - v  # (..., V, 2)
    pv = points[..., None, :] - v  # (..., V, 2)
    q = _segment_offset(pv, e)

    # Orientation (shoelace) and crossing test: comparisons, no gradient.
    vs, ws, ps = ops.stop_gradient(v), ops.stop_gradient(w), ops.stop_gradient(points)
    s = ops.max(_scale_of(vs - ps[..., None, :], ws - ps[..., None, :]), axis=-1)[..., None, None]
    vn, wn = (vs - ps[..., None, :]) / s, (ws - ps[..., None, :]) / s  # p at the origin, |.| <= 1
    area = ops.sum(_cross(vn, wn), axis=-1)
    orient = ops.where(area < 0, -ops.ones_like(area), ops.ones_like(area))[..., None, None]
    # Edge v -> w crosses the ray {row > 0, col = 0} iff it straddles col = 0 and
    # meets it at row = cross(v, w) / (w_col - v_col) > 0.
    straddles = (vn[..., 1] > 0) != (wn[..., 1] > 0)
    crossing = straddles & (_cross(vn, wn) * (wn[..., 1] - vn[..., 1]) > 0)
    crossings = ops.sum(ops.cast(crossing, "int32"), axis=-1)
    inside = (crossings % 2) == 1

    es = ops.stop_gradient(e)
    outward = safe.safe_normalize(ops.stack([es[..., 1], -es[..., 0]], axis=-1)) * orient
    d = _signed_length(q, inside[..., None], outward)  # (..., V)
    return ops.where(inside, ops.max(d, axis=-1), ops.min(d, axis=-1))


ELLIPSE_ITERATIONS = 4
ELLIPSE_FLOOR = 1e-2
ELLIPSE_FAR = 1e6


@autodiff.compiled_when_eager
def ellipse(points, center, radii, angle=0.0):
    """Signed distance to a rotated ellipse.

    Axis 0 (radius ``radii[..., 0]``) points along ``(cos angle, sin angle)`` in
    ``(row, col)`` coordinates, axis 1 is axis 0 turned by +90 degrees.

    Method: the nearest boundary point is found with four steps of the
    evolute iteration of Chatfield ("a simple method for distance to
    ellipse", 2017), run under ``stop_gradient``; the distance is then the exact
    Euclidean length from the point to that boundary point, with the sign of
    the exact implicit test ``(x / r0)^2 + (y / r1)^2 < 1``. So:

    - the zero level set is exact (the sign flips exactly on the ellipse, and
      the magnitude is the distance to a point *on* the ellipse);
    - the magnitude is never smaller than the true distance, and larger by
      little: measured against a brute-force float64 reference
      (``tests/test_sdf.py``), ``|error| / max(|d|, 1 px)`` stays below 1e-3
      in float64 for aspect ratios up to 50, and below 3e-3 in float32 for
      every aspect ratio, degenerate ones included (the issue allows 10%);
    - gradients are exact at the found point (envelope rule); on the boundary
      the gradient is the outward normal.

    Degenerate radii are allowed: a zero radius gives a segment (nothing
    inside), both zero a point; negative radii count as 0.

    Args:
        points: ``(..., 2)`` points ``(row, col)`` in pixels.
        center: ``(..., 2)`` centre in pixels.
        radii: ``(..., 2)`` semi-axes along axis 0 and axis 1, in pixels.
        angle: ``(...)`` rotation in radians.

    Returns:
        ``(...)`` signed distance in pixels, negative inside.

    Example:
        >>> import numpy as np
        >>> from keras import ops
        >>> p = np.array([[0.0, 0.0], [0.0, 5.0], [7.0, 0.0]], "float32")
        >>> d = ellipse(p, np.zeros(2, "float32"), np.array([4.0, 2.0], "float32"))
        >>> [round(v, 4) for v in ops.convert_to_numpy(d).tolist()]
        [-2.0, 3.0, 3.0]
    """
    points = _tensor(points)
    dtype = points.dtype
    return ellipse_on_axis(points, _tensor(center, dtype), _tensor(radii, dtype), _unit(angle, dtype))


def ellipse_on_axis(points, center, radii, u):
    """:func:`ellipse` with the orientation given as a unit vector ``u`` (axis 0)."""
    radii = nonneg(radii)
    x, y = _to_local(points - center, u)
    local = ops.stack([x, y], axis=-1)
    tx, ty = _ellipse_nearest(ops.stop_gradient(local), ops.stop_gradient(radii))
    a, b = radii[..., 0], radii[..., 1]
    sx = ops.where(x < 0, -ops.ones_like(x), ops.ones_like(x))
    sy = ops.where(y < 0, -ops.ones_like(y), ops.ones_like(y))
    nearest = ops.stack([sx * a * tx, sy * b * ty], axis=-1)
    q = local - nearest

    # Exact inside test on scaled values: x^2 b^2 + y^2 a^2 < a^2 b^2.
    ls, rs = ops.stop_gradient(local), ops.stop_gradient(radii)
    s = ops.stop_gradient(ops.max(rs, axis=-1))
    s = ops.where(s > 0, s, ops.ones_like(s))[..., None]
    ln = ops.clip(ls / s, -1e15, 1e15)
    rn = rs / s
    ln2, rn2 = ln * ln, rn * rn
    inside = ln2[..., 0] * rn2[..., 1] + ln2[..., 1] * rn2[..., 0] < rn2[..., 0] * rn2[..., 1]

    # Outward normal at the nearest point, proportional to (x / a^2, y / b^2).
    normal = safe.safe_normalize(
        ops.stop_gradient(ops.stack([sx * b * tx, sy * a * ty], axis=-1)),
        fallback=ops.cast([1.0, 0.0], points.dtype),
    )
    return _signed_length(q, inside, normal)


def _ellipse_nearest(local, radii):
    """(cos t, sin t) >= 0 of the nearest point (a cos t, b sin t) to ``|local|``; no gradient.

    Everything is divided by the larger radius first, so the iteration sees
    radii in [0, 1] whatever the input scale, and a point farther than 1e6
    of them is moved along its ray to that distance. Radii below 1% of the
    larger one are raised to 1% inside the iteration (which loses float32
    precision beyond aspect ratios of about 100); the point found is then
    used with the true radii, which keeps the error small (see above).
    """
    p = ops.abs(local)
    return ellipse_nearest_components(p[..., 0], p[..., 1], radii[..., 0], radii[..., 1], unroll=True)


_BEZIER_NEWTON = 8


@autodiff.compiled_when_eager
def bezier(points, p0, p1, p2, half_width):
    """Signed distance to a quadratic Bézier stroke with round caps.

    The curve is ``B(t) = (1-t)^2 p0 + 2 t (1-t) p1 + t^2 p2`` for t in [0, 1];
    the stroke is every point within ``half_width`` of it. Method: the nearest
    parameter is found under ``stop_gradient``: the squared distance
    ``|B(t) - p|^2`` is a quartic in t whose second derivative is a quadratic,
    so its convex pieces are known in closed form; on each (at most two) the
    minimum is found with 8 Newton steps safeguarded by bisection, and the
    nearer of the two (or an end point) is kept;
    the distance is then the exact ``|p - B(t*)| - half_width`` (envelope rule,
    so gradients are exact). Collinear or coincident control points are fine
    (a segment, a point). On the centre line the gradient with respect to
    ``points`` is 0 (the medial axis).

    Args:
        points: ``(..., 2)`` points ``(row, col)`` in pixels.
        p0, p1, p2: ``(..., 2)`` control points in pixels.
        half_width: ``(...)`` half the stroke width in pixels; negative counts as 0.

    Returns:
        ``(...)`` signed distance in pixels, negative inside.

    Example:
        >>> import numpy as np
        >>> from keras import ops
        >>> c = [np.array(v, "float32") for v in ([0.0, 0.0], [4.0, 4.0], [0.0, 8.0])]
        >>> d = bezier(np.array([[2.0, 4.0], [6.0, 4.0]], "float32"), *c, 0.5)
        >>> [round(v, 4) for v in ops.convert_to_numpy(d).tolist()]
        [-0.5, 3.5]
    """
    points = _tensor(points)
    dtype = points.dtype
    p0, p1, p2 = (_tensor(v, dtype) for v in (p0, p1, p2))
    t = _bezier_nearest(*(ops.stop_gradient(v) for v in (points, p0, p1, p2)))
    w0, w1, w2 = (1 - t) * (1 - t), 2 * t * (1 - t), t * t
    q = [points[..., k] - (w0 * p0[..., k] + w1 * p1[..., k] + w2 * p2[..., k]) for k in (0, 1)]
    return safe.safe_norm(ops.stack(q, axis=-1)) - nonneg(_tensor(half_width, dtype))


def _bezier_nearest(points, p0, p1, p2):
    """Parameter in [0, 1] of the nearest curve point; no gradient (see :func:`bezier`).

    Written on separate row and column components (no broadcast of t against
    a size-2 axis): the vector form was miscompiled by XLA on CPU (TensorFlow
    and JAX alike) when fused with its consumer, giving a wrong nearest point.
    """
    # Origin at the point, scaled by the largest offset: all values in [-1, 1].
    r0, r1, r2 = p0 - points, p1 - points, p2 - points
    s = _scale_of(r0, r1, r2)[..., None]
    r0, r1, r2 = r0 / s, r1 / s, r2 / s
    # B(t) - p = A t^2 + 2 C t + r0, with A = r0 - 2 r1 + r2 and C = r1 - r0.
    A = r0 - 2 * r1 + r2
    C = r1 - r0
    ax, ay, cx, cy, rx, ry = A[..., 0], A[..., 1], C[..., 0], C[..., 1], r0[..., 0], r0[..., 1]
    aa, ac, cc, ar = ax * ax + ay * ay, ax * cx + ay * cy, cx * cx + cy * cy, ax * rx + ay * ry

    def terms(t):
        """g = (B - p) . B' / 2 and its derivative h; the squared distance."""
        vx = (ax * t + 2 * cx) * t + rx
        vy = (ay * t + 2 * cy) * t + ry
        dx, dy = ax * t + cx, ay * t + cy
        return vx * dx + vy * dy, 2 * (dx * dx + dy * dy) + vx * ax + vy * ay, vx * vx + vy * vy

    # h(t) = 3 aa t^2 + 6 ac t + 2 cc + ar vanishes at s1 <= s2 (if at all). The
    # squared distance is concave on [s1, s2], so its minima over [0, 1] lie in
    # [0, s1] or [s2, 1], where g increases: one root (or an end) each.
    disc = 36 * ac * ac - 12 * aa * (2 * cc + ar)
    has_roots = (disc > 0) & (aa > 1e-12)
    sq = safe.safe_sqrt(ops.where(has_roots, disc, ops.zeros_like(disc)))
    den = ops.where(has_roots, 6 * aa, ops.ones_like(aa))
    one = ops.ones_like(aa)
    s1 = ops.where(has_roots, ops.clip((-6 * ac - sq) / den, 0.0, 1.0), one)
    s2 = ops.where(has_roots, ops.clip((-6 * ac + sq) / den, 0.0, 1.0), one)
    t1 = _increasing_root(terms, ops.zeros_like(aa), s1)
    t2 = _increasing_root(terms, s2, one)
    return ops.where(terms(t2)[2] < terms(t1)[2], t2, t1)


def _increasing_root(terms, lo, hi):
    """Root in [lo, hi] of an increasing g (an end if g has one sign there): Newton safeguarded by bisection."""
    g_lo, _, _ = terms(lo)
    g_hi, _, _ = terms(hi)
    at_lo = g_lo >= 0
    at_hi = (g_hi <= 0) & ~at_lo
    t = ops.where(at_lo, lo, ops.where(at_hi, hi, 0.5 * (lo + hi)))
    lo = ops.where(at_hi, hi, lo)
    hi = ops.where(at_lo, lo, hi)
    for _ in range(_BEZIER_NEWTON):
        g, h, _ = terms(t)
        lo = ops.where(g > 0, lo, t)
        hi = ops.where(g > 0, t, hi)
        ok = h > 0
        newton = t - g / ops.where(ok, h, ops.ones_like(h))
        ok = ok & (newton >= lo) & (newton <= hi)
        t = ops.where(ok, newton, 0.5 * (lo + hi))
    return t


def inverse_length(length2):
    """``1 / sqrt(length2)`` where ``length2`` is a normal number, else 0 (no infinity, no NaN)."""
    ok = length2 >= numerics.tiny(length2)
    return ops.where(ok, ops.rsqrt(ops.where(ok, length2, ops.ones_like(length2))), ops.zeros_like(length2)), ok


def inverse_scale(s):
    """``1 / s`` where ``s`` (>= 0) is a normal number, else 1: the reciprocal of a subnormal overflows."""
    ok = s >= numerics.tiny(s)
    return ops.where(ok, 1.0 / ops.where(ok, s, ops.ones_like(s)), ops.ones_like(s))


def fixed_loop(count, step, start, unroll=False):
    """``ops.fori_loop(0, count, step, start)``; on TensorFlow a ``tf.while_loop`` with ``maximum_iterations``.

    XLA compiles a TensorFlow loop inside a gradient tape only with a fixed
    trip count (the tape keeps per-step accumulators), which Keras' loop does
    not set. A ``tf.function(jit_compile=True)`` called under a tape outside it
    cannot hand those accumulators out at all, so code that autodiff may trace
    (the points form, :func:`ellipse_on_axis`) asks for ``unroll``: a Python loop.
    """
    if unroll:
        for i in range(count):
            start = step(i, start)
        return start
    if keras.backend.backend() == "tensorflow":
        import tensorflow as tf

        def body(i, value):
            return i + 1, step(i, value)

        return tf.while_loop(lambda i, _: i < count, body, (0, start), maximum_iterations=count)[1]
    return ops.fori_loop(0, count, step, start)


def ellipse_nearest_components(px, py, a, b, unroll=False):
    """:func:`_ellipse_nearest` on separate maps ``|x|, |y|`` and radii ``a, b``: the one copy of the iteration.

    Chatfield's step from the nearest-point estimate ``t = (tx, ty)`` (unit,
    >= 0) is: evolute point ``e = (c tx^3 / a, -c ty^3 / b)``, ``c = a^2 - b^2``;
    ``r = (a tx, b ty) - e``, ``q = p - e``; ``t' = clip((q |r| / |q| + e) / (a, b), 0, 1)``,
    normalised. Here the steps carry one map, ``u = tan(angle / 2)`` of ``t``
    (:func:`half_angle_step`), and the last step's ``t'`` is normalised
    directly: two square roots and two divisions a step instead of three and
    seven. Measured: an ellipse's forward+backward 1.23x (TensorFlow-XLA) and
    1.30x (JAX-jit) faster; the same point to float32 rounding (float64: 1e-12). The
    steps run in a loop (:func:`fixed_loop`): unrolled, XLA on CPU re-derived
    each step's ``u`` from all the earlier steps' maps in every later fusion.
    """
    # Scaled per shape (the larger radius becomes 1), so that the radii and every term made of
    # them alone stay per shape, not per pixel: TensorFlow-XLA then carries 3 maps through the
    # loop instead of 7 (an ellipse's forward+backward 1.10-1.17x faster there, 1.08-1.18x on
    # JAX-jit; benchmarks/results.md). A point more than ELLIPSE_FAR larger radii away is moved
    # along its ray to that distance, so no square overflows: its nearest point moves by at most
    # 1e-6 of the boundary's radius of curvature, its distance and direction by far less than
    # float32 rounding.
    s = numerics.maximum(a, b)
    inv_s = inverse_scale(s)
    m = numerics.maximum(px, py)
    far = m > ELLIPSE_FAR * s
    k = ops.where(far, ELLIPSE_FAR / ops.where(far, m, ops.ones_like(m)), inv_s)
    px, py = px * k, py * k
    a = numerics.maximum(a * inv_s, ELLIPSE_FLOOR * ops.ones_like(a))
    b = numerics.maximum(b * inv_s, ELLIPSE_FLOOR * ops.ones_like(b))
    start = (math.sqrt(2.0) - 1.0) * ops.ones_like(px)  # tan(pi / 8): t = (1, 1) / sqrt(2)

    def step(_, u):
        tx, ty = half_angle_step(px, py, a, b, u)
        half = ops.sqrt(tx * tx + ty * ty) + tx  # u' = ty' / (|t'| + tx'), whatever t''s length
        ok = half > 0
        # u is in [0, 1] (the angle in [0, pi / 2]); the clip only catches squares that underflowed.
        u = ops.clip(ty / ops.where(ok, half, ops.ones_like(half)), 0.0, 1.0)
        return ops.where(ok, u, start)  # t' = 0: the start

    u = fixed_loop(ELLIPSE_ITERATIONS - 1, step, start, unroll)
    tx, ty = half_angle_step(px, py, a, b, u)
    inv, ok = inverse_length(tx * tx + ty * ty)
    return ops.where(ok, tx * inv, math.sqrt(0.5)), ops.where(ok, ty * inv, math.sqrt(0.5))


def half_angle_step(px, py, a, b, u):
    """Chatfield's ``t'`` times a positive factor, from ``t = (X, Y) / D``, ``(X, Y, D) = (1 - u^2, 2u, 1 + u^2)``.

    Every term of the step shares the factor ``1 / D^3``, so ``|r| / |q|`` is
    one ratio free of it, and ``t'`` comes out times ``a^2 b^2 D^3``: the clip
    at 1 is a clip at that factor.
    """
    a2, b2 = a * a, b * b
    c = a2 - b2
    uu = u * u
    x, y, d = 1.0 - uu, 2.0 * u, 1.0 + uu
    d2 = d * d
    d3 = d2 * d
    cx3, cy3 = c * x * x * x, c * y * y * y
    # r and q times a b D^3, each component over its radius (the ratio only needs that).
    rx, ry = a2 * x * d2 - cx3, b2 * y * d2 + cy3
    qx, qy = px * a * d3 - cx3, py * b * d3 + cy3
    num = b2 * rx * rx + a2 * ry * ry
    den = b2 * qx * qx + a2 * qy * qy
    ok = den > 0
    k = ops.where(ok, ops.sqrt(num / ops.where(ok, den, ops.ones_like(den))), ops.zeros_like(den))  # |r| / |q|
    top = a2 * b2 * d3
    return ops.clip(b2 * (qx * k + cx3), 0.0, top), ops.clip(a2 * (qy * k - cy3), 0.0, top)


def __getattr__(name):
    """The kernels (``DiskKernel``, ...) lived here before :mod:`shapegrad.render.kernels` (kept for one release)."""
    if name in ("BoxKernel", "DiskKernel", "EllipseKernel", "PolygonKernel"):
        return getattr(importlib.import_module("shapegrad.render.kernels"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
