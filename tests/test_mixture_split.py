"""Tests of the paper's split (``Source.split="paper"``) and the CAMUS frames rule
(``Source.frames="one_phase_per_view"``): echojax.data.mixture and the experiment
options that choose them, on the tiny CAMUS-like ``camus_mini`` fixture."""

import collections
import dataclasses
import json

import numpy as np
import pytest
import tensorflow_datasets as tfds
from fixtures import camus_mini, tiny_echo  # tests/ on sys.path (rootdir conftest)

from echojax import labels
from echojax.config import Config, from_jsonable, to_jsonable
from echojax.data import mixture as M
from echojax.data.mixture import Mixture, Removal, Source
from echojax.experiment import datasets
from echojax.experiment import options as O
from echojax.experiment.runs import Run, describe

R = camus_mini.R
CAMUS = "camus_mini/ok"  # 40 patients, 2CH/4CH x ED/ES each: 160 frames
NO_4CH = "camus_mini/no_4ch"  # patient0003 has no 4CH frames
UNKNOWN_PHASE = "camus_mini/unknown_phase"  # every phase "unknown", as Unity's


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    d = str(tmp_path_factory.mktemp("tfds"))
    camus_mini.prepare(d)
    tiny_echo.prepare("r16_n20", d)
    return d


def _rows(mix):
    return [mix[i] for i in range(len(mix))]


def _patients(mix):
    return {str(ex["patient_id"]) for ex in _rows(mix)}


# --- the paper split, as a function --------------------------------------------------

@pytest.mark.parametrize("n", [1, 2, 3, 7, 10, 11, 19, 40, 101, 500])
def test_paper_split_proportions_are_80_10_10_within_rounding(n):
    table = M.paper_split([f"p{i}" for i in range(n)], key="camus")
    counts = collections.Counter(table.values())
    train, val = int(np.floor(0.8 * n + 0.5)), int(np.floor(0.9 * n + 0.5))
    assert (counts["train"], counts["validation"], counts["test"]) == (
        train, val - train, n - val)
    assert abs(counts["train"] - 0.8 * n) <= 0.5 and abs(counts["test"] - 0.1 * n) <= 1


def test_paper_split_is_by_subject_deterministic_and_keyed_by_dataset_only():
    ids = [f"patient{i:04d}" for i in range(1, 501)]
    table = M.paper_split(ids, key="camus")
    assert collections.Counter(table.values()) == {"train": 400, "validation": 50, "test": 50}
    # Order and repeats (a subject's several frames) do not matter: subjects are split.
    again = M.paper_split(list(reversed(ids)) + ids[:100], key="camus")
    assert again == table
    other = M.paper_split(ids, key="echonet_dynamic")
    assert other != table and collections.Counter(other.values()) == collections.Counter(
        table.values())
    # Random, not the sorted order cut in three.
    assert [table[p] for p in ids[:400]] != ["train"] * 400
    assert M.split_key("camus/256:1.0.0") == M.split_key("camus/64") == "camus"


def test_paper_split_needs_patient_ids():
    with pytest.raises(ValueError, match=r"dataset 'x'.*patient_id"):
        M.paper_split(["p1", ""], key="x")


# --- the CAMUS frames rule, as a function --------------------------------------------

def test_one_phase_per_view_gives_one_ed_one_es_and_both_views_per_patient():
    rng = np.random.default_rng(0)
    frames = [(f"patient{n:04d}", v, ph) for n in range(1, 501) for v in ("2CH", "4CH")
              for ph in ("ED", "ES")]
    frames = [frames[k] for k in rng.permutation(len(frames))]  # any order
    patients, views, phases = zip(*frames)
    keep = M.one_phase_per_view(patients, views, phases, dataset="camus")
    assert len(keep) == 1000 and np.all(np.diff(keep) > 0)  # sorted positions, no repeats
    per_patient = collections.defaultdict(list)
    for k in keep:
        per_patient[patients[k]].append((views[k], phases[k]))
    assert len(per_patient) == 500
    for p, got in per_patient.items():
        assert sorted(v for v, _ in got) == ["2CH", "4CH"], p
        assert sorted(ph for _, ph in got) == ["ED", "ES"], p
        # The alternation: even patient numbers 2CH ED + 4CH ES, odd 2CH ES + 4CH ED.
        expected = ("ED", "ES") if int(p[-4:]) % 2 == 0 else ("ES", "ED")
        assert dict(got) == {"2CH": expected[0], "4CH": expected[1]}, p
    kept = collections.Counter((views[k], phases[k]) for k in keep)
    assert kept == {("2CH", "ED"): 250, ("2CH", "ES"): 250, ("4CH", "ED"): 250,
                    ("4CH", "ES"): 250}  # 500 ED / 500 ES, 500 2CH / 500 4CH


