"""The paper's datasets by alias, their TFDS names, their preparation and sizes.

The experiments name datasets by the paper's aliases (``camus``, ``unity``,
``echonet``); ``--data`` chooses the phantom style of each (``synthetic_echo``,
prepared on first use) or the real builder (prepared by the user from the download,
``tfds_builders/<name>/README.md``).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import numpy as np
import tensorflow_datasets as tfds

import tfds_builders  # noqa: F401  registers the echojax builders, to prepare datasets
from echojax import phantoms, progress
from echojax.config import Config
from echojax.data.mixture import Mixture, Source, split_table

DATA_KINDS = ("synthetic", "real")
PAPER_SOURCES = ("camus", "unity", "echonet")
SYNTHETIC_STYLES = {"camus": "camus_like", "unity": "unity_like", "echonet": "echonet_like"}
REAL_NAMES = {"camus": "camus", "unity": "unity_imaging", "echonet": "echonet_dynamic"}
DERIVED_PREFIX = "echojax_derived/"  # pseudo-label datasets, written by the runs


def tfds_name(alias: str, *, data: str, resolution: int) -> str:
    """TFDS name (with config) of a paper dataset alias for ``data`` and ``resolution``."""
    if data not in DATA_KINDS:
        raise ValueError(f"--data must be one of {DATA_KINDS}, got {data!r}")
    table = SYNTHETIC_STYLES if data == "synthetic" else REAL_NAMES
    if alias not in table:
        raise ValueError(f"unknown dataset alias {alias!r}; expected one of {sorted(table)}")
    if data == "synthetic":
        return f"synthetic_echo/{table[alias]}_{resolution}"
    return f"{table[alias]}/{resolution}"


def other_phantom_styles(exclude: Sequence[str]) -> list[str]:
    """The ``synthetic_echo`` styles beyond the paper's three (external validation of
    the phantom runs), minus the aliases in ``exclude``."""
    used = set(SYNTHETIC_STYLES.values())
    return [style for style in sorted(phantoms.STYLES)
            if style not in used and style.removesuffix("_like") not in exclude]


class DataNotPrepared(RuntimeError):
    """A real dataset the sweep needs is not prepared."""


def prepare_datasets(names: Sequence[str], *, data: str, data_dir: str | None,
                     verbosity: int = progress.NORMAL) -> None:
    """Prepares the synthetic datasets among ``names`` that are not yet prepared (one
    line before and after each, ``progress.prepare``; TFDS's own bars and lines only when
    verbose); for real data, raises ``DataNotPrepared`` naming each missing dataset and
    how to prepare it. Derived (pseudo-label) datasets are skipped.
    """
    missing = []
    for name in dict.fromkeys(names):
        if name.startswith(DERIVED_PREFIX):
            continue
        builder = tfds.builder(name, data_dir=data_dir)
        if progress.is_prepared(builder):
            continue
        if name.startswith("synthetic_echo/"):
            progress.prepare(builder, verbosity=verbosity, file_format="array_record")
        else:
            missing.append(name)
    if missing:
        raise DataNotPrepared(
            f"real datasets not prepared in data_dir={data_dir or '~/tensorflow_datasets'}: "
            f"{', '.join(missing)}. Put each download in <data_dir>/downloads/manual/ and run "
            f"`import tfds_builders, tensorflow_datasets as tfds; tfds.builder(NAME, "
            f"data_dir=DATA_DIR).download_and_prepare(file_format='array_record')` "
            f"(tfds_builders/<name>/README.md), or run with --data=synthetic.")


def train_size(config: Config) -> int:
    """Training examples of a config's mixture (``train_examples``, else the prepared
    split's size: read from its TFDS metadata for the official split of every frame,
    else counted under the source's ``split``/``frames`` options). Raises
    ``DataNotPrepared`` naming a source used whole that is not prepared yet."""
    total = 0
    for s in config.sources:
        if s.train_examples is not None:
            total += s.train_examples
            continue
        builder = tfds.builder(s.name, data_dir=config.data_dir)
        if not progress.is_prepared(builder):
            raise DataNotPrepared(f"{s.name} is not prepared in data_dir={config.data_dir!r}: "
                                  f"its training-set size is unknown")
        total += len(split_table(s, "train", data_dir=config.data_dir, builder=builder)[1])
    return total


def train_sizes(config: Config) -> str:
    """``"camus=100;unity=all"`` from the config's sources."""
    return ";".join(f"{s.alias}={s.train_examples if s.train_examples is not None else 'all'}"
                    for s in config.sources)


def test_examples(source: Source, *, data_dir: str | None, count: int) -> list[dict]:
    """``count`` test examples of ``source`` (with metadata), evenly spaced through its
    test split (fewer if the split is smaller), e.g. for overlay figures."""
    whole = dataclasses.replace(source, train_examples=None, removals=())  # same split/frames
    test = Mixture([whole], "test", data_dir=data_dir, seed=0, metadata=True)
    picks = np.linspace(0, len(test) - 1, num=min(count, len(test))).round().astype(int)
    return [test[int(i)] for i in picks]
