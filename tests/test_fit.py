"""Per-image fitting with known shapes, test-time refinement on the engine, the render command, parameter files
and SVG."""

import json
import xml.etree.ElementTree as ET

import numpy as np
import pytest
from PIL import Image
from skimage.draw import disk, polygon

from helpers import BACKEND, to_numpy
from shapegrad.io import files
from shapegrad.cli import main
from shapegrad.fit import LayerEngine, fit_files, refine, refine_best, refine_scene, residual_starts, swap_starts
from shapegrad.learn import metrics
from shapegrad.render.cones import Cones
from shapegrad.render.primitives import fields_for
from shapegrad.render.render import Render
from shapegrad.render.slots import SlotRender


def _drawing(path):
    """Two disks and a box drawn by scikit-image (an independent, hard-edged rasterizer)."""
    image = np.zeros((48, 48), np.uint8)
    rr, cc = disk((14, 15), 8, shape=image.shape)
    image[rr, cc] = 255
    rr, cc = disk((33, 30), 6, shape=image.shape)
    image[rr, cc] = 180
    rr, cc = polygon([20, 20, 40, 40], [34, 44, 44, 34], shape=image.shape)
    image[rr, cc] = 220
    Image.fromarray(image).save(path)
    # centre (row, col), radius in pixels; box centre and half extents
    return {"disks": [((14, 15), 8), ((33, 30), 6)], "box": ((30, 39), (10, 5))}


@pytest.mark.slow  # a whole search with known shapes: ~20 s compiled, longer in PyTorch's eager mode
def test_fit_recovers_shapes_drawn_by_an_independent_rasterizer(tmp_path):
    truth = _drawing(tmp_path / "drawing.png")
    result = fit_files(str(tmp_path / "drawing.png"), str(tmp_path / "out"), shapes="disk*2,box", progress=False)
    assert result["done"] == 1 and not result["skipped"]
    renderer, params = files.load_params(str(tmp_path / "out" / "drawing" / "params.json"))
    shapes = renderer.spec.to_natural(params)
    order = [kind for kind, count in renderer.shapes for _ in range(count)]  # the search's depth order
    disks = sorted((tuple(s["center"][0]), float(s["radius"][0, 0])) for s, k in zip(shapes, order) if k == "disk")
    for (center, radius), (true_center, true_radius) in zip(disks, sorted(truth["disks"])):
        assert np.linalg.norm(np.subtract(center, true_center)) < 0.5
        # skimage's disk(r) holds the pixels with distance < r: its edge is about 0.2 px inside r.
        assert abs(radius - true_radius) < 0.5
    (box,) = [s for s, k in zip(shapes, order) if k == "box"]
    assert np.linalg.norm(box["center"][0] - truth["box"][0]) < 0.5
    assert sorted(box["half_size"][0]) == pytest.approx(sorted(truth["box"][1]), abs=0.75)
    saved = json.load(open(tmp_path / "out" / "drawing" / "params.json"))
    assert saved["psnr_db"] > 20 and len(saved["params"][0]) == renderer.spec.size
    assert (tmp_path / "out" / "drawing" / "overlay.png").stat().st_size > 0
    svg = ET.parse(tmp_path / "out" / "drawing" / "shapes.svg").getroot()
    tags = [el.tag.split("}")[1] for el in svg]
    assert tags == ["rect"] + ["circle" if k == "disk" else "rect" for k in order]  # the background, then the shapes


def test_render_command_round_trip(tmp_path, capsys):
    renderer = Render("disk,triangle,cone", 24, channels=3, background=[0.1, 0.2, 0.3])
    params = renderer.spec.sample(2, seed=3)
    files.save_params(str(tmp_path / "p.json"), renderer, params)
    assert main(["render", str(tmp_path / "p.json"), "--out", str(tmp_path / "img.png")]) == 0
    png = np.asarray(Image.open(tmp_path / "img.png"), np.float64) / 255
    expected = np.concatenate(list(to_numpy(renderer(params))), axis=1)
    assert png.shape == (24, 48, 3)
    np.testing.assert_allclose(png, expected, atol=0.5 / 255 + 1e-6)
    # the SVG of a row has one element per shape after the background
    svg = ET.fromstring(files.to_svg(renderer, params[0]))
    assert [el.tag.split("}")[1] for el in svg] == ["rect", "circle", "polygon", "polygon"]
    # an existing output is not overwritten without --force
    assert main(["render", str(tmp_path / "p.json"), "--out", str(tmp_path / "img.png")]) == 2
    assert "--force" in capsys.readouterr().err


