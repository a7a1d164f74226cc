"""NaN-safe math: finite values *and finite gradients* at each op's hazard.

Reverse-mode autodiff evaluates the derivative of *every* branch, including the
ones a ``where`` or ``clip`` throws away. So ``where(x > 0, sqrt(x), 0)`` still
has a NaN gradient at ``x = 0``: the derivative of ``sqrt`` there is infinite,
and ``0 * inf = NaN`` leaks through the unselected branch. The cure used in every
function below is the *double where*:

1. make the dangerous input harmless **before** the op
   (``x_safe = where(x > 0, x, 1)``),
2. apply the op to the harmless input,
3. select the wanted value afterwards (``where(x > 0, sqrt(x_safe), 0)``).

The outer ``where`` sends a zero gradient to the branch it drops, and the inner
one makes sure that branch's own derivative is finite, so ``0 * finite = 0``.

Scale: functions of a direction (norm, normalisation, angles) first divide by
the largest absolute component (held constant for differentiation, which is
exact because the result does not depend on it). Squares of 1e30 or 1e-30 then
neither overflow nor underflow in float32.

Every function accepts anything ``keras.ops.convert_to_tensor`` takes, keeps
the input's float dtype and broadcasts like NumPy. A NaN input gives a NaN
output: the guards test for the hazard itself, so they never hide a NaN that
came from upstream.

Example:
    >>> import numpy as np
    >>> from shapegrad.ops import safe
    >>> float(safe.safe_norm(np.zeros(2, "float32")))
    0.0
    >>> round(float(safe.angle_between(np.array([1.0, 0.0]), np.array([0.0, 2.0]))), 6)
    1.570796
"""

import math

import keras  # noqa: F401 - the examples below use it
from keras import ops

from shapegrad.ops.numerics import (  # under their old names: the functions below read as before
    float_tensor as _float_tensor,
    tiny as _tiny,
    negligible as _negligible,
    max_abs as _max_abs,
    maximum as _maximum,
    arctan2 as _arctan2,
)

__all__ = [
    "safe_sqrt",
    "safe_norm",
    "safe_normalize",
    "safe_div",
    "safe_log",
    "safe_acos",
    "safe_atan2",
    "angle_between",
]

def safe_sqrt(x):
    """Square root with a finite gradient at 0.

    Hazard: ``d sqrt(x)/dx = 1 / (2 sqrt(x))`` is infinite at 0 and ``sqrt`` is
    NaN below 0.

    Returns ``sqrt(x)`` for ``x > 0`` and ``0`` for ``x <= 0``; the gradient is
    the exact ``1 / (2 sqrt(x))`` for ``x > 0`` (large but finite, even for
    the smallest subnormal) and **0** for ``x <= 0``.

    Example:
        >>> import numpy as np
        >>> float(safe_sqrt(np.float32(4.0)))
        2.0
    """
    x = _float_tensor(x)
    hazard = x <= 0
    x_safe = ops.where(hazard, ops.ones_like(x), x)
    return ops.where(hazard, ops.zeros_like(x), ops.sqrt(x_safe))


def safe_norm(x, axis=-1, keepdims=False):
    """Euclidean norm along ``axis`` with gradient 0 at the zero vector.

    Hazard: ``|x| = sqrt(sum x^2)`` has gradient ``x / |x| = 0 / 0`` at 0, and
    ``sum x^2`` overflows for |x| ~ 1e20 and underflows for |x| ~ 1e-20 in
    float32.

    Returns the exact norm (computed as ``m * |x / m|`` with ``m = max |x_i|``,
    so it is finite for any finite input); at the zero vector the value is 0 and
    the gradient is **0**, and so for vectors whose components are all
    subnormal (below about 1.2e-38 in float32), whose direction is not
    reliably representable. Elsewhere the gradient is ``x / |x|``.

    Args:
        x: tensor of shape ``(..., D)`` (or any shape, with ``axis``).
        axis: the vector axis (an int).
        keepdims: keep ``axis`` with size 1.

    Example:
        >>> import numpy as np
        >>> f"{float(safe_norm(np.array([3e30, 4e30], 'float32'))):.6g}"  # |x|^2 = 2.5e61 overflows float32
        '5e+30'
    """
    x = _float_tensor(x)
    scale = _max_abs(x, axis)
    zero = _negligible(scale)
    y = x / ops.where(zero, ops.ones_like(scale), scale)
    norm = ops.where(zero, ops.zeros_like(scale), safe_sqrt(ops.sum(y * y, axis=axis, keepdims=True)) * scale)
    return norm if keepdims else ops.squeeze(norm, axis=axis)


