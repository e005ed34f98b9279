"""What a user sees while runs train, and the curves each run leaves behind.

``echojax.train.train_and_evaluate(config, workdir, reporter=...)`` calls a
:class:`Reporter` on process 0: ``on_start`` once, ``on_step`` after each step is
dispatched (host integers only, nothing read back from the device), ``on_log`` with each
training row it appends to ``metrics.jsonl`` (so at the existing ``log_every`` cadence,
after the one device-to-host transfer the engine already makes), ``on_eval`` with each
validation row, and ``close`` at the end, also on error. The default,
:func:`default_reporter`, combines

- :class:`ConsoleReporter`: a bar over the run's steps showing the epoch, the training
  loss and the latest validation foreground Dice (the config is printed only when
  verbose);
- :class:`ProgressPlot`: ``<workdir>/progress.png``, the training loss, the validation
  foreground Dice per source and the learning rate against the epoch (the three curves
  nnU-Net's ``progress.png`` shows), redrawn from the rows of ``metrics.jsonl`` at each
  evaluation, in a background thread, and replaced atomically;
- :class:`TensorBoardWriter`: TensorBoard event files in ``<workdir>`` written with
  tensorboardX (no TensorFlow): ``train/loss``, ``train/lr``, ``train/grad_norm`` and
  every ``validation/...`` Dice of ``metrics.jsonl`` (per source and class, and pooled).

A sweep drives :class:`SweepProgress`: a bar over its runs (run i/N and its name, time
elapsed and an estimate of the time left), one line per finished run, and a per-run
reporter whose step bar sits under the run bar.

Verbosity (:data:`QUIET`, :data:`NORMAL`, :data:`VERBOSE`; flags from
:func:`add_verbosity_flags`): quiet prints no bars and no per-run lines, only what the
caller prints at the end (final table and paths); verbose adds each run's config and a
line per evaluation. Bars are drawn only on a terminal (tqdm's ``disable=None``): output
redirected to a file gets the lines, not carriage-return redraws.

Also here, because they decide what the terminal shows: :func:`is_prepared` and
:func:`prepare` (TFDS dataset preparation without TFDS's own bars and its warning for a
dataset that was never prepared).
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import os
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any, TextIO

import numpy as np
import tqdm

from echojax import files

QUIET, NORMAL, VERBOSE = 0, 1, 2

PROGRESS_PNG = "progress.png"
METRICS = "metrics.jsonl"


def add_verbosity_flags(parser) -> None:
    """``-v/--verbose`` and ``-q/--quiet`` (exclusive) on an argparse parser; read them
    back with :func:`verbosity`."""
    group = parser.add_mutually_exclusive_group()
    group.add_argument("-v", "--verbose", action="store_true",
                       help="also print each run's config and a line per evaluation")
    group.add_argument("-q", "--quiet", action="store_true",
                       help="no progress bars or per-run lines; only the final results and paths")


def verbosity(args) -> int:
    """The level set by :func:`add_verbosity_flags`' flags on parsed ``args``."""
    if getattr(args, "verbose", False) and getattr(args, "quiet", False):
        raise ValueError("--verbose and --quiet exclude each other")
    return VERBOSE if getattr(args, "verbose", False) else QUIET if getattr(args, "quiet", False) \
        else NORMAL


# --- formatting ---------------------------------------------------------------------------

def format_seconds(seconds: float) -> str:
    """``41 s``, ``2 min 05 s``, ``1 h 02 min`` (rounded to whole seconds / minutes)."""
    if not math.isfinite(seconds) or seconds < 0:
        raise ValueError(f"seconds must be finite and >= 0, got {seconds}")
    s = round(seconds)
    if s < 60:
        return f"{s} s"
    if s < 3600:
        return f"{s // 60} min {s % 60:02d} s"
    m = round(seconds / 60)
    return f"{m // 60} h {m % 60:02d} min"


def short_path(path: str | os.PathLike, *, cwd: str | None = None,
               home: str | None = None) -> str:
    """``path`` relative to ``cwd`` when inside it, else with the home folder as ``~``."""
    path = os.path.abspath(os.fspath(path))
    cwd = os.path.abspath(cwd if cwd is not None else os.getcwd())
    home = os.path.abspath(home if home is not None else os.path.expanduser("~"))
    if path == cwd or path.startswith(cwd.rstrip(os.sep) + os.sep):
        return os.path.relpath(path, cwd)
    if path == home or path.startswith(home.rstrip(os.sep) + os.sep):
        return "~" + path[len(home.rstrip(os.sep)):]
    return path


