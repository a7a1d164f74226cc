"""Datasets: synthetic scenes drawn by a renderer with their true parameters, and the user's image folders
(listed, letterboxed and coloured by :mod:`shapegrad.io.images`).

Both renderers are handled alike: parameters come from ``renderer.spec.sample``
and images from the renderer. Every batch is a pure function of ``(seed, epoch, index)``, so a dataset is
reproducible and two workers never draw the same batch.

Example:
    >>> data = ConeDataset(resolution=16, batch_size=4, batches=2, seed=0)
    >>> images, params = data.sample(0)
    >>> images.shape, params.shape
    ((4, 16, 16, 1), (4, 5))
"""

import math

import keras
import numpy as np

from shapegrad import _validate
from shapegrad.io import files
from shapegrad.io.images import (  # noqa: F401 - re-exported: shapegrad.data held them
    IMAGE_EXTENSIONS,
    ImageScan,
    Letterbox,
    border_color,
    scan_images,
    to_channels,
)
from shapegrad.ops.autodiff import jit
from shapegrad.render.cones import Cones
from shapegrad.render.primitives import RenderSpec

__all__ = [
    "CONE_RANGES",
    "sample_cones",
    "ConeDataset",
    "SceneDataset",
    "IMAGE_EXTENSIONS",
    "ImageScan",
    "scan_images",
    "to_channels",
    "border_color",
    "Letterbox",
    "ImageFolderDataset",
]

# Sampling ranges of ConeDataset, in the Cones layer's normalised units.
CONE_RANGES = {
    "apex": (0.2, 0.8),  # fraction of the image size, each coordinate: >= 0.2 N px from the border
    "axis_angle": (0.0, 2 * math.pi),  # the axis is (cos, sin) of a uniform angle
    "aperture": (0.1, 0.4),  # s; half-angle pi*s from 18 to 72 degrees
}


def sample_cones(rng, count):
    """``(count, 5)`` float32 cone parameters ``[a0, a1, d0, d1, s]`` drawn from :data:`CONE_RANGES`.

    The same draws as ``Cones(N).spec.sample(count, seed=rng)`` (the cone
    primitive's ``typical`` ranges are these).
    """
    return RenderSpec("cone", 1, appearance=False).sample(count, seed=rng)


class _Synthetic(keras.utils.PyDataset):
    """Shared machinery: batches drawn from ``(seed, epoch, index)``, optional noise, two target modes."""

    def __init__(self, batch_size, batches, seed, targets, noise, fresh, **kwargs):
        super().__init__(**kwargs)
        self.batch_size = _validate.positive_int("batch_size", batch_size)
        self.batches = _validate.positive_int("batches", batches)
        self.targets = _validate.one_of("targets", targets, ("images", "params", "guided"))
        if isinstance(noise, bool) or not isinstance(noise, (int, float)) or not 0 <= noise < 1:
            raise ValueError(f"Expected noise to be a number in [0, 1). Received: noise={noise!r}")
        self.noise = float(noise)
        self.seed = int(seed)
        self.fresh = bool(fresh)
        self.epoch = 0

    def __len__(self):
        return self.batches

    def on_epoch_end(self):
        if self.fresh:
            self.epoch += 1

    def _rng(self, index, *extra):
        return np.random.default_rng([self.seed, self.epoch, index, *extra])

    def sample(self, index):  # pragma: no cover - defined by subclasses
        raise NotImplementedError

    def __getitem__(self, index):
        images, params = self.sample(index)
        inputs = images
        if self.noise:
            noise = self._rng(index, 1).normal(0, self.noise, images.shape)
            inputs = np.clip(images + noise, 0, 1).astype("float32")
        if self.targets == "guided":  # the image loss and the guide loss (shapegrad.guide)
            return inputs, (images, params)
        return inputs, (images if self.targets == "images" else params)


