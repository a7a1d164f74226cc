"""Fitting primitives to images: the one compiled loop (:mod:`~shapegrad.fit.engine`), where shapes
begin (:mod:`~shapegrad.fit.starts`; a path's outline: :mod:`~shapegrad.fit.outlines`), the search
for how many of which kinds (:mod:`~shapegrad.fit.search`), test-time refinement of an encoder's
guess (:mod:`~shapegrad.fit.refinement`) and fitting files (:mod:`~shapegrad.fit.jobs`); the public
names of the last two are re-exported here."""

from shapegrad.fit.engine import LayerEngine, SceneEngine, raw_from_params
from shapegrad.fit.jobs import (MAX_SIDE, SUMMARY_COLUMNS, check_fit_options, fit_files, fit_picture_files, fittable,
                                fitted_size)
from shapegrad.fit.pictures import PICTURE_DEFAULTS, PictureFit, fit_picture
from shapegrad.fit.refinement import refine, refine_best, refine_scene, residual_starts, swap_starts
from shapegrad.learn.models import Annealed

__all__ = [
    "MAX_SIDE",
    "PICTURE_DEFAULTS",
    "SUMMARY_COLUMNS",
    "PictureFit",
    "Annealed",
    "LayerEngine",
    "SceneEngine",
    "check_fit_options",
    "fit_files",
    "fit_picture",
    "fit_picture_files",
    "fittable",
    "fitted_size",
    "raw_from_params",
    "refine",
    "refine_best",
    "refine_scene",
    "residual_starts",
    "swap_starts",
]
