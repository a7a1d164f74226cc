"""shapegrad.Cones: the original layer's image, finite gradients, and Keras conventions."""

import math

import keras
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from keras import ops

from helpers import BACKEND, adversarial, assert_finite, check_gradients, jit, to_numpy, value_and_grad
from shapegrad import Cones
from shapegrad.bench.timing import naive_cones


def reference(x, n):
    """The original layer's formula in float64 NumPy (acos of the clipped, normalised dot)."""
    x = np.asarray(x, np.float64)
    grid = np.stack(np.meshgrid(np.arange(n), np.arange(n), indexing="ij"), -1)[None].astype(np.float64)
    r = grid - n * x[:, None, None, 0:2]
    d = x[:, None, None, 2:4]
    with np.errstate(invalid="ignore", divide="ignore"):
        u = r / np.linalg.norm(r, axis=-1, keepdims=True)
        v = d / np.linalg.norm(d, axis=-1, keepdims=True)
        theta = np.arccos(np.clip((u * v).sum(-1), -1.0, 1.0))
    return 1.0 / (1.0 + np.exp(-n * (np.pi * x[:, None, None, 4] - theta)))


def random_params(rng, batch):
    x = np.concatenate(
        [rng.uniform(0.0, 1.0, (batch, 2)), rng.normal(size=(batch, 2)), rng.uniform(0.0, 1.0, (batch, 1))], axis=1
    )
    return x.astype("float32")


def mse_grad(layer, x, target=None):
    if target is None:
        target = np.full(layer.compute_output_shape(x.shape), 0.5, "float32")
    return value_and_grad(lambda p: ops.mean((layer(p) - ops.convert_to_tensor(target)) ** 2), x)


# ---- the image ----------------------------------------------------------------------------------


@pytest.mark.parametrize("n", [32, 64, 100, 128])
def test_matches_float64_reference(n):
    rng = np.random.default_rng(n)
    x = random_params(rng, 16)
    # Grid-aligned axes, apexes on pixel centres and on pixel edges, half-planes, the whole plane.
    x[0] = [0.5, 0.5, 1.0, 0.0, 0.25]
    x[1] = [0.25, 0.75, 0.0, -3.0, 0.5]
    x[2] = [10.5 / n, 3.0 / n, 1.0, 1.0, 1.0]
    x[3] = [-0.5, 1.7, -2.0, 1e-3, 0.1]
    image = to_numpy(Cones(n)(x))[..., 0]
    expected = reference(x, n)
    defined = np.isfinite(expected)
    assert (~defined).sum() <= 3  # only the apex pixels of x[0..2]
    np.testing.assert_allclose(image[defined], expected[defined], rtol=0, atol=1e-5)
    assert image.shape == (16, n, n)


def test_apex_pixel_and_zero_axis_are_defined():
    n = 32
    x = np.array([[0.5, 0.5, 0.0, 1.0, 0.2], [0.5, 0.5, 0.0, 0.0, 0.2], [0.5, 0.5, 1.0, 0.0, 0.2]], "float32")
    image = to_numpy(Cones(n)(x))[..., 0]
    # The apex pixel counts as lying on the axis: theta = 0.
    assert image[0, 16, 16] == pytest.approx(1 / (1 + math.exp(-n * math.pi * 0.2)))
    # A zero axis is read as (1, 0).
    np.testing.assert_array_equal(image[1], image[2])
    _, (g,) = mse_grad(Cones(n), x)
    assert_finite("gradient", g)
    np.testing.assert_array_equal(g[1, 2:4], 0.0)


def test_axis_length_does_not_matter():
    x = np.array([[0.3, 0.6, 0.7, -0.2, 0.15]] * 3, "float32")
    x[1, 2:4] *= 1e-30
    x[2, 2:4] *= 1e30
    image = to_numpy(Cones(48)(x))
    np.testing.assert_allclose(image[1], image[0], atol=1e-6)
    np.testing.assert_allclose(image[2], image[0], atol=1e-6)


