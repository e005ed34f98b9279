"""Checkpoints of a run: the latest and the best-validation one, with the data iterator.

One Orbax ``CheckpointManager`` under ``<workdir>/checkpoints`` keeps two steps at most:
the latest (so a run resumes) and the one with the best validation foreground Dice (the
model the paper keeps). Each step holds two items:

- ``state``: the train state pytree (parameters, other model state, optimiser state,
  step, RNG key data), saved with ``StandardSave`` and restored bitwise;
- ``data``: the grain iterator state, one JSON file per process, so a resumed run sees
  exactly the batches it would have seen.

Orbax writes each step into a temporary folder and renames it when complete, so a run
killed while writing leaves the previous complete step as the latest; the temporary
folder is ignored on restore.

Opened with ``read_only=True`` (evaluation, prediction), the manager neither creates,
saves nor deletes anything; Orbax's two warnings for such a manager, one per opening,
tell the user nothing: ``save_interval_steps`` is set to 0 here (Orbax's own warning
says it does so itself), and "Given directory is read only", which Orbax logs for every
read-only manager, is dropped by message while the manager is constructed.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
from typing import Any

import grain.checkpoint as grain_checkpoint
import jax
import orbax.checkpoint as ocp
from orbax.checkpoint.checkpoint_managers import preservation_policy as pp

BEST_METRIC = "val_fg_dice"


@contextlib.contextmanager
def _without_read_only_notice():
    # Orbax logs this at WARNING on the "absl" logger for every manager opened with
    # read_only=True (orbax/checkpoint/checkpoint_manager.py): the read-only opening is
    # what we asked for, so the line is noise. Only this exact message is dropped, and
    # only while the manager is being constructed.
    class Drop(logging.Filter):
        def filter(self, record: logging.LogRecord) -> bool:
            return record.msg != "Given directory is read only=%s"

    logger, drop = logging.getLogger("absl"), Drop()
    logger.addFilter(drop)
    try:
        yield
    finally:
        logger.removeFilter(drop)


def _metric(metrics: dict[str, Any]) -> float:
    # A NaN Dice (no annotated validation pixels) must never rank as best.
    value = float(metrics[BEST_METRIC])
    return value if math.isfinite(value) else -math.inf


class Checkpoints:
    """Latest and best checkpoints of one run under ``directory``."""

    def __init__(self, directory: str | os.PathLike, *, read_only: bool = False):
        self.directory = os.path.abspath(os.fspath(directory))
        options = ocp.CheckpointManagerOptions(
            best_fn=_metric,
            best_mode="max",
            preservation_policy=pp.AnyPreservationPolicy([
                pp.LatestN(n=1),
                pp.BestN(get_metric_fn=_metric, reverse=False, n=1,
                         keep_checkpoints_without_metrics=False),
            ]),
            # Synchronous saves: "right after a checkpoint" means it is on disk, and the
            # next (donating) train step never races a background writer.
            enable_async_checkpointing=False,
            read_only=read_only,
            create=not read_only,
            # Read-only managers never save; Orbax would set this to 0 itself, warning.
            save_interval_steps=0 if read_only else 1,
        )
        with _without_read_only_notice() if read_only else contextlib.nullcontext():
            self.manager = ocp.CheckpointManager(
                self.directory, options=options, item_names=("state", "data"))

    def latest_step(self) -> int | None:
        return self.manager.latest_step()

    def best_step(self) -> int | None:
        return self.manager.best_step()

    def all_steps(self) -> list[int]:
        return list(self.manager.all_steps())

    def save(self, step: int, state: Any, iterator: Any, *, val_fg_dice: float) -> None:
        """Saves ``state`` and the data ``iterator`` at ``step``; blocks until on disk."""
        args = {"state": ocp.args.StandardSave(state)}
        if iterator is not None:
            args["data"] = grain_checkpoint.CheckpointSave(iterator)
        self.manager.save(step, args=ocp.args.Composite(**args),
                          metrics={BEST_METRIC: float(val_fg_dice)}, force=True)
        self.manager.wait_until_finished()

    def resolve(self, which: str | int) -> int:
        """``"latest"``, ``"best"`` or a step number -> an existing step, else ValueError."""
        steps = self.all_steps()
        if which == "latest":
            step = self.latest_step()
        elif which == "best":
            step = self.best_step()
        else:
            try:
                step = int(which)
            except ValueError:
                raise ValueError(
                    f"checkpoint must be 'best', 'latest' or a step number, got {which!r}") from None
            if step not in steps:
                raise ValueError(f"no checkpoint at step {step} in {self.directory}; "
                                 f"available: {steps}")
        if step is None:
            raise ValueError(f"no complete checkpoint in {self.directory}")
        return step

    def restore(self, step: int, abstract_state: Any, iterator: Any = None) -> Any:
        """Restores the state (shaped and sharded like ``abstract_state``) and, if given,
        sets ``iterator`` to the saved data position. Returns the state."""
        args = {"state": ocp.args.StandardRestore(abstract_state)}
        if iterator is not None:
            args["data"] = grain_checkpoint.CheckpointRestore(iterator)
        restored = self.manager.restore(step, args=ocp.args.Composite(**args))
        return restored["state"]

    def close(self) -> None:
        self.manager.close()


def abstract(tree: Any) -> Any:
    """ShapeDtypeStructs (with shardings) of a pytree of arrays, for restoring."""
    return jax.tree.map(ocp.utils.to_shape_dtype_struct, tree)
