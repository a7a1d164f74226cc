"""Coverage and compositing: values against NumPy references, finite gradients, order properties."""

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from keras import ops

from helpers import adversarial_array, assert_finite, check_gradients, to_numpy, value_and_grad
from shapegrad.render import kernels, raster


def test_coverage_filter_width_and_slope(float64):
    for softness in (0.5, 1.0, 3.0):
        c = to_numpy(raster.coverage(np.float64([0.0, -0.55 * softness, 0.55 * softness]), softness))
        np.testing.assert_allclose(c, [0.5, 0.9, 0.1], atol=2e-3)
        _, (g,) = value_and_grad(lambda d: ops.sum(raster.coverage(d, softness)), np.float64([0.0]))
        np.testing.assert_allclose(g, [-1.0 / softness], rtol=1e-12)  # a box filter's slope


def test_coverage_saturates_with_finite_gradients():
    d = np.float32([-1e30, -1e4, 1e4, 1e30, 0.0])
    value, (g,) = value_and_grad(lambda d: ops.sum(raster.coverage(d, 0.0)), d)  # softness 0 -> 1e-6
    assert_finite("coverage", value, g)
    np.testing.assert_array_equal(to_numpy(raster.coverage(d[:4])), [1.0, 1.0, 0.0, 0.0])


def _painter(cov, col, opa, bg):
    """NumPy reference: paint shapes back to front."""
    image = np.broadcast_to(np.asarray(bg, np.float64), cov.shape[:1] + cov.shape[2:] + col.shape[-1:]).copy()
    for k in range(cov.shape[1]):
        a = (cov[:, k] * opa[:, k, None, None])[..., None]
        image = a * col[:, k, None, None, :] + (1 - a) * image
    return image


def _random(rng, b=2, k=3, h=4, c=3):
    return rng.uniform(0, 1, (b, k, h, h)), rng.uniform(0, 1, (b, k, c)), rng.uniform(0, 1, (b, k))


def test_over_matches_painter_and_order_matters(float64):
    rng = np.random.default_rng(0)
    cov, col, opa = _random(rng)
    bg = np.array([0.1, 0.2, 0.3])
    out = to_numpy(raster.over(cov, col, opa, bg))
    np.testing.assert_allclose(out, _painter(cov, col, opa, bg), rtol=1e-12)
    # Lists work like stacked tensors; an opaque shape on top hides the ones below.
    listed = to_numpy(raster.over([cov[:, k] for k in range(3)], [col[:, k] for k in range(3)], [opa[:, k] for k in range(3)], bg))
    np.testing.assert_allclose(listed, out, rtol=1e-12)
    cov[:, 2], opa[:, 2] = 1.0, 1.0
    top = to_numpy(raster.over(cov, col, opa, bg))
    np.testing.assert_allclose(top, np.broadcast_to(col[:, 2, None, None, :], top.shape), rtol=1e-12)
    swapped = to_numpy(raster.over(cov[:, ::-1], col[:, ::-1], opa[:, ::-1], bg))
    assert not np.allclose(swapped, top)


def test_union_is_order_free_and_reduces_to_over_for_one_shape(float64):
    rng = np.random.default_rng(1)
    cov, col, opa = _random(rng)
    out = to_numpy(raster.soft_union(cov, col, opa, 0.25))
    perm = [2, 0, 1]
    np.testing.assert_allclose(to_numpy(raster.soft_union(cov[:, perm], col[:, perm], opa[:, perm], 0.25)), out, rtol=1e-12)
    alpha = 1 - np.prod(1 - cov * opa[..., None, None], axis=1)
    mean = np.einsum("bkhw,bkc->bhwc", cov * opa[..., None, None], col) / np.sum(cov * opa[..., None, None], axis=1)[..., None]
    np.testing.assert_allclose(out, alpha[..., None] * mean + (1 - alpha[..., None]) * 0.25, rtol=1e-9)
    one = (cov[:, :1], col[:, :1], opa[:, :1])
    np.testing.assert_allclose(to_numpy(raster.soft_union(*one, 0.5)), to_numpy(raster.over(*one, 0.5)), rtol=1e-12)


