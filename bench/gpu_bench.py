"""Training-step throughput, peak memory and model FLOP utilisation on one GPU, echojax vs
PyTorch eager vs ``torch.compile``, with the input pipeline's rate beside each step.

Run through ``bash bench/gpu.sh`` (it sets the environment); ``--smoke`` runs the same
logic on the CPU with tiny models. The driver runs every case in a fresh worker process
(JAX's peak-memory counter cannot be reset within a process) and starts the next worker
while the current one runs, so imports overlap; a worker is killed at the time budget and
the variants it finished are kept. One table at the end; with ``OUT_JSON=path`` (or
``$OUT`` set: ``$OUT/gpu_bench.json``) the results are also written as JSON, including
rows in the schema of ``bench/measured_throughput.json``.

One step = forward, cross entropy, backward, SGD Nesterov update (momentum 0.9),
BatchNorm in train mode, as in ``bench/train_step.py``; float32 parameters, compute in
float32 or bfloat16 (``dtype`` of the model; PyTorch: autocast). Steps run back to back
and are synchronised once per timed window (as a training loop runs them).

  python bench/gpu_bench.py [--smoke] [--budget 450] [--cases unet-paper-256-bfloat16,...]
"""

from __future__ import annotations

import argparse
import datetime
import gc
import json
import math
import os
import queue
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
TAG = "@@RESULT "

# (architecture, model size, resolution, batch) of each slot. "paper": the paper's models
# at 256x256, batch 32 (the 2026-11-27 rows). "quick": what the quick preset trains
# (echojax/experiment/options.py: resolution 64, model_size "cpu", batch_size 8).
SLOTS = {
    "paper": {"size": "paper", "res": 256, "batch": 32},
    "quick": {"size": "cpu", "res": 64, "batch": 8},
}
SMOKE_SLOTS = {  # tiny models on the CPU: checks the logic only
    "paper": {"size": "tiny", "res": 32, "batch": 2},
    "quick": {"size": "tiny", "res": 16, "batch": 2},
}
# Most important first: the time budget drops the tail. The U-Net at paper size, then the
# Swin-UNet (no GPU row at all yet, so --dry_run cannot estimate its sweeps), then the
# Attention U-Net (its float32 row predates the current layers), then the quick preset.
ORDER = [
    ("unet", "paper", "bfloat16"), ("unet", "paper", "float32"),
    ("swin_unet", "paper", "float32"), ("swin_unet", "paper", "bfloat16"),
    ("attention_unet", "paper", "bfloat16"), ("attention_unet", "paper", "float32"),
    ("unet", "quick", "float32"), ("unet", "quick", "bfloat16"),
    ("attention_unet", "quick", "float32"), ("swin_unet", "quick", "float32"),
    ("attention_unet", "quick", "bfloat16"), ("swin_unet", "quick", "bfloat16"),
]
CASE_NAMES = [f"{a}-{s}-{SLOTS[s]['res']}-{d}" for a, s, d in ORDER]
# --smoke's default: every architecture, dtype and slot once (a loaded 2-core CPU takes
# ~30-60 s per case); --cases runs others.
SMOKE_CASES = ["unet-paper-256-bfloat16", "swin_unet-paper-256-float32",
               "attention_unet-quick-64-bfloat16"]

# Dense (no sparsity) peak tensor-core TFLOP/s by device, from NVIDIA's datasheets (the
# datasheets print the sparse figures, twice these): "NVIDIA H100 Tensor Core GPU" and
# "NVIDIA H200 Tensor Core GPU". float32 compute is matched against TF32: JAX's default
# float32 precision on these GPUs runs convolutions and matmuls in TF32 (and PyTorch is
# given the same); the non-tensor FP32 peak is listed for reference. First match wins.
PEAKS = [  # (substring of jax device_kind, label, {dtype: TFLOP/s}, fp32 non-tensor)
    ("H100 NVL", "H100 NVL", {"bfloat16": 835.5, "float32": 417.5}, 60.0),
    ("H200 NVL", "H200 NVL", {"bfloat16": 835.5, "float32": 417.5}, 60.0),
    ("H100 PCIe", "H100 PCIe", {"bfloat16": 756.5, "float32": 378.0}, 51.0),
    ("H100", "H100 SXM", {"bfloat16": 989.4, "float32": 494.7}, 67.0),
    ("H200", "H200 SXM", {"bfloat16": 989.4, "float32": 494.7}, 67.0),
]
CPU_PLACEHOLDER_TFLOPS = 1.0  # --smoke only: exercises the MFU arithmetic, means nothing


