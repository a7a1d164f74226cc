"""Fit scenes of primitives of unknown kinds and count to images, fast: arrays in, arrays out.

Two layers:

- :class:`SceneEngine`: ONE compiled optimisation loop (Adam on raw
  parameters through :class:`~shapegrad.Render` with edges sharpened over the
  run, loss = each item's image MSE) that serves every stage of a search.
  Items (candidate scenes of all images, restarts...) share one batch axis and
  are independent: each has its own shapes, background and Adam moments, and
  the loss is the *sum* of the items' MSEs. A batch is held as per-kind
  *instance tables* (one row of raw parameters per shape, the shapes of one
  kind of every item together, so each kind's distance is computed only for
  the shapes that have it) and a ``(B, D)`` *depth table* of instance
  indices, back to front, that composites each item's shapes in its own
  order (``Render`` composites in spec order, kinds grouped; the engine
  renders each shape's alpha with a one-shape ``Render`` and composites them
  itself with :mod:`shapegrad.raster`). Adding a shape, changing its kind or
  its depth only edits these tables on the host. The tables have fixed sizes
  (``batch`` items, ``instances`` shapes of each kind); longer lists run in
  chunks. So the loop is traced and compiled ONCE per engine, and engines are
  cached per image size: one compilation for the search and one for the
  full-resolution polish, whatever the images, stages and candidates.
  An item may also carry frozen shapes as a *context*: an image underneath
  (``Scene.below``) and/or the affine map ``x -> T x + P`` of shapes on top
  (``Scene.above``), so a candidate new shape is fitted alone, in place, at
  the cost of one shape.
- :func:`fit_scene`: finds, per image, how many shapes (up to
  ``max_shapes``) of which ``kinds`` explain it, their depth order and their
  parameters. ``shapes="disk*2,box"`` fits exactly those shapes instead.

Search (all images and candidates batched; images larger than
``coarse_above`` px a side are searched at half resolution, block means):
the background starts as the median of the border, the noise level
``sigma`` is read from the image (:func:`noise_level`). Then, up to
``max_shapes`` times: seed a new shape at the peak of the residual (image
minus the current fit, ignoring pixels of the background's colour) and take
the connected region of that colour around it; start one shape of every
kind from the region (disk and ellipse from its moments, box from its
smallest enclosing rectangle, triangle from its extreme points), on top of
the current shapes and underneath them; fit each candidate alone against
its frozen context; refine the ``keep`` best with all shapes moving, next
to the current fit refined as long (a fair baseline); keep the best if the
rule below says so, else stop for that image. Then: swap the depth of every
pair of overlapping shapes (occlusion order), try every other kind for
every shape (started from the region of its colour), drop shapes that earn
less than the rule's gain. Where a shape was dropped, its place is free
again: the forward step runs once more for those images (up to ``rounds``
times), each new shape followed by the same swaps, kind changes and
pruning (forward-backward selection). Last, polish at full resolution (edges
and opacities below). The search holds every shape's opacity at 1; the
polish fits it too.

Why the second forward step: a start (an encoder's guess) can put two shapes
on one and none on another, and a joint fit does not move a shape across the
image to where nothing overlaps it. The search is then full, adds nothing,
and the pruning drops the redundant shape: one shape short. On the 256 test
scenes of ``benchmarks/scene_encoder.py`` (3 shapes each, from the guided
encoder's guess) that was 29 images, every one of them a shape dropped by
the pruning after the search was full; with one more round, 3 images are
left with 2 shapes (a shape of which at most 63 px show), mean IoU 0.967 ->
0.976, at 1.4x the time (0.32 s per image warm).

The rule for one more shape: a fit with ``k + 1`` shapes replaces the fit
with ``k`` when it lowers the summed squared error (over the ``n = H W C``
numbers of the image, at the search resolution) by more than

    ``gain = max(p * log(n) * sigma^2 * bic_weight, min_area * C * min_contrast^2 / f^2)``

where ``p`` is the new shape's number of parameters and ``f`` the search's
downscale (1 or 2; ``sigma`` is divided by it too): the BIC penalty of ``p``
more parameters under Gaussian noise of the estimated level, and a floor
that asks a shape to explain at least ``min_area`` (20) pixels at a contrast
of ``min_contrast`` (0.2) per channel. A hard-edged, noiseless image has
``sigma`` near 1/255 and an imperfect edge model, so there the floor
decides (on the tuning scenes a spurious extra shape gained at most 0.43,
a real one at least 0.9, in coarse units; the floor is 0.6). A shape must
also differ from the background by ``min_contrast`` in some channel (else
it only carves other shapes). The same gain decides the pruning.

The rule for a simpler kind: wherever the search chooses among candidates of
different kinds (the new shape's kind, the kind changes; also the depth
swaps, where it changes nothing), it takes the least *penalised* error,
the summed squared error plus ``price`` per geometry parameter, with

    ``price = max(log(n) * sigma^2 * bic_weight, simpler_px * C * min_contrast^2 / f^2)``

(the BIC price of a parameter, floored at ``simpler_px`` (1.5) pixels at
``min_contrast`` per parameter). Geometry parameters: disk 3, ellipse 6,
triangle 6, box 7 (centre, half sizes, direction, corner). So a kind with
fewer parameters is kept unless the richer one lowers the error by more than
the price of the parameters it adds: a hard-edged disk that an ellipse
fits marginally better (on drawn disks of radius 4-13 px, by at most
0.05 in coarse units; a real ellipse of axis ratio >= 1.15 by at least 0.3;
3 parameters cost 0.14) is reported as a disk.

The polish (options ``opacity``, ``soft_edges``): over a flat background a
translucent shape draws the same as an opaque one of a dimmer colour, so its
opacity shows only where it overlaps another shape, and there "over"
compositing with opacity 1 gets the colour wrong (scenes drawn with
opacities 0.6-1: foreground IoU 0.926 opaque, 0.943 with opacities fitted,
64 of the benchmark's scenes). The polish moves every shape's opacity
(``sigmoid`` of a raw number, started at most at 0.95) with the rest; then
each shape is made opaque in the colour it showed over the background
(``o c + (1 - o) background``) unless that raises the summed squared error
by more than ``price`` (full resolution) per shape: the rule for
translucency, so opaque shapes come back opaque. Edges: each image's final
sharpness is the one of ``final_sharpness x (1, 0.64, 0.4)`` that draws the
search's scene closest to the image, a softer one only if at least 10 %
closer (the search's scene is only roughly in place, which blur favours: on
the hard-edged scenes of ``benchmarks/encode_images.py`` a softer edge was
at most 7 % closer on 47 of 48 images, on the benchmark's scenes drawn with
``softness=1`` it was 12-94 % closer on 30 of 32). The scene's own edge
width matters to a thresholded mask: drawn with the true parameters and
edges 2.5x too sharp those scenes score IoU 0.966.

Conventions: images ``(H, W, C)`` float in ``[0, 1]``; parameters are
normalised as in :class:`~shapegrad.Render` (positions ``(row, col)`` as
fractions of ``(H, W)``); a fitted scene is a :class:`SceneFit` whose
``shapes`` string lists its shapes back to front (``"disk,box,disk"``: a kind
may come back, as its own group), so that ``SceneFit.renderer()`` (a
``Render``) draws it from ``SceneFit.params`` (opacities in ``[0, 1]``, 1 unless
translucency earned its place; edges of ``SceneFit.sharpness``).

Example:
    >>> import numpy as np
    >>> from skimage.draw import disk, polygon
    >>> image = np.full((32, 32, 3), 0.1, "float32")
    >>> rr, cc = disk((12, 12), 6, shape=(32, 32)); image[rr, cc] = (0.9, 0.2, 0.2)
    >>> rr, cc = polygon([16, 16, 28, 28], [16, 28, 28, 16], shape=(32, 32)); image[rr, cc] = (0.2, 0.3, 0.9)
    >>> fits = fit_scene(image[None], kinds=("disk", "box"), max_shapes=3)
    >>> fits[0].shapes, fits[0].count, bool(fits[0].psnr > 28)
    ('disk,box', 2, True)
    >>> renderer = fits[0].renderer()  # a Render: e.g. files.save_params(path, renderer, fits[0].params[None])
    >>> keras.ops.convert_to_numpy(renderer(fits[0].params[None])).shape
    (1, 32, 32, 3)
"""

