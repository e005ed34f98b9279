"""The ``echojax`` command: one entry point for every stage, from a dataset to masks.

    echojax prepare camus/256 --manual_dir ~/CAMUS --data_dir ~/data
    echojax train --config configs/quick.json --workdir runs/quick
    echojax evaluate --workdir runs/quick
    echojax export --workdir runs/quick --out models/quick
    echojax predict --model models/quick recordings/ --out predictions/
    echojax progress runs/quick

Each subcommand is ``python -m echojax.<module>`` with the same flags and behaviour
(``train``, ``evaluate``, ``export``, ``predict``, ``progress``; those module commands
keep working), except ``prepare``, which is new here: it builds a registered TFDS dataset
the way ``tfds build`` would, without TensorFlow (``tfds build`` imports it). ``echojax
--help`` lists the subcommands, ``echojax CMD --help`` gives each one's flags. The
command is installed with the package (``[project.scripts]``); ``python -m echojax`` is
the same.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
import textwrap
import time
from collections.abc import Sequence

PROG = "echojax"

# name -> (module whose main(argv) it runs, one-line summary). The modules are imported
# only when their subcommand runs, so that `echojax --help` starts without JAX or TFDS.
COMMANDS = {
    "prepare": ("echojax.cli", "build a TFDS dataset (any registered builder), no TensorFlow"),
    "train": ("echojax.train", "train a model: a new run from a config, or resume a run"),
    "evaluate": ("echojax.evaluate", "per-image Dice and EF of a run's checkpoint on a split"),
    "export": ("echojax.export", "a run's checkpoint as a self-contained model folder"),
    "predict": ("echojax.predict", "segment recordings: masks, LV area curves, ED/ES, EF"),
    "progress": ("echojax.progress", "(re)draw each run's progress.png from its metrics"),
}


def _usage() -> str:
    """The top-level help: the commands, one line each."""
    width = max(map(len, COMMANDS))
    lines = [f"usage: {PROG} COMMAND [FLAGS ...]", "",
             "Echocardiography segmentation with partially labelled multi-dataset data "
             "(JAX/Flax).", "", "commands:"]
    lines += [f"  {name:<{width}}  {summary}" for name, (_, summary) in COMMANDS.items()]
    lines += ["", f"`{PROG} COMMAND --help` shows a command's flags. Each command is",
              "`python -m echojax.COMMAND` (same flags), except prepare, which is new here."]
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    """Runs ``echojax COMMAND ...``; returns the exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help", "help"):
        sys.stdout.write(_usage())
        return 0 if argv else 2
    if argv[0] == "--version":
        import echojax
        print(f"{PROG} {echojax.__version__}")
        return 0
    name, rest = argv[0], argv[1:]
    if name not in COMMANDS:
        sys.stderr.write(_usage() + f"\n{PROG}: error: unknown command {name!r}; expected "
                         f"one of {', '.join(COMMANDS)}\n")
        return 2
    if name == "prepare":
        return prepare_main(rest)
    status = importlib.import_module(COMMANDS[name][0]).main(rest)
    return int(status or 0)


# --- prepare ------------------------------------------------------------------------------


def _builders_line() -> str:
    import tensorflow_datasets as tfds

    import tfds_builders  # noqa: F401  registers echojax's builders
    names = []
    for name in ("camus", "echonet_dynamic", "unity_imaging", "synthetic_echo", "echo_folder"):
        configs = [c.name for c in tfds.builder_cls(name).BUILDER_CONFIGS]
        shown = ", ".join(configs[:6]) + (", ..." if len(configs) > 6 else "")
        names.append(f"{name}/{{{shown}}}" if configs else f"{name}/<spec>_<R>")
    return "echojax's builders: " + "; ".join(names)


