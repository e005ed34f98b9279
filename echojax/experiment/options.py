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
from collections.abc import Callable, Sequence
from typing import Any

import echojax.experiment.datasets as datasets
from echojax import losses, models
from echojax.config import COMPUTE_DTYPES, Config, LossConfig, ModelConfig, OptimConfig
from echojax.data.mixture import FRAME_RULES, SPLIT_RULES, Removal, Source
from echojax.experiment.datasets import DATA_KINDS

ARCHS: tuple[str, ...] = tuple(models.ARCHITECTURES)
LOSSES: tuple[str, ...] = tuple(losses.LOSSES)


@dataclasses.dataclass(frozen=True)
class Preset:
    """Sizes and schedule shared by every run of a sweep.

    ``size_scale`` is the number of training images per image of a dataset size as the
    paper counts it (Table 2's grid, the balanced mixture of Experiment 4): the paper's
    sizes are whole-dataset counts, of which the training split holds 80 % (see
    :data:`TRAIN_SHARE`), so the paper preset's scale is 0.8; the CPU presets scale
    further down to fit their budget.
    ``experiment_archs`` / ``experiment_losses``: per experiment name, the
    architectures / losses used when ``--arch`` / ``--loss`` is not given (else the
    preset's ``archs`` / the experiment's default losses).
    ``grid``: how runs share a learning-rate x batch-size grid search by default
    (``GRID_MODES``; ``--grid`` overrides).
    With ``examples_per_run``, a run on a small training set gets more epochs, so that
    it sees at least that many images (``Options.adjust``); the paper preset keeps the
    paper's fixed epochs.
    With ``lr_grid``/``batch_grid`` non-empty and no ``--lr``/``--batch_size`` given,
    each (setting-independent) group of runs first grid-searches the initial learning
    rate and batch size on validation foreground Dice (Islam et al., MELBA 2026,
    Sec. 4.4).
    ``split`` and ``camus_frames``: the ``Source.split`` of every dataset and the
    ``Source.frames`` of CAMUS on real data (``--split``/``--camus_frames`` override).
    The paper preset takes the paper's random 80/10/10 split per dataset (Sec. 4.4)
    and CAMUS as Table 1 counts it (1,000 images of 500 patients); see
    :func:`resolve_split` for the phantoms.
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
    experiment_archs: tuple[tuple[str, tuple[str, ...]], ...] = ()
    experiment_losses: tuple[tuple[str, tuple[str, ...]], ...] = ()
    grid: str = "shared"
    split: str = "official"
    camus_frames: str = "all"

    def __post_init__(self):
        if self.grid not in GRID_MODES:
            raise ValueError(f"preset {self.name}: grid must be one of {GRID_MODES}, "
                             f"got {self.grid!r}")
        if self.split not in SPLIT_RULES:
            raise ValueError(f"preset {self.name}: split must be one of {SPLIT_RULES}, "
                             f"got {self.split!r}")
        if self.camus_frames not in FRAME_RULES:
            raise ValueError(f"preset {self.name}: camus_frames must be one of "
                             f"{FRAME_RULES}, got {self.camus_frames!r}")

    def archs_for(self, experiment: str) -> tuple[str, ...]:
        """The architectures of ``experiment`` when ``--arch`` is not given."""
        return dict(self.experiment_archs).get(experiment, self.archs)

    def losses_for(self, experiment: str) -> tuple[str, ...] | None:
        """The losses of ``experiment`` when ``--loss`` is not given (None: the
        experiment's own default)."""
        return dict(self.experiment_losses).get(experiment)


# The paper's dataset sizes (Table 1; Table 2's grid; Exp. 4's balanced mixture of
# 1,400 EchoNet + 1,000 CAMUS + 400 Unity) count whole datasets: Table 1 gives CAMUS as
# 1,000 images and Unity as 400, which are also the largest sizes of Table 2, so
# "CAMUS 1,000" in Table 2 is the whole CAMUS set, not 1,000 training images. Each
# dataset is split 80/10/10 into train/validation/test with the same proportion from
# each dataset (Islam et al., MELBA 2026, Sec. 4), so a size of N images means
# round(0.8 N) training images. Our choice where the paper is silent: the validation
# and test splits stay whole in every cell (every cell is validated and tested on the
# same images; only the training subset shrinks).
TRAIN_SHARE = 0.8

# How runs share a grid search: "per_model", one grid per distinct model (every
# setting of the run's config except its seed: architecture, loss, dropout, training
# data), as the paper did it "separately for each model evaluated" (Sec. 4.4); or
# "shared", one grid per (architecture, loss), tuned on the group's first
# configuration (cheaper; our choice for budgets that cannot afford per-model grids).
GRID_MODES = ("per_model", "shared")

# Extra (grid-search) training runs of each experiment under the paper preset with
# default flags, per grid mode (3 x 3 runs per grid; counted in experiments/README.md
# and checked by tests/test_experiment_paper.py).
PAPER_GRID_RUNS = {
    "exp1_domain_shift": {"per_model": 36, "shared": 9},
    "exp2_intra_domain": {"per_model": 135, "shared": 108},
    "exp3_dropout": {"per_model": 1215, "shared": 108},
    "exp3_data_ratio": {"per_model": 1296, "shared": 81},
    "exp4_all_datasets": {"per_model": 162, "shared": 81},
}


PRESETS: dict[str, Preset] = {
    # Islam et al., MELBA 2026, Sec. 4.4: 256 x 256, 500 epochs; 5 seeds in Exp. 2 and
    # 3 for the data-size grid (Table 2), 5 elsewhere our choice (not stated); initial
    # LR and batch size from a grid search "separately for each model evaluated",
    # best-val model. The grid's values are not given in the paper
    # (our choice: these span the usual SGD range). Exp. 1 trains the U-Net only ("We
    # used only the U-Net architecture in this experiment"); Exp. 4 compares aCCE (with
    # label dropout, see exp4_all_datasets.py), marginal and aBCE.
    "paper": Preset(
        name="paper", resolution=256, model_size="paper", epochs=500, batch_size=16, lr=0.01,
        seeds=(0, 1, 2, 3, 4), grid_seeds=(0, 1, 2), archs=ARCHS,
        dropout_rates=tuple(round(0.1 * i, 1) for i in range(11)), size_scale=TRAIN_SHARE,
        eval_every=5, lr_grid=(0.1, 0.01, 0.001), batch_grid=(8, 16, 32),
        experiment_archs=(("exp1_domain_shift", ("unet",)),),
        experiment_losses=(("exp4_all_datasets", ("acce", "marginal", "abce")),),
        grid="per_model", split="paper", camus_frames="one_phase_per_view"),
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
    report_only: bool = False  # --report_only: collect every shard's finished runs, train none
    compute_dtype: str = "float32"  # --compute_dtype: activations (parameters stay float32)
    grid: str = "shared"  # --grid, else the preset's (GRID_MODES)
    split: str = "official"  # Source.split of every paper dataset (resolve_split)
    camus_frames: str = "all"  # Source.frames of CAMUS (resolve_split)

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
            seed=seed, data_seed=self.data_seed, compute_dtype=self.compute_dtype)

    def source(self, alias: str, *, train_examples: int | None = None,
               remove: Sequence[str] = (), fraction: float = 1.0) -> Source:
        """A ``Source`` for one of the paper's datasets (``datasets.PAPER_SOURCES``) at
        this sweep's ``--data`` and resolution, optionally with ``remove`` classes taken
        from ``fraction`` of its train/validation masks."""
        removals = (Removal(tuple(remove), fraction),) if remove else ()
        name = datasets.tfds_name(alias, data=self.data, resolution=self.preset.resolution)
        return Source(name, alias=alias, train_examples=train_examples, removals=removals,
                      split=self.split, frames=self.camus_frames if alias == "camus" else "all")

    def external_sources(self, exclude: Sequence[str]) -> list[Source]:
        """Prepared datasets beyond ``exclude`` for external validation (Table 4):
        ``--external`` when given; else, on synthetic data, the phantom styles other
        than the paper's three (prepared on first use like the others); else none."""
        if self.external or self.data != "synthetic":
            return [Source(name, alias=alias) for name, alias in self.external]
        return [Source(f"synthetic_echo/{style}_{self.preset.resolution}",
                       alias=style.removesuffix("_like"))
                for style in datasets.other_phantom_styles(exclude)]

    def adjust(self, config: Config, train_size: int | Callable[[Config], int],
               examples: int | None = None) -> Config:
        """The config with :meth:`epochs_for` its ``train_size`` training images;
        unchanged without ``examples_per_run`` or with ``--epochs``. ``train_size`` may
        be a function of the config, called only when the size matters (it may need
        the datasets prepared); ``examples`` replaces the preset's ``examples_per_run``."""
        if self.epochs is not None or not self.preset.examples_per_run:
            return config
        if callable(train_size):
            train_size = train_size(config)
        epochs = self.epochs_for(train_size, examples)
        # A few validations per run: on a tiny training set an evaluation and a
        # checkpoint every epoch would cost more than the training.
        return dataclasses.replace(config, epochs=epochs,
                                   eval_every=max(self.preset.eval_every, epochs // 4))

    def epochs_for(self, train_size: int, examples: int | None = None) -> int:
        """Epochs of a run with ``train_size`` training images: the preset's, or, with
        ``examples_per_run`` and no ``--epochs``, enough to see that many images
        (``examples`` instead of the preset's number when given)."""
        if self.epochs is not None or not self.preset.examples_per_run:
            return self.epochs or self.preset.epochs
        if train_size < 1:
            raise ValueError(f"a training set of {train_size} images has no epochs")
        examples = examples or self.preset.examples_per_run
        return max(self.preset.epochs, math.ceil(examples / train_size))

    def size(self, paper_size: int) -> int:
        """Training images for a dataset size as the paper counts it (whole-dataset
        images, see :data:`TRAIN_SHARE`), under the preset's ``size_scale`` (at least 1;
        the paper preset: ``round(0.8 * paper_size)``)."""
        if paper_size <= 0:
            raise ValueError(f"a dataset size must be positive, got {paper_size}")
        return max(1, int(round(paper_size * self.preset.size_scale)))


@dataclasses.dataclass(frozen=True)
class DropoutSpec:
    """Label-dropout rate per loss and architecture, e.g. Experiment 4's comparison:
    aCCE at each architecture's best rate, the other losses without dropout.

    Text form (``--dropout``): comma list of entries ``RATE`` (every loss and
    architecture), ``LOSS=RATE`` (every architecture) or ``LOSS:ARCH=RATE``; the most
    specific entry wins, unlisted pairs get 0. ``"0.3"`` is one rate for every run;
    ``"acce:unet=0.4,acce:attention_unet=0.8"`` sets two pairs. Rates lie in [0, 1].
    """
    entries: tuple[tuple[str | None, str | None, float], ...] = ()  # (loss, arch, rate)

    @classmethod
    def parse(cls, text: str, flag_name: str = "--dropout") -> DropoutSpec:
        entries: dict[tuple[str | None, str | None], float] = {}
        for item in (x.strip() for x in text.split(",")):
            if not item:
                continue
            key, sep, value = item.rpartition("=")
            loss = arch = None
            if sep:
                loss, _, arch = key.partition(":")
                loss, arch = loss.strip(), arch.strip() or None
                if loss not in LOSSES:
                    raise ValueError(f"{flag_name} entry {item!r}: unknown loss {loss!r}; "
                                     f"expected one of {list(LOSSES)}")
                if arch is not None and arch not in ARCHS:
                    raise ValueError(f"{flag_name} entry {item!r}: unknown architecture "
                                     f"{arch!r}; expected one of {list(ARCHS)}")
            try:
                rate = float(value)
            except ValueError:
                raise ValueError(f"{flag_name} entry {item!r}: the rate must be a number in "
                                 f"[0, 1], got {value.strip()!r}") from None
            if not 0.0 <= rate <= 1.0:
                raise ValueError(f"{flag_name} entry {item!r}: the rate must lie in [0, 1], "
                                 f"got {rate:g}")
            if (loss, arch) in entries:
                raise ValueError(f"{flag_name}: {item!r} sets "
                                 f"{_spec_key(loss, arch)} a second time")
            entries[(loss, arch)] = rate
        return cls(tuple((loss, arch, r) for (loss, arch), r in entries.items()))

    def rate(self, loss: str, arch: str) -> float:
        """The rate of ``loss`` on ``arch`` (0 when no entry covers them)."""
        table = {(lo, a): r for lo, a, r in self.entries}
        for key in ((loss, arch), (loss, None), (None, None)):
            if key in table:
                return table[key]
        return 0.0

    def __str__(self) -> str:
        return ",".join(f"{_spec_key(lo, a)}={r:g}" if lo else f"{r:g}"
                        for lo, a, r in self.entries) or "0"


def _spec_key(loss: str | None, arch: str | None) -> str:
    return "every loss" if loss is None else f"{loss}:{arch}" if arch else loss


def resolve_split(preset: Preset, data: str, split: str | None = None,
                  camus_frames: str | None = None) -> tuple[str, str]:
    """(``Source.split`` of every paper dataset, ``Source.frames`` of CAMUS) of a sweep:
    ``--split``/``--camus_frames`` when given, else the preset's on real data.

    Our choice on the phantoms (``--data=synthetic``): the builders' split and every
    frame unless the flags ask otherwise. ``synthetic_echo`` already splits 80/10/10 by
    subject, and its subjects are independent draws, so that split is a random one;
    Table 3's annotated EchoNet-like set (``echonet_like_annotated``) is the first test
    subjects of it, which a re-split would put mostly into training. ``camus_like``
    already holds Table 1's 1,000 CAMUS images (250 subjects x 2 views x ED/ES); the
    frames rule would halve it.
    """
    if split is None:
        split = preset.split if data == "real" else "official"
    if camus_frames is None:
        camus_frames = preset.camus_frames if data == "real" else "all"
    if split not in SPLIT_RULES:
        raise ValueError(f"--split must be one of {SPLIT_RULES}, got {split!r}")
    if camus_frames not in FRAME_RULES:
        raise ValueError(f"--camus_frames must be one of {FRAME_RULES}, got {camus_frames!r}")
    return split, camus_frames


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
    p.add_argument("--loss", default=None,
                   help=f"loss or comma list of {','.join(LOSSES)} (default: the experiment's "
                        f"for the preset; see experiments/README.md)")
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
    p.add_argument("--grid", default=None, choices=GRID_MODES,
                   help="grid search of the initial LR x batch size (presets with a grid, no "
                        "--lr/--batch_size): per_model = one grid per distinct model (every "
                        "setting but the seed), as the paper (Sec. 4.4); shared = one per "
                        "(architecture, loss), tuned on its first configuration. Each grid "
                        "trains |LR grid| x |batch grid| extra runs (paper preset: 9); extra "
                        "runs of the paper preset with default flags, per_model / shared: "
                        + "; ".join(f"{e} {c['per_model']} / {c['shared']}"
                                    for e, c in PAPER_GRID_RUNS.items())
                        + " (default: the preset's, paper: per_model)")
    p.add_argument("--split", default=None, choices=SPLIT_RULES,
                   help="paper = each dataset split 80/10/10 at random by subject, the split "
                        "fixed per dataset (the paper, Sec. 4.4); official = the builders' "
                        "splits (CAMUS database_split, EchoNet's Split column) (default: the "
                        "preset's on real data, paper: paper; the builders' on phantoms)")
    p.add_argument("--camus_frames", default=None, choices=FRAME_RULES,
                   help="one_phase_per_view = per CAMUS patient 2CH and 4CH, ED of one and ES "
                        "of the other, 1,000 images of 500 patients as Table 1 counts CAMUS; "
                        "all = the 4 annotated frames per patient (default: the preset's on "
                        "real data, paper: one_phase_per_view; all on phantoms)")
    p.add_argument("--dry_run", action="store_true",
                   help="print this shard's runs, one JSON object per line, and exit")
    p.add_argument("--compute_dtype", default="float32", choices=COMPUTE_DTYPES,
                   help="activation dtype of every run; parameters, the loss and the "
                        "optimiser stay float32 (default float32, every preset)")
    p.add_argument("--report_only", action="store_true",
                   help="train nothing: write the report from every finished run in --workdir "
                        "(all shards), name the runs still missing, and exit with status 3 "
                        "if any are (0 when all are finished)")
    return p


def options_from_args(experiment: str, args: argparse.Namespace, flags: Any = None) -> Options:
    """Resolves the common flags against the preset; ValueError names a bad flag."""
    preset = PRESETS[args.preset]
    archs = csv_list(args.arch, ARCHS, "--arch") if args.arch else preset.archs_for(experiment)
    if args.loss:
        losses = csv_list(args.loss, LOSSES, "--loss")
    else:
        losses = preset.losses_for(experiment) or LOSSES
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
    split, camus_frames = resolve_split(preset, args.data, getattr(args, "split", None),
                                        getattr(args, "camus_frames", None))
    workdir = args.workdir or os.path.join(
        os.path.expanduser("~"), "echojax_runs", experiment, f"{preset.name}_{args.data}")
    return Options(
        experiment=experiment, losses=losses, archs=archs,
        seeds=seeds or preset.seeds, preset=preset, data=args.data, data_dir=args.data_dir,
        workdir=os.path.abspath(workdir), shard=parse_shard(args.shard), lr=args.lr,
        batch_size=args.batch_size, epochs=args.epochs, external=tuple(external),
        flags=flags, seeds_given=seeds is not None, data_seed=args.data_seed,
        dry_run=args.dry_run, report_only=args.report_only, compute_dtype=args.compute_dtype,
        grid=getattr(args, "grid", None) or preset.grid, split=split, camus_frames=camus_frames)
