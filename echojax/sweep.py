"""Sweeps of training runs for the paper's experiments, and their common command line.

An experiment (``experiments/exp*.py``) is a list of named :class:`Run` s, each a
``Config`` plus tags (``setting``, ``method``) that place it in the paper's tables.
:func:`main` turns the common flags into :class:`Options`, asks the experiment for its
runs, then:

1. selects this shard's runs (``--shard I/N``: every N-th group of dependent runs);
2. prepares the synthetic datasets the runs need (first use only) or checks that the
   real ones are prepared;
3. trains and evaluates each run in ``<workdir>/<run name>/``, skipping runs whose
   ``eval/test/summary.json`` (and every extra test source's) exists with an identical
   ``config.json``, and resuming interrupted ones (``train_and_evaluate`` resumes from
   the run's checkpoint);
4. collects ``results.csv`` (one row per run x test source x structure, see
   ``echojax.report.RESULT_COLUMNS``), writes ``report.md`` and PNG figures through the
   experiment's report function, and prints where they are and a compact table.

Re-running a finished command trains nothing: every run is skipped and the report is
rebuilt from the saved results.

Runs evaluated on sources they were not trained on (Figure 2's cross-domain cells,
Table 4's external validation) get ``<run>/external/<alias>/``: a ``config.json`` with
that source alone, a link to the run's checkpoints, and the usual ``eval/test`` files
written by ``echojax.evaluate``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from echojax import report as report_lib
from echojax.config import Config, LossConfig, ModelConfig, OptimConfig
from echojax.data.mixture import Removal, Source

ARCHS: tuple[str, ...] = ("unet", "attention_unet", "swin_unet")
LOSSES: tuple[str, ...] = ("cce", "acce", "marginal", "abce")
DATA_KINDS = ("synthetic", "real")

# The three datasets of the paper by alias; the TFDS names per data kind follow.
PAPER_SOURCES = ("camus", "unity", "echonet")
_SYNTHETIC_STYLES = {"camus": "camus_like", "unity": "unity_like", "echonet": "echonet_like"}
_REAL_NAMES = {"camus": "camus", "unity": "unity_imaging", "echonet": "echonet_dynamic"}


# --------------------------------------------------------------------------- presets


@dataclasses.dataclass(frozen=True)
class Preset:
    """Sizes and schedule shared by every run of a sweep.

    ``size_scale`` multiplies the paper's training-set sizes (Table 2's grid, the
    balanced mixture of Experiment 4) so that they fit the phantom datasets.
    With ``examples_per_run``, a run on a small training set gets more epochs, so that
    it sees at least that many images (``Options.adjust``); the paper preset keeps the
    paper's fixed epochs.
    With ``lr_grid``/``batch_grid`` non-empty and no ``--lr``/``--batch_size`` given,
    each (setting-independent) group of runs first grid-searches the initial learning
    rate and batch size on validation foreground Dice (paper, Sec. 4.6).
    """
    name: str
    resolution: int
    model_size: str
    epochs: int
    batch_size: int
    lr: float
    seeds: tuple[int, ...]
    grid_seeds: tuple[int, ...]
    archs: tuple[str, ...]
    dropout_rates: tuple[float, ...]
    size_scale: float
    eval_every: int = 1
    lr_grid: tuple[float, ...] = ()
    batch_grid: tuple[int, ...] = ()
    examples_per_run: int | None = None  # epochs >= this / training-set size


PRESETS: dict[str, Preset] = {
    # Islam et al., MELBA 2026, Sec. 4.6: 256 x 256, 500 epochs, 5 seeds (3 for the
    # data-size grid), initial LR and batch size from a grid search, best-val model.
    # The grid's values are not given in the paper; these span the usual SGD range.
    "paper": Preset(
        name="paper", resolution=256, model_size="paper", epochs=500, batch_size=16, lr=0.01,
        seeds=(0, 1, 2, 3, 4), grid_seeds=(0, 1, 2), archs=ARCHS,
        dropout_rates=tuple(round(0.1 * i, 1) for i in range(11)), size_scale=1.0,
        eval_every=5, lr_grid=(0.1, 0.01, 0.001), batch_grid=(8, 16, 32)),
    # Sized for a 2-core CPU: 64 x 64 phantoms, CPU-size U-Net, 2 epochs, one seed.
    "quick": Preset(
        name="quick", resolution=64, model_size="cpu", epochs=2, batch_size=8, lr=0.05,
        seeds=(0,), grid_seeds=(0,), archs=("unet",),
        dropout_rates=(0.0, 0.25, 0.5, 0.75, 1.0), size_scale=0.25, examples_per_run=1600),
}


# --------------------------------------------------------------------------- runs


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
    """
    name: str
    config: Config | None
    tags: Mapping[str, str] = dataclasses.field(default_factory=dict)
    test_sources: tuple[Source, ...] = ()
    needs: tuple[str, ...] = ()
    setup: Callable[[str, Mapping[str, str]], Config] | None = None
    uses: tuple[Source, ...] = ()

    def __post_init__(self):
        if not self.name or self.name.startswith("/") or ".." in self.name.split("/"):
            raise ValueError(f"run name must be a relative folder name, got {self.name!r}")
        if self.config is None and self.setup is None:
            raise ValueError(f"run {self.name!r} needs a config or a setup function")


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


