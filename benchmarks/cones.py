"""Forward+backward throughput of shapegrad.Cones against the naive acos formula.

Same keras.ops, same backend, same compilation, timed in interleaved rounds in
one process; prints a markdown table with the ratio.

    KERAS_BACKEND=jax .venv/bin/python benchmarks/cones.py --resolution 64 --batch 256
"""

import argparse
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

from shapegrad.bench import timing as bench  # noqa: E402
from shapegrad.bench import report as bench_report


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--resolution", type=int, nargs="+", default=[64])
    parser.add_argument("--batch", type=int, nargs="+", default=[256])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--iters", type=int, default=10)
    args = parser.parse_args()
    rows = []
    for n in args.resolution:
        for b in args.batch:
            rows += bench.bench_cones(resolution=n, batch=b, rounds=args.rounds, iters=args.iters)
    print(bench_report.markdown_table(rows))


if __name__ == "__main__":
    main()
