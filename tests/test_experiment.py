"""echojax.experiment with a fake backend (trainer, evaluator, predictor): sharding,
skipping finished runs, resuming, results rows, grid search, typed flags and the
command line."""

import dataclasses
import io
import json
import math
import os
import re

import numpy as np
import pytest
from experiment_scripts import load_experiment

from echojax import experiment as X
from echojax import files, report
from echojax.config import Config, LossConfig, ModelConfig
from echojax.data.mixture import Removal, Source
from echojax.experiment import datasets
from echojax.experiment import options as options_lib

CAMUS = Source("synthetic_echo/camus_like_64", alias="camus")
UNITY = Source("synthetic_echo/unity_like_64", alias="unity",
               removals=(Removal(("la",), 1.0),))


def _config(loss="cce", seed=0, dropout=0.0, sources=(CAMUS, UNITY)):
    return Config(sources=sources, resolution=64, model=ModelConfig(name="unet", size="tiny"),
                  loss=LossConfig(name=loss, dropout_rate=dropout,
                                  dropout_classes=("la",) if dropout else ()),
                  seed=seed, epochs=1)


# Per-image Dice the fake evaluator writes: depends on the source and the loss so that
# results rows can be checked by hand. Two images per source; LA absent from image 1.
_DICE = {"cce": (0.5, 0.7), "acce": (0.8, 0.9)}
_VAL_DICE = {"cce": 0.61, "acce": 0.87, "marginal": 0.7, "abce": 0.75}


class FakeEngine:
    """Stands in for train_and_evaluate / evaluate / the predictor and the test data:
    records calls, writes the files a real run writes."""

    def __init__(self):
        self.trained, self.evaluated, self.predicted = [], [], []
        self.reporters = []

    def backend(self, **kw):
        return X.Backend(train=kw.pop("train", self.train), evaluate=self.evaluate,
                         prepare=kw.pop("prepare", lambda names, **k: None),
                         train_size=kw.pop("train_size", lambda config: 100),
                         predictor=self.predictor,
                         test_examples=self.test_examples, compilation_cache=False, **kw)

    def predictor(self, run_dir):
        self.predicted.append(run_dir)
        return lambda images: np.where(images[..., 0] > 127, 1, 0).astype(np.int32)

    @staticmethod
    def test_examples(source, *, data_dir, count):
        image = np.zeros((8, 8, 1), np.uint8)
        image[2:6, 2:6] = 200
        seg = (image[..., 0] > 0).astype(np.uint8)
        return [{"image": image, "segmentation": seg, "patient_id": f"p{k}", "view": "4CH",
                 "phase": "ED"} for k in range(count)]

    def train(self, config: Config, workdir: str, *, reporter=None):
        self.trained.append(workdir)
        self.reporters.append(reporter)
        os.makedirs(os.path.join(workdir, "checkpoints"), exist_ok=True)
        path = os.path.join(workdir, "config.json")
        if not os.path.exists(path):
            config.save(path)
        return {"best/val_fg_dice": _VAL_DICE[config.loss.name]}

    def evaluate(self, workdir: str, *, split: str):
        self.evaluated.append(workdir)
        config = Config.load(os.path.join(workdir, "config.json"))
        d0, d1 = _DICE[config.loss.name]
        lines = ["source,index,patient_id,view,phase,dice_lv,dice_lvm,dice_la"]
        summary = {"sources": {}, "overall": {"fg_dice": d0}}
        for s in config.sources:
            lines += [f"{s.alias},0,p0,4CH,ED,{d0},{d0},{d0}", f"{s.alias},1,p1,4CH,ES,{d1},{d1},"]
            summary["sources"][s.alias] = {"ef": {"monoplane": {"count": 1, "mae": 4.0},
                                                  "biplane": {"count": 0, "mae": None}}}
        out = os.path.join(workdir, "eval", split)
        files.write_atomic(os.path.join(out, "per_image.csv"), "\n".join(lines) + "\n")
        files.write_atomic(os.path.join(out, "summary.json"), json.dumps(summary))


def test_parse_shard():
    assert options_lib.parse_shard("1/3") == (1, 3)
    for bad in ("3/3", "-1/2", "1", "a/b", "0/0"):
        with pytest.raises(ValueError, match="shard"):
            options_lib.parse_shard(bad)


