"""Max pooling as a reshape and a reduction (NHWC)."""

from __future__ import annotations

import jax
import jax.numpy as jnp


def max_pool_2x2(x: jax.Array) -> jax.Array:
    """2x2 max pooling, stride 2: ``[B, H, W, C] -> [B, H/2, W/2, C]`` (H, W even).

    Same values as ``nnx.max_pool(x, (2, 2), strides=(2, 2))``, computed as the
    elementwise maximum of the four strided sub-grids, which XLA:CPU fuses into one
    loop (``reduce_window`` and its ``select_and_scatter`` gradient do not vectorise as
    well). Gradients differ from ``reduce_window`` only on ties inside a window: there
    ``jnp.maximum`` splits the gradient among the tied inputs, where ``reduce_window``
    gives it all to one. After a ReLU the only ties of nonzero probability are at 0,
    where the ReLU's gradient is 0 either way.

    (A reshape to ``[B, H/2, 2, W/2, 2, C]`` + ``jnp.max`` computes the same values, but
    under ``jax_disable_most_optimizations`` its training step produced NaN losses
    after two SGD steps with finite gradients on XLA:CPU; the strided form does not.)
    """
    if x.ndim != 4:
        raise ValueError(f"max_pool_2x2: expected [B, H, W, C], got shape {tuple(x.shape)}")
    b, h, w, c = x.shape
    if h % 2 or w % 2:
        raise ValueError(f"max_pool_2x2: H and W must be even, got {h}x{w}")
    del b, c
    top = jnp.maximum(x[:, 0::2, 0::2], x[:, 0::2, 1::2])
    bottom = jnp.maximum(x[:, 1::2, 0::2], x[:, 1::2, 1::2])
    return jnp.maximum(top, bottom)
