"""Benchmark machinery: compiled forward+backward steps, timed interleaved against a baseline.

Every figure shapegrad reports is a *ratio* against a baseline run in the same
process, in alternating rounds, so that machine load and thermal state hit
both sides alike.

Two benchmarks:

- :func:`bench_cones`: ``Cones`` against :func:`naive_cones`, the NaN-prone
  ``acos`` formula.
- :func:`bench_render`: ``Render`` against :func:`naive_render`, the
  straightforward stack-everything renderer, in time and in memory
  (:func:`step_memory`); :func:`render_sweep` runs the default sizes.

``shapegrad bench`` runs both on the current backend (``KERAS_BACKEND``) and
writes ``results-<backend>.json`` (:func:`save_results`); ``shapegrad bench
--report`` merges the files of every backend into ``results.md`` and
``scaling.png`` (:func:`write_report`).

Example:
    >>> from shapegrad import bench
    >>> rows = bench.bench_cones(resolution=16, batch=4, rounds=2, iters=2)
    >>> sorted(rows[0])
    ['backend', 'baseline_mpix_s', 'batch', 'compile', 'mpix_s', 'name', 'ratio', 'resolution']
    >>> bench.cycle_shapes(4)
    'disk*2,box,triangle'
"""

import contextlib
import datetime
import glob
import json
import math
import os
import platform
import statistics
import sys
import time

import keras
import numpy as np
from keras import ops

from shapegrad import _validate, raster
from shapegrad.primitives import FAR, RenderSpec, parse_shapes, primitive
from shapegrad.render import Render, distance_function

__all__ = [
    "BACKENDS",
    "DEFAULT_KINDS",
    "MAX_WORK",
    "add_parser",
    "bench_cones",
    "bench_render",
    "capped_batch",
    "cycle_shapes",
    "default_max_work",
    "grad_step",
    "load_results",
    "markdown_table",
    "naive_cones",
    "naive_render",
    "plot_scaling",
    "render_configs",
    "render_sweep",
    "render_table",
    "save_results",
    "step_memory",
    "time_interleaved",
    "write_report",
]

BACKENDS = ("tensorflow", "jax", "torch")
# Default cap on the shape-pixels B * N^2 * K of one Render benchmark size, per backend: larger
# sizes run with a smaller batch (bench_render). PyTorch runs eagerly, about 30x slower than the
# compiled backends on the project's 2-core CPU (some microseconds per shape-pixel for a
# forward+backward), so its cap is lower: `shapegrad bench` then takes minutes on each backend.
MAX_WORK = {"tensorflow": 2**24, "jax": 2**24, "torch": 2**20}
# The shapes cycled through to make K shapes (see cycle_shapes): a cheap, a middling and a
# polygon distance, so the time per shape is not that of the cheapest primitive alone.
DEFAULT_KINDS = "disk,box,triangle"


def naive_cones(x, resolution):
    """The original, NaN-prone cone formula: ``acos(clip(dot(normalize(p - c), normalize(d))))``.

    Kept as the baseline for benchmarks and as the test that proves the fix.
    ``x``: ``(B, 5)``; returns ``(B, N, N, 1)``.
    """
    n = resolution
    rows = ops.cast(ops.arange(n), x.dtype)
    grid = ops.stack(ops.meshgrid(rows, rows, indexing="ij"), axis=-1)
    r = grid[None] - n * x[:, None, None, 0:2]
    d = x[:, None, None, 2:4]
    u = r / ops.norm(r, axis=-1, keepdims=True)
    v = d / ops.norm(d, axis=-1, keepdims=True)
    theta = ops.arccos(ops.clip(ops.sum(u * v, axis=-1), -1.0, 1.0))
    return ops.sigmoid(n * (math.pi * x[:, None, None, 4] - theta))[..., None]


