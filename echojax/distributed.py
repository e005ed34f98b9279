"""Multi-process start-up: ``jax.distributed.initialize`` when the job has several processes.

Two ways to describe the job, checked in this order:

1. The ``JAX_*`` variables, set in every process: ``JAX_COORDINATOR_ADDRESS`` (``host:port``
   of process 0), ``JAX_NUM_PROCESSES`` and ``JAX_PROCESS_ID`` (0-based). For machines
   without a cluster manager.
2. A cluster manager that JAX itself recognises (SLURM, Open MPI, Kubernetes, Cloud TPU:
   ``jax.distributed.initialize()`` with no arguments reads its variables, e.g. under
   ``srun`` ``SLURM_JOB_ID``, ``SLURM_NTASKS``, ``SLURM_PROCID``, ``SLURM_LOCALID`` and
   ``SLURM_STEP_NODELIST``; the coordinator is the job's first node). Used when the
   ``JAX_*`` variables are absent and the manager reports more than one process; one
   line on standard error names the manager and the process.

A single-process job (no variables, or a cluster job of one task, e.g. each task of a
SLURM job array running its own ``--shard``) does nothing: one process, all local
devices. Call :func:`initialize` before any other JAX call. On CPU, cross-process
collectives use gloo (JAX's default).
"""

from __future__ import annotations

import os
import sys

import jax

ENV_VARS = ("JAX_COORDINATOR_ADDRESS", "JAX_NUM_PROCESSES", "JAX_PROCESS_ID")


def initialize() -> bool:
    """Joins the job's processes (see the module doc). Returns True for a multi-process
    run, False for a single process.

    Raises ValueError when only some of the ``JAX_*`` variables are set or they are
    malformed, or when a detected cluster manager's process count or id is malformed.
    """
    present = {k: os.environ.get(k) for k in ENV_VARS if os.environ.get(k)}
    if present:
        return _from_jax_variables(present)
    cluster = detect_cluster()
    if cluster is None:
        return False
    name, count, pid = cluster
    print(f"echojax.distributed: {name} job of {count} processes detected; this is process "
          f"{pid}; joining with jax.distributed.initialize()", file=sys.stderr, flush=True)
    jax.distributed.initialize()
    return True


def _from_jax_variables(present: dict[str, str]) -> bool:
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


def detect_cluster() -> tuple[str, int, int] | None:
    """``(manager name, process count, this process's id)`` of the cluster manager that
    ``jax.distributed.initialize()`` would use, when it reports more than one process;
    None otherwise. Starts no backend and connects to nothing.

    The managers and their variables are JAX's own (its cluster registry, the same list
    and order ``initialize()`` walks; opt-in managers such as mpi4py are skipped, as
    ``initialize()`` skips them unless asked).
    """
    for env in _cluster_types():
        if getattr(env, "opt_in_only_method", False) or not env.is_env_present():
            continue
        name = getattr(env, "name", env.__name__)
        try:
            count, pid = int(env.get_process_count()), int(env.get_process_id())
        except (KeyError, ValueError) as e:
            raise ValueError(f"{name} job detected but its process count or id is malformed "
                             f"({e}); expected integers") from None
        if count <= 1:
            return None
        if not 0 <= pid < count:
            raise ValueError(f"{name} job: process id {pid} is outside [0, {count})")
        return name, count, pid
    return None


def _cluster_types() -> list:
    # JAX keeps its cluster managers in a private registry (``ClusterEnv`` subclasses,
    # the list ``jax.distributed.initialize()`` walks); there is no public accessor.
    from jax._src import clusters

    return list(clusters.ClusterEnv._cluster_types)
