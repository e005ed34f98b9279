"""The example SLURM scripts of docs/slurm/ are valid bash, and the commands they run
take the flags they pass (run with SLURM's variables, a --dry_run appended)."""

import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SLURM = os.path.join(ROOT, "docs", "slurm")
SCRIPTS = sorted(f for f in os.listdir(SLURM) if f.endswith(".sbatch"))


def test_the_scripts_are_there():
    assert SCRIPTS == ["data_parallel.sbatch", "report.sbatch", "sweep.sbatch"]


@pytest.mark.parametrize("script", SCRIPTS)
def test_valid_bash(script):
    subprocess.run(["bash", "-n", os.path.join(SLURM, script)], check=True)


def _env(tmp_path, **kw):
    bindir = os.path.dirname(sys.executable)
    return {**os.environ, "PATH": bindir + os.pathsep + os.environ["PATH"],
            "WORKDIR": str(tmp_path / "runs"), "DATA_DIR": str(tmp_path / "data"), **kw}


def test_sweep_task_runs_its_shard(tmp_path):
    env = _env(tmp_path, SLURM_ARRAY_TASK_ID="3", SLURM_ARRAY_TASK_COUNT="8")
    out = subprocess.run(["bash", os.path.join(SLURM, "sweep.sbatch"), "exp3_dropout",
                          "--loss=acce", "--dry_run"], cwd=ROOT, env=env, check=True,
                         capture_output=True, text=True, timeout=600).stdout
    runs = [line for line in out.splitlines() if line.startswith("{")]
    assert runs and all('"resolution": 256' in r for r in runs)  # the paper preset
    assert any('"loss": "acce"' in r for r in runs)
    # The whole sweep, for comparison: shard 3 of 8 holds about an eighth of it.
    total = subprocess.run([sys.executable, "experiments/exp3_dropout.py", "--preset=paper",
                            "--data=real", "--loss=acce", "--dry_run", "-q",
                            f"--workdir={tmp_path / 'all'}"], cwd=ROOT, env=env,
                           check=True, capture_output=True, text=True, timeout=600).stdout
    n = sum(line.startswith("{") for line in total.splitlines())
    assert n // 8 - 10 <= len(runs) <= n // 8 + 10 < n
    # Resubmitting one task alone keeps the array's shard count.
    env = _env(tmp_path, SLURM_ARRAY_TASK_ID="3", SLURM_ARRAY_TASK_COUNT="1", SHARDS="8")
    again = subprocess.run(["bash", os.path.join(SLURM, "sweep.sbatch"), "exp3_dropout",
                            "--loss=acce", "--dry_run"], cwd=ROOT, env=env, check=True,
                           capture_output=True, text=True, timeout=600).stdout
    assert [x for x in again.splitlines() if x.startswith("{")] == runs


def test_data_parallel_command_exists():
    out = subprocess.run([os.path.join(os.path.dirname(sys.executable), "echojax"), "train",
                          "--help"], check=True, capture_output=True, text=True).stdout
    assert "--config" in out and "--workdir" in out
