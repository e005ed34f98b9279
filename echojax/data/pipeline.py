"""grain loaders over a ``Mixture``: shuffled training batches and padded eval batches.

Training (``train_batches`` / ``train_dataset``): a fresh seeded permutation of the
mixture every epoch; an epoch is ``len(mixture) // batch_size`` global batches (the
remainder is dropped, a different one each epoch, as with ``drop_last=True``). With
several processes, process ``p`` of ``P`` gets rows ``[p*b, (p+1)*b)`` of every global
batch (``b = batch_size // P``), so the processes' batches are disjoint and their
concatenation in process order is exactly the single-process batch: results do not
depend on the process count. Step ``s`` is a pure function of (seed, s), which is what
makes resuming exact: the iterator state is just the next step.

Evaluation (``eval_batches``): every example once, in mixture order, one source at a
time (no batch spans two sources), each source padded to whole global batches with
zero examples whose ``valid`` entry is False, so evaluation compiles one shape.

Batches are dicts of numpy arrays with a leading batch axis (see ``echojax.data.mixture``
for the per-example fields); eval batches add ``valid: bool[b]``.

Checkpointing: ``it = iter(train_dataset(...))``; ``it.get_state()`` is a small
JSON-able dict and ``it.set_state(state)`` resumes at the same batch. With Orbax, save
it as ``grain.checkpoint.CheckpointSave(it)`` and restore with
``grain.checkpoint.CheckpointRestore(it)`` in a ``CheckpointManager`` item.
"""

from __future__ import annotations

import sys
from typing import Any

import grain
import jax
import numpy as np
from absl import flags

from echojax.data.mixture import Mixture


def _process_shard(batch_size: int, process_index: int | None, process_count: int | None):
    if process_index is None or process_count is None:
        process_index = jax.process_index() if process_index is None else process_index
        process_count = jax.process_count() if process_count is None else process_count
    if (isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer))
            or batch_size <= 0):
        raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
    if process_count <= 0 or not 0 <= process_index < process_count:
        raise ValueError(f"process_index={process_index} must be in [0, process_count="
                         f"{process_count})")
    if batch_size % process_count:
        raise ValueError(f"global batch_size={batch_size} must be divisible by the number of "
                         f"processes ({process_count})")
    return int(process_index), int(process_count), int(batch_size) // int(process_count)


def steps_per_epoch(num_examples: int, batch_size: int) -> int:
    """Global batches per epoch (remainder dropped)."""
    return num_examples // batch_size


class _EpochOrder:
    """Maps a position in one process's example stream to a mixture index."""

    def __init__(self, n: int, batch_size: int, local_batch: int, process_index: int, seed: int):
        self.n, self.batch_size, self.local_batch = n, batch_size, local_batch
        self.process_index, self.seed = process_index, seed
        self.steps_per_epoch = steps_per_epoch(n, batch_size)
        self._perms: dict[int, np.ndarray] = {}

    def __getstate__(self):
        return {**self.__dict__, "_perms": {}}

    def permutation(self, epoch: int) -> np.ndarray:
        perm = self._perms.get(epoch)
        if perm is None:
            # Independent of the process count: every process derives the same order.
            rng = np.random.default_rng(np.random.SeedSequence([self.seed, epoch]))
            perm = rng.permutation(self.n)
            if len(self._perms) > 2:  # keep only the epochs around the current one
                self._perms.pop(min(self._perms))
            self._perms[epoch] = perm
        return perm

    def __call__(self, t: int) -> int:
        step, row = divmod(int(t), self.local_batch)
        epoch, b = divmod(step, self.steps_per_epoch)
        k = b * self.batch_size + self.process_index * self.local_batch + row
        return int(self.permutation(epoch)[k])


