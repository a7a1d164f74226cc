"""Signed distances to cubic Bézier paths: filled closed paths and open strokes.

Re-exported by :mod:`shapegrad.render.sdf`, whose conventions hold here: a point
is ``(row, col)`` in pixels, parameters broadcast against the points' leading
dimensions, the result is negative inside, and values and gradients are finite
everywhere.

A cubic segment ``j`` runs from ``P_j`` through the controls ``A_j``, ``B_j``
to its end; ``C(t) = (1-t)^3 P + 3 t (1-t)^2 A + 3 t^2 (1-t) B + t^3 E``. A
straight line is a cubic with controls at 1/3 and 2/3 of it, a quadratic
``(P, Q, E)`` the cubic ``(P, P + 2 (Q - P) / 3, E + 2 (Q - E) / 3, E)``.

Method, per pixel and segment, all of it on ``stop_gradient`` values:

1. The segment is moved so that ``P`` is the origin and scaled by its largest
   offset (every control then lies in ``[-1, 1]^2``); the pixel is clipped to
   ``1e6`` of those units (which moves no comparison below and the nearest
   point by a negligible amount), so 1e30 and 1e-30 coordinates work in float32.
2. The curve is sampled at ``SAMPLES + 1`` evenly spaced ``t`` (and, for a
   fill, at the turning points of each coordinate); the nearest point of the
   polyline through the samples starts ``NEWTON`` Newton steps on
   ``(C(t) - p) . C'(t) = 0``, kept within ``1 / SAMPLES`` of the start and
   narrowed each step, and the best ``t`` seen is kept.
3. The samples form a polyline whose winding number around the pixel is
   counted with a ray along ``+col`` (comparisons only). The polyline and the
   curve differ only in thin slivers between each chord and its arc, at most
   ``0.75 / SAMPLES^2 * max |C''| / 6`` away from the curve; a pixel that near
   a segment takes its side from the curve itself, at the nearest point and
   its tangent, so the winding number is that of the true curve.

The distance is then ``|p - C(t*)|`` evaluated with gradients at the constant
``t*`` (the envelope theorem: at a minimum over ``t`` the derivative in ``t``
is 0, so holding ``t*`` constant gives the exact gradient).
"""

import math

from keras import ops

from shapegrad.ops import autodiff, numerics, safe

__all__ = ["FILL_RULES", "cubic_path", "cubic_stroke"]

FILL_RULES = ("nonzero", "evenodd")

# Samples per segment (the search's start and the flattening for the winding number) and the
# Newton steps after them.
SAMPLES = 8
NEWTON = 4
# A pixel farther than this many segment sizes from a segment is moved along the axes to it.
_FAR = 1e6
# A pixel nearer than this (in segment sizes) to a curve is on it: the curve's normal is its gradient.
_ROUNDING = 1e-6
# Where no segment bounds the filled region (a path of zero length): no shape, this far away.
_NOWHERE = 1e30


def _tensor(x, dtype=None):
    x = ops.convert_to_tensor(x)
    if dtype is not None:
        return ops.cast(x, dtype)
    return x if "float" in str(x.dtype) else ops.cast(x, "float32")


