"""A NumPy reference for the path kinds' contract, to check read_svg's encoding without the Keras kinds.

``path<M>[x<K>][eo]``: ``points`` = K closed subpaths of M cubic segments (row, col
normalised, ``P_j, A_j, B_j`` per segment, the last ending at ``P_0``), winding
numbers summed, nonzero or even-odd. ``stroke<M>[x<K>]``: K open chains of
``3 M + 1`` points and ``half_width``, round caps and joins. Coverage is
``sigmoid(-4 d / softness)`` of the signed distance ``d`` in pixels, as Render's.
Curves are flattened finely (``STEPS`` chords per segment): an independent,
slow, approximate (to ~1e-3 px) computation.
"""

import re

import numpy as np

STEPS = 48
_KIND = re.compile(r"(path|stroke)(\d+)(?:x(\d+))?(eo)?$")


def _flatten(nodes, closed):
    """``(n, 2)`` cubic nodes -> polyline points of each segment, ``(segments * STEPS + 1, 2)``."""
    t = np.linspace(0, 1, STEPS + 1)[:-1, None]
    count = len(nodes) // 3 if closed else (len(nodes) - 1) // 3
    ring = np.concatenate([nodes, nodes[:1]]) if closed else nodes
    out = []
    for j in range(count):
        p, a, b, e = ring[3 * j], ring[3 * j + 1], ring[3 * j + 2], ring[3 * j + 3]
        out.append((1 - t) ** 3 * p + 3 * t * (1 - t) ** 2 * a + 3 * t**2 * (1 - t) * b + t**3 * e)
    out.append(ring[3 * count][None])
    return np.concatenate(out)


def _distance(grid, poly):
    """Distance from each grid point ``(N, 2)`` to a polyline ``(n, 2)``."""
    a, b = poly[:-1], poly[1:]
    ab = b - a
    length2 = np.maximum((ab**2).sum(-1), 1e-30)
    t = np.clip(((grid[:, None] - a) * ab).sum(-1) / length2, 0, 1)
    nearest = a + t[..., None] * ab
    return np.sqrt(((grid[:, None] - nearest) ** 2).sum(-1)).min(axis=1)


def _winding(grid, poly):
    """Winding number of a closed polyline around each grid point (a ray along +col)."""
    a, b = poly[:-1], poly[1:]
    r, c = grid[:, 0:1], grid[:, 1:2]
    up = (a[:, 0] <= r) & (b[:, 0] > r)
    down = (a[:, 0] > r) & (b[:, 0] <= r)
    side = (b[:, 1] - a[:, 1]) * (r - a[:, 0]) - (c - a[:, 1]) * (b[:, 0] - a[:, 0])
    return (up & (side > 0)).sum(1) - (down & (side < 0)).sum(1)


def path_alpha(kind, points, half_width, height, width, softness=1.0):
    """``(H, W)`` coverage of one path or stroke shape of normalised ``points``."""
    match = _KIND.match(kind)
    family, m, k, eo = match.group(1), int(match.group(2)), int(match.group(3) or 1), bool(match.group(4))
    nodes = np.asarray(points, float).reshape(k, -1, 2) * np.float64([height, width])
    rows, cols = np.meshgrid(np.arange(height, dtype=float), np.arange(width, dtype=float), indexing="ij")
    grid = np.stack([rows.ravel(), cols.ravel()], -1)
    polys = [_flatten(n, closed=family == "path") for n in nodes]
    d = np.min([_distance(grid, p) for p in polys], axis=0)
    if family == "stroke":
        signed = d - half_width * min(height, width)
    else:
        w = np.sum([_winding(grid, p) for p in polys], axis=0)
        inside = (w % 2 == 1) if eo else (w != 0)
        signed = np.where(inside, -d, d)
    return (1 / (1 + np.exp(4 * signed / softness))).reshape(height, width)


def reference_image(renderer, params):
    """``(H, W, 3)`` image of a read_svg ``(renderer, params)``: path kinds by :func:`path_alpha`, the others
    by a Render of their own (its ``alphas``), composited "over" the background in NumPy."""
    from shapegrad import Render

    h, w = renderer.height, renderer.width
    row = np.asarray(params, np.float64).reshape(-1)
    image = np.ones((h, w, 3)) * np.asarray(renderer.background, float)
    for prim, count, start, size in renderer.spec.groups:
        for i in range(count):
            x = row[start + i * size : start + (i + 1) * size]
            if _KIND.match(prim.kind):
                fields, offset = {}, 0
                for f in prim.all_fields(3):
                    fields[f.name] = x[offset : offset + f.size]
                    offset += f.size
                alpha = path_alpha(prim.kind, fields["points"], fields.get("half_width", [0])[0], h, w,
                                   renderer.softness) * np.clip(fields["opacity"][0], 0, 1)
                color = np.clip(fields["color"], 0, 1)
            else:
                one = Render(prim.kind, resolution=renderer.resolution, channels=3, softness=renderer.softness)
                a, c = one.alphas(np.float32(x)[None])
                alpha, color = np.asarray(a)[0, 0], np.asarray(c)[0, 0]
            image = image * (1 - alpha[..., None]) + alpha[..., None] * color
    return image