def test_composite_gradients_match_finite_differences(float64):
    rng = np.random.default_rng(2)
    cov, col, opa = _random(rng, b=1, k=3, h=2, c=2)
    for mode in ("over", "union"):
        check_gradients(
            lambda c, k, o: ops.sum(raster.composite(c, k, o, [0.2, 0.7], mode=mode) ** 2), [cov, col, opa], samples=6
        )


def test_composite_rejects_bad_mode_and_counts():
    import pytest

    with pytest.raises(ValueError, match="Received: mode='add'"):
        raster.composite(np.zeros((1, 1, 2, 2)), np.zeros((1, 1, 1)), mode="add")
    with pytest.raises(ValueError, match="one colour per shape"):
        raster.over(np.zeros((1, 2, 2, 2)), np.zeros((1, 1, 1)))


@given(
    cov=hnp.arrays(np.float32, (1, 3, 2, 2), elements=st.sampled_from([0.0, 1.0, 0.5, 1e-30, 1.0 - 2**-24])),
    col=adversarial_array((1, 3, 2), low=-1e6, high=1e6),
    opa=hnp.arrays(np.float32, (1, 3), elements=st.sampled_from([0.0, 1.0, 0.5, 1e-38, 2.0])),
    mode=st.sampled_from(["over", "union"]),
)
def test_property_composite_gradients_finite(cov, col, opa, mode):
    # Exact 0 and 1 coverages (saturated sigmoids) break a cumprod / division formulation.
    value, grads = value_and_grad(lambda a, b, c: ops.sum(raster.composite(a, b, c, 0.5, mode=mode)), cov, col, opa)
    assert_finite(f"{mode} composite", value, *grads)


# ------------------------------------------ channel planes and the fused shape alpha


def test_planes_composite_like_channel_last(float64):
    rng = np.random.default_rng(3)
    cov, col, opa = _random(rng)
    bg = rng.uniform(0, 1, 3)
    for mode in raster.COMPOSITES:
        expected = to_numpy(raster.composite(cov, col, opa, bg, mode=mode))
        background = [np.full((2, 4, 4), b) for b in bg]
        state = raster.start_planes(mode, background)
        for k in range(3):
            alpha = cov[:, k] * opa[:, k, None, None]
            state = raster.paint_planes(mode, state, alpha, [col[:, k, c, None, None] for c in range(3)])
        planes = raster.finish_planes(mode, state, background)
        np.testing.assert_allclose(np.stack([to_numpy(p) for p in planes], axis=-1), expected, rtol=1e-12)


def _kernel_and_params(kind, n, rng):
    from shapegrad.render import sdf

    c = list(rng.uniform(2, n - 2, (2, 1, 2, 1, 1)))
    h = list(rng.uniform(1.5, 3.5, (2, 1, 2, 1, 1)))
    angle = rng.uniform(0, 2 * np.pi, (1, 2, 1, 1))
    u = [np.cos(angle), np.sin(angle)]
    if kind == "disk":
        return kernels.DiskKernel(n, n), c + h[:1]
    if kind == "box":
        return kernels.BoxKernel(n, n), c + h + u + [0.3 * np.minimum(*h)]
    if kind == "ellipse":
        return kernels.EllipseKernel(n, n), c + h + u
    turns = np.sort(rng.uniform(0, 2 * np.pi, (1, 2, 1, 1, 4)), axis=-1)
    r = rng.uniform(1.5, 3.5, (1, 2, 1, 1, 4))
    rows, cols = c[0][..., None] + r * np.cos(turns), c[1][..., None] + r * np.sin(turns)
    return kernels.PolygonKernel(n, n, 4), [v[..., j] for j in range(4) for v in (rows, cols)]


# The kinds with a component kernel in sdf (Render's fast path).
KERNELS = ("disk", "box", "ellipse", "polygon")


