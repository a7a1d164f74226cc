"""The user's own images: the folder pipeline, letterboxing, `train --images`, `encode`, and bad input.

Images are drawn with scikit-image (an independent rasteriser) into tmp_path, in mixed sizes and
modes (grey, RGB, RGBA, 16-bit, in a sub-folder too). Encoding tests use an untrained encoder
saved with its metadata (fast); the training tests are marked slow.
"""

import json
import os
import signal
import subprocess
import sys
import time

import keras
import numpy as np
import pytest
from PIL import Image
from skimage import draw

import shapegrad
from shapegrad import cli
from shapegrad.learn import data, encode, metrics
from shapegrad.io import files
from shapegrad.learn.models import build_encoder, fields_for
from shapegrad.render.render import Render

SIZES = [(20, 20), (24, 36), (40, 28), (16, 16), (33, 21)]


def _scene(rng, h, w):
    image = np.zeros((h, w, 3))
    n = min(h, w)
    rr, cc = draw.disk((rng.uniform(0.35, 0.65) * h, rng.uniform(0.35, 0.65) * w), rng.uniform(0.15, 0.3) * n,
                       shape=(h, w))
    image[rr, cc] = rng.uniform(0.4, 1.0, 3)
    r0, c0 = rng.uniform(0.3, 0.7) * h, rng.uniform(0.3, 0.7) * w
    t = rng.uniform(0, 2 * np.pi) + np.arange(4) * np.pi / 2
    rr, cc = draw.polygon(r0 + 0.2 * n * np.sin(t), c0 + 0.2 * n * np.cos(t), shape=(h, w))
    image[rr, cc] = rng.uniform(0.4, 1.0, 3)
    return image


def make_folder(root, count=10, seed=0):
    """``count`` PNGs of mixed sizes and modes under ``root`` (half in ``root/sub``); returns their paths."""
    rng = np.random.default_rng(seed)
    os.makedirs(root / "sub", exist_ok=True)
    paths = []
    for i in range(count):
        h, w = SIZES[i % len(SIZES)]
        image = _scene(rng, h, w)
        path = root / ("sub" if i % 2 else "") / f"im{i}.png"
        if i % 4 == 0:  # grey, 8-bit
            Image.fromarray((image.mean(-1) * 255).astype(np.uint8)).save(path)
        elif i % 4 == 1:  # RGBA
            rgba = np.concatenate([image, np.ones_like(image[..., :1])], -1)
            Image.fromarray((rgba * 255).astype(np.uint8)).save(path)
        elif i % 4 == 2:  # grey, 16-bit
            Image.fromarray((image.mean(-1) * 65535).astype(np.uint16)).save(path)
        else:
            Image.fromarray((image * 255).astype(np.uint8)).save(path)
        paths.append(str(path))
    return paths


def save_untrained(path, resolution=16, shapes="disk*2,box*2", channels=3):
    """An untrained encoder with its metadata, saved like train --images saves one."""
    renderer = Render(shapes, resolution, channels=channels, background=[0.0] * channels)
    keras.utils.set_random_seed(0)
    model = encode.with_info(build_encoder((resolution, resolution, channels), fields_for(renderer.spec), width=4),
                             encode.encoder_info(renderer, kinds="disk,box", max_shapes=2))
    model.save(path)
    return path


def save_untrained_slots(path, resolution=16, channels=3):
    """An untrained slot encoder (2 slots of disk, box) with its metadata."""
    layer = shapegrad.SlotRender("disk,box", 2, resolution, channels=channels, background=[0.0] * channels)
    keras.utils.set_random_seed(0)
    model = encode.with_info(build_encoder((resolution, resolution, channels), layer.fields(), width=4),
                             encode.encoder_info(layer, kinds="disk,box", max_shapes=2, decoder="slots"))
    model.save(path)
    return path


def run_cli(*argv, capsys=None):
    status = cli.main([str(a) for a in argv])
    return status, (capsys.readouterr() if capsys else None)


# --------------------------------------------------------------------------- the data pipeline


