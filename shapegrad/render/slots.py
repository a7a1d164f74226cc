"""A decoder of sets: ``S`` slots, each a presence, a kind chosen softly among ``K`` kinds, and one shape.

A scene is a set of shapes of unknown size and kinds. :class:`SlotRender` reads
``S`` slots (drawn back to front, "over") over a background colour, from one
flat ``(B, C + S * L)`` vector: the background (``C`` fractions: each image
its own, as photographs and drawings have), then per slot

    presence (1, a fraction: the slot's opacity), kind logits (K),
    the geometry of every kind (its normalised fields, as ``Render(kind)``
    reads them, colour and opacity excepted), colour (C fractions)

and draws slot ``s`` with alpha ``presence_s * sum_k softmax(logits_s)_k *
coverage_k(geometry_{s,k})``: a soft choice of kind, so the image loss moves
the choice as well as the shape, and no matching of slots to shapes is needed.
Cost: ``S * K`` one-shape alphas per image, as a superset ``disk*S,box*S,...``
of :class:`~shapegrad.Render` (whose depth order is fixed by kind).

Training can add two priors (``Layer.add_loss``, training only):
``presence_prior * mean(presence)`` (switch slots off unless they pay) and
``kind_prior * mean(entropy of the kind choice) / log K`` (choose a kind; at
inference the most likely kind is drawn, :meth:`SlotRender.scene`).

Example:
    >>> import numpy as np
    >>> layer = SlotRender("disk,box", slots=2, resolution=16, channels=3)
    >>> [f[0] for f in layer.fields()][:4]
    ['background', 'slot0.presence', 'slot0.kind', 'slot0.disk.center']
    >>> x = np.full((1, layer.size), 0.5, "float32")
    >>> keras.ops.convert_to_numpy(layer(x)).shape
    (1, 16, 16, 3)
    >>> shapes, background = layer.scene(x[0], keep=0.4)
    >>> [kind for kind, _ in shapes], background.tolist()
    (['disk', 'disk'], [0.5, 0.5, 0.5])
"""

import math

import keras
import numpy as np
from keras import ops

from shapegrad import _validate
from shapegrad.render.primitives import RenderSpec, fields_for, parse_kinds
from shapegrad.render.render import Render

__all__ = ["SlotRender"]