def safe_normalize(x, axis=-1, fallback=None):
    """Unit vector along ``axis``; the zero vector maps to ``fallback``.

    Hazard: ``x / |x|`` is ``0 / 0`` at the zero vector, and its gradient
    ``(I - u u^T) / |x|`` divides by zero there.

    Returns ``x / |x|`` for non-zero ``x`` (exactly scale-invariant: 1e-30 and
    1e30 work in float32). At the zero vector (and at vectors whose largest
    component is subnormal, below about 1.2e-38 in float32, whose direction is
    not reliably representable) it returns ``fallback``
    (default: the zero vector) with gradient **0** with respect to ``x``. The
    gradient elsewhere is the exact ``(I - u u^T) / |x|``, which grows like
    ``1 / |x|`` as ``x`` shrinks (about 1e30 at |x| = 1e-30, still finite).

    Args:
        x: tensor of shape ``(..., D)``.
        axis: the vector axis (an int).
        fallback: value for zero vectors, broadcastable to ``x`` (for example
            ``[1.0, 0.0]``); ``None`` gives zeros.

    Example:
        >>> import numpy as np
        >>> keras.ops.convert_to_numpy(safe_normalize(np.array([[0.0, 2.0], [0.0, 0.0]], "float32"))).tolist()
        [[0.0, 1.0], [0.0, 0.0]]
    """
    x = _float_tensor(x)
    scale = _max_abs(x, axis)
    zero = _negligible(scale)
    y = x / ops.where(zero, ops.ones_like(scale), scale)
    length = safe_sqrt(ops.sum(y * y, axis=axis, keepdims=True))
    unit = y / ops.where(zero, ops.ones_like(length), length)
    if fallback is None:
        fallback = ops.zeros_like(x)
    else:
        fallback = ops.cast(ops.convert_to_tensor(fallback), x.dtype)
    return ops.where(zero, fallback, unit)


def safe_div(x, y, default=0.0):
    """``x / y``, giving ``default`` where ``y == 0``.

    Hazard: ``x / 0`` is ±inf or NaN, and the gradient ``-x / y^2`` is too.

    Returns ``x / y`` where ``y != 0`` and ``default`` where ``y == 0``; the
    gradient with respect to both ``x`` and ``y`` is **0** where ``y == 0``.
    Where ``y`` is merely tiny the quotient and its gradient ``-x / y^2`` are
    exact and may overflow to ±inf, as the true values would: guard the
    magnitude upstream if that can happen.

    Example:
        >>> import numpy as np
        >>> keras.ops.convert_to_numpy(safe_div(np.array([1.0, 1.0], "float32"), np.array([2.0, 0.0], "float32"))).tolist()
        [0.5, 0.0]
    """
    x = _float_tensor(x)
    y = ops.cast(ops.convert_to_tensor(y), x.dtype)
    zero = y == 0
    y_safe = ops.where(zero, ops.ones_like(y), y)
    return ops.where(zero, ops.cast(default, x.dtype), x / y_safe)


def safe_log(x, tiny=None):
    """Natural log, floored at ``log(tiny)`` with gradient 0 below the floor.

    Hazard: ``log(0) = -inf`` with an infinite gradient, NaN below 0.

    Returns ``log(x)`` for ``x > tiny`` and ``log(tiny)`` for ``x <= tiny``
    (continuous at ``tiny``); the gradient is ``1 / x`` above the floor (at most
    ``1 / tiny``, finite) and **0** at or below it. ``tiny`` defaults to the
    dtype's smallest normal number (``log`` of it is about -87.3 in float32).

    Example:
        >>> import numpy as np
        >>> round(float(safe_log(np.float32(0.0))), 2)
        -87.34
    """
    x = _float_tensor(x)
    tiny = _tiny(x) if tiny is None else ops.convert_to_tensor(tiny, dtype=x.dtype)
    hazard = x <= tiny
    x_safe = ops.where(hazard, ops.ones_like(x), x)
    return ops.where(hazard, ops.log(tiny) * ops.ones_like(x), ops.log(x_safe))


