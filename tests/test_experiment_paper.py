"""The paper preset's run lists (Islam et al., MELBA 2026), the size semantics, the
per-loss/architecture label-dropout spec, the grid-search modes and ``--dry_run``'s
JSON lines. No training: run lists only."""

import collections
import json
import os

import pytest
from experiment_scripts import SCRIPTS as _SCRIPTS
from experiment_scripts import load_experiment

from echojax import experiment as X
from echojax.config import Config, LossConfig, ModelConfig
from echojax.data.mixture import Removal, Source
from echojax.experiment import options as options_lib
from echojax.experiment.options import DropoutSpec
from echojax.experiment.runs import describe
from tfds_builders.synthetic_echo import synthetic_echo_dataset_builder as seb


def _runs(name, tmp_path, *argv):
    exp = load_experiment(name)
    options = X.parse(exp, ["--preset=paper", f"--workdir={tmp_path}", *argv])
    runs = exp.runs(options)
    X.check_runs(runs)
    return options, runs


def _trained(runs):
    return [r for r in runs if not r.name.startswith("grid/")]


def _config(run):
    return run.config if run.config is not None else run.preview


# --------------------------------------------------------------------------- run lists


# Runs the paper preset lists: (training runs, grid-search runs with --grid=per_model,
# with --grid=shared). Derivations in experiments/README.md ("Runs per experiment").
_COUNTS = {
    # U-Net, CCE, 4 training sets (camus, unity, echonet, all) x 5 seeds; one grid per set.
    "exp1_domain_shift": (4 * 5, 9 * 4, 9 * 1),
    # 3 archs x 5 seeds x (4 losses + benchmark + pseudo teacher + student); per arch 5
    # models (4 losses, benchmark; the pseudo pair tunes on CCE's), shared: 4 losses.
    "exp2_intra_domain": (3 * 5 * 7, 9 * 3 * 5, 9 * 3 * 4),
    # 3 archs x 5 seeds x (4 losses x 11 rates + benchmark + pseudo pair).
    "exp3_dropout": (3 * 5 * (4 * 11 + 3), 9 * 3 * (4 * 11 + 1), 9 * 3 * 4),
    # 3 archs x 3 losses (Table 2's caption: aCCE, marginal, aBCE) x 3 seeds x 16 cells.
    "exp3_data_ratio": (3 * 3 * 3 * 16, 9 * 3 * 3 * 16, 9 * 3 * 3),
    # 2 set-ups x 3 archs x 5 seeds x 3 losses (aCCE with dropout, marginal, aBCE).
    "exp4_all_datasets": (2 * 3 * 5 * 3, 9 * 2 * 3 * 3, 9 * 3 * 3),
}


@pytest.mark.parametrize("name", _SCRIPTS)
def test_paper_preset_run_counts_per_grid_mode(tmp_path, name):
    trained, per_model, shared = _COUNTS[name]
    for mode, grids in (("per_model", per_model), ("shared", shared)):
        options, runs = _runs(name, tmp_path, f"--grid={mode}")
        assert options.grid == mode
        assert len(_trained(runs)) == trained, mode
        assert len(runs) - trained == grids, mode
        # Every trained run is tuned by a grid and says so.
        assert all(r.grid and r.config is None for r in _trained(runs))
    # Without --grid the paper preset searches per model.
    assert _runs(name, tmp_path)[0].grid == "per_model"


def test_exp1_paper_preset_is_unet_cce_only(tmp_path):
    options, runs = _runs("exp1_domain_shift", tmp_path)
    assert options.archs == ("unet",) and options.losses == ("cce",)
    assert {(_config(r).model.name, _config(r).loss.name) for r in runs} == {("unet", "cce")}
    settings = collections.Counter(r.tags["setting"] for r in _trained(runs))
    assert settings == {"camus": 5, "unity": 5, "echonet": 5, "all": 5}
    # --arch still chooses; other presets keep their own architectures.
    assert _runs("exp1_domain_shift", tmp_path, "--arch=swin_unet")[0].archs == ("swin_unet",)
    quick = X.parse(load_experiment("exp1_domain_shift"), ["--preset=quick"])
    assert quick.archs == options_lib.PRESETS["quick"].archs


