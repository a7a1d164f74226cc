"""Fitting primitives to images: the one compiled loop (:mod:`~shapegrad.fit.engine`), where shapes
begin (:mod:`~shapegrad.fit.starts`), the search for how many of which kinds (:mod:`~shapegrad.fit.search`),
test-time refinement of an encoder's guess (:mod:`~shapegrad.fit.refinement`) and fitting files
(:mod:`~shapegrad.fit.jobs`); the public names of the last two are re-exported here."""

from shapegrad.fit.engine import LayerEngine, SceneEngine, raw_from_params
from shapegrad.fit.jobs import MAX_SIDE, SUMMARY_COLUMNS, check_fit_options, fit_files, fittable, fitted_size
from shapegrad.fit.refinement import refine, refine_best, refine_scene, residual_starts, swap_starts
from shapegrad.learn.models import Annealed

__all__ = [
    "MAX_SIDE",
    "SUMMARY_COLUMNS",
    "Annealed",
    "LayerEngine",
    "SceneEngine",
    "check_fit_options",
    "fit_files",
    "fittable",
    "fitted_size",
    "raw_from_params",
    "refine",
    "refine_best",
    "refine_scene",
    "residual_starts",
    "swap_starts",
]
