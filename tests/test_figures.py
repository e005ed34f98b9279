"""Figures of echojax.figures drawn from tiny hand-made result and per-image rows."""

import math
import os

import numpy as np
import pytest
from PIL import Image

from echojax import figures


def _row(run, method, seed, structure, mean, *, dropout=0.0, median=None, test_source="unity"):
    return {"experiment": "x", "run": run, "setting": "s", "method": method, "arch": "unet",
            "loss": method, "dropout": dropout, "seed": seed, "train_sizes": "camus=all",
            "test_source": test_source, "structure": structure, "n_images": 5, "dice_mean": mean,
            "dice_median": mean if median is None else median, "dice_std": 0.1, "ef_mae": math.nan,
            "ef_n": 0}


def _rows():
    rows = []
    for method, base in (("acce", 0.4), ("abce", 0.6)):
        for d in (0.0, 0.5):
            for seed in (0, 1):
                for s in ("lv", "lvm", "la"):
                    rows.append(_row(f"{method}{d}{seed}", method, seed, s, base + d / 4 + seed / 20,
                                     dropout=d))
    rows += [_row("bench", "benchmark", 0, s, 0.9) for s in ("lv", "lvm", "la")]  # one run: no std
    return rows


def _images():
    rng = np.random.default_rng(0)
    return [{"method": m, "source": "unity", "index": i, "dice_lv": rng.uniform(0.7, 1.0),
             "dice_lvm": rng.uniform(0.3, 0.9), "dice_la": math.nan if i % 3 == 0 else rng.uniform(0, 1)}
            for m in ("acce", "abce") for i in range(9)]


def _check_png(path, min_size=(200, 150)):
    with Image.open(path) as im:
        assert im.format == "PNG"
        assert im.size[0] >= min_size[0] and im.size[1] >= min_size[1]
        assert np.asarray(im.convert("L")).std() > 5  # something is drawn


def test_every_figure_writes_a_png_and_nothing_else(tmp_path):
    rows, images = _rows(), _images()
    figures.plot_boxes(images, tmp_path / "fig3.png", order=("acce", "abce"), title="t")
    figures.plot_boxes(images, tmp_path / "fig7a.png", structures=("la",), overall=False)
    figures.plot_mean_std(rows, tmp_path / "fig4a.png", test_source="unity")
    figures.plot_figure5(rows, _run_images(), tmp_path / "fig5.png", test_source="unity",
                         order=("acce", "abce"))
    figures.plot_dropout_curve([r for r in rows if r["method"] != "benchmark"], tmp_path / "fig6.png",
                               test_source="unity", references={"benchmark": 0.9, "none": math.nan})
    names = ["fig3.png", "fig4a.png", "fig5.png", "fig6.png", "fig7a.png"]
    assert sorted(os.listdir(tmp_path)) == names  # no temporary file left behind
    for name in names:
        _check_png(tmp_path / name)


def test_box_plot_has_an_overall_mean_panel(tmp_path):
    # One panel per structure plus the overall mean: the figure is about 4/3 as wide
    # as the one without it.
    figures.plot_boxes(_images(), tmp_path / "a.png")
    figures.plot_boxes(_images(), tmp_path / "b.png", overall=False)
    with Image.open(tmp_path / "a.png") as a, Image.open(tmp_path / "b.png") as b:
        assert a.size[0] / b.size[0] == pytest.approx(4 / 3, rel=0.1)


def _run_images(seeds=(0, 1)):
    """Per-image rows of runs ``<method>_s<seed>``, LA Dice that differ by seed."""
    rng = np.random.default_rng(1)
    return [{"method": m, "run": f"{m}_s{seed}", "seed": seed, "arch": "unet", "source": src,
             "index": i, "dice_lv": 0.9, "dice_lvm": 0.7,
             "dice_la": math.nan if i == 0 else float(rng.uniform(0.1, 0.5) + 0.4 * seed)}
            for m in ("acce", "abce", "benchmark") for seed in seeds for src in ("unity", "camus")
            for i in range(8)]


def _capture(monkeypatch):
    """The figures drawn, kept open instead of saved."""
    drawn = []
    monkeypatch.setattr(figures, "save_figure", lambda fig, path: drawn.append(fig))
    return drawn


def _box_means(ax):
    """The y of each mean marker (white diamond) of a box plot, left to right."""
    return [float(line.get_ydata()[0]) for line in ax.get_lines() if line.get_marker() == "D"]


def test_figure5_boxes_show_one_run_per_method(monkeypatch, tmp_path):
    drawn = _capture(monkeypatch)
    rows = [r for r in _rows() if r["dropout"] == 0.0]  # acce, abce: 2 seeds; benchmark: 1
    images = _run_images()
    info = figures.plot_figure5(rows, images, tmp_path / "f.png", test_source="unity", seed=1,
                                order=("acce", "abce", "benchmark"))
    (fig,) = drawn
    box = fig.axes[0]
    # Each box is the chosen run's per-image LA Dice on Unity, not both seeds pooled.
    want = [np.mean([i["dice_la"] for i in images if i["method"] == m and i["seed"] == 1
                     and i["source"] == "unity" and not math.isnan(i["dice_la"])])
            for m in ("acce", "abce", "benchmark")]
    np.testing.assert_allclose(_box_means(box), want)
    assert info["runs"] == {m: (f"{m}_s1", 1) for m in ("acce", "abce", "benchmark")}
    assert "seed 1" in box.get_title()
    # Several runs per method here: the across-runs panels are drawn.
    assert info["across_runs"] and len(fig.axes) == 3
    assert "std across runs" in fig.axes[1].get_title()
    # A method without the asked seed shows its lowest: named on its label.
    images = [i for i in images if not (i["method"] == "benchmark" and i["seed"] == 1)]
    info = figures.plot_figure5(rows, images, tmp_path / "g.png", test_source="unity", seed=1)
    assert info["runs"]["benchmark"] == ("benchmark_s0", 0)
    labels = [t.get_text() for t in drawn[1].axes[0].get_xticklabels()]
    assert "benchmark (seed 0)" in labels and "acce (seed 1)" in labels


def test_one_run_per_cell_leaves_the_across_runs_panels_out(monkeypatch, tmp_path):
    drawn = _capture(monkeypatch)
    rows = [r for r in _rows() if r["seed"] == 0]
    info = figures.plot_figure5([r for r in rows if r["dropout"] == 0.0], _run_images(seeds=(0,)),
                                tmp_path / "f5.png", test_source="unity")
    assert not info["across_runs"]
    assert len(drawn[0].axes) == 1  # the box plots alone: no std across runs, no "1 run" bars
    assert figures.plot_dropout_curve([r for r in rows if r["method"] != "benchmark"],
                                      tmp_path / "f6.png", test_source="unity") is False
    (ax,) = drawn[1].axes  # no empty std panel
    assert "one run" in ax.get_title()
    # Two seeds: panel (b) is back.
    assert figures.plot_dropout_curve([r for r in _rows() if r["method"] != "benchmark"],
                                      tmp_path / "f6b.png", test_source="unity") is True
    assert [a.get_title() for a in drawn[2].axes][1] == "(b) std across runs"


def test_one_run_per_group_picks_the_seed_else_the_lowest():
    images = _run_images(seeds=(2, 5))
    got = figures.one_run_per_group(images, seed=5)
    assert {m: {(r["run"], r["seed"]) for r in rs} for m, rs in got.items()} == {
        m: {(f"{m}_s5", 5)} for m in ("acce", "abce", "benchmark")}
    assert {r["seed"] for rs in figures.one_run_per_group(images, seed=7).values() for r in rs} == {2}