def test_exp4_paper_preset_compares_the_papers_methods(tmp_path):
    options, runs = _runs("exp4_all_datasets", tmp_path)
    assert options.losses == ("acce", "marginal", "abce")
    rates = {(_config(r).model.name, _config(r).loss.name): _config(r).loss.dropout_rate
             for r in _trained(runs)}
    assert rates == {("unet", "acce"): 0.4, ("attention_unet", "acce"): 0.8,
                     ("swin_unet", "acce"): 0.3,
                     **{(a, lo): 0.0 for a in X.ARCHS for lo in ("marginal", "abce")}}
    assert all(_config(r).loss.dropout_classes == ("lvm", "la") for r in _trained(runs)
               if _config(r).loss.dropout_rate)
    assert not any("pseudo" in r.name for r in runs)
    # Table 3's EchoNet LVM/LA: the annotated phantom test set beside the runs' own.
    for r in _trained(runs):
        assert [(s.name, s.alias) for s in r.test_sources] == [
            ("synthetic_echo/echonet_like_annotated_256", "echonet_annotated")]
    # Balanced (Sec. 5.4): EchoNet reduced to 1400 images (80 % train); CAMUS and Unity
    # whole (their 1000 and 400 are the whole datasets), as in the full set-up.
    balanced = next(r for r in _trained(runs) if r.tags["setting"] == "balanced")
    assert {s.alias: s.train_examples for s in _config(balanced).sources} == {
        "camus": None, "unity": None, "echonet": 1120}
    # The quick preset reduces EchoNet further but keeps CAMUS and Unity whole too.
    _, quick = _runs("exp4_all_datasets", tmp_path, "--preset=quick")
    balanced = next(r for r in _trained(quick) if r.tags["setting"] == "balanced")
    assert {s.alias: s.train_examples for s in _config(balanced).sources} == {
        "camus": None, "unity": None, "echonet": 350}
    # Other baselines by flag.
    _, more = _runs("exp4_all_datasets", tmp_path, "--loss=cce,acce",
                    "--baselines=pseudo_label", "--arch=unet", "--seeds=0")
    names = {r.name for r in _trained(more)}
    assert {"full/unet/cce/s0", "full/unet/acce/s0", "full/unet/pseudo_teacher/s0",
            "full/unet/pseudo_label/s0"} <= names
    assert {_config(r).loss.dropout_rate for r in _trained(more)
            if r.name.startswith("full/unet/cce")} == {0.0}
    # The pseudo-label student is scored on Table 3's annotated EchoNet images too.
    student = next(r for r in more if r.name == "full/unet/pseudo_label/s0")
    assert [s.alias for s in student.test_sources] == ["echonet_annotated"]


def test_exp4_echonet_annotated_flag(tmp_path):
    _, runs = _runs("exp4_all_datasets", tmp_path, "--data=real",
                    "--echonet_annotated=echo_folder/echonet_lvm_la_256", "--seeds=0",
                    "--arch=unet")
    assert {s.alias: s.name for s in _trained(runs)[0].test_sources} == {
        "echonet_annotated": "echo_folder/echonet_lvm_la_256"}
    # Real data without it: no annotated source (none is invented).
    _, runs = _runs("exp4_all_datasets", tmp_path, "--data=real", "--seeds=0", "--arch=unet")
    assert all(not r.test_sources for r in runs)
    with pytest.raises(SystemExit):
        X.parse(load_experiment("exp4_all_datasets"), ["--echonet_annotated= "])


def test_exp4_quick_preset_keeps_every_loss_and_pseudo_labels():
    exp = load_experiment("exp4_all_datasets")
    options = X.parse(exp, ["--preset=quick"])
    runs = exp.runs(options)
    assert options.losses == X.LOSSES
    assert {r.config.loss.dropout_rate for r in runs if r.config is not None} == {0.0}
    assert any(r.tags.get("method") == "pseudo_label" for r in runs)


# --------------------------------------------------------------------------- sizes


def test_sizes_are_whole_dataset_counts():
    paper = options_lib.options_from_args(
        "e", options_lib.build_parser("").parse_args(["--preset=paper"]))
    # Table 2 / Exp. 4 counts -> 80 % training shares (Sec. 4.4's 80/10/10 split).
    assert [paper.size(n) for n in (100, 200, 400, 1000, 1400)] == [80, 160, 320, 800, 1120]
    quick = options_lib.options_from_args("e", options_lib.build_parser("").parse_args([]))
    assert [quick.size(n) for n in (100, 1000, 1400)] == [25, 250, 350]
    with pytest.raises(ValueError, match="positive"):
        paper.size(0)


def _phantom_train_sizes():
    """Training-split size of every synthetic_echo config, from its subject count and
    the builder's 80/10/10 split by subject (no data generated)."""
    out = {}
    for c in seb.Builder.BUILDER_CONFIGS:
        if c.test_subjects is not None:
            out[c.name] = 0
            continue
        per = seb.phantoms.STYLES[c.style].examples_per_subject
        out[c.name] = per * sum(seb.split_of(i) == "train" for i in range(c.subjects))
    return out


