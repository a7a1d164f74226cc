"""Files in, folders out: the job that ``shapegrad fit`` and ``shapegrad encode`` both run.

:func:`process_files` lists the images among the inputs, skips what cannot be
done (with a warning and a summary row), hands the rest to a per-batch function
(a fit, an encoder) in batches, and writes each image's folder
(:func:`write_image_outputs`) and ``summary.csv`` after every batch. It knows
nothing of how images are fitted: the caller passes that in.
"""

import contextlib
import dataclasses
import os
import sys

import keras
import numpy as np

from shapegrad.io import files, plots
from shapegrad.io.gallery import GalleryEntry, write_gallery
from shapegrad.io.images import IMAGE_EXTENSIONS, scan_images

__all__ = ["MIN_SIDE", "SUMMARY_COLUMNS", "ImageResult", "output_folders", "process_files", "write_image_outputs"]

MIN_SIDE = 4  # an image under this many pixels a side (at the size it is worked at) is skipped
SUMMARY_COLUMNS = ("file", "size", "kinds", "count", "psnr_db", "seconds", "status")


@dataclasses.dataclass
class ImageResult:
    """What a per-batch function of :func:`process_files` returns for one image.

    Attributes:
        renderer: a :class:`~shapegrad.Render` of the shapes found, at the size of
            ``pixels``; None when no shape was found.
        params: ``(1, P)`` normalised parameters of ``renderer``.
        kinds: the shapes' kinds, back to front, comma-separated (``""``: none).
        count: how many shapes were found.
        psnr: of the reconstruction against the image, dB.
        seconds: this image's share of its batch's time.
        pixels: ``(h, w, C)`` the image the overlay shows (the image as it was
            worked on: shrunk, in the run's channels).
        full: ``(renderer, (1, P) params)`` of the same shapes at the image's own
            size when it was worked on at another, for ``params.json`` and
            ``shapes.svg``; None otherwise.
        extra: more ``params.json`` keys.
        status: the summary's ``status`` (``"ok"``, or ``"ok (...)"`` with a note).
        pictures: draw the result (``preview.png``) rather than outlines on
            the image (``overlay.png``): for pictures of many shapes.
        drawn: ``(h, w, C)``, the result as the fit drew it, for ``preview.png``
            (else ``renderer`` draws it again).
        background: ``(C,)`` colour under the shapes, if known: with no
            shape, ``shapes.svg`` is this colour alone.
    """

    renderer: object
    params: np.ndarray
    kinds: str
    count: int
    psnr: float
    seconds: float
    pixels: np.ndarray
    full: tuple = None
    extra: dict = dataclasses.field(default_factory=dict)
    status: str = "ok"
    pictures: bool = False
    drawn: np.ndarray = None
    background: np.ndarray = None


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


