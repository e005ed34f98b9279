"""Tests of the synthetic_echo builder: TFDS's harness, then content and TF-free use."""

import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import tensorflow_datasets as tfds

from tfds_builders.synthetic_echo import synthetic_echo_dataset_builder as seb

_REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


class SyntheticEchoTest(tfds.testing.DatasetBuilderTestCase):
    """TFDS's harness on a 10-subject config (subjects 0-7 train, 8 validation, 9 test)."""

    DATASET_CLASS = seb.Builder
    BUILDER_CONFIG_NAMES_TO_TEST = [
        seb.SyntheticEchoConfig(name="camus_like_32_tiny", style="camus_like",
                                resolution=32, num_subjects=10),
    ]
    SPLITS = {"train": 32, "validation": 4, "test": 4}
    SKIP_CHECKSUMS = True

    def _make_builder(self, config=None):  # the harness reads with as_dataset: tfrecord
        return self.dataset_class(data_dir=self.tmp_dir, config=config, version=self.VERSION,
                                  file_format="tfrecord")


def test_configs_cover_styles_and_resolutions():
    names = {c.name for c in seb.Builder.BUILDER_CONFIGS}
    for style in ("camus_like", "unity_like", "echonet_like"):
        for res in (256, 128, 64):
            assert f"{style}_{res}" in names
    counts = {c.name: c.subjects * seb.phantoms.STYLES[c.style].examples_per_subject
              for c in seb.Builder.BUILDER_CONFIGS}
    assert counts["camus_like_256"] == 1000
    assert counts["unity_like_64"] == 400
    assert counts["echonet_like_128"] == 2000
    assert counts["echonet_like_full_64"] == 20_048


def test_split_by_subject_is_80_10_10():
    splits = [seb.split_of(i) for i in range(250)]
    assert splits.count("train") == 200
    assert splits.count("validation") == splits.count("test") == 25


# Run in a fresh interpreter, from a directory outside the repository, where
# `import tensorflow` fails (a fake package that raises shadows the real one): prepare
# with TFDS's defaults (no file_format anywhere), which must give array_record files,
# read them with data_source; the temporary directory (TMPDIR, empty at the start) must
# be left empty.
_SCRIPT = textwrap.dedent("""
    import json, os, sys, tempfile

    try:
        import tensorflow  # the fake package first on the path raises
        raise AssertionError("tensorflow was importable")
    except ImportError:
        pass
    import numpy as np
    import tensorflow_datasets as tfds
    import tfds_builders  # registers synthetic_echo
    from tfds_builders.synthetic_echo import synthetic_echo_dataset_builder as seb

    data_dir = sys.argv[1]
    # (tfds.list_builders() would also query the community index over the network.)
    out = {"registered": "synthetic_echo" in tfds.core.registered.list_imported_builders()}
    b = tfds.builder("synthetic_echo/camus_like_64", data_dir=data_dir)
    out["default_config"] = [b.builder_config.name, b.builder_config.subjects]
    for style in ("camus_like", "unity_like", "echonet_like"):
        cfg = seb.SyntheticEchoConfig(name=style + "_24_tiny", style=style,
                                      resolution=24, num_subjects=20)
        b = tfds.builder("synthetic_echo", config=cfg, data_dir=data_dir)
        b.download_and_prepare()
        assert b.info.file_format.value == "array_record", b.info.file_format
        res = {}
        for split, ds in b.as_data_source().items():
            exs = [ds[i] for i in range(len(ds))]
            res[split] = {
                "n": len(exs),
                "patients": sorted({e["patient_id"].decode() for e in exs}),
                "sources": sorted({e["source"].decode() for e in exs}),
                "label_masks": sorted({tuple(map(bool, e["label_mask"])) for e in exs}),
                "seg_max": int(max(e["segmentation"].max() for e in exs)),
                "seg_values": sorted({int(v) for e in exs for v in np.unique(e["segmentation"])}),
                "ef": [float(e["ef"]) for e in exs],
                "shape": list(exs[0]["image"].shape),
            }
        out[style] = res
    out["tensorflow_imported"] = "tensorflow" in sys.modules
    out["temp_dir"] = [tempfile.gettempdir(), os.listdir(tempfile.gettempdir())]
    print("RESULT" + json.dumps(out))
""")


