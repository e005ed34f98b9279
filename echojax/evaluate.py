"""Evaluation of a trained run: per-image Dice, LV areas and ejection fraction.

``python -m echojax.evaluate --workdir RUN [--split test] [--checkpoint best|latest|STEP]
[--data_dir DIR]`` restores a checkpoint of ``RUN`` (default: the best by validation
foreground Dice, the model the paper keeps) and writes, under ``RUN/eval/<split>/``:

- ``per_image.csv``: one row per image, in mixture order (source, then TFDS index):
  ``source, index, patient_id, view, phase, dice_lv, dice_lvm, dice_la,
  lv_area_pred_px, lv_area_true_px, lv_area_pred_mm2, lv_area_true_mm2``.
  A Dice is empty where the class is not annotated in the image or absent from its
  ground truth (MONAI's NaN convention).
  The ``_mm2`` areas are empty for images without a known pixel spacing (NaN
  ``pixel_spacing_mm``, e.g. EchoNet-Dynamic and Unity Imaging).
- ``summary.json``: the ``decision_rule`` predicted with (``inference.Model``), and
  per source and over all sources, per class: ``n``, ``mean``, ``median`` and population
  ``std`` of the per-image Dice (``echojax.report.describe``);
  ``fg_dice`` (mean over LV, LVM, LA of the class means); ``spacing_known`` (every
  image of the source has a pixel spacing); and, for sources with a known EF, ejection
  fraction by the method of discs (``echojax.biomarkers``) on the predicted LV masks of
  every ED/ES pair:

  - ``ef.monoplane``: one EF per (patient, view) with exactly one ED and one ES frame.
    EF is a ratio of volumes, so it does not depend on the scale: a pair without a
    known spacing is measured with unit isotropic spacing (1 mm x 1 mm);
  - ``ef.biplane``: one EF per patient having such pairs in both 2CH and 4CH views
    (Simpson's biplane, 4CH as the main view), only where both views have a known
    spacing (the two views' scales cannot be related otherwise);

  each with ``count`` pairs, ``failed`` (no LV predicted in a frame, or a predicted LV
  of volume 0 by the discs, such as a line of pixels: no EF, left out of the errors),
  ``mae`` against the dataset's reference EF (the ``ef`` feature) and
  ``mae_vs_gt_masks`` against the EF of the same method on the ground-truth masks
  (which isolates the segmentation error from the reference's own method).

Both files are written atomically and are byte-identical when evaluation is repeated.
Runs in one process (all local devices), through ``echojax.inference`` (restore from
abstract shapes, one compiled predictor with the loss's decision rule). A warning
names the package versions or device kind that differ from those the run was trained
with (``echojax.rundir``).

``--source NAME[:ALIAS]`` (repeatable) evaluates the same checkpoint on another prepared
dataset instead (cross-domain testing, external validation): ``RUN/external/<ALIAS>/``
gets a ``config.json`` naming that dataset alone, a link to the run's checkpoints and
its own ``eval/<split>/`` with the files above (ALIAS defaults to the dataset's name,
e.g. ``unity_like_64`` for ``synthetic_echo/unity_like_64``). Experiment sweeps write
their external evaluations the same way.
"""

from __future__ import annotations

import argparse
import collections
import dataclasses
import json
import math
import os
from typing import Any

import numpy as np

from echojax import biomarkers, files, inference, rundir
from echojax import labels as labels_lib
from echojax import metrics as metrics_lib
from echojax.data import pipeline
from echojax.data.mixture import Source
from echojax.report import describe
from echojax.train import eval_mixture

CSV_COLUMNS = ("source", "index", "patient_id", "view", "phase", "dice_lv", "dice_lvm",
               "dice_la", "lv_area_pred_px", "lv_area_true_px", "lv_area_pred_mm2",
               "lv_area_true_mm2")
_FG = {labels_lib.CLASS_NAMES[c]: c for c in labels_lib.FOREGROUND_CLASSES}
UNIT_SPACING_MM = (1.0, 1.0)  # for EF (scale-free) where the pixel spacing is unknown


def evaluate(workdir: str | os.PathLike, *, split: str = "test", checkpoint: str | int = "best",
             data_dir: str | None = None) -> dict[str, Any]:
    """Evaluates ``checkpoint`` of the run in ``workdir`` on ``split``; writes
    ``eval/<split>/per_image.csv`` and ``summary.json`` and returns the summary."""
    run = rundir.RunDir(workdir)
    run.load_config()  # a clear error for a folder that is not a run
    rundir.warn_if_environment_differs(run, doing="evaluating")
    model = inference.restore(run.path, checkpoint=checkpoint)
    summary, rows = evaluate_model(model, split=split, checkpoint=checkpoint,
                                   data_dir=data_dir)
    files.write_csv(run.per_image(split), rows, CSV_COLUMNS)
    files.write_json(run.summary(split), summary)
    return summary


