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
CFG_EPI = unity.UnityConfig(name="t", lvm="epicardium")
CFG_NONE = unity.UnityConfig(name="t", lvm="none")


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
    # Upper half circles closed by the chord y = 30: LV r=10, mid-myocardium r=12 (so the
    # mirrored outer border is r=14); the LA a lower half circle r=8 on the same chord.
    frame = {"curve-lv-endo": _curve(_arc(30, 30, 10, 180, 0, n=15)),
             "curve-lv-midmyo": _curve(_arc(30, 30, 12, 180, 0, n=15)),
             "curve-la-endo": _curve(_arc(30, 30, 8, 180, 360))}
    mask, label_mask, short = unity.label_frame(frame, (60, 60), CFG, where="t")
    assert short == 0
    np.testing.assert_array_equal(label_mask, labels.FULL_LABEL_MASK)
    areas = {c: (mask == c).sum() for c in (1, 2, 3)}
    assert areas[1] == pytest.approx(np.pi * 100 / 2, rel=0.12)
    assert areas[2] == pytest.approx(np.pi * (196 - 100) / 2, rel=0.15)
    assert areas[3] == pytest.approx(np.pi * 64 / 2, rel=0.15)
    assert (mask[:25] != 3).all()  # the LA never overwrites the ventricle
    # The epicardium construction reads an epicardial curve instead; "none" never
    # annotates the LVM.
    epi = {**frame, "curve-lv-epi": _curve(_arc(30, 30, 14, 180, 0))}
    mask_epi, lm_epi, _ = unity.label_frame(epi, (60, 60), CFG_EPI, where="t")
    assert lm_epi.all() and (mask_epi == 2).sum() == pytest.approx(areas[2], rel=0.1)
    mask_none, lm_none, _ = unity.label_frame(epi, (60, 60), CFG_NONE, where="t")
    assert lm_none.tolist() == [True, True, False, True] and not (mask_none == 2).any()
    # The curve of the construction missing, blurred or off: LVM not annotated.
    for cfg, name in ((CFG, "curve-lv-midmyo"), (CFG_EPI, "curve-lv-epi")):
        for value in (None, {"type": "blurred", "x": "", "y": ""}, {"type": "off"}):
            f = {k: v for k, v in epi.items() if k != name}
            if value:
                f[name] = value
            mask, label_mask, _ = unity.label_frame(f, (60, 60), cfg, where="t")
            assert label_mask.tolist() == [True, True, False, True] and not (mask == 2).any()


def test_off_is_known_absent_and_blurred_unknown():
    lv = _curve(_arc(30, 30, 10, 180, 0))
    for la, annotated in (({"type": "off", "x": "", "y": ""}, True),
                          ([{"type": "off", "x": "", "y": "", "straight_segment": ""}], True),
                          ({"type": "blurred", "x": "", "y": ""}, False),
                          ([], False), (None, False)):
        frame = {"curve-lv-endo": lv, **({"curve-la-endo": la} if la is not None else {})}
        mask, label_mask, _ = unity.label_frame(frame, (60, 60), CFG_NONE, where="t")
        assert label_mask.tolist() == [True, True, False, annotated], la
        assert not (mask == 3).any()


def test_mirror_across_concentric_circles():
    t = np.linspace(0, np.pi, 200)
    endo = np.stack([10 * np.cos(t), 10 * np.sin(t)], axis=1)
    mid = np.stack([12 * np.cos(t), 12 * np.sin(t)], axis=1)
    outer = unity.mirror_across(endo, mid)
    np.testing.assert_allclose(np.linalg.norm(outer, axis=1), 14, atol=0.05)


def test_both_forms_draw_the_same_smooth_curve_and_straight_segments_straight():
    points = _arc(30, 30, 10, 180, 0, n=9)
    old = unity.parse_label(_curve(points), where="t")
    new = unity.parse_label([dict(_curve(points), straight_segment="0 " * 9)], where="t")
    assert old.type == new.type == "curve"
    line_old, line_new = unity.polyline(old.instances[0]), unity.polyline(new.instances[0])
    for line in (line_old, line_new):  # both pass through every control point
        assert np.linalg.norm(line[:, None] - points[None], axis=2).min(axis=0).max() < 0.3
    # Evenly spaced control points: chord and index parameters nearly agree (within
    # the half-pixel spacing of the samples).
    gap = np.linalg.norm(line_new[:, None] - line_old[None], axis=2).min(axis=1).max()
    assert gap < 0.3
    # Segment 3 -> 4 straight: every sample between them lies on the chord.
    flags = " ".join("1" if i == 3 else "0" for i in range(9))
    bent = unity.polyline(unity.parse_label(
        [dict(_curve(points), straight_segment=flags)], where="t").instances[0])
    p3, p4 = points[3], points[4]
    i3 = int(np.argmin(np.linalg.norm(bent - p3, axis=1)))
    i4 = int(np.argmin(np.linalg.norm(bent - p4, axis=1)))
    assert i4 == i3 + 1  # nothing between them but the straight edge
    u = (p4 - p3) / np.linalg.norm(p4 - p3)
    rel = line_new - p3
    along, across = rel @ u, rel[:, 0] * u[1] - rel[:, 1] * u[0]
    inside = (along > 0.5) & (along < np.linalg.norm(p4 - p3) - 0.5)
    assert np.abs(across[inside]).max() > 0.1  # the spline alone bows out there

    def shoelace(line):
        x, y = line[:, 0], line[:, 1]
        return 0.5 * abs(np.dot(x, np.roll(y, -1)) - np.dot(y, np.roll(x, -1)))

    assert shoelace(bent) < shoelace(line_new) - 0.5  # the bow is cut off


