"""U-Net (Ronneberger, Fischer and Brox, MICCAI 2015), NHWC, in Flax NNX.

Layer for layer the configuration of milesial/Pytorch-UNet with ``bilinear=False``:
per level two (conv3x3 without bias - BatchNorm - ReLU), 2x2 max-pool down,
2x2 stride-2 transposed convolution (with bias) up, skip concatenation (skip first),
1x1 convolution head with bias. With ``widths=(64, 128, 256, 512, 1024)``,
``in_channels=1`` and ``num_classes=4`` it has 31,036,676 trainable parameters, as the
reference does.

Deliberate difference: the reference pads the up-sampled map when an input side is not
divisible by 16; here such an input is rejected with a ``ValueError`` instead, so that
every pixel of the output is aligned with the input on a power-of-two grid.
"""

from __future__ import annotations

from collections.abc import Sequence

import jax
import jax.numpy as jnp
from flax import nnx

from echojax.models import layers


class UNet(nnx.Module):
    """U-Net: ``x f32[B, H, W, in_channels] -> logits f32[B, H, W, num_classes]``.

    Args:
      in_channels: input image channels.
      num_classes: output channels (logits).
      widths: feature widths per level, from the full-resolution level down to the
        bottleneck; ``len(widths) - 1`` poolings, so H and W must be multiples of
        ``2 ** (len(widths) - 1)``.
      dtype: computation dtype (e.g. ``jnp.bfloat16``); parameters stay ``param_dtype``
        and the logits are returned in float32.
      param_dtype: parameter dtype.
      impl: layer implementation, one of ``layers.IMPLS`` (same parameters for all),
        or ``"auto"`` (default): the fastest for the default backend
        (``layers.resolve_impl``), stored as ``self.impl``.
      rngs: initialisation keys.
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
            raise ValueError(f"UNet: widths must be >= 2 positive ints, got {widths}")
        impl = self.impl = layers.resolve_impl(impl)
        self.in_channels = in_channels
        self.num_classes = num_classes
        self.widths = widths
        kw = dict(dtype=dtype, param_dtype=param_dtype, impl=impl, rngs=rngs)
        self.down = nnx.List(
            [layers.DoubleConv(in_channels, widths[0], **kw)]
            + [layers.DoubleConv(widths[i - 1], widths[i], **kw) for i in range(1, len(widths))]
        )
        # Decoder, from the bottleneck up: up-sample w[i] -> w[i-1], concat with the
        # skip (w[i-1] channels), DoubleConv 2 w[i-1] -> w[i-1].
        levels = range(len(widths) - 1, 0, -1)
        self.up = nnx.List([layers.TransposedConv2x2(widths[i], widths[i - 1], **kw) for i in levels])
        self.up_conv = nnx.List(
            [layers.DoubleConv(2 * widths[i - 1], widths[i - 1], **kw) for i in levels]
        )
        self.head = layers.Conv1x1(widths[0], num_classes, **kw)

    @property
    def size_multiple(self) -> int:
        """H and W of the input must be multiples of this."""
        return 2 ** (len(self.widths) - 1)

    def __call__(self, x: jax.Array) -> jax.Array:
        layers.check_spatial(
            x.shape, in_channels=self.in_channels, multiple=self.size_multiple, model="unet"
        )
        skips = []
        for i, block in enumerate(self.down):
            if i > 0:
                x = layers.max_pool_2x2(x, impl=self.impl)
            x = block(x)
            skips.append(x)
        skips.pop()  # the bottleneck output is not a skip
        for up, conv in zip(self.up, self.up_conv):
            x = up(x)
            x = conv(jnp.concatenate([skips.pop(), x], axis=-1))
        logits = self.head(x)
        return logits.astype(layers.logits_dtype(logits))
