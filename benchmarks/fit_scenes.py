"""Benchmark: fit scenes drawn by scikit-image (not by shapegrad), kinds and count unknown.

Scenes: colour, hard edges, 1-4 shapes (disk, ellipse, rotated box, triangle: ``skimage.draw``)
that may overlap, over a flat background, square and non-square. Reported per run: mean and worst
foreground IoU (a pixel of the fit is foreground where the shapes' total alpha reaches 0.5, the
0.5-coverage rule of a hard-edged image; the truth's foreground is the union of the drawn shapes),
PSNR, how often the count found is the true one, and seconds per image; and (``--baseline N``) the
first N square images fitted from random starts told the kinds and count (``shapegrad.fit.refine_best``
from 32 random starts, 400 steps each: the fitter before ``fit_scene``; a few images, it is slow).

    PYTHONPATH=$PWD KERAS_BACKEND=tensorflow python benchmarks/fit_scenes.py --images 24 --warm --baseline 3

Each size (default 64x64, 64x96, 80x48: square and non-square) is its own set of scenes (its own
seed) and its own row; its first call includes the compilation of that size's engines, shared by
its images ("s / image" = the call's time / its images).

The seeds are the benchmark's own (tests use others).
"""

import argparse
import dataclasses
import json
import math
import sys
import time

import numpy as np

KINDS = ("disk", "box", "triangle", "ellipse")
SEED = 20261203


def draw_scene(rng, height=64, width=64):
    """One scene: ``(image (H, W, 3) float32, foreground (H, W) bool, kinds back to front)``."""
    from skimage.draw import disk, ellipse, polygon

    count = int(rng.integers(1, 5))  # tried; a shape that would hide half of another is dropped
    background = rng.uniform(0.0, 1.0, 3)
    image = np.broadcast_to(background, (height, width, 3)).copy()
    foreground = np.zeros((height, width), bool)
    kinds, masks, areas = [], [], []
    s = min(height, width)
    for _ in range(count):
        kind = KINDS[int(rng.integers(4))]
        while True:  # a colour that stands out from the background
            color = rng.uniform(0.0, 1.0, 3)
            if np.abs(color - background).max() > 0.3:
                break
        center = rng.uniform(0.2, 0.8, 2) * (height, width)
        angle = rng.uniform(0, math.pi)
        if kind == "disk":
            rr, cc = disk(center, rng.uniform(0.08, 0.2) * s, shape=(height, width))
        elif kind == "ellipse":
            a, b = rng.uniform(0.08, 0.25) * s, rng.uniform(0.05, 0.15) * s
            rr, cc = ellipse(center[0], center[1], a, b, shape=(height, width), rotation=angle)
        elif kind == "box":
            h0, h1 = rng.uniform(0.06, 0.2) * s, rng.uniform(0.05, 0.15) * s
            u = np.array([math.cos(angle), math.sin(angle)])
            v = np.array([-u[1], u[0]])
            corners = np.array([center + sa * h0 * u + sb * h1 * v for sa, sb in ((1, 1), (1, -1), (-1, -1), (-1, 1))])
            rr, cc = polygon(corners[:, 0], corners[:, 1], shape=(height, width))
        else:
            radius = rng.uniform(0.12, 0.25) * s
            angles = angle + np.array([0.0, 2.1, 4.2]) + rng.uniform(-0.4, 0.4, 3)
            verts = center + radius * np.stack([np.cos(angles), np.sin(angles)], 1)
            rr, cc = polygon(verts[:, 0], verts[:, 1], shape=(height, width))
        mask = np.zeros((height, width), bool)
        mask[rr, cc] = True
        # Keep every shape at least half visible (and 20 px): the count is then a property of the image.
        trial = [m & ~mask for m in masks]
        if mask.sum() < 20 or any(t.sum() < max(20, 0.5 * a) for t, a in zip(trial, areas)):
            continue
        masks = trial + [mask]
        areas.append(mask.sum())
        image[mask] = color
        foreground |= mask
        kinds.append(kind)
    return image.astype(np.float32), foreground, kinds


