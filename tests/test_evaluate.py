"""``echojax.evaluate``: per-image CSV and summary from a checkpoint, byte-identical on
re-run, with areas and EF pairs checked against the fixture's known ground truth."""

import csv
import io
import json
import os

import jax
import numpy as np
import pytest
from fixtures import tiny_echo
from fixtures_engine import tiny_config

from echojax import evaluate as evaluate_lib
from echojax import files, rundir, train

pytestmark = pytest.mark.xdist_group("engine")


@pytest.fixture(scope="module")
def run_dir(engine_data_dir, tmp_path_factory):
    workdir = str(tmp_path_factory.mktemp("eval") / "run")
    train.train_and_evaluate(tiny_config(engine_data_dir, epochs=1), workdir)
    return workdir


def _read(path):
    with open(path, "rb") as f:
        return f.read()


def test_evaluate_is_deterministic_and_complete(run_dir):
    out = os.path.join(run_dir, "eval", "test")
    summary = evaluate_lib.evaluate(run_dir, split="test", checkpoint="latest")
    first = {n: _read(os.path.join(out, n)) for n in ("per_image.csv", "summary.json")}
    evaluate_lib.main(["--workdir", run_dir, "--split", "test", "--checkpoint", "latest"])
    assert {n: _read(os.path.join(out, n)) for n in first} == first  # byte-identical
    assert sorted(os.listdir(out)) == ["per_image.csv", "summary.json"]  # no temp files

    rows = list(csv.DictReader(io.StringIO(first["per_image.csv"].decode())))
    assert tuple(rows[0]) == evaluate_lib.CSV_COLUMNS
    assert [int(r["index"]) for r in rows] == [0, 1, 2, 3, 4]  # the 5 test images, in order
    for r in rows:
        # TFDS stores examples in its own order: find the generated one by its ids.
        i = 2 * int(r["patient_id"][len("test"):]) + (r["phase"] == "ES")
        ex = tiny_echo.make_example("test", i, 16)
        assert (r["patient_id"], r["view"], r["phase"]) == (
            ex["patient_id"], ex["view"], ex["phase"])
        true_lv = int((ex["segmentation"][..., 0] == 1).sum())
        assert int(r["lv_area_true_px"]) == true_lv
        sr, sc = ex["pixel_spacing_mm"].astype(np.float64)
        assert float(r["lv_area_true_mm2"]) == pytest.approx(true_lv * sr * sc, rel=1e-12)
        assert float(r["lv_area_pred_mm2"]) == pytest.approx(
            int(r["lv_area_pred_px"]) * sr * sc, rel=1e-12)
        for c in ("dice_lv", "dice_lvm", "dice_la"):
            assert r[c] != "" and 0.0 <= float(r[c]) <= 1.0  # every class present in GT

    assert summary["checkpoint_step"] == 5 and summary["split"] == "test"
    src = summary["sources"]["tiny"]
    assert src["num_images"] == 5
    lv = [float(r["dice_lv"]) for r in rows]
    assert src["dice"]["lv"]["mean"] == pytest.approx(np.mean(lv))
    assert src["dice"]["lv"]["median"] == pytest.approx(np.median(lv))
    assert src["dice"]["lv"]["std"] == pytest.approx(np.std(lv))
    # Test patients: test0000 (2CH ED+ES), test0001 (4CH ED+ES), test0002 (ED only):
    # two monoplane pairs, no patient with both views.
    assert src["ef"]["monoplane"]["count"] == 2
    assert src["ef"]["biplane"]["count"] == 0
    assert json.loads(first["summary.json"]) == json.loads(json.dumps(
        files.json_safe(summary)))


def test_bad_checkpoint_and_workdir(run_dir, tmp_path):
    assert evaluate_lib.evaluate(run_dir, split="validation", checkpoint=5)[
        "checkpoint_step"] == 5
    assert os.path.exists(os.path.join(run_dir, "eval", "validation", "per_image.csv"))
    with pytest.raises(ValueError, match=r"no checkpoint at step 7 .* available: \[5\]"):
        evaluate_lib.evaluate(run_dir, checkpoint=7)
    with pytest.raises(ValueError, match="checkpoint must be 'best', 'latest' or a step"):
        evaluate_lib.evaluate(run_dir, checkpoint="newest")
    with pytest.raises(ValueError, match="is not a run folder"):
        evaluate_lib.evaluate(str(tmp_path))