def naive_render(spec, params, softness=1.0, background=0.0):
    """The straightforward renderer, the baseline of :func:`bench_render`.

    Every shape is evaluated at every pixel, the signed distances of all ``K``
    shapes are stacked into one ``(B, K, N, N)`` tensor, turned into coverage
    (:func:`shapegrad.raster.coverage`) and composited back to front
    (:func:`shapegrad.raster.over`); plain autodiff keeps every intermediate
    for the backward pass. Only public functions are used: the distance of
    each kind is ``shapegrad.render.distance_function(kind)``, the layout is
    ``spec.split``. Parameters are clipped to ``[-1e12, 1e12]`` and opacities
    to ``[0, 1]``, as in ``Render``, so on the same inputs it draws the same
    image as ``Render(spec.shapes, spec.resolution, spec.channels, softness)``
    with ``composite="over"``.

    Args:
        spec: a :class:`shapegrad.primitives.RenderSpec` (``Render(...).spec``).
        params: ``(B, P)`` normalised parameters; computed in float64 if they
            are float64, else in float32.
        softness: edge width in pixels.
        background: a number or ``C`` numbers.

    Returns:
        ``(B, N, N, C)`` image.
    """
    params = ops.convert_to_tensor(params)
    dtype = "float64" if keras.backend.standardize_dtype(params.dtype) == "float64" else "float32"
    x = ops.clip(ops.cast(params, dtype), -FAR, FAR)  # as Render does
    n = spec.resolution
    grid = raster.pixel_grid(n, n, dtype)[None, None]  # (1, 1, N, N, 2)
    shapes = spec.split(x)  # one {field: (B, size)} per shape
    distances, k = [], 0
    for kind, count in spec.shapes:
        prim = primitive(kind)
        group = shapes[k : k + count]
        k += count
        geometry = {
            f.name: ops.stack([s[f.name] for s in group], axis=1)[:, :, None, None, :] for f in prim.fields
        }
        distances.append(distance_function(kind)(grid, geometry, n))  # (B, count, N, N)
    coverage = raster.coverage(ops.concatenate(distances, axis=1), softness)  # (B, K, N, N)
    colors = ops.stack([s["color"] for s in shapes], axis=1)  # (B, K, C)
    opacities = ops.clip(ops.stack([s["opacity"][:, 0] for s in shapes], axis=1), 0.0, 1.0)  # (B, K)
    return raster.over(coverage, colors, opacities, ops.convert_to_tensor(background, dtype), axis=1)


def grad_step(render):
    """A compiled function ``(params, cotangent) -> d sum(render(params) * cotangent) / d params``.

    TensorFlow: ``tf.function(jit_compile=True)``; JAX: ``jax.jit``; PyTorch:
    eager autograd (returns ``(step, "eager")`` there). Returns ``(step, compile)``.
    """
    backend = keras.backend.backend()
    if backend == "tensorflow":
        import tensorflow as tf

        @tf.function(jit_compile=True)
        def step(x, cotangent):
            with tf.GradientTape() as tape:
                tape.watch(x)
                loss = tf.reduce_sum(render(x) * cotangent)
            return tape.gradient(loss, x)

        return step, "xla"
    if backend == "jax":
        import jax

        return jax.jit(jax.grad(lambda x, c: ops.sum(render(x) * c))), "jit"
    import torch

    def step(x, cotangent):
        x = x.detach().requires_grad_(True)
        (grad,) = torch.autograd.grad(ops.sum(render(x) * cotangent), x)
        return grad

    return step, "eager"


def _block(x):
    return ops.convert_to_numpy(x)


