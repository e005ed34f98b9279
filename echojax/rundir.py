"""The run directory: where a run keeps its config, checkpoints, metrics and results.

One place knows the layout; ``echojax.train``, ``echojax.evaluate``,
``echojax.inference`` and the experiment layer ask it instead of joining paths::

    RUN/
      config.json          the run's Config (``Config.load`` re-creates the run)
      environment.json     package versions and device kind of the run's first start
      metrics.jsonl        training and validation metrics, one JSON object per line
      checkpoints/         Orbax: the latest and the best-validation step
      run_time.json        wall time of training + evaluation (written by experiments)
      eval/<split>/        per_image.csv, summary.json (``echojax.evaluate``)
      external/<alias>/    a run folder for testing this run's checkpoints on another
                           dataset: config.json naming that dataset alone, a
                           ``checkpoints`` link to ``../../checkpoints``, its own eval/

Example::

    run = RunDir("~/runs/unet_acce")
    config = run.load_config()
    summary = json.load(open(run.summary("test")))
"""

from __future__ import annotations

import dataclasses
import importlib.metadata
import json
import os
import platform
import warnings
from typing import Any

import jax

from echojax import files
from echojax.config import Config
from echojax.data.mixture import Source

# Packages whose versions change numbers: recorded with each run, compared on evaluation.
PACKAGES = ("echojax", "jax", "jaxlib", "flax", "optax", "orbax-checkpoint", "grain",
            "tensorflow-datasets", "numpy", "scipy")


@dataclasses.dataclass(frozen=True)
class RunDir:
    """Paths of one run folder (nothing is created until something is written)."""

    path: str

    def __post_init__(self):
        object.__setattr__(self, "path", os.path.abspath(os.path.expanduser(
            os.fspath(self.path))))

    @property
    def config(self) -> str:
        return os.path.join(self.path, "config.json")

    @property
    def environment(self) -> str:
        return os.path.join(self.path, "environment.json")

    @property
    def metrics(self) -> str:
        return os.path.join(self.path, "metrics.jsonl")

    @property
    def checkpoints(self) -> str:
        return os.path.join(self.path, "checkpoints")

    @property
    def run_time(self) -> str:
        return os.path.join(self.path, "run_time.json")

    def eval_dir(self, split: str = "test") -> str:
        return os.path.join(self.path, "eval", split)

    def per_image(self, split: str = "test") -> str:
        return os.path.join(self.eval_dir(split), "per_image.csv")

    def summary(self, split: str = "test") -> str:
        return os.path.join(self.eval_dir(split), "summary.json")

    def external(self, alias: str) -> RunDir:
        """The folder for evaluating this run on another dataset (see module doc)."""
        return RunDir(os.path.join(self.path, "external", alias))

    def is_run(self) -> bool:
        return os.path.exists(self.config)

    def evaluated(self, split: str = "test") -> bool:
        return os.path.exists(self.summary(split))

    def load_config(self) -> Config:
        """The run's Config; ValueError naming the folder if it is not a run folder."""
        if not self.is_run():
            raise ValueError(f"{self.path} is not a run folder: {self.config} does not exist")
        return Config.load(self.config)

    def save_config(self, config: Config) -> None:
        """Writes ``config.json``, or checks that the one there is ``config``.

        Raises ValueError if the folder holds a different config: continuing a run with
        other settings would mix two runs' checkpoints and metrics.
        """
        if self.is_run():
            if Config.load(self.config) != config:
                raise ValueError(
                    f"{self.config} holds a different config; resume with Config.load of "
                    f"that file or use a new workdir")
            return
        config.save(self.config)


def prepare_external(run: RunDir, source: Source) -> RunDir:
    """Makes ``run.external(source.alias)``: a run folder whose ``config.json`` is the
    run's with ``source`` (name and alias only) as its only source and whose
    ``checkpoints`` links to the run's. Returns it.

    Raises ValueError if that folder exists for another dataset under that alias.
    """
    config = run.load_config()
    ext = run.external(source.alias)
    ext_config = dataclasses.replace(config, sources=(Source(source.name, alias=source.alias),))
    if ext.is_run() and Config.load(ext.config) != ext_config:
        raise ValueError(
            f"{ext.config} already holds an external evaluation on "
            f"{[s.name for s in Config.load(ext.config).sources]}, not {source.name!r} with "
            f"this run's config; choose another alias or delete {ext.path}")
    os.makedirs(ext.path, exist_ok=True)
    ext_config.save(ext.config)
    if not os.path.lexists(ext.checkpoints):
        os.symlink(os.path.join("..", "..", "checkpoints"), ext.checkpoints)
    if os.path.exists(run.environment) and not os.path.exists(ext.environment):
        with open(run.environment) as f:  # the checkpoints' environment, for evaluate
            files.write_atomic(ext.environment, f.read())
    return ext


