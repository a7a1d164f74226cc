"""Signed distances: exact values, independent references (scikit-image, brute force),
float64 finite differences, and hypothesis hunts for NaN/Inf in values and gradients."""

import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from keras import ops
from skimage import draw

from shapegrad.render import kernels, raster, sdf
from helpers import (
    adversarial, adversarial_array, assert_finite, check_gradients, jit, jit_for_many_calls, to_numpy, value_and_grad,
)


def f32(x):
    return np.asarray(x, np.float32)


def grid(h, w=None):
    return to_numpy(raster.pixel_grid(h, h if w is None else w))


# ---------------------------------------------------------------- exact values


def test_disk_values_and_center():
    p = f32([[3.0, 4.0], [0.0, 0.0], [0.0, 2.0]])
    np.testing.assert_allclose(to_numpy(sdf.disk(p, f32([0, 0]), 2.0)), [3.0, -2.0, 0.0])
    # Negative radius is a point.
    np.testing.assert_allclose(to_numpy(sdf.disk(p, f32([0, 0]), -5.0)), [5.0, 0.0, 2.0])


def test_box_values_rotation_and_rounding():
    p = f32([[0, 0], [0, 3], [3, 0], [3, 4], [2, 0]])
    d = to_numpy(sdf.box(p, f32([0, 0]), f32([2, 1])))
    np.testing.assert_allclose(d, [-1.0, 2.0, 1.0, math.hypot(1, 3), 0.0], atol=1e-6)
    # A quarter turn swaps the axes.
    d90 = to_numpy(sdf.box(p, f32([0, 0]), f32([1, 2]), angle=math.pi / 2))
    np.testing.assert_allclose(d90, d, atol=1e-5)
    # Rounded: the corner is cut, the extent along the axes is kept.
    r = to_numpy(sdf.box(f32([[0, 2], [2, 2]]), f32([0, 0]), f32([2, 2]), corner_radius=1.0))
    np.testing.assert_allclose(r, [0.0, math.sqrt(2) - 1], atol=1e-6)
    # Maximal rounding of a square is a disk.
    q = grid(9).reshape(-1, 2)
    np.testing.assert_allclose(
        to_numpy(sdf.box(q, f32([4, 4]), f32([3, 3]), 0.3, corner_radius=10.0)),
        to_numpy(sdf.disk(q, f32([4, 4]), 3.0)),
        atol=1e-5,
    )


def test_segment_values_and_zero_length():
    p = f32([[0, 5], [3, 12], [-4, -3]])
    d = to_numpy(sdf.segment(p, f32([0, 0]), f32([0, 10]), 1.0))
    np.testing.assert_allclose(d, [-1.0, math.hypot(3, 2) - 1, 4.0], atol=1e-6)
    # a == b: a disk.
    np.testing.assert_allclose(to_numpy(sdf.segment(p, f32([1, 1]), f32([1, 1]), 2.0)),
                               to_numpy(sdf.disk(p, f32([1, 1]), 2.0)), atol=1e-6)


def test_polygon_orientation_nonconvex_and_degenerate():
    square = f32([[0, 0], [4, 0], [4, 4], [0, 4]])
    p = f32([[1, 2], [2, 2], [6, 2], [5, 5], [0, 2]])
    expected = [-1.0, -2.0, 2.0, math.sqrt(2), 0.0]
    np.testing.assert_allclose(to_numpy(sdf.polygon(p, square)), expected, atol=1e-6)
    np.testing.assert_allclose(to_numpy(sdf.polygon(p, square[::-1])), expected, atol=1e-6)
    # An L shape: the notch is outside.
    ell = f32([[0, 0], [6, 0], [6, 2], [2, 2], [2, 6], [0, 6]])
    d = to_numpy(sdf.polygon(f32([[4, 4], [1, 1], [4, 1]]), ell))
    np.testing.assert_allclose(d, [2.0, -1.0, -1.0], atol=1e-6)
    # Collinear vertices: zero area, nothing inside, distance to the segment.
    line = f32([[0, 0], [2, 0], [4, 0]])
    np.testing.assert_allclose(to_numpy(sdf.polygon(f32([[2, 3], [2, 0]]), line)), [3.0, 0.0], atol=1e-6)
    # Repeated vertices change nothing.
    rep = f32([[0, 0], [4, 0], [4, 0], [4, 4], [0, 4], [0, 0]])
    np.testing.assert_allclose(to_numpy(sdf.polygon(p, rep)), expected, atol=1e-6)


