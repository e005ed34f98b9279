"""Unity Imaging builder: TFDS harness, curve geometry, path rule, which frames are
kept, label masks from the data, and bad input."""

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import tensorflow_datasets as tfds

from echojax import labels
from tfds_builders import make_dummy_data
from tfds_builders.unity_imaging import unity_imaging_dataset_builder as unity

DUMMY = Path(__file__).parent / "dummy_data"
CFG = unity.UnityConfig(name="t")


class UnityTest(tfds.testing.DatasetBuilderTestCase):
    DATASET_CLASS = unity.Builder
    BUILDER_CONFIG_NAMES_TO_TEST = ["128"]
    # Kept: 2 frames of a train video, 1 validation, 1 test; dropped: an unlabelled
    # sibling PNG, a frame with the LV blurred, a parasternal frame.
    SPLITS = {"train": 2, "validation": 1, "test": 1}
    SKIP_CHECKSUMS = True

    def _make_builder(self, config=None):  # as_dataset needs tfrecord
        return self.dataset_class(data_dir=self.tmp_dir, config=config, version=self.VERSION,
                                  file_format="tfrecord")


def prepare(manual_dir, data_dir, config="64"):
    builder = unity.Builder(config=config, data_dir=str(data_dir))
    builder.download_and_prepare(
        download_config=tfds.download.DownloadConfig(manual_dir=str(manual_dir)))
    return builder


def _arc(cx, cy, radius, start_deg, end_deg, n=9):
    t = np.deg2rad(np.linspace(start_deg, end_deg, n))
    return np.stack([cx + radius * np.cos(t), cy - radius * np.sin(t)], axis=1)  # y down


def _curve(points):
    return {"type": "curve", "x": " ".join(map(str, points[:, 0])),
            "y": " ".join(map(str, points[:, 1]))}


def test_curves_to_regions_by_area():
    # Upper half circles closed by the chord y = 30: LV r=10, epicardium r=14; the LA a
    # lower half circle r=8 hanging from the same chord.
    frame = {"curve-lv-endo": _curve(_arc(30, 30, 10, 180, 0)),
             "curve-lv-epi": _curve(_arc(30, 30, 14, 180, 0)),
             "curve-la-endo": _curve(_arc(30, 30, 8, 180, 360))}
    mask, label_mask, short = unity.label_frame(frame, (60, 60), CFG, where="t")
    assert short == 0
    np.testing.assert_array_equal(label_mask, labels.FULL_LABEL_MASK)
    areas = {c: (mask == c).sum() for c in (1, 2, 3)}
    assert areas[1] == pytest.approx(np.pi * 100 / 2, rel=0.12)
    assert areas[2] == pytest.approx(np.pi * (196 - 100) / 2, rel=0.15)
    assert areas[3] == pytest.approx(np.pi * 64 / 2, rel=0.15)
    assert (mask[:25] != 3).all()  # the LA never overwrites the ventricle
    # Epicardium missing or blurred: LVM not annotated, its pixels stay 0.
    for epi in (None, {"type": "blurred", "x": "", "y": ""}):
        f = dict(frame)
        f.pop("curve-lv-epi")
        if epi:
            f["curve-lv-epi"] = epi
        mask, label_mask, _ = unity.label_frame(f, (60, 60), CFG, where="t")
        assert label_mask.tolist() == [True, True, False, True] and not (mask == 2).any()


def test_spline_passes_through_control_points():
    points = np.array([[0, 0], [10, 5], [20, 0], [30, 5]], float)
    curve = unity.spline(points)
    for p in points:
        assert np.min(np.linalg.norm(curve - p, axis=1)) < 0.3
    line = unity.spline(np.array([[0, 0], [5, 5], [10, 10]], float))
    np.testing.assert_allclose(line[:, 0], line[:, 1], atol=1e-9)


def test_path_rule_and_code_normalisation():
    code = "01-" + "ab" * 32 + "-0012"
    assert unity.frame_path(Path("png-cache"), code) == Path(
        "png-cache/01/ab/ab") / f"{code}.png"
    assert unity.normalise_code(f"some/dir/{code}.png") == code
    assert unity.normalise_code(f"{code}_(1).png") == code
    assert unity.video_code(code) == code[:-5]


def test_view_rules():
    lv = {"curve-lv-endo": {"type": "curve"}}
    assert unity.apical_view(lv, CFG) == "2CH"
    assert unity.apical_view({**lv, "curve-rv-endo": {"type": "curve"}}, CFG) == "4CH"
    assert unity.apical_view({**lv, "curve-rv-endo": {"type": "off"}}, CFG) == "2CH"
    assert unity.apical_view({**lv, "curve-lv-post-endo": {"type": "curve"}}, CFG) is None
    assert unity.apical_view({"curve-lv-endo": {"type": "blurred"}}, CFG) is None


@pytest.fixture(scope="module")
def examples(tmp_path_factory):
    out = {}
    for split, source in prepare(DUMMY, tmp_path_factory.mktemp("data")).as_data_source().items():
        for ex in source:
            out.setdefault(ex["patient_id"].decode(), []).append(dict(ex, split=split))
    return out


