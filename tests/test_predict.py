"""echojax.predict: masks at the recording's size, CSVs and pictures, ED/ES/EF consistent
with echojax.cardiac_cycle, bad input reported per file while the rest go on."""

import hashlib
import json
import os
from pathlib import Path

import cv2
import numpy as np
import pydicom
import pytest
from predict_fixtures import make_run, tiny_model_config
from pydicom.dataset import Dataset, FileMetaDataset

from echojax import cardiac_cycle, export, files, phantoms, predict
from echojax import predict_io as io
from echojax.data import cone, preprocess
from echojax.recordings import RecordingError

REPO = Path(__file__).resolve().parents[1]
REAL_VIDEOS = REPO.parent / "shared" / "real_samples" / "echonet_dynamic" / "Videos"
FPS = 20.0   # min_beat_frames(20) = 6 frames: beats of 12 frames are found
SHAPE = (40, 56)  # not square: the aspect mapping is exercised


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("predict_model")
    return make_run(str(root / "run"), tiny_model_config(resolution=16), steps=(1,), dice=(0.5,))


@pytest.fixture(scope="module")
def model_dir(tiny_run):
    return export.export(tiny_run.path, os.path.join(os.path.dirname(tiny_run.path), "model"))


@pytest.fixture(scope="module")
def loop():
    return phantoms.render_cine("camus_like", 3, "4CH", shape=SHAPE, num_frames=30,
                                frames_per_beat=12, first_ed_frame=3, fps=FPS)


def _dicom_without_pixels(path: Path) -> Path:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.88.11"  # a structured report
    meta.MediaStorageSOPInstanceUID = pydicom.uid.generate_uid(entropy_srcs=["sr"])
    meta.TransferSyntaxUID = pydicom.uid.ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID = meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID
    ds.Modality = "SR"
    ds.save_as(path, enforce_file_format=True)
    return path


# --------------------------------------------------------------------------- geometry


def test_masks_go_back_by_centre_aligned_nearest_neighbour_hand_case():
    # 2x2 model grid -> 3x5 frame: rows floor((i+.5)*2/3) = 0,1,1; columns
    # floor((j+.5)*2/5) = 0,0,1,1,1.
    m = np.array([[[1, 2], [3, 0]]])
    expected = np.array([[[1, 1, 2, 2, 2], [3, 3, 0, 0, 0], [3, 3, 0, 0, 0]]])
    np.testing.assert_array_equal(io.to_frame_grid(m, (3, 5)), expected)


def test_masks_of_a_multiple_size_are_blocks():
    m = np.random.default_rng(0).integers(0, 4, (2, 4, 4))
    np.testing.assert_array_equal(io.to_frame_grid(m, (8, 12)),
                                  np.kron(m, np.ones((1, 2, 3), int)))


def test_frames_are_stretched_like_the_builders():
    frames = np.random.default_rng(1).integers(0, 256, (2, 30, 50), dtype=np.uint8)
    grid = io.to_model_grid(frames, 16)
    assert grid.shape == (2, 16, 16, 1) and grid.dtype == np.uint8
    np.testing.assert_array_equal(grid[1, ..., 0], preprocess.resize_image(frames[1], 16))


def test_uint8_conversion_rounds_floats_and_refuses_other_ranges():
    out, rounded = io.to_uint8_frames(np.array([[[0.0, 254.6], [3.0, 2.4]]]), where="x.nii")
    np.testing.assert_array_equal(out, [[[0, 255], [3, 2]]])
    assert rounded == 2
    ok, n = io.to_uint8_frames(np.array([[[0, 255]]], np.uint16), where="a.png")
    assert ok.dtype == np.uint8 and n == 0
    with pytest.raises(RecordingError, match="deep.png.*0, 4095"):
        io.to_uint8_frames(np.array([[[0, 4095]]], np.uint16), where="deep.png")
    with pytest.raises(RecordingError, match="neg.nii"):
        io.to_uint8_frames(np.array([[[-1.0, 3.0]]]), where="neg.nii")


def test_overlay_blends_class_colours_hand_case():
    frames = np.array([[[100, 200], [50, 0]]], np.uint8)
    masks = np.array([[[0, 1], [3, 2]]])
    # Background pixels stay grey; others 0.6 grey + 0.4 colour (LV 230,40,40; LA
    # 50,110,255; LVM 40,200,60): 200 -> (212, 136, 136), 50 -> (50, 74, 132), 0 -> (16, 80, 24).
    np.testing.assert_array_equal(io.overlay(frames, masks), [[[[100, 100, 100], [212, 136, 136]],
                                                               [[50, 74, 132], [16, 80, 24]]]])


