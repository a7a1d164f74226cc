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
writes ``results-<backend>.json``; ``shapegrad bench --report`` merges the
files of every backend into ``results.md`` and ``scaling.png``: writing those is
:mod:`shapegrad.bench_report`'s concern, measuring is this module's.

Example:
    >>> from shapegrad import bench
    >>> rows = bench.bench_cones(resolution=16, batch=4, rounds=2, iters=2)
    >>> sorted(rows[0])
    ['backend', 'baseline_mpix_s', 'batch', 'compile', 'mpix_s', 'name', 'ratio', 'resolution']
    >>> bench.cycle_shapes(4)
    'disk*2,box,triangle'
"""

import contextlib
import math
import os
import statistics
import sys
import time

import keras
import numpy as np
from keras import ops

from shapegrad import _validate
from shapegrad.ops.autodiff import torch_device
from shapegrad.render import raster
from shapegrad.render.cones import Cones
from shapegrad.render.primitives import FAR, RenderSpec, parse_kinds, parse_shapes, primitive
from shapegrad.render.render import Render, distance_function

__all__ = [
    "BACKENDS",
    "DEFAULT_KINDS",
    "MAX_WORK",
    "bench_cones",
    "bench_render",
    "capped_batch",
    "cycle_shapes",
    "default_max_work",
    "device_name",
    "grad_step",
    "naive_cones",
    "naive_render",
    "render_configs",
    "render_sweep",
    "step_memory",
    "time_interleaved",
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
    """Wait for ``x`` (a tensor, or a structure of tensors such as a list of gradients)."""
    return keras.tree.map_structure(ops.convert_to_numpy, x)


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
    names = parse_kinds(tuple(kinds) if isinstance(kinds, list) else kinds)
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
    Unless ``warm``, ``step`` is called once first, unprofiled. On a GPU
    (arguments on CUDA): ``torch.cuda.max_memory_allocated`` over the call.
    """
    import torch
    from torch.profiler import ProfilerActivity, profile

    if not warm:  # lazily built constants and caches are not the step's
        _block(step(*args))
    if any(isinstance(a, torch.Tensor) and a.is_cuda for a in args):
        # On a GPU the profiler's CPU events see none of it: the caching allocator's own peak.
        torch.cuda.synchronize()
        before = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
        out = step(*args)
        del out
        torch.cuda.synchronize()
        return int(torch.cuda.max_memory_allocated() - before)
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


def device_name():
    """The device the current backend computes on, in words: ``"cpu"`` or the accelerator's name.

    Example:
        >>> from shapegrad import bench
        >>> isinstance(bench.device_name(), str)
        True
    """
    backend = keras.backend.backend()
    if backend == "jax":
        import jax

        device = jax.devices()[0]
        return "cpu" if device.platform == "cpu" else device.device_kind
    if backend == "torch":
        import torch

        device = torch.device(torch_device())
        return torch.cuda.get_device_name(device) if device.type == "cuda" else device.type
    if backend == "tensorflow":
        import tensorflow as tf

        gpus = tf.config.list_logical_devices("GPU")
        return gpus[0].name if gpus else "cpu"
    return "cpu"


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