def _score(value: float | None) -> str:
    return "n/a" if value is None or not math.isfinite(value) else f"{value:.3f}"


def run_line(index: int, total: int, name: str, *, seconds: float, directory: str,
             scores: Mapping[str, float | None] = (), status: str = "done") -> str:
    """One line for a finished run, e.g.
    ``[3/12] acce/seed0: done, val Dice 0.873, test Dice 0.851, 41 s, runs/acce/seed0``.

    ``scores`` maps a label to a value (NaN or None print as ``n/a``); ``status`` is
    ``done`` or ``skipped (finished before)``, which prints no time.
    """
    if not 1 <= index <= total:
        raise ValueError(f"run index must be in 1..{total}, got {index}")
    parts = [status] + [f"{label} {_score(v)}" for label, v in dict(scores).items()]
    if status == "done":
        parts.append(format_seconds(seconds))
    parts.append(short_path(directory))
    return f"[{index}/{total}] {name}: " + ", ".join(parts)


def step_postfix(loss: float | None, val_dice: float | None) -> str:
    """The step bar's postfix: ``loss 0.4321, val Dice 0.812`` (``val Dice -`` before the
    first evaluation)."""
    loss_text = "-" if loss is None else f"{loss:.4f}"
    dice_text = "-" if val_dice is None else _score(val_dice)
    return f"loss {loss_text}, val Dice {dice_text}"


# --- reporters ----------------------------------------------------------------------------

class Reporter:
    """Hooks of ``train_and_evaluate``; each does nothing here (subclass what you need).

    Called on process 0 only. ``on_step`` runs on the hot path after each step is
    dispatched and gets only the host step count. ``on_log`` and ``on_eval`` get the rows
    just appended to ``metrics.jsonl`` (plain floats). ``close`` is always called.
    """

    def on_start(self, *, config: Any, workdir: str, total_steps: int, start_step: int,
                 steps_per_epoch: int) -> None:
        pass

    def on_step(self, step: int) -> None:
        pass

    def on_log(self, row: Mapping[str, Any]) -> None:
        pass

    def on_eval(self, row: Mapping[str, Any]) -> None:
        pass

    def close(self) -> None:
        pass


class Reporters(Reporter):
    """Several reporters called in order (``close`` reaches all of them)."""

    def __init__(self, *reporters: Reporter):
        self.reporters = reporters

    def on_start(self, **kwargs) -> None:
        for r in self.reporters:
            r.on_start(**kwargs)

    def on_step(self, step: int) -> None:
        for r in self.reporters:
            r.on_step(step)

    def on_log(self, row) -> None:
        for r in self.reporters:
            r.on_log(row)

    def on_eval(self, row) -> None:
        for r in self.reporters:
            r.on_eval(row)

    def close(self) -> None:
        errors = []
        for r in self.reporters:
            try:
                r.close()
            except Exception as e:  # noqa: BLE001  close the others, re-raise the first
                errors.append(e)
        if errors:
            raise errors[0]