def test_ellipse_circle_and_axes():
    q = grid(12).reshape(-1, 2)
    np.testing.assert_allclose(
        to_numpy(sdf.ellipse(q, f32([5, 6]), f32([4, 4]), 1.0)),
        to_numpy(sdf.disk(q, f32([5, 6]), 4.0)),
        atol=1e-5,
    )
    p = f32([[0, 0], [10, 0], [0, 5], [0, 1]])
    np.testing.assert_allclose(to_numpy(sdf.ellipse(p, f32([0, 0]), f32([6, 2]))), [-2, 4, 3, -1], atol=1e-5)
    # Zero radius: a segment, nothing inside; both zero: a point.
    np.testing.assert_allclose(to_numpy(sdf.ellipse(p, f32([0, 0]), f32([6, 0]))), [0, 4, 5, 1], atol=1e-5)
    np.testing.assert_allclose(to_numpy(sdf.ellipse(p, f32([0, 0]), f32([0, 0]))), [0, 10, 5, 1], atol=1e-5)


def test_bezier_straight_equals_segment():
    q = grid(16).reshape(-1, 2)
    a, b = f32([2, 3]), f32([12, 9])
    np.testing.assert_allclose(
        to_numpy(sdf.bezier(q, a, (a + b) / 2, b, 1.5)), to_numpy(sdf.segment(q, a, b, 1.5)), atol=1e-4
    )
    # Coincident control points: a disk.
    np.testing.assert_allclose(
        to_numpy(sdf.bezier(q, a, a, a, 2.0)), to_numpy(sdf.disk(q, a, 2.0)), atol=1e-5
    )


def test_broadcasting_like_numpy():
    b, h = 3, 8
    pts = grid(h)[None]  # (1, H, W, 2)
    rng = np.random.default_rng(0)
    centers = f32(rng.uniform(2, 6, (b, 1, 1, 2)))
    d = to_numpy(sdf.disk(pts, centers, f32(rng.uniform(1, 3, (b, 1, 1)))))
    assert d.shape == (b, h, h)
    verts = f32(rng.uniform(0, 8, (b, 1, 1, 5, 2)))
    assert to_numpy(sdf.polygon(pts, verts)).shape == (b, h, h)
    assert to_numpy(sdf.ellipse(pts, centers, f32(np.ones((b, 1, 1, 2))), f32(np.zeros((b, 1, 1))))).shape == (b, h, h)


def test_jit_matches_eager():
    q = grid(10)
    v = f32([[1, 1], [8, 2], [5, 9]])
    fn = lambda p, v: sdf.polygon(p, v) + sdf.bezier(p, v[0], v[1], v[2], 1.0) + sdf.ellipse(p, v[0], v[1], 0.3)
    np.testing.assert_allclose(to_numpy(jit(fn)(q, v)), to_numpy(fn(q, v)), atol=1e-4)


# ------------------------------------------------ independent references


def _agreement(masks, ours, distances):
    """Fraction of agreeing pixels; and every disagreement is within 1 px of our boundary."""
    disagree = masks != ours
    far = disagree & (np.abs(distances) > 1.0)
    return 1.0 - disagree.mean(), int(far.sum())


H = 40


def _shapes(kind, count, rng):
    """Random shapes, their skimage masks (count, H, H), our signed distances."""
    q = grid(H)[None]
    masks = np.zeros((count, H, H), bool)
    if kind == "disk":
        c = rng.uniform(-5, H + 5, (count, 2))
        r = rng.uniform(0.5, 15, count)
        for k in range(count):
            masks[k][draw.disk(tuple(c[k]), r[k], shape=(H, H))] = True
        d = sdf.disk(q, f32(c[:, None, None]), f32(r[:, None, None]))
    elif kind == "ellipse":
        c = rng.uniform(5, H - 5, (count, 2))
        radii = rng.uniform(1.5, 15, (count, 2))
        angle = rng.uniform(-math.pi, math.pi, count)
        for k in range(count):
            rr, cc = draw.ellipse(c[k, 0], c[k, 1], radii[k, 0], radii[k, 1], shape=(H, H), rotation=angle[k])
            masks[k][rr, cc] = True
        d = sdf.ellipse(q, f32(c[:, None, None]), f32(radii[:, None, None]), f32(angle[:, None, None]))
    elif kind == "polygon":
        # Random star-shaped polygons (simple, often non-convex), 3 to 9 vertices.
        n = int(rng.integers(3, 10))
        ang = np.sort(rng.uniform(0, 2 * math.pi, (count, n)), axis=1)
        rad = rng.uniform(3, 18, (count, n))
        c = rng.uniform(10, H - 10, (count, 1, 2))
        v = c + rad[..., None] * np.stack([np.cos(ang), np.sin(ang)], -1)
        for k in range(count):
            rr, cc = draw.polygon(v[k, :, 0], v[k, :, 1], shape=(H, H))
            masks[k][rr, cc] = True
        d = sdf.polygon(q, f32(v[:, None, None]))
    elif kind == "box":
        c = rng.uniform(5, H - 5, (count, 2))
        half = rng.uniform(1, 12, (count, 2))
        angle = rng.uniform(-math.pi, math.pi, count)
        u = np.stack([np.cos(angle), np.sin(angle)], -1)
        w = np.stack([-np.sin(angle), np.cos(angle)], -1)
        corners = np.stack([c + sa * half[:, :1] * u + sb * half[:, 1:] * w
                            for sa, sb in ((1, 1), (-1, 1), (-1, -1), (1, -1))], axis=1)
        for k in range(count):
            rr, cc = draw.polygon(corners[k, :, 0], corners[k, :, 1], shape=(H, H))
            masks[k][rr, cc] = True
        d = sdf.box(q, f32(c[:, None, None]), f32(half[:, None, None]), f32(angle[:, None, None]))
    return masks, to_numpy(d)


