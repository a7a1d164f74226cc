"""Fit primitives' parameters to images by gradient descent through a renderer.

Two uses:

- :func:`refine`: test-time refinement of an encoder's guess, a few Adam
  steps per image through the frozen renderer (image loss only, no labels);
- :func:`fit_images`: fit primitives to images from random starts, several
  restarts per image, keeping the best; e.g. to vectorise a drawing.

Both optimise *raw* (unconstrained) parameters through a
:class:`~shapegrad.models.ParameterHead`, so every iterate is a valid
normalised parameter vector, and both sharpen the edges over the run
(coarse to fine): the renderer's sharpness grows geometrically from
``start_sharpness`` times its own to its own over the first ``anneal``
fraction of the steps.

Example:
    >>> import numpy as np
    >>> from shapegrad import Cones
    >>> from shapegrad.learn.models import fields_for
    >>> truth = np.array([[0.5, 0.5, 0.0, 1.0, 0.2]], "float32")
    >>> image = keras.ops.convert_to_numpy(Cones(24)(truth))
    >>> guess = np.array([[0.45, 0.55, 0.2, 1.0, 0.25]], "float32")
    >>> fitted = refine(Cones(24), fields_for(Cones(24).spec), guess, image, steps=150)
    >>> bool(np.abs(fitted - truth).max() < 0.01)
    True
"""

import math

import keras
import numpy as np
from keras import layers

from shapegrad.fit import search
from shapegrad.io import files, plots
from shapegrad.io.batch import output_folders, write_image_outputs
from shapegrad.io.images import IMAGE_EXTENSIONS, Letterbox, border_color, scan_images
from shapegrad.learn.models import Annealed, ParameterHead  # noqa: F401  (Annealed: importable from here too)
from shapegrad.render.primitives import fields_for
from shapegrad.render.render import Render

__all__ = [
    "raw_from_params",
    "refine",
    "refine_best",
    "refine_scene",
    "residual_starts",
    "swap_starts",
    "fit_images",
    "fit_file",
    "fit_files",
    "MAX_SIDE",
    "fittable",
    "SUMMARY_COLUMNS",
]


def raw_from_params(fields, params, eps=1e-4):
    """Invert a :class:`ParameterHead`: normalised ``(B, P)`` parameters to raw values.

    Fractions go through the logit (clipped to ``[eps, 1 - eps]``), directions
    and identities are kept.
    """
    params = np.asarray(params, np.float64)
    raw, start = [], 0
    for _, size, activation in fields:
        x = params[:, start : start + size]
        if activation == "fraction":
            x = np.clip(x, eps, 1 - eps)
            x = np.log(x) - np.log1p(-x)
        raw.append(x)
        start += size
    return np.concatenate(raw, axis=1).astype("float32")


class _FreeParameters(layers.Layer):
    """Per-item raw parameters as a trainable ``(B, P)`` weight; the input is ignored."""

    def __init__(self, raw, fields, **kwargs):
        super().__init__(**kwargs)
        self._initial = np.asarray(raw, "float32")
        self.head = ParameterHead(fields)

    def build(self, input_shape):
        self.raw = self.add_weight(shape=self._initial.shape, initializer="zeros", name="raw")
        self.raw.assign(self._initial)
        self.built = True

    def call(self, dummy):
        return self.head(self.raw)


def _optimise(renderer, fields, raw, images, steps, learning_rate, start_sharpness, anneal, progress=False):
    """Adam on raw parameters for ``steps`` steps; returns (params, per-item MSE)."""
    batch = len(raw)
    free = _FreeParameters(raw, fields)
    annealed = Annealed(renderer, start=start_sharpness, ramp_steps=anneal * steps)
    dummy = keras.Input((1,))
    model = keras.Model(dummy, annealed(free(dummy)))
    schedule = keras.optimizers.schedules.CosineDecay(learning_rate, max(steps, 1), alpha=0.02)
    model.compile(optimizer=keras.optimizers.Adam(schedule), loss="mse")
    zeros = np.zeros((batch, 1), "float32")
    images = np.asarray(images, "float32")
    bar = keras.utils.Progbar(steps, unit_name="step", stateful_metrics=["loss", "sharpness"]) if progress else None
    for step in range(steps):
        loss = model.train_on_batch(zeros, images)
        if bar is not None:
            scale = float(keras.ops.convert_to_numpy(annealed.scale))
            bar.update(step + 1, values=[("loss", float(loss)), ("sharpness", scale)], finalize=step + 1 == steps)
    params = keras.ops.convert_to_numpy(free.head(free.raw))
    recon = keras.ops.convert_to_numpy(renderer(params))
    errors = ((recon - images) ** 2).reshape(batch, -1).mean(axis=1)
    return params.astype("float32"), errors


