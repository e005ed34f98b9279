"""Input pipeline throughput at 256x256: TFDS read+decode, mixture+batching, augmentation.

Prints a table of images/s. The target (issue 6) is >= 2,000 images/s delivered to the
host on 2 CPU cores, so that the input never limits training.

  .venv/bin/python bench/input_pipeline.py [--dataset synthetic_echo/camus_like_256]
      [--data_dir /tmp/echojax_bench_tfds] [--batch_size 32] [--batches 40]

The dataset is prepared in ``--data_dir`` on first use. Without the synthetic_echo
builder the tests' ``tiny_echo/r256_n512`` fixture is used (same feature format).
"""

from __future__ import annotations

import argparse
import itertools
import os
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow_datasets as tfds  # noqa: E402

from echojax.augment import AugmentConfig, augment_batch  # noqa: E402
from echojax.data import pipeline  # noqa: E402
from echojax.data.mixture import Mixture, Removal, Source  # noqa: E402


def _prepare(name: str, data_dir: str) -> str:
    try:
        import tfds_builders  # noqa: F401
        builder = tfds.builder(name, data_dir=data_dir)
    except Exception as e:  # builder not available: fall back to the test fixture
        from tests.fixtures import tiny_echo  # noqa: F401  registers tiny_echo
        print(f"# {name} unavailable ({type(e).__name__}); using tiny_echo/r256_n512")
        name = "tiny_echo/r256_n512"
        builder = tfds.builder(name, data_dir=data_dir)
    if not builder.is_prepared():
        print(f"# preparing {name} in {data_dir}")
        builder.download_and_prepare(file_format="array_record")
    return name


class _Clock:
    """Wall and process CPU time (all threads of this process; not worker processes).

    On a shared machine wall time depends on the other load; images per CPU-second
    do much less, and 2 cores can deliver up to twice that rate.
    """

    def __enter__(self):
        self.wall, self.cpu = time.perf_counter(), time.process_time()
        return self

    def __exit__(self, *exc):
        self.wall = time.perf_counter() - self.wall
        self.cpu = time.process_time() - self.cpu


def bench_decode(name, data_dir, n, *, fast):
    mix = Mixture([Source(name, "bench")], "train", data_dir=data_dir, seed=0)
    read = mix._reader(0)
    if not fast:
        read = tfds.builder(name, data_dir=data_dir).as_data_source(split="train").__getitem__
    n = min(n, len(mix))
    read(0)
    with _Clock() as clock:
        for i in range(n):
            read(i)
    return n, clock


def bench_loader(mix, batch_size, batches, *, num_threads, worker_count):
    it = iter(pipeline.train_dataset(mix, batch_size=batch_size, seed=0, process_index=0,
                                     process_count=1, num_threads=num_threads,
                                     worker_count=worker_count, prefetch_batches=8))
    for _ in itertools.islice(it, 3):  # warm up: open files, start threads/workers
        pass
    with _Clock() as clock:
        for batch in itertools.islice(it, batches):
            assert batch["image"].shape[0] == batch_size
    if worker_count:
        clock.cpu = float("nan")  # the work happens in the workers
    return batches * batch_size, clock


def bench_augment(batch_size, resolution, steps, cfg):
    fn = jax.jit(augment_batch, static_argnames="cfg")
    rng = np.random.default_rng(0)
    images = jnp.asarray(rng.uniform(0, 1, (batch_size, resolution, resolution, 1)), jnp.float32)
    labels = jnp.asarray(rng.integers(0, 4, (batch_size, resolution, resolution)), jnp.int32)
    jax.block_until_ready(fn(jax.random.key(0), images, labels, cfg))
    with _Clock() as clock:
        for s in range(steps):
            out = fn(jax.random.key(s), images, labels, cfg)
        jax.block_until_ready(out)
    return steps * batch_size, clock


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", default="synthetic_echo/camus_like_256")
    parser.add_argument("--data_dir", default="/tmp/echojax_bench_tfds")
    parser.add_argument("--batch_size", type=int, default=32)
    parser.add_argument("--batches", type=int, default=40)
    args = parser.parse_args()

    name = _prepare(args.dataset, args.data_dir)
    mix = Mixture([Source(name, "bench", removals=(Removal(("lvm",), 0.5),))], "train",
                  data_dir=args.data_dir, seed=0)
    r = mix.resolution
    print(f"# {mix!r}, {r}x{r}, batch {args.batch_size}, {os.cpu_count()} CPU cores, "
          f"jax {jax.__version__} on {jax.devices()[0].platform}, "
          f"load average {os.getloadavg()[0]:.1f}")
    rows = [("read + decode, TFDS decoder", *bench_decode(name, args.data_dir, 600, fast=False)),
            ("read + decode, echojax decoder", *bench_decode(name, args.data_dir, 600, fast=True))]
    for threads in (1, 2, 4):
        rows.append((f"mixture + batching, {threads} thread(s)",
                     *bench_loader(mix, args.batch_size, args.batches, num_threads=threads,
                                   worker_count=0)))
    rows.append(("mixture + batching, 2 worker processes",
                 *bench_loader(mix, args.batch_size, args.batches, num_threads=2, worker_count=2)))
    print(f"# load average after the loaders: {os.getloadavg()[0]:.1f}")
    every = AugmentConfig(scale_prob=1.0, rotation_prob=1.0, blur_prob=1.0,
                          brightness_prob=1.0, contrast_prob=1.0)
    rows.append(("augment on device, default probabilities",
                 *bench_augment(args.batch_size, r, 10, AugmentConfig())))
    rows.append(("augment on device, every transform (p=1)",
                 *bench_augment(args.batch_size, r, 10, every)))
    print(f"# load average at the end: {os.getloadavg()[0]:.1f}")
    print(f"| {'stage':45s} | {'images':>7s} | {'wall s':>7s} | {'images/s':>9s} "
          f"| {'images/CPU-s':>12s} |")
    print(f"|{'-' * 47}|{'-' * 9}|{'-' * 9}|{'-' * 11}|{'-' * 14}|")
    for label, n, clock in rows:
        print(f"| {label:45s} | {n:7d} | {clock.wall:7.2f} | {n / clock.wall:9.0f} "
              f"| {n / clock.cpu:12.0f} |")


if __name__ == "__main__":
    main()