@autodiff.compiled_when_eager(static_argnames=("fill_rule",))
def cubic_path(points, nodes, fill_rule="nonzero"):
    """Signed distance to a filled path of closed cubic Bézier subpaths.

    ``nodes[..., k, :, :]`` is subpath ``k``: ``P_0, A_0, B_0, P_1, A_1, B_1,
    ..., B_{M-1}``, segment ``j`` running from ``P_j`` through ``A_j`` and
    ``B_j`` to ``P_{j+1}``, the last one back to ``P_0``. The winding numbers of
    all subpaths add up; a pixel is inside where that sum is non-zero
    (``"nonzero"``) or odd (``"evenodd"``). A subpath of fewer segments can be
    padded with zero-length segments (every point at its ``P_0``): they change
    nothing.

    Magnitude: the exact distance to the boundary of the filled region, i.e. to
    the nearest curve point of a segment whose two sides differ in filled-ness.
    Under ``"nonzero"`` a curve with winding 1 on one side and 2 on the other
    (two overlapping subpaths of the same orientation) lies inside the shape:
    it is left out of the minimum and draws no seam. Which side of a segment a
    pixel is on, and so the winding number beyond it, is read at that
    segment's nearest point, so the magnitude can be too large where an
    interior curve lies between the pixel and the boundary (near where an
    interior curve meets the boundary); the sign is exact.

    Differentiability of the winding number: the winding number is an integer,
    piecewise constant in the pixel and the control points, so it carries no
    gradient (it is computed with comparisons only, on ``stop_gradient``
    values), and it jumps only where the pixel crosses a curve. The signed
    distance is ``-m`` inside and ``m`` outside, with ``m`` the distance to the
    filled region's boundary; at a jump of the sign ``m`` is 0, so the signed
    distance, and the coverage made of it, is continuous, and its gradient is
    the gradient of ``m``: ``(p - C(t*)) / m`` by the envelope theorem,
    or the curve's normal on the curve itself. Curves inside the filled region
    (same filled-ness on both sides) are left out of ``m``, so the sign never
    flips across them and no seam is drawn there.

    Args:
        points: ``(..., 2)`` points ``(row, col)`` in pixels.
        nodes: ``(..., K, 3M, 2)`` nodes of ``K`` closed subpaths of ``M``
            cubic segments, in pixels.
        fill_rule: ``"nonzero"`` or ``"evenodd"``.

    Returns:
        ``(...)`` signed distance in pixels, negative inside. A path with no
        area (every point on one curve) has no inside.

    Example:
        >>> import numpy as np
        >>> from keras import ops
        >>> corners = np.array([[0.0, 0.0], [6.0, 0.0], [6.0, 6.0], [0.0, 6.0]])
        >>> ends = np.roll(corners, -1, axis=0)  # a square of straight cubics
        >>> square = np.stack([corners, (2 * corners + ends) / 3, (corners + 2 * ends) / 3], 1)
        >>> nodes = square.reshape(1, 12, 2).astype("float32")
        >>> d = cubic_path(np.array([[3.0, 3.0], [3.0, 8.0]], "float32"), nodes)
        >>> [round(v, 4) for v in ops.convert_to_numpy(d).tolist()]
        [-3.0, 2.0]
    """
    if fill_rule not in FILL_RULES:
        raise ValueError(f"Expected fill_rule to be one of {list(FILL_RULES)}. Received: fill_rule={fill_rule!r}")
    points = _tensor(points)
    nodes = _tensor(nodes, points.dtype)
    p0, p1, p2 = nodes[..., 0::3, :], nodes[..., 1::3, :], nodes[..., 2::3, :]
    p3 = ops.roll(p0, -1, axis=-2)
    corners = _corner_tangents(*(ops.stop_gradient(v) for v in (p0, p1, p2, p3)))
    q, side = _offsets(points, *(_flat(v) for v in (p0, p1, p2, p3)), winding=[_flat(v) for v in corners])
    plus, winding, point, normal, touching = side
    unit = safe.safe_normalize(ops.stop_gradient(q), fallback=None)
    # |q| with gradient q / |q|; on the curve (q zero or rounding) the normal towards the pixel's side.
    n = ops.stop_gradient(ops.where(touching[..., None], normal, unit))
    length = q[..., 0] * n[..., 0] + q[..., 1] * n[..., 1]

    def filled(w):
        return w != 0 if fill_rule == "nonzero" else (ops.abs(w) % 2) == 1

    w = winding[..., None]
    w_plus = w + 1 - ops.cast(plus, w.dtype)  # the winding number on the segment's higher side
    bounds = (filled(w_plus) != filled(w_plus - 1)) & ~point
    far = ops.cast(_NOWHERE, length.dtype)
    m = ops.min(ops.where(bounds, length, far), axis=-1)
    # No segment bounds the region: deep inside (interior curves only), or a path of no area
    # (then the distance to it, as for a degenerate polygon).
    inside = filled(winding)
    m = ops.where(ops.any(bounds, axis=-1), m, ops.where(inside, far, ops.min(length, axis=-1)))
    return ops.where(inside, -m, m)


