"""The Render layer: spec, argument checks, reference images, Keras conventions, finite gradients."""

import math

import keras
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from keras import ops

from helpers import (
    adversarial_array, assert_finite, check_gradients, jit, jit_for_many_calls, to_numpy, value_and_grad,
)
from shapegrad import Render
from shapegrad.render.cones import Cones
from shapegrad.render.primitives import RenderSpec, parse_shapes, primitive, primitive_kinds, spec_table

ALL = "disk,ellipse,box,triangle,polygon5,segment,bezier,cone"


# ------------------------------------------------------------- the spec


def test_spec_layout_and_slices():
    spec = Render([("disk", 2), ("box", 1)], 16, channels=3).spec
    assert spec.size == 2 * (3 + 3 + 1) + (7 + 3 + 1) == spec.slices[-1].stop
    assert spec.num_shapes == 3
    assert [s.field.name for s in spec.fields_of(2)] == ["center", "half_size", "direction", "corner", "color", "opacity"]
    assert spec.get(1, "radius").slice == slice(9, 10)
    assert spec.get(2, "direction").field.kind == "direction" and spec.get(2, "direction").field.period == 180.0
    # Contiguous, no gaps.
    assert all(a.stop == b.start for a, b in zip(spec.slices, spec.slices[1:]))


def test_every_kind_has_metadata_and_natural_units():
    for kind in primitive_kinds() + ("polygon7",):
        for f in primitive(kind).all_fields(3):
            assert f.kind in ("position", "size", "direction", "angle", "fraction", "color", "opacity")
            assert f.low < f.high and f.unit in ("px", "deg", "1")
            v = np.full((4, f.size), 0.3)
            back = f.from_natural(f.to_natural(v, 32), 32)
            if f.kind == "direction":
                np.testing.assert_allclose(back, np.full((4, 2), math.sqrt(0.5)))
            else:
                np.testing.assert_allclose(back, v)
    assert "| cone | `half_angle` |" in spec_table()


def test_sample_gives_typical_scenes():
    spec = RenderSpec(ALL, 32, 3)
    x = spec.sample(64, seed=1)
    assert x.shape == (64, spec.size) and x.dtype == np.float32
    natural = spec.to_natural(x)
    assert np.all((natural[0]["center"] > 0) & (natural[0]["center"] < 32))
    assert np.all((natural[0]["radius"] > 2) & (natural[0]["radius"] < 9))
    verts = natural[3]["vertices"].reshape(64, 3, 2)
    e1, e2 = verts[:, 1] - verts[:, 0], verts[:, 2] - verts[:, 0]
    area = (e1[:, 0] * e2[:, 1] - e1[:, 1] * e2[:, 0]) / 2  # np.cross of 2-vectors is gone in numpy 2.5
    assert np.all(np.abs(area) > 5)  # triangles are not degenerate


# ------------------------------------------------------------- arguments


def test_parse_shapes_forms():
    assert parse_shapes("disk*3,box*2") == (("disk", 3), ("box", 2))
    assert parse_shapes([("disk", 3), "box"]) == (("disk", 3), ("box", 1))
    assert parse_shapes(" polygon6 * 2 ") == (("polygon6", 2),)
    assert Render("disk*3,box*2", 8).get_config()["shapes"] == "disk*3,box*2"


@pytest.mark.parametrize(
    "shapes, received",
    [
        ("dsk*3", "Received: shapes='dsk*3'"),
        ("disk*0", "Received: shapes='disk*0'"),
        ("disk*-1", "Received: shapes='disk*-1'"),
        ("", "Received: shapes=''"),
        ([], "Received: shapes=[]"),
        ([("disk", 2.5)], "Received: shapes=[('disk', 2.5)]"),
        ([("disk", True)], "Received: shapes=[('disk', True)]"),
        ("polygon2", "Received: shapes='polygon2'"),
        (3, "Received: shapes=3"),
    ],
)
def test_bad_shapes_raise_keras_style(shapes, received):
    with pytest.raises(ValueError, match="Expected shapes to be") as info:
        Render(shapes, 8)
    assert received in str(info.value)


