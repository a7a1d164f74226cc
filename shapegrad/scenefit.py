"""Fit scenes of primitives of unknown kinds and count to images, fast: arrays in, arrays out.

Two layers:

- :class:`SceneEngine`: ONE compiled optimisation loop (Adam on raw
  parameters through :class:`~shapegrad.Render` with edges sharpened over the
  run, loss = each item's image MSE) that serves every stage of a search.
  Items (candidate scenes of all images, restarts...) share one batch axis and
  are independent: each has its own shapes, background and Adam state, and
  the loss is the *sum* of the items' MSEs. A batch is held as per-kind
  *instance tables* (one row of raw parameters per shape, all items' shapes
  of one kind together, so each kind's distance is computed only for the
  shapes that have it) and a ``(B, D)`` *depth table* of instance indices,
  back to front, that composites each item's shapes in its own order.
  Adding a shape, changing its kind or its depth only edits these tables
  on the host: nothing is rebuilt, and the compiled loop is re-traced only
  for a new table size (sizes are rounded up to a short ladder, so a whole
  search uses a handful).
- :func:`fit_scene`: finds, per image, how many shapes (up to
  ``max_shapes``) of which ``kinds`` explain it, their depth order and their
  parameters (greedy forward selection, see below). ``shapes="disk*2,box"``
  fits exactly those shapes instead.

Search (per image, all images and candidates batched): estimate the
background (median of the border) and the noise level ``sigma`` (median
absolute Laplacian, floored at 1/255); then repeatedly find the largest blob
of the residual (image minus the current fit), start one new shape of every
kind there (from the blob's moments: centre, axes, colour), both on top of
the others and behind them, refine every candidate with all its shapes, and
keep the best; then try swapping the depth of every overlapping pair and
changing the kind of every shape; finally polish at full resolution. Images
larger than ``coarse_above`` pixels (either side) are searched at half
resolution.

The rule for one more shape: a candidate with ``k + 1`` shapes replaces the
fit with ``k`` when it lowers the summed squared error (over the ``n = H W C``
numbers of the image) by more than

    ``gain = max(p * log(n) * sigma^2 * bic_weight, min_area * C * min_contrast^2)``

where ``p`` is the new shape's number of parameters: the BIC penalty of
``p`` more parameters under Gaussian noise of the estimated level, and a
floor that asks a shape to explain at least ``min_area`` pixels at a
contrast of ``min_contrast`` (a hard-edged, noiseless image has ``sigma``
near 0 and an imperfect edge model: without the floor every edge pixel
would earn a shape). Shapes whose removal raises the error by less than the
same gain are dropped at the end.

Conventions: images ``(B, H, W, C)`` float in ``[0, 1]``; parameters are
normalised as in :class:`~shapegrad.Render` (positions ``(row, col)`` as
fractions of ``(H, W)``); a fitted scene is a :class:`SceneFit` whose
``shapes`` string lists its shapes back to front (``"disk,box,disk"``) so that
``SceneFit.renderer()`` (a ``Render``) draws it with ``SceneFit.params``.

Example:
    >>> import numpy as np
    >>> from skimage.draw import disk, polygon
    >>> image = np.full((32, 32, 3), 0.1, "float32")
    >>> rr, cc = disk((12, 12), 6, shape=(32, 32)); image[rr, cc] = (0.9, 0.2, 0.2)
    >>> rr, cc = polygon([16, 16, 28, 28], [16, 28, 28, 16], shape=(32, 32)); image[rr, cc] = (0.2, 0.3, 0.9)
    >>> fits = fit_scene(image[None], kinds=("disk", "box"), max_shapes=3)
    >>> fits[0].shapes, fits[0].psnr > 28
    ('disk,box', True)
"""

import dataclasses
import math
import time

import keras
import numpy as np
from keras import ops

from shapegrad import Render, _autodiff, raster
from shapegrad.models import ParameterHead, fields_for

__all__ = ["DEFAULT_KINDS", "SceneEngine", "SceneFit", "fit_scene", "noise_level"]

DEFAULT_KINDS = ("disk", "box", "triangle", "ellipse")

# Table sizes are rounded up to this ladder (about 25 % apart), so that the
# compiled loop sees few distinct shapes over a search.
_LADDER = (1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 48, 64, 96, 128, 192, 256, 384, 512, 768, 1024)


def _bucket(n, at_least=1):
    n = max(n, at_least)
    for size in _LADDER:
        if n <= size:
            return size
    return int(512 * math.ceil(n / 512))


def _draw(layer, params, sharpness):
    """The ONE call of the renderer's per-call edge keyword (``sharpness`` in px^-1 = 1 / softness)."""
    return layer(params, softness=1.0 / sharpness)


def _resolution(height, width):
    return int(height) if height == width else (int(height), int(width))


def _logit(x, eps=1e-4):
    x = np.clip(x, eps, 1 - eps)
    return np.log(x) - np.log1p(-x)


@dataclasses.dataclass
class Scene:
    """Host-side scene: ``shapes`` a list of ``(kind, params (P_k,))`` back to front, normalised,
    with ``P_k`` the kind's geometric fields, ``C`` colour numbers and an opacity (always 1 here);
    ``background`` ``(C,)``."""

    shapes: list
    background: np.ndarray

    def copy(self):
        return Scene([(k, p.copy()) for k, p in self.shapes], self.background.copy())


