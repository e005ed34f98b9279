"""The JAX training step the benchmarks time (``train_step.py``, ``gpu_bench.py``):
forward, loss, backward and optimiser update of a split NNX model, BatchNorm in train
mode, as one pure function of ``(params, rest, opt_state)`` to jit."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import optax
from flax import nnx


def make_step_fn(graphdef, tx: optax.GradientTransformation, loss_fn):
    """``step(state, x, y, mask) -> (state, loss)`` with ``state = (params, rest,
    opt_state)``; the logits are cast to float32 before ``loss_fn``."""

    def step_fn(state, x, y, mask):
        params, rest, opt_state = state

        def objective(p):
            m = nnx.merge(graphdef, p, rest, copy=True)
            return loss_fn(m(x).astype(jnp.float32), y, mask), nnx.state(m, nnx.Not(nnx.Param))

        (loss, rest), grads = jax.value_and_grad(objective, has_aux=True)(params)
        updates, opt_state = tx.update(grads, opt_state, params)
        return (optax.apply_updates(params, updates), rest, opt_state), loss

    return step_fn
