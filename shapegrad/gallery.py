"""A PNG gallery of every primitive and a composite colour scene (``make demo``)."""

import numpy as np

from shapegrad.io import plots
from shapegrad.render.render import Render

__all__ = ["primitive_gallery"]

# One tile per primitive kind: hand-picked normalised parameters (geometry only).
_TILES = [
    ("disk", [0.5, 0.5, 0.3]),
    ("ellipse", [0.5, 0.5, 0.38, 0.18, 1.0, 0.6]),
    ("box", [0.5, 0.5, 0.3, 0.18, 1.0, 0.5, 0.0]),
    ("box", [0.5, 0.5, 0.3, 0.3, 1.0, -0.3, 0.5]),
    ("triangle", [0.15, 0.5, 0.8, 0.15, 0.7, 0.85]),
    ("polygon5", [0.1, 0.5, 0.45, 0.6, 0.85, 0.85, 0.7, 0.5, 0.85, 0.15]),
    ("segment", [0.2, 0.15, 0.75, 0.85, 0.06]),
    ("bezier", [0.8, 0.1, 0.0, 0.5, 0.8, 0.9, 0.05]),
    ("cone", [0.12, 0.5, 1.0, 0.0, 0.16]),
]


def primitive_gallery(path, resolution=96, seed=0):
    """Write a PNG: one white-on-black tile per primitive, then a random colour scene.

    The first row shows each primitive kind of :class:`shapegrad.Render`
    (including a rounded box and a non-convex pentagon); the last tile is a
    scene of 9 shapes of every kind composited "over" a dark background in RGB,
    drawn with :meth:`RenderSpec.sample` from ``seed``.

    Returns:
        ``path``.

    Example:
        >>> import tempfile, os
        >>> out = primitive_gallery(os.path.join(tempfile.mkdtemp(), "g.png"), resolution=24)
        >>> os.path.exists(out)
        True
    """
    import keras

    n = resolution
    tiles = []
    for kind, geometry in _TILES:
        layer = Render(kind, n, channels=3)
        x = np.array([geometry + [1.0, 1.0, 1.0, 1.0]], "float32")
        tiles.append(keras.ops.convert_to_numpy(layer(x))[0])
    scene = Render(
        "box*2,ellipse*2,disk*2,triangle,bezier,segment", n, channels=3, background=[0.08, 0.08, 0.12]
    )
    x = scene.spec.sample(1, seed=seed)
    tiles.append(keras.ops.convert_to_numpy(scene(x))[0])
    # One row of tiles, with a grey gap; the scene last.
    pad = max(2, n // 24)
    canvas = np.full((n + 2 * pad, len(tiles) * (n + pad) + pad, 3), 0.5)
    for k, tile in enumerate(tiles):
        x0 = pad + k * (n + pad)
        canvas[pad : pad + n, x0 : x0 + n] = np.clip(tile, 0.0, 1.0)
    return plots.save_image(path, canvas)


def main():
    print("wrote", primitive_gallery("runs/demo/primitives.png"))


if __name__ == "__main__":
    main()
