"""Feedback steps: an encoder that draws its own guess, compares it with the image and corrects it.

A scene encoder reads a set of shapes in one pass and lands a few pixels off
(the README's guided encoder: disk centres 0.9 px, box centres 2.4 px, triangle
vertices 4 px at 64 px). :func:`build_feedback_encoder` puts ``steps`` *feedback steps* after a
trained encoder, in the spirit of iterative error feedback (Carreira et al.,
2016) and render-and-compare pose refinement: each step draws the current
guess with the frozen renderer (:class:`DrawGuess`: the image and each shape's
alpha, no gradient), reads the image, the drawing and their difference with a
small CNN, pools its features under each shape's alpha (:class:`MaskedMean`)
and at a learnt attention map per shape (:class:`shapegrad.models.SpatialReadout`),
and moves each shape's parameters by a predicted correction (:class:`Nudge`,
which keeps them valid); the colours are then solved from the image again
(:class:`shapegrad.models.ColorSolve`). The steps share their weights, and
their last layer starts at zero, so an untrained feedback encoder returns the
encoder's own guess. It is still one forward pass per image: no per-image
optimisation, unlike :func:`shapegrad.fit_scene`.

Trained self-supervised, like the encoder (``shapegrad train --feedback N
--init RUN/encoder.keras``: the encoder frozen, only the steps learn).

Example:
    >>> import keras, numpy as np
    >>> from shapegrad import Render
    >>> from shapegrad.learn.models import build_spatial_encoder
    >>> render = Render("disk,box", resolution=16, channels=3)
    >>> base = build_spatial_encoder((16, 16, 3), render.spec, width=4, dense=8, colors="solve", renderer=render)
    >>> encoder = build_feedback_encoder(base, render, steps=2, width=4, dense=8)
    >>> images = keras.ops.convert_to_numpy(render(render.spec.sample(2, seed=0)))
    >>> guess, first = encoder.predict(images, verbose=0), base.predict(images, verbose=0)
    >>> geometry = np.concatenate([np.arange(s.start, s.stop) for s in render.spec.slices if s.field.kind != "color"])
    >>> guess.shape, bool(np.allclose(guess[:, geometry], first[:, geometry], atol=1e-3))  # untrained: unchanged
    ((2, 18), True)
"""

import keras
from keras import layers, ops

from shapegrad import _validate
from shapegrad.learn.models import ColorSolve, CoordinateChannels, SpatialReadout
from shapegrad.ops import safe
from shapegrad.render import raster
from shapegrad.render.render import Render

__all__ = ["DrawGuess", "MaskedMean", "Nudge", "build_feedback_encoder"]

# Below this, Nudge's fraction update keeps x: at x = 0 or 1 against a sigmoid that underflows it has no
# defined value, and its gradient divides by the square of the denominator (1e-20 squared flushes to 0 in float32).
_TINY = 1e-15


@keras.saving.register_keras_serializable(package="shapegrad")
class DrawGuess(layers.Layer):
    """Draw parameters with a frozen :class:`shapegrad.Render`, for an encoder to look at; no gradient.

    ``(B, P) -> (B, H, W, C + K)``: the drawn image's ``C`` channels, then each
    of the ``K`` shapes' alpha (``renderer.alphas``: opacity x coverage,
    before compositing). Inputs and outputs are held constant to the gradient
    (``stop_gradient``): the drawing is something to look at, as the image is.
    """

    def __init__(self, renderer, **kwargs):
        super().__init__(**kwargs)
        if not isinstance(renderer, Render):
            raise ValueError(f"Expected renderer to be a shapegrad.Render. Received: renderer={renderer!r}")
        self.renderer = renderer
        self.renderer.trainable = False

    def build(self, input_shape):
        self.renderer.check_input(input_shape)
        self.built = True

    def compute_output_shape(self, input_shape):
        r = self.renderer
        return (input_shape[0], r.height, r.width, r.channels + r.spec.num_shapes)

    def call(self, params):
        params = ops.stop_gradient(params)
        r = self.renderer
        alphas, colors = r.alphas(params)  # the image is their composite: the shapes are drawn once
        background = ops.convert_to_tensor(r.background, alphas.dtype)
        drawn = raster.composite(alphas, colors, None, background, r.composite, axis=1)
        return ops.stop_gradient(ops.concatenate([drawn, ops.transpose(alphas, (0, 2, 3, 1))], axis=-1))

    def get_config(self):
        config = super().get_config()
        config.update(renderer=keras.saving.serialize_keras_object(self.renderer))
        return config

    @classmethod
    def from_config(cls, config):
        config["renderer"] = keras.saving.deserialize_keras_object(config["renderer"])
        return cls(**config)


