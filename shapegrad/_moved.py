"""The module paths of the release before the sub-packages, as aliases of the modules now.

``import shapegrad.train`` and ``from shapegrad.safe import safe_norm`` keep working for one
release: the old name resolves to the very module object at its new path (so a monkeypatch or an
``isinstance`` through either name sees the same thing). Loaded on first use, not at
``import shapegrad``: the old paths cost nothing until someone uses one. ``shapegrad.fit`` and
``shapegrad.bench`` are packages now; they re-export what the modules of those names held.
"""

import importlib
import importlib.abc
import importlib.util
import sys

__all__ = ["MOVED", "install"]

# old dotted name -> new dotted name
MOVED = {
    f"shapegrad.{old}": f"shapegrad.{new}"
    for old, new in {
        "safe": "ops.safe",
        "primitives": "render.primitives",
        "sdf": "render.sdf",
        "raster": "render.raster",
        "render": "render.render",
        "layers": "render.cones",
        "slots": "render.slots",
        "scenefit": "fit.search",  # which imports SceneEngine and noise_level too
        "models": "learn.models",
        "feedback": "learn.feedback",
        "guide": "learn.guide",
        "data": "learn.data",
        "train": "learn.train",
        "distribute": "learn.distribute",
        "metrics": "learn.metrics",
        "encode": "learn.encode",
        "files": "io.files",
        "plots": "io.plots",
        "bench_report": "bench.report",
    }.items()
    if old not in ("render",)  # shapegrad.render is the package now
}


class _Alias(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Finds an old name and hands back the module at its new path (first in ``sys.meta_path``, so no stale copy
    of the old file elsewhere on the path, say another checkout installed editable, is found instead)."""

    def find_spec(self, name, path=None, target=None):
        return importlib.util.spec_from_loader(name, self) if name in MOVED else None

    def create_module(self, spec):
        module = importlib.import_module(MOVED[spec.name])
        self._spec = module.__spec__  # the import machinery writes the alias's spec over it next
        return module

    def exec_module(self, module):
        module.__spec__ = self._spec  # already executed under its new name, and known by it


def install():
    """Put the alias finder first in ``sys.meta_path`` (once); it answers for the old names only."""
    if not any(isinstance(f, _Alias) for f in sys.meta_path):
        sys.meta_path.insert(0, _Alias())


def old_attribute(name):
    """``shapegrad.<name>`` for an old module name, or ``AttributeError``."""
    if f"shapegrad.{name}" in MOVED:
        return importlib.import_module(f"shapegrad.{name}")
    raise AttributeError(f"module 'shapegrad' has no attribute {name!r}")
