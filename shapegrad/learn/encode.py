"""Use a trained encoder on the user's images: parameters, SVG, overlays, mapped back to each image's size.

An encoder trained by :func:`shapegrad.train.train_images` (``shapegrad train
--images``) carries what it encodes in an :class:`EncoderInfo` layer inside
the saved model: the renderer (shapes, resolution ``N``, channels, softness,
background, compositing) and the rule that brought images to ``N x N``
(``"letterbox"``, :class:`shapegrad.data.Letterbox`). So
``keras.saving.load_model`` after ``import shapegrad`` restores it, and
:class:`Encoder` needs no shape flags.

Encoding one image: bring it to the run's channels (grey repeated, colour to
luma), letterbox it to ``N x N``, run the encoder (batched), keep the shapes
whose opacity is >= :data:`KEEP_OPACITY` (an encoder trained on a superset
``disk*M,box*M,...`` switches unneeded shapes off; if none is kept, the most
opaque one is), map them back to the image's own ``H x W`` (undoing the
letterbox) and continue the scene search of :func:`shapegrad.fit_scene`
from them (``starts=``; the default, ``search=True``): the encoder's shapes
are refined together, shapes it missed are added where the residual asks
for them (up to the run's maximum count, of the run's kinds), depth order
and kinds are revised and shapes that do not earn their place dropped, by
the rules of ``fit_scene``. ``search=False``: only refine the kept shapes,
opaque, and the background colour by ``refine_steps`` Adam steps on the
image loss through the compiled scene engine
(:class:`shapegrad.fit.engine.SceneEngine`: one compiled loop per encoder,
every image of a batch at once) in the ``N x N`` frame, then map them back.
``refine_steps=0``: the encoder's guess as it is. The PSNR is measured at
the image's size.

Example (a tiny run; skipped by the doctest run, it trains for ~20 s):
    >>> import shapegrad, numpy as np  # doctest: +SKIP
    >>> from shapegrad.learn import train  # doctest: +SKIP
    >>> _ = train.train_images("run", "my_images/", kinds="disk,box", max_shapes=2,  # doctest: +SKIP
    ...                        resolution=24, steps=20, steps_per_epoch=10, width=4, verbose=0)
    >>> encoder = shapegrad.Encoder.load("run/encoder.keras")  # doctest: +SKIP
    >>> found = encoder.encode([np.zeros((30, 50, 3), "float32")])  # doctest: +SKIP
    >>> found[0].params.shape[0], (found[0].height, found[0].width)  # doctest: +SKIP
    (1, (30, 50))
"""

import os
import time

import keras
import numpy as np

from shapegrad import _keras_internals
from shapegrad.fit import engine
from shapegrad.fit import search as scene_search
from shapegrad.io import plots
from shapegrad.io.batch import ImageResult, process_files
from shapegrad.learn import data, metrics
from shapegrad.learn.models import fields_for
from shapegrad.render.primitives import format_shapes
from shapegrad.render.render import Render
from shapegrad.render.slots import SlotRender

__all__ = ["KEEP_OPACITY", "KEEP_PRESENCE", "EncoderInfo", "encoder_info", "with_info", "Encoded", "Encoder", "encode_files"]

KEEP_OPACITY = 0.5  # a shape whose opacity is below this is switched off
KEEP_PRESENCE = 0.1  # the same for a slot encoder's presences (measured: 0.5 kept too few, see README)
REFINE_SHARPNESS = (0.25, 1.0)  # edge sharpness (px^-1) at the start and end of the refinement
_FORMAT = "shapegrad-encoder"
_VERSION = 2  # 2: a "decoder" entry ("slots" encoders say version 2, so older code refuses them)
_OUTPUTS = ("params.json", "overlay.png", "shapes.svg")


@keras.saving.register_keras_serializable(package="shapegrad")
class EncoderInfo(keras.layers.Layer):
    """An identity layer whose config is what an encoder encodes (see :func:`encoder_info`).

    It sits right after the encoder's input, so it is saved and restored with
    the model and costs nothing.
    """

    def __init__(self, info, **kwargs):
        super().__init__(**kwargs)
        if not isinstance(info, dict) or info.get("format") != _FORMAT:
            raise ValueError(f"Expected info to be a dict made by encoder_info(). Received: info={info!r}")
        self.info = dict(info)

    def call(self, inputs):
        return inputs

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        config = super().get_config()
        config.update(info=self.info)
        return config