def test_distance_edge_has_one_width():
    n = 64
    layer = Cones(n, edge="distance", sharpness=2.0)
    # A half-plane (s = 0.5) with its axis along +col: the boundary is the row line through the apex.
    x = np.array([[0.5, 0.25, 0.0, 1.0, 0.5]], "float32")
    image = to_numpy(layer(x))[0, :, :, 0]
    # At 1 px outside (col = 15), near the apex and far from it, the value is sigmoid(-2).
    for row in (33, 63):
        assert image[row, 15] == pytest.approx(1 / (1 + math.exp(2.0)), abs=1e-6)
        assert image[row, 17] == pytest.approx(1 / (1 + math.exp(-2.0)), abs=1e-6)
    # A narrow cone: the angle edge blurs more and more with the distance from the apex; the
    # distance edge keeps one width.
    x = np.array([[0.0, 0.5, 1.0, 0.0, 0.1]], "float32")
    for edge, grows in (("angle", True), ("distance", False)):
        image = to_numpy(Cones(n, edge=edge)(x))[0, :, :, 0]
        soft = lambda row: ((image[row] > 0.05) & (image[row] < 0.95)).sum()  # noqa: E731
        assert (soft(60) > 2 * soft(10)) == grows, edge


# ---- gradients ----------------------------------------------------------------------------------


def test_naive_formula_gives_nan_gradients_and_cones_does_not():
    """The founding bug: random inputs at N = 64 give NaN gradients through acos(clip(...))."""
    rng = np.random.default_rng(0)
    x = random_params(rng, 64)
    x[:8, 0:2] = rng.integers(0, 64, (8, 2)) / 64.0  # apexes on pixel centres, as a 64-px encoder emits
    target = np.full((64, 64, 64, 1), 0.5, "float32")
    _, (g_naive,) = value_and_grad(lambda p: ops.mean((naive_cones(p, 64) - ops.convert_to_tensor(target)) ** 2), x)
    assert np.isnan(g_naive).any(axis=1).mean() > 0.1  # many samples poisoned
    _, (g,) = mse_grad(Cones(64), x, target)
    assert_finite("Cones gradient", g)


@pytest.mark.parametrize("edge", ["angle", "distance"])
def test_finite_differences_float64(edge, float64):
    rng = np.random.default_rng(3)
    layer = Cones(16, edge=edge, sharpness=0.5, dtype="float64")
    x = random_params(rng, 4).astype("float64")
    target = rng.uniform(size=(4, 16, 16, 1))
    # Apexes between pixel centres keep the finite differences away from the apex kink.
    x[:, 0:2] = (np.floor(x[:, 0:2] * 16) + 0.37) / 16
    # Axis along the rows, apex on row 8: pixels of row 8 lie exactly on the line where
    # dot(p - c, axis) = 0, across which theta is smooth.
    x[0] = [8 / 16, 7.37 / 16, 1.0, 0.0, 0.3]
    check_gradients(
        lambda p: ops.mean((layer(p) - ops.convert_to_tensor(target)) ** 2), [x], eps=1e-6, rtol=1e-4, atol=1e-9
    )


