"""Paper-layout tables, statistics and figures from per-run evaluation results.

Two levels of results feed every table and figure:

- *result rows* (``results.csv``): one row per run x test source x structure, with the
  run's tags (experiment, setting, method, arch, loss, dropout, seed, training sizes)
  and that run's Dice statistics over the test images of that source (images whose
  ground truth lacks the structure are left out: Dice is undefined there), plus the
  run's EF mean absolute error on that source (repeated on each structure's row).
- *per-image rows* (each run's ``eval/test/per_image.csv`` with the run's tags added):
  box plots and the Wilcoxon signed-rank tests need the paired per-image Dice.

The layouts follow Islam et al., MELBA 2026 (doi:10.59275/j.melba.2026-3bfa):
Figure 2 (train-source x test-source Dice matrix), Figures 3-5 and 7 (per-structure Dice
per loss and architecture), Figure 6 (median LA Dice on Unity against the label-dropout
rate, and the best rate chosen on it), Table 2 (training-size grid of median LA Dice),
Table 3 (Dice per structure, overall mean and EF MAE per loss), Table 4 (external
validation), the paper's Wilcoxon signed-rank tests beside a Holm-corrected table of all
pairs, and the training time per epoch of each run.

Figures in the same layouts: ``echojax.figures``.

Across runs (seeds) a cell is ``mean ± std`` of the per-run values (sample standard
deviation, ddof=1; a single run shows no ``±``): the spread between re-trainings, never
the spread between images. Pooling several test sources into one number weights each
source by its number of images (sums and counts, never a mean of means).
"""

from __future__ import annotations

import itertools
import json
import math
import os
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence

import numpy as np
from scipy import stats

from echojax import files, labels, progress, rundir

STRUCTURES: tuple[str, ...] = tuple(labels.CLASS_NAMES[c] for c in labels.FOREGROUND_CLASSES)

# Columns of results.csv, in order. ``train_sizes`` reads "camus=100;unity=200"
# (training examples per source alias; "all" where a source is used whole).
RESULT_COLUMNS: tuple[str, ...] = (
    "experiment", "run", "setting", "method", "arch", "loss", "dropout", "seed",
    "train_sizes", "test_source", "structure", "n_images", "dice_mean", "dice_median",
    "dice_std", "ef_mae", "ef_n")
_INT_COLUMNS = ("seed", "n_images", "ef_n")
_FLOAT_COLUMNS = ("dropout", "dice_mean", "dice_median", "dice_std", "ef_mae")

# Numbers the paper states in its text, shown beside ours only for real data. The
# tables and figures of the paper give more, but only values we could read from the
# paper's own text go here; a column without one is left out rather than guessed.
PAPER_FIG2_CROSS_DOMAIN_DROP = (0.08, 0.21)  # LV Dice drop across domains, Figure 2


# --------------------------------------------------------------------------- files


def read_results(path: str | os.PathLike) -> list[dict]:
    """Reads a ``results.csv`` written by :func:`write_csv` with ``RESULT_COLUMNS``."""
    rows = files.read_csv(path, RESULT_COLUMNS)
    for i, row in enumerate(rows, start=2):
        for c in _INT_COLUMNS:
            row[c] = int(row[c])
        for c in _FLOAT_COLUMNS:
            row[c] = files.parse_float(row[c], where=f"{path}:{i} column {c}")
    return rows


def read_per_image(path: str | os.PathLike) -> list[dict]:
    """Reads an evaluation ``per_image.csv``: ``dice_<structure>`` columns become floats
    (NaN where the structure is absent from the ground truth), ``index`` (the example's
    index in its source's TFDS split) an int; other columns stay text.
    """
    need = ("source", "index", "patient_id", "view", "phase") + tuple(f"dice_{s}" for s in STRUCTURES)
    rows = files.read_csv(path, need)
    for i, row in enumerate(rows, start=2):
        try:
            row["index"] = int(row["index"])
        except ValueError:
            raise ValueError(f"{path}:{i} column index: expected an integer, got "
                             f"{row['index']!r}") from None
        for s in STRUCTURES:
            row[f"dice_{s}"] = files.parse_float(row[f"dice_{s}"], where=f"{path}:{i}")
    return rows


# --------------------------------------------------------------------- statistics


