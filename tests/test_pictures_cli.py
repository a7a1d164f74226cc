"""``shapegrad fit --count/--seconds/--alpha``: what a user gets on disk, checked the way a user would.

``params.json`` drawn back by ``shapegrad render``, ``shapes.svg`` drawn by an independent rasterizer
(cairosvg), ``index.html`` opened in a headless browser (chromium), bad flags, a one-colour picture and
an interrupted folder. Tiny pictures (24x32), 3 shapes and a short search (``QUICK``, set through
``PICTURE_DEFAULTS``, which the command line does not expose), all run in-process through
``cli.main``: each fit costs seconds once its picture size is compiled.
"""

import csv
import io
import json
import os
import re
import shutil
import subprocess

import numpy as np
import pytest
from PIL import Image

from shapegrad import cli
from shapegrad.fit import pictures
from shapegrad.io import files

# Run on one backend: the command line's files and messages; the picture fitter itself is tested on every backend in test_pictures.py.
pytestmark = pytest.mark.once

H, W = 24, 32
QUICK = dict(steps=20, final_steps=10, refine_every=4, refine_steps=5, candidates=4, windows=2)


def _picture(colour=True):
    """A non-square picture of a ramp, a box and a wedge: no 3 triangles draw it exactly."""
    rows, cols = np.mgrid[0:H, 0:W]
    image = np.stack([0.2 + 0.6 * rows / H, 0.3 + 0.5 * cols / W, np.full((H, W), 0.5)], axis=-1)
    image[5:15, 8:20] = (0.9, 0.15, 0.1)
    image[rows > 1.2 * cols + 4] = (0.1, 0.2, 0.8)
    return image if colour else image.mean(axis=-1)


def _save(path, image):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    Image.fromarray(np.round(np.asarray(image) * 255).astype(np.uint8)).save(path)
    return str(path)


def _summary(out):
    with open(os.path.join(out, "summary.csv")) as f:
        return {os.path.basename(row["file"]): row for row in csv.DictReader(f)}


def _psnr(a, b):
    mse = float(np.mean(np.square(np.asarray(a, np.float64) - np.asarray(b, np.float64))))
    return 10 * np.log10(1.0 / max(mse, 1e-12))


@pytest.fixture(autouse=True)
def quick(monkeypatch):
    for name, value in QUICK.items():
        monkeypatch.setitem(pictures.PICTURE_DEFAULTS, name, value)


@pytest.fixture(scope="module")
def fitted(tmp_path_factory):
    """``shapegrad fit FOLDER --count 3``: a colour and a grey picture, both 32x24 (W x H)."""
    root = tmp_path_factory.mktemp("pictures")
    _save(root / "in" / "colour.png", _picture())
    _save(root / "in" / "grey.png", _picture(colour=False))
    out = root / "out"
    with pytest.MonkeyPatch.context() as patch:
        for name, value in QUICK.items():
            patch.setitem(pictures.PICTURE_DEFAULTS, name, value)
        status = cli.main(["fit", str(root / "in"), "--count", "3", "--out", str(out)])
    assert status == 0
    return out


def test_count_on_a_folder_writes_every_file_and_a_summary(fitted):
    rows = _summary(fitted)
    assert sorted(rows) == ["colour.png", "grey.png"]
    for name, row in rows.items():
        assert row["status"] == "ok" and row["size"] == f"{W}x{H}" and row["count"] == "3", row
        assert row["kinds"] == "triangle,triangle,triangle", row
        folder = fitted / name[:-4]
        assert sorted(os.listdir(folder)) == ["input.png", "params.json", "preview.png", "shapes.svg"]
        saved = json.loads((folder / "params.json").read_text())
        assert (saved["height"], saved["width"]) == (H, W) and saved["stopped"] == "count"
        assert len(saved["history"]) == 3 and abs(saved["psnr_db"] - float(row["psnr_db"])) < 0.01
    page = (fitted / "index.html").read_text()
    assert 'src="colour/shapes.svg"' in page and 'src="grey/shapes.svg"' in page