import contextlib
import dataclasses
import math
import threading
import time

import keras
import numpy as np
from keras import ops

from shapegrad import _validate
from shapegrad.render.render import Render
from shapegrad.ops import autodiff
from shapegrad.learn import data
from shapegrad.render import raster
from shapegrad.learn.models import ParameterHead, fields_for
from shapegrad.render.primitives import parse_kinds

__all__ = ["DEFAULT_KINDS", "GROUP", "SEARCH_DEFAULTS", "Scene", "SceneEngine", "SceneFit", "fit_scene", "noise_level",
           "search_spec"]

DEFAULT_KINDS = ("disk", "box", "triangle", "ellipse")
DEFAULT_MAX_SHAPES = 5
# The final edge sharpnesses tried per image (option ``soft_edges``), as fractions of ``final_sharpness``.
_EDGE_LADDER = (1.0, 0.64, 0.4)
# ... and a softer one is taken when it lowers the error of the search's scene below this fraction.
_EDGE_MARGIN = 0.9

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
    return layer(params, sharpness=sharpness)


def _opacity(raw, free):
    """Opacities ``(N, 1)`` of the engine's shapes from their raw numbers ``(N, 1)`` and switches ``free``.

    Exactly 1 where ``free`` is 0 (the opacity is held; its gradient is then
    exactly 0), else ``sigmoid(_OPACITY_GAIN * raw)``: finite, with a finite
    gradient, for any finite raw (the sigmoid saturates, it never divides).
    """
    return 1.0 - ops.multiply(free, 1.0 - ops.sigmoid(_OPACITY_GAIN * raw))


def _resolution(height, width):
    return int(height) if height == width else (int(height), int(width))


def _logit(x, eps=1e-4):
    x = np.clip(x, eps, 1 - eps)
    return np.log(x) - np.log1p(-x)


# A fitted opacity is ``sigmoid(_OPACITY_GAIN * raw)``: its logit moves this many times as fast as the
# other raw parameters (Adam's steps are about the learning rate whatever the gradient's scale), so
# that a polish of 100 steps can take it from its start (at most _OPACITY_START) to 0.6 and back.
_OPACITY_GAIN = 4.0
# A fitted opacity starts at most here: from 1 (the logit's cap, 9.2) the sigmoid is flat and the
# opacity could not come down within a polish.
_OPACITY_START = 0.95


@dataclasses.dataclass
class Scene:
    """Host-side scene of the engine.

    Attributes:
        shapes: ``[(kind, params (P_k,)), ...]`` back to front, normalised as
            in ``Render(kind, ..., channels=C)`` (geometry, ``C`` colour
            numbers, an opacity, held at 1 unless :meth:`SceneEngine.fit`
            is given ``opacity=True``).
        background: ``(C,)`` colour.
        below: optional ``(H, W, C)`` image that replaces the background
            (frozen shapes underneath, already drawn).
        above: optional ``(T (H, W, 1), P (H, W, C))``: frozen shapes on top,
            as the affine map ``image -> T * image + P`` of "over" compositing
            (``T`` their transmittance, ``P`` their premultiplied colour).
    """

    shapes: list
    background: np.ndarray
    below: np.ndarray = None
    above: tuple = None

    def copy(self):
        return Scene([(k, p.copy()) for k, p in self.shapes], self.background.copy(), self.below, self.above)


