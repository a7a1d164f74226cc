"""SVG files in, PNG files out: the job behind ``shapegrad render icon.svg`` and ``shapegrad render DIR --out DIR``.

Its one concern is the files: listing the SVGs among the inputs, drawing each
with :func:`shapegrad.io.svg_read.read_svg`, writing one PNG each, and going on
after a file that cannot be drawn (one line on stderr, as ``fit`` and
``encode`` do: ``shapegrad render: skipped PATH: WHY``). Skipped or
approximated SVG features are printed as ``shapegrad render: warning: ...``.
"""

import os
import sys
import warnings

import keras
import numpy as np

from shapegrad.io import plots
from shapegrad.io.svg_read import SVGError, SVGWarning, read_svg

__all__ = ["list_svg_files", "render_svg", "render_svg_files"]


def list_svg_files(inputs):
    """The ``.svg`` files among ``inputs`` (files, and folders searched recursively, sorted), in order.

    Raises ``ValueError`` for an input that does not exist.
    """
    out = []
    for item in inputs:
        if os.path.isdir(item):
            found = []
            for folder, _, names in os.walk(item):
                found += [os.path.join(folder, n) for n in names if n.lower().endswith(".svg")]
            out += sorted(found)
        elif os.path.exists(item):
            out.append(item)
        else:
            raise ValueError(f"Expected an SVG file or a folder. Received: {item!r} (no such file or folder)")
    return out


def render_svg(path, size=None):
    """``(image (H, W, 3) float in [0, 1], [warning messages])`` of one SVG file, on white."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", SVGWarning)
        renderer, params = read_svg(path, size=size)
        image = np.asarray(keras.ops.convert_to_numpy(renderer(params))[0], np.float64)
    return image, [str(w.message) for w in caught if issubclass(w.category, SVGWarning)]


def render_svg_files(inputs, out, size=None, force=False, command="render"):
    """Draw every SVG among ``inputs`` to a PNG.

    ``out``: a ``.png`` file when ``inputs`` is one SVG file, else a folder,
    which gets ``<stem>.png`` per file (``<stem>-2.png``... for repeated
    stems). An output that exists is skipped unless ``force``.

    Returns ``{"done": n, "skipped": [(path, why)], "warned": n}``; each skip and
    warning is printed to stderr, prefixed ``shapegrad <command>:``.

    Example:
        >>> import os, tempfile
        >>> folder = tempfile.mkdtemp()
        >>> _ = open(os.path.join(folder, "a.svg"), "w").write(
        ...     '<svg xmlns="http://www.w3.org/2000/svg" width="8" height="8"><circle cx="4" cy="4" r="3"/></svg>')
        >>> _ = open(os.path.join(folder, "b.svg"), "w").write("not xml")
        >>> result = render_svg_files([folder], os.path.join(folder, "png"))  # prints: skipped .../b.svg: ...
        >>> result["done"], [os.path.basename(p) for p, _ in result["skipped"]]
        (1, ['b.svg'])
    """
    paths = list_svg_files(inputs)
    single = len(inputs) == 1 and not os.path.isdir(inputs[0]) and out.lower().endswith(".png")
    if not single:
        os.makedirs(out, exist_ok=True)
    done, skipped, warned, names = 0, [], 0, set()
    for path in paths:
        if single:
            target = out
        else:
            stem = os.path.splitext(os.path.basename(path))[0]
            name, k = stem, 1
            while name in names:
                k += 1
                name = f"{stem}-{k}"
            names.add(name)
            target = os.path.join(out, name + ".png")
        if os.path.exists(target) and not force:
            why = f"{target} exists (use --force to overwrite)"
        else:
            try:
                image, notes = render_svg(path, size=size)
            except SVGError as error:
                why = str(error).removeprefix(f"{path}: ")
            else:
                for note in notes:
                    print(f"shapegrad {command}: warning: {note}", file=sys.stderr)
                warned += bool(notes)
                plots.save_image(target, image)
                done += 1
                continue
        skipped.append((path, why))
        print(f"shapegrad {command}: skipped {path}: {why}", file=sys.stderr)
    return {"done": done, "skipped": skipped, "warned": warned}