def describe(values: Iterable[float]) -> dict:
    """``n``, ``mean``, ``median``, ``std`` (population, over images) of the finite values.

    NaN values (structure absent from the ground truth) are left out; with none left
    every statistic is NaN and ``n`` is 0.
    """
    x = np.asarray([v for v in values if not math.isnan(v)], dtype=np.float64)
    if x.size == 0:
        return {"n": 0, "mean": math.nan, "median": math.nan, "std": math.nan}
    return {"n": int(x.size), "mean": float(x.mean()), "median": float(np.median(x)),
            "std": float(x.std())}


def image_key(row: Mapping) -> tuple[str, int]:
    """Identifies a test image across runs: (source, index in that source's test split).

    Not (source, patient, view, phase): a Unity video gives several frames of one
    patient and view, all with phase "unknown", and those must stay separate images.
    """
    return (row["source"], int(row["index"]))


def summarize_images(images: Sequence[Mapping], *, source_alias: Callable[[str], str] = str
                     ) -> dict[tuple[str, str], dict]:
    """Per (test source, structure) Dice statistics of one run's per-image rows.

    ``source_alias`` maps the ``source`` feature (e.g. ``synthetic_echo/camus_like``)
    to the name the tables use (e.g. ``camus``).
    """
    by_source: dict[str, list[Mapping]] = defaultdict(list)
    for row in images:
        by_source[source_alias(row["source"])].append(row)
    return {(src, s): describe(r[f"dice_{s}"] for r in rows)
            for src, rows in sorted(by_source.items()) for s in STRUCTURES}


def mean_std(values: Iterable[float]) -> tuple[float, float, int]:
    """Mean and sample std (ddof=1; NaN for one value) of the finite values, and their count."""
    x = np.asarray([v for v in values if not math.isnan(v)], dtype=np.float64)
    if x.size == 0:
        return math.nan, math.nan, 0
    std = float(x.std(ddof=1)) if x.size > 1 else math.nan
    return float(x.mean()), std, int(x.size)


def fmt(mean: float, std: float = math.nan, *, digits: int = 3) -> str:
    """``"0.812 ± 0.013"``, ``"0.812"`` without a std, ``"–"`` for no value."""
    if math.isnan(mean):
        return "–"
    if math.isnan(std):
        return f"{mean:.{digits}f}"
    return f"{mean:.{digits}f} ± {std:.{digits}f}"


def pooled_over_sources(rows: Sequence[Mapping], value: str = "dice_mean",
                        count: str = "n_images") -> float:
    """Count-weighted mean of ``value`` over rows (e.g. one run's test sources).

    Rows with no count or a NaN value add nothing; with none left, NaN.
    """
    total = weight = 0.0
    for r in rows:
        if r[count] > 0 and not math.isnan(r[value]):
            total += r[count] * r[value]
            weight += r[count]
    return total / weight if weight else math.nan


def parse_sizes(text: str) -> dict[str, str]:
    """``"camus=100;unity=all"`` -> ``{"camus": "100", "unity": "all"}``."""
    out = {}
    for part in filter(None, (p.strip() for p in text.split(";"))):
        if "=" not in part:
            raise ValueError(f"train_sizes entry {part!r} is not alias=count in {text!r}")
        k, v = part.split("=", 1)
        out[k.strip()] = v.strip()
    return out


def select(rows: Iterable[Mapping], **where) -> list[Mapping]:
    """The rows whose columns equal ``where``'s values."""
    return [r for r in rows if all(r[k] == v for k, v in where.items())]


def ordered(values: Iterable, order: Sequence = ()) -> list:
    """Distinct values, those in ``order`` first in that order, then the rest sorted."""
    seen = list(dict.fromkeys(values))
    head = [v for v in order if v in seen]
    return head + sorted((v for v in seen if v not in head), key=str)


def across_seeds(rows: Iterable[Mapping], key: Callable[[Mapping], tuple],
                 value: Callable[[list[Mapping]], float]) -> dict[tuple, tuple[float, float, int]]:
    """Groups result rows by ``key`` + run, takes ``value`` of each run's rows, then
    ``mean_std`` over the runs of each group."""
    per_run: dict[tuple, dict[str, list[Mapping]]] = defaultdict(lambda: defaultdict(list))
    for r in rows:
        per_run[key(r)][r["run"]].append(r)
    return {k: mean_std(value(rs) for rs in runs.values()) for k, runs in per_run.items()}


