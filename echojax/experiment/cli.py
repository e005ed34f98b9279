"""The command line every experiment script shares: :func:`main`.

``main(experiment)`` turns the common flags and the experiment's own into
``Options``, asks the experiment for its runs, then:

1. selects this shard's runs (``--shard I/N``: every N-th group of dependent runs);
2. prepares the synthetic datasets the runs need (first use only) or checks that the
   real ones are prepared;
3. trains and evaluates each run (``execute``: finished runs are skipped,
   interrupted ones resume);
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

import os
import sys
from collections.abc import Sequence

import jax

import echojax.experiment.options as options_lib
from echojax import progress
from echojax.config import Config
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
              f"data={options.data}, workdir={progress.short_path(options.workdir)}",
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
    sweep = progress.SweepProgress(len(mine), verbosity=verbosity)
    try:
        outcomes = execute(mine, options.workdir, backend=backend, adjust=adjust, sweep=sweep)
    finally:
        sweep.close()
    trained = [o for o in outcomes if o.status == "trained"]
    if verbosity >= progress.NORMAL:
        print(f"{len(trained)} runs trained, {len(outcomes) - len(trained)} skipped, "
              f"{progress.format_seconds(sum(o.seconds for o in trained))}; writing the "
              "report ...", flush=True)
    path, compact = write_report(experiment, options, runs, backend=backend)
    # Printed at every verbosity, after the bars are closed.
    print(compact)
    print(f"report: {path}\nresults: {os.path.join(options.workdir, 'results.csv')}\n"
          f"figures: {os.path.join(options.workdir, 'figures')}", flush=True)
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


def _enable_compilation_cache(workdir: str) -> None:
    jax.config.update("jax_compilation_cache_dir", os.path.join(workdir, ".jax_cache"))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 1.0)


__all__ = ["main", "parse", "parse_all"]


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