@pytest.mark.parametrize("name", _SCRIPTS)
def test_every_paper_grid_point_fits_the_phantoms(tmp_path, name):
    sizes = _phantom_train_sizes()
    assert (sizes["camus_like_256"], sizes["unity_like_256"], sizes["echonet_like_256"]) == (
        800, 320, 1600)
    _, runs = _runs(name, tmp_path, "--data=synthetic")
    for r in runs:
        for s in _config(r).sources:
            config = s.name.split("/", 1)[1]
            assert config in sizes, s.name
            assert s.train_examples is None or s.train_examples <= sizes[config], (r.name, s)
        for s in r.test_sources:
            assert s.name.split("/", 1)[1] in sizes, s.name


def test_data_ratio_cells_carry_paper_counts(tmp_path):
    _, runs = _runs("exp3_data_ratio", tmp_path, "--arch=unet", "--loss=acce", "--seeds=0")
    cells = {r.tags["setting"]: tuple(s.train_examples for s in _config(r).sources)
             for r in _trained(runs)}
    assert cells["c1000_u400"] == (800, 320) and cells["c100_u0"] == (80,)
    assert len(cells) == 16


# --------------------------------------------------------------------------- dropout spec


def test_dropout_spec_parsing():
    spec = DropoutSpec.parse("0.1,acce=0.2,acce:unet=0.4")
    assert spec.rate("acce", "unet") == 0.4  # most specific wins
    assert spec.rate("acce", "swin_unet") == 0.2
    assert spec.rate("marginal", "unet") == 0.1
    one = DropoutSpec.parse("0.3")
    assert {one.rate(lo, a) for lo in X.LOSSES for a in X.ARCHS} == {0.3}
    paper = DropoutSpec.parse("acce:unet=0.4,acce:attention_unet=0.8,acce:swin_unet=0.3")
    assert [paper.rate("acce", a) for a in ("unet", "attention_unet", "swin_unet")] == [0.4, 0.8, 0.3]
    assert paper.rate("abce", "unet") == 0.0  # unlisted: no dropout
    assert DropoutSpec.parse(str(spec)) == spec and str(DropoutSpec.parse("")) == "0"


@pytest.mark.parametrize("text,message", [
    ("dice=0.2", "unknown loss 'dice'"),
    ("acce:vit=0.2", "unknown architecture 'vit'"),
    ("acce=1.5", r"\[0, 1\]"),
    ("acce=x", "must be a number"),
    ("acce", "must be a number"),
    ("acce=0.1,acce=0.2", "a second time"),
])
def test_dropout_spec_bad_input(text, message):
    with pytest.raises(ValueError, match=message):
        DropoutSpec.parse(text)
    with pytest.raises(SystemExit):  # the flag fails when the command starts
        X.parse(load_experiment("exp4_all_datasets"), [f"--dropout={text}"])


def test_exp4_dropout_flag_overrides_the_preset(tmp_path):
    _, runs = _runs("exp4_all_datasets", tmp_path, "--dropout=marginal=0.5", "--seeds=0")
    rates = {(_config(r).model.name, _config(r).loss.name): _config(r).loss.dropout_rate
             for r in _trained(runs)}
    assert rates[("unet", "marginal")] == 0.5 and rates[("unet", "acce")] == 0.0


# --------------------------------------------------------------------------- grid modes


def _cfg(loss="acce", seed=0, dropout=0.0, arch="unet"):
    return Config(sources=(Source("synthetic_echo/camus_like_64", alias="camus"),),
                  resolution=64, model=ModelConfig(name=arch, size="tiny"),
                  loss=LossConfig(name=loss, dropout_rate=dropout,
                                  dropout_classes=("la",) if dropout else ()),
                  seed=seed, epochs=1)


def _paper(tmp_path, grid):
    return options_lib.options_from_args("e", options_lib.build_parser("").parse_args(
        ["--preset=paper", f"--workdir={tmp_path}", f"--grid={grid}"]))


def test_grid_modes_group_runs(tmp_path):
    runs = [X.Run(f"unet/acce/d{d:g}/s{s}", _cfg(seed=s, dropout=d)) for d in (0.0, 0.4)
            for s in (0, 1)]
    runs += X.pseudo_label_runs(_cfg("cce"), ("la",), teacher_name="unet/pseudo_teacher/s0",
                                student_name="unet/pseudo_label/s0", tags={})
    tuned = X.with_grid_search(runs, _paper(tmp_path, "per_model"))
    X.check_runs(tuned)
    grids = collections.Counter(r.name.rsplit("/", 1)[0] for r in tuned
                                if r.name.startswith("grid/"))
    # One 3 x 3 grid per model: seeds share; the pseudo-label pair shares one (CCE on
    # the partial mixture), tuned on the config it starts from.
    assert grids == {"grid/unet/acce/d0": 9, "grid/unet/acce/d0.4": 9,
                     "grid/unet/pseudo_teacher": 9}
    by_name = {r.name: r for r in tuned}
    assert by_name["unet/acce/d0.4/s1"].grid == "grid/unet/acce/d0.4"
    assert by_name["unet/pseudo_label/s0"].grid == "grid/unet/pseudo_teacher"
    grid_run = by_name["grid/unet/acce/d0.4/lr0.1_bs8"]
    assert (grid_run.config.loss.dropout_rate, grid_run.config.optim.lr,
            grid_run.config.batch_size) == (0.4, 0.1, 8)
    assert by_name["grid/unet/pseudo_teacher/lr0.01_bs16"].config.loss.name == "cce"
    # The student still needs its teacher, then is re-tuned.
    assert "unet/pseudo_teacher/s0" in by_name["unet/pseudo_label/s0"].needs
    shared = X.with_grid_search(runs, _paper(tmp_path, "shared"))
    grids = collections.Counter(r.name.rsplit("/", 1)[0] for r in shared
                                if r.name.startswith("grid/"))
    assert grids == {"grid/unet_acce": 9, "grid/unet_cce": 9}


