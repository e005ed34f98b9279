"""Shared helpers of the real-dataset builders, and the TensorFlow-free path: prepare
all three from their dummy data and read them back with ``tfds.data_source`` in a
process where ``import tensorflow`` fails, from a folder outside the repository."""

import collections
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import skimage.draw

from tfds_builders import real_data

HERE = Path(__file__).resolve().parent


def test_hash_split_is_deterministic_and_80_10_10():
    ids = [f"patient{i:05d}" for i in range(20000)]
    counts = collections.Counter(real_data.hash_split(p) for p in ids)
    assert counts["train"] / 20000 == pytest.approx(0.8, abs=0.01)
    assert counts["validation"] / 20000 == pytest.approx(0.1, abs=0.01)
    assert counts["test"] / 20000 == pytest.approx(0.1, abs=0.01)
    assert [real_data.hash_split(p) for p in ids[:50]] == [real_data.hash_split(p)
                                                           for p in ids[:50]]


def test_require_paths_lists_everything_missing(tmp_path):
    (tmp_path / "a").mkdir()
    real_data.require_paths(tmp_path, ["a"], dataset="camus")
    with pytest.raises(FileNotFoundError, match=r"(?s)2 expected.*/b\n.*/c/d.*camus/README"):
        real_data.require_paths(tmp_path, ["a", "b", "c/d"], dataset="camus")


_SCRIPT = textwrap.dedent("""
    import importlib.abc
    import importlib.machinery
    import sys

    class NoTensorFlow(importlib.abc.MetaPathFinder, importlib.abc.Loader):
        # Every `import tensorflow...` fails with ImportError, as when it is absent.
        def find_spec(self, name, path, target=None):
            if name == "tensorflow" or name.startswith("tensorflow."):
                return importlib.machinery.ModuleSpec(name, self)
            return None

        def create_module(self, spec):
            raise ImportError(f"tensorflow is blocked in this test ({spec.name})")

        def exec_module(self, module):
            raise ImportError("unreachable")

    sys.meta_path.insert(0, NoTensorFlow())
    try:
        import tensorflow  # noqa: F401
        raise SystemExit("tensorflow importable")
    except ImportError:
        pass
    import numpy as np
    import tensorflow_datasets as tfds
    import tfds_builders  # registers the builders
    data_dir, builders_dir = sys.argv[1], sys.argv[2]
    expected = {"camus": 16, "echonet_dynamic": 8, "unity_imaging": 4}
    for name, total in expected.items():
        builder = tfds.builder(f"{name}/64", data_dir=data_dir)
        builder.download_and_prepare(download_config=tfds.download.DownloadConfig(
            manual_dir=f"{builders_dir}/{name}/dummy_data"))
        assert builder.info.file_format.value == "array_record", builder.info.file_format
        n = 0
        for split in ("train", "validation", "test"):
            source = tfds.data_source(f"{name}/64", split=split, data_dir=data_dir)
            for ex in source:
                assert ex["image"].shape == (64, 64, 1) and ex["image"].dtype == np.uint8
                assert ex["segmentation"].max() <= 3 and ex["label_mask"][0]
                n += 1
        assert n == total, (name, n)
    print("no-tf ok", "tensorflow" not in sys.modules)
""")