@pytest.mark.parametrize("kind", ["disk", "ellipse", "polygon", "box"])
def test_threshold_agrees_with_skimage(kind):
    rng = np.random.default_rng({"disk": 1, "ellipse": 2, "polygon": 3, "box": 4}[kind])
    masks, d = [], []
    for _ in range(2):  # polygons: a new vertex count each round
        m, dd = _shapes(kind, 100, rng)
        masks.append(m)
        d.append(dd)
    masks, d = np.concatenate(masks), np.concatenate(d)
    agree, far = _agreement(masks, d < 0, d)
    assert agree >= 0.995, f"{kind}: only {agree:.4%} of pixels agree with skimage.draw"
    assert far == 0, f"{kind}: {far} disagreements more than 1 px from the boundary"


def test_ellipse_matches_brute_force_distance():
    # float64 reference: dense sampling of the boundary, refined by golden section.
    rng = np.random.default_rng(5)
    for aspect in (1.0, 3.0, 12.0, 50.0):
        a = rng.uniform(5, 20)
        radii = np.array([a, a / aspect])[:: rng.choice([1, -1])]
        p = rng.uniform(-25, 25, (40, 2))
        d = to_numpy(sdf.ellipse(p, np.zeros(2), radii, 0.0))
        t = np.linspace(0, 2 * np.pi, 20001)
        curve = np.stack([radii[0] * np.cos(t), radii[1] * np.sin(t)], -1)
        ref = np.linalg.norm(p[:, None] - curve[None], axis=-1).min(axis=1)
        inside = (p[:, 0] / radii[0]) ** 2 + (p[:, 1] / radii[1]) ** 2 < 1
        ref = np.where(inside, -ref, ref)
        np.testing.assert_array_equal(np.sign(d), np.sign(ref))
        # Never closer than the truth (the magnitude is a distance to a boundary
        # point), and within 1e-3 relative (the sampled reference is itself ~1e-5 px coarse).
        assert np.all(np.abs(d) >= np.abs(ref) - 1e-4)
        assert np.all(np.abs(d - ref) <= 1e-3 * np.maximum(np.abs(ref), 1.0)), aspect
    # float32, up to degenerate aspect ratios.
    for aspect in (10.0, 100.0, 1e4, np.inf):
        radii = np.float32([12.0, 12.0 / aspect])
        p = rng.uniform(-25, 25, (60, 2)).astype(np.float32)
        p[:20, 1] *= 0.05  # near the long axis, where thin ellipses are hard
        d = to_numpy(sdf.ellipse(p, np.zeros(2, np.float32), radii, 0.0))
        t = np.linspace(0, 2 * np.pi, 40001)
        curve = np.stack([radii[0] * np.cos(t), radii[1] * np.sin(t)], -1)
        ref = np.linalg.norm(p[:, None] - curve[None], axis=-1).min(axis=1)
        inside = (p[:, 0] / radii[0]) ** 2 + (p[:, 1] / max(float(radii[1]), 1e-30)) ** 2 < 1
        ref = np.where(inside, -ref, ref)
        assert np.all(np.abs(d - ref) <= 3e-3 * np.maximum(np.abs(ref), 1.0)), aspect


def test_ellipse_far_points_and_tiny_radii():
    """Up to 1e9 px from radii down to 1e-30 (the iteration is scaled per shape, far points moved
    along their ray to sdf.ELLIPSE_FAR radii): float32 distances exact to rounding, finite gradients
    along p minus its nearest boundary point, the same distances in the component kernel Render uses."""
    rng = np.random.default_rng(11)
    angles = rng.uniform(0, 2 * np.pi, 16)
    ray = np.stack([np.cos(angles), np.sin(angles)], -1)
    angle = 0.3
    u = np.array([np.cos(angle), np.sin(angle)])
    t = np.linspace(0, 2 * np.pi, 20001)[:, None]
    for radii in ([3.0, 1.0], [1e-30, 5e-31], [2e-3, 0.0]):
        curve = radii[0] * np.cos(t) * u + radii[1] * np.sin(t) * np.array([-u[1], u[0]])
        for dist in (1e3, 1e7, 1e9):
            p = (dist * ray).astype(np.float32)
            fn = lambda q: sdf.ellipse(q, np.zeros(2, np.float32), np.float32(radii), np.float32(angle))
            d = to_numpy(fn(p))
            _, (g,) = value_and_grad(lambda q: ops.sum(fn(q)), p)
            offsets = p.astype(np.float64)[:, None] - curve[None]
            lengths = np.linalg.norm(offsets, axis=-1)
            ref = lengths.min(axis=1)
            nearest = offsets[np.arange(len(p)), lengths.argmin(axis=1)]  # p - f
            np.testing.assert_allclose(d, ref, rtol=1e-6, err_msg=f"radii={radii}, distance={dist}")
            assert np.all(np.isfinite(g))
            np.testing.assert_allclose(g, nearest / ref[:, None], atol=1e-5, err_msg=f"radii={radii}")
            kernel = kernels.EllipseKernel(1, 1)
            params = [-p[:, 0], -p[:, 1]] + [np.full(len(p), v) for v in (*radii, u[0], u[1])]  # pixel (0, 0) at p
            params = [ops.convert_to_tensor(f32(v).reshape(-1, 1, 1, 1)) for v in params]
            dk, _ = kernel.forward(*params)
            np.testing.assert_allclose(to_numpy(dk).ravel(), ref, rtol=1e-6)