def test_hand_written_backward_matches_autodiff(float64):
    """The custom backward pass of the angle mode equals autodiff of sigmoid(k * logit) in float64."""
    rng = np.random.default_rng(5)
    layer = Cones(24, dtype="float64")
    x = random_params(rng, 12).astype("float64")
    x[2] = [-3.1, 2.3, 1e-30, 2.1e-30, 1.2]  # far apex, tiny axis, s > 1
    x[3, 2:4] *= 1e30
    # No pixel lies exactly on a line through the apex here. On such lines autodiff of
    # atan2(|cross|, |dot|) takes abs' one-sided value (0 on TensorFlow), which is wrong on
    # the dot = 0 line where theta is smooth; the finite-difference test below covers that line.
    target = ops.convert_to_tensor(rng.uniform(size=(12, 24, 24, 1)))
    k = 17.0
    _, (custom,) = value_and_grad(lambda p: ops.mean((layer(p, sharpness=k) - target) ** 2), x)
    _, (auto,) = value_and_grad(
        lambda p: ops.mean((ops.sigmoid(k * layer.logit(p))[..., None] - target) ** 2), x
    )
    np.testing.assert_allclose(custom, auto, rtol=1e-7, atol=1e-12)
    # and with respect to the sharpness itself
    _, (gk,) = value_and_grad(lambda kk: ops.mean((layer(x, sharpness=kk) - target) ** 2), np.float64(k))
    _, (gk_auto,) = value_and_grad(lambda kk: ops.mean((ops.sigmoid(kk * layer.logit(x))[..., None] - target) ** 2), np.float64(k))
    assert gk == pytest.approx(gk_auto, rel=1e-9)


def cone_params(n, far=1e30, shortest=0.0):
    """Adversarial cone parameters: apexes on pixel centres and edges, grid-aligned and degenerate axes.

    ``far`` bounds the positions; axes have components 0 or of magnitude at least ``shortest``.
    """
    on_grid = st.integers(-2, n + 2).map(lambda k: k / n)
    half_pixel = st.integers(-2, n + 2).map(lambda k: (k + 0.5) / n)
    position = st.one_of(on_grid, half_pixel, adversarial(-far, far))
    special = [0.0, 1.0, -1.0, 1e-30, -1e-30, 1e30, -1e30]
    direction = st.one_of(st.sampled_from(special), adversarial(-1e30, 1e30)).map(
        lambda v: v if v == 0 or abs(v) >= shortest else float(np.copysign(shortest, v))
    )
    aperture = st.one_of(st.sampled_from([0.0, 0.5, 1.0, 1.5, -0.5, 1e30, -1e30]), adversarial(-1e30, 1e30))
    row = st.tuples(position, position, direction, direction, aperture)
    # A fixed batch of 8 keeps shapes static, so JAX compiles each op once.
    return st.lists(row, min_size=8, max_size=8).map(lambda rows: np.array(rows, "float32"))


# In distance mode the gradient with respect to the axis is (apex offset in px) / |axis| times
# that of a unit axis: exact, and beyond float32 for, say, an axis of 1e-30 and an apex 1e9
# images away. The distance-mode hunt keeps that ratio below 1e37.
DOMAINS = {"angle": cone_params(16), "distance": cone_params(16, far=1e6, shortest=1e-29)}
PROPERTY_LAYERS = {edge: Cones(16, edge=edge) for edge in ("angle", "distance")}


@given(data=st.data(), edge=st.sampled_from(["angle", "distance"]), seed=st.integers(0, 2**16))
def test_property_finite_values_and_gradients(data, edge, seed):
    x = data.draw(DOMAINS[edge], label="x")
    layer = PROPERTY_LAYERS[edge]
    target = np.random.default_rng(seed).uniform(size=(len(x), 16, 16, 1)).astype("float32")
    value, (g,) = mse_grad(layer, x, target)
    assert_finite("image", to_numpy(layer(x)))
    assert_finite("loss", value)
    assert_finite("gradient", g)


# ---- the user's scenario ------------------------------------------------------------------------


