"""Figures in the paper's layouts (PNG), from the result rows of ``echojax.report``.

Figure 2 (training-set x test-source Dice matrix), Figure 3 (per-image Dice box plots),
Figure 4a (mean against std of Dice), Figure 6 (Dice against the label-dropout rate)
and Figures 4b/7b/8 (sample predictions as coloured overlays), after Islam et al.,
MELBA 2026. Every figure is written atomically (``echojax.files``).
"""

from __future__ import annotations

import itertools
import math
import os
from collections.abc import Mapping, Sequence

import matplotlib
import numpy as np

from echojax import files, labels, report

matplotlib.use("Agg")  # files only; never a window
import matplotlib.pyplot as plt  # noqa: E402  (after choosing the backend)


def save_figure(fig, path: str | os.PathLike) -> None:
    """Saves a matplotlib figure as PNG atomically and closes it."""
    try:
        with files.atomic_path(path, suffix=".png") as tmp:
            fig.savefig(tmp, dpi=120, bbox_inches="tight", format="png")
    finally:
        plt.close(fig)


def plot_domain_matrix(rows: Sequence[Mapping], path, *, structure: str = "lv",
                       order: Sequence[str] = ()) -> None:
    """Figure 2: heat map of mean ``structure`` Dice, training set x test source."""
    rows = report.select(rows, structure=structure)
    cells = report.across_seeds(rows, lambda r: (r["setting"], r["test_source"]), lambda rs: rs[0]["dice_mean"])
    trains = report.ordered((r["setting"] for r in rows), order)
    tests = report.ordered((r["test_source"] for r in rows), order)
    m = np.array([[cells.get((tr, te), (math.nan,))[0] for te in tests] for tr in trains])
    fig, ax = plt.subplots(figsize=(1.4 * len(tests) + 2, 1.0 * len(trains) + 1.5))
    im = ax.imshow(m, vmin=0, vmax=1, cmap="viridis")
    for i, j in itertools.product(range(len(trains)), range(len(tests))):
        if not math.isnan(m[i, j]):
            ax.text(j, i, f"{m[i, j]:.2f}", ha="center", va="center",
                    color="white" if m[i, j] < 0.6 else "black")
    ax.set_xticks(range(len(tests)), tests)
    ax.set_yticks(range(len(trains)), trains)
    ax.set_xlabel("test source")
    ax.set_ylabel("trained on")
    ax.set_title(f"{structure.upper()} Dice")
    fig.colorbar(im, ax=ax)
    save_figure(fig, path)


def plot_boxes(per_image: Sequence[Mapping], path, *, group: str = "method",
               structures: Sequence[str] = report.STRUCTURES, order: Sequence[str] = (),
               title: str = "") -> None:
    """Figure 3 style: per-image Dice box plots, one panel per structure, one box per
    ``group`` value (all seeds' images pooled)."""
    groups = report.ordered((r[group] for r in per_image), order)
    fig, axes = plt.subplots(1, len(structures), figsize=(3.2 * len(structures), 3.4), squeeze=False)
    for ax, s in zip(axes[0], structures):
        data = [[r[f"dice_{s}"] for r in per_image if r[group] == g and not math.isnan(r[f"dice_{s}"])]
                for g in groups]
        ax.boxplot([d if d else [math.nan] for d in data], showfliers=True)
        ax.set_xticks(range(1, len(groups) + 1), groups, rotation=45, ha="right")
        ax.set_title(s.upper())
        ax.set_ylim(0, 1)
        ax.set_ylabel("Dice")
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    save_figure(fig, path)


def plot_mean_std(rows: Sequence[Mapping], path, *, group: str = "method",
                  order: Sequence[str] = (), title: str = "") -> None:
    """Figure 4a style: mean against std of test Dice per structure, one marker per
    ``group`` value (each run's test sources pooled; averaged over seeds)."""
    groups = report.ordered((r[group] for r in rows), order)
    fig, axes = plt.subplots(1, len(report.STRUCTURES), figsize=(3.4 * len(report.STRUCTURES), 3.2), squeeze=False)
    for ax, s in zip(axes[0], report.STRUCTURES):
        sel = report.select(rows, structure=s)
        means = report.across_seeds(sel, lambda r: (r[group],), report.pooled_over_sources)
        stds = report.across_seeds(sel, lambda r: (r[group],), lambda rs: report.pooled_over_sources(rs, "dice_std"))
        for g in groups:
            if (g,) in means:
                ax.scatter(stds[(g,)][0], means[(g,)][0], label=g)
        ax.set_xlabel("std of Dice over images")
        ax.set_ylabel("mean Dice")
        ax.set_title(s.upper())
    axes[0][-1].legend(fontsize=7, loc="best")
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    save_figure(fig, path)


