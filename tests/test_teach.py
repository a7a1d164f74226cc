"""Learning from the fitter (shapegrad.learn.teach): fits of the folder's own images as the encoder's guide, kept
across a kill, and a run guided by them against the same run without."""

import os
import re

import numpy as np
import pytest

from helpers import to_numpy
from shapegrad.fit import search
from shapegrad.learn import pretrain, teach
from shapegrad.learn.guide import slot_drawable
from shapegrad.learn.train import TrainConfig, train_images
from shapegrad.render.slots import SlotRender
from test_pretrain import _folder

LAYER = SlotRender("disk,box", slots=2, resolution=16, channels=3)


class _Killed(Exception):
    pass


def _paths(folder):
    return sorted(os.path.join(folder, f) for f in os.listdir(folder))


def test_the_squares_symmetries_move_the_targets_with_the_pixels():
    """Each of the 8 symmetries of a drawn scene is the drawing of its transformed target (boxes turn, triangles flip)."""
    layer = SlotRender("disk,box,triangle,ellipse", slots=3, resolution=16, channels=3)
    scenes = pretrain.FolderLikeScenes(layer, backgrounds=[[0.1, 0.2, 0.3]])
    images, targets = scenes.draw(np.random.default_rng(3), 8)
    which = np.arange(8)
    moved, moved_targets = teach.dihedral(layer, images, targets, which)
    np.testing.assert_allclose(to_numpy(layer(slot_drawable(layer, moved_targets))), moved, atol=2e-4)
    assert np.abs(moved[1:] - images[1:]).max() > 0.1  # the scenes did move
    np.testing.assert_array_equal(moved[0], images[0])
    fitted = teach.FittedImages(layer, images, targets)
    drawn, drawn_targets = fitted.sample(np.random.default_rng(0), 5)
    assert drawn.shape == (5, 16, 16, 3) and drawn_targets.shape == (5, layer.size)


@pytest.mark.once
def test_fits_killed_midway_resume_once_each_and_draw_as_fitted(tmp_path, monkeypatch):
    """Killed after its first chunk, a fitting goes on with the other images only; each fit's target, drawn by the
    slot decoder, is the fit's own rendering."""
    _folder(tmp_path / "in", 4, seed=5, size=16)
    paths, path = _paths(tmp_path / "in"), tmp_path / "fits.npz"
    fitted = []
    real = search.fit_scene

    def counted(images, **options):
        fitted.append(len(images))
        return real(images, **options)

    monkeypatch.setattr(search, "fit_scene", counted)

    def kill_after_one_chunk(line):
        raise _Killed

    with pytest.raises(_Killed):
        teach.FolderFits(path, LAYER, paths).fit(4, log=kill_after_one_chunk, chunk=2)
    resumed = teach.FolderFits(path, LAYER, paths)
    assert resumed.count == 2 and not resumed.done  # the chunk written before the kill
    resumed.fit(4, chunk=2)
    assert fitted == [2, 2] and sorted(resumed.names) == paths and resumed.done
    assert teach.FolderFits(path, LAYER, paths).fit(4).count == 4 and fitted == [2, 2]  # done: nothing more
    other = SlotRender("disk", slots=2, resolution=16, channels=3)
    assert teach.FolderFits(path, other, paths).count == 0  # fits of another decoder are not read
    labelled = resumed.labelled(min_psnr=0)
    drawn = to_numpy(LAYER(slot_drawable(LAYER, labelled.targets)))
    for image, again, psnr in zip(labelled.images, drawn, resumed.psnr):
        # The fit's PSNR, but for the edges (the decoder's are softer): a misread field costs far more.
        assert 10 * np.log10(1 / np.mean((image - again) ** 2)) > min(psnr - 8, 22)
    assert (resumed.psnr > 22).all()
    assert len(resumed.labelled(min_psnr=99)) == 0  # none good enough: an empty set, no error


@pytest.mark.parametrize(
    "fields, message",
    [(dict(fits=-1), "Expected fits to be an integer >= 0. Received: fits=-1"),
     (dict(fit_share=1.0), "Expected fit_share to be in (0, 1). Received: fit_share=1.0")],
)
def test_train_config_checks_the_fit_fields(fields, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        TrainConfig(**fields)


def test_fits_need_images_and_a_slot_decoder(tmp_path):
    from shapegrad.learn.train import train

    with pytest.raises(ValueError, match=re.escape("Expected fits=0 without images and a slot decoder")):
        train(str(tmp_path / "run"), shapes="disk", resolution=16, steps=1, fits=4, verbose=0)
    assert not os.path.exists(tmp_path / "run")  # refused before any work


TINY = dict(kinds="disk,box", max_shapes=2, resolution=16, batch_size=16, width=8, steps_per_epoch=25, steps=100,
            refine_steps=0, test_size=32, holdout=0.25, learning_rate=2e-3, seed=0, verbose=0, pretrain=0)


@pytest.mark.slow
def test_the_fits_reach_the_loss_the_encoder_learns(tmp_path):
    """Same folder, steps and seed: the encoder trained with the fits reads the fitted images closer to their fits.

    (Whether that makes a better encoder of new images is the benchmark's question: docs/benchmarks.md.)
    """
    import keras

    from shapegrad.learn import encode
    from shapegrad.learn.guide import slot_guide_loss

    _folder(tmp_path / "in", 48, seed=6, size=16)
    guided = train_images(str(tmp_path / "guided"), str(tmp_path / "in"), fits=32, **TINY)
    train_images(str(tmp_path / "alone"), str(tmp_path / "in"), **TINY)
    assert guided["fits"] == 32 and guided["fits_kept"] >= 28 and guided["pretrain_switch_epoch"] == 0
    layer = SlotRender("disk,box", 2, 16, channels=3)
    fitted = teach.FolderFits(tmp_path / "guided" / "fits.npz", layer, []).labelled()
    losses = []
    for run in ("guided", "alone"):
        model = encode.load_model_file(str(tmp_path / run / "encoder.keras"))
        pred = keras.ops.convert_to_numpy(model.predict(fitted.images, verbose=0))
        losses.append(float(np.mean(to_numpy(slot_guide_loss(layer, pred, fitted.targets)))))
    assert losses[0] < 0.8 * losses[1], losses


@pytest.mark.slow
def test_a_run_killed_while_fitting_resumes_its_fits(tmp_path, monkeypatch):
    _folder(tmp_path / "in", 12, seed=7, size=16)
    out = str(tmp_path / "run")
    fitted = []
    real = search.fit_scene

    def killed_on_the_second_chunk(images, **options):
        if len(fitted) == 1:
            raise _Killed
        fitted.append(len(images))
        return real(images, **options)

    monkeypatch.setattr(teach, "FIT_CHUNK", 4)
    monkeypatch.setattr(search, "fit_scene", killed_on_the_second_chunk)
    args = dict(TINY, steps=4, steps_per_epoch=2, fits=8)
    with pytest.raises(_Killed):
        train_images(out, str(tmp_path / "in"), **args)
    assert teach.FolderFits(os.path.join(out, "fits.npz"), SlotRender("disk,box", 2, 16, channels=3), []).count == 4
    monkeypatch.setattr(search, "fit_scene", lambda images, **options: fitted.append(len(images)) or real(images, **options))
    result = train_images(out, str(tmp_path / "in"), **args)
    assert fitted == [4, 4] and result["fits"] == 8 and result["steps"] == 4  # the other four, once
