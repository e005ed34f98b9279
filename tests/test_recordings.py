"""Tests of echojax.recordings: every format on files written here, pydicom's own
ultrasound test files, the shared real EchoNet-Dynamic videos, and bad input."""

import csv
import gzip
from pathlib import Path

import cv2
import numpy as np
import pydicom
import pydicom.data
import pytest
import SimpleITK as sitk

from echojax import phantoms, recordings
from echojax.recordings import RecordingError, read_recording

REAL = Path(__file__).resolve().parents[1] / ".." / "shared" / "real_samples" / "echonet_dynamic"


@pytest.fixture(scope="module")
def loop():
    return phantoms.render_cine("camus_like", 2, "4CH", shape=(40, 48), num_frames=9,
                                frames_per_beat=6, fps=30.0)


def pydicom_file(name):
    path = pydicom.data.get_testdata_file(name, download=False)
    if path is None:
        pytest.skip(f"pydicom test file {name} not available offline")
    return Path(path)


# --- DICOM ------------------------------------------------------------------------------


def test_phantom_dicom_spacing_from_ultrasound_region(loop, tmp_path):
    rec = read_recording(phantoms.write_dicom(loop, tmp_path / "loop.dcm"))
    np.testing.assert_array_equal(rec.frames, loop.frames)
    assert rec.frames.dtype == np.uint8 and rec.num_frames == 9
    assert rec.spacing_source == "ultrasound_region" and rec.kind == "dicom"
    np.testing.assert_allclose(rec.spacing_mm, loop.pixel_spacing_mm, rtol=1e-6)
    assert rec.fps == pytest.approx(30.0, rel=1e-4)


def test_dicom_without_suffix_is_recognised_by_its_preamble(loop, tmp_path):
    path = phantoms.write_dicom(loop, tmp_path / "loop.dcm")
    plain = path.rename(tmp_path / "IM0001")
    np.testing.assert_array_equal(read_recording(plain).frames, loop.frames)


def _edit(path, out, fn):
    ds = pydicom.dcmread(path)
    fn(ds)
    ds.save_as(out)
    return out


def test_dicom_spacing_falls_back_to_pixel_spacing_then_unknown(loop, tmp_path):
    src = phantoms.write_dicom(loop, tmp_path / "loop.dcm")

    def pixel_spacing(ds):
        del ds.SequenceOfUltrasoundRegions
        ds.PixelSpacing = [0.25, 0.5]

    rec = read_recording(_edit(src, tmp_path / "ps.dcm", pixel_spacing))
    assert rec.spacing_mm == (0.25, 0.5) and rec.spacing_source == "pixel_spacing"

    def nothing(ds):
        del ds.SequenceOfUltrasoundRegions

    rec = read_recording(_edit(src, tmp_path / "none.dcm", nothing))
    assert rec.spacing_mm is None and rec.spacing_source == "none"

    def mm_region(ds):  # a region in other units than cm is not a length calibration
        ds.SequenceOfUltrasoundRegions[0].PhysicalUnitsXDirection = 4  # seconds
        del ds.FrameTime
        ds.RecommendedDisplayFrameRate = 20

    rec = read_recording(_edit(src, tmp_path / "sec.dcm", mm_region))
    assert rec.spacing_mm is None and rec.fps == 20.0


def _dicom(path, pixels, photometric, samples, frames=None):
    ds = pydicom.Dataset()
    ds.file_meta = pydicom.dataset.FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = pydicom.uid.ExplicitVRLittleEndian
    ds.file_meta.MediaStorageSOPClassUID = pydicom.uid.UltrasoundImageStorage
    ds.file_meta.MediaStorageSOPInstanceUID = pydicom.uid.generate_uid()
    ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID
    ds.Modality = "US"
    ds.Rows, ds.Columns = pixels.shape[-3:-1] if samples == 3 else pixels.shape[-2:]
    ds.SamplesPerPixel = samples
    ds.PhotometricInterpretation = photometric
    if samples == 3:
        ds.PlanarConfiguration = 0
    if frames is not None:
        ds.NumberOfFrames = frames
    ds.BitsAllocated = ds.BitsStored = 8
    ds.HighBit, ds.PixelRepresentation = 7, 0
    ds.PixelData = np.ascontiguousarray(pixels, np.uint8).tobytes()
    ds.save_as(path, enforce_file_format=True)
    return path


