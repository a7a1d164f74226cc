"""``shapegrad fit`` / ``fit.fit_files``: many images of any size, kinds and count unknown, nothing lost to bad input.

Tiny images (24x40 and 16x24) and short searches (``QUICK``), so that each call takes seconds once the
engine of a size is compiled; the end-to-end CLI run with the default search is ``slow``.
"""

import csv
import json
import os

import numpy as np
import pytest
from PIL import Image
from skimage.draw import disk, polygon

from shapegrad import cli, fit
from shapegrad.io import files

QUICK = dict(steps=40, joint_steps=40, order_steps=30, polish_steps=40)


def _scene(shape=(24, 40), colour=True):
    """A disk and a box (distinct colours) on a dark background, drawn by scikit-image (hard edges)."""
    h, w = shape
    image = np.full((h, w, 3), 0.1)
    rr, cc = disk((h * 0.45, w * 0.28), h * 0.3, shape=shape)
    image[rr, cc] = (0.9, 0.3, 0.2)
    rr, cc = polygon([h * 0.2, h * 0.2, h * 0.8, h * 0.8], [w * 0.6, w * 0.9, w * 0.9, w * 0.6], shape=shape)
    image[rr, cc] = (0.2, 0.4, 0.9)
    return image if colour else image.mean(axis=-1)


def _save(path, image, mode=None):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    if mode == "I;16":
        Image.fromarray(np.round(image * 65535).astype(np.uint16)).save(path)
    elif mode == "RGBA":
        rgba = np.concatenate([image, np.ones(image.shape[:2] + (1,))], axis=-1)
        Image.fromarray(np.round(rgba * 255).astype(np.uint8), "RGBA").save(path)
    else:
        Image.fromarray(np.round(image * 255).astype(np.uint8)).save(path)
    return str(path)


def _summary(out):
    with open(os.path.join(out, "summary.csv")) as f:
        return list(csv.DictReader(f))


@pytest.mark.slow  # two whole searches
def test_unknown_count_on_a_non_square_image_and_mixed_inputs(tmp_path, capsys):
    """Colour+alpha, 16-bit grey and a text file in one folder: both images fitted at their size, the text skipped."""
    folder = tmp_path / "in"
    _save(folder / "scene.png", _scene(), "RGBA")
    _save(folder / "grey.png", _scene(colour=False), "I;16")
    (folder / "notes.txt").write_text("not an image")
    out = tmp_path / "out"
    result = fit.fit_files([str(folder)], str(out), kinds="disk,box", max_shapes=3, progress=False, **QUICK)
    assert result["done"] == 2 and [p for p, _ in result["skipped"]] == [str(folder / "notes.txt")]
    assert "skipped" in capsys.readouterr().err
    rows = {os.path.basename(r["file"]): r for r in _summary(out)}
    assert list(rows) == ["grey.png", "scene.png", "notes.txt"]
    for name in ("scene.png", "grey.png"):
        row = rows[name]
        assert row["status"] == "ok" and row["size"] == "40x24", row
        assert sorted(row["kinds"].split(",")) == ["box", "disk"] and row["count"] == "2", row
        assert float(row["psnr_db"]) > 25, row
        assert sorted(os.listdir(out / name[:-4])) == ["input.png", "overlay.png", "params.json", "shapes.svg"]
    assert rows["notes.txt"]["status"] == "skipped: not a PNG/JPEG file"
    renderer, _ = files.load_params(str(out / "grey" / "params.json"))
    assert (renderer.height, renderer.width, renderer.channels) == (24, 40, 1)  # grey stays grey


@pytest.mark.slow  # a whole search
def test_params_json_renders_back_at_the_images_own_size(tmp_path, capsys):
    image = _scene()
    path = _save(tmp_path / "a.png", image)
    fit.fit_files(path, str(tmp_path / "out"), kinds="disk,box", max_shapes=2, progress=False, **QUICK)
    assert cli.main(["render", str(tmp_path / "out" / "a" / "params.json"), "--out", str(tmp_path / "again.png")]) == 0
    again = files.read_image(str(tmp_path / "again.png"))
    assert again.shape == (24, 40, 3)
    assert np.mean(np.abs(again - image) > 0.25) < 0.03  # the same picture, up to edge pixels


def _fake_fit_scene(images, kinds=None, max_shapes=None, shapes=None, **options):
    """fit_scene's contract without the search (the file plumbing on every backend, in well under a second):
    one disk at the image's centre, of its own size and channels."""
    from shapegrad.fit.search import SceneFit

    out = []
    for image in images:
        h, w, c = image.shape
        params = np.array([0.5, 0.5, 0.25, *([0.8] * c), 1.0], "float32")
        out.append(SceneFit("disk", params, np.zeros(c, "float32"), h, w, c, 1.0, 0.0, 40.0, 0.0))
    return out


