"""The command line every experiment script shares: :func:`main`.

``main(experiment)`` turns the common flags and the experiment's own into
``Options``, asks the experiment for its runs, then:

1. selects this shard's runs (``--shard I/N``: every N-th group of dependent runs);
2. prepares the synthetic datasets the runs need (first use only) or checks that the
   real ones are prepared;
3. trains and evaluates each run (``execute``: finished runs are skipped,
   interrupted ones resume); with ``--report_only`` none (the report step after the
   shards of a job array: it names the runs still missing and exits with status 3 if
   any are);
4. collects ``results.csv``, writes ``report.md`` and PNG figures through the
   experiment's report function, and prints a compact table and where they are.

What the terminal shows (``echojax.progress``): a line per dataset prepared, a bar over
the runs with each run's step bar under it and a line per finished run, then the table
and paths. ``-q`` prints only the table and paths; ``-v`` adds each run's config and a
line per evaluation.

Re-running a finished command trains nothing: every run is skipped and the report is
rebuilt from the saved results.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable, Sequence

import jax

import echojax.experiment.options as options_lib
from echojax import progress
from echojax.config import Config
from echojax.data.mixture import Source
from echojax.experiment.datasets import DataNotPrepared, train_sizes
from echojax.experiment.execute import Backend, execute
from echojax.experiment.options import Options
from echojax.experiment.reporting import write_report
from echojax.experiment.runs import Experiment, Run, check_runs, describe_json, select_shard


def parse(experiment: Experiment, argv: Sequence[str] | None = None) -> Options:
    """The experiment's ``Options`` from command-line arguments; a bad flag exits with
    argparse's usage error naming it."""
    return parse_all(experiment, argv)[0]


def parse_all(experiment: Experiment, argv: Sequence[str] | None = None
              ) -> tuple[Options, int]:
    """:func:`parse` and the verbosity of ``-v``/``-q`` (``echojax.progress`` levels)."""
    parser = options_lib.build_parser(
        f"{experiment.title}\n\nEvery run of this experiment: see experiments/README.md.")
    progress.add_verbosity_flags(parser)
    if experiment.default_losses is not None:
        parser.set_defaults(loss=",".join(experiment.default_losses))
    if experiment.flags is not None:
        options_lib.add_flags(parser, experiment.flags)
    args = parser.parse_args(argv)
    try:
        flags = (options_lib.flags_from_args(experiment.flags, args)
                 if experiment.flags is not None else None)
        return options_lib.options_from_args(experiment.name, args, flags), \
            progress.verbosity(args)
    except ValueError as e:
        parser.error(str(e))


def main(experiment: Experiment, argv: Sequence[str] | None = None, *,
         backend: Backend | None = None) -> int:
    """Command-line entry of an experiment script; returns the exit status.
    ``backend`` does the work (default: echojax's trainer, evaluator and data)."""
    backend = backend or Backend()
    options, verbosity = parse_all(experiment, argv)
    try:
        runs = experiment.runs(options)
        check_runs(runs)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    mine = select_shard(runs, *options.shard)
    if verbosity >= progress.NORMAL:
        print(f"{experiment.title}\n{len(runs)} runs, {len(mine)} in shard "
              f"{options.shard[0]}/{options.shard[1]}; preset={options.preset.name}, "
              f"data={options.data}, "
              + (f"split={options.split}, " if options.split != "official" else "")
              + (f"camus_frames={options.camus_frames}, " if options.camus_frames != "all"
                 else "")
              + f"workdir={progress.short_path(options.workdir)}",
              flush=True)

    try:  # sizes known without the data (explicit training counts) fail before anything runs
        check_batch_fits(mine, backend.train_size)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2

    def adjust(config: Config) -> Config:
        return options.adjust(config, backend.train_size)

    if options.dry_run:
        for r in mine:
            print(describe_json(r, adjust))
        for line in sweep_cost(mine, options, backend.train_size):
            print(line)
        return 0
    if backend.compilation_cache:
        _enable_compilation_cache(options.workdir)
    try:
        needed = [s.name for r in mine
                  for s in (r.config.sources if r.config else ()) + r.test_sources + r.uses]
        backend.prepare(needed, data=options.data, data_dir=options.data_dir,
                        verbosity=verbosity)
    except DataNotPrepared as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    try:  # the rest, now that every dataset's size is known
        check_batch_fits(mine, backend.train_size)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if not options.report_only:
        sweep = progress.SweepProgress(len(mine), verbosity=verbosity)
        try:
            outcomes = execute(mine, options.workdir, backend=backend, adjust=adjust,
                               sweep=sweep)
        finally:
            sweep.close()
        trained = [o for o in outcomes if o.status == "trained"]
        if verbosity >= progress.NORMAL:
            print(f"{len(trained)} runs trained, {len(outcomes) - len(trained)} skipped, "
                  f"{progress.format_seconds(sum(o.seconds for o in trained))}; writing the "
                  "report ...", flush=True)
    path, compact, missing = write_report(experiment, options, runs, backend=backend)
    # Printed at every verbosity, after the bars are closed.
    print(compact)
    print(f"report: {path}\nresults: {os.path.join(options.workdir, 'results.csv')}\n"
          f"figures: {os.path.join(options.workdir, 'figures')}", flush=True)
    if options.report_only:
        print(f"finished: {len(runs) - len(missing)} of {len(runs)} runs (all shards)"
              + (f"; missing {len(missing)}: {', '.join(missing)}" if missing else ""),
              flush=True)
        return 3 if missing else 0
    return 0