def test_scan_finds_images_recursively_and_skips_unreadable(tmp_path):
    paths = make_folder(tmp_path)
    (tmp_path / "broken.png").write_bytes(b"not a png")
    (tmp_path / "notes.txt").write_text("ignored: not an image name")
    scan = data.scan_images(tmp_path)
    assert sorted(scan.paths) == sorted(paths)
    assert [p for p, _ in scan.skipped] == [str(tmp_path / "broken.png")]
    assert scan.channels == 3 and not all(scan.colour) and any(scan.colour)
    assert (SIZES[1] in scan.sizes) and (SIZES[2] in scan.sizes)
    with pytest.raises(ValueError, match="no such file or folder"):
        data.scan_images(tmp_path / "missing")


def test_letterbox_keeps_the_aspect_and_pads_with_the_border_colour():
    image = np.full((40, 80, 3), 0.25, np.float32)
    image[10:30, 30:50] = 1.0
    box = data.Letterbox(40, 80, 16)
    boxed = box.apply(image)
    assert boxed.shape == (16, 16, 3) and (box.inner, box.top, box.left) == ((8, 16), 4, 0)
    np.testing.assert_allclose(boxed[:4], 0.25, atol=1e-6)  # padding: the border colour
    np.testing.assert_allclose(boxed[12:], 0.25, atol=1e-6)
    assert boxed[8, 8].min() > 0.9  # the square's centre, 2x smaller


@pytest.mark.parametrize("size", [(40, 80), (60, 30), (16, 16)])
def test_parameters_map_back_to_the_images_own_size(size):
    """A scene in the N x N frame, mapped to H x W and rendered there, letterboxes back onto itself."""
    h, w = size
    frame = Render("disk,box,triangle", 32, channels=1)
    box = data.Letterbox(h, w, 32)
    params = frame.spec.sample(4, seed=3)
    positions = [s for s in frame.spec.slices if s.field.kind == "position"]
    for s in positions:  # keep the shapes inside the image part of the frame
        params[:, s.slice][:, 0::2] = (box.top + (0.3 + 0.4 * params[:, s.slice][:, 0::2]) * box.inner[0]) / 32
        params[:, s.slice][:, 1::2] = (box.left + (0.3 + 0.4 * params[:, s.slice][:, 1::2]) * box.inner[1]) / 32
    for s in frame.spec.slices:
        if s.field.kind == "size":
            params[:, s.slice] *= min(box.inner) / 32
    big = Render("disk,box,triangle", (h, w), channels=1)
    mapped = box.to_image(frame.spec, params, big.spec)
    drawn = keras.ops.convert_to_numpy(big(mapped))
    assert drawn.shape == (4, h, w, 1)
    back = np.stack([box.apply(d) for d in drawn])
    want = keras.ops.convert_to_numpy(frame(params))

    def mass_and_centre(x):
        x = x[..., 0]
        ii, jj = np.indices(x.shape[1:])
        mass = x.sum(axis=(1, 2))
        return mass, (x * ii).sum(axis=(1, 2)) / mass, (x * jj).sum(axis=(1, 2)) / mass

    (m0, r0, c0), (m1, r1, c1) = mass_and_centre(back), mass_and_centre(want)
    np.testing.assert_allclose(m0, m1, rtol=0.1)  # areas (a wrong length scale is off by 2x); soft corners ~5 %
    np.testing.assert_allclose(r0, r1, atol=0.25)  # and where, to a quarter pixel of the frame
    np.testing.assert_allclose(c0, c1, atol=0.25)


def test_image_dataset_streams_every_image_once_per_pass(tmp_path):
    paths = make_folder(tmp_path, count=6)
    ds = data.ImageFolderDataset(paths, 16, 3, batch_size=4, batches=3, seed=1, cache=2)
    x, y = ds[0]
    assert x.shape == (4, 16, 16, 3) and x.dtype == np.float32 and np.array_equal(x, y)
    assert 0 <= x.min() and x.max() <= 1
    seen = np.concatenate([ds.indices(i) for i in range(3)])  # 12 draws = 2 passes over 6 images
    assert sorted(seen[:6]) == list(range(6)) and sorted(seen[6:]) == list(range(6))
    again = ds.indices(1)
    ds.on_epoch_end()
    assert not np.array_equal(np.concatenate([ds.indices(i) for i in range(3)]), seen)
    ds.epoch = 0
    np.testing.assert_array_equal(ds.indices(1), again)  # a pure function of (seed, epoch, index)
    assert len(ds._cache) <= 2
    grey = data.ImageFolderDataset(paths, 16, 1, batch_size=2)
    assert grey[0][0].shape == (2, 16, 16, 1)