def example_scene():
    """The README's example, ``(64, 96, 3)`` float32: a rotated box under a disk (which hides a bite of it)
    and a triangle under a rotated ellipse, hard edges, drawn by scikit-image (fixed values, no seed)."""
    from skimage.draw import disk, ellipse, polygon

    h, w = 64, 96
    image = np.broadcast_to(np.float32([0.93, 0.91, 0.85]), (h, w, 3)).copy()
    angle = 0.35
    u, v = np.array([math.cos(angle), math.sin(angle)]), np.array([-math.sin(angle), math.cos(angle)])
    corners = np.array([(20.0, 22.0) + a * 12 * u + b * 9 * v for a, b in ((1, 1), (1, -1), (-1, -1), (-1, 1))])
    rr, cc = polygon(corners[:, 0], corners[:, 1], shape=(h, w))
    image[rr, cc] = (0.15, 0.35, 0.75)
    rr, cc = disk((36, 34), 14, shape=(h, w))
    image[rr, cc] = (0.9, 0.45, 0.1)
    rr, cc = polygon([8, 30, 40], [62, 88, 58], shape=(h, w))
    image[rr, cc] = (0.2, 0.6, 0.3)
    rr, cc = ellipse(42, 72, 10, 20, shape=(h, w), rotation=0.4)
    image[rr, cc] = (0.6, 0.2, 0.55)
    return image


def scenes(count, seed, sizes):
    rng = np.random.default_rng(seed)
    return [draw_scene(rng, *sizes[k % len(sizes)]) for k in range(count)]


def visible_count(image_kinds):
    return len(image_kinds)


def fit_alpha(fit):
    """Total alpha ``(H, W)`` of a fit: its shapes drawn white over black."""
    import keras

    if not fit.shapes:
        return np.zeros((fit.height, fit.width))
    r = fit.renderer()
    white = np.asarray(fit.params, np.float32).copy()
    spec = r.spec
    for k in range(spec.num_shapes):
        white[spec.get(k, "color").slice] = 1.0
    mono = dataclasses.replace(fit, background=np.zeros(3, np.float32)).renderer()  # the same shapes over black
    return keras.ops.convert_to_numpy(mono(white[None]))[0, ..., 0]


def scores(fit_image, fit_alpha_map, truth_image, truth_fg):
    pred = fit_alpha_map >= 0.5
    inter, union = (pred & truth_fg).sum(), (pred | truth_fg).sum()
    iou = 1.0 if union == 0 else inter / union
    mse = float(np.mean((np.asarray(fit_image, np.float64) - truth_image) ** 2))
    return float(iou), float(min(10 * math.log10(1 / max(mse, 1e-10)), 100))


def run_scenefit(data, **options):
    from shapegrad.fit.search import fit_scene

    start = time.perf_counter()
    fits = fit_scene([d[0] for d in data], **options)
    seconds = (time.perf_counter() - start) / len(data)
    rows = []
    for (image, fg, kinds), fit in zip(data, fits):
        iou, psnr = scores(fit.render(), fit_alpha(fit), image, fg)
        rows.append(dict(iou=iou, psnr=psnr, count=fit.count, true_count=len(kinds), kinds=fit.shapes,
                         true_kinds=",".join(kinds), size=list(image.shape[:2])))
    return rows, seconds


