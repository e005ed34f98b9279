"""ONNX export (echojax.onnx_export, export --onnx) and predict --runtime onnx: the graph
reproduces JAX's logits and masks, carries the loss's own decision rule and a dynamic
batch axis; predict gives the same outputs with either runtime."""

import dataclasses
import json
import os
from pathlib import Path

import numpy as np
import pytest
from predict_fixtures import make_run, tiny_model_config

from echojax import export, files, inference, losses, onnx_export, phantoms, predict
from echojax import predict_io as io
from echojax import train as train_lib
from echojax.config import LossConfig, ModelConfig

MISSING = onnx_export.missing()
needs_onnx = pytest.mark.skipif(MISSING is not None,
                                reason=f"the onnx extra is not installed: {MISSING}")
# One worker: jax2onnx loads its plugins once per process.
pytestmark = pytest.mark.xdist_group("onnx")

R = 32  # the tiny Swin-UNet needs multiples of 16, the tiny Attention U-Net of 4


def _config(arch: str, loss: str = "acce", **loss_kwargs):
    config = tiny_model_config(resolution=R, loss=loss)
    model = ModelConfig(name=arch, size="tiny",
                        overrides={"widths": (4, 8)} if arch == "unet" else {})
    return dataclasses.replace(config, model=model, loss=LossConfig(name=loss, **loss_kwargs))


def _phantom_frames() -> np.ndarray:
    """uint8[12, R, R, 1]: every view and phase of three phantom subjects."""
    return np.stack([ex["image"] for i in range(3)
                     for ex in phantoms.generate_subject("camus_like", i, resolution=R)])


def _jax_outputs(model: inference.Model, images: np.ndarray):
    """JAX's float32 logits and masks as the predictor computes them (its layer
    implementation, input scaling and decision rule: ``inference.predict_fn``), in one
    compiled call."""
    import jax
    from flax import nnx
    graphdef = train_lib.graphdef(model.compute_config, training=False)
    loss = losses.from_config(model.config.loss)

    @jax.jit
    def run(params, rest, images):
        net = nnx.merge(graphdef, params, rest, copy=True)
        logits = net(train_lib.model_input(train_lib.to_float(images)))
        return logits, loss.predict(logits)

    return tuple(np.asarray(a) for a in run(model.params, model.rest, images))


def _onnx_outputs(model_dir: str, images: np.ndarray):
    import onnxruntime as ort
    options = ort.SessionOptions()
    options.log_severity_level = 3  # errors only
    session = ort.InferenceSession(os.path.join(model_dir, onnx_export.FILE), options,
                                   providers=["CPUExecutionProvider"])
    return session.run(["logits", "classes"], {"images": images})


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """arch -> a run folder (aCCE, freshly initialised weights)."""
    root = tmp_path_factory.mktemp("onnx_runs")
    return {arch: make_run(str(root / arch), _config(arch), steps=(1,), dice=(0.5,)).path
            for arch in ("unet", "attention_unet", "swin_unet")}


@pytest.fixture(scope="module")
def exported(runs, tmp_path_factory):
    """arch -> its run exported with --onnx."""
    if MISSING:
        pytest.skip(f"the onnx extra is not installed: {MISSING}")
    root = tmp_path_factory.mktemp("onnx_models")
    return {arch: export.export(run, root / arch, onnx=True) for arch, run in runs.items()}


@needs_onnx
@pytest.mark.parametrize("arch", ["unet", "attention_unet", "swin_unet"])
def test_onnx_logits_and_masks_match_jax(exported, arch):
    model_dir = exported[arch]
    frames = _phantom_frames()
    model = inference.restore(model_dir)  # impl "auto": what the JAX predictor runs
    logits, classes = _onnx_outputs(model_dir, frames)
    ref, masks = _jax_outputs(model, frames)
    diff = float(np.abs(logits - ref).max())
    agree = float((classes == masks).mean())
    print(f"{arch}: max |logits - JAX| {diff:.2g}, masks equal on {agree:.4%}")
    assert logits.dtype == np.float32 and classes.dtype == np.int32
    assert diff <= 1e-4
    assert agree >= 0.999
    # The predictor's contract, batch sizes other than the export's probe included.
    onnx_masks = onnx_export.OnnxPredictor(model_dir, batch_size=5)(frames)
    np.testing.assert_array_equal(onnx_masks, classes)


@needs_onnx
def test_model_json_records_the_graph(exported):
    info = json.loads(Path(exported["unet"], "model.json").read_text())
    o = info["onnx"]
    assert o["file"] == "model.onnx" and o["opset"] == onnx_export.OPSET
    assert o["converter"].startswith("jax2onnx ")
    assert o["inputs"] == [{"name": "images", "dtype": "uint8", "shape": ["batch", R, R, 1],
                            "content": o["inputs"][0]["content"]}]
    assert [(x["name"], x["dtype"], x["shape"]) for x in o["outputs"]] == [
        ("logits", "float32", ["batch", R, R, 4]), ("classes", "int32", ["batch", R, R])]
    assert o["decision_rule"] == info["decision_rule"] == "acce"
    assert o["layer_impl"] in ("flax", "gpu", "cpu") and o["compute_dtype"] == "float32"
    assert o["verification"]["max_abs_logit_difference"] <= 1e-4
    # The file says the same: names, dtypes, a named dynamic batch axis.
    import onnx
    graph = onnx.load(os.path.join(exported["unet"], "model.onnx")).graph
    assert [v.name for v in graph.input] == ["images"]
    assert [v.name for v in graph.output] == ["logits", "classes"]
    for v in list(graph.input) + list(graph.output):
        assert v.type.tensor_type.shape.dim[0].dim_param == "batch"


