"""shapegrad.bench: the naive renderer draws Render's image; the benchmarks, the report, the CLI.

Tiny sizes, one round of one call: these check that the machinery runs and
returns sane numbers on every backend, not what the numbers are.
"""

import json
import math

import keras
import numpy as np
import pytest

from helpers import BACKEND, jit, to_numpy
from shapegrad import cli
from shapegrad.bench import timing as bench
from shapegrad.bench import report as bench_report
from shapegrad.render.render import Render

MIX = "disk*2,box,triangle,cone"
# JAX compiles each eager op on first use: one jit of the whole render is several times faster.
# TensorFlow and PyTorch run eagerly at once.
_run = jit if BACKEND == "jax" else (lambda fn: fn)


def _out_of_range(x, spec):
    """Push some parameters outside their ranges, so that Render's clipping matters."""
    x = x.copy()
    x[0, spec.get(0, "opacity").start] = 1.7  # opacity clipped to 1
    x[1, spec.get(1, "opacity").start] = -0.5  # ... and to 0
    x[2, spec.get(2, "center").start] = 3e12  # position clipped to 1e12
    return x


@pytest.mark.parametrize("channels", [1, 3])
def test_naive_render_draws_renders_image(channels):
    layer = Render(MIX, resolution=16, channels=channels, softness=1.5)
    x = _out_of_range(layer.spec.sample(3, seed=1), layer.spec)
    ours = to_numpy(_run(layer)(x))
    naive = to_numpy(_run(lambda p: bench.naive_render(layer.spec, p, softness=1.5))(x))
    assert naive.shape == ours.shape == (3, 16, 16, channels) and naive.dtype == np.float32
    assert ours.std() > 0.05  # something is drawn
    np.testing.assert_allclose(naive, ours, rtol=0, atol=1e-5)


def test_cycle_shapes():
    assert bench.cycle_shapes(1) == "disk"
    assert bench.cycle_shapes(4) == "disk*2,box,triangle"
    assert bench.cycle_shapes(64, "disk") == "disk*64"
    assert bench.cycle_shapes(5, ["cone", "box"]) == "cone*3,box*2"
    with pytest.raises(ValueError, match="count"):
        bench.cycle_shapes(0)
    with pytest.raises(ValueError, match="unknown kind 'blob'"):
        bench.cycle_shapes(2, "disk,blob")


def test_capped_batch():
    assert bench.capped_batch(16, 64, 4, None) == 16
    assert bench.capped_batch(16, 64, 4, math.inf) == 16
    assert bench.capped_batch(16, 64, 4, 2**20) == 16  # exactly at the cap
    assert bench.capped_batch(512, 64, 4, 2**20) == 64
    assert bench.capped_batch(16, 64, 64, 1000) == 0
    assert bench.default_max_work("torch") < bench.default_max_work("jax")


def test_time_interleaved_round_seconds_and_first_call():
    first = {}
    seconds = bench.time_interleaved(
        {"a": lambda x: x + 1, "b": lambda x: x * 2}, (np.ones(3),), rounds=2, iters=3, round_seconds=0.001, first=first
    )
    assert set(seconds) == set(first) == {"a", "b"}
    assert all(v > 0 for v in seconds.values()) and all(v > 0 for v in first.values())


def _assert_measured(row):
    timing = ("seconds", "baseline_seconds", "first_call_s", "baseline_first_call_s", "mpix_s", "baseline_mpix_s")
    for key in timing + ("ratio",):
        assert isinstance(row[key], float) and math.isfinite(row[key]) and row[key] > 0, (key, row[key])
    memory = ("memory_mib", "baseline_memory_mib", "memory_ratio")
    if BACKEND == "tensorflow":
        assert all(row[key] is None for key in memory)
    else:
        assert all(math.isfinite(row[key]) and row[key] > 0 for key in memory), row


def test_bench_render_rows():
    rows = bench.bench_render(counts=(2, 1000), resolution=8, batch=3, rounds=1, iters=1, max_work=8 * 8 * 2 * 2)
    measured, skipped = rows
    assert (measured["K"], measured["batch"], measured["shapes"]) == (2, 2, "disk,box")  # batch cut from 3
    assert "cut from 3" in measured["note"] and measured["skipped"] is None
    _assert_measured(measured)
    assert skipped["skipped"] and skipped["seconds"] is None  # even B = 1 is over the cap: not run
    table = bench_report.render_table(rows)
    lines = table.splitlines()
    assert len(lines) == 4 and "skipped" in lines[3] and ("n/a" in lines[2]) == (BACKEND == "tensorflow")
    json.dumps(rows, allow_nan=False)  # the result file takes them as they are


def test_step_memory():
    layer = Render("disk,box", resolution=8)
    x = keras.ops.convert_to_tensor(layer.spec.sample(2))
    cotangent = keras.ops.convert_to_tensor(np.ones((2, 8, 8, 1), "float32"))
    memory = bench.step_memory(layer, x, cotangent)
    if BACKEND == "tensorflow":
        assert memory is None
    else:
        # at least one (B, N, N) float32 map lives through the step
        assert isinstance(memory, int) and memory >= 2 * 8 * 8 * 4, memory


