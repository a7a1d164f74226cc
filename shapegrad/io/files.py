"""Files users hand to shapegrad or get back: images, parameter JSON, SVG, and the one atomic writer.

Every file the package writes goes through :func:`atomic_write` (a temporary
file, then a rename), so a reader or a killed run never sees half a file.

A parameter file (written by ``shapegrad fit``, read by ``shapegrad render``)
is JSON::

    {"shapes": "disk*2,box", "resolution": 64, "height": 64, "width": 64,
     "channels": 1, "softness": 1.0, "composite": "over", "background": [0.0],
     "params": [[...P numbers...], ...],          # normalised, one row per image
     "natural": [[{"kind": "disk", "center": [r, c], ...}, ...], ...]}  # pixels, degrees

Only ``shapes``, ``params`` and the size are required: ``height`` and
``width``, or ``resolution`` alone (``N``, or ``[H, W]``; files written before
``height``/``width`` existed have only ``resolution``). ``natural`` is for
people and is ignored on reading. ``shapes`` may also be ``"cone"`` with 5
numbers per row, the ``Cones`` layer (its ``natural`` entries read
``apex_px``, ``axis_deg``, ``half_angle_deg``).

Example:
    >>> import json, tempfile, os
    >>> path = os.path.join(tempfile.mkdtemp(), "p.json")
    >>> _ = open(path, "w").write(json.dumps({"shapes": "disk", "resolution": 8, "params": [[0.5, 0.5, 0.25, 1, 1]]}))
    >>> renderer, params = load_params(path)
    >>> params.shape, renderer.spec.size
    ((1, 5), 5)
"""

import importlib
import json
import math
import os

import numpy as np

from shapegrad.render.cones import Cones
from shapegrad.render.primitives import format_shapes, path_layout
from shapegrad.render.render import Render

__all__ = ["atomic_write", "read_image", "write_text", "write_csv", "load_params", "save_params", "svg_background", "to_svg",
           "to_svg_strip"]


def atomic_write(path, data):
    """Write ``path`` atomically: a temporary file beside it, then a rename. Returns ``path``.

    ``data`` is a ``str`` (written as text), ``bytes``, or a callable
    ``data(tmp_path)`` that writes the file itself (a PNG, a figure, a Keras
    model): the temporary name keeps ``path``'s extension, for writers that
    read it. A reader or a killed run never sees half a file; on an error the
    temporary file is removed and ``path`` is untouched. The parent folder is
    created if needed.

    Example:
        >>> import os, tempfile
        >>> path = atomic_write(os.path.join(tempfile.mkdtemp(), "a", "x.txt"), "hello")
        >>> open(path).read(), os.listdir(os.path.dirname(path))
        ('hello', ['x.txt'])
    """
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    root, ext = os.path.splitext(os.path.basename(path))
    tmp = os.path.join(folder, f".{root}.tmp-{os.getpid()}{ext}")
    try:
        if isinstance(data, str):
            with open(tmp, "w") as f:
                f.write(data)
        elif isinstance(data, (bytes, bytearray)):
            with open(tmp, "wb") as f:
                f.write(data)
        elif callable(data):
            data(tmp)
        else:
            raise TypeError(f"Expected data to be str, bytes or a callable. Received: data={type(data).__name__}")
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    return path


def write_text(path, text):
    """Write ``text`` to ``path`` atomically (:func:`atomic_write`). Returns ``path``."""
    return atomic_write(path, str(text))


def read_image(path):
    """Read a PNG/JPEG/... as float32 ``(H, W, C)`` in ``[0, 1]``, ``C`` = 1 (grey) or 3 (colour).

    8-bit images are divided by 255, 16-bit ones by 65535, float images are
    taken as they are; an alpha channel is dropped. Raises ``ValueError`` for
    a missing or unreadable file.
    """
    from PIL import Image, UnidentifiedImageError

    if not os.path.isfile(path):
        raise ValueError(f"no such image file: {path}")
    try:
        with Image.open(path) as image:
            image.load()
            if image.mode.startswith("I"):  # 16- or 32-bit integers: keep every bit
                data = np.asarray(image, np.float32) / 65535.0
            elif image.mode == "F":
                data = np.asarray(image, np.float32)
            else:
                grey = image.mode in ("1", "L", "LA")
                data = np.asarray(image.convert("L" if grey else "RGB"), np.float32) / 255.0
    except (UnidentifiedImageError, OSError) as error:
        raise ValueError(f"cannot read image {path}: {error}") from None
    return data[..., None] if data.ndim == 2 else data


