"""The signed distances of :mod:`shapegrad.render.sdf` in component form, with hand-written gradients.

``shapegrad.Render`` evaluates every shape at every pixel of every image, so
its cost is the per-pixel arithmetic. The functions of :mod:`~shapegrad.render.sdf` take points
``(..., 2)``: general and exact for inputs up to 1e+-38, but every
intermediate carries a trailing axis of size 2 (or V x 2), which XLA on CPU
neither vectorises nor fuses well, and plain autodiff keeps about ten such
maps per shape for the backward pass. A kernel computes the same distance
on separate row and column maps ``(B, K, H, W)`` from parameters
``(B, K, 1, 1)`` and gives the gradient of ``sum(w * d)`` with respect to
each parameter directly (the envelope rule of the functions of :mod:`~shapegrad.render.sdf`: nearest
points and edges held fixed), as sums over the pixels. The Render layer
wraps a kernel with the coverage and opacity in one custom gradient
(:func:`shapegrad.render.raster.shape_alpha`).

The pixel maps are made inside (not passed in) so that a kernel can run inside
a custom gradient, which on JAX may not close over traced values.

Range: parameters as the Render layer passes them (clipped to 1e12 image
sizes, so offsets below about 1e15 px), where squares of offsets neither
overflow float32 nor need the rescaling of the functions of :mod:`~shapegrad.render.sdf`. Below
1e-19 px (squares under the smallest normal float32) an offset counts as
zero: the point is on the boundary (or the centre), with the gradient given
there by the documented fallback (outward normal, or 0 at a centre).
"""

import copy

import keras
from keras import ops

from shapegrad.ops import numerics
from shapegrad.render import sdf

__all__ = ["BoxKernel", "DiskKernel", "EllipseKernel", "PolygonKernel", "SUM_BLOCKS", "fold_rows", "pixel_sum", "row_blocks"]


def pixel_sum(x):
    """Sum over the two pixel axes, kept: ``(B, K, H, W)`` -> ``(B, K, 1, 1)``."""
    return ops.sum(x, axis=(-2, -1), keepdims=True)


# Row blocks that the pixel sums of a hand-written backward pass are folded into, per backend
# (Cones: shapegrad.render.cones; Render: shapegrad.render.raster.shape_alpha); 1 (no folding)
# elsewhere. The image is cut into equal row blocks whose per-pixel terms are computed per block
# (offsets recomputed from the block's rows) and added elementwise before one sum: the same sum
# in another order. TensorFlow's XLA on CPU writes every summed map to memory and reduces it in a
# separate pass, so folded only a map of one block per sum is written. 4 blocks are faster there
# for Cones and for Render's disk, box and triangle, slower for the ellipse (so
# EllipseKernel.fold_rows is False) and on JAX; PyTorch is indifferent (benchmarks/results.md).
SUM_BLOCKS = {"tensorflow": 4}


def row_blocks(height, table=None):
    """How many equal row blocks the pixel sums of an image of ``height`` rows are folded into.

    ``table``: blocks wanted per backend (default :data:`SUM_BLOCKS`); the most that divide ``height``.
    """
    want = (SUM_BLOCKS if table is None else table).get(keras.backend.backend(), 1)
    return max(b for b in range(1, want + 1) if height % b == 0)


def fold_rows(height, blocks, block_terms):
    """Per-pixel term maps of ``blocks`` equal row blocks of an image, added elementwise.

    ``block_terms(start, stop)`` gives a tuple of maps for rows ``start, ..., stop - 1``;
    the result is the same tuple for one block's rows, the blocks added (see
    :data:`SUM_BLOCKS`). Its pixel sums are those of the whole image's terms.
    """
    rows = height // blocks
    totals = None
    for b in range(blocks):
        terms = block_terms(b * rows, (b + 1) * rows)
        totals = terms if totals is None else tuple(t + u for t, u in zip(totals, terms))
    return totals


def _offsets(pixels, c0, c1, first_row=0):
    """``p - c`` as two maps: the row and column offsets of every pixel from ``c``.

    ``pixels`` is ``(height, width)``; the rows are ``first_row, ..., first_row + height - 1``.
    """
    height, width = pixels
    rows = ops.cast(ops.arange(first_row, first_row + height), c0.dtype)[:, None]
    cols = ops.cast(ops.arange(width), c0.dtype)[None, :]
    return rows - c0, cols - c1


def _local(r0, r1, u0, u1):
    """Coordinates in the frame of the unit axis ``u`` (as :func:`_to_local`), from component maps."""
    return r0 * u0 + r1 * u1, r1 * u0 - r0 * u1


