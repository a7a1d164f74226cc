"""Model pieces: a saved encoder and encoder-decoder load in a fresh process after only `import shapegrad`."""

import os
import subprocess
import sys
import textwrap

import keras
import numpy as np

from helpers import jit_for_many_calls, to_numpy
import pytest

from shapegrad import Cones, Render, SlotRender
from shapegrad.learn.models import (
    AnchoredHead,
    Annealed,
    ColorSolve,
    SpatialReadout,
    build_autoencoder,
    build_encoder,
    build_spatial_encoder,
    fields_for,
)


# Once: registration on import is Python, the same on every backend (save and load on each backend:
# test_feedback, test_layers, test_render).
@pytest.mark.once
def test_saved_models_load_after_a_plain_import(tmp_path):
    x = np.random.default_rng(0).uniform(0, 1, (2, 16, 16, 1)).astype("float32")
    expected = {}
    slots = SlotRender("disk,box", 2, 16, channels=1, presence_prior=0.01)
    renderers = (("cones", Cones(16)), ("scene", Render("disk,box", 16)), ("slots", slots),
                 ("spatial", Render("disk,triangle", 16)), ("solve", Render("disk,triangle", 16, background=0.1)),
                 ("feedback", Render("disk,box", 16)))
    for name, renderer in renderers:
        keras.utils.set_random_seed(0)
        fields = renderer.fields() if name == "slots" else fields_for(renderer.spec)
        if name == "spatial":
            encoder = build_spatial_encoder((16, 16, 1), renderer.spec, width=4, dense=8)
        elif name == "solve":  # colours solved from the image: a ColorSolve inside the saved encoder
            encoder = build_spatial_encoder((16, 16, 1), renderer.spec, width=4, dense=8, colors="solve",
                                            renderer=renderer)
        elif name == "feedback":  # shapegrad.feedback's layers around a nested encoder
            from shapegrad.learn.feedback import build_feedback_encoder

            encoder = build_feedback_encoder(build_encoder((16, 16, 1), fields, width=4), renderer, steps=1, width=4,
                                             dense=8)
        else:
            encoder = build_encoder((16, 16, 1), fields, width=4)
        model = build_autoencoder(encoder, Annealed(renderer, start=0.5, ramp_steps=4, name="renderer"))
        encoder.save(tmp_path / f"{name}_encoder.keras")
        model.save(tmp_path / f"{name}_autoencoder.keras")
        expected[f"{name}_encoder"] = to_numpy(encoder(x))
        expected[f"{name}_autoencoder"] = to_numpy(model(x))
    np.save(tmp_path / "x.npy", x)
    np.savez(tmp_path / "expected.npz", **expected)
    script = textwrap.dedent(
        """
        import sys
        import numpy as np
        import keras
        import shapegrad  # the only import of ours: it must register every saved class

        folder = sys.argv[1]
        x = np.load(folder + "/x.npy")
        expected = np.load(folder + "/expected.npz")
        for name in expected.files:
            model = keras.saving.load_model(f"{folder}/{name}.keras")
            got = keras.ops.convert_to_numpy(model(x))
            np.testing.assert_allclose(got, expected[name], atol=1e-5)
            print("loaded", name)
        """
    )
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [os.getcwd(), env.get("PYTHONPATH")]))
    done = subprocess.run(
        [sys.executable, "-c", script, str(tmp_path)], capture_output=True, text=True, env=env, timeout=300
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.count("loaded") == 12


def test_moved_names_stay_importable_under_their_saved_names():
    from shapegrad import fit
    from shapegrad.learn import models, train

    assert fit.Annealed is models.Annealed and train.pyramid_mse is models.pyramid_mse
    assert keras.saving.get_registered_name(Annealed) == "shapegrad>Annealed"
    assert keras.saving.get_registered_name(Cones) == "shapegrad>Cones"
    assert keras.saving.get_registered_name(Render) == "shapegrad>Render"


# --------------------------------------------------------------------------- the slot decoder


def _slot_row(layer, slots):
    """A ``(1, size)`` input: background, then per slot ``(presence, kind index, {kind: geometry}, colour)``."""
    row = [np.float32([0.1] * layer.channels)]
    for presence, kind, geometry, color in slots:
        logits = np.full(len(layer.kinds), -30.0, np.float32)
        logits[layer.kinds.index(kind)] = 30.0
        row += [np.float32([presence]), logits]
        for k in layer.kinds:
            row.append(np.float32(geometry[k]))
        row.append(np.float32(color))
    return np.concatenate(row)[None]


def test_slot_render_with_sure_kinds_draws_what_render_draws():
    layer = SlotRender("disk,box", 2, 20, channels=3)
    geometry = {"disk": [0.4, 0.5, 0.2], "box": [0.6, 0.4, 0.15, 0.1, 0.8, 0.6, 0.3]}
    other = {"disk": [0.3, 0.3, 0.1], "box": [0.5, 0.5, 0.2, 0.2, 1.0, 0.0, 0.0]}
    x = _slot_row(layer, [(0.7, "disk", geometry, [0.9, 0.2, 0.1]), (1.0, "box", other, [0.1, 0.3, 0.9])])
    assert x.shape == (1, layer.size) and sum(f[1] for f in layer.fields()) == layer.size
    got = to_numpy(layer(x))
    # The same two shapes through Render: the slot's presence is the shape's opacity, slot 0 at the back.
    render = Render("disk,box", 20, channels=3, background=[0.1, 0.1, 0.1])
    params = np.float32([*geometry["disk"], 0.9, 0.2, 0.1, 0.7, *other["box"], 0.1, 0.3, 0.9, 1.0])[None]
    np.testing.assert_allclose(got, to_numpy(render(params)), atol=1e-5)
    shapes, background = layer.scene(x[0], keep=0.5)
    assert [k for k, _ in shapes] == ["disk", "box"] and np.allclose(background, 0.1)
    np.testing.assert_allclose(np.concatenate([p for _, p in shapes]), params[0], atol=1e-6)


def test_slot_render_absent_slots_show_the_background_and_gradients_are_finite():
    layer = SlotRender("disk,triangle", 3, 12, channels=1, presence_prior=0.1, kind_prior=0.1)
    rng = np.random.default_rng(0)
    x = rng.uniform(0.05, 0.95, (2, layer.size)).astype("float32")
    for s in range(3):  # every presence 0
        x[:, 1 + s * layer.slot_size] = 0.0
    np.testing.assert_allclose(to_numpy(layer(x)), np.broadcast_to(x[:, None, None, :1], (2, 12, 12, 1)), atol=1e-6)
    from shapegrad.ops import autodiff as _autodiff

    def loss(v):
        return keras.ops.mean(layer(v) ** 2)

    x[:, 1 :: layer.slot_size] = 0.5
    _, (grad,) = _autodiff.value_and_grad(loss, x)
    assert np.isfinite(grad).all() and np.abs(grad).max() > 0


def test_slot_render_rejects_bad_arguments():
    with pytest.raises(ValueError, match="kinds"):
        SlotRender("disk,disk", 2, 8)
    with pytest.raises(ValueError, match="kinds"):
        SlotRender("disk,blob", 2, 8)
    with pytest.raises(ValueError, match="slots"):
        SlotRender("disk", 0, 8)
    with pytest.raises(ValueError, match="presence_prior"):
        SlotRender("disk", 2, 8, presence_prior=-1.0)


def test_spatial_readout_reads_where_each_map_points_and_what_is_there():
    rng = np.random.default_rng(0)
    features = rng.normal(size=(2, 8, 4, 3)).astype("float32")
    logits = np.zeros((2, 8, 4, 2), "float32")
    logits[0, 5, 1, 0] = logits[0, 2, 3, 1] = logits[1, 0, 0, 0] = 60.0  # sharp peaks (softmax weight ~1)
    out = to_numpy(SpatialReadout()([features, logits]))
    assert out.shape == (2, 2, 5)
    np.testing.assert_allclose(out[0, 0, :2], [5.5 / 8, 1.5 / 4], atol=1e-6)
    np.testing.assert_allclose(out[0, 1, :2], [2.5 / 8, 3.5 / 4], atol=1e-6)
    np.testing.assert_allclose(out[0, 0, 2:], features[0, 5, 1], atol=1e-5)
    np.testing.assert_allclose(out[1, 1, :2], [0.5, 0.5], atol=1e-6)  # a flat map: the mean of the cells
    np.testing.assert_allclose(out[1, 1, 2:], features[1].mean((0, 1)), atol=1e-5)


def test_anchored_head_places_points_around_their_shape_anchor():
    spec = Render("disk,triangle", 16, channels=1).spec
    fields = fields_for(spec)
    anchors_of = [s.shape if s.field.kind == "position" else -1 for s in spec.slices]
    head = AnchoredHead(fields, anchors_of)
    raw = np.zeros((1, spec.size), "float32")
    anchors = np.array([[[0.25, 0.75], [0.6, 0.4]]], "float32")
    out = to_numpy(head([raw, anchors]))[0]
    np.testing.assert_allclose(out[0:2], [0.25, 0.75], atol=1e-7)  # the disk's centre
    np.testing.assert_allclose(out[5:11], [0.6, 0.4] * 3, atol=1e-7)  # every vertex of the triangle
    np.testing.assert_allclose(out[2:5], 0.5, atol=1e-7)  # radius, colour, opacity: sigmoid(0)
    raw[0, 5] = 100.0
    assert abs(to_numpy(head([raw, anchors]))[0, 5] - (0.6 + 0.5)) < 1e-6  # at most `reach` from the anchor
    with pytest.raises(ValueError, match="Received: anchors_of"):
        AnchoredHead(fields, anchors_of[:-1])


def test_spatial_encoder_emits_valid_parameters_with_finite_gradients():
    from helpers import assert_finite, value_and_grad

    spec = Render("disk,box,triangle", 32, channels=3).spec
    keras.utils.set_random_seed(1)
    encoder = build_spatial_encoder((32, 32, 3), spec, width=4, dense=8)
    x = np.random.default_rng(0).uniform(0, 1, (3, 32, 32, 3)).astype("float32")
    out = to_numpy(encoder(x))
    assert out.shape == (3, spec.size) and np.isfinite(out).all()
    box_direction = out[:, spec.get(1, "direction").slice]
    np.testing.assert_allclose(np.linalg.norm(box_direction, axis=1), 1.0, rtol=1e-5)
    value, (grad,) = value_and_grad(lambda images: keras.ops.sum(encoder(images)), x)
    assert_finite("spatial encoder", value, grad)
    assert np.abs(grad).max() > 0


# --------------------------------------------------------------------------- colours solved from the image


def _grey_guess(render, true):
    guess = np.array(true, copy=True)
    for k in range(render.spec.num_shapes):
        guess[:, render.spec.get(k, "color").slice] = 0.5
    return guess


def test_color_solve_recovers_the_colours_and_passes_everything_else():
    render = Render("disk,box,triangle", 24, channels=3, background=[0.2, 0.1, 0.0])
    true = render.spec.sample(4, seed=3)
    images = to_numpy(render(true))
    guess = _grey_guess(render, true)
    solved = to_numpy(ColorSolve(render)([guess, images]))
    colors = np.zeros(render.spec.size, bool)
    for k in range(3):
        colors[render.spec.get(k, "color").slice] = True
    np.testing.assert_array_equal(solved[:, ~colors], guess[:, ~colors])
    visible = (to_numpy(render.alphas(true)[0]) > 0.5).sum(axis=(2, 3)) > 10  # (B, K): shapes that show
    err = np.abs(solved[:, colors] - true[:, colors]).reshape(4, 3, 3).max(axis=2)
    assert (err[visible] < 0.01).all(), err
    drawn = to_numpy(render(solved))
    assert np.abs(drawn - images).max() < 0.01


def test_color_solve_gradients_match_finite_differences_float64(float64):
    from helpers import check_gradients

    render = Render("disk,box", 10, channels=2, softness=2.0, dtype="float64")
    layer = ColorSolve(render, dtype="float64")
    true = render.spec.sample(1, seed=5).astype(np.float64)
    images = to_numpy(render(true)) + np.random.default_rng(0).normal(0, 0.05, (1, 10, 10, 2))
    probe = keras.ops.convert_to_tensor(np.random.default_rng(1).normal(size=(1, render.spec.size)))
    guess = _grey_guess(render, true) + 0.01  # geometry a little off: residuals everywhere
    total = jit_for_many_calls(lambda x: keras.ops.sum(layer([x, images]) * probe))
    check_gradients(total, [guess], samples=16, rtol=1e-4, atol=1e-7)


_SOLVE_LAYER_STEP = {}


def _color_solve_step():
    """The compiled value and gradient of a ColorSolve in front of its Render (one trace for every example)."""
    if not _SOLVE_LAYER_STEP:
        from shapegrad.ops.autodiff import jit, traced_value_and_grad

        render = Render("disk,box,triangle", 8, channels=3)
        layer = ColorSolve(render)

        def fn(x, images):
            out = layer([x, images])
            return keras.ops.sum(render(out)) + keras.ops.sum(out), out

        _SOLVE_LAYER_STEP["step"] = (render, jit(traced_value_and_grad(fn, wrt=1)))
    return _SOLVE_LAYER_STEP["step"]


from hypothesis import given  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from helpers import adversarial_array  # noqa: E402


@given(
    x=adversarial_array((2, 28)),  # Render("disk,box,triangle", channels=3).spec.size
    images=adversarial_array((2, 8, 8, 3), low=-1e30, high=1e30),
    layout=st.sampled_from(["free", "transparent", "identical", "covered"]),
)
def test_property_color_solve_finite_on_degenerate_parameters(x, images, layout):
    from helpers import assert_finite

    render, step = _color_solve_step()
    spec = render.spec
    x = np.array(x, copy=True)
    if layout == "transparent":  # every opacity 0: nothing shows
        for k in range(3):
            x[:, spec.get(k, "opacity").slice] = 0.0
    elif layout == "identical":  # the box drawn where the disk is, as large: no triangle
        x[:, spec.get(1, "center").slice] = x[:, spec.get(0, "center").slice]
        x[:, spec.get(1, "half_size").slice] = np.repeat(x[:, spec.get(0, "radius").slice], 2, axis=1)
        x[:, spec.get(2, "opacity").slice] = 0.0
    elif layout == "covered":  # the triangle, in front, an opaque one over the whole image
        x[:, spec.get(2, "vertices").slice] = [-2.0, -2.0, -2.0, 5.0, 5.0, -2.0]
        x[:, spec.get(2, "opacity").slice] = 1.0
    value, out, (grad,) = step(x, images)
    assert_finite(f"ColorSolve {layout}", to_numpy(value), to_numpy(out), to_numpy(grad))
    out = to_numpy(out)
    for k in range(3):
        assert (out[:, spec.get(k, "color").slice] >= 0).all() and (out[:, spec.get(k, "color").slice] <= 1).all()


def test_solved_colours_are_an_option_of_the_builders_and_of_train():
    from shapegrad.learn.train import Task

    render = Render("disk,box", 16, channels=3)
    with pytest.raises(ValueError, match="Received: colors='paint'"):
        build_spatial_encoder((16, 16, 3), render.spec, width=4, dense=8, colors="paint")
    with pytest.raises(ValueError, match="Received: renderer=None"):
        build_spatial_encoder((16, 16, 3), render.spec, width=4, dense=8, colors="solve")
    with pytest.raises(ValueError, match="Received: fields="):
        build_encoder((16, 16, 3), fields_for(render.spec), width=4, colors="solve", renderer=Render("disk", 16))
    with pytest.raises(ValueError, match="Received: colors='solve'"):
        Task("cone", 16).build_encoder(4, "cnn", colors="solve")
    with pytest.raises(ValueError, match="Received: renderer="):
        ColorSolve(Cones(16))
    encoder = Task("disk,box", 16, channels=3).build_encoder(4, "cnn", colors="solve")
    assert isinstance(encoder.get_layer("colors"), ColorSolve)
    assert encoder.get_layer("colors").gradient is False  # "solve" holds the colours constant; it trained better
    grad = build_spatial_encoder((16, 16, 3), render.spec, width=4, dense=8, colors="solve-grad", renderer=render)
    assert grad.get_layer("colors").gradient is True
    assert encoder.output_shape == (None, render.spec.size)


def test_color_solve_without_gradient_holds_the_solved_colours_constant():
    from helpers import jit, value_and_grad

    render = Render("disk,box", 12, channels=3)
    true = render.spec.sample(2, seed=4)
    images = to_numpy(render(true))
    colour = np.zeros(render.spec.size, "float32")
    for k in range(2):
        colour[render.spec.get(k, "color").slice] = 1.0
    colour = keras.ops.convert_to_tensor(colour)
    grads = {}
    for gradient in (True, False):
        layer = ColorSolve.from_config(ColorSolve(render, gradient=gradient).get_config())  # the flag is saved
        assert layer.gradient is gradient
        total = jit_for_many_calls(lambda x: keras.ops.sum(layer([x, images]) * colour))
        _, (grads[gradient],) = value_and_grad(total, true)
    assert np.abs(grads[True]).max() > 0  # the solved colours move with the geometry
    np.testing.assert_array_equal(grads[False], 0.0)
