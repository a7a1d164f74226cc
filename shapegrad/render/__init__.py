"""Drawing primitives: the parameter schema (:mod:`~shapegrad.render.primitives`), signed distances
(:mod:`~shapegrad.render.sdf`), coverage and compositing (:mod:`~shapegrad.render.raster`), and the
layers on top: :class:`~shapegrad.render.render.Render`, :class:`~shapegrad.render.cones.Cones` and
:class:`~shapegrad.render.slots.SlotRender`."""
