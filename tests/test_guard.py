"""shapegrad.doctor.NaNGuard: stops at the first non-finite step, keeps the last finite weights, diagnoses that batch.

The planted fault is a learnable length ``sqrt(sum((x * scale)^2))``: finite
everywhere, with a NaN gradient for ``scale`` only on a batch that holds a zero
vector, so the failure appears at a chosen later step, whatever the weights.
"""

import json
import os
import subprocess
import sys
import textwrap

import keras
import numpy as np
import pytest
from keras import ops

from helpers import BACKEND
from shapegrad import doctor

PACKAGE = "shapegrad_guard_tests"
BATCH = 4
BAD_ROW = 21  # in batch 5 when not shuffled


@keras.saving.register_keras_serializable(package=PACKAGE)
class Length(keras.layers.Layer):
    """|x * scale| as sqrt of a sum of squares: NaN gradient for ``scale`` at the zero vector."""

    def build(self, shape):
        self.scale = self.add_weight(shape=(shape[-1],), initializer="ones", name="scale")

    def call(self, x):
        return ops.sqrt(ops.sum(ops.square(x * self.scale), axis=-1, keepdims=True))


@keras.saving.register_keras_serializable(package=PACKAGE)
class Log(keras.layers.Layer):
    """log: -inf in the forward pass at 0."""

    def call(self, x):
        return ops.log(x)


@keras.saving.register_keras_serializable(package=PACKAGE)
class SqrtOfLog(keras.layers.Layer):
    """sqrt(log(x)): log goes non-finite first (at 0), sqrt follows."""

    def call(self, x):
        return ops.sqrt(ops.log(x))


@keras.saving.register_keras_serializable(package=PACKAGE)
class Sqrt(keras.layers.Layer):
    def call(self, x):
        return ops.sqrt(x)


def length_model(seed=0):
    keras.utils.set_random_seed(seed)
    inputs = keras.Input((3,))
    h = Length(name="length")(inputs)
    model = keras.Model(inputs, keras.layers.Dense(1, name="head")(h))
    model.compile(keras.optimizers.Adam(0.01), "mse")
    return model


def data(bad=BAD_ROW, n=32):
    rng = np.random.default_rng(0)
    x = rng.uniform(0.5, 1.5, size=(n, 3)).astype("float32")
    y = rng.normal(size=(n, 1)).astype("float32")
    if bad is not None:
        x[bad] = 0.0
    return x, y


class WeightsAfterEachStep(keras.callbacks.Callback):
    """weights[k]: the model's weights after k steps (``self.model`` syncs the JAX state)."""

    def __init__(self):
        super().__init__()
        self.weights = []

    def on_train_begin(self, logs=None):
        self.weights.append(self.model.get_weights())

    def on_train_batch_end(self, batch, logs=None):
        self.weights.append(self.model.get_weights())


def finite(model):
    return all(np.isfinite(w).all() for w in model.get_weights())


def everything(model):
    """(path, value) of every variable of the model and its optimizer, in order (seed states included)."""
    return [(v.path, np.array(ops.convert_to_numpy(v.value))) for v in model.variables + model.optimizer.variables]


def assert_bit_for_bit(got, want):
    # Paths may differ in a name's uniquifying suffix (adam, adam_1): same variables, same order.
    assert [p.split("/")[-1] for p, _ in got] == [p.split("/")[-1] for p, _ in want]
    for (path, a), (_, b) in zip(got, want):
        np.testing.assert_array_equal(a, b, err_msg=path)


def same(a, b):
    return len(a) == len(b) and all(np.array_equal(u, v) for u, v in zip(a, b))


# --------------------------------------------------------------------------- the guard