def write_image_outputs(folder, pixels, renderer, params, /, full=None, pictures=False, background=None, drawn=None,
                        **extra):
    """The per-image files of ``shapegrad fit`` and ``shapegrad encode`` in ``folder``.

    ``params.json`` (:func:`save_params` of ``renderer`` and ``(1, P)``
    ``params``, plus ``extra`` keys; readable by ``shapegrad render``),
    ``overlay.png`` (``pixels``, the image ``(H, W, C)`` with each shape's outline, scaled
    up by an integer so that its longer side is about 256 px), ``input.png``
    (``pixels`` as they are) and ``shapes.svg``. ``pictures``: ``preview.png``
    (``drawn`` if given, else the shapes drawn by ``renderer``) instead of ``overlay.png``.
    ``renderer`` may be None (no shape found): then ``params.json`` is not
    written, and ``shapes.svg`` only if ``background`` (a colour) is given. ``full``: ``(renderer, params)``
    of the same shapes at another size (an image fitted shrunk, at its own
    size), for ``params.json`` and ``shapes.svg``; the PNGs stay at
    ``pixels``' size. Returns the paths written.
    """

    pixels = np.asarray(pixels, np.float32)
    written = [plots.save_image(os.path.join(folder, "input.png"), pixels)]
    if pictures:
        if drawn is None:
            drawn = (np.broadcast_to(pixels.mean(axis=(0, 1)), pixels.shape) if renderer is None
                     else keras.ops.convert_to_numpy(renderer(np.asarray(params, np.float32).reshape(1, -1)))[0])
        written.append(plots.save_image(os.path.join(folder, "preview.png"), drawn))
    if renderer is not None:
        row = np.asarray(params, np.float32).reshape(1, -1)
        saved, saved_row = (full[0], np.asarray(full[1], np.float32).reshape(1, -1)) if full else (renderer, row)
        written.append(files.save_params(os.path.join(folder, "params.json"), saved, saved_row, **extra))
        written.append(files.write_text(os.path.join(folder, "shapes.svg"), files.to_svg(saved, saved_row[0])))
    elif background is not None:
        h, w = (full[0].height, full[0].width) if full else pixels.shape[:2]
        svg = "\n".join([*files.svg_background(h, w, np.ravel(background).tolist()), "</svg>"]) + "\n"
        written.append(files.write_text(os.path.join(folder, "shapes.svg"), svg))
    if not pictures:
        outlines = (plots.outlines(renderer, np.asarray(params, np.float32).reshape(-1)) if renderer is not None
                    else np.zeros((0, *pixels.shape[:2]), bool))
        scale = max(1, 256 // max(pixels.shape[:2]))
        written.append(plots.save_image(os.path.join(folder, "overlay.png"), plots.overlay(pixels, outlines),
                                        scale=scale))
    return written


def process_files(inputs, out, work, command, force=False, progress=True, worked_size=None, batches=None):
    """Run ``work`` on every image among ``inputs`` (files and/or folders); write one folder per image into ``out``.

    Per image ``out/<stem>/params.json``, ``overlay.png`` and ``shapes.svg``
    (:func:`write_image_outputs`; ``params.json`` adds ``image``, ``psnr_db``,
    ``seconds`` and the result's ``extra``); two images with the same stem get
    ``<stem>``, ``<stem>-2``... Then ``out/summary.csv``, one row per file with
    the columns :data:`SUMMARY_COLUMNS` (``size`` is the image's own ``WxH``,
    ``kinds`` back to front, ``status`` ``ok`` or ``skipped: <why>``), written
    after every batch, so an interrupted run keeps what it finished.

    Skipped, each with a warning ``shapegrad <command>: skipped <path>: <why>``
    on stderr and a summary row, the others still done: a file that does not
    read as an image (``unreadable (...)``), a file in an input folder that is
    not a PNG/JPEG (``not a PNG/JPEG file``), an image under :data:`MIN_SIDE` px
    a side at the size it is worked at (``WxH is smaller than 4 px a side``),
    an image whose ``out/<stem>`` exists unless ``force``
    (``out/<stem> exists (use --force to overwrite)``).

    Args:
        inputs: a path or a list of image files and/or folders (searched
            recursively for PNG/JPEG).
        out: the output folder.
        work: ``work(images) -> [ImageResult]``, one result per image, for
            a list of ``(H, W, C)`` float32 images (as :func:`files.read_image`
            reads them).
        command: the name in the warnings (``"fit"``, ``"encode"``).
        force: overwrite existing ``out/<stem>`` folders.
        progress: a progress bar over images on stderr.
        worked_size: ``(H, W) -> (h, w)``, the size an image is worked at
            (for the :data:`MIN_SIDE` rule); default its own.
        batches: ``batches(paths, sizes) -> iterable of lists of paths``, the
            images given to ``work`` together (``sizes``: ``{path: (H, W)}``);
            default: all in one batch.

    Returns:
        ``{"done": n, "skipped": [(path, why)], "rows": [...]}`` (the rows of
        ``summary.csv``). Raises ``ValueError`` before any work when no input
        is an image of at least :data:`MIN_SIDE` px a side.

    Example:
        >>> import tempfile
        >>> folder = tempfile.mkdtemp()
        >>> _ = plots.save_image(os.path.join(folder, "in", "a.png"), np.full((6, 8, 3), 0.5, "float32"))
        >>> _ = files.write_text(os.path.join(folder, "in", "notes.txt"), "not an image")
        >>> def nothing_found(images):  # a stand-in for a fit: no shape, the image's mean colour
        ...     return [ImageResult(None, None, "", 0, 20.0, 0.0, im) for im in images]
        >>> result = process_files(os.path.join(folder, "in"), os.path.join(folder, "out"), nothing_found,
        ...                        "fit", progress=False)  # warns on stderr: skipped .../notes.txt
        >>> result["done"], [row[1:] for row in result["rows"]]
        (1, [['8x6', '', 0, '20.00', '0.00', 'ok'], ['', '', '', '', '', 'skipped: not a PNG/JPEG file']])
    """
    scan = scan_images(inputs)  # ValueError for a missing input
    worked_size = worked_size or (lambda size: tuple(size))
    sizes = dict(zip(scan.paths, scan.sizes))
    tiny = [p for p in scan.paths if min(worked_size(sizes[p])) < MIN_SIDE]
    usable = [p for p in scan.paths if p not in set(tiny)]
    if not usable:
        what = (f"{len(scan.skipped)} unreadable, {len(tiny)} under {MIN_SIDE} px a side"
                if scan.skipped or tiny else "no image files")
        received = [inputs] if isinstance(inputs, (str, os.PathLike)) else list(inputs)
        raise ValueError(f"Expected PNG/JPEG images of at least {MIN_SIDE} px a side. Received: {received!r} ({what})")
    skipped, rows = [], {}

    def skip(path, why, size=""):
        skipped.append((path, why))
        rows[path] = [path, size, "", "", "", "", f"skipped: {why}"]
        print(f"shapegrad {command}: skipped {path}: {why}", file=sys.stderr)

    for path, why in scan.skipped:
        skip(path, f"unreadable ({why})")
    others = _other_files(inputs)
    for path in others:
        skip(path, "not a PNG/JPEG file")
    for path in tiny:
        (h, w), at = sizes[path], worked_size(sizes[path])
        note = f" (fitted at {at[1]}x{at[0]})" if tuple(at) != (h, w) else ""
        skip(path, f"{w}x{h} is smaller than {MIN_SIDE} px a side{note}", f"{w}x{h}")
    folders, todo, existing = output_folders(usable, out, force)
    for path in existing:
        skip(path, f"{os.path.join(out, folders[path])} exists (use --force to overwrite)")
    order = [*scan.paths, *(p for p, _ in scan.skipped), *others]

    def write_summary():
        table = [rows[p] for p in order if p in rows]
        files.write_csv(os.path.join(out, "summary.csv"), SUMMARY_COLUMNS, table)
        return table

    bar = keras.utils.Progbar(len(todo), unit_name="image") if progress and todo else None
    done, shown = 0, {}
    for batch in (batches(todo, sizes) if batches else [todo] if todo else []):
        images = {}
        for path in batch:
            try:
                images[path] = files.read_image(path)
            except ValueError as error:  # listed as readable, but does not decode
                skip(path, f"unreadable ({error})")
        results = work(list(images.values())) if images else []
        for (path, image), result in zip(images.items(), results):
            extra = dict(image=path, psnr_db=round(float(result.psnr), 3), seconds=round(float(result.seconds), 3),
                         **result.extra)
            written = write_image_outputs(os.path.join(out, folders[path]), result.pixels, result.renderer,
                                          result.params, full=result.full, pictures=result.pictures,
                                          background=result.background, drawn=result.drawn, **extra)
            svg = any(p.endswith("shapes.svg") for p in written)
            h, w = image.shape[:2]
            rows[path] = [path, f"{w}x{h}", result.kinds, int(result.count), f"{result.psnr:.2f}",
                          f"{result.seconds:.2f}", result.status]
            shown[path] = GalleryEntry(os.path.basename(path), f"{folders[path]}/input.png",
                                       f"{folders[path]}/shapes.svg" if svg else None, *result.pixels.shape[:2],
                                       {"shapes": int(result.count), "PSNR": f"{result.psnr:.2f} dB",
                                        "seconds": f"{result.seconds:.1f}"})
            done += 1
        write_summary()  # after every batch: a killed run's summary lists what it finished
        write_gallery(os.path.join(out, "index.html"), [shown[p] for p in order if p in shown],
                      title=f"shapegrad {command}: {out}")
        if bar:
            with contextlib.redirect_stdout(sys.stderr):  # Progbar prints to stdout; keep stdout for results
                bar.add(len(batch))
    return {"done": done, "skipped": skipped, "rows": write_summary()}


def _other_files(inputs):
    """Files inside the folders among ``inputs`` that a scan does not take (not hidden, other extensions)."""
    found = []
    for item in [inputs] if isinstance(inputs, (str, os.PathLike)) else inputs:
        if os.path.isdir(item):
            for root, dirs, names in os.walk(item):
                dirs[:] = sorted(d for d in dirs if not d.startswith("."))
                found += sorted(os.path.join(root, n) for n in names
                                if not n.startswith(".") and not n.lower().endswith(IMAGE_EXTENSIONS))
    return found
