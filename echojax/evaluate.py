"""Evaluation of a trained run: per-image Dice, LV areas and ejection fraction.

``python -m echojax.evaluate --workdir RUN [--split test] [--checkpoint best|latest|STEP]
[--data_dir DIR]`` restores a checkpoint of ``RUN`` (default: the best by validation
foreground Dice, the model the paper keeps) and writes, under ``RUN/eval/<split>/``:

- ``per_image.csv``: one row per image, in mixture order (source, then TFDS index):
  ``source, index, patient_id, view, phase, dice_lv, dice_lvm, dice_la,
  lv_area_pred_px, lv_area_true_px, lv_area_pred_mm2, lv_area_true_mm2``.
  A Dice is empty where the class is not annotated in the image or absent from its
  ground truth (MONAI's NaN convention).
- ``summary.json``: per source and over all sources, per class: mean, median,
  population std and count of the per-image Dice; ``fg_dice`` (mean over LV, LVM, LA
  of the class means); and, for sources with a known EF, ejection fraction by the
  method of discs (``echojax.biomarkers``) on the predicted LV masks of every ED/ES
  pair:

  - ``ef.monoplane``: one EF per (patient, view) with exactly one ED and one ES frame;
  - ``ef.biplane``: one EF per patient having such pairs in both 2CH and 4CH views
    (Simpson's biplane, 4CH as the main view);

  each with ``count`` pairs, ``failed`` (no LV predicted in a frame: no EF, left out
  of the errors), ``mae`` against the dataset's reference EF (the ``ef`` feature) and
  ``mae_vs_gt_masks`` against the EF of the same method on the ground-truth masks
  (which isolates the segmentation error from the reference's own method).

Both files are written atomically and are byte-identical when evaluation is repeated.
Runs in one process (all local devices).

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
import io
import json
import math
import os
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from echojax import biomarkers
from echojax import labels as labels_lib
from echojax import metrics as metrics_lib
from echojax.checkpoint import Checkpoints, abstract
from echojax.config import Config, write_text_atomic
from echojax.data import pipeline
from echojax.data.mixture import Source
from echojax.train import Engine, eval_mixture, make_predict

CSV_COLUMNS = ("source", "index", "patient_id", "view", "phase", "dice_lv", "dice_lvm",
               "dice_la", "lv_area_pred_px", "lv_area_true_px", "lv_area_pred_mm2",
               "lv_area_true_mm2")
_FG = {labels_lib.CLASS_NAMES[c]: c for c in labels_lib.FOREGROUND_CLASSES}


def evaluate(workdir: str | os.PathLike, *, split: str = "test", checkpoint: str | int = "best",
             data_dir: str | None = None) -> dict[str, Any]:
    """Evaluates ``checkpoint`` of the run in ``workdir`` on ``split``; writes
    ``eval/<split>/per_image.csv`` and ``summary.json`` and returns the summary."""
    workdir = os.path.abspath(os.fspath(workdir))
    config_path = os.path.join(workdir, "config.json")
    if not os.path.exists(config_path):
        raise ValueError(f"{workdir} is not a run folder: {config_path} does not exist")
    config = Config.load(config_path)
    if data_dir is not None:
        config = dataclasses.replace(config, data_dir=data_dir)
    checkpoints = Checkpoints(os.path.join(workdir, "checkpoints"), read_only=True)
    step = checkpoints.resolve(checkpoint)
    engine = Engine(config, total_steps=1)
    state = checkpoints.restore(step, abstract(engine.initial_state))
    checkpoints.close()

    predict = make_predict(config, engine.graphdef_eval)

    @jax.jit
    def infer(params, rest, images, segmentation):
        pred = predict(params, rest, images)
        dice = metrics_lib.dice_per_class(pred, segmentation.astype(jnp.int32),
                                          num_classes=labels_lib.NUM_CLASSES)
        return pred, dice

    mix = eval_mixture(config, split, metadata=True)
    rows, masks = [], {}
    for local in pipeline.eval_batches(mix, batch_size=config.eval_batch_size):
        valid = np.asarray(local["valid"])
        batch = engine.global_batch({k: np.asarray(local[k]) for k in ("image", "segmentation")})
        pred, dice = jax.device_get(infer(state["params"], state["rest"], batch["image"],
                                          batch["segmentation"]))
        for b in np.flatnonzero(valid):
            alias = config.sources[int(local["source_index"][b])].alias
            lm = np.asarray(local["label_mask"][b])
            d = np.where(lm, dice[b], np.nan)  # unannotated classes are not evaluated
            spacing = np.asarray(local["pixel_spacing_mm"][b], np.float64)
            true_lv = np.asarray(local["segmentation"][b]) == labels_lib.LV
            pred_lv = pred[b] == labels_lib.LV
            px_mm2 = float(spacing[0] * spacing[1])
            row = {
                "source": alias, "index": int(local["index"][b]),
                "patient_id": str(local["patient_id"][b]), "view": str(local["view"][b]),
                "phase": str(local["phase"][b]),
                **{f"dice_{name}": float(d[c]) for name, c in _FG.items()},
                "lv_area_pred_px": int(pred_lv.sum()), "lv_area_true_px": int(true_lv.sum()),
                "lv_area_pred_mm2": float(pred_lv.sum()) * px_mm2,
                "lv_area_true_mm2": float(true_lv.sum()) * px_mm2,
                "_ef": float(local["ef"][b]), "_lv_annotated": bool(lm[labels_lib.LV]),
            }
            rows.append(row)
            masks[(alias, row["index"])] = (pred_lv, true_lv, spacing)

    summary = {"split": split, "checkpoint": str(checkpoint), "checkpoint_step": step,
               "sources": {}, "ef_method": "method of discs (echojax.biomarkers)"}
    for source in config.sources:
        src_rows = [r for r in rows if r["source"] == source.alias]
        summary["sources"][source.alias] = {
            "num_images": len(src_rows), **_dice_summary(src_rows),
            "ef": _ef_summary(src_rows, masks)}
    summary["overall"] = {"num_images": len(rows), **_dice_summary(rows)}

    out_dir = os.path.join(workdir, "eval", split)
    write_text_atomic(os.path.join(out_dir, "per_image.csv"), _csv(rows))
    write_text_atomic(os.path.join(out_dir, "summary.json"),
                      json.dumps(_json_safe(summary), indent=2, sort_keys=True) + "\n")
    return summary


def _stats(values: list[float]) -> dict[str, Any]:
    v = np.asarray([x for x in values if math.isfinite(x)], np.float64)
    if v.size == 0:
        return {"count": 0, "mean": None, "median": None, "std": None}
    return {"count": int(v.size), "mean": float(v.mean()), "median": float(np.median(v)),
            "std": float(v.std())}


def _dice_summary(rows: list[dict[str, Any]]) -> dict[str, Any]:
    dice = {name: _stats([r[f"dice_{name}"] for r in rows]) for name in _FG}
    means = [d["mean"] for d in dice.values() if d["mean"] is not None]
    return {"dice": dice, "fg_dice": float(np.mean(means)) if means else None}


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
            vols.append(float(biomarkers.lv_volume(main[which], main[2], **kw)))
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


def _format(value: Any) -> str:
    if isinstance(value, float):
        return "" if not math.isfinite(value) else repr(value)
    return str(value)


def _csv(rows: list[dict[str, Any]]) -> str:
    out = io.StringIO()
    out.write(",".join(CSV_COLUMNS) + "\n")
    for r in rows:
        fields = []
        for col in CSV_COLUMNS:
            text = _format(r[col])
            if any(ch in text for ch in ',"\n'):
                text = '"' + text.replace('"', '""') + '"'
            fields.append(text)
        out.write(",".join(fields) + "\n")
    return out.getvalue()


def _json_safe(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


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
    folders = [args.workdir]
    if args.source:
        from echojax import sweep  # the external-folder layout experiment sweeps use

        if not os.path.exists(os.path.join(args.workdir, "config.json")):
            parser.error(f"--workdir {args.workdir} is not a run folder (no config.json)")
        folders = [sweep.prepare_external(args.workdir, _parse_source(item, parser))
                   for item in args.source]
    for folder in folders:
        summary = evaluate(folder, split=args.split, checkpoint=args.checkpoint,
                           data_dir=args.data_dir)
        print(json.dumps(_json_safe({a: s["fg_dice"] for a, s in summary["sources"].items()}),
                         sort_keys=True))
        print(f"wrote {os.path.join(os.path.abspath(folder), 'eval', args.split)}")


def _parse_source(item: str, parser: argparse.ArgumentParser) -> Source:
    name, _, alias = item.partition(":")
    if not name or "/" not in name:
        parser.error(f"--source expects a TFDS name with its config, e.g. "
                     f"synthetic_echo/unity_like_64[:unity], got {item!r}")
    return Source(name, alias=alias or name.rsplit("/", 1)[1])


if __name__ == "__main__":
    main()
