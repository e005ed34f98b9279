"""EF from masks rasterised from the EchoNet-Dynamic tracings vs FileList.csv's EF.

For each video with traced ED and ES frames, prints: EF from the discs on the tracing
chords themselves (the tracing's own method of discs), EF from the method of discs
(``echojax.biomarkers``, unit spacing) on the builder's LV masks with the principal
axis (the old rule) and the apex-to-base axis (the new default), the same on masks
rasterised at the exact (unrounded) polygon vertices, and FileList.csv's EF; then the
mean absolute difference of each column from FileList.csv, and the same for other disc
counts, and the volumes of each traced frame against the chords' volume (all in
pixel units) with the area of the masks against the polygon's.

    PYTHONPATH=$PWD python bench/ef_accuracy.py [--root ../shared/real_samples/echonet_dynamic]
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path

import numpy as np
import skimage.draw

from echojax import biomarkers
from tfds_builders.echonet_dynamic import echonet_dynamic_dataset_builder as echonet

DEFAULT_ROOT = Path(__file__).resolve().parents[1] / ".." / "shared" / "real_samples" / "echonet_dynamic"


def chord_volume(trace: np.ndarray) -> float:
    """Discs on the tracing: first row the long axis, the others the disc diameters."""
    x1, y1, x2, y2 = trace.T
    length = math.hypot(x2[0] - x1[0], y2[0] - y1[0])
    d = np.hypot(x2[1:] - x1[1:], y2[1:] - y1[1:])
    return math.pi / 4 * float(np.sum(d * d)) * length / len(d)


def exact_mask(trace: np.ndarray, shape) -> np.ndarray:
    """Pixels whose centres lie inside the polygon at its unrounded vertices."""
    x, y = echonet.trace_polygon(trace)
    rr, cc = skimage.draw.polygon(y, x, shape)
    mask = np.zeros(shape, bool)
    mask[rr, cc] = True
    return mask


def builder_mask(trace: np.ndarray, shape) -> np.ndarray:
    return echonet.trace_mask(trace, shape).astype(bool)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--root", type=Path, default=DEFAULT_ROOT,
                        help="folder with FileList.csv, VolumeTracings.csv (default: %(default)s)")
    args = parser.parse_args()
    files = echonet.read_file_list(args.root / "FileList.csv")
    tracings = echonet.read_tracings(args.root / "VolumeTracings.csv")
    shape = (112, 112)

    def mask_ef(rasterise, frames, ed, es, long_axis, num_discs=biomarkers.NUM_DISCS):
        return biomarkers.ef_from_masks(rasterise(frames[ed], shape), rasterise(frames[es], shape),
                                        None, long_axis=long_axis, num_discs=num_discs)

    columns = {
        "chords": lambda fr, ed, es: 100 * (1 - chord_volume(fr[es]) / chord_volume(fr[ed])),
        "old (builder, principal)": lambda fr, ed, es: mask_ef(builder_mask, fr, ed, es, "principal"),
        "new (builder, apex_base)": lambda fr, ed, es: mask_ef(builder_mask, fr, ed, es, "apex_base"),
        "exact, principal": lambda fr, ed, es: mask_ef(exact_mask, fr, ed, es, "principal"),
        "exact, apex_base": lambda fr, ed, es: mask_ef(exact_mask, fr, ed, es, "apex_base"),
    }
    names = [n for n in files if n in tracings]
    rows = {}
    for name in names:
        ed, es = echonet.ed_es_frames(tracings[name])
        rows[name] = {k: f(tracings[name], ed, es) for k, f in columns.items()}
    header = ["video"] + list(columns) + ["FileList"]
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    for name in names:
        print(f"| {name} | " + " | ".join(f"{rows[name][k]:.2f}" for k in columns)
              + f" | {files[name]['ef']:.2f} |")
    mae = {k: np.mean([abs(rows[n][k] - files[n]["ef"]) for n in names]) for k in columns}
    print(f"| MAE vs FileList ({len(names)} videos) | "
          + " | ".join(f"{mae[k]:.2f}" for k in columns) + " | |")

    print("\nMAE vs FileList by disc count")
    print("| masks, long axis | " + " | ".join(f"{n} discs" for n in (10, 20, 40)) + " |")
    print("|---|---|---|---|")
    for raster_name, rasterise in (("builder", builder_mask), ("exact", exact_mask)):
        for long_axis in biomarkers.LONG_AXES:
            cells = []
            for n in (10, 20, 40):
                errs = []
                for name in names:
                    ed, es = echonet.ed_es_frames(tracings[name])
                    errs.append(abs(mask_ef(rasterise, tracings[name], ed, es, long_axis, n)
                                    - files[name]["ef"]))
                cells.append(f"{np.mean(errs):.2f}")
            print(f"| {raster_name}, {long_axis} | " + " | ".join(cells) + " |")

    print("\nPer traced frame: mask vs tracing (all frames of all videos)")
    print("| masks, long axis | volume / chord volume - 1: mean | sd | "
          "mask area / polygon area - 1: mean |")
    print("|---|---|---|---|")
    for raster_name, rasterise in (("builder", builder_mask), ("exact", exact_mask)):
        for long_axis in biomarkers.LONG_AXES:
            vol, area = [], []
            for name in names:
                for trace in tracings[name].values():
                    mask = rasterise(trace, shape)
                    vol.append(biomarkers.lv_volume(mask, (1.0, 1.0), long_axis=long_axis)
                               * 1000.0 / chord_volume(trace) - 1)
                    area.append(mask.sum() / echonet.polygon_area(*echonet.trace_polygon(trace)) - 1)
            print(f"| {raster_name}, {long_axis} | {100 * np.mean(vol):+.1f} % | "
                  f"{100 * np.std(vol):.1f} % | {100 * np.mean(area):+.1f} % |")


if __name__ == "__main__":
    main()