# --------------------------------------------------------------------------- encode


def test_encoder_metadata_survives_a_plain_load_model(tmp_path):
    path = save_untrained(str(tmp_path / "encoder.keras"))
    model = keras.saving.load_model(path)
    encoder = shapegrad.Encoder(model, encode.find_info(model))
    assert encoder.info["shapes"] == "disk*2,box*2" and encoder.info["resize"] == "letterbox"
    assert encoder.resolution == 16 and encoder.channels == 3


def test_encode_writes_per_image_files_that_render_at_the_images_size(tmp_path, capsys):
    paths = make_folder(tmp_path / "in", count=8)
    enc = save_untrained(str(tmp_path / "encoder.keras"))
    out = tmp_path / "out"
    # --no-search: refinement only (the search compiles its engines per image size: the next test runs it).
    status, io_ = run_cli("encode", enc, tmp_path / "in", "--out", out, "--refine-steps", "3", "--no-search",
                          capsys=capsys)
    assert status == 0, io_.err
    assert "encoded 8 image(s)" in io_.out
    rows = (out / "summary.csv").read_text().splitlines()
    assert rows[0] == "file,size,kinds,count,psnr_db,seconds,status" and len(rows) == 9
    assert (out / "sheet.png").exists()
    for path in paths:
        stem = os.path.splitext(os.path.basename(path))[0]
        folder = out / stem
        assert {"params.json", "overlay.png", "shapes.svg"} <= set(os.listdir(folder))
        meta = json.load(open(folder / "params.json"))
        h, w = Image.open(path).size[::-1]
        assert (meta["height"], meta["width"]) == (h, w)
        status, io_ = run_cli("render", folder / "params.json", "--out", tmp_path / f"{stem}.png", capsys=capsys)
        assert status == 0, io_.err
        drawn = files.read_image(str(tmp_path / f"{stem}.png"))
        assert drawn.shape[:2] == (h, w)
        # The file reproduces the reconstruction that was scored.
        psnr = float(metrics.psnr(drawn[None], data.to_channels(files.read_image(path), 3)[None])[0])
        assert abs(psnr - meta["psnr_db"]) < 0.5


def test_encode_searches_on_from_the_encoders_guess_at_the_images_size(tmp_path, capsys):
    """An untrained slot encoder guesses badly; the search from its guess (the default) finds the disk and
    the box of each image, at the image's own size, and the command writes it (params.json renders back)."""
    rng = np.random.default_rng(5)
    os.makedirs(tmp_path / "in")
    for i in range(2):
        Image.fromarray((_scene(rng, 18, 22) * 255).astype(np.uint8)).save(tmp_path / "in" / f"im{i}.png")
    enc = shapegrad.Encoder.load(save_untrained_slots(str(tmp_path / "s.keras")))
    images = [files.read_image(str(tmp_path / "in" / f"im{i}.png")) for i in range(2)]
    quick = dict(steps=40, joint_steps=40, order_steps=30, polish_steps=40)
    guess = enc.encode(images, refine_steps=0)
    found = enc.encode(images, search=quick)
    for g, e in zip(guess, found):
        assert (e.height, e.width) == (18, 22) and e.render().shape == (18, 22, 3)
        assert e.psnr > 25 and e.psnr > g.psnr + 5, (g.psnr, e.psnr)
        assert sorted(k for k, _ in e.renderer.shapes) == ["box", "disk"] and e.kept == 2
    with pytest.raises(ValueError, match="Received: search='yes'"):
        enc.encode(images, search="yes")


