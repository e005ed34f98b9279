"""Tests of echojax.data.mixture and echojax.data.pipeline on the tiny_echo fixture."""

import json

import grain
import numpy as np
import pytest
from etils import epath
from fixtures import tiny_echo  # tests/ on sys.path (rootdir conftest); one module, one TFDS registration

from echojax import labels
from echojax.config import from_jsonable, to_jsonable
from echojax.data import pipeline
from echojax.data.mixture import Mixture, Removal, Source, kept_classes, subset_indices

A = "tiny_echo/r16_n20"  # 20 train, 5 validation, 5 test
B = "tiny_echo/r16_n40"  # 40 train, 10 validation, 10 test


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    d = str(tmp_path_factory.mktemp("tfds"))
    tiny_echo.prepare("r16_n20", d)
    tiny_echo.prepare("r16_n40", d)
    return d


def _originals(split, n):
    """The fixture's examples of a split keyed by image bytes (TFDS stores them shuffled)."""
    return {ex["image"].tobytes(): ex for ex in
            (tiny_echo.make_example(split, i, 16) for i in range(n))}


def _ids(batch):
    return list(zip(batch["source_index"].tolist(), batch["index"].tolist()))


# --- dataclasses -------------------------------------------------------------

def test_removal_normalises_class_names_and_round_trips_json():
    r = Removal(classes=("LA", "myo"), fraction=0.5)
    assert r.classes == ("lvm", "la") and r.class_ids == (labels.LVM, labels.LA)
    assert Removal("lvm,la", 1) == Removal(("la", "lvm"), 1.0)
    s = Source(A, "cam", train_examples=10, removals=(r,))
    back = from_jsonable(Source, json.loads(json.dumps(to_jsonable(s))), "source")
    assert back == s and hash(back) == hash(s)
    assert from_jsonable(Source, {"name": A, "alias": "x"}, "source") == Source(A, "x")


@pytest.mark.parametrize("kwargs, match", [
    (dict(classes=("lvm",), fraction=1.5), "fraction"),
    (dict(classes=("lvm",), fraction=-0.1), "fraction"),
    (dict(classes=("rv",), fraction=0.5), "unknown class name 'rv'"),
    (dict(classes=("background",), fraction=0.5), "background"),
    (dict(classes=(), fraction=0.5), "empty"),
])
def test_bad_removal_raises(kwargs, match):
    with pytest.raises(ValueError, match=match):
        Removal(**kwargs)


@pytest.mark.parametrize("kwargs, match", [
    (dict(name=A, alias="a", train_examples=0), "train_examples"),
    (dict(name=A, alias="a", train_examples=2.5), "train_examples"),
    (dict(name=A, alias="has space"), "alias"),
    (dict(name="", alias="a"), "TFDS name"),
    (dict(name=A, alias="a", removals=("lvm",)), "Removal"),
])
def test_bad_source_raises(kwargs, match):
    with pytest.raises(ValueError, match=match):
        Source(**kwargs)


def test_bad_mixture_raises(data_dir):
    with pytest.raises(ValueError, match=r"'b' .*train_examples=41.* only 40"):
        Mixture([Source(B, "b", train_examples=41)], "train", data_dir=data_dir, seed=0)
    with pytest.raises(ValueError, match="unique"):
        Mixture([Source(A, "a"), Source(B, "a")], "train", data_dir=data_dir, seed=0)
    with pytest.raises(ValueError, match="not prepared"):
        Mixture([Source("tiny_echo/r256_n512", "big")], "train", data_dir=data_dir, seed=0)
    with pytest.raises(ValueError, match="split"):
        Mixture([Source(A, "a")], "valid", data_dir=data_dir, seed=0)


# --- subsets and removals ------------------------------------------------------

def test_subsets_are_seeded_nested_and_sized():
    s10, s30 = Source(B, "b", train_examples=10), Source(B, "b", train_examples=30)
    small, large = subset_indices(s10, 40, seed=3), subset_indices(s30, 40, seed=3)
    assert len(small) == 10 and len(np.unique(small)) == 10 and len(large) == 30
    assert set(small) <= set(large)
    np.testing.assert_array_equal(small, subset_indices(s10, 40, seed=3))
    assert not np.array_equal(small, subset_indices(s10, 40, seed=4))
    np.testing.assert_array_equal(subset_indices(Source(B, "b"), 40, seed=3), np.arange(40))


@pytest.mark.parametrize("fraction, n, expected", [(0.5, 20, 10), (0.5, 5, 3), (0.1, 40, 4),
                                                   (1.0, 7, 7), (0.0, 9, 0)])
def test_removal_counts_are_exact(fraction, n, expected):
    src = Source(A, "a", removals=(Removal(("lvm",), fraction),))
    keep = kept_classes(src, "train", n, seed=0)
    assert (~keep[:, labels.LVM]).sum() == expected
    assert keep[:, [labels.BACKGROUND, labels.LV, labels.LA]].all()
    assert kept_classes(src, "test", n, seed=0).all()