def peak_for(device_kind: str, smoke: bool):
    """``(label, {dtype: TFLOP/s}, note)`` for the device, or None where unknown."""
    for key, label, peaks, fp32 in PEAKS:
        if key.lower() in device_kind.lower():
            return (label, peaks, f"{label} dense peaks (NVIDIA datasheet): bf16 "
                    f"{peaks['bfloat16']} TFLOP/s, float32 compute against TF32 "
                    f"{peaks['float32']} TFLOP/s (non-tensor FP32: {fp32})")
    if smoke and device_kind.lower() == "cpu":
        p = CPU_PLACEHOLDER_TFLOPS
        return ("CPU placeholder", {"bfloat16": p, "float32": p},
                f"CPU placeholder peak {p} TFLOP/s (--smoke: checks the arithmetic; no datasheet)")
    return None


# ------------------------------------------------------------------ worker (one case) --

def _emit(**row):
    print(TAG + json.dumps(row), flush=True)


def _windows(step, sync, *, warmup, steps, rounds, min_window):
    """Median seconds per step over ``rounds`` windows of back-to-back steps, each
    synchronised once at its end; windows shorter than ``min_window`` s are lengthened."""
    for _ in range(warmup):
        step()
    sync()
    t0 = time.perf_counter()
    for _ in range(steps):
        step()
    sync()
    first = time.perf_counter() - t0
    if first < min_window:
        steps = max(steps, math.ceil(steps * min_window / max(first, 1e-6)))
    per_step = []
    for _ in range(rounds):
        t0 = time.perf_counter()
        for _ in range(steps):
            step()
        sync()
        per_step.append((time.perf_counter() - t0) / steps)
    return statistics.median(per_step), steps


def _cost(obj):
    try:
        ca = obj.cost_analysis()
    except Exception:  # noqa: BLE001 -- a backend without cost analysis
        return None
    if isinstance(ca, (list, tuple)):
        ca = ca[0] if ca else None
    if not ca:
        return None
    f = ca.get("flops")
    return float(f) if f is not None and f > 0 else None


def run_jax(spec, x_np, y_np, timing):
    import jax
    import jax.numpy as jnp
    import numpy as np
    import optax
    from flax import nnx
    from jax_step import make_step_fn

    from echojax import losses, models

    kw = dict(models.PRESETS[spec["arch"]][spec["size"]])
    if spec["dtype"] == "bfloat16":
        kw["dtype"] = jnp.bfloat16
    model = models.create(spec["arch"], impl=spec["impl"], rngs=nnx.Rngs(0), **kw)
    impl = model.impl
    model.train()
    graphdef, params, rest = nnx.split(model, nnx.Param, ...)
    n_params = sum(int(np.prod(p.shape)) for p in jax.tree.leaves(params))
    tx = optax.sgd(1e-3, momentum=0.9, nesterov=True)
    loss_fn = losses.LOSSES["cce"]
    state = (params, rest, tx.init(params))
    x, y = jnp.asarray(x_np), jnp.asarray(y_np)
    mask = jnp.ones((x_np.shape[0], 4), bool)

    step_fn = make_step_fn(graphdef, tx, loss_fn)

    t0 = time.perf_counter()
    lowered = jax.jit(step_fn, donate_argnums=(0,)).lower(state, x, y, mask)
    compiled = lowered.compile()
    compile_s = time.perf_counter() - t0
    flops = {"xla_compiled": _cost(compiled), "xla_unoptimised": _cost(lowered)}
    step_bytes = None
    try:
        ma = compiled.memory_analysis()
        step_bytes = int(ma.argument_size_in_bytes + ma.output_size_in_bytes
                         + ma.temp_size_in_bytes - ma.alias_size_in_bytes)
    except Exception:  # noqa: BLE001 -- not every backend reports it
        pass
    box = [state, None]

    def step():
        box[0], box[1] = compiled(box[0], x, y, mask)

    def sync():
        if box[1] is not None:
            box[1].block_until_ready()

    t, steps = _windows(step, sync, **timing)
    loss = float(box[1])
    stats = jax.devices()[0].memory_stats() or {}
    peak = stats.get("peak_bytes_in_use")
    return dict(variant="echojax", impl=impl, s_per_step=t, steps_per_window=steps,
                compile_s=compile_s, params=n_params, flops=flops, peak_bytes=peak,
                xla_step_bytes=step_bytes, loss=loss)