def refine(renderer, fields, params, images, steps=100, learning_rate=0.02, start_sharpness=0.5, anneal=0.3):
    """Improve ``(B, P)`` normalised parameters so that ``renderer(params)`` matches ``images``.

    Args:
        renderer: ``Cones`` or ``Render`` (a layer mapping ``(B, P)`` to
            ``(B, H, W, C)`` with ``call(x, sharpness=)`` and ``default_sharpness``).
        fields: the parameter fields, as for :class:`ParameterHead`.
        params: ``(B, P)`` starting guess (e.g. an encoder's output).
        images: ``(B, H, W, C)`` targets.
        steps: Adam steps (one per item per step; items are independent).
        learning_rate: peak Adam learning rate on the raw parameters, cosine-decayed.
        start_sharpness: initial fraction of the renderer's sharpness.
        anneal: fraction of the steps over which the sharpness reaches 1.

    Returns:
        ``(B, P)`` refined parameters.
    """
    if steps <= 0:
        return np.asarray(params, "float32")
    raw = raw_from_params(fields, params)
    return _optimise(renderer, fields, raw, images, steps, learning_rate, start_sharpness, anneal)[0]


def swap_starts(spec, params, limit=24, seed=0):
    """Starts for :func:`refine` that let shapes trade places: ``(B, R, P)``, the guess first.

    An encoder can put a shape of one kind where the image has another (a
    rounded box over a disk, a disk over the box); gradient descent cannot
    undo that, since it would have to move one shape through another. Here
    every start keeps the kinds in their slots and assigns the *places* of
    the K shapes of ``params`` to the slots in another order: each shape is
    translated so that the mean of its position fields (centre, apex,
    vertices...) lands on that of the shape whose place it takes, and takes
    that shape's colour and opacity. Start 0 is the guess itself; then every
    other permutation of the K places (all of them when ``K! <= limit``, else
    ``limit - 1`` random ones).

    Args:
        spec: the renderer's :class:`~shapegrad.primitives.RenderSpec`.
        params: ``(B, P)`` normalised parameters.
        limit: the most starts per image.
        seed: seed of the random permutations when ``K!`` exceeds ``limit``.
    """
    import itertools

    params = np.asarray(params, np.float32)
    k = spec.num_shapes
    if math.factorial(k) <= limit:
        orders = list(itertools.permutations(range(k)))
    else:
        rng = np.random.default_rng(seed)
        orders = [tuple(range(k))] + [tuple(rng.permutation(k)) for _ in range(limit - 1)]
    anchors = _anchors(spec, params)
    starts = []
    for order in orders:
        start = params.copy()
        for i, j in enumerate(order):
            if i == j:
                continue
            moved = _moved(spec, params, i, anchors[:, j])
            for s in spec.fields_of(i):
                if s.field.kind == "position":
                    start[:, s.slice] = moved[:, s.slice]
                elif s.field.kind in ("color", "opacity"):
                    start[:, s.slice] = params[:, spec.get(j, s.field.name).slice]
        starts.append(start)
    return np.stack(starts, axis=1)


def _anchors(spec, params):
    """``(B, K, 2)``: the mean of every shape's position fields (centre, apex, vertices...)."""
    return np.stack(
        [
            np.concatenate(
                [params[:, s.slice].reshape(len(params), -1, 2) for s in spec.fields_of(k) if s.field.kind == "position"],
                axis=1,
            ).mean(axis=1)
            for k in range(spec.num_shapes)
        ],
        axis=1,
    )