def test_removal_choice_depends_on_seed_and_source_name_only():
    src = Source(A, "a", removals=(Removal(("lvm",), 0.5),))
    k0 = kept_classes(src, "train", 20, seed=0)
    np.testing.assert_array_equal(k0, kept_classes(Source(A, "other_alias", removals=src.removals),
                                                   "train", 20, seed=0))
    assert not np.array_equal(k0, kept_classes(src, "train", 20, seed=1))


def test_mixture_applies_removals_to_pixels_and_label_mask(data_dir):
    sources = [Source(A, "a", removals=(Removal(("lvm",), 0.5),)),
               Source(B, "b", train_examples=12, removals=(Removal(("la",), 1.0),))]
    for split, n_a, n_b, removed_a in [("train", 20, 12, 10), ("validation", 5, 10, 3)]:
        originals = _originals(split, 40)
        mix = Mixture(sources, split, data_dir=data_dir, seed=7, metadata=True)
        assert mix.sizes == (n_a, n_b) and len(mix) == n_a + n_b
        lost_lvm = 0
        for i in range(len(mix)):
            ex = mix[i]
            s, idx = mix.locate(i)
            assert ex["source_index"] == s and ex["index"] == idx
            original = originals[ex["image"].tobytes()]["segmentation"][..., 0]
            expected = original.copy()
            for c in np.flatnonzero(~ex["label_mask"]):
                expected[expected == c] = 0
            np.testing.assert_array_equal(ex["segmentation"], expected)
            assert ex["label_mask"][0] and ex["label_mask"][labels.LV]
            if s == 0:
                assert ex["label_mask"][labels.LA]
                lost_lvm += not ex["label_mask"][labels.LVM]
            else:
                assert ex["label_mask"].tolist() == [True, True, True, False]
                assert not (ex["segmentation"] == labels.LA).any()
        assert lost_lvm == removed_a
        # Reproducible from the seed alone.
        again = Mixture(sources, split, data_dir=data_dir, seed=7)
        assert all((again[i]["label_mask"] == mix[i]["label_mask"]).all() for i in range(len(mix)))
    train = Mixture(sources, "train", data_dir=data_dir, seed=7)
    counts = {s.alias: {labels.CLASS_NAMES[c]: 0 for c in labels.FOREGROUND_CLASSES}
              for s in sources}
    for i in range(len(train)):
        ex = train[i]
        for c in labels.FOREGROUND_CLASSES:
            counts[sources[int(ex["source_index"])].alias][labels.CLASS_NAMES[c]] += int(
                ex["label_mask"][c])
    assert counts == {"a": {"lv": 20, "lvm": 10, "la": 20}, "b": {"lv": 12, "lvm": 12, "la": 0}}


def test_fast_decoder_equals_tfds_decoding(data_dir):
    import tensorflow_datasets as tfds

    from echojax.data import mixture as mixture_lib
    mix = Mixture([Source(B, "b")], "validation", data_dir=data_dir, seed=0, metadata=True)
    reader = mix._reader(0)
    assert isinstance(reader, mixture_lib._FastDecoder)
    full = tfds.builder(B, data_dir=data_dir).as_data_source(split="validation")
    for i in range(len(full)):
        fast, slow = reader(i), full[i]
        for key in mixture_lib._FEATURE_KEYS:
            assert mixture_lib._same(fast[key], slow[key]), (i, key)
        assert fast["image"].dtype == np.uint8 and fast["image"].shape == (16, 16, 1)


def test_test_split_is_never_altered(data_dir):
    sources = [Source(A, "a", train_examples=3, removals=(Removal(("lv", "lvm", "la"), 1.0),))]
    mix = Mixture(sources, "test", data_dir=data_dir, seed=0)
    assert len(mix) == 5  # train_examples applies to train only
    originals = _originals("test", 5)
    for i in range(len(mix)):
        ex = mix[i]
        assert ex["label_mask"].all()
        np.testing.assert_array_equal(
            ex["segmentation"], originals[ex["image"].tobytes()]["segmentation"][..., 0])
        assert ex["image"].shape == (16, 16, 1) and ex["image"].dtype == np.uint8


# --- training batches ------------------------------------------------------------

@pytest.fixture(scope="module")
def train_mix(data_dir):
    return Mixture([Source(A, "a"), Source(B, "b", train_examples=14)], "train",
                   data_dir=data_dir, seed=0, metadata=True)  # 34 examples


