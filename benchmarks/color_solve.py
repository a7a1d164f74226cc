"""Benchmark: a trained scene encoder's geometry with its colours solved from the image (issue 13).

Given a trained ``encoder.keras`` of a synthetic ``Render`` scene run (``metrics.json`` beside it: shapes,
resolution, channels, seed), on the run's test images ``Task.test_set(test_size, seed)`` (those of
``benchmarks/scene_encoder.py``), this prints IoU (``metrics.iou``) and PSNR of

- the encoder alone, as saved;
- its output with every colour replaced by :class:`shapegrad.models.ColorSolve` (the least-squares
  colours given its geometry and opacities, :func:`shapegrad.raster.solve_colors`), for each
  ``--iterations`` (reweighted solves after the first; 0: plain least squares).

    KERAS_BACKEND=jax PYTHONPATH=$PWD python benchmarks/color_solve.py /work/runs/opac13/encoder.keras

Measured on the README's 2200-step guided spatial encoder (trained with its head's colours): IoU
0.669 alone, 0.702 with plain least-squares colours, 0.749 with 3 reweighted iterations.
"""

import argparse
import json
import os
import sys
import time

import numpy as np


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("encoder", help="encoder.keras of a synthetic scene run (metrics.json beside it)")
    p.add_argument("--iterations", type=int, nargs="+", default=[0, 3], help="reweighted solves (default: 0 3)")
    p.add_argument("--test-size", type=int, default=None, help="test images (default: the run's, 256)")
    args = p.parse_args(argv)

    import keras

    import shapegrad  # noqa: F401 - registers the saved classes
    from shapegrad.learn import metrics
    from shapegrad.learn.models import ColorSolve
    from shapegrad.learn.train import Task

    with open(os.path.join(os.path.dirname(os.path.abspath(args.encoder)), "metrics.json")) as f:
        run = json.load(f)
    task = Task(run["shapes"], run["resolution"], run["channels"])
    size = args.test_size or run.get("test_size", 256)
    images, _ = task.test_set(size, run.get("seed", 0))
    print(f"{run['shapes']}, {task.resolution} px, {size} test images, backend {keras.backend.backend()}; "
          f"load {os.getloadavg()[0]:.2f}", flush=True)
    pred = keras.saving.load_model(args.encoder).predict(images, batch_size=256, verbose=0)

    def line(name, params, seconds=None):
        recon = task.render(params)
        iou, psnr = metrics.iou(recon, images, task.background), metrics.psnr(recon, images)
        extra = f", solve {1e3 * seconds / size:.2f} ms/image (eager, one batch)" if seconds is not None else ""
        print(f"{name:<36} IoU mean {iou.mean():.4f} median {np.median(iou):.4f}, PSNR {psnr.mean():.2f} dB{extra}",
              flush=True)

    line("encoder alone", pred)
    for iterations in args.iterations:
        layer = ColorSolve(task.renderer, iterations=iterations)
        t0 = time.perf_counter()
        solved = keras.ops.convert_to_numpy(layer([pred, images]))
        line(f"colours solved, {iterations} reweightings", solved, time.perf_counter() - t0)
    print(f"load {os.getloadavg()[0]:.2f} at the end", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
