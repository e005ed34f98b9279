"""Re-measures the margins of the suite's tests that train or compare a learned
quantity with a threshold (the table in tests/MARGINS.md).

Each value is computed in a fresh process per instruction-set setting, since XLA reads
``XLA_FLAGS`` once, when the CPU backend starts:

    PYTHONPATH=$PWD python tests/measure_margins.py overfit --names unet \
        --seeds 0 1 2 3 4 --isa native SSE4_2 AVX2

prints one JSON line per (quantity, name, seed, ISA) and, at the end, the worst value
per (quantity, name, ISA). ``native`` leaves XLA_FLAGS as it is.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def _bench_overfit():
    spec = importlib.util.spec_from_file_location("bench_overfit", REPO / "bench" / "overfit.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def overfit(name: str, seed: int, steps: int) -> float:
    """Eval-mode foreground Dice after ``steps`` steps (bench/overfit.py)."""
    return _bench_overfit().overfit(name, size=32, steps=steps, seed=seed)[0]


def steps_to_fit(name: str, seed: int, steps: int) -> float:
    """tests/test_models.py::test_tiny_models_overfit_four_blob_images: the steps the
    fit takes to reach foreground Dice 0.9 (checked every 25), at most ``steps``."""
    n, dice = _bench_overfit().fit_until(name, target=0.9, max_steps=steps, seed=seed)
    return n if dice >= 0.9 else float("inf")


QUANTITIES = {"overfit": overfit, "steps_to_fit": steps_to_fit}


def _child(args) -> None:
    fn = QUANTITIES[args.quantity]
    for name in args.names:
        for seed in args.seeds:
            t0 = time.perf_counter()
            value = fn(name, seed, args.steps)
            print("VALUE " + json.dumps({
                "quantity": args.quantity, "name": name, "seed": seed, "steps": args.steps,
                "isa": args.isa[0], "value": round(float(value), 4),
                "seconds": round(time.perf_counter() - t0, 1)}), flush=True)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("quantity", choices=sorted(QUANTITIES))
    p.add_argument("--names", nargs="+", required=True)
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2, 3, 4])
    p.add_argument("--steps", type=int, default=200)
    p.add_argument("--isa", nargs="+", default=["native"],
                   help="values of --xla_cpu_max_isa (native: XLA_FLAGS unchanged)")
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child:
        return _child(args)
    rows = []
    for isa in args.isa:
        env = dict(os.environ)
        if isa != "native":
            env["XLA_FLAGS"] = (env.get("XLA_FLAGS", "") + f" --xla_cpu_max_isa={isa}").strip()
        cmd = [sys.executable, __file__, args.quantity, "--names", *args.names, "--seeds",
               *map(str, args.seeds), "--steps", str(args.steps), "--isa", isa, "--child"]
        with subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, text=True) as proc:
            for line in proc.stdout:
                if line.startswith("VALUE "):
                    print(line[6:].strip(), flush=True)
                    rows.append(json.loads(line[6:]))
        if proc.returncode:
            raise SystemExit(f"measurement with --xla_cpu_max_isa={isa} failed ({proc.returncode})")
    print("worst of seeds:")
    for key in sorted({(r["quantity"], r["name"], r["steps"], r["isa"]) for r in rows}):
        vals = [r["value"] for r in rows if (r["quantity"], r["name"], r["steps"], r["isa"]) == key]
        worst = max(vals) if key[0] == "steps_to_fit" else min(vals)
        print(f"  {key[0]} {key[1]} steps={key[2]} isa={key[3]}: worst {worst:.4f} "
              f"over {len(vals)} seeds")


if __name__ == "__main__":
    main()
