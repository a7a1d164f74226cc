"""Files in, folders out: the per-image output folders of ``shapegrad fit`` and ``shapegrad encode``."""

import os

import numpy as np

from shapegrad.io import files, plots

__all__ = ["output_folders", "write_image_outputs"]


def output_folders(paths, out, force):
    """Per-image output folders under ``out``: ``({path: folder name}, to_do, existing)``.

    The folder of ``a/x.png`` is ``x``; a second image with the same stem gets
    ``x-2``, then ``x-3``... (in the order of ``paths``). ``existing``: the
    paths whose ``out/<name>`` already exists and ``force`` is false (to be
    skipped, not overwritten); ``to_do``: the others, in order.
    """
    folders, todo, existing = {}, [], []
    for path in paths:
        stem = os.path.splitext(os.path.basename(path))[0]
        name, k = stem, 1
        while name in folders.values():
            k += 1
            name = f"{stem}-{k}"
        folders[path] = name
        (existing if os.path.exists(os.path.join(out, name)) and not force else todo).append(path)
    return folders, todo, existing


def write_image_outputs(folder, pixels, renderer, params, /, full=None, **extra):
    """The per-image files of ``shapegrad fit`` and ``shapegrad encode`` in ``folder``.

    ``params.json`` (:func:`save_params` of ``renderer`` and ``(1, P)``
    ``params``, plus ``extra`` keys; readable by ``shapegrad render``),
    ``overlay.png`` (``pixels``, the image ``(H, W, C)`` with each shape's outline, scaled
    up by an integer so that its longer side is about 256 px) and
    ``shapes.svg``. ``renderer`` may be None (no shape found): then only the
    overlay (the image alone) is written. ``full``: ``(renderer, params)``
    of the same shapes at another size (an image fitted shrunk, at its own
    size), for ``params.json`` and ``shapes.svg``; the overlay stays at
    ``pixels``' size. Returns the paths written.
    """

    pixels = np.asarray(pixels, np.float32)
    written = []
    if renderer is not None:
        row = np.asarray(params, np.float32).reshape(1, -1)
        saved, saved_row = (full[0], np.asarray(full[1], np.float32).reshape(1, -1)) if full else (renderer, row)
        written.append(files.save_params(os.path.join(folder, "params.json"), saved, saved_row, **extra))
        outlines = plots.outlines(renderer, row[0])
        written.append(files.write_text(os.path.join(folder, "shapes.svg"), files.to_svg(saved, saved_row[0])))
    else:
        outlines = np.zeros((0, *pixels.shape[:2]), bool)
    scale = max(1, 256 // max(pixels.shape[:2]))
    written.insert(1 if written else 0, plots.save_image(os.path.join(folder, "overlay.png"),
                                                         plots.overlay(pixels, outlines), scale=scale))
    return written
