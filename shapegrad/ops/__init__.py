"""The mathematics under everything: NaN-safe functions (:mod:`~shapegrad.ops.safe`), the dtype and
min/max helpers the renderers share (:mod:`~shapegrad.ops.numerics`), and per-backend gradients and
compilation (:mod:`~shapegrad.ops.autodiff`). Nothing here knows of files, plots or argparse."""
