"""Synthetic datasets: images of random primitives drawn by a renderer, and their true normalised parameters.

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
from shapegrad._autodiff import jit
from shapegrad.primitives import RenderSpec

__all__ = ["CONE_RANGES", "sample_cones", "ConeDataset", "SceneDataset"]

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
        self.targets = _validate.one_of("targets", targets, ("images", "params"))
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
            (self-supervised: the images again) or ``"params"`` (supervised).
        noise: standard deviation of Gaussian pixel noise added to the inputs
            (targets stay clean), clipped to ``[0, 1]``.
        fresh: draw new batches every epoch (training) instead of the same ones.

    ``__getitem__`` returns ``(images, images)`` or ``(images, params)`` with
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
        from shapegrad.layers import Cones

        renderer = resolution if isinstance(resolution, keras.layers.Layer) else Cones(resolution)
        super().__init__(renderer, batch_size, batches, seed, targets, noise, fresh, **kwargs)

    def _seed(self, index):
        return self._rng(index)
