"""Pictures with a count or a time budget of shapes: :func:`fit_picture`, on :class:`~shapegrad.fit.engine.SceneEngine`.

Where :func:`~shapegrad.fit.search.fit_scene` asks how many shapes explain a
flat-colour scene, :func:`fit_picture` vectorises any picture (a photograph, a
drawing, a logo) with as many shapes as it is given (``count``) or as fit in a
time (``seconds``): shapes are added on top of a frozen canvas, each fitted by
gradient descent from many starts at once, and refined together from time to
time and at the end.

How (docs/design-fitting.md, *Pictures*):

- **Rounds of candidates in windows.** Each round picks square windows where
  the error is largest, at several scales (a window of ``window`` engine pixels
  is a crop of ``window * f`` image pixels averaged over ``f x f`` blocks, ``f``
  = 1, 2, 4... up to the picture's shorter side), and fits ``candidates``
  starts of each kind in each window at once: each start sits at a point drawn
  where the residual is large, the canvas under it frozen (the engine's
  ``below`` context). A path or polygon starts on the traced outline of the
  connected region around that point that its colour would improve
  (:func:`~shapegrad.fit.starts.improvable_region`). The best start of each
  window, as drawn (colours clipped), is its proposal; proposals
  are taken by their gain in full-resolution squared error, largest first,
  as long as their windows do not overlap. So a round adds several shapes at
  the cost of one compiled call whose size does not depend on the shapes
  already drawn.
- **Refinement in windows.** Every ``refine_every`` shapes (the new ones), and
  at the end (all), each shape is refined alone at full resolution in a square
  window around it, between the image of the shapes under it (``below``) and
  the affine map of those above it (``above``), both computed on the host from
  each shape's map (where it changes the picture, and how); shapes whose boxes
  overlap one after the other, the others side by side, in ``passes`` passes.
  A step costs each shape its window, not the picture; memory holds each
  shape's map on its box.
- **Opacity.** Fitted per shape by default (``opacity=None``); a number holds
  every shape at that opacity (fogleman/primitive's ``-a``), 1 makes them opaque.

Conventions as in :class:`~shapegrad.Render`: images ``(H, W, C)`` in
``[0, 1]``, positions ``(row, col)`` as fractions of ``(H, W)``, sizes as
fractions of the shorter side.

Example:
    >>> import numpy as np
    >>> from skimage.draw import disk, polygon
    >>> image = np.full((40, 56, 3), 0.9, "float32")
    >>> rr, cc = polygon([4, 36, 36], [28, 4, 52], shape=(40, 56)); image[rr, cc] = (0.8, 0.2, 0.1)
    >>> rr, cc = disk((24, 28), 8, shape=(40, 56)); image[rr, cc] = (0.1, 0.2, 0.7)
    >>> result = fit_picture(image, kinds="triangle", count=8, seed=0, steps=40, final_steps=20)  # quick settings
    >>> result.count, len(result.history), bool(result.psnr > 15)
    (8, 8, True)
    >>> result.render().shape
    (40, 56, 3)
"""

import dataclasses
import math
import time

import numpy as np

from shapegrad import _validate
from shapegrad.fit.engine import Scene, shared_engine, warm_in_background
from shapegrad.fit.search import SceneFit
from shapegrad.fit.starts import Geometry, improvable_region, start_shape, traced
from shapegrad.render.primitives import parse_kinds
from shapegrad.render.render import Render

__all__ = ["PICTURE_DEFAULTS", "PictureFit", "check_picture_options", "fit_picture"]

_MAP_BATCH = 16  # items (two per shape) per call of the engine that draws each shape's map

PICTURE_DEFAULTS = dict(
    window=32,
    candidates=8,
    windows=4,
    steps=80,
    learning_rate=0.08,
    sharpness=0.6,
    passes=2,
    refine_every=32,
    refine_steps=30,
    final_steps=None,
)


@dataclasses.dataclass
class PictureFit(SceneFit):
    """A picture's shapes (a :class:`~shapegrad.fit.search.SceneFit`) and how the error fell as they were added.

    Attributes:
        history: ``(N,)`` PSNR (dB) after each added shape, before the
            final refinement (``psnr`` is after it).
        stopped: why adding stopped: ``"count"``, ``"seconds"``, or
            ``"no gain"`` (no start lowered the error any more).
        canvas: ``(H, W, C)``, the picture as the fit drew it (what ``psnr``
            scores; ``render()`` draws the same with a ``Render``).
    """

    history: np.ndarray = None
    stopped: str = ""
    canvas: np.ndarray = None


