"""``shapegrad doctor``: exit 0 when healthy, 1 with findings, 2 on bad input; .keras files load in safe mode."""

import json
import os
import subprocess
import sys

import keras
import numpy as np
import pytest

import test_doctor as planted
from shapegrad import cli

TESTS = os.path.dirname(os.path.abspath(__file__))


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("doctor_cli")
    planted.acos_model().save(d / "acos.keras")
    planted.healthy_model().save(d / "healthy.keras")
    np.save(d / "acos_x.npy", planted.FAULTS["acos_of_clipped_dot"][1])
    np.save(d / "norm_x.npy", planted.FAULTS["sqrt_of_squared_norm"][1])
    np.save(d / "healthy_x.npy", np.linspace(-1, 1, 12, dtype="float32").reshape(4, 3))
    np.save(d / "healthy_y.npy", np.zeros((4, 2), "float32"))
    inputs = keras.Input((3,))
    lam = keras.Model(inputs, keras.layers.Lambda(lambda t: t * 2.0)(inputs))
    lam.save(d / "lambda.keras")
    return d


def test_saved_model_with_a_fault_exits_1_and_names_layer_op_and_fix(files, capsys):
    status = cli.main(["doctor", str(files / "acos.keras"), "--import", "test_doctor", "--input", str(files / "acos_x.npy")])
    out = capsys.readouterr().out
    assert status == 1, out
    assert "layer 'angle' (ClippedAcos)" in out and "arccos" in out and "safe_acos" in out
    assert "test_doctor.py:" in out


def test_json_output(files, capsys):
    status = cli.main(
        ["doctor", str(files / "acos.keras"), "--import", "test_doctor", "--input", str(files / "acos_x.npy"), "--json"]
    )
    data = json.loads(capsys.readouterr().out)
    assert status == 1 and data["ok"] is False and data["findings"][0]["hint"] == "acos"


def test_healthy_saved_model_with_targets_exits_0(files, capsys):
    status = cli.main(
        ["doctor", str(files / "healthy.keras"), "--input", str(files / "healthy_x.npy"), "--target", str(files / "healthy_y.npy")]
    )
    out = capsys.readouterr().out
    assert status == 0 and "healthy" in out, out


def test_module_attribute_factory(files, capsys):
    status = cli.main(["doctor", "test_doctor:norm_model", "--input", str(files / "norm_x.npy")])
    out = capsys.readouterr().out
    assert status == 1 and "layer 'length' (SqrtNorm)" in out and "safe_norm" in out, out


def test_safe_mode_refuses_lambda_unless_unsafe(files, capsys):
    status = cli.main(["doctor", str(files / "lambda.keras"), "--input", str(files / "healthy_x.npy")])
    err = capsys.readouterr().err
    assert status == 2 and "--unsafe" in err and len(err.strip().splitlines()) == 1, err
    status = cli.main(["doctor", str(files / "lambda.keras"), "--unsafe", "--input", str(files / "healthy_x.npy")])
    assert status == 0, capsys.readouterr()


@pytest.mark.parametrize(
    "argv, message",
    [
        (["missing.keras", "--input", "x.npy"], "no such model file"),
        (["not_a_target", "--input", "x.npy"], "module:attribute"),
        (["test_doctor:nothing_here", "--input", "x.npy"], "cannot import"),
        (["test_doctor:norm_model", "--input", "missing.npy"], "--input: cannot read"),
    ],
)
def test_bad_input_exits_2_with_one_line(argv, message, capsys):
    assert cli.main(["doctor", *argv]) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1, err


# A fresh interpreter per call (~10-20 s of imports on JAX): the process's wiring (``python -m shapegrad``,
# sys.exit of main's status, --import in a new process) is the same on every backend, and the tests above
# check main's statuses 0, 1 and 2 in-process on each backend; so once, on SLOW_BACKEND.
@pytest.mark.slow
def test_exit_statuses_from_a_subprocess(files):
    env = dict(os.environ, PYTHONPATH=TESTS + os.pathsep + os.environ.get("PYTHONPATH", ""))

    def run(*args):
        return subprocess.run(
            [sys.executable, "-m", "shapegrad", "doctor", *args], capture_output=True, text=True, env=env, timeout=120
        )

    bad = run(str(files / "acos.keras"), "--import", "test_doctor", "--input", str(files / "acos_x.npy"))
    assert bad.returncode == 1 and "safe_acos" in bad.stdout, bad.stderr[-2000:]
    missing = run(str(files / "nope.keras"), "--input", str(files / "acos_x.npy"))
    assert missing.returncode == 2 and "shapegrad doctor: error: no such model file" in missing.stderr, missing.stderr