@pytest.mark.parametrize(
    "content, message",
    [
        (None, "no such parameter file"),
        ("{not json", "cannot read"),
        ('{"shapes": "disk", "resolution": 8}', "missing key 'params'"),
        ('{"shapes": "dsk", "resolution": 8, "params": [[0, 0, 0, 0, 0]]}', "Received: shapes='dsk'"),
        ('{"shapes": "disk", "resolution": 8, "params": [[0.5, 0.5, NaN, 1, 1]]}', "NaN"),
        ('{"shapes": "disk", "resolution": 8, "params": [[0.5, 0.5]]}', "take 5 numbers per row. Received: 2"),
        ('{"shapes": "disk", "resolution": -8, "params": [[0.5, 0.5, 0.2, 1, 1]]}', "Received: resolution=-8"),
    ],
)
def test_render_command_bad_input(tmp_path, capsys, content, message):
    path = tmp_path / "p.json"
    if content is not None:
        path.write_text(content)
    assert main(["render", str(path), "--out", str(tmp_path / "x.png")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0], err
    assert not (tmp_path / "x.png").exists()


def test_fit_command_bad_input(tmp_path, capsys):
    """Bad arguments end in one line and exit 2 before any work (the many-image cases: tests/test_fit_cli.py)."""
    out = tmp_path / "out"
    assert main(["fit", str(tmp_path / "missing.png"), "--shapes", "disk", "--out", str(out)]) == 2
    assert "no such file or folder" in capsys.readouterr().err
    (tmp_path / "junk.png").write_bytes(b"not an image")
    assert main(["fit", str(tmp_path / "junk.png"), "--shapes", "disk", "--out", str(out)]) == 2
    assert "no image to fit" in capsys.readouterr().err
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(tmp_path / "ok.png")
    assert main(["fit", str(tmp_path / "ok.png"), "--shapes", "disk*x", "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "disk*x" in err[0], err
    assert not out.exists()


def test_read_image_keeps_16_bit_depth(tmp_path):
    ramp = (np.arange(64, dtype=np.uint16) * 1024).reshape(8, 8)
    Image.fromarray(ramp).save(tmp_path / "deep.png")
    image = files.read_image(str(tmp_path / "deep.png"))
    assert image.shape == (8, 8, 1)
    np.testing.assert_allclose(image[..., 0], ramp / 65535.0, atol=1e-6)
    rgba = np.zeros((4, 4, 4), np.uint8)
    rgba[..., 0] = 255
    rgba[..., 3] = 128
    Image.fromarray(rgba).save(tmp_path / "rgba.png")
    image = files.read_image(str(tmp_path / "rgba.png"))
    assert image.shape == (4, 4, 3) and image[..., 0].min() == 1.0  # alpha dropped


def _disk_and_box(channels=3, batch=2, seed=4):
    """A disk at (0.3, 0.3) and a box at (0.7, 0.7), random sizes and colours: ``(layer, truth)``."""
    layer = Render("disk,box", 24, channels=channels)
    spec = layer.spec
    truth = spec.sample(batch, seed=seed)
    truth[:, spec.get(0, "center").slice] = [0.3, 0.3]
    truth[:, spec.get(1, "center").slice] = [0.7, 0.7]
    return layer, truth


def _mse(layer, params, images):
    return ((to_numpy(layer(params)) - images) ** 2).mean(axis=(1, 2, 3))


@pytest.mark.slow  # an optimisation's outcome, the same on every backend; ~25 s on JAX
def test_swap_starts_trade_places_and_refine_best_undoes_a_swap():
    layer, truth = _disk_and_box()
    spec = layer.spec
    # The guess swaps the places and colours of the disk and the box...
    swapped = truth.copy()
    for name in ("center", "color", "opacity"):
        swapped[:, spec.get(0, name).slice] = truth[:, spec.get(1, name).slice]
        swapped[:, spec.get(1, name).slice] = truth[:, spec.get(0, name).slice]
    starts = swap_starts(spec, swapped)
    assert starts.shape == (2, 2, spec.size)
    np.testing.assert_array_equal(starts[:, 0], swapped)
    np.testing.assert_allclose(starts[:, 1], truth, atol=1e-6)  # swapping back restores the truth
    # ...and is off besides: places by 1.5 px, sizes by 20-25 %, a colour, so that no start is the truth.
    guess = swapped.copy()
    guess[:, spec.get(0, "center").slice] += 1.5 / 24
    guess[:, spec.get(1, "center").slice] -= 1.5 / 24
    guess[:, spec.get(0, "radius").slice] *= 1.25
    guess[:, spec.get(1, "half_size").slice] *= 0.8
    guess[:, spec.get(0, "color").slice] = np.clip(guess[:, spec.get(0, "color").slice] + 0.15, 0, 1)
    starts = swap_starts(spec, guess)
    assert np.abs(starts[:, 1] - truth).max() > 0.1
    images = to_numpy(layer(truth))
    fields = fields_for(spec)
    # Plain refine cannot move the disk through the box: it stays in the box's place.
    plain = refine(layer, fields, guess, images, steps=60)
    assert np.abs(plain[:, spec.get(0, "center").slice] - 0.7).max() < 0.1
    plain_loss = _mse(layer, plain, images)
    best, loss = refine_best(layer, fields, starts, images, steps=60)
    assert loss.shape == (2,) and loss.max() < 1e-3 and (loss < plain_loss / 10).all(), (loss, plain_loss)
    np.testing.assert_allclose(loss, _mse(layer, best, images), rtol=1e-4, atol=1e-7)
    assert np.abs(best[:, spec.get(0, "center").slice] - 0.3).max() < 0.02
    assert np.abs(best[:, spec.get(1, "center").slice] - 0.7).max() < 0.02


@pytest.mark.slow  # an optimisation's outcome, the same on every backend; ~25 s on JAX
def test_refine_scene_raises_iou_when_the_first_guess_is_wrong():
    layer, truth = _disk_and_box(batch=1, seed=7)
    spec = layer.spec
    # Bright, opaque shapes on black, so that the IoU masks (> 0.5 from the background) hold them
    # whole; a large disk and a thin box, so that shapes in each other's places change the masks.
    truth[:, spec.get(0, "color").slice] = [1.0, 0.3, 0.2]
    truth[:, spec.get(1, "color").slice] = [0.2, 0.9, 1.0]
    truth[:, spec.get(0, "opacity").slice] = 1.0
    truth[:, spec.get(1, "opacity").slice] = 1.0
    truth[:, spec.get(0, "radius").slice] = 0.18
    truth[:, spec.get(1, "half_size").slice] = [0.15, 0.05]
    images = to_numpy(layer(truth))
    # The first guess has the disk and the box in each other's places, 1.5 px off, the disk too small.
    guess = truth.copy()
    for name in ("center", "color"):
        guess[:, spec.get(0, name).slice] = truth[:, spec.get(1, name).slice]
        guess[:, spec.get(1, name).slice] = truth[:, spec.get(0, name).slice]
    guess[:, spec.get(0, "center").slice] += 1.5 / 24
    guess[:, spec.get(1, "center").slice] -= 1.5 / 24
    guess[:, spec.get(0, "radius").slice] *= 0.8
    before = metrics.iou(to_numpy(layer(guess)), images)[0]
    assert before < 0.5
    fitted = refine_scene(layer, fields_for(spec), guess, images, steps=60, rounds=1)
    after = metrics.iou(to_numpy(layer(fitted)), images)[0]
    assert after > 0.95, (before, after)
    assert np.abs(fitted[0, spec.get(0, "center").slice] - 0.3).max() < 0.02
    assert np.abs(fitted[0, spec.get(1, "center").slice] - 0.7).max() < 0.02


def test_residual_starts_move_a_shape_onto_what_is_missed():
    layer = Render("disk,box", 24, channels=1)
    spec = layer.spec
    truth = spec.sample(1, seed=5)
    truth[:, spec.get(0, "center").slice] = [0.25, 0.25]
    truth[:, spec.get(1, "center").slice] = [0.75, 0.75]
    truth[:, spec.get(1, "half_size").slice] = [0.1, 0.1]
    guess = truth.copy()
    guess[:, spec.get(1, "center").slice] = [0.25, 0.25]  # both shapes on the disk, none on the box
    starts = residual_starts(layer, guess, to_numpy(layer(truth)))
    assert starts.shape == (1, 3, spec.size)
    np.testing.assert_array_equal(starts[:, 0], guess)
    moved = starts[0, 2, spec.get(1, "center").slice]
    assert np.abs(moved - 0.75).max() < 0.1  # the box slot lands on the missed box


# --------------------------------------------------------------------------- the engine under refine


def test_layer_engine_loss_is_each_items_mse_and_chunks_change_nothing():
    """The loss and image returned are the refined parameters' own (drawn again here); items are independent,
    so a batch run in chunks of 2 ends where the whole batch does; one trace per batch size."""
    layer = Cones(16)
    rng = np.random.default_rng(0)
    axes = rng.normal(size=(3, 2))
    truth = np.concatenate([rng.uniform(0.3, 0.7, (3, 2)), axes / np.linalg.norm(axes, axis=1, keepdims=True),
                            rng.uniform(0.1, 0.3, (3, 1))], 1).astype("float32")
    images = to_numpy(layer(truth))
    guess = truth + rng.normal(0, 0.03, truth.shape).astype("float32")
    guess[:, 2:4] /= np.linalg.norm(guess[:, 2:4], axis=1, keepdims=True)  # the head's directions are unit vectors
    whole = LayerEngine(layer)
    params, loss, drawn = whole.fit(guess, images, steps=5)
    assert params.shape == guess.shape and params.dtype == np.float32 and loss.shape == (3,)
    np.testing.assert_allclose(drawn, to_numpy(layer(params)), atol=1e-5)
    np.testing.assert_allclose(loss, ((to_numpy(layer(params)) - images) ** 2).mean(axis=(1, 2, 3)), rtol=1e-4, atol=1e-8)
    chunked = LayerEngine(layer, batch=2)
    again, again_loss, _ = chunked.fit(guess, images, steps=5)
    np.testing.assert_allclose(again, params, atol=1e-5)
    np.testing.assert_allclose(again_loss, loss, rtol=1e-3, atol=1e-8)
    whole.fit(guess[::-1], images[::-1], steps=3)  # same batch size, other steps: no new trace
    if BACKEND != "torch":
        assert whole.traces == 1 and chunked.traces == 2  # chunks of 2 and 1
    start, start_loss, _ = whole.fit(guess, images, steps=0)  # only draws
    np.testing.assert_allclose(start, guess, atol=1e-5)
    np.testing.assert_allclose(start_loss, ((to_numpy(layer(guess)) - images) ** 2).mean(axis=(1, 2, 3)), rtol=1e-3)


def test_layer_engine_refines_a_slot_decoders_parameters():
    """SlotRender's flat vector (background, presences, kind logits, geometry) has its own fields: the engine
    reads them from the layer and lowers the image error."""
    layer = SlotRender("disk,box", slots=2, resolution=12, channels=3)
    rng = np.random.default_rng(1)
    truth = rng.uniform(0.2, 0.8, (2, layer.size)).astype("float32")
    images = to_numpy(layer(truth))
    guess = np.clip(truth + rng.normal(0, 0.05, truth.shape), 0.01, 0.99).astype("float32")
    engine = LayerEngine(layer)
    assert engine.fields == layer.fields()
    _, before, _ = engine.fit(guess, images, steps=0)
    _, after, _ = engine.fit(guess, images, steps=30, learning_rate=0.05)
    assert (after < before).all(), (before, after)


def test_layer_engine_and_refine_bad_arguments():
    layer = Cones(8)
    params = np.full((2, 5), 0.5, "float32")
    images = np.zeros((2, 8, 8, 1), "float32")
    for call, received in (
        (lambda: LayerEngine("cones"), "Received: renderer='cones'"),
        (lambda: LayerEngine(layer, batch=0), "Received: batch=0"),
        (lambda: LayerEngine(layer).fit(params, images[:1]), "Received: images.shape=(1, 8, 8, 1)"),
        (lambda: LayerEngine(layer).fit(params[:, :4], images), "Received: params.shape=(2, 4)"),
        (lambda: LayerEngine(layer).fit(params, images, steps=-1), "Received: steps=-1"),
        (lambda: LayerEngine(layer).fit(params, images, sharpness=(0.0, 1.0)), "Received: sharpness=(0.0, 1.0)"),
        (lambda: LayerEngine(layer).fit(params, images, anneal=2), "Received: anneal=2"),
        (lambda: refine(layer, fields_for(layer.spec), params, images, start_sharpness=0), "Received: start_sharpness=0"),
        (lambda: refine(layer, fields_for(layer.spec), params, images, engine=LayerEngine(Cones(8))), "Received: engine="),
        (lambda: refine_best(layer, fields_for(layer.spec), params, images), "Received: starts.shape=(2, 5)"),
    ):
        with pytest.raises(ValueError, match=received.replace("(", "\\(").replace(")", "\\)")):
            call()