@autodiff.compiled_when_eager
def cubic_stroke(points, nodes, half_width):
    """Signed distance to a stroke along open chains of cubic Bézier segments, round caps and joins.

    ``nodes[..., k, :, :]`` is chain ``k``: ``P_0, A_0, B_0, P_1, ..., B_{M-1},
    P_M``, segment ``j`` running from ``P_j`` through ``A_j`` and ``B_j`` to
    ``P_{j+1}``. The stroke is every point within ``half_width`` of a chain:
    ``min_j |p - C_j(t*)| - half_width``, exact (see the module docstring). A
    closed outline is a chain whose last point is its first. On a centre line
    the gradient with respect to ``points`` is 0 (the medial axis).

    Args:
        points: ``(..., 2)`` points ``(row, col)`` in pixels.
        nodes: ``(..., K, 3M + 1, 2)`` nodes of ``K`` chains of ``M`` cubic
            segments, in pixels.
        half_width: ``(...)`` half the stroke width in pixels; negative counts as 0.

    Returns:
        ``(...)`` signed distance in pixels, negative inside.

    Example:
        >>> import numpy as np
        >>> from keras import ops
        >>> line = np.array([[[0.0, 0.0], [0.0, 2.0], [0.0, 4.0], [0.0, 6.0]]], "float32")
        >>> d = cubic_stroke(np.array([[0.0, 3.0], [4.0, 3.0], [0.0, 9.0]], "float32"), line, 1.0)
        >>> [round(v, 4) for v in ops.convert_to_numpy(d).tolist()]
        [-1.0, 3.0, 2.0]
    """
    points = _tensor(points)
    nodes = _tensor(nodes, points.dtype)
    ends = nodes[..., 0:-1:3, :], nodes[..., 1::3, :], nodes[..., 2::3, :], nodes[..., 3::3, :]
    q, _ = _offsets(points, *(_flat(v) for v in ends), winding=None)
    half_width = _tensor(half_width, points.dtype)
    return ops.min(safe.safe_norm(q), axis=-1) - numerics.maximum(half_width, ops.zeros_like(half_width))


def _flat(v):
    """``(..., K, M, 2)`` -> ``(..., K * M, 2)``: every segment of every subpath on one axis."""
    return ops.reshape(v, tuple(v.shape[:-3]) + (-1, 2))


def _direction(*candidates):
    """The first of several ``(..., 2)`` vectors that is not zero, scaled to a largest component of 1 (0 if all are)."""
    out = candidates[-1]
    for v in candidates[-2::-1]:
        out = ops.where(ops.any(v != 0, axis=-1, keepdims=True), v, out)
    scale = ops.max(ops.abs(out), axis=-1, keepdims=True)
    return out / ops.where(scale >= numerics.tiny(scale), scale, ops.ones_like(scale))


def _corner_tangents(p0, p1, p2, p3):
    """Per segment ``(..., K, M, 2)``: directions into its start (from the previous segment that is
    not a point), out of its start, into its end, and out of its end (into the next one that is not a point)."""
    out = _direction(p1 - p0, p2 - p0, p3 - p0)
    into = _direction(p3 - p2, p3 - p1, p3 - p0)
    segments = out.shape[-2]
    before, after = ops.roll(into, 1, axis=-2), ops.roll(out, -1, axis=-2)
    for k in range(2, segments + 1):  # past zero-length (padding) segments
        before = ops.where(ops.any(before != 0, -1, keepdims=True), before, ops.roll(into, k, axis=-2))
        after = ops.where(ops.any(after != 0, -1, keepdims=True), after, ops.roll(out, -k, axis=-2))
    return before, out, into, after


def _plus_of_line(direction, vr, vc):
    """Whether ``p = C + v`` is on the plus side of a line through ``C`` along ``direction``; ties as in the count."""
    dr, dc = direction[..., 0], direction[..., 1]
    side = dc * vr - dr * vc  # -cross(direction, v)
    return ops.where(side != 0, side, ops.where(dc != 0, dc, -dr)) > 0


def _plus_of_corner(into, out, vr, vc):
    """The side of ``v`` at a corner entered along ``into`` and left along ``out``.

    Plus (the higher winding number) is the wedge between the two lines if
    the path turns towards it, else the rest of the plane.
    """
    a, b = _plus_of_line(into, vr, vc), _plus_of_line(out, vr, vc)
    turn = into[..., 0] * out[..., 1] - into[..., 1] * out[..., 0]
    return ops.where(turn < 0, a & b, a | b)


