"""What a run shows and leaves behind (echojax.progress): the curves of progress.png
from metrics.jsonl, TensorBoard events read back with TensorFlow's own reader, the
console lines, the default reporter of a real (tiny) training run, and read-only
checkpoints and TFDS checks without third-party noise."""

import glob
import io
import json
import logging
import os
from pathlib import Path

import numpy as np
import pytest
from fixtures_engine import read_metrics, tiny_config
from PIL import Image

from echojax import progress

# Hand-made metrics.jsonl rows: 5 steps per epoch, logged at steps 2, 4, 5, 7, 10 (so
# intervals of 2, 2, 1, 2, 3 steps), validated at the end of each epoch, two sources.
TRAIN_ROWS = [
    {"step": 2, "epoch": 0.4, "train_loss": 1.0, "lr": 0.10, "grad_norm": 0.5},
    {"step": 4, "epoch": 0.8, "train_loss": 2.0, "lr": 0.08, "grad_norm": 0.6},
    {"step": 5, "epoch": 1.0, "train_loss": 3.0, "lr": 0.07, "grad_norm": 0.7},
    {"step": 7, "epoch": 1.4, "train_loss": 4.0, "lr": 0.05, "grad_norm": 0.8},
    {"step": 10, "epoch": 2.0, "train_loss": 5.0, "lr": 0.01, "grad_norm": 0.9},
]
VAL_ROWS = [
    {"step": 5, "epoch": 1, "validation/fg_dice": 0.5, "validation/a/fg_dice": 0.4,
     "validation/a/dice_lv": 0.45, "validation/a/count_lv": 3,
     "validation/b/fg_dice": 0.6, "validation/b/dice_lv": 0.65, "validation/b/count_lv": 2},
    {"step": 10, "epoch": 2, "validation/fg_dice": 0.7, "validation/a/fg_dice": float("nan"),
     "validation/a/dice_lv": float("nan"), "validation/a/count_lv": 0,
     "validation/b/fg_dice": 0.8, "validation/b/dice_lv": 0.85, "validation/b/count_lv": 2},
]


def _rows():
    # In file order: the validation row of an epoch follows its last training row.
    return TRAIN_ROWS[:3] + VAL_ROWS[:1] + TRAIN_ROWS[3:] + VAL_ROWS[1:]


def _write_metrics(path, rows):
    with open(path, "w") as f:
        f.writelines(json.dumps(r) + "\n" for r in rows)


# --- progress.png ---------------------------------------------------------------------

def test_progress_curves_hand_values():
    c = progress.progress_curves(_rows())
    np.testing.assert_array_equal(c.train_epoch, [0.4, 0.8, 1.0, 1.4, 2.0])
    np.testing.assert_array_equal(c.loss, [1, 2, 3, 4, 5])
    np.testing.assert_array_equal(c.lr, [0.10, 0.08, 0.07, 0.05, 0.01])
    # Epoch 1: intervals 2, 2, 1 -> (2*1 + 2*2 + 1*3) / 5; epoch 2: 2, 3 -> (2*4 + 3*5) / 5.
    np.testing.assert_array_equal(c.epoch_index, [1, 2])
    np.testing.assert_allclose(c.epoch_loss, [9 / 5, 23 / 5])
    np.testing.assert_array_equal(c.val_epoch, [1, 2])
    assert sorted(c.val) == ["a", "all", "b"]
    np.testing.assert_array_equal(c.val["a"], [0.4, np.nan])
    np.testing.assert_array_equal(c.val["b"], [0.6, 0.8])
    np.testing.assert_array_equal(c.val["all"], [0.5, 0.7])


def test_progress_curves_refuse_steps_that_do_not_increase():
    rows = [dict(TRAIN_ROWS[1]), dict(TRAIN_ROWS[0])]
    with pytest.raises(ValueError, match="increasing steps"):
        progress.progress_curves(rows)


def test_figure_plots_exactly_the_file_values(tmp_path):
    path = tmp_path / "metrics.jsonl"
    _write_metrics(path, _rows())
    fig = progress.progress_figure(progress.progress_curves(progress.read_metrics(path)))
    ax_loss, ax_dice, ax_lr = fig.axes
    logged, mean = ax_loss.get_lines()
    assert list(logged.get_xdata()) == [r["epoch"] for r in TRAIN_ROWS]
    assert list(logged.get_ydata()) == [r["train_loss"] for r in TRAIN_ROWS]
    np.testing.assert_allclose(mean.get_ydata(), [1.8, 4.6])
    lines = {line.get_label(): line for line in ax_dice.get_lines()}
    assert set(lines) == {"a", "b", "all sources"}  # pooled drawn: two sources
    np.testing.assert_array_equal(lines["b"].get_ydata(), [0.6, 0.8])
    np.testing.assert_array_equal(lines["all sources"].get_ydata(), [0.5, 0.7])
    (lr,) = ax_lr.get_lines()
    assert list(lr.get_ydata()) == [r["lr"] for r in TRAIN_ROWS]


