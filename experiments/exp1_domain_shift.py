"""Experiment 1 (intra- and inter-domain LV segmentation) of Islam et al., MELBA 2026.

LV-only models (LVM and LA removed from every train/validation mask) trained with CCE
on each dataset alone and on all three together, each tested on every dataset's test
split. The paper preset trains the U-Net only, as the paper ("We used only the U-Net
architecture in this experiment"); ``--arch`` adds the others. Reported: the
train-source x test-source LV Dice matrix (Figure 2) and the drop
from in-domain to cross-domain Dice (the paper: 0.08 to 0.21).

    python experiments/exp1_domain_shift.py                    # quick preset, phantoms
    python experiments/exp1_domain_shift.py --preset=paper --data=real --data_dir=...
"""

import os
import sys

from echojax import experiment as X
from echojax import figures as F
from echojax import report as R

SOURCES = X.PAPER_SOURCES  # camus, unity, echonet


def runs(options):
    def lv_only(alias):
        return options.source(alias, remove=("lvm", "la"))

    settings = [(alias, (alias,)) for alias in SOURCES] + [("all", SOURCES)]
    out = []
    for arch in options.archs:
        for loss in options.losses:
            for seed in options.seeds:
                for setting, aliases in settings:
                    cfg = options.config([lv_only(a) for a in aliases], arch=arch, loss=loss, seed=seed)
                    others = tuple(options.source(a) for a in SOURCES if a not in aliases)
                    out.append(X.Run(f"{arch}/{loss}/{setting}/s{seed}", cfg,
                                     tags={"setting": setting}, test_sources=others))
    return X.with_grid_search(out, options)


def report(inp):
    o = inp.options
    lines = ["## LV Dice, training set x test set (Figure 2)", "",
             "Rows: the training set (one dataset, or all three); columns: the test set. "
             "Cells: mean ± std across runs (seeds) of the mean LV Dice over the test images. Last "
             "column: in-domain Dice minus the mean of the model's cross-domain Dice.", ""]
    compact = ""
    for arch in o.archs:
        for loss in o.losses:
            rows = [r for r in inp.results if r["arch"] == arch and r["loss"] == loss
                    and r["setting"] != "grid"]
            if not rows:
                continue
            table = R.domain_shift_table(rows, order=SOURCES + ("all",))
            lines += [f"### {arch}, {loss}", "", table, ""]
            drops = R.cross_domain_drops(rows)
            if drops:
                values = sorted(drops.values())
                lines += [f"Cross-domain drop over the {len(values)} (train, test) pairs of "
                          f"single-dataset models: {values[0]:.3f} to {values[-1]:.3f} "
                          f"(mean {sum(values) / len(values):.3f})."
                          + (f" The paper reports {R.PAPER_FIG2_CROSS_DOMAIN_DROP[0]:.2f} to "
                             f"{R.PAPER_FIG2_CROSS_DOMAIN_DROP[1]:.2f} on the real datasets."
                             if o.data == "real" else ""), ""]
            name = f"fig2_domain_{arch}_{loss}.png"
            F.plot_domain_matrix(rows, os.path.join(inp.figures_dir, name), order=SOURCES + ("all",))
            lines += [f"![Figure 2, {arch} {loss}](figures/{name})", ""]
            if not compact:
                compact = f"LV Dice ({arch}, {loss}), train x test:\n{table}"
    return "\n".join(lines), compact


EXPERIMENT = X.Experiment(
    name="exp1_domain_shift",
    title="Experiment 1: LV segmentation within and across domains (Figure 2)",
    runs=runs, report=report, default_losses=("cce",))

if __name__ == "__main__":
    sys.exit(X.main(EXPERIMENT))