def _frame_terms(w, r0, r1, gx, gy):
    """The four per-pixel terms whose sums :func:`_frame_gradients` turns into gradients."""
    wx, wy = w * gx, w * gy
    return wx, wy, wx * r0 + wy * r1, wx * r1 - wy * r0


def _frame_gradients(sums, u0, u1):
    """Gradients with respect to ``c0, c1, u0, u1`` of ``sum(w * d)``, from the sums of :func:`_frame_terms`.

    ``gx, gy = dd/dx, dd/dy`` in the local frame.
    """
    sx, sy, su0, su1 = sums
    return -u0 * sx + u1 * sy, -u1 * sx - u0 * sy, su0, su1


class _Kernel:
    """What every component kernel shares: the pixel rows it covers and the backward pass from its terms.

    A kernel's backward pass is split in two: :meth:`terms` gives per-pixel maps
    ``(B, K, h, W)`` and :meth:`gradients` the parameters' gradients from their
    pixel sums ``(B, K, 1, 1)``; :meth:`backward` is the two together. A caller
    can instead run :meth:`terms` on row blocks (:meth:`rows`) and add the maps
    before summing (:func:`shapegrad.raster.shape_alpha` does on TensorFlow).
    """

    # Whether shape_alpha may fold this kernel's pixel sums over row blocks (row_blocks).
    fold_rows = True

    def __init__(self, height, width):
        self.pixels = (height, width)
        self.first_row = 0

    def rows(self, start, stop):
        """The same kernel on rows ``start, ..., stop - 1`` of its image only."""
        block = copy.copy(self)
        block.pixels = (stop - start, self.pixels[1])
        block.first_row = self.first_row + start
        return block

    def _offsets(self, c0, c1):
        return _offsets(self.pixels, c0, c1, self.first_row)

    def backward(self, params, saved, d, w):
        """Gradients of ``sum(w * d)`` with respect to each parameter, each ``(B, K, 1, 1)``."""
        return self.gradients(params, [pixel_sum(t) for t in self.terms(params, saved, d, w)])


class DiskKernel(_Kernel):
    """:func:`disk` in component form. Parameters ``(c0, c1, radius)``, the radius already >= 0.

    Gradient: ``-(r0, r1) / |r|`` for the centre (0 at the centre pixel), -1 for the radius.
    """

    arity = 3

    def forward(self, c0, c1, radius):
        r0, r1 = self._offsets(c0, c1)
        return ops.sqrt(r0 * r0 + r1 * r1) - radius, ()

    def terms(self, params, saved, d, w):
        c0, c1, _ = params
        r0, r1 = self._offsets(c0, c1)
        inv, _ = sdf.inverse_length(r0 * r0 + r1 * r1)
        wi = w * inv
        return wi * r0, wi * r1, w

    def gradients(self, params, sums):
        return tuple(-s for s in sums)


class BoxKernel(_Kernel):
    """:func:`sdf.box_on_axis` in component form. Parameters ``(c0, c1, h0, h1, u0, u1, corner)``.

    ``h >= 0``, ``u`` a unit vector, ``0 <= corner <= min(h0, h1)`` (as :func:`sdf.box_on_axis`
    clamps them). Where two edges are equally near (``q0 == q1``, the inner
    diagonals) the gradient follows axis 0.
    """

    arity = 7

    def _parts(self, c0, c1, h0, h1, u0, u1, rc):
        r0, r1 = self._offsets(c0, c1)
        x, y = _local(r0, r1, u0, u1)
        return (r0, r1, x, y) + sdf.box_excess(x, y, h0, h1, rc)

    def forward(self, *params):
        _, _, _, _, q0, q1, corner = self._parts(*params)
        return sdf.box_distance(q0, q1, corner, params[6], ops.sqrt(q0 * q0 + q1 * q1)), ()

    def terms(self, params, saved, d, w):
        r0, r1, x, y, q0, q1, corner = self._parts(*params)
        inv, _ = sdf.inverse_length(q0 * q0 + q1 * q1)
        first = ops.cast(q0 >= q1, w.dtype)
        a0 = ops.where(corner, q0 * inv, first)
        a1 = ops.where(corner, q1 * inv, 1.0 - first)
        return _frame_terms(w, r0, r1, a0 * ops.sign(x), a1 * ops.sign(y)) + (w * a0, w * a1, w)

    def gradients(self, params, sums):
        _, _, _, _, u0, u1, _ = params
        dc0, dc1, du0, du1 = _frame_gradients(sums[:4], u0, u1)
        dh0, dh1 = -sums[4], -sums[5]
        return dc0, dc1, dh0, dh1, du0, du1, -(dh0 + dh1) - sums[6]