def test_progress_png_written_atomically_and_redrawn(tmp_path):
    _write_metrics(tmp_path / "metrics.jsonl", TRAIN_ROWS[:3] + VAL_ROWS[:1])
    path = progress.write_progress_png(tmp_path)
    assert path == str(tmp_path / "progress.png")
    first = Path(path).read_bytes()
    assert first.startswith(b"\x89PNG\r\n\x1a\n")
    with Image.open(path) as im:
        im.verify()
    _write_metrics(tmp_path / "metrics.jsonl", _rows())
    progress.write_progress_png(tmp_path)
    assert Path(path).read_bytes() != first
    assert sorted(os.listdir(tmp_path)) == ["metrics.jsonl", "progress.png"]  # no temp left


@pytest.mark.parametrize("background", [True, False])
def test_progress_plot_reporter_draws_the_rows_it_was_given(tmp_path, background):
    # A resumed run: rows already in the file, then the rest arrive through the hooks.
    _write_metrics(tmp_path / "metrics.jsonl", TRAIN_ROWS[:3] + VAL_ROWS[:1])
    plot = progress.ProgressPlot(background=background)
    plot.on_start(config=None, workdir=str(tmp_path), total_steps=10, start_step=5,
                  steps_per_epoch=5)
    for row in TRAIN_ROWS[3:]:
        plot.on_log(row)
    plot.on_eval(VAL_ROWS[1])
    plot.close()
    assert plot.rows == _rows()
    drawn = (tmp_path / "progress.png").read_bytes()
    _write_metrics(tmp_path / "metrics.jsonl", _rows())
    progress.write_progress_png(tmp_path)  # the same picture from the whole file
    assert (tmp_path / "progress.png").read_bytes() == drawn


def test_progress_plot_error_reaches_the_caller(tmp_path):
    plot = progress.ProgressPlot()
    (tmp_path / "a_file").write_text("")
    plot.on_start(config=None, workdir=str(tmp_path / "a_file" / "run"), total_steps=10,
                  start_step=0, steps_per_epoch=5)
    plot.on_log(TRAIN_ROWS[0])
    plot.on_eval(VAL_ROWS[0])  # the run folder cannot exist: the drawing thread fails
    with pytest.raises(RuntimeError, match="progress.png failed"):
        plot.close()


def test_read_metrics_names_a_bad_line(tmp_path):
    path = tmp_path / "metrics.jsonl"
    path.write_text('{"step": 1, "train_loss": 1.0}\n{"loss": 2}\n')
    with pytest.raises(ValueError, match=r"metrics.jsonl, line 2: .*'step'"):
        progress.read_metrics(path)


# --- TensorBoard ----------------------------------------------------------------------

def _read_events(logdir) -> tuple[dict, list]:
    """{(tag, step): value} and the session-log steps of every event file, read with
    TensorFlow's reader (the format TensorBoard reads)."""
    tf = pytest.importorskip("tensorflow")
    scalars, sessions = {}, []
    for path in sorted(glob.glob(os.path.join(str(logdir), "events.out.tfevents.*"))):
        for event in tf.compat.v1.train.summary_iterator(path):
            if event.HasField("session_log"):
                sessions.append(event.step)
            for v in event.summary.value:
                scalars[(v.tag, event.step)] = v.simple_value
    return scalars, sessions


def test_tensorboard_events_hold_the_exact_scalars(tmp_path):
    writer = progress.TensorBoardWriter()
    writer.on_start(config=None, workdir=str(tmp_path), total_steps=10, start_step=0,
                    steps_per_epoch=5)
    for row in _rows():
        (writer.on_eval if "validation/fg_dice" in row else writer.on_log)(row)
    writer.close()
    got, sessions = _read_events(tmp_path)
    assert sessions == [1]  # a fresh run's START (not a restart for TensorBoard)
    want = {}
    for r in TRAIN_ROWS:
        want[("train/loss", r["step"])] = r["train_loss"]
        want[("train/lr", r["step"])] = r["lr"]
        want[("train/grad_norm", r["step"])] = r["grad_norm"]
    for r in VAL_ROWS:
        for k in ("validation/fg_dice", "validation/a/fg_dice", "validation/a/dice_lv",
                  "validation/b/fg_dice", "validation/b/dice_lv"):
            want[(k, r["step"])] = r[k]
    assert set(got) == set(want)  # counts are not scalars
    for key, value in want.items():
        np.testing.assert_array_equal(np.float32(got[key]), np.float32(value), err_msg=str(key))


