"""Forward-pass time of each architecture at its reference ("paper") size.

    .venv/bin/python bench/forward.py [--size 256] [--batch 8] [--repeats 3] [--dtype float32]

Eval mode (BatchNorm running statistics), jitted with XLA optimisations on, random
weights. Prints compile time and the median wall time of ``--repeats`` forward passes.
On a shared CPU the times depend on what else runs: the 1-minute load average before
and after each model is printed beside its time.
"""

from __future__ import annotations

import argparse
import os
import time

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from echojax import models


def time_forward(name: str, *, size: int, batch: int, repeats: int, dtype) -> dict:
    model = models.create(name, impl=models.resolve_impl("auto"), rngs=nnx.Rngs(0), dtype=dtype,
                          **models.PRESETS[name]["paper"])
    model.eval()
    graphdef, state = nnx.split(model)
    n_params = sum(int(np.prod(p.shape)) for p in jax.tree.leaves(nnx.state(model, nnx.Param)))

    @jax.jit
    def forward(state, x):
        return nnx.merge(graphdef, state)(x)

    x = jax.random.normal(jax.random.key(0), (batch, size, size, 1), jnp.float32)
    load_before = os.getloadavg()[0]
    start = time.perf_counter()
    forward(state, x).block_until_ready()
    compile_s = time.perf_counter() - start
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        forward(state, x).block_until_ready()
        times.append(time.perf_counter() - start)
    return dict(name=name, params=n_params, compile_s=compile_s, forward_s=float(np.median(times)),
                load=(load_before, os.getloadavg()[0]))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    parser.add_argument("--models", nargs="*", default=list(models.ARCHITECTURES))
    args = parser.parse_args()
    dtype = jnp.dtype(args.dtype)
    print(f"jax {jax.__version__}, {jax.devices()[0].device_kind}, {os.cpu_count()} CPUs, "
          f"batch {args.batch} x {args.size}x{args.size}x1, compute {args.dtype}, "
          f"median of {args.repeats}")
    print(f"{'architecture':<16} {'params':>11} {'compile s':>10} {'forward s':>10} "
          f"{'images/s':>9} {'load avg':>11}")
    for name in args.models:
        r = time_forward(name, size=args.size, batch=args.batch, repeats=args.repeats, dtype=dtype)
        print(f"{r['name']:<16} {r['params']:>11,d} {r['compile_s']:>10.1f} {r['forward_s']:>10.2f} "
              f"{args.batch / r['forward_s']:>9.2f} {r['load'][0]:>5.1f}-{r['load'][1]:<5.1f}",
              flush=True)


if __name__ == "__main__":
    main()
