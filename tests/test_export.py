"""echojax.export: the model folder restores to the run's exact model, is complete or
absent, and carries what a user needs besides the weights."""

import json
import os

import jax
import numpy as np
import pytest
from predict_fixtures import make_run

from echojax import export, inference, labels


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    # Step 1 has the higher validation Dice: "best" is step 1, "latest" step 2 (the
    # checkpoint manager keeps exactly those two).
    return make_run(str(tmp_path_factory.mktemp("export") / "run"), steps=(1, 2), dice=(0.5, 0.25))


@pytest.fixture(scope="module")
def model_dir(run_dir, tmp_path_factory):
    return export.export(run_dir.path, tmp_path_factory.mktemp("models") / "best")


def _images(n=5, r=16, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (n, r, r, 1), dtype=np.uint8)


def test_round_trip_restores_the_runs_model_and_predictions(run_dir, model_dir):
    from_run = inference.restore(run_dir.path)
    exported = inference.restore(model_dir)
    assert exported.step == from_run.step == 1
    assert exported.config == from_run.config
    assert exported.decision_rule == from_run.decision_rule == "acce"
    for a, b in zip(jax.tree.leaves((from_run.params, from_run.rest)),
                    jax.tree.leaves((exported.params, exported.rest))):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    images = _images()
    np.testing.assert_array_equal(exported.predictor()(images), from_run.predictor()(images))


@pytest.mark.parametrize("which", ["latest", "2"])
def test_exports_the_chosen_checkpoint(run_dir, tmp_path, which):
    path = export.export(run_dir.path, tmp_path / "m", checkpoint=which)
    two, best = inference.restore(path), inference.restore(run_dir.path)
    assert two.step == 2
    leaf_two, leaf_best = jax.tree.leaves(two.params)[0], jax.tree.leaves(best.params)[0]
    # make_run adds 0.01 * step to every parameter.
    np.testing.assert_allclose(np.asarray(leaf_two) - np.asarray(leaf_best), 0.01, atol=1e-6)
    with open(os.path.join(path, inference.MODEL_FILE)) as f:
        assert json.load(f)["validation"]["validation/fg_dice"] == 0.25


def test_model_json_holds_rule_classes_preprocessing_versions_scores(run_dir, model_dir):
    with open(os.path.join(model_dir, inference.MODEL_FILE)) as f:
        info = json.load(f)
    assert info["format"] == export.FORMAT
    assert info["decision_rule"] == "acce"
    assert info["class_names"] == list(labels.CLASS_NAMES)
    assert info["label_ids"]["lv"] == 1
    pre = info["preprocessing"]
    assert pre["resolution"] == 16 and pre["aspect"] == "stretch"
    assert pre["sector"]["function"] == "echojax.data.cone.clear_outside_sector"
    assert info["validation"] == {"validation/fg_dice": 0.5, "validation/dice_lv": 0.5}
    assert info["step"] == 1 and info["source_run"] == run_dir.path
    assert info["packages"]["export"]["packages"]["jax"] == jax.__version__
    assert info["packages"]["training"] is not None
    assert sorted(os.listdir(model_dir)) == ["config.json", "model.json", "params"]


def test_existing_output_is_never_overwritten(run_dir, model_dir):
    before = sorted(os.listdir(model_dir))
    with pytest.raises(ValueError, match="already exists"):
        export.export(run_dir.path, model_dir)
    assert sorted(os.listdir(model_dir)) == before


def test_bad_workdir_names_it_and_leaves_nothing(tmp_path):
    (tmp_path / "not_a_run").mkdir()
    with pytest.raises(ValueError, match="not_a_run.*not a run folder"):
        export.export(tmp_path / "not_a_run", tmp_path / "out")
    assert sorted(os.listdir(tmp_path)) == ["not_a_run"]


def test_missing_checkpoint_step_is_an_error_and_leaves_nothing(run_dir, tmp_path):
    with pytest.raises(ValueError, match="no checkpoint at step 7"):
        export.export(run_dir.path, tmp_path / "out", checkpoint="7")
    assert os.listdir(tmp_path) == []


def test_model_folder_has_one_checkpoint(model_dir):
    with pytest.raises(ValueError, match="one checkpoint"):
        inference.restore(model_dir, checkpoint="latest")
    assert inference.is_model_dir(model_dir) and not inference.is_model_dir(
        os.path.dirname(model_dir))


def test_cli_reports_errors_on_one_line(tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        export.main(["--workdir", str(tmp_path / "nope"), "--out", str(tmp_path / "m")])
    assert e.value.code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "nope" in err