def _offsets(points, p0, p1, p2, p3, winding):
    """``p - C_j(t*_j)`` ``(..., S, 2)`` with gradients, and (if ``winding``) what the sign needs.

    ``points`` ``(..., 2)``; segment ends and controls ``(..., S, 2)``;
    ``winding``: False (no sign), or the four corner directions of
    :func:`_corner_tangents` ``(..., S, 2)``. The side
    information, all without gradient, is ``(plus, winding, point, normal)``:
    ``plus`` ``(..., S)`` whether the pixel is on the side of segment ``j``
    where the winding number is one higher (``cross(C', p - C) < 0``); ``winding`` ``(...)`` the
    winding number of the whole path around the pixel (int32); ``point``
    ``(..., S)`` whether the segment is a single point; ``normal``
    ``(..., S, 2)`` the unit normal on the lower side.
    """
    dtype = points.dtype
    ps = ops.stop_gradient(points)
    cs = [ops.stop_gradient(v) for v in (p0, p1, p2, p3)]
    # Per segment: origin at P, scaled by the largest offset (components in [-1, 1]).
    r0, c0 = cs[0][..., 0], cs[0][..., 1]
    rel = [(v[..., 0] - r0, v[..., 1] - c0) for v in cs[1:]]
    scale = None
    for r, c in rel:
        a = numerics.maximum(ops.abs(r), ops.abs(c))
        scale = a if scale is None else numerics.maximum(scale, a)
    point = scale < numerics.tiny(scale)  # also subnormal sizes: no direction to speak of
    inv = 1.0 / ops.where(point, ops.ones_like(scale), scale)
    (ar, ac), (br, bc), (er, ec) = ((r * inv, c * inv) for r, c in rel)
    # Power basis: C(t) - P = ((a t + b) t + c) t, per segment.
    kr, kc = 3 * ar - 3 * br + er, 3 * ac - 3 * bc + ec
    lr, lc = -6 * ar + 3 * br, -6 * ac + 3 * bc
    mr, mc = 3 * ar, 3 * ac
    # The pixel in each segment's frame, (..., S); a far pixel moved to _FAR along the axes.
    pr = ops.clip((ps[..., 0][..., None] - r0) * inv, -_FAR, _FAR)
    pc = ops.clip((ps[..., 1][..., None] - c0) * inv, -_FAR, _FAR)

    # Samples (..., S, N + 1), or N + 5 with the turning points of each coordinate (a winding
    # number needs them: between two samples the curve is then monotone in both coordinates,
    # so it stays in the box of its chord and turns by less than 90 degrees), relative to the pixel.
    n = SAMPLES
    ts = ops.cast(ops.arange(n + 1), dtype) / n
    if winding:
        extremes = _turning_points(kr, lr, mr) + _turning_points(kc, lc, mc)
        shape = ops.shape(kr) + (n + 1,)
        ts = ops.sort(ops.concatenate([ops.broadcast_to(ts, shape)] + [e[..., None] for e in extremes], -1), -1)
    sr = _exact_ends(((kr[..., None] * ts + lr[..., None]) * ts + mr[..., None]) * ts, er) - pr[..., None]
    sc = _exact_ends(((kc[..., None] * ts + lc[..., None]) * ts + mc[..., None]) * ts, ec) - pc[..., None]
    # The nearest point of the polyline through the samples starts the search: its chord
    # (per segment: direction and 1 / length^2), and where along it.
    vr_, wr_ = sr[..., :-1], sr[..., 1:]
    vc_, wc_ = sc[..., :-1], sc[..., 1:]
    er_, ec_ = wr_ - vr_, wc_ - vc_
    length2 = er_ * er_ + ec_ * ec_
    # A subnormal length^2 has no finite reciprocal (and 0 * inf is NaN): such a chord is a point.
    inv_length2 = 1.0 / ops.where(length2 >= numerics.tiny(length2), length2, ops.ones_like(length2))
    h = ops.clip(-(vr_ * er_ + vc_ * ec_) * inv_length2, 0.0, 1.0)
    dr, dc = vr_ + h * er_, vc_ + h * ec_
    dist2 = dr * dr + dc * dc
    best = ops.cast(ops.arange(ts.shape[-1] - 1), "int32") == ops.cast(ops.argmin(dist2, axis=-1), "int32")[..., None]
    t0 = ops.sum(ops.where(best, ts[..., :-1] + h * (ts[..., 1:] - ts[..., :-1]), ops.zeros_like(h)), axis=-1)
    t = ops.stop_gradient(_newton(t0, (kr, kc, lr, lc, mr, mc), pr, pc))

    # The offset with gradients at the constant t*.
    s, u = t, 1 - t
    w = (u * u * u, 3 * s * u * u, 3 * s * s * u, s * s * s)
    q = [points[..., k][..., None] - sum(wi * v[..., k] for wi, v in zip(w, (p0, p1, p2, p3))) for k in (0, 1)]
    q = ops.stack(q, axis=-1)
    if not winding:
        return q, None

    # The tangent and the pixel's side at t*, in the segment's frame: plus where
    # cross(C', C - p) = -cross(C', p - C) > 0.
    vr = _exact_ends(((kr * t + lr) * t + mr) * t, er, t) - pr
    vc = _exact_ends(((kc * t + lc) * t + mc) * t, ec, t) - pc
    tr, tc = (3 * kr * t + 2 * lr) * t + mr, (3 * kc * t + 2 * lc) * t + mc
    curve_side = tr * vc - tc * vr
    # Chords: from sample i to sample i + 1, (..., S, N). The ray from the pixel along +col
    # crosses chord v -> w iff it straddles the pixel's row and cross(v, w) (w_row - v_row) < 0;
    # it counts +1 going down the rows, -1 going up. Ties (a pixel on a chord's line, on a sample's
    # row, on the curve) are broken as for the pixel moved by (e, e e') with e >> e' > 0 tiny, in
    # every test alike, so that the count and the sides below agree on where such a pixel is.
    cross = vr_ * wc_ - vc_ * wr_
    cross = ops.where(cross != 0, cross, ops.where(ec_ != 0, -ec_, er_))
    crossing = ((vr_ > 0) != (wr_ > 0)) & (cross * er_ < 0)
    one = ops.ones_like(cross, dtype="int32")
    count = ops.sum(ops.where(crossing, ops.where(er_ > 0, one, -one), ops.zeros_like(one)), axis=(-1, -2))
    # Near a segment (within the flattening's error of it, and in the box of the chord whose
    # arc holds t*) the side of that chord can differ from the side of the curve: a sliver
    # between the two, where the curve decides.
    piece = ops.sum(ops.cast(ts[..., 1:-1] <= t[..., None], "int32"), axis=-1)
    here = ops.cast(ops.arange(ts.shape[-1] - 1), "int32") == piece[..., None]
    boxed = (ops.minimum(vr_, wr_) <= 0) & (ops.maximum(vr_, wr_) >= 0)
    boxed = boxed & (ops.minimum(vc_, wc_) <= 0) & (ops.maximum(vc_, wc_) >= 0)
    chord_plus = ops.any((cross < 0) & here, axis=-1)
    boxed = ops.any(boxed & here, axis=-1)
    curve_side = ops.where(curve_side != 0, curve_side, ops.where(tc != 0, tc, -tr))
    tangent = numerics.maximum(ops.abs(tr), ops.abs(tc)) > 1e-6
    own = ops.where(tangent, curve_side > 0, chord_plus)  # the side of this segment's own arc
    # The side for the fill: at an end of the segment the pixel may lie beyond it, in the corner
    # with the next segment; its side is then the corner's (the same for both segments).
    before, out, into, after = winding
    plus = ops.where(
        t <= 0, _plus_of_corner(before, out, -vr, -vc), ops.where(t >= 1, _plus_of_corner(into, after, -vr, -vc), own)
    )
    # |C''| <= 6 max(|P - 2A + B|, |A - 2B + E|), and a chord of 1 / N of t strays at most
    # |C''| / (8 N^2) from its arc; twice that bound (components: sqrt(2) more) is "near".
    bend = numerics.maximum(
        numerics.maximum(ops.abs(br - 2 * ar), ops.abs(bc - 2 * ac)),
        numerics.maximum(ops.abs(ar - 2 * br + er), ops.abs(ac - 2 * bc + ec)),
    )
    sliver = 2 * math.sqrt(2) * 0.75 / (n * n) * bend
    f = vr * vr + vc * vc
    near = ((f <= sliver * sliver) & boxed) | (f == 0)
    fix = ops.cast(own, "int32") - ops.cast(chord_plus, "int32")
    count = count + ops.sum(ops.where(near & ~point, fix, ops.zeros_like(fix)), axis=-1)
    # The normal towards the pixel's side: the gradient of |q| on the curve.
    lower = _lower_normal(tr, tc, dtype)
    normal = ops.where(plus[..., None], -lower, lower)
    # On the curve to rounding (relative to the segment's size): q's own direction is noise there.
    touching = f <= _ROUNDING * _ROUNDING
    return q, (plus & ~point, count, point, normal, touching)