def test_rgb_dicom_becomes_bt601_luma(tmp_path):
    rgb = np.array([[[255, 0, 0], [0, 255, 0]], [[0, 0, 255], [100, 100, 100]]], np.uint8)
    rec = read_recording(_dicom(tmp_path / "rgb.dcm", rgb, "RGB", 3))
    # round(0.299 * 255), round(0.587 * 255), round(0.114 * 255), 100
    np.testing.assert_array_equal(rec.frames, [[[76, 150], [29, 100]]])


def test_monochrome1_is_inverted_and_single_frame_has_one_frame(tmp_path):
    grey = np.array([[0, 10], [200, 250]], np.uint8)
    rec = read_recording(_dicom(tmp_path / "m1.dcm", grey, "MONOCHROME1", 1))
    np.testing.assert_array_equal(rec.frames, [[[250, 240], [50, 0]]])


def test_pydicom_multiframe_ybr_ultrasound_cine():
    path = pydicom_file("examples_ybr_color.dcm")
    ds = pydicom.dcmread(path, stop_before_pixels=True)
    region = ds.SequenceOfUltrasoundRegions[0]
    rec = read_recording(path)
    assert rec.frames.shape == (30, 240, 320) and rec.frames.dtype == np.uint8
    assert rec.spacing_source == "ultrasound_region"
    assert rec.spacing_mm == pytest.approx((10 * float(region.PhysicalDeltaY),
                                            10 * float(region.PhysicalDeltaX)))
    assert rec.fps == pytest.approx(1000.0 / float(ds.FrameTime))
    # YBR_FULL_422 decoded to RGB, then luma: close to the Y channel itself.
    y = pydicom.pixels.pixel_array(pydicom.dcmread(path), as_rgb=False)[..., 0]
    assert np.abs(rec.frames.astype(int) - y).mean() < 2.0


def test_pydicom_palette_and_rgb_ultrasound_images():
    rec = read_recording(pydicom_file("examples_palette.dcm"))
    assert rec.frames.shape == (1, 350, 800) and rec.spacing_source == "ultrasound_region"
    rec = read_recording(pydicom_file("examples_rgb_color.dcm"))
    assert rec.frames.shape == (1, 240, 320) and rec.spacing_mm is None


def test_dicom_without_pixel_data_names_the_file():
    path = pydicom_file("rtplan.dcm")
    with pytest.raises(RecordingError, match=rf"{path.name}: DICOM without pixel data "
                                             r"\(SOP class RT Plan Storage\); expected an image"):
        read_recording(path)


# --- videos -----------------------------------------------------------------------------


@pytest.mark.parametrize("suffix", [".avi", ".mp4"])
def test_phantom_videos(loop, tmp_path, suffix):
    rec = read_recording(phantoms.write_video(loop, tmp_path / f"loop{suffix}"))
    assert rec.frames.shape == loop.frames.shape and rec.frames.dtype == np.uint8
    assert np.abs(rec.frames.astype(int) - loop.frames).mean() < 6  # lossy codec
    assert rec.fps == pytest.approx(30.0) and rec.spacing_mm is None and rec.kind == "video"


def test_real_echonet_videos():
    if not REAL.is_dir():
        pytest.skip(f"{REAL} absent")
    with (REAL / "FileList.csv").open() as f:
        rows = list(csv.DictReader(f))
    for row in rows:
        rec = read_recording(REAL / "Videos" / f"{row['FileName']}.avi")
        assert rec.frames.shape == (int(row["NumberOfFrames"]), int(row["FrameHeight"]),
                                    int(row["FrameWidth"]))
        assert rec.fps == pytest.approx(float(row["FPS"]))
        assert rec.spacing_mm is None and rec.frames.std() > 10  # real echo signal


# --- NIfTI / MetaImage ------------------------------------------------------------------


@pytest.mark.parametrize("name", ["seq.nii.gz", "seq.nii", "seq.mhd"])
def test_sequence_volumes_with_header_spacing(tmp_path, name):
    frames = np.random.default_rng(0).integers(0, 255, (5, 12, 20), dtype=np.uint8)
    image = sitk.GetImageFromArray(frames)
    image.SetSpacing((0.3, 0.2, 1.0))  # (x = column, y = row, t)
    sitk.WriteImage(image, str(tmp_path / name))
    rec = read_recording(tmp_path / name)
    np.testing.assert_array_equal(rec.frames, frames)
    assert rec.spacing_mm == pytest.approx((0.2, 0.3)) and rec.spacing_source == "header"


