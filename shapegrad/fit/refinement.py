"""Test-time refinement: an encoder's guess polished through its renderer on the one compiled loop.

:func:`refine` runs Adam on the guess's raw parameters through the frozen
renderer (image loss only, no labels) on a :class:`~shapegrad.fit.engine.LayerEngine`,
sharpening the edges from ``start_sharpness`` times the renderer's own to its
own over the first ``anneal`` fraction of the steps (coarse to fine). Gradient
descent cannot move a shape through another, so :func:`refine_scene` adds
restarts that move shapes: :func:`swap_starts` (shapes trade places) and
:func:`residual_starts` (a shape moved onto what the others miss), each batch
of starts refined together and the best kept per image (:func:`refine_best`).
Fitting an image from nothing (how many shapes of which kinds) is
:func:`shapegrad.fit_scene`'s job.

Example:
    >>> import numpy as np
    >>> from shapegrad import Cones
    >>> from shapegrad.render.primitives import fields_for
    >>> truth = np.array([[0.5, 0.5, 0.0, 1.0, 0.2]], "float32")
    >>> image = keras.ops.convert_to_numpy(Cones(24)(truth))          # (1, 24, 24, 1)
    >>> guess = np.array([[0.45, 0.55, 0.2, 1.0, 0.25]], "float32")
    >>> fitted = refine(Cones(24), fields_for(Cones(24).spec), guess, image, steps=150)
    >>> bool(np.abs(fitted - truth).max() < 0.01)
    True
"""

import itertools
import math

import keras
import numpy as np
from scipy.ndimage import uniform_filter

from shapegrad.fit.engine import LayerEngine

__all__ = ["refine", "refine_best", "refine_scene", "residual_starts", "swap_starts"]


def _engine(renderer, fields, engine):
    """``engine`` if given (it must draw with ``renderer``), else a new :class:`LayerEngine` of ``renderer``."""
    if engine is None:
        return LayerEngine(renderer, fields)
    if not isinstance(engine, LayerEngine) or engine.renderer is not renderer:
        raise ValueError(f"Expected engine to be a LayerEngine of this renderer. Received: engine={engine!r}")
    return engine


def refine(renderer, fields, params, images, steps=100, learning_rate=0.02, start_sharpness=0.5, anneal=0.3,
           engine=None):
    """Improve ``(B, P)`` normalised parameters so that ``renderer(params)`` matches ``images``.

    Args:
        renderer: ``Cones``, ``Render`` or ``SlotRender`` (a layer mapping
            ``(B, P)`` to ``(B, H, W, C)`` with ``call(x, sharpness=)`` and
            ``default_sharpness``).
        fields: the parameter fields, as for :class:`~shapegrad.learn.models.ParameterHead`.
        params: ``(B, P)`` starting guess (e.g. an encoder's output).
        images: ``(B, H, W, C)`` targets.
        steps: Adam steps (one per item per step; items are independent); 0
            returns ``params`` as they are.
        learning_rate: peak Adam learning rate on the raw parameters, cosine-decayed to 2 %.
        start_sharpness: initial fraction of the renderer's sharpness, in ``(0, 1]``.
        anneal: fraction of the steps over which the sharpness reaches 1.
        engine: a :class:`~shapegrad.fit.engine.LayerEngine` of ``renderer``
            to run on (reused by many calls, it compiles once per batch
            size); default: a new one.

    Returns:
        ``(B, P)`` refined parameters (float32).
    """
    if steps <= 0:
        return np.asarray(params, "float32")
    return _refine(renderer, fields, params, images, steps, learning_rate, start_sharpness, anneal, engine)[0]


def _refine(renderer, fields, params, images, steps, learning_rate, start_sharpness, anneal, engine):
    if isinstance(start_sharpness, bool) or not isinstance(start_sharpness, (int, float)) or not 0 < start_sharpness <= 1:
        raise ValueError(f"Expected start_sharpness to be a number in (0, 1]. Received: start_sharpness={start_sharpness!r}")
    engine = _engine(renderer, fields, engine)
    end = float(renderer.default_sharpness)
    params, loss, _ = engine.fit(params, images, steps=steps, learning_rate=learning_rate,
                                 sharpness=(start_sharpness * end, end), anneal=anneal)
    return params, loss


def refine_best(renderer, fields, starts, images, steps=100, engine=None, **kwargs):
    """:func:`refine` every start of ``(B, R, P)`` ``starts``; keep the best per image (least MSE).

    All ``B * R`` starts are refined together. Keyword arguments go to
    :func:`refine`. Returns ``(params, loss)``: ``(B, P)`` and the ``(B,)``
    MSE of each image's best start, drawn at the renderer's own sharpness.
    """
    starts = np.asarray(starts, np.float32)
    if starts.ndim != 3:
        raise ValueError(f"Expected starts of shape (B, R, P). Received: starts.shape={starts.shape}")
    batch, count = starts.shape[:2]
    tiled = np.repeat(np.asarray(images, "float32"), count, axis=0)
    options = dict(dict(learning_rate=0.02, start_sharpness=0.5, anneal=0.3), **kwargs)
    params, errors = _refine(renderer, fields, starts.reshape(batch * count, -1), tiled, steps, engine=engine, **options)
    errors = errors.reshape(batch, count)
    best = errors.argmin(axis=1)
    return params.reshape(batch, count, -1)[np.arange(batch), best], errors[np.arange(batch), best]


