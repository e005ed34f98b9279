"""CAMUS builder: TFDS harness on both releases, content against an independent
reader of the raw files, and bad input."""

import shutil
import tempfile
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import tensorflow_datasets as tfds

from echojax import labels
from echojax.data import preprocess
from tfds_builders import make_dummy_data, real_data
from tfds_builders.camus import camus_dataset_builder as camus

DUMMY = Path(__file__).parent / "dummy_data"


def _camus_2019_patients():
    """Four patient names whose hash split covers train (2), validation and test."""
    want, out, k = ["train", "train", "validation", "test"], [], 1
    while want:
        name = f"patient{k:04d}"
        if real_data.hash_split(name) in want:
            want.remove(real_data.hash_split(name))
            out.append((name, real_data.hash_split(name)))
        k += 1
    return tuple(out)


PATIENTS_2019 = _camus_2019_patients()


class CamusNiftiTest(tfds.testing.DatasetBuilderTestCase):
    """2023 NIfTI release, official split files (dummy_data/)."""
    DATASET_CLASS = camus.Builder
    BUILDER_CONFIG_NAMES_TO_TEST = ["64", "256"]
    SPLITS = {"train": 8, "validation": 4, "test": 4}
    SKIP_CHECKSUMS = True

    def _make_builder(self, config=None):  # as_dataset needs tfrecord
        return self.dataset_class(data_dir=self.tmp_dir, config=config, version=self.VERSION,
                                  file_format="tfrecord")


class CamusMetaImageTest(tfds.testing.DatasetBuilderTestCase):
    """2019 .mhd/.raw release, no split files: hash split by patient."""
    DATASET_CLASS = camus.Builder
    BUILDER_CONFIG_NAMES_TO_TEST = ["128"]
    SPLITS = {"train": 8, "validation": 4, "test": 4}
    SKIP_CHECKSUMS = True

    @classmethod
    def setUpClass(cls):
        cls._fixture = tempfile.mkdtemp()
        make_dummy_data.write_camus(Path(cls._fixture), release=2019, patients=PATIENTS_2019)
        cls.EXAMPLE_DIR = cls._fixture
        super().setUpClass()

    @classmethod
    def tearDownClass(cls):
        super().tearDownClass()
        shutil.rmtree(cls._fixture, ignore_errors=True)

    def _make_builder(self, config=None):
        return self.dataset_class(data_dir=self.tmp_dir, config=config, version=self.VERSION,
                                  file_format="tfrecord")


def prepare(manual_dir, data_dir, config="64"):
    builder = camus.Builder(config=config, data_dir=str(data_dir))
    builder.download_and_prepare(
        download_config=tfds.download.DownloadConfig(manual_dir=str(manual_dir)))
    return builder


def examples_by_key(builder):
    out = {}
    for split, source in builder.as_data_source().items():
        for ex in source:
            key = (ex["patient_id"].decode(), ex["view"].decode(), ex["phase"].decode())
            out[key] = dict(ex, split=split)
    return out


@pytest.fixture(scope="module")
def nifti_examples(tmp_path_factory):
    return examples_by_key(prepare(DUMMY, tmp_path_factory.mktemp("data")))


def _nibabel_frame(path):
    """Independent reader: nibabel gives CAMUS voxels as [x, y] = [col, row]."""
    image = nib.load(str(path))
    zooms = image.header.get_zooms()
    return np.asarray(image.dataobj).T, (zooms[1], zooms[0])