# --------------------------------------------------------------------------- end to end


class Oracle:
    """A segmenter that knows the loop's true classes: looks each pre-processed frame up
    by its bytes (the DICOM holds the loop's frames exactly)."""

    def __init__(self, loop, resolution=64):
        self.resolution = resolution
        self.spec = export.preprocessing_spec(tiny_model_config(resolution))
        s = self.spec["sector"]
        cleared, _ = cone.clear_outside_sector(loop.frames, estimate=s["estimate"],
                                               max_cut_fraction=s["max_cut_fraction"],
                                               margin_px=s["margin_px"])
        grid = io.to_model_grid(cleared, resolution)
        self.table = {hashlib.sha1(g.tobytes()).hexdigest():
                      preprocess.resize_mask(c, resolution) for g, c in zip(grid, loop.classes)}

    def __call__(self, images):
        return np.stack([self.table[hashlib.sha1(g.tobytes()).hexdigest()] for g in images])

    def describe(self):
        return {"path": "oracle"}


def _areas(folder: Path):
    return files.read_csv(folder / "areas.csv", required=predict.AREA_COLUMNS)


def test_ed_es_and_ef_follow_cardiac_cycle_on_the_written_masks(loop, tmp_path):
    (tmp_path / "in").mkdir()
    src = phantoms.write_dicom(loop, tmp_path / "in" / "loop.dcm")
    summary = predict.run(Oracle(loop), [str(src)], str(tmp_path / "out"), progress=False)
    row = summary["recordings"][0]
    assert row["status"] == "ok", row
    folder = tmp_path / "out" / "loop"
    masks = io.read_masks(folder / row["masks_file"])
    assert masks.shape == (30,) + SHAPE
    areas = _areas(folder)
    px = np.array([float(r["lv_area_px"]) for r in areas])
    np.testing.assert_array_equal(px, (masks == 1).sum((1, 2)))
    # Spacing comes from the DICOM's ultrasound region: mm^2 and mL present.
    sr, sc = (float(v) for v in loop.pixel_spacing_mm)
    np.testing.assert_allclose([float(r["lv_area_mm2"]) for r in areas], px * sr * sc, rtol=1e-5)
    assert all(float(r["lv_volume_ml"]) > 0 for r in areas)
    beats = cardiac_cycle.detect_beats(px, min_beat_frames=cardiac_cycle.min_beat_frames(FPS))
    written = files.read_csv(folder / "beats.csv", required=predict.BEAT_COLUMNS)
    assert [(int(b["ed_frame"]), int(b["es_frame"])) for b in written] == \
        [(b.ed, b.es) for b in beats]
    efs, mean = cardiac_cycle.ef_per_beat(masks == 1, beats, loop.pixel_spacing_mm)
    np.testing.assert_allclose([float(b["ef"]) for b in written], efs)
    assert row["ef_mean"] == pytest.approx(mean)
    # A perfect segmenter finds the loop's whole beats (ED then ES inside the loop),
    # within a frame (near ED and ES the area changes by a pixel or two per frame at
    # this size), and an EF near the analytic one.
    true = [(ed, es) for ed, es in zip(loop.ed_frames, loop.es_frames) if es < 29]
    assert len(beats) == len(true) == 2
    for b, (ed, es) in zip(beats, true):
        assert abs(b.ed - ed) <= 1 and abs(b.es - es) <= 1, (beats, true)
    assert abs(mean - loop.ef) < 6.0
    marked = {int(r["frame"]): r["phase"] for r in areas if r["phase"]}
    assert marked == {**{b.ed: "ED" for b in beats}, **{b.es: "ES" for b in beats}}
    with open(tmp_path / "out" / "summary.json") as f:
        assert json.load(f)["recordings"][0]["beats"] == row["beats"]


