"""Experiment 3 (inter-domain, ratio of fully to partially labelled data) of Islam et
al., MELBA 2026.

CAMUS (fully labelled) + Unity with the LA removed from every Unity train/validation
mask, on a grid of training-set sizes: CAMUS {100, 200, 400, 1000} x Unity
{0, 100, 200, 400} (scaled by the preset's ``size_scale``; 0: Unity not in training),
3 seeds in the paper preset. The paper trains every cell for the same epochs; the quick
preset gives small cells more epochs, so that every run sees at least
``examples_per_run`` images. Reported: the median LA Dice on Unity's test images, mean ±
std over seeds, in Table 2's layout, for each loss and architecture.

    python experiments/exp3_data_ratio.py --loss=acce          # quick preset, phantoms
    python experiments/exp3_data_ratio.py --preset=paper --data=real --data_dir=...
"""

import sys

from echojax import report as R
from echojax import sweep

PAPER_CAMUS = (100, 200, 400, 1000)
PAPER_UNITY = (0, 100, 200, 400)


def add_flags(parser):
    parser.add_argument("--camus_sizes", default=None,
                        help="comma list of CAMUS training sizes (default: paper's, scaled)")
    parser.add_argument("--unity_sizes", default=None,
                        help="comma list of Unity training sizes, 0 = none (default: paper's, scaled)")
    parser.add_argument("--dropout", type=float, default=0.0,
                        help="label-dropout rate on the LA for every run (default 0)")


def _sizes(options, flag, paper):
    text = options.extra.get(flag)
    if not text:
        return tuple(0 if n == 0 else options.size(n) for n in paper)
    try:
        sizes = tuple(int(x) for x in text.split(","))
    except ValueError:
        raise ValueError(f"--{flag} must be a comma list of ints, got {text!r}") from None
    if any(n < 0 for n in sizes):
        raise ValueError(f"--{flag} must be >= 0, got {sizes}")
    return sizes


def runs(options):
    camus_sizes = _sizes(options, "camus_sizes", PAPER_CAMUS)
    unity_sizes = _sizes(options, "unity_sizes", PAPER_UNITY)
    if 0 in camus_sizes:
        raise ValueError("--camus_sizes must be positive: CAMUS is the fully labelled source")
    dropout = options.extra.get("dropout", 0.0)
    seeds = options.seeds if options.seeds_given else options.preset.grid_seeds
    unity_test = sweep.paper_source("unity", options)
    out = []
    for arch in options.archs:
        for loss in options.losses:
            for seed in seeds:
                for nc in camus_sizes:
                    for nu in unity_sizes:
                        sources = [sweep.paper_source("camus", options, train_examples=nc)]
                        if nu:
                            sources.append(sweep.paper_source("unity", options, train_examples=nu,
                                                              remove=("la",)))
                        cfg = options.config(sources, arch=arch, loss=loss, seed=seed,
                                             dropout=dropout, dropout_classes=("la",))
                        out.append(sweep.Run(
                            f"{arch}/{loss}/c{nc}_u{nu}/s{seed}", cfg,
                            tags={"setting": f"c{nc}_u{nu}"},
                            test_sources=() if nu else (unity_test,)))
    return sweep.with_grid_search(out, options)


def report(inp):
    lines = ["## Median LA Dice on Unity test images by training-set sizes (Table 2)", "",
             "Rows: CAMUS training images; columns: Unity training images (LA removed). "
             "Cells: mean ± std over seeds of each run's median LA Dice on Unity.", ""]
    compact = ""
    for arch in inp.options.archs:
        for loss in inp.options.losses:
            rows = [r for r in inp.results if r["arch"] == arch and r["method"] == loss]
            if not rows:
                continue
            table = R.data_ratio_table(rows)
            lines += [f"### {arch}, {loss}", "", table, ""]
            compact = compact or f"Median LA Dice on Unity ({arch}, {loss}):\n{table}"
    return "\n".join(lines), compact


EXPERIMENT = sweep.Experiment(
    name="exp3_data_ratio",
    title="Experiment 3: CAMUS x Unity training-set sizes (Table 2)",
    runs=runs, report=report, add_flags=add_flags)

if __name__ == "__main__":
    sys.exit(sweep.main(EXPERIMENT))
