"""``impl="auto"``, the one default layer implementation: resolved once when a model or
a config is made (never at import), recorded concretely in ``config.json``, and a model
trained with one implementation predicts the same masks with any other. Also the
``--dry_run`` fields and sweep cost that report it."""

import dataclasses
import json
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from echojax import experiment as X
from echojax import inference, models, phantoms, train
from echojax.config import Config, LossConfig, ModelConfig
from echojax.data.mixture import Source
from echojax.experiment import cli
from echojax.experiment import options as options_lib
from echojax.experiment.runs import describe

jax.config.update("jax_disable_most_optimizations", True)

# What "auto" must give on the backend these tests run on.
EXPECTED = "cpu" if jax.default_backend() == "cpu" else "gpu"


def _config(**model) -> Config:
    return Config(sources=(Source("synthetic_echo/camus_like_64", alias="camus"),),
                  resolution=16, model=ModelConfig(name="unet", size="tiny", **model))


# --- resolution and record -------------------------------------------------------------


def test_auto_is_the_default_and_resolves_to_a_concrete_impl():
    assert models.resolve_impl() == models.resolve_impl("auto") == EXPECTED
    for name in models.ARCHITECTURES:
        kw = models.PRESETS[name]["tiny"]
        assert models.create(name, rngs=nnx.Rngs(0), **kw).impl == EXPECTED
        assert models.create(name, impl="flax", rngs=nnx.Rngs(0), **kw).impl == "flax"
    assert models.UNet(1, 4, widths=(4, 8), rngs=nnx.Rngs(0)).impl == EXPECTED
    with pytest.raises(ValueError, match="unknown layer implementation 'fast'"):
        models.resolve_impl("fast")


def test_config_records_the_resolved_impl(tmp_path):
    cfg = _config()
    assert cfg.model.impl == EXPECTED == ModelConfig().impl
    assert train.create_model(cfg, seed=0).impl == EXPECTED
    saved = json.loads(cfg.to_json())
    assert saved["model"]["impl"] == EXPECTED  # concrete, never "auto"
    assert Config.from_json(cfg.to_json()) == cfg


@pytest.mark.parametrize("impl", models.IMPLS)
def test_a_recorded_impl_loads_as_itself_on_any_backend(tmp_path, impl):
    # Existing run folders (config.json with "cpu" or "flax") stay exactly what they were.
    data = json.loads(_config().to_json())
    data["model"]["impl"] = impl
    path = tmp_path / "config.json"
    path.write_text(json.dumps(data))
    assert Config.load(path).model.impl == impl


def test_a_config_without_impl_takes_auto():
    data = json.loads(_config().to_json())
    del data["model"]["impl"]
    assert Config.from_dict(data).model.impl == EXPECTED


def test_importing_echojax_starts_no_backend():
    # "auto" asks JAX for the default backend, which starts it: nothing may do that at
    # import (a multi-process run must call jax.distributed.initialize first).
    code = ("import echojax.config, echojax.models, echojax.train, echojax.inference, "
            "echojax.export, echojax.evaluate, echojax.experiment, echojax.experiment.cli\n"
            "from jax._src import xla_bridge\n"
            "assert not xla_bridge.backends_are_initialized()\n"
            "from echojax.config import ModelConfig\n"
            "ModelConfig()\n"
            "assert xla_bridge.backends_are_initialized()\n")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=600)


# --- same masks with every implementation ---------------------------------------------


def _phantoms(n_subjects: int, resolution: int = 32):
    examples = [ex for i in range(n_subjects)
                for ex in phantoms.generate_subject("camus_like", i, resolution=resolution)]
    images = np.stack([ex["image"] for ex in examples])
    labels = np.stack([ex["segmentation"][..., 0] for ex in examples]).astype(np.int32)
    return train.model_input(train.to_float(jnp.asarray(images))), jnp.asarray(labels)


def _trained(name: str, impl: str, x, y, steps: int = 20) -> nnx.Module:
    """``name`` trained ``steps`` steps with ``impl``, in eval mode. Class-weighted cross
    entropy and Adam, so that the tiny models predict every structure after a few steps
    (plain CE leaves them all background for hundreds)."""
    model = models.create(name, impl=impl, rngs=nnx.Rngs(0), **models.PRESETS[name]["tiny"])
    opt = nnx.Optimizer(model, optax.adam(1e-2), wrt=nnx.Param)
    freq = np.bincount(np.asarray(y).ravel(), minlength=4) / y.size
    weights = jnp.asarray(4 / freq / (1 / freq).sum(), jnp.float32)

    @nnx.jit
    def step(model, opt, x, y):
        def loss(m):
            ce = optax.softmax_cross_entropy_with_integer_labels(m(x), y)
            return (weights[y] * ce).mean()
        value, grads = nnx.value_and_grad(loss)(model)
        opt.update(model, grads)
        return value

    first = float(step(model, opt, x, y))
    for _ in range(steps - 1):
        last = float(step(model, opt, x, y))
    assert last < first
    model.eval()
    return model


@pytest.mark.parametrize("name, trained_with", [
    ("unet", "auto"), ("attention_unet", "auto"), ("swin_unet", "auto"), ("unet", "flax")])