class ConsoleReporter(Reporter):
    """The step bar of one run (``position``/``leave`` place it under a sweep's run bar);
    verbose also prints the config at the start and a line per evaluation."""

    def __init__(self, verbosity: int = NORMAL, *, file: TextIO | None = None,
                 position: int | None = None, leave: bool = True,
                 on_refresh: Callable[[], None] | None = None):
        self.verbosity, self.file = verbosity, file
        self.position, self.leave, self.on_refresh = position, leave, on_refresh
        self.bar: tqdm.tqdm | None = None
        self.loss: float | None = None
        self.val_dice: float | None = None
        self.epochs = 0
        self.t0 = time.perf_counter()

    def _write(self, text: str) -> None:
        tqdm.tqdm.write(text, file=self.file or sys.stdout)

    def on_start(self, *, config, workdir, total_steps, start_step, steps_per_epoch) -> None:
        self.epochs = math.ceil(total_steps / steps_per_epoch)
        self.t0 = time.perf_counter()
        if self.verbosity >= VERBOSE:
            self._write(f"config of {workdir}:\n{config.to_json().rstrip()}")
            if start_step:
                self._write(f"resuming {workdir} at step {start_step}")
        self.bar = tqdm.tqdm(
            total=total_steps, initial=start_step, unit="step", dynamic_ncols=True,
            disable=True if self.verbosity <= QUIET else None, file=self.file,
            position=self.position, leave=self.leave,
            desc=f"epoch {start_step // steps_per_epoch + 1}/{self.epochs}",
            postfix=step_postfix(None, None))

    def on_step(self, step: int) -> None:
        self.bar.update(1)

    def on_log(self, row) -> None:
        self.loss = float(row["train_loss"])
        self.bar.set_description_str(
            f"epoch {min(math.floor(row['epoch']) + 1, self.epochs)}/{self.epochs}",
            refresh=False)
        self.bar.set_postfix_str(step_postfix(self.loss, self.val_dice), refresh=False)
        if self.on_refresh is not None:
            self.on_refresh()

    def on_eval(self, row) -> None:
        self.val_dice = float(row["validation/fg_dice"])
        self.bar.set_postfix_str(step_postfix(self.loss, self.val_dice))
        if self.verbosity >= VERBOSE:
            self._write(f"epoch {row['epoch']}/{self.epochs} (step {row['step']}): "
                        f"{step_postfix(self.loss, self.val_dice)}, "
                        f"{format_seconds(time.perf_counter() - self.t0)}")

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


class ProgressPlot(Reporter):
    """Redraws ``<workdir>/progress.png`` at each evaluation from the rows of
    ``metrics.jsonl``: those in the file when the run (re)starts, then each row as it is
    appended (the same values, without re-reading the file).

    Drawing takes 0.2-1 s; with ``background=True`` (default) it runs in a thread so the
    training loop does not wait for it (when a draw is still running at the next
    evaluation, only the latest rows are drawn next). ``close`` waits for the last draw;
    an error while drawing is raised in the training thread at the next evaluation or at
    ``close``.
    """

    def __init__(self, *, background: bool = True):
        self.background = background
        self.workdir: str | None = None
        self.rows: list[dict[str, Any]] = []
        self._cond = threading.Condition()
        self._latest: list[dict[str, Any]] | None = None
        self._closing = False
        self._error: BaseException | None = None
        self._thread: threading.Thread | None = None

    def on_start(self, *, workdir, **_) -> None:
        self.workdir = workdir
        path = os.path.join(workdir, METRICS)
        self.rows = read_metrics(path) if os.path.exists(path) else []
        if self.background:
            self._thread = threading.Thread(target=self._run, name="progress.png",
                                            daemon=True)
            self._thread.start()

    def on_log(self, row) -> None:
        self.rows.append(dict(row))

    def on_eval(self, row) -> None:
        self.rows.append(dict(row))
        self._raise_error()
        if self._thread is None:
            self._draw(list(self.rows))
            return
        with self._cond:
            self._latest = list(self.rows)
            self._cond.notify()

    def _draw(self, rows: list[dict[str, Any]]) -> None:
        plot_progress(progress_curves(rows), os.path.join(self.workdir, PROGRESS_PNG),
                      title=short_path(self.workdir))

    def _run(self) -> None:
        while True:
            with self._cond:
                while self._latest is None and not self._closing:
                    self._cond.wait()
                rows, self._latest = self._latest, None
            if rows is None:  # closing, nothing left to draw
                return
            try:
                self._draw(rows)
            except BaseException as e:  # noqa: BLE001  handed to the training thread
                self._error = e
                return

    def _raise_error(self) -> None:
        if self._error is not None:
            error, self._error = self._error, None
            raise RuntimeError(f"drawing {os.path.join(self.workdir, PROGRESS_PNG)} "
                               f"failed: {error}") from error

    def close(self) -> None:
        if self._thread is not None:
            with self._cond:
                self._closing = True
                self._cond.notify()
            self._thread.join()
            self._thread = None
        self._raise_error()