class SceneEngine:
    """One compiled Adam loop that fits batches of scenes of ``kinds`` to ``(H, W, C)`` images.

    Args:
        kinds: primitive kinds the scenes may hold (any of ``Render``'s).
        height, width: image size in pixels.
        channels: colour channels ``C``.
        max_depth: the most shapes per item (``D``).
        composite: ``"over"`` (depth order matters) or ``"union"``.
        loop: ``"compiled"``: the whole run of steps is one compiled call
            (a ``keras.ops.fori_loop``); ``"python"``: one compiled call per
            step (the default on PyTorch, which runs eagerly either way).

    Attributes:
        traces: how many times the loop was traced (compiled) so far; on
            PyTorch it counts calls, as nothing is compiled.

    Example:
        >>> import numpy as np
        >>> engine = SceneEngine(("disk",), 16, 16, 1, max_depth=2)
        >>> truth = Scene([("disk", np.array([0.5, 0.5, 0.25, 1.0, 1.0], "float32"))], np.zeros(1, "float32"))
        >>> image = engine.render([truth], sharpness=4.0)
        >>> start = Scene([("disk", np.array([0.45, 0.55, 0.2, 0.8, 1.0], "float32"))], np.zeros(1, "float32"))
        >>> fitted, loss = engine.fit([start], image, steps=150)
        >>> bool(np.abs(fitted[0].shapes[0][1][:3] - [0.5, 0.5, 0.25]).max() < 0.01)
        True
    """

    def __init__(self, kinds, height, width, channels, max_depth, composite="over", loop=None):
        kinds = _check_kinds(kinds)
        self.kinds = kinds
        self.height, self.width = int(height), int(width)
        self.channels = int(channels)
        self.max_depth = int(max_depth)
        self.composite = composite
        resolution = _resolution(self.height, self.width)
        # Alpha (opacity x coverage) of one shape: a one-channel Render with colour 1 over 0.
        self._alpha = {k: Render(k, resolution, channels=1, background=0.0, recompute=False) for k in kinds}
        self.specs = {k: Render(k, resolution, channels=self.channels).spec for k in kinds}
        self._heads = {k: ParameterHead(fields_for(self.specs[k])) for k in kinds}
        self._fields = {k: fields_for(self.specs[k]) for k in kinds}
        self.sizes = {k: self.specs[k].size for k in kinds}
        self._geometry = {k: self.sizes[k] - self.channels - 1 for k in kinds}
        if loop is None:
            loop = "python" if keras.backend.backend() == "torch" else "compiled"
        if loop not in ("compiled", "python"):
            raise ValueError(f"Expected loop to be 'compiled' or 'python'. Received: loop={loop!r}")
        self.loop = loop
        self.traces = 0
        # Table sizes only grow (to the next rung of _LADDER): a search reuses few compiled shapes.
        self._capacity = {k: 1 for k in kinds}
        self._batch_capacity = 1
        self._grad = _autodiff.traced_value_and_grad(self._loss, wrt=2)
        self._run_compiled = _autodiff.jit(self._run)
        self._step_compiled = _autodiff.jit(self._step)
        self._render_compiled = _autodiff.jit(self._render)
        self._loss_compiled = _autodiff.jit(lambda *a: self._loss(*a)[1])

    # ---- the compiled part: backend tensors only --------------------------------------

    def _images(self, raws, bg_raw, depth, sharpness):
        alphas, colors = [], []
        c, dtype = self.channels, "float32"
        for kind, raw in zip(self.kinds, raws):
            p = self._heads[kind](raw)
            g = self._geometry[kind]
            ones = ops.ones((ops.shape(p)[0], 2), dtype)  # colour 1, opacity 1
            a = _draw(self._alpha[kind], ops.concatenate([p[:, :g], ones], axis=1), sharpness)
            alphas.append(a)
            colors.append(p[:, g : g + c])
        alphas.append(ops.zeros((1, self.height, self.width, 1), dtype))  # index -1: no shape
        colors.append(ops.zeros((1, c), dtype))
        alphas = ops.concatenate(alphas, axis=0)
        colors = ops.concatenate(colors, axis=0)
        background = ops.sigmoid(bg_raw)[:, None, None, :]
        batch = ops.shape(depth)[0]
        background = ops.broadcast_to(background, (batch, self.height, self.width, c))
        state = raster.start_state(self.composite, background)
        for d in range(self.max_depth):
            index = depth[:, d]
            state = raster.paint(
                self.composite, state, ops.take(alphas, index, axis=0), ops.take(colors, index, axis=0)[:, None, None, :]
            )
        return raster.finish(self.composite, state, background)

    def _loss(self, raws, bg_raw, depth, images, sharpness):
        recon = self._images(raws, bg_raw, depth, sharpness)
        per_item = ops.mean(ops.square(recon - images), axis=(1, 2, 3))
        return ops.sum(per_item), per_item

    def _schedule(self, i, steps, lr, sharp_start, sharp_end, anneal):
        t = ops.cast(i, "float32")
        n = ops.maximum(ops.cast(steps, "float32"), 1.0)
        ramp = ops.minimum(t / ops.maximum(anneal * n, 1.0), 1.0)
        sharpness = sharp_start * ops.power(sharp_end / sharp_start, ramp)
        rate = lr * (0.02 + 0.98 * 0.5 * (1.0 + ops.cos(math.pi * t / n)))
        return sharpness, rate

    def _update(self, state, i, depth, images, masks, bg_mask, steps, lr, sharp_start, sharp_end, anneal):
        """One Adam step on every item (per-element moments: items are independent)."""
        raws, bg_raw, m, v, bg_m, bg_v = state
        sharpness, rate = self._schedule(i, steps, lr, sharp_start, sharp_end, anneal)
        _, _, (g_raws, g_bg) = self._grad(raws, bg_raw, depth, images, sharpness)
        t = ops.cast(i, "float32") + 1.0
        b1, b2, eps = 0.9, 0.999, 1e-8
        c1, c2 = 1.0 - ops.power(b1, t), 1.0 - ops.power(b2, t)

        def adam(x, g, m_, v_, mask):
            m_ = b1 * m_ + (1 - b1) * g
            v_ = b2 * v_ + (1 - b2) * g * g
            step = rate * (m_ / c1) / (ops.sqrt(v_ / c2) + eps)
            return x - mask * step, m_, v_

        new = [adam(x, g, a, b, k) for x, g, a, b, k in zip(raws, g_raws, m, v, masks)]
        bg_raw, bg_m, bg_v = adam(bg_raw, g_bg, bg_m, bg_v, bg_mask)
        return (
            tuple(n[0] for n in new),
            bg_raw,
            tuple(n[1] for n in new),
            tuple(n[2] for n in new),
            bg_m,
            bg_v,
        )

    def _init_state(self, raws, bg_raw):
        zeros = tuple(ops.zeros_like(r) for r in raws)
        return (tuple(raws), bg_raw, zeros, tuple(ops.zeros_like(r) for r in raws), ops.zeros_like(bg_raw),
                ops.zeros_like(bg_raw))

    def _run(self, raws, bg_raw, masks, bg_mask, depth, images, steps, lr, sharp_start, sharp_end, anneal):
        self.traces += 1
        state = self._init_state(raws, bg_raw)

        def body(i, state):
            return self._update(state, i, depth, images, masks, bg_mask, steps, lr, sharp_start, sharp_end, anneal)

        state = ops.fori_loop(0, steps, body, state)
        raws, bg_raw = state[0], state[1]
        _, per_item = self._loss(raws, bg_raw, depth, images, sharp_end)
        return raws, bg_raw, per_item

    def _step(self, state, i, depth, images, masks, bg_mask, steps, lr, sharp_start, sharp_end, anneal):
        self.traces += 1
        return self._update(state, i, depth, images, masks, bg_mask, steps, lr, sharp_start, sharp_end, anneal)

    def _render(self, raws, bg_raw, depth, sharpness):
        return self._images(raws, bg_raw, depth, sharpness)

    # ---- host side: scenes <-> tables ----------------------------------------------------

    def pack(self, scenes, train=None):
        """Tables of ``scenes``: ``(raws, masks, bg_raw, depth, batch)``; ``train[b]`` lists the
        depth positions of item b whose shapes move (default all)."""
        batch = len(scenes)
        rows = {k: [] for k in self.kinds}
        moving = {k: [] for k in self.kinds}
        padded = self._batch_capacity = _bucket(batch, self._batch_capacity)
        depth = np.full((padded, self.max_depth), -1, np.int64)
        for b, scene in enumerate(scenes):
            if len(scene.shapes) > self.max_depth:
                raise ValueError(
                    f"Expected at most max_depth={self.max_depth} shapes per scene. Received: {len(scene.shapes)}"
                )
            for d, (kind, params) in enumerate(scene.shapes):
                depth[b, d] = len(rows[kind])
                rows[kind].append(params)
                moving[kind].append(1.0 if train is None or d in train[b] else 0.0)
        offsets, start, raws, masks = {}, 0, [], []
        for kind in self.kinds:
            n = self._capacity[kind] = _bucket(len(rows[kind]), self._capacity[kind])
            table = np.zeros((n, self.sizes[kind]), np.float32)
            mask = np.zeros((n, 1), np.float32)
            if rows[kind]:
                table[: len(rows[kind])] = np.stack(rows[kind])
                mask[: len(rows[kind]), 0] = moving[kind]
            raws.append(self._raw(kind, table))
            masks.append(mask)
            offsets[kind] = start
            start += n
        total = start
        flat = depth.copy()
        for b in range(batch):
            for d, (kind, _) in enumerate(scenes[b].shapes):
                flat[b, d] = offsets[kind] + depth[b, d]
        flat[flat < 0] = total  # the empty row
        bg = np.full((padded, self.channels), 0.5, np.float32)
        bg[:batch] = np.stack([s.background for s in scenes])
        return tuple(raws), tuple(masks), _logit(bg).astype("float32"), flat.astype("int32"), offsets

    def _raw(self, kind, params):
        raw, start = [], 0
        for _, size, activation in self._fields[kind]:
            x = params[:, start : start + size]
            raw.append(_logit(x) if activation == "fraction" else x)
            start += size
        return np.concatenate(raw, axis=1).astype("float32")

    def unpack(self, scenes, raws, bg_raw, offsets):
        """Scenes like ``scenes`` with the parameters of the tables ``raws``, ``bg_raw``."""
        params = {k: keras.ops.convert_to_numpy(self._heads[k](r)) for k, r in zip(self.kinds, raws)}
        bg = 1.0 / (1.0 + np.exp(-np.asarray(keras.ops.convert_to_numpy(bg_raw), np.float64)))
        out, counters = [], {k: 0 for k in self.kinds}
        for b, scene in enumerate(scenes):
            shapes = []
            for kind, _ in scene.shapes:
                p = params[kind][counters[kind]].astype("float32")
                p[-1] = 1.0
                shapes.append((kind, p))
                counters[kind] += 1
            out.append(Scene(shapes, bg[b].astype("float32")))
        return out

    def _images_in(self, images, batch, padded):
        images = np.asarray(images, np.float32)
        expected = (self.height, self.width, self.channels)
        if images.ndim != 4 or images.shape[1:] != expected or len(images) != batch:
            raise ValueError(
                f"Expected images of shape ({batch}, {self.height}, {self.width}, {self.channels}). "
                f"Received: images.shape={images.shape}"
            )
        if padded > batch:
            images = np.concatenate([images, np.zeros((padded - batch,) + expected, np.float32)])
        return images

    def fit(self, scenes, images, steps=100, learning_rate=0.05, sharpness=(0.25, 1.0), anneal=0.6, train=None):
        """Refine every scene against its image; returns ``(scenes, loss (B,))``, the MSE at the final sharpness.

        Args:
            scenes: ``B`` :class:`Scene` starts.
            images: ``(B, H, W, C)`` targets.
            steps: Adam steps (every item at once).
            learning_rate: peak rate on the raw parameters, cosine-decayed to 2 %.
            sharpness: ``(start, end)`` edge sharpness in px^-1, grown
                geometrically over the first ``anneal`` fraction of the steps.
            train: optional ``B`` collections of depth positions that move
                (others stay fixed; the background always moves).
        """
        steps = _positive_int("steps", steps)
        raws, masks, bg_raw, depth, offsets = self.pack(scenes, train)
        images = self._images_in(images, len(scenes), len(depth))
        bg_mask = np.ones((len(depth), 1), np.float32)
        f32 = lambda x: np.float32(x)  # noqa: E731
        args = (f32(learning_rate), f32(sharpness[0]), f32(sharpness[1]), f32(anneal))
        if self.loop == "compiled":
            raws, bg_raw, loss = self._run_compiled(
                raws, bg_raw, masks, bg_mask, depth, images, np.int32(steps), *args
            )
        else:
            state = self._init_state(tuple(ops.convert_to_tensor(r) for r in raws), ops.convert_to_tensor(bg_raw))
            for i in range(steps):
                state = self._step_compiled(state, np.int32(i), depth, images, masks, bg_mask, np.int32(steps), *args)
            raws, bg_raw = state[0], state[1]
            loss = self._loss_compiled(raws, bg_raw, depth, images, args[2])
        loss = keras.ops.convert_to_numpy(loss)[: len(scenes)].astype(np.float64)
        return self.unpack(scenes, raws, bg_raw, offsets), loss

    def render(self, scenes, sharpness=1.0):
        """``(B, H, W, C)`` images of ``scenes`` (NumPy float32)."""
        raws, _, bg_raw, depth, _ = self.pack(scenes)
        out = self._render_compiled(raws, bg_raw, depth, np.float32(sharpness))
        return keras.ops.convert_to_numpy(out)[: len(scenes)]


