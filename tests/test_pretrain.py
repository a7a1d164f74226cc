"""Pre-training a slot encoder on synthetic scenes drawn like the user's folder (shapegrad.learn.pretrain), its
guide loss (shapegrad.guide.slot_guide_loss), and the switch to the folder's images, resumed after a kill."""

import json
import os
import re

import keras
import numpy as np
import pytest
from PIL import Image
from skimage import draw

from helpers import assert_finite, to_numpy
from shapegrad.ops.autodiff import value_and_grad
from shapegrad.learn import pretrain
from shapegrad.learn.guide import SLOT_GEOMETRY_WEIGHT, slot_drawable, slot_guide_loss, slot_target
from shapegrad.learn.train import TrainConfig, train_images
from shapegrad.render.slots import SlotRender

LAYER = SlotRender("disk,box,triangle", slots=3, resolution=16, channels=3)
DISK = np.array([0.3, 0.4, 0.2, 0.9, 0.1, 0.1], np.float32)  # centre, radius, colour, opacity
BOX = np.array([0.6, 0.6, 0.2, 0.1, 1.0, 0.0, 0.0, 0.2, 0.8, 0.3, 1.0], np.float32)  # centre, half sizes, axis, corner
TRIANGLE = np.array([0.2, 0.2, 0.8, 0.3, 0.5, 0.9, 0.5, 0.5, 0.9, 1.0], np.float32)


def _loss(pred, true):
    return to_numpy(slot_guide_loss(LAYER, np.asarray(pred, np.float32), np.asarray(true, np.float32)))


def test_slot_guide_loss_is_zero_at_the_truth_whatever_the_slot_order_and_shape_reading():
    true = slot_target(LAYER, [("disk", DISK), ("box", BOX), ("triangle", TRIANGLE)], [0.5, 0.5, 0.5])
    box = BOX.copy()
    box[2:4], box[4:6] = BOX[[3, 2]], [0.0, 1.0]  # the same box read along its other axis
    triangle = TRIANGLE.copy()
    triangle[:6] = TRIANGLE[[2, 3, 4, 5, 0, 1]]  # its vertices listed from the second
    reordered = slot_target(LAYER, [("triangle", triangle), ("disk", DISK), ("box", box)], [0.5, 0.5, 0.5])
    assert _loss(slot_drawable(LAYER, reordered[None]), true[None])[0] < 1e-6
    moved = reordered.copy()
    moved[3 + LAYER.slot_size + 4] += 0.1  # the disk's centre (slot 1: presence, 3 kind logits, centre)
    assert abs(_loss(slot_drawable(LAYER, moved[None]), true[None])[0] - SLOT_GEOMETRY_WEIGHT * 0.01 / 3) < 1e-5
    one = slot_target(LAYER, [("disk", DISK)], [0.5, 0.5, 0.5])  # two empty slots: only their presence counts
    other = one.copy()
    other[3 + LAYER.slot_size :] = np.random.default_rng(0).uniform(0, 1, 2 * LAYER.slot_size)
    other[3 + LAYER.slot_size :: LAYER.slot_size] = 0.0
    assert _loss(slot_drawable(LAYER, other[None]), one[None])[0] < 1e-6
    with pytest.raises(ValueError, match=re.escape("Received: kind='ellipse'")):
        slot_target(LAYER, [("ellipse", DISK)], [0.5])


def test_slot_guide_gradient_is_finite_from_zeros_and_huge_values():
    true = np.stack([slot_target(LAYER, [("box", BOX)], [0.1, 0.2, 0.3])] * 3)
    pred = np.stack([np.zeros(LAYER.size), np.full(LAYER.size, 1e30), np.full(LAYER.size, -1e30)]).astype(np.float32)
    value, (grad,) = value_and_grad(lambda p: keras.ops.sum(slot_guide_loss(LAYER, p, true)), pred)
    assert_finite("slot guide", to_numpy(value), to_numpy(grad))