def parse_shard(text: str) -> tuple[int, int]:
    """``"I/N"`` -> (I, N) with 0 <= I < N."""
    try:
        i, n = (int(p) for p in text.split("/"))
    except ValueError:
        raise ValueError(f"--shard must be I/N with integers, e.g. 0/4, got {text!r}") from None
    if n <= 0 or not 0 <= i < n:
        raise ValueError(f"--shard {text!r}: need N >= 1 and 0 <= I < N")
    return i, n


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


# --------------------------------------------------------------------------- datasets


def tfds_name(alias: str, *, data: str, resolution: int) -> str:
    """TFDS name (with config) of a paper dataset alias for ``data`` and ``resolution``."""
    if data not in DATA_KINDS:
        raise ValueError(f"--data must be one of {DATA_KINDS}, got {data!r}")
    table = _SYNTHETIC_STYLES if data == "synthetic" else _REAL_NAMES
    if alias not in table:
        raise ValueError(f"unknown dataset alias {alias!r}; expected one of {sorted(table)}")
    if data == "synthetic":
        return f"synthetic_echo/{table[alias]}_{resolution}"
    return f"{table[alias]}/{resolution}"


def paper_source(alias: str, options: Options, *, train_examples: int | None = None,
                 remove: Sequence[str] = (), fraction: float = 1.0) -> Source:
    """A ``Source`` for one of the paper's datasets, optionally with ``remove`` classes
    taken from ``fraction`` of its train/validation masks."""
    removals = (Removal(tuple(remove), fraction),) if remove else ()
    return Source(tfds_name(alias, data=options.data, resolution=options.preset.resolution),
                  alias=alias, train_examples=train_examples, removals=removals)


def extra_sources(options: Options, exclude: Sequence[str]) -> list[Source]:
    """Prepared datasets beyond ``exclude`` for external validation (Table 4).

    Synthetic: the ``synthetic_echo`` styles other than the paper's three, at the
    preset's resolution (prepared on first use like the others). Real: none by default;
    name them with ``--external name:alias,...``.
    """
    out = [Source(name, alias=alias) for name, alias in options.external]
    if options.data == "synthetic" and not options.external:
        try:
            from echojax import phantoms
            styles = sorted(phantoms.STYLES)
        except ImportError:
            styles = []
        used = {_SYNTHETIC_STYLES[a] for a in PAPER_SOURCES}
        for style in styles:
            alias = style.removesuffix("_like")
            if style not in used and alias not in exclude:
                out.append(Source(f"synthetic_echo/{style}_{options.preset.resolution}", alias=alias))
    return out


