"""Test set-up shared by every backend.

The backend comes from ``KERAS_BACKEND`` (set by ``make test`` for each of
tensorflow, jax and torch), as in Keras' own CI.

float64: Keras 3 maps float64 to float32 in its type promotion on JAX and
PyTorch (``BIT64_TO_BIT32_DTYPE``, "aligned with JAX's default"), so ops such
as ``keras.ops.arctan2`` silently drop float64 inputs to float32 there. Our
finite-difference checks need true float64, so the tests enable JAX's x64 mode
and lift that mapping. Library code never depends on either.

Hypothesis profiles: ``quick`` (default, for ``make test``) and ``stress``
(``HYPOTHESIS_PROFILE=stress``, for ``make stress``).
"""

import os

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
if os.environ["KERAS_BACKEND"] == "jax":
    os.environ["JAX_ENABLE_X64"] = "1"

import keras  # noqa: E402
from hypothesis import HealthCheck, settings  # noqa: E402
from keras.src.backend.common import dtypes as _keras_dtypes  # noqa: E402

_keras_dtypes.BIT64_TO_BIT32_DTYPE["float64"] = "float64"
_keras_dtypes._lattice_result_type.__globals__["BIT64_TO_BIT32_DTYPE"]["float64"] = "float64"

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
    return f"keras {keras.__version__}, backend {keras.backend.backend()}, hypothesis profile {settings.default}"
