"""Model pieces: the encoder, its parameter head, the annealed decoder, the encoder–decoder, the image loss.

The encoder is a small, fast CNN: coordinate channels (so that "where" is easy
to read out), strided 3x3 convolutions, a dense layer, and a
:class:`ParameterHead` that maps raw outputs to *valid* normalised parameters
(sigmoid for fractions, unit 2-vectors for directions), field by field as
:func:`fields_for` reads them off a renderer's ``spec``. :class:`Annealed`
wraps a frozen renderer whose edges sharpen over training;
:func:`build_autoencoder` chains encoder and renderer; :func:`pyramid_mse` is
a multi-scale image loss.

Example:
    >>> import numpy as np
    >>> from shapegrad import Cones
    >>> encoder = build_encoder((32, 32, 1), fields_for(Cones(32).spec), width=8)
    >>> params = keras.ops.convert_to_numpy(encoder(np.zeros((2, 32, 32, 1), "float32")))
    >>> params.shape, bool(np.allclose(np.linalg.norm(params[:, 2:4], axis=1), 1.0, atol=1e-5))
    ((2, 5), True)
"""

import keras
from keras import layers, ops

from shapegrad import _validate
from shapegrad.ops import safe
from shapegrad.render import raster
from shapegrad.render.primitives import RenderSpec, fields_for  # fields_for: re-exported, it was defined here
from shapegrad.render.render import Render

__all__ = [
    "CONE_FIELDS",
    "fields_for",
    "CoordinateChannels",
    "ParameterHead",
    "Annealed",
    "build_encoder",
    "SpatialReadout",
    "AnchoredHead",
    "build_spatial_encoder",
    "ColorSolve",
    "COLORS",
    "ENCODERS",
    "build_autoencoder",
    "pyramid_mse",
]

_ACTIVATIONS = ("fraction", "direction", "identity")


# The head fields of the Cones layer (``fields_for(Cones(N).spec)``, for any N): apex, axis, half-angle.
CONE_FIELDS = fields_for(RenderSpec("cone", 1, appearance=False))


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


def build_encoder(input_shape, fields, width=16, depth=4, dense=256, name="encoder", colors="head", renderer=None):
    """A CNN mapping images ``(B, H, W, C)`` in ``[0, 1]`` to normalised parameters ``(B, P)``.

    Coordinate channels, ``depth`` stride-2 3x3 ReLU convolutions of widths
    ``width, 2 width, 4 width, ...`` (capped at ``8 * width``), a dense ReLU
    layer and a :class:`ParameterHead`. At 64 px, width 16: 0.6 M weights,
    about 5 M multiply-adds per image. ``colors``, ``renderer``: as
    :func:`build_spatial_encoder` (``fields`` must then be ``fields_for(renderer.spec)``).
    """
    if colors != "head":
        _check_colors(colors, renderer, getattr(renderer, "spec", None))
        if tuple(fields) != fields_for(renderer.spec):
            raise ValueError(f"Expected the fields of renderer.spec with colors={colors!r}. Received: fields={fields!r}")
    head = ParameterHead(fields, name="head")
    inputs = keras.Input(input_shape, name="images")
    x = CoordinateChannels(name="coords")(inputs)
    for k in range(depth):
        x = layers.Conv2D(min(width * 2**k, 8 * width), 3, strides=2, padding="same", activation="relu")(x)
    x = layers.Flatten()(x)
    x = layers.Dense(dense, activation="relu")(x)
    raw = layers.Dense(head.size, name="raw")(x)
    params = head(raw)
    if colors != "head":
        params = ColorSolve(renderer, gradient=colors == "solve-grad", name="colors")([params, inputs])
    return keras.Model(inputs, params, name=name)