def run_torch(spec, x_np, y_np, timing, *, device, compile_, compile_backend="inductor",
              count_flops=False):
    import numpy as np
    import torch
    import torch_models

    cuda = device == "cuda"
    gc.collect()  # the previous variant's model and optimizer
    if cuda:
        # JAX's default float32 precision on these GPUs is TF32: give PyTorch the same,
        # and cuDNN's per-shape algorithm search (XLA autotunes its convolutions too).
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
        torch.backends.cudnn.benchmark = True
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    torch.manual_seed(0)
    from echojax import models

    overrides = dict(models.PRESETS[spec["arch"]][spec["size"]])
    model = torch_models.create(spec["arch"], **overrides).to(device)
    n_params = torch_models.num_params(model)
    x = torch.from_numpy(np.ascontiguousarray(x_np.transpose(0, 3, 1, 2))).to(device)
    y = torch.from_numpy(y_np.astype(np.int64)).to(device)
    # channels_last is PyTorch's faster layout for convolutions on tensor cores; the
    # Swin-UNet works on tokens, where it would touch only the patch embedding.
    fmt = "contiguous" if spec["arch"] == "swin_unet" else "channels_last"
    if fmt == "channels_last":
        model = model.to(memory_format=torch.channels_last)
        x = x.contiguous(memory_format=torch.channels_last)
    model.train()
    opt = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9, nesterov=True)
    fwd = torch.compile(model, backend=compile_backend) if compile_ else model
    bf16 = spec["dtype"] == "bfloat16"
    last = [None]

    def step():
        opt.zero_grad(set_to_none=True)
        with torch.autocast(device, dtype=torch.bfloat16, enabled=bf16):
            logits = fwd(x)
        loss = torch.nn.functional.cross_entropy(logits.float(), y)
        loss.backward()
        opt.step()
        last[0] = loss

    sync = torch.cuda.synchronize if cuda else (lambda: None)
    t0 = time.perf_counter()
    step()  # the first step compiles (torch.compile) / picks cuDNN algorithms
    sync()
    compile_s = time.perf_counter() - t0
    t, steps = _windows(step, sync, **timing)
    peak = torch.cuda.max_memory_allocated() if cuda else None
    counted = None
    if count_flops:  # convolutions and matmuls only: a cross-check of XLA's count
        from torch.utils.flop_counter import FlopCounterMode
        with FlopCounterMode(display=False) as counter:
            step()
        sync()
        counted = float(counter.get_total_flops())
    if compile_ and compile_backend != "inductor":
        fmt += f", backend={compile_backend}"
    row = dict(variant="torch.compile" if compile_ else "torch eager", impl=fmt,
               s_per_step=t, steps_per_window=steps, compile_s=compile_s, params=n_params,
               peak_bytes=peak, loss=last[0].item(), torch_flops=counted)
    return row