class SceneEngine:
    """One compiled Adam loop that fits batches of scenes of ``kinds`` to ``(H, W, C)`` images.

    The loop is compiled once, for fixed table sizes: ``batch`` items and
    ``instances`` shapes of each kind per call; :meth:`fit` runs longer lists
    in chunks that fit. So one engine traces once, whatever it is given.

    Args:
        kinds: primitive kinds the scenes may hold (any of ``Render``'s).
        height, width: image size in pixels.
        channels: colour channels ``C``.
        max_depth: the most shapes per item (``D``).
        batch: items per compiled call.
        instances: shapes of each kind per compiled call (default
            ``batch * max_depth``: never a second chunk).
        composite: ``"over"`` (depth order matters) or ``"union"``.
        loop: ``"compiled"``: the whole run of steps is one compiled call
            (a ``keras.ops.fori_loop``); ``"python"``: one compiled call per
            step (the default on PyTorch, which runs eagerly either way).

    Attributes:
        traces: how many times the loop was traced (so compiled) so far; on
            PyTorch, where nothing is compiled, how many times it ran.

    Example:
        >>> import numpy as np
        >>> engine = SceneEngine(("disk",), 16, 16, 1, max_depth=2, batch=1)
        >>> truth = Scene([("disk", np.array([0.5, 0.5, 0.25, 1.0, 1.0], "float32"))], np.zeros(1, "float32"))
        >>> image = engine.render([truth], sharpness=4.0)
        >>> start = Scene([("disk", np.array([0.45, 0.55, 0.2, 0.8, 1.0], "float32"))], np.zeros(1, "float32"))
        >>> fitted, loss, _ = engine.fit([start], image, steps=150)
        >>> bool(np.abs(fitted[0].shapes[0][1][:3] - [0.5, 0.5, 0.25]).max() < 0.01)
        True
    """

    def __init__(self, kinds, height, width, channels, max_depth, batch, instances=None, composite="over",
                 loop=None):
        kinds = parse_kinds(kinds)
        self.kinds = kinds
        self.height = _validate.positive_int("height", height)
        self.width = _validate.positive_int("width", width)
        self.channels = _validate.positive_int("channels", channels)
        self.max_depth = _validate.positive_int("max_depth", max_depth)
        self.batch = _validate.positive_int("batch", batch)
        self.instances = _validate.positive_int("instances", self.batch * self.max_depth if instances is None else instances)
        if composite not in raster.COMPOSITES:
            raise ValueError(f"Expected composite to be one of {list(raster.COMPOSITES)}. Received: composite={composite!r}")
        self.composite = composite
        resolution = _resolution(self.height, self.width)
        # Alpha (opacity x coverage) of one shape: a one-channel Render with colour 1 over 0.
        self._alpha = {k: Render(k, resolution, channels=1, background=0.0, recompute=False) for k in kinds}
        self.specs = {k: Render(k, resolution, channels=self.channels).spec for k in kinds}
        # Colours are optimised as they are (identity), not through a sigmoid: white and black
        # (0 and 1) are common in images and a sigmoid only nears them; they are clipped on the way out.
        self._fields = {
            k: tuple((name, size, "identity" if s.field.kind == "color" else act)
                     for s, (name, size, act) in zip(self.specs[k].slices, fields_for(self.specs[k])))
            for k in kinds
        }
        self._heads = {k: ParameterHead(self._fields[k]) for k in kinds}
        self.sizes = {k: self.specs[k].size for k in kinds}
        self._geometry = {k: self.sizes[k] - self.channels - 1 for k in kinds}
        if loop is None:
            loop = "python" if keras.backend.backend() == "torch" else "compiled"
        if loop not in ("compiled", "python"):
            raise ValueError(f"Expected loop to be 'compiled' or 'python'. Received: loop={loop!r}")
        self.loop = loop
        self.traces = 0
        self._grad = autodiff.traced_value_and_grad(self._loss, wrt=2)
        self._run_compiled = autodiff.jit(self._run)
        self._step_compiled = autodiff.jit(self._step)

    # ---- the compiled part: backend tensors only --------------------------------------

    def _images(self, raws, bg_raw, ctx, depth, sharpness):
        below, use_below, above_t, above_p, free = ctx
        alphas, colors = [], []
        c, dtype = self.channels, "float32"
        for kind, raw, f in zip(self.kinds, raws, free):
            p = self._heads[kind](raw)
            g = self._geometry[kind]
            ones = ops.ones((ops.shape(p)[0], 2), dtype)  # colour 1, opacity 1: the coverage
            coverage = _draw(self._alpha[kind], ops.concatenate([p[:, :g], ones], axis=1), sharpness)
            alphas.append(coverage * _opacity(raw[:, -1:], f)[:, :, None, None])
            colors.append(p[:, g : g + c])
        alphas.append(ops.zeros((1, self.height, self.width, 1), dtype))  # the last row: no shape
        colors.append(ops.zeros((1, c), dtype))
        alphas = ops.concatenate(alphas, axis=0)
        colors = ops.concatenate(colors, axis=0)
        background = bg_raw[:, None, None, :]
        background = use_below * below + (1.0 - use_below) * background
        state = raster.start_state(self.composite, background)
        for d in range(self.max_depth):
            index = depth[:, d]
            state = raster.paint(
                self.composite, state, ops.take(alphas, index, axis=0), ops.take(colors, index, axis=0)[:, None, None, :]
            )
        return above_t * raster.finish(self.composite, state, background) + above_p

    def _loss(self, raws, bg_raw, ctx, depth, images, sharpness):
        recon = self._images(raws, bg_raw, ctx, depth, sharpness)
        per_item = ops.mean(ops.square(recon - images), axis=(1, 2, 3))
        return ops.sum(per_item), (per_item, recon)

    def _schedule(self, i, steps, lr, sharp_start, sharp_end, anneal):
        t = ops.cast(i, "float32")
        n = ops.maximum(ops.cast(steps, "float32"), 1.0)
        ramp = ops.minimum(t / ops.maximum(anneal * n, 1.0), 1.0)
        sharpness = sharp_start * ops.power(sharp_end / sharp_start, ramp)
        rate = lr * (0.02 + 0.98 * 0.5 * (1.0 + ops.cos(math.pi * t / n)))
        return sharpness, rate

    def _update(self, state, i, ctx, depth, images, masks, steps, lr, sharp_start, sharp_end, anneal):
        """One Adam step on every item (per-element moments: items are independent).

        Step ``i`` also records each item's loss and image *before* its update;
        step ``steps`` only records (its rate is 0): so a run of ``steps + 1``
        evaluations ends with the final parameters' loss and image, and one
        traced gradient serves both (no second, forward-only copy of the
        renderer in the compiled program).
        """
        raws, bg_raw, m, v, bg_m, bg_v = state[:6]
        sharpness, rate = self._schedule(i, steps, lr, sharp_start, sharp_end, anneal)
        rate = rate * ops.cast(ops.less(i, steps), "float32")
        _, (per_item, recon), (g_raws, g_bg) = self._grad(raws, bg_raw, ctx, depth, images, sharpness)
        t = ops.cast(i, "float32") + 1.0
        b1, b2, eps = 0.9, 0.999, 1e-8
        c1, c2 = 1.0 - ops.power(b1, t), 1.0 - ops.power(b2, t)

        def adam(x, g, m_, v_, mask):
            m_ = b1 * m_ + (1 - b1) * g
            v_ = b2 * v_ + (1 - b2) * g * g
            return x - mask * (rate * (m_ / c1) / (ops.sqrt(v_ / c2) + eps)), m_, v_

        new = [adam(x, g, a, b, k) for x, g, a, b, k in zip(raws, g_raws, m, v, masks)]
        bg_raw, bg_m, bg_v = adam(bg_raw, g_bg, bg_m, bg_v, 1.0)
        return (tuple(n[0] for n in new), bg_raw, tuple(n[1] for n in new), tuple(n[2] for n in new), bg_m, bg_v,
                per_item, recon)

    def _init_state(self, raws, bg_raw):
        raws = tuple(raws)
        zeros = tuple(ops.zeros_like(r) for r in raws)
        return (raws, bg_raw, zeros, tuple(ops.zeros_like(r) for r in raws), ops.zeros_like(bg_raw),
                ops.zeros_like(bg_raw), ops.zeros((self.batch,), "float32"),
                ops.zeros((self.batch, self.height, self.width, self.channels), "float32"))

    def _run(self, raws, bg_raw, masks, ctx, depth, images, steps, lr, sharp_start, sharp_end, anneal):
        self.traces += 1
        state = self._init_state(raws, bg_raw)

        def body(i, state):
            return self._update(state, i, ctx, depth, images, masks, steps, lr, sharp_start, sharp_end, anneal)

        state = ops.fori_loop(0, steps + 1, body, state)
        return state[0], state[1], state[6], state[7]

    def _step(self, state, i, ctx, depth, images, masks, steps, lr, sharp_start, sharp_end, anneal):
        self.traces += 1
        return self._update(state, i, ctx, depth, images, masks, steps, lr, sharp_start, sharp_end, anneal)

    # ---- host side: scenes <-> tables ----------------------------------------------------

    def _chunks(self, scenes):
        """Split ``range(len(scenes))`` into runs that fit ``batch`` items and ``instances`` of each kind."""
        chunks, current, counts = [], [], {k: 0 for k in self.kinds}
        for b, scene in enumerate(scenes):
            need = {k: 0 for k in self.kinds}
            for kind, _ in scene.shapes:
                need[kind] += 1
            if any(need[k] > self.instances for k in self.kinds) or len(scene.shapes) > self.max_depth:
                raise ValueError(
                    f"Expected at most max_depth={self.max_depth} shapes per scene, at most instances="
                    f"{self.instances} of a kind. Received: scene {b} with shapes={[k for k, _ in scene.shapes]}"
                )
            if len(current) == self.batch or any(counts[k] + need[k] > self.instances for k in self.kinds):
                chunks.append(current)
                current, counts = [], {k: 0 for k in self.kinds}
            current.append(b)
            for k in self.kinds:
                counts[k] += need[k]
        chunks.append(current)
        return chunks

    def _pack(self, scenes, images, train, opacity):
        """Tables of one chunk: raws, masks, bg_raw, context, depth, images (padded to the fixed sizes)."""
        h, w, c = self.height, self.width, self.channels
        rows = {k: [] for k in self.kinds}
        moving = {k: [] for k in self.kinds}
        loose = {k: [] for k in self.kinds}
        depth = np.full((self.batch, self.max_depth), -1, np.int64)
        for b, scene in enumerate(scenes):
            for d, (kind, params) in enumerate(scene.shapes):
                depth[b, d] = sum(self.instances for k in self.kinds[: self.kinds.index(kind)]) + len(rows[kind])
                rows[kind].append(np.asarray(params, np.float32))
                moving[kind].append(1.0 if train is None or d in train[b] else 0.0)
                loose[kind].append(1.0 if opacity[b] else 0.0)
        raws, masks, free = [], [], []
        for kind in self.kinds:
            table = np.full((self.instances, self.sizes[kind]), 0.5, np.float32)
            mask = np.zeros((self.instances, 1), np.float32)
            f = np.zeros((self.instances, 1), np.float32)
            if rows[kind]:
                table[: len(rows[kind])] = np.stack(rows[kind])
                mask[: len(rows[kind]), 0] = moving[kind]
                f[: len(rows[kind]), 0] = loose[kind]
            raw = self._raw(kind, table)
            raw[:, -1] = _logit(np.clip(table[:, -1], 0.02, _OPACITY_START)) / _OPACITY_GAIN
            raws.append(raw)
            masks.append(mask)
            free.append(f)
        depth[depth < 0] = self.instances * len(self.kinds)  # the empty row
        bg = np.full((self.batch, c), 0.5, np.float32)
        below = np.zeros((self.batch, h, w, c), np.float32)
        use_below = np.zeros((self.batch, 1, 1, 1), np.float32)
        above_t = np.ones((self.batch, h, w, 1), np.float32)
        above_p = np.zeros((self.batch, h, w, c), np.float32)
        target = np.zeros((self.batch, h, w, c), np.float32)
        for b, scene in enumerate(scenes):
            bg[b] = scene.background
            if scene.below is not None:
                below[b], use_below[b] = scene.below, 1.0
            if scene.above is not None:
                above_t[b], above_p[b] = scene.above
            target[b] = images[b]
        ctx = (below, use_below, above_t, above_p, tuple(free))
        return tuple(raws), tuple(masks), bg, ctx, depth.astype("int32"), target

    def _raw(self, kind, params):
        raw, start = [], 0
        for _, size, activation in self._fields[kind]:
            x = params[:, start : start + size]
            raw.append(_logit(x) if activation == "fraction" else x)
            start += size
        return np.concatenate(raw, axis=1).astype("float32")

    def _unpack(self, scenes, raws, bg_raw, opacity):
        params = {k: keras.ops.convert_to_numpy(self._heads[k](r)) for k, r in zip(self.kinds, raws)}
        # sigmoid(gain * raw) written with tanh: no overflow warning for a very negative raw.
        opacities = {k: 0.5 + 0.5 * np.tanh(0.5 * _OPACITY_GAIN * keras.ops.convert_to_numpy(r)[:, -1].astype(np.float64))
                     for k, r in zip(self.kinds, raws)}
        bg = np.clip(keras.ops.convert_to_numpy(bg_raw), 0.0, 1.0)
        out, counters = [], {k: 0 for k in self.kinds}
        for b, scene in enumerate(scenes):
            shapes = []
            for kind, _ in scene.shapes:
                p = params[kind][counters[kind]].astype("float32")
                g = self._geometry[kind]
                if opacity[b]:
                    p[g : g + self.channels], p[-1] = _fold(p[g : g + self.channels], opacities[kind][counters[kind]])
                else:
                    p[-1] = 1.0
                p[g:] = np.clip(p[g:], 0.0, 1.0)
                shapes.append((kind, p))
                counters[kind] += 1
            background = scene.background if scene.below is not None else bg[b].astype("float32")
            out.append(Scene(shapes, background, scene.below, scene.above))
        return out

    def fit(self, scenes, images, steps=100, learning_rate=0.05, sharpness=(0.25, 1.0), anneal=0.6, train=None,
            opacity=False):
        """Refine every scene against its image.

        Args:
            scenes: ``B`` :class:`Scene` starts.
            images: ``(B, H, W, C)`` targets.
            steps: Adam steps (every item at once); 0 only renders.
            learning_rate: peak rate on the raw parameters, cosine-decayed to 2 %.
            sharpness: ``(start, end)`` edge sharpness in px^-1, grown
                geometrically over the first ``anneal`` fraction of the steps.
            train: optional ``B`` collections of depth positions that move
                (the others stay; the background always moves).
            opacity: whether the shapes' opacities are fitted too: a bool
                for every scene, or ``B`` bools. False: held at exactly 1
                (whatever the scene says). True: each starts from its
                scene's opacity (capped at 0.95, from where a sigmoid can
                still move) and moves with the rest; a colour above 1 is
                folded into the opacity on the way out (``opacity x colour``
                kept, the colour's largest channel brought to 1).

        Returns:
            ``(scenes, loss (B,), images (B, H, W, C))``: the refined scenes,
            their MSE and their images at the final sharpness.
        """
        if isinstance(steps, bool) or not isinstance(steps, (int, np.integer)) or steps < 0:
            raise ValueError(f"Expected steps to be an integer >= 0. Received: steps={steps!r}")
        if not isinstance(scenes, (list, tuple)) or not scenes:
            raise ValueError(f"Expected scenes to be a non-empty list of Scene. Received: scenes={scenes!r}")
        images = np.asarray(images, np.float32)
        expected = (len(scenes), self.height, self.width, self.channels)
        if images.shape != expected:
            raise ValueError(f"Expected images of shape {expected}. Received: images.shape={images.shape}")
        s0, s1 = (float(v) for v in sharpness)
        if not (s0 > 0 and s1 > 0):
            raise ValueError(f"Expected sharpness to be two numbers > 0. Received: sharpness={sharpness!r}")
        if isinstance(opacity, (bool, np.bool_)):
            opacity = [bool(opacity)] * len(scenes)
        if not isinstance(opacity, (list, tuple, np.ndarray)) or len(opacity) != len(scenes):
            raise ValueError(f"Expected opacity to be a bool or one bool per scene ({len(scenes)}). "
                             f"Received: opacity={opacity!r}")
        args = tuple(np.float32(v) for v in (learning_rate, s0, s1, anneal))
        with _torch_threads(1):
            return self._fit_chunks(scenes, images, steps, train, [bool(v) for v in opacity], args)

    def _fit_chunks(self, scenes, images, steps, train, opacity, args):
        out, losses, recons = [], [], []
        for chunk in self._chunks(scenes):
            part = [scenes[b] for b in chunk]
            tables = self._pack(part, images[chunk], None if train is None else [train[b] for b in chunk],
                                [opacity[b] for b in chunk])
            raws, masks, bg_raw, ctx, depth, target = keras.tree.map_structure(ops.convert_to_tensor, tables)
            if self.loop == "compiled":
                raws, bg_raw, loss, recon = self._run_compiled(raws, bg_raw, masks, ctx, depth, target, np.int32(steps),
                                                               *args)
            else:
                state = self._init_state(raws, bg_raw)
                for i in range(steps + 1):  # the last step only evaluates (see _update)
                    state = self._step_compiled(state, np.int32(i), ctx, depth, target, masks, np.int32(steps), *args)
                raws, bg_raw, loss, recon = state[0], state[1], state[6], state[7]
            out.extend(self._unpack(part, raws, bg_raw, [opacity[b] for b in chunk]))
            losses.append(keras.ops.convert_to_numpy(loss)[: len(part)])
            recons.append(keras.ops.convert_to_numpy(recon)[: len(part)])
        return out, np.concatenate(losses).astype(np.float64), np.concatenate(recons)

    def warm(self):
        """Trace and compile the loop now (one empty scene, no step), if it is compiled and not yet.

        :func:`fit_scene` calls it in a thread for the full-resolution engine
        while the search runs on the other: the compiler (C++, outside
        Python's lock) then uses a core that the search leaves idle.
        """
        if self.loop == "compiled" and self.traces == 0 and keras.backend.backend() != "torch":
            background = np.zeros(self.channels, np.float32)
            self.fit([Scene([], background)], np.zeros((1, self.height, self.width, self.channels), np.float32), steps=0)

    def render(self, scenes, sharpness=1.0, opacity=False):
        """``(B, H, W, C)`` images of ``scenes`` (NumPy float32); ``opacity`` as in :meth:`fit` (False: opaque;
        True: the scenes' opacities, at most 0.95)."""
        zeros = np.zeros((len(scenes), self.height, self.width, self.channels), np.float32)
        return self.fit(scenes, zeros, steps=0, sharpness=(sharpness, sharpness), opacity=opacity)[2]


