"""Runs ``echojax.train.train_and_evaluate`` in its own process for the engine tests.

``--kill_after_save N`` SIGKILLs the process right after the checkpoint of step N is on
disk; ``--kill_during_save N`` SIGKILLs it while that checkpoint is being written
(before Orbax commits it). With ``JAX_COORDINATOR_ADDRESS`` etc. set, it joins a
multi-process run through ``echojax.distributed``.
"""

import argparse
import os
import signal

import jax

from echojax import distributed

jax.config.update("jax_disable_most_optimizations", True)  # as in tests/conftest.py


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--config", required=True)
    parser.add_argument("--workdir", required=True)
    parser.add_argument("--kill_after_save", type=int, default=None)
    parser.add_argument("--kill_during_save", type=int, default=None)
    args = parser.parse_args()
    distributed.initialize()

    from orbax.checkpoint._src.path import atomicity

    from echojax import checkpoint, train
    from echojax.config import Config

    original_save = checkpoint.Checkpoints.save
    original_finalize = atomicity.AtomicRenameTemporaryPath.finalize
    saving = {"step": None}

    def save(self, step, *a, **kw):
        saving["step"] = step
        original_save(self, step, *a, **kw)
        if step == args.kill_after_save:
            os.kill(os.getpid(), signal.SIGKILL)

    async def finalize(self, *a, **kw):
        if saving["step"] is not None and saving["step"] == args.kill_during_save:
            os.kill(os.getpid(), signal.SIGKILL)  # the step's temporary folder is left behind
        return await original_finalize(self, *a, **kw)

    checkpoint.Checkpoints.save = save
    atomicity.AtomicRenameTemporaryPath.finalize = finalize
    train.train_and_evaluate(Config.load(args.config), args.workdir)


if __name__ == "__main__":
    main()