def test_kept_frames_views_and_label_masks(examples):
    videos = {}
    for key, split, *_ in make_dummy_data.UNITY_FRAMES:
        videos.setdefault(key, make_dummy_data.unity_code(len(videos) * 100, split))
    assert set(examples) == {videos["a"], videos["b"], videos["c"]}
    a, (b,), (c,) = examples[videos["a"]], examples[videos["b"]], examples[videos["c"]]
    assert len(a) == 2  # frames 3 and 7; 9 has no labels, 11 has the LV blurred
    for ex in a:
        assert ex["split"] == "train" and ex["view"] == b"2CH"
        np.testing.assert_array_equal(ex["label_mask"], labels.FULL_LABEL_MASK)
        assert set(np.unique(ex["segmentation"])) == {0, 1, 2, 3}
    assert b["split"] == "validation" and b["view"] == b"4CH"
    assert b["label_mask"].tolist() == [True, True, False, False]
    assert set(np.unique(b["segmentation"])) == {0, 1}
    assert c["split"] == "test" and c["label_mask"].tolist() == [True, True, False, True]
    for ex in a + [b, c]:
        assert ex["phase"] == b"unknown" and np.isnan(ex["ef"])
        assert np.isnan(ex["pixel_spacing_mm"]).all() and ex["source"] == b"unity_imaging"


def test_lv_region_follows_the_drawn_curve(examples):
    """The LV pixels lie inside the phantom's LV (the curve was traced on it)."""
    from echojax import phantoms
    from echojax.data import preprocess
    r = phantoms.render_view("unity_like", 0, "2CH", "ED", shape=make_dummy_data.UNITY_SHAPE,
                             seed=5)
    truth = preprocess.resize_mask((r.classes == 1).astype(np.uint8), 64)
    ex = min(examples[max(examples, key=lambda k: len(examples[k]))],
             key=lambda e: -(e["segmentation"] == 1).sum())
    got = ex["segmentation"][..., 0] == 1
    dice = 2 * (got & (truth == 1)).sum() / (got.sum() + (truth == 1).sum())
    assert dice > 0.75


# ------------------------------------------------------------------- bad input


def _broken_copy(tmp_path):
    manual = tmp_path / "manual"
    shutil.copytree(DUMMY, manual)
    return manual


def _assert_fails_cleanly(manual, data_dir, error, match):
    with pytest.raises(error, match=match):
        prepare(manual, data_dir)
    assert not (Path(data_dir) / "unity_imaging" / "64" / "1.0.0").exists()


def _labels(manual):
    path = manual / "labels" / "labels-all.json"
    return path, json.loads(path.read_text())


def test_missing_folders_and_frames_are_listed(tmp_path):
    manual = _broken_copy(tmp_path)
    shutil.rmtree(manual / "png-cache")
    _assert_fails_cleanly(manual, tmp_path / "data", FileNotFoundError,
                          r"(?s)png-cache.*MANUAL_DOWNLOAD_INSTRUCTIONS")
    manual = _broken_copy(tmp_path / "b")
    png = sorted((manual / "png-cache").rglob("*-0010.png"))[0]
    png.unlink()
    _assert_fails_cleanly(manual, tmp_path / "data", FileNotFoundError, png.name)


def test_corrupt_png_names_the_file(tmp_path):
    manual = _broken_copy(tmp_path)
    png = sorted((manual / "png-cache").rglob("*-0000.png"))[0]
    png.write_bytes(png.read_bytes()[:30])
    _assert_fails_cleanly(manual, tmp_path / "data", ValueError,
                          f"{png.name}: cannot read PNG")


def test_malformed_json_names_file_and_line(tmp_path):
    manual = _broken_copy(tmp_path)
    path, _ = _labels(manual)
    text = path.read_text().splitlines()
    text[3] = text[3] + " oops"
    path.write_text("\n".join(text))
    _assert_fails_cleanly(manual, tmp_path / "data", ValueError,
                          r"labels-all\.json:4: not valid JSON")


@pytest.mark.parametrize("label, match", [
    ({"type": "curve", "x": "1 2 3", "y": "1 2"}, "x has 3 values and y 2"),
    ({"type": "curve", "x": "1 a 3", "y": "1 2 3"}, "space-separated numbers"),
    ({"type": "spline", "x": "", "y": ""}, "type in"),
])
def test_malformed_curve_names_file_frame_and_label(tmp_path, label, match):
    manual = _broken_copy(tmp_path)
    path, data = _labels(manual)
    key = sorted(k for k in data if k.endswith("-0000"))[0]
    data[key]["labels"]["curve-la-endo"] = label
    path.write_text(json.dumps(data))
    _assert_fails_cleanly(manual, tmp_path / "data", ValueError,
                          rf"labels-all\.json.*{key[:10]}.*curve-la-endo.*{match}")


def test_short_curve_is_not_annotated():
    frame = {"curve-lv-endo": _curve(_arc(30, 30, 10, 180, 0)),
             "curve-la-endo": {"type": "curve", "x": "1 2", "y": "3 4"}}
    mask, label_mask, short = unity.label_frame(frame, (60, 60), CFG, where="t")
    assert short == 1 and label_mask.tolist() == [True, True, False, False]
    assert not (mask == 3).any()
