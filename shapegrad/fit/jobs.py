"""``shapegrad fit`` as a library call: :func:`fit_files`, the files-in, folders-out job run with :func:`fit_scene`.

The job itself (skip rules, output folders, ``summary.csv``) is
:func:`shapegrad.io.batch.process_files`, shared with ``shapegrad encode``;
this module adds what fitting needs: option checks, large images shrunk to
``max_side``, images of one size fitted together.
"""

import contextlib
import dataclasses
import sys

import keras

from shapegrad.fit import pictures, search
from shapegrad.io.batch import MIN_SIDE, SUMMARY_COLUMNS, ImageResult, process_files
from shapegrad.io.images import Letterbox

__all__ = ["MAX_SIDE", "SUMMARY_COLUMNS", "check_fit_options", "fit_files", "fit_picture_files", "fittable", "fitted_size"]

MAX_SIDE = 512  # fit_files fits a larger image on a copy shrunk to this many pixels on its longer side


def fitted_size(size, max_side=MAX_SIDE):
    """The size ``(h, w)`` at which ``fit_files`` fits an image of ``size`` ``(H, W)``: its own, or shrunk
    (proportions kept, :class:`shapegrad.io.images.Letterbox` with ``pad=False``) to ``max_side`` on its longer side.

    Example:
        >>> fitted_size((40, 64)), fitted_size((1000, 2000))
        ((40, 64), (256, 512))
    """
    if max(size) <= max_side:
        return tuple(size)
    return Letterbox(*size, max_side, pad=False).inner


def fittable(size, max_side=MAX_SIDE):
    """Whether ``fit_files`` fits an image of ``size`` ``(H, W)``: at least 4 px a side at its fitted size."""
    return min(fitted_size(size, max_side)) >= MIN_SIDE


def check_fit_options(kinds, max_shapes, shapes, options=None):
    """Raise ``ValueError`` (Keras style) for bad ``kinds``, ``max_shapes``, ``shapes`` or search options."""
    unknown = set(options or {}) - set(search.SEARCH_DEFAULTS)
    if unknown:
        raise ValueError(f"Expected options among {sorted(search.SEARCH_DEFAULTS)}. Received: {sorted(unknown)}")
    search.search_spec(kinds, max_shapes, shapes)


