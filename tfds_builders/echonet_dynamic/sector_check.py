"""How much echo signal sector handling zeroes on real EchoNet-Dynamic videos.

For each traced frame (ED and ES) of each video of a release folder (``FileList.csv``,
``VolumeTracings.csv``, ``Videos/``), the fraction of echo signal (pixels above
``echojax.data.cone.SIGNAL_LEVEL`` = 20 in the original frame) that is set to 0, over
the whole frame and in a band of 6 pixels on either side of the traced LV boundary
(the builder's own rasterisation, ``trace_mask``), by:

- ``unvalidated``: the geometric sector (``cone.cone_mask`` on the whole clip) applied
  blindly, as the builder did before (a video whose sector could not be estimated was
  skipped);
- ``validated``: ``cone.clear_outside_sector`` with its estimate (what a builder of raw
  frames with markings, e.g. Unity, uses);
- ``builder``: what the echonet_dynamic builder does (``clear_video``: no estimate, only
  what lies outside the fan's convex hull).

    python -m tfds_builders.echonet_dynamic.sector_check \\
        --root ../shared/real_samples/echonet_dynamic [--png_dir /tmp/sector_check]

Targets (for ``builder`` and ``validated``): at most 5 % overall, at most 2 % in the
LV band, on every video. The exit status is 1 when a target is missed.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path

import cv2
import numpy as np
from scipy import ndimage

from echojax.data import cone
from tfds_builders.echonet_dynamic import echonet_dynamic_dataset_builder as echonet

BAND_PX = 6
MAX_OVERALL, MAX_BAND = 0.05, 0.02
METHODS = ("unvalidated", "validated", "builder")


@dataclasses.dataclass
class Row:
    video: str
    phase: str
    frame: int
    signal: int                 # signal pixels in the frame
    band_signal: int            # of them, in the LV band
    zeroed: dict                # method -> (overall fraction, band fraction); None: skipped
    action: dict                # method -> what was done


def lv_band(lv: np.ndarray, width: int = BAND_PX) -> np.ndarray:
    """bool[H, W]: pixels within ``width`` pixels (Euclidean, centre to centre) of the
    LV region's boundary, inside or outside it."""
    lv = lv.astype(bool)
    outside = ndimage.distance_transform_edt(~lv)     # to the nearest LV pixel
    inside = ndimage.distance_transform_edt(lv)       # to the nearest non-LV pixel
    return (~lv & (outside <= width)) | (lv & (inside <= width))


def _fractions(frame, kept, band):
    sig = frame > cone.SIGNAL_LEVEL
    lost = sig & ~kept
    return (lost.sum() / max(sig.sum(), 1), (lost & band).sum() / max((sig & band).sum(), 1))


def measure(root: Path, png_dir: Path | None = None) -> list[Row]:
    root = Path(root)
    tracings = echonet.read_tracings(root / "VolumeTracings.csv")
    rows = []
    for name in sorted(echonet.read_file_list(root / "FileList.csv")):
        frames = tracings.get(name, {})
        if len(frames) < 2:
            continue
        video = echonet.read_video(root / "Videos" / f"{name}.avi")
        ed, es = echonet.ed_es_frames(frames)
        traces = [frames[ed], frames[es]]
        kept, action = {}, {}
        try:
            kept["unvalidated"], action["unvalidated"] = cone.cone_mask(video), "applied"
        except ValueError:
            kept["unvalidated"], action["unvalidated"] = None, "no sector: skipped"
        labelled = np.stack([echonet.trace_mask(t, video.shape[1:]) for t in traces])
        _, report = cone.clear_outside_sector(video, labelled)
        kept["validated"], action["validated"] = report.kept, report.action
        _, report = echonet.clear_video(video, traces, where=name)
        kept["builder"], action["builder"] = report.kept, report.action
        for phase, fr, trace in (("ED", ed, frames[ed]), ("ES", es, frames[es])):
            frame = video[fr]
            lv = echonet.trace_mask(trace, frame.shape) > 0
            band = lv_band(lv)
            zeroed = {m: None if k is None else _fractions(frame, k, band)
                      for m, k in kept.items()}
            sig = frame > cone.SIGNAL_LEVEL
            rows.append(Row(name, phase, fr, int(sig.sum()), int((sig & band).sum()),
                            zeroed, dict(action)))
            if png_dir is not None:
                _picture(Path(png_dir) / f"{name}_{phase}.png", frame, lv, band, kept)
    return rows


def _picture(path: Path, frame, lv, band, kept) -> None:
    """Original | each method's output, zeroed signal in red, LV outline green, x3."""
    path.parent.mkdir(parents=True, exist_ok=True)
    sig = frame > cone.SIGNAL_LEVEL
    outline = lv & ~ndimage.binary_erosion(lv)
    panels = [cv2.cvtColor(frame, cv2.COLOR_GRAY2BGR)]
    for m in METHODS:
        k = kept[m] if kept[m] is not None else np.zeros_like(lv)
        p = cv2.cvtColor(np.where(k, frame, 0).astype(np.uint8), cv2.COLOR_GRAY2BGR)
        p[sig & ~k] = (0, 0, 255)
        p[outline] = (0, 255, 0)
        panels.append(p)
    sep = np.full((frame.shape[0], 2, 3), 255, np.uint8)
    out = np.concatenate(sum(([p, sep] for p in panels), [])[:-1], 1)
    cv2.imwrite(str(path), cv2.resize(out, None, fx=3, fy=3, interpolation=cv2.INTER_NEAREST))


def table(rows: list[Row]) -> str:
    def pct(v):
        return "skipped" if v is None else f"{100 * v:.2f}"
    head = ("| video | frame | signal px | " + " | ".join(
        f"{m}: all % | {m}: LV band %" for m in METHODS) + " | validated: action | builder: action |")
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    for r in rows:
        cells = []
        for m in METHODS:
            z = r.zeroed[m]
            cells += [pct(None if z is None else z[0]), pct(None if z is None else z[1])]
        lines.append(f"| {r.video} | {r.phase} ({r.frame}) | {r.signal} | "
                     + " | ".join(cells) + f" | {r.action['validated']} | {r.action['builder']} |")
    return "\n".join(lines)


def misses(rows: list[Row], methods=("validated", "builder")) -> list[str]:
    out = []
    for r in rows:
        for m in methods:
            overall, band = r.zeroed[m]
            if overall > MAX_OVERALL or band > MAX_BAND:
                out.append(f"{r.video} {r.phase} {m}: {100 * overall:.2f}% overall, "
                           f"{100 * band:.2f}% in the LV band")
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--root", type=Path, default=Path("../shared/real_samples/echonet_dynamic"),
                        help="EchoNet-Dynamic release folder (FileList.csv, VolumeTracings.csv, "
                             "Videos/)")
    parser.add_argument("--png_dir", type=Path, default=None,
                        help="also write one picture per traced frame here")
    args = parser.parse_args(argv)
    rows = measure(args.root, args.png_dir)
    print(table(rows))
    missed = misses(rows)
    print(f"\ntargets (<= {100 * MAX_OVERALL:.0f}% overall, <= {100 * MAX_BAND:.0f}% in the "
          f"{BAND_PX}-pixel LV band) for 'validated' and 'builder': "
          + ("met on every frame" if not missed else "MISSED on " + "; ".join(missed)))
    return 1 if missed else 0


if __name__ == "__main__":
    sys.exit(main())
