"""Swin-UNet (Cao et al., "Swin-Unet: Unet-like Pure Transformer for Medical Image
Segmentation", ECCV Workshops 2022), NHWC, in Flax NNX.

Built on Swin Transformer blocks (Liu et al., ICCV 2021): window multi-head
self-attention with a learned relative position bias, windows shifted by half a window
in every second block with an attention mask that keeps the cyclically rolled regions
apart, pre-norm MLP with GELU, stochastic depth.

Layer for layer the ``SwinTransformerSys`` of HuCaoFighting/Swin-Unet with
``final_upsample="expand_first"``: patch embedding (strided conv + LayerNorm), encoder
stages of Swin blocks with patch merging (2x2 concat, LayerNorm, linear without bias)
between them, LayerNorm at the bottleneck; the decoder starts with a patch expanding of
the bottleneck (linear without bias doubling the width, depth-to-space 2x, LayerNorm),
then mirrors the encoder stages below the bottleneck, each after concatenating the skip
(the *input* of the matching encoder stage) and a linear back to the stage width, with
patch expanding between them; LayerNorm; a final patch expanding by the patch size
(linear without bias to ``patch**2 * embed_dim``, depth-to-space, LayerNorm); 1x1 head
without bias. At 256x256 with patch 4, embed 96, depths (2, 2, 2, 2), heads
(3, 6, 12, 24), window 8, MLP ratio 4, ``in_channels=1``, ``num_classes=4``:
27,172,740 trainable parameters, as the reference (whose ``depths_decoder`` argument
is unused: the decoder mirrors ``depths``, as here).

Deliberate differences from the reference:
* The spatial size is not a constructor argument: the shift masks are built from the
  input shape (static under jit), so one model runs at any H, W that are multiples of
  ``patch_size * window_size * 2 ** (len(depths) - 1)`` (every stage then holds a whole
  number of windows); other sizes raise ``ValueError``. As in the reference, a stage
  whose grid is no larger than one window does not shift.
* Masked attention logits are replaced by the dtype's most negative value (the
  reference adds -100), so masked pairs get exactly zero weight in any dtype.
* The final expansion scales by ``patch_size`` (the reference hard-codes 4, which only
  matches its default patch size).

Same parameters and the same function, computed in forms that are faster on XLA:CPU
(``tests/test_swin_unet_perf.py`` checks logits and every gradient against a plain
float64 implementation; ``bench/README.md`` has the measured effect of each):
* the final expansion, its LayerNorm and the 1x1 head are computed together on the
  sub-pixel layout (:meth:`PatchExpand.project`), never forming the full-resolution
  ``embed_dim``-channel map;
* LayerNorm statistics in float32 with the two-pass variance (PyTorch's; flax uses
  ``E[x**2] - E[x]**2``) and a hand-written backward pass; where a dense layer follows,
  the LayerNorm's scale and bias are folded into its weights;
* the MLP (without dropout) runs in token chunks under ``jax.checkpoint`` (on the CPU
  only: other backends run it whole);
* dense layers use a custom VJP whose weight gradient lets XLA transpose the narrower
  operand; the relative-position bias is read by a one-hot matmul and the shift mask
  added with it; exact GELU in PyTorch's erf form (``jax.nn.gelu`` uses erfc; they
  differ by ~1e-6); drop path multiplies by a per-example factor.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from echojax.models import layers

_LINEAR_INIT = nnx.initializers.truncated_normal(stddev=0.02)
_LN_EPSILON = 1e-5  # PyTorch's LayerNorm default
_CHUNK_TOKENS = 8192  # tokens per chunk (_token_chunks, _grouped_mean_square)


def _linear(in_features, out_features, *, use_bias=True, dtype, param_dtype, rngs):
    return nnx.Linear(
        in_features,
        out_features,
        use_bias=use_bias,
        kernel_init=_LINEAR_INIT,
        dtype=dtype,
        param_dtype=param_dtype,
        rngs=rngs,
    )


@functools.partial(jax.custom_vjp, nondiff_argnums=(1,))
def _normalize(x: jax.Array, epsilon: float) -> jax.Array:
    """``(x - mean) / sqrt(var + epsilon)`` over the last axis, in float32 (the
    two-pass variance, as PyTorch's LayerNorm)."""
    return _normalize_fwd(x, epsilon)[0]


def _normalize_fwd(x, epsilon):
    x32 = x.astype(jnp.float32)
    centred = x32 - jnp.mean(x32, axis=-1, keepdims=True)
    rstd = jax.lax.rsqrt(jnp.mean(jnp.square(centred), axis=-1, keepdims=True) + epsilon)
    xhat = centred * rstd
    return xhat, (xhat, rstd, jnp.zeros((0,), x.dtype))


def _normalize_bwd(epsilon, res, g):
    xhat, rstd, dtype_carrier = res
    g = g.astype(jnp.float32)
    dx = rstd * (g - jnp.mean(g, axis=-1, keepdims=True)
                 - xhat * jnp.mean(g * xhat, axis=-1, keepdims=True))
    return (dx.astype(dtype_carrier.dtype),)


_normalize.defvjp(_normalize_fwd, _normalize_bwd)


class LayerNorm(nnx.LayerNorm):
    """``nnx.LayerNorm`` (same parameters) with a hand-written backward pass, statistics
    in float32 and the two-pass variance (as PyTorch's).

    Where a dense layer follows, :meth:`normalize` gives the input without the affine
    part, which :func:`_dense` folds into the layer's weights (``norm=``): flax's form
    multiplies by ``rsqrt(var) * scale`` at full size, and XLA:CPU materialises
    full-size broadcasts of the scale and bias in both passes.
    """

    def normalize(self, x: jax.Array) -> jax.Array:
        """``(x - mean) / sqrt(var + epsilon)``, without scale and bias."""
        return _normalize(x, self.epsilon)

    def __call__(self, x: jax.Array) -> jax.Array:
        dtype = self.dtype or jnp.result_type(x, self.scale[...])
        y = self.normalize(x) * self.scale[...].astype(jnp.float32) + self.bias[...].astype(
            jnp.float32)
        return y.astype(dtype)


def _layer_norm(num_features, *, dtype, param_dtype, rngs):
    return LayerNorm(
        num_features, epsilon=_LN_EPSILON, dtype=dtype, param_dtype=param_dtype, rngs=rngs
    )


def _dropout(rate: float, *, broadcast_dims=(), rngs: nnx.Rngs) -> nnx.Dropout:
    # Dropout layers with rate 0 never draw keys: keep them out of the RNG state.
    return nnx.Dropout(rate, broadcast_dims=broadcast_dims, rngs=rngs if rate > 0 else None)


# ---------------------------------------------------------------------------------------
# Dense layers with a weight gradient laid out for XLA:CPU.


@jax.custom_vjp
def _matmul(x: jax.Array, kernel: jax.Array) -> jax.Array:
    """``x [..., K] @ kernel [K, N]``, differentiated with the weight gradient taken as
    ``(dy^T x)^T`` when ``N > K`` (see :func:`_matmul_bwd`)."""
    return x @ kernel


def _matmul_fwd(x, kernel):
    return x @ kernel, (x, kernel)


def _matmul_bwd(res, dy):
    x, kernel = res
    k, n = kernel.shape
    x2, dy2 = x.reshape(-1, k), dy.reshape(-1, n)
    dx = (dy @ kernel.T.astype(dy.dtype)).astype(x.dtype)
    # The weight gradient contracts over the tokens, the major axis of both operands.
    # XLA:CPU then transposes one of them in memory (a strided copy of the whole
    # activation, several ms per million elements on this CPU); by default it picks
    # the output gradient. Contracting in the other order makes it transpose ``x``
    # instead, the smaller of the two when the layer widens (qkv, MLP fc1, expansions).
    if n > k:
        dk = jax.lax.dot_general(dy2, x2, (((0,), (0,)), ((), ()))).T
    else:
        dk = jax.lax.dot_general(x2, dy2, (((0,), (0,)), ((), ())))
    return dx, dk.astype(kernel.dtype)


_matmul.defvjp(_matmul_fwd, _matmul_bwd)


def _grouped_mean_square(x: jax.Array, kernel: jax.Array, groups: int) -> jax.Array:
    """``mean((x @ kernel)**2)`` over each of ``groups`` equal column groups, in float32:
    ``x [..., D], kernel [D, groups * C] -> [..., groups, 1]``.

    The product can be the largest tensor of the network (the final expansion's); it is
    formed in token chunks under ``jax.checkpoint`` (see :func:`_token_chunks`), so the
    backward pass recomputes each chunk instead of storing it.
    """

    def one_chunk(xc):
        z = _matmul(xc, kernel).reshape(xc.shape[0], groups, -1).astype(jnp.float32)
        return jnp.mean(jnp.square(z), axis=-1)

    return _token_chunks(one_chunk, x)[..., None]


def _gelu(x: jax.Array) -> jax.Array:
    # Exact GELU in PyTorch's form, x/2 (1 + erf(x/sqrt 2)); jax.nn.gelu's exact form
    # goes through erfc, which is about a third slower on the CPU. The two differ by
    # at most ~1e-6 (absolute).
    return 0.5 * x * (1.0 + jax.lax.erf(x * np.float32(1 / np.sqrt(2)).astype(x.dtype)))


def _token_chunks(fn, x: jax.Array) -> jax.Array:
    """``fn`` applied to ``x [..., C]`` flattened to tokens, ``_CHUNK_TOKENS`` (or the
    largest divisor of the token count below it) at a time, each chunk under
    ``jax.checkpoint``; ``fn: [n, C] -> [n, D]``.

    A memory-traffic measure for XLA:CPU: off the CPU (read at trace time) ``fn`` runs
    on all tokens at once and its activations are stored, since a GPU wants large
    kernels and has the memory.
    """
    *lead, d = x.shape
    tokens = int(np.prod(lead))
    if jax.default_backend() != "cpu":
        out = fn(x.reshape(tokens, d))
        return out.reshape(*lead, out.shape[-1])
    fn = jax.checkpoint(fn)
    chunk = max(c for c in range(1, min(tokens, _CHUNK_TOKENS) + 1) if tokens % c == 0)
    if 8 * chunk < min(tokens, _CHUNK_TOKENS):
        chunk = tokens  # an awkward token count: one chunk rather than many tiny ones
    out = jax.lax.map(fn, x.reshape(tokens // chunk, chunk, d))
    return out.reshape(*lead, out.shape[-1])


def _dense(layer: nnx.Linear, x: jax.Array, *, norm: LayerNorm | None = None) -> jax.Array:
    """``layer(x)`` (same parameters, dtype promotion and result) through :func:`_matmul`.

    With ``norm``, ``x`` is ``norm.normalize(x0)`` and the result is ``layer(norm(x0))``:
    ``(xhat * scale + bias) @ K + b = xhat @ (scale[:, None] * K) + (bias @ K + b)``.
    """
    x, kernel, bias = _dense_params(layer, x, norm=norm)
    y = _matmul(x, kernel)
    return y if bias is None else y + bias


def _dense_params(layer, x, *, norm=None):
    """``(x, kernel, bias)`` of :func:`_dense`, promoted to the layer's dtype."""
    kernel = layer.kernel[...]
    bias = layer.bias[...] if layer.bias is not None else None
    if norm is not None:
        shift = norm.bias[...] @ kernel
        bias = shift if bias is None else bias + shift
        kernel = norm.scale[...][:, None] * kernel
    return layer.promote_dtype((x, kernel, bias), dtype=layer.dtype)


# ---------------------------------------------------------------------------------------
# Windows, relative positions and the shifted-window mask (static, numpy).


def window_partition(x: jax.Array, window: int) -> jax.Array:
    """``[B, H, W, C] -> [B, H/window, W/window, window*window, C]``, row-major windows."""
    b, h, w, c = x.shape
    x = x.reshape(b, h // window, window, w // window, window, c)
    return x.transpose(0, 1, 3, 2, 4, 5).reshape(b, h // window, w // window, window * window, c)


def window_merge(x: jax.Array, window: int) -> jax.Array:
    """Inverse of :func:`window_partition`: ``[B, nH, nW, window*window, C] -> [B, H, W, C]``."""
    b, nh, nw, _, c = x.shape
    x = x.reshape(b, nh, nw, window, window, c).transpose(0, 1, 3, 2, 4, 5)
    return x.reshape(b, nh * window, nw * window, c)


@functools.lru_cache(maxsize=None)
def relative_position_index(window: int) -> np.ndarray:
    """``int32[window**2, window**2]``: for tokens i, j of a window, the row of the
    ``(2 window - 1)**2``-entry bias table for their offset (dy, dx)."""
    coords = np.stack(np.meshgrid(np.arange(window), np.arange(window), indexing="ij"))
    coords = coords.reshape(2, -1)
    rel = coords[:, :, None] - coords[:, None, :] + (window - 1)  # [2, N, N] in [0, 2w-2]
    return (rel[0] * (2 * window - 1) + rel[1]).astype(np.int32)


@functools.lru_cache(maxsize=None)
def relative_position_one_hot(window: int) -> np.ndarray:
    """``float32[window**4, (2 window - 1)**2]``: row ``i * window**2 + j`` is the one-hot
    of :func:`relative_position_index` ``[i, j]``."""
    index = relative_position_index(window).reshape(-1)
    return np.eye((2 * window - 1) ** 2, dtype=np.float32)[index]


@functools.lru_cache(maxsize=None)
def shifted_window_mask(height: int, width: int, window: int, shift: int) -> np.ndarray:
    """``bool[H/window, W/window, window**2, window**2]``: True where two tokens of a
    window of the grid rolled by ``-shift`` may attend to each other.

    Rolling the grid by ``-shift`` brings the first ``shift`` rows/columns to the end,
    so the last windows mix tokens that are far apart in the image. Label each token by
    the region it came from (per axis: ``[0, -window)``, ``[-window, -shift)``,
    ``[-shift, end)`` of the rolled grid) and allow only pairs from the same region.
    """
    labels = np.zeros((height, width), np.int32)
    bounds = (slice(0, -window), slice(-window, -shift), slice(-shift, None))
    count = 0
    for rows in bounds:
        for cols in bounds:
            labels[rows, cols] = count
            count += 1
    windows = np.asarray(window_partition(labels[None, :, :, None], window))[0, ..., 0]
    return windows[..., :, None] == windows[..., None, :]


# ---------------------------------------------------------------------------------------
# Modules.


class WindowAttention(nnx.Module):
    """Multi-head self-attention within windows, with a relative position bias.

    ``x: [B, nH, nW, window**2, dim]``, optional ``mask: bool[nH, nW, window**2,
    window**2]`` (True = may attend) ``-> [B, nH, nW, window**2, dim]``.
    """

    def __init__(
        self,
        dim: int,
        num_heads: int,
        *,
        window_size: int,
        qkv_bias: bool = True,
        attn_drop: float = 0.0,
        proj_drop: float = 0.0,
        dtype=None,
        param_dtype=jnp.float32,
        rngs: nnx.Rngs,
    ):
        if dim % num_heads:
            raise ValueError(f"WindowAttention: dim {dim} not divisible by num_heads {num_heads}")
        self.num_heads = num_heads
        self.window_size = window_size
        self.scale = (dim // num_heads) ** -0.5
        kw = dict(dtype=dtype, param_dtype=param_dtype, rngs=rngs)
        self.qkv = _linear(dim, 3 * dim, use_bias=qkv_bias, **kw)
        self.proj = _linear(dim, dim, **kw)
        self.relative_position_bias_table = nnx.Param(
            _LINEAR_INIT(rngs.params(), ((2 * window_size - 1) ** 2, num_heads), param_dtype)
        )
        self.attn_drop = _dropout(attn_drop, rngs=rngs)
        self.proj_drop = _dropout(proj_drop, rngs=rngs)

    def __call__(self, x: jax.Array, mask: jax.Array | np.ndarray | None = None, *,
                 norm: LayerNorm | None = None) -> jax.Array:
        # norm: x is norm.normalize(x0), for norm(x0) (see _dense).
        *lead, n, dim = x.shape
        qkv = _dense(self.qkv, x, norm=norm).reshape(*lead, n, 3, self.num_heads, dim // self.num_heads)
        q, k, v = qkv[..., 0, :, :], qkv[..., 1, :, :], qkv[..., 2, :, :]
        # Logits and softmax in float32 whatever the compute dtype.
        logits = jnp.einsum("...qhd,...khd->...hqk", q, k, preferred_element_type=jnp.float32)
        # The bias table read as a matmul with a constant one-hot matrix: its gradient
        # is then a matmul too, not a scatter-add.
        table = self.relative_position_bias_table[...].astype(jnp.float32)
        bias = (relative_position_one_hot(self.window_size) @ table).reshape(n, n, self.num_heads)
        logits = logits * self.scale + bias.transpose(2, 0, 1)
        if mask is not None:
            # Adding the most negative float32 to a logit of ordinary size gives that
            # value again (its spacing there is ~2e31): exactly zero weight after softmax,
            # as a select would, but fused into the same pass as the bias.
            logits = logits + np.where(mask, 0.0, np.finfo(np.float32).min).astype(
                np.float32)[..., None, :, :]
        attn = self.attn_drop(jax.nn.softmax(logits, axis=-1)).astype(v.dtype)
        out = jnp.einsum("...hqk,...khd->...qhd", attn, v).reshape(*lead, n, dim)
        return self.proj_drop(_dense(self.proj, out))


class Mlp(nnx.Module):
    """``dim -> hidden -> dim`` with exact GELU and dropout after each linear."""

    def __init__(self, dim: int, hidden: int, *, drop: float = 0.0, dtype=None,
                 param_dtype=jnp.float32, rngs: nnx.Rngs):
        kw = dict(dtype=dtype, param_dtype=param_dtype, rngs=rngs)
        self.fc1 = _linear(dim, hidden, **kw)
        self.fc2 = _linear(hidden, dim, **kw)
        self.drop = _dropout(drop, rngs=rngs)

    def __call__(self, x: jax.Array, *, norm: LayerNorm | None = None) -> jax.Array:
        # norm: x is norm.normalize(x0), for norm(x0) (see _dense).
        if self.drop.rate > 0:
            x = self.drop(_gelu(_dense(self.fc1, x, norm=norm)))
            return self.drop(_dense(self.fc2, x))
        # Without dropout the MLP is a function of each token alone: run it a few
        # thousand tokens at a time under jax.checkpoint, so the hidden layer (4x wider
        # than the tokens) never exists at full size; the backward pass recomputes it
        # chunk by chunk.
        x, k1, b1 = _dense_params(self.fc1, x, norm=norm)
        _, k2, b2 = _dense_params(self.fc2, x)

        def one_chunk(xc):
            return _matmul(_gelu(_matmul(xc, k1) + b1), k2) + b2

        return _token_chunks(one_chunk, x)


class SwinBlock(nnx.Module):
    """Swin Transformer block: ``x + DropPath(W-MSA(LN(x)))``, then
    ``x + DropPath(MLP(LN(x)))``; ``x: [B, H, W, dim] -> [B, H, W, dim]``.

    ``shifted=True`` rolls the grid by half a window before the window attention (and
    back after), with :func:`shifted_window_mask`; on a grid no larger than one window
    it does not shift (nothing to connect). Drop path (stochastic depth) drops the
    residual branch per example with probability ``drop_path`` in training.
    """

    def __init__(
        self,
        dim: int,
        num_heads: int,
        *,
        window_size: int,
        shifted: bool,
        mlp_ratio: float = 4.0,
        qkv_bias: bool = True,
        drop: float = 0.0,
        attn_drop: float = 0.0,
        drop_path: float = 0.0,
        dtype=None,
        param_dtype=jnp.float32,
        rngs: nnx.Rngs,
    ):
        kw = dict(dtype=dtype, param_dtype=param_dtype, rngs=rngs)
        self.window_size = window_size
        self.shift_size = window_size // 2 if shifted else 0
        self.norm1 = _layer_norm(dim, **kw)
        self.attn = WindowAttention(dim, num_heads, window_size=window_size, qkv_bias=qkv_bias,
                                    attn_drop=attn_drop, proj_drop=drop, **kw)
        self.norm2 = _layer_norm(dim, **kw)
        self.mlp = Mlp(dim, int(dim * mlp_ratio), drop=drop, **kw)
        # Per-example mask broadcast over H, W, C: stochastic depth.
        self.drop_path = _dropout(drop_path, broadcast_dims=(1, 2, 3), rngs=rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        _, h, w, _ = x.shape
        ws = self.window_size
        if h % ws or w % ws:
            raise ValueError(f"SwinBlock: grid {h}x{w} is not a multiple of window {ws}")
        shift = self.shift_size if min(h, w) > ws else 0
        y = self.norm1.normalize(x)  # scale and bias folded into qkv
        mask = None
        if shift:
            y = jnp.roll(y, (-shift, -shift), axis=(1, 2))
            mask = shifted_window_mask(h, w, ws, shift)
        y = window_merge(self.attn(window_partition(y, ws), mask, norm=self.norm1), ws)
        if shift:
            y = jnp.roll(y, (shift, shift), axis=(1, 2))
        x = x + self._drop_path(y)
        return x + self._drop_path(self.mlp(self.norm2.normalize(x), norm=self.norm2))

    def _drop_path(self, y: jax.Array) -> jax.Array:
        # The Dropout draws one keep/drop per example (broadcast over H, W, C); applied
        # to ones it gives the per-example factor 0 or 1/keep, and a multiply by it
        # fuses into the residual add, where a full-size select would not.
        if self.drop_path.rate == 0:
            return y
        return y * self.drop_path(jnp.ones((y.shape[0], 1, 1, 1), y.dtype))


class PatchMerging(nnx.Module):
    """2x down-sampling: concat each 2x2 neighbourhood (4 dim), LayerNorm, linear to
    2 dim without bias; ``[B, H, W, dim] -> [B, H/2, W/2, 2 dim]``."""

    def __init__(self, dim: int, *, dtype=None, param_dtype=jnp.float32, rngs: nnx.Rngs):
        kw = dict(dtype=dtype, param_dtype=param_dtype, rngs=rngs)
        self.norm = _layer_norm(4 * dim, **kw)
        self.reduction = _linear(4 * dim, 2 * dim, use_bias=False, **kw)

    def __call__(self, x: jax.Array) -> jax.Array:
        # Channel order (0,0), (1,0), (0,1), (1,1) as in the reference, so that
        # converted weights line up.
        x = jnp.concatenate(
            [x[:, 0::2, 0::2], x[:, 1::2, 0::2], x[:, 0::2, 1::2], x[:, 1::2, 1::2]], axis=-1
        )
        return _dense(self.reduction, self.norm.normalize(x), norm=self.norm)


class PatchExpand(nnx.Module):
    """``scale``x up-sampling: linear ``dim -> scale**2 * out_dim`` without bias,
    depth-to-space, LayerNorm; ``[B, H, W, dim] -> [B, scale H, scale W, out_dim]``.

    The decoder's patch expanding is ``scale=2, out_dim=dim // 2``; the final one is
    ``scale=patch_size, out_dim=dim``."""

    def __init__(self, dim: int, out_dim: int, *, scale: int, dtype=None,
                 param_dtype=jnp.float32, rngs: nnx.Rngs):
        kw = dict(dtype=dtype, param_dtype=param_dtype, rngs=rngs)
        self.scale = scale
        self.out_dim = out_dim
        self.expand = _linear(dim, scale * scale * out_dim, use_bias=False, **kw)
        self.norm = _layer_norm(out_dim, **kw)

    def __call__(self, x: jax.Array) -> jax.Array:
        b, h, w, _ = x.shape
        s, c = self.scale, self.out_dim
        x = _dense(self.expand, x).reshape(b, h, w, s, s, c).transpose(0, 1, 3, 2, 4, 5)
        return self.norm(x.reshape(b, h * s, w * s, c))

    def project(self, x: jax.Array, kernel: jax.Array) -> jax.Array:
        """``self(x) @ kernel`` for ``kernel: [out_dim, K]``, without forming ``self(x)``:
        ``[B, H, W, dim] -> [B, scale H, scale W, K]``.

        Used for the final expansion followed by the 1x1 head, where ``self(x)`` is the
        largest tensor of the network (``embed_dim`` channels at full resolution) and
        ``K`` is the number of classes. Every step is per pixel, so the LayerNorm and
        the projection run on the sub-pixel layout and only the ``K``-channel result is
        moved to its pixels. The LayerNorm's centring is folded into the weights: with
        ``E_s`` the expansion's ``out_dim`` columns for sub-pixel ``s`` and ``Ê_s`` the
        same with each row's mean subtracted, ``z_s - mean(z_s) = x Ê_s`` exactly, so

            LN(z_s) @ kernel = (x Ê_s)(gamma * kernel) / sqrt(var_s + eps) + beta @ kernel,
            var_s = mean((x Ê_s)**2),

        where only ``var_s`` needs the ``out_dim``-wide product. The variance is the
        two-pass one (no cancellation), against ``LayerNorm``'s ``E[z**2] - E[z]**2``.
        """
        b, h, w, dim = x.shape
        s, c = self.scale, self.out_dim
        k = kernel.shape[-1]
        cdt = self.expand.dtype or x.dtype
        expand = self.expand.kernel[...].reshape(dim, s * s, c)
        centred = expand - expand.mean(-1, keepdims=True)
        scaled = self.norm.scale[...][:, None] * kernel  # [c, K]
        fused = jnp.einsum("dsc,ck->dsk", centred, scaled).reshape(dim, s * s * k)
        shift = self.norm.bias[...] @ kernel  # [K]
        x = x.astype(cdt)
        var = _grouped_mean_square(x, centred.reshape(dim, s * s * c).astype(cdt), s * s)
        y = _matmul(x, fused.astype(cdt)).reshape(b, h, w, s * s, k)
        y = y.astype(jnp.float32) * jax.lax.rsqrt(var + self.norm.epsilon) + shift
        y = y.astype(cdt).reshape(b, h, w, s, s, k).transpose(0, 1, 3, 2, 4, 5)
        return y.reshape(b, h * s, w * s, k)


class SwinStage(nnx.Module):
    """``depth`` Swin blocks alternating regular and shifted windows; ``[B, H, W, dim]``
    in and out (resampling is done by the caller)."""

    def __init__(self, dim: int, depth: int, num_heads: int, *, window_size: int,
                 mlp_ratio: float, qkv_bias: bool, drop: float, attn_drop: float,
                 drop_path: Sequence[float], dtype=None, param_dtype=jnp.float32,
                 rngs: nnx.Rngs):
        self.blocks = nnx.List([
            SwinBlock(dim, num_heads, window_size=window_size, shifted=bool(i % 2),
                      mlp_ratio=mlp_ratio, qkv_bias=qkv_bias, drop=drop, attn_drop=attn_drop,
                      drop_path=float(drop_path[i]), dtype=dtype, param_dtype=param_dtype,
                      rngs=rngs)
            for i in range(depth)
        ])

    def __call__(self, x: jax.Array) -> jax.Array:
        for block in self.blocks:
            x = block(x)
        return x


class SwinUNet(nnx.Module):
    """Swin-UNet: ``x f32[B, H, W, in_channels] -> logits f32[B, H, W, num_classes]``.

    Args:
      in_channels: input image channels.
      num_classes: output channels (logits).
      patch_size: side of the square patches embedded as tokens.
      embed_dim: token width of the first stage (doubles at every patch merging).
      depths: Swin blocks per encoder stage; the decoder mirrors all but the last.
      num_heads: attention heads per encoder stage (mirrored in the decoder).
      window_size: attention window side, in tokens.
      mlp_ratio: MLP hidden width / token width.
      qkv_bias: bias in the query/key/value projection.
      drop_rate: dropout after the patch embedding, the attention projection and the MLP.
      attn_drop_rate: dropout on the attention weights.
      drop_path_rate: stochastic depth, rising linearly from 0 over the encoder's blocks
        to this value; each decoder stage reuses the rates of its encoder stage.
      dtype: computation dtype; parameters stay ``param_dtype``, logits are float32.
      param_dtype: parameter dtype.
      rngs: initialisation keys; the ``dropout`` stream (or ``default``) drives dropout
        and drop path.

    H and W must be multiples of ``patch_size * window_size * 2 ** (len(depths) - 1)``.
    """

    def __init__(
        self,
        in_channels: int,
        num_classes: int,
        *,
        patch_size: int = 4,
        embed_dim: int = 96,
        depths: Sequence[int] = (2, 2, 2, 2),
        num_heads: Sequence[int] = (3, 6, 12, 24),
        window_size: int = 8,
        mlp_ratio: float = 4.0,
        qkv_bias: bool = True,
        drop_rate: float = 0.0,
        attn_drop_rate: float = 0.0,
        drop_path_rate: float = 0.1,
        dtype=None,
        param_dtype=jnp.float32,
        rngs: nnx.Rngs,
    ):
        depths, num_heads = tuple(depths), tuple(num_heads)
        if len(depths) < 2 or len(depths) != len(num_heads):
            raise ValueError(
                f"SwinUNet: depths {depths} and num_heads {num_heads} must have the same "
                "length, at least 2"
            )
        if not 0.0 <= drop_path_rate < 1.0:
            raise ValueError(f"SwinUNet: drop_path_rate must be in [0, 1), got {drop_path_rate}")
        self.in_channels = in_channels
        self.num_classes = num_classes
        self.patch_size = patch_size
        self.window_size = window_size
        self.num_stages = len(depths)
        kw = dict(dtype=dtype, param_dtype=param_dtype, rngs=rngs)
        stage_kw = dict(window_size=window_size, mlp_ratio=mlp_ratio, qkv_bias=qkv_bias,
                        drop=drop_rate, attn_drop=attn_drop_rate, **kw)
        dims = [embed_dim * 2**i for i in range(self.num_stages)]
        rates = np.linspace(0.0, drop_path_rate, sum(depths))
        starts = np.cumsum((0,) + depths)
        stage_rates = [rates[starts[i]:starts[i + 1]] for i in range(self.num_stages)]

        self.patch_embed = nnx.Conv(
            in_channels, embed_dim, kernel_size=(patch_size, patch_size),
            strides=(patch_size, patch_size), padding="VALID",
            kernel_init=layers.TORCH_CONV_INIT, **kw)
        self.patch_norm = _layer_norm(embed_dim, **kw)
        self.pos_drop = _dropout(drop_rate, rngs=rngs)
        self.encoder = nnx.List([
            SwinStage(dims[i], depths[i], num_heads[i], drop_path=stage_rates[i], **stage_kw)
            for i in range(self.num_stages)
        ])
        self.merges = nnx.List([PatchMerging(dims[i], **kw) for i in range(self.num_stages - 1)])
        self.norm = _layer_norm(dims[-1], **kw)

        # Decoder levels, from just below the bottleneck to the first stage.
        levels = range(self.num_stages - 2, -1, -1)
        self.expands = nnx.List(
            [PatchExpand(dims[i + 1], dims[i], scale=2, **kw) for i in levels]
        )
        self.concat_linears = nnx.List([_linear(2 * dims[i], dims[i], **kw) for i in levels])
        self.decoder = nnx.List([
            SwinStage(dims[i], depths[i], num_heads[i], drop_path=stage_rates[i], **stage_kw)
            for i in levels
        ])
        self.norm_up = _layer_norm(embed_dim, **kw)
        self.final_expand = PatchExpand(embed_dim, embed_dim, scale=patch_size, **kw)
        self.head = layers.Conv1x1(embed_dim, num_classes, use_bias=False, **kw)

    @property
    def size_multiple(self) -> int:
        """H and W of the input must be multiples of this."""
        return self.patch_size * self.window_size * 2 ** (self.num_stages - 1)

    def __call__(self, x: jax.Array) -> jax.Array:
        layers.check_spatial(
            x.shape, in_channels=self.in_channels, multiple=self.size_multiple, model="swin_unet"
        )
        x = self.pos_drop(self.patch_norm(self.patch_embed(x)))
        skips = []
        for i, stage in enumerate(self.encoder):
            if i > 0:
                x = self.merges[i - 1](x)
            skips.append(x)  # the skip is the stage's input, as in the reference
            x = stage(x)
        x = self.norm(x)
        skips.pop()
        for expand, concat_linear, stage in zip(self.expands, self.concat_linears, self.decoder):
            x = expand(x)
            x = stage(_dense(concat_linear, jnp.concatenate([x, skips.pop()], axis=-1)))
        # final_expand then head, computed as one (see PatchExpand.project).
        head = self.head.conv.kernel[...]
        return self.final_expand.project(self.norm_up(x), head.reshape(head.shape[-2:])).astype(
            jnp.float32)