def test_real_model_writes_every_output_at_the_recordings_size(model_dir, loop, tmp_path):
    src = tmp_path / "in"
    src.mkdir()
    phantoms.write_video(loop, src / "clip.avi")
    cv2.imwrite(str(src / "frame.png"), loop.frames[0])
    summary = predict.run(str(model_dir), [str(src)], str(tmp_path / "out"), progress=False)
    by_name = {Path(r["input"]).name: r for r in summary["recordings"]}
    assert {r["status"] for r in by_name.values()} == {"ok"}
    clip, frame = tmp_path / "out" / "clip", tmp_path / "out" / "frame"
    for folder in (clip, frame):
        for name in ("areas.csv", "beats.csv", "overlay.gif", "overlay.png", "area_curve.png",
                     "result.json"):
            assert (folder / name).stat().st_size > 0, (folder, name)
    assert io.read_masks(clip / "masks.nii.gz").shape == (30,) + SHAPE
    assert io.read_masks(frame / "mask.png").shape == (1,) + SHAPE
    assert len(_areas(clip)) == 30
    # AVI: frame rate from the file, no spacing (no mm, no mL).
    assert by_name["clip.avi"]["fps"] == pytest.approx(FPS)
    assert all(r["lv_area_mm2"] == "" for r in _areas(clip))
    one = by_name["frame.png"]
    assert one["ef_mean"] is None and "one frame" in one["ef_reason"]
    rows = files.read_csv(tmp_path / "out" / "summary.csv", required=predict.SUMMARY_COLUMNS)
    assert sorted(Path(r["input"]).name for r in rows) == ["clip.avi", "frame.png"]
    assert not [p for p in os.listdir(tmp_path / "out") if p.startswith(".")]


def test_run_folder_and_exported_model_give_the_same_masks(tiny_run, model_dir, loop, tmp_path):
    cv2.imwrite(str(tmp_path / "frame.png"), loop.frames[5])
    for name, model in (("a", model_dir), ("b", tiny_run.path)):
        predict.run(str(model), [str(tmp_path / "frame.png")], str(tmp_path / name),
                    progress=False)
    np.testing.assert_array_equal(io.read_masks(tmp_path / "a" / "frame" / "mask.png"),
                                  io.read_masks(tmp_path / "b" / "frame" / "mask.png"))


def test_output_folders_are_distinct():
    paths = [Path("a/x.nii.gz"), Path("b/x.avi"), Path("b/y.dcm"), Path("c/frames")]
    assert predict._output_names(paths) == ["a__x", "b__x", "y", "frames"]


def test_one_bad_recording_is_reported_and_the_rest_go_on(model_dir, loop, tmp_path, capsys):
    src = tmp_path / "in"
    src.mkdir()
    phantoms.write_video(loop, src / "good.avi")
    (src / "notes.txt").write_text("not an image")
    _dicom_without_pixels(src / "report.dcm")
    (src / "broken.avi").write_bytes(b"\x00" * 100)
    out = tmp_path / "out"
    code = predict.main(["--model", str(model_dir), str(src), "--out", str(out), "--no_progress"])
    assert code == 1
    err = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]
    rows = {Path(r["input"]).name: r for r in
            files.read_csv(out / "summary.csv", required=predict.SUMMARY_COLUMNS)}
    assert rows["good.avi"]["status"] == "ok"
    for name, why in (("notes.txt", "unknown format"), ("report.dcm", "without pixel data"),
                      ("broken.avi", "video")):
        assert rows[name]["status"] == "failed" and why in rows[name]["error"]
        assert name in rows[name]["error"]
        assert sum(name in line for line in err) == 1, err
    # Only the good recording's folder and the summaries: nothing half-written.
    assert sorted(os.listdir(out)) == ["good", "summary.csv", "summary.json"]


