"""Fitting filled paths: outline starts (shapegrad.fit.outlines, starts), fit_scene, fit_picture, ``fit --kinds path``."""

import json

import keras
import numpy as np
import pytest
from PIL import Image
from skimage.draw import ellipse, polygon

import shapegrad
from shapegrad import cli
from shapegrad.io import files
from shapegrad.fit import pictures, search
from shapegrad.fit.engine import SceneEngine
from shapegrad.fit.outlines import loop_area, outline_path, polygon_moments, trace_outlines
from shapegrad.fit.pictures import fit_picture
from shapegrad.fit.search import fit_scene
from shapegrad.fit.starts import Geometry, start_shape
from shapegrad.render.primitives import parse_shapes
from shapegrad.render.render import Render

N = 32


def psnr_of(image, target):
    return 10 * np.log10(1.0 / max(float(np.mean(np.square(np.asarray(image, np.float64) - target))), 1e-10))


def l_shape(n=24, color=(0.8, 0.2, 0.1), background=(0.9, 0.9, 0.85)):
    """An L (non-convex, 6 corners) on a flat background: no triangle draws it, one path4 nearly does."""
    image = np.empty((n, n, 3), np.float32)
    image[:] = background
    rr, cc = polygon(np.array([3, 3, 20, 20, 12, 12]) * n / 24, np.array([3, 20, 20, 12, 12, 3]) * n / 24, shape=(n, n))
    image[rr, cc] = color
    return image


def region(name):
    mask = np.zeros((N, N), bool)
    if name == "ellipse":
        rr, cc = ellipse(15, 17, 8, 12, rotation=0.6, shape=(N, N))
    elif name == "arrow":  # non-convex, 7 corners
        rr, cc = polygon([4, 14, 14, 27, 27, 14, 14], [16, 4, 11, 11, 21, 21, 28], shape=(N, N))
    else:  # a ring: an outline and a hole
        rr, cc = ellipse(16, 16, 12, 11, shape=(N, N))
        mask[rr, cc] = True
        rr, cc = ellipse(16, 16, 5, 5, shape=(N, N))
        mask[rr, cc] = False
        return mask
    mask[rr, cc] = True
    return mask


def iou(a, b):
    return (a & b).sum() / (a | b).sum()


@pytest.mark.once  # NumPy
def test_outlines_of_a_ring_turn_opposite_ways_and_enclose_its_pixels():
    mask = region("ring")
    loops = trace_outlines(mask)
    assert len(loops) == 2
    outer, hole = loop_area(loops[0]), loop_area(loops[1])
    assert outer < 0 < hole  # the hole turns the other way: under nonzero it subtracts
    # Corners are cut by half a pixel: the enclosed area is the pixel count less 1/8 px per convex corner
    # and plus 1/8 per concave one, within a few pixels of it.
    assert abs(-(outer + hole) - mask.sum()) < 0.05 * mask.sum()
    # Pixels that touch only at a corner are two loops (4-connectivity, as scipy.ndimage.label).
    diagonal = np.zeros((4, 4), bool)
    diagonal[1, 1] = diagonal[2, 2] = True
    assert [loop_area(p) for p in trace_outlines(diagonal)] == [-0.5, -0.5]


@pytest.mark.once  # NumPy
def test_moments_of_a_traced_path_are_those_of_its_region():
    mask = region("ellipse")
    centre, cov = polygon_moments(outline_path(mask, 8), segments=8)
    pixels = np.argwhere(mask).astype(np.float64)
    np.testing.assert_allclose(centre, pixels.mean(axis=0), atol=0.3)
    np.testing.assert_allclose(cov, np.cov(pixels.T), rtol=0.1, atol=1.0)


# The starts are NumPy; the path kinds are drawn on every backend by tests/test_paths.py.
@pytest.mark.once
@pytest.mark.parametrize("kind,name", [("path", "ellipse"), ("path8", "arrow"), ("path4x2", "ring"),
                                       ("path4x2eo", "ring"), ("polygon7", "arrow")])
def test_the_outline_start_draws_its_region(kind, name):
    mask = region(name)
    points = np.argwhere(mask).astype(np.float64)
    engine = SceneEngine((kind,), N, N, 1, max_depth=1, batch=1)
    params = start_shape(kind, Geometry(engine, kind), points.mean(0), np.cov(points.T), [1.0], 1, points)
    drawn = keras.ops.convert_to_numpy(Render(kind, N, channels=1, background=0.0)(params[None]))[0, ..., 0]
    assert np.isfinite(params).all()
    assert iou(drawn > 0.5, mask) > 0.8
    if name == "ring":  # the hole is open: the start draws the ring, not a disk
        assert drawn[16, 16] < 0.5