def _fake_rows(backend):
    render = {
        "name": "Render vs naive",
        "backend": backend,
        "compile": "jit",
        "shapes": "disk",
        "K": 1,
        "resolution": 32,
        "seconds": 0.01,
        "baseline_seconds": 0.02,
        "first_call_s": 1.0,
        "baseline_first_call_s": 1.0,
        "ratio": 2.0,
        "memory_mib": 1.0,
        "baseline_memory_mib": 3.0,
        "memory_ratio": 3.0,
        "note": None,
        "skipped": None,
    }
    rows = [
        {"name": "Cones vs naive acos", "backend": backend, "compile": "jit", "resolution": 64, "batch": 256,
         "mpix_s": 90.0, "baseline_mpix_s": 24.0, "ratio": 3.7},
    ]
    for batch in (1, 4, 16):
        mpix = batch * 32 * 32 / 1e6
        rows.append(dict(render, batch=batch, work=batch * 32 * 32, mpix_s=mpix / 0.01, baseline_mpix_s=mpix / 0.02))
    rows.append(dict(render, K=64, batch=512, work=512 * 32 * 32 * 64, skipped="too big", seconds=None))
    return rows


def test_report_merges_backends_and_keeps_the_prose(tmp_path):
    (tmp_path / "results.md").write_text(
        "# Benchmark results\n\nProse.\n\n<!-- bench:cones -->\nold table\n<!-- /bench:cones -->\n\nMore prose.\n"
    )
    bench_report.save_results(str(tmp_path), _fake_rows(BACKEND), quick=True)
    other = "jax" if BACKEND != "jax" else "torch"
    (tmp_path / f"results-{other}.json").write_text(json.dumps({"backend": other, "rows": _fake_rows(other)}))
    for _ in range(2):  # rewriting replaces the blocks, it does not add more
        md, png = bench_report.write_report(str(tmp_path))
    text = open(md).read()
    assert "Prose." in text and "More prose." in text and "old table" not in text
    assert text.count("<!-- bench:cones -->") == text.count("<!-- bench:render -->") == 1
    assert text.count("| Cones vs naive acos |") == 2 and text.count("| Render vs naive") == 0
    assert "quick run" in text and "skipped: too big" in text and "3x" in text
    assert open(png, "rb").read(8) == b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize(
    "argv, message",
    [
        (["bench", "--rounds", "0"], "--rounds"),
        (["bench", "--max-work", "nan"], "--max-work"),
        (["bench", "--report", "--out", "{empty}"], "no benchmark results"),
        (["bench", "--out", "{file}"], "--out"),
    ],
)
def test_cli_bad_values_exit_2_with_one_line(argv, message, tmp_path, capsys):
    (tmp_path / "file").write_text("")
    (tmp_path / "empty").mkdir()
    argv = [a.format(empty=tmp_path / "empty", file=tmp_path / "file") for a in argv]
    assert cli.main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("shapegrad bench: error:") and message in err and "\n" not in err, err


@pytest.mark.parametrize("argv", [["bench", "--bogus"], ["bench", "--rounds", "two"], ["bench", "--only", "cubes"]])
def test_cli_bad_arguments_exit_2(argv, capsys):
    assert cli.main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("shapegrad") and "error:" in err and "\n" not in err, err


@pytest.mark.slow  # a dozen compilations
def test_cli_quick_run_writes_results_and_report(tmp_path, capsys):
    assert cli.main(["bench", "--quick", "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "| Cones vs naive acos |" in out and "| disk*2,box,triangle |" in out
    data = json.loads((tmp_path / f"results-{BACKEND}.json").read_text())
    assert data["backend"] == BACKEND and data["machine"]["quick"] is True
    for row in data["rows"]:
        if row["name"] == "Render vs naive":
            _assert_measured(row)
    assert cli.main(["bench", "--report", "--out", str(tmp_path)]) == 0
    assert (tmp_path / "scaling.png").exists() and "| Render vs naive" not in (tmp_path / "results.md").read_text()


@pytest.mark.once
def test_merged_rows_keep_the_other_benchmarks_earlier_rows_of_this_backend(tmp_path):
    bench_report.save_results(str(tmp_path), [{"name": "cones", "v": 1}, {"name": "render", "v": 2}], quick=True)
    merged = bench_report.merged_rows(str(tmp_path), keras.backend.backend(), [{"name": "cones", "v": 3}])
    assert merged == [{"name": "render", "v": 2}, {"name": "cones", "v": 3}]
    assert bench_report.merged_rows(str(tmp_path), "another", [{"name": "cones"}]) == [{"name": "cones"}]
    (tmp_path / "results-bad.json").write_text("not json")
    assert bench_report.merged_rows(str(tmp_path), "jax", [{"name": "cones"}]) == [{"name": "cones"}]