class SceneDataset(_Synthetic):
    """Batches of images drawn by a renderer (``Render`` or ``Cones``), with their parameters.

    Parameters come from ``renderer.spec.sample`` (every field uniform in its
    ``typical`` range: shapes mostly inside the image and not degenerate; see
    the primitives table in the README).

    Args:
        renderer: a :class:`shapegrad.Render` or :class:`shapegrad.Cones` layer.
        batch_size: images per batch.
        batches: batches per epoch.
        seed: the dataset's seed; batch ``i`` of epoch ``e`` uses ``(seed, e, i)``.
        targets: what ``__getitem__`` returns beside the images: ``"images"``
            (self-supervised: the images again), ``"params"`` (supervised) or
            ``"guided"`` (both, as the tuple ``(images, params)``: the targets of
            ``train(guide=...)``'s two outputs).
        noise: standard deviation of Gaussian pixel noise added to the inputs
            (targets stay clean), clipped to ``[0, 1]``.
        fresh: draw new batches every epoch (training) instead of the same ones.

    ``__getitem__`` returns ``(images, images)``, ``(images, params)`` or ``(images, (images, params))`` with
    images ``(batch, H, W, C)`` in ``[0, 1]`` and params ``(batch, P)``.
    """

    def __init__(self, renderer, batch_size=64, batches=100, seed=0, targets="images", noise=0.0, fresh=True, **kwargs):
        super().__init__(batch_size, batches, seed, targets, noise, fresh, **kwargs)
        self.renderer = renderer
        self.resolution = renderer.resolution
        self._draw = jit(renderer)

    def _seed(self, index):
        """What ``spec.sample`` draws batch ``index`` of the current epoch from."""
        return int(np.random.SeedSequence([self.seed, self.epoch, index]).generate_state(1)[0])

    def sample(self, index):
        """Clean ``(images, params)`` of batch ``index`` in the current epoch."""
        params = self.renderer.spec.sample(self.batch_size, seed=self._seed(index))
        images = keras.ops.convert_to_numpy(self._draw(params)).astype("float32")
        return images, params


class ConeDataset(SceneDataset):
    """Batches of cone images drawn by :class:`shapegrad.Cones`, with their parameters.

    A :class:`SceneDataset` whose first argument may also be the resolution
    ``N`` (then the renderer is ``Cones(N)``), and whose batch ``i`` of epoch
    ``e`` is drawn from ``numpy.random.default_rng([seed, e, i])`` directly
    (as it always was, so a seed gives the same cones as before). Params are
    ``(batch, 5)``, images ``(batch, N, N, 1)``.
    """

    def __init__(self, resolution=64, batch_size=64, batches=100, seed=0, targets="images", noise=0.0, fresh=True, **kwargs):
        renderer = resolution if isinstance(resolution, keras.layers.Layer) else Cones(resolution)
        super().__init__(renderer, batch_size, batches, seed, targets, noise, fresh, **kwargs)

    def _seed(self, index):
        return self._rng(index)


