"""The training engine: determinism, exact resume, crash safety, device/process
invariance, NaN stop, compile-once. Tiny U-Net on 16x16 ``tiny_echo`` (2 epochs of 5
steps); runs that must be killed or need other devices/processes are subprocesses."""

import dataclasses
import os
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from fixtures_engine import (
    assert_same_trajectory,
    assert_trees_equal,
    free_port,
    load_state,
    read_metrics,
    run_processes,
    run_worker,
    tiny_config,
    train_losses,
)

from echojax import progress, train
from echojax.checkpoint import Checkpoints
from echojax.config import OptimConfig

pytestmark = pytest.mark.xdist_group("engine")


TIMING = ("epoch_train_seconds", "epoch_timed_steps", "first_step_seconds")


def untimed(rows: list[dict]) -> list[dict]:
    """``metrics.jsonl`` rows without the wall times, which differ from run to run."""
    return [{k: v for k, v in r.items() if k not in TIMING} for r in rows]


@pytest.fixture(scope="module")
def reference_run(engine_data_dir, tmp_path_factory):
    """An uninterrupted run, in this process: (config, workdir, result)."""
    config = tiny_config(engine_data_dir)
    workdir = str(tmp_path_factory.mktemp("reference") / "run")
    result = train.train_and_evaluate(config, workdir)
    return config, workdir, result


def test_run_layout_and_metrics(reference_run):
    config, workdir, result = reference_run
    assert result["step"] == 10
    rows = read_metrics(workdir)
    train_rows = [r for r in rows if "train_loss" in r]
    assert [r["step"] for r in train_rows] == list(range(1, 11))
    assert all(np.isfinite(r["train_loss"]) and r["grad_norm"] > 0 for r in train_rows)
    # Poly schedule, power 0.9: lr of step t (0-based) is lr0 (1 - t/T)^0.9.
    lrs = [r["lr"] for r in train_rows]
    want = [config.optim.lr * (1 - t / 10) ** 0.9 for t in range(10)]
    np.testing.assert_allclose(lrs, want, rtol=1e-6)
    val = [r for r in rows if "validation/fg_dice" in r]
    assert [r["step"] for r in val] == [5, 10]
    assert val[-1]["validation/tiny/count_lv"] == 5  # all 5 validation images annotated
    assert result["validation/fg_dice"] == val[-1]["validation/fg_dice"]
    ckpt = Checkpoints(os.path.join(workdir, "checkpoints"), read_only=True)
    assert ckpt.latest_step() == 10
    best = max(val, key=lambda r: (r["validation/fg_dice"], r["step"]))["step"]
    assert ckpt.best_step() == best and set(ckpt.all_steps()) == {best, 10}
    ckpt.close()


def test_epoch_rows_record_training_time_without_the_first_step(reference_run, tmp_path,
                                                                monkeypatch):
    config, _, _ = reference_run
    # The first step stands in for a slow compilation: 2 s more than any other step.
    step, calls = train.Engine.train_step, []

    def slow_first(self, state, batch):
        calls.append(1)
        if len(calls) == 1:
            time.sleep(2.0)
        return step(self, state, batch)

    monkeypatch.setattr(train.Engine, "train_step", slow_first)
    workdir = str(tmp_path / "run")
    train.train_and_evaluate(config, workdir, reporter=progress.Reporter())
    rows = read_metrics(workdir)
    timed = [r for r in rows if "epoch_train_seconds" in r]
    # One row per epoch, the training row at its last step, with loss and time together.
    assert [(r["step"], r["epoch"]) for r in timed] == [(5, 1.0), (10, 2.0)]
    assert all("train_loss" in r for r in timed)
    first, second = timed
    assert first["epoch_timed_steps"] == 4 and second["epoch_timed_steps"] == 5
    assert first["first_step_seconds"] >= 2.0 and "first_step_seconds" not in second
    # The slow first step is in neither epoch's training time (tiny steps: ms each).
    assert 0 < first["epoch_train_seconds"] < 2.0
    assert 0 < second["epoch_train_seconds"] < 2.0
    # Validation (at steps 5 and 10) is in neither: the rows are written before it.
    assert [r["step"] for r in rows if "validation/fg_dice" in r] == [5, 10]


