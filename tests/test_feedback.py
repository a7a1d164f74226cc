"""Feedback steps (shapegrad.feedback): the layers' maths, finite gradients, the encoder, train(feedback=, init=)."""

import json

import keras
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from helpers import adversarial_array, assert_finite, check_gradients, jit_for_many_calls, to_numpy, value_and_grad
from shapegrad import Cones, Render
from shapegrad.learn.feedback import DrawGuess, MaskedMean, Nudge, build_feedback_encoder
from shapegrad.learn.models import build_encoder, build_spatial_encoder, fields_for

# disk (centre, radius), box (centre, half size, direction, corner): the kinds Nudge treats differently.
KINDS = [("position", 2), ("size", 1), ("position", 2), ("size", 2), ("direction", 2), ("angle", 1)]


def _nudge_input(seed=0, batch=3):
    rng = np.random.default_rng(seed)
    params = rng.uniform(0.05, 0.95, (batch, 10))
    d = rng.normal(size=(batch, 2))
    params[:, 7:9] = d / np.linalg.norm(d, axis=1, keepdims=True)
    return params.astype("float32"), rng.normal(size=(batch, 10)).astype("float32")


def test_nudge_moves_each_field_kind_within_its_range():
    params, delta = _nudge_input()
    layer = Nudge(KINDS, reach=0.1)
    same = to_numpy(layer([params, np.zeros_like(delta)]))
    np.testing.assert_allclose(same, params, atol=1e-6)  # zero correction: unchanged
    moved = to_numpy(layer([params, 50 * delta]))
    positions = [0, 1, 3, 4]
    assert (np.abs(moved[:, positions] - params[:, positions]) <= 0.1 + 1e-6).all()  # at most reach per step
    np.testing.assert_allclose(np.linalg.norm(moved[:, 7:9], axis=1), 1.0, atol=1e-5)
    fractions = [2, 5, 6, 9]
    assert ((moved[:, fractions] >= 0) & (moved[:, fractions] <= 1)).all()
    logit = np.log(params[:, fractions]) - np.log1p(-params[:, fractions])
    expected = 1 / (1 + np.exp(-(logit + delta[:, fractions])))
    np.testing.assert_allclose(to_numpy(layer([params, delta]))[:, fractions], expected, atol=1e-5)


def test_nudge_gradients_match_finite_differences_float64(float64):
    params, delta = _nudge_input(seed=1)
    layer = Nudge(KINDS, reach=0.2, dtype="float64")
    probe = keras.ops.convert_to_tensor(np.random.default_rng(2).normal(size=params.shape))
    check_gradients(jit_for_many_calls(lambda p, d: keras.ops.sum(layer([p, d]) * probe)), [params, delta], samples=16)


def test_nudge_at_fractions_0_and_1_stays_put_with_the_true_gradient_float64(float64):
    """A shape switched off (opacity exactly 0) stays off, and its gradient is exp(delta), not a clipped 0."""
    params, delta = _nudge_input(seed=3, batch=2)
    params[:, [2, 5, 6, 9]] = [[0.0, 1.0, 0.0, 1.0], [1.0, 0.0, 1.0, 0.0]]
    layer = Nudge(KINDS, dtype="float64")
    out = to_numpy(layer([params.astype("float64"), delta.astype("float64")]))
    np.testing.assert_array_equal(out[:, [2, 5, 6, 9]], params[:, [2, 5, 6, 9]])
    probe = keras.ops.convert_to_tensor(np.random.default_rng(5).normal(size=params.shape))
    check_gradients(jit_for_many_calls(lambda p, d: keras.ops.sum(layer([p, d]) * probe)), [params, delta], samples=20)
    _, (grad, _) = value_and_grad(lambda p, d: keras.ops.sum(layer([p, d])[:, 2]), params.astype("float64"),
                                  delta.astype("float64"))
    np.testing.assert_allclose(grad[0, 2], np.exp(delta[0, 2]), rtol=1e-6)  # d/dx sigmoid(logit x + d) at x = 0


@given(params=adversarial_array((2, 10)), delta=adversarial_array((2, 10)),
       layout=st.sampled_from(["free", "zero direction", "edges"]))
