"""shapegrad.metrics on non-square images and on a non-zero background, against values worked out by hand.

Conventions checked (``shapegrad.primitives``): on an ``H x W`` image a position ``v`` is the pixel
``(H v0, W v1)``, a size ``v`` is ``min(H, W) * v`` pixels, and a direction is an angle of the pixel
grid (no aspect scaling). An image pixel is "on" when a channel differs from the background by more
than 0.5. H and W are far apart here (20 x 50, 10 x 100), so that swapping them, or taking the
longer side as the length scale, changes every expected number.
"""

import numpy as np
import pytest

from shapegrad import Cones, metrics
from shapegrad.render import Render

H, W = 20, 50


def _scene(spec, fields=None):
    """One ``(1, P)`` parameter row of ``spec``, zeros but ``fields``: ``{(shape, name): normalised values}``."""
    row = np.zeros((1, spec.size))
    for (k, name), value in (fields or {}).items():
        row[0, spec.get(k, name).slice] = value
    return row


@pytest.mark.parametrize("resolution", [(H, W), [H, W]])
def test_cone_apex_error_uses_each_axis_own_length(resolution):
    true = np.array([[0.5, 0.5, 1.0, 0.0, 0.25]] * 3)
    pred = true.copy()
    pred[0, :2] += [3 / H, 4 / W]  # 3 px down the rows, 4 px along the columns: 5 px
    pred[1, 0] += 0.1  # a tenth of the height: 2 px
    pred[2, 1] += 0.1  # a tenth of the width: 5 px
    errors = metrics.cone_errors(pred, true, resolution)
    np.testing.assert_allclose(errors["apex_error_px"], [5.0, 2.0, 5.0], rtol=1e-12)
    np.testing.assert_allclose(errors["axis_error_deg"], 0.0, atol=1e-12)
    # parameter_errors reads the resolution from a Cones layer's spec.
    spec = Cones((H, W)).spec
    np.testing.assert_allclose(metrics.parameter_errors(pred, true, spec)["apex_error_px"], [5.0, 2.0, 5.0])


def test_scene_errors_on_a_non_square_image():
    spec = Render("disk,box,triangle", (H, W)).spec
    vertices = np.array([0.2, 0.2, 0.8, 0.3, 0.5, 0.8])  # pixels (4, 10), (16, 15), (10, 40)
    true = _scene(spec, {
        (0, "center"): [0.5, 0.5], (0, "radius"): 0.2,
        (1, "center"): [0.3, 0.6], (1, "half_size"): [0.1, 0.3], (1, "direction"): [1.0, 0.0],
        (2, "vertices"): vertices,
    })
    pred = true.copy()
    step = np.array([3 / H, 4 / W])  # (3, 4) px: 5 px on the pixel grid
    pred[0, spec.get(0, "center").slice] += step
    pred[0, spec.get(0, "radius").slice] += 0.1  # min(H, W) / 10 = 2 px
    pred[0, spec.get(1, "center").slice] += step
    pred[0, spec.get(1, "half_size").slice] += [0.1, -0.05]  # (2 + 1) / 2 = 1.5 px
    pred[0, spec.get(1, "direction").slice] = [np.cos(np.radians(30)), np.sin(np.radians(30))]  # 30 degrees
    pred[0, spec.get(2, "vertices").slice] += np.tile(step, 3)  # each vertex 5 px from its own
    errors = metrics.scene_errors(pred, true, spec)
    assert errors["disk"]["center_error_px"] == pytest.approx([5.0])
    assert errors["disk"]["radius_error_px"] == pytest.approx([2.0])
    assert errors["box"]["center_error_px"] == pytest.approx([5.0])
    assert errors["box"]["half_size_error_px"] == pytest.approx([1.5])
    assert errors["box"]["direction_error_deg"] == pytest.approx([30.0])  # the pixel grid's angle, not stretched
    assert errors["triangle"]["vertices_error_px"] == pytest.approx([5.0])
    flat = metrics.parameter_errors(pred, true, spec)
    assert flat["disk_radius_error_px"] == pytest.approx([2.0])
    assert flat["triangle_vertices_error_px"] == pytest.approx([5.0])