def test_same_seed_is_bitwise_identical(reference_run, tmp_path):
    config, workdir, _ = reference_run
    again = str(tmp_path / "again")
    train.train_and_evaluate(config, again)
    assert untimed(read_metrics(again)) == untimed(read_metrics(workdir))
    assert_trees_equal(load_state(again), load_state(workdir))


def test_resume_after_sigkill_and_crash_while_saving(reference_run, tmp_path):
    config, reference, _ = reference_run
    workdir = str(tmp_path / "run")
    # 1. Killed right after the checkpoint of step 5 is written.
    proc = run_worker(config, workdir, "--kill_after_save", "5", check=False)
    assert proc.returncode == -9, proc.stderr[-2000:]
    assert Checkpoints(os.path.join(workdir, "checkpoints"), read_only=True).all_steps() == [5]
    # 2. Resumed, then killed while writing the checkpoint of step 10.
    proc = run_worker(config, workdir, "--kill_during_save", "10", check=False)
    assert proc.returncode == -9, proc.stderr[-2000:]
    leftovers = [d for d in os.listdir(os.path.join(workdir, "checkpoints")) if "tmp" in d]
    assert leftovers, "the interrupted save should leave its temporary folder"
    ckpt = Checkpoints(os.path.join(workdir, "checkpoints"), read_only=True)
    assert ckpt.latest_step() == 5  # the half-written step 10 is not a checkpoint
    ckpt.close()
    assert load_state(workdir)["step"] == 5
    # 3. Resumed from step 5 again, in this process: ends exactly as the uninterrupted run.
    result = train.train_and_evaluate(config, workdir)
    assert result["step"] == 10
    assert_trees_equal(load_state(workdir), load_state(reference))
    assert untimed(read_metrics(workdir)) == untimed(read_metrics(reference))
    # Each start times its first step apart: the killed start's epoch 1, this one's epoch 2.
    assert [("first_step_seconds" in r, r["epoch_timed_steps"]) for r in read_metrics(workdir)
            if "epoch_train_seconds" in r] == [(True, 4), (True, 4)]


def test_two_fake_devices_match_one(reference_run, tmp_path):
    config, reference, _ = reference_run
    workdir = str(tmp_path / "two_devices")
    # Keeps the caller's XLA_FLAGS (e.g. --xla_cpu_max_isa): same generated code as the reference.
    flags = os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=2"
    run_worker(config, workdir, env={"XLA_FLAGS": flags.strip()})
    got, want = train_losses(workdir), train_losses(reference)
    assert sorted(got) == sorted(want) == list(range(1, 11))
    assert_same_trajectory(got, want)
    ref_params = load_state(reference)["params"]
    for a, b in zip(jax.tree.leaves(load_state(workdir)["params"]), jax.tree.leaves(ref_params)):
        np.testing.assert_allclose(a, b, atol=1e-4)


@pytest.mark.slow
def test_two_processes_match_one(reference_run, tmp_path):
    config, reference, _ = reference_run
    workdir = str(tmp_path / "two_processes")
    port = free_port()
    run_processes(config, workdir, [
        {"JAX_COORDINATOR_ADDRESS": f"localhost:{port}", "JAX_NUM_PROCESSES": "2",
         "JAX_PROCESS_ID": str(pid)} for pid in range(2)])
    got, want = train_losses(workdir), train_losses(reference)
    assert sorted(got) == sorted(want)
    assert_same_trajectory(got, want)
    val = [r for r in read_metrics(workdir) if "validation/fg_dice" in r]
    ref_val = [r for r in read_metrics(reference) if "validation/fg_dice" in r]
    assert [r["validation/tiny/count_lv"] for r in val] == [5, 5]
    np.testing.assert_allclose([r["validation/fg_dice"] for r in val],
                               [r["validation/fg_dice"] for r in ref_val], atol=1e-3)