def test_polygon_matches_brute_force_distance():
    rng = np.random.default_rng(6)
    t = np.linspace(0, 1, 20001)[:, None]
    for _ in range(8):
        p = rng.uniform(-30, 30, (50, 2))
        # Polygon magnitude: distance to the nearest of its edges.
        v = rng.uniform(-20, 20, (5, 2))
        dp = np.abs(to_numpy(sdf.polygon(p, v)))
        edges = [v[k] + t * (v[(k + 1) % 5] - v[k]) for k in range(5)]
        refp = np.min([np.linalg.norm(p[:, None] - e[None], axis=-1).min(axis=1) for e in edges], axis=0)
        np.testing.assert_allclose(dp, refp, atol=2e-3)


def bezier_distance_reference(points, p0, p1, p2):
    """Distance from each of ``points`` (N, 2) to the quadratic Bézier curve, in float64, independently.

    The nearest parameter is an end (t = 0, 1) or a root of the cubic ``(B(t) - p) . B'(t) / 2 =
    |A|^2 t^3 + 3 A.C t^2 + (2 |C|^2 + A.r) t + C.r`` (``A = p0 - 2 p1 + p2``, ``C = p1 - p0``, ``r = p0 - p``):
    all three roots by numpy.roots (eigenvalues of the companion matrix; a complex pair's real part is kept
    as a candidate too, so a near-double root is never lost), each polished by 3 Newton steps and clipped
    to [0, 1]; the distance is the least over the candidates.
    """
    p0, p1, p2 = (np.asarray(v, np.float64) for v in (p0, p1, p2))
    A, C = p0 - 2 * p1 + p2, p1 - p0
    out = []
    for p in np.asarray(points, np.float64):
        r = p0 - p
        cubic = [A @ A, 3 * (A @ C), 2 * (C @ C) + A @ r, C @ r]
        candidates = [0.0, 1.0] + [float(np.clip(z.real, 0, 1)) for z in np.roots(np.trim_zeros(cubic, "f") or [1])]
        best = np.inf
        for t in candidates:
            for _ in range(3):
                v, d = A * t * t + 2 * C * t + r, A * t + C
                h = 2 * (d @ d) + v @ A
                if h > 0:
                    t = float(np.clip(t - (v @ d) / h, 0.0, 1.0))
            best = min(best, np.linalg.norm(A * t * t + 2 * C * t + r))
        out.append(best)
    return np.array(out)


def _bezier_cases(seed, curves=8, points=50):
    """Curves with control points in [-20, 20]^2; points uniform in [-30, 30]^2 (the README's claim's setting)."""
    rng = np.random.default_rng(seed)
    return [(rng.uniform(-20, 20, (3, 2)), rng.uniform(-30, 30, (points, 2))) for _ in range(curves)]


def test_bezier_reference_agrees_with_dense_sampling():
    """The reference itself, against 200001 samples of the curve refined by Brent's method (scipy)."""
    from scipy.optimize import minimize_scalar

    t = np.linspace(0, 1, 200001)
    for c, p in _bezier_cases(seed=16, curves=3, points=20):
        curve = (1 - t)[:, None] ** 2 * c[0] + (2 * t * (1 - t))[:, None] * c[1] + (t * t)[:, None] * c[2]
        for q, want in zip(p, bezier_distance_reference(p, *c)):
            k = np.argmin(((curve - q) ** 2).sum(1))
            lo, hi = t[max(k - 1, 0)], t[min(k + 1, t.size - 1)]
            squared = lambda s: float((((1 - s) ** 2 * c[0] + 2 * s * (1 - s) * c[1] + s * s * c[2] - q) ** 2).sum())  # noqa: E731
            found = minimize_scalar(squared, bounds=(lo, hi), method="bounded", options={"xatol": 1e-12})
            assert abs(np.sqrt(min(found.fun, squared(t[k]))) - want) < 1e-9, (c, q)


