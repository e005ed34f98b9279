"""Train-step time for each partial-label loss, with label dropout off and on.

The paper (Islam et al., MELBA 2026) found no meaningful difference in epoch time
between the losses; the target here is a spread (slowest / fastest - 1) within 5%.
One step = forward, loss, backward, SGD (Nesterov) update, BatchNorm in train mode; with
label dropout the step also draws the dropout of LVM and LA (rate 0.5) on device, as the
training engine does. Variants run in alternation (``--rounds`` rounds of ``--steps``
steps) so that machine load hits all of them alike; medians.

  python bench/losses.py                       # U-Net "cpu" preset, 128x128, batch 8
  python bench/losses.py --arch attention_unet --resolution 64 --rounds 8
"""

from __future__ import annotations

import argparse
import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from echojax import losses, models


def make_step(arch, preset, batch, res, *, loss_name, dropout):
    model = models.create(arch, impl="cpu", rngs=nnx.Rngs(0), **models.PRESETS[arch][preset])
    model.train()
    graphdef, params, rest = nnx.split(model, nnx.Param, ...)
    tx = optax.sgd(1e-3, momentum=0.9, nesterov=True)
    loss_fn = losses.LOSSES[loss_name]
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.standard_normal((batch, res, res, 1), dtype=np.float32))
    y = jnp.asarray(rng.integers(0, 4, (batch, res, res)), jnp.int32)
    mask = jnp.ones((batch, 4), bool)

    def step_fn(state, key):
        params, rest, opt_state = state
        labels, label_mask = y, mask
        if dropout:
            labels, label_mask = losses.label_dropout(key, y, mask, rate=0.5, classes=("lvm", "la"))

        def objective(p):
            m = nnx.merge(graphdef, p, rest, copy=True)
            logits = m(x).astype(jnp.float32)
            return loss_fn(logits, labels, label_mask), nnx.state(m, nnx.Not(nnx.Param))

        (loss, rest), grads = jax.value_and_grad(objective, has_aux=True)(params)
        updates, opt_state = tx.update(grads, opt_state, params)
        return (optax.apply_updates(params, updates), rest, opt_state), loss

    state = (params, rest, tx.init(params))
    key = jax.random.key(0)
    jitted = jax.jit(step_fn, donate_argnums=(0,)).lower(state, key).compile()
    box = [state, 0]

    def step():
        box[1] += 1
        box[0], loss = jitted(box[0], jax.random.fold_in(key, box[1]))
        loss.block_until_ready()

    return step


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--arch", default="unet", choices=models.ARCHITECTURES)
    p.add_argument("--preset", default="cpu")
    p.add_argument("--resolution", type=int, default=128)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--rounds", type=int, default=6)
    p.add_argument("--steps", type=int, default=3)
    p.add_argument("--warmup", type=int, default=2)
    args = p.parse_args(argv)

    runners = {}
    for name in losses.LOSSES:
        for dropout in (False, True):
            runners[(name, dropout)] = make_step(args.arch, args.preset, args.batch, args.resolution,
                                                 loss_name=name, dropout=dropout)
    for step in runners.values():
        for _ in range(args.warmup):
            step()
    times = {k: [] for k in runners}
    for _ in range(args.rounds):
        for k, step in runners.items():
            for _ in range(args.steps):
                t0 = time.perf_counter()
                step()
                times[k].append(time.perf_counter() - t0)
    med = {k: statistics.median(v) for k, v in times.items()}
    fastest = min(med.values())
    print(f"# {args.arch} ({args.preset}) {args.resolution}x{args.resolution} batch {args.batch}, "
          f"jax {jax.__version__} on {jax.device_count()} {jax.devices()[0].platform} device(s); "
          f"{args.rounds} rounds x {args.steps} steps, medians")
    print("| loss | label dropout | ms/step | images/s | vs fastest |")
    print("|---|---|---:|---:|---:|")
    for (name, dropout), t in med.items():
        print(f"| {name} | {'on (0.5)' if dropout else 'off'} | {t * 1e3:.1f} | "
              f"{args.batch / t:.1f} | {t / fastest:.3f} |")
    print(f"spread (slowest / fastest - 1): {100 * (max(med.values()) / fastest - 1):.1f}%")


if __name__ == "__main__":
    main()
