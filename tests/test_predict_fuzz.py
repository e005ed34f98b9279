"""Damaged recordings through `echojax predict` in one call over their folder: each one
segmented or failed with one line naming it, nothing half-written, all in the summary
(the bounded version of bench/predict_fuzz.py: one bit-flip seed, one real video)."""

import importlib.util
import os
from pathlib import Path

import pytest
from predict_fixtures import make_run, tiny_model_config

from echojax import export, files

REPO = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location("predict_fuzz", REPO / "bench" / "predict_fuzz.py")
fuzz = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(fuzz)


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("fuzz_model")
    run = make_run(str(root / "run"), tiny_model_config(resolution=16), steps=(1,), dice=(0.5,))
    return export.export(run.path, os.path.join(root, "model"))


def test_mutations_of_one_file():
    data = bytes(range(256)) * 8
    m = fuzz.mutations(data, ".avi", flips=2, seed=3)
    assert set(m) == {"whole", "cut10", "cut50", "zerohead", "empty", "mislabelled",
                      "fliphead0", "flipdata0", "fliphead1", "flipdata1"}
    assert m["cut10"][0] == data[:204] and m["empty"][0] == b""
    assert m["zerohead"][0][:512] == bytes(512) and m["zerohead"][0][512:] == data[512:]
    assert m["mislabelled"] == (data, ".dcm")
    head = m["fliphead0"][0]
    assert head[512:] == data[512:] and head != data
    assert m["flipdata0"][0][:512] == data[:512] and m["flipdata0"][0] != data
    assert fuzz.mutations(data, ".avi", flips=2, seed=3) == m  # reproducible


def test_damaged_recordings_each_succeed_or_fail_cleanly(model_dir, tmp_path):
    result = fuzz.fuzz(model_dir, tmp_path, flips=1, real_videos=1, timeout=240,
                       pydicom_files=("examples_ybr_color.dcm", "examples_palette.dcm",
                                      "MR_small.dcm"))
    assert result["problems"] == []
    assert result["returncode"] == 1  # some failed
    assert result["tried"] == result["ok"] + result["failed"] >= 60
    assert result["ok"] > 10 and result["failed"] > 10 and result["truncated"] > 5
    rows = {Path(r["input"]).name: r for r in files.read_csv(tmp_path / "out" / "summary.csv")}
    # The case: an AVI cut to 10 % of its bytes (its header promises more frames)
    # is segmented on the frames that decode, and flagged.
    real = [s for s in result["sources"] if Path(s).parent == fuzz.REAL_VIDEOS]
    for stem in ["phantom"] + [Path(s).stem for s in real]:
        cut = rows[f"{stem}__cut50.avi"]
        assert cut["status"] == "ok" and cut["warning"].startswith("truncated or damaged")
    if real:
        assert rows[f"{Path(real[0]).stem}__cut10.avi"]["warning"]
    for name in ("phantom__cut50.dcm", "phantom_jpeg__cut50.dcm", "phantom_gz__cut50.nii.gz"):
        assert rows[name]["status"] == "ok" and rows[name]["warning"], name
    assert rows["phantom__empty.avi"]["status"] == "failed"
    assert rows["phantom__whole.dcm"]["warning"] == ""