def swap_starts(spec, params, limit=24, seed=0):
    """Starts for :func:`refine` that let shapes trade places: ``(B, R, P)``, the guess first.

    An encoder can put a shape of one kind where the image has another (a
    rounded box over a disk, a disk over the box); gradient descent cannot
    undo that, since it would have to move one shape through another. Here
    every start keeps the kinds in their slots and assigns the *places* of
    the K shapes of ``params`` to the slots in another order: each shape is
    translated so that the mean of its position fields (centre, apex,
    vertices...) lands on that of the shape whose place it takes, and takes
    that shape's colour and opacity. Start 0 is the guess itself; then every
    other permutation of the K places (all of them when ``K! <= limit``, else
    ``limit - 1`` random ones).

    Args:
        spec: the renderer's :class:`~shapegrad.render.primitives.RenderSpec`.
        params: ``(B, P)`` normalised parameters.
        limit: the most starts per image.
        seed: seed of the random permutations when ``K!`` exceeds ``limit``.
    """
    params = np.asarray(params, np.float32)
    k = spec.num_shapes
    if math.factorial(k) <= limit:
        orders = list(itertools.permutations(range(k)))
    else:
        rng = np.random.default_rng(seed)
        orders = [tuple(range(k))] + [tuple(rng.permutation(k)) for _ in range(limit - 1)]
    anchors = _anchors(spec, params)
    starts = []
    for order in orders:
        start = params.copy()
        for i, j in enumerate(order):
            if i == j:
                continue
            moved = _moved(spec, params, i, anchors[:, j])
            for s in spec.fields_of(i):
                if s.field.kind == "position":
                    start[:, s.slice] = moved[:, s.slice]
                elif s.field.kind in ("color", "opacity"):
                    start[:, s.slice] = params[:, spec.get(j, s.field.name).slice]
        starts.append(start)
    return np.stack(starts, axis=1)


def _anchors(spec, params):
    """``(B, K, 2)``: the mean of every shape's position fields (centre, apex, vertices...)."""
    return np.stack(
        [
            np.concatenate(
                [params[:, s.slice].reshape(len(params), -1, 2) for s in spec.fields_of(k) if s.field.kind == "position"],
                axis=1,
            ).mean(axis=1)
            for k in range(spec.num_shapes)
        ],
        axis=1,
    )


def _moved(spec, params, shape, to):
    """``params`` with shape ``shape``'s position fields translated so that its anchor is at ``to`` ``(B, 2)``."""
    out = params.copy()
    shift = to - _anchors(spec, params)[:, shape]
    for s in spec.fields_of(shape):
        if s.field.kind == "position":
            points = params[:, s.slice].reshape(len(params), -1, 2) + shift[:, None]
            out[:, s.slice] = np.clip(points.reshape(len(params), -1), 0.0, 1.0)
    return out


def residual_starts(renderer, params, images, width=5):
    """Starts that move one shape onto what the others miss: ``(B, K + 1, P)``, ``params`` first.

    Where ``params`` leaves the largest error (the peak of the absolute
    residual summed over channels and averaged over ``width`` x ``width``
    pixels), start ``k + 1`` puts shape ``k`` (translated, as in
    :func:`swap_starts`) with the image's colour there. It helps when two
    shapes sit on one object and none on another, which swapping places cannot
    fix.
    """
    spec = renderer.spec
    params = np.asarray(params, np.float32)
    images = np.asarray(images, np.float32)
    error = np.abs(keras.ops.convert_to_numpy(renderer(params)) - images).sum(axis=-1)
    error = uniform_filter(error, size=(1, width, width), mode="constant")
    peak = np.stack(np.unravel_index(error.reshape(len(error), -1).argmax(axis=1), error.shape[1:]), axis=1)
    color = images[np.arange(len(images)), peak[:, 0], peak[:, 1]]
    to = peak / np.float64([spec.height, spec.width])
    starts = [params]
    for k in range(spec.num_shapes):
        start = _moved(spec, params, k, to)
        start[:, spec.get(k, "color").slice] = color
        start[:, spec.get(k, "opacity").slice] = 1.0
        starts.append(start)
    return np.stack(starts, axis=1)


def refine_scene(renderer, fields, params, images, steps=200, rounds=2, engine=None):
    """Refine an encoder's guess of a :class:`~shapegrad.Render` scene with restarts that move shapes.

    Three kinds of local minimum defeat plain :func:`refine` on scenes of
    several kinds: shapes in each other's places, two shapes on one object
    and none on another, and a shape stuck behind another. So: refine every
    :func:`swap_starts` permutation of the guess from soft edges (10x,
    sharpened over half the steps) and keep the best image match; then
    ``rounds`` times, refine the :func:`residual_starts` of the best (one
    shape moved onto the largest error) and keep the best again. Every step
    uses the image only. Costs ``(K! + rounds * (K + 1)) * steps`` renderings
    per image (3 shapes, 2 rounds: 14 x 200). ``engine``: as for :func:`refine`
    (one engine serves both batch sizes, compiling each once).

    Returns ``(B, P)`` refined parameters.
    """
    if steps <= 0:
        return np.asarray(params, "float32")
    engine = _engine(renderer, fields, engine)
    best = refine_best(renderer, fields, swap_starts(renderer.spec, params), images, steps, engine=engine,
                       start_sharpness=0.1, anneal=0.5)[0]
    for _ in range(rounds):
        starts = residual_starts(renderer, best, images)
        best = refine_best(renderer, fields, starts, images, steps, engine=engine, start_sharpness=0.3, anneal=0.5)[0]
    return best