def test_stops_at_a_later_step_with_the_weights_from_before_it(tmp_path):
    x, y = data()
    model = length_model()
    guard = doctor.NaNGuard(tmp_path / "nan", verbose=0)
    seen = WeightsAfterEachStep()  # after the guard: sees the restored weights of the bad step
    model.fit(x, y, batch_size=BATCH, epochs=3, shuffle=False, callbacks=[guard, seen], verbose=0)

    assert guard.caught["step"] == 5 and guard.caught["epoch"] == 0 and guard.caught["batch"] == 5
    assert guard.caught["loss_finite"] is True
    # The check lags one step behind (no wait for the step in flight): the step after the
    # bad one is skipped, the next is not run, and fit stops.
    assert len(seen.weights) == 9 and all(same(w, seen.weights[5]) for w in seen.weights[5:])
    assert finite(model) and same(model.get_weights(), seen.weights[5])
    assert not same(seen.weights[5], seen.weights[0])  # it did train before
    assert int(ops.convert_to_numpy(model.optimizer.iterations)) == 5
    # Adam's moments and step count too: bit for bit those of a run of the 5 steps before the bad one.
    reference = length_model()
    reference.fit(x[:20], y[:20], batch_size=BATCH, shuffle=False, verbose=0)
    assert_bit_for_bit(everything(model), everything(reference))

    finding = guard.report.findings[0]
    assert (finding.kind, finding.layer, finding.op, finding.hint) == ("nonfinite_gradient", "length", "sqrt", "sqrt")
    assert "test_guard.py" in finding.location

    out = tmp_path / "nan"
    assert {"report.txt", "report.json", "batch.npz", "inputs.npy", "targets.npy", "weights.weights.h5", "model.keras"} <= set(os.listdir(out))
    batch = np.load(out / "batch.npz")
    np.testing.assert_array_equal(batch["x"], x[20:24])
    np.testing.assert_array_equal(np.load(out / "inputs.npy"), x[20:24])
    report = json.loads((out / "report.json").read_text())
    assert report["step"] == 5 and report["report"]["findings"][0]["layer"] == "length"
    text = (out / "report.txt").read_text()
    assert "step 5" in text and "shapegrad doctor" in text and "--loss mse" in text

    # The files reproduce it: the saved model and batch give the same finding.
    again = keras.saving.load_model(out / "model.keras")
    assert same(again.get_weights(), model.get_weights())
    rerun = doctor.check(again, np.load(out / "inputs.npy"), np.load(out / "targets.npy"), loss="mse")
    assert (rerun.findings[0].layer, rerun.findings[0].op) == ("length", "sqrt")
    model.save(tmp_path / "usable.keras")


def test_the_documented_command_reruns_the_diagnosis(tmp_path, capsys):
    from shapegrad.cli import main

    model = length_model()
    guard = doctor.NaNGuard(tmp_path / "nan", verbose=0)
    model.fit(*data(), batch_size=BATCH, shuffle=False, callbacks=[guard], verbose=0)
    command = json.loads((tmp_path / "nan" / "report.json").read_text())["command"].split()
    assert command[:2] == ["shapegrad", "doctor"] and "--import" in command and "--loss" in command
    capsys.readouterr()
    assert main(command[1:]) == 1
    out = capsys.readouterr().out
    assert "layer 'length' (Length)" in out and "operation: sqrt" in out and "then:" in out


def test_a_healthy_run_is_untouched(tmp_path):
    x, y = data(bad=None)
    plain = length_model()
    plain.fit(x, y, batch_size=BATCH, epochs=2, shuffle=False, verbose=0)
    guarded = length_model()
    guard = doctor.NaNGuard(tmp_path / "nan", verbose=0)
    guarded.fit(x, y, batch_size=BATCH, epochs=2, shuffle=False, callbacks=[guard], verbose=0)
    assert guard.caught is None and not (tmp_path / "nan").exists()
    for a, b in zip(plain.get_weights(), guarded.get_weights()):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)
    assert int(ops.convert_to_numpy(guarded.optimizer.iterations)) == 16

    # A second guarded fit reuses the instrumented step, and still catches.
    again = doctor.NaNGuard(tmp_path / "again", verbose=0)
    guarded.fit(*data(), batch_size=BATCH, shuffle=False, callbacks=[again], verbose=0)
    assert again.caught["step"] == 16 + 5 and finite(guarded)


class Batches(keras.utils.PyDataset):
    def __init__(self, x, y):
        super().__init__()
        self.x, self.y = x, y

    def __len__(self):
        return len(self.x) // BATCH

    def __getitem__(self, k):
        return self.x[k * BATCH : (k + 1) * BATCH], self.y[k * BATCH : (k + 1) * BATCH]