def across_runs(rows: Iterable[Mapping], *, group: Sequence[str] = ("method",),
                structure: str, test_source: str | None = None) -> dict[tuple, tuple[float, float, int]]:
    """Per ``group`` value: (mean, std, number) across runs of each run's mean
    ``structure`` Dice, on ``test_source`` or with the run's test sources pooled by image
    count. The std is between runs (re-trainings), not between images: what Figures 4a,
    5b and 6b of the paper show."""
    rows = select(rows, structure=structure)
    if test_source is not None:
        rows = select(rows, test_source=test_source)
    return across_seeds(rows, lambda r: tuple(r[g] for g in group), pooled_over_sources)


# ------------------------------------------------------------------------- tables


def markdown_table(header: Sequence[str], body: Sequence[Sequence[str]]) -> str:
    """A GitHub markdown table; every body row must have ``len(header)`` cells."""
    for i, row in enumerate(body):
        if len(row) != len(header):
            raise ValueError(f"table row {i} has {len(row)} cells, header has {len(header)}")
    lines = ["| " + " | ".join(header) + " |",
             "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in body]
    return "\n".join(lines) + "\n"


def domain_shift_table(rows: Sequence[Mapping], *, structure: str = "lv",
                       order: Sequence[str] = ()) -> str:
    """Figure 2: mean ``structure`` Dice, training set (``setting``) x test source.

    A training set named like a test source is its in-domain model; the last column
    is the mean drop from the diagonal to that model's other test sources.
    """
    rows = select(rows, structure=structure)
    cells = across_seeds(rows, lambda r: (r["setting"], r["test_source"]),
                         lambda rs: rs[0]["dice_mean"])
    trains = ordered((r["setting"] for r in rows), order)
    tests = ordered((r["test_source"] for r in rows), order)
    body = []
    for tr in trains:
        line = [tr] + [fmt(*cells.get((tr, te), (math.nan, math.nan, 0))[:2]) for te in tests]
        drop = math.nan
        if (tr, tr) in cells:
            others = [cells[(tr, te)][0] for te in tests if te != tr and (tr, te) in cells]
            if others:
                drop = cells[(tr, tr)][0] - float(np.mean(others))
        body.append(line + [fmt(drop)])
    header = [f"train \\ test ({structure.upper()} Dice)"] + tests + ["in-domain minus cross-domain"]
    return markdown_table(header, body)


def cross_domain_drops(rows: Sequence[Mapping], *, structure: str = "lv") -> dict[tuple[str, str], float]:
    """(train, test) -> in-domain Dice of ``train``'s model on ``train`` minus its Dice on
    ``test`` (means over seeds), for single-source training sets."""
    cells = across_seeds(select(rows, structure=structure),
                         lambda r: (r["setting"], r["test_source"]),
                         lambda rs: rs[0]["dice_mean"])
    out = {}
    for (tr, te), (m, _, _) in cells.items():
        if tr != te and (tr, tr) in cells:
            out[(tr, te)] = cells[(tr, tr)][0] - m
    return out


def structure_table(rows: Sequence[Mapping], *, group: Sequence[str] = ("arch", "method"),
                    test_source: str | None = None, structures: Sequence[str] = STRUCTURES,
                    order: Sequence[str] = ()) -> str:
    """Figures 3-4 / Table 4 layout: ``mean ± std`` over seeds of each run's mean Dice
    per structure, one line per ``group`` value (e.g. architecture x method).

    With ``test_source`` only that source's images count; otherwise each run's test
    sources are pooled (weighted by image count).
    """
    if test_source is not None:
        rows = select(rows, test_source=test_source)
    keys = sorted({tuple(r[g] for g in group) for r in rows},
                  key=lambda k: tuple(order_key(v, order) for v in k))
    cells = across_seeds(rows, lambda r: tuple(r[g] for g in group) + (r["structure"],),
                         pooled_over_sources)
    body = [list(k) + [fmt(*cells.get(k + (s,), (math.nan, math.nan, 0))[:2]) for s in structures]
            for k in keys]
    return markdown_table(list(group) + [s.upper() for s in structures], body)


def structure_tables(rows: Sequence[Mapping], sources: Sequence[str], *,
                     group: Sequence[str] = ("arch", "method"),
                     order: Sequence[str] = ()) -> list[str]:
    """Report lines: one :func:`structure_table` per test source, each under a
    ``Test source: NAME`` line."""
    lines = []
    for source in sources:
        lines += [f"Test source: {source}", "",
                  structure_table(rows, group=group, test_source=source, order=order), ""]
    return lines


def order_key(value, order: Sequence) -> tuple:
    """Sort key: values in ``order`` first, in that order, then the others by name."""
    return (order.index(value), "") if value in order else (len(order), str(value))


def dropout_table(rows: Sequence[Mapping], *, structure: str = "la", test_source: str,
                  group: Sequence[str] = ("arch", "method"), order: Sequence[str] = (),
                  statistic: str = "dice_median") -> str:
    """Figure 6 as a table: ``structure`` Dice on ``test_source``, one line per group,
    one column per label-dropout rate. A cell is the mean ± std over runs of each run's
    ``statistic`` over the test images: by default the median, as the paper's Figure 6
    ("mean and standard deviation of the median Dice scores", Islam et al., MELBA 2026,
    Figure 6)."""
    rows = select(rows, structure=structure, test_source=test_source)
    cells = across_seeds(rows, lambda r: tuple(r[g] for g in group) + (r["dropout"],),
                         lambda rs: rs[0][statistic])
    rates = sorted({r["dropout"] for r in rows})
    keys = sorted({tuple(r[g] for g in group) for r in rows},
                  key=lambda k: tuple(order_key(v, order) for v in k))
    body = [list(k) + [fmt(*cells.get(k + (d,), (math.nan, math.nan, 0))[:2]) for d in rates]
            for k in keys]
    return markdown_table(list(group) + [f"{d:g}" for d in rates], body)


def best_dropout_rates(rows: Sequence[Mapping], *, structure: str = "la", test_source: str = "unity",
                       group: Sequence[str] = ("arch", "method"),
                       statistic: str = "dice_median") -> dict[tuple, dict]:
    """The best label-dropout rate of each group (e.g. architecture x loss): the rate with
    the highest mean over runs of each run's ``statistic`` (default: its median
    ``structure`` Dice on ``test_source``), the quantity the paper's Figure 6 plots.

    Returns ``group value -> {"rate", "mean", "std", "n"}`` (std over runs, ddof=1).
    Rates whose mean is NaN are skipped; of equal means the lowest rate wins (less
    label removal for the same Dice).
    """
    rows = select(rows, structure=structure, test_source=test_source)
    cells = across_seeds(rows, lambda r: tuple(r[g] for g in group) + (r["dropout"],),
                         lambda rs: rs[0][statistic])
    best: dict[tuple, dict] = {}
    for key in sorted(cells, key=lambda k: k[-1]):
        m, sd, n = cells[key]
        g = key[:-1]
        if not math.isnan(m) and (g not in best or m > best[g]["mean"]):
            best[g] = {"rate": key[-1], "mean": m, "std": sd, "n": n}
    return best


def data_ratio_table(rows: Sequence[Mapping], *, row_source: str = "unity",
                     col_source: str = "camus", structure: str = "la",
                     test_source: str = "unity", group: Sequence[str] = (),
                     order: Sequence[str] = ()) -> str:
    """Table 2: median ``structure`` Dice on ``test_source`` (mean ± std over seeds of
    each run's median), ``row_source`` training size x ``col_source`` training size
    (from ``train_sizes``; a source absent from ``train_sizes`` counts as 0).

    The default orientation, Unity (partially labelled) sizes down the rows and CAMUS
    (fully labelled) sizes across, with one block of rows per ``group`` value (e.g.
    the loss), is our reading of the paper's Table 2; swap the sources for the other.
    """
    rows = select(rows, structure=structure, test_source=test_source)

    def sizes(r):
        s = parse_sizes(r["train_sizes"])
        return tuple(r[g] for g in group) + (s.get(row_source, "0"), s.get(col_source, "0"))

    cells = across_seeds(rows, sizes, lambda rs: rs[0]["dice_median"])
    as_num = lambda v: (0, int(v)) if v.isdigit() else (1, v)  # noqa: E731
    heads = sorted({k[:-2] for k in cells}, key=lambda k: tuple(order_key(v, order) for v in k))
    rs_ = sorted({k[-2] for k in cells}, key=as_num)
    cs_ = sorted({k[-1] for k in cells}, key=as_num)
    body = [list(h) + [r] + [fmt(*cells.get(h + (r, c), (math.nan, math.nan, 0))[:2]) for c in cs_]
            for h in heads for r in rs_ if any(h + (r, c) in cells for c in cs_)]
    return markdown_table(list(group) + [f"{row_source} \\ {col_source}"] + cs_, body)


def structure_ef_cells(rows: Sequence[Mapping], *, group: Sequence[str] = ("setting", "arch", "method"),
                       dice_sources: Sequence[str] | None = None,
                       ef_sources: Sequence[str] | None = None) -> dict[tuple, dict[str, tuple]]:
    """Table 3's cells: per ``group`` value, ``{"lv", "lvm", "la", "mean", "ef_mae"}``
    each ``(mean, std, runs)`` over seeds; Dice test sources pooled by image count.

    The overall mean of a run is the mean of its per-structure means. EF MAE pools the
    run's per-source MAEs weighted by their number of ED/ES pairs (``ef_n``).
    ``dice_sources`` / ``ef_sources`` (default: all) choose the test sources each part
    pools: the paper scores EchoNet's Dice on 20 images annotated with every structure
    but its EF on the EchoNet test set.
    """
    def keyf(r):
        return tuple(r[g] for g in group)

    dice_rows = [r for r in rows if dice_sources is None or r["test_source"] in dice_sources]
    rows = [r for r in rows if ef_sources is None or r["test_source"] in ef_sources
            or dice_sources is None or r["test_source"] in dice_sources]
    keys = {keyf(r) for r in rows}
    per_struct = across_seeds(dice_rows, lambda r: keyf(r) + (r["structure"],), pooled_over_sources)

    def overall(run_rows):
        means = [pooled_over_sources([r for r in run_rows if r["structure"] == s]) for s in STRUCTURES]
        means = [m for m in means if not math.isnan(m)]
        return float(np.mean(means)) if means else math.nan

    def ef(run_rows):  # one row per source carries the run's EF error on it
        per_source = {r["test_source"]: r for r in run_rows
                      if ef_sources is None or r["test_source"] in ef_sources}
        return pooled_over_sources(list(per_source.values()), "ef_mae", "ef_n")

    overall_cells = across_seeds(dice_rows, keyf, overall)
    ef_cells = across_seeds(rows, keyf, ef)
    none = (math.nan, math.nan, 0)
    return {k: {**{s: per_struct.get(k + (s,), none) for s in STRUCTURES},
                "mean": overall_cells.get(k, none), "ef_mae": ef_cells.get(k, none)}
            for k in keys}


def structure_ef_table(rows: Sequence[Mapping], *, group: Sequence[str] = ("setting", "arch", "method"),
                       order: Sequence[str] = (), dice_sources: Sequence[str] | None = None,
                       ef_sources: Sequence[str] | None = None) -> str:
    """Table 3 as markdown: :func:`structure_ef_cells` per line of ``group`` (in
    ``order``), each cell ``mean ± std`` over seeds."""
    cells = structure_ef_cells(rows, group=group, dice_sources=dice_sources, ef_sources=ef_sources)
    keys = sorted(cells, key=lambda k: tuple(order_key(v, order) for v in k))
    body = [list(k) + [fmt(*cells[k][s][:2]) for s in STRUCTURES] + [fmt(*cells[k]["mean"][:2]),
            fmt(*cells[k]["ef_mae"][:2], digits=2)] for k in keys]
    return markdown_table(list(group) + [s.upper() for s in STRUCTURES] + ["mean", "EF MAE (%)"], body)


# ----------------------------------------------------------------- Wilcoxon tests


def holm(p_values: Sequence[float]) -> list[float]:
    """Holm-Bonferroni adjusted p-values (NaN stays NaN and is not counted)."""
    idx = [i for i, p in enumerate(p_values) if not math.isnan(p)]
    order = sorted(idx, key=lambda i: p_values[i])
    m = len(order)
    out = [math.nan] * len(p_values)
    running = 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (m - rank) * p_values[i]))
        out[i] = running
    return out


