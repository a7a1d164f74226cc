"""Benchmark: train on a folder of scenes drawn by scikit-image, then ``encode`` a separate folder.

The scenes are :func:`benchmarks.fit_scenes.draw_scene`'s (colour, hard edges, disk / rotated box /
triangle / ellipse over a flat background, overlap allowed), kept when 1-3 shapes are visible.
``--write DIR --count N`` writes ``DIR/scene-XXXXX.png`` (64 x 64) and ``DIR/truth.json`` (each
file's foreground as run-length rows is not stored: the foreground is recomputed from the same seed).
``--score OUT --truth DIR`` reads ``OUT/<stem>/params.json`` of ``shapegrad encode`` and prints the
mean foreground IoU (fit alpha >= 0.5 vs the drawn union), PSNR and seconds per image.

    PYTHONPATH=$PWD python benchmarks/encode_images.py --write /tmp/train --count 3000 --seed 1
    PYTHONPATH=$PWD python benchmarks/encode_images.py --write /tmp/test --count 48 --seed 2
"""

import argparse
import csv
import json
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(__file__))
from fit_scenes import draw_scene  # noqa: E402


def draw(count, seed, size=64, most=3):
    """``count`` scenes with 1..``most`` visible shapes: ``[(image, foreground, kinds)]``."""
    rng = np.random.default_rng(seed)
    out = []
    while len(out) < count:
        image, fg, kinds = draw_scene(rng, size, size)
        if 1 <= len(kinds) <= most:
            out.append((image, fg, kinds))
    return out


def write(folder, count, seed, size=64):
    from PIL import Image

    os.makedirs(folder, exist_ok=True)
    truth = {}
    for k, (image, fg, kinds) in enumerate(draw(count, seed, size)):
        name = f"scene-{k:05d}"
        Image.fromarray((image * 255).round().astype(np.uint8)).save(os.path.join(folder, name + ".png"))
        np.save(os.path.join(folder, name + ".fg.npy"), fg)
        truth[name] = kinds
    with open(os.path.join(folder, "truth.json"), "w") as f:
        json.dump(truth, f)


def score(out, truth_dir):
    """Mean foreground IoU, PSNR and seconds of ``shapegrad encode``'s outputs in ``out``."""
    from shapegrad.io import files

    with open(os.path.join(truth_dir, "truth.json")) as f:
        truth = json.load(f)
    ious, psnrs, secs = [], [], []
    with open(os.path.join(out, "summary.csv")) as f:
        rows = {os.path.splitext(os.path.basename(r["file"]))[0]: r for r in csv.DictReader(f) if r["status"] == "ok"}
    for name in truth:
        if name not in rows:
            continue
        renderer, params = files.load_params(os.path.join(out, name, "params.json"))
        alpha = alpha_of(renderer, params)
        fg = np.load(os.path.join(truth_dir, name + ".fg.npy"))
        pred = alpha >= 0.5
        ious.append((pred & fg).sum() / max((pred | fg).sum(), 1))
        psnrs.append(float(rows[name]["psnr_db"]))
        secs.append(float(rows[name]["seconds"]))
    return {"images": len(ious), "iou_mean": float(np.mean(ious)), "iou_min": float(np.min(ious)),
            "psnr_mean": float(np.mean(psnrs)), "seconds_per_image": float(np.mean(secs))}


def alpha_of(renderer, params):
    """Total alpha ``(H, W)`` of a scene: its shapes drawn white over black (opacities as they are)."""
    import keras

    from shapegrad.render.render import Render

    white = Render(renderer.shapes, renderer.resolution, channels=1, background=0.0, softness=renderer.softness,
                   composite=renderer.composite)
    p = np.asarray(params, np.float32).reshape(1, -1).copy()
    q = []
    for s, t in zip(renderer.spec.slices, white.spec.slices):
        q.append(np.ones((1, 1), np.float32) if s.field.kind == "color" else p[:, s.slice])
    return keras.ops.convert_to_numpy(white(np.concatenate(q, axis=1)))[0, ..., 0]


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--write")
    ap.add_argument("--count", type=int, default=48)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--score")
    ap.add_argument("--truth")
    a = ap.parse_args(argv)
    if a.write:
        write(a.write, a.count, a.seed)
    if a.score:
        print(json.dumps(score(a.score, a.truth)))


if __name__ == "__main__":
    main()
