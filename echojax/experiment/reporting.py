"""An experiment's report: ``results.csv``, ``report.md`` and its figures.

The experiment's own ``report`` function lays out its tables and figures
(``echojax.report``) from a :class:`ReportInput`; this module collects the results,
writes the files and adds the header every report shares.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Mapping, Sequence

import numpy as np

from echojax import figures, files
from echojax import report as report_lib
from echojax.config import Config
from echojax.experiment.execute import Backend, run_dir
from echojax.experiment.options import Options
from echojax.experiment.results import RESULT_COLUMNS, collect
from echojax.experiment.runs import Experiment, Run


@dataclasses.dataclass
class ReportInput:
    """What an experiment's ``report`` function gets: the options and runs, the result
    and per-image rows of the finished runs, the names of the unfinished ones, where to
    put figures, and :meth:`overlay_figure` for sample predictions."""
    options: Options
    runs: list[Run]
    results: list[dict]
    per_image: list[dict]
    workdir: str
    figures_dir: str
    missing: list[str]
    backend: Backend

    def finished(self, name: str) -> Run | None:
        """The run called ``name`` if it is finished, else None."""
        run = next((r for r in self.runs if r.name == name), None)
        return run if run is not None and name not in self.missing else None

    def finished_runs(self, names: Mapping[str, str]) -> dict[str, Run]:
        """``{label: run}`` for the ``{label: run name}`` entries whose run is finished,
        in the given order (e.g. the methods of an overlay figure)."""
        found = {label: self.finished(name) for label, name in names.items()}
        return {label: run for label, run in found.items() if run is not None}

    def epoch_time_section(self, *, group: Sequence[str] = ("arch", "method"),
                           order: Sequence[str] = (),
                           note: str = "") -> list[str]:
        """Report lines comparing the time per epoch of the finished runs (the paper
        compares the training time per epoch per loss, Sec. 5.3.1), mean ± std across
        runs of each ``group``; grid-search runs and pseudo-label teachers left out.
        Each run's training time per epoch from ``metrics.jsonl``
        (``echojax.report.run_timing``); runs trained before it was recorded fall back to
        ``run_time.json``, labelled as such. Empty when no run has a timing."""
        timings = [t for t in report_lib.run_timings(
                       (run_dir(self.workdir, r).path, r.tags) for r in self.runs
                       if self.finished(r.name))
                   if t.get("setting") != "grid" and t["method"] != "pseudo_teacher"]
        if not timings:
            return []
        measures = {t["measure"] for t in timings}
        text = []
        if "train" in measures:
            text.append("Training time per epoch (the paper's measure): the wall time of each "
                        "epoch's training steps (`epoch_train_seconds` in `metrics.jsonl`), "
                        "without validation, checkpointing and the test evaluation; each "
                        "start's first step is left out and shown apart: it compiles, unless "
                        "a run before it in the same process compiled the same program.")
        if "run_time" in measures:
            text.append(("Runs older than that field: " if "train" in measures else "")
                        + "training + test evaluation time (`run_time.json`) over the epochs, "
                        "so compilation and validation are in it (an upper bound on the "
                        "training time per epoch).")
        return ["## Training time per epoch", "",
                " ".join(text) + f" Mean ± std across runs{note}.", "",
                report_lib.epoch_time_table(timings, group=group, order=order), ""]

    def overlay_figure(self, runs_by_method: Mapping[str, Run], alias: str, filename: str, *,
                       count: int = 3, title: str = "") -> str:
        """Figures 4b/7b/8: ``count`` test images of source ``alias`` (a training source
        or an extra test source of the first run; evenly spaced through its test split),
        their ground truth, and each method's prediction (best checkpoint), written to
        ``figures_dir/filename``. Returns the path."""
        if not runs_by_method:
            raise ValueError("overlay_figure needs at least one run")
        first_run = next(iter(runs_by_method.values()))
        first = Config.load(run_dir(self.workdir, first_run).config)
        source = next((s for s in (*first.sources, *first_run.test_sources) if s.alias == alias),
                      None)
        if source is None:
            raise ValueError(f"{alias!r} is neither a training nor a test source of the "
                             f"overlay's first run")
        examples = self.backend.test_examples(source, data_dir=first.data_dir, count=count)
        images = np.stack([ex["image"] for ex in examples])
        predictions = {m: self.backend.predictor(run_dir(self.workdir, r).path)(images)
                       for m, r in runs_by_method.items()}
        samples = [{"image": ex["image"], "label": ex["segmentation"],
                    "predictions": {m: p[k] for m, p in predictions.items()},
                    "title": f"{ex['patient_id']}\n{ex['view']} {ex['phase']}"}
                   for k, ex in enumerate(examples)]
        path = os.path.join(self.figures_dir, filename)
        figures.plot_overlays(samples, path, methods=list(runs_by_method), title=title)
        return path


def write_report(experiment: Experiment, options: Options, runs: Sequence[Run], *,
                 backend: Backend) -> tuple[str, str, list[str]]:
    """Collects the results of all finished runs (of every shard) and writes
    ``results.csv`` and ``report.md`` (with the experiment's figures). Returns (report
    path, compact table, names of the runs not finished)."""
    results, per_image, missing = collect(experiment.name, runs, options.workdir)
    files.write_csv(os.path.join(options.workdir, "results.csv"), results, RESULT_COLUMNS)
    figures = os.path.join(options.workdir, "figures")
    if results:
        body, compact = experiment.report(ReportInput(
            options=options, runs=list(runs), results=results, per_image=per_image,
            workdir=options.workdir, figures_dir=figures, missing=missing, backend=backend))
    else:
        body, compact = "No finished runs yet.\n", "(no finished runs yet)"
    seconds = 0.0
    for r in runs:
        path = run_dir(options.workdir, r).run_time
        if os.path.exists(path):
            with open(path) as f:
                seconds += json.load(f)["seconds"]
    header = [f"# {experiment.title}", "",
              f"- preset: `{options.preset.name}`, data: `{options.data}`, "
              f"resolution {options.preset.resolution}, model size `{options.preset.model_size}`",
              f"- runs finished: {len(runs) - len(missing)} of {len(runs)}"
              + (f" (missing: {', '.join(missing[:10])}{' ...' if len(missing) > 10 else ''})"
                 if missing else ""),
              f"- training + evaluation time of the runs, summed: {seconds / 60:.1f} min",
              "- cells: mean ± sample std over seeds of each run's value; Dice over the test "
              "images whose ground truth has the structure", ""]
    path = os.path.join(options.workdir, "report.md")
    files.write_atomic(path, "\n".join(header) + "\n" + body)
    return path, compact, missing


__all__ = ["ReportInput", "write_report"]