def paired_dice(per_image: Sequence[Mapping], *, method_a: str, method_b: str,
                structure: str, pair_on: Sequence[str] = ("setting", "arch"),
                method_key: str = "method") -> tuple[np.ndarray, np.ndarray]:
    """Paired per-image Dice of two methods for one structure.

    An image (``image_key``: source and index in its test split) under the same
    ``pair_on`` tags is one pair; its Dice is
    first averaged over the seeds each method has for it, so each test image counts
    once. Images where either method's Dice is NaN (the structure absent from that
    image's ground truth) are dropped: Dice is undefined there.
    Returns ``(a, b)``, float64 arrays of equal length, in a stable image order.
    """
    acc: dict[str, dict[tuple, list[float]]] = {method_a: defaultdict(list), method_b: defaultdict(list)}
    col = f"dice_{structure}"
    for r in per_image:
        m = r[method_key]
        if m in acc:
            acc[m][tuple(r[k] for k in pair_on) + image_key(r)].append(r[col])
    keys = sorted(set(acc[method_a]) & set(acc[method_b]))
    a, b = [], []
    for k in keys:
        va, vb = acc[method_a][k], acc[method_b][k]
        if any(math.isnan(v) for v in va + vb):
            continue
        a.append(float(np.mean(va)))
        b.append(float(np.mean(vb)))
    return np.asarray(a), np.asarray(b)


