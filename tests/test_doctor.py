"""shapegrad.doctor: planted faults are found, attributed and explained; clean layers are clean.

Each planted fault sits between two healthy Dense layers, so the tests also
check that the doctor blames the right layer, not its neighbours. The layers
are registered so that ``test_doctor_cli.py`` can save them to ``.keras`` files
and name them as ``test_doctor:<factory>``.
"""

import importlib.util
import json

import keras
import numpy as np
import pytest
from keras import ops

from helpers import BACKEND
from shapegrad import Cones, doctor
from shapegrad.ops import safe

PACKAGE = "shapegrad_doctor_tests"


# --------------------------------------------------------------------------- planted faults


@keras.saving.register_keras_serializable(package=PACKAGE)
class ClippedAcos(keras.layers.Layer):
    """The classic: angle between u = x[:, :2] and v = x[:, 2:] as acos(clip(cos))."""

    def call(self, x):
        u, v = x[:, :2], x[:, 2:]
        cos = ops.sum(u * v, axis=-1, keepdims=True) / (
            ops.sqrt(ops.sum(u * u, axis=-1, keepdims=True)) * ops.sqrt(ops.sum(v * v, axis=-1, keepdims=True))
        )
        return ops.arccos(ops.clip(cos, -1.0, 1.0))


@keras.saving.register_keras_serializable(package=PACKAGE)
class SqrtNorm(keras.layers.Layer):
    """Length as sqrt of the squared norm: infinite derivative at the zero vector."""

    def call(self, x):
        return ops.sqrt(ops.sum(x * x, axis=-1, keepdims=True))


@keras.saving.register_keras_serializable(package=PACKAGE)
class LogRelu(keras.layers.Layer):
    """log of a ReLU output: -inf for every unit the ReLU switched off."""

    def call(self, x):
        return ops.log(ops.relu(x))


@keras.saving.register_keras_serializable(package=PACKAGE)
class RatioOfDifference(keras.layers.Layer):
    """x0 / (x1 - x2): the difference hits 0 when x1 == x2."""

    def call(self, x):
        return x[:, :1] / (x[:, 1:2] - x[:, 2:3])


@keras.saving.register_keras_serializable(package=PACKAGE)
class GuardedAcos(keras.layers.Layer):
    """A where that looks safe: acos(x) is NaN for |x| > 1, in the branch it does not select."""

    def call(self, x):
        return ops.where(ops.abs(x) < 1.0, ops.arccos(x), 0.0)


@keras.saving.register_keras_serializable(package=PACKAGE)
class SafeAngle(keras.layers.Layer):
    """shapegrad.safe.safe_acos: finite, but flat (gradient 0) beyond ±1."""

    def call(self, x):
        return safe.safe_acos(x)


@keras.saving.register_keras_serializable(package=PACKAGE)
class WrongGradient(keras.layers.Layer):
    """Value x^2, gradient 1 (a stop_gradient in the wrong place)."""

    def call(self, x):
        return x + ops.stop_gradient(x * x - x)


def _sandwich(fault, width, name):
    """Input -> Dense(identity) -> fault -> Dense(ones): only the middle layer is broken."""
    inputs = keras.Input((width,), name="x")
    h = keras.layers.Dense(width, kernel_initializer="identity", name="before")(inputs)
    h = fault(h)
    outputs = keras.layers.Dense(1, kernel_initializer="ones", name="after")(h)
    return keras.Model(inputs, outputs, name=name)


def acos_model():
    return _sandwich(ClippedAcos(name="angle"), 4, "acos_model")


def norm_model():
    return _sandwich(SqrtNorm(name="length"), 3, "norm_model")


def log_relu_model():
    return _sandwich(LogRelu(name="log_relu"), 3, "log_relu_model")


def ratio_model():
    return _sandwich(RatioOfDifference(name="ratio"), 3, "ratio_model")


def where_model():
    return _sandwich(GuardedAcos(name="guarded"), 2, "where_model")


