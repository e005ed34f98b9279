"""echo_folder: a folder written here round-trips through the builder (pixels, mask
values mapped by the spec, fields from file names and CSV, spacing from the spec or the
header), reads back by name, and bad input stops the build naming the file."""

import csv
import json
import math
from pathlib import Path

import numpy as np
import pytest
import tensorflow_datasets as tfds
from PIL import Image

import tfds_builders  # noqa: F401  registers echo_folder
from tfds_builders import make_dummy_data
from tfds_builders.echo_folder import echo_folder_dataset_builder as folder
from tfds_builders.echo_folder import spec as spec_lib

R = 64


class EchoFolderTest(tfds.testing.DatasetBuilderTestCase):
    """TFDS's harness on ``dummy_data/`` (the fixture script's phantom folder)."""
    DATASET_CLASS = folder.Builder
    BUILDER_CONFIG_NAMES_TO_TEST = [folder.make_config("phantoms_64")]
    SPLITS = {"train": 4}  # P001-P003 all hash to train; the empty splits are omitted
    SKIP_CHECKSUMS = True

    def _make_builder(self, config=None):  # as_dataset needs tfrecord; no default config
        return self.dataset_class(data_dir=self.tmp_dir, config=config or "phantoms_64",
                                  version=self.VERSION, file_format="tfrecord")

# The user's mask values: 0 background, 100 LV, 200 LVM, 50 RV (counted as background).
LABELS = {"0": "background", "100": "lv", "200": "lvm", "50": "background"}


def _frames(k):
    rng = np.random.default_rng(k)
    image = rng.integers(0, 256, (R, R), dtype=np.uint8)
    raw = np.zeros((R, R), np.uint8)
    raw[10:30, 20:40] = 200
    raw[14:26, 24:36] = 100
    raw[40:50, 5:15] = 50
    raw[k, k] = 100  # makes each mask different
    return image, raw


def _write(root, patients=(("P01", "ED"), ("P01", "ES"), ("P02", "ED")), spec=None,
           efs=(("P01", "55.5"), ("P02", "40"))):
    root = Path(root)
    (root / "img").mkdir(parents=True)
    (root / "lab").mkdir()
    for k, (patient, phase) in enumerate(patients):
        image, raw = _frames(k)
        Image.fromarray(image).save(root / "img" / f"{patient}_4CH_{phase}.png")
        Image.fromarray(raw).save(root / "lab" / f"{patient}_4CH_{phase}_mask.png")
    with (root / "ef.csv").open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["patient_id", "ef"])
        w.writerows(efs)
    spec = {"name": "clinic", "images": "img/*.png", "masks": "lab/{stem}_mask.png",
            "labels": LABELS, "annotated": ["lv", "lvm"], "pixel_spacing_mm": [0.3, 0.25],
            "filename_regex": r"(?P<patient_id>P\d+)_(?P<view>[24]CH)_(?P<phase>ED|ES)",
            "csv": "ef.csv", "split": "test", **(spec or {})}
    (root / spec_lib.SPEC_FILE).write_text(json.dumps(spec))
    return root


def _build(manual, data_dir, name="clinic"):
    builder = tfds.builder(f"echo_folder/{name}_{R}", data_dir=str(data_dir))
    builder.download_and_prepare(
        download_config=tfds.download.DownloadConfig(manual_dir=str(manual)))
    return builder


def _all(builder):
    return {s: list(src) for s, src in builder.as_data_source().items()}


def test_round_trip_pixels_labels_and_fields(tmp_path):
    manual = _write(tmp_path / "folder")
    builder = _build(manual, tmp_path / "data")
    splits = _all(builder)
    assert set(splits) == {"test"}  # everything in the test split, as the spec says
    got = {(e["patient_id"].decode(), e["phase"].decode()): e for e in splits["test"]}
    assert sorted(got) == [("P01", "ED"), ("P01", "ES"), ("P02", "ED")]
    for k, key in enumerate([("P01", "ED"), ("P01", "ES"), ("P02", "ED")]):
        image, raw = _frames(k)
        want = np.select([raw == 100, raw == 200], [1, 2], 0).astype(np.uint8)
        ex = got[key]
        np.testing.assert_array_equal(ex["image"][..., 0], image)
        np.testing.assert_array_equal(ex["segmentation"][..., 0], want)
        assert ex["label_mask"].tolist() == [True, True, True, False]
        assert ex["view"] == b"4CH" and ex["source"] == b"clinic"
        assert ex["ef"] == pytest.approx(55.5 if key[0] == "P01" else 40.0)
        np.testing.assert_allclose(ex["pixel_spacing_mm"], [0.3, 0.25])
    assert json.loads(builder.info.metadata["spec"])["name"] == "clinic"
    # Read back by name alone, without the folder (as a training or test source).
    again = tfds.builder(f"echo_folder/clinic_{R}", data_dir=str(tmp_path / "data"))
    assert len(again.as_data_source(split="test")) == 3