@needs_onnx
@pytest.mark.parametrize("abce_inference", ["sigmoid", "softmax"])
def test_the_graph_decides_by_the_losss_own_rule(runs, tmp_path, abce_inference):
    import jax
    model = inference.restore(runs["unet"], impl=None)
    # The same weights under aBCE with this rule (the parameters do not depend on the loss).
    config = dataclasses.replace(model.config,
                                 loss=LossConfig(name="abce", abce_inference=abce_inference))
    model = dataclasses.replace(model, config=config)
    # Output biases that make aBCE's two rules disagree: channel 0 the largest logit
    # (softmax: background), channel 1 positive (sigmoid: LV).
    def head_bias(path, leaf):
        name = jax.tree_util.keystr(path)
        return np.array([3.0, 1.0, -3.0, -3.0], np.float32) if "head" in name and \
            "['bias']" in name else leaf
    model = dataclasses.replace(model, params=jax.tree_util.tree_map_with_path(head_bias,
                                                                                model.params))
    entry = onnx_export.write(model, tmp_path / "model.onnx")
    assert entry["decision_rule"] == config.loss.decision_rule == model.decision_rule
    frames = _phantom_frames()
    logits, classes = _onnx_outputs(str(tmp_path), frames)
    np.testing.assert_array_equal(classes, np.asarray(
        losses.from_config(config.loss).predict(logits)))
    other = "softmax" if abce_inference == "sigmoid" else "sigmoid"
    other_classes = np.asarray(losses.get("abce", abce_inference=other).predict(logits))
    assert (other_classes != classes).mean() > 0.5  # the two rules differ on these logits


@needs_onnx
def test_an_implementation_that_does_not_convert_is_a_clear_error(runs, tmp_path,
                                                                  monkeypatch):
    # jax2onnx 0.13.0 cannot convert the Swin-UNet's "gpu" layers (a comparison of the
    # symbolic batch size): with only that one to try, export names it and writes nothing.
    monkeypatch.setattr(onnx_export, "IMPL_ORDER", ("gpu",))
    with pytest.raises(ValueError, match=r"swin_unet does not convert to ONNX with jax2onnx "
                                         r"\S+ in any layer implementation: gpu: \w+"):
        export.export(runs["swin_unet"], tmp_path / "model", onnx=True)
    assert os.listdir(tmp_path) == []  # no model folder, no partial one


def test_export_onnx_without_the_extra_says_how_to_install(runs, tmp_path, monkeypatch):
    monkeypatch.setattr(onnx_export, "missing", lambda: "jax2onnx not installed; pip install x")
    with pytest.raises(ValueError, match="--onnx needs the onnx extra: jax2onnx not installed"):
        export.export(runs["unet"], tmp_path / "model", onnx=True)
    assert os.listdir(tmp_path) == []


def test_runtime_onnx_without_the_extra_says_how_to_install(runs, tmp_path, monkeypatch,
                                                            capsys):
    monkeypatch.setattr(onnx_export, "missing", lambda: "onnxruntime not installed; pip install x")
    frame = tmp_path / "frame.png"
    io.write_png(frame, np.full((20, 24), 90, np.uint8))
    assert predict.main(["--model", runs["unet"], str(frame), "--out", str(tmp_path / "o"),
                         "--runtime", "onnx"]) == 2
    assert "ONNX needs the onnx extra: onnxruntime not installed" in capsys.readouterr().err


@needs_onnx
def test_predict_runtime_onnx_gives_the_jax_runtimes_outputs(exported, tmp_path, capsys):
    loop = phantoms.render_cine("camus_like", 3, "4CH", shape=(40, 56), num_frames=30,
                                frames_per_beat=12, first_ed_frame=3, fps=20.0)
    video = phantoms.write_video(loop, tmp_path / "clip.avi")
    model_dir = exported["unet"]
    for runtime in ("jax", "onnx"):
        assert predict.main(["--model", model_dir, str(video), "--out", str(tmp_path / runtime),
                             "--runtime", runtime, "--no_progress"]) == 0
    a, b = tmp_path / "jax", tmp_path / "onnx"
    np.testing.assert_array_equal(io.read_masks(a / "clip" / "masks.nii.gz"),
                                  io.read_masks(b / "clip" / "masks.nii.gz"))
    for name in ("areas.csv", "beats.csv"):
        assert (a / "clip" / name).read_text() == (b / "clip" / name).read_text()
    ra, rb = (json.loads((d / "summary.json").read_text()) for d in (a, b))
    assert (ra["model"]["runtime"], rb["model"]["runtime"]) == ("jax", "onnx")
    drop = ("seconds", "output")
    strip = [{k: v for k, v in r["recordings"][0].items() if k not in drop} for r in (ra, rb)]
    assert strip[0] == strip[1]
    rows = files.read_csv(b / "summary.csv", required=predict.SUMMARY_COLUMNS)
    assert [r["status"] for r in rows] == ["ok"]


@needs_onnx
def test_runtime_onnx_needs_a_model_folder_exported_with_onnx(runs, tmp_path, capsys):
    plain = export.export(runs["unet"], tmp_path / "plain")
    frame = tmp_path / "frame.png"
    io.write_png(frame, np.full((20, 24), 90, np.uint8))
    assert predict.main(["--model", runs["unet"], str(frame), "--out", str(tmp_path / "o1"),
                         "--runtime", "onnx"]) == 2
    assert "not a run folder" in capsys.readouterr().err
    assert predict.main(["--model", plain, str(frame), "--out", str(tmp_path / "o2"),
                         "--runtime", "onnx"]) == 2
    assert "has no ONNX model (model.onnx); export the run again with --onnx" in \
        capsys.readouterr().err
