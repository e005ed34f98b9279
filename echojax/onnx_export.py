"""The network and its decision rule as an ONNX graph, and an onnxruntime predictor.

    echojax export --workdir RUN --out MODEL_DIR --onnx     # also MODEL_DIR/model.onnx
    echojax predict --model MODEL_DIR --runtime onnx recordings/ --out predictions/

Needs the ``onnx`` extra (``pip install 'echojax[onnx]'``): the converter is jax2onnx
(Flax NNX to ONNX), the runtime onnxruntime. Nothing here is a hand-written graph:
jax2onnx converts the traced JAX function.

The graph (``model.onnx``, opset :data:`OPSET`) computes what ``echojax.inference``'s
predictor computes, for a dynamic batch:

- input ``images``: ``uint8[batch, R, R, 1]``, frames already on the model grid (the
  pre-processing of ``model.json`` -> ``preprocessing`` happens before, as for the JAX
  predictor: ``echojax.predict_io``);
- inside the graph, the training-time scaling ``x / 255 * 2 - 1``
  (``echojax.train.to_float`` then ``model_input``), then the network in evaluation mode
  (BatchNorm running statistics, no dropout);
- output ``logits``: ``float32[batch, R, R, 4]``;
- output ``classes``: ``int32[batch, R, R]``, the class ids by the model's own decision
  rule, ``echojax.losses.from_config(config.loss).predict`` (argmax; aBCE's sigmoid rule
  or its softmax option, per ``LossConfig.abce_inference``). The rule is not written
  again here: JAX traces the loss object's ``predict`` on one frame's logits and that
  trace is replayed over the batch (``jax.vmap``) in the converted function. (It is
  traced before conversion because jax2onnx replaces ``jnp.shape`` by a traced
  primitive while converting, and the loss's static shape checks need plain ints.)

Computation: float32, whatever the run's ``compute_dtype`` (the parameters are float32
in every run). Layer implementation: the parameters are the same for every
``echojax.models.IMPLS`` entry, so export tries them in the order of :data:`IMPL_ORDER`
and keeps the first whose graph onnxruntime loads and whose outputs match JAX's on
probe frames (logits within :data:`ATOL`, classes equal on at least
:data:`MIN_AGREEMENT` of the pixels). Measured with jax2onnx 0.13.0: the Attention U-Net
and the Swin-UNet convert with ``"flax"``; the U-Net with ``"gpu"`` (its ``"flax"``
transposed convolution becomes an ONNX ConvTranspose with stride 1, which onnxruntime
rejects; ``"gpu"`` computes it as a matmul). The Swin-UNet's ``"gpu"`` layers compare a
symbolic batch size, which jax2onnx cannot convert. ``model.json`` -> ``onnx`` records which one and why
the others were passed over; when none converts, export stops with each one's reason.
"""

from __future__ import annotations

import dataclasses
import functools
import importlib
import importlib.util
import json
import logging
import os
import pkgutil
from typing import Any

import numpy as np

FILE = "model.onnx"
OPSET = 21  # LayerNormalization (17) and Gelu (20) are needed by the Swin-UNet
INPUT = "images"
OUTPUTS = ("logits", "classes")
BATCH_AXIS = "batch"
IMPL_ORDER = ("flax", "gpu", "cpu")  # the reference layers first
ATOL = 1e-4           # |logits - JAX logits| at export's verification
MIN_AGREEMENT = 0.999  # fraction of pixels with the same class id
PROBE_FRAMES = 4       # frames of the verification batch
INSTALL_HINT = "pip install 'echojax[onnx]' (jax2onnx, onnx, onnxruntime)"


def missing() -> str | None:
    """Why ONNX export / the onnxruntime predictor cannot run here, or None."""
    absent = [name for name in ("jax2onnx", "onnx", "onnxruntime")
              if importlib.util.find_spec(name) is None]
    if absent:
        return f"{', '.join(absent)} not installed; {INSTALL_HINT}"
    return None


def _require() -> None:
    reason = missing()
    if reason:
        raise ValueError(f"ONNX needs the onnx extra: {reason}")


def _version(dist: str) -> str:
    from importlib.metadata import version
    return version(dist)


_PLUGINS_LOADED = False


def _load_converter_plugins() -> None:
    """Imports jax2onnx's JAX and Flax plugins only.

    On its first conversion jax2onnx imports every plugin module, including those for
    Equinox and its own example models, which build and compile models at import
    (~25 s of a 2-core CPU); a Flax NNX model needs only the JAX and Flax ones (~2 s).
    Where this version's loader is not as expected, jax2onnx loads them all itself.
    """
    global _PLUGINS_LOADED
    if _PLUGINS_LOADED:
        return
    _PLUGINS_LOADED = True
    try:
        from jax2onnx.plugins import plugin_system
    except ImportError:
        return
    if not hasattr(plugin_system, "_already_imported_plugins"):
        return
    import jax2onnx.plugins as plugins
    for sub in ("jax", "flax"):
        pkg = importlib.import_module(f"{plugins.__name__}.{sub}")
        for mod in pkgutil.walk_packages(pkg.__path__, prefix=f"{pkg.__name__}."):
            importlib.import_module(mod.name)
    plugin_system._already_imported_plugins = True


