"""Convolutions of the U-Net family written as matrix products (NHWC, HWIO kernels).

XLA:CPU lowers some convolution gradients to slow generic loops: the kernel gradient
of a 2x2 stride-2 transposed convolution, and the transposed-kernel convolutions of
3x3 layers on small, wide maps. The functions here compute exactly the same maps (same
parameter layout as ``nnx.Conv`` / ``nnx.ConvTranspose``, equal to float tolerance) as
one or a few matrix products, which XLA:CPU runs at its GEMM speed. Measurements are in
``bench/README.md``.
"""

from __future__ import annotations

import functools

import chex
import jax
import jax.numpy as jnp
from jax import lax

from echojax.ops import winograd

_NHWC = ("NHWC", "HWIO", "NHWC")


def _check(x: jax.Array, kernel: jax.Array, *, name: str) -> None:
    if x.ndim != 4 or kernel.ndim != 4:
        raise ValueError(
            f"{name}: expected x [B, H, W, C] and kernel [kh, kw, C, O], got "
            f"{tuple(x.shape)} and {tuple(kernel.shape)}"
        )
    if kernel.shape[2] != x.shape[3]:
        raise ValueError(
            f"{name}: kernel input features {kernel.shape[2]} != x channels {x.shape[3]}"
        )


# ---------------------------------------------------------------------------------------
# 2x2 stride-2 transposed convolution.


def conv_transpose_2x2(x: jax.Array, kernel: jax.Array, bias: jax.Array | None = None) -> jax.Array:
    """``nnx.ConvTranspose(kernel_size=(2, 2), strides=(2, 2))`` as one matmul.

    Every input pixel writes its own 2x2 output patch, so the layer is a per-pixel
    linear map ``C -> 4 O`` followed by depth-to-space. ``lax.conv_transpose`` (which
    ``nnx.ConvTranspose`` calls with ``transpose_kernel=False``) correlates the
    zero-dilated input with the kernel *without* flipping it, so output pixel
    ``(2i + a, 2j + b)`` receives ``x[i, j] @ kernel[1 - a, 1 - b]``: the kernel is
    flipped here to keep parameters interchangeable with the Flax layer (both 'SAME'
    and 'VALID' padding give this map for a 2x2 kernel with stride 2).

    Args:
      x: ``[B, H, W, C]``.
      kernel: ``[2, 2, C, O]`` (the ``nnx.ConvTranspose`` kernel).
      bias: optional ``[O]``.

    Returns:
      ``[B, 2H, 2W, O]``.
    """
    _check(x, kernel, name="conv_transpose_2x2")
    if kernel.shape[:2] != (2, 2):
        raise ValueError(f"conv_transpose_2x2: kernel must be [2, 2, C, O], got {kernel.shape}")
    b, h, w, c = x.shape
    o = kernel.shape[3]
    # [a, b', C, O] -> [C, a, b', O] with a, b' the output offsets within the patch.
    k = jnp.transpose(kernel[::-1, ::-1], (2, 0, 1, 3)).reshape(c, 4 * o)
    y = jnp.dot(x.reshape(b * h * w, c), k).reshape(b, h, w, 2, 2, o)
    y = jnp.transpose(y, (0, 1, 3, 2, 4, 5)).reshape(b, 2 * h, 2 * w, o)
    if bias is not None:
        y = y + bias
    return y


# ---------------------------------------------------------------------------------------
# 1x1 convolution.


def conv_1x1(x: jax.Array, kernel: jax.Array, bias: jax.Array | None = None) -> jax.Array:
    """``nnx.Conv(kernel_size=(1, 1))`` as one ``[B*H*W, C] @ [C, O]`` matmul (XLA:CPU runs
    the convolution form and its gradients 1.3-3x slower; bench/README.md).

    Args:
      x: ``[B, H, W, C]``.
      kernel: ``[1, 1, C, O]`` (the ``nnx.Conv`` kernel).
      bias: optional ``[O]``.

    Returns:
      ``[B, H, W, O]``.
    """
    _check(x, kernel, name="conv_1x1")
    if kernel.shape[:2] != (1, 1):
        raise ValueError(f"conv_1x1: kernel must be [1, 1, C, O], got {tuple(kernel.shape)}")
    b, h, w, c = x.shape
    o = kernel.shape[3]
    y = jnp.dot(x.reshape(b * h * w, c), kernel.reshape(c, o)).reshape(b, h, w, o)
    return y if bias is None else y + bias


