"""Evaluation metrics in natural units: IoU, PSNR, and parameter errors in pixels and degrees.

These are NumPy functions for evaluation (no gradients). Images are
``(B, H, W, C)`` in ``[0, 1]``; shapes are compared on the first channel
thresholded at 0.5 unless the images have several channels, where a pixel is
"on" if any channel differs from the background by more than 0.5 (see
:func:`masks`).

Example:
    >>> import numpy as np
    >>> a = np.zeros((1, 4, 4, 1)); a[0, :2] = 1
    >>> float(iou(a, a)[0]), float(psnr(a, a * 0.9)[0]) > 20
    (1.0, True)
"""

import numpy as np

__all__ = [
    "masks",
    "iou",
    "psnr",
    "angle_deg",
    "cone_errors",
    "match_shapes",
    "scene_errors",
    "parameter_errors",
    "summarize",
]


def _point_distance(diff, resolution):
    """Pixel length of ``(..., 2)`` normalised position differences: ``N |diff|`` or ``|(H, W) * diff|``."""
    if isinstance(resolution, (list, tuple)):
        return np.linalg.norm(diff * np.float64(resolution[:2]), axis=-1)
    return resolution * np.linalg.norm(diff, axis=-1)


def _length_scale(resolution):
    """Pixels per normalised length: ``N``, or ``min(H, W)``."""
    return min(resolution) if isinstance(resolution, (list, tuple)) else resolution


def masks(images, background=0.0):
    """Boolean ``(B, H, W)``: pixels that differ from ``background`` by more than 0.5 in any channel."""
    images = np.asarray(images, np.float64)
    return (np.abs(images - background) > 0.5).any(axis=-1)


def iou(pred, true, background=0.0):
    """Intersection over union of the shapes' masks, per image; 1 where both are empty."""
    p, t = masks(pred, background), masks(true, background)
    inter = (p & t).sum(axis=(1, 2))
    union = (p | t).sum(axis=(1, 2))
    return np.where(union == 0, 1.0, inter / np.maximum(union, 1))


def psnr(pred, true):
    """Peak signal-to-noise ratio in dB for images in ``[0, 1]``, per image (capped at 100 dB)."""
    mse = np.mean((np.asarray(pred, np.float64) - np.asarray(true, np.float64)) ** 2, axis=(1, 2, 3))
    return np.minimum(10 * np.log10(1.0 / np.maximum(mse, 1e-10)), 100.0)


def angle_deg(u, v):
    """Unsigned angle between 2-vectors along the last axis, in degrees."""
    u, v = np.asarray(u, np.float64), np.asarray(v, np.float64)
    cross = u[..., 0] * v[..., 1] - u[..., 1] * v[..., 0]
    dot = (u * v).sum(-1)
    return np.degrees(np.arctan2(np.abs(cross), dot))


def cone_errors(pred, true, resolution):
    """Per-cone errors between ``(B, 5)`` parameter arrays in the ``Cones`` convention.

    ``resolution``: ``N`` or ``(H, W)`` (the layer's ``resolution``).
    Returns a dict of ``(B,)`` arrays: ``apex_error_px`` (Euclidean, pixels),
    ``axis_error_deg`` and ``aperture_error_deg`` (of the half-angle
    ``180 * s`` degrees).
    """
    pred, true = np.asarray(pred, np.float64), np.asarray(true, np.float64)
    return {
        "apex_error_px": _point_distance(pred[:, 0:2] - true[:, 0:2], resolution),
        "axis_error_deg": angle_deg(pred[:, 2:4], true[:, 2:4]),
        "aperture_error_deg": 180.0 * np.abs(pred[:, 4] - true[:, 4]),
    }


def summarize(per_item):
    """``{name: array}`` -> ``{name_median: ..., name_mean: ..., name_p90: ...}`` as floats.

    Image metrics (``iou``, ``psnr``) keep their plain name for the mean.
    """
    out = {}
    for name, values in per_item.items():
        values = np.asarray(values, np.float64)
        if name in ("iou", "psnr"):
            out[name] = float(values.mean())
            out[f"{name}_median"] = float(np.median(values))
        else:
            out[f"{name}_median"] = float(np.median(values))
            out[f"{name}_mean"] = float(values.mean())
            out[f"{name}_p90"] = float(np.percentile(values, 90))
    return out


def _field_error(field, pred, true, resolution):
    """Per-item error of one field in natural units: ``(B,)``."""
    if field.kind == "position":
        scale = np.float64(resolution[:2]) if isinstance(resolution, (list, tuple)) else resolution
        p = scale * pred.reshape(len(pred), -1, 2)
        t = scale * true.reshape(len(true), -1, 2)
        if p.shape[1] == 1:
            return np.linalg.norm(p - t, axis=-1)[:, 0]
        # Several points (polygon vertices, in any cyclic order): mean nearest-point distance.
        d = np.linalg.norm(p[:, :, None] - t[:, None], axis=-1)
        return 0.5 * (d.min(axis=1).mean(axis=1) + d.min(axis=2).mean(axis=1))
    if field.kind == "size":
        return _length_scale(resolution) * np.abs(pred - true).mean(axis=-1)
    if field.kind == "direction":
        diff = np.mod(angle_deg(pred, true), field.period or 360.0)
        return np.minimum(diff, (field.period or 360.0) - diff)
    if field.kind == "angle":
        return 180.0 * np.abs(pred - true)[:, 0]
    return np.abs(pred - true).mean(axis=-1)


