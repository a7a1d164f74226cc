"""Learning from the fitter: the folder's own images, fitted by the scene search, as the encoder's guide.

The user's images have no labels, but the scene search
(:func:`shapegrad.fit.search.fit_scene`) reads a flat-colour scene almost
exactly, a fraction of a second an image. :class:`FolderFits` fits part of the
training images at the encoder's resolution, letterboxed as the encoder sees
them, and keeps each fit as a :func:`~shapegrad.learn.guide.slot_target` row.
:class:`~shapegrad.learn.pretrain.PhasedDataset` serves them guided, as it
serves its synthetic scenes: images of the folder itself, with labels.

The fits are written to one file after every chunk of images (atomically), so
a killed run resumes where it was: no image is fitted twice and none is lost.
The file records the decoder it was made for; a different decoder starts
afresh.

Example (three images of a folder, fitted and kept as guide targets; the fitting is skipped by the
doctest run, ``tests/test_teach.py`` fits):
    >>> import os, tempfile
    >>> from PIL import Image
    >>> from shapegrad.render.slots import SlotRender
    >>> folder = tempfile.mkdtemp()
    >>> for k in range(3):
    ...     image = np.full((24, 24, 3), 40, np.uint8); image[4 + 3 * k : 14 + 3 * k, 6:18] = (200, 50, 50)
    ...     Image.fromarray(image).save(os.path.join(folder, f"{k}.png"))
    >>> paths = sorted(os.path.join(folder, f) for f in os.listdir(folder))
    >>> layer = SlotRender("box,disk", slots=2, resolution=16, channels=3)
    >>> fits = FolderFits(os.path.join(folder, "fits.npz"), layer, paths)
    >>> fits.count, fits.done
    (0, False)
    >>> fits.fit(count=3).count, fits.targets.shape  # doctest: +SKIP
    (3, (3, 35))
    >>> bool(fits.psnr.min() > 30)  # doctest: +SKIP
    True
"""

import os
import time

import numpy as np

from shapegrad.fit import search
from shapegrad.io import files
from shapegrad.learn import data
from shapegrad.learn.guide import slot_target
from shapegrad.render.primitives import RenderSpec, primitive

__all__ = ["MIN_FIT_PSNR", "FittedImages", "FolderFits", "dihedral", "fit_target"]

# A fit below this PSNR (dB) teaches nothing good: it is kept on file, not served as a guide.
MIN_FIT_PSNR = 25.0

# Images fitted per call of the search (one batch; the file is written after each).
FIT_CHUNK = 32


def _pairs(layer, kind_of_field):
    """Indices ``(rows, cols)`` into a slot target of every (row, col) pair of the fields of that kind."""
    rows, cols = [], []
    k = len(layer.kinds)
    for slot in range(layer.slots):
        start = layer.channels + slot * layer.slot_size + 1 + k
        for kind in layer.kinds:
            for field in primitive(kind).fields:
                if field.kind == kind_of_field:
                    rows += range(start, start + field.size, 2)
                    cols += range(start + 1, start + field.size, 2)
                start += field.size
    return np.array(rows, np.int64), np.array(cols, np.int64)


def dihedral(layer, images, targets, which):
    """Square ``images`` ``(B, N, N, C)`` and their slot ``targets`` under one of the 8 symmetries of the square each.

    ``which``: ``(B,)`` integers in ``[0, 8)``: bit 0 transposes, bit 1 flips
    the rows, bit 2 the columns (in that order). Positions move with the
    pixels (pixel ``i`` is at ``i / N``, so ``(N - 1) / N - x`` is the mirror
    image of ``x``), direction fields turn with them, sizes, colours and
    kinds stay.
    """
    mirror = (layer.resolution - 1) / layer.resolution
    images, targets = np.array(images, copy=True), np.array(targets, np.float32, copy=True)
    (p_rows, p_cols), (d_rows, d_cols) = _pairs(layer, "position"), _pairs(layer, "direction")
    for b, w in enumerate(np.asarray(which, np.int64)):
        t = targets[b]
        if w & 1:
            images[b] = images[b].transpose(1, 0, 2)
            t[p_rows], t[p_cols] = t[p_cols].copy(), t[p_rows].copy()
            t[d_rows], t[d_cols] = t[d_cols].copy(), t[d_rows].copy()
        if w & 2:
            images[b] = images[b][::-1]
            t[p_rows], t[d_rows] = mirror - t[p_rows], -t[d_rows]
        if w & 4:
            images[b] = images[b][:, ::-1]
            t[p_cols], t[d_cols] = mirror - t[p_cols], -t[d_cols]
    return images, targets


class FittedImages:
    """Fitted images and their guide targets, served under the square's 8 symmetries (:func:`dihedral`).

    ``sample(rng, n)`` draws ``n`` of them, each under a random symmetry,
    as :class:`~shapegrad.learn.pretrain.PhasedDataset` asks.
    """

    def __init__(self, layer, images, targets):
        self.layer, self.images, self.targets = layer, images, targets

    def __len__(self):
        return len(self.images)

    def sample(self, rng, n):
        chosen = rng.integers(len(self.images), size=n)
        return dihedral(self.layer, self.images[chosen], self.targets[chosen], rng.integers(8, size=n))