def test_source_flag_evaluates_the_checkpoint_on_another_dataset(run_dir, capsys):
    # The run's own test split under another alias: the external folder must reproduce
    # the in-domain per-image results exactly, with only the source column renamed.
    from fixtures_engine import DATASET

    evaluate_lib.main(["--workdir", run_dir, "--checkpoint", "latest",
                       "--source", f"{DATASET}:again"])
    ext = os.path.join(run_dir, "external", "again")
    assert os.path.islink(os.path.join(ext, "checkpoints"))
    own = evaluate_lib.evaluate(run_dir, checkpoint="latest")
    got = json.loads(_read(os.path.join(ext, "eval", "test", "summary.json")))
    assert list(got["sources"]) == ["again"]
    assert got["sources"]["again"]["dice"] == json.loads(json.dumps(
        files.json_safe(own["sources"]["tiny"]["dice"])))
    ext_csv = _read(os.path.join(ext, "eval", "test", "per_image.csv")).decode()
    own_csv = _read(os.path.join(run_dir, "eval", "test", "per_image.csv")).decode()
    assert ext_csv == own_csv.replace("\ntiny,", "\nagain,")
    assert f"wrote {os.path.join(ext, 'eval', 'test')}" in capsys.readouterr().out

    # Bad input: no config in the workdir, no TFDS config in the name, alias reused
    # for another dataset.
    with pytest.raises(SystemExit):
        evaluate_lib.main(["--workdir", os.path.dirname(run_dir), "--source", f"{DATASET}:x"])
    with pytest.raises(SystemExit):
        evaluate_lib.main(["--workdir", run_dir, "--source", "synthetic_echo"])
    assert "expects a TFDS name with its config" in capsys.readouterr().err
    with pytest.raises(ValueError, match="already holds an external evaluation"):
        evaluate_lib.main(["--workdir", run_dir, "--source", "synthetic_echo/unity_like_64:again"])


def test_run_records_its_environment_and_evaluate_warns_when_it_differs(run_dir):
    run = rundir.RunDir(run_dir)
    recorded = json.loads(_read(run.environment))
    assert recorded == json.loads(json.dumps(rundir.current_environment()))
    assert rundir.environment_differences(run) == []
    import warnings
    with warnings.catch_warnings():
        warnings.simplefilter("error", rundir.EnvironmentChangedWarning)
        evaluate_lib.evaluate(run_dir, checkpoint="latest")  # same environment: no warning
    changed = dict(recorded, device_kind="TPU v9",
                   packages=dict(recorded["packages"], jax="0.0.1"))
    files.write_json(run.environment, changed)
    try:
        assert rundir.environment_differences(run) == [
            f"jax 0.0.1 -> {recorded['packages']['jax']}",
            f"device_kind TPU v9 -> {recorded['device_kind']}"]
        with pytest.warns(rundir.EnvironmentChangedWarning,
                          match=r"evaluating .* in another environment .*jax 0.0.1 ->"):
            evaluate_lib.evaluate(run_dir, checkpoint="latest")
    finally:
        files.write_json(run.environment, recorded)


def test_restore_uses_abstract_shapes_and_predictor_compiles_once(run_dir):
    from echojax import inference

    model = inference.restore(run_dir, checkpoint="latest")
    state = inference.restore_state(run_dir, checkpoint="latest")
    assert model.step == int(state["step"]) == 5 and model.decision_rule == "acce"
    for a, b in zip(jax.tree.leaves(model.params), jax.tree.leaves(state["params"])):
        np.testing.assert_array_equal(a, np.asarray(b))
    predict = model.predictor(batch_size=4)
    images = np.stack([tiny_echo.make_example("test", i, 16)["image"] for i in range(6)])
    first = predict(images)
    assert first.shape == (6, 16, 16) and first.dtype == np.int32
    np.testing.assert_array_equal(predict(images[:1]), first[:1])  # padding changes nothing
    assert predict.compiled_shapes == 1  # 6 and 1 images: one padded shape
    with pytest.raises(ValueError, match=r"uint8\[N, 16, 16, 1\]"):
        predict(images.astype(np.float32))


def test_ef_pair_with_a_degenerate_predicted_lv_counts_as_failed():
    """A predicted LV of two scattered pixels (as a cross-domain Exp. 1 model predicted
    on an EchoNet-like image) has volume 0 by the discs: the pair gets no EF and is
    counted as failed (it used to stop the whole evaluation), while the other pair's
    error is exact."""
    from echojax import biomarkers
    yy, xx = np.mgrid[:64, :64]
    big = ((yy - 32) / 20.0) ** 2 + ((xx - 32) / 10.0) ** 2 <= 1.0
    small = ((yy - 34) / 15.0) ** 2 + ((xx - 32) / 7.0) ** 2 <= 1.0
    scattered = np.zeros_like(big)
    scattered[14, 32] = scattered[57, 33] = True
    spacing = (0.3, 0.3)
    assert biomarkers.lv_volume(scattered, spacing) == 0.0
    truth_ef = biomarkers.ef_from_masks(big, small, spacing)
    rows, masks = [], {}
    for k, (patient, phase, pred, true) in enumerate([
            ("p0", "ED", scattered, big), ("p0", "ES", small, small),  # degenerate ED
            ("p1", "ED", big, big), ("p1", "ES", small, small)]):       # exact prediction
        rows.append({"source": "s", "index": k, "patient_id": patient, "view": "4CH",
                     "phase": phase, "_ef": truth_ef + 5.0, "_lv_annotated": True,
                     "_spacing_known": True})
        masks[("s", k)] = (pred, true, spacing)
    ef = evaluate_lib._ef_summary(rows, masks)
    mono = ef["monoplane"]
    assert (mono["count"], mono["failed"]) == (2, 1)
    assert mono["mae"] == pytest.approx(5.0) and mono["mae_vs_gt_masks"] == pytest.approx(0.0)
    assert ef["biplane"]["count"] == 0  # one view only
