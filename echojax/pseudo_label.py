"""Pseudo-labelling baseline (Islam et al., MELBA 2026, Sec. 5.2) as derived TFDS datasets.

The baseline: a CCE *teacher* trained on the fully-labelled part of the training data
predicts the structures missing from the partially-labelled masks; a CCE *student*
then trains on the labels plus those pseudo-labels.

Both steps need data that no builder produces, so this module writes it as derived
TFDS datasets (``echojax_derived/<config>``, array_record, the shared feature dict) in
the same ``data_dir`` as the sources, one per source and role, and returns the run
configs that read them:

- teacher data: the train and validation examples of the base mixture (after its
  training subset and label removals, with the base config's seed) whose
  ``label_mask`` has every class of ``classes``; the test split unchanged. Sources with
  no such example are left out of the teacher's mixture.
- student data: every train and validation example of the base mixture; where one of
  ``classes`` is not annotated, its pixels are taken from the teacher's prediction
  (only on background pixels: existing annotations are never overwritten) and its
  ``label_mask`` entry becomes True. The test split unchanged.

Derived datasets keep the source aliases, so the student's test results line up image
by image with every other run's (for the Wilcoxon tests). Their names carry a hash of
everything that defines them (base sources, seed, classes, the teacher's config), so a
changed experiment never reads stale pseudo-labels; a prepared one is reused.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Callable, Iterator, Mapping, Sequence

import numpy as np
import tensorflow_datasets as tfds

from echojax import inference, labels, progress, rundir
from echojax.config import Config, LossConfig, to_jsonable
from echojax.data import features as features_lib
from echojax.data.mixture import Mixture, Source
from tfds_builders import base

DERIVED_DATASET = "echojax_derived"
SPLITS = ("train", "validation", "test")

PredictFn = Callable[[np.ndarray], np.ndarray]  # uint8[N,R,R,1] -> int32[N,R,R]


def fill_missing(segmentation: np.ndarray, label_mask: np.ndarray, prediction: np.ndarray,
                 classes: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
    """Adds pseudo-labels for the ``classes`` not annotated in ``label_mask``.

    Args:
      segmentation: uint8[H, W] class ids; label_mask: bool[C]; prediction: int[H, W].
    Returns:
      (segmentation, label_mask): background pixels predicted as a missing class take
      that class; those classes become annotated. Annotated pixels never change.
    """
    seg = np.array(segmentation, dtype=np.uint8, copy=True)
    lm = np.array(label_mask, dtype=bool, copy=True)
    if seg.shape != prediction.shape:
        raise ValueError(f"prediction shape {prediction.shape} != segmentation shape {seg.shape}")
    for c in classes:
        if c == labels.BACKGROUND:
            raise ValueError("background cannot be pseudo-labelled")
        if not lm[c]:
            seg[(seg == labels.BACKGROUND) & (prediction == c)] = c
            lm[c] = True
    return seg, lm


def _digest(*parts) -> str:
    text = json.dumps(parts, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:10]


def _source_key(source: Source) -> dict:
    """A source as it enters the derived datasets' hash: its JSON form without the
    ``split``/``frames`` options at their defaults, so datasets derived before those
    options existed keep their names."""
    out = to_jsonable(source)
    for field in ("split", "frames"):
        if out.get(field) == _SOURCE_DEFAULTS[field]:
            del out[field]
    return out


_SOURCE_DEFAULTS = {f.name: f.default for f in dataclasses.fields(Source)}


def _config_name(role: str, source: Source, key: str) -> str:
    alias = "".join(ch if ch.isalnum() else "_" for ch in source.alias.lower())
    return f"{role}_{alias}_{key}"


def _examples(source: Source, split: str, *, data_dir, seed: int,
              keep: Callable[[dict], bool] = lambda ex: True,
              transform: Callable[[list[dict]], list[dict]] | None = None,
              chunk: int = 64) -> Iterator[dict]:
    """Feature-dict examples of one source's split as the base mixture sees it."""
    mix = Mixture([source], split, data_dir=data_dir, seed=seed, metadata=True)
    pending: list[dict] = []

    def flush():
        batch = list(pending)
        pending.clear()
        return transform(batch) if transform else batch

    for i in range(len(mix)):
        ex = mix[i]
        if not keep(ex):
            continue
        src = mix.record(i)["source"]
        pending.append({
            "image": np.asarray(ex["image"], np.uint8),
            "segmentation": np.asarray(ex["segmentation"], np.uint8)[..., None],
            "label_mask": np.asarray(ex["label_mask"], bool),
            "source": src.decode() if isinstance(src, bytes) else str(src),
            "patient_id": ex["patient_id"], "view": ex["view"], "phase": ex["phase"],
            "ef": np.float32(ex["ef"]), "pixel_spacing_mm": np.asarray(ex["pixel_spacing_mm"], np.float32),
        })
        if len(pending) >= chunk:
            yield from flush()
    yield from flush()


