"""The runs of an experiment, their dependencies, and how a sweep is split into shards."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from echojax import pseudo_label
from echojax.config import Config
from echojax.data.mixture import Source
from echojax.experiment.datasets import DataNotPrepared


@dataclasses.dataclass(frozen=True)
class Run:
    """One training run of a sweep.

    Attributes:
      name: unique within the experiment; also the run's folder (may contain ``/``).
      config: the run's config; ``None`` when ``setup`` builds it.
      tags: table placement written to ``results.csv``: ``setting`` (the training data
        set-up, e.g. ``camus`` or ``balanced``) and ``method`` (the loss, or
        ``benchmark`` / ``pseudo_label``); defaults ``""`` and the loss name.
      test_sources: sources to test on besides ``config.sources`` (cross-domain and
        external validation).
      needs: names of runs that must finish first (a pseudo-label teacher, a grid
        search). A run and everything it needs always land in the same shard.
      setup: ``setup(run_dir, dirs_of_needed_runs) -> Config``, called before training
        when ``config`` depends on finished runs (must be cheap when repeated).
      uses: datasets ``setup`` reads (prepared with the others before the sweep).
      preview: for a run whose ``config`` is ``None``, the config as known before
        running (what ``setup`` starts from): shown by ``--dry_run`` and tuned by a
        grid search.
      grid: the name prefix of the grid-search runs that choose this run's learning
        rate and batch size (``echojax.experiment.grid``); ``""`` when not tuned.
      epochs_fixed: the experiment chose ``config.epochs`` itself, so the sweep's
        ``adjust`` (the preset's epochs for the training-set size, ``Options.adjust``)
        leaves them: Table 2 gives every cell of a CAMUS column the epochs of its
        no-Unity cell, so that adding Unity images takes no CAMUS epochs away.
    """
    name: str
    config: Config | None
    tags: Mapping[str, str] = dataclasses.field(default_factory=dict)
    test_sources: tuple[Source, ...] = ()
    needs: tuple[str, ...] = ()
    setup: Callable[[str, Mapping[str, str]], Config] | None = None
    uses: tuple[Source, ...] = ()
    preview: Config | None = None
    grid: str = ""
    epochs_fixed: bool = False

    def __post_init__(self):
        if not self.name or self.name.startswith("/") or ".." in self.name.split("/"):
            raise ValueError(f"run name must be a relative folder name, got {self.name!r}")
        if self.config is None and self.setup is None:
            raise ValueError(f"run {self.name!r} needs a config or a setup function")


@dataclasses.dataclass(frozen=True)
class Experiment:
    """What an experiment script hands to ``echojax.experiment.main``.

    ``runs(options) -> [Run]``; ``report(ReportInput) -> (markdown, compact table)``
    writes its figures into ``ReportInput.figures_dir`` and returns the body of
    ``report.md`` and the short table printed at the end. ``flags`` is the frozen
    dataclass of the experiment's own flags (``echojax.experiment.options.flag``),
    read back as ``options.flags``.
    """
    name: str
    title: str
    runs: Callable[[Any], list[Run]]
    report: Callable[[Any], tuple[str, str]]
    flags: type | None = None
    default_losses: tuple[str, ...] | None = None  # None: every loss


def check_runs(runs: Sequence[Run]) -> None:
    """Unique names; ``needs`` name earlier runs (so list order is a valid run order)."""
    seen: set[str] = set()
    for r in runs:
        if r.name in seen:
            raise ValueError(f"run name {r.name!r} appears twice")
        missing = [n for n in r.needs if n not in seen]
        if missing:
            raise ValueError(f"run {r.name!r} needs {missing}, which are not listed before it")
        seen.add(r.name)


def select_shard(runs: Sequence[Run], index: int, count: int) -> list[Run]:
    """The runs of shard ``index`` of ``count``: every ``count``-th group of runs tied
    by ``needs`` (a run with everything it needs), counted in list order."""
    check_runs(runs)
    group_of: dict[str, int] = {}
    groups = 0
    for r in runs:
        tied = {group_of[n] for n in r.needs}
        if not tied:
            group_of[r.name] = groups
            groups += 1
        else:
            # A run needing several groups merges them into the first one.
            g = min(tied)
            for name, h in group_of.items():
                if h in tied:
                    group_of[name] = g
            group_of[r.name] = g
    order = sorted(set(group_of.values()))
    mine = {g for k, g in enumerate(order) if k % count == index}
    return [r for r in runs if group_of[r.name] in mine]


def pseudo_label_runs(base: Config, classes: Sequence[str], *, teacher_name: str,
                      student_name: str, tags: Mapping[str, str],
                      test_sources: Sequence[Source] = (),
                      teacher_test_sources: Sequence[Source] = ()) -> list[Run]:
    """The two runs of the pseudo-labelling baseline (``echojax.pseudo_label``): the
    teacher, then the student that needs it.

    ``base`` is the partially-labelled mixture the other methods train on (its model,
    schedule and seed are kept; the loss becomes CCE). The teacher is tagged
    ``method=pseudo_teacher``; the student gets ``tags`` with ``method=pseudo_label``
    and is also tested on ``test_sources``, like the methods it is compared with. The
    teacher is tested on its own sources' test splits and on ``teacher_test_sources``
    (Exp. 3: Unity's, which measures the LA's own cross-domain drop of a model trained
    on CAMUS alone).
    """
    tags = {**tags, "grid_key": f"{base.model.name}_cce"}  # tuned like other CCE runs
    teacher = Run(teacher_name, None, tags={**tags, "method": "pseudo_teacher"},
                  setup=lambda run_dir, dirs: pseudo_label.teacher_config(base, classes),
                  uses=base.sources, preview=base, test_sources=tuple(teacher_test_sources))
    student = Run(student_name, None, tags={**tags, "method": "pseudo_label"},
                  needs=(teacher_name,), uses=base.sources, preview=base,
                  test_sources=tuple(test_sources),
                  setup=lambda run_dir, dirs: pseudo_label.student_config(
                      base, classes, dirs[teacher_name]))
    return [teacher, student]


def describe(run: Run, adjust: Callable[[Config], Config] | None = None) -> dict[str, Any]:
    """What ``--dry_run`` prints for a run: name, table placement, architecture, its
    layer implementation (``impl``, as resolved for this backend) and compute dtype, loss,
    label dropout, seeds, training sources (size: ``train_examples`` or ``"all"``;
    removals; ``split`` and ``frames``, ``echojax.data.mixture.Source``), learning rate
    and batch size (``"grid"`` when a grid search sets them),
    epochs (after ``adjust`` unless ``run.epochs_fixed``; ``None`` while a source it needs to count is not
    prepared) and extra test sources. A pseudo-label teacher or student shows the
    partially labelled mixture its data is derived from (``"derived_from"``)."""
    config = run.config if run.config is not None else run.preview
    out: dict[str, Any] = {"name": run.name, "setting": str(run.tags.get("setting", ""))}
    if config is None:
        out.update(method=str(run.tags.get("method", "")), config="set up at run time",
                   needs=list(run.needs))
        return out
    loss = config.loss
    out.update({
        "method": str(run.tags.get("method", loss.name)),
        "architecture": config.model.name,
        "model_size": config.model.size,
        "impl": config.model.impl,  # resolved for this backend when the config was built
        "compute_dtype": config.compute_dtype,
        "loss": loss.name,
        "label_dropout": {"rate": loss.dropout_rate, "classes": list(loss.dropout_classes)},
        "seed": config.seed,
        "data_seed": config.mixture_seed,
        "resolution": config.resolution,
        "sources": [{"name": s.name, "alias": s.alias,
                     "train_examples": s.train_examples if s.train_examples is not None else "all",
                     "removals": [{"classes": list(r.classes), "fraction": r.fraction}
                                  for r in s.removals],
                     "split": s.split, "frames": s.frames}
                    for s in config.sources],
        "lr": "grid" if run.grid else config.optim.lr,
        "batch_size": "grid" if run.grid else config.batch_size,
    })
    try:
        out["epochs"] = (adjust(config) if adjust is not None and not run.epochs_fixed
                         else config).epochs
    except DataNotPrepared:  # the epochs follow the training-set size, unknown until prepared
        out["epochs"] = None
        out["epochs_note"] = "set from the training-set size once the datasets are prepared"
    if run.grid:
        out["grid"] = run.grid
    if str(run.tags.get("method", "")).startswith("pseudo"):
        out["derived_from"] = ("these sources; the teacher trains on their fully labelled "
                               "examples, the student on them with the missing labels "
                               "predicted by the teacher")
    if run.test_sources:
        out["test_sources"] = [{"name": s.name, "alias": s.alias} for s in run.test_sources]
    return out


def describe_json(run: Run, adjust: Callable[[Config], Config] | None = None) -> str:
    """:func:`describe` as one line of JSON."""
    return json.dumps(describe(run, adjust), sort_keys=False)