def _exact_ends(values, end, t=None):
    """Curve coordinates with the values at t = 0 and t = 1 replaced by the exact ends, 0 and ``end``.

    The polynomial at t = 1 is ``k + l + m``, off by rounding, and the sides of a
    pixel on a segment's line (often exactly: an axis-aligned edge through pixel
    centres) must come out the same in every test that looks at them.
    """
    if t is None:  # samples (..., S, N): the first is t = 0, the last t = 1
        return ops.concatenate([ops.zeros_like(values[..., :1]), values[..., 1:-1], end[..., None]], axis=-1)
    return ops.where(t <= 0, ops.zeros_like(values), ops.where(t >= 1, end, values))


def _turning_points(k, l, m):
    """The two roots of ``3 k t^2 + 2 l t + m`` (a coordinate's derivative), or 0 where there are none (no gradient)."""
    zero = ops.zeros_like(k)
    disc = l * l - 3 * k * m
    real = disc >= 0
    root = ops.sqrt(ops.where(real, disc, zero))
    # q = -(l + sign(l) root): the two roots are q / 3k and m / q, without cancellation.
    q = -(l + ops.where(l < 0, -root, root))
    ok_k = real & (k != 0)
    ok_q = real & (q != 0)
    r1 = ops.where(ok_k, q / ops.where(ok_k, 3 * k, ops.ones_like(k)), zero)
    r2 = ops.where(ok_q, m / ops.where(ok_q, q, ops.ones_like(q)), zero)
    inside = lambda r: ops.where((r > 0) & (r < 1), r, zero)  # noqa: E731
    return [inside(r1), inside(r2)]