@pytest.mark.parametrize(
    "kwargs, name",
    [
        (dict(resolution=0), "resolution"),
        (dict(resolution=8.0), "resolution"),
        (dict(channels=0), "channels"),
        (dict(softness=0.0), "softness"),
        (dict(softness=float("nan")), "softness"),
        (dict(composite="add"), "composite"),
        (dict(background=[0.0, 1.0]), "background"),
        (dict(background="black"), "background"),
    ],
)
def test_bad_arguments_raise_keras_style(kwargs, name):
    args = dict(shapes="disk", resolution=8)
    args.update(kwargs)
    with pytest.raises(ValueError, match=f"Expected {name} to be .* Received: {name}="):
        Render(**args)


def test_wrong_input_shape_is_a_clear_error():
    layer = Render("disk*2", 8)
    with pytest.raises(ValueError, match=r"Render expects inputs of shape \(batch, 10\).*Received: input_shape=\(None, 9\)"):
        layer.compute_output_shape((None, 9))
    with pytest.raises(ValueError, match="Render expects"):
        layer(np.zeros((2, 3, 10), "float32"))


# ------------------------------------------------------------- images


def test_disk_image_matches_numpy_reference_in_colour():
    n = 16
    layer = Render("disk*2", n, channels=3, softness=1.5, background=[0.0, 0.1, 0.2])
    x = np.array([[0.5, 0.4, 0.25, 1.0, 0.5, 0.0, 0.8, 0.3, 0.6, 0.15, 0.2, 0.4, 1.0, 0.5]], "float32")
    image = to_numpy(layer(x))[0]
    rows, cols = np.mgrid[0:n, 0:n]
    expected = np.broadcast_to(np.array([0.0, 0.1, 0.2]), (n, n, 3))
    for k in range(2):
        p = x[0, 7 * k : 7 * k + 7]
        d = np.hypot(rows - n * p[0], cols - n * p[1]) - n * p[2]
        a = (p[6] / (1 + np.exp(4 * d / 1.5)))[..., None]
        expected = a * p[3:6] + (1 - a) * expected
    np.testing.assert_allclose(image, expected, atol=1e-5)