def test_matching_weighs_rows_by_the_height_and_columns_by_the_width():
    """Two disks on a 10 x 100 image: which true disk each guess is paired with depends on the axes' scales.

    Guesses at (0.1, 0.1) and (0.9, 0.3); truths at (0.9, 0.1) and (0.1, 0.3). Pairing in order costs
    0.8 * 10 = 8 px each (16 in all), pairing across 0.2 * 100 = 20 px each (40): in order it is,
    with errors of 8 px. Rows and columns swapped, the costs would be 80 and 2 px each.
    """
    spec = Render("disk*2", (10, 100)).spec
    pred = _scene(spec, {(0, "center"): [0.1, 0.1], (1, "center"): [0.9, 0.3]})
    true = _scene(spec, {(0, "center"): [0.9, 0.1], (1, "center"): [0.1, 0.3]})
    (order,) = metrics.match_shapes(pred, true, spec)
    np.testing.assert_array_equal(order, [[0, 1]])
    np.testing.assert_allclose(metrics.scene_errors(pred, true, spec)["disk"]["center_error_px"], [8.0, 8.0])


BACKGROUND = [0.9, 0.1, 0.5]
# Pixel colours against BACKGROUND: "on" (a channel more than 0.5 away) or "off".
ON_RED = [0.2, 0.1, 0.5]  # channel 0 is 0.7 away
ON_GREEN = [0.9, 0.8, 0.5]  # channel 1 is 0.7 away
OFF = [0.6, 0.55, 0.1]  # 0.3, 0.45, 0.4 away: off, though above 0.5 against a black background


def _image(on, colour, off=()):
    image = np.tile(np.float64(BACKGROUND), (3, 4, 1))
    for ij in on:
        image[ij] = colour
    for ij in off:
        image[ij] = OFF
    return image


def test_iou_against_a_coloured_background():
    pred = np.stack([_image([(0, 0), (0, 1), (1, 1)], ON_RED, off=[(2, 0), (2, 1)]), _image([], ON_RED, off=[(0, 0)])])
    true = np.stack([_image([(0, 1), (1, 1), (2, 3)], ON_GREEN, off=[(2, 2)]), _image([], ON_GREEN)])
    expected = np.zeros((2, 3, 4), bool)
    expected[0, 0, 0] = expected[0, 0, 1] = expected[0, 1, 1] = True
    np.testing.assert_array_equal(metrics.masks(pred, BACKGROUND), expected)
    # Image 0: on in pred (0,0), (0,1), (1,1); in true (0,1), (1,1), (2,3): 2 shared of 4. Image 1: both empty.
    np.testing.assert_allclose(metrics.iou(pred, true, background=BACKGROUND), [0.5, 1.0])
    np.testing.assert_allclose(metrics.iou(pred, true, background=np.float64(BACKGROUND)), [0.5, 1.0])
    # Against the default black background the ground itself is "on" (channel 0 is 0.9) and the red pixels
    # are not: image 0 is then on in 9 pixels of pred, all 12 of true.
    np.testing.assert_allclose(metrics.iou(pred, true), [0.75, 1.0])


def test_iou_with_a_grey_background_on_a_non_square_image():
    """One channel, a scalar background 0.7, 2 x 5 images: dark shapes on a light ground."""
    pred = np.full((1, 2, 5, 1), 0.7)
    true = np.full((1, 2, 5, 1), 0.7)
    pred[0, 0, :4] = 0.1  # 4 pixels
    true[0, :, 3:] = 0.0  # 4 pixels, (0, 3) shared
    pred[0, 1, 0] = 0.25  # 0.45 away: off
    assert metrics.iou(pred, true, background=0.7)[0] == pytest.approx(1 / 7)
    assert metrics.iou(np.transpose(pred, (0, 2, 1, 3)), np.transpose(true, (0, 2, 1, 3)), background=0.7)[0] == (
        pytest.approx(1 / 7)
    )


def test_psnr_on_a_non_square_image():
    true = np.full((1, 3, 5, 3), 0.4)
    pred = true.copy()
    pred[0, 1, 2] = [0.4, 1.0, 0.4]  # one of 45 values off by 0.6: mse = 0.36 / 45 = 0.008
    assert metrics.psnr(pred, true)[0] == pytest.approx(10 * np.log10(1 / 0.008))
