"""docs/paths.png: filled cubic Bézier paths under both fill rules, and a stroke, drawn by Render.

Top row ``nonzero``, bottom row ``evenodd``: a pentagram (its centre winds twice), a ring of two
circles of the same orientation (a hole only under even-odd), the same ring with the inner circle
reversed (a hole under both), and a curved blob with a cubic stroke along its outline.

    KERAS_BACKEND=torch python benchmarks/paths_figure.py --out docs/paths.png
"""

import argparse
import math

import numpy as np
from keras import ops

from shapegrad import Render
from shapegrad.io import plots

KAPPA = 0.5523  # a quarter circle as one cubic


def straight(points):
    """Closed polygon ``(V, 2)`` -> the path nodes of its straight cubic segments ``(3V, 2)``."""
    ends = np.roll(points, -1, axis=0)
    return np.stack([points, (2 * points + ends) / 3, (points + 2 * ends) / 3], 1).reshape(-1, 2)


def circle(center, radius, clockwise=False):
    """A circle as four cubic segments ``(12, 2)``, turning one way or the other."""
    nodes = []
    sign = -1.0 if clockwise else 1.0
    for k in range(4):
        a0, a1 = sign * k * math.pi / 2, sign * (k + 1) * math.pi / 2
        p0 = center + radius * np.array([math.sin(a0), math.cos(a0)])
        p3 = center + radius * np.array([math.sin(a1), math.cos(a1)])
        t0 = sign * np.array([math.cos(a0), -math.sin(a0)])
        t1 = sign * np.array([math.cos(a1), -math.sin(a1)])
        nodes += [p0, p0 + KAPPA * radius * t0, p3 - KAPPA * radius * t1]
    return np.array(nodes)


def blob():
    """A curved closed path of four cubics ``(12, 2)``."""
    return np.array([[0.2, 0.5], [0.05, 0.85], [0.45, 0.95], [0.55, 0.8], [0.65, 0.65], [0.95, 0.85],
                     [0.8, 0.5], [0.65, 0.15], [0.9, 0.05], [0.5, 0.2], [0.1, 0.35], [0.35, 0.15]])


def panels(rule, size):
    suffix = "eo" if rule == "evenodd" else ""
    star = np.array([[0.5 - 0.42 * math.cos(2 * math.pi * k * 2 / 5), 0.5 + 0.42 * math.sin(2 * math.pi * k * 2 / 5)]
                     for k in range(5)])
    rings = [np.concatenate([circle(np.array([0.5, 0.5]), 0.4), circle(np.array([0.5, 0.5]), 0.2, reverse)])
             for reverse in (False, True)]
    out = []
    for kind, nodes in ((f"path5{suffix}", straight(star)), (f"path4x2{suffix}", rings[0]),
                        (f"path4x2{suffix}", rings[1])):
        layer = Render(kind, size, channels=3, background=1.0)
        x = np.concatenate([nodes.reshape(-1), [0.15, 0.35, 0.75, 1.0]])[None].astype("float32")
        out.append(ops.convert_to_numpy(layer(x))[0])
    outline = np.concatenate([blob(), blob()[:1]])  # the closed outline as an open chain back to its start
    layer = Render(f"path4{suffix},stroke4", size, channels=3, background=1.0)
    x = np.concatenate([blob().reshape(-1), [0.95, 0.6, 0.2, 1.0], outline.reshape(-1), [0.02], [0.2, 0.1, 0.1, 1.0]])
    out.append(ops.convert_to_numpy(layer(x[None].astype("float32")))[0])
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="docs/paths.png")
    ap.add_argument("--size", type=int, default=96)
    a = ap.parse_args()
    plots.save_image(a.out, plots.image_grid([panels("nonzero", a.size), panels("evenodd", a.size)], pad=4), scale=2)
    print("wrote", a.out)


if __name__ == "__main__":
    main()