def test_coordinates_and_flags_as_json_lists():
    as_text = unity.parse_label([{"type": "curve", "x": "1 5 9", "y": "2 6 2",
                                  "straight_segment": "0 1 0"}], where="t")
    as_lists = unity.parse_label([{"type": "curve", "x": [1, 5, 9], "y": [2, 6, 2],
                                   "straight_segment": [False, True, False]}], where="t")
    a, b = as_text.instances[0], as_lists.instances[0]
    np.testing.assert_array_equal(a.points, b.points)
    assert a.straight.tolist() == b.straight.tolist() == [False, True, False]


def test_every_instance_is_drawn():
    a, b = _curve(_arc(15, 30, 6, 180, 0)), _curve(_arc(45, 30, 6, 180, 0))
    label = unity.parse_label([dict(a, straight_segment=""), dict(b, straight_segment="")],
                              where="t")
    assert len(label.instances) == 2
    mask, label_mask, _ = unity.label_frame({"curve-lv-endo": label}, (60, 60), CFG_NONE,
                                            where="t")
    assert (mask[:, :30] == 1).sum() > 30 and (mask[:, 30:] == 1).sum() > 30


@pytest.mark.parametrize("value, match", [
    ([{"type": "curve", "x": "1 2 3", "y": "1 2 3", "straight_segment": "0 1"}],
     "straight_segment must hold one 0/1 flag per point"),
    ([{"type": "curve", "x": "1 2 3", "y": "1 2 3"}, {"type": "off"}], "different types"),
    ("curve", "expected a label dict or a list"),
])
def test_malformed_new_form(value, match):
    with pytest.raises(ValueError, match=match):
        unity.parse_label(value, where="f.json: code: curve-lv-endo")


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
    assert unity.normalise_code(f"{code}:png") == code
    assert unity.video_code(code) == code[:-5]


def test_view_rules():
    curve, off, blurred = unity.Label("curve"), unity.Label("off"), unity.Label("blurred")
    lv = {"curve-lv-endo": curve}
    assert unity.apical_view(lv, CFG) == "2CH"
    assert unity.apical_view({**lv, "curve-rv-endo": curve}, CFG) == "4CH"
    assert unity.apical_view({**lv, "tv-sep-hinge": unity.Label("point")}, CFG) == "4CH"
    assert unity.apical_view({**lv, "curve-rv-endo": off}, CFG) == "2CH"
    assert unity.apical_view({**lv, "curve-lv-post-endo": curve}, CFG) is None
    assert unity.apical_view({"curve-lv-endo": blurred}, CFG) is None


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
    # b: LA "off" = known absent (annotated, no pixels); no mid-myocardial curve.
    assert b["split"] == "validation" and b["view"] == b"4CH"
    assert b["label_mask"].tolist() == [True, True, False, True]
    assert set(np.unique(b["segmentation"])) == {0, 1}
    # c (newer form): mid-myocardium blurred, so LVM unknown; LA drawn.
    assert c["split"] == "test" and c["label_mask"].tolist() == [True, True, False, True]
    assert set(np.unique(c["segmentation"])) == {0, 1, 3}
    for ex in a + [b, c]:
        assert ex["phase"] == b"unknown" and np.isnan(ex["ef"])
        assert np.isnan(ex["pixel_spacing_mm"]).all() and ex["source"] == b"unity_imaging"


def test_regions_follow_the_phantom_they_were_traced_on(examples):
    """LV and LVM (rebuilt from the endo and mid-myocardial curves) of the ED frame of
    video a overlap the phantom's LV and myocardium."""
    from echojax import phantoms
    from echojax.data import preprocess
    r = phantoms.render_view("unity_like", 0, "2CH", "ED", shape=make_dummy_data.UNITY_SHAPE,
                             seed=5)
    truth = preprocess.resize_mask(r.classes.astype(np.uint8), 64)
    ex = min(examples[max(examples, key=lambda k: len(examples[k]))],
             key=lambda e: -(e["segmentation"] == 1).sum())
    for cls, floor in ((1, 0.75), (2, 0.5)):
        got, want = ex["segmentation"][..., 0] == cls, truth == cls
        assert 2 * (got & want).sum() / (got.sum() + want.sum()) > floor, cls