@pytest.mark.parametrize("source", ["numpy", "pydataset", "tf.data"])
def test_the_saved_batch_is_the_one_used_with_shuffling(tmp_path, source):
    x, y = data()
    if source == "numpy":
        inputs = dict(x=x, y=y, batch_size=BATCH, shuffle=True)
    elif source == "pydataset":
        inputs = dict(x=Batches(x, y), shuffle=True)
    else:
        import tensorflow as tf

        inputs = dict(x=tf.data.Dataset.from_tensor_slices((x, y)).shuffle(32, seed=3).batch(BATCH), shuffle=False)
    model = length_model()
    guard = doctor.NaNGuard(tmp_path / "nan", verbose=0)
    seen = WeightsAfterEachStep()
    model.fit(**inputs, epochs=4, callbacks=[guard, seen], verbose=0)

    step = guard.caught["step"]
    saved = np.load(tmp_path / "nan" / "batch.npz")["x"]
    assert (saved == 0).all(axis=1).any()  # the batch with the zero vector
    rows = [int(np.nonzero((x == r).all(axis=1))[0][0]) for r in saved]
    np.testing.assert_array_equal(np.load(tmp_path / "nan" / "batch.npz")["y"], y[rows])
    assert finite(model) and same(model.get_weights(), seen.weights[step])
    assert guard.report.findings[0].layer == "length"


def test_a_non_finite_loss_in_the_forward_pass(tmp_path):
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((3,)), Log(name="log"), keras.layers.Dense(1, name="head")])
    model.compile(keras.optimizers.SGD(0.01), "mse")
    x, y = data(bad=None)
    x[13] = 0.0  # log(0) = -inf in batch 3
    guard = doctor.NaNGuard(tmp_path / "nan", verbose=0)
    model.fit(x, y, batch_size=BATCH, shuffle=False, callbacks=[guard], verbose=0)
    assert guard.caught["step"] == 3 and guard.caught["loss_finite"] is False
    finding = guard.report.findings[0]
    assert (finding.kind, finding.layer, finding.op, finding.hint) == ("nonfinite_forward", "log", "log", "log")
    assert "the loss" in finding.followed and "head" in finding.followed
    assert finite(model)


def bn_model():
    """log -> BatchNormalization -> Dropout -> Dense: state that the forward pass assigns (moving statistics, seeds)."""
    keras.utils.set_random_seed(0)
    model = keras.Sequential(
        [keras.Input((3,)), Log(name="log"), keras.layers.BatchNormalization(name="bn"),
         keras.layers.Dropout(0.2, seed=1, name="drop"), keras.layers.Dense(1, name="head")], name="net"
    )
    model.compile(keras.optimizers.Adam(0.01), "mse")
    return model


def test_every_variable_is_put_back_with_batch_normalization(tmp_path):
    """A non-finite forward pass still assigns BatchNormalization's statistics and the dropout seed: all put back."""
    x, y = data(bad=None)
    x[9] = 0.0  # log(0) = -inf in batch 2
    reference = bn_model()
    reference.fit(x[:8], y[:8], batch_size=BATCH, shuffle=False, verbose=0)  # stopped before the bad batch
    model = bn_model()
    guard = doctor.NaNGuard(tmp_path / "nan", verbose=0, diagnose=False)
    model.fit(x, y, batch_size=BATCH, epochs=2, shuffle=False, callbacks=[guard], verbose=0)
    assert guard.caught["step"] == 2 and guard.caught["loss_finite"] is False

    got = everything(model)
    paths = " ".join(p for p, _ in got)
    assert all(name in paths for name in ("moving_mean", "moving_variance", "seed_generator_state", "velocity"))
    assert all(np.isfinite(v).all() for _, v in got)
    assert_bit_for_bit(got, everything(reference))
    text = (tmp_path / "nan" / "report.txt").read_text()
    assert len(model.non_trainable_variables) == 3  # the moving mean and variance, the seed
    assert "3 non-trainable" in text and "Not put back: the compiled metrics" in text

    # Trained on from there without the bad batch: the same as the reference trained on.
    clean_x, clean_y = x[12:], y[12:]
    model.fit(clean_x, clean_y, batch_size=BATCH, shuffle=False, verbose=0)
    reference.fit(clean_x, clean_y, batch_size=BATCH, shuffle=False, verbose=0)
    for (path, a), (_, b) in zip(everything(model), everything(reference)):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7, err_msg=path)