def _moved(spec, params, shape, to):
    """``params`` with shape ``shape``'s position fields translated so that its anchor is at ``to`` ``(B, 2)``."""
    out = params.copy()
    shift = to - _anchors(spec, params)[:, shape]
    for s in spec.fields_of(shape):
        if s.field.kind == "position":
            points = params[:, s.slice].reshape(len(params), -1, 2) + shift[:, None]
            out[:, s.slice] = np.clip(points.reshape(len(params), -1), 0.0, 1.0)
    return out


def residual_starts(renderer, params, images, width=5):
    """Starts that move one shape onto what the others miss: ``(B, K + 1, P)``, ``params`` first.

    Where ``params`` leaves the largest error (the peak of the absolute
    residual summed over channels and averaged over ``width`` x ``width``
    pixels), start ``k + 1`` puts shape ``k`` (translated, as in
    :func:`swap_starts`) with the image's colour there. It helps when two
    shapes sit on one object and none on another, which swapping places cannot
    fix.
    """
    from scipy.ndimage import uniform_filter

    spec = renderer.spec
    params = np.asarray(params, np.float32)
    images = np.asarray(images, np.float32)
    error = np.abs(keras.ops.convert_to_numpy(renderer(params)) - images).sum(axis=-1)
    error = uniform_filter(error, size=(1, width, width), mode="constant")
    peak = np.stack(np.unravel_index(error.reshape(len(error), -1).argmax(axis=1), error.shape[1:]), axis=1)
    color = images[np.arange(len(images)), peak[:, 0], peak[:, 1]]
    to = peak / np.float64([spec.height, spec.width])
    starts = [params]
    for k in range(spec.num_shapes):
        start = _moved(spec, params, k, to)
        start[:, spec.get(k, "color").slice] = color
        start[:, spec.get(k, "opacity").slice] = 1.0
        starts.append(start)
    return np.stack(starts, axis=1)


def refine_best(renderer, fields, starts, images, steps=100, **kwargs):
    """:func:`refine` every start of ``(B, R, P)`` ``starts``; keep the best per image (least MSE).

    Returns ``(params, loss)``: ``(B, P)`` and ``(B,)``. Keyword arguments go to :func:`refine`.
    """
    starts = np.asarray(starts, np.float32)
    batch, count = starts.shape[:2]
    tiled = np.repeat(np.asarray(images, "float32"), count, axis=0)
    params = refine(renderer, fields, starts.reshape(batch * count, -1), tiled, steps, **kwargs)
    recon = keras.ops.convert_to_numpy(renderer(params))
    errors = ((recon - tiled) ** 2).reshape(batch, count, -1).mean(axis=-1)
    best = errors.argmin(axis=1)
    return params.reshape(batch, count, -1)[np.arange(batch), best], errors[np.arange(batch), best]


def refine_scene(renderer, fields, params, images, steps=200, rounds=2):
    """Refine an encoder's guess of a :class:`~shapegrad.render.Render` scene with restarts that move shapes.

    Three kinds of local minimum defeat plain :func:`refine` on scenes of
    several kinds: shapes in each other's places, two shapes on one object
    and none on another, and a shape stuck behind another. So: refine every
    :func:`swap_starts` permutation of the guess from soft edges (10x,
    sharpened over half the steps) and keep the best image match; then
    ``rounds`` times, refine the :func:`residual_starts` of the best (one
    shape moved onto the largest error) and keep the best again. Every step
    uses the image only. Costs ``(K! + rounds * (K + 1)) * steps`` renderings
    per image (3 shapes, 2 rounds: 14 x 200).

    Returns ``(B, P)`` refined parameters.
    """
    best = refine_best(
        renderer, fields, swap_starts(renderer.spec, params), images, steps, start_sharpness=0.1, anneal=0.5
    )[0]
    for _ in range(rounds):
        starts = residual_starts(renderer, best, images)
        best = refine_best(renderer, fields, starts, images, steps, start_sharpness=0.3, anneal=0.5)[0]
    return best


