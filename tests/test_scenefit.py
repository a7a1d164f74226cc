"""The scene fitter: one compiled loop, unknown kinds and count, depth order, bad input.

Scenes here are drawn by scikit-image (an independent, hard-edged rasterizer), with this file's own
seeds and layouts: the benchmark (benchmarks/fit_scenes.py) uses other scenes.
"""

import keras
import numpy as np
import pytest
from skimage.draw import disk, ellipse, polygon

from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from helpers import BACKEND, adversarial_array, assert_finite, check_gradients, jit, to_numpy, value_and_grad
from shapegrad.ops import autodiff as _autodiff
from shapegrad.fit.engine import _OPACITY_GAIN, Scene, SceneEngine, _opacity
from shapegrad.fit.search import SceneFit, _check_starts, fit_scene
from shapegrad.fit.starts import noise_level

# Few steps, tiny images: enough for these scenes, fast on every backend.
QUICK = dict(steps=40, joint_steps=40, order_steps=30, polish_steps=40)
COMPILES = BACKEND in ("jax", "tensorflow")


def _canvas(size=(24, 24), background=(0.1, 0.15, 0.2)):
    return np.broadcast_to(np.float32(background), size + (3,)).copy()


def _disk(image, center, radius, color):
    rr, cc = disk(center, radius, shape=image.shape[:2])
    image[rr, cc] = color


def _box(image, top, left, bottom, right, color):
    rr, cc = polygon([top, top, bottom, bottom], [left, right, right, left], shape=image.shape[:2])
    image[rr, cc] = color


def _disk_params(row, col, radius, color, n=16):
    return np.array([row / n, col / n, radius / n, *color, 1.0], "float32")


def assert_fit_draws(fit, image, mae=0.02, off=0.02):
    """The fit's drawing against the hard-edged target: mean absolute error over the pixels and channels, and
    the fraction of pixels whose colour is off by more than 0.25 in some channel (antialiased edge pixels
    differ from scikit-image's hard ones; a missed, extra or misplaced shape moves whole regions). The fits
    here reach a mean error of 0.003-0.009 and at most 0.7 % of pixels off (JAX); a disk 1 px off or a
    missed shape of 20 pixels exceeds the bounds."""
    diff = np.abs(np.asarray(fit.render(), np.float64) - image)
    got_mae, got_off = diff.mean(), (diff.max(axis=-1) > 0.25).mean()
    assert got_mae < mae and got_off < off, (got_mae, got_off)


def test_traced_value_and_grad_inside_jit_matches_value_and_grad():
    def fn(x, y):
        return keras.ops.sum(keras.ops.sin(x) * y), x * 2.0

    grad = _autodiff.traced_value_and_grad(fn, wrt=1)
    x = np.linspace(-1, 1, 5).astype("float32")
    value, aux, (gx,) = jit(lambda a, b: grad(a, b))(x, np.float32(3.0))
    expected, _, (ex, _) = _autodiff.value_and_grad_with_aux(fn, x, np.float32(3.0))
    np.testing.assert_allclose(keras.ops.convert_to_numpy(gx), ex, rtol=1e-5)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(value), expected, rtol=1e-5)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(aux), 2 * x)


def test_engine_is_traced_once_for_any_scenes_steps_and_chunks():
    engine = SceneEngine(("disk", "box"), 16, 16, 3, max_depth=2, batch=2, instances=2)
    red, blue = (0.9, 0.1, 0.1), (0.1, 0.2, 0.9)
    box = np.array([0.5, 0.6, 0.2, 0.15, 1.0, 0.0, 0.01, *blue, 1.0], "float32")
    truth = [
        Scene([("disk", _disk_params(6, 6, 3, red))], np.float32([0.0, 0.0, 0.0])),
        Scene([("box", box), ("disk", _disk_params(8, 9, 3, red))], np.float32([0.2, 0.2, 0.2])),
        Scene([("disk", _disk_params(8, 9, 3, red)), ("box", box)], np.float32([0.2, 0.2, 0.2])),
    ]
    images = engine.render(truth, sharpness=2.0)  # three items, batch 2: two chunks
    assert images.shape == (3, 16, 16, 3) and images.dtype == np.float32
    assert not np.allclose(images[1], images[2])  # the depth order changes the picture
    fitted, loss, recon = engine.fit(truth, images, steps=3, sharpness=(2.0, 2.0))
    fitted, loss, recon = engine.fit(truth[::-1], images[::-1], steps=7, learning_rate=0.01)
    assert loss.shape == (3,) and np.isfinite(loss).all() and recon.shape == images.shape
    if COMPILES:
        assert engine.traces == 1 and engine.paint_traces == 1  # the loop, and render's forward-only program
    for scene in fitted:
        for _, params in scene.shapes:
            assert params.dtype == np.float32 and np.isfinite(params).all()


