"""Benchmark: train on a folder of scenes drawn by scikit-image, then ``encode`` a separate folder.

The scenes are :func:`benchmarks.fit_scenes.draw_scene`'s (colour, hard edges, disk / rotated box /
triangle / ellipse over a flat background, overlap allowed), kept when 1-3 shapes are visible.
``--write DIR --count N`` writes ``DIR/scene-XXXXX.png`` (64 x 64) and ``DIR/truth.json`` (each
file's foreground as run-length rows is not stored: the foreground is recomputed from the same seed).
``--score OUT --truth DIR`` reads ``OUT/<stem>/params.json`` of ``shapegrad encode`` and prints the
mean foreground IoU (fit alpha >= 0.5 vs the drawn union), PSNR and seconds per image.

    PYTHONPATH=$PWD python benchmarks/encode_images.py --write /tmp/train --count 3000 --seed 1
    PYTHONPATH=$PWD python benchmarks/encode_images.py --write /tmp/test --count 48 --seed 2

``--train RUN --images DIR --truth TEST --seconds S [--pretrain F]`` trains ``train_images`` (32 px,
the CLI's defaults otherwise) and writes ``RUN/curve.json``: after every epoch, the encoder alone
(``Encoder.encode(refine_steps=0, search=False)``) scored on TEST against the drawn foregrounds, with
the training seconds. ``--figure RUN... --out PNG`` plots the curves of several runs.
``--all DIR`` does the whole issue-31 measurement (data, the two trainings, fast and full encode).
"""

import argparse
import csv
import json
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(__file__))
from fit_scenes import draw_scene  # noqa: E402


# Where --score-curve finds the held-out scenes of a run that did not record them.
TRUTH = "test"


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


def heldout(truth_dir):
    """``(names, images (n, H, W, C) in [0, 1], foregrounds (n, H, W) bool)`` of a ``--write`` folder."""
    from shapegrad.io import files

    with open(os.path.join(truth_dir, "truth.json")) as f:
        names = sorted(json.load(f))
    images = [files.read_image(os.path.join(truth_dir, n + ".png")) for n in names]
    return names, images, [np.load(os.path.join(truth_dir, n + ".fg.npy")) for n in names]


def encoder_scores(model, images, foregrounds):
    """Mean foreground IoU and PSNR of an encoder alone (its kept shapes, no refinement) on ``images``."""
    from shapegrad.learn import encode

    found = encode.Encoder(model, encode.find_info(model)).encode(images, refine_steps=0, search=False)
    ious = []
    for e, fg in zip(found, foregrounds):
        pred = alpha_of(e.renderer, e.params) >= 0.5
        ious.append((pred & fg).sum() / max((pred | fg).sum(), 1))
    return float(np.mean(ious)), float(np.mean([e.psnr for e in found]))


