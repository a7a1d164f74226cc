"""The guide loss: a per-shape loss against a synthetic scene's true parameters, blind to each shape's symmetries.

Shapegrad draws its synthetic scenes itself, so a :class:`~shapegrad.data.SceneDataset`
knows every image's parameters. A plain parameter MSE (``train(supervised=True)``)
against them is a poor teacher: the same shape has several parameter vectors (a
triangle's three vertices in any of 6 orders, a box read with its axes swapped
or its direction reversed), and a loss that prefers one of them makes the
encoder draw their average (a triangle shrunk onto its centroid, a box
direction of zero). :func:`guide_loss` compares shapes instead, through
numbers that every representation of a shape shares, or as the minimum over the
equivalent representations where no such smooth numbers exist:

=========== ================================================================================
kind        compared (normalised units: positions as fractions of the image)
=========== ================================================================================
disk        centre, radius
box         centre, ``(a + b) / 2``, ``(a - b) / 2 * (cos 2t, sin 2t)``, corner radius
            ``corner * min(a, b)`` (``a, b`` half-sizes, ``t`` the axis angle: the
            symmetric matrix ``a u u^T + b v v^T``, the same for every reading of the box)
ellipse     centre, ``(a + b) / 2``, ``(a - b) / 2 * (cos 2t, sin 2t)``
triangle,   vertices, the minimum over the ``2 V`` cyclic shifts and reversals of the
polygonV    true vertex list
segment     ends (minimum over the two orders), half-width
bezier      ``p0, p1, p2`` (minimum over ``p0 <-> p2``), half-width
cone        apex, unit axis, half-angle (no symmetry: a cone's axis has period 360)
=========== ================================================================================

plus, for ``Render`` parameters, the colour premultiplied by the opacity (what
the image shows of a shape that nothing covers over a black background; the
two apart are seen only where shapes overlap) and the opacity. Each shape's cost
is the sum of the squared differences of those numbers. Several shapes of one
kind (``"disk*2"``) are matched by the cheapest permutation of the kind's
shapes (every permutation is tried: at most :data:`MAX_PERMUTED` copies of a
kind); shapes of different kinds are never exchanged. The loss of an image is
the mean of its shapes' costs. It is 0 at the truth and at every equivalent
reading of it, and its gradient is finite everywhere (directions go through
:func:`shapegrad.safe.safe_normalize`; zero-size shapes and coincident vertices
are ordinary inputs; values beyond ``FAR = 1e12`` are read as ``FAR``, as the
renderers do, so that the squares stay finite); it has kinks only where two readings cost the same (and
at ``a = b`` in a box's corner radius).

Why not compare rendered moments (area, centroid, second moments of each
shape's alpha)? They are symmetry-free too, but a triangle's moments up to the
second order leave a one-parameter family of triangles (every triangle with a
given centroid and covariance is an affine image of one equilateral triangle,
turned by any angle), and they cost a rendering per shape.

:class:`GuideWeight` appends the current weight of the guide to the encoder's
parameters inside the model, annealed in-graph like :class:`~shapegrad.models.Annealed`
(every backend, checkpointed), and :class:`GuideLoss` is the Keras loss that
reads it. :func:`shapegrad.train.train` with ``guide=W`` uses both.

Example:
    >>> import numpy as np
    >>> from shapegrad.render.primitives import RenderSpec
    >>> spec = RenderSpec("triangle", 32, channels=1)
    >>> true = np.array([[0.2, 0.2, 0.8, 0.3, 0.5, 0.9, 0.7, 1.0]], "float32")  # vertices, colour, opacity
    >>> turned = true[:, [2, 3, 4, 5, 0, 1, 6, 7]]  # the same triangle, its vertices listed from the second
    >>> float(keras.ops.convert_to_numpy(guide_loss(spec, turned, true))[0])
    0.0
"""

import itertools

import keras
import numpy as np
from keras import ops

from shapegrad import _validate
from shapegrad.ops import safe
from shapegrad.render import render
from shapegrad.render.primitives import FAR, RenderSpec, primitive

__all__ = ["MAX_PERMUTED", "guide_loss", "shape_descriptor", "GuideWeight", "GuideLoss", "slot_guide_loss",
           "slot_target", "SLOT_GEOMETRY_WEIGHT", "SLOT_KIND_WEIGHT", "slot_drawable", "SlotGuideLoss"]