@keras.saving.register_keras_serializable(package="shapegrad")
class SpatialReadout(layers.Layer):
    """Where each shape is, read from a feature map: a spatial softmax per shape (soft-argmax).

    Inputs ``[features (B, h, w, F), logits (B, h, w, K)]``; output ``(B, K, 2 + F)``:
    for each of the ``K`` logit maps, its softmax over the ``h w`` cells
    weights the cells' centres ``((i + 1/2) / h, (j + 1/2) / w)`` (the
    shape's expected position, as fractions of the image, row first) and the
    features (what is there). Translation-equivariant, and smooth in the
    logits: a position is read to sub-cell accuracy.
    """

    def compute_output_shape(self, input_shapes):
        features, logits = input_shapes
        return (features[0], logits[-1], 2 + features[-1])

    def call(self, inputs):
        features, logits = inputs
        h, w, k = logits.shape[1], logits.shape[2], logits.shape[3]
        flat = ops.reshape(logits, (-1, h * w, k))
        weights = ops.softmax(flat, axis=1)  # (B, hw, K)
        rows = (ops.cast(ops.arange(h), weights.dtype) + 0.5) / h
        cols = (ops.cast(ops.arange(w), weights.dtype) + 0.5) / w
        grid = ops.reshape(ops.stack(ops.meshgrid(rows, cols, indexing="ij"), axis=-1), (h * w, 2))
        where = ops.einsum("bnk,nc->bkc", weights, grid)
        what = ops.einsum("bnk,bnf->bkf", weights, ops.reshape(features, (-1, h * w, features.shape[-1])))
        return ops.concatenate([where, what], axis=-1)


