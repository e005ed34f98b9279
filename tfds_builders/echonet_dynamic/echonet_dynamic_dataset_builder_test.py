"""EchoNet-Dynamic builder: TFDS harness, tracing geometry, the ED/ES rule, cone
masking, metadata and bad input."""

import shutil
from pathlib import Path

import numpy as np
import pytest
import tensorflow_datasets as tfds

from echojax import labels, phantoms
from echojax.data import cone, preprocess
from tfds_builders.echonet_dynamic import echonet_dynamic_dataset_builder as echonet
from tfds_builders.echonet_dynamic import sector_check

DUMMY = Path(__file__).parent / "dummy_data"


class EchoNetTest(tfds.testing.DatasetBuilderTestCase):
    DATASET_CLASS = echonet.Builder
    BUILDER_CONFIG_NAMES_TO_TEST = ["128"]
    # 4 traced videos (2 TRAIN, 1 VAL, 1 TEST) x (ED, ES); one TRAIN video has a
    # single traced frame and is skipped.
    SPLITS = {"train": 4, "validation": 2, "test": 2}
    SKIP_CHECKSUMS = True

    def _make_builder(self, config=None):  # as_dataset needs tfrecord
        return self.dataset_class(data_dir=self.tmp_dir, config=config, version=self.VERSION,
                                  file_format="tfrecord")


def prepare(manual_dir, data_dir, config="64"):
    builder = echonet.Builder(config=config, data_dir=str(data_dir))
    builder.download_and_prepare(
        download_config=tfds.download.DownloadConfig(manual_dir=str(manual_dir)))
    return builder


@pytest.fixture(scope="module")
def examples(tmp_path_factory):
    out = {}
    for split, source in prepare(DUMMY, tmp_path_factory.mktemp("data")).as_data_source().items():
        for ex in source:
            out[(ex["patient_id"].decode(), ex["phase"].decode())] = dict(ex, split=split)
    return out


def test_polygon_from_chords_by_hand():
    # Long axis first (skipped), then two chords: the square (0,0)-(4,4).
    trace = np.array([[2, -9, 2, 9], [0, 0, 4, 0], [0, 4, 4, 4]], float)
    x, y = echonet.trace_polygon(trace)
    np.testing.assert_array_equal(x, [0, 0, 4, 4])
    np.testing.assert_array_equal(y, [0, 4, 4, 0])
    assert echonet.polygon_area(x, y) == 16
    mask = echonet.trace_mask(trace, (8, 8))
    assert mask.dtype == np.uint8 and set(np.unique(mask)) == {0, labels.LV}
    assert mask[1:4, 1:4].all() and not mask[5:].any() and not mask[:, 5:].any()


def test_ed_is_the_largest_traced_area_whatever_the_file_order():
    small = np.array([[0, 0, 0, 0], [0, 0, 2, 0], [0, 2, 2, 2]], float)
    large = np.array([[0, 0, 0, 0], [0, 0, 6, 0], [0, 6, 6, 6]], float)
    # Larger listed first, as in the published files (the public loader's first = ES,
    # last = ED rule would swap these), and the other order.
    assert echonet.ed_es_frames({30: large, 10: small}) == (30, 10)
    assert echonet.first_listed_is_larger({30: large, 10: small})
    assert echonet.ed_es_frames({10: small, 30: large}) == (30, 10)
    assert not echonet.first_listed_is_larger({10: small, 30: large})
    with pytest.raises(ValueError, match="two traced frames"):
        echonet.ed_es_frames({3: small})


