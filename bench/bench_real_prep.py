"""Per-example preparation time of the camus, echonet_dynamic and unity_imaging
builders on full-size phantom files, and the implied time for the full datasets.

    python bench/bench_real_prep.py [--examples 16]

Fixtures at real sizes: CAMUS frames 778 x 549 NIfTI; EchoNet 112 x 112 MJPG AVIs of
~180 frames; Unity 600 x 800 RGB PNGs with 3 frames per video in png-cache.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path
from unittest import mock

import tensorflow_datasets as tfds

import tfds_builders  # noqa: F401
from tfds_builders import make_dummy_data as mdd

# Examples in the full datasets: CAMUS 500 patients x 4; EchoNet ~10,024 traced videos
# x 2; Unity: per 1,000 kept frames (the count depends on the release).
FULL_SIZE = {"camus": 2000, "echonet_dynamic": 2 * 10024, "unity_imaging": 1000}


def _time(name: str, manual: Path, resolution: int) -> tuple[int, float]:
    data = Path(tempfile.mkdtemp())
    builder = tfds.builder(f"{name}/{resolution}", data_dir=str(data))
    t = time.perf_counter()
    builder.download_and_prepare(
        download_config=tfds.download.DownloadConfig(manual_dir=str(manual)))
    return builder.info.splits.total_num_examples, time.perf_counter() - t


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--resolution", type=int, default=256)
    p.add_argument("--patients", type=int, default=8)
    args = p.parse_args()
    tmp = Path(tempfile.mkdtemp())
    patients = tuple((f"patient{i + 1:04d}", ("train", "validation", "test")[min(i, 2)])
                     for i in range(args.patients))
    with mock.patch.object(mdd, "CAMUS_SHAPE", (778, 549)):
        mdd.write_camus(tmp / "camus", patients=patients)
    phases = tuple(0.5 + 0.5 * __import__("math").cos(k / 30 * 6.28) for k in range(180))
    videos = tuple((f"0X2B{i:013d}", ("TRAIN", "VAL", "TEST")[min(i, 2)], True, "es_first")
                   for i in range(args.patients))
    with mock.patch.multiple(mdd, ECHONET_SHAPE=(112, 112), ECHONET_PHASES=phases,
                             ECHONET_ED=0, ECHONET_ES=15):
        mdd.write_echonet(tmp / "echonet_dynamic", videos=videos)
    frames = tuple((k, s, f, "2CH", ph, "lv lvm la")
                   for k, s in (("a", "train"), ("b", "validation"), ("c", "test"))
                   for f, ph in ((3, "ED"), (9, "ES"), (15, 0.5)))
    with mock.patch.object(mdd, "UNITY_SHAPE", (600, 800)):
        mdd.write_unity(tmp / "unity_imaging", frames=frames)
    print("| builder | examples | seconds | ms/example | full dataset (examples) | est. time |")
    print("|---|---|---|---|---|---|")
    for name in ("camus", "echonet_dynamic", "unity_imaging"):
        n, sec = _time(name, tmp / name, args.resolution)
        per = sec / n
        full = FULL_SIZE[name]
        print(f"| {name} | {n} | {sec:.2f} | {1000 * per:.0f} | {full} | "
              f"{full * per / 60:.1f} min |")


if __name__ == "__main__":
    main()
