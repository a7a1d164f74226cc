"""Images in: the user's files and folders listed (headers only), their channels, their border colour, and the
letterbox that brings an image of any size to ``N x N`` and parameters back to the image's own pixels.

Example:
    >>> import numpy as np
    >>> border_color(np.zeros((4, 4, 3), "float32")).tolist()
    [0.0, 0.0, 0.0]
"""

import math
import os

import numpy as np

__all__ = ["IMAGE_EXTENSIONS", "ImageScan", "Letterbox", "border_color", "scan_images", "to_channels"]


IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg")


class ImageScan:
    """The readable images among some files and folders, found without decoding them.

    Attributes:
        paths: readable image files, sorted within each input (folders are
            searched recursively for ``.png``, ``.jpg``, ``.jpeg``, any case).
        sizes: ``(H, W)`` of each.
        colour: whether each is colour (RGB, RGBA, palette, CMYK...) rather
            than grey (1-bit, 8-bit L/LA, 16/32-bit integer, float).
        skipped: ``[(path, reason)]`` of files that are not readable images
            (explicitly named files of any extension, and image-named files in
            folders whose header or checksums do not read).
    """

    def __init__(self, paths, sizes, colour, skipped):
        self.paths, self.sizes, self.colour, self.skipped = list(paths), list(sizes), list(colour), list(skipped)

    def __len__(self):
        return len(self.paths)

    @property
    def channels(self):
        """3 if any image is colour, else 1: what a run trained on these images draws."""
        return 3 if any(self.colour) else 1


def _probe(path):
    """``((H, W), colour)`` of an image file from its header (and PIL's ``verify``), or raise ``ValueError``."""
    from PIL import Image

    try:
        with Image.open(path) as image:
            mode, (w, h) = image.mode, image.size
            image.verify()
    except Exception as error:  # noqa: BLE001 - PIL raises many kinds for a broken file
        raise ValueError(f"{type(error).__name__}: {error}") from None
    grey = mode in ("1", "L", "LA", "F") or mode.startswith("I")
    return (h, w), not grey


def scan_images(inputs):
    """List the readable images among ``inputs`` (files and/or folders); returns an :class:`ImageScan`.

    A folder contributes every ``.png``/``.jpg``/``.jpeg`` below it (recursively,
    sorted); a file is taken whatever its extension. Files that do not read
    as images are listed in ``skipped``, not raised. Raises ``ValueError``
    for an input that does not exist.
    """
    if isinstance(inputs, (str, os.PathLike)):
        inputs = [inputs]
    candidates = []
    for item in inputs:
        item = os.fspath(item)
        if os.path.isdir(item):
            found = []
            for root, dirs, names in os.walk(item):
                dirs.sort()
                found += [os.path.join(root, n) for n in names if n.lower().endswith(IMAGE_EXTENSIONS)]
            candidates += sorted(found)
        elif os.path.isfile(item):
            candidates.append(item)
        else:
            raise ValueError(f"Expected an image file or a folder. Received: {item!r} (no such file or folder)")
    paths, sizes, colour, skipped = [], [], [], []
    for path in candidates:
        try:
            size, is_colour = _probe(path)
        except ValueError as error:
            skipped.append((path, str(error)))
            continue
        paths.append(path)
        sizes.append(size)
        colour.append(is_colour)
    return ImageScan(paths, sizes, colour, skipped)


def to_channels(image, channels):
    """``(H, W, C)`` image with ``channels`` channels: grey is repeated; colour to grey is ITU-R 601 luma."""
    image = np.asarray(image, np.float32)
    if image.shape[-1] == channels:
        return image
    if channels == 3:
        return np.repeat(image[..., :1], 3, axis=-1)
    return (image[..., :3] @ np.float32([0.299, 0.587, 0.114]))[..., None]


def border_color(image):
    """``(C,)`` median colour of an image's outermost pixels: the background of a drawing."""
    image = np.asarray(image)
    border = np.concatenate([image[0], image[-1], image[:, 0], image[:, -1]])
    return np.median(border, axis=0).astype(np.float32)


class Letterbox:
    """How an ``H x W`` image sits in the ``N x N`` training frame, and the way back.

    The rule (``"letterbox"``): scale so that the longer side is ``N`` pixels,
    keeping the aspect ratio (``h = round(H N / max(H, W))``, likewise ``w``,
    at least 1), resample (PIL bilinear, antialiased when shrinking), and
    centre in the frame, padding the rest with the image's border colour
    (:func:`border_color`). Shapes keep their proportions (a plain resize
    would turn disks into ellipses), and the padding looks like background.

    Pixel ``(i, j)`` of the frame is the point ``((i - top + 0.5) H / h - 0.5,
    (j - left + 0.5) W / w - 0.5)`` of the image (pixel centres, as the
    resampling maps them); lengths scale by ``sqrt(H W / (h w))``.

    ``pad=False``: no frame, the resize alone (the frame is the ``h x w``
    image, ``top = left = 0``), as ``shapegrad fit`` shrinks a large image.

    Example:
        >>> box = Letterbox(40, 80, 16)
        >>> (box.inner, box.top, box.left)
        ((8, 16), 4, 0)
        >>> Letterbox(40, 80, 16, pad=False).apply(np.zeros((40, 80, 3))).shape
        (8, 16, 3)
    """

    rule = "letterbox"

    def __init__(self, height, width, resolution, pad=True):
        self.height, self.width = int(height), int(width)
        self.resolution = n = int(resolution)
        longer = max(self.height, self.width)
        self.inner = (max(1, round(self.height * n / longer)), max(1, round(self.width * n / longer)))
        self.frame = (n, n) if pad else self.inner
        self.top = (self.frame[0] - self.inner[0]) // 2
        self.left = (self.frame[1] - self.inner[1]) // 2

    def apply(self, image):
        """``(H, W, C)`` -> ``(N, N, C)`` float32, padded with the border colour (``pad=False``: ``(h, w, C)``)."""
        from PIL import Image

        image = np.asarray(image, np.float32)
        h, w = self.inner
        out = np.empty((*self.frame, image.shape[-1]), np.float32)
        out[:] = border_color(image)
        for c in range(image.shape[-1]):
            plane = Image.fromarray(np.ascontiguousarray(image[..., c]), mode="F")
            if (h, w) != image.shape[:2]:
                plane = plane.resize((w, h), Image.BILINEAR)
            out[self.top : self.top + h, self.left : self.left + w, c] = np.asarray(plane)
        return np.clip(out, 0.0, 1.0)

    def to_image(self, spec, params, image_spec):
        """Normalised ``(B, P)`` params of ``spec`` (the ``N x N`` frame) -> those of ``image_spec`` (``H x W``).

        ``image_spec`` must lay out the same shapes at ``(H, W)``. Positions
        are moved and scaled as above, sizes scaled, everything else kept.
        """
        params = np.asarray(params, np.float64)
        fy = self.height / self.inner[0]
        fx = self.width / self.inner[1]
        length = math.sqrt(fy * fx)
        out = np.zeros((len(params), image_spec.size), np.float64)
        for s, t in zip(spec.slices, image_spec.slices):
            natural = s.field.to_natural(params[:, s.slice], spec.resolution)
            if s.field.kind == "position":
                natural = natural.copy()
                natural[:, 0::2] = (natural[:, 0::2] - self.top + 0.5) * fy - 0.5
                natural[:, 1::2] = (natural[:, 1::2] - self.left + 0.5) * fx - 0.5
            elif s.field.kind == "size":
                natural = natural * length
            out[:, t.slice] = t.field.from_natural(natural, image_spec.resolution)
        return out.astype(np.float32)