def test_select_shard_keeps_dependent_runs_together():
    cfg = _config()
    names = [("a", ()), ("b", ()), ("c", ("a",)), ("d", ()), ("e", ("b", "d")), ("f", ())]
    runs = [X.Run(n, cfg, needs=needs) for n, needs in names]
    # Groups in order: {a, c}, {b, d, e} (e ties b and d), {f}.
    pick = lambda i, n: [r.name for r in X.select_shard(runs, i, n)]  # noqa: E731
    assert pick(0, 2) == ["a", "c", "f"]
    assert pick(1, 2) == ["b", "d", "e"]
    assert pick(0, 1) == [n for n, _ in names]
    assert pick(2, 3) == ["f"]
    with pytest.raises(ValueError, match="not listed before"):
        X.select_shard([X.Run("x", cfg, needs=("y",)), X.Run("y", cfg)], 0, 1)
    with pytest.raises(ValueError, match="twice"):
        X.check_runs([X.Run("x", cfg), X.Run("x", cfg)])


def test_execute_skips_finished_and_resumes_interrupted(tmp_path):
    runs = [X.Run("cce/s0", _config("cce")), X.Run("acce/s0", _config("acce"))]
    fake = FakeEngine()
    out = X.execute(runs, str(tmp_path), backend=fake.backend())
    assert [o.status for o in out] == ["trained", "trained"]
    assert len(fake.trained) == 2
    # Second pass: nothing trains.
    out = X.execute(runs, str(tmp_path), backend=fake.backend())
    assert [o.status for o in out] == ["skipped", "skipped"] and len(fake.trained) == 2
    # An interrupted run (config and checkpoints, no test summary) is trained again.
    os.remove(tmp_path / "acce" / "s0" / "eval" / "test" / "summary.json")
    out = X.execute(runs, str(tmp_path), backend=fake.backend())
    assert [o.status for o in out] == ["skipped", "trained"]
    assert fake.trained[-1] == str(tmp_path / "acce" / "s0")
    # The same run name with a changed config is refused, not mixed.
    changed = [X.Run("cce/s0", _config("cce", seed=1))]
    with pytest.raises(ValueError, match="different config"):
        X.execute(changed, str(tmp_path), backend=fake.backend())


def test_collect_rows_per_run_source_structure(tmp_path):
    runs = [X.Run("cce", _config("cce"), tags={"setting": "camus+unity"}),
            X.Run("acce-d", _config("acce", dropout=0.5), tags={"setting": "camus+unity"},
                      test_sources=(Source("synthetic_echo/echonet_like_64", alias="echonet"),)),
            X.Run("unfinished", _config("cce", seed=3))]
    fake = FakeEngine()
    X.execute(runs[:2], str(tmp_path), backend=fake.backend())
    # The external evaluation folder holds the source alone and links the checkpoints.
    ext = tmp_path / "acce-d" / "external" / "echonet"
    assert [s.alias for s in Config.load(ext / "config.json").sources] == ["echonet"]
    assert os.path.islink(ext / "checkpoints")
    rows, images, missing = X.collect("exp3", runs, str(tmp_path))
    assert missing == ["unfinished"]
    # cce: 2 sources x 3 structures; acce: 3 sources (one external) x 3 structures.
    assert len(rows) == 6 + 9
    la = next(r for r in rows if r["run"] == "cce" and r["test_source"] == "unity"
              and r["structure"] == "la")
    assert (la["n_images"], la["dice_mean"]) == (1, 0.5)  # image 1 has no LA
    lv = next(r for r in rows if r["run"] == "acce-d" and r["test_source"] == "echonet"
              and r["structure"] == "lv")
    assert lv["dice_mean"] == pytest.approx(0.85) and lv["dice_median"] == pytest.approx(0.85)
    assert (lv["dropout"], lv["method"], lv["loss"], lv["ef_mae"], lv["ef_method"]) == \
        (0.5, "acce", "acce", 4.0, "monoplane")
    assert lv["train_sizes"] == "camus=all;unity=all"
    assert len(images) == 2 * 2 + 2 * 3
    assert {i["method"] for i in images} == {"cce", "acce"}


def _options(tmp_path, **kw):
    args = options_lib.build_parser("").parse_args(
        ["--workdir", str(tmp_path), "--preset", "paper"] + [f"--{k}={v}" for k, v in kw.items()])
    return options_lib.options_from_args("exp", args)