DISTRIBUTED = textwrap.dedent(
    """
    import json, sys
    import numpy as np
    backend = sys.argv[1]
    if backend == "tensorflow":
        import tensorflow as tf
        cpu = tf.config.list_physical_devices("CPU")[0]
        tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    import keras
    sys.path.insert(0, sys.argv[3])
    import test_guard as t
    from shapegrad import doctor
    if backend == "tensorflow":
        scope = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"]).scope()
    else:
        import contextlib
        keras.distribution.set_distribution(keras.distribution.DataParallel(devices=keras.distribution.list_devices("cpu")[:2]))
        scope = contextlib.nullcontext()
    x, y = t.data(bad=None)
    x[9] = 0.0
    with scope:
        reference = t.bn_model()
        reference.fit(x[:8], y[:8], batch_size=t.BATCH, shuffle=False, verbose=0)
        model = t.bn_model()
        guard = doctor.NaNGuard(sys.argv[2], verbose=0, diagnose=False)
        model.fit(x, y, batch_size=t.BATCH, shuffle=False, callbacks=[guard], verbose=0)
    got, want = t.everything(model), t.everything(reference)
    differ = [p for (p, a), (_, b) in zip(got, want) if not np.array_equal(a, b)]
    print("RESULT" + json.dumps({"caught": guard.caught["step"], "differ": differ, "n": len(got)}))
    """
)


@pytest.mark.skipif(BACKEND == "torch", reason="the installed Keras distributes on jax and tensorflow only")
def test_caught_under_a_distribution_with_every_variable_put_back(tmp_path):
    """tf.distribute.MirroredStrategy / keras.distribution.DataParallel over 2 simulated CPUs."""
    env = dict(os.environ, KERAS_BACKEND=BACKEND, XLA_FLAGS="--xla_force_host_platform_device_count=2")
    proc = subprocess.run(
        [sys.executable, "-c", DISTRIBUTED, BACKEND, str(tmp_path / "nan"), os.path.dirname(__file__)],
        capture_output=True, text=True, env=env, timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout.split("RESULT")[-1])
    assert result["caught"] == 2 and result["n"] > 10 and result["differ"] == [], result


def test_loss_scale_optimizer_is_refused_and_nothing_patched(tmp_path):
    model = length_model()
    model.compile(keras.optimizers.LossScaleOptimizer(keras.optimizers.SGD(0.01)), "mse")
    guard = doctor.NaNGuard(tmp_path / "nan", verbose=0)
    with pytest.raises(ValueError, match="LossScaleOptimizer.*Received: optimizer=LossScaleOptimizer"):
        model.fit(*data(bad=None), batch_size=BATCH, callbacks=[guard], verbose=0)
    assert not {"apply", "stateless_apply", "scale_loss"} & set(model.optimizer.__dict__)
    assert "train_step" not in model.__dict__ and not (tmp_path / "nan").exists()


@pytest.mark.slow
def test_train_on_a_poisoned_folder_stops_with_a_report_and_one_line(tmp_path, capsys):
    """``shapegrad train --images``: a float image holding NaN (a TIFF named .png) is caught, not trained on."""
    from PIL import Image

    from shapegrad import cli

    rng = np.random.default_rng(0)
    os.makedirs(tmp_path / "in")
    for i in range(7):
        Image.fromarray((rng.uniform(0, 1, (16, 16)) * 255).astype(np.uint8)).save(tmp_path / "in" / f"im{i}.png")
    poison = rng.uniform(0, 1, (16, 16)).astype(np.float32)
    poison[4:8, 4:8] = np.nan
    Image.fromarray(poison, mode="F").save(tmp_path / "in" / "poison.png", format="TIFF")
    out = tmp_path / "run"
    status = cli.main(["train", "--images", str(tmp_path / "in"), "--shapes", "disk", "--steps", "6",
                       "--resolution", "16", "--steps-per-epoch", "3", "--batch-size", "8", "--width", "4",
                       "--test-size", "8", "--refine-steps", "0", "--out", str(out)])
    err = capsys.readouterr().err
    assert status == 1, err
    lines = [line for line in err.splitlines() if line.startswith("shapegrad train")]
    assert lines == [f"shapegrad train: failed: training produced a non-finite loss or gradient; stopped with the "
                     f"last finite weights, report and batch in {out / 'nan-report'}"], err
    assert "Traceback" not in err
    report = json.loads((out / "nan-report" / "report.json").read_text())
    assert report["step"] == 0 and report["loss_finite"] is False
    assert np.isnan(np.load(out / "nan-report" / "batch.npz")["x"]).any()
    weights = keras.saving.load_model(out / "nan-report" / "model.keras", compile=False).get_weights()
    assert all(np.isfinite(w).all() for w in weights)


