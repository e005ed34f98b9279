"""The experiment layer: sweeps of training runs for the paper's experiments.

An experiment script (``experiments/exp*.py``) declares an :class:`Experiment`: its
runs (each a ``Config`` plus tags that place it in the paper's tables), its own typed
flags, and its report; :func:`main` does the rest. The modules, one concern each:

- ``runs``: ``Run``, ``Experiment``, dependencies and shards, the pseudo-label pair;
- ``options``: presets, the common flags, typed experiment flags (``flag``);
- ``datasets``: the paper's datasets by alias, TFDS names, preparation, sizes;
- ``execute``: training and evaluating runs in their folders, skipping finished ones;
- ``grid``: the learning-rate x batch-size grid search;
- ``results``: ``results.csv`` rows from finished runs;
- ``reporting``: ``report.md``, ``results.csv`` and the overlay figures;
- ``cli``: the command line.
"""

from echojax.experiment.cli import main, parse
from echojax.experiment.datasets import PAPER_SOURCES, DataNotPrepared, tfds_name
from echojax.experiment.execute import Backend, execute, is_finished, run_dir
from echojax.experiment.grid import best_validation_dice, with_grid_search
from echojax.experiment.options import ARCHS, LOSSES, PRESETS, Options, Preset, csv_list, flag
from echojax.experiment.reporting import ReportInput, write_report
from echojax.experiment.results import RESULT_COLUMNS, collect
from echojax.experiment.runs import Experiment, Run, check_runs, pseudo_label_runs, select_shard

__all__ = ["main", "parse", "PAPER_SOURCES", "DataNotPrepared", "tfds_name", "Backend",
           "execute", "is_finished", "run_dir", "best_validation_dice", "with_grid_search",
           "ARCHS", "LOSSES", "PRESETS", "Options", "Preset", "csv_list", "flag",
           "ReportInput", "write_report", "RESULT_COLUMNS", "collect", "Experiment", "Run",
           "check_runs", "pseudo_label_runs", "select_shard"]
