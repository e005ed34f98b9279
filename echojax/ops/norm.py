"""BatchNorm in training mode (batch statistics), optionally followed by a ReLU, with a
hand-written VJP (NHWC, statistics over every axis but the last).

Same map as ``nnx.BatchNorm`` with ``use_running_average=False`` and its default
``use_fast_variance=True`` (Ioffe & Szegedy, ICML 2015):

    mean = E[x],  var = max(0, E[x^2] - mean^2),  y = (x - mean) * rsqrt(var + eps) * scale + bias

and ``relu(y)`` when asked. Autodiff through that map leaves XLA:CPU several passes over
the activation (the normalised map, the ReLU mask and the pieces of the mean and
variance gradients are materialised separately); the VJP here needs two: one for the two
per-channel sums ``sum(g)`` and ``sum(g * (x - mean))`` (``g`` the cotangent masked by
the ReLU, recomputed from ``x``), one for ``dx``. Only ``x`` and per-channel vectors are
kept for the backward pass. Measurements are in ``bench/README.md``.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from jax import lax


def _check(x, scale, bias):
    if x.ndim < 2:
        raise ValueError(f"batch_norm_train: expected x [..., C] with at least 2 axes, got {tuple(x.shape)}")
    c = x.shape[-1]
    if scale.shape != (c,) or bias.shape != (c,):
        raise ValueError(
            f"batch_norm_train: scale and bias must be [{c}] (x's last axis), got "
            f"{tuple(scale.shape)} and {tuple(bias.shape)}")


@functools.partial(jax.custom_vjp, nondiff_argnums=(3, 4))
def batch_norm_train(x: jax.Array, scale: jax.Array, bias: jax.Array, epsilon: float,
                     relu: bool) -> tuple[jax.Array, jax.Array, jax.Array]:
    """BatchNorm with batch statistics (then ReLU if ``relu``).

    Args:
      x: ``[..., C]``; statistics over every axis but the last.
      scale: ``[C]``.
      bias: ``[C]``.
      epsilon: added to the variance.
      relu: apply ``max(y, 0)`` to the output.

    Returns:
      ``(y [..., C], mean [C], var [C])``: the normalised map and the batch statistics
      (biased variance, as ``nnx.BatchNorm`` computes it, for the running averages).
      Gradients flow to ``x``, ``scale`` and ``bias`` through all three outputs.
    """
    return _fwd(x, scale, bias, epsilon, relu)[0]


def _stats(x):
    axes = tuple(range(x.ndim - 1))
    mean = jnp.mean(x, axes)
    var = jnp.maximum(0.0, jnp.mean(x * x, axes) - mean * mean)
    return mean, var


def _fwd(x, scale, bias, epsilon, relu):
    _check(x, scale, bias)
    mean, var = _stats(x)
    rstd = lax.rsqrt(var + epsilon)
    y = (x - mean) * (rstd * scale) + bias
    if relu:
        y = jnp.maximum(y, 0.0)
    return (y, mean, var), (x, mean, rstd, scale, bias)


def _bwd(epsilon, relu, res, cts):
    x, mean, rstd, scale, bias = res
    dy, dmean, dvar = cts
    n = x.size // x.shape[-1]
    axes = tuple(range(x.ndim - 1))
    a = rstd * scale
    xc = x - mean
    g = jnp.where(xc * a + bias > 0, dy, 0.0) if relu else dy
    dbias = jnp.sum(g, axes)
    dxc = jnp.sum(g * xc, axes)            # sum(g * xhat) = rstd * dxc
    dscale = rstd * dxc
    # dx = a g - a/n (dbias + xhat dscale) + dmean/n + 2 dvar (x - mean)/n, i.e.
    # a g + c0 + (x - mean) c1 with per-channel c0, c1.
    c0 = (dmean - a * dbias) / n
    c1 = (2.0 * dvar - a * rstd * dscale) / n
    dx = a * g + c0 + xc * c1
    return dx.astype(x.dtype), dscale.astype(scale.dtype), dbias.astype(bias.dtype)


batch_norm_train.defvjp(_fwd, _bwd)