class ImageFolderDataset(keras.utils.PyDataset):
    """Batches of the user's images, decoded from disk per batch and letterboxed to ``N x N``.

    Self-supervised: ``__getitem__`` returns ``(images, images)``, images
    ``(batch, N, N, channels)`` float32 in ``[0, 1]`` (grey images repeated to
    3 channels in a colour run, colour ones turned to luma in a grey one;
    alpha dropped; 16-bit kept to 16 bits, see :func:`shapegrad.files.read_image`).

    Batch ``i`` of epoch ``e`` is a pure function of ``(seed, e, i)``: the
    images are taken in order from a sequence of shuffles of the list
    (shuffle ``c`` drawn from ``(seed, c)``), so every image is seen once
    per pass and a resumed run draws the same batches. A small LRU cache of
    decoded, letterboxed images (``cache`` of them) saves decoding on small
    folders; nothing else is kept in memory.

    A file that fails to decode mid-run (changed on disk since it was
    listed) is replaced by the next image of the list, with a warning, and
    remembered in ``failed``.

    Args:
        paths: image files (e.g. :attr:`ImageScan.paths`).
        resolution: ``N``.
        channels: 1 or 3.
        batch_size: images per batch.
        batches: batches per epoch (default: one pass over ``paths``).
        seed: the shuffles' seed.
        noise: standard deviation of Gaussian noise on the inputs (targets stay clean).
        fresh: advance the epoch after each one (training); ``False`` keeps it.
        cache: how many letterboxed images the LRU cache holds (0: none).
    """

    def __init__(self, paths, resolution, channels, batch_size=64, batches=None, seed=0, noise=0.0, fresh=True,
                 cache=256, **kwargs):
        super().__init__(**kwargs)
        self.paths = list(paths)
        if not self.paths:
            raise ValueError("Expected at least one image path. Received: paths=[]")
        self.resolution = _validate.positive_int("resolution", resolution)
        if channels not in (1, 3):
            raise ValueError(f"Expected channels to be 1 or 3. Received: channels={channels!r}")
        self.channels = int(channels)
        self.batch_size = _validate.positive_int("batch_size", batch_size)
        self.batches = math.ceil(len(self.paths) / self.batch_size) if batches is None else _validate.positive_int(
            "batches", batches)
        if isinstance(noise, bool) or not isinstance(noise, (int, float)) or not 0 <= noise < 1:
            raise ValueError(f"Expected noise to be a number in [0, 1). Received: noise={noise!r}")
        self.noise = float(noise)
        self.seed, self.fresh, self.cache = int(seed), bool(fresh), int(cache)
        self.epoch = 0
        self.failed = set()
        self._cache = {}  # insertion-ordered: least recently used first

    def __len__(self):
        return self.batches

    def on_epoch_end(self):
        if self.fresh:
            self.epoch += 1

    def indices(self, index):
        """Indices into ``paths`` of batch ``index`` in the current epoch."""
        n = len(self.paths)
        g = (self.epoch * self.batches + index) * self.batch_size + np.arange(self.batch_size)
        out = np.empty(self.batch_size, np.int64)
        for cycle in np.unique(g // n):
            order = np.random.default_rng([self.seed, int(cycle)]).permutation(n)
            where = g // n == cycle
            out[where] = order[g[where] % n]
        return out

    def load(self, i):
        """Image ``i`` letterboxed to ``(N, N, channels)``, from the cache or the disk."""

        if i in self._cache:
            self._cache[i] = self._cache.pop(i)  # most recently used
            return self._cache[i]
        for k in range(len(self.paths)):
            j = (i + k) % len(self.paths)
            try:
                image = files.read_image(self.paths[j])
                break
            except ValueError as error:
                if j not in self.failed:
                    import warnings

                    warnings.warn(f"skipping an image that no longer reads: {error}", stacklevel=2)
                self.failed.add(j)
        else:
            raise ValueError(f"none of the {len(self.paths)} images reads any more (first: {self.paths[0]})")
        image = to_channels(image, self.channels)
        boxed = Letterbox(*image.shape[:2], self.resolution).apply(image)
        if self.cache:
            self._cache[i] = boxed
            while len(self._cache) > self.cache:
                self._cache.pop(next(iter(self._cache)))
        return boxed

    def sample(self, index):
        """Clean ``(images, None)`` of batch ``index`` in the current epoch (there are no parameters)."""
        return np.stack([self.load(int(i)) for i in self.indices(index)]), None

    def __getitem__(self, index):
        images, _ = self.sample(index)
        inputs = images
        if self.noise:
            rng = np.random.default_rng([self.seed, self.epoch, index, 1])
            inputs = np.clip(images + rng.normal(0, self.noise, images.shape), 0, 1).astype("float32")
        return inputs, images

    def all_images(self):
        """Every image of ``paths``, in order, letterboxed: ``(len(paths), N, N, channels)``."""
        return np.stack([self.load(i) for i in range(len(self.paths))])