def _numpy_distance(kind, f, rows, cols, n):
    """Signed distance in pixels of one shape (fields ``f``, normalised) in NumPy float64, from the definitions."""

    def unit(d):
        length = np.hypot(d[0], d[1])
        return d / length if length > 0 else np.array([1.0, 0.0])

    def frame(center, u):  # coordinates along axis 0 and axis 1 (axis 0 turned +90 degrees)
        r0, r1 = rows - n * center[0], cols - n * center[1]
        return r0 * u[0] + r1 * u[1], r1 * u[0] - r0 * u[1]

    if kind == "disk":
        return np.hypot(rows - n * f["center"][0], cols - n * f["center"][1]) - n * max(f["radius"][0], 0.0)
    if kind == "box":
        h = np.maximum(n * f["half_size"], 0.0)
        rc = min(max(f["corner"][0] * n * min(f["half_size"]), 0.0), h.min())
        x, y = frame(f["center"], unit(f["direction"]))
        q0, q1 = np.abs(x) - (h[0] - rc), np.abs(y) - (h[1] - rc)
        corner = (q0 > 0) & (q1 > 0)
        return np.where(corner, np.hypot(q0, q1), np.maximum(q0, q1)) - rc
    if kind == "ellipse":  # the nearest point by a dense search over the angle, then Newton's method
        a, b = np.maximum(n * f["radii"], 0.0)
        x, y = frame(f["center"], unit(f["direction"]))
        t = np.linspace(0, 2 * np.pi, 4096, endpoint=False)
        t = t[np.argmin((x[..., None] - a * np.cos(t)) ** 2 + (y[..., None] - b * np.sin(t)) ** 2, axis=-1)]
        for _ in range(8):  # f'(t) = 0 for f = |p - (a cos t, b sin t)|^2 / 2
            c, s = np.cos(t), np.sin(t)
            g = (a * a - b * b) * s * c - x * a * s + y * b * c
            h = (a * a - b * b) * (c * c - s * s) - x * a * c - y * b * s
            t = t - g / h
        length = np.hypot(x - a * np.cos(t), y - b * np.sin(t))
        return np.where((x / a) ** 2 + (y / b) ** 2 < 1, -length, length)
    if kind in ("triangle", "segment"):
        ends = f["vertices"].reshape(-1, 2) * n if kind == "triangle" else n * np.stack([f["a"], f["b"]])
        edges = [(ends[j], ends[(j + 1) % len(ends)]) for j in range(len(ends) if kind == "triangle" else 1)]
        nearest, inside = np.inf, np.zeros(rows.shape, bool)
        for v, w in edges:
            e = w - v
            h = np.clip(((rows - v[0]) * e[0] + (cols - v[1]) * e[1]) / (e @ e), 0.0, 1.0)
            nearest = np.minimum(nearest, np.hypot(rows - v[0] - h * e[0], cols - v[1] - h * e[1]))
            straddles = (v[1] > cols) != (w[1] > cols)  # even-odd test along the ray {row > p_row}
            with np.errstate(divide="ignore", invalid="ignore"):
                row_at = v[0] + (cols - v[1]) * e[0] / e[1]
            inside ^= straddles & (row_at > rows)
        if kind == "segment":
            return nearest - n * max(f["half_width"][0], 0.0)
        return np.where(inside, -nearest, nearest)
    if kind == "cone":
        u = unit(f["axis"])
        r0, r1 = rows - n * f["apex"][0], cols - n * f["apex"][1]
        theta = np.arctan2(np.abs(r0 * u[1] - r1 * u[0]), r0 * u[0] + r1 * u[1])
        return np.hypot(r0, r1) * np.sin(np.clip(theta - np.pi * f["half_angle"][0], -np.pi / 2, np.pi / 2))
    raise ValueError(kind)


def test_float64_render_matches_numpy_reference_without_the_float64_fixture(request):
    """A float64 Render is float64 all the way: 1e-12 against NumPy.

    Keras' type promotion (``BIT64_TO_BIT32_DTYPE``) computes ops.maximum, ops.minimum and
    ops.arctan2 of float64 tensors in float32 on PyTorch, so a float64 Render there was only
    ~1e-8 accurate, and TensorFlow made Python floats float32 before casting them (a softness of
    0.7 became 0.69999998807907). TensorFlow and PyTorch run as users run them, without the
    ``float64`` fixture. JAX has no float64 without its x64 mode, and even then Keras computes
    ``sin``, ``cos``, ``arctan`` and ``tanh`` of float64 in float32 there: it takes the fixture.
    """
    if keras.backend.backend() == "jax":
        request.getfixturevalue("float64")
    n, kinds = 12, ["disk", "box", "ellipse", "triangle", "segment", "cone"]
    layer = Render(",".join(kinds), n, channels=3, softness=0.7, background=[0.1, 0.2, 0.3], dtype="float64")
    x = layer.spec.sample(3, seed=3).astype("float64")
    image = to_numpy(layer(x))
    assert image.dtype == np.float64
    rows, cols = np.mgrid[0:n, 0:n].astype(np.float64)
    for b in range(len(x)):
        expected = np.broadcast_to(np.array([0.1, 0.2, 0.3]), (n, n, 3))
        for kind, f in zip(kinds, layer.spec.split(x[b])):
            d = _numpy_distance(kind, f, rows, cols, n)
            alpha = np.clip(f["opacity"][0], 0, 1) / (1 + np.exp(4 * d / 0.7))
            expected = alpha[..., None] * np.clip(f["color"], 0, 1) + (1 - alpha[..., None]) * expected
        np.testing.assert_allclose(image[b], expected, rtol=0, atol=1e-12)


