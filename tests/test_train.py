"""Data, encoder, metrics, refinement and training of the cone encoder–decoder; the train CLI."""

import dataclasses
import json
import os
import re
import signal
import subprocess
import sys
import time

import keras
import numpy as np
import pytest
from PIL import Image

from helpers import BACKEND, assert_finite, to_numpy
from shapegrad import Cones, fit
from shapegrad.learn import metrics
from shapegrad.cli import main
from shapegrad.learn.data import CONE_RANGES, ConeDataset, sample_cones
from shapegrad.learn.models import CONE_FIELDS, ParameterHead, build_autoencoder, build_encoder, pyramid_mse
from shapegrad.learn.train import OUTPUTS, TrainConfig, train


def test_dataset_is_deterministic_and_in_range():
    a = ConeDataset(resolution=16, batch_size=32, batches=3, seed=7)
    b = ConeDataset(resolution=16, batch_size=32, batches=3, seed=7)
    x1, y1 = a[2]
    x2, y2 = b[2]
    np.testing.assert_array_equal(x1, x2)
    np.testing.assert_array_equal(y1, y2)
    assert not np.array_equal(a[0][0], a[1][0])
    a.on_epoch_end()
    assert not np.array_equal(a[2][0], x1)  # fresh batches every epoch
    _, params = ConeDataset(resolution=16, batch_size=256, batches=1, targets="params").__getitem__(0)
    assert params.shape == (256, 5)
    lo, hi = CONE_RANGES["apex"]
    assert (params[:, :2] >= lo).all() and (params[:, :2] <= hi).all()
    np.testing.assert_allclose(np.linalg.norm(params[:, 2:4], axis=1), 1.0, rtol=1e-6)
    lo, hi = CONE_RANGES["aperture"]
    assert (params[:, 4] >= lo).all() and (params[:, 4] <= hi).all()
    # The images are the Cones layer's drawing of the parameters.
    images, params = a.sample(0)
    np.testing.assert_allclose(images, to_numpy(Cones(16)(params)), atol=1e-6)


def test_dataset_noise_and_bad_arguments():
    clean, _ = ConeDataset(resolution=16, batch_size=4, batches=1, seed=1).sample(0)
    noisy, target = ConeDataset(resolution=16, batch_size=4, batches=1, seed=1, noise=0.1)[0]
    assert 0.05 < np.std(noisy - clean) < 0.15 and noisy.min() >= 0 and noisy.max() <= 1
    np.testing.assert_array_equal(target, clean)
    with pytest.raises(ValueError, match="Received: noise=2"):
        ConeDataset(noise=2)
    with pytest.raises(ValueError, match="Received: targets='labels'"):
        ConeDataset(targets="labels")


def test_head_emits_valid_parameters_even_from_zero_and_huge_raw():
    head = ParameterHead(CONE_FIELDS)
    raw = np.array([[0, 0, 0, 0, 0], [1e30, -1e30, 1e-30, 0, 1e30], [3, -2, -1, 1, -5]], "float32")
    out = to_numpy(head(raw))
    assert ((out[:, [0, 1, 4]] >= 0) & (out[:, [0, 1, 4]] <= 1)).all()
    np.testing.assert_allclose(np.linalg.norm(out[:, 2:4], axis=1), 1.0, rtol=1e-6)
    with pytest.raises(ValueError, match="Received: activation of field 'x'='softmax'"):
        ParameterHead([("x", 2, "softmax")])


def test_encoder_serialises_and_autoencoder_freezes_renderer(tmp_path):
    encoder = build_encoder((16, 16, 1), CONE_FIELDS, width=4)
    images = ConeDataset(resolution=16, batch_size=3, batches=1).sample(0)[0]
    path = tmp_path / "encoder.keras"
    encoder.save(path)
    loaded = keras.saving.load_model(path)  # safe_mode: no lambdas, registered classes only
    np.testing.assert_allclose(to_numpy(loaded(images)), to_numpy(encoder(images)), atol=1e-6)
    auto = build_autoencoder(encoder, Cones(16))
    assert auto.output_shape == (None, 16, 16, 1)
    assert len(auto.trainable_weights) == len(encoder.trainable_weights)


