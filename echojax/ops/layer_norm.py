"""LayerNorm over the last axis with a hand-written backward pass, and the Swin-UNet's
final expansion + LayerNorm + head computed without its largest tensor.

Same maps as ``nnx.LayerNorm(use_fast_variance=False)`` (statistics in float32 with the
two-pass variance, as PyTorch's ``nn.LayerNorm``); the measured effect of each form is
in ``bench/README.md`` (section "Swin-UNet on the CPU").
"""

from __future__ import annotations

import functools

import chex
import jax
import jax.numpy as jnp

from echojax.ops.dense import matmul, token_chunks


@functools.partial(jax.custom_vjp, nondiff_argnums=(1,))
def normalize(x: jax.Array, epsilon: float) -> jax.Array:
    """``(x - mean) / sqrt(var + epsilon)`` over the last axis, in at least float32 (the
    two-pass variance): ``[..., C] -> [..., C]``, without scale and bias."""
    return _normalize_fwd(x, epsilon)[0]


def _normalize_fwd(x, epsilon):
    x32 = x.astype(jnp.promote_types(x.dtype, jnp.float32))
    centred = x32 - jnp.mean(x32, axis=-1, keepdims=True)
    rstd = jax.lax.rsqrt(jnp.mean(jnp.square(centred), axis=-1, keepdims=True) + epsilon)
    xhat = centred * rstd
    return xhat, (xhat, rstd, jnp.zeros((0,), x.dtype))


def _normalize_bwd(epsilon, res, g):
    xhat, rstd, dtype_carrier = res
    g = g.astype(xhat.dtype)
    dx = rstd * (g - jnp.mean(g, axis=-1, keepdims=True)
                 - xhat * jnp.mean(g * xhat, axis=-1, keepdims=True))
    return (dx.astype(dtype_carrier.dtype),)


normalize.defvjp(_normalize_fwd, _normalize_bwd)


def layer_norm(x: jax.Array, scale: jax.Array, bias: jax.Array, *, epsilon: float,
               dtype) -> jax.Array:
    """``normalize(x) * scale + bias`` (at least float32 arithmetic), returned in ``dtype``:
    ``[..., C] -> [..., C]``."""
    if scale.shape != x.shape[-1:] or bias.shape != x.shape[-1:]:
        raise ValueError(
            f"layer_norm: scale and bias must be [{x.shape[-1]}] (x's last axis), got "
            f"{tuple(scale.shape)} and {tuple(bias.shape)}")
    xhat = normalize(x, epsilon)
    y = xhat * scale.astype(xhat.dtype) + bias.astype(xhat.dtype)
    return y.astype(dtype)


def grouped_mean_square(x: jax.Array, kernel: jax.Array, groups: int, *,
                        chunk_tokens: int | None) -> jax.Array:
    """``mean((x @ kernel)**2)`` over each of ``groups`` equal column groups, in float32:
    ``x [..., D], kernel [D, groups * C] -> [..., groups, 1]``.

    The product can be the largest tensor of the network (the final expansion's); it is
    formed in token chunks (:func:`echojax.ops.dense.token_chunks`), so with chunks the
    backward pass recomputes each chunk instead of storing it.
    """

    def one_chunk(xc):
        z = matmul(xc, kernel).reshape(xc.shape[0], groups, -1).astype(jnp.float32)
        return jnp.mean(jnp.square(z), axis=-1)

    return token_chunks(one_chunk, x, chunk_tokens=chunk_tokens)[..., None]


def expand_norm_project(x: jax.Array, expand: jax.Array, scale: jax.Array, bias: jax.Array,
                        kernel: jax.Array, *, factor: int, epsilon: float,
                        chunk_tokens: int | None) -> jax.Array:
    """``LayerNorm(depth_to_space(x @ expand, factor)) @ kernel``, without forming the
    expanded map: ``x [B, H, W, D]``, ``expand [D, factor**2 * C]`` (sub-pixel-major
    columns), LayerNorm ``scale, bias [C]``, ``kernel [C, K] -> [B, factor H, factor W, K]``
    (in ``x``'s dtype; LayerNorm statistics in float32).

    The Swin-UNet's final patch expanding followed by the 1x1 head, where the expanded
    map (``C`` channels at full resolution) is the largest tensor of the network and
    ``K`` is the number of classes. Every step is per pixel, so the LayerNorm and the
    projection run on the sub-pixel layout and only the ``K``-channel result is moved to
    its pixels. The LayerNorm's centring is folded into the weights: with ``E_s`` the
    expansion's ``C`` columns for sub-pixel ``s`` and ``Ê_s`` the same with each row's
    mean subtracted, ``z_s - mean(z_s) = x Ê_s`` exactly, so

        LN(z_s) @ kernel = (x Ê_s)(scale * kernel) / sqrt(var_s + eps) + bias @ kernel,
        var_s = mean((x Ê_s)**2),

    where only ``var_s`` needs the ``C``-wide product (the two-pass variance, no
    cancellation).
    """
    b, h, w, d = x.shape
    s = factor
    if expand.ndim != 2 or expand.shape[0] != d or expand.shape[1] % (s * s):
        raise ValueError(
            f"expand_norm_project: expand must be [{d}, {s * s} * C], got {tuple(expand.shape)}")
    c = expand.shape[1] // (s * s)
    if kernel.ndim != 2 or kernel.shape[0] != c:
        raise ValueError(f"expand_norm_project: kernel must be [{c}, K], got {tuple(kernel.shape)}")
    k = kernel.shape[-1]
    cdt = x.dtype
    expand = expand.reshape(d, s * s, c)
    centred = expand - expand.mean(-1, keepdims=True)
    fused = jnp.einsum("dsc,ck->dsk", centred, scale[:, None] * kernel).reshape(d, s * s * k)
    shift = bias @ kernel  # [K]
    var = grouped_mean_square(x, centred.reshape(d, s * s * c).astype(cdt), s * s,
                              chunk_tokens=chunk_tokens)
    y = matmul(x, fused.astype(cdt)).reshape(b, h, w, s * s, k)
    y = y.astype(jnp.float32) * jax.lax.rsqrt(var + epsilon) + shift
    y = y.astype(cdt).reshape(b, h, w, s, s, k).transpose(0, 1, 3, 2, 4, 5)
    y = y.reshape(b, h * s, w * s, k)
    chex.assert_shape(y, (b, h * s, w * s, k))
    return y