def test_array_record_without_tensorflow_from_outside_the_repo(tmp_path):
    script = tmp_path / "probe.py"
    script.write_text(_SCRIPT)
    fake = tmp_path / "no_tf" / "tensorflow"
    fake.mkdir(parents=True)
    (fake / "__init__.py").write_text('raise ImportError("tensorflow is blocked in this test")\n')
    path = [str(tmp_path / "no_tf"), _REPO, os.environ.get("PYTHONPATH", "")]
    (tmp_path / "tmp").mkdir()
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(path), TMPDIR=str(tmp_path / "tmp"))
    proc = subprocess.run([sys.executable, str(script), str(tmp_path / "data")],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    line = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT")][-1]
    out = json.loads(line[len("RESULT"):])
    assert out["registered"] and not out["tensorflow_imported"]
    assert out["temp_dir"] == [str(tmp_path / "tmp"), []]  # nothing left in TMPDIR
    assert out["default_config"] == ["camus_like_64", 250]
    want_masks = {"camus_like": [[True] * 4], "unity_like": [[True] * 4],
                  "echonet_like": [[True, True, False, False]]}
    for style, per_style in (("camus_like", 4), ("unity_like", 2), ("echonet_like", 2)):
        res = out[style]
        assert {s: res[s]["n"] for s in res} == {
            "train": 16 * per_style, "validation": 2 * per_style, "test": 2 * per_style}
        patients = [set(res[s]["patients"]) for s in ("train", "validation", "test")]
        assert not (patients[0] & patients[1] or patients[0] & patients[2]
                    or patients[1] & patients[2])
        for split in res.values():
            assert split["sources"] == [f"synthetic_echo/{style}"]
            assert split["label_masks"] == want_masks[style]
            assert split["seg_max"] <= 3
            assert split["shape"] == [24, 24, 1]
            assert all(15 <= ef <= 75 for ef in split["ef"])
        values = set().union(*(res[s]["seg_values"] for s in res))
        assert values == ({0, 1} if style == "echonet_like" else {0, 1, 2, 3})
    np.testing.assert_equal(out["camus_like"]["train"]["n"], 64)


def test_echonet_like_annotated_is_the_lv_only_test_set_fully_labelled(tmp_path):
    """Table 3's phantom EchoNet images: a test split only, the first 10 test subjects of
    echonet_like (20 images), pixels identical, masks with LVM and LA added."""
    names = {c.name: c for c in seb.Builder.BUILDER_CONFIGS}
    for res in (256, 128, 64):
        assert names[f"echonet_like_annotated_{res}"].test_subjects == 10
    builder = tfds.builder("synthetic_echo/echonet_like_annotated_64", data_dir=str(tmp_path))
    builder.download_and_prepare(file_format="array_record")
    assert set(builder.info.splits) == {"test"}
    test = builder.as_data_source(split="test")
    assert len(test) == 20
    subjects = [i for i in range(1000) if seb.split_of(i) == "test"][:10]
    lv_only = {}
    for i in subjects:
        for ex in seb.phantoms.generate_subject("echonet_like", i, resolution=64):
            lv_only[(ex["patient_id"], ex["phase"])] = ex
    seen = set()
    for k in range(len(test)):
        ex = test[k]
        key = (ex["patient_id"].decode(), ex["phase"].decode())
        seen.add(key)
        ref = lv_only[key]
        assert ex["label_mask"].tolist() == [True] * 4
        assert ref["label_mask"].tolist() == [True, True, False, False]
        np.testing.assert_array_equal(ex["image"], ref["image"])
        seg, ref_seg = ex["segmentation"][..., 0], ref["segmentation"][..., 0]
        np.testing.assert_array_equal(seg == 1, ref_seg == 1)  # the same LV
        assert (seg == 2).any() and (seg == 3).any()  # LVM and LA annotated
    assert seen == set(lv_only)


def test_test_subjects_is_validated():
    with pytest.raises(ValueError, match="test_subjects"):
        seb.SyntheticEchoConfig(name="x", style="unity_like", test_subjects=21, num_subjects=200)