def wilcoxon_pair(per_image: Sequence[Mapping], *, method_a: str, method_b: str, structure: str,
                  pair_on: Sequence[str] = ("setting", "arch"),
                  alternative: str = "two-sided") -> dict:
    """Wilcoxon signed-rank test of ``method_a`` against ``method_b`` on paired per-image
    ``structure`` Dice (:func:`paired_dice`).

    ``scipy.stats.wilcoxon`` with its defaults otherwise: ``zero_method="wilcox"`` drops
    zero differences (identical Dice, e.g. two perfect segmentations) before ranking;
    ``method="auto"`` takes the exact null distribution for up to 50 differences without
    ties or zeros, exhaustive permutations for up to 13 with ties or zeros, and the
    normal approximation (tie-corrected) otherwise. ``alternative="greater"`` tests
    whether a's Dice tends to exceed b's. With no non-zero difference left the test
    cannot be run: statistic and p are NaN (``n_nonzero`` = 0).
    """
    if alternative not in ("two-sided", "greater", "less"):
        raise ValueError(f"alternative must be two-sided, greater or less, got {alternative!r}")
    a, b = paired_dice(per_image, method_a=method_a, method_b=method_b, structure=structure,
                       pair_on=pair_on)
    d = a - b
    n_nonzero = int(np.count_nonzero(d))
    stat = p = math.nan
    if n_nonzero > 0:
        res = stats.wilcoxon(a, b, alternative=alternative)
        stat, p = float(res.statistic), float(res.pvalue)
    return {"structure": structure, "method_a": method_a, "method_b": method_b,
            "alternative": alternative, "n_pairs": int(d.size), "n_nonzero": n_nonzero,
            "median_diff": float(np.median(d)) if d.size else math.nan,
            "mean_a": float(a.mean()) if a.size else math.nan,
            "mean_b": float(b.mean()) if b.size else math.nan,
            "statistic": stat, "p": p}