def run_baseline(data, restarts=32, steps=400):
    """The fitter before ``fit_scene``, told the kinds and count: ``restarts`` random starts per image, each
    refined by ``steps`` Adam steps from very soft edges (``fit.refine_best`` on the engine), the best kept."""
    import keras

    from shapegrad.fit import refine_best
    from shapegrad.io.images import border_color
    from shapegrad.render.primitives import fields_for
    from shapegrad.render.render import Render

    rows, total = [], 0.0
    for image, fg, kinds in data:
        if image.shape[0] != image.shape[1]:
            continue
        start = time.perf_counter()
        shapes = ",".join(kinds)
        renderer = Render(shapes, image.shape[0], channels=3, background=border_color(image).tolist())
        spec = renderer.spec
        starts = spec.sample(restarts, seed=int(np.random.default_rng(0).integers(2**31)))[None]
        params, _ = refine_best(renderer, fields_for(spec), starts, image[None], steps=steps, learning_rate=0.05,
                                start_sharpness=0.05, anneal=0.6)
        total += time.perf_counter() - start
        recon = keras.ops.convert_to_numpy(renderer(params))[0]
        white = params.copy()
        for k in range(spec.num_shapes):
            white[:, spec.get(k, "color").slice] = 1.0
        mono = Render(shapes, image.shape[0], channels=3, background=0.0)
        alpha = keras.ops.convert_to_numpy(mono(white))[0, ..., 0]
        iou, psnr = scores(recon, alpha, image, fg)
        rows.append(dict(iou=iou, psnr=psnr, count=len(kinds), true_count=len(kinds)))
    return rows, total / max(len(rows), 1)


def summary(rows, seconds):
    iou = np.array([r["iou"] for r in rows])
    psnr = np.array([r["psnr"] for r in rows])
    right = np.mean([r["count"] == r["true_count"] for r in rows])
    return dict(images=len(rows), iou_mean=float(iou.mean()), iou_worst=float(iou.min()), psnr_mean=float(psnr.mean()),
                psnr_worst=float(psnr.min()), count_right=float(right), seconds_per_image=float(seconds))


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--images", type=int, default=24, help="scenes per size (default 24)")
    p.add_argument("--sizes", default="64x64,64x96,80x48",
                   help="comma-separated HxW, each its own row (default 64x64,64x96,80x48)")
    p.add_argument("--baseline", type=int, default=0,
                   help="square images also fitted from random starts, told kinds and count (slow)")
    p.add_argument("--seed", type=int, default=SEED)
    p.add_argument("--warm", action="store_true", help="fit the images twice; report the second time too")
    p.add_argument("--one-by-one", action="store_true",
                   help="also fit the images one call each (warm: after one call that compiles), as fit_files did")
    p.add_argument("--json", help="write the results here")
    p.add_argument("--example", metavar="PNG", help="only write the README's example image here, then exit")
    args = p.parse_args(argv)
    if args.example:
        from PIL import Image

        Image.fromarray(np.round(example_scene() * 255).astype(np.uint8)).save(args.example)
        return 0
    import keras

    sizes = [tuple(int(v) for v in s.split("x")) for s in args.sizes.split(",")]
    out = {"backend": keras.backend.backend(), "sizes": args.sizes, "seed": args.seed, "runs": {}}
    for size in sizes:
        data = scenes(args.images, args.seed + size[0] * 1000 + size[1], [size])
        rows, seconds = run_scenefit(data)
        res = summary(rows, seconds)
        if args.warm:  # the same call again: the compiled loops are cached, so this is the search alone
            res["seconds_per_image_warm"] = run_scenefit(data)[1]
        if args.one_by_one:
            run_scenefit(data[:1])  # compiles the engines of a batch of one
            single = [run_scenefit([d]) for d in data]
            res["seconds_per_image_one_by_one"] = float(np.mean([s for _, s in single]))
            res["psnr_mean_one_by_one"] = float(np.mean([r[0]["psnr"] for r, _ in single]))
        out["runs"][f"fit_scene {size[0]}x{size[1]}"] = dict(res, rows=rows)
        print(f"fit_scene {size[0]}x{size[1]} (kinds and count unknown): " + json.dumps(res), flush=True)
        if args.baseline and size[0] == size[1]:
            rows_b, seconds_b = run_baseline(data[: args.baseline])
            res_b = summary(rows_b, seconds_b)
            out["runs"][f"refine_best {size[0]}x{size[1]}"] = dict(res_b, rows=rows_b)
            print(f"fit.refine_best {size[0]}x{size[1]} (random starts, told kinds and count): " + json.dumps(res_b),
                  flush=True)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(out, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