@pytest.mark.parametrize("kind", KERNELS)
def test_shape_alpha_gradients_match_finite_differences_float64(kind, float64):
    """The hand-written backward pass of every kernel, with opacity and softness, against float64 differences."""
    n = 8
    rng = np.random.default_rng(len(kind))
    kernel, params = _kernel_and_params(kind, n, rng)
    opacity = rng.uniform(0.3, 1.0, (1, 2, 1, 1))
    weights = ops.convert_to_tensor(rng.normal(size=(1, 2, n, n)))

    def loss(*args):
        return ops.sum(raster.shape_alpha(kernel, args[:-2], args[-2], args[-1]) * weights)

    check_gradients(loss, params + [opacity, np.float64(1.7)], samples=8, rtol=1e-5, atol=1e-8)


def test_shape_alpha_equals_coverage_times_opacity(float64):
    from shapegrad.render import sdf

    rng = np.random.default_rng(0)
    kernel, params = _kernel_and_params("disk", 8, rng)
    opacity = rng.uniform(0, 1, (1, 2, 1, 1))
    d, _ = kernel.forward(*[ops.convert_to_tensor(p) for p in params])
    expected = to_numpy(raster.coverage(d, 0.7)) * opacity
    np.testing.assert_allclose(to_numpy(raster.shape_alpha(kernel, params, opacity, 0.7)), expected, rtol=1e-12)
    assert isinstance(kernel, kernels.DiskKernel)


@pytest.mark.parametrize("kind", KERNELS)
def test_shape_alpha_row_block_fold_gives_the_same_gradients(kind, float64, monkeypatch):
    """The pixel sums folded over 4 row blocks (kernels.row_blocks) equal the unfolded ones, every kernel, float64."""
    import keras

    from shapegrad.render import sdf

    n = 8
    rng = np.random.default_rng(len(kind) + 1)
    kernel, params = _kernel_and_params(kind, n, rng)
    opacity = rng.uniform(0.3, 1.0, (1, 2, 1, 1))
    weights = ops.convert_to_tensor(rng.normal(size=(1, 2, n, n)))
    monkeypatch.setattr(type(kernel), "fold_rows", True)  # the ellipse too, which Render does not fold

    def grads(blocks):
        monkeypatch.setitem(kernels.SUM_BLOCKS, keras.backend.backend(), blocks)
        assert kernels.row_blocks(n) == blocks
        loss = lambda *args: ops.sum(raster.shape_alpha(kernel, args[:-2], args[-2], args[-1]) * weights)  # noqa: E731
        return value_and_grad(loss, *params, opacity, np.float64(1.7))[1]

    for k, (folded, plain) in enumerate(zip(grads(4), grads(1))):
        np.testing.assert_allclose(folded, plain, rtol=1e-12, atol=1e-12, err_msg=f"{kind} argument {k}")


# ------------------------------------------ colours solved from an image (issue 13)


def _shapes_and_image(rng, mode="over", b=2, k=3, h=6, c=3, bg=(0.1, 0.2, 0.3)):
    alphas = rng.uniform(0.05, 0.95, (b, k, h, h))
    colors = rng.uniform(0.1, 0.9, (b, k, c))
    return alphas, colors, to_numpy(raster.composite(alphas, colors, background=bg, mode=mode))