QUICK_SEARCH = dict(steps=40, joint_steps=40, order_steps=20, polish_steps=60)


@pytest.mark.once
def test_a_kind_the_search_cannot_start_is_a_keras_style_error():
    engine = SceneEngine(("stroke3",), N, N, 1, max_depth=1, batch=1)
    points = np.argwhere(region("ellipse")).astype(np.float64)
    with pytest.raises(ValueError, match=r"Expected a kind .* Received: kind='stroke3'"):
        start_shape("stroke3", Geometry(engine, "stroke3"), points.mean(0), np.cov(points.T), [1.0], 1, points)


@pytest.mark.slow  # two whole searches
def test_fit_scene_with_a_path_beats_a_triangle_on_a_non_convex_shape():
    image = l_shape()
    path = fit_scene(image[None], shapes="path", **QUICK_SEARCH)[0]
    triangle = fit_scene(image[None], shapes="triangle", **QUICK_SEARCH)[0]
    assert path.shapes == "path" and np.isfinite(path.params).all()
    assert path.psnr > 30  # one path of 4 cubics draws an L's 6 corners within soft edges
    assert path.psnr > triangle.psnr + 8
    assert abs(psnr_of(path.render(), image) - path.psnr) < 0.1


QUICK = dict(steps=20, final_steps=10, refine_every=4, refine_steps=5, candidates=4, windows=2)


# The picture fitter with a path kind on every backend; mixed with triangles once.
@pytest.mark.parametrize("kinds", ["path", pytest.param("path3,triangle", marks=pytest.mark.slow)])
def test_fit_picture_with_paths_keeps_every_shape_finite_and_never_raises_the_error(kinds):
    image = l_shape(16, color=(0.1, 0.3, 0.8))
    result = fit_picture(image, kinds, count=2, seed=0, **QUICK)
    # Two shapes, or one where no second start lowered the error (the L drawn, its surround is left).
    assert result.count == 2 or (result.count == 1 and result.stopped == "no gain")
    assert set(result.kinds) <= set(kinds.split(","))
    assert np.isfinite(result.params).all() and np.isfinite(result.history).all()
    flat = psnr_of(np.broadcast_to(image.reshape(-1, 3).mean(0), image.shape), image)
    # The first shape, started on the L's outline, draws most of it: the best one shape can do over the mean
    # colour is +4 dB (the L 40 % of the picture); one triangle's best, +1.5 dB.
    assert result.history[0] > flat + 2
    assert np.all(np.diff(result.history) >= 0) and result.psnr >= result.history[-1]
    assert abs(psnr_of(result.render(), image) - result.psnr) < 0.05


@pytest.mark.slow  # the command line end to end: the same on every backend
@pytest.mark.parametrize("flags", [["--kinds", "path", "--count", "2"], ["--kinds", "path,triangle"]],
                         ids=["picture", "scene"])
def test_cli_fit_kinds_path_writes_params_and_an_svg_that_reads_back(tmp_path, monkeypatch, flags):
    for name, value in QUICK.items():
        monkeypatch.setitem(pictures.PICTURE_DEFAULTS, name, value)
    for name, value in QUICK_SEARCH.items():
        monkeypatch.setitem(search.SEARCH_DEFAULTS, name, value)
    image = l_shape(16)
    Image.fromarray((image * 255).round().astype(np.uint8)).save(tmp_path / "l.png")
    out = tmp_path / "out"
    assert cli.main(["fit", str(tmp_path / "l.png"), *flags, "--out", str(out)]) == 0
    saved = json.loads((out / "l" / "params.json").read_text())
    kinds = [kind for kind, _ in parse_shapes(saved["shapes"])]
    # Up to two paths for a count of 2 (one where no second lowers the error); the scene search finds the L,
    # one shape, a path (a triangle cannot draw it).
    assert kinds in ([["path"], ["path", "path"]] if "--count" in flags else [["path"]])
    renderer, params = shapegrad.read_svg(str(out / "l" / "shapes.svg"), size=16)
    assert all(kind.startswith("path") for kind, _ in renderer.shapes)
    drawn = keras.ops.convert_to_numpy(renderer(params))[0]
    fitted, fitted_params = files.load_params(str(out / "l" / "params.json"))
    fitted = keras.ops.convert_to_numpy(fitted(fitted_params))[0]
    # The SVG draws what was fitted (its edges are the reader's, sharper than the fit's soft ones), and the L
    # is there (2 dB over the mean colour).
    assert psnr_of(drawn, fitted) > 25
    assert psnr_of(drawn, image) > psnr_of(np.broadcast_to(image.reshape(-1, 3).mean(0), image.shape), image) + 2
