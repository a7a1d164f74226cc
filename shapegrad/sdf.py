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
    >>> from shapegrad import sdf
    >>> p = np.array([[0.0, 5.0], [0.0, -5.0]], "float32")
    >>> sdf.cone(p, apex=np.zeros(2, "float32"), axis=np.array([0.0, 1.0], "float32"),
    ...          half_angle=np.float32(np.pi / 4)).tolist()
    [-3.535533905029297, 5.0]
"""

import math

from keras import ops

from shapegrad import safe

__all__ = ["cone"]


def _tensor(x, dtype=None):
    x = ops.convert_to_tensor(x)
    if dtype is not None:
        return ops.cast(x, dtype)
    return x if "float" in str(x.dtype) else ops.cast(x, "float32")


def _cross(a, b):
    """z-component of the 2-D cross product along the last axis."""
    return a[..., 0] * b[..., 1] - a[..., 1] * b[..., 0]


def _dot(a, b):
    return a[..., 0] * b[..., 0] + a[..., 1] * b[..., 1]


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