def test_cone_matches_cones_layer_distance_mode():
    n = 24
    cones = np.array([[0.5, 0.5, 0.0, 1.0, 0.25], [0.2, 0.7, 1.0, -1.0, 0.1], [0.5, 0.5, 0.0, 0.0, 0.5]], "float32")
    x = np.concatenate([cones, np.ones((3, 2), "float32")], axis=1)
    ours = to_numpy(Render("cone", n, softness=2.0)(x))
    np.testing.assert_allclose(ours, to_numpy(Cones(n, edge="distance")(cones)), atol=1e-5)


def test_union_and_over_agree_for_disjoint_opaque_shapes():
    x = np.array([[0.25, 0.25, 0.15, 1.0, 1.0, 0.75, 0.75, 0.15, 0.5, 1.0]], "float32")
    over = to_numpy(Render("disk*2", 32, composite="over")(x))
    union = to_numpy(Render("disk*2", 32, composite="union")(x))
    np.testing.assert_allclose(over, union, atol=1e-3)


# ------------------------------------------------------------- Keras conventions


def test_serialization_roundtrip(tmp_path):
    layer = Render("disk,box*2", 12, channels=3, softness=0.7, composite="union", background=[0.1, 0.2, 0.3])
    x = layer.spec.sample(2, seed=3)
    clone = Render.from_config(layer.get_config())
    np.testing.assert_allclose(to_numpy(clone(x)), to_numpy(layer(x)))
    inputs = keras.Input((layer.spec.size,))
    model = keras.Model(inputs, layer(inputs))
    path = str(tmp_path / "render.keras")
    model.save(path)
    loaded = keras.models.load_model(path)
    np.testing.assert_allclose(to_numpy(loaded(x)), to_numpy(model(x)), atol=1e-6)


def test_jit_matches_eager():
    layer = Render("ellipse,bezier,polygon5,box", 16, channels=2)
    x = layer.spec.sample(2, seed=4)
    np.testing.assert_allclose(to_numpy(jit(layer)(x)), to_numpy(layer(x)), atol=1e-5)


@pytest.mark.parametrize("policy", ["mixed_float16", "mixed_bfloat16"])
def test_mixed_precision(policy):
    old = keras.config.dtype_policy()
    try:
        keras.config.set_dtype_policy(policy)
        layer = Render("disk,ellipse", 12)
        x = layer.spec.sample(2, seed=5)
        out = layer(x)
        assert keras.backend.standardize_dtype(out.dtype) == policy.split("_")[1]
        assert_finite(policy, to_numpy(ops.cast(out, "float32")))
    finally:
        keras.config.set_dtype_policy(old)
    ref = to_numpy(Render("disk,ellipse", 12)(x))
    np.testing.assert_allclose(to_numpy(ops.cast(out, "float32")), ref, atol=2e-2)


def test_colours_are_clipped_to_0_1_like_opacities():
    """A colour of 1e30 is drawn as 1 (under mixed_float16 it made the image inf); its gradient is 0 outside."""
    layer = Render("disk*2", 12, channels=3)
    x = layer.spec.sample(1, seed=2)
    colors = [s for s in layer.spec.slices if s.field.kind == "color"]
    wild, clipped = x.copy(), x.copy()
    for s, (big, small) in zip(colors, [(1e30, 1.0), (-7.0, 0.0)]):
        wild[0, s.slice], clipped[0, s.slice] = big, small
    np.testing.assert_allclose(to_numpy(layer(wild)), to_numpy(layer(clipped)), atol=1e-6)
    value, (g,) = value_and_grad(jit_for_many_calls(lambda x: ops.sum(layer(x))), wild)
    assert_finite("Render with colours 1e30 and -7", value, g)
    assert all(np.all(to_numpy(g)[0, s.slice] == 0) for s in colors)
    old = keras.config.dtype_policy()
    try:
        keras.config.set_dtype_policy("mixed_float16")
        out = Render("disk*2", 12, channels=3)(wild)
    finally:
        keras.config.set_dtype_policy(old)
    image = to_numpy(ops.cast(out, "float32"))
    assert_finite("mixed_float16 image with a colour of 1e30", image)
    np.testing.assert_allclose(image, to_numpy(layer(clipped)), atol=2e-2)