def test_nifti_and_mhd_with_spacing_from_the_header(tmp_path):
    root = tmp_path / "folder"
    root.mkdir()
    image = np.tile(np.arange(96, dtype=np.uint8), (128, 1))
    raw = np.zeros((128, 96), np.uint8)
    raw[40:80, 30:60] = 3
    make_dummy_data.write_nifti(root / "a_2CH.nii.gz", image, (0.2, 0.4))
    make_dummy_data.write_nifti(root / "a_2CH_gt.nii.gz", raw, (0.2, 0.4))
    make_dummy_data.write_mhd(root / "b_2CH.mhd", image, (0.5, 0.1))
    make_dummy_data.write_mhd(root / "b_2CH_gt.mhd", raw, (0.5, 0.1))
    spec = {"name": "scans", "images": "*_2CH.nii.gz", "masks": "{stem}_gt.nii.gz",
            "labels": {"0": "background", "3": "la"}, "annotated": ["la"],
            "pixel_spacing_mm": "header", "defaults": {"view": "2CH"}, "split": "train"}
    (root / spec_lib.SPEC_FILE).write_text(json.dumps(spec))
    ex, = _all(_build(root, tmp_path / "d1", "scans"))["train"]
    np.testing.assert_allclose(ex["pixel_spacing_mm"], [0.2 * 128 / R, 0.4 * 96 / R], rtol=1e-6)
    assert ex["label_mask"].tolist() == [True, False, False, True]
    assert ex["patient_id"] == b"a_2CH" and math.isnan(ex["ef"]) and ex["phase"] == b"unknown"
    spec["images"], spec["masks"] = "*_2CH.mhd", "{stem}_gt.mhd"
    (root / spec_lib.SPEC_FILE).write_text(json.dumps(spec))
    ex, = _all(_build(root, tmp_path / "d2", "scans"))["train"]
    np.testing.assert_allclose(ex["pixel_spacing_mm"], [0.5 * 128 / R, 0.1 * 96 / R], rtol=1e-6)
    assert (ex["segmentation"] == 3).sum() == pytest.approx(40 * 30 * (R / 128) * (R / 96), rel=0.1)


def test_patient_csv_keys_on_the_stem_without_a_regex(tmp_path):
    manual = _write(tmp_path / "folder", spec={"filename_regex": None,
                                               "defaults": {"view": "2CH"}},
                    efs=(("P01_4CH_ES", "61"), ("P99", "10")))  # P99: another patient
    got = {e["patient_id"].decode(): e for e in _all(_build(manual, tmp_path / "data"))["test"]}
    assert sorted(got) == ["P01_4CH_ED", "P01_4CH_ES", "P02_4CH_ED"]
    assert got["P01_4CH_ES"]["ef"] == 61 and np.isnan(got["P01_4CH_ED"]["ef"])
    assert got["P02_4CH_ED"]["phase"] == b"unknown" and got["P02_4CH_ED"]["view"] == b"2CH"


def test_per_image_annotated_classes_from_the_csv(tmp_path):
    manual = _write(tmp_path / "folder", spec={"csv": "meta.csv"})
    rows = [["image", "annotated"], ["P01_4CH_ED.png", "lv lvm la"],
            ["img/P02_4CH_ED.png", "lv,lvm"]]
    with (manual / "meta.csv").open("w", newline="") as f:
        csv.writer(f).writerows(rows)
    got = {(e["patient_id"].decode(), e["phase"].decode()): e["label_mask"].tolist()
           for e in _all(_build(manual, tmp_path / "data"))["test"]}
    assert got == {("P01", "ED"): [True, True, True, True],  # LA annotated, known absent
                   ("P01", "ES"): [True, True, True, False],  # the spec's list
                   ("P02", "ED"): [True, True, True, False]}
    rows[2][1] = "lv"  # but the mask has LVM pixels
    with (manual / "meta.csv").open("w", newline="") as f:
        csv.writer(f).writerows(rows)
    _fails(manual, tmp_path / "data2", r"P02_4CH_ED_mask\.png: class lvm has pixels but is "
                                       r"not marked as annotated")