def fit_picture(image, kinds="triangle", count=None, seconds=None, opacity=None, seed=0, progress=None, **options):
    """Vectorise ``image`` with ``count`` shapes of ``kinds``, or as many as fit in ``seconds``.

    Args:
        image: ``(H, W, C)`` floats in ``[0, 1]``, ``H, W >= 8``.
        kinds: the kinds a shape may be (``"triangle"``, ``"triangle,ellipse,box"``, ``"path"``,
            ``"path8,triangle"``...; a path or polygon starts on the outline of a region, the others
            around a point).
        count: how many shapes to add (fewer only where no start lowers the
            error: ``stopped`` says so).
        seconds: stop adding shapes when 80 % of this many seconds have
            passed, and give the final refinement as many steps as fit in
            the rest (once a refinement has been timed; else its usual
            steps). At least one of ``count`` and ``seconds``; with both,
            whichever comes first.
        opacity: None: each shape's opacity is fitted; a number in
            ``(0, 1]``: every shape held at that opacity (1: opaque).
        seed: seed of the starts (the same seed, image and options give the
            same shapes on one backend).
        progress: None, or a callable ``progress(count, psnr)`` called after each round.
        **options: :data:`PICTURE_DEFAULTS`: ``window`` (engine pixels a
            side of a candidate window), ``candidates`` (starts per kind and
            window), ``windows`` (windows per scale and round), ``steps``
            (Adam steps per candidate), ``learning_rate``, ``sharpness``
            (edge sharpness in px^-1 of the result), ``refine_every``,
            ``refine_steps``, ``passes`` (of each refinement, the steps shared
            among them), ``final_steps`` (0: no final refinement; None:
            ``4800 / shapes`` within ``[60, 150]``, about one cost whatever
            the count, since a step costs each shape its window).

    Returns:
        A :class:`PictureFit` (``shapes``, ``params``, ``background``,
        ``psnr``, ``history``...); ``result.renderer()`` is a ``Render`` that draws it.
    """
    kinds, count, o = check_picture_options(kinds, count, seconds, opacity, options)
    a = np.asarray(image, np.float32)
    if a.ndim != 3 or a.shape[-1] < 1 or min(a.shape[:2]) < 8 or not np.isfinite(a).all():
        raise ValueError(f"Expected image to be a finite (H, W, C) array with H, W >= 8. Received: shape={a.shape}")
    return _Picture(a, kinds, count, seconds, opacity, seed, progress, o).run()


def check_picture_options(kinds, count, seconds, opacity, options):
    """``(kinds, count, options)`` of :func:`fit_picture` checked (Keras-style ``ValueError``), the options
    completed from :data:`PICTURE_DEFAULTS`: what a job checks before its first picture."""
    unknown = set(options) - set(PICTURE_DEFAULTS)
    if unknown:
        raise ValueError(f"Expected options among {sorted(PICTURE_DEFAULTS)}. Received: {sorted(unknown)}")
    o = dict(PICTURE_DEFAULTS, **options)
    for name in ("window", "candidates", "windows", "steps", "refine_every", "passes"):
        _validate.positive_int(name, o[name])
    for name in ("learning_rate", "sharpness"):
        if isinstance(o[name], bool) or not isinstance(o[name], (int, float)) or not 0 < o[name] < math.inf:
            raise ValueError(f"Expected {name} to be a number > 0. Received: {name}={o[name]!r}")
    for name in ("refine_steps", "final_steps"):
        if name == "final_steps" and o[name] is None:
            continue
        if isinstance(o[name], bool) or not isinstance(o[name], (int, np.integer)) or o[name] < 0:
            raise ValueError(f"Expected {name} to be an integer >= 0. Received: {name}={o[name]!r}")
    kinds = parse_kinds(kinds)
    if count is None and seconds is None:
        raise ValueError("Expected count or seconds (or both). Received: count=None, seconds=None")
    if count is not None:
        count = _validate.positive_int("count", count)
    if seconds is not None and (isinstance(seconds, bool) or not isinstance(seconds, (int, float)) or not seconds > 0
                                or not math.isfinite(seconds)):
        raise ValueError(f"Expected seconds to be a number > 0. Received: seconds={seconds!r}")
    if opacity is not None and (isinstance(opacity, bool) or not isinstance(opacity, (int, float))
                                or not 0.0 < float(opacity) <= 1.0):
        raise ValueError(f"Expected opacity to be None (fitted) or a number in (0, 1]. Received: opacity={opacity!r}")
    return kinds, count, o