def test_existing_stem_is_kept_without_force_and_the_others_are_done(tmp_path, monkeypatch):
    from shapegrad.fit import search as scenefit

    monkeypatch.setattr(scenefit, "fit_scene", _fake_fit_scene)
    a, b = _save(tmp_path / "in" / "a.png", _scene()), _save(tmp_path / "in" / "sub" / "a.png", _scene())
    c = _save(tmp_path / "in" / "c.png", _scene())
    out = tmp_path / "out"
    (out / "a").mkdir(parents=True)
    (out / "a" / "mine.txt").write_text("keep")
    result = fit.fit_files([str(tmp_path / "in")], str(out), shapes="disk,box", progress=False, **QUICK)
    status = {os.path.relpath(r["file"], tmp_path / "in"): r["status"] for r in _summary(out)}
    assert status == {"a.png": f"skipped: {out / 'a'} exists (use --force to overwrite)", "c.png": "ok",
                      os.path.join("sub", "a.png"): "ok"}  # same stem: a-2
    assert result["done"] == 2 and os.listdir(out / "a") == ["mine.txt"] and (out / "a-2" / "params.json").exists()
    assert b and c
    result = fit.fit_files([a], str(out), shapes="disk,box", force=True, progress=False, **QUICK)
    assert result["done"] == 1 and (out / "a" / "params.json").exists()


def test_exit_codes_and_the_tiny_image_rule(tmp_path, capsys):
    ok = _save(tmp_path / "in" / "ok.png", _scene((16, 24)))
    tiny = _save(tmp_path / "tiny.png", np.zeros((3, 30, 3)))
    assert cli._FIT_MAX_SIDE == fit.MAX_SIDE
    out = tmp_path / "out"
    (out / "ok").mkdir(parents=True)
    # nothing fittable at all: bad arguments, before any work
    assert cli.main(["fit", tiny, "--out", str(out)]) == 2
    assert "1 under 4 px a side" in capsys.readouterr().err
    assert cli.main(["fit", ok, "--out", str(out), "--max-side", "3"]) == 2
    assert "Received: --max-side=3" in capsys.readouterr().err
    # the tiny image skipped with its reason, the existing one skipped: 1, and the summary says so
    assert cli.main(["fit", ok, tiny, "--out", str(out)]) == 1
    err = capsys.readouterr().err
    assert "30x3 is smaller than 4 px a side" in err and "exists" in err
    assert [r["status"].split(":")[0] for r in _summary(out)] == ["skipped", "skipped"]
    with pytest.raises(ValueError, match="Received: kinds=\\('disk', 'star'\\)"):
        fit.fit_files(ok, str(out), kinds="disk,star")


@pytest.mark.parametrize("extra, received", [
    (["--kinds", "disk"], "Received: --shapes='disk,box', --kinds='disk'"),
    (["--max-shapes", "3"], "Received: --shapes='disk,box', --max-shapes=3"),
    (["--kinds", "box", "--max-shapes", "3"], "Received: --shapes='disk,box', --kinds='box', --max-shapes=3"),
])
def test_shapes_with_kinds_or_max_shapes_is_a_usage_error(tmp_path, capsys, extra, received):
    path = _save(tmp_path / "a.png", _scene((16, 24)))
    assert cli.main(["fit", path, "--out", str(tmp_path / "out"), "--shapes", "disk,box", *extra]) == 2
    err = capsys.readouterr().err.strip()
    assert "Expected either --shapes, or --kinds and --max-shapes, not both" in err and err.endswith(received), err
    assert len(err.splitlines()) == 1 and not (tmp_path / "out").exists()
    with pytest.raises(ValueError, match="not both"):
        fit.fit_files(path, str(tmp_path / "out"), shapes="disk,box", max_shapes=2)


@pytest.mark.slow
def test_cli_end_to_end_with_the_default_search(tmp_path, capsys):
    _save(tmp_path / "in" / "scene.png", _scene())
    status = cli.main(["fit", str(tmp_path / "in"), "--out", str(tmp_path / "out")])
    io = capsys.readouterr()
    assert status == 0, io.err
    assert "fitted 1 image(s)" in io.out and "1/1" in io.err  # the progress bar is on stderr
    (row,) = _summary(tmp_path / "out")
    assert row["count"] == "2" and sorted(row["kinds"].split(",")) == ["box", "disk"], row  # a disk, not an ellipse
    assert float(row["psnr_db"]) > 25, row