def worker(args):
    sys.path.insert(0, HERE)
    sys.path.insert(0, ROOT)
    # Everything imported before the case arrives: the next worker warms up meanwhile.
    import jax
    import numpy as np
    import optax  # noqa: F401
    import torch
    import torch.utils.flop_counter  # noqa: F401
    import torch_models  # noqa: F401
    from flax import nnx  # noqa: F401

    import echojax.losses  # noqa: F401
    import echojax.models  # noqa: F401
    print("@@READY", flush=True)
    line = sys.stdin.readline()
    if not line.strip():
        return 0
    spec = json.loads(line)
    device = spec["torch_device"]
    if device == "cpu":
        torch.set_num_threads(spec.get("threads") or 1)
    jax.devices()  # JAX's backend before PyTorch loads its CUDA libraries
    d = jax.devices()[0]
    _emit(kind="device", device_kind=d.device_kind, platform=d.platform,
          platform_version=" ".join(str(getattr(d.client, "platform_version", "?")).split()),
          jax=jax.__version__, torch=torch.__version__, torch_cuda=torch.version.cuda)
    rng = np.random.default_rng(0)
    b, r = spec["batch"], spec["res"]
    x_np = rng.standard_normal((b, r, r, 1), dtype=np.float32)
    y_np = rng.integers(0, 4, (b, r, r)).astype(np.int32)
    timing = spec["timing"]
    base = dict(kind="variant", case=spec["case"])
    jobs = [("echojax", lambda: run_jax(spec, x_np, y_np, timing)),
            ("torch eager", lambda: run_torch(spec, x_np, y_np, timing, device=device,
                                              compile_=False, count_flops=True))]
    jobs.append(("torch.compile", lambda: run_torch(
        spec, x_np, y_np, timing, device=device, compile_=True,
        compile_backend=spec["torch_compile_backend"])))
    for label, job in jobs:
        t0 = time.perf_counter()
        try:
            _emit(**base, **job(), wall_s=time.perf_counter() - t0)
        except Exception as e:  # noqa: BLE001 -- one variant failing must not lose the others
            msg = f"{type(e).__name__}: {str(e).splitlines()[0][:200] if str(e) else ''}"
            print(f"# {spec['case']} {label} failed: {msg}", file=sys.stderr, flush=True)
            _emit(**base, variant=label, error=msg, wall_s=time.perf_counter() - t0)
    return 0


# --------------------------------------------------------------------- input pipeline --

def input_worker(args):
    """Host-side input rate at 256x256 with bench/input_pipeline.py's functions: the
    training default (grain, 2 reader threads, no worker processes) and with worker
    processes, plus on-device augmentation (default probabilities) at the same size."""
    sys.path.insert(0, HERE)
    sys.path.insert(0, ROOT)
    import input_pipeline as ip

    from echojax.augment import AugmentConfig
    from echojax.data.mixture import Mixture, Removal, Source

    t0 = time.perf_counter()
    name = ip._prepare(args.dataset, args.data_dir)
    mix = Mixture([Source(name, "bench", removals=(Removal(("lvm",), 0.5),))], "train",
                  data_dir=args.data_dir, seed=0)
    _emit(kind="input", stage="prepare", dataset=name, resolution=mix.resolution,
          seconds=time.perf_counter() - t0, cpu_count=os.cpu_count())
    workers = max(1, min(8, (os.cpu_count() or 2) // 2))
    for stage, threads, wc in (("loader, training default (2 threads)", 2, 0),
                               (f"loader, {workers} worker processes", 2, workers)):
        try:
            n, clock = ip.bench_loader(mix, args.batch, args.batches, num_threads=threads,
                                       worker_count=wc)
            _emit(kind="input", stage=stage, images=n, wall_s=clock.wall,
                  images_per_s=n / clock.wall, resolution=mix.resolution, batch=args.batch)
        except Exception as e:  # noqa: BLE001
            _emit(kind="input", stage=stage, error=f"{type(e).__name__}: {e}"[:200])
    import jax
    n, clock = ip.bench_augment(args.batch, mix.resolution, 10, AugmentConfig())
    _emit(kind="input", stage=f"augment on {jax.devices()[0].platform}, default probabilities",
          images=n, wall_s=clock.wall, images_per_s=n / clock.wall, resolution=mix.resolution,
          batch=args.batch)
    return 0


# ----------------------------------------------------------------------------- driver --

class Child:
    """A worker process; stdout lines are collected by a thread, results parsed."""

    def __init__(self, argv, env, log_path):
        self.log_path = log_path
        self.log = open(log_path, "w")
        self.proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=self.log, text=True, env=env, cwd=ROOT,
                                     start_new_session=True)
        self.lines: queue.Queue = queue.Queue()
        self.results: list[dict] = []
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self):
        for line in self.proc.stdout:
            self.lines.put(line)
        self.lines.put(None)

    def send(self, obj):
        self.proc.stdin.write(json.dumps(obj) + "\n")
        self.proc.stdin.flush()
        self.proc.stdin.close()

    def wait(self, deadline, echo):
        """Collects results until the process ends or ``deadline``; kills it then.
        Returns True if it ended by itself."""
        while True:
            left = deadline - time.time()
            try:
                line = self.lines.get(timeout=max(0.05, min(left, 5.0)))
            except queue.Empty:
                if time.time() >= deadline:
                    self.kill()
                    return False
                continue
            if line is None:
                self.proc.wait()
                self.log.close()
                return self.proc.returncode == 0
            if line.startswith(TAG):
                row = json.loads(line[len(TAG):])
                self.results.append(row)
                echo(row)
            elif not line.startswith("@@READY"):
                sys.stdout.write("  " + line)
                sys.stdout.flush()

    def kill(self):
        if self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)  # the worker and its compilers
            except ProcessLookupError:
                pass
            self.proc.wait()
        if not self.log.closed:
            self.log.close()

    def close_idle(self):
        """Ends an unused worker: it returns when its stdin closes."""
        try:
            self.proc.stdin.close()
            self.proc.wait(timeout=30)
        except Exception:  # noqa: BLE001
            self.kill()
        if not self.log.closed:
            self.log.close()

    def tail(self, n=12):
        try:
            with open(self.log_path) as f:
                return [s.rstrip() for s in f.readlines()[-n:]]
        except OSError:
            return []


