"""Benchmark: a scene encoder on shapegrad's own synthetic scenes, alone and refined by the scene search.

Issue 13, item 3: on ``disk,box,triangle`` colour scenes at 64 px (``train(shapes="disk,box,triangle",
channels=3, resolution=64, ...)``, its 256 test images ``Task.test_set(256, seed)``), the encoder alone
should reach IoU >= 0.85 (mean) and, refined, >= 0.97 at <= 0.5 s per image.

Given a trained ``encoder.keras`` (``shapegrad train --shapes disk,box,triangle --channels 3 ...``; the
run's ``metrics.json`` beside it gives the shapes, resolution, channels and seed, so no flags are needed),
this prints, on the run's test images:

- the encoder alone: IoU mean / median, PSNR, parameter errors (as ``train.evaluate``);
- refined by :func:`shapegrad.fit_scene` started from the encoder's guess (``starts=``: its shapes,
  back to front; the search then adds, drops, re-orders and re-kinds shapes as from scratch), with
  ``kinds`` = the run's kinds and ``max_shapes`` = its number of shapes (``--mode search``), or exactly
  the run's shapes (``--mode exact``: ``fit_scene(shapes=...)``), or ``fit_scene`` from nothing
  (``--mode scratch``, no encoder: the reference). Times: the first call in the process (with the
  compilation of the engines) and a second, warm call on the same images.

    KERAS_BACKEND=tensorflow PYTHONPATH=$PWD python benchmarks/scene_encoder.py runs/scenes/encoder.keras \\
        --mode search exact scratch

IoU: ``metrics.iou`` of the drawing against the image (pixels off the background by > 0.5 in some
channel), as ``train.evaluate``. The fits are drawn by their own ``Render`` (their opacities and edge
sharpness: the polish fits both, ``fit_scene(opacity=, soft_edges=)``); ``--opaque`` measures the
search as it was before (``opacity=False, soft_edges=False``: opaque shapes, edges of ``final_sharpness``).
"""

import argparse
import json
import os
import sys
import time

import numpy as np


def _load(path):
    import keras

    import shapegrad  # noqa: F401 - registers the saved classes

    return keras.saving.load_model(path)


def _starts(task, pred):
    """The encoder's ``(B, P)`` guess as ``fit_scene`` starts: per image ``[(kind, params)]`` back to front."""
    spec = task.renderer.spec
    out = []
    for row in pred:
        shapes = []
        for k in range(spec.num_shapes):
            fields = spec.fields_of(k)
            shapes.append((fields[0].kind, np.concatenate([row[s.slice] for s in fields]).astype(np.float32)))
        out.append(shapes)
    return out


def _scores(fits, images, background):
    from shapegrad.learn import metrics

    recon = np.stack([f.render() for f in fits])
    iou = metrics.iou(recon, images, background)
    psnr = metrics.psnr(recon, images)
    counts = np.array([f.count for f in fits])
    return iou, psnr, counts