# ---------------------------------------------------------------------------------------
# 3x3 'SAME' convolution of a nearest-neighbour 2x up-sampled map, at the low resolution.

# _UP_TAPS[a][t]: the taps ``dh`` of a 3x3 kernel that read low-resolution row offset
# ``t - 1`` for output phase ``a`` (full-resolution row ``2i + a`` reads up-sampled rows
# ``2i + a + dh - 1``, i.e. low-resolution row ``i + floor((a + dh - 1) / 2)``).
_UP_TAPS = (((0,), (1, 2), ()), ((), (0, 1), (2,)))


def subpixel_kernel(kernel: jax.Array) -> jax.Array:
    """``[3, 3, C, O] -> [3, 3, C, 4 O]``: the kernel that, applied ('SAME') to a
    low-resolution map, gives the four output phases of ``kernel`` applied to that map's
    nearest 2x up-sampling; output feature ``(2 a + b) O + o`` is phase ``(a, b)`` (full
    resolution pixel ``(2i + a, 2j + b)``), channel ``o``. Each phase reads a 2x2 window
    of the low-resolution map (sums of the taps that land on the same pixel), the other
    five entries are zero."""
    if kernel.ndim != 4 or kernel.shape[:2] != (3, 3):
        raise ValueError(f"subpixel_kernel: kernel must be [3, 3, C, O], got {tuple(kernel.shape)}")
    zero = jnp.zeros(kernel.shape[2:], kernel.dtype)

    def taps(a, b, th, tw):
        planes = [kernel[dh, dw] for dh in _UP_TAPS[a][th] for dw in _UP_TAPS[b][tw]]
        return functools.reduce(jnp.add, planes) if planes else zero

    k = jnp.stack([jnp.stack([jnp.stack([taps(a, b, th, tw) for a in (0, 1) for b in (0, 1)],
                                        axis=1) for tw in range(3)]) for th in range(3)])
    return k.reshape(*k.shape[:3], 4 * kernel.shape[3])            # [3, 3, C, 4 * O]


def conv_same_upsampled(x: jax.Array, kernel: jax.Array, *, method: str = "auto",
                        phases: bool = False) -> jax.Array:
    """``conv(upsample_nearest_2x(x), kernel)`` (3x3, stride 1, 'SAME'; the Attention
    U-Net's ``up_conv``), computed at the low resolution: one 'SAME' convolution of ``x``
    with :func:`subpixel_kernel` (``C -> 4 O``, through :func:`conv_same` with
    ``method``), then depth-to-space. The up-sampled map is never formed, its gradient
    (a 2x2 sum) is not needed, and the layer runs on a 4x smaller map with 4x the output
    width, a shape Winograd serves far better than the narrow full-resolution layer.

    Args:
      x: ``[B, H, W, C]`` (low resolution).
      kernel: ``[3, 3, C, O]`` (the ``nnx.Conv`` kernel of the full-resolution layer).
      method: :func:`conv_same`'s method for the low-resolution convolution.
      phases: return ``[B, H, W, 2, 2, O]`` (phase ``(a, b)`` of pixel ``(i, j)`` is
        full-resolution pixel ``(2i + a, 2j + b)``) instead of ``[B, 2H, 2W, O]``, e.g.
        to normalise before the rearrangement.

    Returns:
      ``[B, 2H, 2W, O]`` (or the phases).
    """
    _check(x, kernel, name="conv_same_upsampled")
    b, h, w, _ = x.shape
    o = kernel.shape[3]
    y = conv_same(x, subpixel_kernel(kernel), method=method).reshape(b, h, w, 2, 2, o)
    return y if phases else depth_to_space_2x(y)


def depth_to_space_2x(y: jax.Array) -> jax.Array:
    """``[B, H, W, 2, 2, O] -> [B, 2H, 2W, O]`` (phase ``(a, b)`` of ``(i, j)`` to pixel
    ``(2i + a, 2j + b)``)."""
    b, h, w, _, _, o = y.shape
    return jnp.transpose(y, (0, 1, 3, 2, 4, 5)).reshape(b, 2 * h, 2 * w, o)


# ---------------------------------------------------------------------------------------
# k x k 'SAME' convolution, stride 1, as patches + one matmul.


