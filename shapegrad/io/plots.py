"""Figures: image grids and training curves, written to PNG (matplotlib's Agg backend, no screen)."""

import keras
import numpy as np

from shapegrad.io.files import atomic_write
from shapegrad.render.render import Render

__all__ = ["save_image", "image_grid", "outlines", "overlay", "save_reconstructions", "save_curves"]


def save_image(path, image, scale=1):
    """Write ``(H, W)``, ``(H, W, 1)`` or ``(H, W, 3)`` values in ``[0, 1]`` to a PNG (atomically)."""
    pil = _to_pil(image, scale)
    return atomic_write(path, lambda tmp: pil.save(tmp, format="PNG"))


def _to_pil(image, scale=1):
    from PIL import Image

    image = np.clip(np.asarray(image, np.float64), 0, 1)
    if image.ndim == 3 and image.shape[-1] == 1:
        image = image[..., 0]
    pil = Image.fromarray(np.round(image * 255).astype(np.uint8))
    if scale != 1:
        pil = pil.resize((pil.width * scale, pil.height * scale), Image.NEAREST)
    return pil


def image_grid(rows, pad=2, fill=1.0):
    """Tile a list of rows, each a sequence of ``(H, W, C)`` images, into one ``(H', W', C)`` image."""
    rows = [[np.asarray(im, np.float64) for im in row] for row in rows]
    h, w, c = rows[0][0].shape
    channels = max(im.shape[-1] for row in rows for im in row)
    cols = max(len(row) for row in rows)
    out = np.full((len(rows) * (h + pad) + pad, cols * (w + pad) + pad, channels), fill)
    for r, row in enumerate(rows):
        for k, im in enumerate(row):
            y, x = pad + r * (h + pad), pad + k * (w + pad)
            out[y : y + h, x : x + w] = im if im.shape[-1] == channels else np.repeat(im, channels, -1)
    return out


def outlines(renderer, row):
    """``(K, H, W)`` boolean outlines of each shape of ``renderer`` drawn alone from its parameters ``row``
    (coverage > 0.5, minus its interior): what :func:`overlay` draws over an image."""
    masks = []
    for k in range(renderer.spec.num_shapes):
        fields = renderer.spec.fields_of(k)
        alone = Render([(fields[0].kind, 1)], renderer.resolution, channels=1, softness=renderer.softness)
        values = np.concatenate([row[f.slice] for f in fields if f.field.kind not in ("color", "opacity")])
        values = np.concatenate([values, [1.0, 1.0]])[None].astype("float32")
        inside = keras.ops.convert_to_numpy(alone(values))[0, :, :, 0] > 0.5
        core = inside.copy()
        core[1:] &= inside[:-1]
        core[:-1] &= inside[1:]
        core[:, 1:] &= inside[:, :-1]
        core[:, :-1] &= inside[:, 1:]
        masks.append(inside & ~core)
    return np.stack(masks)


def overlay(image, outlines):
    """RGB ``(H, W, 3)``: ``image`` (grey or colour) with each ``(K, H, W)`` outline in its own colour."""
    image = np.asarray(image, np.float64)
    out = np.repeat(image, 3, axis=-1) if image.shape[-1] == 1 else image[..., :3].copy()
    palette = np.array([[0.9, 0.1, 0.1], [0.1, 0.6, 0.95], [0.1, 0.8, 0.2], [0.95, 0.7, 0.1], [0.7, 0.2, 0.9]])
    for k, mask in enumerate(outlines):
        out[mask] = palette[k % len(palette)]
    return out


def save_reconstructions(path, inputs, *reconstructions, labels=None, scale=3):
    """One column per example: the input on top, then each reconstruction below it; each row named on its left.

    ``labels``: one name per row (default ``"input"``, ``"reconstruction 1"``,
    ...), written in a white band left of the grid, level with its row.
    """
    from PIL import Image, ImageDraw, ImageFont

    rows = [list(inputs)] + [list(r) for r in reconstructions]
    if labels is None:
        labels = ["input"] + [f"reconstruction {i + 1}" for i in range(len(reconstructions))]
    labels = [str(label) for label in labels]
    if len(labels) != len(rows):
        raise ValueError(f"Expected labels to name each of the {len(rows)} rows. Received: labels={labels}")
    pad = 2
    grid = _to_pil(image_grid(rows, pad=pad), scale)
    font = ImageFont.load_default()
    measure = ImageDraw.Draw(grid)
    band = max(measure.textbbox((0, 0), label, font=font)[2] for label in labels) + 8
    out = Image.new(grid.mode, (band + grid.width, grid.height), "white")
    out.paste(grid, (band, 0))
    draw = ImageDraw.Draw(out)
    row_height = (grid.height - pad * scale) / len(rows)
    for r, label in enumerate(labels):
        top, bottom = measure.textbbox((0, 0), label, font=font)[1::2]
        y = pad * scale + (r + 0.5) * row_height - (top + bottom) / 2
        draw.text((4, y), label, fill="black", font=font)
    return atomic_write(path, lambda tmp: out.save(tmp, format="PNG"))


def save_curves(path, history, title=""):
    """Plot the loss and every validation metric of a ``{name: [per-epoch values]}`` history."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    metrics = [k for k in history if k != "loss" and not k.startswith("val_loss")]
    fig, axes = plt.subplots(1, 1 + len(metrics), figsize=(4 * (1 + len(metrics)), 3.2), squeeze=False)
    axes = axes[0]
    epochs = np.arange(1, len(history["loss"]) + 1)
    axes[0].semilogy(epochs, history["loss"], color="C0")
    axes[0].set_title("training loss")
    for ax, name in zip(axes[1:], metrics):
        values = np.asarray(history[name], np.float64)
        (ax.semilogy if np.all(values > 0) and "iou" not in name else ax.plot)(epochs[: len(values)], values, color="C1")
        ax.set_title(name.replace("_", " "))
    for ax in axes:
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    try:
        return atomic_write(path, lambda tmp: fig.savefig(tmp, dpi=100, format="png"))
    finally:
        plt.close(fig)
