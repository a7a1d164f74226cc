"""Data-parallel training on simulated devices: the same losses as one device on the same global batch."""

import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from helpers import BACKEND, to_numpy
from shapegrad.learn import distribute
from shapegrad.learn.train import train

# Run in a fresh interpreter: the simulated devices must exist before the backend starts.
SCRIPT = textwrap.dedent(
    """
    import json, sys
    if sys.argv[1] == "tensorflow":
        import tensorflow as tf
        cpu = tf.config.list_physical_devices("CPU")[0]
        tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 4)
    from shapegrad.learn.distribute import available_devices
    from shapegrad.learn.train import train
    out = {"devices": available_devices()}
    for n in (1, 4):
        m = train(f"{sys.argv[2]}/run{n}", resolution=16, steps=4, steps_per_epoch=4, batch_size=16,
                  test_size=16, refine_steps=0, width=4, devices=n, verbose=0)
        out[n] = {"loss": m["train_loss"], "devices": m["devices"], "iou": m["encoder_only"]["iou"]}
    # Started from a trained encoder: loaded inside the devices' scope (its variables are the strategy's).
    m = train(f"{sys.argv[2]}/init4", resolution=16, steps=2, steps_per_epoch=2, batch_size=16, test_size=16,
              refine_steps=0, width=4, devices=4, init=f"{sys.argv[2]}/run1/encoder.keras", verbose=0)
    out["init"] = m["train_loss"]
    print("RESULT" + json.dumps(out))
    """
)


@pytest.mark.skipif(BACKEND == "torch", reason="the installed Keras distributes on jax and tensorflow only")
def test_four_simulated_devices_match_one(tmp_path):
    """The self-supervised loss; the supervised one goes through the same data-parallel step (no second run)."""
    env = dict(os.environ, KERAS_BACKEND=BACKEND, XLA_FLAGS="--xla_force_host_platform_device_count=4")
    env.pop("JAX_ENABLE_X64", None)
    proc = subprocess.run(
        [sys.executable, "-c", SCRIPT, BACKEND, str(tmp_path)],
        capture_output=True, text=True, env=env, timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout.split("RESULT")[-1])
    assert len(result["devices"]) >= 4, result["devices"]
    one, four = result["1"], result["4"]
    assert (one["devices"], four["devices"]) == (1, 4)
    # One epoch of 4 batches: Keras' shuffle of a PyDataset's batch order (Python's global random
    # state, used differently by the two runs) made them differ by ~1 %; train() turns it off.
    # Same seed, same global batches in the same order, same mean gradient: only the order of float32 sums
    # differs (per-device partial means, then an all-reduce), about 1e-7 relative per step.
    # Adam rescales each update by its running RMS, so such differences stay small over a
    # few steps; 1e-3 relative leaves room for that without letting a real bug pass (a
    # gradient summed instead of averaged over 4 devices changes the loss by percents).
    np.testing.assert_allclose(four["loss"], one["loss"], rtol=1e-3)
    assert json.load(open(tmp_path / "run4" / "metrics.json"))["devices"] == 4
    # The trained encoders themselves: the same weights. A weight that Adam moved by its step size
    # (learning rate 1e-3) the other way would differ by ~1e-3; float32 sum order does by ~5e-7 (JAX).
    import keras

    run1, run4, init4 = (keras.saving.load_model(tmp_path / name / "encoder.keras") for name in ("run1", "run4", "init4"))
    assert len(run1.weights) == len(run4.weights) > 0
    for a, b in zip(run1.weights, run4.weights):
        np.testing.assert_allclose(to_numpy(b), to_numpy(a), rtol=0, atol=1e-5, err_msg=a.path)
    # Started from run 1's encoder: after 2 Adam steps of at most ~1e-3 each its trainable weights are
    # within 5e-3 of run 1's (a fresh initialisation is ~0.1 away), and they did move.
    assert np.isfinite(result["init"]).all()
    moved = [float(np.abs(to_numpy(a) - to_numpy(b)).max()) for a, b in zip(run1.trainable_weights, init4.trainable_weights)]
    assert len(moved) == len(run1.trainable_weights) > 0 and 0 < max(moved) < 5e-3, moved


def test_devices_errors_name_the_problem(tmp_path):
    if BACKEND == "torch":
        with pytest.raises(ValueError, match="jax or tensorflow backend.*Received: devices=2 on backend='torch'"):
            train(str(tmp_path), devices=2, steps=1, verbose=0)
    else:
        with pytest.raises(ValueError, match="Received: devices=64"):
            train(str(tmp_path), devices=64, steps=1, verbose=0)
    with pytest.raises(ValueError, match="Received: devices=0"):
        distribute.check(0, 8)
    assert not os.path.exists(tmp_path / "metrics.json")