def wilcoxon_tests(per_image: Sequence[Mapping], *, methods: Sequence[str],
                   structures: Sequence[str] = STRUCTURES,
                   pair_on: Sequence[str] = ("setting", "arch")) -> list[dict]:
    """Two-sided Wilcoxon signed-rank test (:func:`wilcoxon_pair`) for every pair of
    ``methods`` and every structure; ``p_holm`` corrects over all rows of the returned
    list (Holm-Bonferroni)."""
    out = [wilcoxon_pair(per_image, method_a=ma, method_b=mb, structure=s, pair_on=pair_on)
           for s in structures for ma, mb in itertools.combinations(methods, 2)]
    for row, ph in zip(out, holm([r["p"] for r in out])):
        row["p_holm"] = ph
    return out


def wilcoxon_table(tests: Sequence[Mapping]) -> str:
    """Markdown table of :func:`wilcoxon_tests` rows; ``*`` marks Holm-adjusted p < 0.05."""
    body = []
    for t in tests:
        star = " *" if not math.isnan(t["p_holm"]) and t["p_holm"] < 0.05 else ""
        body.append([t["structure"].upper(), f"{t['method_a']} vs {t['method_b']}", str(t["n_pairs"]),
                     fmt(t["median_diff"]),
                     "–" if math.isnan(t["p"]) else f"{t['p']:.2g}",
                     ("–" if math.isnan(t["p_holm"]) else f"{t['p_holm']:.2g}") + star])
    return markdown_table(["structure", "pair", "images", "median Dice diff (a-b)", "p", "p (Holm)"], body)