def _fmt(v, spec, missing="–"):
    return missing if v is None else format(v, spec)


def _gib(b):
    return None if b is None else b / 2**30


def nvidia_smi():
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=name,driver_version,memory.total",
                              "--format=csv,noheader"], capture_output=True, text=True,
                             timeout=20)
        return (out.stdout.strip().splitlines() or [None])[0]
    except (OSError, subprocess.SubprocessError):
        return None


def main(argv=None):
    p = argparse.ArgumentParser(description=" ".join(__doc__.split("\n\n")[0].split()))
    p.add_argument("--smoke", action="store_true", help="CPU, tiny models: checks the logic")
    p.add_argument("--budget", type=float, default=None,
                   help="seconds for everything (default 450 on a GPU, 420 for --smoke)")
    p.add_argument("--cases", default=None, help=f"comma-separated subset of {CASE_NAMES}, "
                   "run in the given order (default: all, in this order; --smoke: "
                   f"{SMOKE_CASES})")
    p.add_argument("--no-input", action="store_true", help="skip the input-pipeline measurement")
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--input-worker", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--dataset", default="synthetic_echo/camus_like_256")
    p.add_argument("--data_dir", default="/tmp/echojax_bench_tfds")
    p.add_argument("--batch", type=int, default=32, help=argparse.SUPPRESS)
    p.add_argument("--batches", type=int, default=40, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.worker:
        return worker(args)
    if args.input_worker:
        return input_worker(args)

    smoke = args.smoke
    start = time.time()
    budget = args.budget or (420.0 if smoke else 450.0)
    deadline = start + budget
    slots = SMOKE_SLOTS if smoke else SLOTS
    names = args.cases.split(",") if args.cases else list(SMOKE_CASES if smoke else CASE_NAMES)
    for n in names:
        if n not in CASE_NAMES:
            raise SystemExit(f"unknown case {n!r}; expected some of {CASE_NAMES}")
    # On the GPU: 3 windows of >= 10 steps and >= 0.5 s each after 3 warm-up steps.
    timing = (dict(warmup=1, steps=1, rounds=1, min_window=0.0) if smoke
              else dict(warmup=3, steps=10, rounds=3, min_window=0.5))
    # A case needs this long at least to print anything (a fresh process, a compilation).
    min_start = 10.0 if smoke else 40.0

    env = dict(os.environ)
    env.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")  # JAX and PyTorch share the GPU
    env["PYTHONPATH"] = ROOT + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    if smoke:
        env.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    logdir = tempfile.mkdtemp(prefix="gpu_bench_")
    me = [sys.executable, os.path.abspath(__file__)]

    print(datetime.datetime.now(datetime.UTC).strftime("# %Y-%m-%d %H:%M UTC"), flush=True)
    smi = None if smoke else nvidia_smi()
    if smi:
        print(f"# GPU: {smi}")
    print(f"# budget {budget:.0f} s; cases in order: {', '.join(names)}; worker logs in {logdir}",
          flush=True)

    results: list[dict] = []
    device: dict = {}
    inputs: list[dict] = []

    def echo(row):
        if row.get("kind") == "variant":
            what = (f"{row.get('s_per_step', 0) * 1e3:.2f} ms/step, compile/first step "
                    f"{row.get('compile_s', 0):.1f} s" if "error" not in row
                    else f"FAILED: {row['error']}")
            print(f"  {row['case']} {row['variant']}: {what}", flush=True)
        elif row.get("kind") == "input":
            print(f"  input: {row['stage']}: "
                  + (f"{row['images_per_s']:.0f} images/s" if "images_per_s" in row
                     else f"{row.get('seconds', 0):.1f} s" if "seconds" in row
                     else row.get("error", "")), flush=True)

    if not args.no_input:
        print("# input pipeline at 256x256 (bench/input_pipeline.py's loaders)", flush=True)
        argv = me + ["--input-worker", "--dataset", args.dataset, "--data_dir", args.data_dir,
                     "--batch", "32", "--batches", "10" if smoke else "40"]
        child = Child(argv, env, os.path.join(logdir, "input.log"))
        child.proc.stdin.close()
        ok = child.wait(min(deadline, time.time() + (150 if smoke else 100)), echo)
        inputs = [r for r in child.results if r.get("kind") == "input"]
        if not ok:
            print("# input pipeline: failed or timed out; its log ends:\n  "
                  + "\n  ".join(child.tail()), flush=True)

    worker_argv = me + ["--worker"]
    spare = Child(worker_argv, env, os.path.join(logdir, "worker0.log"))
    not_run = []
    for i, name in enumerate(names):
        arch, slot, dtype = next(o for o, n in zip(ORDER, CASE_NAMES) if n == name)
        if deadline - time.time() < min_start:
            not_run.append(name)
            continue
        child = spare
        spare = (Child(worker_argv, env, os.path.join(logdir, f"worker{i + 1}.log"))
                 if i + 1 < len(names) else None)
        s = slots[slot]
        spec = dict(case=name, arch=arch, slot=slot, size=s["size"], res=s["res"],
                    batch=s["batch"], dtype=dtype, timing=timing,
                    torch_device="cpu" if smoke else "cuda",
                    # echojax's default; --smoke runs the "gpu" layers on the CPU (the
                    # code the GPU runs; "auto" there, "cpu", compiles for minutes here).
                    impl="gpu" if smoke else "auto",
                    # Inductor on a loaded 2-core CPU takes minutes for the tiniest model:
                    # --smoke traces with TorchDynamo and runs the graph eagerly.
                    torch_compile_backend="eager" if smoke else "inductor")
        print(f"# {name}: {arch} {s['size']} {s['res']}x{s['res']} batch {s['batch']} {dtype}"
              f" ({deadline - time.time():.0f} s of the budget left)", flush=True)
        child.send(spec)
        ok = child.wait(deadline, echo)
        for r in child.results:
            if r.get("kind") == "device":
                device = r
            elif r.get("kind") == "variant":
                results.append({**r, **{k: spec[k] for k in
                                        ("arch", "slot", "size", "res", "batch", "dtype")}})
        if not ok:
            got = {r.get("variant") for r in child.results if r.get("kind") == "variant"}
            why = "time budget spent" if time.time() >= deadline else "worker failed"
            for v in ("echojax", "torch eager", "torch.compile"):
                if v not in got:
                    results.append(dict(case=name, variant=v, error=why, arch=arch, slot=slot,
                                        size=s["size"], res=s["res"], batch=s["batch"],
                                        dtype=dtype))
            if why == "worker failed":
                print(f"# {name}: worker failed; its log ends:\n  " + "\n  ".join(child.tail()),
                      flush=True)
    if spare is not None:
        spare.close_idle()

    return report(results, inputs, device, not_run, smoke=smoke, smi=smi, budget=budget,
                  elapsed=time.time() - start)


def report(results, inputs, device, not_run, *, smoke, smi, budget, elapsed):
    kind = device.get("device_kind", "?")
    peak = peak_for(kind, smoke)
    loader = next((r for r in inputs if r.get("stage", "").startswith("loader, training")
                   and "images_per_s" in r), None)
    in_rate = loader["images_per_s"] if loader else None
    print()
    print(f"## Summary ({elapsed:.0f} s of a {budget:.0f} s budget)")
    print(f"# device: {kind}" + (f" ({smi})" if smi else "")
          + f"; jax {device.get('jax', '?')} ({device.get('platform_version', '?')}), "
          f"torch {device.get('torch', '?')} (CUDA {device.get('torch_cuda')})")
    print("# MFU peak: " + (peak[2] if peak else f"unknown for {kind!r}: MFU n/a"))
    for r in inputs:
        if "images_per_s" in r:
            print(f"# input {r['resolution']}x{r['resolution']}, batch {r['batch']}, "
                  f"{r['stage']}: {r['images_per_s']:,.0f} images/s")
    if not inputs:
        print("# input pipeline: not measured")
    if smoke:
        print("# --smoke: tiny models on the CPU; the numbers check the logic and mean nothing")
    cols = ("case", "variant", "impl", "ms/step", "images/s", "vs torch best", "GFLOP/step",
            "TFLOP/s", "MFU", "peak GiB", "compile s", "input images/s", "input / step")
    print(f"# {', '.join(cols)}: see bench/README.md, GPU section")
    print("| " + " | ".join(cols) + " |")
    print("|---|---|---|" + "---:|" * (len(cols) - 3))
    by_case: dict[str, list[dict]] = {}
    for r in results:
        by_case.setdefault(r["case"], []).append(r)
    rows_json = []
    for rows in by_case.values():
        ok = [r for r in rows if "error" not in r]
        jax_row = next((r for r in ok if r["variant"] == "echojax"), None)
        # Model FLOPs per step: XLA's cost analysis of the compiled step (the unoptimised
        # HLO's, then PyTorch's conv+matmul counter, where that is missing).
        f = (jax_row or {}).get("flops") or {}
        flops = (f.get("xla_compiled") or f.get("xla_unoptimised")
                 or next((r.get("torch_flops") for r in ok if r.get("torch_flops")), None))
        torch_best = min((r["s_per_step"] for r in ok if r["variant"].startswith("torch")),
                         default=None)
        counts = {r.get("params") for r in ok}
        r0 = rows[0]
        label = (f"{r0['arch']} {r0['size']} {r0['res']}x{r0['res']} b{r0['batch']} "
                 f"{'bf16' if r0['dtype'] == 'bfloat16' else 'fp32'}")
        for r in rows:
            rr = dict(r)
            if "error" in r:
                cells = [label, r["variant"], "", f"not measured: {r['error']}"] + [""] * (len(cols) - 4)
                print("| " + " | ".join(cells) + " |")
                rows_json.append(rr)
                continue
            t = r["s_per_step"]
            ips = r["batch"] / t
            tflops = flops / t / 1e12 if flops else None
            p = peak[1].get(r["dtype"]) if peak else None
            mfu = tflops / p if tflops and p else None
            mem = _gib(r.get("peak_bytes"))
            rr.update(images_per_s=ips, model_flops_per_step=flops, tflops=tflops, mfu=mfu,
                      peak_tflops=p, input_images_per_s=in_rate,
                      vs_torch_best=(torch_best / t) if torch_best else None)
            rows_json.append(rr)
            inp = "–" if in_rate is None else f"{in_rate:,.0f}" + (" (256²)" if r["res"] != 256 else "")
            cells = [label, r["variant"], r.get("impl", ""), f"{t * 1e3:.2f}", f"{ips:,.1f}",
                     _fmt(rr["vs_torch_best"], ".2f") + ("x" if rr["vs_torch_best"] else ""),
                     _fmt(flops and flops / 1e9, ",.4g"), _fmt(tflops, ".3g"),
                     _fmt(mfu and 100 * mfu, ".1f", "n/a") + ("%" if mfu else ""),
                     _fmt(mem, ".2f", "n/a"), f"{r.get('compile_s', 0):.1f}", inp,
                     _fmt(in_rate and in_rate / ips, ".2f") + ("x" if in_rate else "")]
            print("| " + " | ".join(cells) + " |")
        if jax_row:
            f = jax_row.get("flops") or {}
            tf = next((r.get("torch_flops") for r in ok if r.get("torch_flops")), None)
            print(f"|  | params {', '.join(f'{c:,}' for c in sorted(c for c in counts if c))}"
                  f"{' (equal)' if len(counts) == 1 else ' (DIFFER)'}; FLOPs/step: XLA compiled "
                  f"{_fmt(f.get('xla_compiled'), '.3e')}, unoptimised HLO "
                  f"{_fmt(f.get('xla_unoptimised'), '.3e')}, torch counter (conv+matmul) "
                  f"{_fmt(tf, '.3e')}; XLA step buffers {_fmt(_gib(jax_row.get('xla_step_bytes')), '.3g')}"
                  " GiB |" + " |" * (len(cols) - 2))
    for name in not_run:
        print(f"| {name} | | | not run (time budget spent) |" + " |" * (len(cols) - 4))
    cut = not_run + [c for c, rows in by_case.items()
                     if any("budget" in r.get("error", "") for r in rows)]
    if cut:
        print(f"# cut off by the budget; the rest: bash bench/gpu.sh --no-input "
              f"{'--smoke ' if smoke else ''}--cases {','.join(cut)}")

    out = os.environ.get("OUT_JSON") or (os.path.join(os.environ["OUT"], "gpu_bench.json")
                                         if os.environ.get("OUT") else None)
    if out:
        date = datetime.date.today().isoformat()
        machine = f"one {kind}" if not smoke else "CPU (--smoke: not a measurement)"
        driver = smi.split(",")[1].strip() if smi and smi.count(",") >= 2 else "?"
        software = (f"driver {driver}, jax {device.get('jax', '?')} "
                    f"({device.get('platform_version', '?')})")
        throughput = [
            dict(architecture=r["arch"], model_size=r["size"], resolution=r["res"],
                 batch_size=r["batch"], compute_dtype=r["dtype"], impl=r["impl"],
                 images_per_s=round(r["images_per_s"], 1), machine=machine,
                 software=software, date=date,
                 command="bash bench/gpu.sh",
                 source="bench/README.md, GPU section",
                 note=("--smoke: impl 'gpu' on the CPU, tiny model; not a measurement"
                       if smoke else f"bare training step, echojax default impl='auto' "
                       f"({r['impl']}); MFU "
                       + (f"{100 * r['mfu']:.1f}% of {peak[0]}" if r.get("mfu") and peak
                          else "n/a")))
            for r in rows_json if r.get("variant") == "echojax" and "error" not in r]
        doc = dict(about="bench/gpu.sh results; throughput_rows are in the schema of "
                         "bench/measured_throughput.json (copy measured GPU rows there, "
                         "newest first; never --smoke rows)",
                   smoke=smoke, date=date, device=device, nvidia_smi=smi,
                   mfu_peak=(dict(label=peak[0], tflops=peak[1], note=peak[2]) if peak else None),
                   budget_s=budget, elapsed_s=elapsed, input_pipeline=inputs,
                   variants=rows_json, not_run=not_run, throughput_rows=throughput)
        os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
        with open(out, "w") as f:
            json.dump(doc, f, indent=1)
        print(f"# JSON: {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