def time_interleaved(fns, args, rounds=5, iters=10, round_seconds=None, first=None):
    """Median seconds per call of each function in ``fns``, timed in alternating rounds.

    Each function is called once first (compilation), then for ``rounds``
    rounds every function runs ``iters`` times in turn. With
    ``round_seconds``, each function is timed once more and then called, per
    round, as many times as fill about ``round_seconds`` (at least 1, at most
    ``iters``): large sizes then cost a few calls, small ones still average
    over many. A dict passed as ``first`` receives the seconds of each
    function's first call (compilation included).
    """
    for name, fn in fns.items():
        start = time.perf_counter()
        _block(fn(*args))
        if first is not None:
            first[name] = time.perf_counter() - start
    calls = dict.fromkeys(fns, iters)
    if round_seconds is not None:
        for name, fn in fns.items():
            start = time.perf_counter()
            _block(fn(*args))
            once = max(time.perf_counter() - start, 1e-9)
            calls[name] = max(1, min(iters, math.ceil(round_seconds / once)))
    samples = {name: [] for name in fns}
    for _ in range(rounds):
        for name, fn in fns.items():
            start = time.perf_counter()
            for _ in range(calls[name]):
                out = fn(*args)
            _block(out)
            samples[name].append((time.perf_counter() - start) / calls[name])
    return {name: statistics.median(s) for name, s in samples.items()}


def bench_cones(resolution=64, batch=256, rounds=5, iters=10, seed=0):
    """Forward+backward throughput of ``Cones`` against :func:`naive_cones`, same ops and compilation.

    Returns a list of result rows (dicts).
    """
    from shapegrad.layers import Cones

    rng = np.random.default_rng(seed)
    x = np.concatenate(
        [rng.uniform(0, 1, (batch, 2)), rng.normal(size=(batch, 2)), rng.uniform(0, 1, (batch, 1))], axis=1
    ).astype("float32")
    cotangent = rng.normal(size=(batch, resolution, resolution, 1)).astype("float32")
    layer = Cones(resolution)
    ours, compile_mode = grad_step(layer)
    naive, _ = grad_step(lambda p: naive_cones(p, resolution))
    args = (ops.convert_to_tensor(x), ops.convert_to_tensor(cotangent))
    seconds = time_interleaved({"cones": ours, "naive": naive}, args, rounds=rounds, iters=iters)
    mpix = batch * resolution * resolution / 1e6
    return [
        {
            "name": "Cones vs naive acos",
            "backend": keras.backend.backend(),
            "compile": compile_mode,
            "resolution": resolution,
            "batch": batch,
            "mpix_s": mpix / seconds["cones"],
            "baseline_mpix_s": mpix / seconds["naive"],
            "ratio": seconds["naive"] / seconds["cones"],
        }
    ]


# ---------------------------------------------------------------------------------------------
# Render against the naive renderer: time and memory


def cycle_shapes(count, kinds=DEFAULT_KINDS):
    """A shapes string of ``count`` shapes cycling through ``kinds`` (comma-separated kind names).

    Shape k is ``kinds[k % len(kinds)]``; instances of a kind are grouped, as
    ``Render`` lays them out. One kind gives ``"disk*K"``.

    Example:
        >>> cycle_shapes(1), cycle_shapes(4), cycle_shapes(16, "disk")
        ('disk', 'disk*2,box,triangle', 'disk*16')
    """
    count = _validate.positive_int("count", count)
    names = [k.strip() for k in kinds.split(",")] if isinstance(kinds, str) else list(kinds)
    if not names or any(not isinstance(k, str) or not k or "*" in k for k in names):
        raise ValueError(f"Expected kinds to be comma-separated primitive kinds. Received: kinds={kinds!r}")
    parts = []
    for i, kind in enumerate(names):
        n = len(range(i, count, len(names)))
        if n:
            parts.append(kind if n == 1 else f"{kind}*{n}")
    shapes = ",".join(parts)
    parse_shapes(shapes)  # a ValueError naming an unknown kind
    return shapes


def _params(spec, batch, channels, seed):
    rng = np.random.default_rng(seed)
    x = spec.sample(batch, seed=seed)
    cotangent = rng.normal(size=(batch, spec.resolution, spec.resolution, channels)).astype("float32")
    return ops.convert_to_tensor(x), ops.convert_to_tensor(cotangent)


