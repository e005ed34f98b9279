"""A tiny run folder made without data or training (an initialised model saved as the
run's checkpoint), for the export and predict tests."""

from __future__ import annotations

import json
import os

import jax

from echojax import rundir, train
from echojax.checkpoint import Checkpoints
from echojax.config import Config, LossConfig, ModelConfig, Source


def tiny_model_config(resolution: int = 16, loss: str = "acce") -> Config:
    return Config(sources=(Source("synthetic_echo/camus_like_64", alias="camus"),),
                  resolution=resolution, loss=LossConfig(name=loss),
                  model=ModelConfig(name="unet", size="tiny", overrides={"widths": (4, 8)}),
                  batch_size=4, eval_batch_size=4, epochs=1, seed=5)


def make_run(workdir: str, config: Config | None = None, *, steps=(1, 2),
             dice=(0.25, 0.5)) -> rundir.RunDir:
    """A run folder with checkpoints at ``steps`` (the initial state, its step field set,
    parameters perturbed per step so the checkpoints differ) and validation rows in
    ``metrics.jsonl``. The last step has the best Dice unless ``dice`` says otherwise."""
    config = config or tiny_model_config()
    run = rundir.RunDir(workdir)
    os.makedirs(run.path, exist_ok=True)
    run.save_config(config)
    rundir.record_environment(run)
    # Eager initialisation: no compilation (the tests need a model, not a trained one).
    state = jax.device_get(train.make_init(config)(jax.random.key_data(jax.random.key(0))))
    checkpoints = Checkpoints(run.checkpoints)
    try:
        with open(run.metrics, "w") as f:
            for step, d in zip(steps, dice):
                s = dict(state, step=jax.numpy.int32(step),
                         params=jax.tree.map(lambda p, k=step: p + 0.01 * k, state["params"]))
                checkpoints.save(step, s, None, val_fg_dice=d)
                f.write(json.dumps({"step": step, "epoch": step, "validation/fg_dice": d,
                                    "validation/dice_lv": d}) + "\n")
    finally:
        checkpoints.close()
    return run
