"""Benchmark: PSNR against count of ``fit_picture`` with filled paths (``path4``) against triangles.

Two of the benchmark pictures of ``benchmarks/pictures.py`` (``skimage.data``, shrunk to ``--size`` px
on the long side) and six openmoji emoji from ``tests/data/svg`` (drawn by cairosvg over white at
``--size`` px). Per picture and kind, ONE ``fit_picture`` run of the largest count, seed 0, the same
settings for both kinds (``--candidates``, ``--steps``, ``--final-steps``; the rest
``PICTURE_DEFAULTS``): the PSNR after 4, 8, 16... shapes is its ``history`` (the shapes as added,
none refined before ``refine_every`` = 32 of them), ``final`` the PSNR after the final refinement
of all of them, ``s`` the run's wall seconds (on this machine; paths cost ~14x a triangle a pixel).
PSNR over RGB in [0, 1], against the picture fitted.

    PYTHONPATH=. KERAS_BACKEND=torch .venv/bin/python benchmarks/paths_fit.py --out runs/paths_fit

Writes ``--out``/results.json (every run, as it goes) and prints the markdown table of
docs/pictures.md ("Paths against triangles").
"""

import argparse
import io
import json
import os
import sys
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, HERE)
sys.path.insert(0, ROOT)

from pictures import load_picture  # noqa: E402  (benchmarks/pictures.py)

from shapegrad.fit.pictures import fit_picture  # noqa: E402

EMOJI = ("om-1F947", "om-1F442", "om-2196", "om-25D1", "om-1F6B6-1F3FC", "om-1F1E7-1F1F9")


def shrink(image, size):
    """``image`` with its long side ``size`` px (proportions kept), anti-aliased."""
    from skimage.transform import resize

    h, w = image.shape[:2]
    scale = size / max(h, w)
    return resize(image, (max(8, round(h * scale)), max(8, round(w * scale))), anti_aliasing=True).astype(np.float32)


def emoji(name, size):
    """``tests/data/svg/<name>.svg`` drawn by cairosvg at ``size`` px, over white, float RGB."""
    import cairosvg
    from PIL import Image

    png = cairosvg.svg2png(url=os.path.join(ROOT, "tests", "data", "svg", name + ".svg"), output_width=size,
                           output_height=size)
    rgba = np.asarray(Image.open(io.BytesIO(png)).convert("RGBA"), np.float32) / 255.0
    return rgba[..., :3] * rgba[..., 3:] + (1.0 - rgba[..., 3:])


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--pictures", default="astronaut,logo", help="skimage.data names")
    parser.add_argument("--emoji", default=",".join(EMOJI), help="names in tests/data/svg, without .svg")
    parser.add_argument("--size", type=int, default=64, help="long side in px of every picture")
    parser.add_argument("--counts", default="4,8,16,32")
    parser.add_argument("--kinds", default="path4,triangle")
    parser.add_argument("--candidates", type=int, default=4)
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--final-steps", type=int, default=60)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default=os.path.join("runs", "paths_fit"))
    args = parser.parse_args(argv)
    counts = [int(c) for c in args.counts.split(",")]
    os.makedirs(args.out, exist_ok=True)
    images = [("picture", name, shrink(load_picture(name), args.size)) for name in args.pictures.split(",") if name]
    images += [("emoji", name, emoji(name, args.size)) for name in args.emoji.split(",") if name]
    rows = []
    for group, name, image in images:
        for kind in args.kinds.split(","):
            clock = time.perf_counter()
            result = fit_picture(image, kind, count=max(counts), seed=args.seed, candidates=args.candidates,
                                 steps=args.steps, final_steps=args.final_steps)
            seconds = time.perf_counter() - clock
            history = [float(result.history[c - 1]) if c <= len(result.history) else None for c in counts]
            rows.append(dict(group=group, name=name, kind=kind, size=list(image.shape[:2]), history=history,
                             final=float(result.psnr), count=result.count, seconds=seconds))
            print(f"{name:>16} {kind:>8}", " ".join("-" if v is None else f"{v:.2f}" for v in history),
                  f"final {result.psnr:.2f}, {seconds:.0f} s", flush=True)
            with open(os.path.join(args.out, "results.json"), "w") as f:
                json.dump(dict(args=vars(args), rows=rows), f, indent=1)
    print(markdown(rows, counts))


def markdown(rows, counts):
    head = "| picture | kind | " + " | ".join(str(c) for c in counts) + f" | final ({max(counts)}) | s |"
    lines = [head, "|" + "---|" * (len(counts) + 4)]

    def cells(values):
        return " | ".join("-" if v is None else f"{v:.2f}" for v in values)

    for r in rows:
        lines.append(f"| {r['name']} | {r['kind']} | {cells(r['history'])} | {r['final']:.2f} | {r['seconds']:.0f} |")
    for group in dict.fromkeys(r["group"] for r in rows):
        for kind in dict.fromkeys(r["kind"] for r in rows):
            part = [r for r in rows if r["group"] == group and r["kind"] == kind]
            mean = [np.mean([r["history"][k] for r in part]) if all(r["history"][k] is not None for r in part) else None
                    for k in range(len(counts))]
            lines.append(f"| **mean, {group}s** | {kind} | {cells(mean)} | {np.mean([r['final'] for r in part]):.2f} | "
                         f"{np.mean([r['seconds'] for r in part]):.0f} |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