@keras.saving.register_keras_serializable(package="shapegrad")
class MaskedMean(layers.Layer):
    """Each shape's mean features under its alpha, and how much of the map it covers.

    Inputs ``[features (B, h, w, F), alphas (B, h, w, K)]``; output
    ``(B, K, F + 1)``: ``sum(alpha_k f) / (sum(alpha_k) + 0.01)`` and
    ``sum(alpha_k) / (h w)``. A shape that shows nowhere reads zeros (the
    ``0.01`` keeps the division finite, with a finite gradient).
    """

    def compute_output_shape(self, input_shapes):
        features, alphas = input_shapes
        return (features[0], alphas[-1], features[-1] + 1)

    def call(self, inputs):
        features, alphas = inputs
        mass = ops.sum(alphas, axis=(1, 2))  # (B, K)
        total = ops.einsum("bhwk,bhwf->bkf", alphas, features)
        cells = alphas.shape[1] * alphas.shape[2]
        return ops.concatenate([total / (mass[..., None] + 0.01), mass[..., None] / cells], axis=-1)


@keras.saving.register_keras_serializable(package="shapegrad")
class Nudge(layers.Layer):
    """Move normalised parameters by raw corrections, field by field, so that they stay valid.

    Inputs ``[params (B, P), delta (B, P)]``; output ``(B, P)``. Per field of
    ``kinds`` (``(kind, size)`` in the order of the parameters, e.g. from
    ``[(s.field.kind, s.field.size) for s in spec.slices]``):

    - ``"position"``: ``x + reach * tanh(delta)`` (each point moves at most
      ``reach``, a fraction of the image, per step);
    - ``"direction"``: ``normalize(x + delta)`` (:func:`shapegrad.safe.safe_normalize`;
      the zero vector gives axis 0);
    - every other kind (sizes, angles, colours, opacities, in ``[0, 1]``):
      ``sigmoid(logit(x) + delta)``, computed as
      ``x s / (x s + (1 - x) (1 - s))`` with ``s = sigmoid(delta)``: no
      logit, so ``x = 0`` and ``1`` (a saturated sigmoid's output, a shape
      switched off) stay exact, with a finite gradient; where the
      denominator is below ``1e-15`` (``x`` within that of 0 or 1 and
      ``|delta| > ~35``) ``x`` is kept.

    ``delta = 0`` returns ``params`` (directions: if they are unit vectors).

    Example:
        >>> import numpy as np
        >>> layer = Nudge([("position", 2), ("size", 1)], reach=0.1)
        >>> out = layer([np.float32([[0.5, 0.5, 0.0]]), np.float32([[100.0, -100.0, 3.0]])])
        >>> np.round(keras.ops.convert_to_numpy(out), 4).tolist()  # moved at most 0.1; a size of 0 stays 0
        [[0.6, 0.4, 0.0]]
    """

    def __init__(self, kinds, reach=0.15, **kwargs):
        super().__init__(**kwargs)
        self.kinds = tuple((str(k), int(n)) for k, n in kinds)
        for kind, size in self.kinds:
            if size < 1:
                raise ValueError(f"Expected every field size to be a positive integer. Received: kinds={kinds!r}")
        self.reach = _validate.positive_number("reach", reach)
        self.size = sum(n for _, n in self.kinds)

    def build(self, input_shapes):
        for shape in input_shapes:
            if shape[-1] != self.size:
                raise ValueError(f"Expected params and delta with {self.size} features (the fields' sizes). "
                                 f"Received: input_shapes={[tuple(s) for s in input_shapes]}")
        self.built = True

    def compute_output_shape(self, input_shapes):
        return input_shapes[0]

    def call(self, inputs):
        params, delta = inputs
        parts, start = [], 0
        for kind, size in self.kinds:
            x, d = params[:, start : start + size], delta[:, start : start + size]
            if kind == "position":
                x = x + self.reach * ops.tanh(d)
            elif kind == "direction":
                x = safe.safe_normalize(x + d, fallback=ops.one_hot(0, size, dtype=x.dtype))
            else:  # sigmoid(logit(x) + d), written without the logit: exact and smooth at x = 0 and 1
                up, down = x * ops.sigmoid(d), (1.0 - x) * ops.sigmoid(-d)
                total = up + down  # tiny only near x = 0 or 1 against a huge |d| (sigmoid(-35) = 6e-16)
                ok = ops.abs(total) > _TINY
                x = ops.where(ok, up / ops.where(ok, total, 1.0), x)
            parts.append(x)
            start += size
        return ops.concatenate(parts, axis=-1)

    def get_config(self):
        config = super().get_config()
        config.update(kinds=[list(k) for k in self.kinds], reach=self.reach)
        return config


