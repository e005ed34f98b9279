"""Grid search of the initial learning rate and batch size (paper, Sec. 4.6).

The paper chose both by a grid search on validation foreground Dice. In a sweep, the
runs with the same key (by default architecture and loss) share one search: the
group's first run's config is trained with every grid value, and every run of the
group then trains with the pair of the best validation foreground Dice.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
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


def with_grid_search(runs: Sequence[Run], options: Options,
                     key: Callable[[Run], str] = grid_key) -> list[Run]:
    """Adds an initial-LR x batch-size grid search in front of each group of runs
    (see the module doc); unchanged when ``options.grid_search`` is False. Runs that
    need a ``setup`` of their own keep it (their config is re-tuned after it)."""
    if not options.grid_search:
        return list(runs)
    p = options.preset
    lrs = p.lr_grid or (p.lr,)
    batches = p.batch_grid or (p.batch_size,)
    out: list[Run] = []
    grids: dict[str, list[tuple[str, float, int]]] = {}
    for run in runs:
        k = key(run)
        if k not in grids and run.config is not None:
            grids[k] = []
            for lr in lrs:
                for bs in batches:
                    name = f"grid/{k}/lr{lr:g}_bs{bs}"
                    cfg = dataclasses.replace(run.config, batch_size=bs,
                                              optim=dataclasses.replace(run.config.optim, lr=lr))
                    out.append(Run(name, cfg, tags={"setting": "grid", "method": run.config.loss.name}))
                    grids[k].append((name, lr, bs))
        if k not in grids:
            out.append(run)
            continue
        out.append(_tuned(run, grids[k]))
    return out


def _tuned(run: Run, grid: list[tuple[str, float, int]]) -> Run:
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
                               setup=setup)