def _renderer(meta):
    resolution = (meta["height"], meta["width"]) if "height" in meta and "width" in meta else meta["resolution"]
    if meta["shapes"] == "cone":
        return Cones(resolution)
    return Render(
        meta["shapes"],
        resolution,
        channels=meta.get("channels", 1),
        softness=meta.get("softness", 1.0),
        composite=meta.get("composite", "over"),
        background=meta.get("background", 0.0),
    )


def load_params(path):
    """Read a parameter file: ``(renderer, params)`` with ``params`` float32 ``(B, P)``.

    Raises ``ValueError`` (one line, naming the problem) for a missing or
    malformed file, unknown shapes, a wrong number of parameters, or NaN/inf.
    """
    if not os.path.isfile(path):
        raise ValueError(f"no such parameter file: {path}")
    try:
        with open(path) as f:
            meta = json.load(f)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ValueError(f"cannot read {path} as JSON: {error}") from None
    if not isinstance(meta, dict):
        raise ValueError(f"{path}: expected a JSON object. Received: {type(meta).__name__}")
    size_keys = ("height", "width") if "height" in meta or "width" in meta else ("resolution",)
    missing = [k for k in ("shapes", *size_keys, "params") if k not in meta]
    if missing:
        raise ValueError(f"{path}: missing key {missing[0]!r} (needs shapes, resolution or height and width, params)")
    try:
        params = np.asarray(meta["params"], np.float64)
    except (TypeError, ValueError):
        raise ValueError(f"{path}: params must be a list of rows of numbers") from None
    if params.ndim == 1:
        params = params[None]
    if params.ndim != 2 or params.size == 0:
        raise ValueError(f"{path}: params must be a non-empty list of rows. Received: shape={params.shape}")
    if not np.isfinite(params).all():
        raise ValueError(f"{path}: params contain NaN or infinite values")
    renderer = _renderer(meta)  # raises ValueError naming shapes / resolution / ...
    size = renderer.spec.size
    if params.shape[1] != size:
        raise ValueError(
            f"{path}: shapes={meta['shapes']!r} take {size} numbers per row. Received: {params.shape[1]}"
        )
    return renderer, params.astype(np.float32)


def _natural(renderer, row):
    """One row of normalised parameters as ``[{kind, field: natural values}]``."""
    if _is_cones(renderer):  # the Cones file format predates the spec: its own names, unrounded
        a0, a1, d0, d1, s = (float(v) for v in row)
        h, w = renderer.height, renderer.width
        return [{"kind": "cone", "apex_px": [h * a0, w * a1], "axis_deg": math.degrees(math.atan2(d1, d0)),
                 "half_angle_deg": 180.0 * s}]
    shapes = []
    for k, fields in enumerate(renderer.spec.to_natural(row[None])):
        kind = renderer.spec.fields_of(k)[0].kind
        shapes.append({"kind": kind, **{name: np.asarray(v)[0].round(4).tolist() for name, v in fields.items()}})
    return shapes


def save_params(path, renderer, params, **extra):
    """Write a parameter file for ``renderer`` (a ``Render`` or ``Cones``) and ``(B, P)`` params, atomically."""

    params = np.asarray(params, np.float64)
    resolution = renderer.resolution if isinstance(renderer.resolution, int) else list(renderer.resolution)
    size = {"resolution": resolution, "height": renderer.height, "width": renderer.width}
    if _is_cones(renderer):
        meta = {"shapes": "cone", **size}
    else:
        meta = {
            "shapes": format_shapes(renderer.spec.shapes),
            **size,
            "channels": renderer.channels,
            "softness": renderer.softness,
            "composite": renderer.composite,
            # One number per channel (a scalar background of a colour layer used to be written as [b]).
            "background": np.broadcast_to(np.float64(renderer.background), (renderer.channels,)).tolist(),
        }
    meta["params"] = params.round(7).tolist()
    meta["natural"] = [_natural(renderer, row) for row in params]
    meta.update(extra)
    return write_text(path, json.dumps(meta, indent=1) + "\n")


