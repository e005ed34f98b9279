"""Tables, statistics and figures of echojax.report on small hand-made results."""

import json
import math
import os

import numpy as np
import pytest
from scipy import stats

from echojax import figures, files, report


def _row(run, *, setting="s", method="cce", arch="unet", loss="cce", dropout=0.0, seed=0,
         train_sizes="camus=all", test_source="camus", structure="lv", n=10, mean=math.nan,
         median=math.nan, std=0.1, ef_mae=math.nan, ef_n=0):
    return {"experiment": "exp", "run": run, "setting": setting, "method": method, "arch": arch,
            "loss": loss, "dropout": dropout, "seed": seed, "train_sizes": train_sizes,
            "test_source": test_source, "structure": structure, "n_images": n,
            "dice_mean": mean, "dice_median": median, "dice_std": std, "ef_mae": ef_mae, "ef_n": ef_n}


def test_describe_leaves_out_nan():
    d = report.describe([0.5, math.nan, 0.7, 0.9])
    assert d["n"] == 3
    assert d["mean"] == pytest.approx(0.7)
    assert d["median"] == pytest.approx(0.7)
    assert d["std"] == pytest.approx(math.sqrt(0.08 / 3))  # population std over images
    assert report.describe([math.nan])["n"] == 0 and math.isnan(report.describe([])["mean"])


def test_mean_std_and_format():
    m, s, n = report.mean_std([0.8, math.nan, 0.6])
    assert (m, n) == (pytest.approx(0.7), 2)
    assert s == pytest.approx(math.sqrt(0.02))  # sample std, ddof=1
    assert report.fmt(m, s) == "0.700 ± 0.141"
    m1, s1, _ = report.mean_std([0.25])
    assert report.fmt(m1, s1) == "0.250"
    assert report.fmt(math.nan) == "–"


def test_pooled_over_sources_weights_by_count():
    rows = [_row("r", n=10, mean=0.9), _row("r", n=30, mean=0.5), _row("r", n=0, mean=math.nan)]
    assert report.pooled_over_sources(rows) == pytest.approx((9 + 15) / 40)
    assert math.isnan(report.pooled_over_sources([_row("r", n=0)]))


def test_summarize_images_per_source_and_structure():
    imgs = [
        {"source": "synthetic_echo/camus_like", "dice_lv": 0.9, "dice_lvm": 0.5, "dice_la": math.nan},
        {"source": "synthetic_echo/camus_like", "dice_lv": 0.7, "dice_lvm": 0.7, "dice_la": 0.4},
        {"source": "synthetic_echo/unity_like", "dice_lv": 0.2, "dice_lvm": 0.1, "dice_la": 0.0},
    ]
    out = report.summarize_images(imgs, source_alias=lambda s: s.split("/")[1].removesuffix("_like"))
    assert out[("camus", "lv")]["mean"] == pytest.approx(0.8)
    assert out[("camus", "la")] == {"n": 1, "mean": 0.4, "median": 0.4, "std": 0.0}
    assert out[("unity", "lvm")]["n"] == 1
    assert set(out) == {(s, c) for s in ("camus", "unity") for c in ("lv", "lvm", "la")}


def test_domain_shift_table_hand_computed():
    rows = []
    # camus-trained: 2 seeds; in-domain 0.9 / 0.8, on unity 0.6 / 0.5.
    for seed, (cc, cu) in enumerate([(0.9, 0.6), (0.8, 0.5)]):
        run = f"camus-{seed}"
        rows += [_row(run, setting="camus", seed=seed, test_source="camus", mean=cc),
                 _row(run, setting="camus", seed=seed, test_source="unity", mean=cu)]
    rows += [_row("unity-0", setting="unity", test_source="camus", mean=0.4),
             _row("unity-0", setting="unity", test_source="unity", mean=0.7),
             _row("unity-0", setting="unity", test_source="unity", structure="la", mean=0.1)]
    table = report.domain_shift_table(rows, order=("camus", "unity"))
    lines = table.strip().splitlines()
    assert lines[0] == "| train \\ test (LV Dice) | camus | unity | in-domain minus cross-domain |"
    # camus: mean 0.85 ± std(0.9, 0.8)=0.0707; on unity 0.55 ± 0.0707; drop 0.30.
    assert lines[2] == "| camus | 0.850 ± 0.071 | 0.550 ± 0.071 | 0.300 |"
    assert lines[3] == "| unity | 0.400 | 0.700 | 0.300 |"
    drops = report.cross_domain_drops(rows)
    assert drops == {("camus", "unity"): pytest.approx(0.3), ("unity", "camus"): pytest.approx(0.3)}


