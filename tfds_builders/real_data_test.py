"""Shared helpers of the real-dataset builders, and the TensorFlow-free path: prepare
all three from their dummy data and read them back with ``tfds.data_source`` in a
process where ``import tensorflow`` fails, from a folder outside the repository."""

import collections
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

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