def test_metrics_in_natural_units():
    truth = np.array([[0.5, 0.5, 1.0, 0.0, 0.25]])
    pred = np.array([[0.5 + 3 / 64, 0.5 + 4 / 64, np.cos(np.radians(10)), np.sin(np.radians(10)), 0.25 + 2 / 180]])
    errors = metrics.cone_errors(pred, truth, 64)
    assert errors["apex_error_px"][0] == pytest.approx(5.0)
    assert errors["axis_error_deg"][0] == pytest.approx(10.0)
    assert errors["aperture_error_deg"][0] == pytest.approx(2.0)
    a = np.zeros((2, 8, 8, 1))
    b = np.zeros((2, 8, 8, 1))
    a[0, :4], b[0, 2:6] = 1, 1
    np.testing.assert_allclose(metrics.iou(a, b), [2 / 6, 1.0])
    assert metrics.psnr(a[:1], a[:1] + 0.1)[0] == pytest.approx(20.0)


def test_pyramid_loss_sees_further_than_mse():
    # Two disjoint squares: MSE is blind to their distance, the pooled levels are not.
    a = np.zeros((1, 16, 16, 1), "float32")
    a[0, 0:4, 0:4] = 1
    near, far = np.zeros_like(a), np.zeros_like(a)
    near[0, 0:4, 4:8] = 1
    far[0, 12:16, 12:16] = 1
    mse = lambda x: float(to_numpy(keras.ops.mean((a - x) ** 2)))  # noqa: E731
    assert mse(near) == mse(far)
    assert float(to_numpy(pyramid_mse(a, near))) < float(to_numpy(pyramid_mse(a, far)))


def test_refine_recovers_cones_from_a_rough_guess():
    n = 32
    rng = np.random.default_rng(0)
    truth = sample_cones(rng, 16)
    images = to_numpy(Cones(n)(truth))
    guess = truth.copy()
    guess[:, :2] += rng.normal(0, 1.0 / n, (16, 2))
    guess[:, 4] += rng.normal(0, 2 / 180, 16)
    refined = fit.refine(Cones(n), CONE_FIELDS, guess, images, steps=120)
    before = metrics.cone_errors(guess, truth, n)
    after = metrics.cone_errors(refined, truth, n)
    assert np.median(after["apex_error_px"]) < 0.05 < np.median(before["apex_error_px"])
    assert np.median(after["aperture_error_deg"]) < 0.2 * np.median(before["aperture_error_deg"])
    assert_finite("refined", refined)


def test_train_writes_outputs_and_refuses_to_overwrite(tmp_path):
    out = str(tmp_path / "run")
    result = train(
        out, resolution=16, steps=6, steps_per_epoch=3, batch_size=8, test_size=8, refine_steps=3, width=4, verbose=0
    )
    for name in OUTPUTS:
        assert os.path.getsize(os.path.join(out, name)) > 0, name
    assert not os.path.exists(os.path.join(out, "backup"))  # removed once finished
    saved = json.load(open(os.path.join(out, "metrics.json")))
    for key in ("iou", "psnr", "apex_error_px_median", "axis_error_deg_median", "aperture_error_deg_median"):
        assert np.isfinite(saved[key]) and saved[key] >= 0, key
    assert saved["iou"] <= 1 and saved["axis_error_deg_median"] <= 180 and saved["aperture_error_deg_median"] <= 180
    assert saved["supervised"] is False and saved["backend"] == BACKEND and saved["steps"] == 6
    assert saved["wall_seconds"] > 0
    assert result["iou"] == saved["iou"]
    encoder = keras.saving.load_model(os.path.join(out, "encoder.keras"))
    assert encoder.output_shape == (None, 5)
    with pytest.raises(FileExistsError, match="force"):
        train(out, resolution=16, steps=2, verbose=0)


@pytest.mark.slow  # ~10 s of CPU (48 steps + saving); before 0.43, after 0.14 on PyTorch
def test_short_training_lowers_the_image_loss(tmp_path):
    """48 self-supervised steps at 16 px: the encoder's rendering error on held-out cones drops by half.

    The loss is measured the same way before and after (full sharpness, fixed images): the
    untrained encoder is built as ``train`` builds its own (same seed, same builder).
    """
    images, _ = ConeDataset(resolution=16, batch_size=64, batches=1, seed=123).sample(0)
    keras.utils.set_random_seed(0)
    untrained = build_encoder((16, 16, 1), CONE_FIELDS, width=4)
    renderer = Cones(16)

    def image_loss(encoder):
        return float(np.mean((to_numpy(renderer(encoder.predict(images, verbose=0))) - images) ** 2))

    before = image_loss(untrained)
    result = train(
        str(tmp_path), resolution=16, steps=48, steps_per_epoch=8, batch_size=16, test_size=8,
        refine_steps=0, width=4, anneal_start=1.0, learning_rate=3e-3, seed=0, verbose=0,
    )
    after = image_loss(keras.saving.load_model(str(tmp_path / "encoder.keras")))
    assert after < 0.5 * before, (before, after, result["train_loss"])
    assert result["train_loss"][-1] < result["train_loss"][0], result["train_loss"]