def test_encoder_trains_through_frozen_cones_without_nan():
    """Input -> Flatten -> Dense(2) -> Dense(5) -> Cones(N), frozen decoder, Adam, several epochs."""
    n = 24
    rng = np.random.default_rng(0)
    params = random_params(rng, 256)
    params[:, 0:2] = rng.integers(4, 20, (256, 2)) / n  # apexes on pixel centres, where acos breaks
    params[:, 4] = rng.uniform(0.1, 0.4, 256)
    images = to_numpy(Cones(n)(params))
    keras.utils.set_random_seed(0)
    model = keras.Sequential(
        [
            keras.Input((n, n, 1)),
            keras.layers.Flatten(),
            keras.layers.Dense(2),
            keras.layers.Dense(5),
            Cones(n, trainable=False),
        ]
    )
    model.compile(optimizer=keras.optimizers.Adam(1e-3), loss="mse")
    before = model.evaluate(images, images, verbose=0)
    history = model.fit(images, images, epochs=10, batch_size=32, verbose=0)
    losses = history.history["loss"]
    assert all(np.isfinite(losses))
    for w in model.weights:
        assert_finite(w.path, to_numpy(w))
    assert losses[-1] < before and min(losses) < 0.95 * before, (before, losses)


# ---- Keras conventions --------------------------------------------------------------------------


def test_serialization_round_trip(tmp_path):
    model = keras.Sequential([keras.Input((5,)), Cones(20, edge="distance", sharpness=3.0, name="cones")])
    x = random_params(np.random.default_rng(1), 3)
    path = tmp_path / "cones.keras"
    model.save(path)
    loaded = keras.saving.load_model(path)
    np.testing.assert_allclose(to_numpy(loaded(x)), to_numpy(model(x)), atol=1e-7)
    layer = loaded.get_layer("cones")
    assert (layer.resolution, layer.edge, layer.sharpness) == (20, "distance", 3.0)
    config = Cones(7).get_config()
    assert Cones.from_config(config).get_config() == config
    assert not Cones(7).trainable_weights and not Cones(7).weights