def test_cli_exit_0_summary_columns_and_progress_on_stderr(tmp_path, capsys, monkeypatch):
    from shapegrad.fit import search as scenefit

    monkeypatch.setattr(scenefit, "fit_scene", _fake_fit_scene)
    a = _save(tmp_path / "a.png", _scene((16, 24)))
    b = _save(tmp_path / "b.png", _scene((20, 12), colour=False))
    assert cli.main(["fit", a, b, "--out", str(tmp_path / "out"), "--kinds", "disk", "--max-shapes", "2"]) == 0
    io = capsys.readouterr()
    assert io.out.startswith("fitted 2 image(s)") and "2/2" in io.err and "2/2" not in io.out
    rows = _summary(tmp_path / "out")
    assert list(rows[0]) == list(fit.SUMMARY_COLUMNS)
    assert [(r["size"], r["kinds"], r["count"], r["status"]) for r in rows] == [("24x16", "disk", "1", "ok"),
                                                                              ("12x20", "disk", "1", "ok")]
    renderer, params = files.load_params(str(tmp_path / "out" / "b" / "params.json"))
    assert (renderer.height, renderer.width, renderer.channels, params.shape) == (20, 12, 1, (1, 5))


def test_images_of_one_size_are_fitted_together_and_an_interrupted_run_keeps_its_batches(tmp_path, monkeypatch):
    """20 images of one size go in two equal batches of 10 (one compiled batch size), another size alone,
    a 3x3 image is skipped (not a crash); a kill in the third batch keeps the files and summary rows of the
    first two."""
    from shapegrad.fit import search as scenefit

    calls = []

    def recording(images, **kwargs):
        calls.append([im.shape for im in images])
        if len(calls) == 3:
            raise KeyboardInterrupt
        return _fake_fit_scene(images, **kwargs)

    monkeypatch.setattr(scenefit, "fit_scene", recording)
    for k in range(20):
        _save(tmp_path / "in" / f"s{k:02d}.png", _scene((16, 24)))
    _save(tmp_path / "in" / "t.png", _scene((20, 12)))
    _save(tmp_path / "in" / "tiny.png", _scene((3, 3)))
    out = tmp_path / "out"
    with pytest.raises(KeyboardInterrupt):
        fit.fit_files([str(tmp_path / "in")], str(out), shapes="disk", progress=False)
    assert [len(c) for c in calls] == [10, 10, 1] and {s for c in calls[:2] for s in c} == {(16, 24, 3)}
    rows = {os.path.basename(r["file"]): r["status"] for r in _summary(out)}
    assert sum(status == "ok" for status in rows.values()) == 20 and "t.png" not in rows
    assert rows["tiny.png"] == "skipped: 3x3 is smaller than 4 px a side"
    assert all((out / f"s{k:02d}" / "params.json").exists() for k in range(20)) and not (out / "t").exists()


def test_a_large_image_is_fitted_shrunk_and_its_params_are_at_its_own_size(tmp_path, monkeypatch):
    """A 40x64 image with max_side=16 is fitted at 10x16; params.json renders at 40x64, and the
    fit's disk (at the small image's point (5, 8), radius 2.5 px) is mapped back: radius 10 px."""
    from shapegrad.fit import search as scenefit

    sizes = []

    def recording(images, **kwargs):
        sizes.extend(im.shape for im in images)
        return _fake_fit_scene(images, **kwargs)

    monkeypatch.setattr(scenefit, "fit_scene", recording)
    path = _save(tmp_path / "big.png", _scene((40, 64)))
    out = tmp_path / "out"
    result = fit.fit_files(path, str(out), shapes="disk", progress=False, max_side=16)
    assert result["done"] == 1 and sizes == [(10, 16, 3)] and result["rows"][0][1] == "64x40"
    renderer, params = files.load_params(str(out / "big" / "params.json"))
    meta = json.loads((out / "big" / "params.json").read_text())
    assert (renderer.height, renderer.width) == (40, 64) and meta["fitted_size"] == [10, 16]
    (disk,) = meta["natural"][0]
    # the point (5, 8) of the 10x16 image is (5.5 * 4 - 0.5, 8.5 * 4 - 0.5) here (pixel centres map to pixel centres)
    np.testing.assert_allclose(disk["center"], [21.5, 33.5], atol=1e-3)
    np.testing.assert_allclose(disk["radius"], [10.0], atol=1e-3)
    assert files.read_image(str(out / "big" / "overlay.png")).shape[:2] == (10 * 16, 16 * 16)
    assert 'width="64"' in (out / "big" / "shapes.svg").read_text()