def _jax_temp_bytes(compiled):
    stats = compiled.memory_analysis()
    return None if stats is None else int(stats.temp_size_in_bytes)


@contextlib.contextmanager
def _quiet_stderr():
    """Silence file descriptor 2 (the profiler's C++ start/stop lines); Python errors still propagate."""
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "w") as null:
            os.dup2(null.fileno(), 2)
            yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def _torch_peak_bytes(step, args, warm=False):
    """Peak of the bytes allocated, net of frees, while ``step(*args)`` runs (PyTorch's profiler).

    Each profiled operator's own allocations count from its start and its own
    frees from its end, so the figure is the peak at operator granularity
    (rounded up, never down), relative to what was live before the call.
    Unless ``warm``, ``step`` is called once first, unprofiled.
    """
    from torch.profiler import ProfilerActivity, profile

    if not warm:  # lazily built constants and caches are not the step's
        _block(step(*args))
    with _quiet_stderr(), profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        out = step(*args)
        del out
    changes = []
    for event in prof.events():
        change = event.self_cpu_memory_usage
        if change:
            changes.append((event.time_range.start if change > 0 else event.time_range.end, change))
    live = peak = 0
    for _, change in sorted(changes):
        live += change
        peak = max(peak, live)
    return int(peak)


def step_memory(render, params, cotangent):
    """Bytes of memory the forward+backward of ``render`` needs besides its inputs and output.

    - JAX: ``temp_size_in_bytes`` of the compiled :func:`grad_step`
      (``jax.jit(...).lower(...).compile().memory_analysis()``): XLA's buffer
      assignment for every intermediate, forward and backward, with buffers
      reused once dead, i.e. the peak of the step's scratch memory.
    - PyTorch: the peak of the bytes allocated (net of frees) during one
      forward+backward, from ``torch.profiler`` with ``profile_memory=True``,
      at operator granularity. It sees everything, including what
      ``torch.utils.checkpoint`` (``keras.remat``) keeps in closures and the
      recomputation's transient tensors, which
      ``torch.autograd.graph.saved_tensors_hooks`` miss (checkpointing
      installs its own hooks). It includes the image and the gradient
      (a few ``(B, N, N, C)`` tensors, the same for both sides).
    - TensorFlow: ``None`` (no reliable per-step figure on CPU).

    Args:
        render: a callable ``(B, P) -> image``, e.g. a ``Render`` layer.
        params, cotangent: tensors, as for :func:`grad_step`.
    """
    backend = keras.backend.backend()
    if backend == "jax":
        step, _ = grad_step(render)
        return _jax_temp_bytes(step.lower(params, cotangent).compile())
    if backend == "torch":
        step, _ = grad_step(render)
        return _torch_peak_bytes(step, (params, cotangent))
    return None


def _row(spec, count, resolution, batch, compile_mode, **values):
    row = {
        "name": "Render vs naive",
        "backend": keras.backend.backend(),
        "compile": compile_mode,
        "shapes": spec,
        "K": count,
        "resolution": resolution,
        "batch": batch,
        "work": batch * resolution * resolution * count,
    }
    for key in (
        "seconds",
        "baseline_seconds",
        "first_call_s",
        "baseline_first_call_s",
        "mpix_s",
        "baseline_mpix_s",
        "ratio",
        "memory_mib",
        "baseline_memory_mib",
        "memory_ratio",
        "note",
        "skipped",
    ):
        row[key] = values.get(key)
    return row


def _compile_mode():
    return {"tensorflow": "xla", "jax": "jit"}.get(keras.backend.backend(), "eager")


def default_max_work(backend=None):
    """The default work cap ``B * N^2 * K`` of ``backend`` (default: the current one): :data:`MAX_WORK`."""
    return MAX_WORK.get(backend or keras.backend.backend(), min(MAX_WORK.values()))