def prepare_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=f"{PROG} prepare",
        description="Build TFDS datasets (echojax's builders or any registered one) as "
                    "array_record, which echojax reads without TensorFlow; TFDS's progress "
                    "bars show each split. A dataset already prepared is left as it is "
                    "(--overwrite rebuilds it).",
        epilog="examples: echojax prepare camus/256 --manual_dir ~/CAMUS --data_dir ~/data; "
               "echojax prepare synthetic_echo/camus_like_64; echojax prepare "
               "echo_folder/clinic_256 --manual_dir ~/my_clinic (its echo_folder.json names "
               "the dataset). Manual downloads: tfds_builders/<name>/README.md.")
    parser.add_argument("datasets", nargs="+", metavar="NAME[/CONFIG]",
                        help="TFDS name with its config, e.g. camus/256, unity_imaging/128, "
                             "synthetic_echo/unity_like_64, echo_folder/<spec name>_<R>")
    parser.add_argument("--data_dir", default=None,
                        help="where datasets are written (default: TFDS's, ~/tensorflow_datasets)")
    parser.add_argument("--manual_dir", default=None,
                        help="the folder holding a manual download, for every NAME given "
                             "(default: DATA_DIR/downloads/manual)")
    parser.add_argument("--download_dir", default=None,
                        help="where downloads go (default: DATA_DIR/downloads)")
    parser.add_argument("--file_format", default="array_record",
                        help="array_record (default; read without TensorFlow) or another "
                             "TFDS format (tfrecord needs TensorFlow)")
    parser.add_argument("--max_examples_per_split", type=int, default=None, metavar="N",
                        help="a quick trial: at most N examples per split")
    parser.add_argument("--overwrite", action="store_true",
                        help="delete a prepared version first and build it again")
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress bars")
    return parser


def prepare_main(argv: Sequence[str] | None = None) -> int:
    """``echojax prepare NAME/CONFIG ...``; 0 when every dataset is prepared, 1 when one
    failed (one ``error:`` line each; the others are still built), 2 for bad flags."""
    parser = prepare_parser()
    if any(a in ("-h", "--help") for a in (argv or [])):  # the builders' names, in the help
        parser.epilog = "\n\n".join(textwrap.fill(t, 88) for t in (parser.epilog,
                                                                     _builders_line()))
        parser.formatter_class = argparse.RawDescriptionHelpFormatter
    args = parser.parse_intermixed_args(argv)
    if args.max_examples_per_split is not None and args.max_examples_per_split < 1:
        parser.error(f"--max_examples_per_split must be >= 1, got {args.max_examples_per_split}")
    # Imported here, not at the top: `echojax --help` and the other commands need neither.
    import tensorflow_datasets as tfds

    import tfds_builders  # noqa: F401  registers echojax's builders
    from echojax import progress

    failed = 0
    for name in args.datasets:
        try:
            builder = tfds.builder(name, data_dir=args.data_dir, file_format=args.file_format)
            where = os.fspath(builder.data_path)
            if progress.is_prepared(builder) and not args.overwrite:
                print(f"{name}: already prepared in {where} (--overwrite builds it again)")
                continue
            mode = tfds.download.GenerateMode.REUSE_CACHE_IF_EXISTS if args.overwrite \
                else tfds.download.GenerateMode.REUSE_DATASET_IF_EXISTS
            config = tfds.download.DownloadConfig(
                manual_dir=args.manual_dir, download_mode=mode,
                max_examples_per_split=args.max_examples_per_split)
            t0 = time.perf_counter()
            with progress.tfds_progress_bars(not args.quiet):
                builder.download_and_prepare(download_dir=args.download_dir,
                                             download_config=config)
        except tfds.core.DatasetNotFoundError:  # TFDS's message lists its 1,000 datasets
            print(f"error: {name}: no such TFDS dataset (is its builder imported?); "
                  f"{_builders_line()}", file=sys.stderr)
            failed += 1
            continue
        except Exception as e:  # one dataset's failure; the others are still built
            text = str(e).strip() or type(e).__name__
            print(f"error: {name}: {type(e).__name__}: {text}", file=sys.stderr)
            failed += 1
            continue
        splits = ", ".join(f"{s} {info.num_examples}" for s, info in builder.info.splits.items())
        print(f"prepared {name} ({splits} examples) in {where} "
              f"({progress.format_seconds(time.perf_counter() - t0)})")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
