"""Convolutions of the U-Net family written as matrix products (NHWC, HWIO kernels).

XLA:CPU lowers some convolution gradients to slow generic loops: the kernel gradient
of a 2x2 stride-2 transposed convolution, and the transposed-kernel convolutions of
3x3 layers on small, wide maps. The functions here compute exactly the same maps (same
parameter layout as ``nnx.Conv`` / ``nnx.ConvTranspose``, equal to float tolerance) as
one or a few matrix products, which XLA:CPU runs at its GEMM speed. Measurements are in
``bench/README.md``.
"""

from __future__ import annotations

import contextlib
import functools

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


# ---------------------------------------------------------------------------------------
# XLA's forward and input-gradient convolutions, with the kernel gradient as matmuls.


def _dk_im2col(x, dy, kshape):
    """``dK = patches(x)^T @ dy``: one ``[k*k*C, N] @ [N, O]`` matmul, N = B*H*W."""
    k, _, c, o = kshape
    pm = _patches(x, k).reshape(-1, k * k * c)
    return jnp.dot(pm.T, dy.reshape(-1, o)).reshape(kshape)


def _dk_rows(x, dy, kshape):
    """``dK`` one kernel row at a time: patches along W only (``k*C`` wide, a third of
    the memory of the full patch matrix), ``k`` matmuls ``[k*C, N] @ [N, O]``."""
    k, _, c, o = kshape
    _, h, w, _ = x.shape
    p = k // 2
    xp = jnp.pad(x, ((0, 0), (p, p), (p, p), (0, 0)))
    xw = jnp.concatenate([xp[:, :, dw:dw + w] for dw in range(k)], axis=-1)
    d2 = dy.reshape(-1, o)
    rows = [jnp.dot(xw[:, dh:dh + h].reshape(-1, k * c).T, d2) for dh in range(k)]
    return jnp.stack(rows).reshape(kshape)


def _dk_conv(x, dy, kshape):
    """``dK`` as a *forward* convolution with the batch as the contracted feature axis:
    ``x`` as ``[C, H, W, B]`` images, ``dy`` as an ``[H, W, B, O]`` kernel, padding
    ``k//2``: output ``[C, k, k, O]``. Different dimension numbers than XLA's own
    kernel-gradient convolution, so XLA:CPU takes its forward-convolution path."""
    k, _, c, o = kshape
    p = k // 2
    out = lax.conv_general_dilated(
        jnp.transpose(x, (3, 1, 2, 0)), jnp.transpose(dy, (1, 2, 0, 3)), (1, 1),
        ((p, p), (p, p)), dimension_numbers=_NHWC)
    return jnp.transpose(out, (1, 2, 0, 3))


def _dk_winograd(x, dy, kshape):
    """``dK`` in the Winograd F(2x2, 3x3) domain (:mod:`echojax.ops.winograd`)."""
    return winograd.kernel_grad_winograd(x, dy)


def _dk_winograd4(x, dy, kshape):
    """``dK`` in the Winograd F(4x4, 3x3) domain: 36 ``[C, P] @ [P, O]`` products."""
    return winograd.kernel_grad_winograd4(x, dy)


_DK = {"dw_im2col": _dk_im2col, "dw_rows": _dk_rows, "dw_conv": _dk_conv,
       "dw_winograd": _dk_winograd, "dw_winograd4": _dk_winograd4}


@functools.partial(jax.custom_vjp, nondiff_argnums=(2,))
def _conv_matmul_dk(x, kernel, method):
    return conv_same_xla(x, kernel)


def _matmul_dk_fwd(x, kernel, method):
    return conv_same_xla(x, kernel), (x, kernel)


def _matmul_dk_bwd(method, res, dy):
    x, kernel = res
    dx = jax.vjp(lambda x_: conv_same_xla(x_, kernel), x)[1](dy)[0]
    return dx, _DK[method](x, dy, kernel.shape).astype(kernel.dtype)


_conv_matmul_dk.defvjp(_matmul_dk_fwd, _matmul_dk_bwd)

METHODS = ("auto", "xla", "im2col", "winograd", "winograd4", "winograd_bwd", "dw_im2col", "dw_rows",
           "dw_conv", "dw_winograd", "dw_winograd4")
_WINOGRAD = ("winograd", "winograd4", "winograd_bwd", "dw_winograd", "dw_winograd4")
_WINOGRAD4 = ("winograd4", "dw_winograd4")

# Maps with at most this many pixels (8x8) use patches + matmul for all three products.
IM2COL_MAX_PIXELS = 64

# What "auto" uses on larger maps: ``(max_pixels, method)`` rules, first match wins
# (maps above every bound take the last). Winograd F(2x2, 3x3) up to 16x16 and F(4x4,
# 3x3) above measured fastest for the whole U-Net and Attention U-Net steps (F(4x4) alone
# 1.3-1.7x faster than F(2x2) per layer at 32x32-64x64, 0.9-1.0x at 16x16;
# bench/README.md); :func:`auto_large_maps` changes it (benchmarks A/B it).
_AUTO_LARGE: tuple[tuple[float, str], ...] = ((256, "winograd"), (float("inf"), "winograd4"))

# Narrow layers on large maps: on maps of more than NARROW_MIN_PIXELS pixels (above
# 32x32), a layer with ``C * O <= NARROW_MAX_FEATURES`` (e.g. 1 -> 16, 16 -> 16, 32 -> 16,
# 16 -> 32: the first levels of the CPU-width U-Nets, and every first layer, C = 1) uses
# XLA's convolution: with 16-32 channels the Winograd transforms and their batched
# ``[tiles, C] @ [C, O]`` products with tiny C and O cost about twice XLA's direct
# convolution (bench/README.md); :func:`auto_narrow` changes the bound (0: off).
NARROW_MIN_PIXELS = 1024
_AUTO_NARROW_MAX_FEATURES = 512