def capped_batch(batch, resolution, count, max_work):
    """The largest batch ``<= batch`` with ``batch * N^2 * K <= max_work`` (0 if even 1 is too much)."""
    if max_work is None or math.isinf(max_work):
        return batch
    return min(batch, int(max_work // (resolution * resolution * count)))


def bench_render(
    shapes=DEFAULT_KINDS,
    counts=(1, 4, 16, 64),
    resolution=64,
    batch=16,
    channels=1,
    softness=1.0,
    rounds=5,
    iters=10,
    round_seconds=None,
    memory=True,
    max_work=None,
    seed=0,
):
    """Forward+backward throughput and memory of ``Render`` against :func:`naive_render`.

    For each ``K`` in ``counts``, a ``Render(cycle_shapes(K, shapes),
    resolution, channels, softness, recompute=True)`` layer (the
    memory-saving mode, which ``recompute="auto"`` picks from 8 shapes on) and the baseline on the same
    typical scenes (``spec.sample``) are compiled with :func:`grad_step` and
    timed with :func:`time_interleaved`. Mpix/s is ``batch * N^2 / seconds``
    per forward+backward; ``ratio`` is baseline seconds / ``Render``
    seconds (above 1: ``Render`` is faster); ``memory_ratio`` is baseline
    bytes / ``Render`` bytes (:func:`step_memory`; ``None`` where not
    measured); ``first_call_s`` is the first call, compilation included.

    Work cap: where ``batch * N^2 * K`` exceeds ``max_work``, the batch is
    shrunk to fit (the row's ``batch`` is the one run and ``note`` says so);
    where even a batch of 1 does not fit, the row has ``skipped`` set and no
    numbers.

    Args:
        shapes: comma-separated primitive kinds, cycled to make ``K`` shapes
            (:func:`cycle_shapes`): ``"disk"`` gives ``disk*K``.
        counts: the values of ``K``.
        resolution, batch, channels, softness: of the scenes.
        rounds, iters, round_seconds: as in :func:`time_interleaved`.
        memory: measure memory too (:func:`step_memory`; on JAX from the
            compilation used for timing, on PyTorch one more profiled call).
        max_work: the largest ``batch * N^2 * K`` to run; ``None``:
            :func:`default_max_work` of the backend; ``math.inf``: no limit.

    Returns:
        One row (a dict) per ``K``.
    """
    resolution = _validate.positive_int("resolution", resolution)
    batch = _validate.positive_int("batch", batch)
    backend = keras.backend.backend()
    max_work = default_max_work() if max_work is None else max_work
    rows = []
    for count in counts:
        spec_string = cycle_shapes(count, shapes)
        run_batch = capped_batch(batch, resolution, count, max_work)
        if run_batch < 1:
            why = f"B·N²·K = {resolution * resolution * count:.2g} > {max_work:.3g} even at B = 1"
            rows.append(_row(spec_string, count, resolution, batch, _compile_mode(), skipped=why))
            continue
        note = f"B cut from {batch} (B·N²·K ≤ {max_work:.3g})" if run_batch < batch else None
        layer = Render(spec_string, resolution, channels=channels, softness=softness, recompute=True)
        spec = RenderSpec(spec_string, resolution, channels)

        def naive(p, spec=spec):
            return naive_render(spec, p, softness)

        args = _params(spec, run_batch, channels, seed)
        steps = dict(zip(("render", "naive"), (grad_step(layer)[0], grad_step(naive)[0])))
        compile_seconds = dict.fromkeys(steps, 0.0)
        bytes_ = dict.fromkeys(steps)
        if backend == "jax":  # compile once, for timing and memory alike
            for name, step in steps.items():
                start = time.perf_counter()
                steps[name] = step.lower(*args).compile()
                compile_seconds[name] = time.perf_counter() - start
                bytes_[name] = _jax_temp_bytes(steps[name]) if memory else None
        first = {}
        seconds = time_interleaved(
            steps, args, rounds=rounds, iters=iters, round_seconds=round_seconds, first=first
        )
        if memory and backend == "torch":  # after timing: warm
            bytes_ = {name: _torch_peak_bytes(step, args, warm=True) for name, step in steps.items()}
        mpix = run_batch * resolution * resolution / 1e6
        mib = {k: None if v is None else v / 2**20 for k, v in bytes_.items()}
        rows.append(
            _row(
                spec_string,
                count,
                resolution,
                run_batch,
                _compile_mode(),
                seconds=seconds["render"],
                baseline_seconds=seconds["naive"],
                first_call_s=compile_seconds["render"] + first["render"],
                baseline_first_call_s=compile_seconds["naive"] + first["naive"],
                mpix_s=mpix / seconds["render"],
                baseline_mpix_s=mpix / seconds["naive"],
                ratio=seconds["naive"] / seconds["render"],
                memory_mib=mib["render"],
                baseline_memory_mib=mib["naive"],
                memory_ratio=bytes_["naive"] / bytes_["render"] if bytes_["render"] and bytes_["naive"] else None,
                note=note,
            )
        )
    return rows


def render_configs(quick=False):
    """The sizes of :func:`render_sweep`: a list of ``(counts, resolution, batch)``.

    Full: ``K`` in (1, 4, 16, 64) at ``N = 64``, ``B = 16``; ``N`` in (32,
    128, 256) at ``K = 4``, ``B = 16``; ``B`` in (1, 128, 512) at ``K = 4``,
    ``N = 64`` (``K = 4``, ``N = 64``, ``B = 16`` is in the first). ``quick``:
    ``K`` in (1, 4) at ``N = 16``, ``B`` in (1, 2), and ``N = 24`` at
    ``K = 4``, ``B = 2``: a smoke test, not a measurement.
    """
    if quick:
        return [((1, 4), 16, 1), ((1, 4), 16, 2), ((4,), 24, 2)]
    return (
        [((1, 4, 16, 64), 64, 16)]
        + [((4,), n, 16) for n in (32, 128, 256)]
        + [((4,), 64, b) for b in (1, 128, 512)]
    )


def render_sweep(
    quick=False, shapes=DEFAULT_KINDS, rounds=None, round_seconds=None, max_work=None, progress=None, **kwargs
):
    """Run :func:`bench_render` over :func:`render_configs`; returns every row.

    Defaults: 5 rounds of calls filling about 0.2 s each (at most 10 calls);
    ``quick``: 1 round of 1 call. A size whose batch the work cap cuts to
    one already run is not run again (its row is ``skipped``, saying so).
    ``progress(row)`` is called after each row. Other keyword arguments go
    to :func:`bench_render`.
    """
    if rounds is None:
        rounds = 1 if quick else 5
    if round_seconds is None and not quick:
        round_seconds = 0.2
    iters = 1 if quick else 10
    max_work = default_max_work() if max_work is None else max_work
    rows, done = [], {}
    for counts, resolution, batch in render_configs(quick):
        for count in counts:
            run_batch = capped_batch(batch, resolution, count, max_work)
            key = (count, resolution, run_batch)
            if run_batch >= 1 and key in done:
                row = _row(
                    cycle_shapes(count, shapes),
                    count,
                    resolution,
                    batch,
                    _compile_mode(),
                    skipped=f"B cut to {run_batch} (B·N²·K ≤ {max_work:.3g}): the B = {done[key]} row",
                )
            else:
                kw = dict(rounds=rounds, iters=iters, round_seconds=round_seconds, max_work=max_work)
                (row,) = bench_render(shapes, (count,), resolution, batch, **kw, **kwargs)
                done[key] = batch
            rows.append(row)
            if progress is not None:
                progress(row)
    return rows


# ---------------------------------------------------------------------------------------------
# Tables, result files, the report


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
    from shapegrad.files import write_text

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
    from shapegrad.files import atomic_write

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
    from shapegrad.files import write_text

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


# ---------------------------------------------------------------------------------------------
# The ``shapegrad bench`` sub-command


def add_parser(subparsers):
    """The ``shapegrad bench`` sub-command."""
    p = subparsers.add_parser(
        "bench",
        help="time Cones and Render against naive baselines on this backend",
        description="Time the forward+backward of Cones and Render against naive baselines, interleaved "
        "in one process, on the backend KERAS_BACKEND names; print the tables and write "
        "DIR/results-<backend>.json. With --report, merge every DIR/results-*.json into DIR/results.md "
        "and DIR/scaling.png instead.",
    )
    p.add_argument(
        "--quick",
        action="store_true",
        help="tiny sizes, one call each: a smoke test, not a measurement (writes a result file only with --out)",
    )
    p.add_argument("--out", metavar="DIR", help="where result files go (default: benchmarks)")
    p.add_argument(
        "--report",
        action="store_true",
        help="write DIR/results.md and DIR/scaling.png from DIR/results-*.json; run nothing",
    )
    p.add_argument("--only", choices=("cones", "render"), help="run one of the two benchmarks")
    p.add_argument("--rounds", type=int, default=None, help="timing rounds (default 5; 1 with --quick)")
    caps = ", ".join(f"{b} {w:.3g}" for b, w in MAX_WORK.items())
    p.add_argument(
        "--max-work",
        type=float,
        default=None,
        metavar="W",
        help=f"cut the batch of Render sizes with more than W shape-pixels B·N²·K (default: {caps})",
    )
    p.set_defaults(run=_run)
    return p


def _run(args):
    from shapegrad.cli import UsageError

    save = args.out is not None or not args.quick  # a quick run does not overwrite real results by default
    args.out = args.out or "benchmarks"
    if os.path.exists(args.out) and not os.path.isdir(args.out):
        raise UsageError(f"Expected --out to be a folder. Received: out={args.out!r} (a file)")
    if args.report:
        try:
            md, png = write_report(args.out)
        except (OSError, ValueError) as error:
            raise UsageError(str(error)) from None
        print(f"wrote {md}" + (f" and {png}" if png else ""))
        return 0
    if args.rounds is not None and args.rounds < 1:
        raise UsageError(f"Expected --rounds to be a positive integer. Received: rounds={args.rounds}")
    if args.max_work is not None and not (math.isfinite(args.max_work) and args.max_work >= 1):
        raise UsageError(f"Expected --max-work to be a finite number >= 1. Received: max_work={args.max_work}")
    backend = keras.backend.backend()
    if backend not in BACKENDS:
        raise UsageError(f"Expected KERAS_BACKEND to be one of {list(BACKENDS)}. Received: {backend!r}")
    if backend == "tensorflow":  # every size traces new functions: TensorFlow's retracing warning is noise here
        import tensorflow as tf

        tf.get_logger().setLevel("ERROR")
    rows = []
    if args.only in (None, "cones"):
        n, b, iters = (16, 4, 1) if args.quick else (64, 256, 10)
        rounds = args.rounds or (1 if args.quick else 5)
        rows += bench_cones(resolution=n, batch=b, rounds=rounds, iters=iters)
        print(markdown_table(rows), flush=True)

    def progress(row):
        what = row["skipped"] or f"ratio {row['ratio']:.2f}x, first call {row['first_call_s']:.1f} s"
        print(f"render K={row['K']} N={row['resolution']} B={row['batch']}: {what}", file=sys.stderr, flush=True)

    if args.only in (None, "render"):
        render = render_sweep(quick=args.quick, rounds=args.rounds, max_work=args.max_work, progress=progress)
        rows += render
        print(render_table(render), flush=True)
    if args.only:  # keep the other benchmark's rows from an earlier run
        names = {r["name"] for r in rows}
        old = [d for d in _load_quietly(args.out) if d["backend"] == backend]
        rows = [r for d in old for r in d["rows"] if r.get("name") not in names] + rows
    if save:
        print(f"wrote {save_results(args.out, rows, quick=args.quick)}")
    return 0
