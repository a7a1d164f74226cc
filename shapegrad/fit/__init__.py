"""Fitting primitives to images: the one compiled loop (:mod:`~shapegrad.fit.engine`), where shapes
begin (:mod:`~shapegrad.fit.starts`), the search for how many of which kinds (:mod:`~shapegrad.fit.search`),
and polishing an encoder's guess and fitting files (:mod:`~shapegrad.fit.polish`, whose public names
are re-exported here, as ``shapegrad.fit`` was that module)."""

from shapegrad.fit.polish import (
    MAX_SIDE,
    SUMMARY_COLUMNS,
    Annealed,
    check_fit_options,
    fit_file,
    fit_files,
    fit_images,
    fittable,
    fitted_size,
    raw_from_params,
    refine,
    refine_best,
    refine_scene,
    residual_starts,
    swap_starts,
)

__all__ = [
    "MAX_SIDE",
    "SUMMARY_COLUMNS",
    "Annealed",
    "check_fit_options",
    "fit_file",
    "fit_files",
    "fit_images",
    "fittable",
    "fitted_size",
    "raw_from_params",
    "refine",
    "refine_best",
    "refine_scene",
    "residual_starts",
    "swap_starts",
]
