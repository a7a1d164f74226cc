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
- **Refinement in groups.** Every ``refine_every`` shapes, and at the end,
  shapes are refined together at full resolution ``group`` at a time: each
  group between the image of the shapes under it (``below``) and the affine
  map of the shapes above it (``above``). Memory holds one map per group.
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
from shapegrad.fit.engine import Scene, shared_engine
from shapegrad.fit.search import SceneFit
from shapegrad.fit.starts import Geometry, improvable_region, start_shape, traced
from shapegrad.render.primitives import parse_kinds
from shapegrad.render.render import Render

__all__ = ["PICTURE_DEFAULTS", "PictureFit", "check_picture_options", "fit_picture"]

PICTURE_DEFAULTS = dict(
    window=32,
    candidates=8,
    windows=4,
    steps=80,
    learning_rate=0.08,
    sharpness=0.6,
    group=32,
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
    """

    history: np.ndarray = None
    stopped: str = ""


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
            (edge sharpness in px^-1 of the result), ``group``, ``refine_every``,
            ``refine_steps``, ``final_steps`` (0: no final refinement; None:
            ``4800 / shapes`` within ``[60, 150]``, about one cost whatever
            the count, since a step costs each shape's pixels).

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
    for name in ("window", "candidates", "windows", "steps", "group", "refine_every"):
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
        self.pace = None  # seconds per refinement step and shape, once measured
        self.canvas = np.broadcast_to(self.background, image.shape).astype(np.float32).copy()
        self.history = []
        self.spec = {k: Render(k, 8, channels=c).spec for k in kinds}
        self.geometry = {k: Geometry(self.candidate_engine, k) for k in kinds if traced(k)}

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
        for k in range(len(new)):  # one history entry per shape: the canvas after each
            self.canvas = self._draw(new[k : k + 1], self.canvas)
            self.shapes.append(new[k])
            self.history.append(self.psnr())
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

    def _to_image(self, kind, params, f, r, c):
        """``params`` fitted in the window of scale ``f`` at image pixel ``(r, c)`` in the image's normalised units."""
        e, out = self.e, params.copy()
        for s in self.spec[kind].slices:
            x = out[s.start : s.stop]
            if s.field.kind == "position":
                x[0::2] = (r + x[0::2] * e * f + (f - 1) / 2) / self.h
                x[1::2] = (c + x[1::2] * e * f + (f - 1) / 2) / self.w
            elif s.field.kind == "size":
                x[:] = x * e * f / min(self.h, self.w)
        return out

    def _draw(self, shapes, canvas):
        """``canvas`` with ``shapes`` (at most ``group``) drawn over it, at the result's sharpness."""
        scene = Scene(list(shapes), self.background, below=canvas)
        return self._engine(len(shapes)).render([scene], sharpness=self.o["sharpness"], opacity="held")[0]

    def _engine(self, n):
        """The full-resolution engine for ``n`` shapes (at most ``group``): its tables hold the next power of two
        of them, at least 4. A step draws every row of the tables, padding too, so a table of ``group`` rows for
        a few shapes wastes most of it (8x the time for a path's group of 4 in a table of 32); powers of two
        keep the compiled sizes few."""
        size = min(self.o["group"], max(4, 1 << (max(n, 1) - 1).bit_length()))
        return shared_engine(self.kinds, self.h, self.w, self.c, size, "over", 1)

    def _refine(self, index, steps):
        """Refine the shapes ``index`` (a range) together, ``group`` at a time, the others frozen."""
        g = self.o["group"]
        start, stop = index.start, index.stop
        starts = list(range(start, stop, g))
        # Under the first group: everything before it; over each group: the affine map of what is above.
        below = self.background_canvas() if start == 0 else self._draw_all(self.shapes[:start], self.background_canvas())
        above = [None] * len(starts)
        t, p = self._affine(self.shapes[stop:])
        for j in range(len(starts) - 1, -1, -1):
            above[j] = (t, p)
            gt, gp = self._affine(self.shapes[starts[j] : min(starts[j] + g, stop)])
            t, p = gt * t, t * gp + p
        before = float(np.mean(np.square(self.canvas - self.image)))
        for j, a in enumerate(starts):
            part = self.shapes[a : min(a + g, stop)]
            scene = Scene(list(part), self.background, below=below, above=above[j])
            clock = time.perf_counter()
            engine = self._engine(len(part))
            fitted, _, _ = engine.fit([scene], self.image[None], steps=steps,
                                      learning_rate=0.3 * self.o["learning_rate"],
                                      sharpness=(self.o["sharpness"], self.o["sharpness"]), opacity=self.mode)
            self.pace = (time.perf_counter() - clock) / (steps * len(part))  # seconds per step and shape
            # The error of the shapes as they come out (colours clipped to [0, 1], opacities folded), drawn
            # as the canvas will be: the fit's own loss may be lower (a colour below 0 under a translucent
            # shape over it) and would keep a refinement that makes the picture worse.
            drawn = engine.render([Scene(fitted[0].shapes, self.background, below=below, above=above[j])],
                                  sharpness=self.o["sharpness"], opacity="held")[0]
            loss = [float(np.mean(np.square(drawn - self.image)))]
            if loss[0] < before:  # a refinement that does not help is not kept
                self.shapes[a : a + len(part)] = fitted[0].shapes
                before = float(loss[0])
            below = self._draw(self.shapes[a : a + len(part)], below)
        self.canvas = self._draw_all(self.shapes[stop:], below)

    def background_canvas(self):
        return np.broadcast_to(self.background, self.image.shape).astype(np.float32).copy()

    def _draw_all(self, shapes, canvas):
        g = self.o["group"]
        for a in range(0, len(shapes), g):
            canvas = self._draw(shapes[a : a + g], canvas)
        return canvas

    def _affine(self, shapes):
        """``(T (H, W, 1), P (H, W, C))`` of ``shapes`` drawn "over": ``image -> T * image + P``."""
        black = np.zeros(self.image.shape, np.float32)
        p = self._draw_all(shapes, black)
        t = self._draw_all(shapes, np.ones(self.image.shape, np.float32)) - p
        return t[..., :1], p

    def _result(self, stopped):
        params = (np.concatenate([p for _, p in self.shapes]).astype(np.float32) if self.shapes
                  else np.zeros(0, np.float32))
        mse = float(np.mean(np.square(self.canvas - self.image)))
        return PictureFit(",".join(k for k, _ in self.shapes), params, self.background.astype(np.float32),
                          self.h, self.w, self.c, float(self.o["sharpness"]), mse, self.psnr(), 0.0,
                          self._elapsed(), history=np.asarray(self.history, np.float64), stopped=stopped)


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


def _overlap(a, b):
    return a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]
