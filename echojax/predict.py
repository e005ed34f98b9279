"""Segment echo recordings with a trained model: masks, LV area curves, ED/ES, EF.

    python -m echojax.predict --model MODEL_DIR|RUN INPUT... --out OUT_DIR
        [--pair A2C_FILE:A4C_FILE ...] [--fps FPS] [--batch_size N] [--checkpoint best]
        [--runtime jax|onnx]

``INPUT`` is a recording (video, DICOM, NIfTI/MetaImage, PNG/JPEG) or a folder searched
for them (``echojax.recordings``). ``--model`` is a folder from ``python -m
echojax.export`` or a run folder. Per recording, in ``OUT_DIR/<name>/``:

- ``masks.nii.gz`` (``[frames, rows, columns]`` class ids 0 background, 1 LV, 2 LV
  myocardium, 3 LA; NIfTI inputs always get NIfTI, with the input header's origin,
  spacing and direction, so the masks overlay the input in a viewer) or ``mask.png`` for a
  single image,
  at the recording's own size (``echojax.predict_io``: frames are stretched to the
  model's square input as in training; masks are mapped back exactly);
- ``areas.csv``: per frame the LV area in pixels (and mm^2 and the monoplane LV volume in
  mL by the method of discs where the file gives the pixel spacing), and ED/ES marks;
- ``beats.csv``: per beat its ED and ES frames (``echojax.cardiac_cycle``: ED the peaks
  of the lightly smoothed LV area curve that stand out of its amplitude and noise, ES
  the smallest area before the next ED, with a minimum systole and systolic fall), EF
  (monoplane, method of discs, ``echojax.biomarkers``; scale-free, so EF needs no
  spacing) and EDV/ESV in mL where the spacing is known;
- ``overlay.gif`` (every frame, classes in colour), ``overlay.png`` (the first beat's ED
  and ES frames side by side, or the first frame), ``area_curve.png`` (ED/ES marked);
- ``result.json``: all of the above plus what the pre-processing did (sector handling).

Each recording's folder is written under a temporary name and renamed when complete.
``OUT_DIR/summary.csv`` and ``summary.json`` hold one row per recording (``status`` ok
or failed, with the reason). Any exception while reading, segmenting or writing one
recording is that recording's failure: one ``error:`` line naming the file, its row in
the summary, and the rest go on; nothing of it is left in ``OUT_DIR``. The summary is
written also when the run stops early (Ctrl-C: the recordings not reached are listed as
failed). A recording that decodes fewer frames than its header declares (a truncated or
damaged file; ``echojax.recordings``) is segmented on the frames that decoded and
flagged: ``declared_frames`` and ``warning`` in the summary, a ``warning:`` line on the
terminal. The readers' own warnings go to ``result.json`` (``reader_warnings``), not
the terminal. One-frame recordings get masks and areas but no EF (``ef_reason`` says why);
so does a recording without a frame rate (pass ``--fps``) or without a complete beat.

Biplane EF: ``--pair A2C_FILE:A4C_FILE`` names a 2-chamber and a 4-chamber recording of
one patient; both are segmented as usual, and ``biplane.csv`` gives, for the i-th beat of
each (our choice: the views are not recorded together, so beats are paired in order),
the biplane EF from the two views' ED and ES masks, and the mean over the paired beats.

``--runtime onnx`` runs the model folder's ``model.onnx`` (``echojax export --onnx``)
with onnxruntime instead of JAX (``echojax.onnx_export.OnnxPredictor``; needs the onnx
extra); everything else (reading, pre-processing, outputs) is the same, and so are the
masks (tested). ``summary.json`` -> ``model`` -> ``runtime`` says which one ran.

Exit status: 0 when every recording succeeded (truncated ones included), 1 when some
failed, 2 when there was nothing to segment (no recording found, bad arguments, a model
folder that cannot be read).

Loading a model never unpickles anything: an exported folder is JSON (``model.json``,
``config.json``) and an Orbax checkpoint of arrays; a run folder the same.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import sys
import tempfile
import time
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import tqdm

from echojax import biomarkers, cardiac_cycle, export, files, inference, onnx_export
from echojax import predict_io as io
from echojax.data import cone
from echojax.recordings import RecordingError, find_recordings, one_line, read_recording

SUMMARY_COLUMNS = (
    "input", "status", "error", "warning", "output", "kind", "frames", "declared_frames",
    "height", "width", "fps",
    "spacing_row_mm", "spacing_col_mm", "spacing_source", "sector", "sector_zeroed_signal_pct",
    "num_beats", "ed_frames", "es_frames", "ef_beats", "ef_mean", "ef_reason", "seconds")
AREA_COLUMNS = ("frame", "lv_area_px", "lv_area_mm2", "lv_volume_ml", "phase", "beat")
BEAT_COLUMNS = ("beat", "ed_frame", "es_frame", "ef", "edv_ml", "esv_ml")
MAX_READER_WARNINGS = 5  # distinct reader warnings kept per recording in result.json
RUNTIMES = ("jax", "onnx")


class Segmenter:
    """The model's predictor and pre-processing spec: ``segmenter(uint8[N, R, R, 1]) ->
    int32[N, R, R]``. ``runtime``: ``"jax"`` (``echojax.inference``) or ``"onnx"`` (the
    model folder's ``model.onnx`` with onnxruntime)."""

    def __init__(self, model_path: str | os.PathLike, *, checkpoint: str | int = "best",
                 batch_size: int | None = None, runtime: str = "jax"):
        if runtime not in RUNTIMES:
            raise ValueError(f"unknown runtime {runtime!r}; expected one of {RUNTIMES}")
        self.runtime = runtime
        if runtime == "onnx":
            if checkpoint != "best":
                raise ValueError(f"{model_path}: --runtime onnx runs the exported model; "
                                 f"--checkpoint {checkpoint} applies to run folders only")
            self.model = None
            self.predictor = onnx_export.OnnxPredictor(model_path, batch_size=batch_size)
            self.spec = self.predictor.info["preprocessing"]
            self._about = {"path": self.predictor.path, "step": self.predictor.step,
                           "decision_rule": self.predictor.decision_rule,
                           "onnx_providers": self.predictor.providers}
            resolution = self.predictor.resolution
        else:
            self.model = inference.restore(model_path, checkpoint=checkpoint)
            if inference.is_model_dir(model_path):
                with open(os.path.join(self.model.path, inference.MODEL_FILE)) as f:
                    self.spec = json.load(f)["preprocessing"]
            else:
                self.spec = export.preprocessing_spec(self.model.config)
            self._about = {"path": self.model.path, "step": self.model.step,
                           "decision_rule": self.model.decision_rule}
            resolution = self.model.resolution
        if self.spec.get("aspect") != "stretch" or self.spec["resolution"] != resolution:
            raise ValueError(f"{model_path}: pre-processing {self.spec.get('aspect')!r} at "
                             f"{self.spec.get('resolution')} is not one this version applies "
                             f"(stretch at the model's resolution {resolution})")
        self.resolution = resolution
        if runtime == "jax":
            self.predictor = self.model.predictor(batch_size)

    def __call__(self, images: np.ndarray) -> np.ndarray:
        return self.predictor(images)

    def describe(self) -> dict[str, Any]:
        return dict(self._about, resolution=self.resolution, runtime=self.runtime)


def _frame_areas(lv: np.ndarray, spacing) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """LV area in pixels, in mm^2 and monoplane volume in mL per frame (NaN unknown)."""
    px = lv.reshape(len(lv), -1).sum(1).astype(np.float64)
    if spacing is None:
        nan = np.full(len(lv), np.nan)
        return px, nan, nan
    mm2 = px * spacing[0] * spacing[1]
    ml = np.array([biomarkers.lv_volume(m, spacing) if m.any() else 0.0 for m in lv])
    return px, mm2, ml


def _beats(px: np.ndarray, fps: float | None, lv: np.ndarray, spacing):
    """(beats, EF per beat, reason EF is missing or "")."""
    if len(px) == 1:
        return [], [], "one frame: masks only (EF needs a cine loop with a whole beat)"
    if len(px) < 3:
        return [], [], f"{len(px)} frames: too few for a cardiac cycle"
    if fps is None:
        return [], [], "frame rate unknown (the file gives none; pass --fps)"
    found = cardiac_cycle.analyse_beats(px, min_beat_frames=cardiac_cycle.min_beat_frames(fps))
    beats = found.beats
    if not beats:
        return [], [], found.reason
    try:
        efs, _ = cardiac_cycle.ef_per_beat(lv, beats, spacing)
    except ValueError as e:
        return beats, [], f"EF not computed: {e}"
    return beats, efs, ""


@contextlib.contextmanager
def _stderr_into(lines: list[str]) -> Iterator[None]:
    """The process's stderr (file descriptor 2) goes into ``lines`` inside the block: on a
    damaged file the C libraries under the readers (FFmpeg, libpng, OpenCV's AVI parser,
    ITK) and pydicom's log print lines there that name no file, tracebacks included."""
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as tmp:
        os.dup2(tmp.fileno(), 2)
        try:
            yield
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            tmp.seek(0)
            lines += tmp.read().decode("utf-8", errors="replace").splitlines()


def segment_recording(path: Path, segment: Segmenter, *, fps: float | None = None
                      ) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """Reads and segments one recording; returns its result (``result.json`` content)
    and the arrays to write (``frames`` uint8[T,H,W], ``masks`` uint8[T,H,W], areas).

    Raises ``RecordingError`` for a file that cannot be read as a recording. What the
    readers say while reading (Python warnings, pydicom's log, the C libraries' lines on
    stderr) goes into ``reader_warnings``, not the terminal.
    """
    said: list[str] = []
    with warnings.catch_warnings(record=True) as caught, _stderr_into(said):
        warnings.simplefilter("always")
        rec = read_recording(path)
    said = [" ".join(str(w.message).split()) for w in caught] + said
    frames, rounded = io.to_uint8_frames(rec.frames, where=str(path))
    sector = segment.spec["sector"]
    cleared, report = cone.clear_outside_sector(
        frames, estimate=sector["estimate"], max_cut_fraction=sector["max_cut_fraction"],
        margin_px=sector["margin_px"])
    masks = io.to_frame_grid(segment(io.to_model_grid(cleared, segment.resolution)),
                             frames.shape[1:])
    lv = masks == 1
    spacing = rec.spacing_mm
    px, mm2, ml = _frame_areas(lv, spacing)
    loop_fps = rec.fps or fps
    beats, efs, reason = _beats(px, loop_fps, lv, spacing)
    beat_rows = [{"beat": i, "ed": b.ed, "es": b.es, "ef": float(efs[i]) if efs else None,
                  "edv_ml": float(ml[b.ed]) if spacing else None,
                  "esv_ml": float(ml[b.es]) if spacing else None} for i, b in enumerate(beats)]
    result = {
        "input": str(path), "kind": rec.kind, "frames": rec.num_frames,
        "declared_frames": rec.declared_frames, "warning": rec.truncation,
        "reader_warnings": list(dict.fromkeys(line for line in said
                                              if line.strip()))[:MAX_READER_WARNINGS],
        "height": int(frames.shape[1]), "width": int(frames.shape[2]),
        "fps": loop_fps, "fps_source": "file" if rec.fps else ("--fps" if fps else "none"),
        "spacing_row_mm": spacing[0] if spacing else None,
        "spacing_col_mm": spacing[1] if spacing else None, "spacing_source": rec.spacing_source,
        "rounded_pixels": rounded, "sector": report.action, "sector_reason": report.reason,
        "sector_zeroed_signal_pct": 100.0 * report.zeroed_signal_fraction,
        "beats": beat_rows, "num_beats": len(beats),
        "ef_mean": float(np.mean(efs)) if efs else None, "ef_reason": reason,
    }
    return result, {"frames": frames, "masks": masks, "px": px, "mm2": mm2, "ml": ml,
                    "geometry": rec.geometry}


def _write_outputs(folder: Path, result: dict[str, Any], arrays: dict[str, Any]) -> None:
    frames, masks, px = arrays["frames"], arrays["masks"], arrays["px"]
    spacing = (result["spacing_row_mm"], result["spacing_col_mm"]) \
        if result["spacing_row_mm"] is not None else None
    as_png = masks.shape[0] == 1 and result["kind"] != "volume"
    result["masks_file"] = io.write_masks(folder, masks, as_png=as_png, spacing_mm=spacing,
                                          geometry=arrays["geometry"])
    phase, beat_of = [""] * len(px), [""] * len(px)
    for b in result["beats"]:
        phase[b["ed"]], phase[b["es"]] = "ED", "ES"
        beat_of[b["ed"]] = beat_of[b["es"]] = b["beat"]
    files.write_csv(folder / "areas.csv", [
        {"frame": t, "lv_area_px": int(px[t]), "lv_area_mm2": float(arrays["mm2"][t]),
         "lv_volume_ml": float(arrays["ml"][t]), "phase": phase[t], "beat": beat_of[t]}
        for t in range(len(px))], AREA_COLUMNS)
    files.write_csv(folder / "beats.csv", [
        {"beat": b["beat"], "ed_frame": b["ed"], "es_frame": b["es"],
         "ef": np.nan if b["ef"] is None else b["ef"],
         "edv_ml": np.nan if b["edv_ml"] is None else b["edv_ml"],
         "esv_ml": np.nan if b["esv_ml"] is None else b["esv_ml"]} for b in result["beats"]],
        BEAT_COLUMNS)
    io.write_gif(folder / "overlay.gif", io.overlay(*io.shrunk(frames, masks)), result["fps"])
    shown = [result["beats"][0]["ed"], result["beats"][0]["es"]] if result["beats"] else [0]
    io.write_png(folder / "overlay.png",
                 np.concatenate(list(io.overlay(frames[shown], masks[shown])), axis=1))
    ef = (f"EF {result['ef_mean']:.1f}% (mean of {len(result['beats'])} beats)"
          if result["ef_mean"] is not None else f"no EF: {result['ef_reason']}")
    io.plot_area_curve(folder / "area_curve.png", px, unit="pixels",
                       ed=[b["ed"] for b in result["beats"]],
                       es=[b["es"] for b in result["beats"]],
                       title=f"{Path(result['input']).name}: {ef}", fps=result["fps"])
    files.write_json(folder / "result.json", result)


def _place(tmp: Path, final: Path) -> None:
    """Renames the finished folder ``tmp`` to ``final``, replacing an older result."""
    old = None
    if final.exists():
        old = final.with_name(f".{final.name}.old-{os.getpid()}")
        os.rename(final, old)
    os.rename(tmp, final)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def _output_names(paths: list[Path]) -> list[str]:
    """A distinct folder name per recording: its name without the format suffix, with
    its parent folder's name in front where two would collide."""
    def stem(p: Path) -> str:
        n = p.name
        for suffix in (".nii.gz", p.suffix):
            if suffix and n.lower().endswith(suffix.lower()):
                return n[: -len(suffix)] or n
        return n
    names = [stem(p) for p in paths]
    counts = {n: names.count(n) for n in names}
    out, used = [], set()
    for p, n in zip(paths, names):
        name = f"{p.parent.name}__{n}" if counts[n] > 1 else n
        base, k = name, 1
        while name in used:
            k += 1
            name = f"{base}__{k}"
        used.add(name)
        out.append(name)
    return out


def collect(inputs: list[str]) -> tuple[list[Path], list[dict[str, Any]]]:
    """Recordings of the inputs, and failure rows for inputs or files that are none."""
    found, failed = [], []
    for item in inputs:
        try:
            recs, skipped = find_recordings(item)
        except RecordingError as e:
            failed.append({"input": item, "status": "failed", "error": str(e)})
            continue
        except OSError as e:  # e.g. a folder that cannot be listed
            failed.append({"input": item, "status": "failed",
                           "error": f"{item}: cannot be searched ({one_line(e)})"})
            continue
        if not recs and not skipped:
            failed.append({"input": item, "status": "failed",
                           "error": f"{item}: no recordings in this folder (empty)"})
        found += [p for p in recs if p not in found]
        failed += [{"input": str(p), "status": "failed", "error": f"{p}: {why}"}
                   for p, why in skipped]
    return found, failed


def _biplane(pairs, results: dict[str, dict], kept: dict[str, dict]) -> list[dict[str, Any]]:
    rows = []
    for a2c, a4c in pairs:
        r2, r4 = results.get(a2c), results.get(a4c)
        row = {"a2c": a2c, "a4c": a4c, "beats": [], "ef_mean": None, "reason": ""}
        rows.append(row)
        if not (r2 and r4 and r2.get("status") == "ok" and r4.get("status") == "ok"):
            row["reason"] = "one of the two recordings failed"
            continue
        n = min(len(r2["beats"]), len(r4["beats"]))
        if n == 0:
            row["reason"] = "no complete beat in " + (a2c if not r2["beats"] else a4c)
            continue
        m2, m4 = kept[a2c]["masks"] == 1, kept[a4c]["masks"] == 1
        sp2 = (r2["spacing_row_mm"], r2["spacing_col_mm"]) if r2["spacing_row_mm"] else None
        sp4 = (r4["spacing_row_mm"], r4["spacing_col_mm"]) if r4["spacing_row_mm"] else None
        try:
            for b2, b4 in zip(r2["beats"][:n], r4["beats"][:n]):
                ef = biomarkers.ef_from_masks(m4[b4["ed"]], m4[b4["es"]], sp4,
                                              ed_other=m2[b2["ed"]], es_other=m2[b2["es"]],
                                              other_spacing_mm=sp2)
                row["beats"].append({"a2c_ed": b2["ed"], "a2c_es": b2["es"], "a4c_ed": b4["ed"],
                                     "a4c_es": b4["es"], "ef": ef})
        except Exception as e:  # that pair's failure, never the batch's
            row["reason"], row["beats"] = one_line(e), []
            continue
        row["ef_mean"] = float(np.mean([b["ef"] for b in row["beats"]]))
    return rows


def run(model, inputs: list[str], out: str, *, pairs=(), fps: float | None = None,
        checkpoint: str | int = "best", batch_size: int | None = None,
        progress: bool = True, runtime: str = "jax") -> dict[str, Any]:
    """Segments every recording of ``inputs`` into ``out`` (see the module doc); returns
    the summary (also written as ``out/summary.json`` and ``summary.csv``).

    ``model``: a model or run folder, or a ready ``Segmenter`` (anything with its
    ``resolution``, ``spec``, ``describe()`` and call). ``runtime``: ``"jax"`` or
    ``"onnx"`` for a model folder (see ``Segmenter``).
    """
    pairs = [(str(Path(a)), str(Path(b))) for a, b in pairs]
    paths, failed = collect(list(inputs) + [p for pair in pairs for p in pair
                                            if not any(Path(p) == Path(i) for i in inputs)])
    summary = {"model": None, "recordings": [], "failed": failed, "biplane": []}
    if not paths:
        return summary
    segment = model if callable(model) else _load(model, checkpoint, batch_size, runtime)
    summary["model"] = segment.describe()
    out_dir = Path(out)
    out_dir.mkdir(parents=True, exist_ok=True)
    results, kept = {}, {}
    paired = {p for pair in pairs for p in pair}
    bar = tqdm.tqdm(list(zip(paths, _output_names(paths))), unit="recording",
                    disable=not progress, dynamic_ncols=True, file=sys.stderr)
    try:
        for path, name in bar:
            result = _one(path, name, segment, out_dir, fps=fps, keep=str(path) in paired,
                          kept=kept)
            results[str(path)] = result
            summary["recordings"].append(result)
            if result["status"] == "ok":
                bar.set_postfix(frames_per_s=f"{result['frames'] / result['seconds']:.0f}")
    finally:  # also when interrupted: the summary lists every recording
        bar.close()
        done = set(results)
        summary["recordings"] += [
            {"input": str(p), "status": "failed",
             "error": f"{p}: not segmented: the run stopped before it"}
            for p in paths if str(p) not in done]
        summary["recordings"] += failed
        summary["biplane"] = _biplane(pairs, results, kept)
        _write_summary(out_dir, summary)
    return summary


def _load(model, checkpoint, batch_size, runtime="jax") -> Segmenter:
    """The ``Segmenter`` of a model or run folder; any error reading it is a ValueError
    naming the folder (the run stops: nothing can be segmented without it)."""
    try:
        return Segmenter(model, checkpoint=checkpoint, batch_size=batch_size, runtime=runtime)
    except ValueError:
        raise
    except Exception as e:
        raise ValueError(f"{model}: cannot load the model ({one_line(e)})") from e


def _one(path: Path, name: str, segment, out_dir: Path, *, fps: float | None, keep: bool,
         kept: dict[str, dict]) -> dict[str, Any]:
    """Segments one recording into ``out_dir/name`` (written under a temporary name,
    renamed when complete); returns its summary row. Any exception while reading,
    segmenting or writing it is this recording's failure: one line naming the file on
    the terminal, ``status`` failed with the reason; nothing of it is left in ``out_dir``."""
    t0 = time.perf_counter()
    tmp = Path(tempfile.mkdtemp(prefix=f".{name}.partial-", dir=out_dir))
    try:
        result, arrays = segment_recording(path, segment, fps=fps)
        result.update(status="ok", error="", output=name)
        _write_outputs(tmp, result, arrays)
        _place(tmp, out_dir / name)
        if keep:
            kept[str(path)] = {"masks": arrays["masks"]}
        if result["warning"]:
            tqdm.tqdm.write(f"warning: {path}: {result['warning']}; segmented the "
                            f"{result['frames']} that decoded", file=sys.stderr)
    except Exception as e:  # one recording's failure, never the batch's
        text = str(e) if isinstance(e, RecordingError) else one_line(e)
        text = " ".join(text.split())
        msg = text if str(path) in text else f"{path}: {text}"
        result = {"input": str(path), "status": "failed", "error": msg}
        tqdm.tqdm.write(f"error: {msg}", file=sys.stderr)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)  # gone already when placed
    result["seconds"] = time.perf_counter() - t0
    return result


