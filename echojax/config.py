"""The one typed, frozen configuration object of a training run.

A run is fully described by its ``Config``: ``train_and_evaluate`` prints it at start
and saves it as ``config.json`` in the workdir, and ``Config.from_json`` of that file
re-creates the run. Every choice the paper ablates (architecture, loss, label-dropout
rate and classes, optimiser, the data mixture) is a value here, never a code edit.

Example::

    from echojax.config import Config, LossConfig
    from echojax.data.mixture import Source, Removal

    cfg = Config(
        sources=(Source("synthetic_echo/camus_like_64", alias="camus",
                        removals=(Removal(("lvm",), 0.5),)),),
        resolution=64,
        loss=LossConfig(name="acce"),
    )
    assert Config.from_json(cfg.to_json()) == cfg
"""

from __future__ import annotations

import dataclasses
import json
import os
import types
import typing
from typing import Any

from echojax import files, labels, losses, models
from echojax.augment import AugmentConfig
from echojax.data.mixture import Removal, Source, check_sources
from echojax.models import resolve_impl

SCHEDULES = ("poly", "cosine", "constant")
COMPUTE_DTYPES = ("float32", "bfloat16")

_frozen = dataclasses.dataclass(frozen=True, kw_only=True)


def _freeze(value: Any) -> Any:
    """Lists -> tuples, dicts -> sorted tuples of pairs, recursively (hashable, JSON-exact)."""
    if isinstance(value, dict):
        return tuple(sorted((str(k), _freeze(v)) for k, v in value.items()))
    if isinstance(value, (list, tuple)):
        return tuple(_freeze(v) for v in value)
    return value


@_frozen
class ModelConfig:
    """Architecture by name (``echojax.models.create``) and size preset.

    ``overrides`` are constructor keyword arguments applied on top of
    ``echojax.models.PRESETS[name][size]``; pass a dict, it is stored as sorted pairs.
    ``impl`` is the layer implementation (``echojax.models.IMPLS``: same parameters,
    different computation). The default, ``"auto"``, is resolved here, once, to the
    fastest for JAX's default backend (``echojax.models.resolve_impl``: ``"cpu"`` on a
    CPU, ``"gpu"`` elsewhere), so the field, and ``config.json``, always hold the
    concrete implementation the run used; a ``config.json`` naming one (``"cpu"``,
    ``"flax"``, ``"gpu"``) loads as exactly that on any backend. Resolving starts the
    backend: build the config after ``jax.distributed.initialize`` (``Config``'s own
    default is made per instance, so importing echojax starts nothing).
    """
    name: str = "unet"
    size: str = "tiny"
    overrides: tuple[tuple[str, Any], ...] = ()
    impl: str = "auto"

    def __post_init__(self):
        object.__setattr__(self, "overrides", _freeze(dict(self.overrides)))
        object.__setattr__(self, "impl", resolve_impl(self.impl))  # raises on unknown names

    def kwargs(self) -> dict[str, Any]:
        """The preset's constructor arguments with ``overrides`` applied."""
        return {**models.PRESETS[self.name][self.size], **dict(self.overrides)}


@_frozen
class LossConfig:
    """Loss by name from ``echojax.losses.LOSSES`` and label dropout (Islam et al. 2024).

    ``dropout_classes`` names the experiment's partially-labelled classes; each is
    dropped per training example with probability ``dropout_rate`` (0 disables).

    ``abce_inference`` is aBCE's decision rule at inference (evaluation, prediction,
    export; ``echojax.losses.from_config``); it does not change training:

    - ``"sigmoid"`` (default): argmax over ``[0, z_1, ..., z_{C-1}]``, i.e. background
      unless some structure's sigmoid exceeds 0.5;
    - ``"softmax"``: argmax over all C logits as the network outputs them, channel 0
      included, as Islam et al., MELBA 2026, Sec. 6.1 describe ("uses the Softmax
      during inference"). Our aBCE does not train channel 0 (Eq. 5 sums over
      c >= 1), so under this rule background is decided by an untrained logit;
      ``bench/abce_decision_rule.py`` measures both rules on the same weights.

    Only ``abce`` takes ``"softmax"``; the other losses decide by argmax. A
    ``config.json`` without the field loads with the default.
    """
    name: str = "cce"
    dropout_rate: float = 0.0
    dropout_classes: tuple[str, ...] = ()
    abce_inference: str = "sigmoid"

    def __post_init__(self):
        object.__setattr__(self, "dropout_classes", _freeze(self.dropout_classes))
        if self.abce_inference not in losses.ABCE_INFERENCE_RULES:
            raise ValueError(f"loss.abce_inference must be one of "
                             f"{losses.ABCE_INFERENCE_RULES}, got {self.abce_inference!r}")
        if self.abce_inference != "sigmoid" and self.name != "abce":
            raise ValueError(f"loss.abce_inference={self.abce_inference!r} applies to loss "
                             f"'abce' only, got loss {self.name!r}")
        if not 0.0 <= self.dropout_rate <= 1.0:
            raise ValueError(f"loss.dropout_rate must be in [0, 1], got {self.dropout_rate}")
        ids = labels.class_ids(self.dropout_classes)  # raises on unknown names
        if labels.BACKGROUND in ids:
            raise ValueError("loss.dropout_classes cannot include background")
        if self.dropout_rate > 0 and not ids:
            raise ValueError(
                f"loss.dropout_rate={self.dropout_rate} needs loss.dropout_classes, got none")

    @property
    def dropout_class_ids(self) -> tuple[int, ...]:
        return labels.class_ids(self.dropout_classes)

    @property
    def decision_rule(self) -> str:
        """The decision rule's name: the loss's name (``"abce"``: the sigmoid rule), or
        ``"abce:softmax"``."""
        return "abce:softmax" if self.abce_inference == "softmax" else self.name


