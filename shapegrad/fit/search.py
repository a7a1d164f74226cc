"""How many shapes of which kinds, in which depth order: :func:`fit_scene`, on :class:`~shapegrad.fit.engine.SceneEngine`.

:func:`fit_scene` finds, per image, how many shapes (up to ``max_shapes``) of which ``kinds``
explain it, their depth order and their parameters; ``shapes="disk*2,box"`` fits exactly those
shapes instead. Greedy forward selection from residual regions (:mod:`shapegrad.fit.starts`),
depth swaps, kind changes and pruning, by a BIC-like gain with a floor; then a polish at full
resolution that fits opacities and edge widths. The search, its rules and the measurements behind
them: docs/design-fitting.md.

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

import dataclasses
import math
import time

import keras
import numpy as np

from shapegrad import _validate
from shapegrad.fit.engine import Scene, SceneEngine, bucket, resolution_of, shared_engine, warm_in_background
from shapegrad.fit.starts import Geometry, downsample, moments, noise_level, residual_region, start_shape
from shapegrad.io.images import border_color
from shapegrad.render import raster
from shapegrad.render.primitives import format_shapes, parse_kinds, parse_shapes
from shapegrad.render.render import Render

__all__ = ["DEFAULT_KINDS", "DEFAULT_MAX_SHAPES", "GROUP", "SEARCH_DEFAULTS", "Scene", "SceneEngine", "SceneFit", "fit_scene",
           "noise_level", "search_spec"]

DEFAULT_KINDS = ("disk", "box", "triangle", "ellipse")
DEFAULT_MAX_SHAPES = 5
# The final edge sharpnesses tried per image (option ``soft_edges``), as fractions of ``final_sharpness``.
_EDGE_LADDER = (1.0, 0.64, 0.4)
# ... and a softer one is taken when it lowers the error of the search's scene below this fraction.
_EDGE_MARGIN = 0.9


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
    """The ONE construction of an output ``Render`` with an edge width (``softness = 1 / sharpness``).

    Consecutive shapes of one kind make one group (``"triangle,triangle"`` -> ``"triangle*2"``: the same
    parameters, drawn in the same order): a ``Render`` draws a group at once, and compiles each group of
    its own (a picture's 128 triangles as 128 groups: minutes of compilation on JAX)."""
    runs = []
    for kind, count in parse_shapes(shapes):
        if runs and runs[-1][0] == kind:
            runs[-1][1] += count
        else:
            runs.append([kind, count])
    return Render(format_shapes(runs), resolution_of(height, width), channels=channels, background=background,
                  softness=1.0 / sharpness, composite=composite)


class _Search:
    """Greedy forward selection over a batch of same-size images (see the module docstring)."""

    def __init__(self, images, kinds, max_shapes, fixed, factor, options, starts=None):
        self.images = np.asarray(images, np.float32)
        self.starts = starts  # per image a Scene at full resolution (or None): the search continues from it
        b, h, w, c = self.images.shape
        self.kinds, self.max_shapes, self.fixed, self.f, self.o = kinds, max_shapes, fixed, factor, options
        self.coarse = downsample(self.images, factor)
        hc, wc = self.coarse.shape[1:3]
        size = bucket(b)
        k = len(kinds)
        self.engine = shared_engine(kinds, hc, wc, c, max_shapes, options["composite"], batch=2 * k * size,
                              instances=max(3 * size, max_shapes))
        if factor == 1:  # the search is at full resolution: its engine polishes too (one compilation)
            self.full = self.engine
            self._warming = None
        else:  # the polish's engine compiles in a thread while the search runs (joined before the polish)
            self.full = shared_engine(kinds, h, w, c, max_shapes, options["composite"], batch=size,
                                instances=max(size, max_shapes))
            self._warming = warm_in_background([self.full])
        self.geo = {k: Geometry(self.engine, k) for k in kinds}
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
        return loss * self.n + self.price[i] * sum(self.engine.geometry[k] for k, _ in scene.shapes)

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
        scenes = [Scene([], border_color(im)) for im in self.images]
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
                blob = residual_region(self.coarse[i], recon[i], max(4 * self.noise[i], 0.02), scenes[i].background,
                             o["min_contrast"])
                if blob is None or not remaining:
                    active[i] = False
                    continue
                points, color = blob
                cov = np.cov(points.T) if len(points) > 2 else np.eye(2)
                for kind in remaining:
                    new = start_shape(kind, self.geo[kind], points.mean(0), cov, color, c, points)
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
                border = border_color(self.coarse[i])
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
        center, cov = moments(kind, self.geo[kind].to_pixels(params))
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
                center, cov = moments(kind, self.geo[kind].to_pixels(p))
                color = _with_color(self.engine, kind, p, None)[1]
                points = self._region(i, center, cov, color)
                for other in self.kinds:
                    if other != kind:
                        shapes = list(scene.shapes)
                        shapes[j] = (other, start_shape(other, self.geo[other], center, cov, color, c, points))
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
            coarse, full = self.geo[kind], Geometry(self.full, kind)
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
                coarse, full = self.geo[kind], Geometry(self.full, kind)
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


def _with_color(engine, kind, params, value):
    """``params`` with the colour set to ``value``; with ``value=None``, ``(params, colour)``."""
    p = np.asarray(params, np.float32).copy()
    g = engine.sizes[kind] - engine.channels - 1
    if value is None:
        return p, p[g : g + engine.channels]
    p[g : g + engine.channels] = value
    return p


# At most this many images are searched together (memory; one compiled size for a long list).
GROUP = 16


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
            background = border_color(image)
        out.append(Scene(shapes, background))
    return out


def _result(scene, loss, noise, h, w, c, sharpness, seconds):
    params = np.concatenate([p for _, p in scene.shapes]).astype("float32") if scene.shapes else np.zeros(0, "float32")
    psnr = float(min(10 * math.log10(1.0 / max(loss, 1e-10)), 100.0))
    return SceneFit(",".join(k for k, _ in scene.shapes), params, scene.background.astype("float32"), h, w, c,
                    float(sharpness), float(loss), psnr, float(noise), seconds)