def fit_images(
    renderer,
    fields,
    images,
    sample,
    restarts=8,
    steps=300,
    learning_rate=0.05,
    start_sharpness=0.05,
    anneal=0.6,
    seed=0,
    progress=False,
):
    """Fit parameters to each image from ``restarts`` random starts; keep the best per image.

    Args:
        renderer, fields: as in :func:`refine`.
        images: ``(B, H, W, C)`` targets.
        sample: ``sample(rng, count) -> (count, P)`` normalised random starts.
        restarts: random starts per image (run together as one batch).
        steps, learning_rate, start_sharpness, anneal: as in :func:`refine`;
            the default starts from very soft edges, so that far-off shapes
            still feel the target.
        seed: seed of the random starts.
        progress: show a Keras progress bar.

    Returns:
        ``(params, loss)``: the best ``(B, P)`` parameters and their ``(B,)``
        mean squared image error.
    """
    images = np.asarray(images, "float32")
    batch = len(images)
    rng = np.random.default_rng(seed)
    starts = sample(rng, batch * restarts)
    raw = raw_from_params(fields, starts)
    tiled = np.repeat(images, restarts, axis=0)
    params, errors = _optimise(renderer, fields, raw, tiled, steps, learning_rate, start_sharpness, anneal, progress)
    errors = errors.reshape(batch, restarts)
    best = errors.argmin(axis=1)
    chosen = params.reshape(batch, restarts, -1)[np.arange(batch), best]
    return chosen, errors[np.arange(batch), best]


def fit_file(image_path, shapes, out, restarts=32, steps=400, softness=1.0, seed=0, force=False, progress=True):
    """Fit ``shapes`` to the square image at ``image_path``; write ``params.json``, ``overlay.png``, ``shapes.svg``.

    The background colour is the median of the image's border. Returns
    ``(renderer, params, loss)``. Raises ``ValueError`` for a bad image or
    ``shapes``, ``FileExistsError`` where outputs exist and not ``force``.
    """
    import os

    image = files.read_image(image_path)
    if image.shape[0] != image.shape[1]:
        raise ValueError(f"Expected a square image. Received: size={image.shape[1]}x{image.shape[0]} ({image_path})")
    names = ("params.json", "overlay.png", "shapes.svg")
    existing = [n for n in names if os.path.exists(os.path.join(out, n))]
    if existing and not force:
        raise FileExistsError(f"{os.path.join(out, existing[0])} exists. Pass force=True to overwrite.")
    renderer = Render(shapes, image.shape[0], channels=image.shape[-1], softness=softness,
                      background=border_color(image).tolist())
    fields = fields_for(renderer.spec)

    def sample(rng, count):
        return renderer.spec.sample(count, seed=int(rng.integers(2**31)))

    params, loss = fit_images(renderer, fields, image[None], sample, restarts=restarts, steps=steps,
                              seed=seed, progress=progress)
    os.makedirs(out, exist_ok=True)
    files.save_params(os.path.join(out, "params.json"), renderer, params, mse=float(loss[0]), image=image_path)
    plots.save_image(os.path.join(out, "overlay.png"), plots.overlay(image, plots.outlines(renderer, params[0])), scale=4)
    files.write_text(os.path.join(out, "shapes.svg"), files.to_svg(renderer, params[0]))
    return renderer, params, loss


MAX_SIDE = 512  # fit_files fits a larger image on a copy shrunk to this many pixels on its longer side
SUMMARY_COLUMNS = ("file", "size", "kinds", "count", "psnr_db", "seconds", "status")


def fitted_size(size, max_side=MAX_SIDE):
    """The size ``(h, w)`` at which ``fit_files`` fits an image of ``size`` ``(H, W)``: its own, or shrunk
    (proportions kept, :class:`shapegrad.io.images.Letterbox` with ``pad=False``) to ``max_side`` on its longer side."""

    if max(size) <= max_side:
        return tuple(size)
    return Letterbox(*size, max_side, pad=False).inner


def fittable(size, max_side=MAX_SIDE):
    """Whether ``fit_files`` fits an image of ``size`` ``(H, W)``: at least 4 px a side at its fitted size."""
    return min(fitted_size(size, max_side)) >= 4