def test_engine_refines_independent_items_and_keeps_frozen_shapes():
    engine = SceneEngine(("disk",), 16, 16, 1, max_depth=2, batch=2)
    truth = [
        Scene([("disk", _disk_params(6, 7, 3, (1.0,))), ("disk", _disk_params(10, 9, 3, (0.5,)))], np.zeros(1, "f")),
        Scene([("disk", _disk_params(9, 8, 4, (0.8,)))], np.zeros(1, "f")),
    ]
    images = engine.render(truth, sharpness=2.0)
    start = [
        Scene([("disk", _disk_params(6.5, 6.5, 2.5, (0.7,))), ("disk", truth[0].shapes[1][1])], np.zeros(1, "f")),
        Scene([("disk", _disk_params(8.5, 8.5, 3.5, (0.6,)))], np.zeros(1, "f")),
    ]
    fitted, loss, _ = engine.fit(start, images, steps=200, sharpness=(1.0, 2.0), train=[{0}, {0}])
    assert loss.max() < 1e-4
    for got, want in zip(fitted, truth):
        np.testing.assert_allclose(got.shapes[0][1][:3] * 16, want.shapes[0][1][:3] * 16, atol=0.1)
    np.testing.assert_allclose(fitted[0].shapes[1][1], truth[0].shapes[1][1], atol=1e-6)  # not trained


@pytest.mark.slow  # the whole search
def test_unknown_count_and_kinds_of_skimage_scenes_and_the_simpler_kind():
    """Count and kinds unknown; a drawn disk is reported as a disk although an ellipse fits it as well
    (the rule for a simpler kind), and an elongated ellipse as an ellipse."""
    one, two, three = _canvas(), _canvas(), _canvas()
    _disk(one, (12, 11), 6, (0.9, 0.8, 0.2))
    _box(two, 3, 3, 11, 13, (0.2, 0.8, 0.3))
    _disk(two, (16, 15), 5, (0.9, 0.2, 0.6))
    rr, cc = ellipse(12, 12, 8, 4.5, shape=three.shape[:2], rotation=0.6)
    three[rr, cc] = (0.8, 0.5, 0.9)
    fits = fit_scene(np.stack([one, two, three]), kinds=("disk", "box", "ellipse"), max_shapes=3, **QUICK)
    assert [f.kinds for f in fits[::2]] == [("disk",), ("ellipse",)]
    assert sorted(fits[1].kinds) == ["box", "disk"]
    for fit, image in zip(fits, (one, two, three)):
        assert fit.psnr > 25 and fit.params.dtype == np.float32 and np.isfinite(fit.params).all()
        assert_fit_draws(fit, image)
        assert fit.renderer().spec.size == fit.params.size


def test_a_start_is_continued_its_missed_shape_added_its_background_coloured_shape_dropped():
    """Fast (one small image, two kinds): from a guessed disk a few px off and a box of the background's
    colour, the search drops the box, moves the disk and adds the box it missed."""
    background = (0.1, 0.15, 0.2)
    image = _canvas((20, 20), background)
    _disk(image, (6, 6), 4, (0.9, 0.8, 0.2))
    _box(image, 10, 9, 17, 18, (0.2, 0.8, 0.3))
    guess = ("disk", np.array([7.5 / 20, 7.0 / 20, 3.0 / 20, 0.7, 0.6, 0.3, 1.0], "float32"))
    carving = ("box", np.array([0.7, 0.25, 0.2, 0.2, 1.0, 0.0, 0.0, *background, 1.0], "float32"))
    (fit,) = fit_scene(image[None], kinds="disk,box", max_shapes=2, starts=[[carving, guess]],
                       **QUICK)
    assert sorted(fit.kinds) == ["box", "disk"] and fit.psnr > 25, fit.psnr
    assert_fit_draws(fit, image)