@contextlib.contextmanager
def _torch_threads(count):
    """On PyTorch, run the block on ``count`` CPU threads (restored after); elsewhere nothing.

    The engine's eager ops are small (a few hundred thousand numbers): split
    over OpenMP threads they gain little, and on a machine whose cores are
    busy the threads spin waiting for each other: a search step took 3.7 s
    on 2 threads and 0.15 s on 1 (2-core CPU at load 8).
    """
    if keras.backend.backend() != "torch":
        yield
        return
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(before)


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
        rect = _min_area_rectangle(points) if points is not None else None
        if rect is None:
            values.update(center=center, half_size=np.sqrt(3 * lam), direction=u, corner=[0.0])
        else:
            values.update(center=rect[0], half_size=rect[1], direction=rect[2], corner=[0.0])
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


def _min_area_rectangle(points):
    """The smallest rectangle around pixel centres ``(n, 2)`` (one side along a hull edge):
    ``(center, half sizes + 0.5 px, axis 0 direction)``, or None for fewer than 3 distinct points."""
    from scipy.spatial import ConvexHull, QhullError

    try:
        hull = points[ConvexHull(points).vertices]
    except (QhullError, ValueError):
        return None
    best = None
    for a, b in zip(hull, np.roll(hull, -1, axis=0)):
        edge = b - a
        length = np.linalg.norm(edge)
        if length < 1e-9:
            continue
        u = edge / length
        v = np.array([-u[1], u[0]])
        x, y = hull @ u, hull @ v
        area = (x.max() - x.min()) * (y.max() - y.min())
        if best is None or area < best[0]:
            mid = u * (x.max() + x.min()) / 2 + v * (y.max() + y.min()) / 2
            half = np.array([(x.max() - x.min()) / 2, (y.max() - y.min()) / 2]) + 0.5
            best = (area, mid, half, u)
    return None if best is None else best[1:]


