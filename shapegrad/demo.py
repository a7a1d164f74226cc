"""``make demo``: galleries, then the main job: the self-supervised cone encoder–decoder.

``python -m shapegrad.demo`` writes ``runs/demo/``: ``cones.png`` (the Cones
layer's gallery), ``primitives.png`` (every Render primitive and a colour
scene), and the training outputs of :func:`shapegrad.train.train` at 64x64
(``encoder.keras``, ``metrics.json``, ``reconstructions.png``,
``curves.png``): 8000 steps or 9.5 minutes of training, whichever comes first,
on this machine's CPU. ``shapegrad gallery`` renders the cone gallery alone.
"""

import os

import numpy as np

from shapegrad.gallery import primitive_gallery
from shapegrad.io import plots
from shapegrad.learn.train import train
from shapegrad.render.cones import Cones

__all__ = ["cone_gallery", "main"]


def cone_gallery(path, resolution=64, seed=0, rows=3, cols=6):
    """Render ``rows * cols`` random cones (angle edge, then distance edge) into one PNG.

    Returns the path written.
    """
    import keras

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


def main(out="runs/demo"):
    import json

    print("wrote", cone_gallery(os.path.join(out, "cones.png")))
    print("wrote", primitive_gallery(os.path.join(out, "primitives.png")))
    result = train(out, shapes="cone", resolution=64, steps=8000, seconds=570, steps_per_epoch=250, force=True)
    keys = ("iou", "psnr", "apex_error_px_median", "axis_error_deg_median", "aperture_error_deg_median")
    print(json.dumps({k: round(result[k], 4) for k in keys}, indent=1))
    print(f"wrote {out}/encoder.keras, metrics.json, reconstructions.png, curves.png")


if __name__ == "__main__":
    main()