def _positive_int(name, value):
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value <= 0:
        raise ValueError(f"Expected {name} to be a positive integer. Received: {name}={value!r}")
    return int(value)


def _check_kinds(kinds):
    if isinstance(kinds, str):
        kinds = tuple(k.strip() for k in kinds.split(","))
    if not isinstance(kinds, (list, tuple)) or not kinds or len(set(kinds)) != len(kinds):
        raise ValueError(f"Expected kinds to be a non-empty list of distinct primitive kinds. Received: kinds={kinds!r}")
    for kind in kinds:
        try:
            Render(kind, 8)
        except ValueError:
            raise ValueError(
                f"Expected kinds to be a non-empty list of distinct primitive kinds. Received: kinds={kinds!r}"
            ) from None
    return tuple(kinds)


def noise_level(images):
    """Per image noise standard deviation ``(B,)``: the median absolute Laplacian, floored at 1/255.

    Uses Immerkaer's 3x3 kernel (second differences, which cancel on flat and
    linear regions) and the median, so the edges of hard-edged shapes do not
    count: ``1.4826 * median(|L|) / 6``, 6 being the kernel's norm (white
    noise of deviation s gives ``L`` of deviation 6 s). Every channel pooled. Floored at 1/255: an 8-bit
    image is never known to better than its quantization.
    """
    x = np.asarray(images, np.float64)
    lap = (
        4 * x[:, 1:-1, 1:-1]
        - 2 * (x[:, :-2, 1:-1] + x[:, 2:, 1:-1] + x[:, 1:-1, :-2] + x[:, 1:-1, 2:])
        + x[:, :-2, :-2] + x[:, :-2, 2:] + x[:, 2:, :-2] + x[:, 2:, 2:]
    )
    sigma = 1.4826 * np.median(np.abs(lap).reshape(len(x), -1), axis=1) / 6.0
    return np.maximum(sigma, 1.0 / 255.0)