class EllipseKernel(_Kernel):
    """:func:`sdf.ellipse_on_axis` in component form. Parameters ``(c0, c1, a, b, u0, u1)``, ``a, b >= 0``, ``u`` unit.

    The nearest point (the same four evolute steps) is kept for the backward
    pass (two maps per shape) rather than searched for again.
    """

    arity = 6
    # Not folded: on TensorFlow-XLA the row blocks of the kept nearest point made its backward
    # 1.4x slower (64 px, batch 32), where disk, box and polygon got 1.3x faster.
    fold_rows = False

    def _local(self, c0, c1, u0, u1):
        r0, r1 = self._offsets(c0, c1)
        x, y = _local(r0, r1, u0, u1)
        one = ops.ones_like(x)
        return r0, r1, x, y, ops.where(x < 0, -one, one), ops.where(y < 0, -one, one)

    def forward(self, c0, c1, a, b, u0, u1):
        _, _, x, y, sx, sy = self._local(c0, c1, u0, u1)
        tx, ty = sdf.ellipse_nearest_components(ops.abs(x), ops.abs(y), a, b)
        q0, q1 = x - sx * a * tx, y - sy * b * ty
        # Exact inside test on scaled values (as sdf.ellipse_on_axis): x^2 b^2 + y^2 a^2 < a^2 b^2.
        inv_s = sdf.inverse_scale(numerics.maximum(a, b))  # per shape: no division per pixel
        xn, yn = ops.clip(x * inv_s, -1e15, 1e15), ops.clip(y * inv_s, -1e15, 1e15)
        an, bn = a * inv_s, b * inv_s
        an2, bn2 = an * an, bn * bn
        inside = xn * xn * bn2 + yn * yn * an2 < an2 * bn2
        length = ops.sqrt(q0 * q0 + q1 * q1)
        return ops.where(inside, -length, length), (tx, ty)

    def terms(self, params, saved, d, w):
        c0, c1, a, b, u0, u1 = params
        tx, ty = saved
        r0, r1, x, y, sx, sy = self._local(c0, c1, u0, u1)
        q0, q1 = x - sx * a * tx, y - sy * b * ty
        ok = q0 * q0 + q1 * q1 >= numerics.tiny(q0)
        # The gradient direction: sign(d) q / |q|; on the boundary (q = 0) the outward normal,
        # along (x / a^2, y / b^2) ~ (b tx, a ty); (1, 0) if that is 0 too. One square root a
        # pixel: the vector is chosen first, then normalised.
        v0, v1 = ops.where(ok, q0, sx * b * tx), ops.where(ok, q1, sy * a * ty)
        inv, v_ok = sdf.inverse_length(v0 * v0 + v1 * v1)
        inv = ops.where(ok & (d < 0), -inv, inv)
        g0 = ops.where(v_ok, v0 * inv, ops.ones_like(v0))
        g1 = v1 * inv
        return _frame_terms(w, r0, r1, g0, g1) + (w * g0 * sx * tx, w * g1 * sy * ty)

    def gradients(self, params, sums):
        _, _, _, _, u0, u1 = params
        dc0, dc1, du0, du1 = _frame_gradients(sums[:4], u0, u1)
        return dc0, dc1, -sums[4], -sums[5], du0, du1