def test_encode_fast_polishes_the_encoders_shapes_batched_without_the_search(tmp_path, capsys):
    """--fast: the slot encoder's kept shapes, polished by the scene engine (no search: the count stays the
    encoder's); --fast with --search is one line, exit 2."""
    make_folder(tmp_path / "in", count=4)
    enc = save_untrained_slots(str(tmp_path / "s.keras"))
    status, io_ = run_cli("encode", enc, tmp_path / "in", "--out", tmp_path / "fast", "--fast", "--refine-steps", "5",
                          capsys=capsys)
    assert status == 0 and "encoded 4 image(s)" in io_.out, io_.err
    import csv

    with open(tmp_path / "fast" / "summary.csv") as f:
        polished = {r["file"]: r for r in csv.DictReader(f)}
    guess = shapegrad.Encoder.load(enc).encode([files.read_image(p) for p in sorted(polished)], refine_steps=0)
    for (path, row), g in zip(sorted(polished.items()), guess):
        assert int(row["count"]) == len(g.renderer.shapes)  # the encoder's count: nothing added
    status, io_ = run_cli("encode", enc, tmp_path / "in", "--out", tmp_path / "x", "--fast", "--search", capsys=capsys)
    assert status == 2 and "--fast skips the search" in io_.err and len(io_.err.strip().splitlines()) == 1


def test_encode_python_api_maps_back_and_keeps_switched_off_shapes_out(tmp_path):
    """The shapes kept are exactly those of the encoder's guess with opacity >= the threshold, in order (else the
    most opaque one, with ``kept == 0``); the threshold is set from the guess so that all, two or none pass."""
    enc = shapegrad.Encoder.load(save_untrained(str(tmp_path / "e.keras")))
    images = [np.zeros((30, 50, 1), "float32"), np.ones((12, 12, 3), "float32")]
    spec = enc.renderer.spec
    kinds = [kind for kind, count in spec.shapes for _ in range(count)]
    assert kinds == ["disk", "disk", "box", "box"]
    guess = enc.model.predict(np.stack([enc.prepare(im)[0] for im in images]), verbose=0)
    opacity = np.array([[row[spec.get(k, "opacity").slice][0] for k in range(spec.num_shapes)] for row in guess])
    assert len({tuple(np.sort(o)) for o in opacity}) == 2 and all(len(set(o)) == 4 for o in opacity)  # no ties

    def check(e, image, guessed, want, kept):
        assert (e.height, e.width) == image.shape[:2]
        drawn = [kind for kind, count in e.renderer.shapes for _ in range(count)]
        assert drawn == [kinds[k] for k in want] and e.kept == kept, (drawn, e.kept, want)
        opacities = [e.params[0, e.renderer.spec.get(k, "opacity").slice][0] for k in range(len(want))]
        np.testing.assert_allclose(opacities, guessed[want], atol=1e-6)
        assert e.render().shape == (e.height, e.width, 3) and np.isfinite(e.psnr)

    found = enc.encode(images, refine_steps=0)  # the default threshold, KEEP_OPACITY
    assert len(found) == 2
    for e, image, guessed in zip(found, images, opacity):
        want = np.flatnonzero(guessed >= encode.KEEP_OPACITY)
        check(e, image, guessed, want if len(want) else [int(np.argmax(guessed))], len(want))
    every = enc.encode(images, refine_steps=0, keep_opacity=0.0)
    none = enc.encode(images, refine_steps=0, keep_opacity=1.01)
    for image, guessed, e_every, e_none in zip(images, opacity, every, none):
        check(e_every, image, guessed, [0, 1, 2, 3], 4)
        check(e_none, image, guessed, [int(np.argmax(guessed))], 0)  # none passes: the most opaque one, kept == 0
        second, third = np.sort(guessed)[::-1][1:3]
        (e,) = enc.encode([image], refine_steps=0, keep_opacity=(second + third) / 2)
        check(e, image, guessed, sorted(np.argsort(guessed)[-2:]), 2)  # the two most opaque, in their order