# At most this many shapes of one kind are matched by trying every permutation (5! = 120).
MAX_PERMUTED = 5


def _offsets(fields):
    out, start = {}, 0
    for f in fields:
        out[f.name] = (f, start)
        start += f.size
    return out


def _take(x, start, size):
    return x[..., start : start + size]


def _unit(direction):
    """The unit vector as the renderers read it: a direction shorter than theirs reads as (1, 0), gradient 0.

    The true gradient of a unit vector grows like ``1 / |d|``; times a size
    difference of up to ``FAR`` and the loss's own factor it would overflow
    float32 for the tiniest directions (|d| = 1e-30 with a half-size of 1e8 did).
    """
    direction = render.clean_direction(direction)
    return safe.safe_normalize(direction, fallback=ops.convert_to_tensor([1.0, 0.0], direction.dtype))


def _axes_tensor(sizes, direction):
    """``[(a + b) / 2, (a - b) / 2 cos 2t, (a - b) / 2 sin 2t]`` of half-sizes ``(a, b)`` along the axis ``t``."""
    u = _unit(direction)
    cos2 = u[..., :1] * u[..., :1] - u[..., 1:] * u[..., 1:]
    sin2 = 2.0 * u[..., :1] * u[..., 1:]
    a, b = sizes[..., :1], sizes[..., 1:2]
    half = (a - b) / 2.0
    return [(a + b) / 2.0, half * cos2, half * sin2]


def shape_descriptor(kind, fields, params):
    """The numbers the guide compares for one shape: ``(descriptor (..., D), readings)``.

    ``fields``: the shape's geometric :class:`~shapegrad.primitives.Field`
    tuple (``primitive(kind).fields``), ``params`` ``(..., size)`` their
    normalised values. ``readings`` is a list of index lists into the
    descriptor's last axis, one per equivalent reading of the shape (the
    identity first); the guide takes the cheapest.
    """
    at = _offsets(fields)

    def get(name):
        f, start = at[name]
        return _take(params, start, f.size)

    if kind in ("box", "ellipse"):
        name = "half_size" if kind == "box" else "radii"
        sizes = get(name)
        parts = [get("center"), *_axes_tensor(sizes, get("direction"))]
        if kind == "box":
            # the corner radius; the fraction read in [0, 1] as the renderer does
            parts.append(ops.clip(get("corner"), 0.0, 1.0) * ops.minimum(sizes[..., :1], sizes[..., 1:2]))
        return ops.concatenate(parts, axis=-1), [list(range(sum(p.shape[-1] for p in parts)))]
    if kind == "triangle" or kind.startswith("polygon"):
        vertices = get("vertices")
        count = vertices.shape[-1] // 2
        orders = [[(s + k) % count for k in range(count)] for s in range(count)]
        orders += [list(reversed(o)) for o in orders]
        return vertices, [[2 * v + c for v in order for c in (0, 1)] for order in orders]
    if kind == "segment":
        d = ops.concatenate([get("a"), get("b"), get("half_width")], axis=-1)
        return d, [[0, 1, 2, 3, 4], [2, 3, 0, 1, 4]]
    if kind == "bezier":
        d = ops.concatenate([get("p0"), get("p1"), get("p2"), get("half_width")], axis=-1)
        return d, [[0, 1, 2, 3, 4, 5, 6], [4, 5, 2, 3, 0, 1, 6]]
    parts = []  # disk, cone and any kind without a symmetry: the fields as they are, directions as unit vectors
    for f in fields:
        value = get(f.name)
        parts.append(_unit(value) if f.kind == "direction" else value)
    d = ops.concatenate(parts, axis=-1)
    return d, [list(range(d.shape[-1]))]


def _shape_cost(prim, spec, pred, true):
    """Cost ``(...)`` of shapes ``pred`` against ``true`` (both ``(..., size)`` of one kind)."""
    geometric = sum(f.size for f in prim.fields)
    d_pred, _ = shape_descriptor(prim.kind, prim.fields, pred)
    d_true, readings = shape_descriptor(prim.kind, prim.fields, true)
    costs = []
    for reading in readings:
        target = d_true if reading == list(range(d_true.shape[-1])) else ops.take(d_true, reading, axis=-1)
        costs.append(ops.sum((d_pred - target) ** 2, axis=-1))
    cost = costs[0] if len(costs) == 1 else ops.min(ops.stack(costs, axis=-1), axis=-1)
    if spec.appearance:  # colour premultiplied by opacity (what the image shows), and opacity: no symmetry
        shown_p = pred[..., geometric:-1] * ops.clip(pred[..., -1:], 0.0, 1.0)  # opacity read in [0, 1], as drawn
        shown_t = true[..., geometric:-1] * ops.clip(true[..., -1:], 0.0, 1.0)
        cost = cost + ops.sum((shown_p - shown_t) ** 2, axis=-1) + (pred[..., -1] - true[..., -1]) ** 2
    return cost


