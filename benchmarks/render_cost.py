"""Render's forward+backward cost per shape-pixel against a Cones pixel, in one process.

Times, in interleaved rounds (``shapegrad.bench.time_interleaved``, compiled steps from
``shapegrad.bench.grad_step``: TensorFlow XLA, JAX jit, PyTorch eager):

- ``Cones(64)``, batch 256, and the naive ``acos`` formula (``bench.naive_cones``);
- the mixed colour scene ``Render("disk,box,triangle,ellipse", 64, channels=3)``, batch 32, and
  the stack-everything renderer with plain autodiff (``bench.naive_render``, the old path);
- with ``--per-kind``, also one shape of each kind alone (same batch, size and channels);
- one shape of each of ``--alone`` (default ``path4``, a filled 4-segment cubic path: the goal
  asks for at most 8x a Cones pixel per shape-pixel), alone as well.

and prints the microseconds per million (shape-)pixels, i.e. the cost of one pixel of one shape,
and the ratio of each to a Cones pixel (the target of issue 15: Render <= 3x), plus Cones / naive.

    KERAS_BACKEND=jax .venv/bin/python benchmarks/render_cost.py
    KERAS_BACKEND=tensorflow .venv/bin/python benchmarks/render_cost.py --per-kind
    KERAS_BACKEND=tensorflow .venv/bin/python benchmarks/render_cost.py --per-kind --keep-freed-memory

``--keep-freed-memory``: glibc keeps large freed blocks for reuse, as the command line runs
(:func:`shapegrad.allocator.keep_freed_memory`); without it, glibc's defaults.
"""

import argparse
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras  # noqa: E402
import numpy as np  # noqa: E402
from keras import ops  # noqa: E402

from shapegrad.bench import timing as bench  # noqa: E402
from shapegrad.allocator import keep_freed_memory  # noqa: E402
from shapegrad.render.cones import Cones  # noqa: E402
from shapegrad.render.render import Render  # noqa: E402

SCENE = "disk,box,triangle,ellipse"


def _cones_args(n, batch, seed=0):
    rng = np.random.default_rng(seed)
    x = np.concatenate(
        [rng.uniform(0, 1, (batch, 2)), rng.normal(size=(batch, 2)), rng.uniform(0, 1, (batch, 1))], axis=1
    ).astype("float32")
    cotangent = rng.normal(size=(batch, n, n, 1)).astype("float32")
    return ops.convert_to_tensor(x), ops.convert_to_tensor(cotangent)


def _render_args(layer, batch, seed=0):
    rng = np.random.default_rng(seed)
    x = layer.spec.sample(batch, seed=seed)
    n = layer.resolution
    cotangent = rng.normal(size=(batch, n, n, layer.channels)).astype("float32")
    return ops.convert_to_tensor(x), ops.convert_to_tensor(cotangent)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--resolution", type=int, default=64)
    parser.add_argument("--cones-batch", type=int, default=256)
    parser.add_argument("--batch", type=int, default=32, help="Render's batch")
    parser.add_argument("--channels", type=int, default=3)
    parser.add_argument("--shapes", default=SCENE)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--iters", type=int, default=10, help="calls per round, at most")
    parser.add_argument("--round-seconds", type=float, default=0.3, help="about this many seconds per round")
    parser.add_argument("--per-kind", action="store_true", help="also each kind of --shapes alone")
    parser.add_argument("--alone", default="path4", help="kinds timed alone too, comma-separated ('' for none)")
    parser.add_argument("--no-naive", action="store_true", help="skip the naive baselines")
    parser.add_argument("--keep-freed-memory", action="store_true", help="glibc keeps freed blocks (as the CLI runs)")
    args = parser.parse_args()
    kept = args.keep_freed_memory and keep_freed_memory()
    n = args.resolution

    # name -> (step, args, shape-pixels per call)
    jobs = {}
    cones_args = _cones_args(n, args.cones_batch)
    step, compile_mode = bench.grad_step(Cones(n))
    jobs["Cones"] = (step, cones_args, args.cones_batch * n * n)
    if not args.no_naive:
        jobs["naive cones"] = (bench.grad_step(lambda p: bench.naive_cones(p, n))[0], cones_args, args.cones_batch * n * n)
    layer = Render(args.shapes, n, channels=args.channels)
    render_args = _render_args(layer, args.batch)
    k = layer.spec.num_shapes
    jobs[f"Render {args.shapes}"] = (bench.grad_step(layer)[0], render_args, args.batch * n * n * k)
    if not args.no_naive:
        naive = bench.grad_step(lambda p: bench.naive_render(layer.spec, p))[0]
        jobs[f"naive_render {args.shapes}"] = (naive, render_args, args.batch * n * n * k)
    alone = [kind for kind, _ in layer.shapes] if args.per_kind else []
    alone += [kind.strip() for kind in args.alone.split(",") if kind.strip() and kind.strip() not in alone]
    for kind in alone:
        one = Render(kind, n, channels=args.channels)
        jobs[f"Render {kind}"] = (bench.grad_step(one)[0], _render_args(one, args.batch), args.batch * n * n)

    # time_interleaved calls every function with the same arguments: bind them here.
    fns = {name: (lambda step=step, a=a: step(*a)) for name, (step, a, _) in jobs.items()}
    first = {}
    seconds = bench.time_interleaved(
        fns, (), rounds=args.rounds, iters=args.iters, round_seconds=args.round_seconds, first=first
    )
    cones_cost = seconds["Cones"] / jobs["Cones"][2]
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(
        f"{keras.backend.backend()} ({compile_mode}) on {bench.device_name()}, {n} px, Cones batch {args.cones_batch}, Render batch "
        f"{args.batch}, {args.channels} channels; median of {args.rounds} interleaved rounds; load {load:.2f}; "
        f"freed memory {'kept' if kept else 'returned (allocator defaults)'}"
    )
    print("| step | ms per call | M (shape-)pixels/s | ns per (shape-)pixel | x Cones pixel | first call s |")
    print("|---|---|---|---|---|---|")
    for name, (_, _, work) in jobs.items():
        s = seconds[name]
        cost = s / work
        print(
            f"| {name} | {s * 1e3:.2f} | {work / s / 1e6:.1f} | {cost * 1e9:.2f} | {cost / cones_cost:.2f}x "
            f"| {first[name]:.2f} |"
        )
    if "naive cones" in seconds:
        print(f"Cones / naive: {seconds['naive cones'] / seconds['Cones']:.2f}x")


if __name__ == "__main__":
    main()
