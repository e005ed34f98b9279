"""Pieces of window attention in the forms XLA:CPU runs faster (the Swin-UNet's CPU
implementation; ``bench/README.md``, section "Swin-UNet on the CPU", row 2)."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np


@functools.cache
def _one_hot(index_bytes: bytes, shape: tuple[int, ...], rows: int) -> np.ndarray:
    index = np.frombuffer(index_bytes, np.int32).reshape(shape)
    return np.eye(rows, dtype=np.float32)[index.reshape(-1)]


def gather_rows_by_matmul(table: jax.Array, index: np.ndarray) -> jax.Array:
    """``table[index]`` for a static integer ``index [n, m]`` into ``table [R, H]``:
    ``-> f32[n, m, H]``, read as a matmul with a constant one-hot matrix, so that its
    gradient is a matmul too, not a scatter-add."""
    index = np.asarray(index, np.int32)
    if index.min() < 0 or index.max() >= table.shape[0]:
        raise ValueError(f"gather_rows_by_matmul: index outside [0, {table.shape[0]})")
    one_hot = _one_hot(index.tobytes(), index.shape, table.shape[0])
    return (one_hot @ table.astype(jnp.float32)).reshape(*index.shape, table.shape[1])


def additive_mask(mask: np.ndarray) -> np.ndarray:
    """``f32``: 0 where ``mask`` is True, the most negative float32 elsewhere.

    Added to float32 logits of ordinary size it gives that value again (its spacing
    there is ~2e31): exactly zero weight after softmax, as a select would, but fused
    into the same pass as the position bias."""
    return np.where(mask, 0.0, np.finfo(np.float32).min).astype(np.float32)