@pytest.mark.parametrize("name, channels", [("colour", 3), ("grey", 1)])
def test_params_json_renders_back_at_the_pictures_size(fitted, tmp_path, name, channels):
    folder = fitted / name
    again = tmp_path / "again.png"
    assert cli.main(["render", str(folder / "params.json"), "--out", str(again)]) == 0
    drawn = files.read_image(str(again))
    assert drawn.shape == (H, W, channels)
    # What fit drew (preview.png) and what render draws from params.json: the same 8-bit picture.
    preview = files.read_image(str(folder / "preview.png"))
    assert np.max(np.abs(drawn - preview)) <= 1.5 / 255
    # And the recorded PSNR is that of the parameters against the picture.
    renderer, params = files.load_params(str(folder / "params.json"))
    exact = np.asarray(renderer(params))[0]
    target = files.read_image(str(folder / "input.png"))
    recorded = json.loads((folder / "params.json").read_text())["psnr_db"]
    assert abs(_psnr(exact, target) - recorded) < 0.02
    assert abs(_psnr(drawn, target) - recorded) < 0.2


@pytest.mark.parametrize("name", ["colour", "grey"])
def test_svg_drawn_by_cairosvg_agrees_with_shapegrads_render(fitted, name):
    cairosvg = pytest.importorskip("cairosvg", reason="cairosvg is not installed (pip install cairosvg)")
    folder = fitted / name
    png = cairosvg.svg2png(url=str(folder / "shapes.svg"), output_width=W, output_height=H)
    drawn_by_cairo = np.asarray(Image.open(io.BytesIO(png)).convert("RGBA"), np.float64) / 255
    assert drawn_by_cairo.shape == (H, W, 4) and np.all(drawn_by_cairo[..., 3] == 1.0)  # covered: opaque
    renderer, params = files.load_params(str(folder / "params.json"))
    ours = np.asarray(renderer(params), np.float64)[0]
    theirs = drawn_by_cairo[..., :3].mean(axis=-1, keepdims=True) if ours.shape[-1] == 1 else drawn_by_cairo[..., :3]
    # Soft edges (ours) against anti-aliased hard ones (cairo): they differ along the edges only
    # (measured 30-39 dB, 97-100% of pixels within 0.1).
    assert _psnr(ours, theirs) > 25
    assert np.mean(np.abs(ours - theirs).max(axis=-1) < 0.1) >= 0.9


@pytest.fixture
def browser():
    """A chromium binary, looked up before the fit (the test is skipped without one)."""
    for name in ("chromium", "chromium-browser", "google-chrome", "chrome"):
        found = shutil.which(name)
        if found:
            return found
    pytest.skip("no chromium binary on PATH (the Makefile installs Debian's chromium where apt is available): "
                "index.html not checked in a browser")


def test_index_html_loads_every_picture_and_svg_in_a_headless_browser(browser, fitted, tmp_path):
    page = (fitted / "index.html").resolve().as_uri()
    common = [browser, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
              "--force-device-scale-factor=1", "--virtual-time-budget=5000", f"--user-data-dir={tmp_path / 'profile'}"]
    dom = subprocess.run([*common, "--dump-dom", page], capture_output=True, text=True, timeout=120)
    loaded = re.search(r'<body[^>]*data-loaded="([^"]*)"', dom.stdout)
    assert loaded, f"no <body data-loaded> in chromium's DOM (rc {dom.returncode}): {dom.stderr[-500:]}"
    assert loaded.group(1) == "all", loaded.group(1)

    shot = tmp_path / "page.png"
    subprocess.run([*common, "--window-size=900,1000", f"--screenshot={shot}", page], capture_output=True,
                   timeout=120)
    assert shot.exists(), "chromium wrote no screenshot"
    screen = np.asarray(Image.open(shot).convert("RGB"), np.int64)
    # Each picture is shown at 8x (256x192) inside a 1 px #ccc border: find the borders' top edges.
    k = round(256 / max(H, W))
    grey = np.all(screen == 204, axis=-1)
    boxes = []
    for y in range(screen.shape[0]):
        for x0, x1 in _runs(grey[y]):
            if x1 - x0 == W * k + 2 and grey[y + 1 : y + H * k + 2, x0].all():
                boxes.append((y + 1, x0 + 1))
    assert len(boxes) == 4, f"expected 4 framed pictures (2 inputs, 2 SVGs), found {boxes}"
    inputs_and_svgs = sorted(boxes)  # row by row: an input, then its SVG
    for name, (y, x) in zip(["colour", "grey"], inputs_and_svgs[1::2]):
        inside = screen[y : y + H * k, x : x + W * k] / 255.0
        assert inside.std() > 0.01, f"{name}/shapes.svg is blank in the browser"
        # What the browser drew from shapes.svg, averaged back to the picture's pixels: what fit drew.
        small = inside.reshape(H, k, W, k, 3).mean(axis=(1, 3))
        preview = files.read_image(str(fitted / name / "preview.png"))
        assert _psnr(small, preview) > 20, name  # measured 30-38 dB: hard SVG edges against soft ones