def test_content_matches_the_raw_files(nifti_examples):
    assert len(nifti_examples) == 16
    for patient, split in make_dummy_data.CAMUS_PATIENTS:
        for view in ("2CH", "4CH"):
            cfg = camus.read_cfg(DUMMY / "database_nifti" / patient / f"Info_{view}.cfg")
            for phase in ("ED", "ES"):
                stem = DUMMY / "database_nifti" / patient / f"{patient}_{view}_{phase}"
                raw, spacing_rc = _nibabel_frame(f"{stem}.nii.gz")
                raw_gt, _ = _nibabel_frame(f"{stem}_gt.nii.gz")
                image, seg, spacing = preprocess.resize_pair(raw, raw_gt, spacing_rc, 64,
                                                             where=str(stem))
                ex = nifti_examples[(patient, view, phase)]
                assert ex["split"] == split
                # Same array, same orientation: not transposed or flipped on the way.
                np.testing.assert_array_equal(ex["image"][..., 0], image)
                np.testing.assert_array_equal(ex["segmentation"][..., 0], seg)
                np.testing.assert_allclose(ex["pixel_spacing_mm"], spacing, rtol=1e-5)
                assert ex["ef"] == pytest.approx(float(cfg["EF"]), abs=1e-4)
                np.testing.assert_array_equal(ex["label_mask"], labels.FULL_LABEL_MASK)
                assert ex["source"] == b"camus"
                assert set(np.unique(ex["segmentation"])) == {0, 1, 2, 3}


def test_frames_are_upright(nifti_examples):
    """The phantom sector's apex (transducer) is at the top centre: in the first rows
    only the middle columns are non-zero. A transposed frame would fail this."""
    image = nifti_examples[("patient0001", "2CH", "ED")]["image"][..., 0]
    top = np.nonzero(image[:6].any(axis=0))[0]
    assert top.size and 16 <= top.min() and top.max() <= 47
    lv_rows = np.nonzero((nifti_examples[("patient0001", "2CH", "ED")]["segmentation"] == 1)
                         .any(axis=(1, 2)))[0]
    assert lv_rows.min() < 32  # the LV hangs from the apex in the upper half


def test_spacing_is_read_per_axis_from_the_header(nifti_examples):
    header = nib.load(str(DUMMY / "database_nifti/patient0001/patient0001_2CH_ED.nii.gz")).header
    col_mm, row_mm = header.get_zooms()[:2]
    w, h = header.get_data_shape()[:2]
    got = nifti_examples[("patient0001", "2CH", "ED")]["pixel_spacing_mm"]
    np.testing.assert_allclose(got, [row_mm * h / 64, col_mm * w / 64], rtol=1e-5)
    assert not np.isclose(got[0], got[1])  # anisotropic: a transposition would show


def test_both_releases_give_the_same_examples(tmp_path):
    """The same phantoms written as 2023 NIfTI and as 2019 MetaImage read the same."""
    builds = {}
    for release in (2023, 2019):
        manual = tmp_path / f"manual{release}"
        make_dummy_data.write_camus(manual, release=release,
                                    patients=make_dummy_data.CAMUS_PATIENTS)
        if release == 2019:  # no split files in that release; copied in, they are used
            shutil.copytree(manual.parent / "manual2023" / "database_split",
                            manual / "database_split")
        builds[release] = examples_by_key(prepare(manual, tmp_path / f"data{release}"))
    nifti, mhd = builds[2023], builds[2019]
    assert mhd.keys() == nifti.keys() and len(mhd) == 16
    for key, ex in mhd.items():
        for name in ("image", "segmentation", "pixel_spacing_mm", "label_mask"):
            np.testing.assert_array_equal(ex[name], nifti[key][name])
        assert ex["ef"] == nifti[key]["ef"] and ex["split"] == nifti[key]["split"]


def test_info_cfg_parsing(tmp_path):
    cfg = tmp_path / "Info_2CH.cfg"
    cfg.write_text("ED: 1\nES: 14\n\nLVef: 47.5\n")
    parsed = camus.read_cfg(cfg)
    assert parsed == {"ED": "1", "ES": "14", "LVef": "47.5"}
    assert camus.ef_from_cfg(parsed, where="x") == 47.5
    assert np.isnan(camus.ef_from_cfg({"ED": "1"}, where="x"))
    cfg.write_text("ED: 1\nno colon here\n")
    with pytest.raises(ValueError, match=r"Info_2CH.cfg:2: expected 'key: value'"):
        camus.read_cfg(cfg)


