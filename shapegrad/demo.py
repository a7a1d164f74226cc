"""``make demo``: galleries, then the main job: the self-supervised cone encoder–decoder.

``python -m shapegrad.demo`` writes ``runs/demo/``: ``cones.png`` (the Cones
layer's gallery), ``primitives.png`` (every Render primitive and a colour
scene), and the training outputs of :func:`shapegrad.train.train` at 64x64
(``encoder.keras``, ``metrics.json``, ``reconstructions.png``,
``curves.png``): 8000 steps or 9.5 minutes of training, whichever comes first,
on this machine's CPU. Then the user's path with pictures: three of scikit-image's
sample pictures vectorised with 16 and 64 triangles into ``runs/demo/pictures/``
(:func:`vectorise_samples`), ``index.html`` showing each beside its SVG.
``shapegrad gallery`` renders the cone gallery alone.
"""

import json
import os

import keras
import numpy as np

from shapegrad.fit.jobs import fit_picture_files
from shapegrad.gallery import primitive_gallery
from shapegrad.io import plots
from shapegrad.io.gallery import GalleryEntry, write_gallery
from shapegrad.learn.train import train
from shapegrad.ops import autodiff
from shapegrad.render.cones import Cones

__all__ = ["SAMPLES", "cone_gallery", "main", "vectorise_samples"]

SAMPLES = ("astronaut", "coffee", "horse")  # a portrait, a still life, a silhouette


def cone_gallery(path, resolution=64, seed=0, rows=3, cols=6):
    """Render ``rows * cols`` random cones (angle edge, then distance edge) into one PNG.

    Returns the path written.
    """
    rng = np.random.default_rng(seed)
    count = rows * cols
    params = np.concatenate(
        [
            rng.uniform(0.2, 0.8, (count, 2)),
            rng.normal(size=(count, 2)),
            rng.uniform(0.05, 0.45, (count, 1)),
        ],
        axis=1,
    ).astype("float32")
    # Degenerate cases drawn next to ordinary ones: apex on a pixel centre, axis
    # along the grid, a zero axis, a half-plane, and the whole plane.
    params[0] = [0.5, 0.5, 1.0, 0.0, 0.125]
    params[1] = [0.5, 0.5, 0.0, 0.0, 0.2]
    params[2] = [0.25, 0.75, -1.0, 1.0, 0.5]
    params[3] = [0.5, 0.5, 0.0, 1e-30, 1.0]
    tiles = []
    for edge in ("angle", "distance"):
        images = keras.ops.convert_to_numpy(Cones(resolution, edge=edge)(params))[..., 0]
        tiles.append(images)
    images = np.concatenate(tiles)  # (2 * count, N, N)
    pad = 2
    grid_rows = 2 * rows
    canvas = np.ones((grid_rows * (resolution + pad) + pad, cols * (resolution + pad) + pad))
    for k, image in enumerate(images):
        r, c = divmod(k, cols)
        y, x = pad + r * (resolution + pad), pad + c * (resolution + pad)
        canvas[y : y + resolution, x : x + resolution] = 1.0 - image  # dark shapes on white
    return plots.save_image(path, canvas, scale=2)


def vectorise_samples(out, counts=(16, 64), size=96, names=SAMPLES):
    """Vectorise scikit-image's sample pictures ``names`` (shrunk to ``size`` px on the longer side) with
    each of ``counts`` triangles, as ``shapegrad fit --count`` does, into ``out/<count>/``; ``out/index.html``
    shows them all. Returns the page's path."""
    # scikit-image holds the sample pictures; deferred: a test dependency (make installs it), not the library's.
    import skimage.data
    import skimage.transform

    inputs = os.path.join(out, "inputs")
    for name in names:
        picture = np.asarray(getattr(skimage.data, name)(), np.float64)
        picture = picture / (255.0 if picture.max() > 1 else 1.0)
        picture = np.stack([picture] * 3, axis=-1) if picture.ndim == 2 else picture[..., :3]
        h, w = picture.shape[:2]
        k = size / max(h, w)
        small = skimage.transform.resize(picture, (round(h * k), round(w * k)), anti_aliasing=True)
        plots.save_image(os.path.join(inputs, f"{name}.png"), small.astype("float32"))
    entries = []
    for count in counts:
        result = fit_picture_files(inputs, os.path.join(out, str(count)), count=count, force=True, progress=False)
        for path, size_text, _, n, psnr, seconds, status in result["rows"]:
            stem = os.path.splitext(os.path.basename(path))[0]
            w, h = (int(v) for v in size_text.split("x"))
            entries.append(GalleryEntry(f"{stem}, {count} triangles", f"{count}/{stem}/input.png",
                                        f"{count}/{stem}/shapes.svg", h, w,
                                        {"shapes": n, "PSNR": f"{psnr} dB", "seconds": seconds}))
    return write_gallery(os.path.join(out, "index.html"), entries, title="shapegrad fit --count: sample pictures")


def main(out="runs/demo"):
    autodiff.keep_compiled_programs()
    print("wrote", cone_gallery(os.path.join(out, "cones.png")))
    print("wrote", primitive_gallery(os.path.join(out, "primitives.png")))
    result = train(out, shapes="cone", resolution=64, steps=8000, seconds=570, steps_per_epoch=250, force=True)
    keys = ("iou", "psnr", "apex_error_px_median", "axis_error_deg_median", "aperture_error_deg_median")
    print(json.dumps({k: round(result[k], 4) for k in keys}, indent=1))
    print(f"wrote {out}/encoder.keras, metrics.json, reconstructions.png, curves.png")
    print("vectorising sample pictures with 16 and 64 triangles (shapegrad fit --count)...")
    print("wrote", vectorise_samples(os.path.join(out, "pictures")), "(open it in a browser)")


if __name__ == "__main__":
    main()