def test_examples_ed_es_ef_spacing(examples):
    file_list = echonet.read_file_list(DUMMY / "FileList.csv")
    tracings = echonet.read_tracings(DUMMY / "VolumeTracings.csv")
    traced = [n for n in file_list if len(tracings.get(n, {})) >= 2]
    assert len(traced) == 4 and len(file_list) == 5
    assert {p for p, _ in examples} == set(traced)  # single-trace video skipped
    for name in traced:
        ed, es = examples[(name, "ED")], examples[(name, "ES")]
        # The dummy video's true ED/ES are frames 1 and 4, whatever the CSV order.
        want_ed = preprocess.resize_mask(echonet.trace_mask(tracings[name][1], (32, 32)), 64)
        want_es = preprocess.resize_mask(echonet.trace_mask(tracings[name][4], (32, 32)), 64)
        np.testing.assert_array_equal(ed["segmentation"][..., 0], want_ed)
        np.testing.assert_array_equal(es["segmentation"][..., 0], want_es)
        assert (ed["segmentation"] == 1).sum() > (es["segmentation"] == 1).sum()
        for ex in (ed, es):
            assert ex["ef"] == pytest.approx(file_list[name]["ef"], abs=1e-4)
            assert np.isnan(ex["pixel_spacing_mm"]).all()
            np.testing.assert_array_equal(ex["label_mask"], labels.LV_ONLY_LABEL_MASK)
            assert ex["view"] == b"4CH" and ex["source"] == b"echonet_dynamic"
            assert ex["split"] == file_list[name]["split"]


def test_only_what_lies_outside_the_fan_is_zeroed(examples):
    tracings = echonet.read_tracings(DUMMY / "VolumeTracings.csv")
    removed = 0
    for index, name in enumerate(sorted(tracings)):
        if len(tracings[name]) < 2:
            continue
        video = echonet.read_video(DUMMY / "Videos" / f"{name}.avi")
        assert video.shape == (6, 32, 32)
        cleared, report = echonet.clear_video(video, list(tracings[name].values()), where=name)
        assert report.action == cone.OUTSIDE_FAN_ONLY and report.reason == ""
        # The phantom's true sector (as make_dummy_data renders it) is never touched.
        truth = phantoms.render_view("echonet_like", index, "4CH", "ED", shape=(32, 32),
                                     seed=3)
        assert report.kept[truth.cone].all()
        np.testing.assert_array_equal(cleared, np.where(report.kept, video, 0))
        want = preprocess.resize_image(cleared[1], 64)
        np.testing.assert_array_equal(examples[(name, "ED")]["image"][..., 0], want)
        removed += int(((video[1] > 40) & ~report.kept).sum() > 0)
    # Markings far enough from the fan go; in these 32 x 32 phantoms most are drawn within
    # the 2-pixel gap of it, too near to be certainly outside, and stay.
    assert removed >= 1


def test_metadata_counts_sector_handling_and_skips(tmp_path):
    builder = prepare(DUMMY, tmp_path / "data")
    # Read back from disk, as a user of the prepared dataset sees it.
    info = echonet.Builder(config="64", data_dir=str(tmp_path / "data")).info
    meta = dict(info.metadata)
    assert meta["sector_handling"] == {"estimated_sector": 0, "outside_fan_only": 4,
                                       "unmasked": 0, "estimate_rejected": 0}
    assert meta["skipped"] == {"fewer_than_two_traced_frames": 1}
    assert "omitted_splits" not in meta
    assert dict(builder.info.metadata) == meta


def _subset(tmp_path, keep_split):
    """The dummy release with only the videos of one Split value."""
    manual = tmp_path / "manual"
    shutil.copytree(DUMMY, manual)
    lines = (manual / "FileList.csv").read_text().splitlines()
    rows = [lines[0]] + [line for line in lines[1:] if line.endswith("," + keep_split)]
    (manual / "FileList.csv").write_text("\n".join(rows) + "\n")
    return manual, len(rows) - 1


def test_a_subset_with_empty_splits_omits_them_by_name(tmp_path, caplog):
    manual, n = _subset(tmp_path, "TEST")
    assert n == 1
    with caplog.at_level("WARNING"):
        builder = prepare(manual, tmp_path / "data")
    assert set(builder.info.splits) == {"test"}
    assert builder.info.splits["test"].num_examples == 2
    text = caplog.text
    for split in ("train", "validation"):
        assert f"split '{split}' has no examples: no videos of the manual directory" in text
    assert "videos listed per split: train: 0, validation: 0, test: 1" in text
    omitted = dict(builder.info.metadata)["omitted_splits"]
    assert set(omitted) == {"train", "validation"}