def _is_cones(renderer):
    """The ``Cones`` layer's layout (one cone, no colour): the ``"shapes": "cone"`` file format."""
    return not renderer.spec.appearance


def _rgb(color):
    c = np.clip(np.asarray(color, np.float64).ravel(), 0, 1)
    c = np.repeat(c, 3) if c.size == 1 else c[:3]
    return "#" + "".join(f"{int(round(255 * v)):02x}" for v in c)


def _wedge(apex, axis_deg, half_deg, reach):
    """Polygon points (row, col) of a wedge cut at distance ``reach`` from its apex."""
    half = min(max(half_deg, 0.0), 180.0)
    angles = np.radians(axis_deg + np.linspace(-half, half, 33))
    return [tuple(apex)] + [(apex[0] + reach * math.cos(t), apex[1] + reach * math.sin(t)) for t in angles]


def _points(pts):
    return " ".join(f"{c:.3f},{r:.3f}" for r, c in pts)


def _cubic_chain(nodes, closed):
    """SVG path data of a chain of cubic segments: ``nodes`` ``(3M [+ 1], 2)`` pixels (row, col), ``P A B P A B ...``."""
    pts = [f"{c:.3f} {r:.3f}" for r, c in nodes]
    if closed:  # the last segment ends at the first point
        pts.append(pts[0])
    d = [f"M {pts[0]}"] + [f"C {pts[i]} {pts[i + 1]} {pts[i + 2]}" for i in range(1, len(pts) - 2, 3)]
    return " ".join(d) + (" Z" if closed else "")


def svg_background(height, width, color):
    """The opening of an SVG document of an ``height x width`` image of one ``color``: its ``<svg>`` and ``<rect>``.

    Close it with ``</svg>``; :func:`to_svg` draws shapes between the two.
    """
    h, w = int(height), int(width)
    return [
        f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="-0.5 -0.5 {w} {h}" width="{4 * w}" height="{4 * h}">',
        f'<rect x="-0.5" y="-0.5" width="{w}" height="{h}" fill="{_rgb(color)}"/>',
    ]


