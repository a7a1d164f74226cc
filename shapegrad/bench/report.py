"""Benchmark report writing: markdown tables, result files, ``results.md`` and the ``scaling.png`` plot.

:mod:`shapegrad.bench` measures; this module writes what it measured:
:func:`save_results` / :func:`load_results` (``results-<backend>.json``, one
per backend), :func:`markdown_table` and :func:`render_table` (the rows as
markdown), :func:`plot_scaling` and :func:`write_report` (``results.md`` and
``scaling.png`` from every backend's file).

Example:
    >>> print(markdown_table([{"name": "Cones vs naive acos", "backend": "jax", "compile": "jit",
    ...     "resolution": 64, "batch": 256, "mpix_s": 50.0, "baseline_mpix_s": 25.0, "ratio": 2.0}]))
    | benchmark | backend | compile | N | batch | Mpix/s | baseline Mpix/s | ratio |
    |---|---|---|---|---|---|---|---|
    | Cones vs naive acos | jax | jit | 64 | 256 | 50.0 | 25.0 | 2.00x |
"""

import datetime
import glob
import json
import os
import platform
import sys

import keras
import numpy as np

from shapegrad.bench.timing import BACKENDS
from shapegrad.io.files import atomic_write, write_text

__all__ = ["load_results", "markdown_table", "merged_rows", "plot_scaling", "render_table", "save_results", "write_report"]




def markdown_table(rows):
    """Render result rows as a markdown table."""
    header = "| benchmark | backend | compile | N | batch | Mpix/s | baseline Mpix/s | ratio |"
    lines = [header, "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(
            f"| {r['name']} | {r['backend']} | {r['compile']} | {r['resolution']} | {r['batch']} "
            f"| {r['mpix_s']:.1f} | {r['baseline_mpix_s']:.1f} | {r['ratio']:.2f}x |"
        )
    return "\n".join(lines)


def _num(value, unit=""):
    if value is None:
        return "n/a"
    if value >= 100:
        return f"{value:.0f}{unit}"
    return f"{value:.3g}{unit}"


def render_table(rows):
    """Render :func:`bench_render` rows as a markdown table, with the memory columns.

    MiB is :func:`step_memory` (JAX: XLA temporary buffers; PyTorch: the
    profiler's peak; ``n/a`` on TensorFlow); the ratios are baseline /
    ``Render``; "first call" is seconds, compilation included, Render / baseline.
    """
    header = (
        "| backend | compile | shapes | K | N | B | B·N²·K | Mpix/s | baseline Mpix/s | ratio "
        "| MiB | baseline MiB | memory ratio | first call s | note |"
    )
    lines = [header, "|" + "---|" * header.count(" | ") + "---|"]
    for r in rows:
        lead = (
            f"| {r['backend']} | {r['compile']} | {r['shapes']} | {r['K']} | {r['resolution']} "
            f"| {r['batch']} | {r['work']:.2g} "
        )
        if r.get("skipped"):
            lines.append(lead + "| | | | | | | | skipped: " + r["skipped"] + " |")
            continue
        first = f"{_num(r.get('first_call_s'))} / {_num(r.get('baseline_first_call_s'))}"
        lines.append(
            lead
            + f"| {_num(r['mpix_s'])} | {_num(r['baseline_mpix_s'])} | {r['ratio']:.2f}x "
            + f"| {_num(r['memory_mib'])} | {_num(r['baseline_memory_mib'])} "
            + f"| {_num(r['memory_ratio'], 'x')} | {first} | {r.get('note') or ''} |"
        )
    return "\n".join(lines)


def _machine(quick):
    load = os.getloadavg() if hasattr(os, "getloadavg") else None
    backend = keras.backend.backend()
    module = {"tensorflow": "tensorflow", "jax": "jax", "torch": "torch"}.get(backend)
    version = getattr(sys.modules.get(module), "__version__", None) if module else None
    return {
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
        "load_average": None if load is None else round(load[0], 2),
        "keras": keras.__version__,
        "backend_version": version,
        "quick": bool(quick),
    }


def save_results(directory, rows, quick=False):
    """Write ``rows`` of the current backend to ``directory/results-<backend>.json``; returns the path.

    The file also records the machine (CPU count, load average, versions,
    date) and whether it was a ``quick`` run.
    """

    os.makedirs(directory, exist_ok=True)
    backend = keras.backend.backend()
    path = os.path.join(directory, f"results-{backend}.json")
    data = {"backend": backend, "machine": _machine(quick), "rows": rows}
    write_text(path, json.dumps(data, indent=1, allow_nan=False) + "\n")
    return path


