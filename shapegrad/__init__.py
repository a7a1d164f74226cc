"""shapegrad: differentiable geometric primitives on Keras 3, with gradients that are never NaN."""

from shapegrad import doctor, raster, safe, sdf
from shapegrad.layers import Cones
from shapegrad.render import Render
from shapegrad.scenefit import SceneFit, fit_scene  # after Render: scenefit imports it
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
    "Cones",
    "Render",
    "SceneFit",
    "angle_between",
    "fit_scene",
    "doctor",
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