class _Picture:
    """The state of one :func:`fit_picture` call: the shapes so far and the canvas they draw."""

    def __init__(self, image, kinds, count, seconds, opacity, seed, progress, o):
        self.start = time.perf_counter()
        self.image, self.kinds, self.count, self.seconds, self.o = image, kinds, count, seconds, o
        self.progress = progress
        self.mode = True if opacity is None else float(opacity)
        self.rng = np.random.default_rng(seed)
        h, w, c = image.shape
        self.h, self.w, self.c = h, w, c
        e = min(o["window"], h, w)
        self.e = e
        self.levels = [f for f in (1, 2, 4, 8, 16, 32) if e * f <= min(h, w)]
        per_kind = o["candidates"]
        items = len(self.levels) * o["windows"] * per_kind * len(kinds)
        self.candidate_engine = shared_engine(kinds, e, e, c, 1, "over", items,
                                              instances=len(self.levels) * o["windows"] * per_kind)
        self.background = image.reshape(-1, c).mean(axis=0, dtype=np.float64).astype(np.float32)
        self.shapes = []
        self.maps = []  # per shape, its box and affine map there (:meth:`_maps`)
        # Full resolution, one shape per item: draws each shape's map.
        self._full = shared_engine(kinds, h, w, c, 1, "over", _MAP_BATCH)
        self.pace = None  # seconds per refinement step and shape, once measured
        self.canvas = np.broadcast_to(self.background, image.shape).astype(np.float32).copy()
        self.history = []
        self.spec = {k: Render(k, 8, channels=c).spec for k in kinds}
        self.geometry = {k: Geometry(self.candidate_engine, k) for k in kinds if traced(k)}
        # The refinement's engines compile in a thread while the first rounds run (joined before the first
        # refinement): the compiler, and loading a compiled program, use the core the rounds leave idle.
        refiners = [self._refine_engine(self.e * f) for f in self.levels] + [self._refine_engine(None)]
        self._warming = warm_in_background(refiners)

    # ---- the loop ---------------------------------------------------------------------------

    def run(self):
        o = self.o
        stopped, refined_at = "count", 0
        while self.count is None or len(self.shapes) < self.count:
            if self.seconds is not None and self._elapsed() > 0.8 * self.seconds:
                stopped = "seconds"
                break
            added = self._round()
            if not added:
                stopped = "no gain"
                break
            more = self.count is None or len(self.shapes) < self.count  # else the final refinement comes next
            if more and len(self.shapes) - refined_at >= o["refine_every"] and o["refine_steps"]:
                self._refine(range(refined_at, len(self.shapes)), o["refine_steps"])
                refined_at = len(self.shapes)
            if self.progress is not None:
                self.progress(len(self.shapes), self.psnr())
        steps = o["final_steps"]
        if steps is None:
            steps = int(np.clip(4800 // max(len(self.shapes), 1), 60, 150))
        if self.seconds is not None and self.pace:  # the final refinement within what is left of the budget
            left = self.seconds - self._elapsed()
            steps = min(steps, max(0, int(left / (self.pace * len(self.shapes)))))
        if steps and self.shapes:
            self._refine(range(len(self.shapes)), steps)
        return self._result(stopped)

    def _elapsed(self):
        return time.perf_counter() - self.start

    def psnr(self):
        mse = float(np.mean(np.square(self.canvas - self.image)))
        return min(10 * math.log10(1.0 / max(mse, 1e-10)), 100.0)

    def _round(self):
        """Fit candidates in the worst windows of every scale; add the best non-overlapping ones. Returns how many."""
        o, e = self.o, self.e
        error = np.square(self.image - self.canvas).sum(axis=-1)  # (H, W) squared error per pixel
        windows = []
        for f in self.levels:
            windows.extend((f, r, c) for r, c in _worst_windows(error, e * f, o["windows"]))
        if not windows:  # the canvas is the picture
            return 0
        scenes, targets, meta = [], [], []
        for f, r, c in windows:
            target = _block_mean(self.image[r : r + e * f, c : c + e * f], f)
            below = _block_mean(self.canvas[r : r + e * f, c : c + e * f], f)
            weight = _block_mean(error[r : r + e * f, c : c + e * f, None], f)[..., 0]
            for kind in self.kinds:
                for _ in range(o["candidates"]):
                    shape = self._start(kind, target, weight, below)
                    scenes.append(Scene([(kind, shape)], self.background, below=below))
                    targets.append(target)
                    meta.append((f, r, c))
        base = np.asarray([np.mean(np.square(s.below - t)) for s, t in zip(scenes, targets)])
        targets = np.stack(targets)
        fitted, _, _ = self.candidate_engine.fit(
            scenes, targets, steps=o["steps"], learning_rate=o["learning_rate"],
            sharpness=(0.3 * o["sharpness"], o["sharpness"]), opacity=self.mode)
        # Each candidate as it will be drawn (colours clipped to [0, 1], opacity folded): its gain is what the
        # canvas gains, so that adding a shape never raises the picture's error.
        recon = self.candidate_engine.render(fitted, sharpness=o["sharpness"], opacity="held")
        loss = np.mean(np.square(recon - targets), axis=(1, 2, 3))
        # Gain in full-resolution squared error: per-pixel MSE drop x the crop's pixels.
        gain = (base - loss) * np.asarray([(e * f) ** 2 * self.c for f, _, _ in meta])
        best = {}
        floor = 1e-7 * self.image.size  # below this an added shape changes nothing one can see
        for i, key in enumerate(meta):
            if gain[i] > floor and (key not in best or gain[i] > gain[best[key]]):
                best[key] = i
        taken, new = [], []
        room = None if self.count is None else self.count - len(self.shapes)
        for key in sorted(best, key=lambda k: -gain[best[k]]):
            f, r, c = key
            box = _footprint(recon[best[key]], scenes[best[key]].below, f, r, c)
            if any(_overlap(box, other) for other in taken):
                continue
            taken.append(box)
            kind, params = fitted[best[key]].shapes[0]
            new.append((kind, self._to_image(kind, params, f, r, c)))
            if room is not None and len(new) >= room:
                break
        if not new:
            return 0
        self._add(new)
        return len(new)

    def _start(self, kind, target, weight, below):
        """A start of ``kind`` in an ``e x e`` window: at a point drawn where ``weight`` (the error) is large;
        a path or polygon on the outline of the region there (:meth:`_traced_start`)."""
        e, rng = self.e, self.rng
        p = weight.reshape(-1) + 1e-12
        k = rng.choice(p.size, p=p / p.sum())
        row, col = (k // e + rng.uniform(-0.5, 0.5)) / e, (k % e + rng.uniform(-0.5, 0.5)) / e
        radius = rng.uniform(0.08, 0.4)
        if kind in self.geometry:
            return self._traced_start(kind, target, below, (k // e, k % e), radius)
        color = np.clip(target[k // e, k % e] + rng.normal(0, 0.02, self.c), 0.0, 1.0)
        spec = self.spec[kind]
        params = np.zeros(spec.size, np.float32)
        for s in spec.slices:
            n = s.stop - s.start
            if s.field.kind == "position" and s.field.name == "vertices":
                angles = rng.uniform(0, 2 * np.pi) + np.arange(n // 2) * 2 * np.pi / (n // 2) + rng.normal(0, 0.3, n // 2)
                rr = radius * rng.uniform(0.5, 1.0, n // 2)
                params[s.start : s.stop : 2] = row + rr * np.cos(angles)
                params[s.start + 1 : s.stop : 2] = col + rr * np.sin(angles)
            elif s.field.kind == "position":
                params[s.start : s.stop] = np.resize([row, col], n)
            elif s.field.kind == "size":
                params[s.start : s.stop] = radius * rng.uniform(0.4, 1.0, n)
            elif s.field.kind == "direction":
                t = rng.uniform(0, np.pi)
                params[s.start : s.stop] = (np.cos(t), np.sin(t))
            elif s.field.kind in ("angle", "fraction"):
                params[s.start : s.stop] = rng.uniform(0.2, 0.8, n)
            elif s.field.kind == "color":
                params[s.start : s.stop] = color
            elif s.field.kind == "opacity":
                params[s.start : s.stop] = 0.7 if self.mode is True else self.mode
        lo, hi = 0.02, 0.98
        for s in spec.slices:
            if s.field.kind == "position":
                params[s.start : s.stop] = np.clip(params[s.start : s.stop], lo, hi)
        return params

    def _traced_start(self, kind, target, below, seed, radius):
        """A path or polygon on the outline of the region around ``seed`` that its colour improves (colours
        within a tolerance drawn in ``[0.05, 0.25]``; every other start on average, only pixels within
        ``3 radius`` window sizes: a piece of a thin ring, not all it surrounds), in the region's mean colour;
        where that region has fewer than 3 pixels, on a circle of ``radius`` around the seed."""
        reach = 3 * radius * self.e if self.rng.uniform() < 0.5 else None
        region = improvable_region(target, below, seed, self.rng.uniform(0.05, 0.25), reach=reach)
        center = np.asarray(seed, np.float64)
        if region is None:
            points, color, cov = None, target[seed], np.eye(2) * (radius * self.e) ** 2 / 4
        else:
            points = np.argwhere(region).astype(np.float64)
            color = target[region].mean(axis=0)
            center, cov = points.mean(axis=0), np.cov(points.T)
        params = start_shape(kind, self.geometry[kind], center, cov, np.clip(color, 0.0, 1.0), self.c, points)
        params[-1] = 0.7 if self.mode is True else self.mode
        return params

    def _to_image(self, kind, params, f, r, c, n=None):
        """``params`` fitted in a window of ``n`` (default ``e``) engine pixels a side at scale ``f`` (each one
        ``f x f`` image pixels), at image pixel ``(r, c)``, in the image's normalised units."""
        side, out = (n or self.e) * f, params.copy()
        for s in self.spec[kind].slices:
            x = out[s.start : s.stop]
            if s.field.kind == "position":
                x[0::2] = (r + x[0::2] * side + (f - 1) / 2) / self.h
                x[1::2] = (c + x[1::2] * side + (f - 1) / 2) / self.w
            elif s.field.kind == "size":
                x[:] = x * side / min(self.h, self.w)
        return out

    # ---- each shape as a map of the picture: T (transmittance) and P (premultiplied colour) on its box --------

    def _maps(self, shapes):
        """Each shape of ``shapes`` drawn alone at full resolution: ``[(box (r0, c0, r1, c1), T (h, w, 1), P (h, w, C))]``,
        the box where it changes a pixel (alpha > 1e-5), ``x -> T x + P`` there (two renders: over black, over white)."""
        out, g = [], _MAP_BATCH // 2
        black, white = np.zeros(self.c, np.float32), np.ones(self.c, np.float32)
        for a in range(0, len(shapes), g):
            scenes = [Scene([s], bg) for s in shapes[a : a + g] for bg in (black, white)]
            drawn = self._full.render(scenes, sharpness=self.o["sharpness"], opacity="held")
            for p, w in zip(drawn[0::2], drawn[1::2]):
                t = (w - p)[..., :1]
                rows, cols = np.nonzero(t[..., 0] < 1.0 - 1e-5)
                if not rows.size:
                    out.append(((0, 0, 0, 0), t[:0, :0], p[:0, :0]))
                    continue
                r0, r1, c0, c1 = rows.min(), rows.max() + 1, cols.min(), cols.max() + 1
                out.append(((r0, c0, r1, c1), t[r0:r1, c0:c1].copy(), p[r0:r1, c0:c1].copy()))
        return out

    def _composite(self, maps, canvas):
        """``canvas`` (changed in place) with ``maps`` drawn over it, back to front."""
        for (r0, c0, r1, c1), t, p in maps:
            canvas[r0:r1, c0:c1] = t * canvas[r0:r1, c0:c1] + p
        return canvas

    def _add(self, new):
        """Draw the shapes ``new`` over the canvas and keep them; one history entry per shape."""
        for shape, m in zip(new, self._maps(new)):
            self.canvas = self._composite([m], self.canvas)
            self.shapes.append(shape)
            self.maps.append(m)
            self.history.append(self.psnr())

    # ---- refinement: each shape in a window around it, the others frozen ----------------------------------

    def _window(self, box):
        """``(n, r, c)``: the full-resolution square window of ``n`` pixels a side (``e``, ``2 e``, ``4 e``... within
        the picture) that holds ``box`` with room to move, placed around it; ``None`` if none does."""
        r0, c0, r1, c1 = _reach(box)
        need = max(r1 - r0, c1 - c0)
        for f in self.levels:
            n = self.e * f
            if n >= need:
                r = int(np.clip(round((r0 + r1 - n) / 2), 0, self.h - n))
                c = int(np.clip(round((c0 + c1 - n) / 2), 0, self.w - n))
                return n, r, c
        return None

    def _to_window(self, kind, params, n, r, c):
        """Inverse of :meth:`_to_image` at scale 1: image-normalised ``params`` in the window ``(n, r, c)``."""
        out = params.copy()
        for s in self.spec[kind].slices:
            x = out[s.start : s.stop]
            if s.field.kind == "position":
                x[0::2] = (x[0::2] * self.h - r) / n
                x[1::2] = (x[1::2] * self.w - c) / n
            elif s.field.kind == "size":
                x[:] = x * min(self.h, self.w) / n
        return out

    def _refine_engine(self, n):
        """The engine that refines shapes alone in windows of ``n`` pixels a side (``None``: the whole picture), a
        batch of about 8 windows of 32 pixels' worth of pixels (a set of shapes is often a few big ones: a batch
        is drawn whole, padding too)."""
        h, w = (self.h, self.w) if n is None else (n, n)
        # At least 2: an engine's tables hold two items anyway (a batch of one compiles to a slower program).
        batch = max(2, min(8, (8 * 32 * 32) // (h * w)))
        return shared_engine(self.kinds, h, w, self.c, 1, "over", batch)

    def _refine(self, index, steps):
        """Refine the shapes ``index`` (a range) in ``passes`` passes of ``steps / passes`` steps.

        Each shape is refined alone, at full resolution, in a window around it (or over the whole picture where
        no window holds it), between the image of the shapes under it and the affine map of those above it.
        Shapes whose boxes (and a margin) overlap are refined one after the other, the others side by side:
        sets of shapes that do not overlap, each set at once, the next on top of what it left. So a step costs
        each shape its window, not the picture."""
        index = list(index)
        passes = self.o["passes"]
        self._warming.join()
        clock = time.perf_counter()
        for _ in range(passes):
            for part in self._independent_sets(index):
                self._refine_set(part, max(1, steps // passes))
        self.pace = (time.perf_counter() - clock) / (max(steps, 1) * len(index))  # seconds per step and shape

    def _independent_sets(self, index):
        """``index`` split into sets whose boxes (with a margin) do not overlap, greedily, back to front."""
        sets, boxes = [], []
        for i in index:
            box = _reach(self.maps[i][0])
            for part, taken in zip(sets, boxes):
                if not any(_overlap(box, other) for other in taken):
                    part.append(i)
                    taken.append(box)
                    break
            else:
                sets.append([i])
                boxes.append([box])
        return sets

    def _contexts(self, windows):
        """``{i: (below, above)}`` of the shapes ``windows`` (``{i: window}``) from the current maps."""
        below, above = {}, {}
        canvas = np.broadcast_to(self.background, self.image.shape).astype(np.float32).copy()
        for i, m in enumerate(self.maps):
            if i in windows:
                below[i] = self._crop(canvas, windows[i])
            canvas = self._composite([m], canvas)
        at = np.ones(self.image.shape[:2] + (1,), np.float32)
        ap = np.zeros(self.image.shape, np.float32)
        for i in range(len(self.maps) - 1, -1, -1):
            if i in windows:
                above[i] = (self._crop(at, windows[i]), self._crop(ap, windows[i]))
            (r0, c0, r1, c1), t, p = self.maps[i]
            ap[r0:r1, c0:c1] += at[r0:r1, c0:c1] * p
            at[r0:r1, c0:c1] *= t
        return below, above

    def _refine_set(self, part, steps):
        """Refine the shapes ``part`` (boxes apart) side by side; kept if the picture's error falls."""
        windows = {i: self._window(self.maps[i][0]) for i in part}
        below, above = self._contexts(windows)
        shapes = list(self.shapes)
        sizes = {i: None if windows[i] is None else windows[i][0] for i in part}
        for n in dict.fromkeys(sizes.values()):
            items = [i for i in part if sizes[i] == n]
            engine = self._refine_engine(n)
            scenes = []
            for i in items:
                kind, params = self.shapes[i]
                if windows[i] is not None:
                    params = self._to_window(kind, params, *windows[i])
                scenes.append(Scene([(kind, params)], self.background, below=below[i], above=above[i]))
            targets = np.stack([self._crop(self.image, windows[i]) for i in items])
            fitted, _, _ = engine.fit(scenes, targets, steps=steps, learning_rate=0.3 * self.o["learning_rate"],
                                      sharpness=(self.o["sharpness"], self.o["sharpness"]), opacity=self.mode)
            for i, scene in zip(items, fitted):
                kind, params = scene.shapes[0]
                if windows[i] is not None:
                    side, r, c = windows[i]
                    params = self._to_image(kind, params, 1, r, c, side)
                shapes[i] = (kind, params)
        # Judged as drawn (colours clipped to [0, 1], opacities folded) over the whole picture.
        maps = list(self.maps)
        for i, m in zip(part, self._maps([shapes[i] for i in part])):
            maps[i] = m
        canvas = self._composite(maps, np.broadcast_to(self.background, self.image.shape).astype(np.float32).copy())
        before = float(np.mean(np.square(self.canvas - self.image)))
        after = float(np.mean(np.square(canvas - self.image)))
        if after < before:
            self.shapes, self.maps, self.canvas = shapes, maps, canvas

    @staticmethod
    def _crop(x, window):
        """A copy of ``x`` (H, W, k) on a window ``(n, r, c)``, all of it for ``None`` (the contexts' passes change
        their arrays in place)."""
        if window is None:
            return np.array(x, np.float32)
        n, r, c = window
        return np.array(x[r : r + n, c : c + n], np.float32)

    def _result(self, stopped):
        params = (np.concatenate([p for _, p in self.shapes]).astype(np.float32) if self.shapes
                  else np.zeros(0, np.float32))
        mse = float(np.mean(np.square(self.canvas - self.image)))
        return PictureFit(",".join(k for k, _ in self.shapes), params, self.background.astype(np.float32),
                          self.h, self.w, self.c, float(self.o["sharpness"]), mse, self.psnr(), 0.0,
                          self._elapsed(), history=np.asarray(self.history, np.float64), stopped=stopped,
                          canvas=np.clip(self.canvas, 0.0, 1.0))


def _block_mean(x, f):
    """``(h, w, C)`` averaged over ``f x f`` blocks."""
    if f == 1:
        return np.ascontiguousarray(x, np.float32)
    h, w, c = x.shape
    return x.reshape(h // f, f, w // f, f, c).mean(axis=(1, 3)).astype(np.float32)


def _worst_windows(error, size, n):
    """Up to ``n`` top-left corners of ``size x size`` windows of ``error`` (H, W) with the most error, not overlapping."""
    h, w = error.shape
    integral = np.pad(error, ((1, 0), (1, 0))).cumsum(0).cumsum(1)
    sums = integral[size:, size:] - integral[:-size, size:] - integral[size:, :-size] + integral[:-size, :-size]
    out = []
    sums = sums.copy()
    for _ in range(n):
        k = int(np.argmax(sums))
        r, c = divmod(k, sums.shape[1])
        if not sums[r, c] > 0:
            break
        out.append((r, c))
        sums[max(0, r - size + 1) : r + size, max(0, c - size + 1) : c + size] = -1.0
    return out


def _footprint(recon, below, f, r, c, tol=1e-3):
    """Image-pixel box ``(r0, c0, r1, c1)`` where a window's fitted shape changed the canvas (by more than ``tol``)."""
    rows, cols = np.nonzero(np.abs(recon - below).max(axis=-1) > tol)
    if not rows.size:
        return (r, c, r, c)
    return (r + rows.min() * f, c + cols.min() * f, r + (rows.max() + 1) * f, c + (cols.max() + 1) * f)


def _reach(box):
    """``box`` ``(r0, c0, r1, c1)`` grown by the room a shape has to move while it is refined: 3 px and 15 % of its side."""
    r0, c0, r1, c1 = box
    m = 3 + 0.15 * max(r1 - r0, c1 - c0)
    return (r0 - m, c0 - m, r1 + m, c1 + m)


def _overlap(a, b):
    return a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]