def test_trained_with_one_impl_predicts_the_same_masks_with_every_other(name, trained_with):
    x, y = _phantoms(8)  # 32 phantom frames, 32x32 (camus_like: LV, LVM, LA)
    model = _trained(name, trained_with, x[:16], y[:16])
    state = nnx.state(model)
    masks, logits = {}, {}
    for impl in models.IMPLS:
        other = nnx.eval_shape(lambda impl=impl: models.create(
            name, impl=impl, rngs=nnx.Rngs(0), **models.PRESETS[name]["tiny"]))
        other.eval()
        other = nnx.merge(nnx.graphdef(other), state)  # the parameters are shared
        assert other.impl == impl
        out = nnx.jit(lambda m, x: m(x))(other, x)
        logits[impl] = np.asarray(out)
        masks[impl] = np.asarray(jnp.argmax(out, axis=-1))
    assert len(np.unique(masks["flax"])) >= 3  # masks with structures, not all background
    # The logits differ by float rounding (up to ~6e-6 when written), never the masks.
    for impl in models.IMPLS:
        np.testing.assert_allclose(logits[impl], logits["flax"], rtol=1e-4, atol=1e-4)
        np.testing.assert_array_equal(masks[impl], masks["flax"], err_msg=impl)


def test_restore_predicts_with_auto_and_keeps_the_recorded_impl(tmp_path):
    from predict_fixtures import make_run, tiny_model_config

    config = tiny_model_config()
    config = dataclasses.replace(config, model=dataclasses.replace(config.model, impl="flax"))
    run = make_run(str(tmp_path / "run"), config)
    assert json.loads(open(run.config).read())["model"]["impl"] == "flax"
    x, _ = _phantoms(4, resolution=16)
    images = np.round((np.asarray(x) + 1) / 2 * 255).astype(np.uint8)
    masks = {}
    for impl in (None, "auto", *models.IMPLS):
        model = inference.restore(run.path, impl=impl)
        assert model.config == config  # the run's own record, "flax"
        assert model.compute_config.model.impl == (
            "flax" if impl is None else models.resolve_impl(impl))
        masks[impl] = model.predictor()(images)
    assert inference.restore(run.path).impl == EXPECTED
    for impl, m in masks.items():
        np.testing.assert_array_equal(m, masks[None], err_msg=str(impl))
    with pytest.raises(ValueError, match="unknown layer implementation"):
        inference.restore(run.path, impl="fast")


# --- dry run -----------------------------------------------------------------------------


def _paper_options(tmp_path):
    return options_lib.options_from_args("e", options_lib.build_parser("").parse_args(
        ["--preset=paper", f"--workdir={tmp_path}"]))


def _run(name, arch, n, dtype="float32"):
    cfg = Config(sources=(Source("synthetic_echo/camus_like_256", alias="camus",
                                 train_examples=n),),
                 resolution=256, model=ModelConfig(name=arch, size="paper"),
                 loss=LossConfig(name="cce"), epochs=500, compute_dtype=dtype)
    return X.Run(name, cfg)


def test_describe_shows_impl_and_compute_dtype():
    d = describe(_run("r", "unet", 10, "bfloat16"))
    assert (d["impl"], d["compute_dtype"]) == (EXPECTED, "bfloat16")


def test_sweep_cost_counts_images_and_estimates_hours(tmp_path):
    table = tmp_path / "throughput.json"
    table.write_text(json.dumps({"rows": [
        {"architecture": "unet", "model_size": "paper", "resolution": 256,
         "compute_dtype": "float32", "images_per_s": 500.0, "batch_size": 32,
         "machine": "one Test GPU", "date": "2026-01-01", "command": "bash bench/gpu.sh"}]}))
    runs = [_run("a", "unet", 100), _run("b", "unet", 200), _run("c", "swin_unet", 100)]
    opts = _paper_options(tmp_path)
    def sizes(config):
        return sum(s.train_examples for s in config.sources)

    lines = cli.sweep_cost(runs, opts, sizes, table=str(table))
    text = "\n".join(lines)
    total = 500 * (100 + 200 + 100)
    assert f"{total:,} images to train on" in lines[0]
    hours = 500 * 300 / 500.0 / 3600
    assert f"unet paper 256x256 float32: 2 runs, {500 * 300:,} images; {hours:,.1f} h on " \
           "one Test GPU" in text
    assert "swin_unet paper 256x256 float32: 1 runs" in text and "no estimate" in text
    assert lines[-1].startswith(f"estimated hours: {hours:,.1f} h of training steps on one "
                                "Test GPU for 2 of the 3 runs")
    missing = cli.sweep_cost(runs, opts, sizes, table=str(tmp_path / "none.json"))
    assert missing[-1].startswith("estimated hours: unavailable: no accelerator throughput")


def test_sweep_cost_counts_unprepared_phantoms_from_their_split(tmp_path):
    def not_prepared(config):
        raise X.DataNotPrepared("x")

    cfg = Config(sources=(Source("synthetic_echo/camus_like_64", alias="camus"),
                          Source("camus/64", alias="real")), resolution=64)
    phantom_only = Config(sources=cfg.sources[:1], resolution=64, epochs=3)
    lines = cli.sweep_cost([X.Run("p", phantom_only, epochs_fixed=True), X.Run("r", cfg)],
                           _paper_options(tmp_path), not_prepared, table=str(tmp_path / "x"))
    # camus_like: 250 subjects, 200 in train (80/10/10 by subject), 2 views x ED/ES.
    assert f"{3 * 800:,} images to train on" in lines[0] and "over the 1 runs" in lines[0]
    assert any("not counted: 1 runs" in x and "(r)" in x for x in lines)


def test_the_measured_table_holds_only_measured_rows():
    with open(cli.THROUGHPUT_TABLE) as f:
        rows = json.load(f)["rows"]
    for row in rows:
        assert {"architecture", "model_size", "resolution", "compute_dtype", "images_per_s",
                "machine", "date", "command", "source"} <= set(row)
        assert row["architecture"] in models.ARCHITECTURES and row["images_per_s"] > 0
