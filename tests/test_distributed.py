"""``echojax.distributed``: which job description it follows (``JAX_*`` variables, a
cluster manager JAX recognises, or none), and a two-process job started the way SLURM
starts one trains to the same result as one process."""

import jax
import numpy as np
import pytest
from fixtures_engine import (
    assert_same_trajectory,
    free_port,
    load_state,
    run_processes,
    tiny_config,
    train_losses,
)

from echojax import distributed, train

SLURM = {"SLURM_JOB_ID": "4242", "SLURM_NTASKS": "2", "SLURM_PROCID": "1",
         "SLURM_LOCALID": "1", "SLURM_STEP_NODELIST": "localhost"}
ALL_VARS = (*distributed.ENV_VARS, *SLURM, "OMPI_MCA_orte_hnp_uri", "OMPI_COMM_WORLD_SIZE",
            "KUBERNETES_SERVICE_HOST")


@pytest.fixture
def clean_env(monkeypatch):
    for k in ALL_VARS:
        monkeypatch.delenv(k, raising=False)
    calls = []
    monkeypatch.setattr(distributed.jax.distributed, "initialize",
                        lambda *a, **kw: calls.append((a, kw)))
    return calls


def test_a_single_process_does_nothing(clean_env):
    assert distributed.detect_cluster() is None
    assert distributed.initialize() is False
    assert clean_env == []


def test_slurm_job_of_two_tasks_is_detected_and_joined(clean_env, monkeypatch, capsys):
    for k, v in SLURM.items():
        monkeypatch.setenv(k, v)
    assert distributed.detect_cluster() == ("slurm", 2, 1)
    assert distributed.initialize() is True
    assert clean_env == [((), {})]  # JAX's own detection: no arguments
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "slurm job of 2 processes" in err and "process 1" in err


def test_slurm_job_of_one_task_stays_single_process(clean_env, monkeypatch):
    # e.g. one task of a job array, each running its own --shard
    for k, v in {**SLURM, "SLURM_NTASKS": "1", "SLURM_PROCID": "0"}.items():
        monkeypatch.setenv(k, v)
    assert distributed.detect_cluster() is None
    assert distributed.initialize() is False
    assert clean_env == []


def test_jax_variables_take_precedence_over_the_cluster(clean_env, monkeypatch):
    for k, v in SLURM.items():
        monkeypatch.setenv(k, v)
    monkeypatch.setenv("JAX_COORDINATOR_ADDRESS", "host0:1234")
    monkeypatch.setenv("JAX_NUM_PROCESSES", "4")
    monkeypatch.setenv("JAX_PROCESS_ID", "3")
    assert distributed.initialize() is True
    assert clean_env == [(("host0:1234",), {"num_processes": 4, "process_id": 3})]


@pytest.mark.parametrize("env, message", [
    ({"JAX_COORDINATOR_ADDRESS": "h:1"}, "missing"),
    ({"JAX_COORDINATOR_ADDRESS": "h:1", "JAX_NUM_PROCESSES": "two", "JAX_PROCESS_ID": "0"},
     "must be integers"),
    ({"JAX_COORDINATOR_ADDRESS": "h:1", "JAX_NUM_PROCESSES": "2", "JAX_PROCESS_ID": "2"},
     r"must be in \[0, JAX_NUM_PROCESSES=2\)"),
    ({**SLURM, "SLURM_NTASKS": "2x"}, "slurm job detected but its process count or id is malformed"),
    ({**SLURM, "SLURM_PROCID": "5"}, r"process id 5 is outside \[0, 2\)"),
])
def test_bad_job_descriptions_fail_clearly(clean_env, monkeypatch, env, message):
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    with pytest.raises(ValueError, match=message):
        distributed.initialize()
    assert clean_env == []


@pytest.mark.slow
def test_two_slurm_tasks_train_data_parallel_like_one_process(engine_data_dir, tmp_path):
    config = tiny_config(engine_data_dir)
    reference = str(tmp_path / "one")
    train.train_and_evaluate(config, reference)
    workdir = str(tmp_path / "slurm")
    # What srun sets for a 2-task step on one node; JAX derives the coordinator from the
    # first node of SLURM_STEP_NODELIST, and its port from the job id unless
    # JAX_COORDINATOR_PORT is set (a free one here, so parallel test runs do not clash).
    envs = [{**SLURM, "SLURM_PROCID": str(i), "SLURM_LOCALID": str(i),
             "JAX_COORDINATOR_PORT": str(port)} for port in [free_port()] for i in range(2)]
    errs = run_processes(config, workdir, envs)
    for i, err in enumerate(errs):
        assert f"slurm job of 2 processes detected; this is process {i}" in err
    got, want = train_losses(workdir), train_losses(reference)
    assert sorted(got) == sorted(want) == list(range(1, 11))
    assert_same_trajectory(got, want)
    got_params, ref_params = load_state(workdir)["params"], load_state(reference)["params"]
    for a, b in zip(jax.tree.leaves(got_params), jax.tree.leaves(ref_params), strict=True):
        np.testing.assert_allclose(a, b, atol=1e-4)