def prepare_datasets(names: Sequence[str], *, data: str, data_dir: str | None) -> None:
    """Prepares the synthetic datasets among ``names`` that are not yet prepared (TFDS
    shows a progress bar); for real data, raises ``DataNotPrepared`` naming each
    missing dataset and how to prepare it. Derived (pseudo-label) datasets are skipped.
    """
    import tensorflow_datasets as tfds
    import tfds_builders  # noqa: F401  registers the echojax builders

    missing = []
    for name in dict.fromkeys(names):
        if name.startswith("echojax_derived/"):
            continue
        builder = tfds.builder(name, data_dir=data_dir)
        if builder.is_prepared():
            continue
        if name.startswith("synthetic_echo/"):
            print(f"preparing {name} in {builder.data_dir} (first use only)", flush=True)
            builder.download_and_prepare(file_format="array_record")
        else:
            missing.append(name)
    if missing:
        raise DataNotPrepared(
            f"real datasets not prepared in data_dir={data_dir or '~/tensorflow_datasets'}: "
            f"{', '.join(missing)}. Put each download in <data_dir>/downloads/manual/ and run "
            f"`import tfds_builders, tensorflow_datasets as tfds; tfds.builder(NAME, "
            f"data_dir=DATA_DIR).download_and_prepare()` (tfds_builders/<name>/README.md), "
            f"or run with --data=synthetic.")


class DataNotPrepared(RuntimeError):
    """A real dataset the sweep needs is not prepared."""


# --------------------------------------------------------------------------- running


def run_dir(workdir: str, run: Run) -> str:
    return os.path.join(workdir, *run.name.split("/"))


def _eval_summary(directory: str) -> str:
    return os.path.join(directory, "eval", "test", "summary.json")


def external_dir(directory: str, alias: str) -> str:
    return os.path.join(directory, "external", alias)


def is_finished(config: Config, directory: str, test_sources: Sequence[Source] = ()) -> bool:
    """True when ``directory`` holds this exact config and all its test summaries.

    Raises ValueError if ``directory`` holds a different config (re-using a workdir for
    changed settings would mix results).
    """
    path = os.path.join(directory, "config.json")
    if not os.path.exists(path):
        return False
    saved = Config.load(path)
    if saved != config:
        raise ValueError(
            f"{path} holds a different config than this sweep's run (changed flags or "
            f"preset?); use another --workdir or delete {directory}")
    paths = [_eval_summary(directory)] + [_eval_summary(external_dir(directory, s.alias))
                                          for s in test_sources]
    return all(os.path.exists(p) for p in paths)


def evaluate_run(directory: str, test_sources: Sequence[Source] = (), *,
                 evaluate_fn: Callable[..., Any]) -> None:
    """Evaluates a trained run on its own test splits and on each extra source."""
    evaluate_fn(directory, split="test")
    for source in test_sources:
        evaluate_fn(prepare_external(directory, source), split="test")


def prepare_external(directory: str, source: Source) -> str:
    """Makes ``<directory>/external/<alias>/``, a run folder for evaluating the run in
    ``directory`` on another prepared dataset: its ``config.json`` is the run's with
    ``source`` as the only source, and ``checkpoints`` links to the run's. Returns it.

    Raises ValueError if the folder exists for a different dataset under that alias.
    """
    config = Config.load(os.path.join(directory, "config.json"))
    ext = external_dir(directory, source.alias)
    ext_config = dataclasses.replace(config, sources=(Source(source.name, alias=source.alias),))
    path = os.path.join(ext, "config.json")
    if os.path.exists(path) and Config.load(path) != ext_config:
        raise ValueError(
            f"{path} already holds an external evaluation on "
            f"{[s.name for s in Config.load(path).sources]}, not {source.name!r} with this "
            f"run's config; choose another alias or delete {ext}")
    os.makedirs(ext, exist_ok=True)
    ext_config.save(path)
    link = os.path.join(ext, "checkpoints")
    if not os.path.lexists(link):
        os.symlink(os.path.join("..", "..", "checkpoints"), link)
    return ext