def write_derived(config_name: str, splits: Mapping[str, Callable[[], Iterator[dict]]], *,
                  resolution: int, data_dir, description: str) -> str:
    """Prepares ``echojax_derived/<config_name>`` from example generators (unless it is
    already prepared, silently: it is part of a run's setup) and returns its TFDS name."""
    builder_config = tfds.core.BuilderConfig(name=config_name, description=description)

    class Derived(base.EchoBuilder, skip_registration=True):
        name = DERIVED_DATASET
        VERSION = tfds.core.Version("1.0.0")
        # Declared, so that TFDS does not log "Using custom data configuration" for it.
        BUILDER_CONFIGS = (builder_config,)
        RELEASE_NOTES = {"1.0.0": "Derived from other echojax datasets."}

        def _info(self):
            return self.dataset_info_from_configs(
                features=features_lib.features(resolution), description=description,
                disable_shuffling=True)  # keep the base mixture's order

        def _split_generators(self, dl_manager):
            return {s: self._generate_examples(s) for s in splits}

        def _generate_examples(self, split):
            for k, ex in enumerate(splits[split]()):
                features_lib.check_example(ex, resolution, where=f"{config_name}/{split}[{k}]")
                yield k, ex

    builder = Derived(data_dir=data_dir, config=config_name, file_format="array_record")
    if not progress.is_prepared(builder):
        progress.prepare(builder, verbosity=progress.QUIET, file_format="array_record")
    return f"{DERIVED_DATASET}/{config_name}"


def teacher_config(base: Config, classes: Sequence[str]) -> Config:
    """Prepares the teacher's data (see module doc) and returns its CCE config."""
    ids = labels.class_ids(classes)
    key = _digest("teacher", [_source_key(s) for s in base.sources], base.mixture_seed, ids)
    sources = []
    for source in base.sources:
        def has_all(ex, ids=ids):
            return bool(np.all(np.asarray(ex["label_mask"])[list(ids)]))

        if not _any_full(source, base, has_all):
            continue  # e.g. Unity with LA removed from every mask
        name = write_derived(
            _config_name("teacher", source, key),
            {split: (lambda split=split, source=source: _examples(
                source, split, data_dir=base.data_dir, seed=base.mixture_seed,
                keep=has_all if split != "test" else (lambda ex: True)))
             for split in SPLITS},
            resolution=base.resolution, data_dir=base.data_dir,
            description=f"Fully-labelled part ({', '.join(labels.CLASS_NAMES[c] for c in ids)}) "
                        f"of {source.name} for a pseudo-label teacher.")
        sources.append(Source(name, alias=source.alias))
    if not sources:
        raise ValueError(f"no source of {[s.alias for s in base.sources]} has training examples "
                         f"annotated for all of {list(classes)}: nothing to train a teacher on")
    return dataclasses.replace(base, sources=tuple(sources), loss=LossConfig(name="cce"))


def _any_full(source: Source, base: Config, has_all) -> bool:
    # Look at the examples' label masks after removal: the removal plan alone says
    # nothing about classes a dataset never annotates (EchoNet's LVM and LA).
    mix = Mixture([source], "train", data_dir=base.data_dir, seed=base.mixture_seed)
    return any(has_all(mix[j]) for j in range(len(mix)))


def student_config(base: Config, classes: Sequence[str], teacher_dir: str, *,
                   predict: PredictFn | None = None) -> Config:
    """Prepares the student's data with the teacher in ``teacher_dir`` (see module doc)
    and returns its CCE config. ``predict`` replaces the teacher's best checkpoint
    (default: ``echojax.inference`` predictor of ``teacher_dir``'s best checkpoint,
    restored only if data is missing)."""
    ids = labels.class_ids(classes)
    with open(rundir.RunDir(teacher_dir).config) as f:
        teacher_json = f.read()
    key = _digest("student", [_source_key(s) for s in base.sources], base.mixture_seed, ids, teacher_json)
    loaded: list[PredictFn] = [predict] if predict is not None else []

    def fill(batch: list[dict]) -> list[dict]:
        todo = [k for k, ex in enumerate(batch) if not ex["label_mask"][list(ids)].all()]
        if not todo:
            return batch
        if not loaded:  # loaded on first need: a prepared dataset needs none
            loaded.append(inference.restore(teacher_dir).predictor())
        pred = loaded[0](np.stack([batch[k]["image"] for k in todo]))
        for k, p in zip(todo, pred):
            seg, lm = fill_missing(batch[k]["segmentation"][..., 0], batch[k]["label_mask"], p, ids)
            batch[k] = dict(batch[k], segmentation=seg[..., None], label_mask=lm)
        return batch

    sources = []
    for source in base.sources:
        name = write_derived(
            _config_name("student", source, key),
            {split: (lambda split=split, source=source: _examples(
                source, split, data_dir=base.data_dir, seed=base.mixture_seed,
                transform=fill if split != "test" else None))
             for split in SPLITS},
            resolution=base.resolution, data_dir=base.data_dir,
            description=f"{source.name} with missing "
                        f"{', '.join(labels.CLASS_NAMES[c] for c in ids)} pseudo-labelled by the "
                        f"teacher in {teacher_dir}.")
        sources.append(Source(name, alias=source.alias))
    return dataclasses.replace(base, sources=tuple(sources), loss=LossConfig(name="cce"))
