"""Render with the distance kernels of a past commit against today's, in one process.

Loads ``shapegrad/render/kernels.py`` (``shapegrad/sdf.py`` before the sub-packages) as it was at ``--base`` (``git show``) as a second module, draws
the same scene with that module's kernels (``kernels.DiskKernel``, ``BoxKernel``, ``EllipseKernel``,
``PolygonKernel``) and with today's, and reports:

- forward+backward time of each, interleaved (``bench.time_interleaved``; compiled steps of
  ``bench.grad_step``), and their ratio;
- the largest image difference between the two, and each one's float32 gradient against
  today's float64 gradient (largest and median error over the largest |gradient|), over
  ``--seeds`` batches: float32 noise at pixels a hair from an edge (where the coverage's
  slope is steepest) is heavy-tailed, so one batch says little.

Only the kernels differ; everything else (compositing, ``raster.shape_alpha``) is today's.

    KERAS_BACKEND=tensorflow .venv/bin/python benchmarks/kernel_versions.py --base 0afaf86 --shapes ellipse
    KERAS_BACKEND=jax .venv/bin/python benchmarks/kernel_versions.py --base 0afaf86 --seeds 13 --no-time
"""

import argparse
import importlib.util
import os
import subprocess
import sys
import tempfile

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras  # noqa: E402
import numpy as np  # noqa: E402
from keras import ops  # noqa: E402

from shapegrad.bench import timing as bench  # noqa: E402
from shapegrad.render import kernels  # noqa: E402
from shapegrad.render.render import Render  # noqa: E402

KERNELS = ("DiskKernel", "BoxKernel", "EllipseKernel", "PolygonKernel")


def load_base(commit):
    """The kernels' file at ``commit``, imported as a module of its own."""
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    for name in ("shapegrad/render/kernels.py", "shapegrad/sdf.py"):  # the kernels' file since, and before, the split
        done = subprocess.run(["git", "show", f"{commit}:{name}"], cwd=root, capture_output=True, text=True)
        if done.returncode == 0:
            break
    done.check_returncode()
    text = done.stdout
    path = os.path.join(tempfile.mkdtemp(), "sdf_base.py")
    with open(path, "w") as f:
        f.write(text)
    spec = importlib.util.spec_from_file_location("sdf_base", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _float64(on):
    """Keras' float64 -> float32 promotion lifted (and JAX's x64 mode) while ``on``: true float64 layers."""
    from keras.src.backend.common import dtypes

    dtypes.BIT64_TO_BIT32_DTYPE["float64"] = "float64" if on else "float32"
    if keras.backend.backend() == "jax":
        import jax

        jax.config.update("jax_enable_x64", on)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base", required=True, help="the commit whose sdf.py kernels to compare")
    parser.add_argument("--shapes", default="disk,box,triangle,ellipse")
    parser.add_argument("--resolution", type=int, default=64)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--channels", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=9)
    parser.add_argument("--seeds", type=int, default=3, help="batches for the gradient error")
    parser.add_argument("--no-time", action="store_true", help="only the images and gradients")
    args = parser.parse_args()
    base = load_base(args.base)
    today = {k: getattr(kernels, k) for k in KERNELS}
    n = args.resolution

    def steps(which, dtype="float32", seed=0):
        for k in KERNELS:
            setattr(kernels, k, getattr(base, k) if which == "base" else today[k])
        try:
            layer = Render(args.shapes, n, channels=args.channels, dtype=dtype)
            x = ops.convert_to_tensor(layer.spec.sample(args.batch, seed=seed).astype(dtype))
            rng = np.random.default_rng(seed)
            cot = ops.convert_to_tensor(rng.normal(size=(args.batch, n, n, args.channels)).astype(dtype))
            step = bench.grad_step(layer)[0]
            grad = np.asarray(ops.convert_to_numpy(step(x, cot)), np.float64)  # traced with these kernels
            image = np.asarray(ops.convert_to_numpy(layer(x)), np.float64)
        finally:
            for k in KERNELS:
                setattr(kernels, k, today[k])
        return step, (x, cot), image, grad

    print(f"{keras.backend.backend()}, {args.shapes}, {n} px, batch {args.batch}, {args.channels} channels; base {args.base}")
    images, errors = [], {"base": [], "today": []}
    for seed in range(args.seeds):
        _float64(True)
        try:
            _, _, _, reference = steps("today", "float64", seed)
        finally:
            _float64(False)
        scale = np.abs(reference).max()
        drawn = {}
        for which in errors:
            _, _, drawn[which], grad = steps(which, "float32", seed)
            error = np.abs(grad - reference) / scale
            errors[which].append((error.max(), np.median(error)))
        images.append(np.abs(drawn["base"] - drawn["today"]).max())
    print(f"image: largest difference base - today {max(images):.2e}")
    for which, e in errors.items():
        largest = [m for m, _ in e]
        print(
            f"{which}: float32 gradient - float64, over the largest |gradient|: largest per batch "
            f"{' '.join(f'{m:.1e}' for m in largest)} (median {np.median(largest):.1e}); "
            f"median per batch {np.median([m for _, m in e]):.1e}"
        )
    if args.no_time:
        return
    fns = {}
    for which in ("base", "today"):
        step, step_args, _, _ = steps(which)
        fns[which] = lambda step=step, a=step_args: step(*a)
    seconds = bench.time_interleaved(fns, (), rounds=args.rounds, iters=10, round_seconds=0.3)
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(
        f"forward+backward: base {seconds['base'] * 1e3:.2f} ms, today {seconds['today'] * 1e3:.2f} ms, "
        f"base / today {seconds['base'] / seconds['today']:.2f}x (median of {args.rounds} interleaved rounds; load {load:.2f})"
    )


if __name__ == "__main__":
    sys.exit(main())
