"""read_svg + Render against an independent rasterizer, cairosvg, on real icons and emoji (tests/data/svg).

The claim (docs/svg.md for whole sets): on every drawing that
read_svg reads without a warning, at least 99 % of the pixels are within 0.1 of
cairosvg's (both on white, [0, 1] RGB, the largest channel difference). Edges
differ a little by nature (Render's sigmoid edge against cairo's box-filtered
one), so the share, not a maximum, is checked.

Two checks: the encoding of the path kinds against a NumPy reference of their
contract (``svg_reference``; backend-free, ``once``), and what Render draws
(all 32 at 64 px, ``once``: measured 104 s on PyTorch on the shared 2-core machine, and
eager JAX, which compiles the path kinds op by op, took 153 s for two drawings; the path
kinds' own tests check them on each backend).
"""

import glob
import io
import os
import warnings

import numpy as np
import pytest
from PIL import Image

from helpers import to_numpy
from shapegrad import SVGWarning, read_svg
from svg_reference import reference_image

cairosvg = pytest.importorskip("cairosvg", reason="cairosvg is not installed (pip install cairosvg)")

DATA = os.path.join(os.path.dirname(__file__), "data", "svg")
FILES = sorted(glob.glob(os.path.join(DATA, "*.svg")))
SIZE = 64


def cairo_image(path, height, width):
    png = cairosvg.svg2png(url=path, output_width=width, output_height=height)
    rgba = np.asarray(Image.open(io.BytesIO(png)).convert("RGBA"), np.float64) / 255
    return rgba[..., :3] * rgba[..., 3:] + (1 - rgba[..., 3:])


def share_within(a, b, tolerance=0.1):
    return float(np.mean(np.abs(np.asarray(a, np.float64) - b).max(axis=-1) < tolerance))


def read_quietly(path, size):
    with warnings.catch_warnings():
        warnings.simplefilter("error", SVGWarning)  # the shipped files are read without a warning
        return read_svg(path, size=size)


def test_the_shipped_files_are_icons_and_emoji_read_without_warnings():
    assert len(FILES) >= 30 and os.path.exists(os.path.join(DATA, "LICENSES.md"))
    assert {os.path.basename(f)[:3] for f in FILES} == {"bi-", "om-"}


@pytest.mark.once
@pytest.mark.parametrize("path", FILES[::4], ids=os.path.basename)
def test_path_encoding_agrees_with_cairosvg_through_a_numpy_reference(path):
    renderer, params = read_quietly(path, 48)
    ours = reference_image(renderer, params)
    assert share_within(ours, cairo_image(path, renderer.height, renderer.width)) >= 0.99


def agreement(paths, size):
    shares = {}
    for path in paths:
        renderer, params = read_quietly(path, size)
        ours = to_numpy(renderer(params))[0]
        shares[os.path.basename(path)] = share_within(ours, cairo_image(path, renderer.height, renderer.width))
    return {name: round(s, 4) for name, s in shares.items() if s < 0.99}


@pytest.mark.once
def test_render_agrees_with_cairosvg_on_every_shipped_file():
    failing = agreement(FILES, SIZE)
    assert not failing, f"under 99 % of pixels within 0.1 of cairosvg: {failing}"
