"""Images/s of one training step, echojax vs PyTorch, measured side by side.

One step = forward, loss (cross entropy), backward, SGD update (Nesterov momentum 0.9),
BatchNorm in train mode. For each case both frameworks build the same architecture
(``echojax.models.create`` and its twin in ``bench/torch_models.py``; parameter counts
are printed and must be equal), then the variants run in alternation, ``--rounds``
rounds of ``--steps`` steps each after a warm-up, so that load from other processes hits
all of them alike; the table gives the median step time and the ratio to PyTorch's best
layout (contiguous NCHW or channels_last).

  python bench/train_step.py --cases unet-ref-64            # the issue's target case
  python bench/train_step.py --cases unet-128,attention_unet-128 --rounds 5
  python bench/train_step.py --jax-impls cpu,flax           # A/B of the layer implementations
  python bench/train_step.py --host-devices 2               # batch split over 2 CPU devices
  python bench/train_step.py --host-devices 1,2             # A/B: 1 and 2 CPU devices, one process
  python bench/train_step.py --device cuda --batch 32 --dtype bfloat16 --torch-compile

``--jax-impls`` names the models' layer implementations to time (``echojax.models.IMPLS``):
``cpu`` (the ``echojax.ops`` formulations for XLA:CPU, the default), ``gpu`` and ``flax``
(the plain Flax layers).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

CASES = {
    # name: (architecture, preset, resolution, batch)
    "unet-ref-64": ("unet", "paper", 64, 8),
    "attention_unet-ref-64": ("attention_unet", "paper", 64, 8),
    "unet-64": ("unet", "cpu", 64, 8),
    "attention_unet-64": ("attention_unet", "cpu", 64, 8),
    "unet-128": ("unet", "cpu", 128, 8),
    "unet-256": ("unet", "cpu", 256, 8),
    "attention_unet-128": ("attention_unet", "cpu", 128, 8),
    "attention_unet-256": ("attention_unet", "cpu", 256, 8),
    "swin_unet-256": ("swin_unet", "cpu", 256, 8),
    # Paper size (GPU).
    "unet-paper-256": ("unet", "paper", 256, 32),
    "attention_unet-paper-256": ("attention_unet", "paper", 256, 32),
    "swin_unet-paper-256": ("swin_unet", "paper", 256, 32),
    # Tiny (checks the script's logic in seconds).
    "unet-tiny-32": ("unet", "tiny", 32, 2),
    "attention_unet-tiny-32": ("attention_unet", "tiny", 32, 2),
    "swin_unet-tiny-32": ("swin_unet", "tiny", 32, 2),
}
CPU_DEFAULT = ("unet-ref-64,attention_unet-ref-64,unet-128,attention_unet-128,unet-256,"
               "attention_unet-256,swin_unet-256")


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--cases", default=CPU_DEFAULT, help=f"comma-separated, from {sorted(CASES)}")
    p.add_argument("--batch", type=int, default=None, help="override every case's batch size")
    p.add_argument("--steps", type=int, default=3, help="timed steps per variant per round")
    p.add_argument("--rounds", type=int, default=5, help="alternation rounds")
    p.add_argument("--warmup", type=int, default=2, help="untimed steps per variant first")
    p.add_argument("--jax-impls", default="cpu",
                   help="comma-separated layer implementations (echojax.models.IMPLS): cpu, gpu, flax")
    p.add_argument("--torch-formats", default="contiguous,channels_last")
    p.add_argument("--torch-compile", action="store_true", help="also time torch.compile'd models")
    p.add_argument("--no-torch", action="store_true")
    p.add_argument("--dtype", default="float32", choices=("float32", "bfloat16"),
                   help="compute dtype (parameters stay float32; PyTorch uses autocast)")
    p.add_argument("--device", default="cpu", choices=("cpu", "cuda"), help="PyTorch device")
    p.add_argument("--host-devices", default="1",
                   help="split the JAX batch over this many CPU devices (sets XLA_FLAGS); "
                        "comma-separated counts (e.g. 1,2) time each as a variant in one process")
    p.add_argument("--threads", type=int, default=None, help="PyTorch threads (default: CPU count)")
    return p.parse_args(argv)


ARGS = parse_args(sys.argv[1:])
HOST_DEVICES = tuple(int(n) for n in ARGS.host_devices.split(","))
if max(HOST_DEVICES) > 1:
    os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "")
                               + f" --xla_force_host_platform_device_count={max(HOST_DEVICES)}")

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import optax  # noqa: E402
from flax import nnx  # noqa: E402
from jax_step import make_step_fn  # noqa: E402

from echojax import losses, models  # noqa: E402

LR = 1e-3


def _count(tree) -> int:
    return sum(int(np.prod(x.shape)) for x in jax.tree.leaves(tree))


def make_jax_runner(arch, overrides, x_np, y_np, *, impl, dtype, host_devices):
    """Returns ``(step(), num_params)``; ``step`` runs one training step to completion."""
    kw = dict(overrides)
    if dtype == "bfloat16":
        kw["dtype"] = jnp.bfloat16
    model = models.create(arch, impl=impl, rngs=nnx.Rngs(0), **kw)
    model.train()
    graphdef, params, rest = nnx.split(model, nnx.Param, ...)
    tx = optax.sgd(LR, momentum=0.9, nesterov=True)
    loss_fn = losses.LOSSES["cce"]
    devices = jax.devices()[:host_devices]
    mesh = jax.make_mesh((len(devices),), ("data",), devices=devices,
                         axis_types=(jax.sharding.AxisType.Auto,))
    rep = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec())
    split = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec("data"))
    state = jax.device_put((params, rest, tx.init(params)), rep)
    x = jax.device_put(jnp.asarray(x_np), split)
    y = jax.device_put(jnp.asarray(y_np), split)
    mask = jax.device_put(jnp.ones((x_np.shape[0], 4), bool), split)

    step_fn = make_step_fn(graphdef, tx, loss_fn)

    jitted = jax.jit(step_fn, donate_argnums=(0,), out_shardings=(rep, rep)).lower(
        state, x, y, mask).compile()
    box = [state]

    def step():
        box[0], loss = jitted(box[0], x, y, mask)
        loss.block_until_ready()

    return step, _count(params)


def make_torch_runner(arch, overrides, x_np, y_np, *, fmt, compile_, dtype, device):
    import torch
    import torch_models

    torch.manual_seed(0)
    if device == "cuda":
        # JAX's default float32 precision on these GPUs runs matmuls and convolutions
        # in TF32; give PyTorch the same.
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    model = torch_models.create(arch, **dict(overrides)).to(device)
    n = torch_models.num_params(model)
    x = torch.from_numpy(np.ascontiguousarray(x_np.transpose(0, 3, 1, 2))).to(device)
    y = torch.from_numpy(y_np.astype(np.int64)).to(device)
    if fmt == "channels_last":
        model = model.to(memory_format=torch.channels_last)
        x = x.contiguous(memory_format=torch.channels_last)
    model.train()
    opt = torch.optim.SGD(model.parameters(), lr=LR, momentum=0.9, nesterov=True)
    fwd = torch.compile(model) if compile_ else model
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)

    def step():
        opt.zero_grad(set_to_none=True)
        with torch.autocast(device, dtype=torch.bfloat16, enabled=dtype == "bfloat16"):
            logits = fwd(x)
        loss = torch.nn.functional.cross_entropy(logits.float(), y)
        loss.backward()
        opt.step()
        sync()

    return step, n


def run_case(name, args):
    arch, preset, res, batch = CASES[name]
    batch = args.batch or batch
    overrides = dict(models.PRESETS[arch][preset])
    rng = np.random.default_rng(0)
    x_np = rng.standard_normal((batch, res, res, 1), dtype=np.float32)
    y_np = rng.integers(0, 4, (batch, res, res)).astype(np.int32)

    runners, counts = {}, {}
    for impl in args.jax_impls.split(","):
        for ndev in HOST_DEVICES:
            label = f"echojax[{impl}]" + (f"x{ndev}dev" if max(HOST_DEVICES) > 1 else "")
            runners[label], counts[label] = make_jax_runner(
                arch, overrides, x_np, y_np, impl=impl, dtype=args.dtype, host_devices=ndev)
    if not args.no_torch:
        for fmt in args.torch_formats.split(","):
            for comp in (False, True) if args.torch_compile else (False,):
                label = f"torch[{fmt}{',compile' if comp else ''}]"
                runners[label], counts[label] = make_torch_runner(
                    arch, overrides, x_np, y_np, fmt=fmt, compile_=comp, dtype=args.dtype,
                    device=args.device)
    if len(set(counts.values())) != 1:
        raise SystemExit(f"{name}: parameter counts differ: {counts}")

    failed = []
    for label, step in list(runners.items()):
        try:
            for _ in range(args.warmup):
                step()
        except Exception as e:  # noqa: BLE001 -- one variant failing (e.g. torch.compile) must not lose the others
            print(f"# {name} {label} failed in warm-up: {type(e).__name__}: {str(e).splitlines()[0][:200]}",
                  file=sys.stderr, flush=True)
            failed.append(f"| {name} | | {label} | failed ({type(e).__name__}) | | |")
            del runners[label]
    times = {k: [] for k in runners}
    for _ in range(args.rounds):
        for label, step in runners.items():
            for _ in range(args.steps):
                t0 = time.perf_counter()
                step()
                times[label].append(time.perf_counter() - t0)
    med = {k: statistics.median(v) for k, v in times.items()}
    torch_best = min((v for k, v in med.items() if k.startswith("torch")), default=None)
    rows = []
    for label, t in med.items():
        ratio = f"{torch_best / t:5.2f}x" if torch_best else "   - "
        rows.append(f"| {name} | {arch} {preset} {res}x{res} b{batch} | {label} | "
                    f"{t * 1e3:8.1f} | {batch / t:8.1f} | {ratio} |")
    return next(iter(counts.values())), rows + failed


def main():
    args = ARGS
    # Start JAX's backend before PyTorch loads its CUDA libraries, so each finds the
    # runtime libraries it checks for first.
    jax.devices()
    import torch
    threads = args.threads or os.cpu_count()
    torch.set_num_threads(threads)
    print(f"# jax {jax.__version__} ({jax.device_count()} {jax.devices()[0].platform} device(s)), "
          f"torch {torch.__version__} ({threads} threads, device {args.device}), dtype {args.dtype}; "
          f"{args.rounds} rounds x {args.steps} steps, medians", flush=True)
    print("| case | model | variant | ms/step | images/s | vs torch best |")
    print("|---|---|---|---:|---:|---:|")
    for name in args.cases.split(","):
        if name not in CASES:
            raise SystemExit(f"unknown case {name!r}; expected one of {sorted(CASES)}")
        n, rows = run_case(name, args)
        print("\n".join(rows) + f"\n|  | params {n:,} (equal) | | | | |", flush=True)


if __name__ == "__main__":
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    main()