def test_bezier_distance_is_exact_to_1e_6_px_float64(float64):
    """README: "exact to ~1e-6 px". Against the roots of the cubic, in float64, for points anywhere."""
    cases = _bezier_cases(seed=6)
    points, controls = np.concatenate([p for _, p in cases]), np.concatenate([[c] * len(p) for c, p in cases])
    d = to_numpy(sdf.bezier(points, controls[:, 0], controls[:, 1], controls[:, 2], 0.0))  # one call: one trace
    assert d.dtype == np.float64
    ref = np.concatenate([bezier_distance_reference(p, *c) for c, p in cases])
    np.testing.assert_allclose(d, ref, rtol=0, atol=1e-6)


def test_bezier_distance_float32_to_float32_rounding():
    """float32 inputs: the error is the rounding of coordinates of size ~30 (eps * 30 = 4e-6 px), a few times."""
    cases = [(f32(c), f32(p)) for c, p in _bezier_cases(seed=7)]
    points, controls = np.concatenate([p for _, p in cases]), np.concatenate([[c] * len(p) for c, p in cases])
    d = to_numpy(sdf.bezier(points, controls[:, 0], controls[:, 1], controls[:, 2], 0.0))
    assert d.dtype == np.float32
    # the reference on the float32-rounded inputs: only the arithmetic's error is measured
    ref = np.concatenate([bezier_distance_reference(p, *c) for c, p in cases])
    np.testing.assert_allclose(d, ref, rtol=0, atol=2e-5)


# Points near the evolute of a tight bend (near the centre of curvature of the nearest point), found by a
# hunt against bezier_distance_reference: the safeguarded Newton iteration crawls there (the cubic is
# nearly flat on its way to the root), and 8 steps end up to 0.16 px from the minimum; 20 steps reach 1e-13.
_BEZIER_HARD = [
    # (p0, p1, p2, point)
    ([-2.28988361, -0.68301683], [15.77202847, -19.96202919], [-7.89128942, 7.92968949], [5.44541039, -8.60008761]),
]


@pytest.mark.xfail(strict=True, reason="known: sdf._BEZIER_NEWTON = 8 steps stop short near a tight bend's "
                   "evolute (up to 0.16 px, float64); 20 steps meet the claim")
def test_bezier_distance_is_exact_near_the_evolute_of_a_tight_bend_float64(float64):
    for *c, p in _BEZIER_HARD:
        d = to_numpy(sdf.bezier(np.array([p]), *(np.array(v) for v in c), 0.0))
        np.testing.assert_allclose(d, bezier_distance_reference([p], *c), rtol=0, atol=1e-6)


def _points(n, seed, low=-6.0, high=6.0):
    return np.random.default_rng(seed).uniform(low, high, (n, 2))


PRIMITIVE_CASES = {
    "disk": (lambda p, c, r: sdf.disk(p, c, r), [[0.3, -0.2], 3.1]),
    "ellipse": (lambda p, c, r, a: sdf.ellipse(p, c, r, a), [[0.3, -0.2], [4.2, 2.1], 0.4]),
    "box": (lambda p, c, h, a, r: sdf.box(p, c, h, a, r), [[0.3, -0.2], [3.3, 2.2], 0.4, 0.7]),
    "polygon": (lambda p, v: sdf.polygon(p, v), [[[-3.1, -2.0], [3.3, -2.5], [0.2, -0.1], [2.9, 3.0], [-2.7, 2.6]]]),
    "segment": (lambda p, a, b, w: sdf.segment(p, a, b, w), [[-3.0, 1.0], [2.5, -2.0], 0.8]),
    "bezier": (lambda p, a, b, c, w: sdf.bezier(p, a, b, c, w), [[-4.0, 1.0], [0.5, 6.0], [3.5, -2.0], 0.8]),
    "cone": (lambda p, a, d, s: sdf.cone(p, a, d, s), [[0.3, -0.2], [1.0, 0.5], 0.6]),
}


@pytest.mark.parametrize("kind", sorted(PRIMITIVE_CASES))
def test_gradients_match_finite_differences(kind, float64):
    fn, params = PRIMITIVE_CASES[kind]
    points = _points(24, seed=len(kind))
    check_gradients(lambda *xs: ops.sum(fn(*xs)), [points] + params, samples=8)


def _boundary_gradient(fn, point):
    _, (g,) = value_and_grad(lambda p: ops.sum(fn(p)), np.asarray(point, np.float64))
    return g


