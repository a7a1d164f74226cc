"""Pre-training on synthetic scenes drawn like the user's folder, then fine-tuning on the folder itself.

The user's images have no labels, and the image loss alone teaches a slot
encoder slowly (what a shape is, where it is and which slot draws it all have
to be found through the renderer's gradient). Scenes that shapegrad draws
itself come with their parameters, and :func:`shapegrad.guide.slot_guide_loss`
teaches from them directly. :class:`FolderLikeScenes` draws such scenes with
the folder's own statistics, estimated cheaply from its images
(:func:`folder_statistics`: the border colours as backgrounds, the fraction
of the image the shapes cover as their size), and :class:`PhasedDataset`
serves them first, then the folder's images (self-supervised, the image
loss has the last word), with a fraction of every later batch still drawn
synthetic and guided so that the encoder keeps what it learnt.

When to switch is decided once, at the start of an epoch
(:class:`PhaseSwitch`: after a fraction of the epochs, or of the time
budget), and written next to the checkpoint, so a killed run resumes in the
phase it was in.

Example:
    >>> from shapegrad.render.slots import SlotRender
    >>> layer = SlotRender("disk,box", slots=2, resolution=16, channels=3)
    >>> scenes = FolderLikeScenes(layer, backgrounds=[[0.2, 0.3, 0.4]])
    >>> images, targets = scenes.draw(np.random.default_rng(0), 4)
    >>> images.shape, targets.shape
    ((4, 16, 16, 3), (4, 35))
"""

import json
import os
import time

import keras
import numpy as np

from shapegrad.io import files
from shapegrad.learn import data as datasets
from shapegrad.learn.callbacks import write_json
from shapegrad.learn.guide import slot_drawable
from shapegrad.ops.autodiff import jit
from shapegrad.render.primitives import RenderSpec, primitive

__all__ = ["folder_statistics", "FolderLikeScenes", "PhasedDataset", "PhaseSwitch"]

# Colour distance below which a shape would not stand out from its background (max over channels).
MIN_CONTRAST = 0.3


def folder_statistics(paths, resolution, channels, count=128, seed=0):
    """Cheap statistics of a folder's images: ``{"backgrounds": (n, C), "coverage": float}``.

    Reads up to ``count`` of ``paths`` letterboxed to ``resolution``: each
    image's border colour (:func:`shapegrad.data.border_color`), and the mean
    fraction of pixels that differ from it by more than 0.1 in a channel (the
    part of the image the shapes cover).
    """
    rng = np.random.default_rng(seed)
    chosen = rng.permutation(len(paths))[:count]
    backgrounds, covered = [], []
    for i in chosen:
        image = datasets.to_channels(files.read_image(paths[int(i)]), channels)
        boxed = datasets.Letterbox(*image.shape[:2], resolution).apply(image)
        border = datasets.border_color(boxed)
        backgrounds.append(border)
        covered.append(float((np.abs(boxed - border) > 0.1).any(axis=-1).mean()))
    return {"backgrounds": np.asarray(backgrounds, np.float32), "coverage": float(np.mean(covered))}