def test_property_nudge_finite_on_degenerate_inputs(params, delta, layout):
    params = np.array(params, copy=True)
    if layout == "zero direction":
        params[:, 7:9] = 0.0
        delta[:, 7:9] = 0.0
    elif layout == "edges":  # fractions exactly 0 and 1: a saturated sigmoid's output
        params[:, [2, 5, 6, 9]] = [0.0, 1.0, 1.0, 0.0]
    layer = Nudge(KINDS)
    value, (gp, gd) = value_and_grad(lambda p, d: keras.ops.sum(layer([p, d]) ** 2 * 1e-30), params, delta)
    out = to_numpy(layer([params, delta]))
    assert_finite(f"Nudge {layout}", out[:, [2, 5, 6, 9]], out[:, 7:9], gp, gd)
    np.testing.assert_allclose(np.linalg.norm(out[:, 7:9], axis=1), 1.0, atol=1e-5)


def test_masked_mean_matches_numpy_and_an_empty_mask_reads_zeros():
    rng = np.random.default_rng(3)
    features = rng.normal(size=(2, 4, 5, 3)).astype("float32")
    alphas = rng.uniform(0, 1, (2, 4, 5, 2)).astype("float32")
    alphas[1, :, :, 1] = 0.0  # shape 1 of image 1 shows nowhere
    out = to_numpy(MaskedMean()([features, alphas]))
    assert out.shape == (2, 2, 4)
    mass = alphas.sum(axis=(1, 2))
    expected = np.einsum("bhwk,bhwf->bkf", alphas, features) / (mass[..., None] + 0.01)
    np.testing.assert_allclose(out[..., :3], expected, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(out[..., 3], mass / 20, rtol=1e-6)
    np.testing.assert_array_equal(out[1, 1], 0.0)
    _, (gf, ga) = value_and_grad(lambda f, a: keras.ops.sum(MaskedMean()([f, a]) ** 2), features, alphas)
    assert_finite("MaskedMean gradient", gf, ga)


def test_masked_mean_gradients_match_finite_differences_float64(float64):
    rng = np.random.default_rng(4)
    features, alphas = rng.normal(size=(1, 3, 3, 2)), rng.uniform(0, 1, (1, 3, 3, 2))
    layer = MaskedMean(dtype="float64")
    check_gradients(jit_for_many_calls(lambda f, a: keras.ops.sum(layer([f, a]) ** 2)), [features, alphas], samples=12)


def test_draw_guess_shows_the_drawing_and_alphas_and_passes_no_gradient():
    render = Render("disk,box", 12, channels=3)
    params = render.spec.sample(2, seed=1)
    out = to_numpy(DrawGuess(render)(params))
    assert out.shape == (2, 12, 12, 5)
    np.testing.assert_allclose(out[..., :3], to_numpy(render(params)), atol=1e-6)
    np.testing.assert_allclose(out[..., 3:], np.transpose(to_numpy(render.alphas(params)[0]), (0, 2, 3, 1)), atol=1e-6)
    _, (grad,) = value_and_grad(lambda p: keras.ops.sum(DrawGuess(render)(p)), params)
    np.testing.assert_array_equal(grad, 0.0)
    with pytest.raises(ValueError, match="Received: renderer="):
        DrawGuess(Cones(12))


def _tiny(render, colors="solve"):
    keras.utils.set_random_seed(0)
    shape = (render.height, render.width, render.channels)
    return build_spatial_encoder(shape, render.spec, width=4, dense=8, colors=colors, renderer=render)


def test_feedback_encoder_checks_its_arguments():
    render = Render("disk,box", 16, channels=3)
    base = _tiny(render)
    with pytest.raises(ValueError, match="Received: renderer="):
        build_feedback_encoder(base, Cones(16))
    with pytest.raises(ValueError, match="Received: encoder with input shape"):
        build_feedback_encoder(build_encoder((16, 16, 3), fields_for(Render("disk", 16, channels=3).spec), width=4),
                               render)
    with pytest.raises(ValueError, match="Received: steps=0"):
        build_feedback_encoder(base, render, steps=0)
    with pytest.raises(ValueError, match="Received: encoder="):
        build_feedback_encoder("encoder.keras", render)
    one, three = (build_feedback_encoder(base, render, steps=n, width=4, dense=8) for n in (1, 3))
    assert len(one.weights) == len(three.weights)  # the steps share their weights


def test_feedback_encoder_learns_and_keeps_its_output_through_save_and_load(tmp_path):
    """A few steps on one batch lower the image loss; the saved model loads to the same output."""
    from shapegrad.learn.models import build_autoencoder

    render = Render("disk,box", 16, channels=3)
    base = _tiny(render)
    base.trainable = False
    encoder = build_feedback_encoder(base, render, steps=2, width=4, dense=8)
    images = to_numpy(render(render.spec.sample(8, seed=2)))
    model = build_autoencoder(encoder, render)
    model.compile(keras.optimizers.Adam(3e-3), loss="mse")
    frozen = [to_numpy(w) for w in base.weights]
    # One batch per epoch: each epoch's loss is the loss before that epoch's update (no layer acts differently
    # in training), so the first is the untrained model's and the last is after 4 updates. The loss falls at
    # every step (PyTorch 0.05224 -> 0.05124, TensorFlow 0.05212 -> 0.05163; float32 noise ~1e-7).
    losses = model.fit(images, images, epochs=5, batch_size=8, verbose=0).history["loss"]
    assert np.isfinite(losses).all() and losses[-1] < losses[0], losses
    for w, v in zip(base.weights, frozen):
        np.testing.assert_array_equal(to_numpy(w), v)  # the encoder stays as it was
    encoder.save(tmp_path / "feedback.keras")
    loaded = keras.saving.load_model(tmp_path / "feedback.keras")
    np.testing.assert_allclose(to_numpy(loaded(images)), to_numpy(encoder(images)), atol=1e-5)


@pytest.mark.slow
def test_train_with_feedback_starts_from_a_trained_encoder_and_freezes_it(tmp_path):
    from shapegrad.learn.train import train

    common = dict(shapes="disk,box", resolution=16, channels=3, steps=2, steps_per_epoch=2, batch_size=4,
                  test_size=4, width=4, refine_steps=0, architecture="spatial", colors="solve", verbose=0)
    train(str(tmp_path / "first"), **common)
    first = keras.saving.load_model(tmp_path / "first" / "encoder.keras")
    result = train(str(tmp_path / "second"), feedback=1, init=str(tmp_path / "first" / "encoder.keras"), **common)
    assert result["feedback"] == 1 and result["init"].endswith("encoder.keras")
    assert np.isfinite(result["iou"])
    second = keras.saving.load_model(tmp_path / "second" / "encoder.keras")
    inner = [layer for layer in second.layers if isinstance(layer, keras.Model)][0]
    assert len(first.weights) == len(inner.weights)
    for a, b in zip(first.weights, inner.weights):  # the init encoder was frozen
        np.testing.assert_array_equal(to_numpy(a), to_numpy(b))
    deltas = [w for w in second.weights if "delta" in w.path and w.path.endswith("kernel")]
    assert deltas and all(np.abs(to_numpy(w)).max() > 0 for w in deltas)  # the steps learnt (they start at 0)
    assert json.loads((tmp_path / "second" / "metrics.json").read_text())["feedback"] == 1
    with pytest.raises(ValueError, match="Received: init="):
        train(str(tmp_path / "third"), feedback=1, init=str(tmp_path / "nothing.keras"), **common)
    with pytest.raises(ValueError, match="Received: init with input shape"):
        train(str(tmp_path / "third"), init=str(tmp_path / "first" / "encoder.keras"),
              **dict(common, shapes="disk"))
    with pytest.raises(ValueError, match="Received: feedback=-1"):
        train(str(tmp_path / "third"), feedback=-1, **common)
    with pytest.raises(ValueError, match="Expected a Render decoder with feedback"):
        train(str(tmp_path / "third"), feedback=1, **dict(common, shapes="cone", architecture="cnn", colors="head",
                                                          channels=1))


def test_init_of_the_users_images_must_encode_images_like_them(tmp_path):
    """An encoder of one folder's images (its metadata: shapes, background...) cannot start training on another's."""
    from PIL import Image

    from shapegrad.learn import encode
    from shapegrad.learn.train import ImageTask, load_init

    for name, value in (("black", 0), ("white", 255)):
        (tmp_path / name).mkdir()
        for k in range(2):
            pixels = np.full((16, 16, 3), value, np.uint8)
            pixels[4:9, 4 + k : 9 + k] = 128
            Image.fromarray(pixels).save(tmp_path / name / f"{k}.png")
    black = ImageTask(str(tmp_path / "black"), shapes="disk,box", resolution=16)
    white = ImageTask(str(tmp_path / "white"), shapes="disk,box", resolution=16)
    model = black.build_encoder(4, "cnn")
    kept = load_init(model, black)
    assert kept is not model and encode.find_info(kept) == encode.find_info(model)  # a copy, its metadata
    with pytest.raises(ValueError, match="background"):
        load_init(model, white)
    with pytest.raises(ValueError, match="Received: --init with"):
        load_init(model, ImageTask(str(tmp_path / "black"), shapes="box,disk", resolution=16), name="--init")