def test_tensorboard_resume_purges_past_the_restored_step(tmp_path):
    writer = progress.TensorBoardWriter()
    writer.on_start(config=None, workdir=str(tmp_path), total_steps=10, start_step=5,
                    steps_per_epoch=5)
    writer.on_log(TRAIN_ROWS[3])
    writer.close()
    got, sessions = _read_events(tmp_path)
    # Restored at step 5 (its rows kept): TensorBoard drops older events from step 6 on.
    assert sessions == [6]
    assert got == {("train/loss", 7): 4.0, ("train/lr", 7): np.float32(0.05),
                   ("train/grad_norm", 7): np.float32(0.8)}


# --- console lines --------------------------------------------------------------------

def test_format_seconds():
    assert [progress.format_seconds(s) for s in (0, 41.4, 59.6, 125, 3599, 3600, 3725)] == \
        ["0 s", "41 s", "1 min 00 s", "2 min 05 s", "59 min 59 s", "1 h 00 min", "1 h 02 min"]
    with pytest.raises(ValueError, match="finite"):
        progress.format_seconds(float("nan"))


def test_short_path():
    kw = {"cwd": "/work/repo", "home": "/home/u"}
    assert progress.short_path("/work/repo/runs/a", **kw) == "runs/a"
    assert progress.short_path("/home/u/echojax_runs/x", **kw) == "~/echojax_runs/x"
    assert progress.short_path("/work/repository/x", **kw) == "/work/repository/x"
    assert progress.short_path("/home/user2/x", **kw) == "/home/user2/x"


def test_run_line_hand_values(monkeypatch):
    monkeypatch.chdir("/")
    line = progress.run_line(3, 12, "unet/acce/d0.5/s0", seconds=125.2, directory="/r/x",
                             scores={"val Dice": 0.87349, "test Dice": float("nan")})
    assert line == "[3/12] unet/acce/d0.5/s0: done, val Dice 0.873, test Dice n/a, 2 min 05 s, r/x"
    skipped = progress.run_line(1, 2, "a", seconds=0, directory="/r/a",
                                status="skipped (finished before)")
    assert skipped == "[1/2] a: skipped (finished before), r/a"
    with pytest.raises(ValueError, match="1..2"):
        progress.run_line(3, 2, "a", seconds=0, directory="/r")


def test_step_postfix():
    assert progress.step_postfix(None, None) == "loss -, val Dice -"
    assert progress.step_postfix(0.123456, 0.8125) == "loss 0.1235, val Dice 0.812"
    assert progress.step_postfix(1.0, float("nan")) == "loss 1.0000, val Dice n/a"


def test_sweep_progress_lines_and_time_left(monkeypatch):
    monkeypatch.chdir("/")
    now = [100.0]
    out = io.StringIO()  # not a terminal: no bars, only the lines
    sweep = progress.SweepProgress(4, file=out, clock=lambda: now[0])
    sweep.skip("a", "/r/a")
    assert sweep.remaining_seconds() is None
    sweep.start("b")
    now[0] += 10
    sweep.finish("b", "/r/b", scores={"val Dice": 0.5})  # timed by the clock: 10 s
    sweep.start("c")
    # Mean of trained runs (10 s) for d, and all of it for c (just started).
    assert sweep.remaining_seconds() == 20.0
    now[0] += 4
    assert sweep.remaining_seconds() == 16.0  # c has 6 s left of the mean
    now[0] += 8
    assert sweep.remaining_seconds() == 10.0  # c past the mean: only d
    sweep.finish("c", "/r/c", seconds=20.0)
    assert sweep.remaining_seconds() == 15.0  # d left, mean 15 s
    sweep.log("table", level=progress.QUIET)
    with pytest.raises(ValueError, match="without start"):
        sweep.finish("d", "/r/d")
    sweep.skip("d", "/r/d")
    with pytest.raises(ValueError, match="all 4 runs"):
        sweep.start("e")
    sweep.close()
    assert out.getvalue().splitlines() == [
        "[1/4] a: skipped (finished before), r/a",
        "[2/4] b: done, val Dice 0.500, 10 s, r/b",
        "[3/4] c: done, 20 s, r/c",
        "table",
        "[4/4] d: skipped (finished before), r/d"]


