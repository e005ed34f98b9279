"""Multi-host start-up: ``jax.distributed.initialize`` when the environment asks for it.

Set, in every process, ``JAX_COORDINATOR_ADDRESS`` (``host:port`` of process 0),
``JAX_NUM_PROCESSES`` and ``JAX_PROCESS_ID`` (0-based), then run the same command in
each; ``initialize()`` connects them before any other JAX call. Without these variables
it does nothing (one process, all local devices). On CPU, cross-process collectives use
gloo (JAX's default).
"""

from __future__ import annotations

import os

import jax

ENV_VARS = ("JAX_COORDINATOR_ADDRESS", "JAX_NUM_PROCESSES", "JAX_PROCESS_ID")


def initialize() -> bool:
    """Calls ``jax.distributed.initialize`` from the ``JAX_*`` variables if they are set.

    Returns True if this is a multi-process run. Raises ValueError when only some of
    the variables are set or they are malformed.
    """
    present = {k: os.environ.get(k) for k in ENV_VARS if os.environ.get(k)}
    if not present:
        return False
    missing = [k for k in ENV_VARS if k not in present]
    if missing:
        raise ValueError(f"multi-process run needs all of {ENV_VARS}; missing {missing}")
    try:
        num, pid = int(present["JAX_NUM_PROCESSES"]), int(present["JAX_PROCESS_ID"])
    except ValueError:
        raise ValueError(f"JAX_NUM_PROCESSES and JAX_PROCESS_ID must be integers, got "
                         f"{present['JAX_NUM_PROCESSES']!r}, {present['JAX_PROCESS_ID']!r}") from None
    if not 0 <= pid < num:
        raise ValueError(f"JAX_PROCESS_ID={pid} must be in [0, JAX_NUM_PROCESSES={num})")
    jax.distributed.initialize(present["JAX_COORDINATOR_ADDRESS"], num_processes=num,
                               process_id=pid)
    return True