def _patches(x: jax.Array, k: int) -> jax.Array:
    """``[B, H, W, C] -> [B, H, W, k*k*C]``; feature index ``(dh * k + dw) * C + c`` is
    ``x[h + dh - k//2, w + dw - k//2, c]`` (zero outside), i.e. HWIO kernel order."""
    _, h, w, _ = x.shape
    p = k // 2
    xp = jnp.pad(x, ((0, 0), (p, p), (p, p), (0, 0)))
    return jnp.concatenate(
        [xp[:, dh:dh + h, dw:dw + w] for dh in range(k) for dw in range(k)], axis=-1
    )


def _col2im(dp: jax.Array, k: int, c: int) -> jax.Array:
    """Adjoint of :func:`_patches`: ``[B, H, W, k*k*C] -> [B, H, W, C]``."""
    b, h, w, _ = dp.shape
    p = k // 2
    acc = jnp.zeros((b, h + 2 * p, w + 2 * p, c), dp.dtype)
    for dh in range(k):
        for dw in range(k):
            i = dh * k + dw
            acc = acc.at[:, dh:dh + h, dw:dw + w].add(dp[..., i * c:(i + 1) * c])
    return acc[:, p:p + h, p:p + w]


@functools.partial(jax.custom_vjp, nondiff_argnums=())
def conv_same_im2col(x: jax.Array, kernel: jax.Array) -> jax.Array:
    """``k x k`` convolution, stride 1, 'SAME' zero padding (odd k), as patches @ kernel.

    Same map and kernel layout as ``nnx.Conv(kernel_size=(k, k), padding="SAME")``.
    The VJP is hand-written: ``dx = col2im(dy @ K^T)`` and ``dK = patches^T @ dy``, each
    one matmul, instead of XLA's transposed-kernel convolutions (slow on XLA:CPU for
    small, wide maps: 8x8 and below with hundreds of channels). On large maps the
    ``k*k``-fold patch matrix costs more memory traffic than it saves: use
    :func:`conv_same` to choose.

    Args:
      x: ``[B, H, W, C]``.
      kernel: ``[k, k, C, O]``, k odd.

    Returns:
      ``[B, H, W, O]``.
    """
    return _im2col_fwd(x, kernel)[0]


def _im2col_fwd(x, kernel):
    _check(x, kernel, name="conv_same_im2col")
    k = kernel.shape[0]
    if kernel.shape[1] != k or k % 2 == 0:
        raise ValueError(f"conv_same_im2col: kernel must be square with odd size, got {kernel.shape}")
    b, h, w, c = x.shape
    o = kernel.shape[3]
    pm = _patches(x, k).reshape(b * h * w, k * k * c)
    y = jnp.dot(pm, kernel.reshape(k * k * c, o)).reshape(b, h, w, o)
    # Keep x (not the k*k-times larger patch matrix) and rebuild patches in the VJP.
    return y, (x, kernel)


def _im2col_bwd(res, dy):
    x, kernel = res
    k, _, c, o = kernel.shape
    b, h, w, _ = x.shape
    dy2 = dy.reshape(b * h * w, o)
    pm = _patches(x, k).reshape(b * h * w, k * k * c)
    dk = jnp.dot(pm.T, dy2).reshape(kernel.shape).astype(kernel.dtype)
    dp = jnp.dot(dy2, kernel.reshape(k * k * c, o).T).reshape(b, h, w, k * k * c)
    dx = _col2im(dp, k, c).astype(x.dtype)
    return dx, dk


conv_same_im2col.defvjp(_im2col_fwd, _im2col_bwd)


def conv_same_xla(x: jax.Array, kernel: jax.Array) -> jax.Array:
    """The reference: ``lax.conv_general_dilated`` with 'SAME' padding, NHWC/HWIO."""
    _check(x, kernel, name="conv_same_xla")
    return lax.conv_general_dilated(x, kernel, (1, 1), "SAME", dimension_numbers=_NHWC)


METHODS = ("auto", "xla", "im2col", "winograd", "winograd4")

# Maps with at most this many pixels (8x8) use patches + matmul for all three products.
IM2COL_MAX_PIXELS = 64

# Larger maps: Winograd F(2x2, 3x3) up to WINOGRAD2_MAX_PIXELS (16x16), F(4x4, 3x3)
# above; this mix measured fastest for the whole U-Net and Attention U-Net steps (F(4x4)
# alone 1.3-1.7x faster than F(2x2) per layer at 32x32-64x64, 0.9-1.0x at 16x16;
# bench/README.md).
WINOGRAD2_MAX_PIXELS = 256

