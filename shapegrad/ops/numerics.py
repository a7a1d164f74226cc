"""The dtype and min/max helpers that the NaN-safe functions and the renderers share.

Keras' type promotion (``keras.backend.result_type``; its ``BIT64_TO_BIT32_DTYPE`` table,
"aligned with JAX's default") makes the two-input ops ``ops.maximum``, ``ops.minimum`` and
``ops.arctan2`` cast two float64 tensors to float32 on JAX and PyTorch and compute there. The
helpers here take those ops' place in the library: float64 goes through ``where`` (the same value,
exactly), other dtypes to the op unchanged. Also: the smallest normal number of a dtype, a vector's
largest component held constant for gradients, and a cast that keeps a Python number exact.

Example:
    >>> import numpy as np
    >>> float(maximum(np.float64(1.0), 2.0))
    2.0
"""

import math

import keras
from keras import ops

__all__ = ["TINY", "arctan2", "as_dtype", "float_tensor", "is_float64", "max_abs", "maximum", "minimum",
           "negligible", "tiny"]

# Smallest positive *normal* number per float dtype (numpy.finfo(...).tiny).
TINY = {
    "float16": 6.103515625e-05,
    "bfloat16": 1.1754943508222875e-38,
    "float32": 1.1754943508222875e-38,
    "float64": 2.2250738585072014e-308,
}


def float_tensor(x):
    """``x`` as a tensor, cast to float32 unless it is a float already."""
    x = ops.convert_to_tensor(x)
    if "float" not in keras.backend.standardize_dtype(x.dtype):
        x = ops.cast(x, "float32")
    return x


def tiny(x):
    """The dtype's smallest normal number, as a tensor of ``x``'s dtype."""
    return ops.convert_to_tensor(TINY.get(keras.backend.standardize_dtype(x.dtype), TINY["float32"]), dtype=x.dtype)


def negligible(scale):
    """True where a vector's largest |component| is zero or subnormal.

    Such a vector has no reliable direction (subnormals carry few significant
    bits, and ``1 / |x|`` overflows), so direction functions treat it as zero.
    """
    return scale < tiny(scale)


def max_abs(x, axis=-1):
    """Largest |component| along ``axis`` (kept), held constant for gradients."""
    return ops.stop_gradient(ops.max(ops.abs(x), axis=axis, keepdims=True))


def as_dtype(x, dtype):
    """``ops.cast(x, dtype)``, but a Python number becomes a ``dtype`` tensor directly.

    On TensorFlow ``ops.cast(0.7, "float64")`` first makes a float32 tensor of the
    number: 0.699999988079071, a float32 rounding inside float64 math.
    """
    if isinstance(x, (int, float)) and not isinstance(x, bool):
        return ops.convert_to_tensor(x, dtype=dtype)
    return ops.cast(x, dtype)


def is_float64(x):
    return keras.backend.standardize_dtype(x.dtype) == "float64"


def maximum(x, y):
    """``ops.maximum(x, y)`` computed in float64 when ``x`` is float64 (``y`` is cast to ``x``'s dtype).

    float64: ``where(x >= y, x, y)``, so at a tie the gradient goes to ``x`` (as
    TensorFlow's maximum; JAX's and PyTorch's share it). A NaN in ``x`` is not propagated there.
    """
    x = float_tensor(x)
    y = ops.cast(ops.convert_to_tensor(y), x.dtype)
    if not is_float64(x):
        return ops.maximum(x, y)
    return ops.where(x >= y, x, y)


def minimum(x, y):
    """``ops.minimum(x, y)`` computed in float64 when ``x`` is float64; see :func:`maximum`."""
    x = float_tensor(x)
    y = ops.cast(ops.convert_to_tensor(y), x.dtype)
    if not is_float64(x):
        return ops.minimum(x, y)
    return ops.where(x <= y, x, y)


def arctan2(y, x):
    """``ops.arctan2(y, x)`` for ``max(|x|, |y|)`` about 1 (not both 0), in float64 when ``y`` is float64.

    float64: ``atan`` of the ratio of the smaller to the larger component (at most 1
    in magnitude, never a division by 0), moved to its quadrant; ``y = -0.0`` with
    ``x < 0`` gives ``-pi`` like ``atan2``.
    """
    if not is_float64(y):
        return ops.arctan2(y, x)
    steep = ops.abs(y) > ops.abs(x)
    num = ops.where(steep, x, y)
    den = ops.where(steep, y, x)
    den = ops.where(den == 0, ops.ones_like(den), den)  # both 0: atan(0 / 1) = 0
    base = ops.arctan(num / den)
    negative = ops.signbit(y)
    half_turn = ops.where(negative, -math.pi * ops.ones_like(y), math.pi * ops.ones_like(y))
    flat = base + ops.where(x < 0, half_turn, ops.zeros_like(y))
    return ops.where(steep, 0.5 * half_turn - base, flat)