class TensorBoardWriter(Reporter):
    """TensorBoard event files in the run folder (tensorboardX, no TensorFlow): one event
    per ``metrics.jsonl`` row, holding its scalars (:func:`train_scalars`,
    :func:`validation_scalars`) at the row's step.

    Each start (fresh or resumed from step ``S``, 0 when fresh) opens a new event file
    beginning with a ``SessionLog.START`` at step ``S + 1``. TensorBoard treats every
    START after a run's first as a restart and drops the events it holds from that step
    on: a resumed run's points replace the killed run's past the checkpoint, and the
    points up to ``S`` stay, as the rows of ``metrics.jsonl`` do.
    """

    def __init__(self, logdir: str | None = None):
        self.logdir = logdir
        self.writer = None

    def on_start(self, *, workdir, start_step, **_) -> None:
        from tensorboardX import FileWriter
        from tensorboardX.proto.event_pb2 import Event, SessionLog
        self.writer = FileWriter(self.logdir or workdir)
        self.writer.add_event(Event(session_log=SessionLog(status=SessionLog.START)),
                              step=start_step + 1)

    def _write(self, scalars: Mapping[str, float], step: int) -> None:
        from tensorboardX.proto.summary_pb2 import Summary
        self.writer.add_summary(
            Summary(value=[Summary.Value(tag=k, simple_value=v) for k, v in scalars.items()]),
            global_step=step)

    def on_log(self, row) -> None:
        self._write(train_scalars(row), int(row["step"]))

    def on_eval(self, row) -> None:
        self._write(validation_scalars(row), int(row["step"]))
        self.writer.flush()

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


def train_scalars(row: Mapping[str, Any]) -> dict[str, float]:
    """TensorBoard tags of a training row of ``metrics.jsonl``."""
    names = {"train_loss": "train/loss", "lr": "train/lr", "grad_norm": "train/grad_norm"}
    return {tag: float(row[k]) for k, tag in names.items() if k in row}


def validation_scalars(row: Mapping[str, Any]) -> dict[str, float]:
    """TensorBoard tags of a validation row: every Dice entry under its own key
    (``validation/<alias>/dice_lv``, ``validation/<alias>/fg_dice``,
    ``validation/fg_dice``); the example counts are left out."""
    return {k: float(v) for k, v in row.items()
            if k.startswith("validation/") and "/count_" not in k}


def default_reporter(verbosity: int = NORMAL, **console) -> Reporter:
    """The step bar, ``progress.png`` and TensorBoard events (``console``: arguments of
    :class:`ConsoleReporter`, e.g. ``position`` under a sweep's bar)."""
    return Reporters(ConsoleReporter(verbosity, **console), ProgressPlot(), TensorBoardWriter())


# --- progress.png -------------------------------------------------------------------------

def read_metrics(path: str | os.PathLike) -> list[dict[str, Any]]:
    """The rows of a ``metrics.jsonl``; ValueError naming the file and line for one that is
    not a JSON object with a ``step``."""
    rows = []
    with open(path) as f:
        for number, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
                row["step"]
            except (json.JSONDecodeError, KeyError, TypeError) as e:
                raise ValueError(f"{path}, line {number}: not a metrics row ({e}); expected "
                                 "a JSON object with a 'step'") from e
            rows.append(row)
    return rows


@dataclasses.dataclass
class Curves:
    """What ``progress.png`` plots, all against the epoch (fractional for training rows,
    ``step / steps_per_epoch``).

    ``loss``: the logged training losses (each the mean over its log interval);
    ``epoch_loss``: their mean per epoch weighted by interval length (the steps since the
    previous row), at whole epochs; ``val``: validation foreground Dice per source alias,
    plus ``"all"`` pooled over sources, at the evaluated epochs (NaN where undefined).
    """
    train_epoch: np.ndarray
    loss: np.ndarray
    lr: np.ndarray
    epoch_index: np.ndarray
    epoch_loss: np.ndarray
    val_epoch: np.ndarray
    val: dict[str, np.ndarray]