# --------------------------------------------------------------------------- metrics


class MetricsLog:
    """Append-only ``metrics.jsonl``; on resume, rows after the restored step are dropped
    (they came from the killed run past its last checkpoint and will be redone)."""

    def __init__(self, path: str, *, resume_step: int | None, enabled: bool):
        self.path, self.enabled = path, enabled
        if not enabled:
            return
        rows = []
        if resume_step is not None and os.path.exists(path):
            with open(path) as f:
                lines = f.readlines()
            # A last line without its newline is a write the kill interrupted; it
            # belongs to steps after the checkpoint, which are redone.
            if lines and not lines[-1].endswith("\n"):
                lines.pop()
            for number, line in enumerate(lines, 1):
                if not line.strip():
                    continue
                try:
                    step = json.loads(line)["step"]
                except (json.JSONDecodeError, KeyError, TypeError) as e:
                    raise ValueError(
                        f"{path}, line {number}: not a metrics row ({e}); expected a JSON "
                        "object with a 'step'") from e
                if step <= resume_step:
                    rows.append(line)
        files.write_atomic(path, "".join(rows))

    def write(self, row: dict[str, Any]) -> None:
        if self.enabled:
            with open(self.path, "a") as f:
                f.write(json.dumps(row, sort_keys=True) + "\n")


# --------------------------------------------------------------------------- environment


def current_environment() -> dict[str, object]:
    """Package versions, Python, and the kind and number of JAX devices of this process."""
    versions = {}
    for name in PACKAGES:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = None
    devices = jax.devices()
    return {"packages": versions, "python": platform.python_version(),
            "platform": devices[0].platform, "device_kind": devices[0].device_kind,
            "device_count": len(devices), "process_count": jax.process_count()}


def record_environment(run: RunDir) -> None:
    """Writes ``environment.json`` on a run's first start. On a later start (a resume)
    the first record is kept, and a difference is warned about: the run's numbers then
    come from two environments."""
    if os.path.exists(run.environment):
        warn_if_environment_differs(run, doing="resuming")
        return
    files.write_json(run.environment, current_environment())


def environment_differences(run: RunDir) -> list[str]:
    """What differs between the run's recorded environment and this process's:
    package versions and the device kind (device counts may change freely). Empty when
    nothing differs or the run has no record (runs made before it was kept)."""
    if not os.path.exists(run.environment):
        return []
    with open(run.environment) as f:
        recorded = json.load(f)
    now = current_environment()
    out = []
    old_versions = recorded.get("packages", {})
    for name, version in now["packages"].items():
        if name in old_versions and old_versions[name] != version:
            out.append(f"{name} {old_versions[name]} -> {version}")
    for key in ("platform", "device_kind"):
        if key in recorded and recorded[key] != now[key]:
            out.append(f"{key} {recorded[key]} -> {now[key]}")
    return out


class EnvironmentChangedWarning(UserWarning):
    """A run is used in another environment than the one it was trained in."""


def warn_if_environment_differs(run: RunDir, *, doing: str) -> list[str]:
    """Warns (``EnvironmentChangedWarning``) listing the differences, if any; returns them."""
    diff = environment_differences(run)
    if diff:
        warnings.warn(
            f"{doing} {run.path} in another environment than it was trained in "
            f"({'; '.join(diff)}); numbers may differ from the run's own",
            EnvironmentChangedWarning, stacklevel=3)
    return diff


__all__ = ["RunDir", "prepare_external", "current_environment", "record_environment",
           "environment_differences", "warn_if_environment_differs",
           "EnvironmentChangedWarning", "PACKAGES", "MetricsLog"]