# The paper's tests (Islam et al., MELBA 2026, Exp. 4): Wilcoxon signed-rank on LVM Dice,
# marginal vs aBCE and aBCE vs aCCE, for the U-Net and the Attention U-Net, p < 0.05.
# The paper does not state a side; we test two-sided (our choice: no direction was fixed
# before looking at the data) and report the direction by the median difference.
PAPER_WILCOXON_PAIRS: tuple[tuple[str, str], ...] = (("marginal", "abce"), ("abce", "acce"))
PAPER_WILCOXON_ARCHS: tuple[str, ...] = ("unet", "attention_unet")
PAPER_ALPHA = 0.05


def paper_wilcoxon_tests(per_image: Sequence[Mapping], *,
                         pairs: Sequence[tuple[str, str]] = PAPER_WILCOXON_PAIRS,
                         structure: str = "lvm", pair_on: Sequence[str] = ("setting", "arch"),
                         alpha: float = PAPER_ALPHA) -> list[dict]:
    """The paper's Wilcoxon signed-rank tests as it words them: each pair of ``pairs``
    on ``structure`` Dice, two-sided, each test at ``alpha`` on its own p-value (no
    multiple-comparison correction, as in the paper; :func:`wilcoxon_tests` gives the
    Holm-corrected table of all pairs beside it). Adds ``significant`` (p < alpha) to
    each row; pairs whose methods have no images are left out."""
    methods = {r["method"] for r in per_image}
    out = []
    for ma, mb in pairs:
        if ma in methods and mb in methods:
            row = wilcoxon_pair(per_image, method_a=ma, method_b=mb, structure=structure,
                                pair_on=pair_on)
            row["significant"] = bool(not math.isnan(row["p"]) and row["p"] < alpha)
            out.append(row)
    return out


def paper_wilcoxon_table(tests: Sequence[Mapping], *, alpha: float = PAPER_ALPHA) -> str:
    """Markdown table of :func:`paper_wilcoxon_tests` rows."""
    body = []
    for t in tests:
        if math.isnan(t["p"]):
            verdict = "not testable (no non-zero difference)"
        elif t["significant"]:
            better = t["method_a"] if t["median_diff"] > 0 else t["method_b"]
            verdict = f"significant, {better} higher" if t["median_diff"] != 0 else "significant"
        else:
            verdict = "not significant"
        body.append([t["structure"].upper(), f"{t['method_a']} vs {t['method_b']}", str(t["n_pairs"]),
                     fmt(t["mean_a"]), fmt(t["mean_b"]), fmt(t["median_diff"]),
                     "–" if math.isnan(t["p"]) else f"{t['p']:.2g}", verdict])
    return markdown_table(["structure", "pair (a vs b)", "images", "mean Dice a", "mean Dice b",
                           "median diff (a-b)", "p (two-sided)", f"at p < {alpha:g}"], body)


# --------------------------------------------------------------- per-image values


def image_mean(row: Mapping, structures: Sequence[str] = STRUCTURES) -> float:
    """Mean of one image's defined ``dice_<structure>`` values (NaN if none is defined):
    the value of Figure 3's overall-mean panel."""
    values = [row[f"dice_{s}"] for s in structures if not math.isnan(row[f"dice_{s}"])]
    return float(np.mean(values)) if values else math.nan


# ---------------------------------------------------------------------- run time


# How a run's time per epoch was measured (``run_timing``'s ``measure``) -> the column
# that shows it.
EPOCH_TIME_MEASURES = {
    "train": "s per epoch (training steps only)",
    "run_time": "s per epoch (train + eval, run_time.json)",
}