@keras.saving.register_keras_serializable(package="shapegrad")
class SlotRender(keras.layers.Layer):
    """Draw ``slots`` slots of ``kinds`` over a background (module docstring): ``(B, size)`` -> ``(B, H, W, C)``.

    Args:
        kinds: the kinds a slot may be (``"disk,box"`` or a sequence), each once.
        slots: how many slots ``S`` (the most shapes per image).
        resolution: ``N`` or ``(H, W)``.
        channels: colour channels ``C``.
        softness: edge width in pixels (``default_sharpness = 1 / softness``).
        background: a typical background colour (a number or ``C`` numbers),
            kept for the record; each image's own is read from the input.
        presence_prior, kind_prior: weights of the training priors (>= 0).
    """

    def __init__(self, kinds, slots, resolution, channels=1, softness=1.0, background=0.0, presence_prior=0.0,
                 kind_prior=0.0, **kwargs):
        kwargs.pop("autocast", None)
        super().__init__(autocast=False, **kwargs)
        kinds = parse_kinds(tuple(kinds) if isinstance(kinds, list) else kinds)
        self.kinds = kinds
        self.slots = _validate.positive_int("slots", slots)
        self.channels = _validate.positive_int("channels", channels)
        self.softness = _validate.positive_number("softness", softness)
        for name, value in (("presence_prior", presence_prior), ("kind_prior", kind_prior)):
            if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
                raise ValueError(f"Expected {name} to be a number >= 0. Received: {name}={value!r}")
        self.presence_prior, self.kind_prior = float(presence_prior), float(kind_prior)
        self.background = np.broadcast_to(np.float32(background), (self.channels,)).astype(np.float32)
        # Alpha of one shape: a one-channel Render, colour 1 and opacity 1 over 0.
        resolution = tuple(resolution) if isinstance(resolution, list) else resolution
        self._alpha = {k: Render(k, resolution, channels=1, softness=softness, background=0.0, recompute=False)
                       for k in kinds}
        first = self._alpha[kinds[0]]
        self.resolution, self.height, self.width = first.resolution, first.height, first.width
        self._specs = {k: RenderSpec(k, resolution, self.channels) for k in kinds}
        self._geometry = {k: self._specs[k].size - self.channels - 1 for k in kinds}
        self.slot_size = 1 + len(kinds) + sum(self._geometry.values()) + self.channels
        self.size = self.channels + self.slots * self.slot_size

    @property
    def default_sharpness(self):
        return 1.0 / self.softness

    def fields(self):
        """Head fields ``(name, size, activation)`` of the ``(B, size)`` input (for :class:`~shapegrad.models.ParameterHead`)."""
        out = [("background", self.channels, "fraction")]
        for s in range(self.slots):
            out += [(f"slot{s}.presence", 1, "fraction"), (f"slot{s}.kind", len(self.kinds), "identity")]
            for k in self.kinds:
                geometry = [f for f in fields_for(self._specs[k]) if not f[0].endswith((".color", ".opacity"))]
                out += [(f"slot{s}.{k}.{name.split('.', 1)[1]}", size, act) for name, size, act in geometry]
            out.append((f"slot{s}.color", self.channels, "fraction"))
        return tuple(out)

    def compute_output_shape(self, input_shape):
        return (input_shape[0], self.height, self.width, self.channels)

    def call(self, params, sharpness=None, training=None):
        b = ops.shape(params)[0]
        s, h, w, c = self.slots, self.height, self.width, self.channels
        background = params[:, :c]
        x = ops.reshape(params[:, c:], (b, s, self.slot_size))
        presence = x[:, :, 0]
        k = len(self.kinds)
        choice = ops.softmax(x[:, :, 1 : 1 + k], axis=-1)
        alpha, start = 0.0, 1 + k
        ones = ops.ones((b * s, 2), params.dtype)
        for j, kind in enumerate(self.kinds):
            g = self._geometry[kind]
            geometry = ops.reshape(x[:, :, start : start + g], (b * s, g))
            start += g
            drawn = self._alpha[kind](ops.concatenate([geometry, ones], axis=1), sharpness=sharpness)
            alpha = alpha + choice[:, :, j, None, None, None] * ops.reshape(drawn, (b, s, h, w, 1))
        color = x[:, :, start : start + c]
        alpha = presence[:, :, None, None, None] * alpha
        image = ops.broadcast_to(background[:, None, None, :], (b, h, w, c))
        for i in range(s):
            image = alpha[:, i] * color[:, i, None, None, :] + (1.0 - alpha[:, i]) * image
        if training and self.presence_prior:
            self.add_loss(self.presence_prior * ops.mean(presence))
        if training and self.kind_prior:
            entropy = -ops.sum(choice * ops.log(ops.maximum(choice, 1e-8)), axis=-1)
            self.add_loss(self.kind_prior * ops.mean(entropy) / math.log(max(k, 2)))
        return image

    def scene(self, row, keep=0.5):
        """One ``(size,)`` row -> ``([(kind, params)] back to front, background (C,))``: the slots with presence >= ``keep``.

        Each shape is drawn as its most likely kind, its parameters laid out
        as ``Render(kind, channels=C)`` reads them (geometry, colour, the
        presence as opacity). If no slot passes, the most present one is kept.
        """
        row = np.asarray(row, np.float32)
        x = row[self.channels :].reshape(self.slots, self.slot_size)
        k = len(self.kinds)
        order = [i for i in range(self.slots) if x[i, 0] >= keep] or [int(x[:, 0].argmax())]
        out = []
        for i in order:
            j = int(x[i, 1 : 1 + k].argmax())
            start = 1 + k + sum(self._geometry[kind] for kind in self.kinds[:j])
            geometry = x[i, start : start + self._geometry[self.kinds[j]]]
            color = x[i, self.slot_size - self.channels :]
            out.append((self.kinds[j], np.concatenate([geometry, color, x[i, :1]]).astype(np.float32)))
        return out, row[: self.channels].copy()

    def get_config(self):
        config = super().get_config()
        resolution = self.resolution if isinstance(self.resolution, int) else list(self.resolution)
        config.update(kinds=",".join(self.kinds), slots=self.slots, resolution=resolution,
                      channels=self.channels, softness=self.softness, background=self.background.tolist(),
                      presence_prior=self.presence_prior, kind_prior=self.kind_prior)
        return config