@pytest.mark.slow  # ~18 s: the engine's compilation
def test_encode_refines_the_guess_through_one_compiled_scene_engine(tmp_path):
    enc = shapegrad.Encoder.load(save_untrained(str(tmp_path / "e.keras")))
    rng = np.random.default_rng(3)
    images = [_scene(rng, 16, 16).astype("float32") for _ in range(3)]
    guess = enc.encode(images, refine_steps=0, keep_opacity=0.0)
    refined = enc.encode(images, refine_steps=40, batch_size=2, keep_opacity=0.0, refine_resolution=16, search=False)
    for g, r in zip(guess, refined):
        assert r.psnr > g.psnr + 2.0, (g.psnr, r.psnr)
        assert r.renderer.spec.num_shapes == g.renderer.spec.num_shapes == 4  # every shape kept (threshold 0)
        opacities = [r.params[0, r.renderer.spec.get(k, "opacity").slice][0] for k in range(4)]
        assert np.allclose(opacities, 1.0)  # the engine draws kept shapes opaque
    # Batches of 2 then 1 share one engine (one compilation on TensorFlow and JAX).
    assert list(enc._engines) == [(2, 16)]


def test_a_slot_encoder_encodes_its_present_slots_with_their_own_background(tmp_path):
    enc = shapegrad.Encoder.load(save_untrained_slots(str(tmp_path / "s.keras")))
    assert enc.info["decoder"] == "slots" and enc.info["version"] == 2 and enc.slots.slots == 2
    images = [np.zeros((30, 50, 1), "float32"), np.ones((12, 12, 3), "float32")]
    guess = enc.model.predict(np.stack([enc.prepare(im)[0] for im in images]), verbose=0)
    found = enc.encode(images, refine_steps=0)
    for row, e in zip(guess, found):
        shapes, background = enc.slots.scene(row, encode.KEEP_PRESENCE)
        assert e.renderer.shapes == tuple((kind, 1) for kind, _ in shapes)  # back to front, one group each
        np.testing.assert_allclose(e.renderer.background, background.round(5), atol=1e-6)
        assert e.render().shape == (e.height, e.width, 3) and np.isfinite(e.psnr)


def test_encode_does_not_overwrite_without_force_but_does_the_rest(tmp_path, capsys):
    make_folder(tmp_path / "in", count=3)
    (tmp_path / "in" / "broken.png").write_bytes(b"\x89PNG broken")
    enc = save_untrained(str(tmp_path / "encoder.keras"))
    out = tmp_path / "out"
    os.makedirs(out / "im0")
    (out / "im0" / "mine.txt").write_text("keep me")
    status, io_ = run_cli("encode", enc, tmp_path / "in", "--out", out, "--refine-steps", "0", capsys=capsys)
    assert status == 1
    assert "im0" in io_.err and "broken.png" in io_.err
    assert (out / "im0" / "mine.txt").read_text() == "keep me" and not (out / "im0" / "params.json").exists()
    assert (out / "im1" / "params.json").exists() and (out / "im2" / "params.json").exists()
    summary = (out / "summary.csv").read_text()
    assert "exists" in summary and "unreadable" in summary
    status, io_ = run_cli("encode", enc, tmp_path / "in" / "im0.png", "--out", out, "--force", "--refine-steps", "0",
                          capsys=capsys)
    assert status == 0 and (out / "im0" / "params.json").exists()


@pytest.mark.parametrize("what", ["empty", "unreadable"])
def test_a_folder_without_readable_images_is_one_line_exit_2(tmp_path, capsys, what):
    folder = tmp_path / "in"
    folder.mkdir()
    if what == "unreadable":
        (folder / "a.png").write_bytes(b"nope")
        (folder / "b.jpg").write_bytes(b"")
    enc = save_untrained(str(tmp_path / "encoder.keras"))
    for argv in (
        ["train", "--images", folder, "--kinds", "disk", "--max-shapes", "2", "--out", tmp_path / "run"],
        ["encode", enc, folder, "--out", tmp_path / "out"],
    ):
        status, io_ = run_cli(*argv, capsys=capsys)
        assert status == 2, io_.err
        error = [line for line in io_.err.splitlines() if "error:" in line]
        assert len(error) == 1 and ("no image files" in error[0] or "none a readable image" in error[0]), io_.err
    assert not (tmp_path / "run").exists() and not (tmp_path / "out").exists()


