"""Training and evaluating the runs of a sweep, each in its own run folder.

Runs are trained in list order in ``<workdir>/<run name>/`` (``echojax.rundir``);
a run whose ``eval/test/summary.json`` (and every extra test source's) exists with an
identical ``config.json`` is skipped, and an interrupted one resumes from its
checkpoint (``train_and_evaluate`` resumes). Runs evaluated on sources they were not
trained on get ``<run>/external/<alias>/`` (``rundir.prepare_external``).

What a sweep calls to do the work is a :class:`Backend`: by default echojax's trainer,
evaluator, dataset preparation and inference; tests pass a fake one.

Progress goes through an ``echojax.progress.SweepProgress``: the bar over the runs, each
run's step bar (the reporter handed to ``Backend.train``) and one line per finished or
skipped run.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

import echojax.experiment.datasets as datasets
from echojax import evaluate as evaluate_lib
from echojax import files, inference, labels, progress, rundir
from echojax import train as train_lib
from echojax.config import Config
from echojax.data.mixture import Source
from echojax.experiment.runs import Run, check_runs


def _predictor(directory: str) -> Callable[[np.ndarray], np.ndarray]:
    return inference.restore(directory).predictor()


@dataclasses.dataclass(frozen=True)
class Backend:
    """The work a sweep delegates.

    ``train(config, run_dir, *, reporter) -> dict`` (``reporter``: an
    ``echojax.progress.Reporter`` to drive as ``train_and_evaluate`` does; the result's
    ``best/val_fg_dice``, if any, goes in the run's line), ``evaluate(run_dir, split=)``
    (writes ``eval/<split>/summary.json``), ``prepare(tfds_names, data=, data_dir=,
    verbosity=)``, ``train_size(config) -> int``,
    ``predictor(run_dir) -> (uint8[N,R,R,1] -> int32[N,R,R])`` (best checkpoint) and
    ``test_examples(source, data_dir=, count=) -> [example dict]`` (for figures);
    ``compilation_cache``: keep XLA's persistent compilation cache in
    ``<workdir>/.jax_cache`` (runs of a sweep differ mostly in values that are arguments
    of the compiled step, so their recompilation becomes a load).
    """
    train: Callable[..., Any] = train_lib.train_and_evaluate
    evaluate: Callable[..., Any] = evaluate_lib.evaluate
    prepare: Callable[..., None] = datasets.prepare_datasets
    train_size: Callable[[Config], int] = datasets.train_size
    predictor: Callable[[str], Callable[[np.ndarray], np.ndarray]] = _predictor
    test_examples: Callable[..., list[dict]] = datasets.test_examples
    compilation_cache: bool = True


def run_dir(workdir: str, run: Run) -> rundir.RunDir:
    """The run folder of ``run`` in the experiment folder ``workdir``."""
    return rundir.RunDir(os.path.join(workdir, *run.name.split("/")))


def test_folders(directory: rundir.RunDir, run: Run) -> list[rundir.RunDir]:
    """The run's own folder and its external-evaluation folders, in order."""
    return [directory] + [directory.external(s.alias) for s in run.test_sources]


def is_finished(config: Config, directory: rundir.RunDir,
                test_sources: Sequence[Source] = ()) -> bool:
    """True when ``directory`` holds this exact config and all its test summaries.

    Raises ValueError if ``directory`` holds a different config (re-using a workdir for
    changed settings would mix results).
    """
    if not directory.is_run():
        return False
    if Config.load(directory.config) != config:
        raise ValueError(
            f"{directory.config} holds a different config than this sweep's run (changed "
            f"flags or preset?); use another --workdir or delete {directory.path}")
    return directory.evaluated() and all(directory.external(s.alias).evaluated()
                                         for s in test_sources)


def evaluate_run(directory: rundir.RunDir, test_sources: Sequence[Source] = (), *,
                 evaluate_fn: Callable[..., Any]) -> None:
    """Evaluates a trained run on its own test splits and on each extra source."""
    evaluate_fn(directory.path, split="test")
    for source in test_sources:
        evaluate_fn(rundir.prepare_external(directory, source).path, split="test")


@dataclasses.dataclass
class Outcome:
    name: str
    status: str  # "skipped" (finished before), "trained"
    seconds: float


def trained_structures(config: Config) -> tuple[str, ...]:
    """The structures a run's training labels can hold: all but those every training
    source removes from all its masks (Exp. 1 trains the LV alone); all three if that
    leaves none."""
    gone = set(labels.CLASS_NAMES[c] for c in labels.FOREGROUND_CLASSES)
    for source in config.sources:
        full = {c for r in source.removals if r.fraction >= 1.0 for c in r.classes}
        gone &= full
    kept = tuple(labels.CLASS_NAMES[c] for c in labels.FOREGROUND_CLASSES
                 if labels.CLASS_NAMES[c] not in gone)
    return kept or tuple(labels.CLASS_NAMES[c] for c in labels.FOREGROUND_CLASSES)


def _test_dice(folder: rundir.RunDir, structures: Sequence[str]) -> float | None:
    """Mean over ``structures`` of the test Dice in a folder's ``summary.json`` (those
    with test images; over all three this is the summary's foreground Dice). None when
    the summary has no such entry."""
    with open(folder.summary()) as f:
        overall = json.load(f).get("overall") or {}
    per = overall.get("dice") or {}
    values = [per[c]["mean"] for c in structures
              if (per.get(c) or {}).get("n") and per[c].get("mean") is not None]
    if values:
        return float(np.mean(values))
    value = overall.get("fg_dice") if len(structures) == len(labels.FOREGROUND_CLASSES) else None
    return None if value is None else float(value)


def run_scores(run: Run, directory: rundir.RunDir, result: Any) -> dict[str, float | None]:
    """What a finished run's line shows: the best validation foreground Dice (from the
    training result) and the test Dice of its own and each extra test source, over the
    structures it was trained on (named when not all three, e.g. ``test Dice (lv)``)."""
    val = result.get("best/val_fg_dice") if isinstance(result, dict) else None
    structures = trained_structures(Config.load(directory.config))
    label = "test Dice" + ("" if len(structures) == len(labels.FOREGROUND_CLASSES)
                           else f" ({', '.join(structures)})")
    scores = {"val Dice": None if val is None or not math.isfinite(val) else float(val),
              label: _test_dice(directory, structures)}
    for source in run.test_sources:
        scores[f"{label} {source.alias}"] = _test_dice(directory.external(source.alias),
                                                       structures)
    return scores


def execute(runs: Sequence[Run], workdir: str, *, backend: Backend,
            adjust: Callable[[Config], Config] | None = None,
            sweep: progress.SweepProgress | None = None) -> list[Outcome]:
    """Trains and evaluates ``runs`` in order, skipping finished ones (see module doc).

    ``adjust`` maps each run's final config (after its ``setup``) to the one trained,
    e.g. the preset's epochs for its training-set size (``Options.adjust``). ``sweep``
    shows the progress (made for ``len(runs)`` runs; the caller closes it); default: a
    quiet one, which prints nothing.
    """
    check_runs(runs)
    if sweep is None:
        sweep = progress.SweepProgress(len(runs), verbosity=progress.QUIET)
    if sweep.total != len(runs):
        raise ValueError(f"the sweep's progress counts {sweep.total} runs, got {len(runs)}")
    outcomes = []
    dirs = {r.name: run_dir(workdir, r) for r in runs}
    for run in runs:
        directory = dirs[run.name]
        config = run.config
        if run.setup is not None:
            config = run.setup(directory.path, {n: dirs[n].path for n in run.needs})
        if adjust is not None and not run.epochs_fixed:
            config = adjust(config)
        if is_finished(config, directory, run.test_sources):
            sweep.skip(run.name, directory.path)
            outcomes.append(Outcome(run.name, "skipped", 0.0))
            continue
        sweep.start(run.name)
        if os.path.exists(directory.checkpoints):
            sweep.log(f"{run.name}: resuming from its checkpoint in "
                      f"{progress.short_path(directory.path)}")
        t0 = sweep.clock()
        result = backend.train(config, directory.path, reporter=sweep.run_reporter())
        evaluate_run(directory, run.test_sources, evaluate_fn=backend.evaluate)
        seconds = sweep.clock() - t0
        files.write_json(directory.run_time, {"seconds": seconds})
        sweep.finish(run.name, directory.path, seconds=seconds,
                     scores=run_scores(run, directory, result))
        outcomes.append(Outcome(run.name, "trained", seconds))
    return outcomes