@dataclasses.dataclass
class Outcome:
    name: str
    status: str  # "skipped" (finished before), "trained"
    seconds: float


def execute(runs: Sequence[Run], workdir: str, *, train_fn: Callable[[Config, str], Any],
            evaluate_fn: Callable[..., Any], log: Callable[[str], None] = print,
            adjust: Callable[[Config], Config] | None = None) -> list[Outcome]:
    """Trains and evaluates ``runs`` in order, skipping finished ones (see module doc).

    ``adjust`` maps each run's final config (after its ``setup``) to the one trained,
    e.g. :meth:`Options.adjust`.
    """
    check_runs(runs)
    outcomes = []
    dirs = {r.name: run_dir(workdir, r) for r in runs}
    for k, run in enumerate(runs, start=1):
        directory = dirs[run.name]
        config = run.config
        if run.setup is not None:
            config = run.setup(directory, {n: dirs[n] for n in run.needs})
        if adjust is not None:
            config = adjust(config)
        if is_finished(config, directory, run.test_sources):
            log(f"[{k}/{len(runs)}] {run.name}: finished before, skipped")
            outcomes.append(Outcome(run.name, "skipped", 0.0))
            continue
        resumed = os.path.exists(os.path.join(directory, "checkpoints"))
        log(f"[{k}/{len(runs)}] {run.name}: {'resuming' if resumed else 'training'} in {directory}")
        t0 = time.perf_counter()
        train_fn(config, directory)
        evaluate_run(directory, run.test_sources, evaluate_fn=evaluate_fn)
        seconds = time.perf_counter() - t0
        report_lib.atomic_write_text(os.path.join(directory, "sweep_time.json"),
                                     json.dumps({"seconds": seconds}) + "\n")
        outcomes.append(Outcome(run.name, "trained", seconds))
    return outcomes


# --------------------------------------------------------------------------- results


def train_size(config: Config) -> int:
    """Training examples of a config's mixture (``train_examples``, else the split)."""
    import tensorflow_datasets as tfds
    import tfds_builders  # noqa: F401  registers the echojax builders

    total = 0
    for s in config.sources:
        if s.train_examples is not None:
            total += s.train_examples
        else:
            total += tfds.builder(s.name, data_dir=config.data_dir).info.splits["train"].num_examples
    return total


def train_sizes(config: Config) -> str:
    """``"camus=100;unity=all"`` from the config's sources."""
    return ";".join(f"{s.alias}={s.train_examples if s.train_examples is not None else 'all'}"
                    for s in config.sources)


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


def run_results(experiment: str, run: Run, directory: str) -> tuple[list[dict], list[dict]]:
    """Result rows and per-image rows (with the run's tags) of one finished run."""
    config = Config.load(os.path.join(directory, "config.json"))
    tags = {
        "experiment": experiment, "run": run.name,
        "setting": str(run.tags.get("setting", "")),
        "method": str(run.tags.get("method", config.loss.name)),
        "arch": config.model.name, "loss": config.loss.name,
        "dropout": float(config.loss.dropout_rate), "seed": int(config.seed),
        "train_sizes": train_sizes(config),
    }
    rows, images = [], []
    folders = [directory] + [external_dir(directory, s.alias) for s in run.test_sources]
    for folder in folders:
        per_image = report_lib.read_per_image(os.path.join(folder, "eval", "test", "per_image.csv"))
        with open(_eval_summary(folder)) as f:
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


def collect(experiment: str, runs: Sequence[Run], workdir: str) -> tuple[list[dict], list[dict], list[str]]:
    """Results of every finished run of the experiment (all shards): (result rows,
    per-image rows, names of runs not finished yet)."""
    rows, images, missing = [], [], []
    for run in runs:
        directory = run_dir(workdir, run)
        folders = [directory] + [external_dir(directory, s.alias) for s in run.test_sources]
        if not all(os.path.exists(_eval_summary(f)) for f in folders):
            missing.append(run.name)
            continue
        r, i = run_results(experiment, run, directory)
        rows += r
        images += i
    return rows, images, missing


