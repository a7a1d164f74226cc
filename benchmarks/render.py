"""Forward+backward time and memory of shapegrad.Render against the naive stack-everything renderer.

Same keras.ops, same backend, same compilation, timed in interleaved rounds in
one process (shapegrad.bench.bench_render); prints a markdown table with the
ratios. K shapes cycle through --shapes (comma-separated kinds). With no size
arguments it runs the default sweep of `shapegrad bench` (bench.render_configs).

    KERAS_BACKEND=jax .venv/bin/python benchmarks/render.py --counts 1 4 16 64 --resolution 64 --batch 16
    KERAS_BACKEND=jax .venv/bin/python benchmarks/render.py            # the default sweep
"""

import argparse
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

from shapegrad.bench import timing as bench  # noqa: E402
from shapegrad.bench import report as bench_report


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--shapes", default=bench.DEFAULT_KINDS, help="kinds cycled to make K shapes (default: %(default)s)"
    )
    parser.add_argument("--counts", type=int, nargs="+", help="values of K")
    parser.add_argument("--resolution", type=int, nargs="+", help="values of N")
    parser.add_argument("--batch", type=int, nargs="+", help="values of B")
    parser.add_argument("--channels", type=int, default=1)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--iters", type=int, default=10, help="calls per round, at most (see --round-seconds)")
    parser.add_argument(
        "--round-seconds", type=float, default=0.2, help="fill each round with about this many seconds of calls"
    )
    parser.add_argument(
        "--max-work", type=float, default=None, help="cut the batch above this B·N²·K (default: per backend)"
    )
    parser.add_argument("--no-memory", action="store_true", help="do not measure memory")
    args = parser.parse_args()
    if args.counts is None and args.resolution is None and args.batch is None:
        rows = bench.render_sweep(
            shapes=args.shapes, rounds=args.rounds, round_seconds=args.round_seconds, max_work=args.max_work,
            channels=args.channels, memory=not args.no_memory,
        )
    else:
        rows = []
        for n in args.resolution or [64]:
            for b in args.batch or [16]:
                rows += bench.bench_render(
                    args.shapes, args.counts or [4], n, b, channels=args.channels, rounds=args.rounds,
                    iters=args.iters, round_seconds=args.round_seconds, memory=not args.no_memory,
                    max_work=args.max_work,
                )
    print(bench_report.render_table(rows))


if __name__ == "__main__":
    main()