# ------------------------------------------------------------------- bad input


def _broken_copy(tmp_path):
    manual = tmp_path / "manual"
    shutil.copytree(DUMMY, manual)
    return manual


def _assert_fails_cleanly(manual, data_dir, error, match):
    with pytest.raises(error, match=match):
        prepare(manual, data_dir)
    # Nothing under the final name: TFDS writes into a temporary folder first.
    assert not (Path(data_dir) / "camus" / "64" / "1.0.0").exists()


def test_missing_manual_dir_points_to_instructions(tmp_path):
    _assert_fails_cleanly(tmp_path / "nowhere", tmp_path / "data", AssertionError,
                          r"(?s)does not exist or is empty.*creatis")


def test_missing_files_are_listed(tmp_path):
    manual = _broken_copy(tmp_path)
    (manual / "database_nifti/patient0002/patient0002_4CH_ES_gt.nii.gz").unlink()
    (manual / "database_nifti/patient0003/Info_2CH.cfg").unlink()
    _assert_fails_cleanly(
        manual, tmp_path / "data", FileNotFoundError,
        r"(?s)2 expected path.*patient0002_4CH_ES_gt\.nii\.gz.*patient0003/Info_2CH\.cfg"
        r".*MANUAL_DOWNLOAD_INSTRUCTIONS")


def test_missing_split_files_are_listed(tmp_path):
    manual = _broken_copy(tmp_path)
    (manual / "database_split/subgroup_testing.txt").unlink()
    _assert_fails_cleanly(manual, tmp_path / "data", FileNotFoundError,
                          r"subgroup_testing\.txt")


def test_corrupt_image_names_the_file(tmp_path):
    manual = _broken_copy(tmp_path)
    path = manual / "database_nifti/patient0001/patient0001_2CH_ES.nii.gz"
    path.write_bytes(path.read_bytes()[:40])  # truncated
    _assert_fails_cleanly(manual, tmp_path / "data", ValueError,
                          r"patient0001_2CH_ES\.nii\.gz: cannot read image")


def test_mask_value_out_of_range_names_the_file(tmp_path):
    manual = _broken_copy(tmp_path)
    path = manual / "database_nifti/patient0001/patient0001_4CH_ED_gt.nii.gz"
    mask, spacing_rc = _nibabel_frame(path)
    mask = mask.copy()
    mask[0, 0] = 7
    make_dummy_data.write_nifti(path, mask, spacing_rc)
    _assert_fails_cleanly(manual, tmp_path / "data", ValueError,
                          r"patient0001_4CH_ED_gt\.nii\.gz: mask values must be class ids")


def test_mask_shape_mismatch_names_the_file(tmp_path):
    manual = _broken_copy(tmp_path)
    folder = manual / "database_nifti/patient0001"
    zooms = nib.load(str(folder / "patient0001_4CH_ES.nii.gz")).header.get_zooms()
    make_dummy_data.write_nifti(folder / "patient0001_4CH_ES_gt.nii.gz",
                                np.zeros((50, 40), np.uint8), (zooms[1], zooms[0]))
    _assert_fails_cleanly(manual, tmp_path / "data", ValueError,
                          r"patient0001_4CH_ES_gt\.nii\.gz: mask shape \[50, 40\] does not match")


def test_malformed_split_line_names_file_and_line(tmp_path):
    manual = _broken_copy(tmp_path)
    (manual / "database_split/subgroup_validation.txt").write_text("patient0003\npatient 3\n")
    _assert_fails_cleanly(manual, tmp_path / "data", ValueError,
                          r"subgroup_validation\.txt:2: expected a patient name")


# ------------------------------------------- float grey levels and partial releases