# ---- the search ----------------------------------------------------------------------------


@dataclasses.dataclass
class SceneFit:
    """The scene fitted to one image.

    Attributes:
        shapes: the shapes back to front, as ``Render`` reads them
            (``"disk,box,disk"``; a kind may appear several times, as its
            own group, so any depth order can be written).
        params: ``(P,)`` normalised parameters in that ``Render``'s layout.
        background: ``(C,)`` background colour.
        height, width, channels: the image's size.
        sharpness: edge sharpness (px^-1) of the final fit (``softness = 1 / sharpness``).
        mse, psnr: image error of the fit (PSNR in dB).
        noise: the estimated noise level of the image (standard deviation).
        seconds: this image's share of the call's time.
    """

    shapes: str
    params: np.ndarray
    background: np.ndarray
    height: int
    width: int
    channels: int
    sharpness: float
    mse: float
    psnr: float
    noise: float
    seconds: float = 0.0

    @property
    def kinds(self):
        """The kinds of the shapes, back to front (a tuple; empty if none)."""
        return tuple(self.shapes.split(",")) if self.shapes else ()

    @property
    def count(self):
        return len(self.kinds)

    def renderer(self, composite="over"):
        """A :class:`~shapegrad.Render` that draws ``params`` as this fit (None for an empty scene)."""
        if not self.shapes:
            return None
        return _render_layer(self.shapes, self.height, self.width, self.channels, self.background.tolist(),
                             self.sharpness, composite)

    def render(self):
        """The fitted image ``(H, W, C)`` (NumPy)."""
        if not self.shapes:
            return np.broadcast_to(self.background, (self.height, self.width, self.channels)).astype("float32")
        return keras.ops.convert_to_numpy(self.renderer()(self.params[None]))[0]