def encoder_info(renderer, kinds=None, max_shapes=None, decoder="superset"):
    """The dict an encoder of ``renderer``'s parameters carries: renderer config and the resizing rule.

    ``decoder``: ``"superset"`` (``renderer`` is a :class:`~shapegrad.Render`,
    ``shapes`` its spec) or ``"slots"`` (a :class:`shapegrad.slots.SlotRender`
    of ``max_shapes`` slots of ``kinds``; ``shapes`` is then the superset
    ``kind*max_shapes,...`` that can hold what it draws).
    """

    if decoder == "slots":
        shapes = ",".join(f"{k}*{renderer.slots}" for k in renderer.kinds)
    else:
        shapes = format_shapes(renderer.shapes)
    return {
        "format": _FORMAT,
        "version": 2 if decoder == "slots" else 1,
        "decoder": decoder,
        "shapes": shapes,
        "resolution": int(renderer.resolution),
        "channels": int(renderer.channels),
        "softness": float(renderer.softness),
        "composite": getattr(renderer, "composite", "over"),
        "background": np.broadcast_to(np.float64(renderer.background), (renderer.channels,)).tolist(),
        "resize": data.Letterbox.rule,
        "kinds": kinds if kinds is None or isinstance(kinds, str) else ",".join(kinds),
        "max_shapes": max_shapes,
    }


def with_info(encoder, info):
    """``encoder`` (a Keras model, images -> params) behind an :class:`EncoderInfo` layer, as one model."""
    inputs = keras.Input(encoder.input_shape[1:], name="images")
    tagged = EncoderInfo(info, name="shapegrad_info")(inputs)
    return keras.Model(inputs, encoder(tagged), name="encoder")


def load_model_file(path):
    """``keras.saving.load_model(path)``; any failure becomes ``ValueError`` carrying the first line of Keras' message.

    Keras raises many kinds of error for a foreign or broken file; callers word their own message around it.
    """
    try:
        return keras.saving.load_model(path)
    except Exception as error:  # noqa: BLE001 - Keras raises many kinds for a foreign or broken file
        first = (str(error).strip().splitlines() or [type(error).__name__])[0]
        raise ValueError(first[:200]) from None


def find_info(model):
    """The metadata dict of the ``EncoderInfo`` layer inside ``model``, or None."""
    for layer in _keras_internals.inner_layers(model):
        if isinstance(layer, EncoderInfo):
            return layer.info
    return None


class Encoded:
    """One encoded image.

    Attributes:
        renderer: a :class:`shapegrad.Render` of the kept shapes at the
            image's own ``(H, W)`` (the run's channels, softness, background).
        params: ``(1, P)`` normalised parameters of ``renderer``.
        kept: how many shapes were kept (0 if none passed the opacity rule
            and the most opaque one was kept anyway).
        height, width: the image's size.
        psnr: of ``renderer(params)`` against the image (in the run's channels), dB.
        seconds: this image's share of its batch's time.
    """

    def __init__(self, renderer, params, kept, height, width, psnr, seconds):
        self.renderer, self.params, self.kept = renderer, params, kept
        self.height, self.width, self.psnr, self.seconds = height, width, psnr, seconds

    def render(self):
        """``(H, W, C)`` float32: the reconstruction at the image's size."""
        return keras.ops.convert_to_numpy(self.renderer(self.params))[0]