def safe_acos(x):
    """Arc cosine that accepts any real and never has a NaN gradient.

    Hazard: ``d acos(x)/dx = -1 / sqrt(1 - x^2)`` is infinite at ±1, and
    ``acos(clip(x, -1, 1))`` multiplies that infinity by the clip's zero
    gradient: ``0 * inf = NaN`` (the bug shapegrad was founded on).

    Returns ``acos(x)`` on ``(-1, 1)``, ``0`` for ``x >= 1`` and ``pi`` for
    ``x <= -1`` (the clipped value). The gradient is the exact derivative inside
    (at most about 2900 in magnitude at the float32 neighbours of ±1) and
    **0** for ``|x| >= 1``. For the angle between two vectors prefer
    :func:`angle_between`, which is accurate near 0 and pi where ``acos`` is not.

    Example:
        >>> import numpy as np
        >>> keras.ops.convert_to_numpy(safe_acos(np.array([1.5, -1.0], "float32"))).tolist() == [0.0, np.float32(np.pi)]
        True
    """
    x = _float_tensor(x)
    above = x >= 1
    below = x <= -1
    x_safe = ops.where(above | below, ops.zeros_like(x), x)
    clipped = ops.where(above, ops.zeros_like(x), math.pi * ops.ones_like(x))
    return ops.where(above | below, clipped, ops.arccos(x_safe))


def safe_atan2(y, x):
    """``atan2(y, x)`` with value 0 and gradient 0 at the origin.

    Hazard: the gradient ``(x, -y) / (x^2 + y^2)`` is ``0 / 0`` at the origin,
    and ``x^2 + y^2`` underflows to 0 for |x|, |y| ~ 1e-23 in float32, giving
    ±inf there too.

    Returns ``atan2(y, x)`` in ``[-pi, pi]``; at ``(0, 0)`` the value is 0 and
    both gradients are **0** (likewise when both are subnormal, whose gradient
    ``1 / |(x, y)|`` would overflow). Inputs are rescaled by ``max(|x|, |y|)``
    first, so the gradient is finite for every other finite input.

    Example:
        >>> import numpy as np
        >>> float(safe_atan2(np.float32(0.0), np.float32(0.0)))
        0.0
    """
    y = _float_tensor(y)
    x = ops.cast(ops.convert_to_tensor(x), y.dtype)
    scale = ops.stop_gradient(_maximum(ops.abs(x), ops.abs(y)))
    zero = _negligible(scale)
    scale = ops.where(zero, ops.ones_like(scale), scale)
    x_safe = ops.where(zero, ops.ones_like(x), x / scale)
    angle = _arctan2(y / scale, x_safe)
    return ops.where(zero, ops.zeros_like(angle), angle)


def angle_between(u, v):
    """Unsigned angle between vectors along the last axis, in ``[0, pi]``.

    Hazard: ``acos(dot(u, v) / (|u| |v|))`` has an infinite gradient at 0 and
    pi (parallel and antiparallel vectors), loses half the digits there, and is
    ``0 / 0`` for a zero vector.

    Stable formula: in 2-D ``atan2(|u x v|, u . v)``; in other dimensions
    Kahan's ``2 atan2(| |v| u - |u| v |, | |v| u + |u| v |)``. Each vector is
    rescaled by its largest component first, so lengths from 1e-30 to 1e30
    work in float32.

    Returns the angle; when either vector is zero (or has only subnormal
    components) the angle is **0** and the gradient is **0**. At exactly parallel or antiparallel vectors the angle has
    a kink (like ``|t|`` at 0); the gradient there is a finite one-sided value
    whose sign is backend-specific.

    Args:
        u, v: tensors of shape ``(..., D)``, broadcastable against each other.

    Example:
        >>> import numpy as np
        >>> round(float(angle_between(np.array([1.0, 1.0]), np.array([-1e-30, -1e-30]))), 6)
        3.141593
    """
    u = _float_tensor(u)
    v = ops.cast(ops.convert_to_tensor(v), u.dtype)
    su, sv = _max_abs(u), _max_abs(v)
    zu, zv = _negligible(su), _negligible(sv)
    u = ops.where(zu, ops.zeros_like(u), u / ops.where(zu, ops.ones_like(su), su))
    v = ops.where(zv, ops.zeros_like(v), v / ops.where(zv, ops.ones_like(sv), sv))
    if u.shape[-1] == 2 and v.shape[-1] == 2:
        cross = u[..., 0] * v[..., 1] - u[..., 1] * v[..., 0]
        dot = u[..., 0] * v[..., 0] + u[..., 1] * v[..., 1]
        return safe_atan2(ops.abs(cross), dot)
    nu = safe_norm(u, keepdims=True)
    nv = safe_norm(v, keepdims=True)
    a = safe_norm(nv * u - nu * v)
    b = safe_norm(nv * u + nu * v)
    either_zero = ops.squeeze(zu | zv, axis=-1)
    angle = 2.0 * safe_atan2(a, b)
    return ops.where(either_zero, ops.zeros_like(angle), angle)
