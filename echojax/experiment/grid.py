"""Grid search of the initial learning rate and batch size (Islam et al., MELBA 2026,
Sec. 4.4).

The paper chose both by a grid search on validation foreground Dice, "separately for
each model evaluated". In a sweep, the runs with the same key share one search: the
group's first run's config is trained with every grid value, and every run of the
group then trains with the pair of the best validation foreground Dice. The key
follows ``Options.grid`` (``--grid``):

- ``per_model`` (the paper preset): the run's config without its seeds, so every
  distinct model (architecture, loss, label dropout, training data and its sizes) gets
  its own grid, shared only by its seeds (our choice: the seeds repeat one model; a
  grid per seed would multiply the cost by the number of seeds);
- ``shared``: ``tags["grid_key"]`` or ``<arch>_<loss>``, one grid per architecture and
  loss, tuned on the group's first configuration (cheaper; e.g. Table 2's smallest cell
  tunes the cells ten times larger).

Each grid trains ``len(lr_grid) x len(batch_grid)`` extra runs.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import re
from collections.abc import Callable, Mapping, Sequence

from echojax import rundir
from echojax.config import Config
from echojax.experiment.options import Options
from echojax.experiment.runs import Run


def best_validation_dice(directory: str) -> float:
    """Highest ``validation/fg_dice`` in a run's ``metrics.jsonl`` (NaN if none)."""
    best = math.nan
    path = rundir.RunDir(directory).metrics
    if not os.path.exists(path):
        return best
    with open(path) as f:
        for line in f:
            row = json.loads(line)
            v = row.get("validation/fg_dice")
            if v is not None and math.isfinite(v) and not (v <= best):
                best = v
    return best


def grid_key(run: Run) -> str:
    """Default grid-search group: ``tags["grid_key"]`` or ``<arch>_<loss>``."""
    if run.tags.get("grid_key"):
        return str(run.tags["grid_key"])
    if run.config is None:
        raise ValueError(f"run {run.name!r} has no config: give it tags['grid_key']")
    return f"{run.config.model.name}_{run.config.loss.name}"


def model_key(run: Run) -> Config:
    """``per_model`` grid group: the run's config (or ``preview``) without its seeds."""
    config = run.config if run.config is not None else run.preview
    if config is None:
        raise ValueError(f"run {run.name!r} has neither a config nor a preview to tune")
    return dataclasses.replace(config, seed=0, data_seed=None)


_SEED_PART = re.compile(r"^s\d+$")


def _model_label(run: Run, used: set[str]) -> str:
    """Readable grid folder name of a per-model group: the run's name without its seed
    part (``unet/acce/d0.4/s0`` -> ``unet/acce/d0.4``), made unique."""
    parts = [p for p in run.name.split("/") if not _SEED_PART.match(p)] or [run.name]
    label, k = "/".join(parts), 2
    while label in used:
        label, k = f"{'/'.join(parts)}_{k}", k + 1
    return label


def with_grid_search(runs: Sequence[Run], options: Options,
                     key: Callable[[Run], str] | None = None) -> list[Run]:
    """Adds an initial-LR x batch-size grid search in front of each group of runs
    (see the module doc); unchanged when ``options.grid_search`` is False. ``key``
    overrides the grouping of ``options.grid``. Runs that need a ``setup`` of their own
    keep it (their config is re-tuned after it); a run without a config is tuned on
    its ``preview``."""
    if not options.grid_search:
        return list(runs)
    p = options.preset
    lrs = p.lr_grid or (p.lr,)
    batches = p.batch_grid or (p.batch_size,)
    if key is None and options.grid == "per_model":
        labels: dict[Config, str] = {}

        def key(run: Run) -> str:
            k = model_key(run)
            if k not in labels:
                labels[k] = _model_label(run, set(labels.values()))
            return labels[k]
    elif key is None:
        key = grid_key
    out: list[Run] = []
    grids: dict[str, list[tuple[str, float, int]]] = {}
    for run in runs:
        k = key(run)
        base = run.config if run.config is not None else run.preview
        if k not in grids and base is not None:
            grids[k] = []
            for lr in lrs:
                for bs in batches:
                    name = f"grid/{k}/lr{lr:g}_bs{bs}"
                    cfg = dataclasses.replace(base, batch_size=bs,
                                              optim=dataclasses.replace(base.optim, lr=lr))
                    out.append(Run(name, cfg, tags={"setting": "grid", "method": base.loss.name}))
                    grids[k].append((name, lr, bs))
        if k not in grids:
            raise ValueError(f"run {run.name!r}: no config or preview to grid-search its "
                             f"learning rate and batch size on (group {k!r})")
        out.append(_tuned(run, grids[k], f"grid/{k}"))
    return out


def _tuned(run: Run, grid: list[tuple[str, float, int]], prefix: str) -> Run:
    names = tuple(n for n, _, _ in grid)
    inner = run.setup

    def setup(directory: str, dirs: Mapping[str, str]) -> Config:
        scores = [(best_validation_dice(dirs[n]), lr, bs) for n, lr, bs in grid]
        finite = [s for s in scores if math.isfinite(s[0])]
        if not finite:
            raise ValueError(f"grid search for {run.name}: no grid run has a validation Dice")
        _, lr, bs = max(finite, key=lambda s: s[0])
        cfg = inner(directory, dirs) if inner is not None else run.config
        return dataclasses.replace(cfg, batch_size=bs, optim=dataclasses.replace(cfg.optim, lr=lr))

    return dataclasses.replace(run, config=None, needs=tuple(dict.fromkeys(run.needs + names)),
                               setup=setup, preview=run.config if run.config is not None
                               else run.preview, grid=prefix)
