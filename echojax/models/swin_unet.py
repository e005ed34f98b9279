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

Implementations (``impl``, same parameters for all; ``echojax.models.layers.IMPLS``):
``"flax"`` computes each layer the plain way, as written above (``nnx.LayerNorm``,
``nnx.Linear``, the bias gathered from its table, a masked softmax, depth-to-space then
LayerNorm then the head); ``"cpu"`` and ``"gpu"`` compute the same function in the forms
of :mod:`echojax.ops` that XLA runs faster (LayerNorm's scale and bias folded into the
next dense layer, dense layers and LayerNorm with hand-written backward passes, the
final expansion, LayerNorm and head on the sub-pixel layout; ``"cpu"`` also runs the
MLP and the final variance in checkpointed chunks of ``chunk_tokens`` tokens).
``tests/test_swin_unet_perf.py`` checks every implementation's logits and gradients
against ``"flax"`` in float64; ``bench/README.md`` has the measured effect of each form.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from echojax import ops
from echojax.models import layers

_LINEAR_INIT = nnx.initializers.truncated_normal(stddev=0.02)
_LN_EPSILON = 1e-5  # PyTorch's LayerNorm default


def _linear(in_features, out_features, *, use_bias=True, dtype, param_dtype, rngs):
    return nnx.Linear(in_features, out_features, use_bias=use_bias, kernel_init=_LINEAR_INIT,
                      dtype=dtype, param_dtype=param_dtype, rngs=rngs)


def _layer_norm(num_features, *, dtype, param_dtype, rngs):
    # Two-pass variance, as PyTorch's LayerNorm (flax's default is E[x^2] - E[x]^2).
    return nnx.LayerNorm(num_features, epsilon=_LN_EPSILON, use_fast_variance=False,
                         dtype=dtype, param_dtype=param_dtype, rngs=rngs)


def _dropout(rate: float, *, broadcast_dims=(), rngs: nnx.Rngs) -> nnx.Dropout:
    # Dropout layers with rate 0 never draw keys: keep them out of the RNG state.
    return nnx.Dropout(rate, broadcast_dims=broadcast_dims, rngs=rngs if rate > 0 else None)


# ---------------------------------------------------------------------------------------
# The three computations whose form depends on the implementation.


def layer_norm(norm: nnx.LayerNorm, x: jax.Array, impl: str) -> jax.Array:
    """``norm(x)``."""
    if impl == "flax":
        return norm(x)
    dtype = norm.dtype or jnp.result_type(x, norm.scale[...])
    return ops.layer_norm(x, norm.scale[...], norm.bias[...], epsilon=norm.epsilon, dtype=dtype)


def _dense_operands(layer: nnx.Linear, x: jax.Array, norm: nnx.LayerNorm | None):
    """``(x', kernel, bias)`` with ``x' @ kernel + bias = layer(norm(x))`` (or
    ``layer(x)``), promoted to the layer's dtype; the norm's scale and bias are folded
    into the layer's weights."""
    kernel = layer.kernel[...]
    bias = layer.bias[...] if layer.bias is not None else None
    if norm is not None:
        x = ops.normalize(x, norm.epsilon)
        kernel, bias = ops.fold_affine(kernel, bias, norm.scale[...], norm.bias[...])
    return layer.promote_dtype((x, kernel, bias), dtype=layer.dtype)


def dense(layer: nnx.Linear, x: jax.Array, impl: str, *,
          norm: nnx.LayerNorm | None = None) -> jax.Array:
    """``layer(norm(x))``, or ``layer(x)`` without ``norm``."""
    if impl == "flax":
        return layer(x if norm is None else norm(x))
    return ops.dense(*_dense_operands(layer, x, norm))


def gelu(x: jax.Array, impl: str) -> jax.Array:
    """Exact (erf) GELU, as ``torch.nn.GELU()``."""
    return jax.nn.gelu(x, approximate=False) if impl == "flax" else ops.gelu(x)


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


@functools.cache
def relative_position_index(window: int) -> np.ndarray:
    """``int32[window**2, window**2]``: for tokens i, j of a window, the row of the
    ``(2 window - 1)**2``-entry bias table for their offset (dy, dx)."""
    coords = np.stack(np.meshgrid(np.arange(window), np.arange(window), indexing="ij"))
    coords = coords.reshape(2, -1)
    rel = coords[:, :, None] - coords[:, None, :] + (window - 1)  # [2, N, N] in [0, 2w-2]
    return (rel[0] * (2 * window - 1) + rel[1]).astype(np.int32)


