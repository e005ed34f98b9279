"""Training and evaluating the runs of a sweep, each in its own run folder.

Runs are trained in list order in ``<workdir>/<run name>/`` (``echojax.rundir``);
a run whose ``eval/test/summary.json`` (and every extra test source's) exists with an
identical ``config.json`` is skipped, and an interrupted one resumes from its
checkpoint (``train_and_evaluate`` resumes). Runs evaluated on sources they were not
trained on get ``<run>/external/<alias>/`` (``rundir.prepare_external``).

What a sweep calls to do the work is a :class:`Backend`: by default echojax's trainer,
evaluator, dataset preparation and inference; tests pass a fake one.
"""

from __future__ import annotations

import dataclasses
import os
import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from echojax import evaluate as evaluate_lib
from echojax import files, inference, rundir
from echojax import train as train_lib
from echojax.config import Config
from echojax.data.mixture import Source
import echojax.experiment.datasets as datasets
from echojax.experiment.runs import Run, check_runs


def _predictor(directory: str) -> Callable[[np.ndarray], np.ndarray]:
    return inference.restore(directory).predictor()


@dataclasses.dataclass(frozen=True)
class Backend:
    """The work a sweep delegates.

    ``train(config, run_dir)``, ``evaluate(run_dir, split=)``,
    ``prepare(tfds_names, data=, data_dir=)``, ``train_size(config) -> int``,
    ``predictor(run_dir) -> (uint8[N,R,R,1] -> int32[N,R,R])`` (best checkpoint) and
    ``test_examples(source, data_dir=, count=) -> [example dict]`` (for figures);
    ``compilation_cache``: keep XLA's persistent compilation cache in
    ``<workdir>/.jax_cache`` (runs of a sweep differ mostly in values that are arguments
    of the compiled step, so their recompilation becomes a load).
    """
    train: Callable[[Config, str], Any] = train_lib.train_and_evaluate
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


def execute(runs: Sequence[Run], workdir: str, *, backend: Backend,
            adjust: Callable[[Config], Config] | None = None,
            log: Callable[[str], None] = print) -> list[Outcome]:
    """Trains and evaluates ``runs`` in order, skipping finished ones (see module doc).

    ``adjust`` maps each run's final config (after its ``setup``) to the one trained,
    e.g. the preset's epochs for its training-set size (``Options.adjust``).
    """
    check_runs(runs)
    outcomes = []
    dirs = {r.name: run_dir(workdir, r) for r in runs}
    for k, run in enumerate(runs, start=1):
        directory = dirs[run.name]
        config = run.config
        if run.setup is not None:
            config = run.setup(directory.path, {n: dirs[n].path for n in run.needs})
        if adjust is not None:
            config = adjust(config)
        if is_finished(config, directory, run.test_sources):
            log(f"[{k}/{len(runs)}] {run.name}: finished before, skipped")
            outcomes.append(Outcome(run.name, "skipped", 0.0))
            continue
        resumed = os.path.exists(directory.checkpoints)
        log(f"[{k}/{len(runs)}] {run.name}: {'resuming' if resumed else 'training'} in "
            f"{directory.path}")
        t0 = time.perf_counter()
        backend.train(config, directory.path)
        evaluate_run(directory, run.test_sources, evaluate_fn=backend.evaluate)
        seconds = time.perf_counter() - t0
        files.write_json(directory.run_time, {"seconds": seconds})
        outcomes.append(Outcome(run.name, "trained", seconds))
    return outcomes