def test_hash_split_by_patient_omits_empty_splits(tmp_path):
    manual = _write(tmp_path / "folder", spec={"split": "hash"})
    splits = _all(_build(manual, tmp_path / "data"))
    from tfds_builders import real_data
    for split, examples in splits.items():
        for ex in examples:
            assert real_data.hash_split(ex["patient_id"].decode()) == split
    assert sum(len(v) for v in splits.values()) == 3


def test_phantom_folder_from_the_fixture_script(tmp_path):
    make_dummy_data.write_echo_folder(tmp_path / "folder")
    splits = _all(_build(tmp_path / "folder", tmp_path / "data", "phantoms"))
    examples = [e for v in splits.values() for e in v]
    assert len(examples) == len(make_dummy_data.ECHO_FOLDER_FRAMES)
    for ex in examples:
        assert set(np.unique(ex["segmentation"])) == {0, 1, 2, 3}
        assert ex["label_mask"].all() and not math.isnan(ex["ef"])


# ------------------------------------------------------------------- bad input


def _fails(manual, data_dir, match, name="clinic", error=ValueError):
    with pytest.raises(error, match=match):
        _build(manual, data_dir, name)
    assert not (Path(data_dir) / "echo_folder" / f"{name}_{R}" / "1.0.0").exists()


def test_shapes_that_differ_name_the_mask(tmp_path):
    manual = _write(tmp_path / "folder")
    Image.fromarray(np.zeros((R, R + 2), np.uint8)).save(manual / "lab" / "P02_4CH_ED_mask.png")
    _fails(manual, tmp_path / "data", r"P02_4CH_ED_mask\.png: mask shape \[64, 66\] does not "
                                      r"match image shape \[64, 64\] of .*P02_4CH_ED\.png")


def test_unknown_label_value_names_file_and_value(tmp_path):
    manual = _write(tmp_path / "folder")
    raw = _frames(1)[1]
    raw[0, 0] = 7
    Image.fromarray(raw).save(manual / "lab" / "P01_4CH_ES_mask.png")
    _fails(manual, tmp_path / "data", r"P01_4CH_ES_mask\.png: mask values \[7\] are not in")


def test_mask_without_image_and_image_without_mask(tmp_path):
    manual = _write(tmp_path / "folder")
    (manual / "img" / "P02_4CH_ED.png").unlink()
    _fails(manual, tmp_path / "data", r"1 mask\(s\) without an image.*P02_4CH_ED_mask\.png")
    manual = _write(tmp_path / "folder2")
    (manual / "lab" / "P01_4CH_ED_mask.png").unlink()
    _fails(manual, tmp_path / "data", r"1 image\(s\) without a mask.*P01_4CH_ED_mask\.png")


@pytest.mark.parametrize("change, match", [
    ({"labels": {"0": "background", "100": "rv"}}, r"class must be one of"),
    ({"annotated": ["lv"]}, r"labels map values to \['lvm'\], which annotated does not list"),
    ({"colour": "red"}, r"unknown keys \['colour'\]"),
    ({"name": "other"}, r"the spec's name is 'other', but the config asks for 'clinic'"),
    ({"masks": "lab/mask.png"}, r"masks must contain \{stem\}"),
    ({"filename_regex": r"(?P<patient_id>P\d+)_(?P<view>[24]CH)_(?P<phase>ED)"},
     r"P01_4CH_ES\.png: file name does not match"),
    ({"split": "csv"}, r"split None is not train/validation/test"),
])
def test_bad_spec_is_an_error_naming_it(tmp_path, change, match):
    manual = _write(tmp_path / "folder", spec=change)
    _fails(manual, tmp_path / "data", match)


