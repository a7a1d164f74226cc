"""Outlines of pixel regions as closed cubic paths: where a ``path<M>[x<K>][eo]`` or ``polygon<V>`` shape begins.

A region (a boolean mask) is traced along its pixel edges (:func:`trace_outlines`: the outer loop
and the loops of its holes, oriented oppositely, so that under the nonzero rule a hole subtracts),
each loop resampled to ``M`` points equally spaced by arc length (:func:`resample_closed`), and each
stretch of the loop between two of them fitted by one cubic (:func:`cubic_path`): a start that
already draws the region, which the fit then sharpens. :func:`polygon_moments` gives the centre and
covariance of the area a path or polygon encloses (what the search's other kinds start from).

Conventions: points ``(row, col)`` in pixels, pixel ``(i, j)`` the point ``(i, j)`` (its square
spans ``+-0.5``); a path's points ``P0 A0 B0 P1 A1 B1 ...`` as in ``Render``'s ``path`` kinds. Plain
NumPy on the host.

Example:
    >>> import numpy as np
    >>> mask = np.zeros((12, 12), bool); mask[2:10, 3:9] = True
    >>> loops = trace_outlines(mask)
    >>> len(loops), float(loop_area(loops[0]))      # one outer loop; its area: 48 px less the 4 cut corners
    (1, -47.5)
    >>> outline_path(mask, segments=4).shape        # 4 cubic segments: 12 points
    (12, 2)
"""

import math

import numpy as np

__all__ = ["cubic_path", "loop_area", "outline_path", "polygon_moments", "resample_closed", "trace_outlines"]

# Walking directions (row, col) along pixel edges, and the next one to the walker's right.
_RIGHT = {(1, 0): (0, -1), (0, -1): (-1, 0), (-1, 0): (0, 1), (0, 1): (1, 0)}


def trace_outlines(mask):
    """The boundary loops of a boolean ``(H, W)`` mask: a list of ``(n, 2)`` closed polygons (pixels).

    Each loop runs through the midpoints of the pixel edges between the
    region and the outside (marching squares on a binary image: corners cut
    by half a pixel). Outer loops turn one way (negative :func:`loop_area`),
    the loops of holes the other; pixels that touch only at a corner are
    apart (4-connectivity, as ``scipy.ndimage.label``). Largest
    ``|area|`` first. An empty mask gives ``[]``.
    """
    m = np.pad(np.asarray(mask, bool), 1)
    # Directed edges between lattice corners (corner (a, b) is the point (a - 1.5, b - 1.5) after the pad),
    # clockwise around each region pixel on screen (the region on the walker's right), where the
    # neighbour across is outside.
    edges = {}
    for (dr, dc), (a, b), (c, d) in (
        ((-1, 0), (0, 0), (0, 1)),   # top: left corner to right corner
        ((0, 1), (0, 1), (1, 1)),    # right: down
        ((1, 0), (1, 1), (1, 0)),    # bottom: right to left
        ((0, -1), (1, 0), (0, 0)),   # left: up
    ):
        outside = ~np.roll(m, (-dr, -dc), axis=(0, 1))
        rows, cols = np.nonzero(m & outside)
        for r, col in zip(rows.tolist(), cols.tolist()):
            start, end = (r + a, col + b), (r + c, col + d)
            edges.setdefault(start, []).append(end)
    loops = []
    while edges:
        first = next(iter(edges))
        loop, here, heading = [first], first, None
        while True:
            ends = edges[here]
            if len(ends) > 1 and heading is not None:
                # A corner two region pixels share diagonally: keep to the pixel being walked round
                # (the right turn), so that they are two loops.
                turn = _RIGHT[heading]
                pick = next((k for k, e in enumerate(ends) if (e[0] - here[0], e[1] - here[1]) == turn), 0)
            else:
                pick = 0
            nxt = ends.pop(pick)
            if not ends:
                del edges[here]
            heading = (nxt[0] - here[0], nxt[1] - here[1])
            here = nxt
            if here == first:
                break
            loop.append(here)
        corners = np.asarray(loop, np.float64) - 1.5
        loops.append(0.5 * (corners + np.roll(corners, -1, axis=0)))
    loops.sort(key=lambda p: -abs(loop_area(p)))
    return loops


def loop_area(points):
    """Signed area (shoelace, in ``(row, col)``) of a closed polygon ``(n, 2)``: negative for an outer loop
    of :func:`trace_outlines`."""
    p = np.asarray(points, np.float64)
    q = np.roll(p, -1, axis=0)
    return 0.5 * float(np.sum(p[:, 0] * q[:, 1] - q[:, 0] * p[:, 1]))


def resample_closed(points, count, start=0.0):
    """``count`` points equally spaced by arc length around the closed polygon ``(n, 2)``, the first at
    arc length ``start`` (px) from its first point; ``(count, 2)``, with ``(count,)`` their arc lengths."""
    p = np.asarray(points, np.float64)
    q = np.concatenate([p, p[:1]])
    seg = np.linalg.norm(np.diff(q, axis=0), axis=1)
    s = np.concatenate([[0.0], np.cumsum(seg)])
    total = s[-1]
    if total <= 0:
        return np.repeat(p[:1], count, axis=0), np.zeros(count)
    at = np.mod(start + total * np.arange(count) / count, total)
    out = np.stack([np.interp(at, s, q[:, 0]), np.interp(at, s, q[:, 1])], axis=1)
    return out, at