def test_single_frame_volume(tmp_path):
    frame = np.arange(12 * 20, dtype=np.uint8).reshape(12, 20)
    image = sitk.GetImageFromArray(frame)
    image.SetSpacing((0.154, 0.308))
    sitk.WriteImage(image, str(tmp_path / "patient0001_4CH_ED.nii.gz"))
    rec = read_recording(tmp_path / "patient0001_4CH_ED.nii.gz")
    np.testing.assert_array_equal(rec.frames, frame[None])
    assert rec.spacing_mm == pytest.approx((0.308, 0.154))


# --- images and frame folders -----------------------------------------------------------


def test_frame_folder_in_natural_order(tmp_path):
    folder = tmp_path / "cine"
    folder.mkdir()
    for i in (10, 2, 1):
        cv2.imwrite(str(folder / f"frame{i}.png"), np.full((6, 8), i, np.uint8))
    rec = read_recording(folder)
    assert rec.kind == "frames" and rec.spacing_mm is None
    np.testing.assert_array_equal(rec.frames[:, 0, 0], [1, 2, 10])


def test_colour_and_16_bit_images(tmp_path):
    bgr = np.zeros((4, 4, 3), np.uint8)
    bgr[..., 2] = 255  # pure red in OpenCV's BGR order
    cv2.imwrite(str(tmp_path / "red.png"), bgr)
    np.testing.assert_array_equal(read_recording(tmp_path / "red.png").frames, 76)
    deep = np.full((4, 4), 4000, np.uint16)
    cv2.imwrite(str(tmp_path / "deep.png"), deep)
    rec = read_recording(tmp_path / "deep.png")
    assert rec.frames.dtype == np.uint16 and rec.frames.shape == (1, 4, 4)
    np.testing.assert_array_equal(rec.frames, 4000)


# --- bad input --------------------------------------------------------------------------


def test_bad_inputs_name_the_file_and_what_was_expected(tmp_path):
    (tmp_path / "notes.txt").write_text("not an image")
    (tmp_path / "broken.avi").write_bytes(b"RIFF\\x00garbage")
    (tmp_path / "broken.png").write_bytes(b"\\x89PNG garbage")
    (tmp_path / "broken.dcm").write_text("hello")
    (tmp_path / "broken.nii.gz").write_bytes(b"nope")
    (tmp_path / "empty").mkdir()
    mixed = tmp_path / "mixed"
    mixed.mkdir()
    cv2.imwrite(str(mixed / "a.png"), np.zeros((4, 4), np.uint8))
    (mixed / "b.txt").write_text("x")
    sizes = tmp_path / "sizes"
    sizes.mkdir()
    cv2.imwrite(str(sizes / "a.png"), np.zeros((4, 4), np.uint8))
    cv2.imwrite(str(sizes / "b.png"), np.zeros((5, 4), np.uint8))
    cases = {
        "notes.txt": r"unknown recording format '\.txt'; expected a video",
        "broken.avi": r"expected a readable \.avi video",
        "broken.png": r"not a readable image",
        "broken.dcm": r"not a readable DICOM file",
        "broken.nii.gz": r"not a readable NIfTI/MetaImage file",
        "empty": r"holds image frames .* found an empty folder",
        "mixed": r"found 1 image\(s\) and other entries \['b.txt'\]",
        "sizes": r"frames differ in size",
        "missing.avi": r"no such file or folder",
    }
    for name, match in cases.items():
        with pytest.raises(RecordingError, match=match) as info:
            read_recording(tmp_path / name)
        assert str(info.value).startswith(str(tmp_path / name) + ":"), info.value
        assert isinstance(info.value, ValueError)