def fit_files(inputs, out, kinds=None, max_shapes=None, shapes=None, force=False, progress=True, max_side=MAX_SIDE,
              **options):
    """Fit a scene of primitives to every image among ``inputs`` (files and/or folders); write into ``out``.

    Each image is fitted by :func:`shapegrad.scenefit.fit_scene` (kinds and
    count unknown: up to ``max_shapes`` shapes of ``kinds``; or exactly
    ``shapes`` such as ``"disk*2,box"``), at its own size and channels (grey
    stays grey, colour stays colour; alpha is dropped, 16-bit images are read
    with every bit). Images of one size are fitted together, up to 16 per
    call (one compilation per size and much less time per image); each
    batch's files and the summary are written before the next batch starts,
    so an interrupted run keeps what it finished. ``seconds`` is an image's
    share of its batch's time.

    Per image ``out/<stem>/params.json`` (readable by ``shapegrad render``; it
    records ``height``/``width`` and adds ``image``, ``psnr_db``, ``seconds``,
    ``noise``), ``overlay.png`` (each fitted shape's outline on the image) and
    ``shapes.svg`` (:func:`shapegrad.io.batch.write_image_outputs`); two images
    with the same stem get ``<stem>``, ``<stem>-2``... Then ``out/summary.csv``,
    one row per file with the columns :data:`SUMMARY_COLUMNS` (``kinds`` back
    to front; ``status`` is ``ok`` or ``skipped: <why>``).

    An image larger than ``max_side`` px a side is fitted on a copy shrunk
    to ``max_side`` on its longer side (:func:`fitted_size`); its
    ``params.json`` and ``shapes.svg`` are at the image's own size (the
    parameters are normalised, so they carry over; edges keep the fitted
    sharpness in pixels), its ``overlay.png`` and ``psnr_db`` at the fitted
    size, recorded as ``fitted_size``.

    Nothing is lost to bad input: a file that is not a readable image, an
    image under 4 px a side (at its fitted size) and an image whose
    ``out/<stem>`` exists (unless ``force``) are skipped with a warning on
    stderr and a row in the summary; the others are still fitted. A
    progress bar over images goes to stderr when ``progress``.

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
        ``{"fitted": n, "skipped": [(path, why)], "rows": [...]}`` (the rows of
        ``summary.csv``). Raises ``ValueError`` before any work when no input
        is an image that can be fitted, or for bad ``kinds``/``shapes``/
        ``max_shapes``/options.

    Example (skipped by the doctest run: a whole search, ~20 s with compilation):
        >>> import os, tempfile, numpy as np
        >>> from skimage.draw import disk
        >>> from shapegrad.io import files, plots
        >>> folder = tempfile.mkdtemp()
        >>> image = np.full((24, 40, 3), 0.1, "float32")
        >>> rr, cc = disk((12, 14), 7, shape=(24, 40)); image[rr, cc] = (0.9, 0.3, 0.2)
        >>> _ = plots.save_image(os.path.join(folder, "in", "a.png"), image)
        >>> _ = open(os.path.join(folder, "in", "notes.txt"), "w").write("not an image")
        >>> result = fit_files(os.path.join(folder, "in"), os.path.join(folder, "out"), kinds="disk,box",  # doctest: +SKIP
        ...                    max_shapes=2, progress=False)
        >>> result["fitted"], result["rows"][0][1:4]  # doctest: +SKIP
        (1, ['40x24', 'disk', 1])
        >>> renderer, params = files.load_params(os.path.join(folder, "out", "a", "params.json"))  # doctest: +SKIP
        >>> (renderer.height, renderer.width)  # doctest: +SKIP
        (24, 40)
    """
    import contextlib
    import os
    import sys

    check_fit_options(kinds, max_shapes, shapes, options)
    scan = scan_images(inputs)  # ValueError for a missing input
    if isinstance(max_side, bool) or not isinstance(max_side, int) or max_side < 4:
        raise ValueError(f"Expected max_side to be an integer >= 4. Received: max_side={max_side!r}")
    sizes = {p: fitted_size(s, max_side) for p, s in zip(scan.paths, scan.sizes)}  # the size each is fitted at
    tiny = [(p, s) for p, s in zip(scan.paths, scan.sizes) if min(sizes[p]) < 4]
    usable = [p for p in scan.paths if min(sizes[p]) >= 4]
    if not usable:
        what = (f"{len(scan.skipped)} unreadable, {len(tiny)} under 4 px a side"
                if scan.skipped or tiny else "no image files")
        raise ValueError(f"Expected PNG/JPEG images of at least 4 px a side. Received: {list(inputs) if not isinstance(inputs, str) else [inputs]!r} ({what})")
    skipped, rows = [], {}

    def skip(path, why, size=""):
        skipped.append((path, why))
        rows[path] = [path, size, "", "", "", "", f"skipped: {why}"]
        print(f"shapegrad fit: skipped {path}: {why}", file=sys.stderr)

    for path, why in scan.skipped:
        skip(path, f"unreadable ({why})")
    others = _other_files(inputs, IMAGE_EXTENSIONS)
    for path in others:
        skip(path, "not a PNG/JPEG file")
    for path, (h, w) in tiny:
        at = sizes[path]
        skip(path, f"{w}x{h} is smaller than 4 px a side" + (f" (fitted at {at[1]}x{at[0]})" if at != (h, w) else ""),
             f"{w}x{h}")
    folders, todo, existing = output_folders(usable, out, force)
    for path in existing:
        skip(path, f"{os.path.join(out, folders[path])} exists (use --force to overwrite)")
    order = [*scan.paths, *(p for p, _ in scan.skipped), *others]

    def write_summary():
        table = [rows[p] for p in order if p in rows]
        files.write_csv(os.path.join(out, "summary.csv"), SUMMARY_COLUMNS, table)
        return table

    bar = keras.utils.Progbar(len(todo), unit_name="image") if progress and todo else None
    done = 0
    for chunk in _chunks(todo, sizes):
        images = {}
        for path in chunk:
            try:
                images[path] = files.read_image(path)
            except ValueError as error:  # listed as readable, but does not decode
                skip(path, f"unreadable ({error})")
        shrunk = {p: Letterbox(*im.shape[:2], max_side, pad=False) for p, im in images.items()
                  if max(im.shape[:2]) > max_side}
        fitted = {p: shrunk[p].apply(im) if p in shrunk else im for p, im in images.items()}
        found = search.fit_scene(list(fitted.values()), kinds=kinds, max_shapes=max_shapes, shapes=shapes,
                          **options) if fitted else []
        for (path, image), one in zip(fitted.items(), found):
            extra = dict(image=path, psnr_db=round(float(one.psnr), 3), seconds=round(one.seconds, 3),
                         noise=round(float(one.noise), 6))
            full = None
            if path in shrunk:
                full = _at_size(one, shrunk[path])
                extra["fitted_size"] = [one.height, one.width]
            write_image_outputs(os.path.join(out, folders[path]), image, one.renderer(), one.params,
                                      full=full, **extra)
            h, w = images[path].shape[:2]
            rows[path] = [path, f"{w}x{h}", one.shapes, one.count, f"{one.psnr:.2f}", f"{one.seconds:.2f}", "ok"]
            done += 1
        write_summary()  # after every batch: a killed run's summary lists what it finished
        if bar:
            with contextlib.redirect_stdout(sys.stderr):  # Progbar prints to stdout; keep stdout for results
                bar.add(len(chunk))
    return {"fitted": done, "skipped": skipped, "rows": write_summary()}


