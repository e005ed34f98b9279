"""The training engine: ``train_and_evaluate(config, workdir)``.

One jitted train step over explicit state (big_vision / Flax examples style): the NNX
model is split once into a static graph definition and array state
(``nnx.split``), and ``jax.jit`` compiles a pure function of that state. Per step, on
device: uint8 -> float, augmentation (``echojax.augment``), label dropout (Islam et al.
2024, rate passed as a traced scalar so changing it never recompiles), model, loss by
name (``echojax.losses.LOSSES``), SGD with Nesterov momentum 0.9 and a per-step decaying
learning rate (polynomial, power 0.9, as nnU-Net; Islam et al. MELBA 2026, Sec. 4.4).
The peak learning rate and the schedule's length are traced scalars too: runs that
differ only in learning rate, epochs or dataset size share one compiled step.

Data parallel: a 1-D ``Mesh`` over all devices with axis ``data``; batches are split
over it, the state is replicated (``NamedSharding``). Multi-host: each process feeds its
own shard of the global batch (``jax.make_array_from_process_local_data``); call
``echojax.distributed.initialize()`` first (``python -m echojax.train`` does).

Every ``eval_every`` epochs the model is evaluated on the validation split of every
source (foreground Dice: mean over LV, LVM, LA of the per-class mean over examples
where that class is annotated and present, with the loss's own ``predict``), and a
checkpoint is written; the checkpoint manager keeps the latest and the best by
validation foreground Dice. A run started in a workdir holding a checkpoint resumes
from it exactly (model, optimiser, step, RNG and data iterator).

Workdir layout (``echojax.rundir``): ``config.json``, ``environment.json`` (package
versions and device kind), ``metrics.jsonl`` (one JSON object per line: train loss / lr
/ grad norm every ``log_every`` steps and at each epoch's end, that row also with the
epoch's training time: ``epoch_train_seconds`` over ``epoch_timed_steps`` steps, and
``first_step_seconds`` in the epoch holding a start's first step, which is timed apart
since it compiles; validation Dice per class and source at each evaluation),
``checkpoints/``; with the default reporter also ``progress.png`` and
TensorBoard event files (``echojax.progress``).
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import json
import math
import os
import time
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from echojax import augment as augment_lib
from echojax import distributed
from echojax import labels as labels_lib
from echojax import losses as losses_lib
from echojax import metrics as metrics_lib
from echojax import models as models_lib
from echojax import progress as progress_lib
from echojax import rundir as rundir_lib
from echojax.checkpoint import Checkpoints, abstract
from echojax.config import Config, OptimConfig
from echojax.data import mixture as mixture_lib
from echojax.data import pipeline

Batch = dict[str, jax.Array]
State = dict[str, Any]  # {"params", "rest", "opt_state", "step", "rng"}


class NonFiniteLossError(FloatingPointError):
    """The training loss became NaN or Inf; the last good checkpoint is untouched."""


# --- model, optimiser, inputs --------------------------------------------------------

def create_model(config: Config, *, seed: int | jax.Array) -> nnx.Module:
    """The configured architecture, initialised from ``seed`` (an int or a PRNG key)."""
    kwargs = config.model.kwargs()
    if config.compute_dtype == "bfloat16":
        kwargs["dtype"] = jnp.bfloat16  # activations; parameters stay float32
    return models_lib.create(
        config.model.name, num_classes=labels_lib.NUM_CLASSES, in_channels=1,
        impl=config.model.impl, rngs=nnx.Rngs(seed), **kwargs)


def learning_rate_schedule(optim: OptimConfig, total_steps: int | jax.Array, *,
                           peak_lr: float | jax.Array | None = None) -> optax.Schedule:
    """Per-step learning rate: ``poly`` is ``lr (1 - t/T)^power`` (nnU-Net), ``cosine``
    is ``lr (1 + cos(pi t/T)) / 2``, ``constant`` is ``lr``; ``t`` is clipped to ``T``.

    ``peak_lr`` (default ``optim.lr``) and ``total_steps`` ``T`` may be traced scalars
    (float32 / int32), so one compiled step serves every learning rate and run length.
    The formulas are optax's ``polynomial_schedule`` (end value 0) and
    ``cosine_decay_schedule`` (alpha 0) without their Python-side checks on ``T``, with
    the same float32 operations: the values are optax's to within float32 rounding (a
    few ulps, as between optax's own eager and jitted values; tested). A traced ``T``
    divides exactly where XLA may fold a constant ``T`` into a reciprocal multiply.
    """
    lr = optim.lr if peak_lr is None else peak_lr
    if isinstance(total_steps, (int, np.integer)) and total_steps <= 0:
        raise ValueError(f"total_steps must be positive, got {total_steps}")
    if optim.schedule == "poly":
        power = optim.power

        def poly(count):
            count = jnp.clip(count, 0, total_steps)
            return lr * (1 - count / total_steps) ** power
        return poly
    if optim.schedule == "cosine":
        def cosine(count):
            steps = jnp.asarray(total_steps, jnp.float32)  # optax: float(T), no int32 overflow
            count = jnp.minimum(count, steps)
            return lr * (0.5 * (1 + jnp.cos(jnp.pi * count / steps)))
        return cosine
    return lambda count: lr


def make_optimizer(optim: OptimConfig, total_steps: int | jax.Array, *,
                   peak_lr: float | jax.Array | None = None) -> optax.GradientTransformation:
    """SGD (Nesterov) with optional global-norm clipping and coupled L2 weight decay.

    The optimiser state's layout does not depend on ``peak_lr`` or ``total_steps``
    (the schedule is evaluated at the state's own step count), so a state made by one
    instance is updated by another built inside the jitted step from traced values.
    """
    parts = []
    if optim.grad_clip is not None:
        parts.append(optax.clip_by_global_norm(optim.grad_clip))
    if optim.weight_decay:
        parts.append(optax.add_decayed_weights(optim.weight_decay))
    parts.append(optax.sgd(learning_rate_schedule(optim, total_steps, peak_lr=peak_lr),
                           momentum=optim.momentum or None, nesterov=optim.nesterov))
    return optax.chain(*parts)


def to_float(images: jax.Array) -> jax.Array:
    """uint8[B, H, W, 1] -> float32 in [0, 1] (augmentation works on this range)."""
    return images.astype(jnp.float32) / 255.0


def model_input(images: jax.Array) -> jax.Array:
    """float32 [0, 1] -> [-1, 1], the range the models see in training and evaluation."""
    return images * 2.0 - 1.0


# --- the two jitted steps -------------------------------------------------------------

def make_train_step(config: Config, graphdef: nnx.GraphDef) -> Callable:
    """``step(state, batch, hparams) -> (state, metrics)``, pure, to be jitted.

    batch: ``image uint8[B,H,W,1]``, ``segmentation uint8[B,H,W]``,
    ``label_mask bool[B,C]``. hparams (``Engine.hparams``): ``dropout_rate`` f32[],
    ``lr`` f32[] (peak learning rate), ``total_steps`` i32[] (schedule length); traced,
    so runs differing only in these (learning-rate, dataset-size, epoch and dropout
    sweeps) share the compiled step. metrics: ``loss``, ``grad_norm``, ``lr`` (float32
    scalars; ``lr`` is the rate this step applied). The step's RNG is
    ``fold_in(rng, step)``: it depends on nothing but the seed and the step, so a
    resumed run draws the same augmentations.
    """
    loss_fn_by_name = losses_lib.LOSSES[config.loss.name]
    dropout_classes = config.loss.dropout_class_ids
    augment_cfg = config.augment

    def step_fn(state: State, batch: Batch, hparams: dict[str, jax.Array]):
        dropout_rate = hparams["dropout_rate"]
        tx = make_optimizer(config.optim, hparams["total_steps"], peak_lr=hparams["lr"])
        schedule = learning_rate_schedule(config.optim, hparams["total_steps"],
                                          peak_lr=hparams["lr"])
        key = jax.random.fold_in(jax.random.wrap_key_data(state["rng"]), state["step"])
        k_aug, k_drop = jax.random.split(key)
        images = to_float(batch["image"])
        seg = batch["segmentation"].astype(jnp.int32)
        images, seg = augment_lib.augment_batch(k_aug, images, seg, augment_cfg)
        label_mask = batch["label_mask"]
        if dropout_classes:
            seg, label_mask = losses_lib.label_dropout(
                k_drop, seg, label_mask, rate=dropout_rate, classes=dropout_classes)
        x = model_input(images)

        def loss_fn(params):
            model = nnx.merge(graphdef, params, state["rest"], copy=True)
            logits = model(x).astype(jnp.float32)
            return loss_fn_by_name(logits, seg, label_mask), nnx.state(model, _NOT_PARAM)

        (loss, rest), grads = jax.value_and_grad(loss_fn, has_aux=True)(state["params"])
        updates, opt_state = tx.update(grads, state["opt_state"], state["params"])
        params = optax.apply_updates(state["params"], updates)
        new_state = dict(state, params=params, rest=rest, opt_state=opt_state,
                         step=state["step"] + 1)
        metrics = {"loss": loss, "grad_norm": optax.tree.norm(grads),
                   "lr": jnp.asarray(schedule(state["step"]), jnp.float32)}
        return new_state, metrics

    return step_fn


def make_predict(config: Config, graphdef_eval: nnx.GraphDef) -> Callable:
    """``predict(params, rest, images uint8[B,H,W,1]) -> int32[B,H,W]`` (loss's rule)."""
    loss = losses_lib.from_config(config.loss)  # its decision rule, e.g. aBCE's abce_inference

    def predict(params, rest, images):
        model = nnx.merge(graphdef_eval, params, rest, copy=True)
        logits = model(model_input(to_float(images))).astype(jnp.float32)
        return loss.predict(logits)

    return predict


def make_eval_step(config: Config, graphdef_eval: nnx.GraphDef) -> Callable:
    """``eval_step(params, rest, batch, sums f32[S,C], counts i32[S,C]) -> (sums, counts)``.

    For each example, adds to row ``source_index`` of ``sums`` the Dice of every class
    that is annotated (``label_mask``) and present in the ground truth (Dice not NaN),
    and 1 to ``counts``. Padding examples (``valid`` False) add nothing. Sums and
    counts, never means of means. ``S`` is the number of sources.
    """
    predict = make_predict(config, graphdef_eval)
    num_sources = len(config.sources)

    def eval_step(params, rest, batch, sums, counts):
        pred = predict(params, rest, batch["image"])
        seg = batch["segmentation"].astype(jnp.int32)
        dice = metrics_lib.dice_per_class(pred, seg, num_classes=labels_lib.NUM_CLASSES)
        use = batch["valid"][:, None] & batch["label_mask"] & ~jnp.isnan(dice)  # [B, C]
        onehot = jax.nn.one_hot(batch["source_index"], num_sources, dtype=jnp.float32)  # [B, S]
        sums = sums + onehot.T @ jnp.where(use, dice, 0.0)
        counts = counts + (onehot.T @ use.astype(jnp.float32)).astype(jnp.int32)
        return sums, counts

    return eval_step


_NOT_PARAM = nnx.Not(nnx.Param)


def dice_from_sums(sums: np.ndarray, counts: np.ndarray) -> tuple[np.ndarray, float]:
    """Per-class mean Dice from per-class sums and counts (NaN where no example counts)
    and their foreground mean (``echojax.metrics.foreground_dice`` of those means)."""
    with np.errstate(invalid="ignore", divide="ignore"):
        per_class = np.where(counts > 0, sums / np.maximum(counts, 1), np.nan)
    # One row whose Dice values are the class means: its per-class means are those values.
    fg = float(metrics_lib.foreground_dice(per_class[None, :].astype(np.float32)))
    return per_class, fg


# --- the engine -------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class _Program:
    """What is compiled for a run: the same for every run sharing its key (see
    ``_program``), so sweeps and tests in one process compile each step once."""
    mesh: jax.sharding.Mesh
    graphdef: nnx.GraphDef
    graphdef_eval: nnx.GraphDef
    init: Callable
    train_step: Callable
    eval_step: Callable


def graphdef(config: Config, *, training: bool) -> nnx.GraphDef:
    """The model's static graph in training (BatchNorm batch statistics, dropout) or
    evaluation mode, from abstract shapes (``nnx.eval_shape``: nothing is initialised)."""
    model = nnx.eval_shape(lambda: create_model(config, seed=0))
    if training:
        model.train()
    else:
        model.eval()
    return nnx.split(model, nnx.Param, ...)[0]


def make_init(config: Config) -> Callable[[jax.Array], State]:
    """``init(key_data) -> State``: the train state at step 0 (see ``Engine``)."""
    tx = make_optimizer(config.optim, 1)  # the state's layout only (see make_optimizer)

    def init(key_data):
        init_key, train_key = jax.random.split(jax.random.wrap_key_data(key_data))
        model = create_model(config, seed=init_key)
        model.train()
        _, params, rest = nnx.split(model, nnx.Param, ...)
        return {"params": params, "rest": rest, "opt_state": tx.init(params),
                "step": jnp.zeros((), jnp.int32), "rng": jax.random.key_data(train_key)}

    return init


def abstract_state(config: Config) -> State:
    """``jax.ShapeDtypeStruct`` s of the train state (``jax.eval_shape`` of
    :func:`make_init`: no parameter is initialised), e.g. to restore a checkpoint."""
    key_data = jax.eval_shape(lambda: jax.random.key_data(jax.random.key(0)))
    return jax.eval_shape(make_init(config), key_data)


@functools.lru_cache(maxsize=16)
def _program(config: Config, devices: tuple) -> _Program:
    mesh = jax.make_mesh((len(devices),), ("data",), axis_types=(jax.sharding.AxisType.Auto,),
                         devices=devices)
    replicated = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec())
    graphdef_train = graphdef(config, training=True)
    graphdef_eval = graphdef(config, training=False)
    return _Program(
        mesh=mesh, graphdef=graphdef_train, graphdef_eval=graphdef_eval,
        # One compiled program instead of one dispatch per initialiser op.
        init=jax.jit(make_init(config), out_shardings=replicated),
        train_step=jax.jit(make_train_step(config, graphdef_train),
                           out_shardings=replicated, donate_argnums=(0,)),
        eval_step=jax.jit(make_eval_step(config, graphdef_eval), out_shardings=replicated,
                          donate_argnums=(3, 4)))


def program_key(config: Config) -> Config:
    """``config`` with the fields that do not change the compiled code normalised.

    The label-dropout rate, the peak learning rate and the run length (epochs, dataset
    size, hence total steps) are arguments of the train step, not part of it, so runs
    that differ only in them (Experiment 3's rate sweep, learning-rate grids, data-ratio
    experiments) share one compiled step. Batch size and resolution are array shapes:
    the jitted step keeps one executable per shape.
    """
    sources = tuple(mixture_lib.Source(f"source_{i}/x", alias=f"s{i}")
                    for i in range(len(config.sources)))
    return dataclasses.replace(config, sources=sources, data_dir=None, seed=0, epochs=1,
                               eval_every=1, log_every=1, num_workers=0, batch_size=1,
                               eval_batch_size=1, resolution=1,
                               loss=dataclasses.replace(config.loss, dropout_rate=0.0),
                               optim=dataclasses.replace(config.optim, lr=1.0))


class Engine:
    """Model, optimiser, mesh and the compiled steps of one run (host-side object).

    ``initial_state``: the train state at step 0 (replicated), a dict of ``params``,
    ``rest`` (other model state, e.g. BatchNorm statistics), ``opt_state``, ``step``
    and ``rng`` (key data; the step's key is ``fold_in(key, step)``).
    ``hparams``: the run's traced hyperparameters (``make_train_step``), replicated.
    ``compiled_train_step(state, batch, hparams)``: the jitted step, shared by every
    engine of the same program in the process.
    """

    def __init__(self, config: Config, total_steps: int):
        config.check_devices(jax.device_count(), jax.process_count())
        if isinstance(total_steps, bool) or not isinstance(total_steps, (int, np.integer)) \
                or not 0 < total_steps < 2**31:
            raise ValueError(f"total_steps must be a positive int32, got {total_steps!r}")
        self.config, self.total_steps = config, int(total_steps)
        program = _program(program_key(config), tuple(jax.devices()))
        self.mesh = program.mesh
        self.graphdef, self.graphdef_eval = program.graphdef, program.graphdef_eval
        self.compiled_train_step, self.eval_step = program.train_step, program.eval_step
        self.replicated = jax.sharding.NamedSharding(self.mesh, jax.sharding.PartitionSpec())
        self.hparams = jax.device_put(
            {"dropout_rate": np.float32(config.loss.dropout_rate),
             "lr": np.float32(config.optim.lr), "total_steps": np.int32(self.total_steps)},
            self.replicated)
        self.batch_sharding = jax.sharding.NamedSharding(
            self.mesh, jax.sharding.PartitionSpec("data"))
        key_data = jax.random.key_data(jax.random.key(config.seed))
        self.initial_state = program.init(jax.device_put(key_data, self.replicated))

    def train_step(self, state: State, batch: Batch) -> tuple[State, dict[str, jax.Array]]:
        """One update with this run's hyperparameters. Donates ``state``."""
        return self.compiled_train_step(state, batch, self.hparams)

    def global_batch(self, local: dict[str, np.ndarray]) -> Batch:
        """This process's rows of a batch -> global arrays split over ``data``."""
        n = jax.process_count()
        return {k: jax.make_array_from_process_local_data(
                    self.batch_sharding, v, (v.shape[0] * n,) + v.shape[1:])
                for k, v in local.items()}

    def evaluate(self, state: State, mix: mixture_lib.Mixture) -> dict[str, Any]:
        """Dice of ``mix`` (one split) per source and pooled over sources (flat dict with
        keys ``<split>/<alias>/dice_lv`` ..., ``<split>/fg_dice``)."""
        c, n_src = labels_lib.NUM_CLASSES, len(self.config.sources)
        sums = jax.device_put(jnp.zeros((n_src, c), jnp.float32), self.replicated)
        counts = jax.device_put(jnp.zeros((n_src, c), jnp.int32), self.replicated)
        keys = ("image", "segmentation", "label_mask", "source_index", "valid")
        for local in pipeline.eval_batches(mix, batch_size=self.config.eval_batch_size):
            batch = self.global_batch({k: np.asarray(local[k]) for k in keys})
            sums, counts = self.eval_step(state["params"], state["rest"], batch, sums, counts)
        sums, counts = np.asarray(sums, np.float64), np.asarray(counts, np.int64)
        out: dict[str, Any] = {}
        for i, source in enumerate(self.config.sources):
            out.update(_dice_entries(f"{mix.split}/{source.alias}", sums[i], counts[i]))
        out.update(_dice_entries(mix.split, sums.sum(0), counts.sum(0)))
        return out


def _dice_entries(prefix: str, sums: np.ndarray, counts: np.ndarray) -> dict[str, Any]:
    per_class, fg = dice_from_sums(sums, counts)
    entries = {f"{prefix}/fg_dice": fg}
    for cls in labels_lib.FOREGROUND_CLASSES:
        name = labels_lib.CLASS_NAMES[cls]
        entries[f"{prefix}/dice_{name}"] = float(per_class[cls])
        entries[f"{prefix}/count_{name}"] = int(counts[cls])
    return entries


# --- data (echojax.data.mixture, echojax.data.pipeline) --------------------------------

def train_mixture(config: Config) -> mixture_lib.Mixture:
    return mixture_lib.Mixture(config.sources, "train", data_dir=config.data_dir,
                               seed=config.mixture_seed)


def eval_mixture(config: Config, split: str, *, metadata: bool = False) -> mixture_lib.Mixture:
    return mixture_lib.Mixture(config.sources, split, data_dir=config.data_dir,
                               seed=config.mixture_seed, metadata=metadata)


def _check_resolution(config: Config, mix: mixture_lib.Mixture) -> None:
    if mix.resolution != config.resolution:
        raise ValueError(f"config.resolution={config.resolution} but the sources hold "
                         f"{mix.resolution}x{mix.resolution} images ({mix!r})")


# --- the entry point -------------------------------------------------------------------

def train_and_evaluate(config: Config, workdir: str | os.PathLike, *,
                       reporter: progress_lib.Reporter | None = None) -> dict[str, Any]:
    """Trains ``config`` in ``workdir`` (resuming from its checkpoint if there is one).

    ``reporter`` (process 0 only) is told of the start, each step, each logged and each
    validation row of ``metrics.jsonl`` (``echojax.progress.Reporter``); default
    ``echojax.progress.default_reporter()``: a step bar, ``progress.png`` and TensorBoard
    events in ``workdir``.

    Returns a flat dict: ``step``, the last validation metrics (``validation/...``),
    ``best_step`` and ``best/val_fg_dice``, ``train_loss`` (mean over the last log
    interval), ``images_per_s``.
    Raises ``NonFiniteLossError`` naming the step and loss if the loss goes NaN/Inf, and
    ``ValueError`` for a workdir whose ``config.json`` differs from ``config``.
    """
    run = rundir_lib.RunDir(workdir)
    main = jax.process_index() == 0
    os.makedirs(run.path, exist_ok=True)
    if main:
        run.save_config(config)  # or check that the run there has this config
        rundir_lib.record_environment(run)
    elif run.is_run() and Config.load(run.config) != config:
        raise ValueError(f"{run.config} holds a different config")

    train_mix, val_mix = train_mixture(config), eval_mixture(config, "validation")
    _check_resolution(config, train_mix)
    steps_per_epoch = pipeline.steps_per_epoch(len(train_mix), config.batch_size)
    if steps_per_epoch <= 0:
        raise ValueError(f"config.batch_size={config.batch_size} exceeds the training set "
                         f"({train_mix!r})")
    total_steps = steps_per_epoch * config.epochs
    loader = pipeline.train_dataset(
        train_mix, batch_size=config.batch_size, seed=config.seed, num_epochs=config.epochs,
        worker_count=config.num_workers)
    engine = Engine(config, total_steps)
    checkpoints = Checkpoints(run.checkpoints)
    iterator = iter(loader)
    state = engine.initial_state
    start = checkpoints.latest_step()
    if start is not None:
        state = checkpoints.restore(start, abstract(state), iterator)
        if int(state["step"]) != start:
            raise ValueError(f"checkpoint {start} holds step {int(state['step'])}")
    log = rundir_lib.MetricsLog(run.metrics, resume_step=start, enabled=main)
    step = start or 0

    pending: list[tuple[int, dict[str, jax.Array]]] = []
    last_eval: dict[str, Any] = {}
    train_loss = math.nan
    if not main:
        reporter = progress_lib.Reporter()
    elif reporter is None:
        reporter = progress_lib.default_reporter()
    reporter.on_start(config=config, workdir=workdir, total_steps=total_steps, start_step=step,
                      steps_per_epoch=steps_per_epoch)
    t0, images_seen = time.perf_counter(), 0
    # Training time per epoch (the paper's measure, Sec. 5.3.1): the wall time of the
    # epoch's steps (loading batches, the steps, the training-loss rows), waited for on
    # the device, without validation and checkpointing. The first step of this call is
    # timed apart (``first_step_seconds``: compilation, unless this process compiled the
    # program before, the loader's first batch and the step) and left out of its epoch.
    epoch_t0, timed_steps, first_step_seconds = time.perf_counter(), 0, None

    def flush(extra: dict[str, Any] | None = None) -> None:
        # One device->host transfer per log interval; a NaN is found here, before any
        # checkpoint of the bad state can be written.
        nonlocal train_loss
        if not pending:
            return
        fetched = jax.device_get([m for _, m in pending])
        for (s, _), m in zip(pending, fetched):
            if not np.isfinite(m["loss"]):
                # Steps are counted as in metrics.jsonl: step n is the n-th update.
                raise NonFiniteLossError(
                    f"training loss is {float(m['loss'])} at step {s + 1} (epoch "
                    f"{s // steps_per_epoch + 1}); stopped. The last good checkpoint in "
                    f"{checkpoints.directory} is step {checkpoints.latest_step()}")
        train_loss = float(np.mean([m["loss"] for m in fetched]))
        row = {"step": pending[-1][0] + 1, "epoch": (pending[-1][0] + 1) / steps_per_epoch,
               "train_loss": train_loss,
               "lr": float(fetched[-1]["lr"]), "grad_norm": float(fetched[-1]["grad_norm"]),
               **(extra or {})}
        log.write(row)
        reporter.on_log(row)
        pending.clear()

    try:
        while step < total_steps:
            local = next(iterator)
            batch = engine.global_batch(
                {k: np.asarray(local[k]) for k in ("image", "segmentation", "label_mask")})
            state, m = engine.train_step(state, batch)
            if first_step_seconds is None:
                jax.block_until_ready(m)
                now = time.perf_counter()
                first_step_seconds, epoch_t0 = now - epoch_t0, now
            else:
                timed_steps += 1
            pending.append((step, m))
            step += 1
            images_seen += config.batch_size
            reporter.on_step(step)
            epoch_done = step % steps_per_epoch == 0
            epoch = step // steps_per_epoch
            if epoch_done:
                jax.block_until_ready((state, m))
                timing = {"epoch_train_seconds": time.perf_counter() - epoch_t0,
                          "epoch_timed_steps": timed_steps}
                if timed_steps < steps_per_epoch:  # the epoch holding this call's first step
                    timing["first_step_seconds"] = first_step_seconds
                flush(timing)
            elif step % config.log_every == 0:
                flush()
            if epoch_done and (epoch % config.eval_every == 0 or step == total_steps):
                flush()
                last_eval = engine.evaluate(state, val_mix)
                log.write({"step": step, "epoch": epoch, **last_eval})
                checkpoints.save(step, state, iterator,
                                 val_fg_dice=last_eval["validation/fg_dice"])
                reporter.on_eval({"step": step, "epoch": epoch, **last_eval})
            if epoch_done:
                epoch_t0, timed_steps = time.perf_counter(), 0
        flush()
    finally:
        reporter.close()
        checkpoints.close()

    elapsed = time.perf_counter() - t0
    best_step = checkpoints.best_step()
    result = {"step": step, "train_loss": train_loss, **last_eval, "best_step": best_step,
              "images_per_s": images_seen / elapsed if images_seen else math.nan}
    if best_step is not None:
        result["best/val_fg_dice"] = float(checkpoints.manager.metrics(best_step)["val_fg_dice"])
    return result


def main(argv: list[str] | None = None) -> None:
    """``python -m echojax.train --config CONFIG.json --workdir RUN``; rerunning with just
    ``--workdir RUN`` resumes from the run's own ``config.json`` and latest checkpoint."""
    parser = argparse.ArgumentParser(prog="python -m echojax.train", description=main.__doc__)
    parser.add_argument("--workdir", required=True)
    parser.add_argument("--config", default=None,
                        help="config JSON (default: WORKDIR/config.json, i.e. resume)")
    progress_lib.add_verbosity_flags(parser)
    args = parser.parse_args(argv)
    distributed.initialize()
    path = args.config or rundir_lib.RunDir(args.workdir).config
    if not os.path.exists(path):
        parser.error(f"{path} does not exist; pass --config for a new run")
    result = train_and_evaluate(
        Config.load(path), args.workdir,
        reporter=progress_lib.default_reporter(progress_lib.verbosity(args)))
    if jax.process_index() == 0:
        print(json.dumps({k: v for k, v in result.items() if "/" not in k or "fg_dice" in k},
                         sort_keys=True, default=str))
        run = os.path.abspath(args.workdir)
        print(f"run: {run}\ncurves: {os.path.join(run, progress_lib.PROGRESS_PNG)}, "
              f"`tensorboard --logdir {run}`")


if __name__ == "__main__":
    main()
