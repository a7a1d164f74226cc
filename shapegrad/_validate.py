"""Argument checks that raise Keras-style errors: name the argument, end with what was received."""

import math
import numbers

__all__ = ["positive_int", "positive_number", "one_of", "last_dim", "resolution"]


def positive_int(name, value):
    """Return ``value`` as an int, or raise ``ValueError`` if it is not a positive integer."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value <= 0:
        raise ValueError(f"Expected {name} to be a positive integer. Received: {name}={value!r}")
    return int(value)


def positive_number(name, value, allow_none=False):
    """Return ``value`` as a float, or raise if it is not a finite number > 0 (or None if allowed)."""
    if value is None and allow_none:
        return None
    if (
        isinstance(value, bool)
        or not isinstance(value, numbers.Real)
        or not math.isfinite(value)
        or value <= 0
    ):
        what = "a finite number > 0" + (" or None" if allow_none else "")
        raise ValueError(f"Expected {name} to be {what}. Received: {name}={value!r}")
    return float(value)


def one_of(name, value, choices):
    """Return ``value`` if it is in ``choices``, else raise ``ValueError`` listing them."""
    if not isinstance(value, str) or value not in choices:
        raise ValueError(f"Expected {name} to be one of {sorted(choices)}. Received: {name}={value!r}")
    return value


def last_dim(layer, shape, expected, what):
    """Raise ``ValueError`` unless ``shape`` is ``(batch, expected)``."""
    shape = tuple(shape)
    if len(shape) != 2 or (shape[-1] is not None and shape[-1] != expected):
        raise ValueError(
            f"{layer} expects inputs of shape (batch, {expected}): {what}. "
            f"Received: input_shape={shape}"
        )


def resolution(name, value):
    """Return ``value`` as an int ``N`` (square) or a tuple ``(H, W)`` with ``H != W``.

    Accepts a positive integer or a pair of positive integers; a pair with
    ``H == W`` becomes the int, so a square layer's ``resolution`` is always an int.
    """
    if isinstance(value, (list, tuple)) and len(value) == 2:
        h, w = (positive_int(f"{name}[{i}]", v) for i, v in enumerate(value))
        return h if h == w else (h, w)
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value <= 0:
        raise ValueError(
            f"Expected {name} to be a positive integer or a pair (height, width) of them. Received: {name}={value!r}"
        )
    return int(value)
