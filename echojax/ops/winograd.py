"""3x3 'SAME' stride-1 convolution by Winograd's minimal filtering F(2x2, 3x3) and
F(4x4, 3x3) (the latter at the end of this module: :func:`conv_same_winograd4`).

Lavin & Gray, "Fast Algorithms for Convolutional Neural Networks", CVPR 2016. The map is
cut into 2x2 output tiles; each reads a 4x4 input tile (tiles overlap by 2). With the
fixed matrices ``B^T`` (4x4), ``G`` (4x3) and ``A^T`` (2x4) below, one output tile is

    Y = A^T [ (G g G^T) * (B^T d B) ] A          (``*`` elementwise over the 4x4 grid)

so a layer becomes 16 independent ``[tiles, C] @ [C, O]`` matrix products (one per grid
position), 2.25x fewer multiplications than the direct 3x3 convolution, plus cheap
additions-only transforms. Both gradients stay in the Winograd domain:

    dM = A dY A^T (per tile)      dV = dM @ U^T      dx = overlap-add of B dV B^T
    dU = V^T @ dM                 dK = G^T dU G

All transform matrices hold only 0, +-1 and +-1/2, so float32 results stay within a
few ulps-times-sqrt(terms) of the direct convolution (tests compare to float64).
F(2x2) requires even ``H`` and ``W`` (whole 2x2 tiles), F(4x4) multiples of 4; F(4x4)'s
constants (up to 8 and 1/24) make its float32 error 5-10x larger (bench/README.md). Same
kernel layout (HWIO) as ``nnx.Conv``. Measurements against XLA's convolution are in
``bench/README.md``.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

# Kernel transform: U = G g G^T, [4, 3].
_G = np.array([[1.0, 0.0, 0.0], [0.5, 0.5, 0.5], [0.5, -0.5, 0.5], [0.0, 0.0, 1.0]])


def _check(x: jax.Array, kernel: jax.Array) -> None:
    if x.ndim != 4 or kernel.ndim != 4:
        raise ValueError(
            f"conv_same_winograd: expected x [B, H, W, C] and kernel [3, 3, C, O], got "
            f"{tuple(x.shape)} and {tuple(kernel.shape)}")
    if kernel.shape[:2] != (3, 3):
        raise ValueError(f"conv_same_winograd: kernel must be [3, 3, C, O], got {tuple(kernel.shape)}")
    if kernel.shape[2] != x.shape[3]:
        raise ValueError(
            f"conv_same_winograd: kernel input features {kernel.shape[2]} != x channels {x.shape[3]}")
    if x.shape[1] % 2 or x.shape[2] % 2:
        raise ValueError(
            f"conv_same_winograd: height and width must be even (whole 2x2 output tiles), "
            f"got {x.shape[1]}x{x.shape[2]}")


def _bt(d0, d1, d2, d3):
    """Rows of ``B^T d`` for the four stacked inputs ``d0..d3``."""
    return d0 - d2, d1 + d2, d2 - d1, d1 - d3


def _bt_adjoint(v0, v1, v2, v3):
    """``B v``: the adjoint of :func:`_bt`."""
    return v0, v1 - v2 + v3, v1 + v2 - v0, -v3


# Output transform A^T, [2, 4]; ``_AA[4 a + b, 2 r + s] = A[a, r] A[b, s]``.
_AT = np.array([[1.0, 1.0, 1.0, 0.0], [0.0, 1.0, -1.0, -1.0]])
_AA = np.kron(_AT.T, _AT.T)


def _input_transform(x: jax.Array) -> jax.Array:
    """``[B, H, W, C] -> V [16, B * H/2 * W/2, C]`` (index ``4 a + b`` is grid position
    ``(a, b)`` of ``B^T d B``; tiles in (b, i, j) order)."""
    b, h, w, c = x.shape
    th, tw = h // 2, w // 2
    # Padded map as [B, th+1, 2, tw+1, 2, C]: tile row i reads padded rows 2i..2i+3,
    # i.e. (i, 0), (i, 1), (i+1, 0), (i+1, 1): unit-stride slices, no strided gathers.
    xp = jnp.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0))).reshape(b, th + 1, 2, tw + 1, 2, c)
    rows = jnp.stack(_bt(xp[:, :th, 0], xp[:, :th, 1], xp[:, 1:, 0], xp[:, 1:, 1]))
    # Materialise the row transform (4x the input) before the column one: one fusion of
    # both (16 outputs from strided reads) ran 1.5x slower on XLA:CPU.
    rows = lax.optimization_barrier(rows)                             # [4, B, th, tw+1, 2, C]
    v = jnp.stack(_bt(rows[:, :, :, :tw, 0], rows[:, :, :, :tw, 1],
                      rows[:, :, :, 1:, 0], rows[:, :, :, 1:, 1]), axis=1)
    return v.reshape(16, b * th * tw, c)


def _input_transform_adjoint(dv: jax.Array, shape) -> jax.Array:
    """Adjoint of :func:`_input_transform`: ``[16, P, C] -> [B, H, W, C]`` (overlapping
    tiles add up)."""
    b, h, w, c = shape
    th, tw = h // 2, w // 2
    dv = dv.reshape(4, 4, b, th, tw, c)

    def overlap_add(t0, t1, t2, t3, axis):
        # Tile i writes offsets 0..3 at padded positions 2i..2i+3: even positions get
        # t0[i] + t2[i-1], odd ones t1[i] + t3[i-1]; then drop the padding (first and
        # last position).
        pad_end = [(0, 0)] * t0.ndim
        pad_start = [(0, 0)] * t0.ndim
        pad_end[axis], pad_start[axis] = (0, 1), (1, 0)
        even = jnp.pad(t0, pad_end) + jnp.pad(t2, pad_start)
        odd = jnp.pad(t1, pad_end) + jnp.pad(t3, pad_start)
        full = jnp.stack([even, odd], axis=axis + 1)
        shape_ = list(t0.shape)
        shape_[axis] = 2 * (t0.shape[axis] + 1)
        full = full.reshape(shape_)
        return lax.slice_in_dim(full, 1, shape_[axis] - 1, axis=axis)

    cols = [overlap_add(*_bt_adjoint(*(dv[a, k] for k in range(4))), axis=2) for a in range(4)]
    return overlap_add(*_bt_adjoint(*cols), axis=1)


def _output_transform(m: jax.Array, shape) -> jax.Array:
    """``M [16, P, O] -> Y [B, H, W, O]`` with ``Y = A^T M A`` per tile."""
    b, h, w, o = shape
    th, tw = h // 2, w // 2
    m = m.reshape(4, 4, b, th, tw, o)
    r0 = m[0] + m[1] + m[2]
    r1 = m[1] - m[2] - m[3]
    ys = [jnp.stack([r[0] + r[1] + r[2], r[1] - r[2] - r[3]], axis=3) for r in (r0, r1)]
    return jnp.stack(ys, axis=2).reshape(b, h, w, o)   # [B, th, 2, tw, 2, O]


def _output_transform_adjoint(dy: jax.Array) -> jax.Array:
    """Adjoint of :func:`_output_transform`: ``[B, H, W, O] -> [16, P, O]``, as one
    ``[16, 4] @ [4, P * O]`` product with ``A (x) A`` (faster on XLA:CPU than 16 fused
    elementwise outputs)."""
    b, h, w, o = dy.shape
    t = jnp.transpose(dy.reshape(b, h // 2, 2, w // 2, 2, o), (2, 4, 0, 1, 3, 5))
    return jnp.dot(jnp.asarray(_AA, dy.dtype), t.reshape(4, -1)).reshape(16, -1, o)


def _kernel_transform(kernel: jax.Array) -> jax.Array:
    """``[3, 3, C, O] -> U [16, C, O]``, ``U = G g G^T``."""
    g = jnp.asarray(_G, kernel.dtype)
    u = jnp.einsum("ak,klco,bl->abco", g, kernel, g)
    return u.reshape(16, *kernel.shape[2:])


def _kernel_transform_adjoint(du: jax.Array) -> jax.Array:
    """``dK = G^T dU G``: ``[16, C, O] -> [3, 3, C, O]``."""
    g = jnp.asarray(_G, du.dtype)
    return jnp.einsum("ak,abco,bl->klco", g, du.reshape(4, 4, *du.shape[1:]), g)


def _bmm(a, b, contract_a, contract_b):
    """16 matrix products over the leading (grid-position) axis."""
    return lax.dot_general(a, b, (((contract_a,), (contract_b,)), ((0,), (0,))))


@jax.custom_vjp
def conv_same_winograd(x: jax.Array, kernel: jax.Array) -> jax.Array:
    """3x3 convolution, stride 1, 'SAME' zero padding, by Winograd F(2x2, 3x3).

    Same map and kernel layout as ``nnx.Conv(kernel_size=(3, 3), padding="SAME")``.

    Args:
      x: ``[B, H, W, C]``, H and W even.
      kernel: ``[3, 3, C, O]``.

    Returns:
      ``[B, H, W, O]``.
    """
    return _fwd(x, kernel)[0]


def _fwd(x, kernel):
    _check(x, kernel)
    v = _input_transform(x)
    u = _kernel_transform(kernel)
    m = _bmm(v, u, 2, 1)                                              # [16, P, O]
    y = _output_transform(m, (*x.shape[:3], kernel.shape[3]))
    return y, (v, u)


def _bwd(res, dy):
    v, u = res
    xshape = (*dy.shape[:3], v.shape[2])
    dm = _output_transform_adjoint(dy)                                 # [16, P, O]
    dv = _bmm(dm, u, 2, 2)                                             # [16, P, C]
    du = _bmm(v, dm, 1, 1)                                             # [16, C, O]
    dx = _input_transform_adjoint(dv, xshape)
    return dx.astype(dy.dtype), _kernel_transform_adjoint(du).astype(u.dtype)


conv_same_winograd.defvjp(_fwd, _bwd)


# ---------------------------------------------------------------------------------------
# Winograd F(4x4, 3x3): 6x6 input tiles, stride 4.
#
# 4x4 output tiles read 6x6 input tiles (overlap 2), so a layer is 36 ``[tiles, C] @
# [C, O]`` products: 4x fewer multiplications than the direct convolution (F(2x2):
# 2.25x) and a transformed input 36/16 = 2.25x the map (F(2x2): 4x). The price is larger
# transform constants, so float32 rounding grows; the interpolation points are chosen by
# that error against float64 (bench/README.md, tests/test_ops.py).


def cook_toom(points, m: int = 4, r: int = 3):
    """Winograd / Cook-Toom matrices of F(m, r) from ``m + r - 2`` finite interpolation
    points plus the point at infinity.

    Returns float64 ``(AT [m, n], G [n, r], BT [n, n])``, ``n = m + r - 1``, with
    ``AT @ ((G @ g) * (BT @ d)) = [sum_k g[k] d[i + k]]_i`` (1-D correlation of ``d [n]``
    with ``g [r]``); the 2-D transforms apply them along both axes. ``AT`` and ``G`` are
    the Vandermonde rows (``G`` carrying the Lagrange denominators, as in Lavin & Gray);
    ``BT`` is the unique matrix completing the identity, solved for and snapped to the
    exact small-denominator rationals it consists of.
    """
    from fractions import Fraction

    n = m + r - 1
    p = [Fraction(x).limit_denominator(64) for x in points]
    if len(p) != n - 1 or len(set(p)) != n - 1:
        raise ValueError(f"cook_toom: need {n - 1} distinct finite points for F({m}, {r}), got {points}")
    at = np.zeros((m, n))
    g = np.zeros((n, r))
    for j, pj in enumerate(p):
        denom = np.prod([float(pj - pk) for pk in p if pk != pj])
        at[:, j] = [float(pj) ** i for i in range(m)]
        g[j] = [float(pj) ** k / denom for k in range(r)]
    at[m - 1, n - 1] = g[n - 1, r - 1] = 1.0
    # sum_j AT[i, j] G[j, k] BT[j, l] = [l == i + k]: for each column l of BT, m*r
    # equations in n unknowns with a full-rank matrix.
    c = np.einsum("ij,jk->ikj", at, g).reshape(m * r, n)
    target = np.zeros((m * r, n))
    for i in range(m):
        for k in range(r):
            target[i * r + k, i + k] = 1.0
    bt, *_ = np.linalg.lstsq(c, target, rcond=None)
    bt = np.vectorize(lambda v: float(Fraction(v).limit_denominator(1024)))(bt)
    if not np.allclose(c @ bt, target, atol=1e-12):
        raise ValueError(f"cook_toom: points {points} do not give an exact F({m}, {r}) algorithm")
    return at, g, bt


def _combine(coeffs, terms):
    """``[sum_k coeffs[i, k] * terms[k] for i]`` for a constant matrix, skipping zeros and
    leaving multiplications by +-1 out (elementwise, fused by XLA)."""
    out = []
    for row in np.asarray(coeffs):
        acc = None
        for c, t in zip(row, terms):
            if c == 0.0:
                continue
            if c == 1.0:
                term = t
            elif c == -1.0:
                term = -t if acc is None else None
            else:
                term = t * float(c)
            if term is None:        # acc - t
                acc = acc - t
            else:
                acc = term if acc is None else acc + term
        out.append(acc if acc is not None else jnp.zeros_like(terms[0]))
    return out


def _tiles6(a, axis, nt):
    """The 6 unit-stride slices of an ``[..., nt+1, 4, ...]`` blocked axis that tile
    ``i`` reads at offsets 0..5 (blocks ``i`` and ``i + 1``); ``axis`` is the block
    axis."""
    def sl(start, block_offset):
        a_ = lax.slice_in_dim(a, start, start + nt, axis=axis)
        return lax.index_in_dim(a_, block_offset, axis=axis + 1, keepdims=False)
    return [sl(0, k) for k in range(4)] + [sl(1, k) for k in range(2)]


def _overlap_add6(t, axis, size):
    """Adjoint of :func:`_tiles6` followed by the padding's removal: six ``[.., nt, ..]``
    tile-offset arrays -> ``[.., size, ..]`` (tile ``i`` offset ``k`` lands on padded
    position ``4 i + k``; padded position 0 is the zero padding)."""
    nt = t[0].shape[axis]
    pad_end = [(0, 0)] * t[0].ndim
    pad_start = [(0, 0)] * t[0].ndim
    pad_end[axis], pad_start[axis] = (0, 1), (1, 0)
    blocks = [jnp.pad(t[k], pad_end) for k in range(4)]
    blocks[0] = blocks[0] + jnp.pad(t[4], pad_start)
    blocks[1] = blocks[1] + jnp.pad(t[5], pad_start)
    full = jnp.stack(blocks, axis=axis + 1)
    shape = list(t[0].shape)
    shape[axis] = 4 * (nt + 1)
    return lax.slice_in_dim(full.reshape(shape), 1, 1 + size, axis=axis)


class _F4:
    """Transforms of F(4x4, 3x3) for one choice of interpolation points."""

    def __init__(self, points):
        self.points = tuple(points)
        self.at, self.g, self.bt = cook_toom(points)
        # dM = A dY A^T as one [36, 16] @ [16, P*O] product (see _output_transform_adjoint).
        self.aa = np.kron(self.at.T, self.at.T)

    def input_transform(self, x):
        """``[B, H, W, C] -> V [36, B * H/4 * W/4, C]`` (index ``6 a + b``)."""
        b, h, w, c = x.shape
        th, tw = h // 4, w // 4
        # Pad 1 before (SAME) and 3 after, so that the padded map is whole blocks of 4.
        xp = jnp.pad(x, ((0, 0), (1, 3), (1, 3), (0, 0))).reshape(b, th + 1, 4, tw + 1, 4, c)
        rows = jnp.stack(_combine(self.bt, _tiles6(xp, 1, th)))         # [6, B, th, tw+1, 4, C]
        rows = lax.optimization_barrier(rows)   # as in F(2x2): two passes beat one fusion
        v = jnp.stack(_combine(self.bt, _tiles6(rows, 3, tw)), axis=1)  # [6, 6, B, th, tw, C]
        return v.reshape(36, b * th * tw, c)

    def input_transform_adjoint(self, dv, shape):
        b, h, w, c = shape
        th, tw = h // 4, w // 4
        dv = dv.reshape(6, 6, b, th, tw, c)
        rows = [_overlap_add6(_combine(self.bt.T, [dv[a, k] for k in range(6)]), 2, w)
                for a in range(6)]                                       # 6 x [B, th, W, C]
        return _overlap_add6(_combine(self.bt.T, rows), 1, h)

    def output_transform(self, m, shape):
        b, h, w, o = shape
        th, tw = h // 4, w // 4
        m = m.reshape(6, 6, b, th, tw, o)
        r = _combine(self.at, [m[k] for k in range(6)])                  # 4 x [6, B, th, tw, O]
        ys = [jnp.stack(_combine(self.at, [ra[k] for k in range(6)]), axis=3) for ra in r]
        return jnp.stack(ys, axis=2).reshape(b, h, w, o)                 # [B, th, 4, tw, 4, O]

    def output_transform_adjoint(self, dy):
        b, h, w, o = dy.shape
        t = jnp.transpose(dy.reshape(b, h // 4, 4, w // 4, 4, o), (2, 4, 0, 1, 3, 5))
        return jnp.dot(jnp.asarray(self.aa, dy.dtype), t.reshape(16, -1)).reshape(36, -1, o)

    def kernel_transform(self, kernel):
        g = jnp.asarray(self.g, kernel.dtype)
        return jnp.einsum("ak,klco,bl->abco", g, kernel, g).reshape(36, *kernel.shape[2:])

    def kernel_transform_adjoint(self, du):
        g = jnp.asarray(self.g, du.dtype)
        return jnp.einsum("ak,abco,bl->klco", g, du.reshape(6, 6, *du.shape[1:]), g)


def _check4(x, kernel):
    _check(x, kernel)
    if x.shape[1] % 4 or x.shape[2] % 4:
        raise ValueError(
            f"conv_same_winograd4: height and width must be multiples of 4 (whole 4x4 output "
            f"tiles), got {x.shape[1]}x{x.shape[2]}")


def make_winograd4(points):
    """A :func:`conv_same_winograd4` on other interpolation points (for accuracy and
    speed comparisons): 5 distinct finite points, e.g. ``(0, 1, -1, 0.5, -0.5)``; the
    point at infinity is always added."""
    tr = _F4(points)

    @jax.custom_vjp
    def conv(x, kernel):
        return fwd(x, kernel)[0]

    def fwd(x, kernel):
        _check4(x, kernel)
        v = tr.input_transform(x)
        u = tr.kernel_transform(kernel)
        m = _bmm(v, u, 2, 1)                                             # [36, P, O]
        return tr.output_transform(m, (*x.shape[:3], kernel.shape[3])), (v, u)

    def bwd(res, dy):
        v, u = res
        dm = tr.output_transform_adjoint(dy)                             # [36, P, O]
        dv = _bmm(dm, u, 2, 2)                                           # [36, P, C]
        du = _bmm(v, dm, 1, 1)                                           # [36, C, O]
        dx = tr.input_transform_adjoint(dv, (*dy.shape[:3], v.shape[2]))
        return dx.astype(dy.dtype), tr.kernel_transform_adjoint(du).astype(u.dtype)

    conv.defvjp(fwd, bwd)
    conv.transforms = tr
    return conv


# Interpolation points: 0, +-1, +-2 and infinity (Lavin & Gray's). Float32 error against
# float64 for U-Net layers (bench/README.md): about 2-3e-6 RMS, 1e-5 max relative, 5-10x
# XLA's and F(2x2)'s; 0, +-1, +-1/2 measured the same to within 30%, slightly worse max.
WINOGRAD4_POINTS = (0.0, 1.0, -1.0, 2.0, -2.0)
conv_same_winograd4 = make_winograd4(WINOGRAD4_POINTS)
conv_same_winograd4.__doc__ = """3x3 convolution, stride 1, 'SAME' zero padding, by Winograd
F(4x4, 3x3) (interpolation points :data:`WINOGRAD4_POINTS` and infinity).

Same map and kernel layout as ``nnx.Conv(kernel_size=(3, 3), padding="SAME")``.

Args:
  x: ``[B, H, W, C]``, H and W multiples of 4.
  kernel: ``[3, 3, C, O]``.

Returns:
  ``[B, H, W, O]``.
"""