def _line(name, iou, psnr, seconds=None, extra=""):
    text = f"{name:<34} IoU mean {iou.mean():.4f} median {np.median(iou):.4f} worst {iou.min():.3f}, PSNR {psnr.mean():.1f} dB"
    if seconds is not None:
        text += f", {seconds:.3f} s/image"
    print(text + extra, flush=True)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("encoder", nargs="?", help="encoder.keras of a synthetic scene run (metrics.json beside it)")
    p.add_argument("--mode", nargs="+", choices=("search", "exact", "scratch"), default=["search"],
                   help="refinements to measure (default: search)")
    p.add_argument("--test-size", type=int, default=None, help="test images (default: the run's, 256)")
    p.add_argument("--warm", action=argparse.BooleanOptionalAction, default=True,
                   help="time a second, warm call of each refinement (default on)")
    p.add_argument("--shapes", default="disk,box,triangle", help="without an encoder (--mode scratch only)")
    p.add_argument("--resolution", type=int, default=64)
    p.add_argument("--channels", type=int, default=3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--opaque", action="store_true",
                   help="fit_scene(opacity=False, soft_edges=False): opaque shapes, sharp edges (as before)")
    p.add_argument("--json", help="write the figures to this JSON file")
    p.add_argument("--dump", help="write per-image figures of each refinement to this .npz file (IoU, PSNR, "
                                  "shapes found, fitted shapes and params, the true params): for diagnosis")
    args = p.parse_args(argv)

    import keras

    from shapegrad import fit_scene
    from shapegrad.learn import metrics
    from shapegrad.learn.train import Task

    run = {}
    if args.encoder:
        with open(os.path.join(os.path.dirname(os.path.abspath(args.encoder)), "metrics.json")) as f:
            run = json.load(f)
    elif set(args.mode) != {"scratch"}:
        p.error("an encoder is needed for --mode search and exact")
    shapes = run.get("shapes", args.shapes)
    task = Task(shapes, run.get("resolution", args.resolution), run.get("channels", args.channels))
    size = args.test_size or run.get("test_size", 256)
    images, params = task.test_set(size, run.get("seed", args.seed))
    spec = task.renderer.spec
    kinds = tuple(dict.fromkeys(kind for kind, _ in spec.shapes))
    print(f"{shapes}, {task.resolution} px, {task.channels} channel(s), {size} test images, "
          f"backend {keras.backend.backend()}; load {os.getloadavg()[0]:.2f}", flush=True)
    result = dict(shapes=shapes, test_size=size, backend=keras.backend.backend(), encoder=args.encoder)
    starts = None
    if args.encoder:
        encoder = _load(args.encoder)
        t0 = time.perf_counter()
        pred = encoder.predict(images, batch_size=256, verbose=0)
        seconds = (time.perf_counter() - t0) / size
        recon = task.render(pred)
        iou, psnr = metrics.iou(recon, images, task.background), metrics.psnr(recon, images)
        _line("encoder alone", iou, psnr, seconds)
        errors = metrics.summarize(task.errors(pred, params))
        print("  " + ", ".join(f"{k} {v:.3g}" for k, v in errors.items() if k.endswith("_median") and "_abs" not in k))
        result["encoder"] = dict(iou=float(iou.mean()), iou_median=float(np.median(iou)), psnr=float(psnr.mean()),
                                 seconds_per_image=seconds, errors=errors)
        starts = _starts(task, pred)
    per_image = {}
    for mode in args.mode:
        options = dict(shapes=",".join(f"{k}*{c}" for k, c in spec.shapes)) if mode == "exact" else dict(
            kinds=kinds, max_shapes=spec.num_shapes)
        if args.opaque:
            options.update(opacity=False, soft_edges=False)
        given = None if mode == "scratch" else starts
        times = []
        for _ in range(2 if args.warm else 1):
            t0 = time.perf_counter()
            fits = fit_scene(images, starts=given, **options)
            times.append((time.perf_counter() - t0) / size)
        iou, psnr, counts = _scores(fits, images, task.background)
        warm = f" warm, {times[0]:.3f} with compilation" if len(times) > 1 else " (with compilation)"
        _line(f"fit_scene {mode}", iou, psnr, times[-1],
              f"{warm}; shapes found {np.bincount(counts, minlength=spec.num_shapes + 1).tolist()} (count 0, 1, ...)")
        result[mode] = dict(iou=float(iou.mean()), iou_median=float(np.median(iou)), iou_worst=float(iou.min()),
                            psnr=float(psnr.mean()), seconds_per_image=times[-1], seconds_per_image_first=times[0],
                            iou_below_097=int((iou < 0.97).sum()))
        per_image[mode] = dict(iou=iou, psnr=psnr, counts=counts, shapes=np.array([f.shapes for f in fits]),
                               params=np.array([f.params for f in fits], dtype=object),
                               background=np.stack([f.background for f in fits]))
    print(f"load {os.getloadavg()[0]:.2f} at the end", flush=True)
    if args.dump:
        flat = {f"{mode}_{k}": v for mode, d in per_image.items() for k, v in d.items()}
        np.savez(args.dump, true_params=params, **flat)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