def test_options_and_bad_flags(tmp_path):
    o = _options(tmp_path, loss="acce,cce", seeds="3,4", epochs=2)
    assert o.losses == ("acce", "cce") and o.seeds == (3, 4) and o.grid_search
    cfg = o.config([CAMUS], arch="swin_unet", loss="acce", seed=3, dropout=0.2,
                   dropout_classes=("la",))
    assert (cfg.resolution, cfg.epochs, cfg.model.size, cfg.loss.dropout_rate) == (256, 2, "paper", 0.2)
    assert (cfg.seed, cfg.mixture_seed) == (3, 3)  # without --data_seed, seeds vary the data
    fixed = _options(tmp_path, seeds="3,4", data_seed=0)
    assert [fixed.config([CAMUS], arch="unet", loss="acce", seed=s).mixture_seed
            for s in (3, 4)] == [0, 0]
    assert not _options(tmp_path, lr=0.1).grid_search
    assert o.size(1400) == 1120  # whole-dataset count -> its 80 % training share
    quick = options_lib.options_from_args("exp", options_lib.build_parser("").parse_args([]))
    assert quick.size(1400) == 350  # size_scale 0.25
    # examples_per_run 1600: 1600 / 25 = 64 epochs; a large set keeps the preset's 2.
    assert (quick.epochs_for(25), quick.epochs_for(1000)) == (64, 2)
    assert o.epochs_for(25) == 2  # --epochs wins
    small = _config(sources=(dataclasses.replace(CAMUS, train_examples=100),
                             dataclasses.replace(UNITY, train_examples=60)))
    assert datasets.train_size(small) == 160
    adjusted = quick.adjust(small, 160)  # 1600 / 160 images = 10 epochs, validated every 10 // 4
    assert (adjusted.epochs, adjusted.eval_every) == (10, 2)
    assert o.adjust(small, 160) == small
    for bad in ({"loss": "dice"}, {"arch": "vit"}, {"seeds": "a"}, {"epochs": 0}, {"shard": "2/2"},
                {"data_seed": -1}):
        with pytest.raises(ValueError):
            _options(tmp_path, **bad)


