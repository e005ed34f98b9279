"""Training throughput (images/s) of the engine's jitted train step, and resume time.

Times ``echojax.train.Engine.train_step`` (augmentation, label dropout, U-Net forward and
backward, SGD update, all on device) on random batches already on device, so the number
is the compute side of training; the input pipeline has its own bench
(``bench/input_pipeline.py``). Resume cost: the time to save and to restore the full
train state (``Checkpoints.save`` / ``restore``); a resumed process pays that plus
start-up and the first step's compilation (``compile_s``).

    python bench/train_throughput.py [--sizes 64 128] [--batch 8] [--steps 20] [--preset cpu]

Prints a table. XLA optimisations are on (as in real runs).
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time

import jax
import jax.numpy as jnp
import numpy as np

from echojax.checkpoint import Checkpoints, abstract
from echojax.config import Config, LossConfig, ModelConfig, Source
from echojax.train import Engine


def _batch(engine, rng, batch, res):
    local = {
        "image": rng.integers(0, 256, (batch, res, res, 1), dtype=np.uint8),
        "segmentation": rng.integers(0, 4, (batch, res, res), dtype=np.uint8),
        "label_mask": np.ones((batch, 4), bool),
    }
    return engine.global_batch(local)


def measure(res: int, batch: int, steps: int, preset: str, workdir: str) -> dict:
    config = Config(sources=(Source(f"synthetic_echo/camus_like_{res}", alias="camus"),),
                    resolution=res, batch_size=batch, eval_batch_size=batch,
                    model=ModelConfig(name="unet", size=preset),
                    loss=LossConfig(name="acce", dropout_rate=0.5, dropout_classes=("la",)))
    engine = Engine(config, total_steps=1000)
    n_params = sum(x.size for x in jax.tree.leaves(engine.initial_state["params"]))
    rng = np.random.default_rng(0)
    batches = [_batch(engine, rng, batch, res) for _ in range(4)]
    rate = jax.device_put(jnp.float32(0.5), engine.replicated)
    state = engine.initial_state
    t0 = time.perf_counter()
    state, m = engine.train_step(state, batches[0], rate)
    jax.block_until_ready(m)
    compile_s = time.perf_counter() - t0
    for i in range(2):  # warm-up
        state, m = engine.train_step(state, batches[i % 4], rate)
    jax.block_until_ready(m)
    t0 = time.perf_counter()
    for i in range(steps):
        state, m = engine.train_step(state, batches[i % 4], rate)
    jax.block_until_ready(m)
    step_s = (time.perf_counter() - t0) / steps

    ckpt = Checkpoints(os.path.join(workdir, f"ckpt_{res}"))
    t0 = time.perf_counter()
    ckpt.save(1, state, None, val_fg_dice=0.0)
    save_s = time.perf_counter() - t0
    target = abstract(state)
    t0 = time.perf_counter()
    restored = ckpt.restore(1, target)
    jax.block_until_ready(restored)
    restore_s = time.perf_counter() - t0
    ckpt.close()
    return dict(res=res, batch=batch, params=n_params, compile_s=compile_s,
                step_ms=1000 * step_s, img_s=batch / step_s, save_s=save_s, restore_s=restore_s)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[64, 128])
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--preset", default="cpu")
    args = parser.parse_args()
    print(f"devices: {jax.device_count()} x {jax.devices()[0].device_kind}, "
          f"U-Net preset {args.preset!r}, acce + LA dropout, default augmentation")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for res in args.sizes:
            rows.append(measure(res, args.batch, args.steps, args.preset, tmp))
    head = ("res", "batch", "params", "compile_s", "step_ms", "img_s", "save_s", "restore_s")
    print(" | ".join(f"{h:>9}" for h in head))
    for r in rows:
        print(" | ".join(f"{r[h]:>9.3g}" if isinstance(r[h], float) else f"{r[h]:>9}" for h in head))


if __name__ == "__main__":
    main()