def test_structure_ef_table_pools_sources_and_seeds():
    rows = []
    # One run (seed 0): camus 10 images, echonet 30 images.
    for src, n, dice, ef, ef_n in [("camus", 10, (0.9, 0.8, 0.7), 4.0, 5),
                                   ("echonet", 30, (0.5, 0.4, 0.3), 8.0, 15)]:
        for s, d in zip(("lv", "lvm", "la"), dice):
            rows.append(_row("a", setting="full", method="acce", test_source=src, structure=s,
                             n=n, mean=d, ef_mae=ef, ef_n=ef_n))
    table = report.structure_ef_table(rows)
    body = table.strip().splitlines()[2]
    # LV: (10*0.9 + 30*0.5)/40 = 0.6; LVM 0.5; LA 0.4; overall 0.5; EF (5*4+15*8)/20 = 7.
    assert body == "| full | unet | acce | 0.600 | 0.500 | 0.400 | 0.500 | 7.00 |"


def test_structure_table_single_source_and_order():
    rows = [_row("r1", method="marginal", test_source="unity", structure="la", mean=0.6),
            _row("r2", method="marginal", seed=1, test_source="unity", structure="la", mean=0.8),
            _row("r3", method="cce", test_source="unity", structure="la", mean=0.1),
            _row("r3", method="cce", test_source="camus", structure="la", mean=0.9)]
    table = report.structure_table(rows, group=("method",), test_source="unity",
                                   structures=("la",), order=("cce", "marginal"))
    assert table.strip().splitlines()[2:] == ["| cce | 0.100 |", "| marginal | 0.700 ± 0.141 |"]


def test_dropout_table_columns_are_rates():
    # The table shows each run's median (Figure 6); the means (0.0) must not count.
    rows = [_row(f"r{d}{s}", method="acce", dropout=d, seed=s, test_source="unity", structure="la",
                 mean=0.0, median=m) for d, s, m in [(0.0, 0, 0.2), (0.0, 1, 0.4), (0.5, 0, 0.7)]]
    table = report.dropout_table(rows, test_source="unity", group=("method",))
    lines = table.strip().splitlines()
    assert lines[0] == "| method | 0 | 0.5 |"
    assert lines[2] == "| acce | 0.300 ± 0.141 | 0.700 |"


def _ratio_rows():
    rows = []
    for (nc, nu, seed, med) in [(100, 0, 0, 0.1), (100, 0, 1, 0.3), (1000, 0, 0, 0.5), (100, 200, 0, 0.6)]:
        sizes = f"camus={nc}" + (f";unity={nu}" if nu else "")
        rows.append(_row(f"c{nc}u{nu}s{seed}", seed=seed, train_sizes=sizes, test_source="unity",
                         structure="la", mean=0.0, median=med))
    return rows


def test_data_ratio_table_uses_median_and_sizes():
    lines = report.data_ratio_table(_ratio_rows(), row_source="camus",
                                    col_source="unity").strip().splitlines()
    assert lines[0] == "| camus \\ unity | 0 | 200 |"
    assert lines[2] == "| 100 | 0.200 ± 0.141 | 0.600 |"  # numeric order, not text order
    assert lines[3] == "| 1000 | 0.500 | – |"


def test_data_ratio_table_default_orientation_unity_rows_with_loss_blocks():
    rows = _ratio_rows() + [{**r, "method": "abce", "run": r["run"] + "b", "dice_median": 0.9}
                            for r in _ratio_rows()[:1]]
    lines = report.data_ratio_table(rows, group=("method",), order=("cce", "abce")).strip().splitlines()
    assert lines[0] == "| method | unity \\ camus | 100 | 1000 |"
    assert lines[2:] == ["| cce | 0 | 0.200 ± 0.141 | 0.500 |", "| cce | 200 | 0.600 | – |",
                         "| abce | 0 | 0.900 | – |"]