# Narrow layers on large maps: on maps of more than NARROW_MIN_PIXELS pixels (above
# 32x32), a layer with ``C * O <= NARROW_MAX_FEATURES`` (e.g. 1 -> 16, 16 -> 16, 32 -> 16,
# 16 -> 32: the first levels of the CPU-width U-Nets, and every first layer, C = 1) uses
# XLA's convolution: with 16-32 channels the Winograd transforms and their batched
# ``[tiles, C] @ [C, O]`` products with tiny C and O cost about twice XLA's direct
# convolution (bench/README.md).
NARROW_MIN_PIXELS = 1024
NARROW_MAX_FEATURES = 512


def _winograd_applies(x, kernel, tile: int = 2) -> bool:
    return kernel.shape[:2] == (3, 3) and x.shape[1] % tile == 0 and x.shape[2] % tile == 0


def auto_method(x_shape: tuple[int, ...], kernel_shape: tuple[int, ...]) -> str:
    """The method ``conv_same(method="auto")`` uses for these (static) shapes:
    ``"im2col"`` on maps of at most :data:`IM2COL_MAX_PIXELS` pixels; ``"xla"`` for
    narrow layers (``C * O <= NARROW_MAX_FEATURES``) on maps of more than
    :data:`NARROW_MIN_PIXELS` pixels; otherwise ``"winograd"`` up to
    :data:`WINOGRAD2_MAX_PIXELS` pixels and ``"winograd4"`` above (``"winograd"`` where
    the sides are not multiples of 4, ``"xla"`` where Winograd does not apply: kernel not
    3x3, odd height or width). The measurements behind each bound are in
    ``bench/README.md``; they are XLA:CPU's."""
    _, h, w, _ = x_shape
    kh, kw, c, o = kernel_shape
    pixels = h * w
    if pixels <= IM2COL_MAX_PIXELS:
        return "im2col"
    if pixels > NARROW_MIN_PIXELS and c * o <= NARROW_MAX_FEATURES:
        return "xla"
    if (kh, kw) != (3, 3) or h % 2 or w % 2:
        return "xla"
    if pixels > WINOGRAD2_MAX_PIXELS and h % 4 == 0 and w % 4 == 0:
        return "winograd4"
    return "winograd"


def conv_same(x: jax.Array, kernel: jax.Array, *, method: str = "auto") -> jax.Array:
    """``k x k`` convolution, stride 1, 'SAME' zero padding: ``nnx.Conv``'s map and
    kernel layout, computed the way that is fastest on XLA:CPU for the map's size.

    Args:
      x: ``[B, H, W, C]``.
      kernel: ``[k, k, C, O]``.
      method: ``"xla"`` (``lax.conv_general_dilated`` and its XLA gradients);
        ``"im2col"`` (:func:`conv_same_im2col`); ``"winograd"`` (forward and both
        gradients by Winograd F(2x2, 3x3), :mod:`echojax.ops.winograd`; 3x3 kernels,
        even H and W); ``"winograd4"`` (the same by Winograd F(4x4, 3x3): H and W
        multiples of 4, float32 error about 5x XLA's); ``"auto"``: chosen from the
        shapes by :func:`auto_method`.

    Returns:
      ``[B, H, W, O]``.
    """
    if method not in METHODS:
        raise ValueError(f"conv_same: unknown method {method!r}; expected one of {METHODS}")
    _check(x, kernel, name="conv_same")
    if method == "auto":
        method = auto_method(x.shape, kernel.shape)
    elif method == "winograd4" and not _winograd_applies(x, kernel, 4):
        raise ValueError(
            f"conv_same: method {method!r} needs a 3x3 kernel and height and width that "
            f"are multiples of 4, got kernel {tuple(kernel.shape)} and x {tuple(x.shape)}")
    elif method == "winograd" and not _winograd_applies(x, kernel):
        raise ValueError(
            f"conv_same: method {method!r} needs a 3x3 kernel and even height and width, "
            f"got kernel {tuple(kernel.shape)} and x {tuple(x.shape)}")
    if method == "xla":
        y = conv_same_xla(x, kernel)
    elif method == "im2col":
        y = conv_same_im2col(x, kernel)
    elif method == "winograd":
        y = winograd.conv_same_winograd(x, kernel)
    else:
        y = winograd.conv_same_winograd4(x, kernel)
    chex.assert_shape(y, (*x.shape[:3], kernel.shape[3]))
    return y