def test_nan_loss_stops_with_step_and_keeps_last_checkpoint(engine_data_dir, tmp_path,
                                                            monkeypatch):
    config = tiny_config(engine_data_dir, log_every=5)
    workdir = str(tmp_path / "nan")
    original = train.Engine.global_batch
    calls = {"train": 0}

    def poisoned(self, local):
        if "valid" not in local:  # a training batch
            calls["train"] += 1
            if calls["train"] == 8:  # step 8 (the 8th update) sees a NaN image
                local = dict(local, image=np.full(local["image"].shape, np.nan, np.float32))
        return original(self, local)

    monkeypatch.setattr(train.Engine, "global_batch", poisoned)
    with pytest.raises(train.NonFiniteLossError, match=r"training loss is nan at step 8 .*"
                                                       r"last good checkpoint .* is step 5"):
        train.train_and_evaluate(config, workdir)
    ckpt = Checkpoints(os.path.join(workdir, "checkpoints"), read_only=True)
    assert ckpt.all_steps() == [5]
    ckpt.close()
    state = load_state(workdir)
    assert state["step"] == 5
    assert all(np.isfinite(x).all() for x in jax.tree.leaves(state["params"]))
    assert all(np.isfinite(r.get("train_loss", 0.0)) for r in read_metrics(workdir))


def test_train_step_compiles_once_and_dropout_rate_is_traced(reference_run):
    config = reference_run[0]  # acce with LA dropout wired in
    engine = train.Engine(config, total_steps=10)
    mix = train.train_mixture(config)
    batches = train.pipeline.train_batches(mix, batch_size=4, seed=0)
    keys = ("image", "segmentation", "label_mask")
    state = jax.tree.map(jnp.copy, engine.initial_state)  # the step donates its input

    def put(x):
        return jax.device_put(jnp.float32(x), engine.replicated)

    sizes = []
    for i, rate in enumerate([0.0, 0.3, 1.0, 0.0]):
        batch = engine.global_batch({k: np.asarray(batches[i % 2][k]) for k in keys})
        state, m = engine.compiled_train_step(state, batch, dict(engine.hparams,
                                                                 dropout_rate=put(rate)))
        sizes.append(engine.compiled_train_step._cache_size())
    # (The step is shared by every run of this program in the process, hence sizes
    # are compared, not required to be 1.)
    assert sizes == [sizes[0]] * 4
    # The rate is used: the same batch and step with all LA dropped (acce then ignores
    # LA's logit) gives another loss than with none dropped.
    s0 = engine.initial_state
    batch = engine.global_batch({k: np.asarray(batches[0][k]) for k in keys})
    _, m0 = engine.compiled_train_step(jax.tree.map(jnp.copy, s0), batch,
                                       dict(engine.hparams, dropout_rate=put(0.0)))
    _, m1 = engine.compiled_train_step(jax.tree.map(jnp.copy, s0), batch,
                                       dict(engine.hparams, dropout_rate=put(1.0)))
    assert float(m0["loss"]) != float(m1["loss"])
    assert engine.compiled_train_step._cache_size() == sizes[0]


def test_runs_differing_only_in_dropout_rate_share_the_compiled_step(engine_data_dir):
    # Experiment 3 sweeps the rate; the rate is a traced argument of the step, so the
    # compiled program (keyed by program_key) must not depend on it.
    a = tiny_config(engine_data_dir)
    b = tiny_config(engine_data_dir, loss=dataclasses.replace(a.loss, dropout_rate=0.7))
    assert train.program_key(a) == train.program_key(b)
    c = tiny_config(engine_data_dir, loss=dataclasses.replace(a.loss, name="cce"))
    assert train.program_key(a) != train.program_key(c)