def test_find_recordings_in_a_camus_like_tree(loop, tmp_path):
    patient = tmp_path / "database_nifti" / "patient0001"
    patient.mkdir(parents=True)
    for name in ("patient0001_4CH_half_sequence.nii.gz", "patient0001_4CH_ED.nii.gz",
                 "patient0001_4CH_ED_gt.nii.gz", "patient0001_2CH_ES.mhd"):
        sitk.WriteImage(sitk.GetImageFromArray(np.zeros((4, 5), np.uint8)), str(patient / name))
    (patient / "Info_4CH.cfg").write_text("ED: 1\n")
    phantoms.write_video(loop, tmp_path / "clip10.avi")
    phantoms.write_video(loop, tmp_path / "clip2.avi")
    phantoms.write_dicom(loop, tmp_path / "IM0001")  # DICOM without a suffix
    frames = tmp_path / "cine"
    frames.mkdir()
    for i in range(3):
        cv2.imwrite(str(frames / f"{i}.png"), np.zeros((4, 4), np.uint8))
    (tmp_path / ".hidden.avi").write_text("x")
    found, skipped = recordings.find_recordings(tmp_path)
    rel = [str(p.relative_to(tmp_path)) for p in found]
    assert rel == ["cine", "clip2.avi", "clip10.avi",
                   "database_nifti/patient0001/patient0001_2CH_ES.mhd",
                   "database_nifti/patient0001/patient0001_4CH_ED.nii.gz",
                   "database_nifti/patient0001/patient0001_4CH_half_sequence.nii.gz",
                   "IM0001"]
    assert [(p.name, r.split(":")[0]) for p, r in skipped] == [("Info_4CH.cfg", "not a recording")]
    # A file, or a folder of frames, is itself one recording.
    assert recordings.find_recordings(tmp_path / "clip2.avi") == ([tmp_path / "clip2.avi"], [])
    assert recordings.find_recordings(frames) == ([frames], [])
    with pytest.raises(RecordingError, match="no such file or folder"):
        recordings.find_recordings(tmp_path / "absent")


# --- truncated and damaged files --------------------------------------------------------


def _cut(src, out, fraction):
    data = Path(src).read_bytes()
    Path(out).write_bytes(data[: int(len(data) * fraction)])
    return Path(out)


@pytest.mark.parametrize("suffix", [".avi", ".mp4"])
def test_whole_videos_declare_the_frames_they_decode(loop, tmp_path, suffix):
    rec = read_recording(phantoms.write_video(loop, tmp_path / f"loop{suffix}"))
    assert rec.declared_frames == rec.num_frames == 9 and rec.truncation == ""


def test_avi_cut_short_keeps_the_frames_that_decode_and_says_so(tmp_path):
    long = phantoms.render_cine("camus_like", 2, "4CH", shape=(40, 48), num_frames=30,
                                frames_per_beat=10, fps=30.0)
    whole = read_recording(phantoms.write_video(long, tmp_path / "loop.avi"))
    rec = read_recording(_cut(tmp_path / "loop.avi", tmp_path / "cut.avi", 0.5))
    assert rec.declared_frames == 30 and 5 < rec.num_frames < 30
    assert rec.truncation == f"truncated or damaged: decoded {rec.num_frames} of the 30 frames " \
                             f"its header declares"
    np.testing.assert_array_equal(rec.frames, whole.frames[: rec.num_frames])


def test_uncompressed_dicom_cut_short_keeps_its_whole_frames(loop, tmp_path):
    src = phantoms.write_dicom(loop, tmp_path / "loop.dcm")
    rec = read_recording(_cut(src, tmp_path / "cut.dcm", 0.6))
    assert rec.declared_frames == 9 and 0 < rec.num_frames < 9 and rec.truncation
    np.testing.assert_array_equal(rec.frames, loop.frames[: rec.num_frames])
    assert rec.spacing_source == "ultrasound_region"
    data = src.read_bytes()
    start = data.rfind(b"\xe0\x7f\x10\x00") + 12  # the pixel data's first byte
    (tmp_path / "cut2.dcm").write_bytes(data[: start + 100])
    with pytest.raises(RecordingError, match=r"cut2\.dcm: truncated: the file holds 100 of "
                                             r"the 17280 bytes .* less than one frame"):
        read_recording(tmp_path / "cut2.dcm")
    (tmp_path / "cut3.dcm").write_bytes(data[: start - 20])
    with pytest.raises(RecordingError, match=r"cut3\.dcm: an image's DICOM header without its "
                                             r"pixel data: the file ends before it"):
        read_recording(tmp_path / "cut3.dcm")


