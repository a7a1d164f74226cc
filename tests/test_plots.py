"""Figures: the reconstructions image names its rows (input, the encoder's guess, the refined result)."""

import numpy as np
import pytest
from PIL import Image

from shapegrad.io import plots

# Run on one backend: PNG figures from NumPy arrays do not depend on the backend.
pytestmark = pytest.mark.once


def _examples(seed, count=4, size=8, channels=1):
    return np.random.default_rng(seed).uniform(0.2, 0.8, (count, size, size, channels))


def test_reconstructions_name_each_row_in_a_label_band(tmp_path):
    inputs, guess, refined = _examples(0), _examples(1), _examples(2)
    scale = 3
    grid = plots.image_grid([list(inputs), list(guess), list(refined)])
    labels = ("input", "encoder's guess", "refined")
    path = plots.save_reconstructions(str(tmp_path / "r.png"), inputs, guess, refined, labels=labels, scale=scale)
    image = np.asarray(Image.open(path).convert("L"), np.float64) / 255
    height, width = grid.shape[0] * scale, grid.shape[1] * scale
    band = image.shape[1] - width
    assert image.shape[0] == height and band > 0, image.shape  # a band beside the grid, as tall as the grid
    # the grid itself is unchanged, right of the band
    np.testing.assert_allclose(image[:, band:], np.kron(grid[..., 0], np.ones((scale, scale))), atol=1 / 255)
    # each row's label is drawn (dark text on white) inside that row's height, and the three differ
    rows = np.array_split(image[:, :band], 3, axis=0)
    assert all(0 < (row < 0.5).mean() < 0.5 for row in rows), [(row < 0.5).mean() for row in rows]
    assert len({row.tobytes() for row in rows}) == 3


def test_reconstructions_labels_default_and_are_checked(tmp_path):
    inputs, guess = _examples(0, channels=3), _examples(1, channels=3)
    path = plots.save_reconstructions(str(tmp_path / "r.png"), inputs, guess)
    with Image.open(path) as image:
        assert image.mode == "RGB" and image.width > plots.image_grid([list(inputs)]).shape[1] * 3
    with pytest.raises(ValueError, match="labels"):
        plots.save_reconstructions(str(tmp_path / "x.png"), inputs, guess, labels=("input",))
    assert not (tmp_path / "x.png").exists()