def test_gradients_match_finite_differences_float64(float64):
    layer = Render(ALL, 10, channels=1, softness=2.0, dtype="float64")
    x = layer.spec.sample(1, seed=6).astype(np.float64)
    weights = np.random.default_rng(0).normal(size=(1, 10, 10, 1))
    weights = ops.convert_to_tensor(weights)
    check_gradients(jit_for_many_calls(lambda x: ops.sum(layer(x) * weights)), [x], samples=20, rtol=1e-4, atol=1e-7)


@pytest.mark.slow  # each kernel's backward pass is checked against autodiff on every backend in test_sdf.py
def test_same_image_and_gradient_as_the_autodiff_renderer(float64):
    """The kernels' hand-written backward passes and the channel planes against the old path.

    ``bench.naive_render`` is the stack-everything renderer with plain autodiff through the
    points-form distances (Render's path before the kernels): same image to 1e-5 in float32,
    same gradient to 1e-8 relative in float64. Three channels; one channel's gradients are
    checked by finite differences (``test_gradients_match_finite_differences_float64``).
    """
    from shapegrad.bench.timing import naive_render

    channels = 3
    shapes = "disk*2,ellipse,box*2,triangle,polygon5,segment,bezier,cone"
    for dtype, image_tol in (("float32", 1e-5), ("float64", 1e-12)):
        layer = Render(shapes, 12, channels=channels, softness=1.5, dtype=dtype, recompute=False)
        x = layer.spec.sample(3, seed=7).astype(dtype)
        ours, old = to_numpy(layer(x)), to_numpy(naive_render(layer.spec, x, softness=1.5))
        np.testing.assert_allclose(ours, old, atol=image_tol)
    weights = ops.convert_to_tensor(np.random.default_rng(2).normal(size=(3, 12, 12, channels)))
    _, (g,) = value_and_grad(jit(lambda x: ops.sum(layer(x) * weights)), x)
    _, (g_old,) = value_and_grad(jit(lambda x: ops.sum(naive_render(layer.spec, x, softness=1.5) * weights)), x)
    np.testing.assert_allclose(g, g_old, rtol=1e-8, atol=1e-8 * np.abs(g_old).max())


# ------------------------------------------------------------- recomputation

# Five disks fold as one block of 3 and a rest of 2 in the two-level scan (JAX).
COUNTED = "disk*5,box*2,triangle,cone*2"


@pytest.mark.parametrize("composite", ["over", "union"])
def test_recompute_gives_the_same_image_and_gradient(composite):
    layers = [Render(COUNTED, 16, channels=3, composite=composite, recompute=r) for r in (True, False)]
    x = layers[0].spec.sample(3, seed=1)
    x[0] = 0.0  # degenerate: every shape on pixel (0, 0), zero sizes and directions
    weights = ops.convert_to_tensor(np.random.default_rng(0).normal(size=(3, 16, 16, 3)).astype("float32"))
    totals = [jit_for_many_calls(lambda x, layer=layer: ops.sum(layer(x) * weights)) for layer in layers]
    results = [value_and_grad(total, x) for total in totals]
    images = [to_numpy(layer(x)) for layer in layers]
    np.testing.assert_allclose(images[0], images[1], atol=1e-6)
    np.testing.assert_allclose(results[0][0], results[1][0], rtol=1e-5)
    np.testing.assert_allclose(results[0][1][0], results[1][1][0], rtol=1e-4, atol=1e-5)
    assert_finite("recomputed gradient", results[0][1][0])


