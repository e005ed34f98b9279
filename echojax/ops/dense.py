"""Dense layers, GELU and token-chunked MLPs for XLA:CPU (the Swin-UNet's CPU
implementation, ``echojax.models.swin_unet`` with ``impl="cpu"`` / ``"gpu"``).

Same maps as ``nnx.Linear`` / ``jax.nn.gelu(approximate=False)``, computed in forms that
XLA:CPU runs faster; the measured effect of each is in ``bench/README.md`` (section
"Swin-UNet on the CPU").
"""

from __future__ import annotations

from collections.abc import Callable

import chex
import jax
import numpy as np

# Tokens per chunk of the CPU implementation's MLP and final variance (bench/README.md:
# 8192 measured fastest of 512-32768 on the cpu-preset Swin-UNet).
CHUNK_TOKENS = 8192


@jax.custom_vjp
def matmul(x: jax.Array, kernel: jax.Array) -> jax.Array:
    """``x [..., K] @ kernel [K, N] -> [..., N]``, differentiated with the weight
    gradient taken as ``(dy^T x)^T`` when ``N > K``.

    The weight gradient contracts over the tokens, the major axis of both operands.
    XLA:CPU then transposes one of them in memory (a strided copy of the whole
    activation); by default it picks the output gradient. Contracting in the other
    order makes it transpose ``x`` instead, the smaller of the two when the layer widens
    (qkv, MLP fc1, expansions).
    """
    return x @ kernel


def _matmul_fwd(x, kernel):
    return x @ kernel, (x, kernel)


def _matmul_bwd(res, dy):
    x, kernel = res
    k, n = kernel.shape
    x2, dy2 = x.reshape(-1, k), dy.reshape(-1, n)
    dx = (dy @ kernel.T.astype(dy.dtype)).astype(x.dtype)
    if n > k:
        dk = jax.lax.dot_general(dy2, x2, (((0,), (0,)), ((), ()))).T
    else:
        dk = jax.lax.dot_general(x2, dy2, (((0,), (0,)), ((), ())))
    return dx, dk.astype(kernel.dtype)


matmul.defvjp(_matmul_fwd, _matmul_bwd)


def dense(x: jax.Array, kernel: jax.Array, bias: jax.Array | None = None) -> jax.Array:
    """``x @ kernel + bias`` through :func:`matmul`: ``[..., K] -> [..., N]``."""
    if kernel.ndim != 2 or x.shape[-1] != kernel.shape[0]:
        raise ValueError(
            f"dense: expected x [..., K] and kernel [K, N], got {tuple(x.shape)} and "
            f"{tuple(kernel.shape)}")
    y = matmul(x, kernel)
    return y if bias is None else y + bias


def fold_affine(kernel: jax.Array, bias: jax.Array | None, scale: jax.Array,
                shift: jax.Array) -> tuple[jax.Array, jax.Array]:
    """``(kernel', bias')`` with ``(xhat * scale + shift) @ kernel + bias = xhat @ kernel'
    + bias'``: a LayerNorm's scale and bias folded into the dense layer after it, so the
    normalised activation is never multiplied at full size (XLA:CPU materialises
    full-size broadcasts of the scale and bias in both passes otherwise)."""
    folded_bias = shift @ kernel
    if bias is not None:
        folded_bias = folded_bias + bias
    return scale[:, None] * kernel, folded_bias


def gelu(x: jax.Array) -> jax.Array:
    """Exact GELU in PyTorch's form, ``x/2 (1 + erf(x/sqrt 2))``.

    ``jax.nn.gelu(approximate=False)`` goes through erfc, about a third slower on the
    CPU; the two differ by at most ~1e-6 (absolute)."""
    return 0.5 * x * (1.0 + jax.lax.erf(x * np.float32(1 / np.sqrt(2)).astype(x.dtype)))


def token_chunks(fn: Callable[[jax.Array], jax.Array], x: jax.Array, *,
                 chunk_tokens: int | None) -> jax.Array:
    """``fn`` applied to ``x [..., C]`` flattened to tokens; ``fn: [n, C] -> [n, D]``.

    With ``chunk_tokens``, ``chunk_tokens`` tokens (or the largest divisor of the token
    count below it) at a time, each chunk under ``jax.checkpoint``: the intermediate
    activations of ``fn`` never exist at full size and the backward pass recomputes them
    chunk by chunk (a memory-traffic measure for XLA:CPU). ``None``: all tokens at once,
    activations stored (what a GPU wants).
    """
    *lead, d = x.shape
    tokens = int(np.prod(lead))
    if chunk_tokens is None:
        out = fn(x.reshape(tokens, d))
        return out.reshape(*lead, out.shape[-1])
    if chunk_tokens < 1:
        raise ValueError(f"token_chunks: chunk_tokens must be >= 1 or None, got {chunk_tokens}")
    fn = jax.checkpoint(fn)
    chunk = max(c for c in range(1, min(tokens, chunk_tokens) + 1) if tokens % c == 0)
    if 8 * chunk < min(tokens, chunk_tokens):
        chunk = tokens  # an awkward token count: one chunk rather than many tiny ones
    out = jax.lax.map(fn, x.reshape(tokens // chunk, chunk, d))
    return out.reshape(*lead, out.shape[-1])


def mlp(x: jax.Array, kernel1: jax.Array, bias1: jax.Array, kernel2: jax.Array,
        bias2: jax.Array, *, chunk_tokens: int | None) -> jax.Array:
    """``gelu(x @ kernel1 + bias1) @ kernel2 + bias2`` (no dropout), per token, in chunks
    (:func:`token_chunks`): ``[..., D] -> [..., D2]``. The hidden layer (4x wider than
    the tokens in a Swin block) then never exists at full size."""

    def one_chunk(xc):
        return matmul(gelu(matmul(xc, kernel1) + bias1), kernel2) + bias2

    y = token_chunks(one_chunk, x, chunk_tokens=chunk_tokens)
    chex.assert_shape(y, (*x.shape[:-1], kernel2.shape[-1]))
    return y