def guide_loss(spec, pred, true):
    """Per-image guide loss ``(B,)`` of normalised parameters ``pred`` against ``true`` (both ``(B, P)``).

    ``spec``: the renderer's :class:`~shapegrad.primitives.RenderSpec`
    (``Render(...).spec``; ``Cones(...).spec`` works too). See the module
    docstring for what is compared. Shapes of one kind are matched by the
    cheapest permutation (at most :data:`MAX_PERMUTED` of a kind).

    Raises ``ValueError`` when a kind has more than :data:`MAX_PERMUTED` shapes.
    """
    if not isinstance(spec, RenderSpec):
        raise ValueError(f"Expected spec to be a RenderSpec (a renderer's .spec). Received: spec={spec!r}")
    # As the renderers do, read parameters beyond FAR as FAR (squares of FAR stay finite in float32).
    pred = ops.convert_to_tensor(pred)
    pred = ops.clip(pred, -FAR, FAR)
    true = ops.clip(ops.cast(ops.convert_to_tensor(true), pred.dtype), -FAR, FAR)
    total = 0.0
    for prim, count, start, size in spec.groups:
        if count > MAX_PERMUTED:
            raise ValueError(
                f"Expected at most {MAX_PERMUTED} shapes of one kind for the guide loss (every permutation is "
                f"tried). Received: shapes={spec.shapes!r}"
            )
        p = ops.reshape(pred[:, start : start + count * size], (-1, count, size))
        t = ops.reshape(true[:, start : start + count * size], (-1, count, size))
        if count == 1:
            total = total + _shape_cost(prim, spec, p[:, 0], t[:, 0])
            continue
        cost = _shape_cost(prim, spec, p[:, :, None, :], t[:, None, :, :])  # (B, count pred, count true)
        cost = ops.reshape(cost, (-1, count * count))
        perms = list(itertools.permutations(range(count)))
        index = [[i * count + perm[i] for i in range(count)] for perm in perms]  # (perms, count) into the flat cost
        matched = ops.sum(ops.take(cost, index, axis=1), axis=-1)  # (B, perms)
        total = total + ops.min(matched, axis=-1)
    return total / spec.num_shapes


@keras.saving.register_keras_serializable(package="shapegrad")
class GuideWeight(keras.layers.Layer):
    """Append the guide's current weight to the parameters: ``(B, P) -> (B, P + 1)``.

    While training the weight falls linearly from ``weight`` to 0 over the first
    ``ramp_steps`` training steps and stays 0 afterwards (``ramp_steps = 0``:
    constant ``weight``); at inference it is 0. The step counter is a
    non-trainable variable updated inside the compiled step (as in
    :class:`shapegrad.models.Annealed`), so the schedule advances every step
    on every backend and a resumed run continues it. The parameters pass
    through unchanged; the weight column carries no gradient.
    """

    def __init__(self, weight=1.0, ramp_steps=0, **kwargs):
        super().__init__(**kwargs)
        self.weight = _validate.positive_number("weight", weight)
        if isinstance(ramp_steps, bool) or not isinstance(ramp_steps, (int, float)) or ramp_steps < 0:
            raise ValueError(f"Expected ramp_steps to be a number >= 0. Received: ramp_steps={ramp_steps!r}")
        self.ramp_steps = float(ramp_steps)

    def build(self, input_shape):
        self.step = self.add_weight(
            shape=(), initializer="zeros", trainable=False, name="step", aggregation="only_first_replica"
        )
        self.built = True

    def compute_output_shape(self, input_shape):
        return (*input_shape[:-1], input_shape[-1] + 1)

    def call(self, params, training=None):
        if training:
            if self.ramp_steps > 0:
                weight = self.weight * ops.maximum(1.0 - self.step / self.ramp_steps, 0.0)
            else:
                weight = ops.convert_to_tensor(self.weight, "float32")
            self.step.assign(self.step + 1.0)
        else:
            weight = ops.convert_to_tensor(0.0, "float32")
        column = ops.zeros_like(params[:, :1]) + ops.cast(weight, params.dtype)
        return ops.concatenate([params, ops.stop_gradient(column)], axis=-1)

    def get_config(self):
        config = super().get_config()
        config.update(weight=self.weight, ramp_steps=self.ramp_steps)
        return config