def _unit(field):
    return {"position": "px", "size": "px", "direction": "deg", "angle": "deg"}.get(field.kind, "abs")


def match_shapes(pred, true, spec):
    """Hungarian matching of predicted to true shapes, within each kind.

    Shapes of one kind are interchangeable when compositing is order-free or
    they do not overlap, so each predicted shape is paired with the true shape
    of the same kind that minimises the summed pixel distance of their position
    fields. Returns, per group of ``spec.groups`` (a kind listed twice, as in
    ``"disk,box,disk"``, is two groups), ``(B, count)`` indices:
    ``order[b, i]`` is the true shape matched to predicted shape ``i``.
    """
    from scipy.optimize import linear_sum_assignment

    pred, true = np.asarray(pred, np.float64), np.asarray(true, np.float64)
    orders = []
    for prim, count, start, per_shape in spec.groups:
        p = pred[:, start : start + count * per_shape].reshape(len(pred), count, per_shape)
        t = true[:, start : start + count * per_shape].reshape(len(true), count, per_shape)
        offset, cost = 0, np.zeros((len(pred), count, count))
        for f in spec.shape_fields(prim):
            if f.kind == "position":
                a = p[:, :, None, offset : offset + f.size].reshape(len(pred), count, 1, -1, 2)
                b = t[:, None, :, offset : offset + f.size].reshape(len(pred), 1, count, -1, 2)
                cost += _point_distance(a - b, spec.resolution).sum(axis=-1)
            offset += f.size
        orders.append(np.stack([linear_sum_assignment(c)[1] for c in cost]))
    return orders


def _same_axes(fields, pred, true):
    """Boxes and ellipses: ``(a, b)`` sizes at angle ``phi`` are ``(b, a)`` at ``phi + 90`` degrees.

    For a primitive with a 2-number size field and a direction of period 180
    degrees, rewrite each predicted shape in whichever of its two equivalent
    forms has sizes closer to the truth, so that a box read with its axes
    swapped is not counted as 90 degrees off. ``pred``, ``true``: ``(B, count, size)``.
    """
    offsets, start = {}, 0
    for f in fields:
        offsets[f.name] = (f, start)
        start += f.size
    sizes = [(f, o) for f, o in offsets.values() if f.kind == "size" and f.size == 2]
    turns = [(f, o) for f, o in offsets.values() if f.kind == "direction" and f.period == 180.0]
    if not sizes or not turns:
        return pred
    (_, s), (_, d) = sizes[0], turns[0]
    swapped = pred.copy()
    swapped[..., s], swapped[..., s + 1] = pred[..., s + 1], pred[..., s]
    swapped[..., d], swapped[..., d + 1] = -pred[..., d + 1], pred[..., d]
    closer = np.abs(swapped[..., s : s + 2] - true[..., s : s + 2]).sum(-1) < np.abs(
        pred[..., s : s + 2] - true[..., s : s + 2]
    ).sum(-1)
    return np.where(closer[..., None], swapped, pred)


def scene_errors(pred, true, spec):
    """Matched per-kind, per-field errors of ``(B, P)`` Render parameters, in natural units.

    Returns ``{kind: {"<field>_error_<unit>": (B * count,) array}}`` after
    :func:`match_shapes`; directions are compared modulo their period (180
    degrees for ellipse and box axes), and a box or ellipse whose two axes
    are read the other way round (sizes swapped, turned 90 degrees) is the
    same shape.
    """
    pred, true = np.asarray(pred, np.float64), np.asarray(true, np.float64)
    orders = match_shapes(pred, true, spec)
    out = {}
    for (prim, count, start, per_shape), order in zip(spec.groups, orders):
        p = pred[:, start : start + count * per_shape].reshape(len(pred), count, per_shape)
        t = true[:, start : start + count * per_shape].reshape(len(true), count, per_shape)
        t = np.take_along_axis(t, order[:, :, None], axis=1)
        p = _same_axes(spec.shape_fields(prim), p, t)
        errors, offset = out.setdefault(prim.kind, {}), 0
        for f in spec.shape_fields(prim):
            a = p[:, :, offset : offset + f.size].reshape(-1, f.size)
            b = t[:, :, offset : offset + f.size].reshape(-1, f.size)
            name = f"{f.name}_error_{_unit(f)}"
            value = _field_error(f, a, b, spec.resolution)
            errors[name] = np.concatenate([errors[name], value]) if name in errors else value
            offset += f.size
    return out


def parameter_errors(pred, true, spec):
    """Flat ``{name: (items,) array}`` of parameter errors in natural units, for either renderer's ``spec``.

    The ``Cones`` layout (one cone, no colour: ``spec.appearance`` false) keeps
    the names of :func:`cone_errors` (``apex_error_px``, ``axis_error_deg``,
    ``aperture_error_deg``); a scene gives ``<kind>_<field>_error_<unit>``
    from :func:`scene_errors`.
    """
    if not spec.appearance and tuple(spec.shapes) == (("cone", 1),):
        return cone_errors(pred, true, spec.resolution)
    nested = scene_errors(pred, true, spec)
    return {f"{kind}_{name}": v for kind, errs in nested.items() for name, v in errs.items()}
