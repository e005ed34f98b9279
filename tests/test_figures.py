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
    figures.plot_method_bars(rows, tmp_path / "fig5.png", test_source="unity", order=("acce", "abce"))
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