def train_batches(mixture: Mixture, *, batch_size: int, seed: int, num_epochs: int | None = None,
                  process_index: int | None = None, process_count: int | None = None
                  ) -> grain.MapDataset:
    """This process's training batches as a random-access ``grain.MapDataset``.

    Element ``s`` is the batch of step ``s``: ``image`` uint8[b, R, R, 1],
    ``segmentation`` uint8[b, R, R], ``label_mask`` bool[b, 4], ``source_index``
    int32[b], with ``b = batch_size // process_count``.

    Args:
      mixture: the training split of the mixture.
      batch_size: global batch size, divisible by the process count.
      seed: shuffling seed (epoch e uses a permutation drawn from (seed, e)).
      num_epochs: length in epochs; None repeats forever.
      process_index, process_count: default ``jax.process_index()`` / ``process_count()``.
    """
    p, count, local = _process_shard(batch_size, process_index, process_count)
    del count
    spe = steps_per_epoch(len(mixture), batch_size)
    if spe == 0:
        raise ValueError(f"{mixture!r} has fewer examples ({len(mixture)}) than one batch "
                         f"({batch_size})")
    if num_epochs is not None and num_epochs <= 0:
        raise ValueError(f"num_epochs must be positive or None, got {num_epochs}")
    order = _EpochOrder(len(mixture), batch_size, local, p, seed)
    # range(maxsize) behaves as an endless stream; its length stays a multiple of b.
    length = spe * local * num_epochs if num_epochs is not None else sys.maxsize // local * local
    ds = grain.MapDataset.range(length).map(order).map(mixture.__getitem__)
    return ds.batch(local, drop_remainder=True)


def train_dataset(mixture: Mixture, *, batch_size: int, seed: int, num_epochs: int | None = None,
                  process_index: int | None = None, process_count: int | None = None,
                  worker_count: int = 0, num_threads: int = 2, prefetch_batches: int = 4
                  ) -> grain.IterDataset:
    """``train_batches`` as an iterable with read-ahead: ``iter()`` gives a checkpointable
    ``grain.DatasetIterator``.

    ``num_threads`` batches are read concurrently (decompression releases the GIL);
    ``worker_count > 0`` adds that many worker processes (each reading with
    ``num_threads`` threads) for hosts with many cores. Worker processes need absl flags
    marked parsed (done here).
    """
    ds = train_batches(mixture, batch_size=batch_size, seed=seed, num_epochs=num_epochs,
                       process_index=process_index, process_count=process_count)
    it = ds.to_iter_dataset(grain.ReadOptions(num_threads=num_threads,
                                              prefetch_buffer_size=prefetch_batches))
    if worker_count > 0:
        if not flags.FLAGS.is_parsed():
            flags.FLAGS.mark_as_parsed()
        it = it.mp_prefetch(grain.MultiprocessingOptions(num_workers=worker_count))
    return it


class _EvalBatch:
    """Builds eval batch ``k`` of one process: padded, one source per batch."""

    def __init__(self, mixture: Mixture, batch_size: int, local_batch: int, process_index: int):
        self.mixture, self.batch_size, self.local = mixture, batch_size, local_batch
        self.process_index = process_index
        # (source, first global position of the batch within that source) per batch.
        self.plan = [(s, start) for s, n in enumerate(mixture.sizes)
                     for start in range(0, n, batch_size)]
        self.offsets = np.cumsum((0,) + mixture.sizes).tolist()

    def __call__(self, k: int) -> dict[str, Any]:
        s, start = self.plan[k]
        first = start + self.process_index * self.local
        rows, valid = [], []
        for j in range(first, first + self.local):
            ok = j < self.mixture.sizes[s]
            # Padding rows reuse the source's first example, zeroed below.
            rows.append(self.mixture[self.offsets[s] + (j if ok else 0)])
            valid.append(ok)
        batch = {key: np.stack([r[key] for r in rows]) for key in rows[0]}
        valid = np.asarray(valid)
        for key, value in batch.items():
            if key == "source_index":
                continue
            if value.dtype.kind == "U":
                value[~valid] = ""
            elif value.dtype.kind == "f" and key == "ef":
                value[~valid] = np.nan
            else:
                value[~valid] = 0
        batch["valid"] = valid
        return batch


def eval_batches(mixture: Mixture, *, batch_size: int, process_index: int | None = None,
                 process_count: int | None = None) -> grain.MapDataset:
    """This process's evaluation batches, deterministic, as a ``grain.MapDataset``.

    Every example of every source appears exactly once across processes with
    ``valid`` True. Each batch holds one source (``source_index`` is constant in it,
    padding included). Iterate directly, or ``.to_iter_dataset(...)`` for read-ahead.
    """
    p, _, local = _process_shard(batch_size, process_index, process_count)
    make = _EvalBatch(mixture, batch_size, local, p)
    return grain.MapDataset.range(len(make.plan)).map(make)