def healthy_model():
    keras.utils.set_random_seed(1)
    return keras.Sequential(
        [
            keras.Input((3,)),
            keras.layers.Dense(8, activation="tanh", name="hidden"),
            keras.layers.Dense(2, name="head"),
        ],
        name="healthy",
    )


# Each planted fault: model factory, batch (one row hits the hazard), layer,
# expected kind, Keras op, and hint.
FAULTS = {
    "acos_of_clipped_dot": (
        acos_model,
        np.array([[1.0, 0.0, 3.0, 0.0], [0.6, 0.8, 0.0, 1.0]], "float32"),
        "angle",
        "nonfinite_gradient",
        "arccos",
        "acos",
    ),
    "sqrt_of_squared_norm": (
        norm_model,
        np.array([[0.0, 0.0, 0.0], [1.0, 2.0, 2.0]], "float32"),
        "length",
        "nonfinite_gradient",
        "sqrt",
        "sqrt",
    ),
    "log_of_relu": (
        log_relu_model,
        np.array([[1.0, -2.0, 0.5], [2.0, 1.0, 3.0]], "float32"),
        "log_relu",
        "nonfinite_forward",
        "log",
        "log",
    ),
    "division_by_zero_difference": (
        ratio_model,
        np.array([[1.0, 2.0, 2.0], [1.0, 3.0, 1.0]], "float32"),
        "ratio",
        "nonfinite_forward",
        "divide",
        "div",
    ),
    "where_with_nan_branch": (
        where_model,
        np.array([[0.5, 2.0], [-0.25, 0.5]], "float32"),
        "guarded",
        "nonfinite_gradient",
        "arccos",
        "where",
    ),
}


@pytest.mark.parametrize("name", sorted(FAULTS))
def test_planted_fault_found_attributed_and_explained(name):
    factory, x, layer, kind, op, hint = FAULTS[name]
    report = doctor.check(factory(), x)
    assert not report.ok
    first = report.findings[0]
    assert (first.kind, first.layer, first.op, first.hint) == (kind, layer, op, hint), str(report)
    # The user's line, in this file, is named, and the text report carries it all.
    assert first.location is not None and first.location.startswith("test_doctor.py") or "tests/test_doctor.py" in (
        first.location or ""
    ), str(report)
    assert f"ops.{op}" in first.source or (op == "divide" and "/" in first.source), first.source
    text = str(report)
    assert f"layer '{layer}'" in text and "shapegrad.safe." in text and first.location in text


def test_where_leak_also_names_the_fix_for_the_operation_in_the_branch():
    factory, x, *_ = FAULTS["where_with_nan_branch"]
    first = doctor.check(factory(), x).findings[0]
    assert first.op_hint == "acos"
    assert "double where" in first.fix and "safe_acos" in first.fix


def test_fault_in_a_bare_layer_and_in_a_plain_function():
    x = np.array([[0.0, 0.0, 0.0]], "float32")
    report = doctor.check(SqrtNorm(name="bare"), x)
    assert [(f.layer, f.op, f.hint) for f in report.findings] == [("bare", "sqrt", "sqrt")]

    def angle(t):
        return ops.arccos(ops.clip(ops.sum(t * t, axis=-1), -1.0, 1.0))

    report = doctor.check(angle, np.array([[1.0, 0.0]], "float32"))
    assert report.findings[0].kind == "nonfinite_gradient" and report.findings[0].hint == "acos"


def test_healthy_model_gives_no_false_alarm(float64):
    x = np.random.default_rng(0).normal(size=(6, 3)).astype("float32")
    report = doctor.check(healthy_model(), x, targets=np.zeros((6, 2), "float32"))
    assert report.ok, str(report)
    assert report.loss == "mean squared error against targets"
    assert any("finite differences" in c for c in report.checked), report.checked