def _write_summary(out_dir: Path, summary: dict[str, Any]) -> None:
    rows = []
    for r in summary["recordings"]:
        row = {k: r.get(k, "") for k in SUMMARY_COLUMNS}
        beats = r.get("beats") or []
        row.update(ed_frames=" ".join(str(b["ed"]) for b in beats),
                   es_frames=" ".join(str(b["es"]) for b in beats),
                   ef_beats=" ".join(f"{b['ef']:.2f}" for b in beats if b["ef"] is not None),
                   ef_mean=np.nan if r.get("ef_mean") is None else r["ef_mean"])
        rows.append({k: ("" if v is None else v.item() if isinstance(v, np.generic) else v)
                     for k, v in row.items()})
    files.write_csv(out_dir / "summary.csv", rows, SUMMARY_COLUMNS)
    if summary["biplane"]:
        files.write_csv(out_dir / "biplane.csv", [
            {"a2c": p["a2c"], "a4c": p["a4c"], "beats": len(p["beats"]),
             "ef_beats": " ".join(f"{b['ef']:.2f}" for b in p["beats"]),
             "ef_mean": np.nan if p["ef_mean"] is None else p["ef_mean"], "reason": p["reason"]}
            for p in summary["biplane"]], ("a2c", "a4c", "beats", "ef_beats", "ef_mean", "reason"))
    files.write_json(out_dir / "summary.json", {k: summary[k] for k in
                                                ("model", "recordings", "biplane")})


