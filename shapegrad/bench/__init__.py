"""Timing the renderers against their baselines (:mod:`~shapegrad.bench.timing`, whose names are
re-exported here) and writing the report from the result files (:mod:`~shapegrad.bench.report`)."""

from shapegrad.bench.timing import *  # noqa: F403 - shapegrad.bench was this module
from shapegrad.bench.timing import __all__  # noqa: F401