def load_results(directory):
    """Every ``directory/results-*.json``, as a list of dicts, in the order tensorflow, jax, torch.

    Raises ``ValueError`` naming a file that is not a result file.
    """
    out = []
    for path in sorted(glob.glob(os.path.join(directory, "results-*.json"))):
        try:
            with open(path) as f:
                data = json.load(f)
            if not isinstance(data.get("rows"), list) or not isinstance(data.get("backend"), str):
                raise ValueError("no 'backend' and 'rows'")
        except (OSError, ValueError, AttributeError) as error:
            raise ValueError(f"cannot read benchmark results {path}: {error}") from None
        out.append(data)
    order = {b: i for i, b in enumerate(BACKENDS)}
    return sorted(out, key=lambda d: (order.get(d["backend"], len(order)), d["backend"]))


def merged_rows(directory, backend, rows):
    """``rows`` after the rows of ``backend``'s earlier results in ``directory`` whose benchmark ``rows`` lacks.

    What ``shapegrad bench --only cones|render`` saves: the benchmark it ran, and the other one's
    rows from the last run. An unreadable results folder counts as none.
    """
    names = {r["name"] for r in rows}
    try:
        old = [d for d in load_results(directory) if d["backend"] == backend]
    except ValueError:
        old = []
    return [r for d in old for r in d["rows"] if r.get("name") not in names] + rows


def _load_quietly(directory):
    try:
        return load_results(directory)
    except ValueError:
        return []


def plot_scaling(results, path):
    """Seconds per forward+backward against ``B * N^2 * K`` (log-log), one panel per backend.

    Every size of the sweep is one point, coloured by ``K``: ``Render`` dots,
    the baseline crosses, and a dotted line of slope 1 (time proportional to
    ``B * H * W * K``) through Render's median point, so that linear scaling
    shows as points along it. ``results``: as :func:`load_results`. Written
    with matplotlib's Agg backend; returns ``path``.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = [
        (d["backend"], [r for r in d["rows"] if r.get("name") == "Render vs naive" and not r.get("skipped")])
        for d in results
    ]
    panels = [(b, rows) for b, rows in panels if rows] or [("no results", [])]
    fig, axes = plt.subplots(1, len(panels), figsize=(4.6 * len(panels), 3.8), squeeze=False, sharey=True)
    ks = sorted({r["K"] for _, rows in panels for r in rows})
    for ax, (backend, rows) in zip(axes[0], panels):
        for i, k in enumerate(ks):
            mine = [r for r in rows if r["K"] == k]
            if not mine:
                continue
            work = np.array([r["batch"] * r["resolution"] ** 2 * k for r in mine], np.float64)
            ax.loglog(work, [r["seconds"] for r in mine], "o", color=f"C{i}", markersize=5, label=f"K={k} Render")
            ax.loglog(work, [r["baseline_seconds"] for r in mine], "x", color=f"C{i}", markersize=6, label=f"K={k} baseline")
        if rows:
            work = np.array([r["batch"] * r["resolution"] ** 2 * r["K"] for r in rows], np.float64)
            per = np.median([r["seconds"] / w for r, w in zip(rows, work)])
            line = np.array([work.min(), work.max()])
            ax.loglog(line, per * line, ":", color="grey", label="time ∝ B·H·W·K")
        ax.set_title(backend)
        ax.set_xlabel("B·H·W·K (shape-pixels per batch)")
        ax.grid(alpha=0.3, which="both")
    axes[0][0].set_ylabel("seconds per forward+backward")
    if ks:
        axes[0][-1].legend(fontsize=7, ncol=2)
    fig.tight_layout()

    try:
        return atomic_write(path, lambda tmp: fig.savefig(tmp, dpi=100, format="png"))
    finally:
        plt.close(fig)


def _replace_block(text, name, block):
    """Put ``block`` between ``<!-- bench:name -->`` and ``<!-- /bench:name -->`` (appended if absent)."""
    begin, end = f"<!-- bench:{name} -->", f"<!-- /bench:{name} -->"
    new = f"{begin}\n{block.strip()}\n{end}"
    start, stop = text.find(begin), text.find(end)
    if start >= 0 and stop > start:
        return text[:start] + new + text[stop + len(end) :]
    return text.rstrip("\n") + "\n\n" + new + "\n"


def _machine_lines(results):
    lines = []
    for d in results:
        m = d.get("machine", {})
        quick = " **quick run: tiny sizes, not a measurement**" if m.get("quick") else ""
        lines.append(
            f"- {d['backend']} {m.get('backend_version', '?')}, Keras {m.get('keras', '?')}: {m.get('date', '?')}, "
            f"{m.get('cpus', '?')} CPUs, load average {m.get('load_average', '?')} at the start.{quick}"
        )
    return "\n".join(lines)


_RENDER_SECTION = """## Render