def test_gradient_on_the_boundary_is_the_outward_normal(float64):
    # Pixels exactly on an edge: a naive |q| has gradient 0/0 (or 0) there.
    box = lambda p: sdf.box(p, np.zeros(2), np.array([2.0, 3.0]), 0.0)
    np.testing.assert_allclose(_boundary_gradient(box, [2.0, 1.0]), [1.0, 0.0], atol=1e-12)
    np.testing.assert_allclose(_boundary_gradient(box, [-1.0, -3.0]), [0.0, -1.0], atol=1e-12)
    square = np.array([[0.0, 0.0], [4.0, 0.0], [4.0, 4.0], [0.0, 4.0]])
    for verts in (square, square[::-1]):
        poly = lambda p, v=verts: sdf.polygon(p, v)
        np.testing.assert_allclose(_boundary_gradient(poly, [4.0, 1.0]), [1.0, 0.0], atol=1e-12)
        np.testing.assert_allclose(_boundary_gradient(poly, [2.0, 0.0]), [0.0, -1.0], atol=1e-12)
    ell = lambda p: sdf.ellipse(p, np.zeros(2), np.array([4.0, 2.0]), 0.0)
    np.testing.assert_allclose(_boundary_gradient(ell, [0.0, 2.0]), [0.0, 1.0], atol=1e-6)
    np.testing.assert_allclose(_boundary_gradient(ell, [-4.0, 0.0]), [-1.0, 0.0], atol=1e-6)


def test_gradient_at_centre_and_on_centre_line_is_zero(float64):
    g = _boundary_gradient(lambda p: sdf.disk(p, np.zeros(2), 3.0), [0.0, 0.0])
    np.testing.assert_array_equal(g, [0.0, 0.0])
    g = _boundary_gradient(lambda p: sdf.segment(p, np.zeros(2), np.array([0.0, 4.0]), 1.0), [0.0, 2.0])
    np.testing.assert_array_equal(g, [0.0, 0.0])


# --------------------------------------------- hypothesis: NaN/Inf hunts


def _vec(**kw):
    return adversarial_array((2,), **kw)


def _scalar(**kw):
    return adversarial(**kw).map(np.float32)


# Points: a few adversarial ones plus, when asked, exact copies of the shape's
# own special points (centre, vertex, end, apex) so the hazards are hit exactly.
@st.composite
def _case(draw_, kind):
    pts = draw_(adversarial_array((3, 2)))
    if kind == "disk":
        params = [draw_(_vec()), draw_(_scalar())]
        special = [params[0]]
    elif kind == "ellipse":
        params = [draw_(_vec()), draw_(_vec()), draw_(_scalar(low=-1e4, high=1e4))]
        special = [params[0], params[0] + np.float32([params[1][0], 0])]
    elif kind == "box":
        params = [draw_(_vec()), draw_(_vec()), draw_(_scalar(low=-1e4, high=1e4)), draw_(_scalar())]
        special = [params[0], params[0] + params[1]]
    elif kind == "polygon":
        v = draw_(adversarial_array((4, 2)))
        if draw_(st.booleans()):  # collinear or repeated vertices
            v[2] = v[1] + (v[1] - v[0]) * draw_(st.sampled_from([0.0, 1.0, 2.0]))
        params = [v]
        special = [v[0], (v[0] + v[1]) / 2]
    elif kind == "segment":
        a = draw_(_vec())
        b = a if draw_(st.booleans()) else draw_(_vec())
        params = [a, b, draw_(_scalar())]
        special = [a, (a + b) / 2]
    elif kind == "bezier":
        a, c = draw_(_vec()), draw_(_vec())
        mid = draw_(st.sampled_from(["free", "collinear", "same"]))
        b = {"free": draw_(_vec()), "collinear": (a + c) / 2, "same": a}[mid]
        if mid == "same":
            c = a
        params = [a, b, c, draw_(_scalar())]
        special = [a, b]
    elif kind == "cone":
        # sdf.cone's gradient with respect to the axis is |p - apex| / |axis| in
        # size: the *true* value overflows float32 for |p| = 1e30 and |axis| = 1e-30
        # (Render reads axes below 1e-12 as zero). Bound the domain there.
        pts = draw_(adversarial_array((3, 2), low=-1e12, high=1e12))
        axis = draw_(adversarial_array((2,)).filter(lambda a: np.all((a == 0) | (np.abs(a) >= 1e-12))))
        params = [draw_(_vec(low=-1e12, high=1e12)), axis, draw_(_scalar(low=-10.0, high=10.0))]
        special = [params[0]]
    pts = np.concatenate([pts, np.asarray(special, np.float32).reshape(-1, 2)]).astype(np.float32)
    return pts, [np.asarray(x, np.float32) for x in params]


FUNCTIONS = {k: v[0] for k, v in PRIMITIVE_CASES.items()}


def _finite_case(kind, case):
    pts, params = case
    if kind not in _JITTED:  # compiled once, reused by every example
        fn = FUNCTIONS[kind]
        _JITTED[kind] = jit_for_many_calls(lambda *xs: ops.sum(fn(*xs) * 1e-6)), jit_for_many_calls(fn)
    total, values = _JITTED[kind]
    # Distances up to ~1e30 px: the sum is scaled so that it cannot overflow.
    value, grads = value_and_grad(total, pts, *params)
    assert_finite(f"{kind} value", value, to_numpy(values(pts, *params)))
    assert_finite(f"{kind} gradients", *grads)