def _blob(image, recon, threshold, background, contrast):
    """Where to put one more shape: ``(points (n, 2) px, colour (C,))``, or None.

    The seed is the peak of the residual ``|image - recon|`` (largest over
    channels, averaged over 5 x 5 pixels; pixels of the background's colour
    do not count: a shape there would only carve); the blob is the connected
    region around it of residual above ``threshold`` and of the seed's colour
    (the median over 3 x 3 pixels, within ``contrast / 2``), so that two
    touching shapes of different colours are two blobs. Where no pixel has
    that colour (a shape 2-3 px wide: the median mixed it with its edges),
    the seed moves to the largest single error within 2 px and takes its
    own colour.
    """
    from scipy import ndimage

    error = np.abs(image - recon).max(axis=-1)
    error[np.abs(image - background).max(axis=-1) < contrast] = 0.0
    if error.max() < threshold:
        return None
    smooth = ndimage.uniform_filter(error, size=5, mode="constant")
    seed = np.unravel_index(np.argmax(smooth), error.shape)
    window = image[max(seed[0] - 1, 0) : seed[0] + 2, max(seed[1] - 1, 0) : seed[1] + 2].reshape(-1, image.shape[-1])
    color = np.median(window, axis=0)
    mask = (error >= threshold) & (np.abs(image - color).max(axis=-1) < 0.5 * contrast)
    if not mask.any():
        # A shape 2-3 px wide: the smoothed peak may fall beside it, and the median of the window mixes
        # it with its edges and the background. Then the largest error within 2 px, and its own colour.
        r0, c0 = max(seed[0] - 2, 0), max(seed[1] - 2, 0)
        near = error[r0 : seed[0] + 3, c0 : seed[1] + 3]
        seed = tuple(int(v) for v in np.add(np.unravel_index(np.argmax(near), near.shape), (r0, c0)))
        color = image[seed]
        mask = (error >= threshold) & (np.abs(image - color).max(axis=-1) < 0.5 * contrast)
    opened = ndimage.binary_opening(mask, structure=np.ones((2, 2), bool))
    if opened.sum() >= 3:
        mask = opened
    labels, count = ndimage.label(mask)
    if count == 0:
        return None
    label = labels[seed]
    if label == 0:
        label = 1 + int(np.argmax(ndimage.sum(mask, labels, index=np.arange(1, count + 1))))
    region = labels == label
    return np.argwhere(region).astype(np.float64), np.median(image[region], axis=0)