def test_cones_is_clean_at_degenerate_inputs():
    params = np.array(
        [
            [0.5, 0.5, 0.0, 1.0, 0.25],  # ordinary
            [0.5, 0.5, 0.0, 0.0, 0.2],  # zero axis
            [0.25, 0.75, -1.0, 1.0, 0.5],  # apex on a pixel, half-plane
            [0.5, 0.5, 1e-30, 0.0, 1.0],  # tiny axis, whole plane
        ],
        "float32",
    )
    for edge in ("angle", "distance"):
        report = doctor.check(Cones(16, edge=edge), params, targets=np.full((4, 16, 16, 1), 0.5, "float32"))
        assert report.ok, str(report)


# Not marked slow: `slow` cases run on one backend only (SLOW_BACKEND), and this one is about JAX.
# It runs in every backend's ordinary run of `make test`, JAX included, where the doctor evaluates each of
# Render's few hundred operations on its own (each compiled on first use): the price of checking JAX at all.
def test_render_is_clean():
    # No float64 fixture: the doctor's finite-difference twin runs in float64, and Render keeps
    # float64 under Keras' own promotion (numerics.maximum and co.; before, ops.maximum/minimum/arctan2
    # computed in float32 on PyTorch and the FD step saw no change on a box's corner radius).
    if importlib.util.find_spec("shapegrad.render") is None:
        pytest.skip("shapegrad.render does not exist yet")
    from shapegrad.render import render

    layer = render.Render(", ".join(render.primitive_kinds()), resolution=12)
    rng = np.random.default_rng(0)
    size = layer.spec.size
    # Ordinary parameters, and degenerate ones: all zero (zero sizes, apexes and
    # directions at the origin), all one half (centres on a pixel).
    x = np.concatenate([rng.uniform(0.1, 0.9, (2, size)), np.zeros((1, size)), np.full((1, size), 0.5)])
    report = doctor.check(layer, x.astype("float32"), targets=np.full((4, 12, 12, 1), 0.5, "float32"), fd_samples=3)
    assert report.ok, str(report)


def test_dead_gradient_behind_safe_acos_is_reported():
    # Feature 1 is beyond the clip for the whole batch: finite but flat.
    x = np.array([[0.2, 1.5], [-0.3, 2.0], [0.1, 3.0]], "float32")
    report = doctor.check(SafeAngle(name="flat"), x)
    dead = [f for f in report.findings if f.kind == "dead_gradient"]
    assert len(dead) == 1 and dead[0].layer == "flat" and dead[0].hint == "dead", str(report)
    assert "1 of 2 feature" in dead[0].summary and "dead features (index after the batch axis): 1" in dead[0].details


def test_a_true_invariance_is_a_note_not_a_dead_gradient():
    # Cones normalises its axis (d0, d1): along d = (0, 1) the image does not depend on d1 at all, so its
    # gradient is exactly 0 and rightly so (the outputs do not move when d1 moves either way).
    report = doctor.check(Cones(32), np.array([[0.5, 0.5, 0.0, 1.0, 0.2]], "float32"), fd_samples=0)
    assert report.ok and not report.findings, str(report)
    assert any("invariance" in n and "input 0" in n and "3" in n for n in report.notes), report.notes


def test_dead_relu_is_still_a_dead_gradient():
    # Feature 1 is below the ReLU's kink for the whole batch: flat on this side only.
    relu = keras.layers.Activation("relu", name="cut")
    report = doctor.check(relu, np.array([[0.3, -0.4], [0.5, -0.2]], "float32"))
    dead = [f for f in report.findings if f.kind == "dead_gradient"]
    assert len(dead) == 1 and "dead features (index after the batch axis): 1" in dead[0].details, str(report)
    assert not report.ok and not any("invariance" in n for n in report.notes)


