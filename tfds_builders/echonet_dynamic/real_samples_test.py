"""The EchoNet-Dynamic builder on real published files: the five videos of
``<repo>/../shared/real_samples/echonet_dynamic`` (never copied into the repository).
Every test skips when that folder is absent."""

from pathlib import Path

import numpy as np
import pytest
import tensorflow_datasets as tfds

from echojax.data import cone, preprocess
from tfds_builders.echonet_dynamic import echonet_dynamic_dataset_builder as echonet
from tfds_builders.echonet_dynamic import sector_check

REPO = Path(__file__).resolve().parents[2]
SAMPLES = REPO.parent / "shared" / "real_samples" / "echonet_dynamic"

pytestmark = pytest.mark.skipif(
    not (SAMPLES / "FileList.csv").is_file(),
    reason=f"real EchoNet-Dynamic samples not found at {SAMPLES}")


@pytest.fixture(scope="module")
def rows():
    return sector_check.measure(SAMPLES)


def test_no_echo_signal_lost_on_any_real_video(rows):
    assert len(rows) == 10  # five videos x (ED, ES)
    assert sector_check.misses(rows) == []
    for r in rows:
        for method in ("validated", "builder"):
            overall, band = r.zeroed[method]
            assert overall <= sector_check.MAX_OVERALL and band <= sector_check.MAX_BAND


def test_every_traced_pixel_is_kept():
    tracings = echonet.read_tracings(SAMPLES / "VolumeTracings.csv")
    for name, frames in tracings.items():
        video = echonet.read_video(SAMPLES / "Videos" / f"{name}.avi")
        _, report = echonet.clear_video(video, list(frames.values()), where=name)
        for trace in frames.values():
            assert report.kept[echonet.trace_mask(trace, video.shape[1:]) > 0].all(), name


def test_first_listed_trace_is_the_larger_ed_one():
    tracings = echonet.read_tracings(SAMPLES / "VolumeTracings.csv")
    assert len(tracings) == 5
    for name, frames in tracings.items():
        assert len(frames) == 2 and echonet.first_listed_is_larger(frames), name
        first, last = list(frames)
        assert echonet.ed_es_frames(frames) == (first, last), name


def test_prepare_the_real_samples_end_to_end(tmp_path, caplog):
    data_dir = tmp_path / "data"
    builder = echonet.Builder(config="128", data_dir=str(data_dir))
    with caplog.at_level("WARNING"):
        builder.download_and_prepare(
            download_config=tfds.download.DownloadConfig(manual_dir=str(SAMPLES)))
    # All five videos are TEST: train and validation are left out, by name.
    assert set(builder.info.splits) == {"test"}
    assert "split 'train' has no examples" in caplog.text
    assert "split 'validation' has no examples" in caplog.text
    meta = dict(echonet.Builder(config="128", data_dir=str(data_dir)).info.metadata)
    assert meta["sector_handling"]["outside_fan_only"] + meta["sector_handling"]["unmasked"] == 5
    assert set(meta["omitted_splits"]) == {"train", "validation"}
    source = builder.as_data_source()["test"]
    assert len(source) == 10
    tracings = echonet.read_tracings(SAMPLES / "VolumeTracings.csv")
    for ex in source:
        name, phase = ex["patient_id"].decode(), ex["phase"].decode()
        frames = tracings[name]
        ed, es = echonet.ed_es_frames(frames)
        frame = ed if phase == "ED" else es
        video = echonet.read_video(SAMPLES / "Videos" / f"{name}.avi")
        cleared, _ = echonet.clear_video(video, list(frames.values()), where=name)
        np.testing.assert_array_equal(ex["image"][..., 0],
                                      preprocess.resize_image(cleared[frame], 128))
        np.testing.assert_array_equal(
            ex["segmentation"][..., 0],
            preprocess.resize_mask(echonet.trace_mask(frames[frame], (112, 112)), 128))
        # The stored image keeps the echo signal of the original frame.
        original = preprocess.resize_image(video[frame], 128) > cone.SIGNAL_LEVEL
        assert (original & (ex["image"][..., 0] == 0)).mean() <= 0.05 * original.mean()