class _Search:
    """Greedy forward selection over a batch of same-size images (see the module docstring)."""

    def __init__(self, images, kinds, max_shapes, fixed, factor, options, starts=None):
        self.images = np.asarray(images, np.float32)
        self.starts = starts  # per image a Scene at full resolution (or None): the search continues from it
        b, h, w, c = self.images.shape
        self.kinds, self.max_shapes, self.fixed, self.f, self.o = kinds, max_shapes, fixed, factor, options
        self.coarse = _downsample(self.images, factor)
        hc, wc = self.coarse.shape[1:3]
        size = _bucket(b)
        k = len(kinds)
        self.engine = _engine(kinds, hc, wc, c, max_shapes, options["composite"], batch=2 * k * size,
                              instances=max(3 * size, max_shapes))
        if factor == 1:  # the search is at full resolution: its engine polishes too (one compilation)
            self.full = self.engine
            self._warming = None
        else:  # the polish's engine compiles in a thread while the search runs (joined before the polish)
            self.full = _engine(kinds, h, w, c, max_shapes, options["composite"], batch=size,
                                instances=max(size, max_shapes))
            self._warming = threading.Thread(target=_quietly, args=(self.full.warm,), daemon=True)
            self._warming.start()
        self.geo = {k: _Geometry(self.engine, k) for k in kinds}
        self.noise = noise_level(self.images)
        # The gain one more shape must bring, in summed squared error at the search resolution.
        self.n = hc * wc * c
        sigma = self.noise / factor
        floor = options["min_area"] / factor**2 * c * options["min_contrast"] ** 2
        self.gain = {
            k: np.maximum((self.engine.sizes[k] - 1) * math.log(self.n) * sigma**2 * options["bic_weight"], floor)
            for k in kinds
        }
        # The price of one geometry parameter (the rule for a simpler kind), same units.
        self.price = np.maximum(math.log(self.n) * sigma**2 * options["bic_weight"],
                                options["simpler_px"] / factor**2 * c * options["min_contrast"] ** 2)

    def _score(self, i, scene, loss):
        """Image ``i``'s penalised error of ``scene``: summed squared error + price x geometry parameters."""
        return loss * self.n + self.price[i] * sum(self.engine._geometry[k] for k, _ in scene.shapes)

    def _simplest(self, i, rows, scenes, losses):
        """The row of ``rows`` (candidates for image ``i``) of least penalised error: the simpler kind wins ties
        up to the price of the parameters it saves."""
        return rows[int(np.argmin([self._score(i, scenes[r], losses[r]) for r in rows]))]

    def _fit(self, items, owner, steps, start, lr=1.0):
        o = self.o
        return self.engine.fit(items, self.coarse[owner], steps=steps, learning_rate=lr * o["learning_rate"],
                               sharpness=(start, o["sharpness"][1]), anneal=0.6)

    def _context(self, scenes, recon):
        """Per image: ``(T, P)`` of its shapes as a frozen layer on top (for a shape slid underneath)."""
        c = self.images.shape[-1]
        black = [Scene(s.shapes, np.zeros(c, np.float32)) for s in scenes]
        white = [Scene([(k, _with_color(self.engine, k, p, 1.0)) for k, p in s.shapes], np.zeros(c, np.float32))
                 for s in scenes]
        sharp = self.o["sharpness"][1]
        painted = self.engine.render(black, sharp)
        alpha = self.engine.render(white, sharp)[..., :1]
        return 1.0 - alpha, painted

    def run(self):
        o = self.o
        b = len(self.images)
        scenes = [Scene([], data.border_color(im)) for im in self.images]
        recon = np.broadcast_to(np.stack([s.background for s in scenes])[:, None, None], self.coarse.shape).copy()
        loss = ((self.coarse - recon) ** 2).mean(axis=(1, 2, 3))
        if self.starts is not None:
            scenes, loss, recon = self._start(scenes, loss, recon)
        scenes, loss, recon = self._grow(scenes, loss, recon, np.ones(b, bool))
        todo = np.arange(b)
        for round_ in range(o["rounds"] + 1):  # backward (reorder, rekind, prune), then forward where a shape went
            if o["reorder"]:
                scenes, loss = self._reorder(scenes, loss, todo)
            if self.fixed is None and o["rekind"]:
                scenes, loss = self._rekind(scenes, loss, todo)
            if self.fixed is not None or not o["prune"]:
                break
            counts = np.array([len(s.shapes) for s in scenes])
            scenes, loss = self._prune(scenes, loss, todo)
            freed = np.array([i for i in todo if len(scenes[i].shapes) < counts[i]], int)
            if not len(freed) or round_ == o["rounds"]:
                break
            # A pruned shape was redundant (two shapes on one, from a start the joint fit could not move far):
            # its place is free again, and a shape the search could not add while it was full may go there.
            counts = np.array([len(s.shapes) for s in scenes])
            recon[freed] = self.engine.render([scenes[i] for i in freed], o["sharpness"][1])
            active = np.zeros(b, bool)
            active[freed] = True
            scenes, loss, recon = self._grow(scenes, loss, recon, active)
            todo = np.array([i for i in freed if len(scenes[i].shapes) > counts[i]], int)
            if not len(todo):
                break
        return self._polish(scenes)

    def _grow(self, scenes, loss, recon, active):
        """Forward selection: up to ``max_shapes`` times, one more shape for every ``active`` image where the
        residual asks for it and the rule for one more shape says so: ``(scenes, loss, recon)``."""
        o = self.o
        c = self.images.shape[-1]
        active = active.copy()
        for _ in range(self.max_shapes):
            if not active.any():
                break
            above_t, above_p = self._context(scenes, recon)
            items, owner, where = [], [], []
            for i in np.flatnonzero(active):
                remaining = self._remaining(scenes[i])
                blob = _blob(self.coarse[i], recon[i], max(4 * self.noise[i], 0.02), scenes[i].background,
                             o["min_contrast"])
                if blob is None or not remaining:
                    active[i] = False
                    continue
                points, color = blob
                cov = np.cov(points.T) if len(points) > 2 else np.eye(2)
                for kind in remaining:
                    new = _start_shape(kind, self.geo[kind], points.mean(0), cov, color, c, points)
                    items.append(Scene([(kind, new)], scenes[i].background.copy(), below=recon[i]))
                    owner.append(i)
                    where.append("top")
                    if scenes[i].shapes:
                        items.append(Scene([(kind, new.copy())], scenes[i].background.copy(),
                                           above=(above_t[i], above_p[i])))
                        owner.append(i)
                        where.append("bottom")
            if not items:
                break
            fitted, losses, _ = self._fit(items, owner, o["steps"], o["sharpness"][0])
            owner = np.asarray(owner)
            joint, joint_owner, same = [], [], []
            for i in np.unique(owner):
                rows = np.flatnonzero(owner == i)
                if scenes[i].shapes:  # the fit as it is, refined as long: a fair baseline for the gain
                    joint.append(scenes[i].copy())
                    joint_owner.append(i)
                    same.append(True)
                for r in rows[np.argsort(losses[rows])][: o["keep"]]:
                    shape = fitted[r].shapes[0]
                    if where[r] == "top":
                        joint.append(Scene(list(scenes[i].shapes) + [shape], scenes[i].background.copy()))
                    else:
                        joint.append(Scene([shape] + list(scenes[i].shapes), fitted[r].background.copy()))
                    joint_owner.append(i)
                    same.append(False)
            fitted, losses, recons = self._fit(joint, joint_owner, o["joint_steps"], 0.7 * o["sharpness"][1], lr=0.5)
            joint_owner, same = np.asarray(joint_owner), np.asarray(same)
            for i in np.unique(joint_owner):
                rows = np.flatnonzero(joint_owner == i)
                base = rows[same[rows]]
                if len(base):
                    scenes[i], loss[i], recon[i] = fitted[base[0]], losses[base[0]], recons[base[0]]
                rows = rows[~same[rows]]
                best = self._simplest(i, rows, fitted, losses)
                new_kind = self._new_kind(scenes[i], fitted[best])
                visible = self._stands_out(fitted[best])
                if self.fixed is not None or (visible and (loss[i] - losses[best]) * self.n > self.gain[new_kind][i]):
                    scenes[i], loss[i], recon[i] = fitted[best], losses[best], recons[best]
                else:
                    active[i] = False
        return scenes, loss, recon

    def _start(self, scenes, loss, recon):
        """The given starts at the search resolution, refined together (all shapes moving) as a joint
        fit is: the scenes that the search then continues from (one more shape, reorder, rekind, prune)."""
        o = self.o
        given = [i for i, start in enumerate(self.starts) if start is not None]
        for i in given:
            scenes[i] = self._to_coarse(self.starts[i])
        moving = [i for i in given if scenes[i].shapes]
        for rest in range(2):
            if not moving:
                break
            fitted, losses, recons = self._fit([scenes[i] for i in moving], moving, o["joint_steps"],
                                               o["sharpness"][0] if rest == 0 else 0.7 * o["sharpness"][1], lr=0.5)
            for i, scene, l, r in zip(moving, fitted, losses, recons):
                scenes[i], loss[i], recon[i] = scene, l, r
            # A given shape of the background's colour (a guess that covers the background) only carves:
            # dropped, as the search would never have added it, and the rest refitted once. The colour of
            # the border is the reference (the fitted background may have drifted to a shape's colour, the
            # big shape of the background's colour on top of it), and the background starts there again.
            dropped = []
            for i in moving:
                border = data.border_color(self.coarse[i])
                kept = [(k, p) for k, p in scenes[i].shapes
                        if self._contrast(k, p, border) and self._contrast(k, p, scenes[i].background)]
                if len(kept) < len(scenes[i].shapes):
                    scenes[i] = Scene(kept, border)
                    dropped.append(i)
            moving = [i for i in dropped if scenes[i].shapes]
        for i in [i for i in given if not scenes[i].shapes]:  # a background alone
            recon[i] = np.broadcast_to(scenes[i].background, recon[i].shape)
            loss[i] = ((self.coarse[i] - recon[i]) ** 2).mean()
        return scenes, loss, recon

    def _stands_out(self, scene):
        """Whether every shape's colour differs from the background by ``min_contrast`` (else it only carves)."""
        return all(self._contrast(k, p, scene.background) for k, p in scene.shapes)

    def _contrast(self, kind, params, background):
        return np.abs(_with_color(self.engine, kind, params, None)[1] - background).max() >= self.o["min_contrast"]

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

    def _reorder(self, scenes, loss, which):
        """Try swapping the depth of every pair of overlapping shapes of the images ``which``; keep what lowers
        the error."""
        o = self.o
        items, owner = [], []
        for i in which:
            scene = scenes[i]
            k = len(scene.shapes)
            if k < 2 or o["composite"] != "over":
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
        return self._keep_best(items, owner, 0.7, scenes, loss)

    def _keep_best(self, items, owner, sharpness, scenes, loss):
        """Refine candidate ``items`` (``owner[k]``: the image of item k) at ``sharpness`` x the final
        sharpness; each image keeps its candidate of least penalised error (its current fit is one of
        them; see the rule for a simpler kind)."""
        o = self.o
        fitted, losses, _ = self._fit(items, owner, o["order_steps"], sharpness * o["sharpness"][1], lr=0.5)
        owner = np.asarray(owner)
        for i in np.unique(owner):
            best = self._simplest(i, np.flatnonzero(owner == i), fitted, losses)
            scenes[i], loss[i] = fitted[best], losses[best]
        return scenes, loss

    def _rekind(self, scenes, loss, which):
        """Try every other kind for every shape of the images ``which`` (started from its centre, axes and colour);
        keep what lowers the error."""
        c = self.images.shape[-1]
        items, owner = [], []
        for i in which:
            scene = scenes[i]
            if not scene.shapes or len(self.kinds) < 2:
                continue
            items.append(scene.copy())
            owner.append(i)
            for j, (kind, p) in enumerate(scene.shapes):
                center, cov = _moments(kind, self.geo[kind].to_pixels(p))
                color = _with_color(self.engine, kind, p, None)[1]
                points = self._region(i, center, cov, color)
                for other in self.kinds:
                    if other != kind:
                        shapes = list(scene.shapes)
                        shapes[j] = (other, _start_shape(other, self.geo[other], center, cov, color, c, points))
                        items.append(Scene(shapes, scene.background.copy()))
                        owner.append(i)
        if not items:
            return scenes, loss
        return self._keep_best(items, owner, 0.5, scenes, loss)

    def _region(self, i, center, cov, color):
        """Pixels (search resolution) near a shape of ``center``, ``cov`` that have its colour, or None."""
        image = self.coarse[i]
        reach = 2.5 * math.sqrt(max(np.linalg.eigvalsh(cov).max(), 1.0))
        rows, cols = np.indices(image.shape[:2])
        near = (rows - center[0]) ** 2 + (cols - center[1]) ** 2 < reach**2
        mask = near & (np.abs(image - color).max(axis=-1) < 0.5 * self.o["min_contrast"])
        points = np.argwhere(mask).astype(np.float64)
        return points if len(points) >= 3 else None

    def _prune(self, scenes, loss, which):
        """Drop a shape of the images ``which`` whose removal raises the error by less than the gain of one
        more shape."""
        o = self.o
        items, owner, dropped = [], [], []
        for i in which:
            scene = scenes[i]
            if len(scene.shapes) < 2:
                continue
            for j in range(len(scene.shapes)):
                items.append(Scene([s for t, s in enumerate(scene.shapes) if t != j], scene.background.copy()))
                owner.append(i)
                dropped.append(scene.shapes[j][0])
        if not items:
            return scenes, loss
        fitted, losses, _ = self._fit(items, owner, o["order_steps"], 0.7 * o["sharpness"][1], lr=0.5)
        owner = np.asarray(owner)
        for i in np.unique(owner):
            rows = np.flatnonzero(owner == i)
            best = rows[np.argmin(losses[rows])]
            if (losses[best] - loss[i]) * self.n < self.gain[dropped[best]][i]:
                scenes[i], loss[i] = fitted[best], losses[best]
        return scenes, loss

    def _to_coarse(self, scene):
        """A full-resolution scene at the search resolution (the inverse of :meth:`_to_full`)."""
        if self.f == 1:
            return scene.copy()
        f, shapes = self.f, []
        for kind, p in scene.shapes:
            coarse, full = self.geo[kind], _Geometry(self.full, kind)
            q = np.asarray(p, np.float64).copy()
            for field, sl in coarse.fields:
                if field.kind == "position":
                    x = field.to_natural(p[sl], full.resolution)
                    q[sl] = field.from_natural((x - (f - 1) / 2.0) / f, coarse.resolution)
                elif field.kind == "size":
                    q[sl] = field.from_natural(field.to_natural(p[sl], full.resolution) / f, coarse.resolution)
            shapes.append((kind, q.astype("float32")))
        return Scene(shapes, np.asarray(scene.background, np.float32).copy())

    def _to_full(self, scenes):
        if self.f == 1:
            return scenes
        f, out = self.f, []
        for scene in scenes:
            shapes = []
            for kind, p in scene.shapes:
                coarse, full = self.geo[kind], _Geometry(self.full, kind)
                q = p.astype(np.float64).copy()
                for field, sl in coarse.fields:
                    if field.kind == "position":
                        x = field.to_natural(p[sl], coarse.resolution)
                        q[sl] = field.from_natural(f * x + (f - 1) / 2.0, full.resolution)
                    elif field.kind == "size":
                        q[sl] = field.from_natural(f * field.to_natural(p[sl], coarse.resolution), full.resolution)
                shapes.append((kind, q.astype("float32")))
            out.append(Scene(shapes, scene.background.copy()))
        return out

    def _polish(self, scenes):
        """Every scene refined at full resolution, opaque and (option ``opacity``) with its opacities fitted
        too: the translucent fit is kept where it earns its parameters (the rule for translucency, module
        docstring). Edges sharpen to each image's own sharpness (option ``soft_edges``): ``(scenes, loss)``,
        and ``self.edges`` ``(B,)``."""
        o = self.o
        if self._warming is not None:
            self._warming.join()
        scenes = self._to_full(scenes)
        nonempty = [i for i, s in enumerate(scenes) if s.shapes]
        loss = ((self.images - np.stack([s.background for s in scenes])[:, None, None]) ** 2).mean(axis=(1, 2, 3))
        self.edges = np.full(len(scenes), float(o["final_sharpness"]))
        if not nonempty:
            return scenes, loss
        if o["soft_edges"]:  # the ladder's sharpness that draws the search's scene closest to the image
            ladder = o["final_sharpness"] * np.array(_EDGE_LADDER)
            items = [scenes[i] for i in nonempty]
            errors = [((self.full.render(items, s) - self.images[nonempty]) ** 2).mean(axis=(1, 2, 3)) for s in ladder]
            errors = np.stack(errors)
            # Sharp unless a softer edge draws it 10 % closer: the search's scene is only roughly in place
            # (at half resolution), which a softer edge blurs over (module docstring).
            softer = errors.min(axis=0) < _EDGE_MARGIN * errors[0]
            self.edges[nonempty] = np.where(softer, ladder[np.argmin(errors, axis=0)], ladder[0])
        h, w, c = self.images.shape[1:]
        n = h * w * c
        price = np.maximum(math.log(n) * self.noise**2 * o["bic_weight"], o["simpler_px"] * c * o["min_contrast"] ** 2)
        for edge in np.unique(self.edges[nonempty]):
            group = [i for i in nonempty if self.edges[i] == edge]
            fitted, losses, _ = self.full.fit([scenes[i] for i in group], self.images[group], steps=o["polish_steps"],
                                              learning_rate=0.3 * o["learning_rate"],
                                              sharpness=(min(o["sharpness"][1] / self.f, edge), edge), anneal=0.5,
                                              opacity=o["opacity"])
            if o["opacity"]:  # each shape made opaque in the colour it shows over the background, if that costs little
                opaque = [Scene([(kind, _opaque(self.full, kind, p, f.background)) for kind, p in f.shapes], f.background)
                          for f in fitted]
                _, flat, _ = self.full.fit(opaque, self.images[group], steps=0, sharpness=(edge, edge))
                for k, i in enumerate(group):
                    if (flat[k] - losses[k]) * n <= price[i] * len(fitted[k].shapes):
                        fitted[k], losses[k] = opaque[k], flat[k]
            for k, i in enumerate(group):
                scenes[i], loss[i] = fitted[k], losses[k]
        return scenes, loss