def train_with_curve(run, images, truth_dir, seconds, pretrain, steps=4000, seed=0, fits=0, width=16):
    """Train on ``images`` for ``seconds``, then write ``run/curve.json``: the held-out IoU after every epoch.

    Each epoch's encoder is saved (``run/curve/``) and scored after training, so the scoring takes no
    training time.
    """
    import keras

    from shapegrad.learn import encode, train

    saved = []

    class Keep(keras.callbacks.Callback):
        def on_train_begin(self, logs=None):  # the time budget's origin: start-up and data statistics excluded
            nonlocal start
            start = time.perf_counter()
            fits = os.path.join(run, "fits.npz")
            if os.path.exists(fits):  # the fitting came first, on the same budget
                with np.load(fits) as f:
                    start -= float(f["seconds"])

        def on_epoch_end(self, epoch, logs=None):
            inner = [m for m in self.model.layers if isinstance(m, keras.Model) and encode.find_info(m)][0]
            path = os.path.join(run, "curve", f"epoch-{epoch + 1:03d}.keras")
            t = time.perf_counter() - start
            inner.save(path)
            saved.append((epoch + 1, t, path, float((logs or {}).get("val_iou", float("nan")))))
            with open(os.path.join(run, "curve", "saved.json"), "w") as f:
                json.dump(saved, f)

    os.makedirs(os.path.join(run, "curve"), exist_ok=True)
    start = time.perf_counter()
    result = train.train_images(run, images, kinds="disk,box,triangle,ellipse", max_shapes=3, resolution=32,
                                steps=steps, seconds=seconds, steps_per_epoch=100, refine_steps=0, test_size=64,
                                pretrain=pretrain, fits=fits, width=width, seed=seed, verbose=2, force=True,
                                extra_callbacks=[Keep()])
    with open(os.path.join(run, "curve.json"), "w") as f:  # the scores follow; a kill keeps the metrics
        json.dump({"pretrain": pretrain, "fits": result.get("fits", 0), "width": width, "seconds": seconds, "truth": truth_dir, "curve": [], "metrics": {
            k: result.get(k) for k in ("iou", "psnr", "steps", "wall_seconds", "fit_seconds", "fits_psnr")}}, f, indent=1)
    return score_curve(run)