@keras.saving.register_keras_serializable(package="shapegrad")
class AnchoredHead(ParameterHead):
    """A :class:`ParameterHead` whose position fields are offsets from each shape's anchor.

    Inputs ``[raw (B, P), anchors (B, K, 2)]``. A position field of shape
    ``k`` (``anchors_of[i] = k`` for field ``i``; ``-1``: not anchored, as
    :class:`ParameterHead`) is ``anchor_k + reach * tanh(raw)`` for each of
    its points (a centre, or every vertex of a polygon), so a shape starts
    where the encoder's attention for it is and its points spread from there.
    """

    def __init__(self, fields, anchors_of, reach=0.5, **kwargs):
        super().__init__(fields, **kwargs)
        self.anchors_of = tuple(int(a) for a in anchors_of)
        if len(self.anchors_of) != len(self.fields):
            raise ValueError(f"Expected one anchor per field ({len(self.fields)}). Received: anchors_of={anchors_of!r}")
        self.reach = float(reach)

    def compute_output_shape(self, input_shapes):
        return input_shapes[0]

    def call(self, inputs):
        raw, anchors = inputs
        base = super().call(raw)
        parts, start = [], 0
        for (_, size, _), anchor in zip(self.fields, self.anchors_of):
            x = base[:, start : start + size]
            if anchor >= 0:
                point = anchors[:, anchor, :]
                x = ops.tile(point, (1, size // 2)) + self.reach * ops.tanh(raw[:, start : start + size])
            parts.append(x)
            start += size
        return ops.concatenate(parts, axis=-1)

    def get_config(self):
        config = super().get_config()
        config.update(anchors_of=list(self.anchors_of), reach=self.reach)
        return config


def build_spatial_encoder(input_shape, spec, width=16, dense=128, name="encoder", colors="head", renderer=None):
    """A CNN that finds each shape of ``spec`` with its own attention map: images ``(B, H, W, C)`` -> ``(B, P)``.

    Coordinate channels, two stride-2 3x3 convolutions (to ``H / 4``) with a
    3x3 one after each and two dilated ones (dilation 2 and 4: each cell sees
    the whole 64 px image), then one logit map per shape of ``spec`` (a
    :class:`~shapegrad.primitives.RenderSpec`: ``Render(...).spec``) and a
    :class:`SpatialReadout`: per shape, where its map points (soft-argmax)
    and the features there, with the image's own colour there (block means).
    Each shape's parameters come from its own dense
    layers on that, the anchor and the image's mean features; an
    :class:`AnchoredHead` places its position fields around the anchor. The
    shapes of a scene are told apart by kind (one map per shape), not by a
    fixed place in a flattened feature vector.

    ``colors="solve"`` ends the encoder with a :class:`ColorSolve` of
    ``renderer`` (a :class:`shapegrad.Render` of ``spec``, required then):
    the colours are solved from the image given the predicted geometry and
    opacities, the head's own colours only a prior, and held constant in the
    gradient (``ColorSolve(gradient=False)``); ``"solve-grad"``: the same with
    the gradient flowing through the solve into the geometry. ``"head"``
    (default): the head's colours. On the README's guided run (2200 steps,
    disk+box+triangle at 64 px), encoder alone: IoU 0.769 with ``"solve"``,
    0.607 with ``"solve-grad"`` (its geometry learnt worse: disk centre 7.3 px
    median against 0.86), 0.669 with ``"head"``.
    """
    _check_colors(colors, renderer, spec)
    fields = fields_for(spec)
    anchors_of = [s.shape if s.field.kind == "position" else -1 for s in spec.slices]
    inputs = keras.Input(input_shape, name="images")
    x = CoordinateChannels(name="coords")(inputs)
    for k, (channels, stride, dilation) in enumerate(
        [(width, 2, 1), (2 * width, 1, 1), (2 * width, 2, 1), (4 * width, 1, 1), (4 * width, 1, 2), (4 * width, 1, 4)]
    ):
        x = layers.Conv2D(channels, 3, strides=stride, dilation_rate=dilation, padding="same", activation="relu",
                          name=f"conv{k}")(x)
    logits = layers.Conv2D(spec.num_shapes, 1, name="where")(x)
    # The readout also pools the image itself (block means at the map's size): a shape's colour where it is.
    factor = input_shape[0] // x.shape[1]
    colour = layers.AveragePooling2D(factor, name="colour")(inputs) if factor > 1 else inputs
    read = SpatialReadout(name="readout")([layers.Concatenate(name="what")([x, colour]), logits])  # (B, K, 2 + F + C)
    context = layers.GlobalAveragePooling2D(name="context")(x)
    raws = []
    for k in range(spec.num_shapes):
        size = sum(s.stop - s.start for s in spec.fields_of(k))
        shape_k = layers.Concatenate(name=f"shape{k}_in")([layers.Flatten()(read[:, k : k + 1, :]), context])
        h = layers.Dense(dense, activation="relu", name=f"shape{k}_dense")(shape_k)
        raws.append(layers.Dense(size, name=f"shape{k}_raw")(h))
    raw = layers.Concatenate(name="raw")(raws) if len(raws) > 1 else raws[0]
    anchors = read[:, :, :2]
    params = AnchoredHead(fields, anchors_of, name="head")([raw, anchors])
    if colors != "head":
        params = ColorSolve(renderer, gradient=colors == "solve-grad", name="colors")([params, inputs])
    return keras.Model(inputs, params, name=name)


# Where an encoder's colours come from: its head ("head") or a ColorSolve from the image, the solved
# colours held constant in the gradient ("solve") or the gradient flowing through the solve into the
# geometry ("solve-grad"); see build_spatial_encoder for how they compare.
COLORS = ("head", "solve", "solve-grad")


def _check_colors(colors, renderer, spec):
    _validate.one_of("colors", colors, COLORS)
    if colors != "head":
        if not isinstance(renderer, Render) or spec is None or renderer.spec.size != spec.size or \
                renderer.shapes != spec.shapes:
            raise ValueError(f"Expected renderer to be the Render of the encoder's spec with colors={colors!r}. "
                             f"Received: renderer={renderer!r}")


@keras.saving.register_keras_serializable(package="shapegrad")
class ColorSolve(layers.Layer):
    """Replace the colours of a :class:`shapegrad.Render`'s parameters by those that best redraw the image.

    Inputs ``[params (B, P), images (B, H, W, C)]``; output ``(B, P)``: ``params``
    with every shape's colour field replaced by
    :func:`shapegrad.raster.solve_colors` of the image given the shapes'
    alphas (``renderer.alphas(params)``: the geometry and opacities of
    ``params``, at the renderer's own sharpness), clipped to ``[0, 1]``;
    ``params``' own colours are the solve's prior (what a shape that shows
    nowhere keeps). Every other field passes through unchanged. With the
    alphas fixed the drawing is linear in the colours, so the solve is a
    ``K x K`` system per image (three reweighted least-squares solves after
    the first by default): cheap, exact for exact geometry, and smooth, so
    the image loss's gradient reaches the geometry through it. Why: colour
    errors move whole shapes across the foreground threshold of
    ``metrics.iou``.

    Args:
        renderer: the :class:`shapegrad.Render` that draws ``params`` (its
            shapes, resolution ``H x W``, channels ``C``, softness, composite
            and background are used; frozen).
        iterations, scale, ridge: as :func:`shapegrad.raster.solve_colors`.
        gradient: ``True``: the gradient flows through the solve into the
            geometry and opacities; ``False``: the solved colours are constants
            to the gradient (``stop_gradient``), so a loss on the colours
            teaches nothing and the geometry learns only from how the image
            drawn with them looks. Encoders train better with ``False``
            (:func:`build_spatial_encoder`'s ``colors="solve"``).

    Example:
        >>> import numpy as np
        >>> from shapegrad import Render
        >>> render = Render("disk,box", resolution=16, channels=3)
        >>> true = render.spec.sample(2, seed=1)
        >>> images = keras.ops.convert_to_numpy(render(true))
        >>> guess = true.copy()
        >>> for k in range(2):
        ...     guess[:, render.spec.get(k, "color").slice] = 0.5  # grey
        >>> solved = keras.ops.convert_to_numpy(ColorSolve(render)([guess, images]))
        >>> bool(np.abs(solved - true).max() < 0.01)  # unless a shape is hidden: its prior stays
        True
    """

    def __init__(self, renderer, iterations=3, scale=0.1, ridge=1e-3, gradient=True, **kwargs):
        super().__init__(**kwargs)
        if not isinstance(renderer, Render):
            raise ValueError(f"Expected renderer to be a shapegrad.Render. Received: renderer={renderer!r}")
        self.renderer = renderer
        self.renderer.trainable = False
        if isinstance(iterations, bool) or not isinstance(iterations, int) or iterations < 0:
            raise ValueError(f"Expected iterations to be an integer >= 0. Received: iterations={iterations!r}")
        self.iterations = iterations
        self.scale = _validate.positive_number("scale", scale)
        if isinstance(ridge, bool) or not isinstance(ridge, (int, float)) or not ridge >= 0:
            raise ValueError(f"Expected ridge to be a number >= 0. Received: ridge={ridge!r}")
        self.ridge = float(ridge)
        if not isinstance(gradient, bool):
            raise ValueError(f"Expected gradient to be True or False. Received: gradient={gradient!r}")
        self.gradient = gradient

    def build(self, input_shapes):
        params, images = input_shapes
        self.renderer.check_input(params)
        expected = (self.renderer.height, self.renderer.width, self.renderer.channels)
        if tuple(images[1:]) != expected:
            raise ValueError(f"Expected images of shape (batch, {expected[0]}, {expected[1]}, {expected[2]}) "
                             f"(the renderer's). Received: images of shape {tuple(images)}")
        self.built = True

    def compute_output_shape(self, input_shapes):
        return input_shapes[0]

    def call(self, inputs):
        params, images = inputs
        alphas, prior = self.renderer.alphas(params)
        colors = raster.solve_colors(alphas, images, prior, self.renderer.background, self.renderer.composite,
                                     self.iterations, self.scale, self.ridge)
        colors = ops.cast(ops.clip(colors, 0.0, 1.0), params.dtype)
        if not self.gradient:
            colors = ops.stop_gradient(colors)
        parts, start = [], 0
        for s in self.renderer.spec.slices:
            if s.field.kind == "color":
                if start < s.start:
                    parts.append(params[:, start : s.start])
                parts.append(colors[:, s.shape, :])
                start = s.stop
        if start < self.renderer.spec.size:
            parts.append(params[:, start:])
        return ops.concatenate(parts, axis=-1)

    def get_config(self):
        config = super().get_config()
        config.update(renderer=keras.saving.serialize_keras_object(self.renderer), iterations=self.iterations,
                      scale=self.scale, ridge=self.ridge, gradient=self.gradient)
        return config

    @classmethod
    def from_config(cls, config):
        config["renderer"] = keras.saving.deserialize_keras_object(config["renderer"])
        return cls(**config)


# The encoders train() can build: "cnn" (build_encoder) and "spatial" (build_spatial_encoder, Render scenes).
ENCODERS = ("cnn", "spatial")


@keras.saving.register_keras_serializable(package="shapegrad")
class Annealed(layers.Layer):
    """A renderer whose edges sharpen over training: coarse to fine.

    While training, the renderer's sharpness is multiplied by ``scale``, which
    grows geometrically from ``start`` to 1 over the first ``ramp_steps``
    training steps and stays 1 afterwards. The step counter is a
    non-trainable variable updated inside the compiled step, so the schedule
    advances every step on every backend (JAX's trainer keeps variables inside
    its loop between callbacks, so a callback-driven schedule would only move
    once per epoch there), and it is checkpointed with the model, so a resumed
    run continues it. At inference the renderer draws with its own sharpness.

    Works with any renderer whose ``call`` takes ``sharpness=`` and that has
    a ``default_sharpness`` (``Cones``: ``N`` per radian or 2 per pixel;
    ``Render``: ``1 / softness`` per pixel).

    Args:
        renderer: a ``Cones`` or ``Render`` layer (frozen).
        start: the initial scale, in ``(0, 1]`` (1: no annealing).
        ramp_steps: training steps to reach scale 1.
    """

    def __init__(self, renderer, start=1.0, ramp_steps=0, **kwargs):
        super().__init__(**kwargs)
        if isinstance(start, bool) or not isinstance(start, (int, float)) or not 0 < start <= 1:
            raise ValueError(f"Expected start to be a number in (0, 1]. Received: start={start!r}")
        if isinstance(ramp_steps, bool) or not isinstance(ramp_steps, (int, float)) or ramp_steps < 0:
            raise ValueError(f"Expected ramp_steps to be a number >= 0. Received: ramp_steps={ramp_steps!r}")
        self.renderer = renderer
        self.renderer.trainable = False
        self.start = float(start)
        self.ramp_steps = float(ramp_steps)

    def build(self, input_shape):
        # Written inside replica contexts under tf.distribute: every replica computes the same value.
        self.step = self.add_weight(
            shape=(), initializer="zeros", trainable=False, name="step", aggregation="only_first_replica"
        )
        self.scale = self.add_weight(
            shape=(), initializer="ones", trainable=False, name="scale", aggregation="only_first_replica"
        )
        self.built = True

    def compute_output_shape(self, input_shape):
        return self.renderer.compute_output_shape(input_shape)

    def call(self, params, training=None):
        if training and self.start < 1.0 and self.ramp_steps > 0:
            progress = ops.minimum(self.step / self.ramp_steps, 1.0)
            scale = self.start * ops.power(1.0 / self.start, progress)
            self.step.assign(self.step + 1.0)
            self.scale.assign(scale)
            return self.renderer(params, sharpness=scale * self.renderer.default_sharpness)
        return self.renderer(params)

    def get_config(self):
        config = super().get_config()
        config.update(
            renderer=keras.saving.serialize_keras_object(self.renderer), start=self.start, ramp_steps=self.ramp_steps
        )
        return config

    @classmethod
    def from_config(cls, config):
        config["renderer"] = keras.saving.deserialize_keras_object(config["renderer"])
        return cls(**config)


def build_autoencoder(encoder, renderer, name="autoencoder"):
    """The encoder followed by the renderer, frozen: images -> parameters -> images."""
    renderer.trainable = False
    inputs = keras.Input(encoder.input_shape[1:], name="images")
    return keras.Model(inputs, renderer(encoder(inputs)), name=name)


def pyramid_mse(y_true, y_pred, levels=3):
    """Mean squared error of the images and of their 2x, 4x, ... average-pooled versions.

    Pooled images see a shape from further away, so the loss keeps a gradient
    where a sharp edge alone would not.
    """
    loss = ops.mean((y_true - y_pred) ** 2)
    a, b = y_true, y_pred
    for _ in range(levels):
        a = ops.average_pool(a, 2, 2)
        b = ops.average_pool(b, 2, 2)
        loss = loss + ops.mean((a - b) ** 2)
    return loss / (levels + 1)
