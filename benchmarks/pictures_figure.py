"""The README's picture figure: a photograph and an illustration vectorised at two counts, shapegrad beside primitive.

Per picture (``--names``, default astronaut and logo, shrunk to ``--size`` px) and count
(``--counts``, default 32 and 128): the input, fogleman/primitive's triangles (seed 1, drawn by its
own internal raster, the better of its two outputs) and shapegrad's triangles (``fit_picture``, seed 0,
drawn by ``Render``), with each one's PSNR. primitive is built by ``benchmarks/build_primitive.sh``.

    KERAS_BACKEND=jax .venv/bin/python benchmarks/pictures_figure.py --out docs/pictures-compare.png
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import pictures  # noqa: E402  (benchmarks/pictures.py: picture loading and primitive's paths)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--names", default="astronaut,logo")
    parser.add_argument("--counts", default="32,128")
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--primitive", default=os.path.join(HERE, ".primitive", "bin", "primitive"))
    parser.add_argument("--out", default="docs/pictures-compare.png")
    args = parser.parse_args()
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from shapegrad import fit_picture

    names, counts = args.names.split(","), [int(c) for c in args.counts.split(",")]
    work = tempfile.mkdtemp()
    fig, axes = plt.subplots(len(names), 1 + 2 * len(counts), figsize=(2.2 * (1 + 2 * len(counts)), 2.4 * len(names)))
    axes = np.atleast_2d(axes)
    for i, name in enumerate(names):
        path, (h, w) = pictures.write_picture(name, args.size, work)
        image = pictures.read_rgb(path)
        axes[i, 0].imshow(image)
        axes[i, 0].set_title(f"{name} {w}x{h}", fontsize=8)
        for j, count in enumerate(counts):
            stem = os.path.join(work, f"{name}-{count}")
            env = dict(os.environ, PRIMITIVE_SEED="1", PRIMITIVE_RASTER_PNG=stem + ".raster.png",
                       PRIMITIVE_SCORE_FILE=stem + ".json")
            size = str(max(h, w))
            subprocess.run([args.primitive, "-i", path, "-o", stem + ".png", "-n", str(count), "-m", "1", "-j", "2",
                            "-r", size, "-s", size], env=env, check=True, capture_output=True)
            theirs = pictures.read_rgb(stem + ".raster.png")
            with open(stem + ".json") as f:
                score = json.load(f)["score_full"]
            ours = fit_picture(image.astype("float32"), "triangle", count=count, seed=0)
            panels = [(theirs, f"primitive {count}: {pictures.psnr(score ** 2 * 4 / 3):.1f} dB"),
                      (np.clip(ours.render(), 0, 1), f"shapegrad {count}: {ours.psnr:.1f} dB")]
            for k, (picture, title) in enumerate(panels):
                ax = axes[i, 1 + 2 * j + k]
                ax.imshow(picture)
                ax.set_title(title, fontsize=8)
    for ax in axes.ravel():
        ax.set_axis_off()
    fig.tight_layout()
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    fig.savefig(args.out, dpi=110)
    print("wrote", args.out)


if __name__ == "__main__":
    main()