def test_functional_model_and_output_shape():
    inputs = keras.Input((5,))
    outputs = Cones(12)(inputs)
    assert tuple(outputs.shape) == (None, 12, 12, 1)
    assert Cones(12).compute_output_shape((None, 5)) == (None, 12, 12, 1)
    model = keras.Model(inputs, outputs)
    assert to_numpy(model(random_params(np.random.default_rng(0), 2))).shape == (2, 12, 12, 1)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"resolution": -3}, "Received: resolution=-3"),
        ({"resolution": 0}, "Received: resolution=0"),
        ({"resolution": 2.5}, "Received: resolution=2.5"),
        ({"resolution": True}, "Received: resolution=True"),
        ({"resolution": 8, "edge": "soft"}, "Received: edge='soft'"),
        ({"resolution": 8, "sharpness": -1.0}, "Received: sharpness=-1.0"),
        ({"resolution": 8, "sharpness": float("nan")}, "Received: sharpness=nan"),
    ],
)
def test_bad_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(")):
        Cones(**kwargs)


def test_wrong_input_width():
    with pytest.raises(ValueError, match=r"\(batch, 5\).*Received: input_shape=\(2, 4\)"):
        Cones(8)(np.zeros((2, 4), "float32"))
    with pytest.raises(ValueError, match="Received: input_shape"):
        keras.Sequential([keras.Input((6,)), Cones(8)])


def test_jit_matches_eager_with_finite_gradients():
    layer = Cones(32)
    x = random_params(np.random.default_rng(2), 8)
    x[0] = [0.5, 0.5, 0.0, 0.0, 0.5]
    np.testing.assert_allclose(to_numpy(jit(layer)(x)), to_numpy(layer(x)), atol=1e-6)
    if BACKEND == "jax":
        import jax

        g = jax.jit(jax.grad(lambda p: ops.mean(layer(p) ** 2)))(x)
    elif BACKEND == "tensorflow":
        import tensorflow as tf

        @tf.function(jit_compile=True)
        def grad(p):
            with tf.GradientTape() as tape:
                tape.watch(p)
                loss = ops.mean(layer(p) ** 2)
            return tape.gradient(loss, p)

        g = grad(tf.constant(x))
    else:
        pytest.skip("PyTorch has no XLA jit here; eager gradients are tested elsewhere")
    assert_finite("jitted gradient", to_numpy(g))


@pytest.mark.parametrize("policy", ["mixed_float16", "mixed_bfloat16"])
def test_mixed_precision(policy):
    x = random_params(np.random.default_rng(4), 4)
    full = to_numpy(Cones(32)(x))
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy(policy)
    try:
        layer = Cones(32)
        out = layer(x)
        assert keras.backend.standardize_dtype(out.dtype) == policy.split("_")[1]
        tolerance = 1e-2 if policy == "mixed_bfloat16" else 1e-3
        np.testing.assert_allclose(to_numpy(ops.cast(out, "float32")), full, atol=tolerance)
        _, (g,) = value_and_grad(lambda p: ops.mean(ops.cast(layer(p), "float32") ** 2), x)
        assert_finite("gradient", g)
    finally:
        keras.config.set_dtype_policy(previous)


def test_folded_angle_polynomial_matches_atan2():
    from shapegrad.render.cones import _folded_angle

    rng = np.random.default_rng(0)
    c = np.concatenate([rng.uniform(0, 100, 20000), [0, 0, 1, 1, 1e-30, 3e38, 0.41421356, 1], 10.0 ** rng.uniform(-30, 30, 5000)])
    t = np.concatenate([rng.uniform(0, 100, 20000), [0, 1, 0, 1, 3e38, 1e-30, 1, 0.41421356], 10.0 ** rng.uniform(-30, 30, 5000)])
    c, t = c.astype("float32"), t.astype("float32")
    got = to_numpy(_folded_angle(ops.convert_to_tensor(c), ops.convert_to_tensor(t))).astype(np.float64)
    expected = np.arctan2(c.astype(np.float64), t.astype(np.float64))
    assert np.abs(got - expected).max() <= 1.5e-7  # 1.25 float32 ulps at pi / 2
    assert got[20000] == 0.0 and got[20001] == 0.0 and got[20002] == np.float32(math.pi / 2)


# ---- the spec, the sharpness knob, non-square images ----------------------------------------------


def test_spec_and_default_sharpness():
    layer = Cones(24)
    assert layer.spec.size == 5 and [s.field.name for s in layer.spec.fields_of(0)] == ["apex", "axis", "half_angle"]
    assert (layer.height, layer.width, layer.channels) == (24, 24, 1)
    assert layer.default_sharpness == 24.0
    assert Cones(24, edge="distance").default_sharpness == 2.0
    assert Cones(24, sharpness=5.0).default_sharpness == 5.0
    x = random_params(np.random.default_rng(2), 3)
    np.testing.assert_array_equal(to_numpy(layer(x)), to_numpy(layer(x, sharpness=24.0)))


@pytest.mark.parametrize("edge", ["angle", "distance"])
def test_non_square_image_is_a_crop_of_a_square_one(edge):
    """Apex (H a0, W a1) on (12, 20): the first 12 rows of a 20 px square with apex (12 a0 / 20, a1)."""
    h, w = 12, 20
    x = random_params(np.random.default_rng(3), 4)
    y = x.copy()
    y[:, 0] *= h / w
    # Angle mode: min(H, W) per radian by default, so the square layer is given the same sharpness.
    wide = Cones((h, w), edge=edge)
    square = Cones(w, edge=edge, sharpness=wide.default_sharpness)
    ours = to_numpy(wide(x))
    assert ours.shape == (4, h, w, 1) and wide.compute_output_shape((None, 5)) == (None, h, w, 1)
    np.testing.assert_allclose(ours, to_numpy(square(y))[:, :h], atol=2e-5)
    _, (grad,) = value_and_grad(lambda p: ops.sum(wide(p)), x)
    assert_finite("gradient", grad)


def test_non_square_config_round_trip():
    config = Cones((10, 14), edge="distance").get_config()
    assert config["resolution"] == [10, 14]
    again = Cones.from_config(config)
    assert (again.resolution, again.height, again.width) == ((10, 14), 10, 14) and again.get_config() == config
    assert Cones((9, 9)).resolution == 9
