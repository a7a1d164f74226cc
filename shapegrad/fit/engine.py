"""The ONE compiled optimisation loop: every fit of parameters through a renderer runs on it.

Adam on raw (unconstrained) parameters, the rate cosine-decayed to 2 %, the renderer's edges
sharpened geometrically over the first part of the run, loss = the *sum* of the items' image MSEs
(items are independent). Two front ends share it:

- :class:`SceneEngine`: scenes whose shapes, kinds and depth order change between calls (the
  scene search of :mod:`shapegrad.fit.search`, an encoder's refinement);
- :class:`LayerEngine`: the flat ``(B, P)`` parameters of one renderer layer (``Cones``,
  ``Render``, ``SlotRender``) through a :class:`~shapegrad.learn.models.ParameterHead`: test-time
  refinement of an encoder's guess (:mod:`shapegrad.fit.refinement`).

:class:`SceneEngine` in detail: Adam on raw parameters through :class:`~shapegrad.Render` with
edges sharpened over the run. Items (candidate scenes of all images, restarts...) share one batch
axis and are independent: each has its own shapes, background and Adam moments. A batch is held as per-kind *instance tables* (one row of raw
parameters per shape, the shapes of one kind of every item together, so each kind's distance is
computed only for the shapes that have it) and a ``(B, D)`` *depth table* of instance indices,
back to front, that composites each item's shapes in its own order (``Render`` composites in spec
order, kinds grouped; the engine renders each shape's alpha with a one-shape ``Render`` and
composites them itself with :mod:`shapegrad.render.raster`). Adding a shape, changing its kind or
its depth only edits these tables on the host. The tables have fixed sizes (``batch`` items,
``instances`` shapes of each kind); longer lists run in chunks. So the loop is traced and compiled
ONCE per engine (:mod:`shapegrad.fit.search` keeps one per image size). An item may also carry
frozen shapes as a *context*: an image underneath (``Scene.below``) and/or the affine map
``x -> T x + P`` of shapes on top (``Scene.above``), so a candidate new shape is fitted alone, in
place, at the cost of one shape. How the search uses it: docs/design-fitting.md.
"""

import dataclasses
import math
import threading

import keras
import numpy as np
from keras import ops

from shapegrad import _validate
from shapegrad.learn.models import ParameterHead
from shapegrad.ops import autodiff
from shapegrad.render import raster
from shapegrad.render.primitives import fields_for, parse_kinds
from shapegrad.render.render import Render

__all__ = ["LayerEngine", "Scene", "SceneEngine", "bucket", "fold_color", "raw_from_params", "resolution_of",
           "shared_engine", "warm_in_background"]


# Table sizes are rounded up to this ladder (about 25 % apart), so that the
# compiled loop sees few distinct shapes over a search.
_LADDER = (1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 48, 64, 96, 128, 192, 256, 384, 512, 768, 1024)


def bucket(n, at_least=1):
    n = max(n, at_least)
    for size in _LADDER:
        if n <= size:
            return size
    return int(512 * math.ceil(n / 512))


def _draw(layer, params, sharpness):
    """The ONE call of the renderer's per-call edge keyword (``sharpness`` in px^-1 = 1 / softness)."""
    return layer(params, sharpness=sharpness)


def _opacity(raw, free, held):
    """Opacities ``(N, 1)`` of the engine's shapes from their raw numbers ``(N, 1)``, switches ``free`` and values ``held``.

    Exactly ``held`` where ``free`` is 0 (the opacity is held; its gradient is
    then exactly 0), else ``sigmoid(_OPACITY_GAIN * raw)``: finite, with a
    finite gradient, for any finite raw (the sigmoid saturates, it never divides).
    """
    return ops.multiply(free, ops.sigmoid(_OPACITY_GAIN * raw)) + ops.multiply(1.0 - free, held)


def resolution_of(height, width):
    return int(height) if height == width else (int(height), int(width))


