"""Encoders that read primitives' parameters out of images, and the encoder–decoder around a frozen renderer.

The encoder is a small, fast CNN: coordinate channels (so that "where" is easy
to read out), strided 3x3 convolutions, a dense layer, and a
:class:`ParameterHead` that maps raw outputs to *valid* normalised parameters
(sigmoid for fractions, unit 2-vectors for directions).

Example:
    >>> import numpy as np
    >>> encoder = build_encoder((32, 32, 1), CONE_FIELDS, width=8)
    >>> params = keras.ops.convert_to_numpy(encoder(np.zeros((2, 32, 32, 1), "float32")))
    >>> params.shape, bool(np.allclose(np.linalg.norm(params[:, 2:4], axis=1), 1.0, atol=1e-5))
    ((2, 5), True)
"""

import keras
from keras import layers, ops

from shapegrad import _validate, safe

__all__ = [
    "CONE_FIELDS",
    "fields_for",
    "CoordinateChannels",
    "ParameterHead",
    "build_encoder",
    "build_autoencoder",
]

# The normalised parameters of one cone, in the Cones layer's order:
# (name, size, activation). "fraction": sigmoid into (0, 1); "direction": unit vector.
CONE_FIELDS = (("apex", 2, "fraction"), ("axis", 2, "direction"), ("aperture", 1, "fraction"))

_ACTIVATIONS = ("fraction", "direction", "identity")


def fields_for(spec):
    """Head fields for a :class:`shapegrad.render.RenderSpec`: unit vectors for directions, sigmoids for the rest.

    Every other field kind (positions, sizes, angles, colours, opacities) has
    the normalised range ``[0, 1]``.
    """
    return tuple(
        (f"{s.kind}{s.instance}.{s.field.name}", s.field.size, "direction" if s.field.kind == "direction" else "fraction")
        for s in spec.slices
    )


@keras.saving.register_keras_serializable(package="shapegrad")
class CoordinateChannels(layers.Layer):
    """Append two channels holding each pixel's row and column as fractions in ``[0, 1)``.

    ``(B, H, W, C) -> (B, H, W, C + 2)``; pixel ``(i, j)`` gets ``(i / H, j / W)``,
    the same normalisation as the primitives' positions.
    """

    def compute_output_shape(self, input_shape):
        return (*input_shape[:-1], input_shape[-1] + 2)

    def call(self, images):
        shape = ops.shape(images)
        h, w = images.shape[1], images.shape[2]
        rows = ops.cast(ops.arange(h), images.dtype) / h
        cols = ops.cast(ops.arange(w), images.dtype) / w
        grid = ops.stack(ops.meshgrid(rows, cols, indexing="ij"), axis=-1)[None]
        grid = ops.broadcast_to(grid, (shape[0], h, w, 2))
        return ops.concatenate([images, grid], axis=-1)


@keras.saving.register_keras_serializable(package="shapegrad")
class ParameterHead(layers.Layer):
    """Map raw network outputs to valid normalised parameters, field by field.

    Args:
        fields: sequence of ``(name, size, activation)``; ``activation`` is
            ``"fraction"`` (sigmoid into ``(0, 1)``), ``"direction"`` (unit
            vector, via :func:`shapegrad.safe.safe_normalize` so a zero raw
            output is harmless) or ``"identity"``. The input has
            ``sum(size)`` features; so has the output.
    """

    def __init__(self, fields, **kwargs):
        super().__init__(**kwargs)
        fields = tuple((str(n), int(s), str(a)) for n, s, a in fields)
        for name, size, activation in fields:
            _validate.one_of(f"activation of field {name!r}", activation, _ACTIVATIONS)
            _validate.positive_int(f"size of field {name!r}", size)
        self.fields = fields
        self.size = sum(size for _, size, _ in fields)

    def compute_output_shape(self, input_shape):
        return input_shape

    def call(self, raw):
        parts, start = [], 0
        for _, size, activation in self.fields:
            x = raw[:, start : start + size]
            if activation == "fraction":
                x = ops.sigmoid(x)
            elif activation == "direction":
                x = safe.safe_normalize(x, fallback=ops.one_hot(0, size, dtype=x.dtype))
            parts.append(x)
            start += size
        return ops.concatenate(parts, axis=-1)

    def get_config(self):
        config = super().get_config()
        config.update(fields=[list(f) for f in self.fields])
        return config


def build_encoder(input_shape, fields, width=16, depth=4, dense=256, name="encoder"):
    """A CNN mapping images ``(B, H, W, C)`` in ``[0, 1]`` to normalised parameters ``(B, P)``.

    Coordinate channels, ``depth`` stride-2 3x3 ReLU convolutions of widths
    ``width, 2 width, 4 width, ...`` (capped at ``8 * width``), a dense ReLU
    layer and a :class:`ParameterHead`. At 64 px, width 16: 0.6 M weights,
    about 5 M multiply-adds per image.
    """
    head = ParameterHead(fields, name="head")
    inputs = keras.Input(input_shape, name="images")
    x = CoordinateChannels(name="coords")(inputs)
    for k in range(depth):
        x = layers.Conv2D(min(width * 2**k, 8 * width), 3, strides=2, padding="same", activation="relu")(x)
    x = layers.Flatten()(x)
    x = layers.Dense(dense, activation="relu")(x)
    raw = layers.Dense(head.size, name="raw")(x)
    return keras.Model(inputs, head(raw), name=name)


def build_autoencoder(encoder, renderer, name="autoencoder"):
    """The encoder followed by the renderer, frozen: images -> parameters -> images."""
    renderer.trainable = False
    inputs = keras.Input(encoder.input_shape[1:], name="images")
    return keras.Model(inputs, renderer(encoder(inputs)), name=name)
