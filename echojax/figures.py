"""Figures in the paper's layouts (PNG), from the result rows of ``echojax.report``.

Figure 2 (training-set x test-source Dice matrix), Figures 3 and 7a (per-image Dice box
plots with mean markers and an overall-mean panel), Figure 4a (mean Dice against its std
across runs), Figure 5 (per-image Dice box plots of one run per loss, and the mean and
std across runs per structure), Figure 6 (median Dice against the label-dropout rate,
mean and std across runs; panels of a spread across runs are left out where every cell
has one run) and Figures
4b/7b/8 (sample predictions as coloured overlays), after Islam et al., MELBA 2026. Every
figure is written atomically (``echojax.files``). "Std across runs" is the sample std
(ddof=1) of the per-run values: the spread between re-trainings, not between images.
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
    cells = report.across_seeds(rows, lambda r: (r["setting"], r["test_source"]),
                                lambda rs: rs[0]["dice_mean"])
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


def _box(ax, data: Sequence[Sequence[float]], names: Sequence[str]) -> None:
    """Box plots with the median as a line and the mean as a white diamond."""
    ax.boxplot([d if len(d) else [math.nan] for d in data], showfliers=True, showmeans=True,
               meanprops={"marker": "D", "markerfacecolor": "white", "markeredgecolor": "black",
                          "markersize": 5})
    ax.set_xticks(range(1, len(names) + 1), names, rotation=45, ha="right")
    ax.set_ylim(0, 1.02)


def plot_boxes(per_image: Sequence[Mapping], path, *, group: str = "method",
               structures: Sequence[str] = report.STRUCTURES, order: Sequence[str] = (),
               title: str = "", overall: bool = True) -> None:
    """Figure 3 / 7a style: per-image Dice box plots, one panel per structure and, with
    ``overall``, a last panel of each image's mean over its defined structures
    (``report.image_mean``); one box per ``group`` value (all runs' images pooled), the
    median as a line and the mean as a white diamond."""
    groups = report.ordered((r[group] for r in per_image), order)
    panels = [(s.upper(), lambda r, s=s: r[f"dice_{s}"]) for s in structures]
    if overall:
        panels.append(("mean over structures", lambda r: report.image_mean(r, structures)))
    fig, axes = plt.subplots(1, len(panels), figsize=(max(3.2, 0.55 * len(groups) + 1.2) * len(panels), 3.6),
                             squeeze=False)
    for ax, (name, value) in zip(axes[0], panels):
        data = [[v for r in per_image if r[group] == g and not math.isnan(v := value(r))] for g in groups]
        _box(ax, data, groups)
        ax.set_title(name)
        ax.set_ylabel("Dice")
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    save_figure(fig, path)


def plot_mean_std(rows: Sequence[Mapping], path, *, group: str = "method",
                  order: Sequence[str] = (), title: str = "",
                  structures: Sequence[str] = report.STRUCTURES, test_source: str | None = None) -> None:
    """Figure 4a style: per structure, the mean over runs of each run's mean Dice
    against its standard deviation across runs (not across images: the spread a
    reader sees when re-training), one marker per ``group`` value. Each run's test
    sources are pooled by image count unless ``test_source`` picks one. A group with
    one run has no std: drawn as an ``x`` at 0."""
    if test_source is not None:
        rows = report.select(rows, test_source=test_source)
    groups = report.ordered((r[group] for r in rows), order)
    fig, axes = plt.subplots(1, len(structures), figsize=(3.4 * len(structures), 3.2), squeeze=False)
    for ax, s in zip(axes[0], structures):
        cells = report.across_runs(rows, group=(group,), structure=s)
        stds = []
        for k, g in enumerate(groups):
            if (g,) in cells:
                m, sd, _ = cells[(g,)]
                stds.append(sd)
                ax.scatter(0.0 if math.isnan(sd) else sd, m, label=g, color=f"C{k}",
                           marker="x" if math.isnan(sd) else "o")
        top = max([v for v in stds if not math.isnan(v)], default=0.0) or 0.01
        ax.set_xlim(-0.05 * top, 1.15 * top)  # a std is never negative
        ax.set_xlabel("std of mean Dice across runs"
                      + ("\n(x at 0: one run, no std)" if any(math.isnan(v) for v in stds) else ""))
        ax.set_ylabel("mean Dice (mean over runs)")
        ax.set_title(s.upper())
    axes[0][-1].legend(fontsize=7, loc="best")
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    save_figure(fig, path)


def one_run_per_group(per_image: Sequence[Mapping], *, group: str = "method",
                      seed: int | None = None) -> dict[str, list[Mapping]]:
    """``{group value: the per-image rows of one run}``: per group the run with ``seed``
    if it has one, else its lowest seed (ties: the first run name), so a figure of "one
    run" never pools re-trainings."""
    runs: dict[str, dict[tuple, list[Mapping]]] = {}
    for r in per_image:
        runs.setdefault(r[group], {}).setdefault((int(r["seed"]), str(r["run"])), []).append(r)
    out = {}
    for g, by_run in runs.items():
        keys = sorted(by_run)
        pick = next((k for k in keys if k[0] == seed), keys[0])
        out[g] = by_run[pick]
    return out


def plot_figure5(rows: Sequence[Mapping], per_image: Sequence[Mapping], path, *,
                 test_source: str, structure: str = "la", seed: int | None = None,
                 group: str = "method", structures: Sequence[str] = report.STRUCTURES,
                 order: Sequence[str] = (), title: str = "") -> dict:
    """Figure 5: (a) box plots of the per-image ``structure`` Dice on ``test_source`` of
    ONE run per ``group`` value (:func:`one_run_per_group` with ``seed``; the paper: "one
    run"), the mean as a white diamond; where some group has several runs, also (b) the
    std across runs of each run's mean Dice per structure (the paper's 5b plots it
    against the mean) and, as an extra panel of ours, (c) the mean over runs with error
    bars of that std. With one run per group those two panels are left out: a single
    run has no spread between runs. ``per_image`` rows carry ``source`` (the test source
    alias), ``seed`` and ``run``.

    Returns ``{"runs": {group value: (run, seed)}, "across_runs": bool}``: what the box
    plots show and whether the across-runs panels are drawn, for the caption."""
    rows = report.select(rows, test_source=test_source)
    images = [i for i in per_image if i["source"] == test_source]
    groups = report.ordered([r[group] for r in rows] + [i[group] for i in images], order)
    chosen = one_run_per_group(images, group=group, seed=seed)
    cells = {(g, s): v for s in structures
             for (g,), v in report.across_runs(rows, group=(group,), structure=s).items()}
    across = any(v[2] > 1 for v in cells.values())
    n_panels = 3 if across else 1
    box_width = max(3.4, 0.6 * len(groups) + 1.4)
    bar_width = 1.4 * len(structures) + 0.3 * len(groups) + 1.0
    ratios = [box_width] + [bar_width] * (n_panels - 1)
    fig, axes = plt.subplots(1, n_panels, figsize=(sum(ratios), 3.8), squeeze=False,
                             gridspec_kw={"width_ratios": ratios})
    axes = axes[0]
    box_groups = [g for g in groups if g in chosen]
    seeds = {int(chosen[g][0]["seed"]) for g in box_groups}
    _box(axes[0], [[v for r in chosen[g] if not math.isnan(v := r[f"dice_{structure}"])]
                   for g in box_groups],
         [g if len(seeds) == 1 else f"{g} (seed {chosen[g][0]['seed']})" for g in box_groups])
    which = f"seed {min(seeds)}" if len(seeds) == 1 else "seed per label" if seeds else "none"
    axes[0].set_title(f"(a) one run per method ({which})", fontsize=10)
    axes[0].set_ylabel(f"per-image {structure.upper()} Dice on {test_source}")
    if across:
        ax_b, ax_c = axes[1], axes[2]
        width = 0.8 / max(1, len(groups))
        x = np.arange(len(structures))
        for k, g in enumerate(groups):
            m = np.array([cells.get((g, s), (math.nan,))[0] for s in structures])
            sd = np.array([cells.get((g, s), (math.nan, math.nan))[1] for s in structures])
            pos = x - 0.4 + width * (k + 0.5)
            ax_b.bar(pos, np.nan_to_num(sd), width, color=f"C{k}", label=g)
            ax_c.bar(pos, m, width, yerr=np.nan_to_num(sd), capsize=2, color=f"C{k}")
            for xp, v in zip(pos, sd):
                if math.isnan(v):
                    ax_b.text(xp, 0, "1 run", rotation=90, ha="center", va="bottom", fontsize=7)
        for ax in (ax_b, ax_c):
            ax.set_xticks(x, [s.upper() for s in structures])
        ax_b.set_ylabel("std of mean Dice across runs")
        ax_b.set_title("(b) std across runs", fontsize=10)
        ax_c.set_ylim(0, 1.05)
        ax_c.set_ylabel(f"mean Dice on {test_source}")
        ax_c.set_title("(c, ours) mean ± std across runs", fontsize=10)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    if across:
        fig.legend(*axes[1].get_legend_handles_labels(), fontsize=7, loc="center left",
                   bbox_to_anchor=(1.0, 0.5))
    save_figure(fig, path)
    return {"runs": {g: (str(chosen[g][0]["run"]), int(chosen[g][0]["seed"])) for g in box_groups},
            "across_runs": across}


def plot_dropout_curve(rows: Sequence[Mapping], path, *, test_source: str, structure: str = "la",
                       group: str = "method", order: Sequence[str] = (), title: str = "",
                       references: Mapping[str, float] | None = None,
                       statistic: str = "dice_median") -> None:
    """Figure 6: (a) ``structure`` Dice on ``test_source`` against the label-dropout
    rate, the mean over runs of each run's ``statistic`` (default: its median over the
    test images, as the paper) with error bars of one std across runs, one line per
    ``group`` value, ``references`` (name -> Dice, e.g. the benchmark) as dashed lines;
    (b) the std across runs against the rate, left out when every cell has one run
    (nothing to draw there). Returns whether (b) is drawn."""
    rows = report.select(rows, structure=structure, test_source=test_source)
    cells = report.across_seeds(rows, lambda r: (r[group], r["dropout"]), lambda rs: rs[0][statistic])
    across = any(v[2] > 1 for v in cells.values())
    if across:
        fig, (ax, ax_b) = plt.subplots(1, 2, figsize=(10, 3.8), gridspec_kw={"width_ratios": [3, 2]})
    else:
        fig, ax = plt.subplots(figsize=(6.2, 3.8))
    groups = report.ordered((r[group] for r in rows), order)
    for k, g in enumerate(groups):
        rates = sorted(d for (gg, d) in cells if gg == g)
        m = [cells[(g, d)][0] for d in rates]
        sd = [cells[(g, d)][1] for d in rates]
        ax.errorbar([100 * d for d in rates], m, yerr=np.nan_to_num(sd), marker="o", capsize=3,
                    label=g, color=f"C{k}")
        if across:
            ax_b.plot([100 * d for d in rates], sd, marker="o", color=f"C{k}", label=g)
    for k, (name, value) in enumerate((references or {}).items()):
        if not math.isnan(value):
            ax.axhline(value, linestyle="--", color=f"C{len(groups) + k}", label=name)
    what = "median" if statistic == "dice_median" else "mean"
    ax.set_xlabel("label dropout rate (%)")
    ax.set_ylabel(f"{what} {structure.upper()} Dice on {test_source}")
    ax.set_ylim(0, 1)
    ax.set_title(f"(a) mean over runs of each run's {what}" if across
                 else f"(a) one run per point: its {what}")
    ax.legend(fontsize=7)
    if across:
        ax_b.set_xlabel("label dropout rate (%)")
        ax_b.set_ylabel("std across runs")
        ax_b.set_title("(b) std across runs")
        ax_b.set_ylim(bottom=0)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    save_figure(fig, path)
    return across


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
                raise ValueError(f"sample {i} has no prediction for {m!r}; "
                                 f"has {sorted(sample['predictions'])}")
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
