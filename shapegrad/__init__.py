"""shapegrad: differentiable geometric primitives on Keras 3, with gradients that are never NaN.

This module re-exports the public names and, by importing :mod:`shapegrad.layers`,
:mod:`shapegrad.render` and :mod:`shapegrad.models`, registers every Keras class a
saved ``.keras`` file of ours may hold (``Cones``, ``Render``, ``CoordinateChannels``,
``ParameterHead``, ``SpatialReadout``, ``AnchoredHead``, ``ColorSolve``, ``Annealed``, :mod:`shapegrad.feedback`'s ``DrawGuess``, ``MaskedMean`` and ``Nudge``, :mod:`shapegrad.guide`'s ``GuideWeight``, :mod:`shapegrad.slots`' ``SlotRender`` and :mod:`shapegrad.encode`'s ``EncoderInfo``), so ``keras.saving.load_model`` needs only
``import shapegrad``.
"""

from shapegrad import _startup  # noqa: F401 - first: the command line's quiet TensorFlow start-up
from shapegrad import allocator, doctor, encode, guide, models, primitives, raster, safe, sdf
from shapegrad.allocator import keep_freed_memory
from shapegrad.encode import Encoder, encode_files
from shapegrad.layers import Cones
from shapegrad.models import Annealed
from shapegrad.primitives import RenderSpec
from shapegrad.render import Render
from shapegrad.scenefit import SceneFit, fit_scene  # after Render: scenefit imports it
from shapegrad import feedback  # noqa: E402 - after models and render, which it builds on
from shapegrad.slots import SlotRender
from shapegrad.safe import (
    angle_between,
    safe_acos,
    safe_atan2,
    safe_div,
    safe_log,
    safe_norm,
    safe_normalize,
    safe_sqrt,
)

__version__ = "0.1.0"

__all__ = [
    "Annealed",
    "Cones",
    "Encoder",
    "Render",
    "RenderSpec",
    "SceneFit",
    "SlotRender",
    "angle_between",
    "allocator",
    "fit_scene",
    "doctor",
    "encode",
    "encode_files",
    "feedback",
    "guide",
    "keep_freed_memory",
    "models",
    "primitives",
    "raster",
    "safe",
    "safe_acos",
    "safe_atan2",
    "safe_div",
    "safe_log",
    "safe_norm",
    "safe_normalize",
    "safe_sqrt",
    "sdf",
]