@pytest.mark.parametrize("mode", ["over", "union"])
def test_composite_weights_redraw_the_composite(mode, float64):
    alphas, colors, image = _shapes_and_image(np.random.default_rng(0), mode)
    w, clear = (to_numpy(t) for t in raster.composite_weights(alphas, mode))
    redrawn = np.einsum("bkhw,bkc->bhwc", w, colors) + clear[..., None] * np.float64([0.1, 0.2, 0.3])
    np.testing.assert_allclose(redrawn, to_numpy(image), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(clear, np.prod(1 - alphas, axis=1), rtol=1e-12)


@pytest.mark.parametrize("mode", ["over", "union"])
@pytest.mark.parametrize("iterations", [0, 3])
def test_solve_colors_recovers_the_colours_that_drew_the_image(mode, iterations, float64):
    alphas, colors, image = _shapes_and_image(np.random.default_rng(1), mode)
    solved = to_numpy(raster.solve_colors(alphas, image, background=[0.1, 0.2, 0.3], mode=mode,
                                          iterations=iterations, ridge=0.0))
    # NumPy reference: the normal equations with the ridge's 0.01 floor (pulling toward a prior of 0).
    w, clear = (to_numpy(t).reshape(2, 3, -1) for t in raster.composite_weights(alphas, mode))
    y = to_numpy(image).reshape(2, -1, 3) - clear.reshape(2, -1, 1) * np.float64([0.1, 0.2, 0.3])
    reference = np.linalg.solve(np.einsum("bkn,bln->bkl", w, w) + 0.01 * np.eye(3), np.einsum("bkn,bnc->bkc", w, y))
    # Reweighting only sees the floor's tiny residuals (weights within ~1e-4 of 1).
    np.testing.assert_allclose(solved, reference, atol=1e-9 if iterations == 0 else 1e-4)
    np.testing.assert_allclose(solved, colors, atol=0.02)


def test_solve_colors_reweighting_ignores_pixels_the_geometry_gets_wrong(float64):
    # Shape 0 (colour 0.8) covers the left half; the image also has 4 background pixels inside it.
    alphas = np.zeros((1, 1, 8, 8))
    alphas[0, 0, :, :4] = 1.0
    image = np.where(alphas[0, 0, :, :, None] > 0, 0.8, 0.0)[None]
    image[0, :4, 0] = 0.0
    plain = to_numpy(raster.solve_colors(alphas, image, iterations=0))[0, 0, 0]
    robust = to_numpy(raster.solve_colors(alphas, image, iterations=3))[0, 0, 0]
    assert plain == pytest.approx(0.8 * 28 / 32, abs=1e-3)  # the mean of what is under the shape
    assert abs(robust - 0.8) < 0.02 < abs(plain - 0.8)


def test_solve_colors_keeps_the_prior_of_a_shape_that_shows_nowhere(float64):
    alphas = np.zeros((1, 3, 4, 4))
    alphas[0, 0] = 1.0  # shape 0 everywhere, hidden behind the opaque shape 2; shape 1 empty
    alphas[0, 2] = 1.0
    image = np.full((1, 4, 4, 2), 0.6)
    prior = np.float64([[[0.3, 0.4], [0.5, 0.1], [0.9, 0.9]]])
    solved = to_numpy(raster.solve_colors(alphas, image, prior))
    np.testing.assert_allclose(solved[0, :2], prior[0, :2], atol=1e-12)
    np.testing.assert_allclose(solved[0, 2], [0.6, 0.6], atol=1e-3)  # the ridge: 0.9 weighs 0.015 against 16 px


@pytest.mark.parametrize("mode", ["over", "union"])
def test_solve_colors_gradients_match_finite_differences(mode, float64):
    rng = np.random.default_rng(3)
    alphas, _, image = _shapes_and_image(rng, mode, b=1, k=3, h=4, c=2, bg=(0.1, 0.2))
    image = image + rng.normal(0, 0.05, image.shape)  # residuals: the reweighting's gradient is exercised
    prior = rng.uniform(0.2, 0.8, (1, 3, 2))
    probe = ops.convert_to_tensor(rng.normal(size=(1, 3, 2)))
    check_gradients(
        lambda a, i, p: ops.sum(raster.solve_colors(a, i, p, [0.1, 0.2], mode, iterations=2) * probe),
        [alphas, image, prior], samples=8, rtol=1e-5,
    )


_DEGENERATE_ALPHA = [0.0, 1.0, 0.5, 1e-30, 1e-7, 1.0 - 2**-24]
_SOLVE_STEP = {}  # mode -> compiled (value, solved colours, gradients): one trace per mode, not per example


def _solve_step(mode):
    if mode not in _SOLVE_STEP:
        from shapegrad.ops.autodiff import jit, traced_value_and_grad

        def fn(a, i, p):
            colors = raster.solve_colors(a, i, p, 0.5, mode)
            return ops.sum(colors), colors

        _SOLVE_STEP[mode] = jit(traced_value_and_grad(fn))
    return _SOLVE_STEP[mode]


@given(
    alphas=hnp.arrays(np.float32, (2, 3, 3, 3), elements=st.sampled_from(_DEGENERATE_ALPHA)),
    image=adversarial_array((2, 3, 3, 2), low=-1e30, high=1e30),
    prior=adversarial_array((2, 3, 2), low=-1e30, high=1e30),
    layout=st.sampled_from(["free", "zero", "identical", "covered"]),
    mode=st.sampled_from(["over", "union"]),
)
def test_property_solve_colors_finite_on_degenerate_inputs(alphas, image, prior, layout, mode):
    if layout == "zero":  # no shape anywhere
        alphas = np.zeros_like(alphas)
    elif layout == "identical":  # three copies of one shape
        alphas = np.repeat(alphas[:, :1], 3, axis=1)
    elif layout == "covered":  # the front shape opaque over everything
        alphas = alphas.copy()
        alphas[:, 2] = 1.0
    value, solved, grads = _solve_step(mode)(alphas, image, prior)
    solved = to_numpy(solved)
    assert_finite(f"solve_colors {layout} {mode}", to_numpy(value), solved, *(to_numpy(g) for g in grads))
    if layout == "zero":  # nothing shows: every shape keeps its prior (clipped to [0, 1])
        np.testing.assert_allclose(solved, np.clip(prior, 0, 1), atol=1e-6)


def test_solve_colors_rejects_bad_arguments():
    alphas, image = np.zeros((1, 1, 2, 2), "float32"), np.zeros((1, 2, 2, 1), "float32")
    with pytest.raises(ValueError, match="Received: iterations=-1"):
        raster.solve_colors(alphas, image, iterations=-1)
    with pytest.raises(ValueError, match="Received: scale=0"):
        raster.solve_colors(alphas, image, scale=0)
    with pytest.raises(ValueError, match="Received: ridge=-0.1"):
        raster.solve_colors(alphas, image, ridge=-0.1)
    with pytest.raises(ValueError, match="Received: mode='add'"):
        raster.solve_colors(alphas, image, mode="add")


@pytest.mark.parametrize("mode", ["over", "union"])
def test_paint_planes_folded_colour_gradient_is_the_plain_one(mode, float64, monkeypatch):
    """The row-block fold of the colour's pixel sum (TensorFlow's, forced here on every backend) changes no gradient."""
    from shapegrad.render import sdf

    rng = np.random.default_rng(5)
    alpha, weights = rng.uniform(0, 1, (2, 8, 8)), rng.normal(size=(3, 2, 8, 8))
    colors = [rng.uniform(0, 1, (2, 1, 1)) for _ in range(3)]
    state = raster.start_planes(mode, [rng.uniform(0, 1, (2, 8, 8)) for _ in range(3)])

    def loss(alpha, *colors):
        planes = raster.paint_planes(mode, state, alpha, colors)
        return sum(ops.sum(p * ops.convert_to_tensor(w)) for p, w in zip(planes[-3:], weights))

    results = {}
    for blocks in (1, 4):
        from keras import backend

        monkeypatch.setattr(kernels, "SUM_BLOCKS", {backend.backend(): blocks})
        monkeypatch.setattr(raster, "_COLOR_SUM_BLOCKS", {backend.backend(): blocks})
        results[blocks] = value_and_grad(loss, alpha, *colors)
    np.testing.assert_allclose(results[4][0], results[1][0], rtol=1e-12)
    for folded, plain in zip(results[4][1], results[1][1]):
        np.testing.assert_allclose(folded, plain, rtol=1e-12, atol=1e-12)
    # and against finite differences (a kink-free function of alpha and the colours)
    check_gradients(loss, [alpha] + colors)


def _over_planes_inputs(rng, k=3, c=3, b=2, h=8):
    alphas = rng.uniform(0, 1, (k, b, h, h))
    alphas[0, 0, :2], alphas[1, 1, 3:5] = 1.0, 0.0  # opaque and empty pixels
    colors = rng.uniform(0, 1, (k * c, b, 1, 1))
    background = rng.uniform(0, 1, (c, b, h, h))
    weights = rng.normal(size=(b, h, h, c))
    return list(alphas) + list(colors) + list(background), weights


def _composite_loss(weights, k, c, fused):
    """sum(weights * image) of over_planes, or of paint_planes folded over the shapes and stacked."""

    def loss(*args):
        alphas, flat, background = args[:k], args[k : k + k * c], args[k + k * c :]
        colors = [flat[i * c : (i + 1) * c] for i in range(k)]
        if fused:
            image = raster.over_planes(alphas, colors, background)
        else:
            state = raster.start_planes("over", background)
            for a, rgb in zip(alphas, colors):
                state = raster.paint_planes("over", state, a, rgb)
            image = ops.stack(raster.finish_planes("over", state, background), axis=-1)
        return ops.sum(image * ops.convert_to_tensor(weights))

    return loss


@pytest.mark.parametrize("blocks", [1, 4])
def test_over_planes_is_the_fold_of_paint_planes(blocks, float64, monkeypatch):
    """The fused op's image and hand-written gradient are autodiff's through the fold (row blocks forced)."""
    from keras import backend

    from shapegrad.render import sdf

    monkeypatch.setattr(kernels, "SUM_BLOCKS", {backend.backend(): blocks})
    monkeypatch.setattr(raster, "_COLOR_SUM_BLOCKS", {backend.backend(): blocks})
    args, weights = _over_planes_inputs(np.random.default_rng(7))
    fused = value_and_grad(_composite_loss(weights, 3, 3, True), *args)
    plain = value_and_grad(_composite_loss(weights, 3, 3, False), *args)
    np.testing.assert_allclose(fused[0], plain[0], rtol=1e-12)
    for k, (f, p) in enumerate(zip(fused[1], plain[1])):
        assert f.shape == np.shape(args[k])
        np.testing.assert_allclose(f, p, rtol=1e-10, atol=1e-12, err_msg=f"argument {k}")
    check_gradients(_composite_loss(weights, 3, 3, True), args)


def test_over_planes_values_match_the_numpy_painter():
    rng = np.random.default_rng(8)
    cov, col, opa = _random(rng, b=2, k=3, h=5, c=2)
    alphas = [(cov[:, k] * opa[:, k, None, None]).astype("float32") for k in range(3)]
    colors = [[col[:, k, c, None, None].astype("float32") for c in range(2)] for k in range(3)]
    image = to_numpy(raster.over_planes(alphas, colors, [np.full((2, 5, 5), 0.25, "float32")] * 2))
    np.testing.assert_allclose(image, _painter(cov, col, opa, 0.25), atol=1e-6)


@given(
    st.lists(st.sampled_from([0.0, 1.0, 1e-30, 1e-7, 0.5, 1.0 - 1e-7]), min_size=2 * 4 * 4 * 2, max_size=2 * 4 * 4 * 2),
    st.lists(st.sampled_from([0.0, 1.0, 1e-30, 0.3]), min_size=2 * 2 * 2, max_size=2 * 2 * 2),
)
def test_property_over_planes_finite_at_degenerate_alphas(alpha_values, color_values):
    """Opaque, empty and nearly so: the fused op's values and gradients are finite (multiply-adds only)."""
    alphas = list(np.float32(alpha_values).reshape(2, 2, 4, 4))
    flat = list(np.float32(color_values).reshape(4, 2, 1, 1))
    background = [np.full((2, 4, 4), 0.5, "float32")] * 2
    weights = np.ones((2, 4, 4, 2), "float32")
    value, grads = value_and_grad(_composite_loss(weights, 2, 2, True), *alphas, *flat, *background)
    assert_finite("over_planes", value, *grads)


def test_over_planes_gradients_of_broadcast_colours_and_background(float64):
    """Scalar colours and a (1, 1, 1) background broadcast against (B, H, W): gradients keep their shapes."""
    rng = np.random.default_rng(9)
    alphas = [rng.uniform(0, 1, (2, 4, 4)) for _ in range(2)]
    colors, background = [np.float64(0.3), np.float64(0.8)], np.full((1, 1, 1), 0.5)
    weights = rng.normal(size=(2, 4, 4, 1))

    def loss(a0, a1, c0, c1, bg):
        return ops.sum(raster.over_planes([a0, a1], [[c0], [c1]], [bg]) * ops.convert_to_tensor(weights))

    _, grads = value_and_grad(loss, *alphas, *colors, background)
    assert [np.shape(g) for g in grads] == [(2, 4, 4), (2, 4, 4), (), (), (1, 1, 1)]
    check_gradients(loss, alphas + colors + [background])