def to_svg(renderer, row):
    """An SVG document of one row of parameters (x = column, y = row, pixel (i, j) centred at (j, i))."""
    h, w = renderer.height, renderer.width
    n = max(h, w)
    shapes = _natural(renderer, np.asarray(row, np.float64))
    out = svg_background(h, w, getattr(renderer, "background", [0.0]))
    for shape in shapes:
        kind = shape["kind"]
        fill = _rgb(shape.get("color", [1.0]))
        opacity = float(np.ravel(shape.get("opacity", [1.0]))[0])
        style = f'fill="{fill}" fill-opacity="{opacity:.3f}"'
        stroke = f'fill="none" stroke="{fill}" stroke-opacity="{opacity:.3f}" stroke-linecap="round"'
        if kind == "disk":
            (r, c), radius = shape["center"], shape["radius"][0]
            out.append(f'<circle cx="{c:.3f}" cy="{r:.3f}" r="{radius:.3f}" {style}/>')
        elif kind in ("ellipse", "box"):
            (r, c), rot = shape["center"], shape["direction"][0]
            # axis 0 is (cos t, sin t) in (row, col); in SVG (x = col, y = row) it is at 90 - t.
            transform = f'transform="translate({c:.3f} {r:.3f}) rotate({90.0 - rot:.3f})"'
            if kind == "ellipse":
                a, b = shape["radii"]
                out.append(f'<ellipse rx="{a:.3f}" ry="{b:.3f}" {transform} {style}/>')
            else:
                a, b = shape["half_size"]
                corner = shape["corner"][0] * min(a, b)
                out.append(
                    f'<rect x="{-a:.3f}" y="{-b:.3f}" width="{2 * a:.3f}" height="{2 * b:.3f}" '
                    f'rx="{corner:.3f}" {transform} {style}/>'
                )
        elif kind == "segment":
            (r0, c0), (r1, c1) = shape["a"], shape["b"]
            width = 2 * shape["half_width"][0]
            out.append(
                f'<line x1="{c0:.3f}" y1="{r0:.3f}" x2="{c1:.3f}" y2="{r1:.3f}" stroke-width="{width:.3f}" {stroke}/>'
            )
        elif kind == "bezier":
            (r0, c0), (r1, c1), (r2, c2) = shape["p0"], shape["p1"], shape["p2"]
            width = 2 * shape["half_width"][0]
            path = f"M {c0:.3f} {r0:.3f} Q {c1:.3f} {r1:.3f} {c2:.3f} {r2:.3f}"
            out.append(f'<path d="{path}" stroke-width="{width:.3f}" {stroke}/>')
        elif kind == "cone":
            apex = shape.get("apex", shape.get("apex_px"))
            axis = shape["axis"][0] if "axis" in shape else shape["axis_deg"]
            half = shape["half_angle"][0] if "half_angle" in shape else shape["half_angle_deg"]
            pts = _wedge(apex, axis, half, 4.0 * n)  # axis: degrees of (row, col) = (cos, sin)
            out.append(f'<polygon points="{_points(pts)}" {style}/>')
        elif path_layout(kind) is not None:  # path<M>[x<K>][eo], stroke<M>[x<K>]
            segments, subpaths, rule = path_layout(kind)
            chains = np.asarray(shape["points"], np.float64).reshape(subpaths, -1, 2)
            d = " ".join(_cubic_chain(chain, closed=rule is not None) for chain in chains)
            if rule is None:
                width = 2 * shape["half_width"][0]
                out.append(f'<path d="{d}" stroke-width="{width:.3f}" stroke-linejoin="round" {stroke}/>')
            else:
                out.append(f'<path d="{d}" fill-rule="{rule}" {style}/>')
        else:  # triangle, polygon<V>
            pts = np.asarray(shape["vertices"], np.float64).reshape(-1, 2)
            out.append(f'<polygon points="{_points(pts)}" {style}/>')
    out.append("</svg>")
    return "\n".join(out) + "\n"


def to_svg_strip(renderer, rows):
    """An SVG document of ``(B, P)`` rows side by side (the layout of ``shapegrad render``'s PNG strip).

    One row gives exactly :func:`to_svg`; several give one ``<svg>`` per row,
    each clipped to its own ``H x W`` cell, left to right.
    """
    rows = np.asarray(rows, np.float64).reshape(-1, renderer.spec.size)
    if len(rows) == 1:
        return to_svg(renderer, rows[0])
    h, w = renderer.height, renderer.width
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {len(rows) * w} {h}" '
           f'width="{4 * len(rows) * w}" height="{4 * h}">']
    for i, row in enumerate(rows):
        body = to_svg(renderer, row).splitlines()[1:-1]  # without its own <svg ...> and </svg>
        out.append(f'<svg x="{i * w}" y="0" width="{w}" height="{h}" viewBox="-0.5 -0.5 {w} {h}">')
        out.extend(body)
        out.append("</svg>")
    out.append("</svg>")
    return "\n".join(out) + "\n"


def write_csv(path, header, rows):
    """Write ``header`` and ``rows`` (lists of values) as CSV to ``path``, atomically. Returns ``path``."""
    import csv
    import io

    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    return write_text(path, buffer.getvalue())


def __getattr__(name):
    """``output_folders`` and ``write_image_outputs`` lived here before :mod:`shapegrad.io.batch` (kept for one release)."""
    if name in ("output_folders", "write_image_outputs"):
        return getattr(importlib.import_module("shapegrad.io.batch"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