def progress_curves(rows: Sequence[Mapping[str, Any]]) -> Curves:
    """The curves of ``metrics.jsonl`` rows (training rows have ``train_loss``; validation
    rows ``validation/fg_dice``)."""
    train = [r for r in rows if "train_loss" in r]
    val = [r for r in rows if "validation/fg_dice" in r]
    train_epoch = np.array([float(r["epoch"]) for r in train])
    loss = np.array([float(r["train_loss"]) for r in train])
    lr = np.array([float(r["lr"]) for r in train])
    # Interval lengths: steps since the previous training row (the first from step 0).
    steps = np.array([int(r["step"]) for r in train])
    weights = np.diff(steps, prepend=0).astype(float)
    if (weights <= 0).any():
        raise ValueError(f"training rows must have increasing steps, got {steps.tolist()}")
    # The epoch a row ends in: a row at epoch 2.0 closes epoch 2, one at 2.2 is in epoch 3.
    bins = np.ceil(train_epoch - 1e-9).astype(int)
    epoch_index = np.unique(bins)
    epoch_loss = np.array([np.average(loss[bins == e], weights=weights[bins == e])
                           for e in epoch_index])
    aliases = sorted({k.split("/")[1] for r in val for k in r
                      if k.startswith("validation/") and k.endswith("/fg_dice")
                      and k.count("/") == 2})
    curves = {a: np.array([float(r.get(f"validation/{a}/fg_dice", math.nan)) for r in val])
              for a in aliases}
    curves["all"] = np.array([float(r["validation/fg_dice"]) for r in val])
    return Curves(train_epoch=train_epoch, loss=loss, lr=lr, epoch_index=epoch_index,
                  epoch_loss=epoch_loss, val_epoch=np.array([float(r["epoch"]) for r in val]),
                  val=curves)