def test_a_split_emptied_by_skipped_videos_is_omitted(tmp_path, caplog):
    manual = _broken_copy(tmp_path)
    # The only VAL video loses one of its two traces: skipped, so validation is empty.
    path = manual / "VolumeTracings.csv"
    rows = path.read_text().splitlines()
    frames = [r.rsplit(",", 1)[1] for r in rows if r.startswith("0X1A0000000000003")]
    drop = frames[-1]
    path.write_text("\n".join(r for r in rows if not (r.startswith("0X1A0000000000003")
                                                      and r.endswith("," + drop))) + "\n")
    with caplog.at_level("WARNING"):
        builder = prepare(manual, tmp_path / "data")
    assert set(builder.info.splits) == {"train", "test"}
    assert "split 'validation' has no examples: all 1 videos listed for it were skipped" in (
        caplog.text)
    assert dict(builder.info.metadata)["skipped"] == {"fewer_than_two_traced_frames": 2}


def test_no_example_at_all_stops_with_the_counts(tmp_path):
    manual, _ = _subset(tmp_path, "TEST")
    path = manual / "VolumeTracings.csv"
    path.write_text(path.read_text().splitlines()[0] + "\n")
    _assert_fails_cleanly(manual, tmp_path / "data", ValueError,
                          r"no split has any example \(videos listed per split: train: 0, "
                          r"validation: 0, test: 1\)")


def test_lv_band_by_hand():
    lv = np.zeros((30, 30), bool)
    lv[10:20, 10:20] = True
    band = sector_check.lv_band(lv, width=2)
    assert band[10:12, 10:20].all() and not band[12:18, 12:18].any()  # inner 2 pixels
    assert band[8, 15] and not band[7, 15] and band[15, 21] and not band[15, 22]
    assert band[9, 9] and not band[8, 8] and not band[8, 9]  # sqrt(2) <= 2 < sqrt(5)
    # Outside: the 14 x 14 square without 3 pixels per corner and the LV; inside: 2 rings.
    assert band.sum() == (14 * 14 - 4 * 3 - 100) + (100 - 36)


# ------------------------------------------------------------------- bad input


def _broken_copy(tmp_path):
    manual = tmp_path / "manual"
    shutil.copytree(DUMMY, manual)
    return manual


def _assert_fails_cleanly(manual, data_dir, error, match):
    with pytest.raises(error, match=match):
        prepare(manual, data_dir)
    assert not (Path(data_dir) / "echonet_dynamic" / "64" / "1.0.0").exists()


def test_missing_files_are_listed(tmp_path):
    manual = _broken_copy(tmp_path)
    (manual / "VolumeTracings.csv").unlink()
    _assert_fails_cleanly(manual, tmp_path / "data", FileNotFoundError,
                          r"(?s)VolumeTracings\.csv.*MANUAL_DOWNLOAD_INSTRUCTIONS")
    manual = _broken_copy(tmp_path / "b")
    (manual / "Videos" / "0X1A0000000000003.avi").unlink()
    _assert_fails_cleanly(manual, tmp_path / "data", FileNotFoundError,
                          r"Videos/0X1A0000000000003\.avi")


def test_corrupt_video_names_the_file(tmp_path):
    manual = _broken_copy(tmp_path)
    (manual / "Videos" / "0X1A0000000000004.avi").write_bytes(b"RIFF not a video")
    _assert_fails_cleanly(manual, tmp_path / "data", ValueError,
                          r"0X1A0000000000004\.avi: (no video frame could be decoded|OpenCV cannot open)")


@pytest.mark.parametrize("csv_name, edit, match", [
    ("VolumeTracings.csv", lambda t: t.replace("FileName,X1", "Name,X1"), r"csv:1: header"),
    ("VolumeTracings.csv", lambda t: t.replace("\n0X1A0000000000002.avi,", "\n0X1A0000000000002.avi,abc", 1),
     r"VolumeTracings\.csv:\d+: X1,Y1,X2,Y2 must be numbers"),
    ("FileList.csv", lambda t: t.replace(",VAL\n", ",VALIDATE\n"), r"FileList\.csv:4: Split"),
    ("FileList.csv", lambda t: t.replace("Split", "Fold"), r"FileList\.csv:1: header lacks"),
])
def test_malformed_csv_names_file_and_line(tmp_path, csv_name, edit, match):
    manual = _broken_copy(tmp_path)
    path = manual / csv_name
    path.write_text(edit(path.read_text()))
    _assert_fails_cleanly(manual, tmp_path / "data", ValueError, match)