def score_curve(run, points=12):
    """Score about ``points`` of the encoders ``train_with_curve`` saved (and the last) into ``run/curve.json``."""
    from shapegrad.learn import encode

    with open(os.path.join(run, "curve", "saved.json")) as f:
        saved = json.load(f)
    with open(os.path.join(run, "curve.json")) as f:
        record = json.load(f)
    _, test, fgs = heldout(record.get("truth", TRUTH))
    every = max(1, -(-len(saved) // points))
    chosen = saved[every - 1 :: every] + ([saved[-1]] if len(saved) % every else [])
    curve = []
    for epoch, t, path, val_iou in chosen:
        iou, psnr = encoder_scores(encode.load_model_file(path), test, fgs)
        curve.append({"epoch": epoch, "seconds": round(t, 1), "iou": iou, "psnr": psnr, "val_iou": val_iou})
        print(f"curve: epoch {epoch} at {t:.0f} s: held-out IoU {iou:.3f}, {psnr:.1f} dB", flush=True)
    record["curve"] = curve
    with open(os.path.join(run, "curve.json"), "w") as f:
        json.dump(record, f, indent=1)
    return curve


def fast_scores(encoder_path, truth_dir, refine_steps=100, batch_size=48):
    """``encode --fast`` in one process, timed warm: the encoder's shapes + ``refine_steps`` engine steps."""
    from shapegrad.learn import encode

    _, test, fgs = heldout(truth_dir)
    encoder = encode.Encoder.load(encoder_path)
    t0 = time.perf_counter()
    encoder.encode(test, refine_steps=refine_steps, search=False, batch_size=batch_size)  # compiles
    first = time.perf_counter() - t0
    t0 = time.perf_counter()
    found = encoder.encode(test, refine_steps=refine_steps, search=False, batch_size=batch_size)
    warm = time.perf_counter() - t0
    ious = [((alpha_of(e.renderer, e.params) >= 0.5) & fg).sum() / max(((alpha_of(e.renderer, e.params) >= 0.5) | fg).sum(), 1)
            for e, fg in zip(found, fgs)]
    return {"images": len(test), "refine_steps": refine_steps, "iou_mean": float(np.mean(ious)),
            "iou_min": float(np.min(ious)), "psnr_mean": float(np.mean([e.psnr for e in found])),
            "seconds_per_image_warm": warm / len(test), "seconds_per_image_first": first / len(test)}


def run_all(folder, seconds, backend_env=None):
    """The whole measurement: data, a run with and without pre-training (same budget and seed, one after the
    other), ``encode --fast`` (warm, in process) and the full ``encode`` (the command, with start-up) of each."""
    import subprocess

    scenes, test = os.path.join(folder, "scenes"), os.path.join(folder, "test")
    if not os.path.exists(os.path.join(scenes, "truth.json")):
        write(scenes, 3000, 11)
    if not os.path.exists(os.path.join(test, "truth.json")):
        write(test, 48, 12)
    report = {}
    for name, pretrain in (("pretrained", 0.5), ("images-only", 0.0)):
        run = os.path.join(folder, name)
        train_with_curve(run, scenes, test, seconds, pretrain)
        entry = {"fast": fast_scores(os.path.join(run, "encoder.keras"), test)}
        for mode, flags in (("alone", ["--no-search", "--refine-steps", "0"]), ("full", [])):
            out = os.path.join(folder, f"{name}-{mode}")
            t0 = time.perf_counter()
            subprocess.run([sys.executable, "-m", "shapegrad.cli", "encode", os.path.join(run, "encoder.keras"), test,
                            "--out", out, "--force", *flags], check=True)
            entry[mode] = dict(score(out, test), command_seconds=time.perf_counter() - t0)
        report[name] = entry
        print(json.dumps({name: entry}), flush=True)
    figure([os.path.join(folder, n) for n in report], os.path.join(folder, "encoder-curves.png"))
    with open(os.path.join(folder, "report.json"), "w") as f:
        json.dump(report, f, indent=1)
    return report


def figure(runs, out):
    """Held-out IoU of the encoder alone against the seconds of the budget spent (fitting included), one line per run."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 3.8))
    for run in runs:
        with open(os.path.join(run, "curve.json")) as f:
            c = json.load(f)
        pretrain, fits = c["pretrain"] or 0.0, c.get("fits") or 0  # None: train's default, the images alone
        label = f"pre-trained on folder-like scenes ({pretrain:g})" if pretrain else "images only (image loss)"
        if fits:
            label += f" + {fits} fits ({c['metrics'].get('fit_seconds', 0):.0f} s)"
        if c.get("width", 16) != 16:
            label += f", width {c['width']}"
        ax.plot([p["seconds"] for p in c["curve"]], [p["iou"] for p in c["curve"]], marker="o",
                label=f"{label}: {c['metrics']['steps']} steps")
    ax.set_xlabel("seconds of the budget (fitting included; batch 64, 32 px)")
    ax.set_ylabel("held-out IoU, encoder alone")
    ax.set_ylim(0, 1)
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    fig.savefig(out, dpi=110)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--write")
    ap.add_argument("--count", type=int, default=48)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--score")
    ap.add_argument("--truth")
    ap.add_argument("--train")
    ap.add_argument("--images")
    ap.add_argument("--seconds", type=float, default=420)
    ap.add_argument("--pretrain", type=float, default=None)
    ap.add_argument("--fits", type=int, default=0, help="--train: fit this many training images to guide the encoder")
    ap.add_argument("--steps", type=int, default=4000, help="--train: the most training steps")
    ap.add_argument("--width", type=int, default=16, help="--train: the encoder's base width")
    ap.add_argument("--score-curve", help="score the saved encoders of a --train RUN again (e.g. after a kill)")
    ap.add_argument("--fast", help="score encode --fast of this encoder.keras on --truth (warm, in process)")
    ap.add_argument("--all", help="the whole measurement in this folder (--seconds of training per run)")
    ap.add_argument("--figure", nargs="+")
    ap.add_argument("--out")
    a = ap.parse_args(argv)
    if a.train:
        train_with_curve(a.train, a.images, a.truth, a.seconds, a.pretrain, steps=a.steps, fits=a.fits, width=a.width)
    if a.fast:
        print(json.dumps(fast_scores(a.fast, a.truth)))
    if a.all:
        run_all(a.all, a.seconds)
    if a.score_curve:
        score_curve(a.score_curve)
    if a.figure:
        figure(a.figure, a.out)
    if a.write:
        write(a.write, a.count, a.seed)
    if a.score:
        print(json.dumps(score(a.score, a.truth)))


if __name__ == "__main__":
    main()
