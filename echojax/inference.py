"""Restoring a trained model for inference, and its compiled predictor.

Every consumer of a trained model (``echojax.evaluate``, pseudo-labelling, report
figures, prediction on new recordings) goes through this module::

    from echojax import inference

    model = inference.restore("~/runs/unet_acce")          # best validation checkpoint
    predict = model.predictor()                              # compiled on first call
    masks = predict(images)                                  # uint8[N, R, R, 1] -> int32[N, R, R]

API:

- ``restore_state(path, *, checkpoint="best")``: the whole train state of that
  checkpoint (with the optimiser state), restored the same way.
- ``restore(path, *, checkpoint="best", impl="auto") -> Model``: reads ``config.json``
  and one checkpoint of the run folder ``path`` (``"best"``, ``"latest"`` or a step
  number). ``impl`` is the layer implementation the predictor computes with:
  ``"auto"`` (default) the fastest for this process's backend
  (``echojax.models.resolve_impl``), a name of ``echojax.models.IMPLS``, or ``None`` for
  the one the run trained with. The parameters are the same for all, and so are the
  masks (tested); ``Model.config`` stays the run's own, naming the implementation it
  trained with.
  The checkpoint is restored into abstract shapes (``jax.eval_shape`` of the train
  state's initialiser): no parameter is initialised and no training ``Engine`` is
  built. Only what prediction needs is kept (parameters and the other model state,
  e.g. BatchNorm statistics; not the optimiser state).
- ``Model``: ``config`` (the run's ``Config``, as in its ``config.json``), ``params``
  and ``rest`` (host-side pytrees), ``step``, ``path``, ``impl`` (what the predictor
  computes with; ``None``: ``config.model.impl``), ``decision_rule`` (the rule that
  turns logits into classes, ``echojax.losses.from_config(config.loss).predict``:
  argmax; for ``abce``, background unless a sigmoid exceeds 0.5, or ``abce:softmax``,
  argmax over all channels, per ``LossConfig.abce_inference``), ``resolution``;
  ``Model.predictor(batch_size=None) -> Predictor``.
- ``Predictor``: ``predictor(images) -> int32[N, R, R]`` for ``uint8[N, R, R, 1]``
  images at the model's resolution, in batches of ``batch_size`` (default the run's
  ``eval_batch_size``), the last one padded, so it compiles once per input shape.
  The compiled function is shared by every model of the same program (architecture,
  size, loss, resolution, batch size) in the process.
- ``predict_fn(config, graphdef) -> predict(params, rest, images)``: the pure function
  being compiled (from ``echojax.train``: the same input scaling as in training).

A self-contained model folder (``python -m echojax.export``) holds the same three
things a run gives ``restore``: ``config.json``, and under ``params/`` (Orbax) the
parameters and the other model state in the layout of ``Model.params`` /
``Model.rest``, beside ``model.json`` (``MODEL_FILE``: decision rule, pre-processing,
class names, versions, validation scores). ``restore`` reads either kind of folder;
``is_model_dir(path)`` tells them apart. A model folder holds one checkpoint, so
``checkpoint`` must be left at ``"best"`` (the exported one) for it.
"""

from __future__ import annotations

import dataclasses
import functools
import os
from collections.abc import Callable
from typing import Any

import chex
import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
from flax import nnx

from echojax import losses, models, rundir
from echojax import train as train_lib
from echojax.checkpoint import Checkpoints
from echojax.config import Config

MODEL_FILE = "model.json"  # marks an exported model folder (echojax.export)
PARAMS_DIR = "params"      # its Orbax checkpoint of {"params", "rest", "step"}

Images = np.ndarray  # uint8[N, R, R, 1]
Masks = np.ndarray  # int32[N, R, R]


@dataclasses.dataclass(frozen=True)
class Model:
    """A trained model ready for inference (see the module doc)."""

    config: Config
    params: Any
    rest: Any
    step: int
    path: str
    impl: str | None = None  # None: config.model.impl, the one the run trained with

    def __post_init__(self):
        if self.impl is not None:
            object.__setattr__(self, "impl", models.resolve_impl(self.impl))

    @property
    def compute_config(self) -> Config:
        """``config`` with the layer implementation the predictor computes with."""
        if self.impl is None or self.impl == self.config.model.impl:
            return self.config
        return dataclasses.replace(
            self.config, model=dataclasses.replace(self.config.model, impl=self.impl))

    @property
    def decision_rule(self) -> str:
        """Name of the rule that maps logits to classes (``LossConfig.decision_rule``):
        the loss's name, or ``"abce:softmax"``."""
        return self.config.loss.decision_rule

    @property
    def resolution(self) -> int:
        return self.config.resolution

    def predictor(self, batch_size: int | None = None) -> Predictor:
        return Predictor(self, batch_size=batch_size)


def is_model_dir(path: str | os.PathLike) -> bool:
    """True for a folder written by ``echojax.export`` (it holds ``MODEL_FILE``)."""
    return os.path.isfile(os.path.join(os.path.expanduser(os.fspath(path)), MODEL_FILE))


def restore(path: str | os.PathLike, *, checkpoint: str | int = "best",
            impl: str | None = "auto") -> Model:
    """Restores ``checkpoint`` of the run folder ``path``, or the model of the exported
    model folder ``path``, to predict with layer implementation ``impl`` (see the
    module doc).

    Raises ValueError naming the folder if it is neither, has no such checkpoint, or
    is a model folder and ``checkpoint`` is not ``"best"``.
    """
    if impl is not None:
        impl = models.resolve_impl(impl)  # an unknown name fails before any reading
    if is_model_dir(path):
        return dataclasses.replace(_restore_model_dir(path, checkpoint), impl=impl)
    run = rundir.RunDir(path)
    state = restore_state(run.path, checkpoint=checkpoint)
    state = jax.device_get({"params": state["params"], "rest": state["rest"],
                            "step": state["step"]})
    return Model(config=run.load_config(), params=state["params"], rest=state["rest"],
                 step=int(state["step"]), path=run.path, impl=impl)