def fit_files(inputs, out, kinds=None, max_shapes=None, shapes=None, force=False, progress=True, max_side=MAX_SIDE,
              **options):
    """Fit a scene of primitives to every image among ``inputs`` (files and/or folders); write into ``out``.

    Each image is fitted by :func:`shapegrad.fit_scene` (kinds and count
    unknown: up to ``max_shapes`` shapes of ``kinds``; or exactly ``shapes``
    such as ``"disk*2,box"``), at its own size and channels (grey stays grey,
    colour stays colour; alpha is dropped, 16-bit images are read with every
    bit). Images of one size are fitted together, up to ``search.GROUP`` per
    call (one compilation per size and much less time per image). ``seconds``
    is an image's share of its batch's time.

    The files, the skip rules and the summary are those of
    :func:`shapegrad.io.batch.process_files` (the job ``shapegrad encode``
    runs too): per image ``out/<stem>/params.json`` (readable by ``shapegrad
    render``; it records ``height``/``width`` and adds ``image``, ``psnr_db``,
    ``seconds``, ``noise``), ``overlay.png`` and ``shapes.svg``; then
    ``out/summary.csv`` with the columns :data:`SUMMARY_COLUMNS`, written
    after every batch. Unreadable files, other files in the input folders,
    images under 4 px a side (at their fitted size) and images whose
    ``out/<stem>`` exists (unless ``force``) are skipped with a warning on
    stderr and a summary row.

    An image larger than ``max_side`` px a side is fitted on a copy shrunk
    to ``max_side`` on its longer side (:func:`fitted_size`); its
    ``params.json`` and ``shapes.svg`` are at the image's own size (the
    parameters are normalised, so they carry over; edges keep the fitted
    sharpness in pixels), its ``overlay.png`` and ``psnr_db`` at the fitted
    size, recorded as ``fitted_size``.

    Args:
        inputs: a path or a list of image files and/or folders (searched
            recursively for PNG/JPEG).
        out: the output folder.
        kinds: the kinds a shape may be (default disk, box, triangle, ellipse).
        max_shapes: the most shapes per image (default 5).
        shapes: exactly these shapes instead of ``kinds``/``max_shapes``
            (giving both is a ``ValueError``).
        force: overwrite existing ``out/<stem>`` folders.
        progress: show a progress bar on stderr.
        max_side: fit larger images shrunk to this many pixels on their longer side.
        **options: search settings of ``fit_scene`` (e.g. ``steps``).

    Returns:
        ``{"done": n, "skipped": [(path, why)], "rows": [...]}`` (the rows of
        ``summary.csv``). Raises ``ValueError`` before any work when no input
        is an image that can be fitted, or for bad ``kinds``/``shapes``/
        ``max_shapes``/``max_side``/options.

    Example (skipped by the doctest run: a whole search, ~20 s with compilation):
        >>> import os, tempfile, numpy as np
        >>> from skimage.draw import disk
        >>> from shapegrad.io import files, plots
        >>> folder = tempfile.mkdtemp()
        >>> image = np.full((24, 40, 3), 0.1, "float32")
        >>> rr, cc = disk((12, 14), 7, shape=(24, 40)); image[rr, cc] = (0.9, 0.3, 0.2)
        >>> _ = plots.save_image(os.path.join(folder, "in", "a.png"), image)
        >>> result = fit_files(os.path.join(folder, "in"), os.path.join(folder, "out"), kinds="disk,box",  # doctest: +SKIP
        ...                    max_shapes=2, progress=False)
        >>> result["done"], result["rows"][0][1:4]  # doctest: +SKIP
        (1, ['40x24', 'disk', 1])
        >>> renderer, params = files.load_params(os.path.join(folder, "out", "a", "params.json"))  # doctest: +SKIP
        >>> (renderer.height, renderer.width)  # doctest: +SKIP
        (24, 40)
    """
    check_fit_options(kinds, max_shapes, shapes, options)
    _check_max_side(max_side)

    def work(images):
        shrunk = [_shrunk(im, max_side) for im in images]
        found = search.fit_scene([pixels for pixels, _ in shrunk], kinds=kinds, max_shapes=max_shapes, shapes=shapes,
                                 **options)
        return [_image_result(one, pixels, box, dict(noise=round(float(one.noise), 6)))
                for one, (pixels, box) in zip(found, shrunk)]

    return process_files(inputs, out, work, "fit", force=force, progress=progress,
                         worked_size=lambda size: fitted_size(size, max_side),
                         batches=lambda paths, sizes: _batches(paths, {p: fitted_size(s, max_side) for p, s in sizes.items()}))


