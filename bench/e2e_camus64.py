"""End to end on phantoms: a small U-Net on ``synthetic_echo/camus_like_64`` to a
validation foreground Dice >= 0.8, through the whole engine (TFDS data source, grain
mixture, on-device augmentation, jitted SGD steps, evaluation, checkpoints), then
``echojax.evaluate`` on the test split.

    python bench/e2e_camus64.py [--data_dir DIR] [--workdir RUN] [--epochs 6]

Prepares the dataset in ``--data_dir`` if needed (seconds). Prints one row per
evaluation (epoch, step, validation Dice per class, foreground Dice, wall time) and the
test summary.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time

import tensorflow_datasets as tfds

import tfds_builders  # noqa: F401  registers synthetic_echo
from echojax import evaluate, train
from echojax.config import Config, LossConfig, ModelConfig, OptimConfig, Source

DATASET = "synthetic_echo/camus_like_64"


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data_dir", default=os.path.expanduser("~/tensorflow_datasets"))
    parser.add_argument("--workdir", default=None, help="default: a new temporary folder")
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--train_examples", type=int, default=400)
    parser.add_argument("--widths", type=int, nargs="+", default=[8, 16, 32, 64])
    parser.add_argument("--lr", type=float, default=0.05)
    args = parser.parse_args()
    t0 = time.perf_counter()
    tfds.builder(DATASET, data_dir=args.data_dir).download_and_prepare(file_format="array_record")
    print(f"dataset ready in {time.perf_counter() - t0:.1f}s")
    config = Config(
        sources=(Source(DATASET, alias="camus", train_examples=args.train_examples),),
        resolution=64, data_dir=args.data_dir,
        model=ModelConfig(name="unet", size="cpu", overrides={"widths": tuple(args.widths)}),
        loss=LossConfig(name="cce"), optim=OptimConfig(lr=args.lr),
        batch_size=8, eval_batch_size=20, epochs=args.epochs, eval_every=1, log_every=10)
    workdir = args.workdir or tempfile.mkdtemp(prefix="e2e_camus64_")
    t0 = time.perf_counter()
    result = train.train_and_evaluate(config, workdir)
    train_s = time.perf_counter() - t0
    with open(os.path.join(workdir, "metrics.jsonl")) as f:
        rows = [json.loads(line) for line in f]
    print(f"\nworkdir: {workdir}")
    print(f"{'epoch':>5} | {'step':>5} | {'dice_lv':>7} | {'dice_lvm':>8} | {'dice_la':>7} | "
          f"{'fg_dice':>7}")
    for r in rows:
        if "validation/fg_dice" in r:
            print(f"{r['epoch']:>5} | {r['step']:>5} | {r['validation/dice_lv']:>7.3f} | "
                  f"{r['validation/dice_lvm']:>8.3f} | {r['validation/dice_la']:>7.3f} | "
                  f"{r['validation/fg_dice']:>7.3f}")
    print(f"training wall time {train_s:.0f}s ({result['images_per_s']:.1f} images/s incl. "
          f"compilation and evaluation); best validation fg Dice "
          f"{result['best/val_fg_dice']:.3f} at step {result['best_step']}")
    summary = evaluate.evaluate(workdir, split="test", checkpoint="best")
    camus = summary["sources"]["camus"]
    print(f"test fg Dice {camus['fg_dice']:.3f}; " + ", ".join(
        f"{k} {v['mean']:.3f}" for k, v in camus["dice"].items())
          + f"; EF MAE (monoplane) {camus['ef']['monoplane']['mae']}")
    print("PASS" if result["best/val_fg_dice"] >= 0.8 else "FAIL: validation fg Dice < 0.8")


if __name__ == "__main__":
    main()
