"""Presets, the common command-line flags, and typed experiment-specific flags.

Every experiment script takes the common flags (``--loss``, ``--arch``, ``--seeds``,
``--preset``, ``--data``, ...), resolved against a :class:`Preset` into
:class:`Options`. An experiment's own flags are a frozen dataclass whose fields are
declared with :func:`flag`: the parser gets one ``--<field>`` per field, parsed by the
field's type (``int``, ``float``, ``str``, ``bool``, comma lists ``tuple[X, ...]``,
``None`` for "the preset's"), and the dataclass's ``__post_init__`` validates the
values. The experiment's ``runs`` reads them as ``options.flags.<field>``, typed.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import os
import types
import typing
from collections.abc import Sequence
from typing import Any

from echojax import losses, models
from echojax.config import Config, LossConfig, ModelConfig, OptimConfig
from echojax.data.mixture import Removal, Source
import echojax.experiment.datasets as datasets
from echojax.experiment.datasets import DATA_KINDS

ARCHS: tuple[str, ...] = tuple(models.ARCHITECTURES)
LOSSES: tuple[str, ...] = tuple(losses.LOSSES)


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
    # A minute-long check that a script runs end to end (the builders' dummy data, a
    # new data_dir): 64 x 64, a U-Net of a few thousand parameters, one epoch of
    # batches of 2. Its numbers mean nothing.
    "smoke": Preset(
        name="smoke", resolution=64, model_size="tiny", epochs=1, batch_size=2, lr=0.05,
        seeds=(0,), grid_seeds=(0,), archs=("unet",), dropout_rates=(0.0, 1.0),
        size_scale=0.01),
}


@dataclasses.dataclass(frozen=True)
class Options:
    """The common flags, resolved against the preset, and the experiment's own
    ``flags`` (an instance of its flags dataclass, or None)."""
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
    flags: Any = None
    seeds_given: bool = False  # --seeds was passed (else the preset's seeds)
    data_seed: int | None = None  # --data_seed: one choice of examples for every seed
    dry_run: bool = False

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

    def source(self, alias: str, *, train_examples: int | None = None,
               remove: Sequence[str] = (), fraction: float = 1.0) -> Source:
        """A ``Source`` for one of the paper's datasets (``datasets.PAPER_SOURCES``) at
        this sweep's ``--data`` and resolution, optionally with ``remove`` classes taken
        from ``fraction`` of its train/validation masks."""
        removals = (Removal(tuple(remove), fraction),) if remove else ()
        name = datasets.tfds_name(alias, data=self.data, resolution=self.preset.resolution)
        return Source(name, alias=alias, train_examples=train_examples, removals=removals)

    def external_sources(self, exclude: Sequence[str]) -> list[Source]:
        """Prepared datasets beyond ``exclude`` for external validation (Table 4):
        ``--external`` when given; else, on synthetic data, the phantom styles other
        than the paper's three (prepared on first use like the others); else none."""
        if self.external or self.data != "synthetic":
            return [Source(name, alias=alias) for name, alias in self.external]
        return [Source(f"synthetic_echo/{style}_{self.preset.resolution}",
                       alias=style.removesuffix("_like"))
                for style in datasets.other_phantom_styles(exclude)]

    def adjust(self, config: Config, train_size: int) -> Config:
        """The config with :meth:`epochs_for` its ``train_size`` training images;
        unchanged without ``examples_per_run`` or with ``--epochs``."""
        if self.epochs is not None or not self.preset.examples_per_run:
            return config
        epochs = self.epochs_for(train_size)
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


# --------------------------------------------------------------------------- parsing


def csv_list(text: str, allowed: Sequence[str], flag_name: str, *,
             allow_empty: bool = False) -> tuple[str, ...]:
    """``"a,b"`` -> ``("a", "b")`` (duplicates dropped), each one of ``allowed``."""
    items = tuple(dict.fromkeys(x.strip() for x in text.split(",") if x.strip()))
    if not items and not allow_empty:
        raise ValueError(f"{flag_name} is empty")
    bad = [x for x in items if x not in allowed]
    if bad:
        raise ValueError(f"{flag_name}: unknown {bad}; expected some of {list(allowed)}")
    return items