def test_patient_parity_without_a_number_is_stable():
    assert M.patient_parity("patient0007") == 1 and M.patient_parity("p12") == 0
    assert M.patient_parity("0X1A2B3C") in (0, 1)
    assert M.patient_parity("abc") == M.patient_parity("abc")


@pytest.mark.parametrize("patients, views, phases, match", [
    (["p1"] * 2, ["2CH", "4CH"], ["ED", "unknown"],
     r"camus: .*phase in \('ED', 'ES'\).*example 1 \(patient 'p1'\).*'unknown'"),
    (["p1"] * 2, ["2CH", "3CH"], ["ED", "ES"], r"camus: .*view in \('2CH', '4CH'\).*'3CH'"),
    (["p1", "p1"], ["2CH", "2CH"], ["ES", "ED"],
     r"camus: .*takes the 4CH ED frame of patient 'p1', which it lacks \(it has: 2CH ED, 2CH ES\)"),
    (["p2"] * 3, ["2CH", "4CH", "2CH"], ["ED", "ES", "ED"], r"camus: patient 'p2' has two 2CH ED"),
    (["p1"], ["2CH", "4CH"], ["ED", "ES"], r"camus: 1 patient ids, 2 views, 2 phases"),
])
def test_one_phase_per_view_bad_input_raises(patients, views, phases, match):
    with pytest.raises(ValueError, match=match):
        M.one_phase_per_view(patients, views, phases, dataset="camus")


# --- Source options ----------------------------------------------------------------

@pytest.mark.parametrize("kwargs, match", [
    (dict(split="random"), r"'c'.*split must be one of \('official', 'paper'\), got 'random'"),
    (dict(frames="ed_only"),
     r"'c'.*frames must be one of \('all', 'one_phase_per_view'\), got 'ed_only'"),
])
def test_bad_split_or_frames_raises(kwargs, match):
    with pytest.raises(ValueError, match=match):
        Source(CAMUS, "c", **kwargs)


def test_old_configs_without_split_and_frames_load_with_the_defaults():
    src = Source(CAMUS, "c", train_examples=8, split="paper", frames="one_phase_per_view")
    assert from_jsonable(Source, json.loads(json.dumps(to_jsonable(src))), "s") == src
    cfg = Config(sources=(Source(CAMUS, "c"),), resolution=R)
    old = cfg.to_dict()
    for s in old["sources"]:  # as config.json was written before the options existed
        del s["split"], s["frames"]
    back = Config.from_json(json.dumps(old))
    assert back == cfg and back.sources[0].split == "official"
    assert back.sources[0].frames == "all"


# --- Mixture on the paper split ---------------------------------------------------------

def test_paper_split_in_the_mixture_is_by_subject_and_80_10_10(data_dir):
    src = Source(CAMUS, "c", split="paper")
    mixes = {sp: Mixture([src], sp, data_dir=data_dir, seed=0, metadata=True)
             for sp in M.SPLITS}
    patients = {sp: _patients(m) for sp, m in mixes.items()}
    assert [len(patients[sp]) for sp in M.SPLITS] == [32, 4, 4]
    assert [len(mixes[sp]) for sp in M.SPLITS] == [128, 16, 16]  # 4 frames each
    assert set().union(*patients.values()) == {f"patient{n:04d}" for n in range(1, 41)}
    for a in M.SPLITS:
        for b in M.SPLITS:
            assert a == b or not patients[a] & patients[b], (a, b)
    table = M.paper_split(list(set().union(*patients.values())), key="camus_mini")
    assert all(table[p] == sp for sp in M.SPLITS for p in patients[sp])
    # Not the official split: validation and test subjects come from the pooled splits.
    official = {sp: _patients(Mixture([Source(CAMUS, "c")], sp, data_dir=data_dir, seed=0,
                                      metadata=True)) for sp in M.SPLITS}
    assert patients["test"] != official["test"]
    # index: positions 0..n-1 in the split; records are the stored examples.
    test = mixes["test"]
    assert [int(ex["index"]) for ex in _rows(test)] == list(range(16))
    for i in range(len(test)):
        rec = test.record(i)
        np.testing.assert_array_equal(rec["image"], test[i]["image"])
        assert M._text(rec["patient_id"]) == test[i]["patient_id"]