def test_epochs_are_seeded_permutations_without_repeats(train_mix):
    ds = pipeline.train_batches(train_mix, batch_size=8, seed=5, process_index=0, process_count=1)
    spe = pipeline.steps_per_epoch(len(train_mix), 8)
    assert spe == 4
    b0 = ds[0]
    assert b0["image"].shape == (8, 16, 16, 1) and b0["segmentation"].shape == (8, 16, 16)
    assert b0["label_mask"].dtype == bool and b0["source_index"].dtype == np.int32
    epochs = [[i for s in range(e * spe, (e + 1) * spe) for i in _ids(ds[s])] for e in range(2)]
    for ids in epochs:
        assert len(ids) == 32 and len(set(ids)) == 32
    assert epochs[0] != epochs[1]  # reshuffled each epoch
    again = pipeline.train_batches(train_mix, batch_size=8, seed=5, process_index=0, process_count=1)
    assert _ids(again[5]) == _ids(ds[5])
    other = pipeline.train_batches(train_mix, batch_size=8, seed=6, process_index=0, process_count=1)
    assert _ids(other[0]) != _ids(ds[0])
    finite = pipeline.train_batches(train_mix, batch_size=8, seed=5, num_epochs=3,
                                    process_index=0, process_count=1)
    assert len(finite) == 12 and _ids(finite[11]) == _ids(ds[11])


def test_processes_split_each_global_batch_by_rows(train_mix):
    single = pipeline.train_batches(train_mix, batch_size=8, seed=1, process_index=0, process_count=1)
    shards = [pipeline.train_batches(train_mix, batch_size=8, seed=1, process_index=p,
                                     process_count=2) for p in range(2)]
    for step in (0, 3, 4, 9):
        parts = [shard[step] for shard in shards]
        assert all(len(p["image"]) == 4 for p in parts)
        assert not set(_ids(parts[0])) & set(_ids(parts[1]))
        for key in ("image", "segmentation", "label_mask", "source_index"):
            np.testing.assert_array_equal(np.concatenate([p[key] for p in parts]), single[step][key])
    with pytest.raises(ValueError, match="divisible"):
        pipeline.train_batches(train_mix, batch_size=7, seed=1, process_index=0, process_count=2)
    with pytest.raises(ValueError, match="fewer examples"):
        pipeline.train_batches(train_mix, batch_size=40, seed=1, process_index=0, process_count=1)


def test_iterator_state_round_trip_gives_the_same_batches(train_mix, tmp_path):
    def make():
        return iter(pipeline.train_dataset(train_mix, batch_size=4, seed=2, process_index=0,
                                           process_count=1, num_threads=2, prefetch_batches=2))

    it = make()
    for _ in range(10):  # crosses the epoch boundary at step 8
        next(it)
    state = json.dumps(it.get_state())
    expected = [next(it) for _ in range(3)]
    resumed = make()
    resumed.set_state(json.loads(state))
    for want in expected:
        got = next(resumed)
        assert _ids(got) == _ids(want)
        np.testing.assert_array_equal(got["image"], want["image"])
    # Through grain's Orbax checkpoint handler, as the trainer stores it.
    handler = grain.checkpoint.CheckpointHandler()
    it = make()
    next(it)
    handler.save(epath.Path(tmp_path), args=grain.checkpoint.CheckpointSave(it))
    after = next(it)
    restored = handler.restore(epath.Path(tmp_path), args=grain.checkpoint.CheckpointRestore(make()))
    assert _ids(next(restored)) == _ids(after)


# --- evaluation batches -------------------------------------------------------------

def test_eval_batches_cover_every_example_once_padded_per_source(data_dir):
    mix = Mixture([Source(A, "a", removals=(Removal(("lvm",), 0.5),)), Source(B, "b")],
                  "validation", data_dir=data_dir, seed=0, metadata=True)  # 5 + 10
    ds = pipeline.eval_batches(mix, batch_size=4, process_index=0, process_count=1)
    batches = list(ds)
    assert len(batches) == 2 + 3
    seen = []
    for b in batches:
        assert b["image"].shape == (4, 16, 16, 1) and b["valid"].dtype == bool
        assert len(set(b["source_index"].tolist())) == 1
        assert not b["image"][~b["valid"]].any() and not b["label_mask"][~b["valid"]].any()
        assert (b["patient_id"][~b["valid"]] == "").all() and np.isnan(b["ef"][~b["valid"]]).all()
        seen += [x for x, v in zip(_ids(b), b["valid"]) if v]
    assert seen == [(0, i) for i in range(5)] + [(1, i) for i in range(10)]
    assert [int(b["valid"].sum()) for b in batches] == [4, 1, 4, 4, 2]
    # Deterministic, and the label removals of validation apply.
    assert _ids(list(ds)[1]) == _ids(batches[1])
    assert sum(not lm[labels.LVM] for b in batches[:2] for lm, v in
               zip(b["label_mask"], b["valid"]) if v) == 3
    # Two processes: same number of batches, disjoint valid rows covering everything.
    shards = [list(pipeline.eval_batches(mix, batch_size=4, process_index=p, process_count=2))
              for p in range(2)]
    assert len(shards[0]) == len(shards[1]) == 5
    both = [x for shard in shards for b in shard for x, v in zip(_ids(b), b["valid"]) if v]
    assert sorted(both) == sorted(seen)