def test_holm_hand_computed():
    assert report.holm([0.01, 0.04, 0.03, math.nan]) == pytest.approx([0.03, 0.06, 0.06, math.nan],
                                                                         nan_ok=True)


def _images(method, seed, dice_lv, dice_la, arch="unet"):
    return [{"setting": "full", "arch": arch, "method": method, "seed": seed, "source": "camus",
             "index": i, "patient_id": f"p{i}", "view": "4CH", "phase": "ED", "dice_lv": lv,
             "dice_lvm": 0.5, "dice_la": la} for i, (lv, la) in enumerate(zip(dice_lv, dice_la))]


def test_wilcoxon_matches_direct_scipy_call():
    rng = np.random.default_rng(0)
    n = 20
    a0, a1 = rng.uniform(0.6, 0.9, n), rng.uniform(0.6, 0.9, n)
    b0 = rng.uniform(0.5, 0.8, n)
    la = np.full(n, 0.5)
    la_nan = la.copy()
    la_nan[3] = math.nan  # structure absent from image 3: that pair is dropped
    per_image = (_images("acce", 0, a0, la_nan) + _images("acce", 1, a1, la) + _images("cce", 0, b0, la + 0.1)
                 + _images("other", 0, b0, la, arch="swin"))
    tests = report.wilcoxon_tests(per_image, methods=["acce", "cce"], structures=("lv", "la"))
    lv = next(t for t in tests if t["structure"] == "lv")
    direct = stats.wilcoxon((a0 + a1) / 2, b0)  # seeds averaged per image, then paired
    assert lv["n_pairs"] == n
    assert lv["statistic"] == pytest.approx(direct.statistic)
    assert lv["p"] == pytest.approx(direct.pvalue)
    la_test = next(t for t in tests if t["structure"] == "la")
    assert la_test["n_pairs"] == n - 1
    assert la_test["median_diff"] == pytest.approx(-0.1)
    assert [t["p_holm"] for t in tests] == pytest.approx(report.holm([t["p"] for t in tests]))
    assert "LV | acce vs cce | 20" in report.wilcoxon_table(tests)


def test_wilcoxon_all_zero_differences_gives_nan():
    same = np.linspace(0.5, 0.9, 8)
    per_image = _images("a", 0, same, same) + _images("b", 0, same, same)
    (t,) = report.wilcoxon_tests(per_image, methods=["a", "b"], structures=("lv",))
    assert t["n_pairs"] == 8 and t["n_nonzero"] == 0 and math.isnan(t["p"])
    assert "| – | –" in report.wilcoxon_table([t])


def test_results_csv_round_trip_and_bad_columns(tmp_path):
    rows = [_row("r", mean=0.75, median=0.8, ef_mae=3.5, ef_n=4, dropout=0.3, seed=2)]
    path = tmp_path / "results.csv"
    files.write_csv(path, rows, report.RESULT_COLUMNS)
    back = report.read_results(path)
    assert back[0]["dice_mean"] == 0.75 and back[0]["seed"] == 2 and back[0]["dropout"] == 0.3
    assert back[0]["dice_std"] == 0.1 and back[0]["ef_n"] == 4 and back[0]["ef_mae"] == 3.5
    assert os.listdir(tmp_path) == ["results.csv"]  # no temporary file left behind
    (tmp_path / "bad.csv").write_text("experiment,run\nx,y\n")
    with pytest.raises(ValueError, match="missing columns"):
        report.read_results(tmp_path / "bad.csv")
    with pytest.raises(ValueError, match="lacks columns"):
        files.write_csv(tmp_path / "x.csv", [{"run": "r"}], report.RESULT_COLUMNS)