def _quiet_converter() -> None:
    # jax2onnx and onnx_ir log per-node notes at WARNING; errors still show.
    for name in ("jax2onnx", "onnx_ir"):
        logging.getLogger(name).setLevel(logging.ERROR)


def _functions(config, params, rest, impl: str):
    """(fn for conversion, the same jitted for JAX) of ``images uint8[B,R,R,1] ->
    (logits f32[B,R,R,C], classes i32[B,R,R])`` with layer implementation ``impl``."""
    import jax
    import jax.extend.core as jex
    import jax.numpy as jnp
    from flax import nnx

    from echojax import labels, losses
    from echojax import train as train_lib

    config = dataclasses.replace(config, compute_dtype="float32",
                                 model=dataclasses.replace(config.model, impl=impl))
    graphdef = train_lib.graphdef(config, training=False)
    r = config.resolution
    loss = losses.from_config(config.loss)
    rule = jax.make_jaxpr(lambda z: loss.predict(z[None])[0])(
        jax.ShapeDtypeStruct((r, r, labels.NUM_CLASSES), jnp.float32))
    decide_one = jex.jaxpr_as_fun(rule)

    def predict(params, rest, images):
        network = nnx.merge(graphdef, params, rest, copy=True)
        x = train_lib.model_input(train_lib.to_float(images))
        logits = network(x).astype(jnp.float32)
        return logits, jax.vmap(lambda z: decide_one(z)[0])(logits)

    compiled = jax.jit(predict)  # parameters as arguments, not as constants to fold
    return (functools.partial(predict, params, rest),  # converted: parameters -> initializers
            lambda images: compiled(params, rest, images))


def _convert(fn, resolution: int):
    import jax
    import jax.numpy as jnp
    from jax2onnx import to_onnx

    _load_converter_plugins()
    _quiet_converter()
    spec = jax.ShapeDtypeStruct(
        jax.export.symbolic_shape(f"{BATCH_AXIS}, {resolution}, {resolution}, 1"), jnp.uint8)
    proto = to_onnx(fn, inputs=[spec], opset=OPSET, model_name="echojax",
                    input_names=[INPUT], output_names=list(OUTPUTS))
    for value in list(proto.graph.input) + list(proto.graph.output):
        value.type.tensor_type.shape.dim[0].dim_param = BATCH_AXIS  # one name for the axis
    return proto


def _session(model_bytes_or_path):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3  # errors only: no per-node shape-merge notes
    return ort.InferenceSession(model_bytes_or_path, options,
                                providers=ort.get_available_providers())


def _probe(resolution: int) -> np.ndarray:
    """Verification frames: uniform noise (every grey level, no structure to lean on)."""
    return np.random.default_rng(0).integers(
        0, 256, (PROBE_FRAMES, resolution, resolution, 1), dtype=np.uint8)


def _verify(session, jitted, resolution: int) -> dict[str, Any]:
    images = _probe(resolution)
    logits, classes = session.run(list(OUTPUTS), {INPUT: images})
    one = session.run([OUTPUTS[1]], {INPUT: images[:1]})[0]  # the batch axis is dynamic
    ref_logits, ref_classes = (np.asarray(a) for a in jitted(images))
    diff = float(np.abs(logits - ref_logits).max())
    agree = float((classes == ref_classes).mean())
    if classes.dtype != np.int32 or logits.dtype != np.float32:
        raise ValueError(f"outputs are {logits.dtype} and {classes.dtype}, expected "
                         f"float32 and int32")
    if not np.array_equal(one, classes[:1]):
        raise ValueError("a batch of one gives other classes than the same frame in a batch")
    if not (diff <= ATOL and agree >= MIN_AGREEMENT):
        raise ValueError(f"onnxruntime differs from JAX on {PROBE_FRAMES} probe frames: "
                         f"max |logits difference| {diff:.3g} (allowed {ATOL:g}), classes "
                         f"equal on {agree:.4%} of pixels (needed {MIN_AGREEMENT:.1%})")
    return {"frames": PROBE_FRAMES, "input": "uniform noise uint8 (seed 0)",
            "max_abs_logit_difference": diff, "class_agreement": agree,
            "logit_tolerance": ATOL, "min_class_agreement": MIN_AGREEMENT}