def test_jpeg_dicom_cine_cut_short_keeps_the_frames_that_arrived_whole(tmp_path):
    src = pydicom_file("examples_ybr_color.dcm")  # JPEG baseline, 30 frames
    whole = read_recording(src)
    rec = read_recording(_cut(src, tmp_path / "cut.dcm", 0.5))
    assert rec.declared_frames == 30 and 5 < rec.num_frames < 30
    assert "decoded" in rec.truncation and "of the 30 frames" in rec.truncation
    np.testing.assert_array_equal(rec.frames, whole.frames[: rec.num_frames])


def test_any_reader_error_becomes_a_recording_error_naming_the_file(loop, tmp_path):
    # The case: a bit flip gave pydicom an unknown VR ('UK'), and its
    # NotImplementedError stopped a whole batch.
    data = bytearray(phantoms.write_dicom(loop, tmp_path / "loop.dcm").read_bytes())
    at = data.find(b"\x28\x00\x08\x00IS")  # NumberOfFrames, explicit VR
    data[at + 4: at + 6] = b"UK"
    (tmp_path / "uk.dcm").write_bytes(bytes(data))
    with pytest.raises(RecordingError, match=r"uk\.dcm: cannot be read \(NotImplementedError"):
        read_recording(tmp_path / "uk.dcm")


def test_dicom_is_read_by_its_preamble_whatever_its_suffix(loop, tmp_path):
    path = phantoms.write_dicom(loop, tmp_path / "loop.dcm").rename(tmp_path / "loop.avi")
    np.testing.assert_array_equal(read_recording(path).frames, loop.frames)


@pytest.mark.parametrize("name", ["seq.nii.gz", "seq.nii"])
def test_nifti_cut_short_keeps_its_whole_frames(tmp_path, name):
    # SimpleITK reads a cut NIfTI without an error, the missing voxels as zeros.
    frames = np.random.default_rng(0).integers(1, 255, (10, 12, 20), dtype=np.uint8)
    image = sitk.GetImageFromArray(frames)
    image.SetSpacing((0.3, 0.2, 1.0))
    sitk.WriteImage(image, str(tmp_path / name))
    assert read_recording(tmp_path / name).truncation == ""
    rec = read_recording(_cut(tmp_path / name, tmp_path / f"cut_{name}", 0.6))
    assert rec.declared_frames == 10 and 0 < rec.num_frames < 10 and rec.truncation
    np.testing.assert_array_equal(rec.frames, frames[: rec.num_frames])
    assert rec.spacing_mm == pytest.approx((0.2, 0.3))
    # The header and 100 bytes of voxels (a whole gzip stream of them for .nii.gz).
    raw = (tmp_path / name).read_bytes()
    plain = gzip.decompress(raw) if name.endswith(".gz") else raw
    head = plain[: 352 + 100]
    (tmp_path / f"tiny_{name}").write_bytes(gzip.compress(head) if name.endswith(".gz") else head)
    with pytest.raises(RecordingError, match="truncated: the file holds 100 of the 2400 bytes "
                                             r"of voxels .* \(20x12x10\), less than one whole"):
        read_recording(tmp_path / f"tiny_{name}")


def test_metaimage_with_a_cut_data_file_is_an_error(tmp_path):
    sitk.WriteImage(sitk.GetImageFromArray(np.ones((6, 8, 10), np.uint8)), str(tmp_path / "s.mhd"))
    raw = tmp_path / "s.raw"
    raw.write_bytes(raw.read_bytes()[:250])
    with pytest.raises(RecordingError, match=r"s\.mhd: truncated: its data file s\.raw holds "
                                             r"250 of the 480 bytes .* \(3 of 6 whole frames\)"):
        read_recording(tmp_path / "s.mhd")


def test_nifti_gz_beside_a_nii_of_the_same_name_reads_its_own_voxels(tmp_path):
    # SimpleITK's NIfTI library, asked for x.nii.gz, reads x.nii when it exists.
    a = np.random.default_rng(1).integers(0, 255, (3, 8, 10), dtype=np.uint8)
    sitk.WriteImage(sitk.GetImageFromArray(a), str(tmp_path / "x.nii.gz"))
    sitk.WriteImage(sitk.GetImageFromArray(a[::-1].copy()), str(tmp_path / "x.nii"))
    np.testing.assert_array_equal(read_recording(tmp_path / "x.nii.gz").frames, a)
    np.testing.assert_array_equal(read_recording(tmp_path / "x.nii").frames, a[::-1])