def _pair(text: str) -> tuple[str, str]:
    parts = text.rsplit(":", 1)
    if len(parts) != 2 or not all(parts):
        raise argparse.ArgumentTypeError(f"--pair {text!r}: expected A2C_FILE:A4C_FILE")
    return parts[0], parts[1]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m echojax.predict", description=__doc__.split("\n\n")[0],
        epilog="Outputs per recording: masks, areas.csv, beats.csv, overlay.gif/png, "
               "area_curve.png, result.json; summary.csv/json for all (see the module doc).")
    parser.add_argument("--model", required=True, help="exported model folder or run folder")
    parser.add_argument("inputs", nargs="*", metavar="INPUT", help="recordings or folders")
    parser.add_argument("--out", required=True, help="output folder")
    parser.add_argument("--pair", type=_pair, action="append", default=[],
                        metavar="A2C_FILE:A4C_FILE", help="2CH and 4CH of one patient (biplane EF)")
    parser.add_argument("--fps", type=float, default=None,
                        help="frame rate for recordings whose file gives none")
    parser.add_argument("--checkpoint", default="best", help="for a run folder: best, latest, STEP")
    parser.add_argument("--batch_size", type=int, default=None, help="frames per model call")
    parser.add_argument("--runtime", choices=RUNTIMES, default="jax",
                        help="jax (default) or onnx: the model folder's model.onnx (export "
                             "--onnx) with onnxruntime (pip install 'echojax[onnx]'); the "
                             "rest of predict is the same")
    parser.add_argument("--no_progress", action="store_true")
    args = parser.parse_args(argv)
    if not args.inputs and not args.pair:
        parser.error("give at least one INPUT or --pair")
    if args.fps is not None and not (np.isfinite(args.fps) and args.fps > 0):
        parser.error(f"--fps must be positive, got {args.fps}")
    try:
        summary = run(args.model, args.inputs, args.out, pairs=args.pair, fps=args.fps,
                      checkpoint=args.checkpoint, batch_size=args.batch_size,
                      progress=not args.no_progress, runtime=args.runtime)
    except ValueError as e:  # a model folder that cannot be read
        print(f"error: {e}", file=sys.stderr)
        return 2
    ok = [r for r in summary["recordings"] if r["status"] == "ok"]
    bad = [r for r in summary["recordings"] if r["status"] != "ok"]
    cut = [r for r in ok if r.get("warning")]
    if summary["model"] is None:
        for r in summary["failed"]:
            print(f"error: {r['error']}", file=sys.stderr)
        print("error: nothing to segment; nothing written", file=sys.stderr)
        return 2
    for r in summary["failed"]:
        print(f"error: {r['error']}", file=sys.stderr)
    print(f"{len(ok)} recording(s) segmented"
          + (f" ({len(cut)} truncated: only the frames that decoded)" if cut else "")
          + f", {len(bad)} failed; summary in {Path(args.out) / 'summary.csv'}")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
