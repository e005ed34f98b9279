"""Shared helpers of the engine tests: a tiny config and a subprocess runner for runs that
must be killed, use fake devices or several processes (``tests/engine_worker.py``). Their
tiny dataset, one per test session, is the ``engine_data_dir`` fixture of ``conftest.py``."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys

import jax
import numpy as np

from echojax import inference
from echojax.config import Config, LossConfig, ModelConfig, Source

HERE = os.path.dirname(os.path.abspath(__file__))
WORKER = os.path.join(HERE, "engine_worker.py")
DATASET = "tiny_echo/r16_n20"  # 16x16, 20 train / 5 validation / 5 test examples


def tiny_config(data_dir: str, **kw) -> Config:
    """A run of 2 epochs x 5 steps of 4 examples, evaluated and checkpointed each epoch.
    Label dropout is wired in (LA, rate 0 unless changed) so one compiled step serves
    the tests that vary the rate."""
    base = dict(loss=LossConfig(name="acce", dropout_rate=0.0, dropout_classes=("la",)),
                sources=(Source(DATASET, alias="tiny"),), resolution=16, data_dir=data_dir,
                model=ModelConfig(name="unet", size="tiny", overrides={"widths": (4, 8)}),
                batch_size=4, eval_batch_size=4, epochs=2, eval_every=1, log_every=1, seed=3)
    base.update(kw)
    return Config(**base)


def run_worker(config: Config, workdir: str, *args: str, env: dict | None = None,
               check: bool = True, timeout: float = 600) -> subprocess.CompletedProcess:
    """Runs ``train_and_evaluate`` in a fresh Python process."""
    os.makedirs(workdir, exist_ok=True)
    path = os.path.join(workdir, "..", os.path.basename(workdir) + ".config.json")
    config.save(path)
    full_env = {**os.environ, "PYTHONPATH": HERE + os.pathsep + os.environ.get("PYTHONPATH", "")}
    # Workers share a persistent compilation cache: later ones skip compiling.
    full_env.setdefault("JAX_COMPILATION_CACHE_DIR", config.data_dir.rstrip("/") + "_xla_cache")
    full_env.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")
    full_env.update(env or {})
    proc = subprocess.run([sys.executable, WORKER, "--config", path, "--workdir", workdir, *args],
                          env=full_env, capture_output=True, text=True, timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f"worker failed ({proc.returncode}):\n{proc.stderr[-4000:]}")
    return proc


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


def run_processes(config: Config, workdir: str, envs: list[dict], *,
                  timeout: float = 600) -> list[str]:
    """Runs one ``train_and_evaluate`` worker per entry of ``envs`` at once (the
    processes of one multi-process job, each with its own extra environment), on the
    CPU, sharing a compilation cache; asserts that every one succeeds and returns their
    standard errors."""
    os.makedirs(workdir, exist_ok=True)
    path = os.path.join(workdir, "..", os.path.basename(workdir) + ".config.json")
    config.save(path)
    base = {**os.environ, "PYTHONPATH": HERE + os.pathsep + os.environ.get("PYTHONPATH", ""),
            "JAX_PLATFORMS": "cpu",
            "JAX_COMPILATION_CACHE_DIR": config.data_dir.rstrip("/") + "_xla_cache",
            "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0"}
    procs = [subprocess.Popen([sys.executable, WORKER, "--config", path, "--workdir", workdir],
                              env={**base, **env}, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for env in envs]
    errs = []
    for p in procs:
        _, err = p.communicate(timeout=timeout)
        assert p.returncode == 0, err[-4000:]
        errs.append(err)
    return errs


def load_state(workdir: str, which: str | int = "latest"):
    """The whole train state of a run's checkpoint (optimiser state, step and RNG too),
    as numpy (host) arrays."""
    return jax.device_get(inference.restore_state(workdir, checkpoint=which))


def read_metrics(workdir: str) -> list[dict]:
    with open(os.path.join(workdir, "metrics.jsonl")) as f:
        return [json.loads(line) for line in f]


def train_losses(workdir: str) -> dict[int, float]:
    return {r["step"]: r["train_loss"] for r in read_metrics(workdir) if "train_loss" in r}


def assert_trees_equal(a, b):
    la, lb = jax.tree.leaves(a), jax.tree.leaves(b)
    assert jax.tree.structure(a) == jax.tree.structure(b)
    for x, y in zip(la, lb):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def assert_same_trajectory(got: dict, want: dict) -> None:
    """Split over devices, BatchNorm statistics and the loss mean are summed per device
    and then across devices: float32 rounding differs from one device (~1e-6 in a
    step) and the difference grows as training feeds it back (~1e-5 by step 3 at lr
    0.01). So: the first steps within 1e-5, the whole run within 5e-5."""
    steps = sorted(want)
    np.testing.assert_allclose([got[s] for s in steps[:2]], [want[s] for s in steps[:2]],
                               atol=1e-5, rtol=0)
    np.testing.assert_allclose([got[s] for s in steps], [want[s] for s in steps],
                               atol=5e-5, rtol=0)