class Encoder:
    """A trained encoder and what it encodes; :meth:`load` it, then :meth:`encode` images.

    Example: see the module docstring.
    """

    def __init__(self, model, info):
        self.model, self.info = model, dict(info)
        self.resolution = int(info["resolution"])
        self.channels = int(info["channels"])
        self.renderer = self._render(info["shapes"], self.resolution)
        self.fields = fields_for(self.renderer.spec)
        self._Render = Render
        self._engines = {}
        self.slots = None
        if info.get("decoder") == "slots":
            self.slots = SlotRender(info["kinds"], info["max_shapes"], self.resolution, channels=self.channels,
                                    softness=info["softness"], background=info["background"])

    def _render(self, shapes, resolution):
        info = self.info
        return Render(shapes, resolution, channels=self.channels, softness=info["softness"],
                      composite=info.get("composite", "over"), background=info["background"])

    @classmethod
    def load(cls, path):
        """Load ``encoder.keras``; ``ValueError`` (one line) if it is not a shapegrad image encoder."""
        if not os.path.isfile(path):
            raise ValueError(f"no such encoder file: {path}")
        try:
            model = load_model_file(path)
        except ValueError as error:
            raise ValueError(f"{path} is not a Keras model file shapegrad can load ({error})") from None
        info = find_info(model) if isinstance(model, keras.Model) else None
        if info is None:
            raise ValueError(
                f"{path} carries no shapegrad encoder metadata (train it with `shapegrad train --images`; "
                "encoders trained on synthetic scenes before this do not say what they encode)"
            )
        if info.get("version", 0) > _VERSION or info.get("resize") != data.Letterbox.rule:
            raise ValueError(f"{path}: unknown encoder metadata version {info.get('version')!r} / resize {info.get('resize')!r}")
        return cls(model, info)

    def prepare(self, image):
        """``(H, W, C)`` image -> ``(letterboxed (N, N, channels), image in the run's channels, Letterbox)``."""
        image = data.to_channels(np.asarray(image, np.float32), self.channels)
        box = data.Letterbox(image.shape[0], image.shape[1], self.resolution)
        return box.apply(image), image, box

    def encode(self, images, refine_steps=100, batch_size=32, sharpness=REFINE_SHARPNESS, learning_rate=0.05,
               keep_opacity=None, refine_resolution=None, search=True):
        """Encode ``images`` (a sequence of ``(H, W, C)`` arrays in ``[0, 1]``, any sizes); a list of :class:`Encoded`.

        The encoder's guess (shapes with opacity >= ``keep_opacity``, back to
        front as the run's renderer draws them, opaque) is refined by
        ``refine_steps`` Adam steps of the compiled scene engine
        (:class:`shapegrad.fit.engine.SceneEngine`, shared by every batch of
        this encoder) in an ``R x R`` letterbox frame (``refine_resolution``,
        default ``N``; normalised parameters do not depend on the frame's
        size, so an encoder trained small can be refined on more pixels),
        edges sharpened from
        ``sharpness[0]`` to ``sharpness[1]`` px^-1 (the result is drawn with
        ``softness = 1 / sharpness[1]``); the background colour is refined too.
        ``refine_steps=0``: the encoder's guess as it is (opacities and the
        run's background and softness kept). ``keep_opacity``: default
        :data:`KEEP_OPACITY` (superset encoders) or :data:`KEEP_PRESENCE` (slot encoders).

        ``search=True`` (the default): instead of refining the guess, continue the scene
        search of :func:`shapegrad.fit_scene` from it (``starts=``), on each
        image at its own size, with the run's kinds and at most its number of
        shapes: shapes the encoder missed are added where the residual asks
        for them, depth order and kinds are revised, shapes that do not earn
        their place are dropped (``sharpness``, ``learning_rate`` and
        ``refine_resolution`` then do not apply, nor the number of
        ``refine_steps``: the search's own schedule does; ``refine_steps=0``
        still means the encoder's guess as it is). ``kept`` is then the
        count found. ``search`` may also be a dict of :func:`~shapegrad.fit_scene`
        options (``{"polish_steps": 50}``): a search with those settings.
        ``search=False``: the refinement above.
        """

        if not (isinstance(search, bool) or isinstance(search, dict)):
            raise ValueError(f"Expected search to be True, False or a dict of fit_scene options. Received: search={search!r}")
        if keep_opacity is None:
            keep_opacity = KEEP_PRESENCE if self.slots is not None else KEEP_OPACITY
        size = self.resolution if refine_resolution is None else int(refine_resolution)
        out = []
        for start in range(0, len(images), batch_size):
            t0 = time.perf_counter()
            prepared = [self.prepare(im) for im in images[start : start + batch_size]]
            boxed = np.stack([p[0] for p in prepared])
            guess = self.model.predict(boxed, verbose=0, batch_size=batch_size)
            search_now = search is not False and refine_steps > 0
            if search_now:
                chunk = self._search(guess, prepared, keep_opacity, {} if search is True else search)
            elif refine_steps > 0:
                if size != self.resolution:
                    boxes = [data.Letterbox(im.shape[0], im.shape[1], size) for _, im, _ in prepared]
                    prepared = [(b.apply(im), im, b) for (_, im, _), b in zip(prepared, boxes)]
                frames = np.stack([p[0] for p in prepared])
                scenes = self.refine(guess, frames, refine_steps, batch_size, sharpness, learning_rate, keep_opacity)
            else:
                scenes = [self._scene(row, keep_opacity) for row in guess]
            if not search_now:
                chunk = []
                for scene, (_, image, box) in zip(scenes, prepared):
                    renderer, mapped = self._to_image(scene, box)
                    recon = keras.ops.convert_to_numpy(renderer(mapped))
                    psnr = float(metrics.psnr(recon, image[None])[0])
                    chunk.append(Encoded(renderer, mapped, scene.kept, box.height, box.width, psnr, 0.0))
            share = (time.perf_counter() - t0) / len(chunk)
            for e in chunk:
                e.seconds = share
            out += chunk
        return out

    def search_space(self):
        """``(kinds, max_shapes)`` of what this encoder reads: the scene search's (``encode(search=True)``)."""
        spec = self.renderer.spec
        if self.slots is not None:
            return tuple(self.slots.kinds), int(self.slots.slots)
        return tuple(dict.fromkeys(kind for kind, _ in spec.shapes)), int(spec.num_shapes)

    def _search(self, guess, prepared, keep_opacity, options):
        """``fit_scene`` on each image at its own size, started from the encoder's kept shapes; ``[Encoded]``."""

        kinds, most = self.search_space()
        starts = []
        for row, (_, _, box) in zip(guess, prepared):
            found = self._scene(row, keep_opacity)
            renderer, mapped = self._to_image(found, box)
            sizes = [size for _, count, _, size in renderer.spec.groups for _ in range(count)]
            cuts = np.cumsum([0] + sizes)
            starts.append([(kind, mapped[0, a:b]) for (kind, _), a, b in zip(found.shapes, cuts[:-1], cuts[1:])])
        images = [image for _, image, _ in prepared]
        options = dict(dict(composite=self.info.get("composite", "over")), **options)
        fits = scene_search.fit_scene(images, kinds=kinds, max_shapes=most, starts=starts, **options)
        out = []
        for fit, image in zip(fits, images):
            renderer, params = fit.renderer(self.info.get("composite", "over")), fit.params[None]
            if renderer is None:  # nothing stands out: the background alone, as one transparent shape
                renderer = self._Render(kinds[0], (fit.height, fit.width), channels=self.channels,
                                        background=np.asarray(fit.background, np.float64).round(5).tolist())
                params = np.full((1, renderer.spec.size), 0.5, np.float32)
                params[0, -1] = 0.0
            recon = keras.ops.convert_to_numpy(renderer(params))
            psnr = float(metrics.psnr(recon, image[None])[0])
            out.append(Encoded(renderer, params, fit.count, fit.height, fit.width, psnr, 0.0))
        return out

    def _engine(self, batch, size):
        """The compiled scene engine for ``batch`` items of ``size x size`` frames (built once per size)."""

        ready = [b for b, r in self._engines if b >= batch and r == size]
        if ready:  # a smaller batch is padded: no second compilation (a chunk's end)
            return self._engines[min(ready), size]
        spec = self.renderer.spec  # a slot encoder's is the superset that holds what it draws
        kinds = tuple(dict.fromkeys(kind for kind, _ in spec.shapes))
        most = max(sum(c for k, c in spec.shapes if k == kind) for kind in kinds)
        depth = self.slots.slots if self.slots is not None else spec.num_shapes
        batch = 1 << (batch - 1).bit_length()  # few compiled sizes
        self._engines[batch, size] = engine.SceneEngine(kinds, size, size, self.channels,
                                                        max_depth=depth, batch=batch, instances=batch * min(most, depth),
                                                        composite=self.info.get("composite", "over"))
        return self._engines[batch, size]

    def refine(self, guess, boxed, steps, batch_size=32, sharpness=REFINE_SHARPNESS, learning_rate=0.05,
               keep_opacity=KEEP_OPACITY):
        """Refine the encoder's ``(B, P)`` guess against the ``(B, R, R, C)`` frames; a list of scenes."""

        compiled = self._engine(min(batch_size, len(guess)), boxed.shape[1])
        starts = [self._scene(row, keep_opacity) for row in guess]
        scenes = [engine.Scene([(k, p.copy()) for k, p in s.shapes], data.border_color(im)) for s, im in zip(starts, boxed)]
        fitted, _, _ = compiled.fit(scenes, boxed, steps=steps, learning_rate=learning_rate, sharpness=sharpness)
        return [_Found(f.shapes, f.background, 1.0 / float(sharpness[1]), s.kept) for f, s in zip(fitted, starts)]

    def _scene(self, row, keep_opacity):
        """The kept shapes of one ``(P,)`` guess, back to front, with the run's background and softness."""
        spec = self.renderer.spec
        if self.slots is not None:
            shapes, background = self.slots.scene(row, keep_opacity)
            kept = sum(1 for _, p in shapes if p[-1] >= keep_opacity)
        else:
            keep, kept = self._kept(row, keep_opacity)
            shapes = [(spec.fields_of(int(k))[0].kind, np.concatenate([row[s.slice] for s in spec.fields_of(int(k))]))
                      for k in keep]
            background = np.broadcast_to(np.float32(self.info["background"]), (self.channels,)).astype(np.float32)
        return _Found(shapes, background, float(self.info["softness"]), kept)

    def _kept(self, row, keep_opacity=KEEP_OPACITY):
        """Indices of the shapes to keep (opacity >= keep_opacity; else the most opaque one), and how many passed."""
        spec = self.renderer.spec
        opacity = np.array([float(row[spec.get(k, "opacity").slice][0]) for k in range(spec.num_shapes)])
        keep = np.flatnonzero(opacity >= keep_opacity)
        return (keep, len(keep)) if len(keep) else (np.array([int(opacity.argmax())]), 0)

    def _to_image(self, found, box):
        """A found scene of the ``N x N`` frame at the image's size: ``(renderer, (1, P'))``."""

        shapes = ",".join(kind for kind, _ in found.shapes)
        values = np.concatenate([p for _, p in found.shapes])[None]
        options = dict(channels=self.channels, softness=found.softness, composite=self.info.get("composite", "over"),
                       background=np.asarray(found.background, np.float64).round(5).tolist())
        frame = Render(shapes, box.resolution, **options)
        renderer = Render(shapes, (box.height, box.width), **options)
        return renderer, box.to_image(frame.spec, values, renderer.spec)