def test_the_model_trains_normally_after_the_guard(tmp_path):
    x, y = data()
    model = length_model()
    guard = doctor.NaNGuard(tmp_path / "nan", verbose=0)
    model.fit(x, y, batch_size=BATCH, shuffle=False, callbacks=[guard], verbose=0)
    assert guard.caught["step"] == 5
    assert not {"apply", "stateless_apply", "scale_loss"} & set(model.optimizer.__dict__)
    assert "train_step" not in model.__dict__

    before = model.get_weights()
    clean_x, clean_y = data(bad=None)
    model.fit(clean_x, clean_y, batch_size=BATCH, epochs=2, verbose=0)
    assert finite(model) and not same(before, model.get_weights())
    assert int(ops.convert_to_numpy(model.optimizer.iterations)) == 5 + 16

    # Unguarded, the bad batch does what it always did in Keras: NaN weights.
    model.fit(x, y, batch_size=BATCH, shuffle=False, verbose=0)
    assert not finite(model)


# --------------------------------------------------------------------------- root cause first


def test_root_cause_first_across_layers():
    model = keras.Sequential(
        [keras.Input((3,)), keras.layers.Dense(3, kernel_initializer="identity", name="enc"), Log(name="log"),
         Sqrt(name="sqrt"), keras.layers.Dense(1, name="head")]
    )
    report = doctor.check(model, np.array([[0.5, 0.0, 2.0]], "float32"), fd_samples=0)
    first = report.findings[0]
    assert (first.kind, first.layer, first.op) == ("nonfinite_forward", "log", "log")
    assert "'sqrt', 'head'" in first.followed and "the loss = nan" in first.followed
    assert "non-finite gradients" in first.followed and len(report.findings) == 1
    assert "then:" in str(report)


def test_root_cause_first_inside_a_layer():
    # sqrt(log(x)) at x = 0: log makes -inf, then sqrt makes NaN: the report names log.
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(3, kernel_initializer="identity"), SqrtOfLog(name="chain")])
    report = doctor.check(model, np.array([[0.5, 0.0, 2.0]], "float32"), fd_samples=0)
    assert (report.findings[0].layer, report.findings[0].op, report.findings[0].hint) == ("chain", "log", "log")


def test_root_cause_first_backward():
    # Finite forward, NaN gradient: the first layer (walking back) to make it leads;
    # the Dense in front only passes it on.
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(3, kernel_initializer="identity", name="enc"), Length(name="length")])
    report = doctor.check(model, np.zeros((2, 3), "float32"), fd_samples=0)
    first = report.findings[0]
    assert (first.kind, first.layer, first.op) == ("nonfinite_gradient", "length", "sqrt")
    assert "'enc'" in first.followed and "enc/kernel" in first.followed


@pytest.mark.skipif(BACKEND == "torch", reason="PyTorch's trainer needs steps_per_execution=1")
def test_steps_per_execution_skips_the_rest_of_the_call(tmp_path):
    x, y = data()
    model = length_model()
    model.compile(keras.optimizers.Adam(0.01), "mse", steps_per_execution=4)
    reference = length_model()
    reference.fit(x[:20], y[:20], batch_size=BATCH, shuffle=False, verbose=0)  # the 5 steps before the bad one
    guard = doctor.NaNGuard(tmp_path / "nan", verbose=0)
    model.fit(x, y, batch_size=BATCH, shuffle=False, callbacks=[guard], verbose=0)
    assert guard.caught["step"] == 5
    for a, b in zip(reference.get_weights(), model.get_weights()):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)
    np.testing.assert_array_equal(np.load(tmp_path / "nan" / "batch.npz")["x"], x[20:24])


def test_bad_arguments():
    with pytest.raises(ValueError, match="directory"):
        doctor.NaNGuard(None)
    with pytest.raises(ValueError, match="verbose"):
        doctor.NaNGuard("x", verbose=2)
