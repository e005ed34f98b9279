"""EF and ED/ES accuracy of ``python -m echojax.predict`` on held-out phantom cine loops.

Three stages, each one command (the README's "Segment your own recordings" runs them):

    python bench/predict_phantom_ef.py train --workdir runs/quick_phantoms
    python -m echojax.export --workdir runs/quick_phantoms --out models/quick_phantoms
    python bench/predict_phantom_ef.py loops --out phantom_loops
    python -m echojax.predict --model models/quick_phantoms phantom_loops/recordings --out phantom_pred
    python bench/predict_phantom_ef.py table --loops phantom_loops --pred phantom_pred
    python bench/predict_phantom_ef.py pictures --pred phantom_pred --name NAME --out docs

``train``: the quick model: a CPU-size U-Net with adaptive CCE on the three 64 x 64
phantom styles together (CAMUS-like and Unity-like fully labelled, EchoNet-like LV
only), prepared on first use. ``loops``: cine loops of test-split subjects (never seen
in training or validation: ``synthetic_echo.split_of``) in each style, written as AVI,
MP4 and DICOM under ``recordings/``, with ``truth.json`` beside that folder (the
analytic EF, the ED and ES frames).
``table``: per style, the absolute error of the predicted mean EF (over the beats
found) against the analytic EF; per true beat found (a predicted ED within 5 frames of
its ED), the ED and ES frame errors; how many beats were found, missed and spurious (a
predicted ED more than 5 frames from every true ED).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
from pathlib import Path

import cv2
import numpy as np

from echojax import phantoms, train
from echojax.config import Config, LossConfig, ModelConfig, OptimConfig
from echojax.data.mixture import Source
from echojax.experiment import datasets

STYLES = ("camus_like", "unity_like", "echonet_like")
ALIASES = {"camus_like": "camus", "unity_like": "unity", "echonet_like": "echonet"}
# Test-split subjects (index % 10 == 9): never in the training or validation split.
TEST_SUBJECTS = (9, 19, 29, 39, 49, 59)
FORMATS = (".avi", ".mp4", ".dcm")
MATCH = 5  # frames (0.1 s at 50 fps) between a found and a true ED for a beat to count


def quick_config(data_dir: str | None, *, epochs: int = 3) -> Config:
    """The quick model: CPU-size U-Net, aCCE, 64 x 64, the three phantom styles."""
    return Config(
        sources=tuple(Source(f"synthetic_echo/{s}_64", alias=ALIASES[s]) for s in STYLES),
        resolution=64, model=ModelConfig(name="unet", size="cpu"),
        loss=LossConfig(name="acce"), optim=OptimConfig(lr=0.05), data_dir=data_dir,
        batch_size=8, eval_batch_size=16, epochs=epochs, eval_every=1, log_every=50, seed=0)


def cmd_train(args) -> None:
    config = quick_config(args.data_dir, epochs=args.epochs)
    datasets.prepare_datasets([s.name for s in config.sources], data="synthetic",
                              data_dir=args.data_dir)
    result = train.train_and_evaluate(config, args.workdir)
    print(json.dumps({k: v for k, v in result.items() if "fg_dice" in k or k in (
        "step", "best_step", "images_per_s")}, sort_keys=True))


def cmd_loops(args) -> None:
    out = Path(args.out)
    (out / "recordings").mkdir(parents=True, exist_ok=True)
    truth = {}
    for style in STYLES:
        for k, subject in enumerate(TEST_SUBJECTS):
            view = phantoms.VIEWS[k % 2] if style != "echonet_like" else "4CH"
            fmt = FORMATS[k % len(FORMATS)]
            # Beat length and start vary between loops (50 fps: 60-83 beats per minute).
            loop = phantoms.render_cine(
                style, subject, view, shape=tuple(args.shape), num_frames=args.frames,
                frames_per_beat=(36, 40, 45, 50, 42, 38)[k], first_ed_frame=(5, 12, 20, 8, 15, 2)[k],
                fps=50.0)
            name = f"{style}_{subject:03d}_{view}{fmt}"
            (phantoms.write_dicom if fmt == ".dcm" else phantoms.write_video)(loop, out / "recordings" / name)
            truth[Path(name).stem] = {"style": style, "view": view, "format": fmt,
                                      "ef": float(loop.ef), "ed_frames": list(loop.ed_frames),
                                      "es_frames": list(loop.es_frames)}
            print(f"{name}: EF {loop.ef:.1f}%, ED {loop.ed_frames}, ES {loop.es_frames}")
    (out / "truth.json").write_text(json.dumps(truth, indent=2, sort_keys=True) + "\n")


def _true_beats(t) -> list[tuple[int, int]]:
    """The loop's whole beats that ``cardiac_cycle`` can find: an ED after frame 0
    (a peak at the first frame is not a peak) followed by its ES inside the loop."""
    return [(ed, es) for ed, es in zip(t["ed_frames"], t["es_frames"]) if 0 < ed < es]


def cmd_table(args) -> None:
    truth = json.loads((Path(args.loops) / "truth.json").read_text())
    summary = {Path(r["input"]).stem: r
               for r in json.loads((Path(args.pred) / "summary.json").read_text())["recordings"]}
    rows = []
    for style in STYLES:
        ef_err, ed_err, es_err, missing = [], [], [], []
        n_true = n_found = n_spurious = n_missed = 0
        for stem, t in sorted(truth.items()):
            if t["style"] != style:
                continue
            r = summary.get(stem)
            if r is None or r.get("status") != "ok" or r.get("ef_mean") is None:
                missing.append(f"{stem}: {r and (r.get('ef_reason') or r.get('error'))}")
                continue
            ef_err.append(abs(r["ef_mean"] - t["ef"]))
            found = [(b["ed"], b["es"]) for b in r["beats"]]
            true = _true_beats(t)
            n_true, n_found = n_true + len(true), n_found + len(found)
            # A true beat is found when a found beat's ED lies within MATCH frames of its
            # ED (then its ED and ES frame errors count), else missed; a found beat
            # whose ED is that far from every true ED is spurious.
            for ed, es in true:
                near = [f for f in found if abs(f[0] - ed) <= MATCH]
                if not near:
                    n_missed += 1
                    continue
                f = min(near, key=lambda f: abs(f[0] - ed))
                ed_err.append(abs(f[0] - ed))
                es_err.append(abs(f[1] - es))
            n_spurious += sum(min(abs(f[0] - ed) for ed in t["ed_frames"]) > MATCH for f in found)
        rows.append((style, len(ef_err), ef_err, ed_err, es_err, missing,
                     f"{n_found} / {n_true} ({n_missed}, {n_spurious})"))
    print("| style | loops with EF | EF abs. error, mean (max) | ED frame error, mean (max) "
          "| ES frame error, mean (max) | beats found / true (missed, spurious) |")
    print("|---|---:|---:|---:|---:|---:|")
    for style, n, ef, ed, es, missing, beats in rows:
        def fmt(v, unit=""):
            return f"{np.mean(v):.1f}{unit} ({np.max(v):.0f}{unit})" if v else "n/a"
        print(f"| {style} | {n} of {n + len(missing)} | {fmt(ef, ' pts')} | {fmt(ed)} | "
              f"{fmt(es)} | {beats} |")
    for row in rows:
        for m in row[5]:
            print(f"no EF: {m}", file=sys.stderr)


def cmd_pictures(args) -> None:
    """The README's pictures: one recording's overlay (ED and ES, enlarged 2x without
    smoothing) and area curve."""
    folder, out = Path(args.pred) / args.name, Path(args.out)
    overlay = cv2.imread(str(folder / "overlay.png"))
    cv2.imwrite(str(out / "predict_overlay.png"),
                cv2.resize(overlay, None, fx=2, fy=2, interpolation=cv2.INTER_NEAREST))
    shutil.copyfile(folder / "area_curve.png", out / "predict_area_curve.png")


def main(argv=None) -> None:
    p = argparse.ArgumentParser(prog="python bench/predict_phantom_ef.py", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="stage", required=True)
    t = sub.add_parser("train", help="train the quick phantom model")
    t.add_argument("--workdir", required=True)
    t.add_argument("--data_dir", default=None, help="TFDS data_dir (default ~/tensorflow_datasets)")
    t.add_argument("--epochs", type=int, default=3)
    lo = sub.add_parser("loops", help="write held-out cine loops and truth.json")
    lo.add_argument("--out", required=True)
    lo.add_argument("--shape", type=int, nargs=2, default=(112, 112), metavar=("H", "W"))
    lo.add_argument("--frames", type=int, default=100)
    tb = sub.add_parser("table", help="EF and ED/ES errors of predict's summary.json")
    tb.add_argument("--loops", required=True)
    tb.add_argument("--pred", required=True)
    pi = sub.add_parser("pictures", help="copy one recording's overlay and curve for docs/")
    pi.add_argument("--pred", required=True)
    pi.add_argument("--name", required=True, help="the recording's output folder name")
    pi.add_argument("--out", default="docs")
    args = p.parse_args(argv)
    {"train": cmd_train, "loops": cmd_loops, "table": cmd_table,
     "pictures": cmd_pictures}[args.stage](args)


if __name__ == "__main__":
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    main()