def test_empty_folder_is_one_error_and_nothing_is_written(model_dir, tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    out = tmp_path / "out"
    code = predict.main(["--model", str(model_dir), str(tmp_path / "empty"), "--out", str(out),
                         "--no_progress"])
    assert code == 2
    err = capsys.readouterr().err
    assert "empty" in err and "no recordings" in err
    assert not out.exists()


def test_unknown_frame_rate_gives_masks_but_no_ef(model_dir, loop, tmp_path):
    frames = tmp_path / "frames"
    frames.mkdir()
    for i, f in enumerate(loop.frames[:8]):
        cv2.imwrite(str(frames / f"f{i}.png"), f)
    summary = predict.run(str(model_dir), [str(frames)], str(tmp_path / "out"), progress=False)
    row = summary["recordings"][0]
    assert row["status"] == "ok" and row["ef_mean"] is None and "--fps" in row["ef_reason"]
    assert io.read_masks(tmp_path / "out" / "frames" / "masks.nii.gz").shape == (8,) + SHAPE


def test_biplane_pairs_beats_in_order(loop, tmp_path):
    src = tmp_path / "in"
    src.mkdir()
    two = phantoms.render_cine("camus_like", 3, "2CH", shape=SHAPE, num_frames=30,
                               frames_per_beat=12, first_ed_frame=3, fps=FPS)
    a4c, a2c = phantoms.write_dicom(loop, src / "a4c.dcm"), phantoms.write_dicom(two, src / "a2c.dcm")

    class Both(Oracle):
        def __init__(self):
            super().__init__(loop)
            self.table.update(Oracle(two).table)

    summary = predict.run(Both(), [], str(tmp_path / "out"), pairs=[(str(a2c), str(a4c))],
                          progress=False)
    pair = summary["biplane"][0]
    assert pair["reason"] == "" and len(pair["beats"]) >= 1
    assert abs(pair["ef_mean"] - loop.ef) < 6.0   # the subject's analytic (biplane) EF
    rows = files.read_csv(tmp_path / "out" / "biplane.csv", required=("a2c", "a4c", "ef_mean"))
    assert float(rows[0]["ef_mean"]) == pytest.approx(pair["ef_mean"])


@pytest.mark.skipif(not REAL_VIDEOS.is_dir(), reason="shared real EchoNet samples absent")
def test_real_echonet_video_end_to_end(model_dir, tmp_path):
    video = min(REAL_VIDEOS.glob("*.avi"))
    summary = predict.run(str(model_dir), [str(video)], str(tmp_path / "out"), progress=False)
    row = summary["recordings"][0]
    assert row["status"] == "ok", row
    folder = tmp_path / "out" / video.stem
    masks = io.read_masks(folder / "masks.nii.gz")
    assert masks.shape == (row["frames"], 112, 112)
    assert (folder / "overlay.gif").exists() and (folder / "area_curve.png").exists()


@pytest.mark.parametrize("frames", [1, 8])
def test_nifti_masks_keep_the_input_header_geometry(model_dir, loop, tmp_path, frames):
    """Masks of a NIfTI/MetaImage input lie on the input's grid in physical space: same
    origin, spacing and direction (a one-frame 2-D header gains an orthogonal third axis)."""
    import SimpleITK as sitk
    if frames == 1:
        image = sitk.GetImageFromArray(loop.frames[0])
        image.SetOrigin((12.5, -3.0))
        image.SetSpacing((0.31, 0.27))
        image.SetDirection((0.0, 1.0, 1.0, 0.0))
        want = {"origin": (12.5, -3.0, 0.0), "spacing": (0.31, 0.27, 1.0),
                "direction": (0.0, 1.0, 0.0, 1.0, 0.0, 0.0, 0.0, 0.0, 1.0)}
    else:
        image = sitk.GetImageFromArray(loop.frames[:frames])
        image.SetOrigin((12.5, -3.0, 7.0))
        image.SetSpacing((0.31, 0.27, 40.0))
        image.SetDirection((-1.0, 0.0, 0.0, 0.0, -1.0, 0.0, 0.0, 0.0, 1.0))
        want = {"origin": (12.5, -3.0, 7.0), "spacing": (0.31, 0.27, 40.0),
                "direction": (-1.0, 0.0, 0.0, 0.0, -1.0, 0.0, 0.0, 0.0, 1.0)}
    src = tmp_path / "clip.nii.gz"
    sitk.WriteImage(image, str(src))
    summary = predict.run(str(model_dir), [str(src)], str(tmp_path / "out"), progress=False)
    assert summary["recordings"][0]["status"] == "ok"
    out = sitk.ReadImage(str(tmp_path / "out" / "clip" / "masks.nii.gz"))
    assert out.GetSize() == (SHAPE[1], SHAPE[0], frames)
    assert out.GetOrigin() == pytest.approx(want["origin"], abs=1e-5)
    assert out.GetSpacing() == pytest.approx(want["spacing"], abs=1e-5)
    assert out.GetDirection() == pytest.approx(want["direction"], abs=1e-6)


# --------------------------------------------------------------------------- bad input


def test_any_exception_on_one_recording_is_its_failure_and_the_summary_is_written(
        model_dir, loop, tmp_path, capsys, monkeypatch):
    src = tmp_path / "in"
    src.mkdir()
    for name in ("a.avi", "b.avi", "c.avi"):
        phantoms.write_video(loop, src / name)
    real_segment = predict.segment_recording

    def flaky(path, segment, **kw):
        if path.name == "b.avi":  # an error no reader anticipates (the pydicom one)
            raise NotImplementedError("Unknown Value Representation 'UK'\nsecond line")
        return real_segment(path, segment, **kw)

    monkeypatch.setattr(predict, "segment_recording", flaky)
    out = tmp_path / "out"
    code = predict.main(["--model", str(model_dir), str(src), "--out", str(out), "--no_progress"])
    assert code == 1
    err = capsys.readouterr().err
    assert "Traceback" not in err
    lines = [line for line in err.splitlines() if "b.avi" in line]
    assert lines == [f"error: {src / 'b.avi'}: NotImplementedError: Unknown Value "
                     f"Representation 'UK' second line"]
    rows = {Path(r["input"]).name: r for r in files.read_csv(out / "summary.csv")}
    assert {n: r["status"] for n, r in rows.items()} == {"a.avi": "ok", "b.avi": "failed",
                                                         "c.avi": "ok"}
    assert sorted(os.listdir(out)) == ["a", "c", "summary.csv", "summary.json"]


def test_a_failing_model_call_fails_that_recording_only(loop, tmp_path):
    src = tmp_path / "in"
    src.mkdir()
    phantoms.write_dicom(loop, src / "good.dcm")
    cv2.imwrite(str(src / "odd.png"), loop.frames[0])

    class Picky(Oracle):
        def __call__(self, images):
            if len(images) == 1:
                raise RuntimeError("XLA ran out of memory")
            return super().__call__(images)

    summary = predict.run(Picky(loop), [str(src)], str(tmp_path / "out"), progress=False)
    by = {Path(r["input"]).name: r for r in summary["recordings"]}
    assert by["good.dcm"]["status"] == "ok"
    assert by["odd.png"]["error"] == f"{src / 'odd.png'}: RuntimeError: XLA ran out of memory"


def test_interrupted_run_still_writes_the_summary_and_leaves_nothing_half_written(
        loop, tmp_path, monkeypatch):
    src = tmp_path / "in"
    src.mkdir()
    for name in ("a.dcm", "b.dcm", "c.dcm"):
        phantoms.write_dicom(loop, src / name)
    real_write = predict._write_outputs

    def stop_in_b(folder, result, arrays):
        if result["input"].endswith("b.dcm"):
            (folder / "areas.csv").write_text("half")
            raise KeyboardInterrupt
        real_write(folder, result, arrays)

    monkeypatch.setattr(predict, "_write_outputs", stop_in_b)
    out = tmp_path / "out"
    with pytest.raises(KeyboardInterrupt):
        predict.run(Oracle(loop), [str(src)], str(out), progress=False)
    assert sorted(os.listdir(out)) == ["a", "summary.csv", "summary.json"]
    rows = {Path(r["input"]).name: r for r in files.read_csv(out / "summary.csv")}
    assert rows["a.dcm"]["status"] == "ok"
    for name in ("b.dcm", "c.dcm"):
        assert rows[name]["status"] == "failed" and "stopped before it" in rows[name]["error"]


def test_truncated_video_is_segmented_on_its_frames_and_flagged(model_dir, loop, tmp_path,
                                                                 capsys):
    src = tmp_path / "in"
    src.mkdir()
    data = phantoms.write_video(loop, tmp_path / "whole.avi").read_bytes()
    (src / "cut.avi").write_bytes(data[: len(data) // 2])
    out = tmp_path / "out"
    code = predict.main(["--model", str(model_dir), str(src), "--out", str(out), "--no_progress"])
    captured = capsys.readouterr()
    assert code == 0
    row = files.read_csv(out / "summary.csv", required=predict.SUMMARY_COLUMNS)[0]
    frames = int(row["frames"])
    assert row["status"] == "ok" and row["declared_frames"] == "30" and 0 < frames < 30
    assert row["warning"] == f"truncated or damaged: decoded {frames} of the 30 frames its " \
                             f"header declares"
    assert f"warning: {src / 'cut.avi'}: {row['warning']}" in captured.err
    assert "1 truncated" in captured.out
    assert io.read_masks(out / "cut" / "masks.nii.gz").shape == (frames,) + SHAPE
    with open(out / "cut" / "result.json") as f:
        assert json.load(f)["declared_frames"] == 30


def test_loading_a_model_never_unpickles(tiny_run, model_dir, loop, monkeypatch):
    import pickle

    def refuse(*args, **kwargs):
        raise AssertionError("unpickling while loading a model")

    real_np_load = np.load

    def np_load(*args, allow_pickle=False, **kwargs):
        assert not allow_pickle, "np.load(allow_pickle=True) while loading a model"
        return real_np_load(*args, allow_pickle=False, **kwargs)

    monkeypatch.setattr(pickle, "load", refuse)
    monkeypatch.setattr(pickle, "loads", refuse)
    monkeypatch.setattr(pickle, "Unpickler", refuse)
    monkeypatch.setattr(np, "load", np_load)
    for path in (model_dir, tiny_run.path):
        segment = predict.Segmenter(path)
        masks = segment(io.to_model_grid(loop.frames[:2], segment.resolution))
        assert masks.shape == (2, 16, 16)