def test_dead_gradient_from_saturated_sigmoid_in_a_model():
    inputs = keras.Input((2,))
    h = keras.layers.Dense(2, kernel_initializer="identity", name="lin")(inputs)
    h = keras.layers.Activation("sigmoid", name="squash")(h)
    model = keras.Model(inputs, keras.layers.Dense(1, kernel_initializer="ones", name="out")(h))
    x = np.array([[0.3, 200.0], [-0.2, 300.0]], "float32")  # sigmoid(200) == 1.0 exactly
    dead = [f for f in doctor.check(model, x).findings if f.kind == "dead_gradient"]
    assert dead and dead[0].layer == "squash", dead


def test_gradient_that_disagrees_with_finite_differences(float64):
    x = np.array([[0.3, 1.7], [1.1, -0.7]], "float32")
    report = doctor.check(WrongGradient(name="wrong"), x)
    kinds = {f.kind for f in report.findings}
    assert kinds == {"gradient_mismatch"}, str(report)
    assert any(c.startswith("float64 finite differences") for c in report.checked), str(report)
    assert not report.notes, str(report)


def test_without_float64_the_skipped_check_is_said_not_hidden():
    """As users run each backend (JAX without x64, Keras' float64 -> float32 promotion on JAX and
    PyTorch): the finite-difference check either runs and finds the wrong gradient, or the report
    says it was skipped and does not list it as checked. Never a silent pass."""
    x = np.array([[0.3, 1.7], [1.1, -0.7]], "float32")
    report = doctor.check(WrongGradient(name="wrong"), x)
    ran = [c for c in report.checked if c.startswith("float64 finite differences")]
    skipped = [n for n in report.notes if n.startswith("float64 finite-difference check skipped")]
    if BACKEND == "tensorflow":  # float64 is native there
        assert ran, str(report)
    if BACKEND == "jax":  # JAX's default mode has no float64 at all
        assert not ran, str(report)
    if ran:
        assert not skipped and {f.kind for f in report.findings} == {"gradient_mismatch"}, str(report)
    else:
        assert len(skipped) == 1 and "float32" in skipped[0], str(report)
        assert not report.findings, str(report)  # the other checks cannot see a finite, wrong gradient
        assert "note: " + skipped[0] in str(report)
        assert json.loads(report.to_json())["notes"] == report.notes


def test_float16_overflow():
    layer = keras.layers.Activation(lambda t: t * t, dtype="float16", name="square16")
    report = doctor.check(layer, np.array([[300.0, 1.0]], "float16"))
    first = report.findings[0]
    assert (first.kind, first.layer, first.hint) == ("nonfinite_forward", "square16", "float16"), str(report)


def test_nonfinite_input_is_blamed_on_the_data():
    report = doctor.check(healthy_model(), np.array([[np.nan, 0.0, 1.0]], "float32"))
    assert report.findings[0].kind == "nonfinite_input" and report.findings[0].hint == "input"


def test_report_json_and_text():
    factory, x, *_ = FAULTS["acos_of_clipped_dot"]
    report = doctor.check(factory(), x)
    data = json.loads(report.to_json())
    assert data["ok"] is False and data["backend"] == BACKEND
    f = data["findings"][0]
    assert f["layer"] == "angle" and f["hint"] == "acos" and "safe_acos" in f["fix"]
    assert f["location"] and f["source"]
    healthy = doctor.check(healthy_model(), np.ones((2, 3), "float32"))
    assert json.loads(healthy.to_json())["ok"] is True and "healthy" in str(healthy)


def test_loss_options():
    model = healthy_model()
    x = np.ones((2, 3), "float32")
    report = doctor.check(model, x, targets=np.zeros((2, 2), "float32"), loss="mean_absolute_error")
    assert report.ok and report.loss == "mean_absolute_error"
    report = doctor.check(model, x, loss=lambda y: ops.sum(ops.log(ops.abs(y) * 0.0)))
    assert report.findings[0].layer == "loss", str(report)
    with pytest.raises(ValueError, match="needs targets"):
        doctor.check(model, x, loss="mse")