def write(model, path: str | os.PathLike, *,
          impls: tuple[str, ...] | None = None) -> dict[str, Any]:
    """Converts ``model`` (an ``echojax.inference.Model``) to the ONNX file ``path`` and
    checks it with onnxruntime (see the module doc), trying the layer implementations
    ``impls`` (default :data:`IMPL_ORDER`) in turn; returns ``model.json``'s ``onnx``
    entry.

    Raises:
      ValueError: the onnx extra is missing, or no implementation of ``impls`` converts
        and verifies (the message names each one's reason).
    """
    _require()
    import onnx

    from echojax import labels

    r = model.config.resolution
    failures: dict[str, str] = {}
    for impl in IMPL_ORDER if impls is None else impls:
        try:
            fn, jitted = _functions(model.config, model.params, model.rest, impl)
            proto = _convert(fn, r)
            onnx.checker.check_model(proto)
            data = proto.SerializeToString()
            verification = _verify(_session(data), jitted, r)
        except Exception as e:  # this implementation's failure; the next one may convert
            text = " ".join(str(e).split()) or type(e).__name__
            failures[impl] = f"{type(e).__name__}: {text[:400]}"
            continue
        with open(path, "wb") as f:
            f.write(data)
        c = labels.NUM_CLASSES
        return {
            "file": os.path.basename(os.fspath(path)),
            "opset": OPSET,
            "converter": f"jax2onnx {_version('jax2onnx')}",
            "verified_with": f"onnxruntime {_version('onnxruntime')}",
            "inputs": [{"name": INPUT, "dtype": "uint8", "shape": [BATCH_AXIS, r, r, 1],
                        "content": "grey frames 0..255 on the model grid (preprocessing)"}],
            "outputs": [
                {"name": OUTPUTS[0], "dtype": "float32", "shape": [BATCH_AXIS, r, r, c],
                 "content": "the network's logits"},
                {"name": OUTPUTS[1], "dtype": "int32", "shape": [BATCH_AXIS, r, r],
                 "content": "class ids by the decision rule"}],
            "in_graph": "x / 255 * 2 - 1 (echojax.train.to_float, model_input), the network "
                        "in evaluation mode, the decision rule",
            "decision_rule": model.decision_rule,
            "layer_impl": impl,
            "not_converted": failures,
            "compute_dtype": "float32",
            "run_compute_dtype": model.config.compute_dtype,
            "verification": verification,
        }
    raise ValueError(
        f"{model.config.model.name} does not convert to ONNX with jax2onnx "
        f"{_version('jax2onnx')} in any layer implementation: "
        + "; ".join(f"{impl}: {why}" for impl, why in failures.items()))


class OnnxPredictor:
    """``predictor(images uint8[N, R, R, 1]) -> int32[N, R, R]``, the JAX predictor's
    contract (``echojax.inference.Predictor``), with onnxruntime on ``model.onnx`` of an
    exported model folder, ``batch_size`` frames per call (default the run's
    ``eval_batch_size``).

    ``info``: the folder's ``model.json``; ``resolution``, ``step``, ``decision_rule``,
    ``path``; ``providers``: onnxruntime's execution providers in use.
    """

    def __init__(self, model_dir: str | os.PathLike, *, batch_size: int | None = None):
        from echojax import inference
        from echojax.config import Config

        _require()
        self.path = os.path.abspath(os.path.expanduser(os.fspath(model_dir)))
        if not inference.is_model_dir(self.path):
            raise ValueError(f"{model_dir}: the onnx runtime needs an exported model folder "
                             f"(echojax export --onnx), not a run folder")
        with open(os.path.join(self.path, inference.MODEL_FILE)) as f:
            self.info = json.load(f)
        entry = self.info.get("onnx")
        file = os.path.join(self.path, entry["file"]) if entry else None
        if not file or not os.path.isfile(file):
            raise ValueError(f"{self.path} has no ONNX model ({FILE}); export the run again "
                             f"with --onnx")
        config = Config.load(os.path.join(self.path, "config.json"))
        size = config.eval_batch_size if batch_size is None else batch_size
        if isinstance(size, bool) or not isinstance(size, (int, np.integer)) or size <= 0:
            raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
        self.batch_size = int(size)
        self.resolution = int(self.info["preprocessing"]["resolution"])
        self.step = self.info.get("step")
        self.decision_rule = entry["decision_rule"]
        self.onnx = entry
        self._session = _session(file)
        self.providers = self._session.get_providers()

    def __call__(self, images: np.ndarray) -> np.ndarray:
        images = np.asarray(images)
        r = self.resolution
        if images.ndim != 4 or images.shape[1:] != (r, r, 1) or images.dtype != np.uint8:
            raise ValueError(
                f"images must be uint8[N, {r}, {r}, 1] for the model in {self.path}, "
                f"got {images.dtype}{list(images.shape)}")
        out = [self._session.run([OUTPUTS[1]], {INPUT: images[s:s + self.batch_size]})[0]
               for s in range(0, len(images), self.batch_size)]
        masks = np.concatenate(out) if out else np.zeros((0, r, r), np.int32)
        return masks.astype(np.int32, copy=False)


__all__ = ["FILE", "IMPL_ORDER", "OPSET", "OnnxPredictor", "missing", "write"]
