"""Shared test tools: gradients on the active backend, finite differences, adversarial inputs."""

import keras
import numpy as np
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from shapegrad.ops.autodiff import jit, value_and_grad

__all__ = [
    "BACKEND",
    "adversarial",
    "adversarial_array",
    "assert_finite",
    "check_gradients",
    "jit",
    "jit_for_many_calls",
    "to_numpy",
    "value_and_grad",
]

BACKEND = keras.backend.backend()


def jit_for_many_calls(fn):
    """``fn`` as a test that calls it many times runs it fastest: compiled on JAX, as written elsewhere.

    Eager JAX compiles each operation for each new shape, so one ``jax.jit``
    program is faster from the second call on. On TensorFlow one XLA compile
    of a renderer and its gradient costs more than the eager runs of a whole
    hypothesis test, and computes the same operations; the tests that compare
    a compiled function with its eager run (``jit``), and the fitting engine,
    keep XLA covered there. PyTorch compiles nothing.
    """
    return jit(fn) if BACKEND == "jax" else fn


def to_numpy(x):
    return keras.ops.convert_to_numpy(x)


def assert_finite(name, *arrays):
    for k, a in enumerate(arrays):
        a = np.asarray(a)
        bad = ~np.isfinite(a)
        assert not bad.any(), f"{name}[{k}]: {bad.sum()} of {a.size} entries non-finite, e.g. {a[bad][:5]}"


def check_gradients(fn, args, eps=1e-6, rtol=1e-4, atol=1e-6, samples=12, seed=0):
    """Compare autodiff gradients of scalar ``fn`` with float64 central differences.

    ``args`` are cast to float64; for each argument, up to ``samples`` random
    coordinates are perturbed by ``±eps``.
    """
    args = [np.asarray(a, dtype=np.float64) for a in args]
    _, grads = value_and_grad(fn, *args)
    rng = np.random.default_rng(seed)

    def f(*xs):
        return float(to_numpy(fn(*[keras.ops.convert_to_tensor(x) for x in xs])))

    for k, (a, g) in enumerate(zip(args, grads)):
        assert g.dtype == np.float64, f"gradient {k} is {g.dtype}, not float64"
        flat = rng.choice(a.size, size=min(samples, a.size), replace=False)
        for idx in flat:
            idx = np.unravel_index(idx, a.shape)
            plus, minus = [x.copy() for x in args], [x.copy() for x in args]
            plus[k][idx] += eps
            minus[k][idx] -= eps
            numeric = (f(*plus) - f(*minus)) / (2 * eps)
            analytic = g[idx]
            assert abs(numeric - analytic) <= atol + rtol * abs(numeric), (
                f"argument {k} at {idx}: autodiff {analytic!r} vs finite difference {numeric!r}"
            )


# Values that break naive geometry code: exact zeros, pixel centres, half pixels,
# huge and tiny magnitudes, and ordinary values.
SPECIAL = [0.0, -0.0, 1.0, -1.0, 0.5, -0.5, 0.25, 2.0, 1e-30, -1e-30, 1e30, -1e30, 1e-7, 1e7, 1e-38]


def adversarial(low=-1e30, high=1e30, special=SPECIAL, width=32):
    """Floats drawn from ``special`` values or from the whole range, including subnormal-free tiny ones."""
    chosen = [v for v in special if low <= v <= high]
    if width == 32:  # hypothesis wants bounds that float32 represents exactly
        low, high = float(np.float32(low)), float(np.float32(high))
    return st.one_of(
        st.sampled_from(chosen),
        st.floats(low, high, allow_nan=False, allow_infinity=False, width=width),
        st.floats(-2.0, 2.0, width=width),
    )


def adversarial_array(shape, **kwargs):
    return hnp.arrays(np.float32, shape, elements=adversarial(**kwargs))