def test_folder_like_scenes_take_the_folders_backgrounds_and_cover_what_it_covers():
    scenes = pretrain.FolderLikeScenes(LAYER, backgrounds=[[0.1, 0.2, 0.3], [0.9, 0.8, 0.7]])
    images, targets = scenes.draw(np.random.default_rng(0), 64)
    assert images.shape == (64, 16, 16, 3) and targets.shape == (64, LAYER.size)
    backgrounds = {tuple(np.round(b.astype(float), 4).tolist()) for b in targets[:, :3]}
    assert backgrounds == {(0.1, 0.2, 0.3), (0.9, 0.8, 0.7)}
    slots = targets[:, 3:].reshape(64, 3, LAYER.slot_size)
    assert set(slots[:, :, 0].sum(1)) <= {1.0, 2.0, 3.0} and (slots[:, 0, 0] == 1).all()  # 1-3 shapes, slot 0 first
    scale = scenes.matched_scale(0.3)
    images, targets = scenes.draw(np.random.default_rng(1), 256)
    covered = (np.abs(images - targets[:, None, None, :3]) > 0.1).any(-1).mean()
    assert abs(covered - 0.3) < 0.05 and 0.4 <= scale <= 2.5


def _folder(root, count, seed, size=20):
    """``count`` colour PNGs: a disk and/or a box over a random background (scikit-image's rasteriser).

    Returns the foregrounds ``(count, size, size)`` bool (the union of the drawn shapes)."""
    rng = np.random.default_rng(seed)
    os.makedirs(root, exist_ok=True)
    masks = []
    for i in range(count):
        background = rng.uniform(0, 1, 3)
        image = np.broadcast_to(background, (size, size, 3)).copy()
        fg = np.zeros((size, size), bool)
        for kind in ("disk", "box")[: int(rng.integers(1, 3))]:
            color = rng.uniform(0, 1, 3)
            while np.abs(color - background).max() < 0.3:
                color = rng.uniform(0, 1, 3)
            r, c = rng.uniform(0.3, 0.7, 2) * size
            if kind == "disk":
                rr, cc = draw.disk((r, c), rng.uniform(0.15, 0.3) * size, shape=(size, size))
            else:
                h = rng.uniform(0.12, 0.25) * size
                rr, cc = draw.polygon([r - h, r - h, r + h, r + h], [c - h, c + h, c + h, c - h], shape=(size, size))
            image[rr, cc] = color
            fg[rr, cc] = True
        Image.fromarray((image * 255).round().astype(np.uint8)).save(os.path.join(root, f"im{i:03d}.png"))
        masks.append(fg)
    return np.stack(masks)


def test_phased_dataset_serves_synthetic_then_mixed_batches_and_the_switch_is_kept(tmp_path):
    _folder(tmp_path / "in", 8, seed=0)
    from shapegrad.learn import data

    paths = sorted(str(p) for p in (tmp_path / "in").iterdir())
    layer = SlotRender("disk,box", slots=2, resolution=16, channels=3)
    stats = pretrain.folder_statistics(paths, 16, 3)
    assert stats["backgrounds"].shape == (8, 3) and 0 < stats["coverage"] < 1
    phased = pretrain.PhasedDataset(pretrain.FolderLikeScenes(layer, stats["backgrounds"]),
                                    data.ImageFolderDataset(paths, 16, 3, batch_size=4, batches=2), mix=0.5)
    path = str(tmp_path / "backup" / "phase.json")
    switch = pretrain.PhaseSwitch(phased, path, epochs=1)
    switch.on_epoch_begin(0)
    inputs, (images, targets) = phased[0]
    assert phased.switch_epoch is None and targets.shape == (4, layer.size + 1) and (targets[:, -1] == 1).all()
    again = phased[0][0]
    np.testing.assert_array_equal(inputs, again)  # a pure function of (seed, epoch, index)
    phased.epoch = 1
    switch.on_epoch_begin(1)
    inputs, (images, targets) = phased[0]
    assert phased.switch_epoch == 1 and list(targets[:, -1]) == [1, 1, 0, 0] and (targets[2:, :-1] == 0).all()
    np.testing.assert_array_equal(inputs[2:], phased.images.sample(0)[0][:2])
    assert json.load(open(path)) == {"switch_epoch": 1}
    resumed = pretrain.PhasedDataset(phased.scenes, phased.images)
    pretrain.PhaseSwitch(resumed, path, epochs=5)  # a resumed run reads the decision back
    assert resumed.switch_epoch == 1
    timed = pretrain.PhasedDataset(phased.scenes, phased.images)
    pretrain.PhaseSwitch(timed, str(tmp_path / "t.json"), epochs=9, seconds=10, clock=lambda: 11).on_epoch_begin(3)
    assert timed.switch_epoch == 3  # the time rule


