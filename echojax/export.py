"""Export one checkpoint of a run as a self-contained model folder.

    python -m echojax.export --workdir RUN [--checkpoint best|latest|STEP] --out MODEL_DIR [--onnx]

writes::

    MODEL_DIR/
      config.json   the run's Config (architecture, size, loss, resolution, ...; the
                    layer implementation it trained with, ``model.impl``)
      model.json    what a user of the model needs besides the weights (below)
      params/       Orbax checkpoint of {"params", "rest", "step"}: the parameters and
                    the other model state (BatchNorm statistics), no optimiser state
      model.onnx    with --onnx only: the network and its decision rule as an ONNX graph
                    (echojax.onnx_export; needs the onnx extra), for onnxruntime
                    (``echojax predict --runtime onnx``) or any other ONNX runtime

``model.json``: ``format``, ``decision_rule`` (the loss whose ``predict`` turns logits
into classes), ``class_names`` and ``label_ids``, ``preprocessing`` (resolution,
intensity scaling, aspect rule, sector handling: :func:`preprocessing_spec`), ``step``
and ``checkpoint`` exported, ``source_run``, ``packages`` (versions at export, and the
run's own ``environment.json`` when it has one), ``validation`` (the run's validation
scores at the exported step, from ``metrics.jsonl``) and ``evaluation`` (the run's
``eval/<split>/summary.json`` files, when evaluated), and with ``--onnx`` an ``onnx``
entry: file, opset, converter, input and output names, shapes and dtypes, the decision
rule in the graph, the layer implementation converted and the check against JAX
(``echojax.onnx_export.write``).

``echojax.inference.restore(MODEL_DIR)`` and ``python -m echojax.predict --model
MODEL_DIR`` read it; no training data is needed. The parameters do not depend on the
layer implementation: ``restore`` computes with the fastest one for the backend it runs
on (``impl="auto"``), whichever the run trained with, and predicts the same masks.

The folder is written under a temporary name beside ``MODEL_DIR`` and renamed when
complete, so it appears whole or not at all; an existing ``MODEL_DIR`` is never
overwritten.
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import shutil
import tempfile
from typing import Any

import jax
import orbax.checkpoint as ocp

from echojax import files, inference, labels, onnx_export, rundir
from echojax.config import Config
from echojax.data import cone

FORMAT = "echojax-model/1"


def preprocessing_spec(config: Config) -> dict[str, Any]:
    """How a raw recording frame becomes the model's input, as the builders and the
    training step do it (``echojax.predict`` follows this spec)."""
    return {
        "resolution": config.resolution,
        "channels": 1,
        "input": "grey frames as uint8 0..255 (other types only when their values are "
                 "0..255; floats are rounded)",
        "intensity": "x / 255 * 2 - 1 (echojax.train.to_float, model_input)",
        "aspect": "stretch",
        "aspect_note": "frames are resized directly to resolution x resolution, rows and "
                       "columns separately, as the dataset builders do "
                       "(echojax.data.preprocess); masks go back to the frame's own size "
                       "by centre-aligned nearest neighbour",
        "resize": "INTER_AREA when shrinking along both axes, else bilinear "
                  "(echojax.data.preprocess.resize_image)",
        "sector": {"function": "echojax.data.cone.clear_outside_sector", "estimate": True,
                   "max_cut_fraction": 0.005, "margin_px": 1.0,
                   "signal_level": cone.SIGNAL_LEVEL},
    }


def validation_scores(run: rundir.RunDir, step: int) -> dict[str, Any]:
    """The ``validation/...`` metrics logged at ``step`` (empty if none were)."""
    if not os.path.exists(run.metrics):
        return {}
    out: dict[str, Any] = {}
    with open(run.metrics) as f:
        for line in f:
            if not line.strip():
                continue
            row = json.loads(line)
            if row.get("step") == step:
                out.update({k: v for k, v in row.items() if k.startswith("validation/")})
    return out


def _evaluations(run: rundir.RunDir) -> dict[str, Any]:
    out = {}
    for path in sorted(glob.glob(os.path.join(run.path, "eval", "*", "summary.json"))):
        with open(path) as f:
            out[os.path.basename(os.path.dirname(path))] = json.load(f)
    return out


def model_info(model: inference.Model, *, checkpoint: str | int, source_run: str,
               validation: dict[str, Any], evaluation: dict[str, Any],
               run_environment: dict[str, Any] | None) -> dict[str, Any]:
    """The content of ``model.json`` (see the module doc)."""
    return {
        "format": FORMAT,
        "decision_rule": model.decision_rule,
        "class_names": list(labels.CLASS_NAMES),
        "label_ids": {name: i for i, name in enumerate(labels.CLASS_NAMES)},
        "preprocessing": preprocessing_spec(model.config),
        "step": model.step,
        "checkpoint": str(checkpoint),
        "source_run": source_run,
        "packages": {"export": rundir.current_environment(), "training": run_environment},
        "validation": validation,
        "evaluation": evaluation,
    }


def export(workdir: str | os.PathLike, out: str | os.PathLike, *,
           checkpoint: str | int = "best", onnx: bool = False) -> str:
    """Writes ``checkpoint`` of the run ``workdir`` as the model folder ``out``; returns
    its absolute path. ``onnx``: also ``model.onnx`` (see the module doc).

    Raises:
      ValueError: ``workdir`` is not a run or has no such checkpoint; ``out`` exists;
        ``onnx`` without the onnx extra, or a network that does not convert (nothing is
        written then).
    """
    run = rundir.RunDir(workdir)
    out = os.path.abspath(os.path.expanduser(os.fspath(out)))
    if os.path.lexists(out):
        raise ValueError(f"{out} already exists; choose a new --out or delete it first")
    if onnx and onnx_export.missing():
        raise ValueError(f"--onnx needs the onnx extra: {onnx_export.missing()}")
    model = inference.restore(run.path, checkpoint=checkpoint, impl=None)  # copied as trained
    run_env = None
    if os.path.exists(run.environment):
        with open(run.environment) as f:
            run_env = json.load(f)
    info = model_info(model, checkpoint=checkpoint, source_run=run.path,
                      validation=validation_scores(run, model.step), evaluation=_evaluations(run),
                      run_environment=run_env)
    parent = os.path.dirname(out)
    os.makedirs(parent, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=f".{os.path.basename(out)}.partial-", dir=parent)
    try:
        model.config.save(os.path.join(tmp, "config.json"))
        checkpointer = ocp.StandardCheckpointer()
        try:
            checkpointer.save(os.path.join(tmp, inference.PARAMS_DIR),
                              {"params": model.params, "rest": model.rest,
                               "step": jax.numpy.asarray(model.step, jax.numpy.int32)})
            checkpointer.wait_until_finished()
        finally:
            checkpointer.close()
        if onnx:
            info["onnx"] = onnx_export.write(model, os.path.join(tmp, onnx_export.FILE))
        files.write_json(os.path.join(tmp, inference.MODEL_FILE), info)  # written last
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o777 & ~umask)  # mkdtemp makes it private; a model is for sharing
        os.rename(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m echojax.export",
        description="Export a run's checkpoint as a self-contained model folder "
                    "(parameters, config, decision rule, pre-processing, versions, scores).")
    parser.add_argument("--workdir", required=True, help="the run folder")
    parser.add_argument("--checkpoint", default="best",
                        help="best (default; best validation foreground Dice), latest, or a step")
    parser.add_argument("--out", required=True, help="the model folder to create")
    parser.add_argument("--onnx", action="store_true",
                        help="also write model.onnx: the network and its decision rule as an "
                             "ONNX graph (uint8 frames in, logits and class ids out, dynamic "
                             "batch), checked against JAX with onnxruntime; for predict "
                             "--runtime onnx. Needs pip install 'echojax[onnx]'")
    args = parser.parse_args(argv)
    try:
        path = export(args.workdir, args.out, checkpoint=args.checkpoint, onnx=args.onnx)
    except ValueError as e:
        parser.exit(2, f"error: {e}\n")
    with open(os.path.join(path, inference.MODEL_FILE)) as f:
        info = json.load(f)
    dice = info["validation"].get("validation/fg_dice")
    print(f"exported step {info['step']} of {info['source_run']} to {path} "
          f"(validation foreground Dice {dice if dice is None else f'{dice:.4f}'})")
    if "onnx" in info:
        o, v = info["onnx"], info["onnx"]["verification"]
        print(f"ONNX: {os.path.join(path, o['file'])} (opset {o['opset']}, {o['converter']}, "
              f"layers {o['layer_impl']}); onnxruntime vs JAX on {v['frames']} frames: max "
              f"|logits difference| {v['max_abs_logit_difference']:.2g}, classes equal on "
              f"{v['class_agreement']:.2%} of pixels")


if __name__ == "__main__":
    main()