def _opaque(engine, kind, params, background):
    """``params`` with opacity 1 and the colour it showed over ``background``: ``o c + (1 - o) background``."""
    p, color = _with_color(engine, kind, params, None)
    p = _with_color(engine, kind, p, p[-1] * color + (1.0 - p[-1]) * np.asarray(background, np.float32))
    p[-1] = 1.0
    return p


def _fold(color, opacity):
    """``(colour, opacity)`` of a fitted shape with its colour's largest channel brought down to 1 (if above),
    the excess moved into the opacity (up to 1): ``opacity x colour`` kept where it can be (over black,
    the image the fit drew)."""
    color = np.asarray(color, np.float64)
    top = max(float(color.max()), 1.0)
    folded = min(float(opacity) * top, 1.0)
    return (color * float(opacity) / max(folded, 1e-12)).astype("float32"), np.float32(folded)


def _with_color(engine, kind, params, value):
    """``params`` with the colour set to ``value``; with ``value=None``, ``(params, colour)``."""
    p = np.asarray(params, np.float32).copy()
    g = engine.sizes[kind] - engine.channels - 1
    if value is None:
        return p, p[g : g + engine.channels]
    p[g : g + engine.channels] = value
    return p


def _quietly(fn):
    """Run ``fn()``, dropping its errors: for a warm-up whose work is redone (and its error raised) where it counts."""
    try:
        fn()
    except Exception:  # noqa: BLE001 -- the same call runs again in the caller's thread
        pass


_ENGINES = {}
# At most this many images are searched together (memory; one compiled size for a long list).
GROUP = 16


def _engine(kinds, height, width, channels, max_depth, composite, batch, instances):
    """One engine per settings and backend: built once, reused by every call."""
    key = (tuple(kinds), height, width, channels, max_depth, composite, batch, instances, keras.backend.backend())
    if key not in _ENGINES:
        _ENGINES[key] = SceneEngine(kinds, height, width, channels, max_depth, batch, instances, composite)
    return _ENGINES[key]


SEARCH_DEFAULTS = dict(
    steps=60,
    joint_steps=60,
    keep=3,
    order_steps=40,
    polish_steps=100,
    learning_rate=0.05,
    sharpness=(0.3, 1.0),
    final_sharpness=2.5,
    min_area=20.0,
    min_contrast=0.2,
    simpler_px=1.5,
    bic_weight=1.0,
    coarse_above=40,
    reorder=True,
    rekind=True,
    prune=True,
    rounds=1,
    composite="over",
    opacity=True,
    soft_edges=True,
)


def search_spec(kinds, max_shapes, shapes):
    """``(kinds, max_shapes, fixed)`` of a search: ``fixed`` is ``{kind: count}`` for ``shapes``, else None.

    ``kinds`` and ``max_shapes`` (None: :data:`DEFAULT_KINDS`, 5) describe a
    search of unknown kinds and count; ``shapes`` exactly those shapes. Both
    at once is a ``ValueError``: which one the caller meant is not ours to guess.
    """
    if shapes is not None:
        given = [f"{name}={value!r}" for name, value in (("kinds", kinds), ("max_shapes", max_shapes)) if value is not None]
        if given:
            raise ValueError("Expected either shapes, or kinds and max_shapes, not both. "
                             f"Received: shapes={shapes!r}, {', '.join(given)}")
        fixed = {}
        for kind, count in Render(shapes, 8).shapes:  # parsed (and checked) by the renderer
            fixed[kind] = fixed.get(kind, 0) + count
        return tuple(fixed), sum(fixed.values()), fixed
    kinds = parse_kinds(DEFAULT_KINDS if kinds is None else kinds)
    return kinds, _validate.positive_int("max_shapes", DEFAULT_MAX_SHAPES if max_shapes is None else max_shapes), None