def _describe(run: Run, adjust) -> str:
    if run.config is None:
        return f"config set up at run time (after {len(run.needs)} needed runs)"
    c = run.config
    try:
        epochs = str((c if run.epochs_fixed else adjust(c)).epochs)
    except DataNotPrepared:  # its size is unknown until it is
        epochs = f"{c.epochs}+ (set from the training-set size once prepared)"
    return (f"{c.model.name} {c.loss.name} dropout={c.loss.dropout_rate:g} seed={c.seed} "
            f"epochs={epochs} {train_sizes(c)}")


# Measured training-step images/s on one accelerator (bench/README.md): what the
# dry run's hour estimate divides by. Part of a checkout, not of an installed package.
THROUGHPUT_TABLE = os.path.join(
    os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))),
    "bench", "measured_throughput.json")


def sweep_cost(runs: Sequence[Run], options: Options, train_size: Callable[[Config], int],
               table: str = THROUGHPUT_TABLE) -> list[str]:
    """What ``--dry_run`` prints after the runs: the images they train on (runs x epochs
    x training images, per architecture, size, resolution and compute dtype) and the
    hours that takes on one accelerator at the images/s measured for that model in
    ``table`` (``bench/measured_throughput.json``), labelled with the machine; no
    estimate where nothing was measured.

    Training-set sizes come from ``train_size`` (the prepared datasets); a phantom
    dataset not yet prepared is counted from its builder's split (nothing is generated).
    A run set up at run time is counted from its ``preview`` config (a pseudo-label
    teacher trains on fewer images: an upper bound); runs whose size stays unknown (real
    data not prepared) are named as not counted.
    """
    groups: dict[tuple, list[int]] = {}  # (arch, size, resolution, dtype) -> [runs, images]
    previews, teachers, unknown = 0, 0, []
    for r in runs:
        config = r.config if r.config is not None else r.preview
        if config is None:
            unknown.append(r.name)
            continue
        n = _train_images(config, train_size)
        if n is None:
            unknown.append(r.name)
            continue
        epochs = config.epochs if r.epochs_fixed else options.adjust(config, n).epochs
        previews += r.config is None
        teachers += r.config is None and r.tags.get("method") == "pseudo_teacher"
        key = (config.model.name, config.model.size, config.resolution, config.compute_dtype)
        g = groups.setdefault(key, [0, 0])
        g[0] += 1
        g[1] += epochs * n
    counted = sum(g[0] for g in groups.values())
    total = sum(g[1] for g in groups.values())
    lines = [f"sweep: {len(runs)} runs; {total:,} images to train on (runs x epochs x "
             f"training images) over the {counted} runs counted"]
    if previews:
        lines.append(f"  {previews} of them set up at run time (after a grid search or a "
                     "teacher), counted from their preview config"
                     + (f"; {teachers} pseudo-label teachers train on fewer images (their "
                        "fully labelled ones): an upper bound" if teachers else ""))
    if unknown:
        shown = ", ".join(unknown[:3]) + (", ..." if len(unknown) > 3 else "")
        lines.append(f"  not counted: {len(unknown)} runs whose training-set size is unknown "
                     f"until their datasets are prepared ({shown})")
    rows = _measured_rows(table)
    hours, machines, estimated = 0.0, set(), 0
    for (arch, size, res, dtype), (count, images) in sorted(groups.items()):
        row = next((x for x in rows if (x.get("architecture"), x.get("model_size"),
                                        x.get("resolution"), x.get("compute_dtype"))
                    == (arch, size, res, dtype)), None)
        what = f"  {arch} {size} {res}x{res} {dtype}: {count} runs, {images:,} images"
        if row is None:
            lines.append(f"{what}; no estimate: no throughput measured for this model and "
                         "dtype")
            continue
        h = images / float(row["images_per_s"]) / 3600.0
        hours += h
        estimated += count
        machines.add(row["machine"])
        lines.append(f"{what}; {h:,.1f} h on {row['machine']} at {row['images_per_s']} "
                     f"images/s (batch {row.get('batch_size', '?')}, impl "
                     f"{row.get('impl', '?')}, measured {row.get('date', '?')} by "
                     f"`{row.get('command', '?')}`)")
    if not counted:
        lines.append("estimated hours: unavailable until the training-set sizes are known")
    elif not rows:
        lines.append(f"estimated hours: unavailable: no accelerator throughput has been "
                     f"measured ({os.path.relpath(table) if os.path.exists(table) else table}"
                     " holds no rows)")
    elif not estimated:
        lines.append("estimated hours: unavailable: no throughput has been measured for "
                     "these models on any accelerator")
    else:
        rest = counted - estimated
        lines.append(
            f"estimated hours: {hours:,.1f} h of training steps on {' / '.join(sorted(machines))}"
            f" for {estimated} of the {counted} runs counted"
            + (f" ({rest} without a measured throughput not included)" if rest else "")
            + "; at the measured batch size; evaluation, checkpoints and compilation not "
            "included")
    return lines