def _render_layer(shapes, height, width, channels, background, sharpness, composite="over"):
    """The ONE construction of an output ``Render`` with an edge width (``softness = 1 / sharpness``)."""
    return Render(shapes, _resolution(height, width), channels=channels, background=background,
                  softness=1.0 / sharpness, composite=composite)


def _border_color(image):
    """Median colour of the outermost pixels of ``(H, W, C)``: the background of a drawing."""
    border = np.concatenate([image[0], image[-1], image[:, 0], image[:, -1]])
    return np.median(border, axis=0)


def _downsample(images, f):
    """Mean over ``f x f`` blocks (the image cropped to a multiple of ``f``)."""
    if f == 1:
        return images
    b, h, w, c = images.shape
    h, w = h // f * f, w // f * f
    return images[:, :h, :w].reshape(b, h // f, f, w // f, f, c).mean(axis=(2, 4))


class _Geometry:
    """Normalised <-> pixel conversions of a kind's fields at one resolution."""

    def __init__(self, engine, kind):
        self.spec = engine.specs[kind]
        self.resolution = _resolution(engine.height, engine.width)
        self.fields = [(s.field, s.slice) for s in self.spec.fields_of(0)]

    def to_pixels(self, params):
        """``{name: value}``, positions and sizes in pixels, the rest as they are."""
        out = {}
        for field, sl in self.fields:
            v = params[sl]
            out[field.name] = field.to_natural(v, self.resolution) if field.kind in ("position", "size") else v
        return out

    def from_pixels(self, values, channels):
        params = np.zeros(self.spec.size, np.float64)
        for field, sl in self.fields:
            v = np.asarray(values[field.name], np.float64)
            if field.kind in ("position", "size"):
                v = field.from_natural(v, self.resolution)
            if field.kind != "direction":
                v = np.clip(v, 1e-3, 1 - 1e-3)
            params[sl] = v
        return params.astype("float32")


def _moments(kind, px):
    """Centre ``(2,)`` and covariance ``(2, 2)`` in pixels of a shape given in pixels (``px`` from ``to_pixels``)."""
    if kind == "disk":
        r = float(px["radius"][0])
        return px["center"], np.eye(2) * r * r / 4
    if kind in ("ellipse", "box"):
        d = np.asarray(px["direction"], np.float64)
        d = d / max(np.linalg.norm(d), 1e-9)
        rot = np.array([[d[0], -d[1]], [d[1], d[0]]])
        sizes = px["radii"] if kind == "ellipse" else px["half_size"]
        var = np.asarray(sizes, np.float64) ** 2 / (4.0 if kind == "ellipse" else 3.0)
        return px["center"], rot @ np.diag(var) @ rot.T
    verts = np.asarray(next(v for v in px.values() if np.size(v) >= 6), np.float64).reshape(-1, 2)
    g = verts.mean(axis=0)
    return g, (verts - g).T @ (verts - g) / 12.0


def _start_shape(kind, geometry, center, cov, color, channels, points=None):
    """A shape of ``kind`` with the given centre and covariance (pixels): normalised parameters ``(P_k,)``."""
    lam, vec = np.linalg.eigh(np.asarray(cov, np.float64) + 0.05 * np.eye(2))
    lam = np.maximum(lam[::-1], 0.25)
    u = vec[:, ::-1][:, 0]
    center = np.asarray(center, np.float64)
    values = {"color": np.asarray(color, np.float64), "opacity": np.ones(1)}
    if kind == "disk":
        values.update(center=center, radius=[2 * math.sqrt(math.sqrt(lam[0] * lam[1]))])
    elif kind == "ellipse":
        values.update(center=center, radii=2 * np.sqrt(lam), direction=u)
    elif kind == "box":
        values.update(center=center, half_size=np.sqrt(3 * lam), direction=u, corner=[0.0])
    else:
        if points is not None and len(points) >= 3:
            a = points[np.argmax(((points - center) ** 2).sum(1))]
            b = points[np.argmax(((points - a) ** 2).sum(1))]
            n = np.array([-(b - a)[1], (b - a)[0]])
            c = points[np.argmax(np.abs((points - a) @ n))]
            verts = np.stack([a, b, c])
        else:
            angles = np.array([0.0, 2.0, 4.0]) * math.pi / 3
            unit = np.stack([np.cos(angles), np.sin(angles)], 1)
            verts = center + unit * np.sqrt(lam) * 2 @ np.eye(2)
        verts = verts + 0.5 * (verts - verts.mean(0)) / np.maximum(np.linalg.norm(verts - verts.mean(0), axis=1), 1e-6)[:, None]
        field = next(f.name for f, _ in geometry.fields if f.kind == "position")
        values[field] = verts.reshape(-1)
    for f, _ in geometry.fields:
        values.setdefault(f.name, np.full(f.size, 0.5))
    return geometry.from_pixels(values, channels)


def _blob(image, recon, threshold):
    """The largest connected region of residual at least half its peak: ``(points (n, 2) coarse px, colour)`` or None."""
    from scipy import ndimage

    error = np.abs(image - recon).max(axis=-1)
    peak = error.max()
    if peak < threshold:
        return None
    mask = error >= max(0.5 * peak, threshold)
    opened = ndimage.binary_opening(mask, structure=np.ones((2, 2), bool))
    if opened.sum() >= 3:
        mask = opened
    labels, count = ndimage.label(mask)
    if count == 0:
        return None
    mass = ndimage.sum(error, labels, index=np.arange(1, count + 1))
    region = labels == (int(np.argmax(mass)) + 1)
    points = np.argwhere(region).astype(np.float64)
    color = np.median(image[region], axis=0)
    return points, color


def _shape_count_params(engine, kind):
    return engine.sizes[kind] - 1  # opacity is fixed


class _Search:
    """Greedy forward selection over a batch of same-size images (see the module docstring)."""

    def __init__(self, images, kinds, max_shapes, fixed, factor, options):
        self.images = np.asarray(images, np.float32)
        b, h, w, c = self.images.shape
        self.kinds, self.max_shapes, self.fixed, self.f, self.o = kinds, max_shapes, fixed, factor, options
        self.coarse = _downsample(self.images, factor)
        hc, wc = self.coarse.shape[1:3]
        self.engine = _engine(kinds, hc, wc, c, max_shapes, options["composite"])
        self.full = _engine(kinds, h, w, c, max_shapes, options["composite"]) if factor > 1 else self.engine
        self.geo = {k: _Geometry(self.engine, k) for k in kinds}
        self.noise = noise_level(self.images)
        # The gain one more shape must bring, in summed squared error at the search resolution.
        n = hc * wc * c
        sigma = self.noise / factor
        floor = options["min_area"] / factor**2 * c * options["min_contrast"] ** 2
        self.gain = {
            k: np.maximum(_shape_count_params(self.engine, k) * math.log(n) * sigma**2 * options["bic_weight"], floor)
            for k in kinds
        }
        self.n = n

    def run(self):
        o = self.o
        b, c = len(self.images), self.images.shape[-1]
        scenes = [Scene([], _border_color(im).astype("float32")) for im in self.images]
        loss = ((self.coarse - np.stack([s.background for s in scenes])[:, None, None]) ** 2).mean(axis=(1, 2, 3))
        active = np.ones(b, bool)
        for _ in range(self.max_shapes):
            if not active.any():
                break
            recon = self.engine.render(scenes, o["sharpness"][1])
            items, owner = [], []
            for i in np.flatnonzero(active):
                remaining = self._remaining(scenes[i])
                blob = _blob(self.coarse[i], recon[i], threshold=max(4 * self.noise[i], 0.02))
                if blob is None or not remaining:
                    active[i] = False
                    continue
                points, color = blob
                center = points.mean(0)
                cov = np.cov(points.T) if len(points) > 2 else np.eye(2)
                for kind in remaining:
                    new = _start_shape(kind, self.geo[kind], center, cov, color, c, points)
                    tops = [True, False] if scenes[i].shapes else [True]
                    for top in tops:
                        shapes = list(scenes[i].shapes)
                        shapes.insert(len(shapes) if top else 0, (kind, new))
                        items.append(Scene(shapes, scenes[i].background.copy()))
                        owner.append(i)
            if not items:
                break
            fitted, losses = self.engine.fit(items, self.coarse[owner], steps=o["steps"], learning_rate=o["learning_rate"],
                                             sharpness=o["sharpness"], anneal=0.6)
            owner = np.asarray(owner)
            for i in np.unique(owner):
                rows = np.flatnonzero(owner == i)
                best = rows[np.argmin(losses[rows])]
                gain = (loss[i] - losses[best]) * self.n
                new_kind = self._new_kind(scenes[i], fitted[best])
                if self.fixed is not None or gain > self.gain[new_kind][i]:
                    scenes[i], loss[i] = fitted[best], losses[best]
                else:
                    active[i] = False
        if o["reorder"]:
            scenes, loss = self._reorder(scenes, loss)
        if self.fixed is None and o["prune"]:
            scenes, loss = self._prune(scenes, loss)
        return self._polish(scenes)

    def _remaining(self, scene):
        if self.fixed is None:
            return list(self.kinds) if len(scene.shapes) < self.max_shapes else []
        left = dict(self.fixed)
        for kind, _ in scene.shapes:
            left[kind] -= 1
        return [k for k in self.kinds if left.get(k, 0) > 0]

    @staticmethod
    def _new_kind(old, new):
        before = [k for k, _ in old.shapes]
        after = [k for k, _ in new.shapes]
        for k in after:
            if after.count(k) > before.count(k):
                return k
        return after[-1]

    def _extent(self, kind, params):
        center, cov = _moments(kind, self.geo[kind].to_pixels(params))
        return np.asarray(center, np.float64), 2.0 * math.sqrt(max(np.linalg.eigvalsh(cov).max(), 0.0)) * 1.8

    def _reorder(self, scenes, loss):
        """Try swapping the depth of every pair of overlapping shapes; keep a swap that lowers the error."""
        o = self.o
        items, owner = [], []
        for i, scene in enumerate(scenes):
            k = len(scene.shapes)
            if k < 2 or self.o["composite"] != "over":
                continue
            ext = [self._extent(kind, p) for kind, p in scene.shapes]
            pairs = [(a, b) for a in range(k) for b in range(a + 1, k)
                     if np.linalg.norm(ext[a][0] - ext[b][0]) < ext[a][1] + ext[b][1]]
            if not pairs:
                continue
            items.append(scene.copy())
            owner.append(i)
            for a, b in pairs:
                shapes = list(scene.shapes)
                shapes[a], shapes[b] = shapes[b], shapes[a]
                items.append(Scene(shapes, scene.background.copy()))
                owner.append(i)
        if not items:
            return scenes, loss
        fitted, losses = self.engine.fit(items, self.coarse[owner], steps=o["order_steps"],
                                         learning_rate=0.5 * o["learning_rate"], sharpness=(0.7 * o["sharpness"][1], o["sharpness"][1]), anneal=0.5)
        owner = np.asarray(owner)
        for i in np.unique(owner):
            rows = np.flatnonzero(owner == i)
            best = rows[np.argmin(losses[rows])]
            scenes[i], loss[i] = fitted[best], losses[best]
        return scenes, loss

    def _prune(self, scenes, loss):
        """Drop shapes whose removal raises the error by less than the gain of one more shape."""
        o = self.o
        items, owner, dropped = [], [], []
        for i, scene in enumerate(scenes):
            if len(scene.shapes) < 2:
                continue
            for j in range(len(scene.shapes)):
                shapes = [s for t, s in enumerate(scene.shapes) if t != j]
                items.append(Scene(shapes, scene.background.copy()))
                owner.append(i)
                dropped.append(scene.shapes[j][0])
        if not items:
            return scenes, loss
        fitted, losses = self.engine.fit(items, self.coarse[owner], steps=o["order_steps"],
                                         learning_rate=0.5 * o["learning_rate"], sharpness=(0.7 * o["sharpness"][1], o["sharpness"][1]), anneal=0.5)
        owner = np.asarray(owner)
        for i in np.unique(owner):
            rows = np.flatnonzero(owner == i)
            best = rows[np.argmin(losses[rows])]
            if (losses[best] - loss[i]) * self.n < self.gain[dropped[best]][i]:
                scenes[i], loss[i] = fitted[best], losses[best]
        return scenes, loss

    def _to_full(self, scenes):
        if self.f == 1:
            return scenes
        f, out = self.f, []
        for scene in scenes:
            shapes = []
            for kind, p in scene.shapes:
                coarse, full = self.geo[kind], _Geometry(self.full, kind)
                q = p.astype(np.float64).copy()
                for (field, sl), _ in zip(coarse.fields, full.fields):
                    if field.kind == "position":
                        x = field.to_natural(p[sl], coarse.resolution)
                        q[sl] = field.from_natural(f * x + (f - 1) / 2.0, full.resolution)
                    elif field.kind == "size":
                        q[sl] = field.from_natural(f * field.to_natural(p[sl], coarse.resolution), full.resolution)
                shapes.append((kind, q.astype("float32")))
            out.append(Scene(shapes, scene.background.copy()))
        return out

    def _polish(self, scenes):
        o = self.o
        scenes = self._to_full(scenes)
        nonempty = [i for i, s in enumerate(scenes) if s.shapes]
        loss = ((self.images - np.stack([s.background for s in scenes])[:, None, None]) ** 2).mean(axis=(1, 2, 3))
        if nonempty:
            start = o["sharpness"][1] / self.f
            fitted, losses = self.full.fit([scenes[i] for i in nonempty], self.images[nonempty], steps=o["polish_steps"],
                                           learning_rate=0.3 * o["learning_rate"], sharpness=(start, o["final_sharpness"]),
                                           anneal=0.5)
            for i, s, l in zip(nonempty, fitted, losses):
                scenes[i], loss[i] = s, l
        return scenes, loss


_ENGINES = {}


def _engine(kinds, height, width, channels, max_depth, composite):
    """One engine per (kinds, size, channels, depth, composite, backend): built once, reused by every call."""
    key = (tuple(kinds), height, width, channels, max_depth, composite, keras.backend.backend())
    if key not in _ENGINES:
        _ENGINES[key] = SceneEngine(kinds, height, width, channels, max_depth, composite)
    return _ENGINES[key]


_DEFAULTS = dict(
    steps=80,
    order_steps=40,
    polish_steps=100,
    learning_rate=0.05,
    sharpness=(0.3, 1.0),
    final_sharpness=2.5,
    min_area=12.0,
    min_contrast=0.1,
    bic_weight=1.0,
    coarse_above=40,
    reorder=True,
    prune=True,
    composite="over",
)


def fit_scene(images, kinds=DEFAULT_KINDS, max_shapes=5, shapes=None, **options):
    """Fit a scene of primitives to every image: kinds, count, depth order and parameters.

    Args:
        images: ``(B, H, W, C)`` array, or a list of ``(H, W, C)`` arrays
            (sizes and channels may differ; images of one size are fitted
            together as one batch), floats in ``[0, 1]``.
        kinds: the kinds a shape may be (a tuple or ``"disk,box"``).
        max_shapes: the most shapes per image.
        shapes: instead of ``kinds`` and ``max_shapes``, exactly these shapes
            (``"disk*2,box"``, as ``Render`` reads them), in a depth order
            that the fit finds.
        **options: search settings (defaults in ``_DEFAULTS``): ``steps``
            (Adam steps per added shape), ``order_steps``, ``polish_steps``,
            ``learning_rate``, ``sharpness`` (start, end of the search, px^-1),
            ``final_sharpness``, ``min_area`` (px), ``min_contrast``,
            ``bic_weight`` (the rule for one more shape, module docstring),
            ``coarse_above`` (search at half resolution above this many
            pixels a side), ``reorder``, ``prune``, ``composite``.

    Returns:
        A list of :class:`SceneFit`, one per image, in order.
    """
    unknown = set(options) - set(_DEFAULTS)
    if unknown:
        raise ValueError(f"Expected options among {sorted(_DEFAULTS)}. Received: {sorted(unknown)}")
    o = dict(_DEFAULTS, **options)
    if o["composite"] not in raster.COMPOSITES:
        raise ValueError(f"Expected composite to be one of {list(raster.COMPOSITES)}. Received: composite={o['composite']!r}")
    fixed = None
    if shapes is not None:
        from shapegrad.render import parse_shapes

        fixed = {}
        for kind, count in parse_shapes(shapes):
            fixed[kind] = fixed.get(kind, 0) + count
        kinds = tuple(fixed)
        max_shapes = sum(fixed.values())
    else:
        kinds = _check_kinds(kinds)
        max_shapes = _positive_int("max_shapes", max_shapes)
    if isinstance(images, np.ndarray) and images.ndim == 4:
        images = list(images)
    if not isinstance(images, (list, tuple)) or not images:
        raise ValueError(f"Expected images to be a (B, H, W, C) array or a non-empty list of (H, W, C) arrays. "
                         f"Received: images={type(images).__name__}")
    arrays = []
    for k, image in enumerate(images):
        a = np.asarray(image, np.float32)
        if a.ndim != 3 or a.shape[-1] < 1 or min(a.shape[:2]) < 4 or not np.isfinite(a).all():
            raise ValueError(f"Expected images[{k}] to be a finite (H, W, C) array with H, W >= 4. "
                             f"Received: shape={a.shape}")
        arrays.append(a)
    groups = {}
    for k, a in enumerate(arrays):
        groups.setdefault(a.shape, []).append(k)
    out = [None] * len(arrays)
    for shape, index in groups.items():
        start = time.perf_counter()
        h, w, c = shape
        factor = 2 if max(h, w) > o["coarse_above"] else 1
        search = _Search(np.stack([arrays[k] for k in index]), kinds, max_shapes, fixed, factor, o)
        scenes, losses = search.run()
        seconds = (time.perf_counter() - start) / len(index)
        for k, scene, loss, noise in zip(index, scenes, losses, search.noise):
            out[k] = _result(scene, loss, noise, h, w, c, o["final_sharpness"], seconds)
    return out


def _result(scene, loss, noise, h, w, c, sharpness, seconds):
    params = np.concatenate([p for _, p in scene.shapes]).astype("float32") if scene.shapes else np.zeros(0, "float32")
    psnr = float(min(10 * math.log10(1.0 / max(loss, 1e-10)), 100.0))
    return SceneFit(",".join(k for k, _ in scene.shapes), params, scene.background.astype("float32"), h, w, c,
                    float(sharpness), float(loss), psnr, float(noise), seconds)