def build_feedback_encoder(encoder, renderer, steps=2, width=16, dense=128, reach=0.15, name="encoder"):
    """``encoder`` followed by ``steps`` feedback steps: images ``(B, H, W, C)`` -> parameters ``(B, P)``.

    Args:
        encoder: a Keras model, images ``(B, H, W, C)`` in ``[0, 1]`` ->
            ``renderer``'s normalised parameters ``(B, P)`` (e.g. a trained
            :func:`shapegrad.models.build_spatial_encoder`). Used as it is: set
            ``encoder.trainable = False`` to train only the steps.
        renderer: the :class:`shapegrad.Render` that draws the parameters
            (frozen; its ``H x W``, channels, softness, background are used).
        steps: feedback steps (weights shared between them).
        width: base width of each step's CNN (3x3 convolutions of ``width``,
            ``2 width``, ``4 width`` channels at ``H/2`` and ``H/4``, the last
            two dilated: a receptive field of 67 px; the mean features over the
            map are the global context).
        dense: units of each shape's hidden layer.
        reach: the most a position moves per step (:class:`Nudge`).
        name: the model's name.

    Returns:
        A Keras model, images ``(B, H, W, C)`` -> parameters ``(B, P)``, with
        ``encoder`` inside it (see the module's example).

    Raises:
        ValueError: ``renderer`` is not a ``Render``, ``encoder`` is not a Keras
        model of its images and parameters, or ``steps``, ``width``, ``dense``
        are not positive integers.

    Each step reads ``[image, drawing, image - drawing, alphas, coordinates]``;
    per shape, its masked mean features, a soft-argmax readout of its own
    attention map, the mean features and its current parameters feed a dense
    layer and a zero-initialised correction (so the untrained steps change
    nothing). The colours are solved again after each step
    (:class:`shapegrad.models.ColorSolve`, held constant in the gradient).
    """

    if not isinstance(renderer, Render):
        raise ValueError(f"Expected renderer to be a shapegrad.Render (feedback steps draw its parameters). "
                         f"Received: renderer={renderer!r}")
    if not isinstance(encoder, keras.Model):
        raise ValueError(f"Expected encoder to be a Keras model. Received: encoder={encoder!r}")
    spec = renderer.spec
    shape = (renderer.height, renderer.width, renderer.channels)
    if tuple(encoder.input_shape[1:]) != shape or tuple(encoder.output_shape[1:]) != (spec.size,):
        raise ValueError(f"Expected an encoder of images {shape} -> ({spec.size},) parameters (the renderer's). "
                         f"Received: encoder with input shape {encoder.input_shape} and output shape "
                         f"{encoder.output_shape}")
    steps = _validate.positive_int("steps", steps)
    width = _validate.positive_int("width", width)
    dense = _validate.positive_int("dense", dense)
    k_shapes, channels = spec.num_shapes, renderer.channels

    convs = [
        layers.Conv2D(c, 3, strides=s, dilation_rate=d, padding="same", activation="relu", name=f"feedback_conv{i}")
        for i, (c, s, d) in enumerate(
            [(width, 2, 1), (2 * width, 1, 1), (2 * width, 2, 1), (4 * width, 1, 1), (4 * width, 1, 2), (4 * width, 1, 4)]
        )
    ]
    where = layers.Conv2D(k_shapes, 1, name="feedback_where")
    hidden, correction = [], []
    for k in range(k_shapes):
        size = sum(s.stop - s.start for s in spec.fields_of(k))
        hidden.append(layers.Dense(dense, activation="relu", name=f"feedback_shape{k}_dense"))
        correction.append(layers.Dense(size, kernel_initializer="zeros", name=f"feedback_shape{k}_delta"))
    draw = DrawGuess(renderer, name="draw")
    nudge = Nudge([(s.field.kind, s.field.size) for s in spec.slices], reach=reach, name="nudge")
    solve = ColorSolve(renderer, gradient=False, name="resolve")

    inputs = keras.Input(shape, name="images")
    params = encoder(inputs)
    for _ in range(steps):
        guess = draw(params)
        drawn, alphas = guess[..., :channels], guess[..., channels:]
        x = layers.Concatenate()([inputs, guess, layers.Subtract()([inputs, drawn])])
        x = CoordinateChannels()(x)
        for conv in convs:
            x = conv(x)
        pooled = layers.AveragePooling2D(4, padding="same")(alphas)  # the convolutions' H/4 ("same": any H)
        masked = MaskedMean()([x, pooled])  # (B, K, F + 1)
        read = SpatialReadout()([x, where(x)])  # (B, K, 2 + F)
        context = layers.GlobalAveragePooling2D()(x)
        deltas = []
        for k in range(k_shapes):
            fields = spec.fields_of(k)
            mine = params[:, fields[0].start : fields[-1].stop]
            z = layers.Concatenate()(
                [layers.Flatten()(masked[:, k : k + 1]), layers.Flatten()(read[:, k : k + 1]), context, mine]
            )
            deltas.append(correction[k](hidden[k](z)))
        delta = layers.Concatenate()(deltas) if k_shapes > 1 else deltas[0]
        params = solve([nudge([params, delta]), inputs])
    return keras.Model(inputs, params, name=name)
