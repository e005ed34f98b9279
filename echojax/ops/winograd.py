"""3x3 'SAME' stride-1 convolution by Winograd's minimal filtering F(2x2, 3x3).

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
Requires even ``H`` and ``W`` (whole 2x2 tiles). Same kernel layout (HWIO) as
``nnx.Conv``. Measurements against XLA's convolution are in ``bench/README.md``.
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


def kernel_grad_winograd(x: jax.Array, dy: jax.Array) -> jax.Array:
    """The kernel gradient of :func:`conv_same_winograd` alone: ``x [B, H, W, C]``,
    ``dy [B, H, W, O]`` -> ``dK [3, 3, C, O]`` (16 ``[C, P] @ [P, O]`` products), for
    pairing with another forward / input-gradient implementation."""
    if x.shape[:3] != dy.shape[:3]:
        raise ValueError(f"kernel_grad_winograd: x {tuple(x.shape)} and dy {tuple(dy.shape)} differ in [B, H, W]")
    _check(x, jnp.zeros((3, 3, x.shape[3], dy.shape[3]), x.dtype))
    du = _bmm(_input_transform(x), _output_transform_adjoint(dy), 1, 1)
    return _kernel_transform_adjoint(du)


@jax.custom_vjp
def conv_same_winograd_bwd(x: jax.Array, kernel: jax.Array) -> jax.Array:
    """Same map as :func:`conv_same_winograd`, forward by XLA's convolution (faster than
    Winograd's on large maps with few channels, where the 4x larger transformed input
    costs more memory traffic than the multiplications it saves), both gradients by
    Winograd (the transformed input is rebuilt from ``x`` in the backward pass).

    Args:
      x: ``[B, H, W, C]``, H and W even.
      kernel: ``[3, 3, C, O]``.

    Returns:
      ``[B, H, W, O]``.
    """
    return _fwd_xla(x, kernel)[0]


def _fwd_xla(x, kernel):
    _check(x, kernel)
    y = lax.conv_general_dilated(x, kernel, (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC"))
    return y, (x, kernel)


def _bwd_from_x(res, dy):
    x, kernel = res
    return _bwd((_input_transform(x), _kernel_transform(kernel)), dy)


conv_same_winograd_bwd.defvjp(_fwd_xla, _bwd_from_x)