def _runs(mask):
    """``[(start, end)]`` of the runs of True in a 1-D boolean array."""
    edges = np.flatnonzero(np.diff(np.concatenate([[0], mask.astype(np.int8), [0]])))
    return list(zip(edges[::2], edges[1::2]))


def test_seconds_stops_adding_when_the_time_is_up(tmp_path):
    path = _save(tmp_path / "a.png", _picture())
    out = tmp_path / "out"
    # A budget shorter than one round: the round that starts inside it finishes, none starts after it.
    # (A longer one can end in "no gain" first on a tiny picture, once the compiled programs are cached.)
    assert cli.main(["fit", path, "--seconds", "0.05", "--out", str(out)]) == 0
    row = _summary(out)["a.png"]
    saved = json.loads((out / "a" / "params.json").read_text())
    assert row["status"] == "ok" and saved["stopped"] == "seconds", (row, saved["stopped"])
    assert 1 <= int(row["count"]) < 8 and len(saved["history"]) == int(row["count"])


def test_alpha_holds_every_opacity(tmp_path):
    path = _save(tmp_path / "a.png", _picture())
    out = tmp_path / "out"
    assert cli.main(["fit", path, "--count", "3", "--alpha", "0.5", "--out", str(out)]) == 0
    saved = json.loads((out / "a" / "params.json").read_text())
    opacities = [shape["opacity"][0] for shape in saved["natural"][0]]
    assert opacities == [0.5, 0.5, 0.5]
    svg = (out / "a" / "shapes.svg").read_text()
    assert re.findall(r'fill-opacity="([^"]*)"', svg) == ["0.500"] * 3


@pytest.mark.parametrize("flags, named", [
    (["--count", "0"], "--count"),
    (["--seconds", "-1"], "--seconds"),
    (["--count", "5", "--max-shapes", "3"], "--max-shapes"),
    (["--count", "5", "--shapes", "disk"], "--shapes"),
    (["--count", "5", "--alpha", "2"], "--alpha"),
])
def test_bad_flags_are_one_line_and_exit_2(tmp_path, capsys, flags, named):
    path = _save(tmp_path / "a.png", _picture())
    capsys.readouterr()
    assert cli.main(["fit", path, *flags, "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and named in err, err
    assert not (tmp_path / "out").exists()


def test_a_one_colour_picture_needs_no_shape(tmp_path):
    path = _save(tmp_path / "flat.png", np.full((H, W, 3), (0.2, 0.4, 0.6)))
    out = tmp_path / "out"
    assert cli.main(["fit", path, "--count", "3", "--out", str(out)]) == 0
    row = _summary(out)["flat.png"]
    assert row["status"] == "ok (one colour: no shape needed)" and row["count"] == "0", row
    svg = (out / "flat" / "shapes.svg").read_text()
    assert re.findall(r"<(\w+)", svg) == ["svg", "rect"], svg  # the background alone
    assert 'fill="#3366' in svg  # (0.2, 0.4, 0.6) = #336699


def test_an_interrupted_folder_keeps_the_pictures_it_finished(tmp_path, monkeypatch, capsys):
    _save(tmp_path / "in" / "a.png", _picture())
    _save(tmp_path / "in" / "b.png", _picture()[::-1].copy())
    real, calls = pictures.fit_picture, []

    def interrupted_on_the_second(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(pictures, "fit_picture", interrupted_on_the_second)
    out = tmp_path / "out"
    assert cli.main(["fit", str(tmp_path / "in"), "--count", "3", "--out", str(out)]) == 130
    assert "interrupted" in capsys.readouterr().err
    assert sorted(os.listdir(out / "a")) == ["input.png", "params.json", "preview.png", "shapes.svg"]
    assert not (out / "b").exists()
    assert list(_summary(out)) == ["a.png"] and _summary(out)["a.png"]["status"] == "ok"
    assert 'src="a/shapes.svg"' in (out / "index.html").read_text()