def test_recompute_gradients_match_finite_differences_float64(float64):
    layer = Render(COUNTED, 10, softness=2.0, dtype="float64")
    x = layer.spec.sample(1, seed=3).astype(np.float64)
    weights = ops.convert_to_tensor(np.random.default_rng(1).normal(size=(1, 10, 10, 1)))
    check_gradients(jit_for_many_calls(lambda x: ops.sum(layer(x) * weights)), [x], samples=20, rtol=1e-4, atol=1e-7)


@pytest.mark.skipif(keras.backend.backend() != "jax", reason="XLA's compiled memory analysis (JAX)")
def test_recompute_keeps_backward_memory_nearly_flat_in_k():
    import jax

    def temp_mib(count, recompute):
        layer = Render(f"disk*{count}", 32, recompute=recompute)
        x = layer.spec.sample(8, seed=0)
        step = jax.jit(jax.grad(lambda x: ops.sum(layer(x) ** 2)))
        return step.lower(x).compile().memory_analysis().temp_size_in_bytes / 2**20

    plain = [temp_mib(k, False) for k in (4, 16)]
    kept = [temp_mib(k, True) for k in (4, 16)]
    # Autodiff keeps ~10 maps per shape (4x more shapes: ~4x the memory); the two-level
    # scan keeps ~2 sqrt(K) images (2x).
    assert plain[1] > 3 * plain[0]
    assert kept[1] < 2.5 * kept[0] and kept[1] < plain[1] / 4


# ------------------------------------------------------------- NaN/Inf hunts

_FINITE = {}


def _layer(shapes, composite):
    """The layer and its sum (compiled once on JAX, reused by every example)."""
    if (shapes, composite) not in _FINITE:
        layer = Render(shapes, 8, channels=1, composite=composite)
        _FINITE[shapes, composite] = layer, jit_for_many_calls(lambda x: ops.sum(layer(x)))
    return _FINITE[shapes, composite]


# ALL: one shape of each kind; COUNTED: several per kind (JAX folds them in a recomputed scan).
@given(data=st.data(), shapes=st.sampled_from([ALL, COUNTED]), composite=st.sampled_from(["over", "union"]))
def test_property_render_values_and_gradients_finite(data, shapes, composite):
    layer, total = _layer(shapes, composite)
    x = data.draw(adversarial_array((1, layer.spec.size)))
    how = data.draw(st.sampled_from(["free", "constant", "tiny directions"]))
    if how == "constant":  # degenerate geometry: everything on one pixel, zero sizes and directions
        x[0, :] = data.draw(st.sampled_from([0.0, 0.5, 1e-30, 1.0]))
    elif how == "tiny directions":  # tiny axes with far points: 1 / |d| gradients
        for s in layer.spec.slices:
            if s.field.kind == "direction":
                x[0, s.slice] = data.draw(st.sampled_from([1e-30, 1e-13, 1e-11, -1e-38]))
            elif s.field.kind == "position":
                x[0, s.slice] = data.draw(st.sampled_from([1e30, -1e12, 0.0]))
    value, (g,) = value_and_grad(total, x)
    assert_finite(f"Render[{composite}]", value, g)


def test_degenerate_parameters_finite_eager():
    layer = Render(ALL, 8, channels=1)
    total = jit_for_many_calls(lambda x: ops.sum(layer(x)))  # eager on TensorFlow and PyTorch
    for fill in (0.0, 1e30):
        x = np.full((1, layer.spec.size), fill, np.float32)
        value, (g,) = value_and_grad(total, x)
        assert_finite(f"Render filled with {fill}", value, g)


