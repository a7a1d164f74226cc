"""Where the search's shapes begin: the image's noise level, the region of one colour around a
residual peak, and a first shape of each kind fitted to that region (disk and ellipse from its
moments, box from its smallest enclosing rectangle, triangle from its extreme points, a path or a
polygon from its traced outline: :mod:`shapegrad.fit.outlines`).

Plain NumPy on the host; images ``(H, W, C)`` float in ``[0, 1]``.
"""

import math

import numpy as np
from scipy import ndimage
from scipy.spatial import ConvexHull, QhullError

from shapegrad.fit.engine import resolution_of
from shapegrad.fit.outlines import cubic_path, outline_path, polygon_moments
from shapegrad.render.primitives import path_layout


__all__ = ["Geometry", "downsample", "improvable_region", "min_area_rectangle", "moments", "noise_level",
           "outline_points", "points_mask", "residual_region", "start_shape", "traced"]


def noise_level(images):
    """Per image noise standard deviation ``(B,)``: the median absolute Laplacian, floored at 1/255.

    Uses Immerkaer's 3x3 kernel (second differences, which cancel on flat and
    linear regions) and the median, so the edges of hard-edged shapes do not
    count: ``1.4826 * median(|L|) / 6``, 6 being the kernel's norm (white
    noise of deviation s gives ``L`` of deviation 6 s). Every channel pooled. Floored at 1/255: an 8-bit
    image is never known to better than its quantization.
    """
    x = np.asarray(images, np.float64)
    lap = (
        4 * x[:, 1:-1, 1:-1]
        - 2 * (x[:, :-2, 1:-1] + x[:, 2:, 1:-1] + x[:, 1:-1, :-2] + x[:, 1:-1, 2:])
        + x[:, :-2, :-2] + x[:, :-2, 2:] + x[:, 2:, :-2] + x[:, 2:, 2:]
    )
    sigma = 1.4826 * np.median(np.abs(lap).reshape(len(x), -1), axis=1) / 6.0
    return np.maximum(sigma, 1.0 / 255.0)