def test_prepare_and_read_without_tensorflow_from_another_folder(tmp_path):
    work = tmp_path / "elsewhere"
    work.mkdir()
    result = subprocess.run(
        [sys.executable, "-c", _SCRIPT, str(tmp_path / "data"), str(HERE)],
        cwd=work, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "no-tf ok True" in result.stdout


def test_fill_polygon_hand_computed():
    # Square with integer corners: boundary centres included, 4 x 4 pixels.
    got = real_data.fill_polygon(np.array([1, 1, 4, 4]), np.array([1, 4, 4, 1]), (6, 6))
    want = np.zeros((6, 6), bool)
    want[1:5, 1:5] = True
    np.testing.assert_array_equal(got, want)
    # Triangle (0.5, 0.5), (0.5, 4.5), (4.5, 0.5): centres with r + c <= 5, r, c >= 1.
    got = real_data.fill_polygon(np.array([0.5, 0.5, 4.5]), np.array([0.5, 4.5, 0.5]), (5, 5))
    r, c = np.mgrid[:5, :5]
    np.testing.assert_array_equal(got, (r >= 1) & (c >= 1) & (r + c <= 5))
    # Clipped to the image, empty when outside it or degenerate.
    assert real_data.fill_polygon(np.array([-5, -5, -1]), np.array([0, 3, 0]), (4, 4)).sum() == 0
    assert real_data.fill_polygon(np.array([]), np.array([]), (4, 4)).sum() == 0
    with pytest.raises(ValueError, match="equal length"):
        real_data.fill_polygon(np.array([1, 2, 3]), np.array([1, 2]), (4, 4))


def test_fill_polygon_equals_skimage_on_random_and_spline_polygons():
    rng = np.random.default_rng(0)
    for i in range(150):
        n, shape = int(rng.integers(3, 40)), (int(rng.integers(5, 50)), int(rng.integers(5, 50)))
        rows = rng.uniform(-8, shape[0] + 8, n)
        cols = rng.uniform(-8, shape[1] + 8, n)
        want = np.zeros(shape, bool)
        rr, cc = skimage.draw.polygon(rows, cols, shape)
        want[rr, cc] = True
        np.testing.assert_array_equal(real_data.fill_polygon(rows, cols, shape), want,
                                      err_msg=f"polygon {i}")
    # A dense closed curve, as the Unity splines are.
    t = np.linspace(0, 2 * np.pi, 2000)
    rows, cols = 60 + 40 * np.sin(t) + 5 * np.sin(3 * t), 80 + 30 * np.cos(t)
    want = np.zeros((120, 160), bool)
    rr, cc = skimage.draw.polygon(rows, cols, (120, 160))
    want[rr, cc] = True
    np.testing.assert_array_equal(real_data.fill_polygon(rows, cols, (120, 160)), want)



def test_drop_empty_splits_keeps_every_example_and_names_the_empty_ones(caplog):
    pulled = []

    def gen(split, n):
        for i in range(n):
            pulled.append((split, i))
            yield f"{split}{i}", {"i": i}

    metadata = {}
    with caplog.at_level("WARNING"):
        out = real_data.drop_empty_splits(
            {"train": gen("train", 3), "validation": gen("validation", 0), "test": gen("test", 1)},
            dataset="camus", listed={"train": 2, "validation": 4, "test": 1}, unit="patients",
            metadata=metadata)
    assert list(out) == ["train", "test"]
    assert pulled == [("train", 0), ("test", 0)]          # only the first one, lazily
    assert [k for k, _ in out["train"]] == ["train0", "train1", "train2"]
    assert [k for k, _ in out["test"]] == ["test0"]
    assert ("camus: split 'validation' has no examples: all 4 patients listed for it were "
            "skipped" in caplog.text)
    assert "patients listed per split: train: 2, validation: 4, test: 1" in caplog.text
    assert list(metadata["omitted_splits"]) == ["validation"]
    with pytest.raises(ValueError, match=r"echonet_dynamic: no split has any example \(videos "
                                         r"listed per split: train: 0, test: 2\)"):
        real_data.drop_empty_splits({"train": [], "test": iter([])}, dataset="echonet_dynamic",
                                    listed={"test": 2}, unit="videos")


def test_clear_sector_counts_and_lists_what_it_did(caplog, monkeypatch):
    monkeypatch.setattr(real_data, "MAX_LISTED_FALLBACKS", 2)
    rng = np.random.default_rng(0)
    h = w = 64
    rr, cc = np.mgrid[:h, :w]
    fan = (rr >= 4) & (np.abs(cc - 32) <= (rr - 4) * 0.6) & (np.hypot(rr - 4, cc - 32) <= 56)
    image = np.where(fan, rng.integers(60, 200, (h, w)), 0).astype(np.uint8)
    image[0:3, 0:8] = 255                            # a marking in the corner
    outside = np.zeros((h, w), np.uint8)
    outside[60, 1] = 1                               # a "labelled" pixel far outside the fan
    metadata = {}
    with caplog.at_level("WARNING"):
        out, report = real_data.clear_sector(image, None, where="a.png", metadata=metadata)
        assert report.action == "estimated_sector" and (out[0:3, 0:8] == 0).all()
        for name in ("b.png", "c.png", "d.png"):
            out, report = real_data.clear_sector(image, outside, where=name, metadata=metadata)
            assert report.fell_back and out[60, 1] == image[60, 1] and (out[fan] == image[fan]).all()
        _, report = real_data.clear_sector(image, None, where="e.png", metadata=metadata,
                                           estimate=False)
        assert report.action == "outside_fan_only" and not report.fell_back
        full = rng.integers(60, 200, (h, w)).astype(np.uint8)   # signal everywhere
        out, report = real_data.clear_sector(full, None, where="f.png", metadata=metadata,
                                             estimate=False)
        assert report.action == "unmasked" and (out == full).all()
    assert metadata["sector_handling"] == {"estimated_sector": 1, "outside_fan_only": 4,
                                           "unmasked": 1, "estimate_rejected": 3}
    assert list(metadata["sector_fallbacks"]) == ["b.png", "c.png"]   # capped listing
    assert "labelled pixels lie outside" in metadata["sector_fallbacks"]["b.png"]
    assert caplog.text.count("sector estimate rejected") == 3