def test_grid_search_picks_best_validation_dice(tmp_path):
    o = _options(tmp_path)
    runs = [X.Run(f"acce/s{s}", _config("acce", seed=s)) for s in (0, 1)]
    grid = X.with_grid_search(runs, o, key=lambda r: "unet_acce")
    names = [r.name for r in grid]
    assert len(names) == 9 + 2 and names[-2:] == ["acce/s0", "acce/s1"]
    scores = {("0.01", 16): 0.7, ("0.1", 8): 0.9, ("0.001", 32): 0.2}
    dirs = {}
    for r in grid[:9]:
        d = tmp_path / r.name
        d.mkdir(parents=True)
        dirs[r.name] = str(d)
        key = (f"{r.config.optim.lr:g}", r.config.batch_size)
        lines = [{"step": 1, "train_loss": 1.0},
                 {"step": 2, "validation/fg_dice": scores.get(key, 0.1)},
                 {"step": 3, "validation/fg_dice": scores.get(key, 0.1) - 0.05}]
        d.joinpath("metrics.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines))
    final = grid[-1]
    assert final.config is None and set(final.needs) == set(dirs)
    cfg = final.setup(str(tmp_path / "final"), dirs)
    assert (cfg.optim.lr, cfg.batch_size, cfg.seed) == (0.1, 8, 1)


def _one_run_per_loss() -> X.Experiment:
    """An experiment of one run per ``--loss``, reporting the LA on Unity."""
    def runs(options):
        return [X.Run(f"{loss}", _config(loss), tags={"setting": "mix"}) for loss in options.losses]

    def make_report(inp):
        table = report.structure_table(inp.results, group=("method",), test_source="unity")
        return "## LA on Unity\n\n" + table, table

    return X.Experiment("exp_test", "Test experiment", runs=runs, report=make_report)


def test_main_writes_report_and_rerun_trains_nothing(tmp_path, capsys):
    exp = _one_run_per_loss()
    fake = FakeEngine()
    prepared = []
    argv = ["--loss=cce,acce", f"--workdir={tmp_path}", "--epochs=1"]
    kw = dict(backend=fake.backend(prepare=lambda names, **k: prepared.extend(names)))
    assert X.main(exp, argv, **kw) == 0
    assert len(fake.trained) == 2 and "synthetic_echo/unity_like_64" in prepared
    text = (tmp_path / "report.md").read_text()
    assert "runs finished: 2 of 2" in text and "| acce | 0.850 | 0.850 | 0.800 |" in text
    results = report.read_results(tmp_path / "results.csv")
    assert len(results) == 2 * 2 * 3
    out = capsys.readouterr().out
    assert f"report: {tmp_path / 'report.md'}" in out and "| cce |" in out
    assert X.main(exp, argv, **kw) == 0
    assert len(fake.trained) == 2  # nothing retrained
    assert X.main(exp, argv + ["--dry_run"], **kw) == 0
    lines = [json.loads(x) for x in capsys.readouterr().out.splitlines() if x.startswith("{")]
    assert [(x["name"], x["architecture"], x["loss"], x["label_dropout"]["rate"], x["seed"],
             x["epochs"]) for x in lines] == [("cce", "unet", "cce", 0.0, 0, 1),
                                              ("acce", "unet", "acce", 0.0, 0, 1)]


def test_report_only_collects_every_shard_and_names_the_missing_runs(tmp_path, capsys):
    # The report step after a job array: each shard trains its runs into one workdir,
    # then one --report_only command reports them all, training nothing.
    exp = _one_run_per_loss()
    fake = FakeEngine()
    argv = ["--loss=cce,acce,marginal", f"--workdir={tmp_path}", "--epochs=1"]
    kw = dict(backend=fake.backend(prepare=lambda names, **k: None))
    assert X.main(exp, argv + ["--shard=0/2", "-q"], **kw) == 0
    trained = [os.path.basename(w) for w in fake.trained]
    assert len(trained) == 2  # shard 0 of 2: every second run
    capsys.readouterr()
    assert X.main(exp, argv + ["--report_only"], **kw) == 3  # one run is missing
    out = capsys.readouterr().out
    missing = ({"cce", "acce", "marginal"} - set(trained)).pop()
    assert f"finished: 2 of 3 runs (all shards); missing 1: {missing}" in out
    assert len(fake.trained) == 2  # trained nothing
    assert f"runs finished: 2 of 3 (missing: {missing})" in (tmp_path / "report.md").read_text()
    assert X.main(exp, argv + ["--shard=1/2", "-q"], **kw) == 0
    assert len(fake.trained) == 3
    capsys.readouterr()
    assert X.main(exp, argv + ["--report_only"], **kw) == 0
    out = capsys.readouterr().out
    assert "finished: 3 of 3 runs (all shards)" in out and "missing" not in out
    assert len(fake.trained) == 3
    assert len(report.read_results(tmp_path / "results.csv")) == 3 * 2 * 3


def test_real_data_not_prepared_is_a_clear_error(tmp_path, capsys):
    def refuse(names, **kw):
        raise X.DataNotPrepared(f"real datasets not prepared: {', '.join(names)}")

    exp = X.Experiment("e", "E", runs=lambda o: [X.Run("r", _config())],
                       report=lambda inp: ("", ""))
    fake = FakeEngine()
    assert X.main(exp, ["--data=real", f"--workdir={tmp_path}"],
                  backend=fake.backend(prepare=refuse)) == 2
    assert "not prepared" in capsys.readouterr().err and fake.trained == []


def test_tfds_names():
    assert X.tfds_name("unity", data="synthetic", resolution=64) == "synthetic_echo/unity_like_64"
    assert X.tfds_name("echonet", data="real", resolution=256) == "echonet_dynamic/256"
    with pytest.raises(ValueError, match="alias"):
        X.tfds_name("acdc", data="real", resolution=256)
    assert math.isnan(X.best_validation_dice("/nonexistent"))


# --------------------------------------------------------------------------- experiment scripts


_DICE.update({"marginal": (0.6, 0.8), "abce": (0.7, 0.9)})


@pytest.mark.parametrize("name,argv,runs,heading", [
    ("exp1_domain_shift", [], 4, "| unity | 0.600 | 0.600 | 0.600 | 0.000 |"),
    ("exp2_intra_domain", ["--baselines="], 4, "| unet | acce | 0.850 | 0.850 | 0.800 |"),
    ("exp3_dropout", ["--loss=acce,cce", "--baselines=", "--rates=0,0.5"], 4,
     "| unet | acce | 0.800 | 0.800 |"),
    # Dataset sizes 20, 40 -> 5, 10 training images under the quick preset's 0.25.
    ("exp3_data_ratio", ["--loss=acce", "--camus_sizes=20,40", "--unity_sizes=0,20"], 4,
     "| 5 | 0.800 | 0.800 |"),
    # Table 3's images only (the 2 annotated EchoNet ones of the fake engine), both
    # differing by -0.25: exact two-sided p = 2 / 2**2 = 0.5; Holm over the 3 structures
    # (p 0.5, 0.5 and LA's one image 1.0): 3 x 0.5 capped at 1.
    ("exp4_all_datasets", ["--loss=cce,acce", "--baselines="], 4,
     "| LV | cce vs acce | 2 | -0.250 | 0.5 | 1 |"),
])
def test_experiment_scripts_with_fake_engine(tmp_path, capsys, name, argv, runs, heading):
    exp = load_experiment(name)
    fake = FakeEngine()
    kw = dict(backend=fake.backend())
    argv = argv + ["--epochs=1"]
    assert X.main(exp, argv + [f"--workdir={tmp_path}"], **kw) == 0
    assert len(fake.trained) == runs
    text = (tmp_path / "report.md").read_text()
    assert heading in text, text
    assert f"runs finished: {runs} of {runs}" in text
    if name == "exp2_intra_domain":  # Sec. 5.2's claim: each method against CCE on the LVM
        assert "| LVM | acce vs cce | 2 |" in text and "| LVM | abce vs cce | 2 |" in text
    if name == "exp4_all_datasets":  # Table 3's annotated EchoNet images: a block, and tested
        assert "Test source: echonet_annotated" in text
        assert "Images: Table 3's, the test set `echonet_annotated`." in text
        # the paper's Table 3 value beside ours (U-Net, full, aCCE: LVM 0.518)
        assert "(0.518)" in text
    for png in os.listdir(tmp_path / "figures") if (tmp_path / "figures").exists() else ():
        assert (tmp_path / "figures" / png).read_bytes()[:4] == b"\x89PNG"
    if name not in ("exp1_domain_shift", "exp3_data_ratio"):  # sample predictions
        overlays = [p for p in os.listdir(tmp_path / "figures") if "overlay" in p]
        assert overlays and fake.predicted, os.listdir(tmp_path / "figures")
        assert f"figures/{overlays[0]}" in text
    assert X.main(exp, argv + [f"--workdir={tmp_path}"], **kw) == 0
    assert len(fake.trained) == runs  # re-running trains nothing


def test_paper_preset_run_counts(tmp_path):
    # 11 rates x 4 losses x 5 seeds x 3 archs + benchmark and pseudo-label pairs, plus
    # one 3 x 3 LR/batch grid per model: per arch 44 (loss, rate) models + the benchmark
    # (the pseudo-label pair tunes on the CCE rate-0 model's grid).
    exp = load_experiment("exp3_dropout")
    o = X.parse(exp, ["--preset=paper", f"--workdir={tmp_path}",
                      "--baselines=benchmark,pseudo_label"])
    assert o.flags.rates is None and o.flags.baselines == ("benchmark", "pseudo_label")
    runs = exp.runs(o)
    assert len(runs) == 11 * 4 * 5 * 3 + 3 * 5 * 3 + 9 * 45 * 3
    assert sum(r.name.startswith("grid/") for r in runs) == 9 * 45 * 3
    # Shards partition the sweep.
    parts = [X.select_shard(runs, i, 7) for i in range(7)]
    assert sorted(r.name for p in parts for r in p) == sorted(r.name for r in runs)


def test_typed_experiment_flags():
    @dataclasses.dataclass(frozen=True)
    class Flags:
        rates: tuple[float, ...] | None = X.flag(None, "rates")
        kinds: tuple[str, ...] = X.flag(("a", "b"), "comma list of %(default)s", choices=("a", "b"))
        fraction: float = X.flag(0.5, "fraction")
        count: int = X.flag(3, "count")

        def __post_init__(self):
            if not 0 < self.fraction <= 1:
                raise ValueError(f"--fraction must be in (0, 1], got {self.fraction}")

    exp = X.Experiment("e", "E", runs=lambda o: [], report=lambda inp: ("", ""), flags=Flags)
    o = X.parse(exp, ["--rates=0,0.5,0.5", "--kinds=b", "--count=4"])
    assert o.flags == Flags(rates=(0.0, 0.5), kinds=("b",), fraction=0.5, count=4)
    assert X.parse(exp, ["--kinds="]).flags.kinds == ()  # '' for none
    assert X.parse(exp, []).flags == Flags()
    for bad in (["--kinds=c"], ["--rates=x"], ["--count=1.5"], ["--fraction=0"]):
        with pytest.raises(SystemExit):
            X.parse(exp, bad)


# --------------------------------------------------------------------------- what the terminal shows


class _Terminal(io.StringIO):
    def isatty(self):  # tqdm draws bars only on a terminal
        return True


def test_execute_prints_a_line_per_run_and_hands_each_run_its_reporter(tmp_path, monkeypatch):
    from echojax import progress
    monkeypatch.chdir(tmp_path)  # paths in the lines are relative to the current folder
    extra = Source("synthetic_echo/echonet_like_64", alias="echonet")
    runs = [X.Run("cce/s0", _config("cce")),
            X.Run("acce/s0", _config("acce"), test_sources=(extra,))]
    fake = FakeEngine()
    X.execute(runs[:1], "exp", backend=fake.backend())  # finished before the sweep below
    now = [100.0]

    def train(config, workdir, *, reporter):
        now[0] += 65.0  # the run's training takes 65 s on the sweep's clock
        return fake.train(config, workdir, reporter=reporter)

    out = io.StringIO()
    sweep = progress.SweepProgress(2, verbosity=progress.NORMAL, file=out, clock=lambda: now[0])
    outcomes = X.execute(runs, "exp", backend=fake.backend(train=train), sweep=sweep)
    sweep.close()
    assert [(o.status, o.seconds) for o in outcomes] == [("skipped", 0.0), ("trained", 65.0)]
    # acce: val Dice from the training result, test Dice from each summary.json (0.8).
    assert out.getvalue().splitlines() == [
        "[1/2] cce/s0: skipped (finished before), exp/cce/s0",
        ("[2/2] acce/s0: done, val Dice 0.870, test Dice 0.800, test Dice echonet 0.800, "
         "1 min 05 s, exp/acce/s0")]
    assert json.loads((tmp_path / "exp/acce/s0/run_time.json").read_text()) == {"seconds": 65.0}
    # The run's reporter is the sweep's: its step bar under the run bar.
    reporter = fake.reporters[-1]
    assert isinstance(reporter, progress.Reporter)
    assert reporter.reporters[0].position == 1 and reporter.reporters[0].file is out
    with pytest.raises(ValueError, match="counts 3 runs, got 2"):
        X.execute(runs, "exp", backend=fake.backend(), sweep=progress.SweepProgress(3))


def test_execute_draws_the_run_bar_on_a_terminal(tmp_path):
    from echojax import progress
    fake = FakeEngine()
    term = _Terminal()
    sweep = progress.SweepProgress(2, verbosity=progress.NORMAL, file=term)
    X.execute([X.Run("cce/s0", _config("cce")), X.Run("acce/s0", _config("acce"))],
              str(tmp_path), backend=fake.backend(), sweep=sweep)
    sweep.close()
    text = term.getvalue()
    assert "run 1/2 cce/s0" in text and "run 2/2 acce/s0" in text and "2/2 runs" in text
    assert "[2/2] acce/s0: done, val Dice 0.870, test Dice 0.800" in text


def _small_experiment():
    def runs(options):
        return [X.Run(loss, _config(loss), tags={"setting": "mix"}) for loss in options.losses]

    return X.Experiment("exp_test", "Test experiment", runs=runs,
                        report=lambda inp: ("body\n", "| compact | table |"))


def test_main_quiet_prints_only_the_table_and_paths(tmp_path, capsys):
    exp, fake = _small_experiment(), FakeEngine()
    argv = ["--loss=cce,acce", f"--workdir={tmp_path}", "--epochs=1"]
    expected = (f"| compact | table |\nreport: {tmp_path / 'report.md'}\n"
                f"results: {tmp_path / 'results.csv'}\nfigures: {tmp_path / 'figures'}\n")
    for _ in range(2):  # training both runs, then skipping both
        assert X.main(exp, argv + ["-q"], backend=fake.backend()) == 0
        out, err = capsys.readouterr()
        assert (out, err) == (expected, "")
    assert len(fake.trained) == 2


def test_main_normal_prints_header_run_lines_then_table(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    exp, fake = _small_experiment(), FakeEngine()
    assert X.main(exp, ["--loss=cce,acce", "--workdir=w", "--epochs=1"],
                  backend=fake.backend()) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[:2] == ["Test experiment",
                         "2 runs, 2 in shard 0/1; preset=quick, data=synthetic, workdir=w"]
    assert re.fullmatch(r"\[1/2\] cce: done, val Dice 0\.610, test Dice 0\.500, \d+ s, w/cce",
                        lines[2]), lines[2]
    assert re.fullmatch(r"\[2/2\] acce: done, val Dice 0\.870, test Dice 0\.800, \d+ s, w/acce",
                        lines[3]), lines[3]
    assert re.fullmatch(r"2 runs trained, 0 skipped, \d+ s; writing the report \.\.\.", lines[4])
    w = tmp_path / "w"  # the final paths are absolute
    assert lines[5:] == ["| compact | table |", f"report: {w / 'report.md'}",
                         f"results: {w / 'results.csv'}", f"figures: {w / 'figures'}"]
    with pytest.raises(SystemExit):  # -v and -q exclude each other
        X.main(exp, ["-v", "-q", "--workdir=w"], backend=fake.backend())


def test_run_line_scores_the_structures_the_run_was_trained_on(tmp_path):
    """Exp. 1 removes LVM and LA from every source: its run line shows the LV test Dice
    (named), not the three-structure foreground Dice that the never-trained LVM and LA
    pull to a third; a class kept by one source counts as trained."""
    from echojax import rundir
    from echojax.experiment.execute import run_scores, trained_structures
    from echojax.experiment.runs import Run
    lv_only = tuple(Source(s.name, alias=s.alias, removals=(Removal(("lvm", "la"), 1.0),))
                    for s in (CAMUS, UNITY))
    assert trained_structures(_config(sources=lv_only)) == ("lv",)
    assert trained_structures(_config()) == ("lv", "lvm", "la")  # CAMUS keeps LA
    half = (Source(CAMUS.name, alias="camus", removals=(Removal(("lvm",), 0.5),)),)
    assert trained_structures(_config(sources=half)) == ("lv", "lvm", "la")
    summary = {"overall": {"fg_dice": 0.33, "dice": {
        "lv": {"mean": 0.97, "n": 4}, "lvm": {"mean": 0.0, "n": 4}, "la": {"mean": 0.02, "n": 4}}}}
    for name, sources, want in (("lv", lv_only, {"test Dice (lv)": 0.97}),
                                ("all", (CAMUS, UNITY), {"test Dice": (0.97 + 0.0 + 0.02) / 3})):
        directory = rundir.RunDir(str(tmp_path / name))
        os.makedirs(os.path.dirname(directory.summary()), exist_ok=True)
        _config(sources=sources).save(directory.config)
        files.write_atomic(directory.summary(), json.dumps(summary))
        run = Run(name=name, config=_config(sources=sources))
        scores = run_scores(run, directory, {"best/val_fg_dice": 0.9})
        assert scores.pop("val Dice") == pytest.approx(0.9)
        assert scores == pytest.approx(want)


def test_a_size_smaller_than_the_batch_stops_the_sweep_before_anything_trains(tmp_path, capsys):
    # --preset=smoke scales CAMUS 100 to 1 training image, fewer than its batches of 2:
    # the command stops at the start naming the run and its sizes, nothing is trained.
    exp = load_experiment("exp3_data_ratio")
    fake = FakeEngine()
    argv = ["--preset=smoke", "--loss=acce", "--camus_sizes=100,1000", "--unity_sizes=0",
            f"--workdir={tmp_path}"]
    # the real count of explicit training sizes (no data needed for them)
    assert X.main(exp, argv, backend=fake.backend(train_size=datasets.train_size)) == 2
    err = capsys.readouterr().err
    assert "run unet/acce/c100_u0/s0 (setting c100_u0)" in err and "camus=1 give 1" in err
    assert "batch size 2" in err and fake.trained == []
