"""Is the input pipeline ever the bottleneck? The training loop's step time against the
bare compiled step, alternated in one process (issue 8: within 5%).

Two measurements of the same compiled train step (``echojax.train``; U-Net at the
``cpu`` preset, acce with label dropout of LA at rate 0.5, default on-device
augmentation, batch 8) on a ``synthetic_echo`` phantom:

- ``loop``: ``train_and_evaluate`` itself, in a fresh workdir: grain reading and
  batching the mixture, host -> device transfer, augmentation and label dropout on
  device, the metrics fetched and written to ``metrics.jsonl`` every ``log_every``
  steps. Its step times come from the moments the loop writes its train rows (each
  right after the loop's fetch of the interval's metrics, so the device has finished
  those steps); the start-up before the first row and the evaluation and checkpoint
  after the last are left out.
- ``bare``: ``Engine.train_step`` called back to back on one batch already on the
  device, ``log_every`` steps then a fetch of the metrics (as the loop does), run right
  after each row the loop writes (``_Interleaved``), so the two alternate every
  ``log_every`` steps and share the machine's load of that moment.

Per round (one real run), the ratio loop / bare of each adjacent pair of intervals and
their median; the table gives per dataset the median step times over all intervals of
all rounds, the median of the rounds' ratios and their range (the machine is shared:
the spread says how far to trust one number). CPU ms/step is this process's CPU time
(all threads: XLA's and grain's) per step; the loop's includes the input pipeline,
whose own cost is measured alone in the last column. Target: ratio <= 1.05.

    .venv/bin/python bench/train_loop.py [--datasets camus_like_64 camus_like_128]
        [--data_dir /tmp/echojax_bench_tfds] [--rounds 3] [--loop_steps 100]

Datasets are prepared in ``--data_dir`` on first use (seconds to a minute).
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import io
import os
import statistics
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

import jax  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow_datasets as tfds  # noqa: E402

import tfds_builders  # noqa: E402,F401  registers synthetic_echo
from echojax import train  # noqa: E402
from echojax.config import Config, LossConfig, ModelConfig, Source  # noqa: E402


def make_config(name: str, data_dir: str, *, batch_size: int, loop_steps: int,
                log_every: int, num_workers: int) -> Config:
    """The timed run: the whole train split of ``name``, ``loop_steps`` rounded up to
    whole epochs, evaluated (and checkpointed) once, at the end."""
    resolution = tfds.builder(name, data_dir=data_dir).info.features["image"].shape[0]
    config = Config(sources=(Source(name, alias="camus"),), resolution=resolution,
                    data_dir=data_dir, model=ModelConfig(name="unet", size="cpu"),
                    loss=LossConfig(name="acce", dropout_rate=0.5, dropout_classes=("la",)),
                    batch_size=batch_size, eval_batch_size=batch_size, log_every=log_every,
                    num_workers=num_workers)
    steps_per_epoch = len(train.train_mixture(config)) // batch_size
    epochs = -(-loop_steps // steps_per_epoch)
    return dataclasses.replace(config, epochs=epochs, eval_every=epochs)


class _Interleaved:
    """Wraps ``MetricsLog.write`` so that each train row the loop writes (right after its
    device -> host fetch of the interval's metrics: the device is idle) is timestamped
    and followed by ``every`` bare steps, timed on their own; the loop then resumes.

    Loop interval k runs from the end of the bare block after row k to row k + 1, bare
    interval k is that bare block (pairs: bare k, then loop k): the two alternate every
    ``every`` steps, so a change
    in the machine's load hits both alike. (While the bare block runs, grain's threads
    may fill their read-ahead buffer, at most ``prefetch_batches`` batches of the next
    interval: ~1 ms of host work each here, against seconds per interval.)
    """

    def __init__(self, engine: train.Engine, state, batch, *, every: int, last_step: int):
        self.engine, self.state, self.batch = engine, state, batch
        self.every, self.last_step = every, last_step
        self.loop: list[tuple[float, float]] = []  # (wall, CPU) seconds per step
        self.bare: list[tuple[float, float]] = []
        self._write = train.MetricsLog.write
        self._resumed: tuple[int, float, float] | None = None  # (step, wall, CPU)

    def _row_written(self, step: int) -> None:
        wall, cpu = time.perf_counter(), time.process_time()
        if self._resumed is not None:
            s0, w0, c0 = self._resumed
            self.loop.append(((wall - w0) / (step - s0), (cpu - c0) / (step - s0)))
        if step >= self.last_step:
            return
        for _ in range(self.every):
            self.state, m = self.engine.train_step(self.state, self.batch)
        jax.device_get(m)  # the loop's sync: fetch the metrics
        w1, c1 = time.perf_counter(), time.process_time()
        self.bare.append(((w1 - wall) / self.every, (c1 - cpu) / self.every))
        self._resumed = (step, time.perf_counter(), time.process_time())

    def __enter__(self):
        clock = self

        def write(log, row):
            clock._write(log, row)
            if "train_loss" in row:
                clock._row_written(row["step"])

        train.MetricsLog.write = write
        return self

    def __exit__(self, *exc):
        train.MetricsLog.write = self._write


def host_input_ms(engine: train.Engine, config: Config, batches: int = 50) -> float:
    """Host CPU ms per step of the loop's input work alone: grain (read, decode, mixture,
    batching) and the host -> device batch, as the loop does it, no training."""
    it = iter(train.pipeline.train_dataset(train.train_mixture(config),
                                           batch_size=config.batch_size, seed=2))
    for _ in range(5):  # warm up: open files, start threads
        next(it)
    cpu = time.process_time()
    for _ in range(batches):
        local = next(it)
        batch = engine.global_batch(
            {k: np.asarray(local[k]) for k in ("image", "segmentation", "label_mask")})
    jax.block_until_ready(batch)
    return 1e3 * (time.process_time() - cpu) / batches


def measure(name: str, args, tmp: str) -> dict:
    config = make_config(name, args.data_dir, batch_size=args.batch_size,
                         loop_steps=args.loop_steps, log_every=args.log_every,
                         num_workers=args.num_workers)
    total_steps = config.epochs * (len(train.train_mixture(config)) // config.batch_size)
    engine = train.Engine(config, total_steps)
    loader = train.pipeline.train_dataset(train.train_mixture(config),
                                          batch_size=config.batch_size, seed=1)
    local = next(iter(loader))
    batch = engine.global_batch(
        {k: np.asarray(local[k]) for k in ("image", "segmentation", "label_mask")})
    state = jax.tree.map(lambda x: x.copy(), engine.initial_state)
    for _ in range(3):  # compile and warm up
        state, m = engine.train_step(state, batch)
    jax.device_get(m)
    loop, bare, ratios = [], [], []
    for r in range(args.rounds):
        with _Interleaved(engine, state, batch, every=args.log_every,
                          last_step=total_steps) as clock, \
                contextlib.redirect_stdout(io.StringIO()):
            train.train_and_evaluate(config, os.path.join(tmp, f"{name.replace('/', '_')}_{r}"))
        state = clock.state
        pairs = [lw / bw for (lw, _), (bw, _) in zip(clock.loop, clock.bare)]
        loop += clock.loop
        bare += clock.bare
        ratios.append(statistics.median(pairs))
        print(f"#   {name} round {r + 1}: {len(pairs)} pairs of {args.log_every} steps, "
              f"bare {1e3 * statistics.median(w for w, _ in clock.bare):.1f} ms/step, loop "
              f"{1e3 * statistics.median(w for w, _ in clock.loop):.1f} ms/step, median "
              f"pair ratio {ratios[-1]:.3f} (pairs {min(pairs):.3f}-{max(pairs):.3f}), "
              f"load {os.getloadavg()[0]:.2f}", flush=True)
    med = lambda xs, i: 1e3 * statistics.median(x[i] for x in xs)  # noqa: E731
    return dict(dataset=name, steps=total_steps, input_cpu=host_input_ms(engine, config),
                bare_ms=med(bare, 0), loop_ms=med(loop, 0),
                bare_cpu=med(bare, 1), loop_cpu=med(loop, 1), ratio=statistics.median(ratios),
                lo=min(ratios), hi=max(ratios))


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--datasets", nargs="+", default=["camus_like_64", "camus_like_128"],
                        help="synthetic_echo configs")
    parser.add_argument("--data_dir", default="/tmp/echojax_bench_tfds")
    parser.add_argument("--batch_size", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--loop_steps", type=int, default=100,
                        help="training steps per loop run (rounded up to whole epochs)")
    parser.add_argument("--log_every", type=int, default=10)
    parser.add_argument("--num_workers", type=int, default=0, help="grain worker processes")
    args = parser.parse_args()
    names = [f"synthetic_echo/{d}" for d in args.datasets]
    for name in names:
        tfds.builder(name, data_dir=args.data_dir).download_and_prepare(
            file_format="array_record")
    print(f"# {os.cpu_count()} CPU cores, jax {jax.__version__}, {jax.device_count()} x "
          f"{jax.devices()[0].device_kind}; U-Net cpu preset, acce + LA dropout 0.5, batch "
          f"{args.batch_size}, log_every {args.log_every}, grain workers {args.num_workers}; "
          f"load average at start {os.getloadavg()[0]:.2f}", flush=True)
    rows = []
    with tempfile.TemporaryDirectory(prefix="train_loop_") as tmp:
        for name in names:
            rows.append(measure(name, args, tmp))
    print(f"# load average at the end {os.getloadavg()[0]:.2f}")
    print("| dataset | steps/run | bare ms/step | loop ms/step | loop / bare (rounds) "
          "| bare CPU ms/step | loop CPU ms/step | input alone CPU ms/step |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {r['dataset']} | {r['steps']} | {r['bare_ms']:.1f} | {r['loop_ms']:.1f} "
              f"| {r['ratio']:.3f} ({r['lo']:.3f}-{r['hi']:.3f}) | {r['bare_cpu']:.1f} "
              f"| {r['loop_cpu']:.1f} | {r['input_cpu']:.2f} |")


if __name__ == "__main__":
    main()