def cubic_path(loop, count):
    """One closed subpath of ``count`` cubics that follows the closed polygon ``loop`` ``(n, 2)``: ``(3 count, 2)``
    points ``P0 A0 B0 P1 ...``.

    The ``P`` are ``count`` points equally spaced by arc length, starting where
    the ``count``-gon they make encloses the most area (of 8 phases: so that few
    points still reach the extremes); each cubic's controls are the least-squares
    fit, at chord-length parameters, of the loop's points between its two ends
    (pulled weakly towards the chord's thirds, so a short stretch stays put).
    """
    p = np.asarray(loop, np.float64)
    q = np.concatenate([p, p[:1]])
    s = np.concatenate([[0.0], np.cumsum(np.linalg.norm(np.diff(q, axis=0), axis=1))])
    total = s[-1]
    if total <= 0 or len(p) < 2:
        return np.repeat(p[:1], 3 * count, axis=0)
    phases = total / count * np.arange(8) / 8
    best = max(phases, key=lambda phase: abs(loop_area(resample_closed(p, count, phase)[0])) if count > 2 else 0.0)
    ends, at = resample_closed(p, count, best)
    # The loop's own points, at their arc lengths from the first end, and the ends' arc lengths.
    rel = np.mod(s[:-1] - at[0], total)
    ends_s = np.mod(at - at[0], total)
    out = []
    for k in range(count):
        a, b = ends_s[k], ends_s[k + 1] if k + 1 < count else total
        p0, p1 = ends[k], ends[(k + 1) % count]
        inside = (rel > a) & (rel < b)
        t = (rel[inside] - a) / max(b - a, 1e-12)
        samples = p[inside]
        ca, cb = (2 * p0 + p1) / 3, (p0 + 2 * p1) / 3
        if len(t):
            b0, b1, b2, b3 = (1 - t) ** 3, 3 * (1 - t) ** 2 * t, 3 * (1 - t) * t**2, t**3
            lhs = np.stack([b1, b2], axis=1)
            rhs = samples - b0[:, None] * p0 - b3[:, None] * p1
            ridge = 0.05
            gram = lhs.T @ lhs + ridge * np.eye(2)
            ca, cb = np.linalg.solve(gram, lhs.T @ rhs + ridge * np.stack([ca, cb]))
        out.extend([p0, ca, cb])
    return np.asarray(out)


def outline_path(mask, segments, subpaths=1):
    """A path of ``subpaths`` closed subpaths of ``segments`` cubics that draws the region ``mask`` ``(H, W)``:
    ``(3 segments subpaths, 2)`` points in pixels.

    The first subpath follows the largest loop (the region's outside, turning
    as :func:`trace_outlines` says), the next ones its largest holes (turning
    the other way: they subtract under the nonzero rule, and even-odd does
    not mind); subpaths left over collapse to one point inside the region
    (they draw nothing). An empty mask gives ``None``.
    """
    loops = trace_outlines(mask)
    if not loops:
        return None
    outer = [p for p in loops if loop_area(p) < 0]
    holes = [p for p in loops if loop_area(p) > 0]
    chosen = (outer[:1] + holes)[:subpaths]
    paths = [cubic_path(p, segments) for p in chosen]
    if len(paths) < subpaths:
        inside = np.argwhere(np.asarray(mask, bool)).astype(np.float64)
        centre = inside[np.argmin(((inside - inside.mean(0)) ** 2).sum(1))]
        paths.extend(np.repeat(centre[None], 3 * segments, axis=0) for _ in range(subpaths - len(paths)))
    return np.concatenate(paths)


def polygon_moments(points, segments=None):
    """Centre ``(2,)`` and covariance ``(2, 2)`` (pixels) of the area a closed polygon or path encloses.

    ``points``: ``(n, 2)`` vertices of a polygon (``segments=None``), or a
    path's ``(3 M K, 2)`` points with ``segments=M`` (each cubic sampled at 8
    points; subpaths add with their signs). The moments of the filled area by
    Green's theorem; a path or polygon of no area gives the mean and spread of its points.
    """
    p = np.asarray(points, np.float64).reshape(-1, 2)
    polys = [p]
    if segments is not None:
        t = np.linspace(0, 1, 8, endpoint=False)[:, None]
        polys = []
        for sub in p.reshape(-1, 3 * segments, 2):
            ends = np.roll(sub[0::3], -1, axis=0)
            curve = [((1 - t) ** 3 * sub[3 * k] + 3 * (1 - t) ** 2 * t * sub[3 * k + 1] + 3 * (1 - t) * t**2
                      * sub[3 * k + 2] + t**3 * ends[k]) for k in range(segments)]
            polys.append(np.concatenate(curve))
    area, first, second = 0.0, np.zeros(2), np.zeros((2, 2))
    for poly in polys:
        x, y = poly[:, 0], poly[:, 1]
        xn, yn = np.roll(x, -1), np.roll(y, -1)
        cross = x * yn - xn * y
        area += cross.sum() / 2
        first += np.array([((x + xn) * cross).sum(), ((y + yn) * cross).sum()]) / 6
        sxx = ((x * x + x * xn + xn * xn) * cross).sum() / 12
        syy = ((y * y + y * yn + yn * yn) * cross).sum() / 12
        sxy = ((x * yn + 2 * x * y + 2 * xn * yn + xn * y) * cross).sum() / 24
        second += np.array([[sxx, sxy], [sxy, syy]])
    if abs(area) < 1e-6:
        g = p.mean(axis=0)
        return g, (p - g).T @ (p - g) / len(p)
    centre = first / area
    cov = second / area - np.outer(centre, centre)
    return centre, cov