def fit_picture_files(inputs, out, kinds="triangle", count=None, seconds=None, opacity=None, seed=0, force=False,
                      progress=True, max_side=MAX_SIDE, **options):
    """Vectorise every picture among ``inputs`` with :func:`~shapegrad.fit.pictures.fit_picture`; write into ``out``.

    The job of :func:`fit_files` (the same skip rules, ``summary.csv`` and
    ``params.json``/``shapes.svg`` per picture, large pictures fitted shrunk
    to ``max_side``) with a count or a time budget of shapes per picture:
    ``count`` shapes (fewer only where no more lowers the error: the
    summary's status then says ``ok (no gain after N shapes)``), or as many
    as ``seconds`` allows per picture, of ``kinds`` (default triangles),
    ``opacity`` None (fitted per shape) or held at a number in ``(0, 1]``.
    Per picture ``preview.png`` (the shapes drawn) and ``input.png`` rather
    than an outline overlay; ``params.json`` adds ``history`` (PSNR after
    each added shape). ``out/index.html`` shows each input beside its SVG.
    Pictures are fitted one at a time and written as each ends (a killed run
    keeps the pictures it finished). ``progress``: a bar per picture on
    stderr with the shapes added and the current PSNR.

    Returns:
        ``{"done": n, "skipped": [(path, why)], "rows": [...]}`` as :func:`fit_files`.
    """
    pictures.check_picture_options(kinds, count, seconds, opacity, options)
    _check_max_side(max_side)

    def work(images):
        results = []
        for image in images:
            pixels, box = _shrunk(image, max_side)
            bar = keras.utils.Progbar(count, unit_name="shape", stateful_metrics=["psnr"]) if progress else None

            def show(n, psnr, bar=bar):
                with contextlib.redirect_stdout(sys.stderr):
                    bar.update(n, values=[("psnr", psnr)], finalize=False)

            one = pictures.fit_picture(pixels, kinds, count=count, seconds=seconds, opacity=opacity, seed=seed,
                                       progress=show if bar else None, **options)
            if bar:
                with contextlib.redirect_stdout(sys.stderr):
                    bar.update(one.count, values=[("psnr", one.psnr)], finalize=True)
            extra = dict(history=[round(float(v), 3) for v in one.history], stopped=one.stopped)
            status = ("ok (one colour: no shape needed)" if one.count == 0 and one.stopped == "no gain"
                      else f"ok (no gain after {one.count} shapes)" if one.stopped == "no gain" and count is not None
                      else "ok")
            results.append(_image_result(one, pixels, box, extra, status=status, pictures=True, drawn=one.canvas))
        return results

    return process_files(inputs, out, work, "fit", force=force, progress=False,
                         worked_size=lambda size: fitted_size(size, max_side),
                         batches=lambda paths, sizes: ([p] for p in paths))


def _check_max_side(max_side):
    if isinstance(max_side, bool) or not isinstance(max_side, int) or max_side < MIN_SIDE:
        raise ValueError(f"Expected max_side to be an integer >= {MIN_SIDE}. Received: max_side={max_side!r}")


def _shrunk(image, max_side):
    """``(pixels, box)``: ``image`` as it is fitted (shrunk to ``max_side`` on its longer side, or itself) and
    the :class:`Letterbox` that shrank it (None if it was not)."""
    if max(image.shape[:2]) <= max_side:
        return image, None
    box = Letterbox(*image.shape[:2], max_side, pad=False)
    return box.apply(image), box


def _image_result(one, pixels, box, extra, **fields):
    """The :class:`ImageResult` of a fit ``one`` (a SceneFit) of ``pixels``, shrunk by ``box`` (or None)."""
    if box:
        extra = dict(extra, fitted_size=[one.height, one.width])
    return ImageResult(one.renderer(), one.params, one.shapes, one.count, float(one.psnr), float(one.seconds), pixels,
                       full=_at_size(one, box) if box else None, extra=extra, background=one.background, **fields)


def _at_size(found, box):
    """``(Render, (1, P) params)`` of the fit ``found`` (made at ``box.inner``) at the image's own size."""
    full = dataclasses.replace(found, height=box.height, width=box.width)
    renderer = full.renderer()
    if renderer is None:
        return None
    params = box.to_image(found.renderer().spec, found.params[None], renderer.spec)
    return renderer, params


def _batches(paths, sizes):
    """``paths`` in batches that :func:`~shapegrad.fit.search.fit_scene` fits together: one image size per
    batch, at most ``search.GROUP`` images, the images of a size split into equal parts (one compiled
    batch size per image size). Each batch's files are written before the next starts, so a killed run
    keeps every finished batch; batched, small images cost a fraction of one call each."""
    by_size = {}
    for path in paths:
        by_size.setdefault(sizes[path], []).append(path)
    for group in by_size.values():
        size = -(-len(group) // -(-len(group) // search.GROUP))
        for j in range(0, len(group), size):
            yield group[j : j + size]