def evaluate_model(model: inference.Model, *, split: str = "test",
                   checkpoint: str | int = "best",
                   data_dir: str | None = None) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """``(summary, rows)`` of a restored ``model`` on ``split`` of its config's sources,
    predicted with the config's decision rule (``model.decision_rule``); writes
    nothing. ``rows`` are the ``per_image.csv`` rows (extra ``_`` keys are not
    written); ``checkpoint`` is only recorded in the summary."""
    config = model.config
    if data_dir is not None:
        config = dataclasses.replace(config, data_dir=data_dir)
    predict = model.predictor()

    mix = eval_mixture(config, split, metadata=True)
    rows, masks = [], {}
    for local in pipeline.eval_batches(mix, batch_size=config.eval_batch_size):
        valid = np.asarray(local["valid"])
        pred = predict(np.asarray(local["image"]))
        true = np.asarray(local["segmentation"]).astype(np.int32)
        dice = metrics_lib.dice_per_class(pred, true, num_classes=labels_lib.NUM_CLASSES)
        for b in np.flatnonzero(valid):
            alias = config.sources[int(local["source_index"][b])].alias
            lm = np.asarray(local["label_mask"][b])
            d = np.where(lm, dice[b], np.nan)  # unannotated classes are not evaluated
            spacing = np.asarray(local["pixel_spacing_mm"][b], np.float64)
            known = bool(np.all(np.isfinite(spacing)) and np.all(spacing > 0))
            true_lv, pred_lv = true[b] == labels_lib.LV, pred[b] == labels_lib.LV
            px_mm2 = float(spacing[0] * spacing[1]) if known else math.nan
            row = {
                "source": alias, "index": int(local["index"][b]),
                "patient_id": str(local["patient_id"][b]), "view": str(local["view"][b]),
                "phase": str(local["phase"][b]),
                **{f"dice_{name}": float(d[c]) for name, c in _FG.items()},
                "lv_area_pred_px": int(pred_lv.sum()), "lv_area_true_px": int(true_lv.sum()),
                "lv_area_pred_mm2": float(pred_lv.sum()) * px_mm2,
                "lv_area_true_mm2": float(true_lv.sum()) * px_mm2,
                "_ef": float(local["ef"][b]), "_lv_annotated": bool(lm[labels_lib.LV]),
                "_spacing_known": known,
            }
            rows.append(row)
            masks[(alias, row["index"])] = (pred_lv, true_lv,
                                            tuple(spacing) if known else UNIT_SPACING_MM)

    summary = {"split": split, "checkpoint": str(checkpoint), "checkpoint_step": model.step,
               "decision_rule": model.decision_rule, "sources": {},
               "ef_method": "method of discs (echojax.biomarkers)"}
    for source in config.sources:
        src_rows = [r for r in rows if r["source"] == source.alias]
        summary["sources"][source.alias] = {
            "num_images": len(src_rows), **_dice_summary(src_rows),
            "spacing_known": all(r["_spacing_known"] for r in src_rows),
            "ef": _ef_summary(src_rows, masks)}
    summary["overall"] = {"num_images": len(rows), **_dice_summary(rows)}
    return summary, rows


def _dice_summary(rows: list[dict[str, Any]]) -> dict[str, Any]:
    dice = {name: describe(r[f"dice_{name}"] for r in rows) for name in _FG}
    means = np.asarray([[d["mean"] for d in dice.values()]], np.float32)  # one row: the means
    fg = float(metrics_lib.foreground_dice(means, classes=range(len(_FG))))
    return {"dice": dice, "fg_dice": fg}