def progress_figure(curves: Curves, *, title: str = ""):
    """The matplotlib ``Figure`` of ``curves``: training loss, validation foreground Dice
    per source (and pooled over sources when there are several), learning rate, over a
    shared epoch axis. Epoch means are drawn at the end of their epoch, as the
    validations are."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    # Fixed margins: a layout engine doubles the drawing time (0.7 s -> 1.5 s on a busy
    # 2-core machine), which every evaluation would wait for.
    fig = Figure(figsize=(8, 9))
    FigureCanvasAgg(fig)
    ax_loss, ax_dice, ax_lr = fig.subplots(3, 1, sharex=True)
    fig.subplots_adjust(left=0.1, right=0.97, bottom=0.06, top=0.95 if title else 0.98,
                        hspace=0.08)
    ax_loss.plot(curves.train_epoch, curves.loss, color="tab:blue", alpha=0.35, lw=1,
                 label="logged (mean over each log interval)")
    ax_loss.plot(curves.epoch_index, curves.epoch_loss, color="tab:blue", marker="o", ms=3,
                 label="epoch mean")
    ax_loss.set_ylabel("training loss")
    ax_loss.legend(loc="upper right", fontsize="small")
    sources = [a for a in curves.val if a != "all"]
    for alias in sources:
        ax_dice.plot(curves.val_epoch, curves.val[alias], marker="o", ms=3, label=alias)
    if len(sources) != 1:
        ax_dice.plot(curves.val_epoch, curves.val["all"], color="black", ls="--", marker="o",
                     ms=3, label="all sources")
    ax_dice.set_ylabel("validation foreground Dice")
    ax_dice.set_ylim(0, 1)
    if curves.val_epoch.size:
        ax_dice.legend(loc="lower right", fontsize="small")
    ax_lr.plot(curves.train_epoch, curves.lr, color="tab:green")
    ax_lr.set_ylabel("learning rate")
    ax_lr.set_xlabel("epoch")
    for ax in (ax_loss, ax_dice, ax_lr):
        ax.grid(alpha=0.3)
    if title:
        fig.suptitle(title)
    return fig


def plot_progress(curves: Curves, path: str | os.PathLike, *, title: str = "") -> None:
    """Draws ``curves`` into a PNG at ``path``, atomically (a temporary file in the same
    folder, then renamed): a reader never sees a half-written picture."""
    fig = progress_figure(curves, title=title)
    with files.atomic_path(path, suffix=".png") as tmp:
        fig.savefig(tmp, format="png", dpi=100)


def write_progress_png(workdir: str | os.PathLike) -> str:
    """(Re)draws ``<workdir>/progress.png`` from ``<workdir>/metrics.jsonl``; returns its
    path."""
    workdir = os.fspath(workdir)
    path = os.path.join(workdir, PROGRESS_PNG)
    plot_progress(progress_curves(read_metrics(os.path.join(workdir, METRICS))), path,
                  title=short_path(workdir))
    return path


# --- a sweep's run bar --------------------------------------------------------------------

class SweepProgress:
    """The bar over a sweep's runs and one line per run (see the module doc).

    ::

        sweep = SweepProgress(len(runs), verbosity=v)
        for run in runs:
            if finished(run):
                sweep.skip(run.name, directory)
                continue
            sweep.start(run.name)
            result = train_and_evaluate(config, directory, reporter=sweep.run_reporter())
            ...  # test evaluation
            sweep.finish(run.name, directory,
                         scores={"val Dice": result["best/val_fg_dice"], "test Dice": test})
        sweep.close()
        sweep.log(final_table, level=QUIET)  # printed at every verbosity

    A run's time is from ``start`` to ``finish`` (training and test evaluation) unless
    ``finish`` is given ``seconds``. The time left is the mean time of the runs trained
    so far for each run not started, plus what that mean leaves of the running one;
    skipped runs take no time and do not count. ``clock`` is for tests.
    """

    BAR_FORMAT = "{desc} |{bar}| {n_fmt}/{total_fmt} runs, {elapsed} elapsed{postfix}"

    def __init__(self, total: int, *, verbosity: int = NORMAL, file: TextIO | None = None,
                 clock: Callable[[], float] = time.perf_counter):
        if total < 0:
            raise ValueError(f"total must be >= 0, got {total}")
        self.total, self.verbosity, self.file, self.clock = total, verbosity, file, clock
        self.index = 0
        self.trained_seconds: list[float] = []
        self.started: float | None = None  # clock() at start() of the running run
        self._last_tick = -math.inf
        self.bar = tqdm.tqdm(total=total, dynamic_ncols=True, file=file, position=0,
                             disable=True if verbosity <= QUIET else None,
                             bar_format=self.BAR_FORMAT, desc="runs", postfix="")

    def log(self, text: str, level: int = NORMAL) -> None:
        """Prints ``text`` above the bars if the verbosity is at least ``level``."""
        if self.verbosity >= level:
            tqdm.tqdm.write(text, file=self.file or sys.stdout)

    def remaining_seconds(self) -> float | None:
        """Estimated time left (None before the first trained run)."""
        if not self.trained_seconds:
            return None
        mean = float(np.mean(self.trained_seconds))
        left = mean * (self.total - self.index)
        if self.started is not None:
            left += max(mean - (self.clock() - self.started), 0.0)
        return left

    def _postfix(self) -> str:
        left = self.remaining_seconds()
        done = self.index == self.total and self.started is None
        return "" if left is None or done else f"~{format_seconds(left)} left"

    def _next(self) -> None:
        if self.index >= self.total:
            raise ValueError(f"all {self.total} runs were already started or skipped")
        self.index += 1

    def start(self, name: str) -> None:
        """The next run begins training."""
        self._next()
        self.started = self.clock()
        self.bar.set_description_str(f"run {self.index}/{self.total} {name}", refresh=False)
        self.bar.set_postfix_str(self._postfix())

    def tick(self) -> None:
        """Redraws the run bar (elapsed time, time left), at most once a second; the
        per-run reporter calls it at each logged step."""
        now = self.clock()
        if now - self._last_tick >= 1.0:
            self._last_tick = now
            self.bar.set_postfix_str(self._postfix())

    def run_reporter(self) -> Reporter:
        """The default per-run reporter, its step bar under the run bar."""
        return default_reporter(self.verbosity, position=1, leave=False, file=self.file,
                                on_refresh=self.tick)

    def finish(self, name: str, directory: str, *, seconds: float | None = None,
               scores: Mapping[str, float | None] = ()) -> None:
        """The running run finished: its line, and the bar moves."""
        if self.started is None:
            raise ValueError(f"finish({name!r}) without start()")
        if seconds is None:
            seconds = self.clock() - self.started
        self.started = None
        self.trained_seconds.append(seconds)
        self.log(run_line(self.index, self.total, name, seconds=seconds, directory=directory,
                          scores=scores))
        self.bar.update(1)
        self.bar.set_postfix_str(self._postfix())

    def skip(self, name: str, directory: str) -> None:
        """The next run was finished before (nothing trained)."""
        self._next()
        self.log(run_line(self.index, self.total, name, seconds=0.0, directory=directory,
                          status="skipped (finished before)"))
        self.bar.update(1)

    def close(self) -> None:
        self.bar.set_description_str("runs", refresh=False)
        self.bar.set_postfix_str(self._postfix(), refresh=False)
        self.bar.close()


# --- TFDS preparation without its bars and warnings ---------------------------------------

def is_prepared(builder) -> bool:
    """``builder.is_prepared()`` without TFDS's "Variant folder ... has no
    dataset_info.json" warning for a dataset that was never prepared: TFDS logs it for
    any variant folder without that file, including one that does not exist. A folder
    that exists without it (an interrupted preparation) still gets TFDS's warning."""
    return builder.data_path.exists() and builder.is_prepared()