def test_csv_conflicts_and_patients_across_splits(tmp_path):
    manual = _write(tmp_path / "folder", spec={"csv": "meta.csv", "split": "csv"})
    rows = [["image", "phase", "split"], ["img/P01_4CH_ED.png", "ES", "train"],
            ["img/P01_4CH_ES.png", "ES", "train"], ["img/P02_4CH_ED.png", "ED", "test"]]
    with (manual / "meta.csv").open("w", newline="") as f:
        csv.writer(f).writerows(rows)
    _fails(manual, tmp_path / "data", r"P01_4CH_ED\.png: phase is 'ED' by one source")
    rows[1][1], rows[2][2] = "ED", "test"
    with (manual / "meta.csv").open("w", newline="") as f:
        csv.writer(f).writerows(rows)
    _fails(manual, tmp_path / "data", r"meta\.csv: patients in several splits: P01")
    rows.append(["img/P03_4CH_ED.png", "ED", "test"])
    with (manual / "meta.csv").open("w", newline="") as f:
        csv.writer(f).writerows(rows)
    _fails(manual, tmp_path / "data", r"1 row\(s\) name no image.*P03")


def test_config_names(tmp_path):
    assert folder.make_config("hospital_256").resolution == 256
    for bad in ("hospital", "Hospital_64", "h_0"):
        with pytest.raises(ValueError, match="<spec name>_<resolution>"):
            folder.make_config(bad)
    with pytest.raises(ValueError, match="needs a config"):
        folder.Builder(data_dir=str(tmp_path))


def test_dicom_image_with_png_mask_and_header_spacing_refused(tmp_path):
    import SimpleITK as sitk
    root = tmp_path / "folder"
    root.mkdir()
    image, raw = _frames(0)
    sitk.WriteImage(sitk.GetImageFromArray(image), str(root / "P09_2CH_ES.dcm"))
    Image.fromarray(raw).save(root / "P09_2CH_ES_mask.png")
    spec = {"name": "dcm", "images": "*.dcm", "masks": "{stem}_mask.png", "labels": LABELS,
            "annotated": ["lv", "lvm"], "defaults": {"view": "2CH"}, "split": "validation"}
    (root / spec_lib.SPEC_FILE).write_text(json.dumps(spec))
    ex, = _all(_build(root, tmp_path / "d1", "dcm"))["validation"]
    np.testing.assert_array_equal(ex["image"][..., 0], image)
    assert np.isnan(ex["pixel_spacing_mm"]).all()
    (root / spec_lib.SPEC_FILE).write_text(json.dumps({**spec, "pixel_spacing_mm": "header"}))
    _fails(root, tmp_path / "d2", r"P09_2CH_ES\.dcm: pixel_spacing_mm is \"header\"", "dcm")


def test_dicom_spacing_from_the_ultrasound_region(tmp_path):
    pydicom = pytest.importorskip("pydicom")
    import SimpleITK as sitk
    root = tmp_path / "folder"
    root.mkdir()
    image, raw = _frames(2)
    path = root / "P07_4CH_ED.dcm"
    sitk.WriteImage(sitk.GetImageFromArray(image), str(path))
    ds = pydicom.dcmread(str(path))
    region = pydicom.Dataset()
    region.RegionSpatialFormat, region.PhysicalUnitsXDirection = 1, 3
    region.PhysicalUnitsYDirection, region.PhysicalDeltaX, region.PhysicalDeltaY = 3, 0.02, 0.03
    ds.SequenceOfUltrasoundRegions = pydicom.Sequence([region])
    ds.save_as(str(path))
    assert folder.dicom_spacing(path) == pytest.approx((0.3, 0.2))
    Image.fromarray(raw).save(root / "P07_4CH_ED_mask.png")
    (root / spec_lib.SPEC_FILE).write_text(json.dumps({
        "name": "us", "images": "*.dcm", "masks": "{stem}_mask.png", "labels": LABELS,
        "annotated": ["lv", "lvm"], "pixel_spacing_mm": "header", "defaults": {"view": "4CH"},
        "split": "test"}))
    ex, = _all(_build(root, tmp_path / "data", "us"))["test"]
    np.testing.assert_allclose(ex["pixel_spacing_mm"], [0.3, 0.2], rtol=1e-6)
    np.testing.assert_array_equal(ex["image"][..., 0], image)