class PolygonKernel(_Kernel):
    """:func:`polygon` in component form. Parameters ``(v0_0, v1_0, v0_1, v1_1, ...)``: V vertices.

    Per edge the nearest point's parameter ``h`` (held fixed: envelope rule);
    the magnitude is the smallest edge distance, the sign the even-odd crossing
    test (comparisons only). The gradient goes to the two ends of the nearest
    edge, ``(1 - h)`` and ``h`` of it; where several edges are equally near, to
    the first of them (a subgradient: at a vertex shared by two edges the result is
    the same either way, and elsewhere such ties are a set of measure zero).
    """

    def __init__(self, height, width, vertices):
        super().__init__(height, width)
        self.vertices = vertices
        self.arity = 2 * vertices

    def _edges(self, params):
        """Per edge: the offsets (p - v) and the edge vector with 1 / |e|^2 (0 for a zero-length edge)."""
        n = self.vertices
        v = [(params[2 * j], params[2 * j + 1]) for j in range(n)]
        out = []
        for j in range(n):
            (a0, a1), (b0, b1) = v[j], v[(j + 1) % n]
            e0, e1 = b0 - a0, b1 - a1
            ee = e0 * e0 + e1 * e1
            ok = ee >= numerics.tiny(ee)
            inv_ee = ops.where(ok, 1.0 / ops.where(ok, ee, ops.ones_like(ee)), ops.zeros_like(ee))
            out.append(self._offsets(a0, a1) + (e0, e1, inv_ee))
        return out

    @staticmethod
    def _nearest(pv0, pv1, e0, e1, inv_ee):
        h = ops.clip((pv0 * e0 + pv1 * e1) * inv_ee, 0.0, 1.0)
        q0, q1 = pv0 - h * e0, pv1 - h * e1
        return h, q0, q1, q0 * q0 + q1 * q1

    def forward(self, *params):
        edges = self._edges(params)
        nearest = None
        inside = None
        for j, (pv0, pv1, e0, e1, inv_ee) in enumerate(edges):
            _, _, _, length2 = self._nearest(pv0, pv1, e0, e1, inv_ee)
            nearest = length2 if nearest is None else numerics.minimum(nearest, length2)
            # Edge v -> w crosses the ray {row > 0, col = 0} from p: it straddles col = 0
            # and cross(v - p, w - p) has the sign of w_col - v_col (that of w_col - p_col).
            qv0, qv1 = edges[(j + 1) % len(edges)][:2]
            below_v, below_w = pv1 < 0, qv1 < 0  # v_col > p_col, w_col > p_col
            cross = pv0 * qv1 - pv1 * qv0
            crossing = (below_v != below_w) & (cross != 0) & ((cross > 0) == below_w)
            inside = crossing if inside is None else ops.logical_xor(inside, crossing)
        length = ops.sqrt(nearest)
        return ops.where(inside, -length, length), ()

    def terms(self, params, saved, d, w):
        # Per pixel, the nearest edge (the first of equally near ones) is selected once, with its
        # h and offset q; each vertex then sums over its two edges' pixels. Measured (JAX jit, CPU,
        # 64 px, batch 64): 1.4x faster for one triangle and 3x for three than the per-edge sums,
        # which XLA recomputed from the whole geometry once per sum (12 sums for a triangle).
        edges = self._edges(params)
        nearest = h = q0 = q1 = index = None
        for j, edge in enumerate(edges):
            hj, q0j, q1j, length2 = self._nearest(*edge)
            if nearest is None:
                nearest, h, q0, q1, index = length2, hj, q0j, q1j, ops.zeros_like(length2)
                continue
            closer = length2 < nearest
            nearest = ops.where(closer, length2, nearest)
            h, q0, q1 = ops.where(closer, hj, h), ops.where(closer, q0j, q0), ops.where(closer, q1j, q1)
            index = ops.where(closer, float(j), index)
        # Outward normals of the edges, for pixels exactly on one (q = 0); orientation from the
        # shoelace area (translation-invariant, so computed on the vertices).
        n = self.vertices
        area = None
        for j in range(n):
            a0, a1 = params[2 * j], params[2 * j + 1]
            b0, b1 = params[(2 * j + 2) % (2 * n)], params[(2 * j + 3) % (2 * n)]
            term = a0 * b1 - a1 * b0
            area = term if area is None else area + term
        orient = ops.where(area < 0, -ops.ones_like(area), ops.ones_like(area))
        out0 = out1 = None
        for j, (_, _, e0, e1, _) in enumerate(edges):
            e_inv, _ = sdf.inverse_length(e0 * e0 + e1 * e1)
            n0, n1 = orient * e1 * e_inv, -orient * e0 * e_inv  # per shape, (B, K, 1, 1)
            if out0 is None:
                out0, out1 = ops.zeros_like(index) + n0, ops.zeros_like(index) + n1
            else:
                out0, out1 = ops.where(index == j, n0, out0), ops.where(index == j, n1, out1)
        # w sign(d) / |q| as w / d: one division a pixel (d = +-sqrt(nearest), from the forward pass).
        ok = nearest >= numerics.tiny(nearest)
        m = w / ops.where(ok, d, ops.ones_like(d))
        g0 = ops.where(ok, m * q0, w * out0)
        g1 = ops.where(ok, m * q1, w * out1)
        terms = ()
        for k in range(n):
            # Vertex k is the start of edge k (share 1 - h) and the end of edge k - 1 (share h).
            share = ops.where(index == k, 1.0 - h, 0.0) + ops.where(index == (k - 1) % n, h, 0.0)
            terms += (g0 * share, g1 * share)
        return terms

    def gradients(self, params, sums):
        return tuple(-s for s in sums)