@contextlib.contextmanager
def tfds_progress_bars(enabled: bool) -> Iterator[None]:
    """TFDS's own progress bars on or off inside the block, restored after."""
    from tensorflow_datasets.core.utils import tqdm_utils
    before = getattr(tqdm_utils, "_active", True)
    tqdm_utils.display_progress_bar(enabled)
    try:
        yield
    finally:
        tqdm_utils.display_progress_bar(before)


def prepare(builder, *, verbosity: int = NORMAL, log: Callable[[str], None] | None = None,
            **kwargs) -> None:
    """``builder.download_and_prepare(**kwargs)`` with one line before and after instead of
    TFDS's bars (their descriptions hold 200-character temporary paths) and its two
    printed lines ("Downloading and preparing dataset Unknown size ...", "Dataset ...
    downloaded and prepared to ..."); verbose keeps TFDS's bars and lines.

    Several processes may prepare the same dataset in one ``data_dir`` at once (the
    shards of a job array, or two ``--shard`` commands, starting together): they take
    turns through an exclusive lock on ``<data_dir>/<name>/.<config>.prepare.lock``
    (``fcntl.flock``; the file stays, empty), and the ones that find the dataset prepared
    when their turn comes use it. Without it TFDS's final rename fails in all but the
    first ("Destination ... already exists"). On a shared file system without locks,
    prepare once before starting the shards.
    """
    name = f"{builder.name}/{builder.builder_config.name}" if builder.builder_config \
        else builder.name
    with _prepare_lock(builder, name, verbosity, log):
        if is_prepared(builder):  # by another process while this one waited
            builder.info.read_from_directory(builder.data_path)  # what it wrote
            return
        _prepare(builder, name, verbosity, log, **kwargs)


@contextlib.contextmanager
def _prepare_lock(builder, name: str, verbosity: int = QUIET,
                  log: Callable[[str], None] | None = None) -> Iterator[None]:
    """The exclusive preparation lock of ``builder``'s dataset (see :func:`prepare`);
    says so in one line when another process holds it."""
    import fcntl

    folder = os.fspath(builder.data_path)  # <data_dir>/<name>[/<config>]/<version>
    if builder.builder_config:
        folder = os.path.dirname(folder)
    config = builder.builder_config.name if builder.builder_config else "default"
    folder = os.path.dirname(folder)  # <data_dir>/<name>
    os.makedirs(folder, exist_ok=True)
    with open(os.path.join(folder, f".{config}.prepare.lock"), "a") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            if verbosity >= NORMAL:
                (log or (lambda text: tqdm.tqdm.write(text)))(
                    f"waiting for another process preparing {name} in "
                    f"{short_path(builder.data_dir)} ...")
            fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def _prepare(builder, name: str, verbosity: int, log: Callable[[str], None] | None,
             **kwargs) -> None:
    log = log or (lambda text: tqdm.tqdm.write(text))
    if verbosity >= NORMAL:
        log(f"preparing {name} in {short_path(builder.data_dir)} (first use only) ...")
    t0 = time.perf_counter()
    if verbosity < VERBOSE:
        # TFDS prints those two lines from these methods (termcolor to stdout); replaced
        # on this builder object only, where our own two lines say the same.
        builder._log_download_bytes = builder._log_download_done = lambda: None
    with tfds_progress_bars(verbosity >= VERBOSE):
        builder.download_and_prepare(**kwargs)
    if verbosity >= NORMAL:
        log(f"prepared {name} in {format_seconds(time.perf_counter() - t0)}")


def main(argv: Sequence[str] | None = None) -> None:
    """``python -m echojax.progress RUN [RUN ...]``: (re)draws each run's progress.png."""
    import argparse
    parser = argparse.ArgumentParser(prog="python -m echojax.progress", description=main.__doc__)
    parser.add_argument("runs", nargs="+", help="run folders holding a metrics.jsonl")
    for run in parser.parse_args(argv).runs:
        if not os.path.exists(os.path.join(run, METRICS)):
            parser.error(f"{os.path.join(run, METRICS)} does not exist")
        print(f"wrote {write_progress_png(run)}")


if __name__ == "__main__":
    main()