def fit_target(layer, fit):
    """The :func:`~shapegrad.learn.guide.slot_target` row ``(layer.size,)`` of a :class:`~shapegrad.fit.search.SceneFit`.

    ``layer``: the :class:`~shapegrad.render.slots.SlotRender`; the fit must
    be of an image of ``layer``'s resolution, with at most ``layer.slots``
    shapes of its kinds.
    """
    if not fit.shapes:
        return slot_target(layer, [], fit.background)
    spec = RenderSpec(fit.shapes, (fit.height, fit.width), fit.channels)
    shapes = []
    for k in range(spec.num_shapes):
        fields = spec.fields_of(k)
        shapes.append((fields[0].kind, np.concatenate([fit.params[s.slice] for s in fields])))
    return slot_target(layer, shapes, fit.background)


class FolderFits:
    """Scene fits of a folder's training images as guide targets of a slot decoder, kept in one ``.npz`` file.

    Images are fitted in a fixed order (a permutation of ``paths`` from
    ``seed``), so a resumed run goes on with the next ones.

    Args:
        path: the ``.npz`` file (read if it exists and was made for this
            decoder; written after every chunk).
        layer: the :class:`~shapegrad.render.slots.SlotRender` being trained
            (its kinds, slots, resolution and channels are the fit's).
        paths: the training images.
        seed: the order's seed.

    Attributes:
        names: ``(n,)`` the fitted files.
        targets: ``(n, layer.size)`` their guide targets.
        psnr: ``(n,)`` each fit's PSNR (dB) on the letterboxed image.
        seconds: the fitting's wall time, all sessions together.
        done: whether fitting has ended (a count or a time budget reached).
    """

    def __init__(self, path, layer, paths, seed=0):
        self.path, self.layer, self.paths = os.fspath(path), layer, [os.path.abspath(p) for p in paths]
        self.order = np.random.default_rng([int(seed), 31]).permutation(len(self.paths))
        self.decoder = f"{','.join(layer.kinds)}:{layer.slots}:{layer.resolution}:{layer.channels}"
        self.names = np.zeros(0, dtype=str)
        self.targets = np.zeros((0, layer.size), np.float32)
        self.psnr = np.zeros(0, np.float32)
        self.seconds, self.done = 0.0, False
        if os.path.exists(self.path):
            with np.load(self.path) as saved:
                if str(saved["decoder"]) == self.decoder:
                    self.names, self.targets, self.psnr = saved["names"], saved["targets"], saved["psnr"]
                    self.seconds, self.done = float(saved["seconds"]), bool(saved["done"])

    @property
    def count(self):
        """How many images are fitted."""
        return len(self.names)

    def fit(self, count, seconds=None, log=None, chunk=None):
        """Fit images until ``count`` are fitted (all sessions) or ``seconds`` of this call pass; returns ``self``.

        Images are fitted ``chunk`` at a time (one call of the search; None:
        :data:`FIT_CHUNK`), and the file written after each; the time is
        checked after each chunk. A fitting that has ended (:attr:`done`) is
        not taken up again. ``log``: a function of one string, told after each
        chunk.
        """
        if self.done:
            return self
        start = time.perf_counter()
        fitted = set(self.names.tolist())
        todo = [int(i) for i in self.order[: min(count, len(self.paths))] if self.paths[int(i)] not in fitted]
        loader = data.ImageFolderDataset(self.paths, self.layer.resolution, self.layer.channels, cache=0)
        chunk = chunk or FIT_CHUNK
        for at in range(0, len(todo), chunk):
            part = todo[at : at + chunk]
            t0 = time.perf_counter()
            fits = search.fit_scene(np.stack([loader.load(i) for i in part]), kinds=self.layer.kinds,
                                    max_shapes=self.layer.slots, opacity=False)
            self.names = np.concatenate([self.names, [self.paths[i] for i in part]])
            self.targets = np.concatenate([self.targets, np.stack([fit_target(self.layer, f) for f in fits])])
            self.psnr = np.concatenate([self.psnr, np.float32([f.psnr for f in fits])])
            self.seconds += time.perf_counter() - t0
            self._save()
            if log:
                log(f"fitted {self.count} of the folder's images in {self.seconds:.0f} s "
                    f"(mean PSNR {self.psnr.mean():.1f} dB)")
            if seconds is not None and time.perf_counter() - start >= seconds:
                break
        self.done = True
        self._save()
        return self

    def labelled(self, min_psnr=MIN_FIT_PSNR):
        """The :class:`FittedImages` of the fits of at least ``min_psnr`` dB (``images`` ``(n, N, N, C)``, ``targets``)."""
        keep = np.flatnonzero(self.psnr >= min_psnr)
        n, c = self.layer.resolution, self.layer.channels
        images = np.zeros((len(keep), n, n, c), np.float32)
        if len(keep):
            loader = data.ImageFolderDataset(list(self.names[keep]), n, c, cache=0)
            for j in range(len(keep)):
                images[j] = loader.load(j)
        return FittedImages(self.layer, images, self.targets[keep])

    def _save(self):
        def write(tmp):
            np.savez(tmp, names=self.names, targets=self.targets, psnr=self.psnr, seconds=self.seconds,
                     done=self.done, decoder=self.decoder)

        files.atomic_write(self.path, write)