def test_read_per_image_parses_nan(tmp_path):
    p = tmp_path / "per_image.csv"
    p.write_text("source,index,patient_id,view,phase,dice_lv,dice_lvm,dice_la\n"
                 "camus,0,p1,2CH,ED,0.9,nan,\ncamus,7,p2,4CH,ES,0.8,0.7,0.6\n")
    rows = report.read_per_image(p)
    assert rows[0]["dice_lv"] == 0.9 and math.isnan(rows[0]["dice_lvm"]) and math.isnan(rows[0]["dice_la"])
    assert rows[1]["index"] == 7 and report.image_key(rows[1]) == ("camus", 7)
    p.write_text("source,index,patient_id,view,phase,dice_lv\ncamus,0,p1,2CH,ED,0.9\n")
    with pytest.raises(ValueError, match="dice_lvm"):
        report.read_per_image(p)
    p.write_text("source,patient_id,view,phase,dice_lv,dice_lvm,dice_la\ncamus,p1,2CH,ED,1,1,1\n")
    with pytest.raises(ValueError, match="index"):
        report.read_per_image(p)
    p.write_text("source,index,patient_id,view,phase,dice_lv,dice_lvm,dice_la\ncamus,x,p,2CH,ED,1,1,1\n")
    with pytest.raises(ValueError, match=r"per_image.csv:2 column index.*'x'"):
        report.read_per_image(p)


def test_markdown_and_sizes_bad_input():
    with pytest.raises(ValueError, match="2 cells"):
        report.markdown_table(["a", "b", "c"], [["1", "2"]])
    assert report.parse_sizes("camus=100; unity=all") == {"camus": "100", "unity": "all"}
    with pytest.raises(ValueError, match="alias=count"):
        report.parse_sizes("camus100")


