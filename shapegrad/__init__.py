"""shapegrad: differentiable geometric primitives on Keras 3, with gradients that are never NaN.

This module re-exports the public names (``__all__``) and, by importing
:mod:`shapegrad.render.cones`, :mod:`shapegrad.render.render`, :mod:`shapegrad.render.slots`,
:mod:`shapegrad.learn.models`, :mod:`shapegrad.learn.feedback`, :mod:`shapegrad.learn.guide` and
:mod:`shapegrad.learn.encode`, registers every Keras class a saved ``.keras`` file of ours may hold
(``Cones``, ``Render``, ``SlotRender``, ``CoordinateChannels``, ``ParameterHead``, ``SpatialReadout``,
``AnchoredHead``, ``ColorSolve``, ``Annealed``, ``DrawGuess``, ``MaskedMean``, ``Nudge``,
``GuideWeight`` and ``EncoderInfo``, all under the package name ``shapegrad``), so
``keras.saving.load_model`` needs only ``import shapegrad``.

The sub-packages, bottom up: ``ops`` (NaN-safe math, dtype helpers, per-backend autodiff),
``render`` (schema, distances, kernels, compositing, the layers), ``fit`` (the engine, starts,
search), ``learn`` (models, data, training, the encoder on new images), ``io`` (files, plots),
``doctor``, ``bench``; :mod:`shapegrad.cli` on top. The module paths before the sub-packages
(``shapegrad.safe``, ``shapegrad.train``, ...) still work for one release (:mod:`shapegrad._moved`).
"""

from shapegrad import _startup  # noqa: F401 - first: the command line's quiet TensorFlow start-up
from shapegrad import _moved, allocator, doctor
from shapegrad.allocator import keep_freed_memory
from shapegrad.fit.pictures import PictureFit, fit_picture
from shapegrad.fit.search import SceneFit, fit_scene
from shapegrad.io.svg_read import SVGError, SVGWarning, read_svg
from shapegrad.learn import encode, feedback, guide, models
from shapegrad.learn.config import TrainConfig
from shapegrad.learn.encode import Encoder, encode_files
from shapegrad.learn.models import Annealed
from shapegrad.ops import safe
from shapegrad.render import primitives, raster, sdf
from shapegrad.render.cones import Cones
from shapegrad.render.primitives import RenderSpec
from shapegrad.render.render import Render
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
    "PictureFit",
    "Render",
    "RenderSpec",
    "SVGError",
    "SVGWarning",
    "SceneFit",
    "SlotRender",
    "TrainConfig",
    "angle_between",
    "allocator",
    "fit_picture",
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
    "read_svg",
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
