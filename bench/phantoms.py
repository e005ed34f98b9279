"""Phantom speed: ms per 256x256 example (image + mask) per style, and seconds to
prepare 1,000 examples into TFDS array_record files.

    python bench/phantoms.py [--resolution 256] [--examples 1000]
"""

from __future__ import annotations

import argparse
import tempfile
import time

from echojax import phantoms


def _ms_per_example(style: str, resolution: int, subjects: int) -> tuple[float, float]:
    """(wall, CPU) milliseconds per example; CPU time is less sensitive to a busy host."""
    phantoms.generate_subject(style, 0, resolution=resolution)  # warm caches
    n, t, c = 0, time.perf_counter(), time.process_time()
    for i in range(subjects):
        n += len(phantoms.generate_subject(style, i, resolution=resolution))
    return 1000 * (time.perf_counter() - t) / n, 1000 * (time.process_time() - c) / n


def _prepare_seconds(resolution: int, examples: int) -> tuple[tuple[float, float], int]:
    import tensorflow_datasets as tfds

    from tfds_builders.synthetic_echo import synthetic_echo_dataset_builder as seb

    subjects = -(-examples // phantoms.STYLES["camus_like"].examples_per_subject)
    cfg = seb.SyntheticEchoConfig(name=f"bench_{resolution}", style="camus_like",
                                  resolution=resolution, num_subjects=subjects)
    with tempfile.TemporaryDirectory() as d:
        b = tfds.builder("synthetic_echo", config=cfg, data_dir=d, file_format="array_record")
        t, c = time.perf_counter(), time.process_time()
        b.download_and_prepare()
        dt, dc = time.perf_counter() - t, time.process_time() - c
        n = sum(s.num_examples for s in b.info.splits.values())
    return (dt, dc), n


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--resolution", type=int, default=256)
    p.add_argument("--examples", type=int, default=1000)
    p.add_argument("--subjects", type=int, default=50, help="subjects timed per style")
    args = p.parse_args()
    rows = [(s, _ms_per_example(s, args.resolution, args.subjects)) for s in phantoms.STYLES]
    (secs, cpu), n = _prepare_seconds(args.resolution, args.examples)
    r = args.resolution
    print(f"\n| what ({r}x{r}) | wall | CPU |\n| --- | ---: | ---: |")
    for style, (ms, cpu_ms) in rows:
        print(f"| {style}: ms per example (image + mask) | {ms:.2f} | {cpu_ms:.2f} |")
    print(f"| TFDS array_record preparation of {n} camus_like examples: s "
          f"| {secs:.1f} | {cpu:.1f} |")


if __name__ == "__main__":
    main()