def test_an_encoder_that_is_not_ours_is_refused(tmp_path, capsys):
    make_folder(tmp_path / "in", count=1)
    plain = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)])
    plain.save(tmp_path / "plain.keras")
    (tmp_path / "junk.keras").write_bytes(b"junk")
    for path, expected in ((tmp_path / "plain.keras", "no shapegrad encoder metadata"),
                           (tmp_path / "junk.keras", "not a Keras model file"),
                           (tmp_path / "none.keras", "no such encoder file")):
        status, io_ = run_cli("encode", path, tmp_path / "in", "--out", tmp_path / "out", capsys=capsys)
        assert status == 2 and expected in io_.err, io_.err
    assert not (tmp_path / "out").exists()


def test_train_images_argument_checks(tmp_path, capsys):
    make_folder(tmp_path / "in", count=2)
    for argv, expected in (
        (["--kinds", "disk"], "--max-shapes"),
        (["--kinds", "disk", "--max-shapes", "2", "--shapes", "disk"], "not both"),
        (["--kinds", "blob", "--max-shapes", "2"], "blob"),
        (["--shapes", "disk", "--supervised"], "labels"),
    ):
        status, io_ = run_cli("train", "--images", tmp_path / "in", *argv, "--out", tmp_path / "run", capsys=capsys)
        assert status == 2 and expected in io_.err, io_.err
    status, io_ = run_cli("train", "--kinds", "disk", "--max-shapes", "2", "--out", tmp_path / "run", capsys=capsys)
    assert status == 2 and "--images" in io_.err


# --------------------------------------------------------------------------- training (slow)

TRAIN = ["--resolution", "16", "--steps-per-epoch", "3", "--batch-size", "8", "--width", "4", "--test-size", "8",
         "--refine-steps", "2"]


@pytest.mark.slow
@pytest.mark.parametrize("decoder", ["slots", "superset"])
def test_train_on_a_tiny_folder_then_encode_with_it(tmp_path, capsys, decoder):
    make_folder(tmp_path / "in", count=10)
    (tmp_path / "in" / "broken.png").write_bytes(b"nope")
    run = tmp_path / "run"
    status, io_ = run_cli("train", "--images", tmp_path / "in", "--kinds", "disk,box", "--max-shapes", "2",
                          "--decoder", decoder, "--steps", "6", *TRAIN, "--out", run, capsys=capsys)
    assert status == 0, io_.err
    assert "broken.png" in io_.err
    saved = json.load(open(run / "metrics.json"))
    shapes = "slots:2:disk,box" if decoder == "slots" else "disk*2,box*2"
    assert saved["shapes"] == shapes and saved["decoder"] == decoder and saved["channels"] == 3
    assert (saved["training_images"], saved["heldout_images"], saved["skipped_files"]) == (9, 1, 1)
    assert saved["steps"] == 6 and np.isfinite(saved["psnr"]) and "iou" in saved
    assert {"encoder.keras", "curves.png", "reconstructions.png"} <= set(os.listdir(run))
    enc = shapegrad.Encoder.load(str(run / "encoder.keras"))
    assert enc.info["shapes"] == "disk*2,box*2" and enc.info["max_shapes"] == 2 and enc.info["decoder"] == decoder
    status, io_ = run_cli("encode", run / "encoder.keras", tmp_path / "in" / "sub" / "im3.png", "--out", tmp_path / "o",
                          "--refine-steps", "2", capsys=capsys)
    assert status == 0 and (tmp_path / "o" / "im3" / "params.json").exists(), io_.err


@pytest.mark.slow
def test_killed_train_images_run_resumes_from_its_checkpoint(tmp_path):
    """As tests/test_train.py does for synthetic scenes: SIGKILL after a checkpoint, rerun, it resumes."""
    make_folder(tmp_path / "in", count=8)
    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "shapegrad.cli", "train", "--images", str(tmp_path / "in"), "--shapes", "disk,box",
           "--steps", "30", *TRAIN, "--out", str(out)]
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
    assert "Epoch 1/10" not in log and "Epoch 10/10" in log, log[-2000:]
    assert json.load(open(out / "metrics.json"))["steps"] == 30
