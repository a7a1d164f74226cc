"""What :func:`shapegrad.learn.train.train` trains, written once: :class:`TrainConfig`.

The command line builds one from its flags, a script from keyword arguments
(``train(out, steps=500)`` builds it inside), and both are checked by the same
code before any work starts.

Example:
    >>> config = TrainConfig(shapes="disk,box", steps=250, steps_per_epoch=100)
    >>> config.epochs, config.total_steps
    (3, 300)
    >>> TrainConfig(steps=-3)
    Traceback (most recent call last):
    ...
    ValueError: Expected steps to be a positive integer. Received: steps=-3
"""

import dataclasses
import math
import numbers
import os

import keras

from shapegrad import _validate
from shapegrad.learn.models import COLORS, ENCODERS

__all__ = ["TrainConfig"]


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """How an encoder is trained with the renderer as its frozen decoder (:func:`shapegrad.learn.train.train`).

    Every field is checked when the config is made (``ValueError`` naming the
    field and what it received); what can only be checked against the decoder
    (``guide`` and ``feedback`` need a ``Render``, ``init`` must encode its
    images) is checked by ``train``. ``dataclasses.replace(config, steps=...)``
    makes a changed copy, checked again.

    Attributes:
        shapes: ``"cone"`` (the ``Cones`` layer, 5 numbers per image), a
            :class:`shapegrad.Render` spec such as ``"disk,box,cone"``, or a
            :class:`shapegrad.learn.train.Task` (e.g. an ``ImageTask``, see
            ``train_images``; then ``resolution`` and ``channels`` are the task's).
        resolution: image size ``N``.
        channels: colour channels of a Render scene (1 or 3).
        steps: training steps (batches); rounded up to whole epochs of
            ``steps_per_epoch`` (:attr:`total_steps`).
        steps_per_epoch: steps between checkpoints (and validation scores);
            at most ``steps``.
        batch_size: images per step.
        seconds: optional wall-time budget for training, per session: a
            resumed run gets the budget again.
        learning_rate: Adam's peak learning rate, reached after a linear warm-up
            over the first 10% of steps (at most 500), then cosine-decayed to 2%.
            (Without the warm-up, 1e-3 drove the head's sigmoids into
            saturation in the first steps. Gradient clipping is not used: under
            ``tf.distribute`` Keras clips each replica's gradient before the
            all-reduce, which would make ``devices=N`` train differently.)
        supervised: train on the true parameters instead of the image.
        anneal_start: initial fraction of the decoder's sharpness, in ``(0, 1]`` (1 = off).
        anneal: fraction of the steps over which the sharpness reaches 1, in ``[0, 1]``.
        loss: ``"mse"`` or ``"pyramid"`` (:func:`shapegrad.learn.models.pyramid_mse`), for the image loss.
        guide: optional weight ``W > 0`` of the guide loss
            (:func:`shapegrad.guide.guide_loss` against the true parameters of
            the synthetic scenes; ``Render`` scenes only, not with
            ``supervised``, images or ``"cone"``). The training loss is the
            image loss plus ``w * guide_loss``, ``w`` falling linearly from
            ``W`` to 0 over the first ``guide_decay`` fraction of the steps.
        guide_decay: that fraction, in ``[0, 1]`` (None: ``anneal``; 0: ``w = W``
            throughout); :attr:`guide_fraction` is the one used.
        architecture: ``"cnn"`` (:func:`shapegrad.models.build_encoder`: a
            flattened feature map read by a dense head) or ``"spatial"``
            (:func:`shapegrad.models.build_spatial_encoder`: one attention map
            per shape, positions read by soft-argmax; ``Render`` scenes).
        colors: ``"head"`` (the encoder's head predicts the colours),
            ``"solve"`` or ``"solve-grad"`` (``Render`` decoders: the encoder
            ends with a :class:`shapegrad.models.ColorSolve`, the colours
            solved from the image given its geometry and opacities, so the
            saved encoder predicts those; held constant in the gradient, or
            with ``"solve-grad"`` the gradient flows through the solve into
            the geometry, which trained worse, see
            :func:`shapegrad.models.build_spatial_encoder`).
        width: base width of the encoder's convolutions.
        feedback: learnt feedback steps after the encoder, an integer >= 0
            (:func:`shapegrad.feedback.build_feedback_encoder`: each draws the
            current guess, compares it with the image and corrects it; ``Render``
            decoders). 0: none.
        init: a trained encoder to start from (a path to ``encoder.keras`` or a
            Keras model, images of this task -> its parameters), instead of a
            new one (``width`` then sizes only the feedback steps;
            ``architecture`` and ``colors`` are unused). With ``feedback`` it is
            frozen and only the feedback steps learn; without, it is trained
            further. ``feedback`` without ``init`` trains a new encoder and the
            steps together. See :func:`shapegrad.learn.train.load_init` for what is checked.
        noise: standard deviation of the Gaussian noise on the training inputs (>= 0).
        pretrain: the user's images with a slot decoder only: the fraction, in
            ``[0, 1]``, of the epochs (or of ``seconds``, whichever comes first)
            spent on synthetic scenes drawn like the folder, guided by their
            parameters (:mod:`shapegrad.learn.pretrain`), before fine-tuning on
            the folder's images. None or 0 (the default): the images
            alone; 0.5 reads better with the encoder alone or ``encode --fast``. The guide's weight is ``guide`` (1 if None).
        pretrain_mix: the fraction, in ``[0, 1)``, of each fine-tuning batch
            still drawn synthetic and guided (the rest: the folder's images).
        fits: the user's images with a slot decoder only: how many training
            images to fit with the scene search first
            (:mod:`shapegrad.learn.teach`), whose fits then guide the encoder
            on the images themselves (half of the guided images of each
            batch; all of them with ``pretrain=0``). 0 (the default): none.
        fit_share: the most of ``seconds`` that fitting may take, in ``(0, 1)``;
            training gets the rest.
        refine_steps: test-time refinement steps (0 = encoder only).
        test_size: test images (a fixed seed, disjoint from training).
        devices: train data-parallel on this many devices
            (:func:`shapegrad.distribute.data_parallel`: JAX and TensorFlow);
            ``batch_size`` is the global batch. None: one.
        seed: seed of the data and of the weights.
    """

    shapes: object = "cone"
    resolution: int = 64
    channels: int = 1
    steps: int = 3000
    steps_per_epoch: int = 100
    batch_size: int = 64
    seconds: float | None = None
    learning_rate: float = 1e-3
    supervised: bool = False
    anneal_start: float = 0.1
    anneal: float = 0.5
    loss: str = "mse"
    guide: float | None = None
    guide_decay: float | None = None
    architecture: str = "cnn"
    colors: str = "head"
    width: int = 16
    feedback: int = 0
    init: object = None
    noise: float = 0.0
    pretrain: float | None = None
    pretrain_mix: float = 0.5
    fits: int = 0
    fit_share: float = 0.3
    refine_steps: int = 100
    test_size: int = 256
    devices: int | None = None
    seed: int = 0

    def __post_init__(self):
        if isinstance(self.shapes, str) and not self.shapes.strip():
            raise ValueError(f"Expected shapes to be 'cone', a Render spec or a Task. Received: shapes={self.shapes!r}")
        for name in ("resolution", "channels", "steps", "steps_per_epoch", "batch_size", "width", "test_size"):
            _validate.positive_int(name, getattr(self, name))
        if self.devices is not None:
            _validate.positive_int("devices", self.devices)
        for name in ("feedback", "refine_steps", "fits"):
            _at_least_zero(name, getattr(self, name))
        if isinstance(self.seed, bool) or not isinstance(self.seed, numbers.Integral):
            raise ValueError(f"Expected seed to be an integer. Received: seed={self.seed!r}")
        if not isinstance(self.supervised, bool):
            raise ValueError(f"Expected supervised to be True or False. Received: supervised={self.supervised!r}")
        _validate.positive_number("seconds", self.seconds, allow_none=True)
        _validate.positive_number("learning_rate", self.learning_rate)
        _in_range("anneal_start", self.anneal_start, "(0, 1]", lambda v: 0 < v <= 1)
        _in_range("anneal", self.anneal, "[0, 1]", lambda v: 0 <= v <= 1)
        _in_range("noise", self.noise, ">= 0", lambda v: 0 <= v < math.inf, what="a finite number")
        if self.pretrain is not None:
            _in_range("pretrain", self.pretrain, "[0, 1]", lambda v: 0 <= v <= 1)
        _in_range("pretrain_mix", self.pretrain_mix, "[0, 1)", lambda v: 0 <= v < 1)
        _in_range("fit_share", self.fit_share, "(0, 1)", lambda v: 0 < v < 1)
        _validate.one_of("loss", self.loss, ("mse", "pyramid"))
        _validate.one_of("architecture", self.architecture, ENCODERS)
        _validate.one_of("colors", self.colors, COLORS)
        if self.guide is not None:
            if self.supervised:
                raise ValueError(f"Expected guide=None with supervised=True (which trains on the parameters alone). "
                                 f"Received: guide={self.guide!r}")
            _validate.positive_number("guide", self.guide)
            if self.guide_decay is not None:
                _in_range("guide_decay", self.guide_decay, "[0, 1]", lambda v: 0 <= v <= 1)
        if self.init is not None and not isinstance(self.init, (str, os.PathLike, keras.Model)):
            raise ValueError(f"Expected init to be a Keras model or its file. Received: init={self.init!r}")

    @property
    def epoch_steps(self):
        """Steps per epoch: ``steps_per_epoch``, at most ``steps``."""
        return min(self.steps_per_epoch, self.steps)

    @property
    def epochs(self):
        """Epochs of :attr:`epoch_steps`: ``steps`` rounded up to whole epochs."""
        return math.ceil(self.steps / self.epoch_steps)

    @property
    def total_steps(self):
        """The steps trained: :attr:`epochs` whole epochs."""
        return self.epochs * self.epoch_steps

    @property
    def guide_fraction(self):
        """The fraction of the steps over which the guide's weight falls to 0 (``guide_decay``, or ``anneal``)."""
        return self.anneal if self.guide_decay is None else self.guide_decay


def _at_least_zero(name, value):
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 0:
        raise ValueError(f"Expected {name} to be an integer >= 0. Received: {name}={value!r}")


def _in_range(name, value, interval, inside, what=None):
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not inside(value):
        described = f"{what} {interval}" if what else f"in {interval}"
        raise ValueError(f"Expected {name} to be {described}. Received: {name}={value!r}")