def test_figures_are_written_atomically(tmp_path):
    rows = [_row(f"r{d}", method="acce", dropout=d, test_source="unity", structure=s, mean=0.5 + d / 4)
            for d in (0.0, 0.5, 1.0) for s in ("lv", "lvm", "la")]
    figures.plot_dropout_curve(rows, tmp_path / "f6.png", test_source="unity",
                              references={"benchmark": 0.9, "none": math.nan})
    figures.plot_mean_std(rows, tmp_path / "f4.png")
    img = np.zeros((8, 8), np.uint8)
    lab = np.zeros((8, 8), int)
    lab[2:5, 2:5] = 1
    figures.plot_overlays([{"image": img, "label": lab, "predictions": {"acce": lab}}], tmp_path / "ov.png",
                         methods=["acce"])
    for name in ("f6.png", "f4.png", "ov.png"):
        assert (tmp_path / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert sorted(os.listdir(tmp_path)) == ["f4.png", "f6.png", "ov.png"]
    with pytest.raises(ValueError, match="no prediction for 'cce'"):
        figures.plot_overlays([{"image": img, "label": lab, "predictions": {"acce": lab}}],
                             tmp_path / "x.png", methods=["cce"])
    with pytest.raises(ValueError, match="ints 0..3"):
        figures.plot_overlays([{"image": img, "label": lab + 5, "predictions": {}}], tmp_path / "x.png",
                             methods=[])


# ------------------------------------------------ statistics added for the paper preset


def _dropout_runs(cells, *, method="acce", arch="unet"):
    """cells: [(rate, seed, per-run mean, per-run median)] -> LA-on-Unity result rows."""
    return [_row(f"{arch}/{method}/d{d}/s{seed}", method=method, arch=arch, dropout=d, seed=seed,
                 test_source="unity", structure="la", mean=m, median=med)
            for d, seed, m, med in cells]


def test_best_dropout_rate_is_chosen_on_mean_of_per_run_medians():
    # Rate 0: medians 0.5, 0.7 (mean 0.6) but per-run means 0.8, 0.8.
    # Rate 0.5: medians 0.7, 0.7 (mean 0.7) but per-run means 0.6, 0.6.
    rows = _dropout_runs([(0.0, 0, 0.8, 0.5), (0.0, 1, 0.8, 0.7), (0.5, 0, 0.6, 0.7), (0.5, 1, 0.6, 0.7)])
    rows += [_row("other", method="acce", dropout=0.0, test_source="camus", structure="la", median=1.0),
             _row("other2", method="acce", dropout=0.0, test_source="unity", structure="lv", median=1.0)]
    best = report.best_dropout_rates(rows)
    assert list(best) == [("unet", "acce")]
    assert best[("unet", "acce")]["rate"] == 0.5
    assert best[("unet", "acce")]["mean"] == pytest.approx(0.7)
    assert best[("unet", "acce")]["std"] == pytest.approx(0.0) and best[("unet", "acce")]["n"] == 2
    # The per-run-mean statistic (the old choice) would pick rate 0.
    assert report.best_dropout_rates(rows, statistic="dice_mean")[("unet", "acce")]["rate"] == 0.0


def test_best_dropout_rate_ties_go_to_the_lowest_rate_and_nan_is_skipped():
    rows = _dropout_runs([(0.6, 0, 0.0, 0.4), (0.2, 0, 0.0, 0.4), (0.9, 0, 0.0, math.nan)])
    rows += _dropout_runs([(0.0, 0, 0.0, 0.3), (1.0, 0, 0.0, 0.9)], method="abce")
    best = report.best_dropout_rates(rows)
    assert best[("unet", "acce")]["rate"] == 0.2
    assert best[("unet", "abce")]["rate"] == 1.0 and math.isnan(best[("unet", "abce")]["std"])


def test_across_runs_is_the_spread_between_runs_not_between_images():
    # Run a: camus 10 images mean 0.9, unity 30 images mean 0.5 -> pooled 0.6.
    # Run b: pooled 0.8. Across runs: mean 0.7, std sqrt(0.02). dice_std (over images,
    # 0.1 in every row) must not enter.
    rows = [_row("a", test_source="camus", n=10, mean=0.9), _row("a", test_source="unity", n=30, mean=0.5),
            _row("b", seed=1, test_source="camus", n=10, mean=0.8),
            _row("c", method="abce", test_source="camus", n=10, mean=0.3)]
    cells = report.across_runs(rows, structure="lv")
    assert cells[("cce",)] == (pytest.approx(0.7), pytest.approx(math.sqrt(0.02)), 2)
    m, sd, n = cells[("abce",)]
    assert (m, n) == (pytest.approx(0.3), 1) and math.isnan(sd)
    camus = report.across_runs(rows, structure="lv", test_source="camus")
    assert camus[("cce",)][:2] == (pytest.approx(0.85), pytest.approx(math.sqrt(0.005)))


def _frames(method, values, *, patient="u1"):
    # Frames of one Unity video: same patient and view, phase "unknown", distinct indices.
    return [{"setting": "s", "arch": "unet", "method": method, "seed": 0, "source": "unity",
             "index": i, "patient_id": patient, "view": "4CH", "phase": "unknown",
             "dice_lv": 0.9, "dice_lvm": v, "dice_la": math.nan} for i, v in enumerate(values)]


def test_pairing_keeps_frames_of_one_video_apart():
    a = [0.90, 0.80, 0.70, 0.60, 0.50, 0.40]
    b = [0.89, 0.78, 0.67, 0.56, 0.45, 0.34]  # a - b = 0.01 .. 0.06, all distinct
    got_a, got_b = report.paired_dice(_frames("abce", a) + _frames("acce", b), method_a="abce",
                                      method_b="acce", structure="lvm")
    assert got_a == pytest.approx(a) and got_b == pytest.approx(b)  # six pairs, not one


def test_paper_wilcoxon_is_two_sided_at_005_hand_computed():
    # Six positive, distinct differences: the exact two-sided p is 2 / 2**6 = 0.03125
    # (one-sided 1/64); five give 2 / 2**5 = 0.0625, not significant at 0.05.
    a6, b6 = [0.90, 0.80, 0.70, 0.60, 0.50, 0.40], [0.89, 0.78, 0.67, 0.56, 0.45, 0.34]
    imgs = _frames("abce", a6) + _frames("acce", b6) + _frames("marginal", a6[:5])
    tests = report.paper_wilcoxon_tests(imgs)
    assert [(t["method_a"], t["method_b"]) for t in tests] == [("marginal", "abce"), ("abce", "acce")]
    ma, aa = tests
    assert aa["alternative"] == "two-sided" and aa["n_pairs"] == 6
    assert aa["p"] == pytest.approx(2 / 64) and aa["significant"]
    assert aa["median_diff"] == pytest.approx(0.035)
    assert ma["n_pairs"] == 5 and ma["n_nonzero"] == 0 and math.isnan(ma["p"]) and not ma["significant"]
    one = report.wilcoxon_pair(imgs, method_a="abce", method_b="acce", structure="lvm",
                               alternative="greater")
    assert one["p"] == pytest.approx(1 / 64)
    five = report.paper_wilcoxon_tests(_frames("abce", a6[:5]) + _frames("acce", b6[:5]),
                                       pairs=(("abce", "acce"),))
    assert five[0]["p"] == pytest.approx(2 / 32) and not five[0]["significant"]
    table = report.paper_wilcoxon_table(tests)
    assert "| LVM | abce vs acce | 6 | 0.650 | 0.615 | 0.035 | 0.031 | significant, abce higher |" in table
    assert "not testable" in table
    with pytest.raises(ValueError, match="alternative"):
        report.wilcoxon_pair(imgs, method_a="abce", method_b="acce", structure="lvm", alternative="up")


def test_paper_wilcoxon_leaves_out_missing_methods():
    imgs = _frames("abce", [0.5, 0.6]) + _frames("acce", [0.4, 0.5])
    assert [(t["method_a"], t["method_b"]) for t in report.paper_wilcoxon_tests(imgs)] == [("abce", "acce")]


def test_image_mean_over_defined_structures():
    assert report.image_mean({"dice_lv": 0.9, "dice_lvm": math.nan, "dice_la": 0.5}) == pytest.approx(0.7)
    assert math.isnan(report.image_mean({"dice_lv": math.nan, "dice_lvm": math.nan, "dice_la": math.nan}))


def test_run_timing_and_epoch_time_table(tmp_path):
    def run(name, seconds, epochs):
        d = tmp_path / name
        d.mkdir()
        (d / "config.json").write_text(f'{{"epochs": {epochs}, "model": {{"name": "unet"}}, '
                                       f'"loss": {{"name": "abce"}}, "batch_size": 8}}')
        if seconds is not None:
            (d / "run_time.json").write_text(f'{{"seconds": {seconds}}}')
        return d

    assert report.run_timing(run("unfinished", None, 4)) is None
    t = report.run_timing(run("a", 120.0, 4))
    assert t == {"seconds": 120.0, "epochs": 4, "seconds_per_epoch": 30.0, "arch": "unet",
                 "loss": "abce", "batch_size": 8, "measure": "run_time",
                 "first_step_seconds": pytest.approx(math.nan, nan_ok=True)}
    assert report.run_timings([(tmp_path / "a", {"setting": "x"}), (tmp_path / "unfinished", {})]) == [
        {**t, "setting": "x", "method": "abce"}]
    entries = [{"arch": "unet", "method": "acce", **t},
               {"arch": "unet", "method": "acce", **report.run_timing(run("b", 100.0, 2))},
               {"arch": "unet", "method": "abce", **report.run_timing(run("c", 40.0, 2))}]
    lines = report.epoch_time_table(entries, order=("acce", "abce")).strip().splitlines()
    # Old runs only: the fallback, named in the column. acce: 30 and 50 s per epoch ->
    # 40 ± sqrt(200) = 14.14.
    assert lines[0] == "| arch | method | s per epoch (train + eval, run_time.json) | runs |"
    assert lines[2:] == ["| unet | acce | 40.00 ± 14.14 | 2 |", "| unet | abce | 20.00 | 1 |"]
    with pytest.raises(ValueError, match="positive int 'epochs'"):
        report.run_timing(run("bad", 10.0, 0))


def _timed_run(tmp_path, name, epoch_rows, *, run_time=None, steps_per_epoch=5, epochs=None):
    """A run folder whose metrics.jsonl has ``epoch_rows`` ((seconds, timed steps,
    first step seconds or None) per epoch) between ordinary training and validation
    rows, as ``echojax.train`` writes them."""
    d = tmp_path / name
    d.mkdir()
    (d / "config.json").write_text(json.dumps({"epochs": epochs or len(epoch_rows),
                                               "model": {"name": "unet"},
                                               "loss": {"name": "acce"}, "batch_size": 4}))
    lines = []
    for e, (seconds, timed, first) in enumerate(epoch_rows, start=1):
        step = e * steps_per_epoch
        lines.append({"step": step - 1, "epoch": (step - 1) / steps_per_epoch, "train_loss": 1.0})
        row = {"step": step, "epoch": float(e), "train_loss": 1.0, "epoch_train_seconds": seconds,
               "epoch_timed_steps": timed}
        if first is not None:
            row["first_step_seconds"] = first
        lines += [row, {"step": step, "epoch": e, "validation/fg_dice": 0.5}]
    (d / "metrics.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines))
    if run_time is not None:
        (d / "run_time.json").write_text(json.dumps({"seconds": run_time}))
    return d


def test_run_timing_reads_the_training_time_of_metrics_jsonl(tmp_path):
    # 3 epochs of 5 steps: 4 + 5 + 5 = 14 timed steps in 2.8 s -> 0.2 s a step, 1.0 s an
    # epoch; run_time.json's 60 s (compilation, validation, test) is not used.
    d = _timed_run(tmp_path, "new", [(0.8, 4, 9.0), (1.0, 5, None), (1.0, 5, None)], run_time=60.0)
    t = report.run_timing(d)
    assert t["measure"] == "train" and t["epochs"] == 3
    assert t["seconds_per_epoch"] == pytest.approx(1.0)
    assert t["seconds"] == pytest.approx(2.8) and t["first_step_seconds"] == 9.0
    # Resumed: the second start's first step is left out too; the first start's is shown.
    d = _timed_run(tmp_path, "resumed", [(0.8, 4, 9.0), (1.6, 4, 7.0)])
    t = report.run_timing(d)
    assert t["seconds_per_epoch"] == pytest.approx(2.4 / 8 * 5) and t["first_step_seconds"] == 9.0
    # One step per epoch, one epoch: nothing timed beyond the first step -> run_time.json.
    d = _timed_run(tmp_path, "one_step", [(0.0, 0, 9.0)], run_time=12.0, steps_per_epoch=1)
    assert report.run_timing(d)["measure"] == "run_time"
    assert report.run_timing(_timed_run(tmp_path, "none", [(0.0, 0, 9.0)], steps_per_epoch=1)) is None


def test_epoch_time_table_names_its_measure_and_never_mixes_them(tmp_path):
    new = [{"arch": "unet", "method": "acce",
            **report.run_timing(_timed_run(tmp_path, f"n{i}", [(0.8 * k, 4, 9.0 + i), (k, 5, None)]))}
           for i, k in enumerate((1.0, 2.0))]
    lines = report.epoch_time_table(new).strip().splitlines()
    # Epoch times 1.0 and 2.0 s; first steps 9 and 10 s.
    assert lines[0] == ("| arch | method | s per epoch (training steps only) | "
                        "first step, s (compilation) | runs |")
    assert lines[2:] == ["| unet | acce | 1.50 ± 0.71 | 9.50 ± 0.71 | 2 |"]
    # A run from before the field: metrics.jsonl without it, run_time.json over 2 epochs.
    old_entry = {"arch": "unet", "method": "acce",
                 **report.run_timing(_timed_run(tmp_path, "old", [], run_time=40.0, epochs=2))}
    lines = report.epoch_time_table(new + [old_entry]).strip().splitlines()
    assert lines[0] == ("| arch | method | measured as | s per epoch | "
                        "first step, s (compilation) | runs |")
    assert sorted(lines[2:]) == sorted([
        "| unet | acce | s per epoch (training steps only) | 1.50 ± 0.71 | 9.50 ± 0.71 | 2 |",
        "| unet | acce | s per epoch (train + eval, run_time.json) | 20.00 | – | 1 |"])