class _Found:
    """One image's shapes in the ``N x N`` frame: ``[(kind, (P_k,))]`` back to front, background, softness, kept."""

    def __init__(self, shapes, background, softness, kept):
        self.shapes, self.background, self.softness, self.kept = shapes, background, softness, kept


def encode_files(encoder, inputs, out, refine_steps=100, batch_size=32, force=False, progress=True, search=True):
    """Encode every image among ``inputs`` (files and/or folders) into ``out``; the job ``shapegrad encode`` runs.

    The files, the skip rules, the summary and the return value are those of
    :func:`shapegrad.io.batch.process_files` (the job ``shapegrad fit`` runs
    too): per image ``out/<stem>/params.json`` (readable by ``shapegrad
    render``; ``height``/``width`` are the image's, plus ``image``,
    ``psnr_db``, ``seconds`` and ``shapes_kept``), ``overlay.png`` (the image,
    in the run's channels, with each shape's outline) and ``shapes.svg``; then
    ``out/summary.csv`` (columns :data:`shapegrad.io.batch.SUMMARY_COLUMNS`;
    ``kinds`` are those of ``params.json``, ``count`` is
    :attr:`Encoded.kept`), written after every batch of ``batch_size``
    images. Unreadable files, other files in the input folders, images under
    4 px a side and images whose ``out/<stem>`` exists (unless ``force``) are
    skipped with a warning on stderr and a summary row. Last,
    ``out/sheet.png``: up to 16 inputs letterboxed, above their
    reconstructions.

    ``encoder``: an :class:`Encoder` or a path to ``encoder.keras``.
    ``search``, ``refine_steps``, ``batch_size``: as in :meth:`Encoder.encode`.

    Returns:
        ``{"done": n, "skipped": [(path, why)], "rows": [...]}``. Raises
        ``ValueError`` when no input is a readable image of at least 4 px a side.
    """

    encoder = encoder if isinstance(encoder, Encoder) else Encoder.load(encoder)
    sheet_in, sheet_out = [], []

    def work(images):
        results = []
        for image, e in zip(images, encoder.encode(images, refine_steps=refine_steps, batch_size=batch_size,
                                                   search=search)):
            kinds = ",".join(kind for kind, count in e.renderer.shapes for _ in range(count))
            results.append(ImageResult(e.renderer, e.params, kinds, e.kept, e.psnr, e.seconds,
                                             data.to_channels(image, encoder.channels), extra=dict(shapes_kept=e.kept)))
            if len(sheet_in) < 16:
                boxed, _, box = encoder.prepare(image)
                sheet_in.append(boxed)
                sheet_out.append(box.apply(e.render()))
        return results

    result = process_files(inputs, out, work, "encode", force=force, progress=progress,
                           batches=lambda paths, sizes: [paths[k : k + batch_size] for k in range(0, len(paths), batch_size)])
    if sheet_in:
        plots.save_image(os.path.join(out, "sheet.png"), plots.image_grid([sheet_in, sheet_out]),
                         scale=max(1, 96 // encoder.resolution))
    return result