def test_runs_differing_only_in_lr_or_length_share_the_compiled_step(engine_data_dir):
    # Learning-rate grids and data-ratio experiments: the peak lr and the total step
    # count are traced arguments of the step, so neither is part of the program key...
    a = tiny_config(engine_data_dir)
    lr = tiny_config(engine_data_dir, optim=dataclasses.replace(a.optim, lr=0.1))
    longer = tiny_config(engine_data_dir, epochs=7)
    fewer = tiny_config(engine_data_dir, sources=(dataclasses.replace(
        a.sources[0], train_examples=8),))
    assert len({train.program_key(c) for c in (a, lr, longer, fewer)}) == 1
    other = tiny_config(engine_data_dir, optim=dataclasses.replace(a.optim, schedule="cosine"))
    assert train.program_key(other) != train.program_key(a)
    # ...and engines for other lrs and run lengths reuse the compiled step (its cache
    # does not grow), each applying its own rate: from the same state and batch, the
    # first update (Nesterov SGD from zero momentum: -1.9 lr g) scales with the peak lr,
    # and the second step's rate is its run's schedule value.
    mix = train.train_mixture(a)
    batches = train.pipeline.train_batches(mix, batch_size=4, seed=0)
    keys = ("image", "segmentation", "label_mask")
    first = train.Engine(a, total_steps=10)
    step_fn = first.compiled_train_step
    batch = first.global_batch({k: np.asarray(batches[0][k]) for k in keys})
    state0 = jax.device_get(first.initial_state)
    state, _ = first.train_step(jax.device_put(state0, first.replicated), batch)
    size = step_fn._cache_size()
    deltas, second_lrs = {}, {}
    for peak, total in [(0.1, 10), (0.05, 10), (0.1, 1000), (0.02, 3)]:
        engine = train.Engine(dataclasses.replace(
            a, optim=dataclasses.replace(a.optim, lr=peak)), total_steps=total)
        assert engine.compiled_train_step is step_fn
        state, m0 = engine.train_step(jax.device_put(state0, engine.replicated), batch)
        deltas[peak, total] = jax.tree.map(lambda x, y: np.asarray(x, np.float64) - y,
                                           jax.device_get(state["params"]), state0["params"])
        _, m1 = engine.train_step(state, batch)
        assert float(m0["lr"]) == np.float32(peak)
        second_lrs[peak, total] = float(m1["lr"])
    assert step_fn._cache_size() == size
    # (Float32 parameters ~0.1 carry ~1e-8 rounding in each difference.)
    for x, y in zip(jax.tree.leaves(deltas[0.1, 10]), jax.tree.leaves(deltas[0.05, 10])):
        np.testing.assert_allclose(x, 2 * y, rtol=1e-3, atol=5e-8)
        assert np.abs(x).max() > 1e-5
    for (peak, total), got in second_lrs.items():
        assert got == pytest.approx(peak * (1 - 1 / total) ** 0.9, rel=1e-6)


@pytest.mark.parametrize("name", ["poly", "cosine", "constant"])
def test_traced_schedule_equals_optax(name):
    # One compiled schedule (peak lr and length traced) against optax's own schedule
    # built from Python constants, over several lrs, lengths and every step (past the end
    # too; one shape, so one compilation). Both are float32; optax's values themselves differ
    # by an ulp or so between eager and jitted evaluation, hence the tolerance of a few ulps
    # of the peak lr.
    optim = OptimConfig(schedule=name)
    traced = jax.jit(lambda t, lr, total: jax.vmap(train.learning_rate_schedule(
        optim, total, peak_lr=lr))(t))
    optax_schedule = {"poly": lambda peak, total: optax.polynomial_schedule(peak, 0.0, 0.9, total),
                      "cosine": lambda peak, total: optax.cosine_decay_schedule(peak, total),
                      "constant": lambda peak, total: optax.constant_schedule(peak)}[name]
    for peak in (0.1, 0.01, 0.001):
        for total in (1, 7, 250):
            ref = optax_schedule(peak, total)
            steps = np.arange(253, dtype=np.int32)
            got = np.asarray(traced(steps, np.float32(peak), np.int32(total)))
            want = np.asarray(ref(jnp.asarray(steps)), np.float32) * np.ones(len(steps))
            np.testing.assert_allclose(got, want, rtol=0, atol=4 * np.finfo(np.float32).eps * peak)
            assert got[0] == np.float32(peak) and (got[total:] == want[total]).all()
    assert traced._cache_size() == 1


