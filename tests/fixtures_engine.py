"""Shared helpers of the engine tests: a tiny config and a subprocess runner for runs that
must be killed, use fake devices or several processes (``tests/engine_worker.py``). Their
tiny dataset, one per test session, is the ``engine_data_dir`` fixture of ``conftest.py``."""

from __future__ import annotations

import json
import os
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