def _lower_normal(tr, tc, dtype):
    """Unit normal ``(-C'_col, C'_row) / |C'|`` (the lower-winding side); ``(1, 0)`` where ``C' = 0``."""
    return ops.stop_gradient(
        safe.safe_normalize(ops.stack([-tc, tr], axis=-1), fallback=ops.cast([1.0, 0.0], dtype))
    )


def _newton(t, coefficients, pr, pc):
    """Refine a start ``t`` with safeguarded Newton steps; the best ``t`` seen (no gradient)."""
    kr, kc, lr, lc, mr, mc = coefficients
    step = 1.0 / SAMPLES
    lo = numerics.maximum(t - step, ops.zeros_like(t))
    hi = numerics.minimum(t + step, ops.ones_like(t))
    best = t
    for i in range(NEWTON + 1):
        vr = ((kr * t + lr) * t + mr) * t - pr
        vc = ((kc * t + lc) * t + mc) * t - pc
        f = vr * vr + vc * vc
        if i == 0:
            best_f = f
        better = f < best_f
        best, best_f = ops.where(better, t, best), ops.where(better, f, best_f)
        if i == NEWTON:
            break
        dr, dc = (3 * kr * t + 2 * lr) * t + mr, (3 * kc * t + 2 * lc) * t + mc
        g = vr * dr + vc * dc  # f' / 2
        h = dr * dr + dc * dc + vr * (6 * kr * t + 2 * lr) + vc * (6 * kc * t + 2 * lc)
        # f decreases towards the side where g < 0: narrow the bracket to it.
        lo = ops.where(g < 0, t, lo)
        hi = ops.where(g > 0, t, hi)
        # Where f is convex, a Newton step kept in the bracket (so a minimum at an end of the
        # segment is reached exactly); elsewhere the middle of the bracket.
        ok = h > 0
        newton = t - g / ops.where(ok, h, ops.ones_like(h))
        t = ops.where(ok, ops.clip(newton, lo, hi), 0.5 * (lo + hi))
    return best
