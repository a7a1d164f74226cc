"""Files: the one atomic writer, and parameter files at any image size (old files still load)."""

import json
import os

import numpy as np
import pytest

from helpers import to_numpy
from shapegrad import Cones, Render
from shapegrad.io import files, plots


def test_atomic_write_text_bytes_and_writers(tmp_path):
    path = tmp_path / "sub" / "a.txt"
    assert files.atomic_write(str(path), "text") == str(path) and path.read_text() == "text"
    files.atomic_write(str(path), b"\x00bytes")
    assert path.read_bytes() == b"\x00bytes"
    seen = []

    def writer(tmp):
        seen.append(tmp)
        with open(tmp, "w") as f:
            f.write("by a writer")

    files.atomic_write(str(tmp_path / "b.keras"), writer)
    assert seen[0].endswith(".keras") and (tmp_path / "b.keras").read_text() == "by a writer"
    assert sorted(os.listdir(tmp_path)) == ["b.keras", "sub"] and os.listdir(tmp_path / "sub") == ["a.txt"]


def test_atomic_write_failure_leaves_the_old_file_and_no_temporary(tmp_path):
    path = tmp_path / "a.png"
    path.write_text("old")

    def broken(tmp):
        with open(tmp, "w") as f:
            f.write("half")
        raise RuntimeError("killed")

    with pytest.raises(RuntimeError, match="killed"):
        files.atomic_write(str(path), broken)
    assert path.read_text() == "old" and os.listdir(tmp_path) == ["a.png"]
    with pytest.raises(TypeError, match="Received: data=int"):
        files.atomic_write(str(path), 3)


def test_images_and_figures_go_through_the_atomic_writer(tmp_path, monkeypatch):
    written = []
    real = files.atomic_write
    monkeypatch.setattr(plots, "atomic_write", lambda path, data: written.append(path) or real(path, data))
    plots.save_image(str(tmp_path / "i.png"), np.zeros((4, 6, 1)))
    plots.save_curves(str(tmp_path / "c.png"), {"loss": [1.0, 0.5], "val_iou": [0.2, 0.4]})
    assert written == [str(tmp_path / "i.png"), str(tmp_path / "c.png")]
    assert sorted(os.listdir(tmp_path)) == ["c.png", "i.png"]


@pytest.mark.parametrize("renderer", [Render("disk,box", (10, 14), channels=3), Cones((10, 14))])
def test_params_file_records_height_and_width(tmp_path, renderer):
    params = renderer.spec.sample(2, seed=1)
    path = str(tmp_path / "p.json")
    files.save_params(path, renderer, params)
    meta = json.load(open(path))
    assert (meta["height"], meta["width"], meta["resolution"]) == (10, 14, [10, 14])
    loaded, back = files.load_params(path)
    assert type(loaded) is type(renderer) and (loaded.height, loaded.width) == (10, 14)
    np.testing.assert_allclose(back, params, atol=1e-6)
    np.testing.assert_allclose(to_numpy(loaded(back)), to_numpy(renderer(params)), atol=1e-5)
    svg = files.to_svg(loaded, back[0])
    assert 'viewBox="-0.5 -0.5 14 10"' in svg


def test_old_params_files_with_only_resolution_still_load(tmp_path):
    for meta, kind in (
        ({"shapes": "cone", "resolution": 12, "params": [[0.5, 0.5, 0.0, 1.0, 0.2]]}, Cones),
        ({"shapes": "disk*1", "resolution": 12, "channels": 1, "params": [[0.5, 0.5, 0.2, 1, 1]]}, Render),
    ):
        path = tmp_path / "old.json"
        path.write_text(json.dumps(meta))
        renderer, params = files.load_params(str(path))
        assert type(renderer) is kind and renderer.resolution == 12 and params.shape[0] == 1
    path.write_text(json.dumps({"shapes": "disk", "height": 8, "params": [[0.5, 0.5, 0.2, 1, 1]]}))
    with pytest.raises(ValueError, match="missing key 'width'"):
        files.load_params(str(path))


def test_cone_params_file_keeps_its_natural_names(tmp_path):
    path = str(tmp_path / "c.json")
    files.save_params(path, Cones(16), np.float32([[0.5, 0.25, 0.0, 1.0, 0.25]]))
    (shape,) = json.load(open(path))["natural"][0]
    assert shape == {"kind": "cone", "apex_px": [8.0, 4.0], "axis_deg": 90.0, "half_angle_deg": 45.0}