@pytest.mark.parametrize(
    "fields, message",
    [(dict(pretrain=1.5), "Expected pretrain to be in [0, 1]. Received: pretrain=1.5"),
     (dict(pretrain_mix=1), "Expected pretrain_mix to be in [0, 1). Received: pretrain_mix=1")],
)
def test_train_config_checks_the_pretraining_fields(fields, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        TrainConfig(**fields)


@pytest.mark.once
def test_cli_pretrain_and_fits_flags_are_checked_in_one_line(tmp_path, capsys):
    from shapegrad.cli import main

    _folder(tmp_path / "in", 2, seed=0)
    for argv, expected in (
        (["--kinds", "disk", "--max-shapes", "2", "--pretrain", "2"], "Expected --pretrain to be in [0, 1]"),
        (["--kinds", "disk", "--max-shapes", "2", "--pretrain-mix", "1"], "Expected --pretrain-mix to be in [0, 1)"),
        (["--shapes", "disk", "--pretrain", "0.5"], "--pretrain draws slot scenes"),
        (["--shapes", "disk", "--guide", "1"], "--guide needs the parameters"),
        (["--kinds", "disk", "--max-shapes", "2", "--guide", "1"], "--guide needs the parameters"),  # no --pretrain
        (["--kinds", "disk", "--max-shapes", "2", "--fits", "-1"], "Expected --fits to be an integer >= 0"),
        (["--kinds", "disk", "--max-shapes", "2", "--fits", "4", "--fit-share", "1"],
         "Expected --fit-share to be in (0, 1)"),
        (["--shapes", "disk", "--fits", "4"], "--fits guides a slot decoder"),
    ):
        status = main(["train", "--images", str(tmp_path / "in"), *argv, "--out", str(tmp_path / "run")])
        err = capsys.readouterr().err
        assert status == 2 and expected in err and len(err.strip().splitlines()) == 1, err


TINY = dict(kinds="disk,box", max_shapes=2, resolution=16, batch_size=16, width=8, steps_per_epoch=25,
            refine_steps=0, test_size=32, holdout=0.25, learning_rate=2e-3, seed=0, verbose=0)


class _Killed(Exception):
    pass


@pytest.mark.slow
def test_a_killed_pretraining_run_resumes_in_the_phase_it_was_in(tmp_path, monkeypatch):
    """Killed after the checkpoint of epoch 3 (the first on the images), resumed: the switch stays at epoch 2."""
    from shapegrad.learn import callbacks

    _folder(tmp_path / "in", 16, seed=2)
    out = str(tmp_path / "run")
    args = dict(TINY, steps=20, steps_per_epoch=4, batch_size=8)

    def killed(self, epoch, logs=None):  # after BackupAndRestore saved this epoch
        if epoch == 2:
            raise _Killed

    monkeypatch.setattr(callbacks.TimeBudget, "on_epoch_end", killed)
    with pytest.raises(_Killed):
        train_images(out, str(tmp_path / "in"), pretrain=0.4, **args)
    monkeypatch.undo()
    assert json.load(open(os.path.join(out, "backup", "phase.json"))) == {"switch_epoch": 2}
    # Resumed with another fraction: the phase already decided wins, as the checkpoint's weights were trained so.
    result = train_images(out, str(tmp_path / "in"), pretrain=0.8, **args)
    assert result["pretrain_switch_epoch"] == 2 and result["steps"] == 20 and len(result["train_loss"]) == 5
    assert not os.path.exists(os.path.join(out, "backup"))
