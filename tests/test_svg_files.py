"""``shapegrad render`` on SVG files and folders: one PNG each, bad files skipped with one line, exit statuses.

Marked ``once``: the command line's behaviour does not depend on the backend
(the drawings are 8-24 px disks and boxes).
"""

import numpy as np
import pytest
from PIL import Image

from shapegrad import cli

pytestmark = pytest.mark.once

CIRCLE = '<svg xmlns="http://www.w3.org/2000/svg" width="24" height="12"><circle cx="6" cy="6" r="4" fill="red"/></svg>'
TEXT = '<svg xmlns="http://www.w3.org/2000/svg" width="8" height="8"><rect width="4" height="4"/><text>a</text></svg>'
ENTITY = '<?xml version="1.0"?><!DOCTYPE s [<!ENTITY a "b">]><svg xmlns="http://www.w3.org/2000/svg">&a;</svg>'


def test_one_svg_to_a_png_at_a_size(tmp_path, capsys):
    (tmp_path / "c.svg").write_text(CIRCLE)
    out = tmp_path / "c.png"
    assert cli.main(["render", str(tmp_path / "c.svg"), "--out", str(out), "--size", "48"]) == 0
    image = np.asarray(Image.open(out).convert("RGB"))
    assert image.shape == (24, 48, 3)  # the longer side 48, aspect kept
    assert tuple(image[12, 12]) == (255, 0, 0) and tuple(image[12, 40]) == (255, 255, 255)
    assert "rendered 1 SVG file(s)" in capsys.readouterr().out


def test_a_folder_goes_on_after_bad_files_and_exits_1(tmp_path, capsys):
    inputs = tmp_path / "in"
    (inputs / "sub").mkdir(parents=True)
    (inputs / "a.svg").write_text(CIRCLE)
    (inputs / "b.svg").write_text("not xml at all")
    (inputs / "sub" / "c.svg").write_text(ENTITY)
    (inputs / "sub" / "d.svg").write_text(TEXT)
    out = tmp_path / "out"
    assert cli.main(["render", str(inputs), "--out", str(out)]) == 1
    assert sorted(p.name for p in out.iterdir()) == ["a.png", "d.png"]
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [
        f"shapegrad render: skipped {inputs / 'b.svg'}: not well-formed XML (syntax error: line 1, column 0)",
        f"shapegrad render: skipped {inputs / 'sub' / 'c.svg'}: declares XML entities, which are refused (no entity "
        "is ever expanded: billion-laughs and external-entity files are rejected)",
        f"shapegrad render: warning: {inputs / 'sub' / 'd.svg'}: text: skipped",
    ]
    # again: the PNGs exist and are skipped without --force (still exit 1), with --force redrawn
    assert cli.main(["render", str(inputs / "a.svg"), str(inputs / "sub" / "d.svg"), "--out", str(out)]) == 1
    assert "a.png exists (use --force to overwrite)" in capsys.readouterr().err
    assert cli.main(["render", str(inputs / "a.svg"), "--out", str(out), "--force"]) == 0


@pytest.mark.parametrize(
    "argv, line",
    [
        (["{d}/c.svg", "--out", "{d}/c.png", "--size", "-3"],
         "Expected --size to be a positive integer. Received: --size=-3"),
        (["{d}/c.svg", "--out", "{d}/c.png", "--size", "20000"],
         "Expected --size to be at most 16384. Received: --size=20000"),
        (["{d}/c.svg", "--out", "{d}/c.jpg"], "Expected --out to be X.png or a folder for SVG inputs. "
         "Received: --out={d}/c.jpg"),
        (["{d}/c.svg", "{d}/p.json", "--out", "{d}/o"], "Expected SVG files and folders only (not with a "
         "parameter file). Received: '{d}/p.json'"),
        (["{d}/missing.svg", "--out", "{d}/o"], "Expected an SVG file or a folder. Received: '{d}/missing.svg' "
         "(no such file or folder)"),
        (["{d}/p.json", "--out", "{d}/x.png", "--size", "8"], "Expected --size only with SVG inputs. "
         "Received: --size=8"),
        (["{d}/c.svg", "--out", "{d}/c.svg"], "Expected --out to be X.png or a folder for SVG inputs. "
         "Received: --out={d}/c.svg"),
    ],
)
def test_bad_arguments_exit_2_with_one_line(tmp_path, capsys, argv, line):
    (tmp_path / "c.svg").write_text(CIRCLE)
    (tmp_path / "p.json").write_text('{"shapes": "disk", "resolution": 8, "params": [[0.5, 0.5, 0.25, 1, 1]]}')
    d = str(tmp_path)
    assert cli.main(["render", *[a.format(d=d) for a in argv]]) == 2
    err = capsys.readouterr().err
    assert err == f"shapegrad render: error: {line.format(d=d)}\n"