def test_global_debug_state_is_restored():
    factory, x, *_ = FAULTS["where_with_nan_branch"]
    doctor.check(factory(), x)
    assert keras.config.is_traceback_filtering_enabled()
    if BACKEND == "jax":
        import jax

        assert not jax.config.jax_debug_nans and not jax.config.jax_debug_infs
    if BACKEND == "torch":
        import torch

        assert not torch.is_anomaly_enabled()
    # NaN is computed without complaint afterwards (TensorFlow's check_numerics is off).
    assert np.isnan(keras.ops.convert_to_numpy(ops.sqrt(ops.convert_to_tensor([-1.0])))).all()


def test_bad_target_is_rejected():
    with pytest.raises(ValueError, match="Received: target=3"):
        doctor.check(3, np.ones((1, 2), "float32"))


def test_keras_internals_the_doctor_reads_are_all_there():
    """Fails loudly, naming it, when a Keras release moves one of the private internals the doctor reads."""
    from shapegrad import _keras_internals

    assert _keras_internals.missing() == [], (
        f"Keras {keras.__version__} moved internals that shapegrad/_keras_internals.py reads: "
        f"{_keras_internals.missing()}"
    )
    inputs = keras.Input((3,))
    model = keras.Model(inputs, keras.layers.Dense(2)(inputs))
    seen = []
    out = _keras_internals.run_functional(model, np.ones((1, 3), "float32"), lambda fn, op: (seen.append(op), fn)[1], False)
    out = out[0] if isinstance(out, (list, tuple)) else out
    assert keras.ops.convert_to_numpy(out).shape == (1, 2) and [type(op).__name__ for op in seen] == ["Dense"]


def test_backend_internals_the_doctor_reads_still_work():
    """The current backend's private debugging machinery, read by shapegrad/_keras_internals.py, does what it did."""
    from shapegrad import _keras_internals

    assert _keras_internals.keras_op_name(ops.arccos.__code__.co_filename, "arccos") == "arccos"
    assert _keras_internals.keras_op_name(__file__, "arccos") is None
    if BACKEND == "tensorflow":
        import tensorflow as tf

        seen = []
        with _keras_internals.tf_recording_ops(lambda op_type, *args, **kwargs: seen.append(op_type)):
            tf.sqrt(tf.constant([4.0]))
        assert "Sqrt" in seen
        tf.debugging.enable_check_numerics()
        try:
            with pytest.raises(tf.errors.InvalidArgumentError) as error:
                tf.math.log(tf.constant([0.0]))
        finally:
            tf.debugging.disable_check_numerics()
        assert _keras_internals.tf_numerics_error(str(error.value)) == ("Log", "# of -Inf elements: 1")
        assert _keras_internals.tf_failing_gradient(None) == (None, None)
    if BACKEND == "jax":
        import jax

        closed = jax.make_jaxpr(lambda x: jax.jit(jax.numpy.sqrt)(x) + 1.0)(np.float32(4.0))
        env = {closed.jaxpr.invars[0]: np.float32(4.0)}
        inner = []
        for eqn in closed.jaxpr.eqns:
            outs = _keras_internals.jax_eval_equation(eqn, [_keras_internals.jax_read(env, v) for v in eqn.invars])
            env.update(zip(eqn.outvars, outs))
            inner.append(_keras_internals.jax_inner_jaxpr(eqn))
            frames, _ = _keras_internals.jax_source(eqn)
            assert any(f == __file__ for f, _, _ in frames)  # traced here
        assert float(env[closed.jaxpr.outvars[0]]) == 3.0
        assert inner[0] is not None and inner[1] is None  # the jit call, then the addition
    if BACKEND == "torch":
        import torch

        x = torch.ones(1, requires_grad=True)
        with pytest.warns(UserWarning, match="Anomaly"), torch.autograd.detect_anomaly(check_nan=False):
            y = (x * 2).sum()
        assert any(__file__ in entry for entry in _keras_internals.torch_anomaly_stack(y.grad_fn))