class GuideLoss(keras.losses.Loss):
    """Keras loss: ``weight * guide_loss(spec, pred, true)`` with the weight in ``y_pred``'s last column.

    ``y_true``: the true parameters ``(B, P)``; ``y_pred``: ``(B, P + 1)``, the
    output of :class:`GuideWeight`.
    """

    def __init__(self, spec, name="guide", **kwargs):
        super().__init__(name=name, **kwargs)
        self.spec = spec

    def call(self, y_true, y_pred):
        weight = y_pred[:, -1]
        return weight * guide_loss(self.spec, y_pred[:, :-1], y_true)


# Weights of the slot guide's terms. Unweighted, the kind's cross entropy (1.4 per shape at a uniform guess)
# drowned the geometry (a 3 px error at 32 px costs 0.01): after 1800 steps the kind and presence terms made
# 97% of the loss and the shapes' places were learnt slowly.
SLOT_GEOMETRY_WEIGHT = 10.0
SLOT_KIND_WEIGHT = 0.3


def slot_guide_loss(layer, pred, true):
    """Per-image guide loss ``(B,)`` of a :class:`~shapegrad.slots.SlotRender`'s input ``pred`` against a target ``true``.

    ``layer``: the ``SlotRender``; ``pred``, ``true``: ``(B, layer.size)`` in
    its layout (background, then per slot presence, kind logits, the geometry
    of every kind, colour). In ``true`` a slot's presence is 1 (a shape) or 0
    (none) and its kind entries are one-hot; only the geometry of the true
    kind is read (:func:`slot_target` writes such rows). The cost of a
    predicted slot against a true shape is ``(presence - 1)^2``, the cross
    entropy of its kind logits times :data:`SLOT_KIND_WEIGHT`, the squared
    differences of the true kind's :func:`shape_descriptor` (the cheapest
    equivalent reading) times :data:`SLOT_GEOMETRY_WEIGHT`, and those of the
    colour; against an empty true slot, ``presence^2``. Slots are matched by
    the cheapest permutation (at most :data:`MAX_PERMUTED` slots); the loss is
    the squared background error plus the matched cost over the slot count.

    Example:
        >>> import numpy as np
        >>> from shapegrad.render.slots import SlotRender
        >>> layer = SlotRender("disk,box", slots=2, resolution=16, channels=3)
        >>> disk = np.array([0.3, 0.4, 0.2, 0.9, 0.1, 0.1], "float32")  # centre, radius, colour
        >>> true = slot_target(layer, [("disk", disk)], background=[0.5, 0.5, 0.5])
        >>> swapped = np.concatenate([true[:3], true[3 + layer.slot_size:], true[3:3 + layer.slot_size]])
        >>> pred = slot_drawable(layer, swapped[None])  # the same scene, its slots in the other order
        >>> round(float(keras.ops.convert_to_numpy(slot_guide_loss(layer, pred, true[None]))[0]), 6)
        0.0
    """
    if layer.slots > MAX_PERMUTED:
        raise ValueError(f"Expected at most {MAX_PERMUTED} slots for the guide loss (every permutation is tried). "
                         f"Received: slots={layer.slots!r}")
    pred = ops.clip(ops.convert_to_tensor(pred), -FAR, FAR)
    true = ops.clip(ops.cast(ops.convert_to_tensor(true), pred.dtype), -FAR, FAR)
    c, s, size, k = layer.channels, layer.slots, layer.slot_size, len(layer.kinds)
    background = ops.sum((pred[:, :c] - true[:, :c]) ** 2, axis=-1)
    p = ops.reshape(pred[:, c:], (-1, s, size))
    t = ops.reshape(true[:, c:], (-1, s, size))
    present_t = t[:, None, :, 0]  # (B, 1, S true)
    kind_t = t[:, :, 1 : 1 + k]  # (B, S true, K) one-hot
    log_choice = ops.log_softmax(p[:, :, 1 : 1 + k], axis=-1)  # (B, S pred, K)
    cross_entropy = -ops.sum(kind_t[:, None] * log_choice[:, :, None], axis=-1)
    cost = (p[:, :, None, 0] - 1.0) ** 2 + SLOT_KIND_WEIGHT * cross_entropy
    start = 1 + k
    for j, kind in enumerate(layer.kinds):
        prim = primitive(kind)
        g = sum(f.size for f in prim.fields)
        d_pred, _ = shape_descriptor(kind, prim.fields, p[:, :, start : start + g])
        d_true, readings = shape_descriptor(kind, prim.fields, t[:, :, start : start + g])
        costs = [ops.sum((d_pred[:, :, None] - ops.take(d_true, r, axis=-1)[:, None]) ** 2, axis=-1) for r in readings]
        geometric = costs[0] if len(costs) == 1 else ops.min(ops.stack(costs, axis=-1), axis=-1)
        cost = cost + SLOT_GEOMETRY_WEIGHT * kind_t[:, None, :, j] * geometric
        start += g
    cost = cost + ops.sum((p[:, :, None, start:] - t[:, None, :, start:]) ** 2, axis=-1)
    absent = p[:, :, None, 0] ** 2
    pair = present_t * cost + (1.0 - present_t) * absent  # (B, S pred, S true)
    pair = ops.reshape(pair, (-1, s * s))
    perms = list(itertools.permutations(range(s)))
    index = [[i * s + perm[i] for i in range(s)] for perm in perms]
    matched = ops.min(ops.sum(ops.take(pair, index, axis=1), axis=-1), axis=-1)
    return background + matched / s