def _at_size(found, box):
    """``(Render, (1, P) params)`` of the fit ``found`` (made at ``box.inner``) at the image's own size."""
    import dataclasses

    full = dataclasses.replace(found, height=box.height, width=box.width)
    renderer = full.renderer()
    if renderer is None:
        return None
    params = box.to_image(found.renderer().spec, found.params[None], renderer.spec)
    return renderer, params


def _chunks(paths, sizes):
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


def _other_files(inputs, extensions):
    """Files inside the folders among ``inputs`` that a scan does not take (not hidden, other extensions)."""
    import os

    found = []
    for item in [inputs] if isinstance(inputs, (str, os.PathLike)) else inputs:
        if os.path.isdir(item):
            for root, dirs, names in os.walk(item):
                dirs[:] = sorted(d for d in dirs if not d.startswith("."))
                found += sorted(os.path.join(root, n) for n in names
                                if not n.startswith(".") and not n.lower().endswith(extensions))
    return found


def check_fit_options(kinds, max_shapes, shapes, options=None):
    """Raise ``ValueError`` (Keras style) for bad ``kinds``, ``max_shapes``, ``shapes`` or search options."""

    unknown = set(options or {}) - set(search.SEARCH_DEFAULTS)
    if unknown:
        raise ValueError(f"Expected options among {sorted(search.SEARCH_DEFAULTS)}. Received: {sorted(unknown)}")
    search.search_spec(kinds, max_shapes, shapes)
