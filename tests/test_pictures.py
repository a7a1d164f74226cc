"""fit_picture: a count or a time budget of shapes on any picture."""

import numpy as np
import pytest
from skimage.draw import disk, polygon

from helpers import to_numpy
from shapegrad import Render
from shapegrad.fit.pictures import PictureFit, fit_picture


def psnr_of(image, target):
    return 10 * np.log10(1.0 / max(float(np.mean(np.square(np.asarray(image, np.float64) - target))), 1e-10))


def picture(h=40, w=56):
    """A non-square picture of a triangle, a disk and a smooth ramp: no count of shapes draws it exactly."""
    rows, cols = np.mgrid[0:h, 0:w]
    image = np.stack([0.6 + 0.3 * rows / h, 0.5 + 0.2 * cols / w, 0.7 - 0.3 * rows / h], axis=-1).astype("float32")
    rr, cc = polygon([4, h - 4, h - 4], [w // 2, 4, w - 4], shape=(h, w))
    image[rr, cc] = (0.8, 0.2, 0.1)
    rr, cc = disk((h * 0.6, w * 0.5), h / 5, shape=(h, w))
    image[rr, cc] = (0.1, 0.2, 0.7)
    return image


QUICK = dict(steps=20, final_steps=10, refine_every=4, refine_steps=5, candidates=4, windows=2)


def test_count_is_exact_and_the_error_falls_shape_by_shape():
    image = picture()
    result = fit_picture(image, "triangle", count=6, seed=0, **QUICK)
    assert isinstance(result, PictureFit)
    assert result.count == 6 and result.kinds == ("triangle",) * 6 and result.stopped == "count"
    assert result.history.shape == (6,)
    flat = psnr_of(np.broadcast_to(image.reshape(-1, 3).mean(0), image.shape), image)
    assert result.history[0] > flat and np.all(np.diff(result.history) > -0.05)
    # The result draws what the fit measured: Render of its parameters gives its PSNR.
    drawn = result.render()
    assert drawn.shape == image.shape
    # Its renderer draws the run of triangles as one group (one compiled group, not six), as six would.
    assert result.renderer().shapes == (("triangle", 6),)
    apart = Render("triangle," * 5 + "triangle", (40, 56), channels=3, background=result.background.tolist(),
                   softness=1.0 / result.sharpness)
    np.testing.assert_allclose(to_numpy(apart(result.params[None]))[0], drawn, atol=1e-5)
    assert abs(psnr_of(drawn, image) - result.psnr) < 0.05
    assert result.psnr >= result.history[-1] - 0.05


@pytest.mark.slow  # six engines of new sizes; the host-side composition it checks is the same on every backend
def test_each_shape_refined_in_its_window_sees_the_picture_exactly():
    # White-box: the refinement fits each shape alone in a window between the image of the shapes under it and
    # the affine map of those above it, both composed on the host from each shape's map. Drawn by the engine
    # that refines it, every window must be the canvas there, or the refinement optimises another picture.
    from shapegrad.fit import pictures
    from shapegrad.fit.engine import Scene

    fit = pictures._Picture(picture(96, 128), ("triangle",), 16, None, None, 0, None,
                            dict(pictures.PICTURE_DEFAULTS, **QUICK, window=16))
    fit.run()
    windows = {i: fit._window(fit.maps[i][0]) for i in range(len(fit.shapes))}
    assert len({None if w is None else w[0] for w in windows.values()}) >= 2  # two sizes of window at least
    below, above = fit._contexts(windows)
    for i, window in windows.items():
        kind, params = fit.shapes[i]
        if window is not None:
            params = fit._to_window(kind, params, *window)
            back = fit._to_image(kind, params, 1, window[1], window[2], window[0])
            np.testing.assert_allclose(back, fit.shapes[i][1], atol=1e-6)
        scene = Scene([(kind, params)], fit.background, below=below[i], above=above[i])
        drawn = fit._refine_engine(None if window is None else window[0]).render(
            [scene], sharpness=fit.o["sharpness"], opacity="held")[0]
        np.testing.assert_allclose(drawn, fit._crop(fit.canvas, window), atol=2e-5)
    # Shapes refined side by side do not overlap.
    for part in fit._independent_sets(range(len(fit.shapes))):
        boxes = [fit.maps[i][0] for i in part]
        assert not any(pictures._overlap(a, b) for k, a in enumerate(boxes) for b in boxes[k + 1 :])


def test_same_seed_same_shapes():
    image = picture()
    a = fit_picture(image, "triangle", count=3, seed=3, **QUICK)
    b = fit_picture(image, "triangle", count=3, seed=3, **QUICK)
    np.testing.assert_array_equal(a.params, b.params)


def test_fixed_opacity_is_held_and_fitted_opacity_moves():
    image = picture()
    held = fit_picture(image, "triangle", count=4, opacity=0.5, seed=0, **QUICK)
    np.testing.assert_array_equal(held.params.reshape(4, -1)[:, -1], 0.5)
    opaque = fit_picture(image, "triangle", count=4, opacity=1.0, seed=0, **QUICK)
    np.testing.assert_array_equal(opaque.params.reshape(4, -1)[:, -1], 1.0)
    free = fit_picture(image, "triangle", count=4, seed=0, **QUICK)
    alpha = free.params.reshape(4, -1)[:, -1]
    assert np.all((alpha > 0) & (alpha <= 1)) and len(set(alpha.round(4))) > 1


@pytest.mark.slow  # three kinds' engines; fit_picture itself runs on every backend in the tests around it
def test_mixed_kinds_and_grey():
    image = picture().mean(axis=-1, keepdims=True)
    result = fit_picture(image, "triangle,ellipse,box", count=5, seed=0, **QUICK)
    assert result.count == 5 and set(result.kinds) <= {"triangle", "ellipse", "box"}
    assert result.channels == 1 and abs(psnr_of(result.render(), image) - result.psnr) < 0.05


def test_a_time_budget_stops_adding():
    # A round that starts inside the budget finishes (a few shapes at most); none starts after it.
    result = fit_picture(picture(), "triangle", seconds=1e-3, seed=0, **QUICK)
    assert result.stopped == "seconds" and result.count < 4 and len(result.history) == result.count
    result = fit_picture(picture(), "triangle", seconds=1e-3, count=30, seed=0, **QUICK)
    assert result.stopped == "seconds" and result.count < 4


def test_one_colour_needs_no_shape():
    image = np.full((40, 56, 3), (0.2, 0.4, 0.6), "float32")
    result = fit_picture(image, "triangle", count=5, seed=0, **QUICK)
    assert result.count == 0 and result.stopped == "no gain" and result.psnr > 60
    np.testing.assert_allclose(result.background, (0.2, 0.4, 0.6), atol=1e-5)
    assert result.renderer() is None and result.render().shape == image.shape


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(count=0), "count"),
        (dict(count=-2), "count"),
        (dict(count=2.5), "count"),
        (dict(seconds=-1), "seconds"),
        (dict(seconds=float("nan")), "seconds"),
        (dict(), "count or seconds"),
        (dict(count=2, opacity=0.0), "opacity"),
        (dict(count=2, opacity=1.5), "opacity"),
        (dict(count=2, kinds="hexagon"), "kinds"),
        (dict(count=2, steps=0), "steps"),
        (dict(count=2, sharpness=0), "sharpness"),
        (dict(count=2, speed=3), "options"),
    ],
)
def test_bad_arguments_name_what_was_received(kwargs, match):
    kinds = kwargs.pop("kinds", "triangle")
    with pytest.raises(ValueError, match=match):
        fit_picture(picture(), kinds, **kwargs)


def test_bad_images():
    with pytest.raises(ValueError, match="image"):
        fit_picture(np.zeros((4, 40, 3), "float32"), count=2)
    with pytest.raises(ValueError, match="image"):
        fit_picture(np.full((20, 20, 3), np.nan, "float32"), count=2)

