"""The guide loss (shapegrad.guide): blind to each shape's symmetries, zero at the truth, smooth, finite; train(guide=)."""

import itertools
import json

import keras
import numpy as np
import pytest
from hypothesis import given, settings

from helpers import assert_finite, check_gradients, jit_for_many_calls, to_numpy, value_and_grad
from helpers import adversarial_array
from shapegrad.cli import main
from shapegrad.learn.guide import MAX_PERMUTED, GuideLoss, GuideWeight, guide_loss
from shapegrad.render.primitives import RenderSpec
from shapegrad.learn.train import train

SCENE = RenderSpec("disk,box,triangle", 64, channels=3)
# Offsets in SCENE: disk 0-6; box centre 7-8, half sizes 9-10, direction 11-12, corner 13, colour, opacity; triangle 18-23.
BOX, TRIANGLE = 7, 18


def loss(spec, pred, true):
    return to_numpy(guide_loss(spec, np.asarray(pred, "float32"), np.asarray(true, "float32")))


def triangle_orders():
    """The 6 readings of a triangle's vertex list (index lists into the 6 numbers)."""
    for order in itertools.permutations(range(3)):
        yield [2 * v + c for v in order for c in (0, 1)]


def test_zero_at_the_truth_and_invariant_under_every_reading_of_each_shape():
    true = SCENE.sample(16, seed=3)
    np.testing.assert_array_equal(loss(SCENE, true, true), 0.0)
    other = SCENE.sample(16, seed=4)
    base = loss(SCENE, other, true)
    assert (base > 1e-3).all()
    for order in triangle_orders():  # every vertex order, both orientations
        read = true.copy()
        read[:, TRIANGLE : TRIANGLE + 6] = true[:, TRIANGLE : TRIANGLE + 6][:, order]
        np.testing.assert_allclose(loss(SCENE, read, true), 0.0, atol=1e-6)
        np.testing.assert_allclose(loss(SCENE, other, read), base, atol=1e-6)
    h0, h1, d0, d1 = (true[:, BOX + k] for k in (2, 3, 4, 5))
    box_readings = [
        (h1, h0, -d1, d0),  # axes swapped, turned +90 degrees
        (h1, h0, d1, -d0),  # axes swapped, turned -90 degrees
        (h0, h1, -d0, -d1),  # direction reversed
        (h0, h1, 3 * d0, 3 * d1),  # a longer direction vector: the same axis
    ]
    for sizes_and_direction in box_readings:
        read = true.copy()
        read[:, BOX + 2 : BOX + 6] = np.stack(sizes_and_direction, axis=-1)
        np.testing.assert_allclose(loss(SCENE, read, true), 0.0, atol=1e-6)
        np.testing.assert_allclose(loss(SCENE, other, read), base, atol=1e-6)
    # A plain parameter MSE is not blind to them: the first reading of each kind differs there.
    read = true.copy()
    read[:, TRIANGLE : TRIANGLE + 6] = np.roll(true[:, TRIANGLE : TRIANGLE + 6], 2, axis=1)  # vertices 2, 0, 1
    assert np.mean((read - true) ** 2) > 1e-3


def test_copies_of_a_kind_are_matched_by_the_cheapest_permutation():
    spec = RenderSpec("disk*3,box", 32, channels=1)
    true = spec.sample(8, seed=0)
    size = 5  # a disk: centre 2, radius 1, colour 1, opacity 1
    for perm in itertools.permutations(range(3)):
        read = true.copy()
        for i, j in enumerate(perm):
            read[:, i * size : (i + 1) * size] = true[:, j * size : (j + 1) * size]
        np.testing.assert_allclose(loss(spec, read, true), 0.0, atol=1e-6)
    # Against an independent computation: the per-shape costs of the disks (centre, radius, colour x opacity,
    # opacity) and the cheapest permutation, plus the box's cost, over the 4 shapes.
    pred = spec.sample(8, seed=1)
    disks_p, disks_t = pred[:, :15].reshape(8, 3, 5).copy(), true[:, :15].reshape(8, 3, 5).copy()
    disks_p[..., 3] *= disks_p[..., 4]
    disks_t[..., 3] *= disks_t[..., 4]
    cost = ((disks_p[:, :, None] - disks_t[:, None]) ** 2).sum(-1)
    best = np.min([sum(cost[:, i, p[i]] for i in range(3)) for p in itertools.permutations(range(3))], axis=0)
    box_only = RenderSpec("box", 32, channels=1)
    expected = (best + loss(box_only, pred[:, 15:], true[:, 15:])) / 4
    np.testing.assert_allclose(loss(spec, pred, true), expected, rtol=1e-5)