@contextlib.contextmanager
def auto_narrow(max_features: int):
    """Within the context, ``conv_same(method="auto")`` uses XLA's convolution on maps
    of more than :data:`NARROW_MIN_PIXELS` pixels when ``C * O <= max_features``
    (``0``: never; the default is 512). Read at trace time."""
    global _AUTO_NARROW_MAX_FEATURES
    if not isinstance(max_features, int) or max_features < 0:
        raise ValueError(f"auto_narrow: max_features must be an int >= 0, got {max_features!r}")
    previous, _AUTO_NARROW_MAX_FEATURES = _AUTO_NARROW_MAX_FEATURES, max_features
    try:
        yield
    finally:
        _AUTO_NARROW_MAX_FEATURES = previous


@contextlib.contextmanager
def auto_large_maps(method: str, *rules: tuple[int, str]):
    """Within the context, ``conv_same(method="auto")`` uses ``method`` on maps larger
    than :data:`IM2COL_MAX_PIXELS` pixels, or the first ``(max_pixels, method)`` of
    ``rules`` whose bound the map's ``H * W`` does not exceed (``method`` above them
    all). A Winograd method falls back to ``"xla"`` where it does not apply (kernel not
    3x3, odd height or width); ``"winograd4"`` first falls back to ``"winograd"`` (even
    sides that are not multiples of 4). Read at trace time."""
    global _AUTO_LARGE
    for m in (method, *(m for _, m in rules)):
        if m not in METHODS or m == "auto":
            raise ValueError(f"auto_large_maps: unknown method {m!r}; expected one of {METHODS[1:]}")
    previous, _AUTO_LARGE = _AUTO_LARGE, (*rules, (float("inf"), method))
    try:
        yield
    finally:
        _AUTO_LARGE = previous


def _winograd_applies(x, kernel, tile: int = 2) -> bool:
    return kernel.shape[:2] == (3, 3) and x.shape[1] % tile == 0 and x.shape[2] % tile == 0


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
        multiples of 4, float32 error about 5x XLA's); ``"winograd_bwd"`` (XLA forward, both gradients by Winograd);
        ``"dw_im2col"`` / ``"dw_rows"`` / ``"dw_conv"`` /
        ``"dw_winograd"`` / ``"dw_winograd4"`` (XLA forward and input gradient; kernel
        gradient as matmuls over patches, as a forward convolution over the batch axis,
        or by Winograd F(2x2) / F(4x4));
        ``"auto"``: ``"im2col"`` on maps of at most :data:`IM2COL_MAX_PIXELS` pixels,
        ``"xla"`` for narrow layers (``C * O <= 512``) on maps above 32x32 (see
        :func:`auto_narrow`), otherwise ``"winograd"`` up to 16x16 (256 pixels),
        ``"winograd4"`` on larger ones (``"winograd"`` where the sides are not
        multiples of 4, ``"xla"`` where Winograd does not apply: kernel not 3x3, odd
        height or width); the measurements
        behind this choice are in ``bench/README.md``. These formulations exist for
        XLA:CPU: when the default backend (``jax.default_backend()``, read at trace
        time) is not the CPU, ``"auto"`` is ``"xla"``, i.e. cuDNN on a GPU.

    Returns:
      ``[B, H, W, O]``.
    """
    if method not in METHODS:
        raise ValueError(f"conv_same: unknown method {method!r}; expected one of {METHODS}")
    _check(x, kernel, name="conv_same")
    if method == "auto":
        if jax.default_backend() != "cpu":
            method = "xla"
        elif x.shape[1] * x.shape[2] <= IM2COL_MAX_PIXELS:
            method = "im2col"
        elif (x.shape[1] * x.shape[2] > NARROW_MIN_PIXELS
              and kernel.shape[2] * kernel.shape[3] <= _AUTO_NARROW_MAX_FEATURES):
            method = "xla"
        else:
            method = next(m for n, m in _AUTO_LARGE if x.shape[1] * x.shape[2] <= n)
            if method == "dw_winograd4" and not _winograd_applies(x, kernel, 4):
                method = "dw_winograd"
            if method == "winograd4" and not _winograd_applies(x, kernel, 4):
                method = "winograd"
            if method in _WINOGRAD and not _winograd_applies(x, kernel):
                method = "xla"
    elif method in _WINOGRAD4 and not _winograd_applies(x, kernel, 4):
        raise ValueError(
            f"conv_same: method {method!r} needs a 3x3 kernel and height and width that "
            f"are multiples of 4, got kernel {tuple(kernel.shape)} and x {tuple(x.shape)}")
    elif method in _WINOGRAD and not _winograd_applies(x, kernel):
        raise ValueError(
            f"conv_same: method {method!r} needs a 3x3 kernel and even height and width, "
            f"got kernel {tuple(kernel.shape)} and x {tuple(x.shape)}")
    if method == "xla":
        return conv_same_xla(x, kernel)
    if method == "im2col":
        return conv_same_im2col(x, kernel)
    if method == "winograd":
        return winograd.conv_same_winograd(x, kernel)
    if method == "winograd4":
        return winograd.conv_same_winograd4(x, kernel)
    if method == "winograd_bwd":
        return winograd.conv_same_winograd_bwd(x, kernel)
    return _conv_matmul_dk(x, kernel, method)