RESULT_COLUMNS = report_lib.RESULT_COLUMNS + ("ef_method",)


def overlay_figure(workdir: str, runs_by_method: Mapping[str, Run], alias: str, path: str, *,
                   count: int = 3, title: str = "") -> None:
    """Figures 4b/7b/8: ``count`` test images of source ``alias`` (evenly spaced through
    its test split), their ground truth, and each method's prediction (best checkpoint).
    """
    import numpy as np

    from echojax import pseudo_label
    from echojax.data.mixture import Mixture

    if not runs_by_method:
        raise ValueError("overlay_figure needs at least one run")
    first = Config.load(os.path.join(run_dir(workdir, next(iter(runs_by_method.values()))),
                                     "config.json"))
    source = next((s for s in first.sources if s.alias == alias), None)
    if source is None:
        raise ValueError(f"{alias!r} is not a source of the overlay's first run")
    test = Mixture([Source(source.name, alias=alias)], "test", data_dir=first.data_dir,
                   seed=0, metadata=True)
    picks = np.linspace(0, len(test) - 1, num=min(count, len(test))).round().astype(int)
    examples = [test[int(i)] for i in picks]
    images = np.stack([ex["image"] for ex in examples])
    predictions = {m: pseudo_label.predictor(run_dir(workdir, r))(images)
                   for m, r in runs_by_method.items()}
    samples = [{"image": ex["image"], "label": ex["segmentation"],
                "predictions": {m: p[k] for m, p in predictions.items()},
                "title": f"{ex['patient_id']}\n{ex['view']} {ex['phase']}"}
               for k, ex in enumerate(examples)]
    report_lib.plot_overlays(samples, path, methods=list(runs_by_method), title=title)


# --------------------------------------------------------------------------- options