@pytest.mark.slow
def test_gallery_writes_png(tmp_path):
    from PIL import Image

    from shapegrad.gallery import primitive_gallery

    path = primitive_gallery(str(tmp_path / "g.png"), resolution=20)
    image = np.asarray(Image.open(path))
    assert image.ndim == 3 and image.shape[2] == 3 and image.shape[0] >= 20
    assert image.max() == 255 and image.min() < 40


# ---- the sharpness knob and non-square images ---------------------------------------------------


def test_sharpness_is_one_over_softness():
    layer = Render("disk,box", 16, softness=1.0)
    x = layer.spec.sample(2, seed=3)
    assert layer.default_sharpness == 1.0 and Render("disk", 8, softness=2.0).default_sharpness == 0.5
    np.testing.assert_allclose(
        to_numpy(layer(x, sharpness=0.5)), to_numpy(Render("disk,box", 16, softness=2.0)(x)), atol=1e-6
    )
    with pytest.raises(TypeError):
        layer(x, softness=2.0)  # the old keyword is gone: one name for the knob


def test_disk_at_the_centre_of_a_non_square_image_is_centred():
    layer = Render("disk", (80, 48))
    assert (layer.resolution, layer.height, layer.width) == ((80, 48), 80, 48)
    image = to_numpy(layer(np.float32([[0.5, 0.5, 0.25, 1.0, 1.0]])))[0, :, :, 0]
    assert image.shape == (80, 48)
    rows, cols = np.mgrid[:80, :48]
    mass = image.sum()
    # Centre (H/2, W/2) = (40, 24) px; radius 0.25 * min(H, W) = 12 px.
    assert (rows * image).sum() / mass == pytest.approx(40.0, abs=1e-3)
    assert (cols * image).sum() / mass == pytest.approx(24.0, abs=1e-3)
    assert mass == pytest.approx(math.pi * 12**2, rel=0.01)


def test_non_square_image_is_a_crop_of_a_square_one():
    """Every kind on (12, 20) draws what a 20 px square image draws in its first 12 rows."""
    h, w = 12, 20
    wide = Render(ALL, (h, w), channels=1)
    square = Render(ALL, w, channels=1)
    x = wide.spec.sample(3, seed=4).astype(np.float64)
    y = x.copy()  # the same shapes in the square image's units
    for s in wide.spec.slices:
        if s.field.kind == "position":
            y[:, s.slice] = x[:, s.slice] * np.tile([h / w, 1.0], s.field.size // 2)
        elif s.field.kind == "size":
            y[:, s.slice] = x[:, s.slice] * h / w
    ours = to_numpy(wide(x.astype("float32")))
    assert ours.shape == (3, h, w, 1)
    np.testing.assert_allclose(ours, to_numpy(square(y.astype("float32")))[:, :h], atol=2e-5)


def test_square_given_as_a_pair_is_the_same_layer():
    x = Render("disk,triangle", 16).spec.sample(2, seed=5)
    a, b = Render("disk,triangle", 16), Render("disk,triangle", (16, 16))
    assert b.resolution == 16 and b.get_config()["resolution"] == 16
    np.testing.assert_array_equal(to_numpy(a(x)), to_numpy(b(x)))


def test_non_square_config_round_trip(tmp_path):
    layer = Render("disk,box", (10, 14), channels=3, softness=1.5)
    config = layer.get_config()
    assert config["resolution"] == [10, 14]
    again = Render.from_config(config)
    assert (again.height, again.width) == (10, 14) and again.get_config() == config
    x = layer.spec.sample(2, seed=6)
    np.testing.assert_allclose(to_numpy(again(x)), to_numpy(layer(x)))
    model = keras.Sequential([keras.Input((layer.spec.size,)), layer])
    model.save(tmp_path / "wide.keras")
    loaded = keras.saving.load_model(tmp_path / "wide.keras")
    assert loaded.output_shape == (None, 10, 14, 3)
    np.testing.assert_allclose(to_numpy(loaded(x)), to_numpy(layer(x)), atol=1e-6)