@pytest.mark.slow  # a whole search
def test_starts_are_continued_missed_shapes_added_background_coloured_ones_dropped():
    """The search goes on from given shapes: a missed box is added next to a guessed disk; a given box of
    the background's colour (it only carves) is dropped; a SceneFit and None (start empty) are starts too."""
    background = (0.1, 0.15, 0.2)
    missed, spurious, empty = _canvas(), _canvas(), _canvas()
    _disk(missed, (7, 7), 4.5, (0.9, 0.8, 0.2))
    _box(missed, 12, 11, 20, 21, (0.2, 0.8, 0.3))
    _disk(spurious, (12, 12), 5, (0.9, 0.2, 0.6))
    _disk(empty, (10, 13), 5, (0.3, 0.9, 0.9))
    guess = ("disk", np.array([8.5 / 24, 8.0 / 24, 3.5 / 24, 0.7, 0.6, 0.3, 1.0], "float32"))  # a few px off
    carving = ("box", np.array([0.25, 0.25, 0.3, 0.3, 1.0, 0.0, 0.0, *background, 1.0], "float32"))
    disk = ("disk", np.array([0.5, 0.5, 0.2, 0.9, 0.2, 0.6, 1.0], "float32"))
    earlier = SceneFit("disk", disk[1], np.float32(background), 24, 24, 3, 1.0, 0.0, 0.0, 0.0)
    images = [missed, spurious, empty]  # three 24 x 24 images, as above: the same compiled engine
    fits = fit_scene(np.stack(images), kinds=("disk", "box", "ellipse"), max_shapes=3,
                     starts=[[guess], [carving, disk], None], **QUICK)
    assert sorted(fits[0].kinds) == ["box", "disk"]
    assert [f.kinds for f in fits[1:]] == [("disk",)] * 2
    for fit, image in zip(fits, images):
        assert fit.psnr > 25
        assert_fit_draws(fit, image)
    # A SceneFit is read as its shapes and background (the same start as [disk], with that background).
    (scene,) = _check_starts([earlier], [spurious], ("disk", "box"), 3, None)
    assert [k for k, _ in scene.shapes] == ["disk"] and np.array_equal(scene.shapes[0][1], disk[1])
    np.testing.assert_array_equal(scene.background, np.float32(background))


@pytest.mark.parametrize(
    "starts, message",
    [
        ([None, None], "Received: starts of 2"),
        ("disk", "Received: starts of str"),
        ([3.0], "Received: starts[0]=float"),
        ([[("triangle", np.zeros(10))]], "starts[0][0]"),
        ([[("disk", np.zeros(3))]], "Received: params of shape (3,)"),
        ([[("disk", np.full(5, np.nan))]], "Received: params of shape (5,)"),
        ([[("disk", np.zeros(5))] * 3], "Received: 3 shapes"),
        ([SceneFit("disk", np.zeros(7, "float32"), np.zeros(3, "float32"), 8, 8, 3, 1.0, 0.0, 0.0, 0.0)],
         "Received: a SceneFit of 8x8x3"),
    ],
)
def test_bad_starts_raise_keras_style_errors(starts, message):
    with pytest.raises(ValueError, match="Expected") as info:
        fit_scene(np.zeros((1, 8, 8, 1)), kinds="disk", max_shapes=2, starts=starts)
    assert message in str(info.value)


@pytest.mark.slow  # the whole search
def test_known_shapes_and_occlusion_order():
    # The disk over the box, and the box over the disk: the same two shapes, the other way round.
    disk_on_top, box_on_top = _canvas(), _canvas()
    for image, order in ((disk_on_top, "box disk"), (box_on_top, "disk box")):
        for kind in order.split():
            if kind == "box":
                _box(image, 5, 5, 15, 15, (0.9, 0.9, 0.9))
            else:
                _disk(image, (15, 15), 5.5, (0.9, 0.1, 0.1))
    fits = fit_scene([disk_on_top, box_on_top], shapes="disk,box", **QUICK)
    assert [f.shapes for f in fits] == ["box,disk", "disk,box"]
    assert all(f.psnr > 25 for f in fits)