@dataclasses.dataclass(frozen=True)
class Options:
    """The common flags, resolved against the preset."""
    experiment: str
    losses: tuple[str, ...]
    archs: tuple[str, ...]
    seeds: tuple[int, ...]
    preset: Preset
    data: str
    data_dir: str | None
    workdir: str
    shard: tuple[int, int]
    lr: float | None
    batch_size: int | None
    epochs: int | None
    external: tuple[tuple[str, str], ...] = ()
    extra: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    seeds_given: bool = False  # --seeds was passed (else the preset's seeds)
    data_seed: int | None = None  # --data_seed: one choice of examples for every seed

    @property
    def grid_search(self) -> bool:
        return bool(self.preset.lr_grid or self.preset.batch_grid) and \
            self.lr is None and self.batch_size is None

    def config(self, sources: Sequence[Source], *, arch: str, loss: str, seed: int,
               dropout: float = 0.0, dropout_classes: Sequence[str] = ()) -> Config:
        """The run config for these choices under the preset and the overrides."""
        p = self.preset
        return Config(
            sources=tuple(sources), resolution=p.resolution,
            model=ModelConfig(name=arch, size=p.model_size),
            loss=LossConfig(name=loss, dropout_rate=float(dropout),
                            dropout_classes=tuple(dropout_classes) if dropout else ()),
            optim=OptimConfig(lr=self.lr if self.lr is not None else p.lr),
            data_dir=self.data_dir,
            batch_size=self.batch_size if self.batch_size is not None else p.batch_size,
            epochs=self.epochs if self.epochs is not None else p.epochs,
            eval_every=min(p.eval_every, self.epochs or p.epochs),
            seed=seed, data_seed=self.data_seed)

    def adjust(self, config: Config) -> Config:
        """The config with :meth:`epochs_for` its training-set size (read from the TFDS
        split sizes when a source is used whole); unchanged without
        ``examples_per_run`` or with ``--epochs``."""
        if self.epochs is not None or not self.preset.examples_per_run:
            return config
        epochs = self.epochs_for(train_size(config))
        # A few validations per run: on a tiny training set an evaluation and a
        # checkpoint every epoch would cost more than the training.
        return dataclasses.replace(config, epochs=epochs,
                                   eval_every=max(self.preset.eval_every, epochs // 4))

    def epochs_for(self, train_size: int) -> int:
        """Epochs of a run with ``train_size`` training images: the preset's, or, with
        ``examples_per_run`` and no ``--epochs``, enough to see that many images."""
        if self.epochs is not None or not self.preset.examples_per_run:
            return self.epochs or self.preset.epochs
        return max(self.preset.epochs, math.ceil(self.preset.examples_per_run / train_size))

    def size(self, paper_size: int) -> int:
        """A paper training-set size scaled by the preset (at least 1)."""
        return max(1, int(round(paper_size * self.preset.size_scale)))


def _csv_list(text: str, allowed: Sequence[str], flag: str) -> tuple[str, ...]:
    items = tuple(dict.fromkeys(x.strip() for x in text.split(",") if x.strip()))
    if not items:
        raise ValueError(f"{flag} is empty")
    bad = [x for x in items if x not in allowed]
    if bad:
        raise ValueError(f"{flag}: unknown {bad}; expected some of {list(allowed)}")
    return items


def build_parser(description: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=description,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--loss", default=",".join(LOSSES),
                   help="loss or comma list (default: all of %(default)s)")
    p.add_argument("--arch", default=None,
                   help=f"architecture or comma list from {','.join(ARCHS)} (default: the preset's)")
    p.add_argument("--seeds", default=None, help="comma list of seeds (default: the preset's)")
    p.add_argument("--data_seed", type=int, default=None,
                   help="seed of the training subsets and removed labels, the same for every "
                        "run (default: each run's seed, so seeds also vary the data)")
    p.add_argument("--preset", default="quick", choices=sorted(PRESETS))
    p.add_argument("--data", default="synthetic", choices=DATA_KINDS,
                   help="synthetic phantoms (prepared on first use) or the real datasets")
    p.add_argument("--data_dir", default=None, help="TFDS data_dir (default: ~/tensorflow_datasets)")
    p.add_argument("--workdir", default=None,
                   help="experiment folder (default: ~/echojax_runs/<experiment>/<preset>_<data>)")
    p.add_argument("--shard", default="0/1", help="I/N: run only every N-th run group, from I")
    p.add_argument("--lr", type=float, default=None, help="initial learning rate (no grid search)")
    p.add_argument("--batch_size", type=int, default=None, help="batch size (no grid search)")
    p.add_argument("--epochs", type=int, default=None, help="training epochs")
    p.add_argument("--external", default="",
                   help="extra test sources name:alias,... for external validation")
    p.add_argument("--dry_run", action="store_true", help="list this shard's runs and exit")
    return p


def options_from_args(experiment: str, args: argparse.Namespace,
                      extra: Mapping[str, Any] | None = None) -> Options:
    preset = PRESETS[args.preset]
    archs = _csv_list(args.arch, ARCHS, "--arch") if args.arch else preset.archs
    try:
        seeds = tuple(int(s) for s in args.seeds.split(",")) if args.seeds else None
    except ValueError:
        raise ValueError(f"--seeds must be a comma list of ints, got {args.seeds!r}") from None
    for name in ("lr", "batch_size", "epochs"):
        v = getattr(args, name)
        if v is not None and v <= 0:
            raise ValueError(f"--{name} must be positive, got {v}")
    if args.data_seed is not None and args.data_seed < 0:
        raise ValueError(f"--data_seed must be >= 0, got {args.data_seed}")
    external = []
    for item in filter(None, (x.strip() for x in args.external.split(","))):
        if ":" not in item:
            raise ValueError(f"--external entries are name:alias, got {item!r}")
        name, alias = item.rsplit(":", 1)
        external.append((name, alias))
    workdir = args.workdir or os.path.join(
        os.path.expanduser("~"), "echojax_runs", experiment, f"{preset.name}_{args.data}")
    return Options(
        experiment=experiment, losses=_csv_list(args.loss, LOSSES, "--loss"), archs=archs,
        seeds=seeds or preset.seeds, preset=preset, data=args.data, data_dir=args.data_dir,
        workdir=os.path.abspath(workdir), shard=parse_shard(args.shard), lr=args.lr,
        batch_size=args.batch_size, epochs=args.epochs, external=tuple(external),
        extra=dict(extra or {}), seeds_given=seeds is not None, data_seed=args.data_seed)


# --------------------------------------------------------------------------- grid search


def best_validation_dice(directory: str) -> float:
    """Highest ``validation/fg_dice`` in a run's ``metrics.jsonl`` (NaN if none)."""
    best = math.nan
    path = os.path.join(directory, "metrics.jsonl")
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
    """Adds an initial-LR x batch-size grid search in front of each group of runs.

    Runs with the same ``key`` (e.g. architecture and loss) share one search, trained
    on the group's first run's config with each grid value; every run of the group
    then trains with the pair of the best validation foreground Dice. Runs that need a
    ``setup`` of their own keep it (their config is re-tuned after it).
    """
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


# --------------------------------------------------------------------------- main


@dataclasses.dataclass(frozen=True)
class Experiment:
    """What an experiment script hands to :func:`main`.

    ``runs(options) -> [Run]``; ``report(ReportInput) -> (markdown, compact table)``
    writes its figures into ``ReportInput.figures_dir`` and returns the body of
    ``report.md`` and the short table printed at the end. ``add_flags(parser)`` adds
    experiment-specific flags, read back from ``options.extra``.
    """
    name: str
    title: str
    runs: Callable[[Options], list[Run]]
    report: Callable[[ReportInput], tuple[str, str]]
    add_flags: Callable[[argparse.ArgumentParser], None] | None = None
    default_losses: tuple[str, ...] = LOSSES


@dataclasses.dataclass
class ReportInput:
    options: Options
    runs: list[Run]
    results: list[dict]
    per_image: list[dict]
    workdir: str
    figures_dir: str
    missing: list[str]
    overlays: bool = True  # False with injected fake engines (no checkpoints to load)

    def run_dir(self, name: str) -> str:
        return run_dir(self.workdir, next(r for r in self.runs if r.name == name))


def main(experiment: Experiment, argv: Sequence[str] | None = None, *,
         train_fn: Callable[[Config, str], Any] | None = None,
         evaluate_fn: Callable[..., Any] | None = None,
         prepare_fn: Callable[..., None] | None = None,
         adjust_fn: Callable[[Config], Config] | None = None) -> int:
    """Command-line entry of an experiment script; returns the exit status.

    ``train_fn``, ``evaluate_fn``, ``prepare_fn`` and ``adjust_fn`` default to
    ``echojax.train.train_and_evaluate``, ``echojax.evaluate.evaluate``,
    :func:`prepare_datasets` and :meth:`Options.adjust` (tests inject fakes).
    """
    parser = build_parser(f"{experiment.title}\n\nEvery run of this experiment: see "
                          f"experiments/README.md.")
    parser.set_defaults(loss=",".join(experiment.default_losses))
    if experiment.add_flags:
        experiment.add_flags(parser)
    args = parser.parse_args(argv)
    common = set(vars(build_parser("").parse_args([])))
    extra = {k: v for k, v in vars(args).items() if k not in common}
    try:
        options = options_from_args(experiment.name, args, extra)
        runs = experiment.runs(options)
        check_runs(runs)
    except ValueError as e:
        parser.error(str(e))
    mine = select_shard(runs, *options.shard)
    print(f"{experiment.title}\n{len(runs)} runs, {len(mine)} in shard "
          f"{options.shard[0]}/{options.shard[1]}; preset={options.preset.name}, "
          f"data={options.data}, workdir={options.workdir}", flush=True)
    adjust = options.adjust if adjust_fn is None else adjust_fn
    if args.dry_run:
        for r in mine:
            cfg = (f"config set up at run time (after {len(r.needs)} needed runs)"
                   if r.config is None else (
                f"{r.config.model.name} {r.config.loss.name} dropout={r.config.loss.dropout_rate:g} "
                f"seed={r.config.seed} epochs={_epochs_text(r.config, adjust)} "
                f"{train_sizes(r.config)}"))
            print(f"  {r.name}: {cfg}")
        return 0
    fake = train_fn is not None
    if train_fn is None or evaluate_fn is None:
        _enable_compilation_cache(options.workdir)
        from echojax import evaluate as evaluate_lib
        from echojax import train as train_lib
        train_fn = train_fn or train_lib.train_and_evaluate
        evaluate_fn = evaluate_fn or evaluate_lib.evaluate
    try:
        needed = [s.name for r in mine
                  for s in (r.config.sources if r.config else ()) + r.test_sources + r.uses]
        (prepare_fn or prepare_datasets)(needed, data=options.data, data_dir=options.data_dir)
    except DataNotPrepared as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    t0 = time.perf_counter()
    outcomes = execute(mine, options.workdir, train_fn=train_fn, evaluate_fn=evaluate_fn,
                       adjust=adjust)
    wall = time.perf_counter() - t0
    trained = [o for o in outcomes if o.status == "trained"]
    print(f"{len(trained)} runs trained, {len(outcomes) - len(trained)} skipped, "
          f"{wall:.0f} s", flush=True)
    path, compact = write_report(experiment, options, runs, overlays=not fake)
    print(compact)
    print(f"report: {path}\nresults: {os.path.join(options.workdir, 'results.csv')}\n"
          f"figures: {os.path.join(options.workdir, 'figures')}")
    return 0


def _epochs_text(config: Config, adjust: Callable[[Config], Config]) -> str:
    try:
        return str(adjust(config).epochs)
    except Exception:  # a dataset not prepared yet: its size is unknown until it is
        return f"{config.epochs}+ (set from the training-set size once prepared)"


def write_report(experiment: Experiment, options: Options, runs: Sequence[Run], *,
                 overlays: bool = True) -> tuple[str, str]:
    """Collects the results of all finished runs and writes results.csv, report.md."""
    results, per_image, missing = collect(experiment.name, runs, options.workdir)
    report_lib.write_csv(os.path.join(options.workdir, "results.csv"), results, RESULT_COLUMNS)
    figures = os.path.join(options.workdir, "figures")
    if results:
        body, compact = experiment.report(ReportInput(
            options=options, runs=list(runs), results=results, per_image=per_image,
            workdir=options.workdir, figures_dir=figures, missing=missing, overlays=overlays))
    else:
        body, compact = "No finished runs yet.\n", "(no finished runs yet)"
    seconds = 0.0
    for r in runs:
        t = os.path.join(run_dir(options.workdir, r), "sweep_time.json")
        if os.path.exists(t):
            with open(t) as f:
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
    report_lib.atomic_write_text(path, "\n".join(header) + "\n" + body)
    return path, compact


def _enable_compilation_cache(workdir: str) -> None:
    # Runs of a sweep differ mostly in values that are arguments of the compiled step
    # (dropout rate, data): the persistent cache turns their recompilation into a load.
    import jax
    cache = os.path.join(workdir, ".jax_cache")
    jax.config.update("jax_compilation_cache_dir", cache)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 1.0)


__all__ = ["Run", "Options", "Preset", "PRESETS", "Experiment", "ReportInput", "main",
           "select_shard", "parse_shard", "execute", "collect", "paper_source", "tfds_name",
           "with_grid_search", "is_finished"]
