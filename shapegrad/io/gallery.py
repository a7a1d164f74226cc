"""``index.html``: each input picture beside its SVG, drawn by the browser itself, with its count, PSNR and time."""

import html
import os

from shapegrad.io import files

__all__ = ["GalleryEntry", "write_gallery"]


class GalleryEntry:
    """One row of the page.

    Args:
        title: what the row is (the file's name, and e.g. the count).
        picture: path of the input picture (PNG), relative to the page's folder.
        svg: path of its ``shapes.svg``, relative to the page's folder (None: none was written).
        height, width: the picture's size in pixels; both are shown at
            ``scale`` times it (the SVG scales, the PNG is shown pixelated).
        notes: ``{label: value}`` shown under the row (count, PSNR, seconds...).
    """

    def __init__(self, title, picture, svg, height, width, notes=None):
        self.title, self.picture, self.svg = title, picture, svg
        self.height, self.width = int(height), int(width)
        self.notes = dict(notes or {})


_PAGE = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{title}</title>
<style>
body {{ font-family: sans-serif; margin: 1em; }}
figure {{ display: inline-block; margin: 0 1em 1em 0; vertical-align: top; }}
img {{ border: 1px solid #ccc; image-rendering: pixelated; }}
td {{ padding: 0 1em 1em 0; vertical-align: top; }}
</style></head>
<body data-loaded="pending">
<h1>{title}</h1>
<table>
{rows}
</table>
<script>
// Says in <body data-loaded> whether every picture and SVG loaded, and at the size it was given.
window.addEventListener("load", () => {{
  // clientWidth/Height: the drawn size inside the border (getBoundingClientRect adds the border).
  const bad = [...document.images].filter(img => !img.complete || img.naturalWidth === 0
    || img.clientWidth !== Number(img.getAttribute("width"))
    || img.clientHeight !== Number(img.getAttribute("height")));
  document.body.dataset.loaded = bad.length ? "failed: " + bad.map(img => img.getAttribute("src")).join(" ") : "all";
}});
</script>
</body></html>
"""


def write_gallery(path, entries, title="shapegrad fit", scale=None):
    """Write ``path`` (``index.html``): one row per :class:`GalleryEntry`, input left, SVG right. Returns ``path``.

    ``scale``: how many times the pictures' size they are shown at (default:
    about 256 px on the longer side). Once loaded, the page sets
    ``<body data-loaded>`` to ``"all"``, or to ``"failed: ..."`` naming the
    images that did not load or draw at their size (what the browser test reads).

    Example:
        >>> import tempfile, os
        >>> folder = tempfile.mkdtemp()
        >>> page = write_gallery(os.path.join(folder, "index.html"),
        ...                      [GalleryEntry("a.png", "a/input.png", "a/shapes.svg", 30, 40, {"psnr": "21.3 dB"})])
        >>> 'src="a/shapes.svg"' in open(page).read()
        True
    """
    rows = []
    for e in entries:
        k = scale or max(1, round(256 / max(e.height, e.width)))
        w, h = e.width * k, e.height * k
        notes = ", ".join(f"{html.escape(str(label))} {html.escape(str(value))}" for label, value in e.notes.items())
        rows.append(
            f'<tr><td colspan="2"><b>{html.escape(e.title)}</b> {notes}</td></tr>\n'
            f'<tr><td><figure><img src="{html.escape(e.picture)}" width="{w}" height="{h}" alt="input">'
            f"<figcaption>input</figcaption></figure></td>\n"
            + (f'<td><figure><img src="{html.escape(e.svg)}" width="{w}" height="{h}" alt="shapes">'
               f"<figcaption>shapes.svg</figcaption></figure></td></tr>" if e.svg else "<td>no shapes</td></tr>")
        )
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    return files.write_text(path, _PAGE.format(title=html.escape(title), rows="\n".join(rows)))