class FolderLikeScenes:
    """Scenes of a :class:`~shapegrad.slots.SlotRender` drawn with a folder's statistics, and their guide targets.

    Each scene has 1 to ``layer.slots`` shapes (uniform count), each of a
    kind drawn uniformly from ``layer.kinds``, its geometry from the kind's
    ``typical`` ranges (``RenderSpec.sample``) with sizes times ``scale``, a
    colour uniform in ``[0, 1]`` at least :data:`MIN_CONTRAST` from the
    background, which is one of ``backgrounds`` (the folder's border colours).

    Args:
        layer: the ``SlotRender`` (the decoder being trained).
        backgrounds: ``(n, C)`` background colours to draw from.
        scale: factor on every size (and on triangles' and polygons' spread
            about their centroid), from :meth:`matched_scale`.
    """

    def __init__(self, layer, backgrounds, scale=1.0):
        self.layer = layer
        self.backgrounds = np.asarray(backgrounds, np.float32).reshape(-1, layer.channels)
        self.scale = float(scale)
        self._specs = {k: RenderSpec(k, layer.resolution, layer.channels) for k in layer.kinds}
        self._draw = jit(layer)

    def targets(self, rng, batch):
        """``(batch, layer.size)`` targets of :func:`shapegrad.guide.slot_target`'s layout."""
        layer, c = self.layer, self.layer.channels
        k = len(layer.kinds)
        out = np.zeros((batch, layer.size), np.float32)
        out[:, :c] = self.backgrounds[rng.integers(len(self.backgrounds), size=batch)]
        counts = rng.integers(1, layer.slots + 1, size=batch)
        kinds = rng.integers(k, size=(batch, layer.slots))
        offsets = np.cumsum([0] + [self._geometry(q) for q in layer.kinds])
        for j, kind in enumerate(layer.kinds):
            sampled = self._shapes(kind, rng, batch * layer.slots).reshape(batch, layer.slots, -1)
            g = offsets[j + 1] - offsets[j]
            for s in range(layer.slots):
                start = c + s * layer.slot_size + 1 + k + offsets[j]
                out[:, start : start + g] = sampled[:, s, :g]
        for s in range(layer.slots):
            x = out[:, c + s * layer.slot_size : c + (s + 1) * layer.slot_size]
            used = s < counts
            x[:, 0] = used
            x[np.arange(batch), 1 + kinds[:, s]] = used
            x[:, layer.slot_size - c :] = self._colors(rng, out[:, :c])
        return out

    def draw(self, rng, batch):
        """``(images (batch, H, W, C), targets (batch, size))`` of ``batch`` new scenes."""
        targets = self.targets(rng, batch)
        images = keras.ops.convert_to_numpy(self._draw(slot_drawable(self.layer, targets))).astype(np.float32)
        return np.clip(images, 0.0, 1.0), targets

    def matched_scale(self, coverage, seed=0, batch=256):
        """The size factor whose scenes cover ``coverage`` of the image on average (a few bisection steps)."""
        low, high = 0.4, 2.5
        for _ in range(6):
            self.scale = (low * high) ** 0.5
            images, targets = self.draw(np.random.default_rng(seed), batch)
            border = targets[:, None, None, : self.layer.channels]
            covered = float((np.abs(images - border) > 0.1).any(axis=-1).mean())
            low, high = (self.scale, high) if covered < coverage else (low, self.scale)
        return self.scale

    def _geometry(self, kind):
        return sum(f.size for f in primitive(kind).fields)

    def _shapes(self, kind, rng, n):
        spec = self._specs[kind]
        x = spec.sample(n, seed=rng)[:, : self._geometry(kind)]
        start = 0
        for f in primitive(kind).fields:
            if f.kind == "size":
                x[:, start : start + f.size] *= self.scale
            start += f.size
        if kind == "triangle" or kind.startswith("polygon"):
            points = x.reshape(n, -1, 2)
            centre = points.mean(axis=1, keepdims=True)
            x = (centre + self.scale * (points - centre)).reshape(n, -1)
        return x

    def _colors(self, rng, backgrounds):
        colors = rng.uniform(0.0, 1.0, backgrounds.shape).astype(np.float32)
        for _ in range(20):  # redraw those too close to their background
            close = np.abs(colors - backgrounds).max(axis=-1) < MIN_CONTRAST
            if not close.any():
                break
            colors[close] = rng.uniform(0.0, 1.0, (int(close.sum()), backgrounds.shape[1]))
        return colors