def flag(default: Any, help: str, *, choices: Sequence[str] = ()) -> Any:
    """A field of an experiment's flags dataclass: its default, ``--help`` text and,
    for strings and lists of strings, the allowed values."""
    return dataclasses.field(default=default, metadata={"help": help, "choices": tuple(choices)})


def _field_type(cls: type, field: dataclasses.Field) -> tuple[Any, bool]:
    """(type without None, whether None is allowed) of a flags field."""
    tp = field.type
    if isinstance(tp, str):  # postponed annotation of builtins, e.g. "tuple[float, ...]"
        tp = typing.get_type_hints(cls)[field.name]
    optional = False
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        optional = len(args) < len(typing.get_args(tp))
        if len(args) != 1:
            raise TypeError(f"flag {field.name}: unsupported type {tp}")
        tp = args[0]
    return tp, optional


def _converter(name: str, tp: Any, choices: tuple[str, ...]):
    """argparse ``type=``: text -> value of ``tp`` (comma lists for tuples)."""
    item = typing.get_args(tp)[0] if typing.get_origin(tp) is tuple else tp
    if item not in (int, float, str):
        raise TypeError(f"flag {name}: unsupported type {tp}")

    def one(text: str):
        if item is str:
            if choices and text not in choices:
                raise ValueError(f"--{name}: unknown {text!r}; expected one of {list(choices)}")
            return text
        try:
            return item(text)
        except ValueError:
            raise ValueError(f"--{name} expects {item.__name__} values, got {text!r}") from None

    def convert(text: str):
        try:
            if typing.get_origin(tp) is tuple:
                parts = [x.strip() for x in text.split(",") if x.strip()]
                return tuple(dict.fromkeys(one(x) for x in parts))
            return one(text.strip())
        except ValueError as e:
            raise argparse.ArgumentTypeError(str(e)) from None

    return convert


def add_flags(parser: argparse.ArgumentParser, cls: type) -> None:
    """Adds one ``--<field>`` per field of the flags dataclass ``cls``."""
    for field in dataclasses.fields(cls):
        tp, _ = _field_type(cls, field)
        help_text = field.metadata.get("help", "")
        if tp is bool:
            parser.add_argument(f"--{field.name}", action="store_true", default=field.default,
                                help=help_text)
            continue
        default = field.default
        shown = ",".join(map(str, default)) if isinstance(default, tuple) else default
        parser.add_argument(
            f"--{field.name}", default=default,
            type=_converter(field.name, tp, field.metadata.get("choices", ())),
            help=help_text.replace("%(default)s", str(shown)))


def flags_from_args(cls: type, args: argparse.Namespace) -> Any:
    """The flags dataclass from parsed arguments (its ``__post_init__`` validates)."""
    return cls(**{f.name: getattr(args, f.name) for f in dataclasses.fields(cls)})


def parse_shard(text: str) -> tuple[int, int]:
    """``"I/N"`` -> (I, N) with 0 <= I < N."""
    try:
        i, n = (int(p) for p in text.split("/"))
    except ValueError:
        raise ValueError(f"--shard must be I/N with integers, e.g. 0/4, got {text!r}") from None
    if n <= 0 or not 0 <= i < n:
        raise ValueError(f"--shard {text!r}: need N >= 1 and 0 <= I < N")
    return i, n


def build_parser(description: str) -> argparse.ArgumentParser:
    """The parser of the flags every experiment script takes."""
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


def options_from_args(experiment: str, args: argparse.Namespace, flags: Any = None) -> Options:
    """Resolves the common flags against the preset; ValueError names a bad flag."""
    preset = PRESETS[args.preset]
    archs = csv_list(args.arch, ARCHS, "--arch") if args.arch else preset.archs
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
        experiment=experiment, losses=csv_list(args.loss, LOSSES, "--loss"), archs=archs,
        seeds=seeds or preset.seeds, preset=preset, data=args.data, data_dir=args.data_dir,
        workdir=os.path.abspath(workdir), shard=parse_shard(args.shard), lr=args.lr,
        batch_size=args.batch_size, epochs=args.epochs, external=tuple(external),
        flags=flags, seeds_given=seeds is not None, data_seed=args.data_seed,
        dry_run=args.dry_run)
