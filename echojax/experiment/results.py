"""Result rows of finished runs: ``results.csv`` and the per-image rows.

One result row per run x test source x structure (columns ``RESULT_COLUMNS``, see
``echojax.report``), built from each run's ``eval/test/per_image.csv`` and
``summary.json`` and its tags; per-image rows are the run's ``per_image.csv`` rows
with the tags added (for box plots and paired tests).
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence

from echojax import report as report_lib
from echojax import rundir
from echojax.config import Config
from echojax.experiment.datasets import train_sizes
from echojax.experiment.execute import run_dir, test_folders
from echojax.experiment.runs import Run

RESULT_COLUMNS = report_lib.RESULT_COLUMNS + ("ef_method",)


def _ef_entry(source_summary: Mapping | None) -> tuple[float, int, str]:
    """(MAE, count, method) of a source's EF: biplane where available, else monoplane."""
    ef = (source_summary or {}).get("ef")
    if not ef:
        return math.nan, 0, ""
    for method in ("biplane", "monoplane"):
        entry = ef.get(method) or {}
        if entry.get("count") and entry.get("mae") is not None:
            return float(entry["mae"]), int(entry["count"]), method
    return math.nan, 0, ""


def run_results(experiment: str, run: Run, directory: rundir.RunDir
                ) -> tuple[list[dict], list[dict]]:
    """Result rows and per-image rows (with the run's tags) of one finished run."""
    config = Config.load(directory.config)
    tags = {
        "experiment": experiment, "run": run.name,
        "setting": str(run.tags.get("setting", "")),
        "method": str(run.tags.get("method", config.loss.name)),
        "arch": config.model.name, "loss": config.loss.name,
        "dropout": float(config.loss.dropout_rate), "seed": int(config.seed),
        "train_sizes": train_sizes(config),
    }
    rows, images = [], []
    for folder in test_folders(directory, run):
        per_image = report_lib.read_per_image(folder.per_image())
        with open(folder.summary()) as f:
            summary = json.load(f)
        stats = report_lib.summarize_images(per_image)
        for (alias, structure), st in stats.items():
            ef_mae, ef_n, ef_method = _ef_entry(summary.get("sources", {}).get(alias))
            rows.append({**tags, "test_source": alias, "structure": structure,
                         "n_images": st["n"], "dice_mean": st["mean"], "dice_median": st["median"],
                         "dice_std": st["std"], "ef_mae": ef_mae, "ef_n": ef_n,
                         "ef_method": ef_method})
        images += [{**tags, **r} for r in per_image]
    return rows, images


def collect(experiment: str, runs: Sequence[Run], workdir: str
            ) -> tuple[list[dict], list[dict], list[str]]:
    """Results of every finished run of the experiment (all shards): (result rows,
    per-image rows, names of runs not finished yet)."""
    rows, images, missing = [], [], []
    for run in runs:
        directory = run_dir(workdir, run)
        if not all(f.evaluated() for f in test_folders(directory, run)):
            missing.append(run.name)
            continue
        r, i = run_results(experiment, run, directory)
        rows += r
        images += i
    return rows, images, missing