_JITTED = {}


@pytest.mark.parametrize("kind", sorted(PRIMITIVE_CASES))
@given(data=st.data())
def test_property_values_and_gradients_finite(kind, data):
    _finite_case(kind, data.draw(_case(kind)))


@pytest.mark.parametrize("kind", sorted(PRIMITIVE_CASES))
def test_degenerate_sizes_finite(kind, float64):
    """Every special point at once, with zero sizes; float64 too."""
    fn, params = PRIMITIVE_CASES[kind]
    zeroed = [np.zeros_like(np.asarray(x, np.float32)) for x in params]
    pts = np.zeros((2, 2), np.float32)
    pts[1] = 1e-30
    for dtype in (np.float32, np.float64):
        args = [pts.astype(dtype)] + [x.astype(dtype) for x in zeroed]
        value, grads = value_and_grad(lambda *xs: ops.sum(fn(*xs)), *args)
        assert_finite(f"{kind} zero sizes", value, *grads)


# ------------------------------------------ kernels: Render's component form


def _kernel_params(kind, rng, batch=2, count=2, n=8):
    """Natural parameters ``(B, K, 1, 1)`` (float64) of random, non-degenerate shapes on an n x n image."""

    def u(*shape):
        return rng.uniform(*shape, (batch, count, 1, 1))

    if kind == "disk":
        return [u(1, n - 1), u(1, n - 1), u(1.5, n / 2)]
    angle = u(0, 2 * np.pi)
    if kind == "box":
        h0, h1 = u(1.5, n / 2), u(1.5, n / 2)
        return [u(2, n - 2), u(2, n - 2), h0, h1, np.cos(angle), np.sin(angle), 0.4 * np.minimum(h0, h1)]
    if kind == "ellipse":
        return [u(2, n - 2), u(2, n - 2), u(1.5, n / 2), u(1.5, n / 2), np.cos(angle), np.sin(angle)]
    # A star-shaped pentagon around a random centre (either orientation, convex or not).
    turns = np.sort(rng.uniform(0, 2 * np.pi, (batch, count, 1, 1, 5)), axis=-1) * rng.choice([-1, 1])
    radius = rng.uniform(1.5, n / 2, (batch, count, 1, 1, 5))
    c0, c1 = u(2, n - 2)[..., None], u(2, n - 2)[..., None]
    rows, cols = c0 + radius * np.cos(turns), c1 + radius * np.sin(turns)
    return [v[..., j] for j in range(5) for v in (rows, cols)]


def _kernel(kind, n):
    if kind == "polygon":
        return kernels.PolygonKernel(n, n, 5)
    return getattr(kernels, kind.capitalize() + "Kernel")(n, n)


def _reference(kind, n):
    """The same distance from the public, points-form function, ``(B, K, n, n)``."""
    g = ops.convert_to_tensor(grid(n).astype(np.float64))

    def pair(a, b):
        return ops.stack([a, b], axis=-1)

    if kind == "disk":
        return lambda c0, c1, r: sdf.disk(g, pair(c0, c1), r)
    if kind == "box":
        return lambda c0, c1, h0, h1, u0, u1, rc: sdf.box_on_axis(g, pair(c0, c1), pair(h0, h1), pair(u0, u1), rc)
    if kind == "ellipse":
        return lambda c0, c1, a, b, u0, u1: sdf.ellipse_on_axis(g, pair(c0, c1), pair(a, b), pair(u0, u1))
    return lambda *v: sdf.polygon(g, ops.stack([pair(v[2 * j], v[2 * j + 1]) for j in range(5)], axis=-2))


KERNELS = ("disk", "box", "ellipse", "polygon")


@pytest.mark.parametrize("kind", KERNELS)
def test_kernel_matches_the_distance_function_and_its_autodiff(kind, float64):
    """Same values, and the hand-written sum(w * d) gradient equals autodiff of the points form (float64)."""
    n = 8
    rng = np.random.default_rng(len(kind))
    params = _kernel_params(kind, rng, n=n)
    w = ops.convert_to_tensor(rng.normal(size=(2, 2, n, n)))
    kernel, ref = _kernel(kind, n), _reference(kind, n)
    tensors = [ops.convert_to_tensor(p) for p in params]
    d, saved = kernel.forward(*tensors)
    np.testing.assert_allclose(to_numpy(d), to_numpy(ref(*tensors)), rtol=1e-12, atol=1e-12)
    ours = kernel.backward(tensors, saved, d, w)
    _, expected = value_and_grad(lambda *xs: ops.sum(ref(*xs) * w), *params)
    for k, (a, b) in enumerate(zip(ours, expected)):
        np.testing.assert_allclose(to_numpy(a), b, rtol=1e-9, atol=1e-9, err_msg=f"{kind} parameter {k}")