@functools.cache
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
    window**2]`` (True = may attend) ``-> [B, nH, nW, window**2, dim]``; attends over
    ``norm(x)`` (the block's pre-norm, per token) when ``norm`` is given.
    """

    def __init__(self, dim: int, num_heads: int, *, window_size: int, qkv_bias: bool = True,
                 attn_drop: float = 0.0, proj_drop: float = 0.0, dtype=None,
                 param_dtype=jnp.float32, impl: str = "flax", rngs: nnx.Rngs):
        if dim % num_heads:
            raise ValueError(f"WindowAttention: dim {dim} not divisible by num_heads {num_heads}")
        self.impl = layers.check_impl(impl)
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

    def __call__(self, x: jax.Array, mask: np.ndarray | None = None, *,
                 norm: nnx.LayerNorm | None = None) -> jax.Array:
        *lead, n, dim = x.shape
        heads = self.num_heads
        qkv = dense(self.qkv, x, self.impl, norm=norm).reshape(*lead, n, 3, heads, dim // heads)
        q, k, v = qkv[..., 0, :, :], qkv[..., 1, :, :], qkv[..., 2, :, :]
        # Logits and softmax in at least float32 whatever the compute dtype.
        logits_dtype = jnp.promote_types(q.dtype, jnp.float32)
        logits = jnp.einsum("...qhd,...khd->...hqk", q, k, preferred_element_type=logits_dtype)
        logits = logits * self.scale
        index = relative_position_index(self.window_size)
        table = self.relative_position_bias_table[...]
        if self.impl == "flax":
            logits = logits + table[index].astype(logits_dtype).transpose(2, 0, 1)
            if mask is not None:
                logits = jnp.where(mask[..., None, :, :], logits, jnp.finfo(logits_dtype).min)
        else:
            logits = logits + ops.gather_rows_by_matmul(table, index).transpose(2, 0, 1)
            if mask is not None:
                logits = logits + ops.additive_mask(mask)[..., None, :, :]
        attn = self.attn_drop(jax.nn.softmax(logits, axis=-1)).astype(v.dtype)
        out = jnp.einsum("...hqk,...khd->...qhd", attn, v).reshape(*lead, n, dim)
        return self.proj_drop(dense(self.proj, out, self.impl))


class Mlp(nnx.Module):
    """``dim -> hidden -> dim`` with exact GELU and dropout after each linear, over
    ``norm(x)`` when ``norm`` is given."""

    def __init__(self, dim: int, hidden: int, *, drop: float = 0.0, dtype=None,
                 param_dtype=jnp.float32, impl: str = "flax",
                 chunk_tokens: int | None = None, rngs: nnx.Rngs):
        kw = dict(dtype=dtype, param_dtype=param_dtype, rngs=rngs)
        self.impl = layers.check_impl(impl)
        self.chunk_tokens = chunk_tokens
        self.fc1 = _linear(dim, hidden, **kw)
        self.fc2 = _linear(hidden, dim, **kw)
        self.drop = _dropout(drop, rngs=rngs)

    def __call__(self, x: jax.Array, *, norm: nnx.LayerNorm | None = None) -> jax.Array:
        if self.impl != "flax" and self.drop.rate == 0:
            # Without dropout the MLP is a function of each token alone (ops.mlp runs
            # it in token chunks when chunk_tokens is set).
            x, k1, b1 = _dense_operands(self.fc1, x, norm)
            _, k2, b2 = _dense_operands(self.fc2, x, None)
            return ops.mlp(x, k1, b1, k2, b2, chunk_tokens=self.chunk_tokens)
        x = self.drop(gelu(dense(self.fc1, x, self.impl, norm=norm), self.impl))
        return self.drop(dense(self.fc2, x, self.impl))


class SwinBlock(nnx.Module):
    """Swin Transformer block: ``x + DropPath(W-MSA(LN(x)))``, then
    ``x + DropPath(MLP(LN(x)))``; ``x: [B, H, W, dim] -> [B, H, W, dim]``.

    ``shifted=True`` rolls the grid by half a window before the window attention (and
    back after), with :func:`shifted_window_mask`; on a grid no larger than one window
    it does not shift (nothing to connect). Drop path (stochastic depth) drops the
    residual branch per example with probability ``drop_path`` in training.
    """

    def __init__(self, dim: int, num_heads: int, *, window_size: int, shifted: bool,
                 mlp_ratio: float = 4.0, qkv_bias: bool = True, drop: float = 0.0,
                 attn_drop: float = 0.0, drop_path: float = 0.0, dtype=None,
                 param_dtype=jnp.float32, impl: str = "flax",
                 chunk_tokens: int | None = None, rngs: nnx.Rngs):
        kw = dict(dtype=dtype, param_dtype=param_dtype, rngs=rngs)
        self.impl = layers.check_impl(impl)
        self.window_size = window_size
        self.shift_size = window_size // 2 if shifted else 0
        self.norm1 = _layer_norm(dim, **kw)
        self.attn = WindowAttention(dim, num_heads, window_size=window_size, qkv_bias=qkv_bias,
                                    attn_drop=attn_drop, proj_drop=drop, impl=impl, **kw)
        self.norm2 = _layer_norm(dim, **kw)
        self.mlp = Mlp(dim, int(dim * mlp_ratio), drop=drop, impl=impl,
                       chunk_tokens=chunk_tokens, **kw)
        # Per-example mask broadcast over H, W, C: stochastic depth.
        self.drop_path = _dropout(drop_path, broadcast_dims=(1, 2, 3), rngs=rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        _, h, w, _ = x.shape
        ws = self.window_size
        if h % ws or w % ws:
            raise ValueError(f"SwinBlock: grid {h}x{w} is not a multiple of window {ws}")
        shift = self.shift_size if min(h, w) > ws else 0
        y, mask = x, None
        if shift:
            y = jnp.roll(y, (-shift, -shift), axis=(1, 2))
            mask = shifted_window_mask(h, w, ws, shift)
        # norm1 is per token: inside the attention, after the roll and the window
        # partition, it is the reference's norm1 before them.
        y = window_merge(self.attn(window_partition(y, ws), mask, norm=self.norm1), ws)
        if shift:
            y = jnp.roll(y, (shift, shift), axis=(1, 2))
        x = x + self._drop_path(y)
        return x + self._drop_path(self.mlp(x, norm=self.norm2))

    def _drop_path(self, y: jax.Array) -> jax.Array:
        if self.drop_path.rate == 0:
            return y
        if self.impl == "flax":
            return self.drop_path(y)
        # The same draw (one keep/drop per example) as a per-example factor 0 or 1/keep:
        # a multiply fuses into the residual add, where a full-size select does not.
        return y * self.drop_path(jnp.ones((y.shape[0], 1, 1, 1), y.dtype))


class PatchMerging(nnx.Module):
    """2x down-sampling: concat each 2x2 neighbourhood (4 dim), LayerNorm, linear to
    2 dim without bias; ``[B, H, W, dim] -> [B, H/2, W/2, 2 dim]``."""

    def __init__(self, dim: int, *, dtype=None, param_dtype=jnp.float32, impl: str = "flax",
                 rngs: nnx.Rngs):
        kw = dict(dtype=dtype, param_dtype=param_dtype, rngs=rngs)
        self.impl = layers.check_impl(impl)
        self.norm = _layer_norm(4 * dim, **kw)
        self.reduction = _linear(4 * dim, 2 * dim, use_bias=False, **kw)

    def __call__(self, x: jax.Array) -> jax.Array:
        # Channel order (0,0), (1,0), (0,1), (1,1) as in the reference, so that
        # converted weights line up.
        x = jnp.concatenate(
            [x[:, 0::2, 0::2], x[:, 1::2, 0::2], x[:, 0::2, 1::2], x[:, 1::2, 1::2]], axis=-1
        )
        return dense(self.reduction, x, self.impl, norm=self.norm)


class PatchExpand(nnx.Module):
    """``scale``x up-sampling: linear ``dim -> scale**2 * out_dim`` without bias,
    depth-to-space, LayerNorm; ``[B, H, W, dim] -> [B, scale H, scale W, out_dim]``.

    The decoder's patch expanding is ``scale=2, out_dim=dim // 2``; the final one is
    ``scale=patch_size, out_dim=dim``."""

    def __init__(self, dim: int, out_dim: int, *, scale: int, dtype=None,
                 param_dtype=jnp.float32, impl: str = "flax",
                 chunk_tokens: int | None = None, rngs: nnx.Rngs):
        kw = dict(dtype=dtype, param_dtype=param_dtype, rngs=rngs)
        self.impl = layers.check_impl(impl)
        self.chunk_tokens = chunk_tokens
        self.scale = scale
        self.out_dim = out_dim
        self.expand = _linear(dim, scale * scale * out_dim, use_bias=False, **kw)
        self.norm = _layer_norm(out_dim, **kw)

    def __call__(self, x: jax.Array) -> jax.Array:
        b, h, w, _ = x.shape
        s, c = self.scale, self.out_dim
        x = dense(self.expand, x, self.impl).reshape(b, h, w, s, s, c).transpose(0, 1, 3, 2, 4, 5)
        return layer_norm(self.norm, x.reshape(b, h * s, w * s, c), self.impl)

    def project(self, x: jax.Array, kernel: jax.Array) -> jax.Array:
        """``self(x) @ kernel`` for ``kernel: [out_dim, K]`` without forming ``self(x)``
        (:func:`echojax.ops.expand_norm_project`): ``[B, H, W, dim] -> [B, scale H,
        scale W, K]``. The final expansion followed by the head in the ``"cpu"`` and
        ``"gpu"`` implementations, where ``self(x)`` is the largest tensor of the network."""
        x = x.astype(self.expand.dtype or x.dtype)
        return ops.expand_norm_project(
            x, self.expand.kernel[...], self.norm.scale[...], self.norm.bias[...], kernel,
            factor=self.scale, epsilon=self.norm.epsilon, chunk_tokens=self.chunk_tokens)


class SwinStage(nnx.Module):
    """``depth`` Swin blocks alternating regular and shifted windows; ``[B, H, W, dim]``
    in and out (resampling is done by the caller)."""

    def __init__(self, dim: int, depth: int, num_heads: int, *, drop_path: Sequence[float],
                 **block_kw):
        self.blocks = nnx.List([
            SwinBlock(dim, num_heads, shifted=bool(i % 2), drop_path=float(drop_path[i]),
                      **block_kw)
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
      impl: layer implementation, one of ``layers.IMPLS`` (same parameters for all),
        or ``"auto"`` (default): the fastest for the default backend
        (``layers.resolve_impl``), stored as ``self.impl``.
      chunk_tokens: tokens per checkpointed chunk of the MLPs and the final variance
        with ``impl="cpu"`` (``None``: no chunks); unused by the other implementations.
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
        impl: str = "auto",
        chunk_tokens: int | None = ops.CHUNK_TOKENS,
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
        if chunk_tokens is not None and chunk_tokens < 1:
            raise ValueError(f"SwinUNet: chunk_tokens must be >= 1 or None, got {chunk_tokens}")
        impl = self.impl = layers.resolve_impl(impl)
        # Token chunks are an XLA:CPU memory-traffic measure (bench/README.md).
        chunk_tokens = chunk_tokens if impl == "cpu" else None
        self.in_channels = in_channels
        self.num_classes = num_classes
        self.patch_size = patch_size
        self.window_size = window_size
        self.num_stages = len(depths)
        kw = dict(dtype=dtype, param_dtype=param_dtype, rngs=rngs)
        ikw = dict(impl=impl, **kw)
        stage_kw = dict(window_size=window_size, mlp_ratio=mlp_ratio, qkv_bias=qkv_bias,
                        drop=drop_rate, attn_drop=attn_drop_rate, chunk_tokens=chunk_tokens,
                        **ikw)
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
        self.merges = nnx.List([PatchMerging(dims[i], **ikw) for i in range(self.num_stages - 1)])
        self.norm = _layer_norm(dims[-1], **kw)

        # Decoder levels, from just below the bottleneck to the first stage.
        levels = range(self.num_stages - 2, -1, -1)
        self.expands = nnx.List(
            [PatchExpand(dims[i + 1], dims[i], scale=2, **ikw) for i in levels]
        )
        self.concat_linears = nnx.List([_linear(2 * dims[i], dims[i], **kw) for i in levels])
        self.decoder = nnx.List([
            SwinStage(dims[i], depths[i], num_heads[i], drop_path=stage_rates[i], **stage_kw)
            for i in levels
        ])
        self.norm_up = _layer_norm(embed_dim, **kw)
        self.final_expand = PatchExpand(embed_dim, embed_dim, scale=patch_size,
                                        chunk_tokens=chunk_tokens, **ikw)
        self.head = layers.Conv1x1(embed_dim, num_classes, use_bias=False, **ikw)

    @property
    def size_multiple(self) -> int:
        """H and W of the input must be multiples of this."""
        return self.patch_size * self.window_size * 2 ** (self.num_stages - 1)

    def __call__(self, x: jax.Array) -> jax.Array:
        layers.check_spatial(
            x.shape, in_channels=self.in_channels, multiple=self.size_multiple, model="swin_unet"
        )
        impl = self.impl
        x = self.pos_drop(layer_norm(self.patch_norm, self.patch_embed(x), impl))
        skips = []
        for i, stage in enumerate(self.encoder):
            if i > 0:
                x = self.merges[i - 1](x)
            skips.append(x)  # the skip is the stage's input, as in the reference
            x = stage(x)
        x = layer_norm(self.norm, x, impl)
        skips.pop()
        for expand, concat_linear, stage in zip(self.expands, self.concat_linears, self.decoder):
            x = expand(x)
            x = stage(dense(concat_linear, jnp.concatenate([x, skips.pop()], axis=-1), impl))
        x = layer_norm(self.norm_up, x, impl)
        if impl == "flax":
            logits = self.head(self.final_expand(x))
            return logits.astype(layers.logits_dtype(logits))
        # The final expansion, its LayerNorm and the 1x1 head (no bias) computed as one.
        head = self.head.conv.kernel[...]
        logits = self.final_expand.project(x, head.reshape(head.shape[-2:]))
        return logits.astype(layers.logits_dtype(logits))