def test_paper_split_does_not_depend_on_the_run_seed_and_is_recomputed_alike(data_dir):
    src = Source(CAMUS, "c", split="paper")
    ids = [_patients(Mixture([src], "test", data_dir=data_dir, seed=s, metadata=True))
           for s in (0, 5)]
    M._TABLES.clear()  # computed again from the data, not read from the cache
    ids.append(_patients(Mixture([src], "test", data_dir=data_dir, seed=9, metadata=True)))
    assert ids[0] == ids[1] == ids[2]
    # Another alias, removals or subset size choose the same split.
    other = Source(CAMUS, "other", split="paper", train_examples=5,
                   removals=(Removal(("lvm",), 0.5),))
    assert M.split_patients(other, "test", data_dir=data_dir) == sorted(ids[0])


def test_training_subset_and_removals_apply_on_top_of_the_paper_split(data_dir):
    whole = Mixture([Source(CAMUS, "c", split="paper")], "train", data_dir=data_dir, seed=0,
                    metadata=True)
    train_patients = _patients(whole)
    srcs = [Source(CAMUS, "c", split="paper", train_examples=n,
                   removals=(Removal(("lvm",), 0.5),)) for n in (20, 60)]
    small, large = (Mixture([s], "train", data_dir=data_dir, seed=3, metadata=True)
                    for s in srcs)
    assert (len(small), len(large)) == (20, 60)
    small_idx = {int(ex["index"]) for ex in _rows(small)}
    assert small_idx <= {int(ex["index"]) for ex in _rows(large)}  # nested subsets
    assert _patients(large) <= train_patients
    lost = sum(not ex["label_mask"][labels.LVM] for ex in _rows(small))
    assert lost == 10
    for ex in _rows(small):
        if not ex["label_mask"][labels.LVM]:
            assert not (ex["segmentation"] == labels.LVM).any()
    val = Mixture([srcs[0]], "validation", data_dir=data_dir, seed=3)
    assert len(val) == 16 and sum(not ex["label_mask"][labels.LVM] for ex in _rows(val)) == 8
    test = Mixture([srcs[0]], "test", data_dir=data_dir, seed=3)
    assert len(test) == 16 and all(ex["label_mask"].all() for ex in _rows(test))
    assert M.split_size(srcs[0], "train", data_dir=data_dir) == 128  # before the subset


# --- Mixture with the frames rule -------------------------------------------------------

@pytest.mark.parametrize("split, sizes", [("paper", [64, 8, 8]), ("official", [64, 8, 8])])
def test_frames_rule_keeps_one_ed_one_es_of_both_views_per_patient(data_dir, split, sizes):
    src = Source(CAMUS, "c", split=split, frames="one_phase_per_view")
    rows = []
    for sp, n in zip(M.SPLITS, sizes):
        mix = Mixture([src], sp, data_dir=data_dir, seed=0, metadata=True)
        assert len(mix) == n, sp
        rows += _rows(mix)
    assert len(rows) == 80  # 40 patients x 2
    by_patient = collections.defaultdict(list)
    for ex in rows:
        by_patient[ex["patient_id"]].append((ex["view"], ex["phase"]))
    assert len(by_patient) == 40
    for p, got in by_patient.items():
        assert sorted(v for v, _ in got) == ["2CH", "4CH"] and sorted(
            ph for _, ph in got) == ["ED", "ES"], (p, got)
    assert collections.Counter(ex["phase"] for ex in rows) == {"ED": 40, "ES": 40}
    assert collections.Counter(ex["view"] for ex in rows) == {"2CH": 40, "4CH": 40}
    assert collections.Counter((ex["view"], ex["phase"]) for ex in rows) == {
        ("2CH", "ED"): 20, ("2CH", "ES"): 20, ("4CH", "ED"): 20, ("4CH", "ES"): 20}
    if split == "paper":  # the rule comes first; the split is still by subject
        full = {sp: _patients(Mixture([Source(CAMUS, "c", split="paper")], sp,
                                      data_dir=data_dir, seed=0, metadata=True))
                for sp in M.SPLITS}
        for sp in M.SPLITS:
            mix = Mixture([src], sp, data_dir=data_dir, seed=0, metadata=True)
            assert _patients(mix) == full[sp]


@pytest.mark.parametrize("name, match", [
    (NO_4CH, r"'c' \(camus_mini/no_4ch\).*takes the 4CH E[DS] frame of patient 'patient0003'"),
    (UNKNOWN_PHASE, r"'c' \(camus_mini/unknown_phase\).*phase in \('ED', 'ES'\).*'unknown'"),
    ("tiny_echo/r16_n20", r"'c' \(tiny_echo/r16_n20\).*takes the 4CH .* which it lacks"),
])
def test_frames_rule_without_the_metadata_it_needs_names_the_dataset(data_dir, name, match):
    with pytest.raises(ValueError, match=match):
        Mixture([Source(name, "c", frames="one_phase_per_view")], "train",
                data_dir=data_dir, seed=0)
    # Without the rule the same dataset reads as before.
    assert len(Mixture([Source(name, "c", split="paper")], "test", data_dir=data_dir, seed=0))