def test_box_and_ellipse_compare_the_shape_not_the_reading():
    # Independent: a box is the symmetric matrix a u u^T + b v v^T; the loss's axis terms are half its
    # squared Frobenius distance.
    spec = RenderSpec("ellipse", 16, channels=1, appearance=False)
    rng = np.random.default_rng(0)
    p, t = rng.uniform(0.1, 0.9, (2, 10, 6))

    def matrix(x):
        u = x[:, 4:6] / np.linalg.norm(x[:, 4:6], axis=1, keepdims=True)
        v = np.stack([-u[:, 1], u[:, 0]], 1)
        return x[:, 2, None, None] * u[:, :, None] * u[:, None] + x[:, 3, None, None] * v[:, :, None] * v[:, None]

    expected = ((p[:, :2] - t[:, :2]) ** 2).sum(1) + ((matrix(p) - matrix(t)) ** 2).sum((1, 2)) / 2
    np.testing.assert_allclose(loss(spec, p, t), expected, rtol=1e-5)


def test_gradient_matches_finite_differences_away_from_kinks(float64):
    true = SCENE.sample(3, seed=5).astype("float64")
    pred = SCENE.sample(3, seed=6).astype("float64")
    pred[:, BOX + 2 : BOX + 4] = [[0.1, 0.2], [0.22, 0.08], [0.15, 0.05]]  # half sizes apart: no kink at a = b
    check_gradients(lambda p, t: keras.ops.sum(guide_loss(SCENE, p, t)), [pred, true], samples=28)
    spec = RenderSpec("segment*2,cone", 32, channels=1)
    check_gradients(lambda p, t: keras.ops.sum(guide_loss(spec, p, t)),
                    [spec.sample(2, seed=1).astype("float64"), spec.sample(2, seed=2).astype("float64")], samples=20)


def test_gradients_are_finite_at_degenerate_shapes():
    true = SCENE.sample(4, seed=7)
    pred = true.copy()
    pred[0, :3] = 0.0  # a disk of radius 0 at the corner
    pred[1, BOX + 2 : BOX + 4] = 0.0  # a box of zero size
    pred[1, BOX + 4 : BOX + 6] = 0.0  # and no direction
    pred[2, TRIANGLE : TRIANGLE + 6] = 0.4  # three coincident vertices
    pred[3] = 0.0  # everything zero
    for t in (true, pred, np.zeros_like(true)):  # the truth degenerate too; and the pred at the truth (ties)
        for p in (pred, t):
            value, grads = value_and_grad(lambda a, b: keras.ops.sum(guide_loss(SCENE, a, b)), p, t)
            assert_finite("guide loss and gradients", value, *grads)
    # At the truth every term is at its minimum: the gradient is 0.
    _, (g, _) = value_and_grad(lambda a, b: keras.ops.sum(guide_loss(SCENE, a, b)), true, true)
    np.testing.assert_allclose(g, 0.0, atol=1e-7)


_JITTED = []


@settings(deadline=None)
@given(adversarial_array((2, SCENE.size)), adversarial_array((2, SCENE.size)))
def test_finite_value_and_gradient_for_any_input(pred, true):
    # Compiled once (eager JAX took ~9 s per example); the example count follows the profile.
    if not _JITTED:
        _JITTED.append(jit_for_many_calls(lambda a, b: keras.ops.sum(guide_loss(SCENE, a, b))))
    value, grads = value_and_grad(_JITTED[0], pred, true)
    assert_finite("guide loss and gradients", value, *grads)


def test_tiny_direction_with_a_large_size_has_finite_gradients():
    """Found by the hunt above: a box direction of 1e-30 with a half-size of 1.4e8 overflowed (-inf)."""
    pred = np.zeros((1, SCENE.size), "float32")
    true = np.full((1, SCENE.size), 1e-30, "float32")
    true[0, BOX + 2] = 1.3876013e08
    value, grads = value_and_grad(lambda a, b: keras.ops.sum(guide_loss(SCENE, a, b)), pred, true)
    assert_finite("guide loss and gradients", value, *grads)