@_frozen
class OptimConfig:
    """SGD with Nesterov momentum and a per-step learning-rate schedule (paper, Sec. 4.4).

    ``schedule``: ``poly`` is nnU-Net's ``lr * (1 - step/total)**power``; ``cosine``
    decays to 0; ``constant``. ``weight_decay`` is coupled L2 (as torch SGD);
    ``grad_clip`` clips the global gradient norm when set.
    """
    lr: float = 0.01
    momentum: float = 0.9
    nesterov: bool = True
    schedule: str = "poly"
    power: float = 0.9
    weight_decay: float = 0.0
    grad_clip: float | None = None

    def __post_init__(self):
        if self.schedule not in SCHEDULES:
            raise ValueError(f"optim.schedule must be one of {SCHEDULES}, got {self.schedule!r}")
        if not self.lr > 0:
            raise ValueError(f"optim.lr must be positive, got {self.lr}")
        if not 0 <= self.momentum < 1:
            raise ValueError(f"optim.momentum must be in [0, 1), got {self.momentum}")
        if self.weight_decay < 0:
            raise ValueError(f"optim.weight_decay must be >= 0, got {self.weight_decay}")
        if self.grad_clip is not None and not self.grad_clip > 0:
            raise ValueError(f"optim.grad_clip must be positive or None, got {self.grad_clip}")