def test_quiet_sweep_prints_only_what_is_asked_at_every_level():
    out = io.StringIO()
    sweep = progress.SweepProgress(1, verbosity=progress.QUIET, file=out)
    sweep.start("a")
    sweep.finish("a", "/r/a", seconds=1.0)
    sweep.log("debug", level=progress.VERBOSE)
    sweep.log("final table", level=progress.QUIET)
    sweep.close()
    assert out.getvalue() == "final table\n"


def test_verbosity_flags():
    import argparse
    parser = argparse.ArgumentParser()
    progress.add_verbosity_flags(parser)
    assert progress.verbosity(parser.parse_args([])) == progress.NORMAL
    assert progress.verbosity(parser.parse_args(["-q"])) == progress.QUIET
    assert progress.verbosity(parser.parse_args(["--verbose"])) == progress.VERBOSE
    with pytest.raises(SystemExit):
        parser.parse_args(["-q", "-v"])


# --- a real run with the default reporter ---------------------------------------------

class Recorder(progress.Reporter):
    def __init__(self):
        self.calls = []

    def on_start(self, **kwargs):
        self.calls.append(("start", kwargs["total_steps"], kwargs["start_step"],
                           kwargs["steps_per_epoch"]))

    def on_step(self, step):
        self.calls.append(("step", step))

    def on_log(self, row):
        self.calls.append(("log", dict(row)))

    def on_eval(self, row):
        self.calls.append(("eval", dict(row)))

    def close(self):
        self.calls.append(("close",))


@pytest.mark.xdist_group("engine")
def test_train_run_leaves_progress_png_and_events(engine_data_dir, tmp_path, capsys):
    from echojax import train
    config = tiny_config(engine_data_dir)
    workdir = str(tmp_path / "run")
    recorder = Recorder()
    out = io.StringIO()
    default = progress.default_reporter(progress.VERBOSE, file=out)
    reporter = progress.Reporters(default, recorder)
    train.train_and_evaluate(config, workdir, reporter=reporter)
    assert capsys.readouterr().out == ""  # the config is no longer printed by default
    rows = read_metrics(workdir)
    train_rows = [r for r in rows if "train_loss" in r]
    val_rows = [r for r in rows if "validation/fg_dice" in r]
    # Hooks: start, one call per step, the rows exactly as written, close last.
    assert recorder.calls[0] == ("start", 10, 0, 5)
    assert [c[1] for c in recorder.calls if c[0] == "step"] == list(range(1, 11))
    assert [c[1] for c in recorder.calls if c[0] == "log"] == train_rows
    evals = [c[1] for c in recorder.calls if c[0] == "eval"]
    assert json.loads(json.dumps(evals)) == val_rows
    assert recorder.calls[-1] == ("close",)
    # Verbose: the config and one line per evaluation (no bar: not a terminal).
    text = out.getvalue()
    assert json.loads(text[text.index("{"):text.index("\n}") + 2]) == json.loads(config.to_json())
    assert sum(line.startswith("epoch ") for line in text.splitlines()) == len(val_rows) == 2
    # progress.png drawn from exactly this run's metrics.jsonl rows; the events hold its
    # scalars.
    (plot,) = [r for r in default.reporters if isinstance(r, progress.ProgressPlot)]
    assert json.loads(json.dumps(plot.rows)) == rows
    with Image.open(os.path.join(workdir, "progress.png")) as im:
        assert im.format == "PNG"
    got, _ = _read_events(workdir)
    for r in train_rows:
        assert got[("train/loss", r["step"])] == np.float32(r["train_loss"])
    for r in val_rows:
        assert got[("validation/tiny/dice_lv", r["step"])] == np.float32(r["validation/tiny/dice_lv"])
    # Opening the run's checkpoints read-only logs nothing (Orbax warned twice before).
    from echojax.checkpoint import Checkpoints
    records = []
    handler = logging.Handler()
    handler.emit = records.append
    absl_logger = logging.getLogger("absl")
    filters_before = list(absl_logger.filters)
    absl_logger.addHandler(handler)
    try:
        ckpt = Checkpoints(os.path.join(workdir, "checkpoints"), read_only=True)
        assert ckpt.latest_step() == 10
        ckpt.close()
        # Other warnings still pass: the filter is gone once the manager exists.
        logging.getLogger("absl").warning("Given directory is read only=%s", "x")
    finally:
        absl_logger.removeHandler(handler)
    assert [r.getMessage() for r in records] == ["Given directory is read only=x"]
    assert absl_logger.filters == filters_before


# --- TFDS preparation -----------------------------------------------------------------