Forward+backward time and memory of `shapegrad.Render(..., recompute=True)` (the memory-saving
mode; the default `recompute="auto"` uses it from 8 shapes on and plain autodiff below, where
recomputing costs time and, on PyTorch, memory) against `shapegrad.bench.naive_render`, the
straightforward renderer written with the same public `keras.ops` functions (every shape at every
pixel; the signed distances of all K shapes stacked into one `(B, K, N, N)` tensor, then coverage,
then `raster.over` compositing; plain autodiff keeps every intermediate). Both draw the same image
(tested to 1e-5). Same backend, same compilation (TensorFlow: XLA, JAX: jit, PyTorch: eager), timed
in alternating rounds in one process (`bench.render_sweep`: median of 5 rounds, each about 0.2 s of
calls, at most 10).

- Shapes: K shapes cycling through disk, box, triangle (`bench.cycle_shapes`: K = 4 is
  `disk*2,box,triangle`), typical random scenes (`spec.sample`), 1 channel, softness 1.
- Sizes (`bench.render_configs`): K in 1, 4, 16, 64 at N = 64, B = 16; N in 32, 64, 128, 256 at
  K = 4, B = 16; B in 1, 16, 128, 512 at K = 4, N = 64. Work cap: where B·N²·K is above 2^24 (1.7e7)
  shape-pixels on TensorFlow and JAX, or 2^20 (1.05e6) on PyTorch, which runs eagerly and is far
  slower on this CPU, the batch is cut to fit (column "note"); a size whose cut batch repeats a row
  is marked skipped. `shapegrad bench --max-work W` changes the cap.
- Mpix/s = B x N² / seconds per forward+backward; ratio = baseline seconds / Render seconds (above
  1: Render is faster). "first call s": the first forward+backward, compilation included, Render /
  baseline.
- Memory (MiB): the peak scratch memory of one forward+backward (`bench.step_memory`). JAX: the
  compiled step's XLA temporary buffers (`memory_analysis().temp_size_in_bytes`; inputs and outputs
  not included). PyTorch: the peak of bytes allocated net of frees during the step, from
  `torch.profiler` (`profile_memory=True`), at operator granularity (includes the image and the
  gradient). TensorFlow: not measured (n/a). Memory ratio = baseline / Render (above 1: Render
  needs less).
- Plot (`scaling.png`): seconds per forward+backward against B·H·W·K, one panel per backend, one
  point per size coloured by K (Render dots, baseline crosses), and a dotted line of slope 1
  through Render's median point: points along it mean time linear in B·H·W·K.

    make bench    # each backend: shapegrad bench (writes results-<backend>.json); then shapegrad bench --report

"""


def write_report(directory):
    """Merge ``directory/results-*.json`` into ``directory/results.md`` and ``directory/scaling.png``.

    Only the blocks between ``<!-- bench:cones -->`` and ``<!-- bench:render -->``
    markers (and their closing ``<!-- /bench:... -->``) are rewritten; the
    rest of ``results.md`` (prose, older measurements) is kept. Missing
    blocks are appended. Returns ``(results_md, scaling_png)``; raises
    ``ValueError`` if there are no result files.
    """

    results = load_results(directory)
    if not results:
        raise ValueError(f"no benchmark results (results-<backend>.json) in {directory}; run shapegrad bench first")
    md_path = os.path.join(directory, "results.md")
    png_path = os.path.join(directory, "scaling.png")
    text = open(md_path).read() if os.path.exists(md_path) else "# Benchmark results\n"
    cones = [r for d in results for r in d["rows"] if r.get("name") == "Cones vs naive acos"]
    render = [r for d in results for r in d["rows"] if r.get("name") == "Render vs naive"]
    machines = _machine_lines(results)
    if cones:
        text = _replace_block(text, "cones", f"{machines}\n\n{markdown_table(cones)}")
    if render:
        if "<!-- bench:render -->" not in text:
            text = text.rstrip("\n") + "\n\n" + _RENDER_SECTION
        plot_scaling(results, png_path)
        block = (
            f"{machines}\n\n{render_table(render)}\n\n"
            "![Seconds per forward+backward against B·H·W·K, Render dots, baseline crosses](scaling.png)"
        )
        text = _replace_block(text, "render", block)
    write_text(md_path, text)
    return md_path, png_path if render else None