def test_grid_modes_in_help():
    text = " ".join(options_lib.build_parser("").format_help().split())
    assert "--grid {per_model,shared}" in text
    # The costs --help states are the counted ones.
    for name, (_, per_model, shared) in _COUNTS.items():
        assert options_lib.PAPER_GRID_RUNS[name] == {"per_model": per_model, "shared": shared}
        assert f"{name} {per_model} / {shared}" in text
    with pytest.raises(SystemExit):
        options_lib.build_parser("").parse_args(["--grid=per_seed"])


# --------------------------------------------------------------------------- dry run


def test_describe_fields(tmp_path):
    source = Source("synthetic_echo/unity_like_64", alias="unity", train_examples=40,
                    removals=(Removal(("la",), 1.0),))
    cfg = Config(sources=(source,), resolution=64, model=ModelConfig(name="unet", size="tiny"),
                 loss=LossConfig(name="acce", dropout_rate=0.3, dropout_classes=("la",)),
                 seed=2, epochs=7, batch_size=4)
    plain = describe(X.Run("unet/acce/s2", cfg, tags={"setting": "mix"}))
    assert plain == {
        "name": "unet/acce/s2", "setting": "mix", "method": "acce", "architecture": "unet",
        "model_size": "tiny", "impl": cfg.model.impl, "compute_dtype": "float32", "loss": "acce",
        "label_dropout": {"rate": 0.3, "classes": ["la"]}, "seed": 2, "data_seed": 2,
        "resolution": 64,
        "sources": [{"name": "synthetic_echo/unity_like_64", "alias": "unity",
                     "train_examples": 40, "removals": [{"classes": ["la"], "fraction": 1.0}],
                     "split": "official", "frames": "all"}],
        "lr": cfg.optim.lr, "batch_size": 4, "epochs": 7}
    tuned = X.with_grid_search([X.Run("unet/acce/s2", cfg)], _paper(tmp_path, "per_model"))[-1]
    d = describe(tuned, adjust=lambda c: c)
    assert (d["lr"], d["batch_size"], d["grid"], d["epochs"]) == ("grid", "grid", "grid/unet/acce", 7)

    def not_prepared(c):
        raise X.DataNotPrepared("x")

    assert describe(X.Run("r", cfg), adjust=not_prepared)["epochs"] is None


def test_dry_run_prints_one_json_object_per_run(tmp_path, capsys):
    exp = load_experiment("exp4_all_datasets")
    assert X.main(exp, ["--preset=paper", f"--workdir={tmp_path}", "--dry_run"]) == 0
    out = capsys.readouterr().out.splitlines()
    rows = [json.loads(x) for x in out if x.startswith("{")]
    assert len(rows) == sum(_COUNTS["exp4_all_datasets"][:2])
    first = next(r for r in rows if r["name"] == "balanced/attention_unet/acce/s3")
    assert first["label_dropout"] == {"rate": 0.8, "classes": ["lvm", "la"]}
    assert (first["lr"], first["batch_size"], first["epochs"], first["seed"]) == (
        "grid", "grid", 500, 3)
    assert [(s["alias"], s["train_examples"]) for s in first["sources"]] == [
        ("camus", "all"), ("unity", "all"), ("echonet", 1120)]
    assert not os.listdir(tmp_path)  # a dry run writes nothing


def test_compute_dtype_flag_reaches_every_run(tmp_path, capsys):
    exp = load_experiment("exp2_intra_domain")
    for flag, want in (([], "float32"), (["--compute_dtype=bfloat16"], "bfloat16")):
        assert X.main(exp, [f"--workdir={tmp_path}", "--dry_run", *flag]) == 0
        rows = [json.loads(x) for x in capsys.readouterr().out.splitlines() if x.startswith("{")]
        assert rows and {r["compute_dtype"] for r in rows} == {want}
    with pytest.raises(SystemExit):
        X.parse(exp, ["--compute_dtype=float16"])
    assert "invalid choice: 'float16'" in capsys.readouterr().err