def fit_scene(images, kinds=None, max_shapes=None, shapes=None, starts=None, **options):
    """Fit a scene of primitives to every image: kinds, count, depth order and parameters.

    Args:
        images: ``(B, H, W, C)`` array, or a list of ``(H, W, C)`` arrays
            (sizes and channels may differ; images of one size are fitted
            together as one batch), floats in ``[0, 1]``.
        kinds: the kinds a shape may be (a tuple or ``"disk,box"``; default
            :data:`DEFAULT_KINDS`).
        max_shapes: the most shapes per image (default 5).
        shapes: instead of ``kinds`` and ``max_shapes``, exactly these shapes
            (``"disk*2,box"``, as ``Render`` reads them), in a depth order
            that the fit finds. Giving ``shapes`` with ``kinds`` or
            ``max_shapes`` is a ``ValueError``.
        starts: optional list, one entry per image, of shapes to start the
            search from instead of an empty scene (e.g. an encoder's guess,
            or an earlier fit): ``None`` (start empty), a list of
            ``(kind, params)`` pairs back to front, ``params`` ``(P_k,)``
            normalised as in ``Render(kind, (H, W), channels=C)`` (geometry,
            ``C`` colour numbers, an opacity, which the search holds at 1
            and the polish fits; the
            background starts as the median of the border), or a
            :class:`SceneFit` of that image (its shapes and background). The
            given shapes are refined together first; then the search goes on
            as from scratch: more shapes where the residual asks for them
            (up to ``max_shapes``), depth swaps, kind changes, pruning (a
            given shape that does not earn its gain is dropped) and the
            polish. Kinds must be among ``kinds`` (with ``shapes``: within
            its counts), at most ``max_shapes`` per image.
        **options: search settings (defaults in ``SEARCH_DEFAULTS``): ``steps``
            (Adam steps per added shape), ``order_steps``, ``polish_steps``,
            ``learning_rate``, ``sharpness`` (start, end of the search, px^-1),
            ``final_sharpness`` (the sharpest final edge), ``min_area`` (px),
            ``min_contrast``,
            ``bic_weight`` (the rule for one more shape, module docstring),
            ``simpler_px`` (the rule for a simpler kind),
            ``coarse_above`` (search at half resolution above this many
            pixels a side), ``reorder``, ``prune``, ``rounds`` (how many
            times the forward step runs again where the pruning freed a
            place; 0: never, as before), ``composite``,
            ``opacity`` (True: the polish fits opacities, the rule for
            translucency; False: all opaque, as before), ``soft_edges``
            (True: each image's edge sharpness chosen by the polish; False:
            ``final_sharpness`` for all, as before).

    Returns:
        A list of :class:`SceneFit`, one per image, in order.

    Example (continue from shapes one already has: here a disk guessed a few
    pixels off, and a box it missed, which the search adds):
        >>> import numpy as np
        >>> from skimage.draw import disk, polygon
        >>> image = np.full((32, 32, 3), 0.1, "float32")
        >>> rr, cc = disk((12, 12), 6, shape=(32, 32)); image[rr, cc] = (0.9, 0.2, 0.2)
        >>> rr, cc = polygon([16, 16, 28, 28], [16, 28, 28, 16], shape=(32, 32)); image[rr, cc] = (0.2, 0.3, 0.9)
        >>> guess = [("disk", np.array([0.42, 0.35, 0.15, 0.8, 0.3, 0.3, 1.0], "float32"))]  # row, col, radius, rgb, opacity
        >>> fits = fit_scene(image[None], kinds=("disk", "box"), max_shapes=3, starts=[guess])
        >>> fits[0].shapes, bool(fits[0].psnr > 28)
        ('disk,box', True)
    """
    unknown = set(options) - set(SEARCH_DEFAULTS)
    if unknown:
        raise ValueError(f"Expected options among {sorted(SEARCH_DEFAULTS)}. Received: {sorted(unknown)}")
    o = dict(SEARCH_DEFAULTS, **options)
    if o["composite"] not in raster.COMPOSITES:
        raise ValueError(f"Expected composite to be one of {list(raster.COMPOSITES)}. Received: composite={o['composite']!r}")
    if isinstance(o["rounds"], bool) or not isinstance(o["rounds"], (int, np.integer)) or o["rounds"] < 0:
        raise ValueError(f"Expected rounds to be a non-negative integer. Received: rounds={o['rounds']!r}")
    kinds, max_shapes, fixed = search_spec(kinds, max_shapes, shapes)
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
    starts = _check_starts(starts, arrays, kinds, max_shapes, fixed)
    groups = {}
    for k, a in enumerate(arrays):
        groups.setdefault(a.shape, []).append(k)
    out = [None] * len(arrays)
    batches = []
    for shape, index in groups.items():
        parts = -(-len(index) // GROUP)
        size = -(-len(index) // parts)  # equal parts: one compiled size
        batches.extend((shape, index[j : j + size]) for j in range(0, len(index), size))
    for shape, index in batches:
        start = time.perf_counter()
        h, w, c = shape
        factor = 2 if max(h, w) > o["coarse_above"] else 1
        search = _Search(np.stack([arrays[k] for k in index]), kinds, max_shapes, fixed, factor, o,
                         None if starts is None else [starts[k] for k in index])
        scenes, losses = search.run()
        seconds = (time.perf_counter() - start) / len(index)
        for k, scene, loss, noise, edge in zip(index, scenes, losses, search.noise, search.edges):
            out[k] = _result(scene, loss, noise, h, w, c, edge, seconds)
    return out


def _check_starts(starts, arrays, kinds, max_shapes, fixed):
    """``starts`` of :func:`fit_scene` checked: per image a full-resolution :class:`Scene` or None (or None for all)."""
    if starts is None:
        return None
    if not isinstance(starts, (list, tuple)) or len(starts) != len(arrays):
        n = len(starts) if isinstance(starts, (list, tuple)) else type(starts).__name__
        raise ValueError(f"Expected starts to be a list with one entry per image ({len(arrays)}). Received: starts of {n}")
    out = []
    for k, (start, image) in enumerate(zip(starts, arrays)):
        h, w, c = image.shape
        where = f"starts[{k}]"
        if start is None:
            out.append(None)
            continue
        background = None
        if isinstance(start, (SceneFit, Scene)):
            if isinstance(start, SceneFit):
                if (start.height, start.width, start.channels) != (h, w, c):
                    raise ValueError(f"Expected {where} to be a SceneFit of a {h}x{w}x{c} image like images[{k}]. "
                                     f"Received: a SceneFit of {start.height}x{start.width}x{start.channels}")
                sizes = [Render(kind, 8, channels=c).spec.size for kind in start.kinds]
                cuts = np.cumsum([0] + sizes)
                pairs = [(kind, start.params[a:b]) for kind, a, b in zip(start.kinds, cuts[:-1], cuts[1:])]
            else:
                pairs = list(start.shapes)
            background = np.asarray(start.background, np.float32).reshape(-1)
            if background.shape != (c,) or not np.isfinite(background).all():
                raise ValueError(f"Expected the background of {where} to be {c} finite numbers. "
                                 f"Received: background={start.background!r}")
        elif isinstance(start, (list, tuple)):
            pairs = list(start)
        else:
            raise ValueError(f"Expected {where} to be None, a list of (kind, params) pairs or a SceneFit. "
                             f"Received: {where}={type(start).__name__}")
        shapes = []
        for j, pair in enumerate(pairs):
            if not isinstance(pair, (list, tuple)) or len(pair) != 2 or pair[0] not in kinds:
                raise ValueError(f"Expected {where}[{j}] to be a (kind, params) pair with kind among {list(kinds)}. "
                                 f"Received: {where}[{j}]={pair!r}")
            kind = pair[0]
            size = Render(kind, 8, channels=c).spec.size
            params = np.asarray(pair[1], np.float32)
            if params.shape != (size,) or not np.isfinite(params).all():
                raise ValueError(f"Expected {where}[{j}] params to be {size} finite numbers (a {kind} of Render with "
                                 f"channels={c}). Received: params of shape {params.shape}")
            shapes.append((kind, params.copy()))
        if len(shapes) > max_shapes:
            raise ValueError(f"Expected at most max_shapes={max_shapes} shapes in {where}. "
                             f"Received: {len(shapes)} shapes")
        if fixed is not None:
            shapes_text = ",".join(f"{kind}*{n}" for kind, n in fixed.items())
            for kind in dict.fromkeys(kind for kind, _ in shapes):
                have = sum(1 for other, _ in shapes if other == kind)
                if have > fixed[kind]:
                    raise ValueError(f"Expected at most {fixed[kind]} {kind} in {where}, as shapes={shapes_text!r} says. "
                                     f"Received: {have}")
        if background is None:
            background = data.border_color(image)
        out.append(Scene(shapes, background))
    return out


def _result(scene, loss, noise, h, w, c, sharpness, seconds):
    params = np.concatenate([p for _, p in scene.shapes]).astype("float32") if scene.shapes else np.zeros(0, "float32")
    psnr = float(min(10 * math.log10(1.0 / max(loss, 1e-10)), 100.0))
    return SceneFit(",".join(k for k, _ in scene.shapes), params, scene.background.astype("float32"), h, w, c,
                    float(sharpness), float(loss), psnr, float(noise), seconds)
