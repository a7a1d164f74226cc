"""The command line: one line and exit 2 for bad arguments (checked before any work), a traceback and exit 1
for an error during the work, shell words (``--force``) where the library says ``force=True``, and no
TensorFlow start-up log."""

import os
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from helpers import BACKEND
from shapegrad import cli, fit
from shapegrad.io import files, plots
from shapegrad.learn import train

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _run(*args, env=None):
    env = dict(os.environ if env is None else env, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    return subprocess.run([sys.executable, *args], capture_output=True, text=True, env=env, timeout=120, cwd=ROOT)


def _params_file(tmp_path):
    path = tmp_path / "p.json"
    path.write_text('{"shapes": "disk", "resolution": 8, "params": [[0.5, 0.5, 0.25, 1, 1]]}')
    return path


@pytest.mark.skipif(BACKEND != "tensorflow", reason="the same TensorFlow subprocesses whatever the backend: run once")
def test_python_dash_m_shapegrad_help_and_no_tensorflow_start_up_log():
    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    env["KERAS_BACKEND"] = "tensorflow"  # the backend that logs at start-up
    done = _run("-m", "shapegrad", "fit", "--help", env=env)
    assert done.returncode == 0 and "--max-shapes" in done.stdout, done.stderr
    assert done.stderr == "", done.stderr  # no "oneDNN custom operations", no absl warning
    done = _run("-m", "shapegrad.cli", "--help", env=env)
    assert done.returncode == 0 and "doctor" in done.stdout and done.stderr == "", done.stderr
    done = _run("-m", "shapegrad", "--help", env=dict(env, TF_CPP_MIN_LOG_LEVEL="0"))  # the user asks for it
    assert done.returncode == 0 and "oneDNN" in done.stderr, done.stderr


@pytest.mark.slow  # subprocesses, on a backend other than TensorFlow: once
def test_fit_and_render_do_not_import_tensorflow_on_another_backend(tmp_path):
    # TensorFlow costs every command ~2.3 s to import; fit and render never need it on JAX or PyTorch.
    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    env["KERAS_BACKEND"] = "torch" if BACKEND == "tensorflow" else BACKEND
    picture = tmp_path / "p.png"
    plots.save_image(str(picture), np.random.default_rng(0).uniform(size=(12, 16, 3)).astype("float32"))
    # The command as `python -m shapegrad ARGS` runs it (argv[0] "-m" while the package imports), then a look
    # at what it imported.
    code = ("import runpy, sys\nsys.argv = ['-m', *sys.argv[1:]]\ntry:\n"
            "    runpy.run_module('shapegrad', run_name='__main__')\nexcept SystemExit as stop:\n"
            "    print('status', stop.code, 'keras' in sys.modules, 'tensorflow' in sys.modules)\n")
    for args in (["render", str(_params_file(tmp_path)), "--out", str(tmp_path / "drawn.png")],
                 ["fit", str(picture), "--count", "1", "--out", str(tmp_path / "fitted")]):
        done = _run("-c", code, *args, env=env)
        assert done.stdout.strip().splitlines()[-1] == "status 0 True False", (args, done.stdout, done.stderr[-2000:])
        assert "oneDNN" not in done.stderr


# A fresh interpreter: the process's exit status and stderr, the same on every backend (arguments are checked
# before any backend work); test_bad_arguments_are_one_line_and_exit_2 checks main's status and line in-process
# on each backend. So once, on SLOW_BACKEND.
@pytest.mark.slow
def test_bad_argument_is_one_line_and_exit_2_from_a_subprocess(tmp_path):
    done = _run("-m", "shapegrad", "train", "--resolution", "-3", "--out", str(tmp_path))
    assert done.returncode == 2, done.stderr
    assert done.stderr.strip().splitlines() == [
        "shapegrad train: error: Expected --resolution to be a positive integer. Received: --resolution=-3"
    ]
    assert not os.listdir(tmp_path)  # checked before any work


@pytest.mark.parametrize(
    "argv, message",
    [
        (["fit", "{tmp}/missing.png", "--shapes", "disk", "--out", "{tmp}/o"], "no such file or folder"),
        (["fit", "{tmp}/ok.png", "--shapes", "disk*x", "--out", "{tmp}/o"], "--shapes"),
        (["fit", "{tmp}/ok.png", "--max-shapes", "0", "--out", "{tmp}/o"], "--max-shapes=0"),
        (["fit", "{tmp}/ok.png", "--kinds", "disk,star", "--out", "{tmp}/o"], "--kinds"),
        (["fit", "{tmp}/p.json", "--out", "{tmp}/o"], "no image to fit"),
        (["fit", "{tmp}/ok.png", "--out", "{tmp}/p.json"], "--out"),
        (["train", "--anneal-start", "2", "--out", "{tmp}/o"], "--anneal-start"),
        (["train", "--shapes", "dsk", "--out", "{tmp}/o"], "dsk"),
        (["render", "{tmp}/missing.json", "--out", "{tmp}/x.png"], "no such parameter file"),
        (["render", "{tmp}/p.json", "--scale", "0", "--out", "{tmp}/x.png"], "--scale"),
        (["render", "{tmp}/p.json", "--out", "{tmp}/x.jpg"], "--out"),
        (["render", "{tmp}/p.json", "--out", "{tmp}/o"], "--out"),
        (["gallery", "--resolution", "0"], "--resolution"),
        (["doctor", "x:y", "--input", "{tmp}/none.npy"], "cannot import"),
        (["train", "--steps", "two", "--out", "{tmp}/o"], "--steps"),
        (["train", "--colors", "solve", "--out", "{tmp}/o"], "--colors solve"),  # the cone has no colours
        (["train", "--colors", "paint", "--out", "{tmp}/o"], "--colors"),
        (["train", "--feedback", "2", "--out", "{tmp}/o"], "--feedback=2 with --shapes cone"),  # not a Render
        (["train", "--shapes", "disk", "--feedback", "-1", "--out", "{tmp}/o"], "--feedback=-1"),
        (["train", "--shapes", "disk", "--init", "{tmp}/none.keras", "--out", "{tmp}/o"], "--init="),
        (["train", "--shapes", "disk", "--init", "{tmp}/ok.png", "--out", "{tmp}/o"], "Expected --init"),
        (["train", "--images", "{tmp}", "--kinds", "disk", "--max-shapes", "1", "--feedback", "1", "--out",
          "{tmp}/o"], "--decoder slots"),
        (["train", "--shapes", "disk", "--init", "{tmp}", "--out", "{tmp}/o"], "(a folder)"),
    ],
)
def test_bad_arguments_are_one_line_and_exit_2(argv, message, tmp_path, capsys):
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(tmp_path / "ok.png")
    _params_file(tmp_path)
    status = cli.main([a.format(tmp=tmp_path) for a in argv])
    err = capsys.readouterr().err.strip().splitlines()
    assert status == 2 and len(err) == 1 and err[0].startswith(f"shapegrad {argv[0]}: error:"), err
    assert message in err[0], err
    assert not (tmp_path / "o").exists()


def test_render_writes_what_the_suffix_of_out_says(tmp_path, capsys):
    params = str(_params_file(tmp_path))
    assert cli.main(["render", params, "--out", str(tmp_path / "scene.svg")]) == 0
    renderer, rows = files.load_params(params)
    assert (tmp_path / "scene.svg").read_text() == files.to_svg(renderer, rows[0])  # the SVG that fit writes
    assert cli.main(["render", params, "--out", str(tmp_path / "scene.png"), "--scale", "2"]) == 0
    with Image.open(tmp_path / "scene.png") as image:
        assert image.format == "PNG" and image.size == (16, 16)
    # a suffix it cannot write: one line, exit 2, before any work (nothing written)
    assert cli.main(["render", params, "--out", str(tmp_path / "scene.jpeg")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and ".svg or .png" in err[0] and "scene.jpeg" in err[0], err
    assert not (tmp_path / "scene.jpeg").exists()


def test_render_svg_of_several_rows_is_a_strip_of_the_single_svgs(tmp_path):
    path = tmp_path / "p.json"
    path.write_text('{"shapes": "disk", "resolution": 8, "params": [[0.5, 0.5, 0.25, 1, 1], [0.3, 0.6, 0.2, 1, 1]]}')
    assert cli.main(["render", str(path), "--out", str(tmp_path / "s.svg")]) == 0
    renderer, rows = files.load_params(str(path))
    text = (tmp_path / "s.svg").read_text()
    assert text.count("<svg") == 3 and 'viewBox="0 0 16 8"' in text.splitlines()[0]
    for row in rows:  # each image's shapes, as fit would write them
        assert files.to_svg(renderer, row).splitlines()[2] in text


def test_an_error_during_the_work_keeps_its_traceback_and_exits_1(tmp_path, capsys, monkeypatch):
    def broken(*args, **kwargs):
        raise ValueError("a bug deep inside the library")

    monkeypatch.setattr(plots, "save_image", broken)
    status = cli.main(["render", str(_params_file(tmp_path)), "--out", str(tmp_path / "x.png")])
    err = capsys.readouterr().err
    assert status == 1, err
    assert "Traceback (most recent call last)" in err and "ValueError: a bug deep inside the library" in err
    assert "in broken" in err  # the frame that raised, not a one-line summary


def test_interrupt_exits_130(tmp_path, capsys, monkeypatch):
    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(fit, "fit_files", interrupted)
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(tmp_path / "ok.png")
    assert cli.main(["fit", str(tmp_path / "ok.png"), "--shapes", "disk", "--out", str(tmp_path / "o")]) == 130
    assert "interrupted" in capsys.readouterr().err


def test_overwrite_python_says_force_true_and_the_shell_says_dash_dash_force(tmp_path, capsys):
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(tmp_path / "ok.png")
    out = tmp_path / "o"
    out.mkdir()
    (out / "metrics.json").write_text("{}")
    with pytest.raises(FileExistsError, match=r"metrics.json exists\. Pass force=True to overwrite\.") as error:
        train.check_outputs_free(str(out), force=False)
    assert "--force" not in str(error.value)
    (out / "ok").mkdir()  # the CLI's per-image folder exists: skipped in shell words, exit 1, untouched
    (out / "ok" / "params.json").write_text("{}")
    status = cli.main(["fit", str(tmp_path / "ok.png"), "--shapes", "disk", "--out", str(out)])
    err = capsys.readouterr().err.strip().splitlines()
    assert status == 1 and f"shapegrad fit: skipped {tmp_path / 'ok.png'}: {out / 'ok'} exists (use --force to overwrite)" in err
    assert not any("force=True" in line for line in err) and (out / "ok" / "params.json").read_text() == "{}"
    # render checks its --out itself, in the same words
    (tmp_path / "x.png").write_bytes(b"")
    assert cli.main(["render", str(_params_file(tmp_path)), "--out", str(tmp_path / "x.png")]) == 2
    assert capsys.readouterr().err.strip() == f"shapegrad render: error: {tmp_path / 'x.png'} exists (use --force to overwrite)"


def test_library_modules_never_import_the_command_line():
    package = os.path.join(ROOT, "shapegrad")
    for folder, _, names in os.walk(package):
        for name in names:
            if name.endswith(".py") and name not in ("cli.py", "__main__.py"):
                text = open(os.path.join(folder, name)).read()
                assert "shapegrad.cli" not in text.replace(":mod:`shapegrad.cli`", "") and "UsageError" not in text, name