def slot_target(layer, shapes, background):
    """The ``(layer.size,)`` target row of :func:`slot_guide_loss` for ``shapes`` drawn back to front over ``background``.

    ``shapes``: ``[(kind, params)]`` with ``params`` as ``Render(kind,
    channels=C)`` reads them (geometry, colour, opacity; the opacity is
    ignored), at most ``layer.slots`` of them, each of one of
    ``layer.kinds``. Unused slots are empty (presence 0). Kind entries are
    one-hot; to draw the row with the layer, use :func:`slot_drawable`.
    """
    c, k = layer.channels, len(layer.kinds)
    if len(shapes) > layer.slots:
        raise ValueError(f"Expected at most {layer.slots} shapes. Received: {len(shapes)} shapes")
    row = np.zeros(layer.size, np.float32)
    row[:c] = np.broadcast_to(np.asarray(background, np.float32), (c,))
    for i, (kind, params) in enumerate(shapes):
        if kind not in layer.kinds:
            raise ValueError(f"Expected a kind among {layer.kinds}. Received: kind={kind!r}")
        params = np.asarray(params, np.float32)
        x = row[c + i * layer.slot_size : c + (i + 1) * layer.slot_size]
        x[0] = 1.0
        j = layer.kinds.index(kind)
        x[1 + j] = 1.0
        start = 1 + k + sum(sum(f.size for f in primitive(q).fields) for q in layer.kinds[:j])
        g = sum(f.size for f in primitive(kind).fields)
        x[start : start + g] = params[:g]
        x[layer.slot_size - c :] = params[g : g + c]
    return row


def slot_drawable(layer, targets, hard=30.0):
    """Targets ``(B, size)`` of :func:`slot_target` made drawable by ``layer``: one-hot kinds scaled to logits ``hard``.

    Softmax of ``hard = 30`` against 0 picks the kind to within ``1e-13``.
    """
    targets = np.array(targets, np.float32, copy=True)
    c, k = layer.channels, len(layer.kinds)
    x = targets[:, c:].reshape(len(targets), layer.slots, layer.slot_size)
    x[:, :, 1 : 1 + k] *= hard
    return targets


class SlotGuideLoss(keras.losses.Loss):
    """Keras loss: ``weight * labelled * slot_guide_loss(layer, pred, true)``.

    ``y_true``: ``(B, size + 1)``, a :func:`slot_target` row and a last column
    that is 1 for an image with a target and 0 for one without (a user's
    image: no guide); ``y_pred``: ``(B, size + 1)``, the output of
    :class:`GuideWeight`.
    """

    def __init__(self, layer, name="guide", **kwargs):
        super().__init__(name=name, **kwargs)
        self.layer = layer

    def call(self, y_true, y_pred):
        labelled = ops.cast(y_true[:, -1], y_pred.dtype)
        return y_pred[:, -1] * labelled * slot_guide_loss(self.layer, y_pred[:, :-1], y_true[:, :-1])