def test_noise_level_reads_noise_and_ignores_hard_edges():
    rng = np.random.default_rng(3)
    clean = _canvas((40, 40))
    _box(clean, 8, 8, 30, 25, (0.8, 0.3, 0.5))
    assert noise_level(clean[None])[0] == pytest.approx(1 / 255)
    noisy = clean + rng.normal(0, 0.05, clean.shape).astype("float32")
    assert noise_level(noisy[None])[0] == pytest.approx(0.05, rel=0.15)


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda: fit_scene(np.zeros((1, 8, 8, 1)), kinds=("circle",)), "Received: kinds=('circle',)"),
        (lambda: fit_scene(np.zeros((1, 8, 8, 1)), kinds="disk,disk"), "Received: kinds=('disk', 'disk')"),
        (lambda: fit_scene(np.zeros((1, 8, 8, 1)), max_shapes=0), "Received: max_shapes=0"),
        (lambda: fit_scene(np.zeros((1, 8, 8, 1)), shapes="disk*x"), "Received: shapes='disk*x'"),
        (lambda: fit_scene(np.zeros((8, 8))), "Received: images"),
        (lambda: fit_scene([np.full((8, 8, 1), np.nan)]), "Received: shape=(8, 8, 1)"),
        (lambda: fit_scene(np.zeros((1, 8, 8, 1)), speed=3), "Received: ['speed']"),
        (lambda: fit_scene(np.zeros((1, 8, 8, 1)), rounds=-1), "Received: rounds=-1"),
        (lambda: fit_scene(np.zeros((1, 8, 8, 1)), rounds=0.5), "Received: rounds=0.5"),
        (lambda: fit_scene(np.zeros((1, 8, 8, 1)), shapes="disk", kinds="box"), "Received: shapes='disk', kinds='box'"),
        (lambda: fit_scene(np.zeros((1, 8, 8, 1)), shapes="disk", max_shapes=2), "Received: shapes='disk', max_shapes=2"),
        (lambda: SceneEngine(("disk",), 8, 8, 1, max_depth=0, batch=1), "Received: max_depth=0"),
        (lambda: SceneEngine(("disk",), 8, 8, 1, max_depth=1, batch=1, loop="fast"), "Received: loop='fast'"),
    ],
)
def test_bad_arguments_raise_keras_style_errors(call, message):
    with pytest.raises(ValueError, match="Expected") as info:
        call()
    assert message in str(info.value)


def test_engine_checks_images_and_scenes():
    engine = SceneEngine(("disk",), 8, 8, 1, max_depth=1, batch=1)
    scene = Scene([("disk", _disk_params(4, 4, 2, (1.0,), n=8))], np.zeros(1, "float32"))
    with pytest.raises(ValueError, match=r"Received: images.shape=\(1, 8, 8, 3\)"):
        engine.fit([scene], np.zeros((1, 8, 8, 3)))
    with pytest.raises(ValueError, match="Received: steps=-1"):
        engine.fit([scene], np.zeros((1, 8, 8, 1)), steps=-1)
    two = Scene(scene.shapes * 2, scene.background)
    with pytest.raises(ValueError, match="max_depth=1"):
        engine.fit([two], np.zeros((1, 8, 8, 1)))


def test_opacity_is_exactly_one_when_held_and_matches_float64_finite_differences(float64):
    """The engine's opacity ``free sigmoid(G raw) + (1 - free) held``: held (free 0) exactly its value (1, or
    0.5) with gradient exactly 0; free, autodiff matches float64 central differences and the closed form
    ``G s (1 - s)``."""
    raw = np.array([[-2.0], [-0.3], [0.0], [0.7], [1.5]], np.float64)
    held, free, one = np.zeros_like(raw), np.ones_like(raw), np.ones_like(raw)
    value, (grad,) = value_and_grad(lambda r: keras.ops.sum(_opacity(r, held, one)), raw)
    assert float(value) == raw.size and (np.asarray(grad) == 0.0).all()
    value, (grad,) = value_and_grad(lambda r: keras.ops.sum(_opacity(r, held, 0.5 * one)), raw)
    assert float(value) == 0.5 * raw.size and (np.asarray(grad) == 0.0).all()
    check_gradients(lambda r: keras.ops.sum(_opacity(r, free, one)), [raw], rtol=1e-6)
    _, (grad,) = value_and_grad(lambda r: keras.ops.sum(_opacity(r, free, one)), raw)
    s = 1.0 / (1.0 + np.exp(-_OPACITY_GAIN * raw))
    np.testing.assert_allclose(np.asarray(grad), _OPACITY_GAIN * s * (1 - s), rtol=1e-9)


@given(raw=adversarial_array((4, 1)), free=hnp.arrays(np.float32, (4, 1), elements=st.sampled_from([0.0, 1.0])))
def test_property_opacity_and_its_gradient_are_finite_and_in_range(raw, free):
    held = np.full_like(free, 0.25)
    value, (grad,) = value_and_grad(lambda r: keras.ops.sum(_opacity(r, free, held)), raw)
    assert_finite("opacity", value, grad)
    o = to_numpy(_opacity(raw, free, held))
    assert ((o >= 0) & (o <= 1)).all() and (o[free == 0] == 0.25).all()