def plot_dropout_curve(rows: Sequence[Mapping], path, *, test_source: str, structure: str = "la",
                       group: str = "method", order: Sequence[str] = (), title: str = "",
                       references: Mapping[str, float] | None = None) -> None:
    """Figure 6: ``structure`` Dice on ``test_source`` against the label-dropout rate,
    mean with error bars of one std over seeds, one line per ``group`` value;
    ``references`` (name -> Dice, e.g. the benchmark) as dashed horizontal lines."""
    rows = report.select(rows, structure=structure, test_source=test_source)
    cells = report.across_seeds(rows, lambda r: (r[group], r["dropout"]), lambda rs: rs[0]["dice_mean"])
    fig, ax = plt.subplots(figsize=(5.5, 3.6))
    for g in report.ordered((r[group] for r in rows), order):
        rates = sorted(d for (gg, d) in cells if gg == g)
        m = [cells[(g, d)][0] for d in rates]
        e = [0.0 if math.isnan(cells[(g, d)][1]) else cells[(g, d)][1] for d in rates]
        ax.errorbar([100 * d for d in rates], m, yerr=e, marker="o", capsize=3, label=g)
    for k, (name, value) in enumerate((references or {}).items()):
        if not math.isnan(value):
            ax.axhline(value, linestyle="--", color=f"C{len(order) + k + 2}", label=name)
    ax.set_xlabel("label dropout rate (%)")
    ax.set_ylabel(f"{structure.upper()} Dice on {test_source}")
    ax.set_ylim(0, 1)
    ax.legend(fontsize=8)
    if title:
        ax.set_title(title)
    save_figure(fig, path)


# Display colours for the classes of an overlay (background transparent).
_OVERLAY_COLOURS = np.array([[0, 0, 0, 0], [1.0, 0.2, 0.2, 0.45], [0.2, 0.9, 0.2, 0.45],
                             [0.3, 0.5, 1.0, 0.45]])


def plot_overlays(samples: Sequence[Mapping], path, *, methods: Sequence[str], title: str = "") -> None:
    """Figures 4b/7b/8 style: one line per sample: image, ground truth, each method's
    prediction, as coloured class overlays on the image.

    Each sample has ``image`` (H x W or H x W x 1), ``label`` (H x W ints),
    ``predictions`` (method -> H x W ints) and optional ``title``.
    """
    if not samples:
        raise ValueError("plot_overlays needs at least one sample")
    lines = []
    for i, sample in enumerate(samples):
        image = np.asarray(sample["image"]).squeeze()
        panels = [("image", None), ("ground truth", sample["label"])]
        for m in methods:
            if m not in sample["predictions"]:
                raise ValueError(f"sample {i} has no prediction for {m!r}; has {sorted(sample['predictions'])}")
            panels.append((m, sample["predictions"][m]))
        checked = []
        for name, mask in panels:
            if mask is not None:
                mask = np.asarray(mask).squeeze().astype(int)
                if mask.shape != image.shape or mask.min() < 0 or mask.max() >= labels.NUM_CLASSES:
                    raise ValueError(f"sample {i} {name}: mask must be ints 0..{labels.NUM_CLASSES - 1} "
                                     f"of shape {image.shape}, got {mask.shape} in "
                                     f"{mask.min()}..{mask.max()}")
            checked.append((name, mask))
        lines.append((image, checked, sample.get("title", "")))
    cols = 2 + len(methods)
    fig, axes = plt.subplots(len(lines), cols, figsize=(2.1 * cols, 2.2 * len(lines)), squeeze=False)
    for i, (image, panels, sample_title) in enumerate(lines):
        for ax, (name, mask) in zip(axes[i], panels):
            ax.imshow(image, cmap="gray")
            if mask is not None:
                ax.imshow(_OVERLAY_COLOURS[mask])
            ax.set_xticks([])
            ax.set_yticks([])
            if i == 0:
                ax.set_title(name, fontsize=9)
        if sample_title:
            axes[i][0].set_ylabel(sample_title, fontsize=8)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    save_figure(fig, path)
