"""The real-data paths end to end on each real builder's dummy data (CAMUS, EchoNet-
Dynamic, Unity Imaging, in their published formats): prepare, train, evaluate, and an
experiment script with ``--data=real``, so that a property of real data the phantoms
lack (no pixel spacing in EchoNet-Dynamic and Unity, LV-only labels, tiny splits)
cannot crash a step unseen."""

import csv
import json
import os

import numpy as np
import pytest
import tensorflow_datasets as tfds

from echojax import evaluate, rundir, train
from echojax import experiment as X
from echojax.config import Config, LossConfig, ModelConfig, Source
from tfds_builders.camus import camus_dataset_builder as camus
from tfds_builders.echonet_dynamic import echonet_dynamic_dataset_builder as echonet
from tfds_builders.unity_imaging import unity_imaging_dataset_builder as unity

pytestmark = pytest.mark.xdist_group("engine")

BUILDERS = {"camus": camus, "echonet": echonet, "unity": unity}


def _exp1():
    import importlib.util
    path = os.path.join(os.path.dirname(__file__), "..", "experiments", "exp1_domain_shift.py")
    spec = importlib.util.spec_from_file_location("exp1_domain_shift", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.EXPERIMENT


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    """The three real builders prepared from their dummy data at 64 x 64."""
    out = str(tmp_path_factory.mktemp("real_tfds"))
    for module in BUILDERS.values():
        manual = os.path.join(os.path.dirname(module.__file__), "dummy_data")
        module.Builder(config="64", data_dir=out).download_and_prepare(
            download_config=tfds.download.DownloadConfig(manual_dir=manual),
            file_format="array_record")
    return out


def _tiny(data_dir, alias):
    # The smoke preset's model, loss and batch shapes: the experiment test below then
    # reuses these runs' compiled steps (the suite's time goes to compiling).
    name = X.tfds_name(alias, data="real", resolution=64)
    return Config(sources=(Source(name, alias=alias),), resolution=64, data_dir=data_dir,
                  model=ModelConfig(name="unet", size="tiny"), loss=LossConfig(name="cce"),
                  batch_size=2, epochs=1, log_every=1, seed=0)


@pytest.mark.parametrize("alias", ["camus", "echonet", "unity"])
def test_train_and_evaluate_on_each_real_builder(data_dir, tmp_path, alias):
    workdir = str(tmp_path / alias)
    train.train_and_evaluate(_tiny(data_dir, alias), workdir)
    summary = evaluate.evaluate(workdir, checkpoint="latest")
    run = rundir.RunDir(workdir)
    with open(run.per_image()) as f:
        rows = list(csv.DictReader(f))
    test_size = tfds.builder(f"{BUILDERS[alias].Builder.name}/64",
                             data_dir=data_dir).info.splits["test"].num_examples
    assert len(rows) == summary["sources"][alias]["num_images"] == test_size > 0
    src = summary["sources"][alias]
    if alias == "camus":  # spacing from the NIfTI headers: areas in mm^2, EF pairs
        assert src["spacing_known"]
        assert all(float(r["lv_area_true_mm2"]) > 0 for r in rows)
        assert src["ef"]["monoplane"]["count"] > 0
    else:  # no pixel spacing in the release: no mm^2, no biplane
        assert not src["spacing_known"]
        assert all(r["lv_area_true_mm2"] == "" and int(r["lv_area_true_px"]) > 0 for r in rows)
    if alias == "echonet":  # EF known, spacing unknown: monoplane EF with unit spacing
        mono = src["ef"]["monoplane"]
        assert mono["count"] == test_size // 2 and src["ef"]["biplane"]["count"] == 0
        assert mono["failed"] == mono["count"] or mono["mae"] is not None
        assert mono["mae_vs_gt_masks"] is None or np.isfinite(mono["mae_vs_gt_masks"])
    if alias == "unity":  # no EF in the release
        assert src["ef"] is None
    env = json.load(open(run.environment))
    assert env["device_kind"] and env["packages"]["jax"]


@pytest.mark.slow
def test_experiment_script_on_real_data(data_dir, tmp_path, capsys):
    # Experiment 1 trains on each dataset alone and on all three, and tests every model
    # on every dataset's test split (EchoNet's without spacing among them).
    workdir = str(tmp_path / "exp1")
    argv = ["--data=real", f"--data_dir={data_dir}", "--preset=smoke", f"--workdir={workdir}"]
    assert X.main(_exp1(), argv) == 0
    text = open(os.path.join(workdir, "report.md")).read()
    assert "runs finished: 4 of 4" in text, text
    results = {(r["setting"], r["test_source"], r["structure"]): r
               for r in csv.DictReader(open(os.path.join(workdir, "results.csv")))}
    for setting in ("camus", "unity", "echonet", "all"):
        for test in ("camus", "unity", "echonet"):
            assert (setting, test, "lv") in results
    # EchoNet's test video gives one ED/ES pair, measured without a pixel spacing.
    summary = json.load(open(os.path.join(workdir, "unet/cce/echonet/s0/eval/test/summary.json")))
    assert summary["sources"]["echonet"]["ef"]["monoplane"]["count"] == 1
    out = capsys.readouterr().out
    assert "4 runs trained, 0 skipped" in out