def test_official_split_of_every_frame_is_unchanged(data_dir):
    mix = Mixture([Source(CAMUS, "c")], "test", data_dir=data_dir, seed=0, metadata=True)
    raw = tfds.builder(CAMUS, data_dir=data_dir).as_data_source(split="test")
    assert len(mix) == len(raw) == 16
    for i in range(len(mix)):
        assert int(mix[i]["index"]) == i and mix.locate(i) == (0, i)
        np.testing.assert_array_equal(mix[i]["image"], raw[i]["image"])


# --- experiment options, dry run, sizes, pseudo-label data ------------------------------

def _options(*argv):
    args = O.build_parser("t").parse_args(list(argv))
    return O.options_from_args("exp", args)


@pytest.mark.parametrize("argv, expected", [
    (["--preset=paper", "--data=real"], ("paper", "one_phase_per_view")),
    (["--preset=paper", "--data=synthetic"], ("official", "all")),
    (["--preset=quick", "--data=real"], ("official", "all")),
    (["--preset=smoke", "--data=real"], ("official", "all")),
    (["--preset=paper", "--data=real", "--split=official"], ("official", "one_phase_per_view")),
    (["--preset=paper", "--data=real", "--camus_frames=all"], ("paper", "all")),
    (["--preset=quick", "--split=paper", "--camus_frames=one_phase_per_view"],
     ("paper", "one_phase_per_view")),
])
def test_presets_and_flags_choose_split_and_camus_frames(argv, expected):
    opts = _options(*argv)
    assert (opts.split, opts.camus_frames) == expected
    camus, unity = opts.source("camus"), opts.source("unity", remove=("la",))
    assert (camus.split, camus.frames) == expected
    assert (unity.split, unity.frames) == (expected[0], "all")  # the rule is CAMUS's


def test_bad_split_flag_is_refused(capsys):
    with pytest.raises(SystemExit):
        O.build_parser("t").parse_args(["--split=random"])
    assert "invalid choice: 'random'" in capsys.readouterr().err
    with pytest.raises(ValueError, match=r"--split must be one of .*got 'x'"):
        O.resolve_split(O.PRESETS["paper"], "real", "x")


def test_dry_run_json_shows_split_and_frames():
    opts = _options("--preset=paper", "--data=real")
    cfg = opts.config([opts.source("camus"), opts.source("echonet")], arch="unet",
                      loss="cce", seed=0)
    shown = json.loads(json.dumps(describe(Run("r", cfg))))["sources"]
    assert [(s["alias"], s["split"], s["frames"]) for s in shown] == [
        ("camus", "paper", "one_phase_per_view"), ("echonet", "paper", "all")]


def test_train_size_counts_the_chosen_split(data_dir):
    def size(**kw):
        return datasets.train_size(Config(sources=(Source(CAMUS, "c", **kw),), resolution=R,
                                          data_dir=data_dir))
    assert size() == 128  # official: patients 1-8, 11-18, ... (32 of 40)
    assert size(split="paper") == 128
    assert size(split="paper", frames="one_phase_per_view") == 64
    assert size(split="paper", train_examples=7) == 7


def test_test_examples_follow_the_split(data_dir):
    src = Source(CAMUS, "c", split="paper", frames="one_phase_per_view", train_examples=3)
    got = datasets.test_examples(src, data_dir=data_dir, count=8)
    test = set(M.split_patients(dataclasses.replace(src, frames="all"), "test",
                                data_dir=data_dir))
    assert len(got) == 8 and {ex["patient_id"] for ex in got} <= test


def test_pseudo_label_data_reads_the_paper_split(data_dir):
    from echojax import pseudo_label
    src = Source(CAMUS, "c", split="paper", frames="one_phase_per_view")
    got = list(pseudo_label._examples(src, "test", data_dir=data_dir, seed=0))
    assert len(got) == 8 and {ex["source"] for ex in got} == {"camus_mini"}
    assert {ex["patient_id"] for ex in got} == set(M.split_patients(src, "test",
                                                                    data_dir=data_dir))
    # Datasets derived before the options existed keep their hash.
    assert pseudo_label._source_key(Source(CAMUS, "c")) == {
        "name": CAMUS, "alias": "c", "train_examples": None, "removals": []}
    assert pseudo_label._source_key(src)["split"] == "paper"