def _logit(x, eps=1e-4):
    x = np.clip(x, eps, 1 - eps)
    return np.log(x) - np.log1p(-x)


def raw_from_params(fields, params, eps=1e-4):
    """Invert a :class:`~shapegrad.learn.models.ParameterHead`: normalised ``(B, P)`` parameters to raw ``(B, P)``.

    Fractions go through the logit (clipped to ``[eps, 1 - eps]``, so 0 and 1
    map to finite numbers), directions and identities are kept. Computed in
    ``params``' floating dtype (float32 for anything else); returns float32.

    Example:
        >>> fields = (("center", 2, "fraction"), ("axis", 2, "direction"))
        >>> raw_from_params(fields, [[0.5, 0.0, 0.6, 0.8]]).round(3).tolist()
        [[0.0, -9.21, 0.6, 0.8]]
    """
    params = np.asarray(params)
    if not np.issubdtype(params.dtype, np.floating):
        params = params.astype(np.float32)
    if params.ndim != 2 or params.shape[1] != sum(size for _, size, _ in fields):
        raise ValueError(f"Expected params of shape (B, {sum(size for _, size, _ in fields)}). "
                         f"Received: params.shape={params.shape}")
    raw, start = [], 0
    for _, size, activation in fields:
        x = params[:, start : start + size]
        raw.append(_logit(x, eps) if activation == "fraction" else x)
        start += size
    return np.concatenate(raw, axis=1).astype("float32")


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


class _AdamLoop:
    """The compiled loop both engines run: Adam, cosine decay, edge annealing, on a tuple of raw tensors.

    A subclass defines ``_loss(variables, extra, images, sharpness) -> (sum,
    (per_item (B,), images (B, ...)))`` on backend tensors (``variables``: the
    tuple of tensors that move; ``extra``: anything else the loss reads) and
    calls :meth:`_start_loop` from its constructor. :meth:`_optimise` runs
    ``steps`` Adam steps on every element of ``variables`` where its mask
    (broadcast against it) is 1, and one more evaluation; the whole run is one
    compiled call (``loop="compiled"``) or one compiled call per step
    (``"python"``, the default on PyTorch, which runs eagerly either way).
    """

    def _start_loop(self, loop):
        if loop is None:
            loop = "python" if keras.backend.backend() == "torch" else "compiled"
        if loop not in ("compiled", "python"):
            raise ValueError(f"Expected loop to be 'compiled' or 'python'. Received: loop={loop!r}")
        self.loop = loop
        self.traces = 0
        self._grad = autodiff.traced_value_and_grad(self._loss, wrt=1)
        self._run_compiled = autodiff.jit(self._run)
        self._step_compiled = autodiff.jit(self._step)

    def _schedule(self, i, steps, lr, sharp_start, sharp_end, anneal):
        t = ops.cast(i, "float32")
        n = ops.maximum(ops.cast(steps, "float32"), 1.0)
        ramp = ops.minimum(t / ops.maximum(anneal * n, 1.0), 1.0)
        ramp = ops.where(ops.less(i, steps), ramp, 1.0)  # the last evaluation at the end's sharpness (also for 0 steps)
        sharpness = sharp_start * ops.power(sharp_end / sharp_start, ramp)
        rate = lr * (0.02 + 0.98 * 0.5 * (1.0 + ops.cos(math.pi * t / n)))
        return sharpness, rate

    def _update(self, state, i, masks, extra, images, steps, lr, sharp_start, sharp_end, anneal):
        """One Adam step on every item (per-element moments: items are independent).

        Step ``i`` also records each item's loss and image *before* its update;
        step ``steps`` only records (its rate is 0): so a run of ``steps + 1``
        evaluations ends with the final parameters' loss and image, and one
        traced gradient serves both (no second, forward-only copy of the
        renderer in the compiled program).
        """
        variables, m, v = state[:3]
        sharpness, rate = self._schedule(i, steps, lr, sharp_start, sharp_end, anneal)
        rate = rate * ops.cast(ops.less(i, steps), "float32")
        _, (per_item, recon), (grads,) = self._grad(variables, extra, images, sharpness)
        t = ops.cast(i, "float32") + 1.0
        b1, b2, eps = 0.9, 0.999, 1e-8
        c1, c2 = 1.0 - ops.power(b1, t), 1.0 - ops.power(b2, t)

        def adam(x, g, m_, v_, mask):
            m_ = b1 * m_ + (1 - b1) * g
            v_ = b2 * v_ + (1 - b2) * g * g
            return x - mask * (rate * (m_ / c1) / (ops.sqrt(v_ / c2) + eps)), m_, v_

        new = [adam(x, g, a, b, k) for x, g, a, b, k in zip(variables, grads, m, v, masks)]
        return tuple(n[0] for n in new), tuple(n[1] for n in new), tuple(n[2] for n in new), per_item, recon

    def _init_state(self, variables, images):
        variables = tuple(variables)
        return (variables, tuple(ops.zeros_like(x) for x in variables), tuple(ops.zeros_like(x) for x in variables),
                ops.zeros((ops.shape(images)[0],), "float32"), ops.zeros_like(images))

    def _run(self, variables, masks, extra, images, steps, lr, sharp_start, sharp_end, anneal):
        self.traces += 1
        state = self._init_state(variables, images)

        def body(i, state):
            return self._update(state, i, masks, extra, images, steps, lr, sharp_start, sharp_end, anneal)

        state = ops.fori_loop(0, steps + 1, body, state)
        return state[0], state[3], state[4]

    def _step(self, state, i, masks, extra, images, steps, lr, sharp_start, sharp_end, anneal):
        self.traces += 1
        return self._update(state, i, masks, extra, images, steps, lr, sharp_start, sharp_end, anneal)

    def _optimise(self, variables, masks, extra, images, steps, schedule):
        """``steps`` Adam steps from ``variables`` (backend tensors); ``(variables, loss (B,), images)`` as tensors.

        ``schedule``: float32 ``(learning_rate, sharpness_start, sharpness_end, anneal)``.
        """
        steps = np.int32(steps)
        if self.loop == "compiled":
            return self._run_compiled(variables, masks, extra, images, steps, *schedule)
        state = self._init_state(variables, images)
        for i in range(steps + 1):  # the last step only evaluates (see _update)
            state = self._step_compiled(state, np.int32(i), masks, extra, images, steps, *schedule)
        return state[0], state[3], state[4]