def test_bad_arguments():
    with pytest.raises(ValueError, match="Received: shapes=.*disk"):
        guide_loss(RenderSpec(f"disk*{MAX_PERMUTED + 1}", 16), np.zeros((1, 30)), np.zeros((1, 30)))
    with pytest.raises(ValueError, match="Received: spec="):
        guide_loss("disk", np.zeros((1, 5)), np.zeros((1, 5)))
    with pytest.raises(ValueError, match="Received: weight=-1"):
        GuideWeight(-1)


def test_weight_falls_to_zero_over_the_ramp_and_carries_no_gradient():
    layer = GuideWeight(2.0, ramp_steps=4)
    params = np.full((3, 5), 0.5, "float32")
    weights = [float(to_numpy(layer(params, training=True))[0, -1]) for _ in range(6)]
    np.testing.assert_allclose(weights, [2.0, 1.5, 1.0, 0.5, 0.0, 0.0], atol=1e-6)
    out = to_numpy(layer(params))
    np.testing.assert_array_equal(out[:, :5], params)
    assert (out[:, -1] == 0).all()  # inference: no guide
    spec = RenderSpec("disk", 16, channels=1)
    true = spec.sample(3, seed=0)
    loss_fn = GuideLoss(spec)
    y = np.concatenate([spec.sample(3, seed=1), np.full((3, 1), 0.5, "float32")], axis=1)
    np.testing.assert_allclose(to_numpy(loss_fn(true, y)), 0.5 * loss(spec, y[:, :-1], true).mean(), rtol=1e-6)


@pytest.mark.slow  # ~10 s: compiles the two-output model (the spatial encoder, the guide)
def test_train_with_guide_writes_a_run(tmp_path):
    m = train(str(tmp_path), shapes="disk,box,triangle", channels=3, resolution=16, steps=4, steps_per_epoch=2,
              batch_size=8, test_size=8, refine_steps=0, width=4, verbose=0, guide=1.0, loss="pyramid",
              architecture="spatial")
    assert m["guide"] == 1.0 and m["guide_decay"] == 0.5 and m["steps"] == 4 and m["architecture"] == "spatial"
    assert all(np.isfinite(m["train_loss"])) and 0 <= m["iou"] <= 1
    saved = json.loads((tmp_path / "metrics.json").read_text())
    assert saved["guide"] == 1.0
    # the saved encoder is the encoder alone: images in, parameters out
    encoder = keras.saving.load_model(str(tmp_path / "encoder.keras"))
    assert encoder.output_shape == (None, RenderSpec("disk,box,triangle", 16, channels=3).size)


def test_train_guide_refuses_what_it_cannot_guide(tmp_path):
    with pytest.raises(ValueError, match="Received: shapes='cone', guide=1"):
        train(str(tmp_path / "a"), shapes="cone", resolution=16, guide=1)
    with pytest.raises(ValueError, match="supervised=True.*Received: guide=1"):
        train(str(tmp_path / "b"), shapes="disk", resolution=16, guide=1, supervised=True)
    with pytest.raises(ValueError, match="Received: guide=-2"):
        train(str(tmp_path / "c"), shapes="disk", resolution=16, guide=-2)
    with pytest.raises(ValueError, match="Received: guide_decay=2"):
        train(str(tmp_path / "d"), shapes="disk", resolution=16, guide=1, guide_decay=2)
    with pytest.raises(ValueError, match="Received: architecture='unet'"):
        train(str(tmp_path / "e"), shapes="disk", resolution=16, architecture="unet")


def test_cli_guide_errors_are_one_line_and_status_2(tmp_path, capsys):
    folder = tmp_path / "images"
    folder.mkdir()
    for args in (
        ["--shapes", "disk,box", "--guide", "0"],
        ["--guide", "1"],  # the cone
        ["--shapes", "disk", "--guide", "1", "--supervised"],
        ["--shapes", "disk", "--guide-decay", "0.5"],
        ["--shapes", "disk", "--guide", "1", "--guide-decay", "1.5"],
        ["--images", str(folder), "--kinds", "disk", "--max-shapes", "2", "--guide", "1"],
    ):
        assert main(["train", *args, "--out", str(tmp_path / "run")]) == 2
        err = capsys.readouterr().err.strip()
        assert err.count("\n") == 0 and "guide" in err, err