def test_supervised_baseline_runs(tmp_path):
    result = train(
        str(tmp_path), resolution=16, steps=4, steps_per_epoch=2, batch_size=8, test_size=8,
        refine_steps=0, width=4, supervised=True, verbose=0,
    )
    assert result["supervised"] is True and np.isfinite(result["apex_error_px_median"])


def test_cli_train_bad_input_is_one_line_and_status_2(tmp_path, capsys):
    assert main(["train", "--steps", "-3", "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["shapegrad train: error: Expected --steps to be a positive integer. Received: --steps=-3"]
    assert main(["train", "--shapes", "dsk", "--out", str(tmp_path)]) == 2
    (tmp_path / "metrics.json").write_text("{}")
    assert main(["train", "--steps", "2", "--out", str(tmp_path)]) == 2
    assert "(use --force to overwrite)" in capsys.readouterr().err
    assert (tmp_path / "metrics.json").read_text() == "{}"  # untouched


@pytest.mark.parametrize(
    "fields, message",
    [
        (dict(steps=-3), "Expected steps to be a positive integer. Received: steps=-3"),
        (dict(batch_size=0), "Received: batch_size=0"),
        (dict(steps_per_epoch=2.5), "Received: steps_per_epoch=2.5"),
        (dict(refine_steps=-1), "Expected refine_steps to be an integer >= 0. Received: refine_steps=-1"),
        (dict(feedback=True), "Received: feedback=True"),
        (dict(seconds=0), "Received: seconds=0"),
        (dict(learning_rate=float("nan")), "Received: learning_rate=nan"),
        (dict(anneal_start=0), "Expected anneal_start to be in (0, 1]. Received: anneal_start=0"),
        (dict(anneal=1.5), "Received: anneal=1.5"),
        (dict(noise=-0.1), "Received: noise=-0.1"),
        (dict(loss="l1"), "Received: loss='l1'"),
        (dict(guide=1, supervised=True), "supervised=True.*Received: guide=1"),
        (dict(guide=1, guide_decay=2), "Received: guide_decay=2"),
        (dict(supervised="yes"), "Received: supervised='yes'"),
        (dict(devices=0), "Received: devices=0"),
        (dict(seed=1.5), "Received: seed=1.5"),
        (dict(init=3), "Expected init to be a Keras model or its file. Received: init=3"),
        (dict(shapes=""), "Received: shapes=''"),
    ],
)
def test_train_config_names_the_bad_field(fields, message):
    with pytest.raises(ValueError, match=re.escape(message) if "*" not in message else message):
        TrainConfig(**fields)


def test_train_config_is_frozen_exported_and_rounds_steps_to_epochs(tmp_path):
    import shapegrad
    from shapegrad import learn

    assert shapegrad.TrainConfig is learn.TrainConfig is TrainConfig
    config = TrainConfig(steps=250, steps_per_epoch=100, guide=1.0)
    assert (config.epoch_steps, config.epochs, config.total_steps, config.guide_fraction) == (100, 3, 300, 0.5)
    assert TrainConfig(steps=5, steps_per_epoch=100).total_steps == 5
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.steps = 10
    # train(out, config, **fields): the fields replace the config's, checked again; no other config
    with pytest.raises(ValueError, match="Received: steps=-3"):
        train(str(tmp_path), config, steps=-3)
    with pytest.raises(ValueError, match="Expected config to be a TrainConfig.*Received: config='disk'"):
        train(str(tmp_path), "disk")
    with pytest.raises(TypeError, match="stepz"):
        train(str(tmp_path), stepz=3)
    assert not os.listdir(tmp_path)  # all before any work


def test_cli_train_builds_one_config_and_calls_train_once(tmp_path, monkeypatch, capsys):
    from shapegrad.learn import train as train_module

    calls = []

    def fake(out, config=None, **kwargs):
        calls.append((out, config, kwargs))
        return {"iou": 0.5, "psnr": 20.0, "encoder_only": {"iou": 0.4, "psnr": 18.0}, "training_images": 1,
                "heldout_images": 1, "skipped_files": 0}

    monkeypatch.setattr(train_module, "train", fake)
    out = str(tmp_path / "run")
    assert main(["train", "--shapes", "disk,box", "--steps", "7", "--guide", "2", "--anneal-start", "0.5",
                 "--seed", "3", "--out", out]) == 0
    assert calls == [(out, TrainConfig(shapes="disk,box", steps=7, guide=2.0, anneal_start=0.5, seed=3, devices=1),
                      {"force": False})]
    (tmp_path / "images").mkdir()
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(tmp_path / "images" / "a.png")
    assert main(["train", "--images", str(tmp_path / "images"), "--shapes", "disk", "--resolution", "16",
                 "--out", out, "--force"]) == 0
    config = calls[-1][1]
    assert len(calls) == 2 and isinstance(config.shapes, train_module.ImageTask) and calls[-1][2] == {"force": True}
    assert config.shapes.shapes == "disk*1" and config.resolution == 16
    assert "held-out images: iou 0.5" in capsys.readouterr().out


class _Killed(Exception):
    pass


def test_a_resumed_run_keeps_the_whole_history_and_training_time(tmp_path, monkeypatch):
    """Killed after the checkpoint of epoch 2 of 4, then resumed: metrics.json and curves.png cover all 4."""
    from shapegrad.io import plots
    from shapegrad.learn import callbacks

    out = tmp_path / "run"
    args = dict(resolution=16, steps=8, steps_per_epoch=2, batch_size=8, test_size=8, refine_steps=0, width=4, verbose=0)

    def killed(self, epoch, logs=None):  # runs after BackupAndRestore has saved this epoch
        if epoch == 1:
            raise _Killed

    monkeypatch.setattr(callbacks.TimeBudget, "on_epoch_end", killed)
    started = time.perf_counter()
    with pytest.raises(_Killed):
        train(str(out), **args)
    first_part = time.perf_counter() - started
    monkeypatch.undo()
    assert (out / "backup").is_dir() and not (out / "metrics.json").exists()
    curves = []
    save_curves = plots.save_curves
    monkeypatch.setattr(plots, "save_curves", lambda path, history, **kw: curves.append(history) or save_curves(path, history, **kw))
    result = train(str(out), **args)
    saved = json.load(open(out / "metrics.json"))
    assert saved["steps"] == 8 and len(saved["train_loss"]) == 4 and all(np.isfinite(saved["train_loss"])), saved
    assert saved["wall_seconds"] >= 0.9 * first_part, (saved["wall_seconds"], first_part)
    assert result["train_loss"] == saved["train_loss"]
    assert len(curves) == 1 and curves[0]["loss"] == saved["train_loss"] and len(curves[0]["val_iou"]) == 4


@pytest.mark.parametrize("kept_previous", [True, False])
def test_a_run_killed_while_writing_its_checkpoint_metadata_still_resumes(tmp_path, monkeypatch, kept_previous):
    """Killed mid-write of training_metadata.json: resumed from the previous epoch's pair, or afresh without one."""
    from shapegrad.learn import callbacks

    out = tmp_path / "run"
    args = dict(resolution=16, steps=8, steps_per_epoch=2, batch_size=8, test_size=8, refine_steps=0, width=4, verbose=0)

    def killed(self, epoch, logs=None):  # after the checkpoint of epoch 3 of 4 (and the .bkp pair of epoch 2)
        if epoch == 2:
            raise _Killed

    monkeypatch.setattr(callbacks.TimeBudget, "on_epoch_end", killed)
    with pytest.raises(_Killed):
        train(str(out), **args)
    monkeypatch.undo()
    backup = out / "backup"
    assert json.load(open(backup / "training_metadata.json"))["epoch"] == 3  # Keras counts the epochs done
    (backup / "training_metadata.json").write_text('{"epo')  # the kill came during the write
    if not kept_previous:
        (backup / "training_metadata.json.bkp").unlink()
    saved = train(str(out), **args)
    assert saved["steps"] == 8 and len(saved["train_loss"]) == 4 and all(np.isfinite(saved["train_loss"])), saved
    assert not backup.exists()


@pytest.mark.slow
def test_killed_run_resumes_from_its_checkpoint(tmp_path):
    """A subprocess killed after a checkpoint resumes at that epoch and finishes."""
    out = tmp_path / "run"
    cmd = [
        sys.executable, "-m", "shapegrad.cli", "train", "--resolution", "16", "--steps", "60",
        "--steps-per-epoch", "5", "--batch-size", "8", "--width", "4", "--test-size", "8",
        "--refine-steps", "2", "--out", str(out),
    ]
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    first = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env, text=True)
    marker = out / "backup" / "training_metadata.json"
    deadline = time.time() + 240
    while not marker.exists() and first.poll() is None and time.time() < deadline:
        time.sleep(0.02)
    assert marker.exists(), first.communicate()[0][-2000:]
    first.send_signal(signal.SIGKILL)
    first.wait()
    assert not (out / "metrics.json").exists()
    second = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)
    assert second.returncode == 0, second.stderr[-2000:]
    log = second.stdout + second.stderr
    assert "Epoch 1/12" not in log and "Epoch 12/12" in log, log[-2000:]
    saved = json.load(open(out / "metrics.json"))
    assert saved["steps"] == 60