def test_engine_checks_total_steps(engine_data_dir):
    for bad in (0, -3, 2**31, 2.5):
        with pytest.raises(ValueError, match="total_steps must be a positive int32"):
            train.Engine(tiny_config(engine_data_dir), total_steps=bad)


def test_batch_must_divide_over_devices(engine_data_dir, monkeypatch):
    monkeypatch.setattr(jax, "device_count", lambda: 3)
    with pytest.raises(ValueError, match="batch_size=4 is not divisible by the 3 devices"):
        train.Engine(tiny_config(engine_data_dir), total_steps=1)


def test_workdir_with_other_config_is_refused(reference_run):
    config, workdir, _ = reference_run
    with pytest.raises(ValueError, match="holds a different config"):
        train.train_and_evaluate(tiny_config(config.data_dir, seed=99), workdir)


def test_foreground_dice_sums_and_counts():
    sums = np.array([0.0, 1.5, 0.0, 0.9])
    counts = np.array([0, 2, 0, 3])
    per_class, fg = train.dice_from_sums(sums, counts)
    np.testing.assert_allclose(per_class[[1, 3]], [0.75, 0.3])
    assert np.isnan(per_class[2])  # never annotated: left out, not counted as 0
    assert fg == pytest.approx((0.75 + 0.3) / 2)
    assert np.isnan(train.dice_from_sums(np.zeros(4), np.zeros(4, int))[1])


def test_schedules_and_weight_decay():
    for name, at_half in [("poly", 0.1 * 0.5 ** 0.9), ("cosine", 0.05), ("constant", 0.1)]:
        sched = train.learning_rate_schedule(OptimConfig(lr=0.1, schedule=name), 100)
        assert float(sched(50)) == pytest.approx(at_half, rel=1e-6)
    # Coupled L2: with a zero gradient, one plain SGD step moves w by -lr * wd * w.
    tx = train.make_optimizer(OptimConfig(lr=0.1, momentum=0.0, nesterov=False,
                                          schedule="constant", weight_decay=0.01), 10)
    w = {"w": jnp.array([2.0])}
    updates, _ = tx.update({"w": jnp.zeros(1)}, tx.init(w), w)
    np.testing.assert_allclose(optax.apply_updates(w, updates)["w"], [2.0 - 0.1 * 0.01 * 2.0])


def test_metrics_log_drops_a_half_written_last_line_on_resume(tmp_path):
    from echojax.rundir import MetricsLog
    path = tmp_path / "metrics.jsonl"
    path.write_text('{"step": 5, "loss": 1.0}\n{"step": 10, "loss": 0.5}\n{"step": 15, "lo')
    MetricsLog(str(path), resume_step=10, enabled=True)
    assert path.read_text() == '{"step": 5, "loss": 1.0}\n{"step": 10, "loss": 0.5}\n'


def test_metrics_log_names_a_corrupt_line(tmp_path):
    from echojax.rundir import MetricsLog
    path = tmp_path / "metrics.jsonl"
    path.write_text('{"step": 5}\nnot json\n{"step": 7}\n')
    with pytest.raises(ValueError, match=r"metrics.jsonl, line 2"):
        MetricsLog(str(path), resume_step=10, enabled=True)