def test_engine_fits_a_translucent_shape_and_holds_opacity_at_one_when_told():
    """A disk at opacity 0.7 over a box: only where it overlaps the box does its opacity show (over the flat
    background a dimmer opaque colour draws the same), and the engine finds it there; with
    ``opacity=False`` it is held at exactly 1."""
    engine = SceneEngine(("disk", "box"), 16, 16, 3, max_depth=2, batch=2)
    box = np.array([0.4, 0.4, 0.2, 0.2, 1.0, 0.0, 0.0, 0.2, 0.8, 0.3, 1.0], "float32")
    translucent = np.array([0.6, 0.6, 0.25, 0.9, 0.2, 0.6, 0.7], "float32")
    truth = Scene([("box", box), ("disk", translucent)], np.float32([0.1, 0.15, 0.2]))
    image = engine.render([truth], sharpness=2.0, opacity=True)
    start = truth.copy()
    start.shapes[1] = ("disk", np.array([0.58, 0.62, 0.23, 0.7, 0.3, 0.5, 1.0], "float32"))
    fitted, loss, _ = engine.fit([start, start], np.concatenate([image, image]), steps=150,
                                 sharpness=(1.0, 2.0), opacity=[True, False])
    (_, free), (_, held) = fitted[0].shapes[1], fitted[1].shapes[1]
    assert abs(free[-1] - 0.7) < 0.05, free
    np.testing.assert_allclose(free[3:6], [0.9, 0.2, 0.6], atol=0.05)
    assert held[-1] == 1.0 and loss[0] < 1e-4 < loss[1]
    for scene in fitted:
        for _, params in scene.shapes:
            assert np.isfinite(params).all() and (params[-4:] >= 0).all() and (params[-4:] <= 1).all()


def test_fit_scene_finds_a_translucent_disk_over_a_box():
    """A scikit-image scene: a disk of opacity 0.7 half over a box. The polish fits the opacity (0.7 within
    0.05) and keeps it, as the translucent fit earns its parameter; opaque, the overlap's colour is wrong."""
    background = np.float32([0.1, 0.15, 0.2])
    image = _canvas((24, 24), tuple(background))
    _box(image, 3, 3, 13, 13, (0.2, 0.8, 0.3))
    rr, cc = disk((14, 14), 7, shape=image.shape[:2])
    color = np.float32([0.9, 0.2, 0.6])
    image[rr, cc] = 0.7 * color + 0.3 * image[rr, cc]
    (fit,) = fit_scene(image[None], kinds="disk,box", max_shapes=2, **dict(QUICK, polish_steps=100))
    assert fit.kinds == ("box", "disk"), fit.kinds
    disk_params = fit.params[-7:]
    assert abs(disk_params[-1] - 0.7) < 0.05, disk_params
    assert fit.psnr > 30, fit.psnr
    assert_fit_draws(fit, image)


def _two_disks_on_one_and_a_missed_box():
    """A 20 x 20 image of a disk and a box far apart, and a start of two disks on the disk, none on the box."""
    image = _canvas((20, 20))
    _disk(image, (5, 5), 3.5, (0.9, 0.8, 0.2))
    _box(image, 12, 12, 18, 18, (0.2, 0.8, 0.3))  # far from the disk: no shape there to slide onto it
    twice = [("disk", np.array([5.5 / 20, 5.0 / 20, 3.5 / 20, 0.9, 0.8, 0.2, 1.0], "float32")),
             ("disk", np.array([4.5 / 20, 5.5 / 20, 3.0 / 20, 0.9, 0.8, 0.2, 1.0], "float32"))]
    return image, twice


def test_a_shape_pruned_as_redundant_frees_its_place_for_a_missed_one():
    """Issue 13 (29 of the 256 benchmark scenes): a start with two shapes on one (the joint fit cannot move
    a guess across the image) and the other shape missed. The search is full, so it adds nothing; the
    pruning drops the redundant shape; then the forward step runs again and adds the missed box."""
    image, twice = _two_disks_on_one_and_a_missed_box()
    (fit,) = fit_scene(image[None], kinds="disk,box", max_shapes=2, starts=[twice], **QUICK)
    assert sorted(fit.kinds) == ["box", "disk"] and fit.psnr > 25, (fit.kinds, fit.psnr)
    assert_fit_draws(fit, image)


@pytest.mark.slow  # a second whole search of the case above
def test_without_a_second_forward_step_the_missed_shape_stays_missed():
    """``rounds=0`` (the search before issue 13's fix): the same start ends with one shape, so the case
    above does exercise the second forward step."""
    image, twice = _two_disks_on_one_and_a_missed_box()
    (fit,) = fit_scene(image[None], kinds="disk,box", max_shapes=2, starts=[twice], rounds=0, **QUICK)
    assert fit.kinds == ("disk",), fit.kinds