def test_scene_errors_match_shapes_within_each_kind():
    from shapegrad.render.render import Render

    spec = Render("disk*2,box", 32).spec
    truth = spec.sample(4, seed=1)
    # Swap the two disks: a permutation, not an error.
    swapped = truth.copy()
    per_disk = spec.groups[0][3]
    swapped[:, :per_disk], swapped[:, per_disk : 2 * per_disk] = truth[:, per_disk : 2 * per_disk], truth[:, :per_disk]
    errors = metrics.scene_errors(swapped, truth, spec)
    assert set(errors) == {"disk", "box"}
    for kind in errors.values():
        for values in kind.values():
            np.testing.assert_allclose(values, 0.0, atol=1e-4)
    # A box direction flipped by 180 degrees is the same box.
    flipped = truth.copy()
    d = spec.get(2, "direction").slice
    flipped[:, d] *= -1
    assert np.abs(metrics.scene_errors(flipped, truth, spec)["box"]["direction_error_deg"]).max() < 1e-3
    # So is a box read with its axes the other way round: sizes swapped, turned 90 degrees.
    turned = truth.copy()
    h = spec.get(2, "half_size").slice
    turned[:, h] = truth[:, h][:, ::-1]
    turned[:, d] = np.stack([-truth[:, d][:, 1], truth[:, d][:, 0]], axis=1)
    box = metrics.scene_errors(turned, truth, spec)["box"]
    assert box["direction_error_deg"].max() < 1e-3 and box["half_size_error_px"].max() < 1e-4
    moved = truth.copy()
    moved[:, spec.get(2, "center").slice] += np.array([3 / 32, 4 / 32], "float32")
    assert metrics.scene_errors(moved, truth, spec)["box"]["center_error_px"] == pytest.approx([5.0] * 4, abs=1e-4)