def _restore_model_dir(path: str | os.PathLike, checkpoint: str | int) -> Model:
    path = os.path.abspath(os.path.expanduser(os.fspath(path)))
    if checkpoint != "best":
        raise ValueError(f"{path} is an exported model folder holding one checkpoint; "
                         f"checkpoint={checkpoint!r} applies to run folders only")
    config = Config.load(os.path.join(path, "config.json"))
    state = train_lib.abstract_state(config)
    device = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
    target = jax.tree.map(lambda s: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=device),
                          {"params": state["params"], "rest": state["rest"],
                           "step": state["step"]})
    checkpointer = ocp.StandardCheckpointer()
    try:
        restored = checkpointer.restore(os.path.join(path, PARAMS_DIR), target)
    except (FileNotFoundError, ValueError) as e:
        raise ValueError(f"{path}: cannot read the parameters in {PARAMS_DIR}/ ({e}); "
                         f"export the run again") from None
    finally:
        checkpointer.close()
    restored = jax.device_get(restored)
    return Model(config=config, params=restored["params"], rest=restored["rest"],
                 step=int(restored["step"]), path=path)


def restore_state(path: str | os.PathLike, *, checkpoint: str | int = "best") -> dict[str, Any]:
    """The whole train state (``echojax.train.State``: parameters, other model state,
    optimiser state, step, RNG key data) of ``checkpoint`` of the run folder ``path``,
    on this process's first device, restored into the abstract shapes of
    ``train.abstract_state`` (nothing is initialised)."""
    run = rundir.RunDir(path)
    config = run.load_config()
    checkpoints = Checkpoints(run.checkpoints, read_only=True)
    try:
        step = checkpoints.resolve(checkpoint)
        device = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
        target = jax.tree.map(lambda s: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=device),
                              train_lib.abstract_state(config))
        return checkpoints.restore(step, target)
    finally:
        checkpoints.close()


def predict_fn(config: Config, graphdef_eval: nnx.GraphDef) -> Callable:
    """``predict(params, rest, images uint8[B,R,R,1]) -> int32[B,R,R]``, pure, with the
    config's decision rule (``losses.from_config(config.loss)``, which honours
    ``LossConfig.abce_inference``) and the same input scaling as in training."""
    loss = losses.from_config(config.loss)

    def predict(params, rest, images):
        model = nnx.merge(graphdef_eval, params, rest, copy=True)
        x = train_lib.model_input(train_lib.to_float(images))
        return loss.predict(model(x).astype(jnp.float32))

    return predict


@functools.lru_cache(maxsize=16)
def _compiled(key: Config, devices: tuple) -> tuple[Callable, jax.sharding.Mesh]:
    """One jitted predict per program (``train.program_key``) and device set."""
    mesh = jax.make_mesh((len(devices),), ("data",), devices=devices,
                         axis_types=(jax.sharding.AxisType.Auto,))
    batch = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec("data"))
    replicated = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec())
    fn = jax.jit(predict_fn(key, train_lib.graphdef(key, training=False)),
                 in_shardings=(replicated, replicated, batch), out_shardings=batch)
    return fn, mesh


class Predictor:
    """``predictor(images uint8[N, R, R, 1]) -> int32[N, R, R]`` (see the module doc).

    Runs on this process's devices; ``batch_size`` is rounded up to a multiple of
    their number.
    """

    def __init__(self, model: Model, *, batch_size: int | None = None):
        devices = tuple(jax.local_devices())
        n = len(devices)
        size = model.config.eval_batch_size if batch_size is None else batch_size
        if isinstance(size, bool) or not isinstance(size, (int, np.integer)) or size <= 0:
            raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
        self.model = model
        self.batch_size = -(-int(size) // n) * n
        self._fn, mesh = _compiled(train_lib.program_key(model.compute_config), devices)
        replicated = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec())
        self._params = jax.device_put(model.params, replicated)
        self._rest = jax.device_put(model.rest, replicated)

    def __call__(self, images: Images) -> Masks:
        images = np.asarray(images)
        r = self.model.resolution
        if images.ndim != 4 or images.shape[1:] != (r, r, 1) or images.dtype != np.uint8:
            raise ValueError(
                f"images must be uint8[N, {r}, {r}, 1] for the model in {self.model.path}, "
                f"got {images.dtype}{list(images.shape)}")
        out = []
        for start in range(0, len(images), self.batch_size):
            chunk = images[start:start + self.batch_size]
            padded = np.zeros((self.batch_size,) + chunk.shape[1:], np.uint8)
            padded[:len(chunk)] = chunk  # one compiled shape
            pred = np.asarray(jax.device_get(self._fn(self._params, self._rest, padded)))
            out.append(pred[:len(chunk)])
        masks = np.concatenate(out) if out else np.zeros((0, r, r), np.int32)
        chex.assert_shape(masks, (len(images), r, r))  # the decision rule keeps the grid
        return masks.astype(np.int32, copy=False)

    @property
    def compiled_shapes(self) -> int:
        """Executables compiled so far for this program (one per input shape)."""
        return self._fn._cache_size()


__all__ = ["MODEL_FILE", "PARAMS_DIR", "Model", "Predictor", "is_model_dir", "predict_fn",
           "restore", "restore_state"]