@pytest.mark.parametrize("kind", KERNELS)
def test_kernel_on_row_blocks_is_the_kernel_on_those_rows(kind, float64):
    """``kernel.rows(a, b)`` draws rows a..b-1 of the image, and its terms are those rows' terms (float64)."""
    n = 8
    rng = np.random.default_rng(len(kind) + 2)
    params = [ops.convert_to_tensor(p) for p in _kernel_params(kind, rng, n=n)]
    w = ops.convert_to_tensor(rng.normal(size=(2, 2, n, n)))
    kernel = _kernel(kind, n)
    d, saved = kernel.forward(*params)
    whole = [to_numpy(t) for t in kernel.terms(params, saved, d, w)]
    for start, stop in ((0, 3), (3, 4), (4, 8), (2, 6)):
        block = kernel.rows(start, stop)
        assert block.pixels == (stop - start, n) and kernel.pixels == (n, n)
        d_block, saved_block = block.forward(*params)
        np.testing.assert_allclose(to_numpy(d_block), to_numpy(d)[..., start:stop, :], rtol=1e-12, atol=1e-12)
        part = tuple(s[..., start:stop, :] for s in saved)
        for k, t in enumerate(block.terms(params, part, d[..., start:stop, :], w[..., start:stop, :])):
            expected = np.broadcast_to(whole[k], to_numpy(d).shape)[..., start:stop, :]
            np.testing.assert_allclose(to_numpy(t), expected, rtol=1e-12, atol=1e-12, err_msg=f"{kind} term {k}")


@st.composite
def _kernel_case(draw_, kind, batch=8):
    """Adversarial parameters ``(batch, 1, 1, 1)`` within Render's range (|v| <= 1e13 px), hazards hit exactly."""
    arity = {"disk": 3, "box": 7, "ellipse": 6, "polygon": 8}[kind]
    x = draw_(adversarial_array((batch, arity), low=-1e13, high=1e13)).astype(np.float32)
    if kind in ("box", "ellipse"):  # a unit axis, as Render passes it (a zero one is (1, 0))
        u = x[:, 4:6].astype(np.float64)
        norm = np.hypot(u[:, 0], u[:, 1])
        ok = np.isfinite(norm) & (norm > 1e-30)
        x[:, 4:6] = np.where(ok[:, None], u / np.where(ok, norm, 1.0)[:, None], [1.0, 0.0])
        x[:, 2:4] = np.abs(x[:, 2:4])
        if kind == "box":
            x[:, 6] = np.minimum(np.abs(x[:, 6]), x[:, 2:4].min(axis=1))
    elif kind == "disk":
        x[:, 2] = np.abs(x[:, 2])
    how = draw_(st.sampled_from(["free", "on a pixel", "zero sizes", "repeated vertices"]))
    if how == "on a pixel":  # centre or first vertex exactly on a pixel
        x[:, 0:2] = draw_(st.sampled_from([0.0, 1.0, 3.0]))
    elif how == "zero sizes" and kind != "polygon":
        x[:, 2:4 if kind != "disk" else 3] = 0.0
        if kind == "box":
            x[:, 6] = 0.0
    elif how == "repeated vertices" and kind == "polygon":
        x[:, 2:4] = x[:, 0:2]
        x[:, 4:6] = x[:, 0:2] + draw_(st.sampled_from([0.0, 1.0, 2.0])) * (x[:, 2:4] - x[:, 0:2])
    return [x[:, k, None, None, None] for k in range(arity)]


_KERNEL_JITTED = {}


@pytest.mark.parametrize("kind", KERNELS)
@given(data=st.data())
def test_property_kernel_values_and_gradients_finite(kind, data):
    """Render's fast path (raster.shape_alpha over each kernel): finite coverage and gradients on degenerate input."""
    n = 6
    if kind not in _KERNEL_JITTED:
        kernel = kernels.PolygonKernel(n, n, 4) if kind == "polygon" else _kernel(kind, n)

        def total(*args):
            params, opacity = args[:-1], args[-1]
            d, _ = kernel.forward(*params)
            alpha = raster.shape_alpha(kernel, params, opacity, ops.convert_to_tensor(1.0, opacity.dtype))
            return ops.sum(alpha) + ops.sum(ops.where(ops.abs(d) < 1e30, 0.0, 1.0))

        _KERNEL_JITTED[kind] = jit_for_many_calls(total)
    params = data.draw(_kernel_case(kind))
    opacity = np.ones_like(params[0])
    value, grads = value_and_grad(_KERNEL_JITTED[kind], *params, opacity)
    assert_finite(f"{kind} kernel value", value)
    assert float(value) < 1e30, f"{kind} kernel: a non-finite distance"
    assert_finite(f"{kind} kernel gradients", *grads)