def _check_run(steps, sharpness, learning_rate, anneal):
    """Keras-style checks of one run's settings; float32 ``(learning_rate, sharpness_start, sharpness_end, anneal)``."""
    if isinstance(steps, bool) or not isinstance(steps, (int, np.integer)) or steps < 0:
        raise ValueError(f"Expected steps to be an integer >= 0. Received: steps={steps!r}")
    try:
        s0, s1 = (float(v) for v in sharpness)
    except (TypeError, ValueError):
        s0 = s1 = float("nan")
    if not (s0 > 0 and s1 > 0):
        raise ValueError(f"Expected sharpness to be two numbers > 0. Received: sharpness={sharpness!r}")
    if isinstance(learning_rate, bool) or not isinstance(learning_rate, (int, float, np.floating)) or not learning_rate > 0:
        raise ValueError(f"Expected learning_rate to be a number > 0. Received: learning_rate={learning_rate!r}")
    if isinstance(anneal, bool) or not isinstance(anneal, (int, float, np.floating)) or not 0 <= anneal <= 1:
        raise ValueError(f"Expected anneal to be a number in [0, 1]. Received: anneal={anneal!r}")
    return tuple(np.float32(v) for v in (learning_rate, s0, s1, anneal))


class SceneEngine(_AdamLoop):
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
        paint_traces: the same for :meth:`render`'s forward-only program.
        sizes, geometry: ``{kind: numbers}`` of a shape's parameters, all and
            geometric only (without colour and opacity).

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
        # The compiled tables hold at least 2 items (a batch of 1 padded with an empty one): XLA's CPU program
        # for a batch of one ran 2.5-3x slower a step than for two (depth 3, 128 px: 8.1 ms against 3.0 ms).
        self._rows = max(self.batch, 2)
        if composite not in raster.COMPOSITES:
            raise ValueError(f"Expected composite to be one of {list(raster.COMPOSITES)}. Received: composite={composite!r}")
        self.composite = composite
        resolution = resolution_of(self.height, self.width)
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
        self.geometry = {k: self.sizes[k] - self.channels - 1 for k in kinds}
        self._start_loop(loop)
        self._paint_compiled = autodiff.jit(self._paint)
        self.paint_traces = 0

    # ---- the compiled part: backend tensors only --------------------------------------

    def _images(self, raws, bg_raw, ctx, depth, sharpness):
        below, use_below, above_t, above_p, free, held = ctx
        alphas, colors = [], []
        c, dtype = self.channels, "float32"
        for kind, raw, f, a in zip(self.kinds, raws, free, held):
            p = self._heads[kind](raw)
            g = self.geometry[kind]
            ones = ops.ones((ops.shape(p)[0], 2), dtype)  # colour 1, opacity 1: the coverage
            coverage = _draw(self._alpha[kind], ops.concatenate([p[:, :g], ones], axis=1), sharpness)
            alphas.append(coverage * _opacity(raw[:, -1:], f, a)[:, :, None, None])
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

    def _loss(self, variables, extra, images, sharpness):
        """Variables: each kind's raw table, then the background's raw ``(B, C)``; ``extra``: ``(context, depth)``."""
        ctx, depth = extra
        recon = self._images(variables[:-1], variables[-1], ctx, depth, sharpness)
        per_item = ops.mean(ops.square(recon - images), axis=(1, 2, 3))
        return ops.sum(per_item), (per_item, recon)

    def _paint(self, raws, bg_raw, ctx, depth, sharpness):
        self.paint_traces += 1
        return self._images(raws, bg_raw, ctx, depth, sharpness)

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
        fixed = {k: [] for k in self.kinds}
        depth = np.full((self._rows, self.max_depth), -1, np.int64)
        for b, scene in enumerate(scenes):
            for d, (kind, params) in enumerate(scene.shapes):
                depth[b, d] = sum(self.instances for k in self.kinds[: self.kinds.index(kind)]) + len(rows[kind])
                rows[kind].append(np.asarray(params, np.float32))
                moving[kind].append(1.0 if train is None or d in train[b] else 0.0)
                loose[kind].append(1.0 if opacity[b] is True else 0.0)
                fixed[kind].append(float(params[-1]) if opacity[b] == "held" else 1.0 if opacity[b] is True
                                   else opacity[b])
        raws, masks, free, held = [], [], [], []
        for kind in self.kinds:
            table = np.full((self.instances, self.sizes[kind]), 0.5, np.float32)
            mask = np.zeros((self.instances, 1), np.float32)
            f = np.zeros((self.instances, 1), np.float32)
            a = np.ones((self.instances, 1), np.float32)
            if rows[kind]:
                table[: len(rows[kind])] = np.stack(rows[kind])
                mask[: len(rows[kind]), 0] = moving[kind]
                f[: len(rows[kind]), 0] = loose[kind]
                a[: len(rows[kind]), 0] = fixed[kind]
            raw = self._raw(kind, table)
            raw[:, -1] = _logit(np.clip(table[:, -1], 0.02, _OPACITY_START)) / _OPACITY_GAIN
            raws.append(raw)
            masks.append(mask)
            free.append(f)
            held.append(a)
        depth[depth < 0] = self.instances * len(self.kinds)  # the empty row
        bg = np.full((self._rows, c), 0.5, np.float32)
        below = np.zeros((self._rows, h, w, c), np.float32)
        use_below = np.zeros((self._rows, 1, 1, 1), np.float32)
        above_t = np.ones((self._rows, h, w, 1), np.float32)
        above_p = np.zeros((self._rows, h, w, c), np.float32)
        target = np.zeros((self._rows, h, w, c), np.float32)
        for b, scene in enumerate(scenes):
            bg[b] = scene.background
            if scene.below is not None:
                below[b], use_below[b] = scene.below, 1.0
            if scene.above is not None:
                above_t[b], above_p[b] = scene.above
            target[b] = images[b]
        ctx = (below, use_below, above_t, above_p, tuple(free), tuple(held))
        return tuple(raws), tuple(masks), bg, ctx, depth.astype("int32"), target

    def _raw(self, kind, params):
        return raw_from_params(self._fields[kind], params)

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
                g = self.geometry[kind]
                if opacity[b] is True:
                    p[g : g + self.channels], p[-1] = fold_color(p[g : g + self.channels], opacities[kind][counters[kind]])
                else:
                    p[-1] = scene.shapes[len(shapes)][1][-1] if opacity[b] == "held" else opacity[b]
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
            opacity: whether the shapes' opacities are fitted too: one
                value for every scene, or ``B`` values. False: held at
                exactly 1 (whatever the scene says); a number in ``(0, 1]``:
                held at exactly that; ``"held"``: each shape's own opacity
                (the last of its parameters), held. True: each starts from its
                scene's opacity (capped at 0.95, from where a sigmoid can
                still move) and moves with the rest; a colour above 1 is
                folded into the opacity on the way out (``opacity x colour``
                kept, the colour's largest channel brought to 1).

        Returns:
            ``(scenes, loss (B,), images (B, H, W, C))``: the refined scenes,
            their MSE and their images at the final sharpness.
        """
        args = _check_run(steps, sharpness, learning_rate, anneal)
        if not isinstance(scenes, (list, tuple)) or not scenes:
            raise ValueError(f"Expected scenes to be a non-empty list of Scene. Received: scenes={scenes!r}")
        images = np.asarray(images, np.float32)
        expected = (len(scenes), self.height, self.width, self.channels)
        if images.shape != expected:
            raise ValueError(f"Expected images of shape {expected}. Received: images.shape={images.shape}")
        if not isinstance(opacity, (list, tuple, np.ndarray)):
            opacity = [opacity] * len(scenes)
        if len(opacity) != len(scenes):
            raise ValueError(f"Expected opacity to be one value or one per scene ({len(scenes)}). "
                             f"Received: opacity={opacity!r}")
        opacity = [_opacity_mode(v) for v in opacity]
        with autodiff.torch_threads(1):
            return self._fit_chunks(scenes, images, steps, train, opacity, args)

    def _fit_chunks(self, scenes, images, steps, train, opacity, args):
        out, losses, recons = [], [], []
        for chunk in self._chunks(scenes):
            part = [scenes[b] for b in chunk]
            tables = self._pack(part, images[chunk], None if train is None else [train[b] for b in chunk],
                                [opacity[b] for b in chunk])
            raws, masks, bg_raw, ctx, depth, target = keras.tree.map_structure(ops.convert_to_tensor, tables)
            background_mask = ops.ones((self._rows, 1), "float32")  # the background always moves
            variables, loss, recon = self._optimise((*raws, bg_raw), (*masks, background_mask), (ctx, depth), target,
                                                    steps, args)
            raws, bg_raw = variables[:-1], variables[-1]
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
        """``(B, H, W, C)`` images of ``scenes`` (NumPy float32), forward only; ``opacity`` as in :meth:`fit`
        (False: opaque; ``"held"``: the shapes' own opacities; True: the same, at most 0.95)."""
        opacity = [_opacity_mode(opacity)] * len(scenes)
        zeros = np.zeros((len(scenes), self.height, self.width, self.channels), np.float32)
        out = []
        with autodiff.torch_threads(1):
            for chunk in self._chunks(scenes):
                raws, _, bg_raw, ctx, depth, _ = keras.tree.map_structure(
                    ops.convert_to_tensor, self._pack([scenes[b] for b in chunk], zeros[chunk], None,
                                                      [opacity[b] for b in chunk]))
                image = self._paint_compiled(raws, bg_raw, ctx, depth, np.float32(sharpness))
                out.append(keras.ops.convert_to_numpy(image)[: len(chunk)])
        return np.concatenate(out)


_ENGINES = {}


def shared_engine(kinds, height, width, channels, max_depth, composite, batch, instances=None):
    """The :class:`SceneEngine` of these settings on this backend: built once, reused by every caller (so compiled once)."""
    key = (tuple(kinds), height, width, channels, max_depth, composite, batch, instances, keras.backend.backend())
    if key not in _ENGINES:
        _ENGINES[key] = SceneEngine(kinds, height, width, channels, max_depth, batch, instances, composite)
    return _ENGINES[key]


def warm_in_background(engines):
    """A started daemon thread that compiles ``engines`` (:meth:`SceneEngine.warm`) while the caller works on;
    ``join()`` it before their first call. Errors are dropped: the same call raises them where it counts."""

    def warm():
        for engine in engines:
            try:
                engine.warm()
            except Exception:  # noqa: BLE001 -- the caller's own call of the engine raises it
                pass

    thread = threading.Thread(target=warm, daemon=True)
    thread.start()
    return thread


def _opacity_mode(value):
    """One scene's ``opacity`` argument of :meth:`SceneEngine.fit`: True (fitted) or the held value, a float in (0, 1]."""
    if isinstance(value, (bool, np.bool_)):
        return True if value else 1.0
    if isinstance(value, str) and value == "held":
        return value
    if isinstance(value, (int, float, np.number)) and 0.0 < float(value) <= 1.0:
        return float(value)
    raise ValueError(f"Expected opacity to be a bool, a number in (0, 1] or 'held'. Received: opacity={value!r}")


class LayerEngine(_AdamLoop):
    """The same compiled loop on the flat ``(B, P)`` normalised parameters of one renderer layer.

    Each item's raw parameters (:func:`raw_from_params`) move by Adam through
    the layer's :class:`~shapegrad.learn.models.ParameterHead` (so every
    iterate is valid: fractions in ``(0, 1)``, unit directions) against its
    image; items are independent. Every call of one size reuses one compiled
    loop (compiled on the first call of that size; PyTorch runs eagerly).

    Args:
        renderer: a layer mapping ``(B, P)`` normalised parameters to
            ``(B, H, W, C)`` images whose ``call`` takes ``sharpness=`` and that
            has a ``default_sharpness``: ``Cones``, ``Render``, ``SlotRender``.
        fields: the ``P`` numbers' ``(name, size, activation)``, as for
            ``ParameterHead``; default ``renderer.fields()`` where the layer
            has that method (``SlotRender``), else ``fields_for(renderer.spec)``.
        batch: the most items per compiled call (longer inputs run in chunks
            of this size); default: all at once.
        loop: ``"compiled"`` or ``"python"``, as for :class:`SceneEngine`.

    Attributes:
        traces: how many times the loop was traced (once per new batch size
            on TensorFlow and JAX); on PyTorch, how many steps ran.

    Example:
        >>> import numpy as np
        >>> from shapegrad import Cones
        >>> truth = np.array([[0.5, 0.5, 0.0, 1.0, 0.2]], "float32")
        >>> image = keras.ops.convert_to_numpy(Cones(24)(truth))     # (1, 24, 24, 1)
        >>> guess = np.array([[0.45, 0.55, 0.2, 1.0, 0.25]], "float32")
        >>> fitted, loss, drawn = LayerEngine(Cones(24)).fit(guess, image, steps=150)
        >>> bool(np.abs(fitted - truth).max() < 0.01), loss.shape, drawn.shape
        (True, (1,), (1, 24, 24, 1))
    """

    def __init__(self, renderer, fields=None, batch=None, loop=None):
        if not callable(renderer) or not hasattr(renderer, "default_sharpness"):
            raise ValueError(f"Expected renderer to be a layer with call(params, sharpness=) and default_sharpness "
                             f"(Cones, Render, SlotRender). Received: renderer={renderer!r}")
        if fields is None:
            fields = renderer.fields() if callable(getattr(renderer, "fields", None)) else fields_for(renderer.spec)
        self.renderer = renderer
        self.head = ParameterHead(fields)
        self.fields = self.head.fields
        self.size = self.head.size
        self.batch = None if batch is None else _validate.positive_int("batch", batch)
        self._start_loop(loop)

    def _loss(self, variables, extra, images, sharpness):
        """``variables``: the raw ``(B, P)`` parameters (a tuple of one); ``extra`` is unused."""
        recon = _draw(self.renderer, self.head(variables[0]), sharpness)
        per_item = ops.mean(ops.square(recon - images), axis=(1, 2, 3))
        return ops.sum(per_item), (per_item, recon)

    def fit(self, params, images, steps=100, learning_rate=0.02, sharpness=None, anneal=0.3):
        """Refine ``params`` so that ``renderer(params)`` draws ``images``.

        Args:
            params: ``(B, P)`` normalised starts (e.g. an encoder's guess).
            images: ``(B, H, W, C)`` targets, the renderer's output shape.
            steps: Adam steps (every item at once); 0 only draws.
            learning_rate: peak rate on the raw parameters, cosine-decayed to 2 %.
            sharpness: ``(start, end)`` edge sharpness in the renderer's units,
                grown geometrically over the first ``anneal`` fraction of the
                steps; default ``(0.5, 1) x renderer.default_sharpness``.
            anneal: fraction of the steps over which the edges sharpen.

        Returns:
            ``(params (B, P) float32, loss (B,) float64, images (B, H, W, C)
            float32)``: the refined parameters, their MSE against ``images``
            and their drawing, at the final sharpness.
        """
        if sharpness is None:
            sharpness = (0.5 * float(self.renderer.default_sharpness), float(self.renderer.default_sharpness))
        schedule = _check_run(steps, sharpness, learning_rate, anneal)
        raw = raw_from_params(self.fields, params)
        images = np.asarray(images, np.float32)
        if not len(raw) or images.ndim != 4 or len(images) != len(raw):
            raise ValueError(f"Expected at least one row of params and images of shape (B, H, W, C), B = {len(raw)} "
                             f"(one per row of params). "
                             f"Received: images.shape={images.shape}")
        size = len(raw) if self.batch is None else self.batch
        out, losses, recons = [], [], []
        for start in range(0, len(raw), max(size, 1)):
            part = slice(start, start + size)
            ones = np.ones((len(raw[part]), 1), np.float32)
            tensors = keras.tree.map_structure(ops.convert_to_tensor, ((raw[part],), (ones,), images[part]))
            (fitted,), loss, recon = self._optimise(*tensors[:2], (), tensors[2], steps, schedule)
            out.append(keras.ops.convert_to_numpy(self.head(fitted)).astype(np.float32))
            losses.append(keras.ops.convert_to_numpy(loss).astype(np.float64))
            recons.append(keras.ops.convert_to_numpy(recon).astype(np.float32))
        return np.concatenate(out), np.concatenate(losses), np.concatenate(recons)


def fold_color(color, opacity):
    """``(colour, opacity)`` of a fitted shape with its colour's largest channel brought down to 1 (if above),
    the excess moved into the opacity (up to 1): ``opacity x colour`` kept where it can be (over black,
    the image the fit drew)."""
    color = np.asarray(color, np.float64)
    top = max(float(color.max()), 1.0)
    folded = min(float(opacity) * top, 1.0)
    return (color * float(opacity) / max(folded, 1e-12)).astype("float32"), np.float32(folded)
