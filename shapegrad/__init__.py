"""shapegrad: differentiable geometric primitives on Keras 3, with gradients that are never NaN.

This module re-exports the public names and, by importing :mod:`shapegrad.layers`,
:mod:`shapegrad.render` and :mod:`shapegrad.models`, registers every Keras class a
saved ``.keras`` file of ours may hold (``Cones``, ``Render``, ``CoordinateChannels``,
``ParameterHead``, ``SpatialReadout``, ``AnchoredHead``, ``ColorSolve``, ``Annealed``, :mod:`shapegrad.feedback`'s ``DrawGuess``, ``MaskedMean`` and ``Nudge``, :mod:`shapegrad.guide`'s ``GuideWeight``, :mod:`shapegrad.slots`' ``SlotRender`` and :mod:`shapegrad.encode`'s ``EncoderInfo``), so ``keras.saving.load_model`` needs only
``import shapegrad``.
"""

from shapegrad import _startup  # noqa: F401 - first: the command line's quiet TensorFlow start-up
from shapegrad import _moved
from shapegrad import allocator, doctor
from shapegrad.learn import encode, guide, models
from shapegrad.render import primitives, raster, sdf
from shapegrad.ops import safe
from shapegrad.allocator import keep_freed_memory
from shapegrad.learn.encode import Encoder, encode_files
from shapegrad.render.cones import Cones
from shapegrad.learn.models import Annealed
from shapegrad.render.primitives import RenderSpec
from shapegrad.render.render import Render
from shapegrad.fit.search import SceneFit, fit_scene
from shapegrad.learn import feedback  # noqa: E402 - after models and render, which it builds on
from shapegrad.render.slots import SlotRender
from shapegrad.ops.safe import (
    angle_between,
    safe_acos,
    safe_atan2,
    safe_div,
    safe_log,
    safe_norm,
    safe_normalize,
    safe_sqrt,
)

_moved.install()  # shapegrad.safe, shapegrad.train, ...: the module paths before the sub-packages

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


def __getattr__(name):
    """``shapegrad.train``, ``shapegrad.data``, ...: the modules' paths before the sub-packages."""
    return _moved.old_attribute(name)