class PhasedDataset(keras.utils.PyDataset):
    """Synthetic guided batches until :attr:`switch_epoch`, then the folder's images (a ``mix`` of synthetic in each).

    ``__getitem__`` returns ``(inputs, (images, targets))``: ``targets`` is
    ``(B, size + 1)``, a guide target and a last column that is 1 for a
    synthetic image and 0 for one of the folder (no guide; target zeros), as
    :class:`shapegrad.guide.SlotGuideLoss` reads it. Batch ``i`` of epoch
    ``e`` is a pure function of ``(seed, e, i)`` and the switch epoch.

    With ``fitted`` (images of the folder with guide targets, e.g.
    :meth:`shapegrad.learn.teach.FolderFits.labelled`), ``fitted_share`` of
    the guided part of every batch are drawn from them instead of drawn
    synthetic.

    Args:
        scenes: a :class:`FolderLikeScenes`.
        images: the folder's :class:`~shapegrad.data.ImageFolderDataset` (its batch size is this one's).
        seed: the synthetic draws' seed.
        mix: fraction of each batch guided after the switch, in ``[0, 1)``.
        switch_epoch: the first epoch on the folder's images (None: not yet).
        fitted: optional :class:`~shapegrad.learn.teach.FittedImages` (or any
            object with ``len`` and ``sample(rng, n) -> (images, targets)``).
        fitted_share: the fraction of the guided images drawn from ``fitted``, in ``[0, 1]``.
    """

    def __init__(self, scenes, images, seed=0, mix=0.5, switch_epoch=None, fitted=None, fitted_share=0.5, **kwargs):
        super().__init__(**kwargs)
        self.scenes, self.images = scenes, images
        self.seed, self.mix, self.switch_epoch = int(seed), float(mix), switch_epoch
        if fitted is not None and not len(fitted):
            fitted = None
        self.fitted, self.fitted_share = fitted, float(fitted_share) if fitted is not None else 0.0
        self.batch_size = images.batch_size
        self._epoch = 0

    @property
    def epoch(self):
        return self._epoch

    @epoch.setter
    def epoch(self, value):
        self._epoch = value
        self.images.epoch = value

    def __len__(self):
        return len(self.images)

    def on_epoch_end(self):
        self.epoch = self._epoch + 1

    def synthetic(self, epoch):
        """Whether epoch ``epoch`` draws only synthetic scenes."""
        return self.switch_epoch is None or epoch < self.switch_epoch

    def __getitem__(self, index):
        rng = np.random.default_rng([self.seed, self._epoch, index, 7])
        b = self.batch_size
        guided = b if self.synthetic(self._epoch) else int(round(self.mix * b))
        from_fits = int(round(self.fitted_share * guided))
        parts = [self.scenes.draw(rng, guided - from_fits)] if guided > from_fits else []
        if from_fits:
            parts.append(self.fitted.sample(rng, from_fits))
        r, c = self.images.resolution, self.images.channels
        parts = parts or [(np.zeros((0, r, r, c), np.float32), np.zeros((0, self.scenes.layer.size), np.float32))]
        images, targets = (np.concatenate(p) for p in zip(*parts))
        targets = np.concatenate([targets, np.ones((guided, 1), np.float32)], 1)
        if guided < b:  # the folder's images: no guide (a zero target, flag 0)
            real, _ = self.images.sample(index)
            real = real[: b - guided]
            images = np.concatenate([images, real])
            targets = np.concatenate([targets, np.zeros((len(real), targets.shape[1]), np.float32)])
        return images, (images, targets)


class PhaseSwitch(keras.callbacks.Callback):
    """Decide, at the start of an epoch, when a :class:`PhasedDataset` moves to the folder's images.

    It switches at the first epoch at or after ``epochs`` (a number of
    epochs), or once ``seconds`` of training have passed in this session
    (None: no time rule), counted from the start of training as
    :class:`~shapegrad.learn.callbacks.TimeBudget` counts its budget (so the
    start-up and the first compilation, which took 200 s of a 420 s budget on
    a loaded CPU, do not eat the pre-training); ``clock`` replaces that count
    (a function returning seconds). The decision is written to ``path``
    (JSON) and read back by a resumed run, so a killed run continues the
    phase it was in; ``log`` (a function of one string, or None) says when.
    """

    def __init__(self, dataset, path, epochs, seconds=None, clock=None, log=None):
        super().__init__()
        self.dataset, self.path = dataset, path
        self.epochs, self.seconds, self.clock, self.log = epochs, seconds, clock, log
        if os.path.exists(path):
            with open(path) as f:
                dataset.switch_epoch = json.load(f)["switch_epoch"]

    def on_train_begin(self, logs=None):
        self._start = time.perf_counter()

    def elapsed(self):
        """Seconds of training so far (``clock()`` if given)."""
        return self.clock() if self.clock is not None else time.perf_counter() - getattr(self, "_start", time.perf_counter())

    def on_epoch_begin(self, epoch, logs=None):
        if self.dataset.switch_epoch is not None:
            return
        late = self.seconds is not None and self.elapsed() >= self.seconds
        if epoch >= self.epochs or late:
            self.dataset.switch_epoch = epoch
            write_json(self.path, {"switch_epoch": epoch})
            if self.log:
                self.log(f"epoch {epoch + 1}: synthetic pre-training done; fine-tuning on the folder's images")