def test_is_prepared_without_tfds_warning(engine_data_dir, tmp_path):
    import tensorflow_datasets as tfds
    from fixtures import tiny_echo  # noqa: F401  registers tiny_echo
    records = []
    handler = logging.Handler()
    handler.emit = records.append
    logging.getLogger("absl").addHandler(handler)
    try:
        fresh = tfds.builder("tiny_echo/r16_n20", data_dir=str(tmp_path))
        assert progress.is_prepared(fresh) is False
        assert fresh.is_prepared() is False  # TFDS itself warns here
        prepared = tfds.builder("tiny_echo/r16_n20", data_dir=engine_data_dir)
        assert progress.is_prepared(prepared) is True
    finally:
        logging.getLogger("absl").removeHandler(handler)
    messages = [r.getMessage() for r in records]
    assert len(messages) == 1 and "has no dataset_info.json" in messages[0]


def test_tfds_progress_bars_restored_after_the_block():
    from tensorflow_datasets.core.utils import tqdm_utils
    before = tqdm_utils._active
    try:
        tqdm_utils.display_progress_bar(True)
        with pytest.raises(RuntimeError), progress.tfds_progress_bars(False):
            assert tqdm_utils._active is False
            raise RuntimeError
        assert tqdm_utils._active is True
    finally:
        tqdm_utils.display_progress_bar(before)


def test_prepare_prints_two_lines_and_no_tfds_bars(tmp_path, capsys):
    import tensorflow_datasets as tfds
    from fixtures import tiny_echo  # noqa: F401
    builder = tfds.builder("tiny_echo/r16_n20", data_dir=str(tmp_path))
    lines = []
    progress.prepare(builder, log=lines.append, file_format="array_record")
    assert progress.is_prepared(builder)
    assert [line.split(" in ")[0] for line in lines] == \
        ["preparing tiny_echo/r16_n20", "prepared tiny_echo/r16_n20"]
    captured = capsys.readouterr()
    assert "Shuffling" not in captured.err + captured.out  # TFDS's bars
    assert "prepared to" not in captured.out  # TFDS's own two lines
    assert "Downloading and preparing" not in captured.out


@pytest.mark.xdist_group("engine")
def test_train_main_quiet_prints_results_and_paths_only(engine_data_dir, tmp_path, capsys):
    from echojax import train
    path = tmp_path / "config.json"
    tiny_config(engine_data_dir).save(str(path))
    workdir = tmp_path / "run"
    train.main(["--config", str(path), "--workdir", str(workdir), "-q"])
    captured = capsys.readouterr()
    lines = captured.out.splitlines()
    assert len(lines) == 3 and captured.err == ""
    assert json.loads(lines[0])["step"] == 10
    assert lines[1] == f"run: {workdir}"
    assert lines[2] == f"curves: {workdir / 'progress.png'}, `tensorboard --logdir {workdir}`"
    assert (workdir / "progress.png").exists() and glob.glob(str(workdir / "events.out.*"))


def test_prepare_waits_for_another_process_and_uses_its_dataset(tmp_path):
    # Two shards preparing one dataset in one data_dir: the second waits for the first's
    # lock, then uses what it prepared (TFDS's own rename would fail in the second).
    import subprocess
    import sys
    import time

    import tensorflow_datasets as tfds
    from fixtures import tiny_echo  # noqa: F401

    name = "tiny_echo/r16_n20"
    builder = tfds.builder(name, data_dir=str(tmp_path))
    code = (f"import sys; sys.path.insert(0, {os.path.dirname(__file__)!r})\n"
            "import tensorflow_datasets as tfds\n"
            "from fixtures import tiny_echo\n"
            "from echojax import progress\n"
            f"b = tfds.builder({name!r}, data_dir={str(tmp_path)!r})\n"
            "progress.prepare(b, log=print, file_format='array_record')\n"
            "print('splits', sorted(b.info.splits))\n")
    with progress._prepare_lock(builder, name):
        other = subprocess.Popen([sys.executable, "-u", "-c", code], stdout=subprocess.PIPE,
                                 stderr=subprocess.PIPE, text=True)
        first = other.stdout.readline()  # printed just before it blocks on the lock
        assert first.startswith(f"waiting for another process preparing {name}"), \
            first + other.communicate()[1][-3000:]
        time.sleep(1)
        assert other.poll() is None  # still waiting
        progress._prepare(builder, name, progress.QUIET, None, file_format="array_record")
    out, err = other.communicate(timeout=300)
    assert other.returncode == 0, err[-3000:]
    lines = out.splitlines()
    assert not any(line.startswith("preparing") for line in lines)  # it did not prepare
    assert lines[-1] == "splits ['test', 'train', 'validation']"
    assert progress.is_prepared(builder)
