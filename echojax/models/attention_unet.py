"""Attention U-Net (Oktay et al., "Attention U-Net: Learning Where to Look for the
Pancreas", MIDL 2018), NHWC, in Flax NNX.

Layer for layer the 2D ``AttU_Net`` of LeeJunHyun/Image_Segmentation: per level two
(conv3x3 with bias - BatchNorm - ReLU), 2x2 max-pool down; up-sampling is nearest 2x
followed by conv3x3-BN-ReLU; every skip passes through an additive attention gate whose
gating signal is the up-sampled decoder feature (already at the skip's resolution); skip
concatenated first; 1x1 head with bias. With ``widths=(64, 128, 256, 512, 1024)``,
``in_channels=1``, ``num_classes=4``: 34,877,616 trainable parameters, as the reference.
"""

from __future__ import annotations

from collections.abc import Sequence

import jax
import jax.numpy as jnp
from flax import nnx

from echojax.models import layers


class AttentionGate(nnx.Module):
    """Additive attention gate: ``alpha = sigmoid(BN(psi(relu(BN(W_g g) + BN(W_x x)))))``.

    ``W_g``, ``W_x`` and ``psi`` are 1x1 convolutions with bias, each followed by
    BatchNorm (``psi`` maps to one channel). Returns ``(alpha * x, alpha)``.

    The gates' BatchNorms are ``nnx.BatchNorm`` in every implementation (the fused
    form measured 1.10x slower there, bench/README.md).

    Args shapes: ``g: [B, H, W, gate_features]`` (gating signal, same grid as ``x``),
    ``x: [B, H, W, skip_features]``; ``alpha: [B, H, W, 1]`` in [0, 1].
    """

    def __init__(
        self,
        gate_features: int,
        skip_features: int,
        inner_features: int,
        *,
        dtype=None,
        param_dtype=jnp.float32,
        impl: str = "flax",
        rngs: nnx.Rngs,
    ):
        kw = dict(dtype=dtype, param_dtype=param_dtype, rngs=rngs)
        self.w_g = layers.Conv1x1(gate_features, inner_features, impl=impl, **kw)
        self.w_g_norm = layers.batch_norm(inner_features, **kw)
        self.w_x = layers.Conv1x1(skip_features, inner_features, impl=impl, **kw)
        self.w_x_norm = layers.batch_norm(inner_features, **kw)
        self.psi = layers.Conv1x1(inner_features, 1, impl=impl, **kw)
        self.psi_norm = layers.batch_norm(1, **kw)

    def __call__(self, g: jax.Array, x: jax.Array) -> tuple[jax.Array, jax.Array]:
        if g.shape[:3] != x.shape[:3]:
            raise ValueError(
                f"AttentionGate: gating signal {g.shape} and skip {x.shape} must share B, H, W"
            )
        a = jax.nn.relu(self.w_g_norm(self.w_g(g)) + self.w_x_norm(self.w_x(x)))
        alpha = jax.nn.sigmoid(self.psi_norm(self.psi(a)))
        return alpha * x, alpha


class AttentionUNet(nnx.Module):
    """Attention U-Net: ``x f32[B, H, W, in_channels] -> logits f32[B, H, W, num_classes]``.

    Args:
      in_channels: input image channels.
      num_classes: output channels (logits).
      widths: feature widths per level, full resolution first; H and W must be
        multiples of ``2 ** (len(widths) - 1)``.
      dtype: computation dtype; parameters stay ``param_dtype``, logits are float32.
      param_dtype: parameter dtype.
      impl: layer implementation, one of ``layers.IMPLS`` (same parameters for all),
        or ``"auto"`` (default): the fastest for the default backend
        (``layers.resolve_impl``), stored as ``self.impl``.
      rngs: initialisation keys.

    ``model(x, return_attention=True)`` returns ``(logits, alphas)`` where ``alphas`` is
    a tuple of gate coefficients ``f32[B, H_l, W_l, 1]``, one per skip, from the
    coarsest skip to the full-resolution one.
    """

    def __init__(
        self,
        in_channels: int,
        num_classes: int,
        *,
        widths: Sequence[int] = (64, 128, 256, 512, 1024),
        dtype=None,
        param_dtype=jnp.float32,
        impl: str = "auto",
        rngs: nnx.Rngs,
    ):
        widths = tuple(int(w) for w in widths)
        if len(widths) < 2 or min(widths) <= 0:
            raise ValueError(f"AttentionUNet: widths must be >= 2 positive ints, got {widths}")
        impl = self.impl = layers.resolve_impl(impl)
        self.in_channels = in_channels
        self.num_classes = num_classes
        self.widths = widths
        kw = dict(dtype=dtype, param_dtype=param_dtype, impl=impl, rngs=rngs)
        self.down = nnx.List(
            [layers.DoubleConv(in_channels, widths[0], use_bias=True, **kw)]
            + [
                layers.DoubleConv(widths[i - 1], widths[i], use_bias=True, **kw)
                for i in range(1, len(widths))
            ]
        )
        levels = range(len(widths) - 1, 0, -1)
        self.up = nnx.List([layers.UpsampleConv(widths[i], widths[i - 1], **kw) for i in levels])
        # The reference sizes the gate's inner width as half the skip width.
        self.gates = nnx.List(
            [
                AttentionGate(widths[i - 1], widths[i - 1], max(widths[i - 1] // 2, 1), **kw)
                for i in levels
            ]
        )
        self.up_conv = nnx.List(
            [layers.DoubleConv(2 * widths[i - 1], widths[i - 1], use_bias=True, **kw) for i in levels]
        )
        self.head = layers.Conv1x1(widths[0], num_classes, **kw)

    @property
    def size_multiple(self) -> int:
        """H and W of the input must be multiples of this."""
        return 2 ** (len(self.widths) - 1)

    def __call__(self, x: jax.Array, *, return_attention: bool = False):
        layers.check_spatial(
            x.shape,
            in_channels=self.in_channels,
            multiple=self.size_multiple,
            model="attention_unet",
        )
        skips = []
        for i, block in enumerate(self.down):
            if i > 0:
                x = layers.max_pool_2x2(x, impl=self.impl)
            x = block(x)
            skips.append(x)
        skips.pop()
        alphas = []
        for up, gate, conv in zip(self.up, self.gates, self.up_conv):
            x = up(x)
            skip, alpha = gate(x, skips.pop())
            alphas.append(alpha.astype(layers.logits_dtype(alpha)))
            x = conv(jnp.concatenate([skip, x], axis=-1))
        logits = self.head(x)
        logits = logits.astype(layers.logits_dtype(logits))
        if return_attention:
            return logits, tuple(alphas)
        return logits
