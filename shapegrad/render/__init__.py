"""Drawing primitives: the parameter schema (:mod:`~shapegrad.render.primitives`), signed distances
(:mod:`~shapegrad.render.sdf`), coverage and compositing (:mod:`~shapegrad.render.raster`), and the
layers on top: :class:`~shapegrad.render.render.Render`, :class:`~shapegrad.render.cones.Cones` and
:class:`~shapegrad.render.slots.SlotRender`."""

import importlib


def __getattr__(name):
    """``shapegrad.render.Render`` and the other names of :mod:`shapegrad.render.render`: ``shapegrad.render``
    was that module before the sub-packages (kept for one release)."""
    if name.startswith("__"):
        raise AttributeError(name)
    return getattr(importlib.import_module("shapegrad.render.render"), name)