def downsample(images, f):
    """Mean over ``f x f`` blocks (the image cropped to a multiple of ``f``)."""
    if f == 1:
        return images
    b, h, w, c = images.shape
    h, w = h // f * f, w // f * f
    return images[:, :h, :w].reshape(b, h // f, f, w // f, f, c).mean(axis=(2, 4))


class Geometry:
    """Normalised <-> pixel conversions of a kind's fields at one resolution."""

    def __init__(self, engine, kind):
        self.spec = engine.specs[kind]
        self.resolution = resolution_of(engine.height, engine.width)
        self.fields = [(s.field, s.slice) for s in self.spec.fields_of(0)]

    def to_pixels(self, params):
        """``{name: value}``, positions and sizes in pixels, the rest as they are."""
        out = {}
        for field, sl in self.fields:
            v = params[sl]
            out[field.name] = field.to_natural(v, self.resolution) if field.kind in ("position", "size") else v
        return out

    def from_pixels(self, values, channels):
        params = np.zeros(self.spec.size, np.float64)
        for field, sl in self.fields:
            v = np.asarray(values[field.name], np.float64)
            if field.kind in ("position", "size"):
                v = field.from_natural(v, self.resolution)
            if field.kind != "direction":
                v = np.clip(v, 1e-3, 1 - 1e-3)
            params[sl] = v
        return params.astype("float32")


def moments(kind, px):
    """Centre ``(2,)`` and covariance ``(2, 2)`` in pixels of a shape given in pixels (``px`` from ``to_pixels``)."""
    if kind == "disk":
        r = float(px["radius"][0])
        return px["center"], np.eye(2) * r * r / 4
    if kind in ("ellipse", "box"):
        d = np.asarray(px["direction"], np.float64)
        d = d / max(np.linalg.norm(d), 1e-9)
        rot = np.array([[d[0], -d[1]], [d[1], d[0]]])
        sizes = px["radii"] if kind == "ellipse" else px["half_size"]
        var = np.asarray(sizes, np.float64) ** 2 / (4.0 if kind == "ellipse" else 3.0)
        return px["center"], rot @ np.diag(var) @ rot.T
    layout = path_layout(kind)
    if layout is not None and layout[2] is not None:  # a filled path: the area its curves enclose
        return polygon_moments(px["points"], layout[0])
    verts = np.asarray(next(v for v in px.values() if np.size(v) >= 6), np.float64).reshape(-1, 2)
    if len(verts) > 3:  # a polygon<V>
        return polygon_moments(verts)
    g = verts.mean(axis=0)
    return g, (verts - g).T @ (verts - g) / 12.0


def start_shape(kind, geometry, center, cov, color, channels, points=None):
    """A shape of ``kind`` with the given centre and covariance (pixels): normalised parameters ``(P_k,)``.

    ``points`` ``(n, 2)``: the region's pixels, where there is one: a box's
    rectangle, a triangle's extreme points, a path's or polygon's outline
    (:func:`outline_points`) come from it.
    """
    lam, vec = np.linalg.eigh(np.asarray(cov, np.float64) + 0.05 * np.eye(2))
    lam = np.maximum(lam[::-1], 0.25)
    u = vec[:, ::-1][:, 0]
    center = np.asarray(center, np.float64)
    values = {"color": np.asarray(color, np.float64), "opacity": np.ones(1)}
    if kind == "disk":
        values.update(center=center, radius=[2 * math.sqrt(math.sqrt(lam[0] * lam[1]))])
    elif kind == "ellipse":
        values.update(center=center, radii=2 * np.sqrt(lam), direction=u)
    elif kind == "box":
        rect = min_area_rectangle(points) if points is not None else None
        if rect is None:
            values.update(center=center, half_size=np.sqrt(3 * lam), direction=u, corner=[0.0])
        else:
            values.update(center=rect[0], half_size=rect[1], direction=rect[2], corner=[0.0])
    elif traced(kind):  # the outline of the region (or of the ellipse of these moments)
        field = next(f for f, _ in geometry.fields if f.kind == "position")
        values[field.name] = outline_points(kind, field.size // 2, center, lam, u, points).reshape(-1)
    elif kind in ("triangle", "polygon3"):
        if points is not None and len(points) >= 3:
            a = points[np.argmax(((points - center) ** 2).sum(1))]
            b = points[np.argmax(((points - a) ** 2).sum(1))]
            n = np.array([-(b - a)[1], (b - a)[0]])
            c = points[np.argmax(np.abs((points - a) @ n))]
            verts = np.stack([a, b, c])
        else:
            angles = np.array([0.0, 2.0, 4.0]) * math.pi / 3
            unit = np.stack([np.cos(angles), np.sin(angles)], 1)
            verts = center + unit * np.sqrt(lam) * 2 @ np.eye(2)
        verts = verts + 0.5 * (verts - verts.mean(0)) / np.maximum(np.linalg.norm(verts - verts.mean(0), axis=1), 1e-6)[:, None]
        field = next(f.name for f, _ in geometry.fields if f.kind == "position")
        values[field] = verts.reshape(-1)
    else:
        raise ValueError(f"Expected a kind that the scene search starts from a region: disk, ellipse, box, triangle, "
                         f"polygon<V> or path<M>[x<K>][eo] (fit --count takes any kind). Received: kind={kind!r}")
    for f, _ in geometry.fields:
        values.setdefault(f.name, np.full(f.size, 0.5))
    return geometry.from_pixels(values, channels)


def traced(kind):
    """Whether shapes of ``kind`` start on the traced outline of their region: filled paths and polygons of
    more than 3 vertices."""
    layout = path_layout(kind)
    if layout is not None:
        return layout[2] is not None
    return kind.startswith("polygon") and kind != "polygon3"


def outline_points(kind, count, center, lam, axis, points=None):
    """The ``(count, 2)`` pixel points of a path or polygon ``kind`` (see :func:`traced`) that starts on
    the region ``points`` ``(n, 2)`` (pixels; its largest 4-connected part), or, without points, on the
    ellipse of ``center``, variances ``lam`` (largest first) along ``axis`` and across: a path's cubics
    follow the outline (:func:`~shapegrad.fit.outlines.outline_path`), a polygon's vertices are points of
    it equally spaced by arc length."""
    layout = path_layout(kind)
    if layout is None:  # polygon<V>
        segments, subpaths = count, 1
    else:
        segments, subpaths = layout[0], layout[1]
    path = None
    if points is not None and len(points) >= 3:
        mask, origin = points_mask(points)
        path = outline_path(mask, segments, subpaths)
        if path is not None:
            path = path + origin
    if path is None:
        angles = np.linspace(0.0, 2 * math.pi, 64, endpoint=False)
        across = np.array([-axis[1], axis[0]])
        radii = 2 * np.sqrt(lam)
        ellipse = center + np.outer(radii[0] * np.cos(angles), axis) + np.outer(radii[1] * np.sin(angles), across)
        rest = [np.repeat(center[None], 3 * segments, axis=0)] * (subpaths - 1)  # collapsed: they draw nothing
        path = np.concatenate([cubic_path(ellipse, segments)] + rest)
    if layout is None:
        path = path[0::3]  # the polygon's vertices: the cubics' ends
    return np.resize(path, (count, 2))


def points_mask(points):
    """The largest 4-connected part of the pixels ``points`` ``(n, 2)`` as a boolean mask, with the pixel
    ``(row, col)`` of its element ``[0, 0]``: ``(mask, origin (2,))``."""
    cells = np.round(np.asarray(points, np.float64)).astype(int)
    origin = cells.min(axis=0)
    cells -= origin
    mask = np.zeros(cells.max(axis=0) + 1, bool)
    mask[cells[:, 0], cells[:, 1]] = True
    labels, count = ndimage.label(mask)
    if count > 1:
        mask = labels == _largest_label(mask, labels, count)
    return mask, origin.astype(np.float64)


def _largest_label(mask, labels, count):
    """The label (1 to ``count``) of the largest part of ``mask`` in ``ndimage.label``'s ``labels``."""
    return 1 + int(np.argmax(ndimage.sum(mask, labels, index=np.arange(1, count + 1))))


def min_area_rectangle(points):
    """The smallest rectangle around pixel centres ``(n, 2)`` (one side along a hull edge):
    ``(center, half sizes + 0.5 px, axis 0 direction)``, or None for fewer than 3 distinct points."""
    try:
        hull = points[ConvexHull(points).vertices]
    except (QhullError, ValueError):
        return None
    best = None
    for a, b in zip(hull, np.roll(hull, -1, axis=0)):
        edge = b - a
        length = np.linalg.norm(edge)
        if length < 1e-9:
            continue
        u = edge / length
        v = np.array([-u[1], u[0]])
        x, y = hull @ u, hull @ v
        area = (x.max() - x.min()) * (y.max() - y.min())
        if best is None or area < best[0]:
            mid = u * (x.max() + x.min()) / 2 + v * (y.max() + y.min()) / 2
            half = np.array([(x.max() - x.min()) / 2, (y.max() - y.min()) / 2]) + 0.5
            best = (area, mid, half, u)
    return None if best is None else best[1:]


def residual_region(image, recon, threshold, background, contrast):
    """Where to put one more shape: ``(points (n, 2) px, colour (C,))``, or None.

    The seed is the peak of the residual ``|image - recon|`` (largest over
    channels, averaged over 5 x 5 pixels; pixels of the background's colour
    do not count: a shape there would only carve); the blob is the connected
    region around it of residual above ``threshold`` and of the seed's colour
    (the median over 3 x 3 pixels, within ``contrast / 2``), so that two
    touching shapes of different colours are two blobs. Where no pixel has
    that colour (a shape 2-3 px wide: the median mixed it with its edges),
    the seed moves to the largest single error within 2 px and takes its
    own colour.
    """
    error = np.abs(image - recon).max(axis=-1)
    error[np.abs(image - background).max(axis=-1) < contrast] = 0.0
    if error.max() < threshold:
        return None
    smooth = ndimage.uniform_filter(error, size=5, mode="constant")
    seed = np.unravel_index(np.argmax(smooth), error.shape)
    window = image[max(seed[0] - 1, 0) : seed[0] + 2, max(seed[1] - 1, 0) : seed[1] + 2].reshape(-1, image.shape[-1])
    color = np.median(window, axis=0)
    mask = (error >= threshold) & (np.abs(image - color).max(axis=-1) < 0.5 * contrast)
    if not mask.any():
        # A shape 2-3 px wide: the smoothed peak may fall beside it, and the median of the window mixes
        # it with its edges and the background. Then the largest error within 2 px, and its own colour.
        r0, c0 = max(seed[0] - 2, 0), max(seed[1] - 2, 0)
        near = error[r0 : seed[0] + 3, c0 : seed[1] + 3]
        seed = tuple(int(v) for v in np.add(np.unravel_index(np.argmax(near), near.shape), (r0, c0)))
        color = image[seed]
        mask = (error >= threshold) & (np.abs(image - color).max(axis=-1) < 0.5 * contrast)
    opened = ndimage.binary_opening(mask, structure=np.ones((2, 2), bool))
    if opened.sum() >= 3:
        mask = opened
    labels, count = ndimage.label(mask)
    if count == 0:
        return None
    label = labels[seed]
    if label == 0:
        label = _largest_label(mask, labels, count)
    region = labels == label
    return np.argwhere(region).astype(np.float64), np.median(image[region], axis=0)


def improvable_region(image, canvas, seed, tolerance, reach=None):
    """The pixels around ``seed`` ``(row, col)`` that one shape of the seed's colour would draw closer to
    ``image`` than ``canvas`` does: a boolean ``(H, W)`` mask, or None (under 3 pixels).

    A pixel counts where its colour is within ``tolerance`` of the seed's (in
    every channel), that colour is closer to it than the canvas is, and it
    lies within ``reach`` px of the seed (None: anywhere); the region is the
    4-connected part of those pixels that holds the seed (opened by 2 x 2
    pixels where that leaves 3 or more, so a one-pixel thread does not join
    two regions). ``image``, ``canvas``: ``(H, W, C)``. The reach keeps a
    start local: the outline of a whole thin ring (an emoji's black line)
    drawn filled covers what it surrounds, a piece of it does not.
    """
    color = image[seed]
    closer = np.square(image - color).sum(-1) < np.square(image - canvas).sum(-1)
    mask = closer & (np.abs(image - color).max(-1) < tolerance)
    if reach is not None:
        rows, cols = np.indices(mask.shape)
        mask &= (rows - seed[0]) ** 2 + (cols - seed[1]) ** 2 <= reach**2
    mask[seed] = True
    opened = ndimage.binary_opening(mask, structure=np.ones((2, 2), bool))
    if opened[seed] and opened.sum() >= 3:
        mask = opened
    labels, _ = ndimage.label(mask)
    region = labels == labels[seed]
    return region if region.sum() >= 3 else None