def test_keys_json_is_skipped_but_a_mixed_file_is_an_error(tmp_path):
    labels_dir = tmp_path / "labels"
    shutil.copytree(DUMMY / "labels", labels_dir)
    frames, stats = unity.read_labels(sorted(labels_dir.glob("*.json")))
    assert stats["skipped_files"] == [str(labels_dir / "keys.json")]
    assert len(frames) == 6  # every labelled frame of both forms
    path, data = _labels(tmp_path)
    data["curve-lv-endo"] = {"rgb": "1 0 0"}
    path.write_text(json.dumps(data))
    with pytest.raises(ValueError, match=r"labels-2020\.json: key 'curve-lv-endo' is not a"):
        unity.read_labels([path])


def test_curation_file_keeps_and_excludes_frames(tmp_path):
    manual = _broken_copy(tmp_path)
    _, data = _labels(manual)
    a3, a7 = sorted(k for k in data if k.split(".")[0].endswith(("-0003", "-0007")))
    a3, a7 = unity.normalise_code(a3), unity.normalise_code(a7)
    (manual / "curation.json").write_text(json.dumps({"keep": [a3, a7], "exclude": [a7]}))
    builder = prepare(manual, tmp_path / "data")
    kept = [ex for source in builder.as_data_source().values() for ex in source]
    assert len(kept) == 1 and kept[0]["patient_id"].decode() == unity.video_code(a3)
    meta = builder.info.metadata
    assert meta["curation"].startswith("curation.json: 1 frames selected (keep 2, exclude 1)")
    assert meta["kept_frames"] == {"train": 1, "validation": 0, "test": 0}
    assert meta["skipped_files"] == ["keys.json"] and meta["lvm"] == "midmyo"


@pytest.mark.parametrize("curation, match", [
    ({"keep": ["01-" + "0" * 64 + "-0001"]}, "1 listed frame code.* have no labels: 01-000"),
    ({"keep": ["<blurred>"]}, "not apical frames with an LV curve"),
    ({"drop": []}, "expected"),
])
def test_bad_curation_file_is_an_error(tmp_path, curation, match):
    manual = _broken_copy(tmp_path)
    _, data = _labels(manual)
    blurred = unity.normalise_code(next(k for k in data if k.endswith("-0011")))
    text = json.dumps(curation).replace("<blurred>", blurred)
    (manual / "curation.json").write_text(text)
    _assert_fails_cleanly(manual, tmp_path / "data", ValueError, f"curation.json.*{match}")


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
    path = manual / "labels" / "labels-2020.json"
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
                          r"labels-2020\.json:4: not valid JSON")


@pytest.mark.parametrize("label, match", [
    ({"type": "curve", "x": "1 2 3", "y": "1 2"}, "x has 3 values and y 2"),
    ({"type": "curve", "x": "1 a 3", "y": "1 2 3"}, "space-separated numbers"),
    ({"type": "spline", "x": "", "y": ""}, "type in"),
])
def test_malformed_curve_names_file_frame_and_label(tmp_path, label, match):
    manual = _broken_copy(tmp_path)
    path, data = _labels(manual)
    key = sorted(k for k in data if k.endswith("-0007"))[0]
    data[key]["labels"]["curve-la-endo"] = label
    path.write_text(json.dumps(data))
    _assert_fails_cleanly(manual, tmp_path / "data", ValueError,
                          rf"labels-2020\.json.*{key[:10]}.*curve-la-endo.*{match}")


def test_malformed_new_form_names_file_frame_and_label(tmp_path):
    manual = _broken_copy(tmp_path)
    path = manual / "labels" / "labels-instances.json"
    data = json.loads(path.read_text())
    key = sorted(data)[0]
    data[key]["labels"]["curve-lv-endo"][0]["straight_segment"] = "0 0"
    path.write_text(json.dumps(data))
    _assert_fails_cleanly(manual, tmp_path / "data", ValueError,
                          rf"labels-instances\.json.*{key[:10]}.*curve-lv-endo\[0\].*"
                          r"straight_segment")


def test_short_curve_is_not_annotated():
    frame = {"curve-lv-endo": _curve(_arc(30, 30, 10, 180, 0)),
             "curve-la-endo": {"type": "curve", "x": "1 2", "y": "3 4"}}
    mask, label_mask, short = unity.label_frame(frame, (60, 60), CFG, where="t")
    assert short == 1 and label_mask.tolist() == [True, True, False, False]
    assert not (mask == 3).any()