def test_float32_images_with_whole_values_give_the_uint8_examples(tmp_path, nifti_examples):
    manual = tmp_path / "manual"
    make_dummy_data.write_camus(manual, image_dtype=np.float32)
    raw = nib.load(str(manual / "database_nifti/patient0001/patient0001_2CH_ED.nii.gz"))
    assert raw.get_data_dtype() == np.float32
    builder = prepare(manual, tmp_path / "data")
    got = examples_by_key(builder)
    assert got.keys() == nifti_examples.keys()
    for key, ex in got.items():
        np.testing.assert_array_equal(ex["image"], nifti_examples[key]["image"])
    assert "rounded_image_pixels" not in dict(builder.info.metadata)


def test_non_integer_grey_levels_are_rounded_and_counted(tmp_path, caplog):
    def edit(name, image):
        if name == "patient0002_4CH_ES":
            image = image.copy()
            image[10, 5:12] += 0.25   # 7 pixels round down
            image[20, 5:10] += 0.5    # 5 pixels round up (halves up)
        return image

    manual = tmp_path / "manual"
    make_dummy_data.write_camus(manual, image_dtype=np.float32, image_edit=edit)
    def bumped(name, image):  # what the rounding must give: +1 where +0.5 was added
        if name == "patient0002_4CH_ES":
            image = image.copy()
            image[20, 5:10] += 1
        return image

    reference = tmp_path / "reference"
    make_dummy_data.write_camus(reference, image_edit=bumped)
    with caplog.at_level("WARNING"):
        builder = prepare(manual, tmp_path / "data", config="256")
    assert "patient0002_4CH_ES.nii.gz: 12 pixels with non-integer grey levels" in caplog.text
    meta = dict(camus.Builder(config="256", data_dir=str(tmp_path / "data")).info.metadata)
    assert meta["rounded_image_pixels"] == {"files": 1, "pixels": 12}
    want = examples_by_key(prepare(reference, tmp_path / "data_ref", config="256"))
    for key, ex in examples_by_key(builder).items():
        np.testing.assert_array_equal(ex["image"], want[key]["image"], err_msg=str(key))


@pytest.mark.parametrize("value", [255.5, -1.0, 300.0])
def test_grey_levels_outside_0_255_name_the_file(tmp_path, value):
    def edit(name, image):
        if name == "patient0003_2CH_ED":
            image = image.copy()
            image[3, 3] = value
        return image

    manual = tmp_path / "manual"
    make_dummy_data.write_camus(manual, image_dtype=np.float32, image_edit=edit)
    _assert_fails_cleanly(manual, tmp_path / "data", ValueError,
                          r"patient0003_2CH_ED\.nii\.gz: image values must lie in 0\.\.255")


def test_a_2019_subset_without_test_patients_omits_the_split(tmp_path, caplog):
    patients = tuple(p for p in PATIENTS_2019 if p[1] != "test")
    manual = tmp_path / "manual"
    make_dummy_data.write_camus(manual, release=2019, patients=patients)
    with caplog.at_level("WARNING"):
        builder = prepare(manual, tmp_path / "data")
    assert set(builder.info.splits) == {"train", "validation"}
    assert builder.info.splits["train"].num_examples == 8
    assert ("split 'test' has no examples: no patients of the manual directory belong to it"
            in caplog.text)
    assert "patients listed per split: train: 2, validation: 1, test: 0" in caplog.text
    assert set(dict(builder.info.metadata)["omitted_splits"]) == {"test"}


def test_an_empty_official_split_file_omits_the_split(tmp_path, caplog):
    manual = _broken_copy(tmp_path)
    (manual / "database_split/subgroup_validation.txt").write_text("")
    with caplog.at_level("WARNING"):
        builder = prepare(manual, tmp_path / "data")
    assert set(builder.info.splits) == {"train", "test"}
    assert "split 'validation' has no examples" in caplog.text