def run_timing(run_path: str | os.PathLike) -> dict | None:
    """The time per epoch of a run folder: ``{"seconds_per_epoch", "measure",
    "seconds", "epochs", "first_step_seconds", "arch", "loss", "batch_size"}``; None
    when the run has no timing.

    ``measure`` ``"train"`` (the paper's "training time per epoch", Sec. 5.3.1): from
    the epoch rows of ``metrics.jsonl`` (``echojax.train``), the summed
    ``epoch_train_seconds`` over the summed ``epoch_timed_steps``, times the steps per
    epoch: the steps' wall time without validation, checkpointing, the test evaluation
    and each start's first step (``first_step_seconds``, the compilation, reported
    apart: the first start's). ``seconds`` is that summed time and ``epochs`` the
    epoch rows it comes from.

    ``measure`` ``"run_time"``, the fallback for runs whose ``metrics.jsonl`` predates
    those fields: ``run_time.json``'s wall time of training + test evaluation over the
    configured epochs, so compilation, validation and the test evaluation are in it (an
    upper bound); a resumed run's file holds only the time since it resumed.
    ``first_step_seconds`` is NaN there."""
    directory = rundir.RunDir(os.fspath(run_path))
    has_metrics = os.path.exists(directory.metrics)
    if not os.path.exists(directory.run_time) and not has_metrics:
        return None
    with open(directory.config) as f:
        config = json.load(f)
    about = {"arch": (config.get("model") or {}).get("name", ""),
             "loss": (config.get("loss") or {}).get("name", ""),
             "batch_size": config.get("batch_size")}
    rows = [r for r in progress.read_metrics(directory.metrics)
            if "epoch_train_seconds" in r] if has_metrics else []
    timed = sum(int(r["epoch_timed_steps"]) for r in rows)
    if timed > 0:
        seconds = float(sum(r["epoch_train_seconds"] for r in rows))
        steps_per_epoch = round(rows[-1]["step"] / rows[-1]["epoch"])
        first = next((r["first_step_seconds"] for r in rows if "first_step_seconds" in r),
                     math.nan)
        return {"seconds": seconds, "epochs": len(rows),
                "seconds_per_epoch": seconds / timed * steps_per_epoch, "measure": "train",
                "first_step_seconds": float(first), **about}
    if not os.path.exists(directory.run_time):
        return None
    with open(directory.run_time) as f:
        seconds = json.load(f).get("seconds")
    epochs = config.get("epochs")
    if not isinstance(seconds, (int, float)) or not isinstance(epochs, int) or epochs <= 0:
        raise ValueError(f"{directory.path}: expected a number 'seconds' in run_time.json and a "
                         f"positive int 'epochs' in config.json, got {seconds!r} and {epochs!r}")
    return {"seconds": float(seconds), "epochs": epochs, "seconds_per_epoch": seconds / epochs,
            "measure": "run_time", "first_step_seconds": math.nan, **about}


def run_timings(runs: Iterable[tuple[str | os.PathLike, Mapping]]) -> list[dict]:
    """:func:`run_timing` of each ``(run folder, tags)`` with the tags added (``method``
    defaults to the loss, as in the result rows); runs without ``run_time.json`` are
    left out."""
    out = []
    for path, tags in runs:
        t = run_timing(path)
        if t is not None:
            out.append({**t, **tags, "method": str(tags.get("method", t["loss"]))})
    return out


def epoch_time_table(entries: Sequence[Mapping], *, group: Sequence[str] = ("arch", "method"),
                     order: Sequence[str] = ()) -> str:
    """Time per epoch, one line per ``group`` value and measure: mean ± std over runs of
    each run's ``seconds_per_epoch`` (:func:`run_timing`), and the number of runs.

    The column names the measure (``EPOCH_TIME_MEASURES``); when the entries mix
    measures (runs older than the training-time fields beside newer ones) each line
    says its own in a ``measured as`` column and the two are never averaged together.
    Where any run has the training-time measure, a column gives its first step's time
    (compilation), which that measure leaves out."""
    measures = sorted({e.get("measure", "run_time") for e in entries})
    mixed = len(measures) > 1
    keyf = lambda e: tuple(e[g] for g in group) + (e.get("measure", "run_time"),)  # noqa: E731
    keys = sorted({keyf(e) for e in entries}, key=lambda k: tuple(order_key(v, order) for v in k))
    first = "train" in measures
    body = []
    for k in keys:
        sel = [e for e in entries if keyf(e) == k]
        m, sd, n = mean_std(e["seconds_per_epoch"] for e in sel)
        line = list(k[:-1]) + ([EPOCH_TIME_MEASURES[k[-1]]] if mixed else [])
        line.append(fmt(m, sd, digits=2))
        if first:
            fm, fsd, fn = mean_std(e.get("first_step_seconds", math.nan) for e in sel)
            line.append(fmt(fm, fsd, digits=2) if fn else "–")
        body.append(line + [str(n)])
    header = list(group) + (["measured as", "s per epoch"] if mixed
                            else [EPOCH_TIME_MEASURES[measures[0]]] if measures else ["s per epoch"])
    header += ["first step, s (compilation)"] if first else []
    return markdown_table(header + ["runs"], body)
