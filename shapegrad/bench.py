"""Benchmark machinery: compiled forward+backward steps, timed interleaved against a baseline.

Every figure shapegrad reports is a *ratio* against a baseline run in the same
process, in alternating rounds, so that machine load and thermal state hit
both sides alike.

Example:
    >>> from shapegrad import bench
    >>> rows = bench.bench_cones(resolution=16, batch=4, rounds=2, iters=2)
    >>> sorted(rows[0])
    ['backend', 'baseline_mpix_s', 'batch', 'compile', 'mpix_s', 'name', 'ratio', 'resolution']
"""

import math
import statistics
import time

import keras
import numpy as np
from keras import ops

__all__ = ["naive_cones", "grad_step", "time_interleaved", "bench_cones", "markdown_table"]


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


def time_interleaved(fns, args, rounds=5, iters=10):
    """Median seconds per call of each function in ``fns``, timed in alternating rounds.

    Each function is called once first (compilation), then for ``rounds``
    rounds every function runs ``iters`` times in turn.
    """
    for fn in fns.values():
        _block(fn(*args))
    samples = {name: [] for name in fns}
    for _ in range(rounds):
        for name, fn in fns.items():
            start = time.perf_counter()
            for _ in range(iters):
                out = fn(*args)
            _block(out)
            samples[name].append((time.perf_counter() - start) / iters)
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