def test_scene_errors_with_a_kind_listed_twice():
    from shapegrad.render.render import Render

    spec = Render("disk*2,box,disk", 32).spec
    truth = spec.sample(3, seed=2)
    errors = metrics.scene_errors(truth, truth, spec)
    assert errors["disk"]["center_error_px"].shape == (9,)  # 3 images x 3 disks
    np.testing.assert_allclose(errors["disk"]["center_error_px"], 0.0, atol=1e-4)


def test_train_on_a_render_scene(tmp_path):
    result = train(
        str(tmp_path), shapes="disk,box", resolution=16, steps=4, steps_per_epoch=2, batch_size=8,
        test_size=8, refine_steps=2, width=4, verbose=0,
    )
    assert 0 <= result["iou"] <= 1 and "disk_center_error_px_median" in result
    assert result["disk_center_error_px_median"] >= 0
    assert "box_direction_error_deg_median" in result and result["shapes"] == "disk,box"
    from shapegrad.render.render import Render

    encoder = keras.saving.load_model(str(tmp_path / "encoder.keras"))
    assert encoder.output_shape == (None, Render("disk,box", 16).spec.size)


def test_annealing_advances_every_training_step_and_not_at_inference():
    """The schedule lives in the compiled step (JAX's fit keeps variables between callbacks)."""
    from shapegrad.learn.models import Annealed

    encoder = build_encoder((16, 16, 1), CONE_FIELDS, width=4)
    annealed = Annealed(Cones(16), start=0.1, ramp_steps=10)
    inputs = keras.Input((16, 16, 1))
    model = keras.Model(inputs, annealed(encoder(inputs)))
    model.compile("adam", "mse")
    images = ConeDataset(resolution=16, batch_size=12, batches=1).sample(0)[0]
    seen = []

    class Record(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            seen.append(float(to_numpy(annealed.scale)))

    model.fit(images, images, batch_size=4, epochs=2, verbose=0, callbacks=[Record()])
    assert float(to_numpy(annealed.step)) == 6.0
    # the scale used by the last step of each epoch: step 2 and step 5 of a ramp over 10
    np.testing.assert_allclose(seen, [0.1 * 10 ** 0.2, 0.1 * 10 ** 0.5], rtol=1e-5)
    sharp = to_numpy(Cones(16)(encoder.predict(images, verbose=0)))
    np.testing.assert_allclose(to_numpy(model(images)), sharp, atol=1e-6)  # inference draws sharp edges
    with pytest.raises(ValueError, match="Received: start=0"):
        Annealed(Cones(16), start=0)