def _train_images(config: Config, train_size: Callable[[Config], int]) -> int | None:
    """Training images of ``config``'s mixture, or None while unknown."""
    try:
        return train_size(config)
    except DataNotPrepared:
        pass
    total = 0
    for s in config.sources:
        if s.train_examples is not None:
            total += s.train_examples
            continue
        n = _phantom_train_images(s, config.data_dir)
        if n is None:
            return None
        total += n
    return total


def _phantom_train_images(source: Source, data_dir: str | None) -> int | None:
    """Training images of a ``synthetic_echo`` source from its builder's config and
    split rule (or the paper split's count, ``Source.split``; two frames per subject
    under ``Source.frames="one_phase_per_view"``), without generating it; None for any
    other dataset."""
    if not source.name.startswith("synthetic_echo/"):
        return None
    import tensorflow_datasets as tfds

    from echojax import phantoms
    from echojax.data import mixture
    from tfds_builders.synthetic_echo.synthetic_echo_dataset_builder import split_of

    cfg = tfds.builder(source.name, data_dir=data_dir).builder_config
    if cfg.test_subjects is not None and source.split == "official":  # a test split only
        return 0
    n = cfg.test_subjects or cfg.subjects
    if source.split == "paper":
        subjects = int(mixture.PAPER_FRACTIONS[0] * n + 0.5)  # round half up
    else:
        subjects = sum(split_of(i) == "train" for i in range(n))
    style = phantoms.STYLES[cfg.style]
    if source.frames == "one_phase_per_view":
        return subjects * 2 if style.views_per_subject == 2 else None
    return subjects * style.examples_per_subject


def _measured_rows(table: str) -> list[dict]:
    """The rows of the measured-throughput table; none if it is absent (an installed
    package has no ``bench/``)."""
    try:
        with open(table) as f:
            return list(json.load(f).get("rows", []))
    except FileNotFoundError:
        return []


def _enable_compilation_cache(workdir: str) -> None:
    jax.config.update("jax_compilation_cache_dir", os.path.join(workdir, ".jax_cache"))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 1.0)


__all__ = ["THROUGHPUT_TABLE", "main", "parse", "parse_all", "sweep_cost"]


def check_batch_fits(runs: Sequence[Run], train_size) -> None:
    """Raises ValueError naming the first run whose training set is smaller than its
    batch size (e.g. ``--preset=smoke --camus_sizes=100``: 1 image for batches of 2), so
    that a sweep stops when it starts instead of in its middle. Runs whose size needs
    an unprepared dataset, or whose config is set up at run time, are left for later."""
    for r in runs:
        c = r.config if r.config is not None else r.preview
        if c is None:
            continue
        try:
            n = train_size(c)
        except DataNotPrepared:
            continue
        if n < c.batch_size:
            setting = r.tags.get("setting", "")
            raise ValueError(
                f"run {r.name}{f' (setting {setting})' if setting else ''}: training sizes "
                f"{train_sizes(c)} give {n} training images, fewer than the batch size "
                f"{c.batch_size}; choose larger sizes or a smaller --batch_size")