@_frozen
class Config:
    """Everything that defines a run.

    Data: ``sources`` (the mixture, ``echojax.data.mixture.Source``) read from TFDS
    ``data_dir`` at ``resolution``. Training: ``epochs`` of ``batch_size`` (global, split
    over all devices), evaluated and checkpointed every ``eval_every`` epochs, train
    metrics logged every ``log_every`` steps. ``compute_dtype`` is the activation dtype;
    parameters and optimiser state stay float32. ``seed`` drives initialisation,
    shuffling, augmentation and label dropout; ``data_seed`` chooses which examples the
    mixture uses (training subsets, removed labels) and follows ``seed`` when None, so
    a seed sweep with a fixed ``data_seed`` varies the model, not the data.
    """
    sources: tuple[Source, ...]
    resolution: int
    model: ModelConfig = dataclasses.field(default_factory=ModelConfig)  # resolves impl
    loss: LossConfig = LossConfig()
    optim: OptimConfig = OptimConfig()
    augment: AugmentConfig = AugmentConfig()
    data_dir: str | None = None
    batch_size: int = 8
    eval_batch_size: int = 16
    epochs: int = 10
    eval_every: int = 1
    log_every: int = 10
    seed: int = 0
    data_seed: int | None = None
    compute_dtype: str = "float32"
    num_workers: int = 0

    def __post_init__(self):
        try:
            object.__setattr__(self, "sources", check_sources(self.sources))
        except ValueError as e:
            raise ValueError(f"config.sources: {e}") from None
        for name in ("resolution", "batch_size", "eval_batch_size", "epochs", "eval_every",
                     "log_every"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
                raise ValueError(f"config.{name} must be a positive int, got {value!r}")
        def seed_ok(value):
            return isinstance(value, int) and not isinstance(value, bool) and value >= 0

        if not seed_ok(self.seed):
            raise ValueError(f"config.seed must be a non-negative int, got {self.seed!r}")
        if self.data_seed is not None and not seed_ok(self.data_seed):
            raise ValueError(
                f"config.data_seed must be a non-negative int or None, got {self.data_seed!r}")
        if self.num_workers < 0:
            raise ValueError(f"config.num_workers must be >= 0, got {self.num_workers}")
        if self.compute_dtype not in COMPUTE_DTYPES:
            raise ValueError(
                f"config.compute_dtype must be one of {COMPUTE_DTYPES}, got {self.compute_dtype!r}")
        if self.loss.name not in losses.LOSSES:
            raise ValueError(
                f"unknown loss {self.loss.name!r}; expected one of {sorted(losses.LOSSES)}")
        if self.model.name not in models.PRESETS:
            raise ValueError(
                f"unknown model {self.model.name!r}; expected one of {sorted(models.PRESETS)}")
        if self.model.size not in models.PRESETS[self.model.name]:
            raise ValueError(
                f"unknown size {self.model.size!r} for model {self.model.name!r}; expected "
                f"one of {sorted(models.PRESETS[self.model.name])}")

    @property
    def mixture_seed(self) -> int:
        """The seed of the mixture's choices: ``data_seed``, else ``seed``."""
        return self.seed if self.data_seed is None else self.data_seed

    def check_devices(self, num_devices: int, num_processes: int = 1) -> None:
        """Raises ValueError unless both batch sizes split evenly over the devices."""
        for name in ("batch_size", "eval_batch_size"):
            value = getattr(self, name)
            if value % num_devices:
                raise ValueError(
                    f"config.{name}={value} is not divisible by the {num_devices} devices; "
                    f"use a multiple of {num_devices}")
            if value % num_processes:
                raise ValueError(
                    f"config.{name}={value} is not divisible by the {num_processes} processes")

    # --- JSON ---------------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        return to_jsonable(self)

    def to_json(self) -> str:
        """Deterministic JSON (sorted keys, floats as shortest repr: exact round trip)."""
        return json.dumps(self.to_dict(), indent=2, sort_keys=True, allow_nan=False) + "\n"

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Config:
        return from_jsonable(cls, data, "config")

    @classmethod
    def from_json(cls, text: str) -> Config:
        return cls.from_dict(json.loads(text))

    @classmethod
    def load(cls, path: str | os.PathLike) -> Config:
        with open(path) as f:
            text = f.read()
        try:
            return cls.from_json(text)
        except (ValueError, TypeError) as e:
            raise ValueError(f"{os.fspath(path)}: {e}") from e

    def save(self, path: str | os.PathLike) -> None:
        """Writes ``to_json()`` atomically (temp file in the same folder, then rename)."""
        files.write_atomic(path, self.to_json())


def to_jsonable(value: Any) -> Any:
    """JSON-ready form of a config value: dataclasses become dicts of their fields,
    tuples lists (``ModelConfig.overrides`` an object). The one serialisation of every
    config part (``Source``, ``Removal``, ``AugmentConfig`` included)."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        out = {f.name: to_jsonable(getattr(value, f.name)) for f in dataclasses.fields(value)}
        if isinstance(value, ModelConfig):
            out["overrides"] = {k: v for k, v in value.overrides}
        return out
    if isinstance(value, (list, tuple)):
        return [to_jsonable(v) for v in value]
    if isinstance(value, float) and value != value:
        raise ValueError("NaN cannot be stored in config.json")
    return value


def from_jsonable(tp: Any, data: Any, where: str) -> Any:
    """Rebuilds a value of type ``tp`` (e.g. ``Source``) from ``json.loads`` output,
    checking types and keys; errors name ``where`` (e.g. ``config.sources[0]``).
    Fields missing from ``data`` take their defaults."""
    origin = typing.get_origin(tp)
    if dataclasses.is_dataclass(tp):
        if not isinstance(data, dict):
            raise ValueError(f"{where}: expected an object for {tp.__name__}, got {data!r}")
        hints = typing.get_type_hints(tp)
        fields = {f.name for f in dataclasses.fields(tp) if f.init}
        unknown = sorted(set(data) - fields)
        if unknown:
            raise ValueError(f"{where}: unknown keys {unknown} for {tp.__name__}; "
                             f"expected some of {sorted(fields)}")
        kwargs = {}
        for name in fields & set(data):
            if tp is ModelConfig and name == "overrides":
                if not isinstance(data[name], dict):
                    raise ValueError(f"{where}.overrides: expected an object, got {data[name]!r}")
                kwargs[name] = _freeze(data[name])
            else:
                kwargs[name] = from_jsonable(hints[name], data[name], f"{where}.{name}")
        return tp(**kwargs)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if data is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return from_jsonable(arg, data, where)
            except ValueError as e:
                errors.append(str(e))
        raise ValueError(f"{where}: {data!r} matches none of {tp}: {errors}")
    if origin is tuple:
        args = typing.get_args(tp)
        if not isinstance(data, list):
            raise ValueError(f"{where}: expected a list, got {data!r}")
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(from_jsonable(args[0], v, f"{where}[{i}]") for i, v in enumerate(data))
        if len(args) != len(data):
            raise ValueError(f"{where}: expected {len(args)} items, got {data!r}")
        return tuple(from_jsonable(a, v, f"{where}[{i}]") for i, (a, v) in enumerate(zip(args, data)))
    if tp is Any:
        return _freeze(data)
    if tp is float:
        if isinstance(data, bool) or not isinstance(data, (int, float)):
            raise ValueError(f"{where}: expected a number, got {data!r}")
        return float(data)
    if tp in (int, str, bool):
        if type(data) is not tp:
            raise ValueError(f"{where}: expected {tp.__name__}, got {data!r}")
        return data
    raise ValueError(f"{where}: cannot read type {tp} from JSON")


__all__ = ["Config", "ModelConfig", "LossConfig", "OptimConfig", "Source", "Removal",
           "AugmentConfig", "SCHEDULES", "COMPUTE_DTYPES", "to_jsonable", "from_jsonable"]
