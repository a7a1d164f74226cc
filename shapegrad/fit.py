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
    >>> from shapegrad.models import CONE_FIELDS
    >>> truth = np.array([[0.5, 0.5, 0.0, 1.0, 0.2]], "float32")
    >>> image = keras.ops.convert_to_numpy(Cones(24)(truth))
    >>> guess = np.array([[0.45, 0.55, 0.2, 1.0, 0.25]], "float32")
    >>> fitted = refine(Cones(24), CONE_FIELDS, guess, image, steps=150)
    >>> bool(np.abs(fitted - truth).max() < 0.01)
    True
"""

import keras
import numpy as np
from keras import layers, ops

from shapegrad.models import ParameterHead

__all__ = ["Annealed", "raw_from_params", "refine", "fit_images"]


@keras.saving.register_keras_serializable(package="shapegrad")
class Annealed(layers.Layer):
    """A renderer whose edge sharpness is multiplied by a non-trainable ``scale`` variable.

    Works with any renderer whose ``call`` accepts ``sharpness=`` and that has
    a default sharpness (``Cones``: ``N`` per radian or 2 per pixel).
    ``scale = 1`` draws exactly what the renderer draws. Assigning ``scale``
    between steps (see :class:`SharpnessSchedule`) anneals without re-tracing.
    """

    def __init__(self, renderer, **kwargs):
        super().__init__(**kwargs)
        self.renderer = renderer
        self.renderer.trainable = False

    def build(self, input_shape):
        self.scale = self.add_weight(shape=(), initializer="ones", trainable=False, name="scale")
        self.built = True

    def base_sharpness(self):
        r = self.renderer
        if r.sharpness is not None:
            return r.sharpness
        return 2.0 if getattr(r, "edge", "angle") == "distance" else float(r.resolution)

    def compute_output_shape(self, input_shape):
        return self.renderer.compute_output_shape(input_shape)

    def call(self, params):
        return self.renderer(params, sharpness=self.scale * self.base_sharpness())

    def get_config(self):
        config = super().get_config()
        config["renderer"] = keras.saving.serialize_keras_object(self.renderer)
        return config

    @classmethod
    def from_config(cls, config):
        config["renderer"] = keras.saving.deserialize_keras_object(config["renderer"])
        return cls(**config)


def sharpness_scale(step, steps, start, anneal=0.5):
    """Geometric ramp from ``start`` to 1 over the first ``anneal`` fraction of ``steps``, then 1."""
    if start >= 1.0 or anneal <= 0:
        return 1.0
    t = min(step / max(anneal * steps, 1.0), 1.0)
    return float(start * (1.0 / start) ** t)


class SharpnessSchedule(keras.callbacks.Callback):
    """Set an :class:`Annealed` layer's ``scale`` before every training batch."""

    def __init__(self, annealed, steps, start=0.1, anneal=0.5, initial_step=0):
        super().__init__()
        self.annealed, self.steps, self.start, self.anneal = annealed, steps, start, anneal
        self.step = initial_step

    def on_train_batch_begin(self, batch, logs=None):
        self.annealed.scale.assign(sharpness_scale(self.step, self.steps, self.start, self.anneal))
        self.step += 1


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


def _optimise(renderer, fields, raw, images, steps, learning_rate, start_sharpness, anneal):
    """Adam on raw parameters for ``steps`` steps; returns (params, per-item MSE)."""
    batch = len(raw)
    free = _FreeParameters(raw, fields)
    annealed = Annealed(renderer)
    dummy = keras.Input((1,))
    model = keras.Model(dummy, annealed(free(dummy)))
    schedule = keras.optimizers.schedules.CosineDecay(learning_rate, max(steps, 1), alpha=0.02)
    model.compile(optimizer=keras.optimizers.Adam(schedule), loss="mse")
    zeros = np.zeros((batch, 1), "float32")
    images = np.asarray(images, "float32")
    for step in range(steps):
        annealed.scale.assign(sharpness_scale(step, steps, start_sharpness, anneal))
        model.train_on_batch(zeros, images)
    annealed.scale.assign(1.0)
    params = keras.ops.convert_to_numpy(free.head(free.raw))
    recon = keras.ops.convert_to_numpy(renderer(params))
    errors = ((recon - images) ** 2).reshape(batch, -1).mean(axis=1)
    return params.astype("float32"), errors


def refine(renderer, fields, params, images, steps=100, learning_rate=0.02, start_sharpness=0.5, anneal=0.3):
    """Improve ``(B, P)`` normalised parameters so that ``renderer(params)`` matches ``images``.

    Args:
        renderer: a layer mapping ``(B, P)`` to ``(B, H, W, C)`` whose call
            accepts ``sharpness=`` (``Cones``).
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
    params, errors = _optimise(renderer, fields, raw, tiled, steps, learning_rate, start_sharpness, anneal)
    errors = errors.reshape(batch, restarts)
    best = errors.argmin(axis=1)
    chosen = params.reshape(batch, restarts, -1)[np.arange(batch), best]
    return chosen, errors[np.arange(batch), best]
