"""Test set-up shared by every backend.

The backend comes from ``KERAS_BACKEND`` (set by ``make test`` for each of
tensorflow, jax and torch), as in Keras' own CI.

float64: the suite runs each backend as users run it: JAX in its default
(32-bit) mode and Keras' type promotion untouched. Tests that need true float64
(finite-difference checks, float64 parametrisations) ask for the ``float64``
fixture, which for that one test enables JAX's x64 mode and lifts Keras'
float64 -> float32 mapping in its type promotion (``BIT64_TO_BIT32_DTYPE``,
"aligned with JAX's default", which makes ops such as ``keras.ops.arctan2``
silently drop float64 inputs to float32 on JAX and PyTorch), then restores
both. Library code never depends on either. JAX keys its jit caches on the x64
flag (``include_in_jit_key``), so a function traced in one mode is never
reused in the other.

Hypothesis profiles: ``quick`` (default, for ``make test``) and ``stress``
(``HYPOTHESIS_PROFILE=stress``, for ``make stress``).
"""

import os

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras  # noqa: E402
import pytest  # noqa: E402
from hypothesis import HealthCheck, settings  # noqa: E402
from keras.src.backend.common import dtypes as _keras_dtypes  # noqa: E402


@pytest.fixture
def float64():
    """True float64 for one test: JAX's x64 mode on, Keras' float64 -> float32 promotion lifted; both restored."""
    table = _keras_dtypes.BIT64_TO_BIT32_DTYPE  # read by keras.backend.result_type on every call
    saved = table["float64"]
    table["float64"] = "float64"
    if keras.backend.backend() == "jax":
        import jax

        was = jax.config.read("jax_enable_x64")
        jax.config.update("jax_enable_x64", True)
    try:
        import numpy as np

        one = np.ones(2, "float64")
        got = keras.backend.standardize_dtype(keras.ops.arctan2(one, one).dtype)
        assert got == "float64", f"the float64 fixture is not in effect: arctan2 of float64 gives {got}"
        yield
    finally:
        table["float64"] = saved
        if keras.backend.backend() == "jax":
            jax.config.update("jax_enable_x64", was)

_common = dict(
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    derandomize=False,
    print_blob=True,
)
settings.register_profile("quick", max_examples=20, **_common)
settings.register_profile("stress", max_examples=5000, **_common)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "quick"))


def pytest_report_header(config):
    mode = ""
    if keras.backend.backend() == "jax":
        import jax

        mode = ", jax_enable_x64=" + str(jax.config.read("jax_enable_x64")) + " outside the float64 fixture"
    return f"keras {keras.__version__}, backend {keras.backend.backend()}{mode}, hypothesis profile {settings.default}"


# Docstring examples that run a whole scene search or picture fit: they show the documented call and
# its result, so they run on one backend (marked `once`); the search and the picture fitter are
# tested on every backend by tests/test_scenefit.py, tests/test_fit.py and tests/test_pictures.py.
_ONCE_DOCTESTS = {"shapegrad.fit.search", "shapegrad.fit.search.fit_scene", "shapegrad.fit.pictures"}


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(config, items):
    for item in items:
        if isinstance(item, pytest.DoctestItem) and item.name in _ONCE_DOCTESTS:
            item.add_marker(pytest.mark.once)