def _ef_summary(rows: list[dict[str, Any]], masks) -> dict[str, Any] | None:
    """Monoplane and biplane EF from the ED/ES pairs of one source (None: EF unknown)."""
    rows = [r for r in rows if math.isfinite(r["_ef"]) and r["_lv_annotated"]]
    if not rows:
        return None
    frames = collections.defaultdict(list)  # (patient, view, phase) -> [row]
    for r in rows:
        frames[(r["patient_id"], r["view"], r["phase"])].append(r)
    pairs = {}  # (patient, view) -> (ED row, ES row)
    for patient, view in sorted({(r["patient_id"], r["view"]) for r in rows}):
        ed, es = frames.get((patient, view, "ED"), []), frames.get((patient, view, "ES"), [])
        if len(ed) == 1 and len(es) == 1:
            pairs[(patient, view)] = (ed[0], es[0])

    def ef_of(which: int, ed_es_main, ed_es_other=None) -> float:
        """EF from the predicted (which=0) or true (1) LV masks; NaN if one is empty."""
        vols = []
        for k in (0, 1):  # ED, ES
            main = masks[(ed_es_main[k]["source"], ed_es_main[k]["index"])]
            kw, parts = {}, [main[which]]
            if ed_es_other is not None:
                other = masks[(ed_es_other[k]["source"], ed_es_other[k]["index"])]
                kw = dict(other_view=other[which], other_spacing_mm=other[2])
                parts.append(other[which])
            if not all(m.any() for m in parts):
                return math.nan  # no LV predicted: no volume (counted as a failure)
            volume = float(biomarkers.lv_volume(main[which], main[2], **kw))
            if not (math.isfinite(volume) and volume > 0):
                # Our choice: a mask without a measurable cavity (e.g. a line of pixels,
                # volume 0 by the discs) gives no EF, counted as a failure like an empty one.
                return math.nan
            vols.append(volume)
        return float(biomarkers.ejection_fraction(vols[0], vols[1]))

    mono = {"pred": [], "gt_masks": [], "reference": []}
    for key in sorted(pairs):
        pair = pairs[key]
        mono["pred"].append(ef_of(0, pair))
        mono["gt_masks"].append(ef_of(1, pair))
        mono["reference"].append(pair[0]["_ef"])
    bi = {"pred": [], "gt_masks": [], "reference": []}
    for patient in sorted({p for p, _ in pairs}):
        if (patient, "4CH") in pairs and (patient, "2CH") in pairs:
            main, other = pairs[(patient, "4CH")], pairs[(patient, "2CH")]
            if not all(r["_spacing_known"] for r in main + other):
                continue  # two views of unknown, possibly different scales
            bi["pred"].append(ef_of(0, main, other))
            bi["gt_masks"].append(ef_of(1, main, other))
            bi["reference"].append(main[0]["_ef"])
    return {"monoplane": _ef_errors(mono), "biplane": _ef_errors(bi)}


def _ef_errors(ef: dict[str, list[float]]) -> dict[str, Any]:
    pred, gt, ref = (np.asarray(ef[k], np.float64) for k in ("pred", "gt_masks", "reference"))
    ok = np.isfinite(pred)
    out = {"count": int(pred.size), "failed": int((~ok).sum()), "mae": None,
           "mae_vs_gt_masks": None}
    if ok.any():
        out["mae"] = float(np.nanmean(np.abs(pred[ok] - ref[ok])))
        out["mae_vs_gt_masks"] = float(np.nanmean(np.abs(pred[ok] - gt[ok])))
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m echojax.evaluate", description=__doc__.split(
        "\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workdir", required=True, help="run folder (holds config.json)")
    parser.add_argument("--split", default="test", choices=("train", "validation", "test"))
    parser.add_argument("--checkpoint", default="best", help="best, latest or a step number")
    parser.add_argument("--data_dir", default=None, help="TFDS data_dir (default: the run's)")
    parser.add_argument("--source", action="append", default=[], metavar="NAME[:ALIAS]",
                        help="evaluate on this prepared TFDS dataset instead of the run's own "
                             "sources, into RUN/external/ALIAS/ (repeatable)")
    args = parser.parse_args(argv)
    run = rundir.RunDir(args.workdir)
    folders = [run]
    if args.source:
        if not run.is_run():
            parser.error(f"--workdir {args.workdir} is not a run folder (no config.json)")
        folders = [rundir.prepare_external(run, _parse_source(item, parser))
                   for item in args.source]
    for folder in folders:
        summary = evaluate(folder.path, split=args.split, checkpoint=args.checkpoint,
                           data_dir=args.data_dir)
        print(json.dumps(files.json_safe({a: s["fg_dice"] for a, s in summary["sources"].items()}),
                         sort_keys=True))
        print(f"wrote {folder.eval_dir(args.split)}")


def _parse_source(item: str, parser: argparse.ArgumentParser) -> Source:
    name, _, alias = item.partition(":")
    if not name or "/" not in name:
        parser.error(f"--source expects a TFDS name with its config, e.g. "
                     f"synthetic_echo/unity_like_64[:unity], got {item!r}")
    return Source(name, alias=alias or name.rsplit("/", 1)[1])


if __name__ == "__main__":
    main()
