"""Experiment 2 (intra-domain partial labels) of Islam et al., MELBA 2026.

CAMUS with the LVM removed from 50 % of the train/validation masks. Each loss (CCE,
aCCE, marginal, aBCE) is trained on it, beside a fully-labelled benchmark (CCE, every
mask complete) and the pseudo-labelling baseline (a CCE teacher trained on the
fully-labelled half predicts the missing LVM; a CCE student trains on labels plus
pseudo-labels). Reported: Dice per structure per method and architecture (mean ± std
over seeds), per-image Dice box plots (Figure 3), mean against std of Dice (Figure 4a)
and sample predictions (Figure 4b).

    python experiments/exp2_intra_domain.py                    # quick preset, phantoms
    python experiments/exp2_intra_domain.py --preset=paper --data=real --data_dir=...
"""

import dataclasses
import os
import sys

from echojax import experiment as X
from echojax import figures as F
from echojax import report as R

BASELINES = ("benchmark", "pseudo_label")


@dataclasses.dataclass(frozen=True)
class Flags:
    fraction: float = X.flag(
        0.5, "fraction of CAMUS train/validation masks without LVM (paper: 0.5)")
    baselines: tuple[str, ...] = X.flag(
        BASELINES, "comma list of %(default)s, or '' for none", choices=BASELINES)

    def __post_init__(self):
        if not 0.0 < self.fraction <= 1.0:
            raise ValueError(f"--fraction must be in (0, 1], got {self.fraction}")


def runs(options):
    fraction, baselines = options.flags.fraction, options.flags.baselines
    partial = options.source("camus", remove=("lvm",), fraction=fraction)
    full = options.source("camus")
    tags = {"setting": f"camus(no LVM in {fraction:.0%})"}
    out = []
    for arch in options.archs:
        for seed in options.seeds:
            for loss in options.losses:
                cfg = options.config([partial], arch=arch, loss=loss, seed=seed)
                out.append(X.Run(f"{arch}/{loss}/s{seed}", cfg, tags=tags))
            if "benchmark" in baselines:
                cfg = options.config([full], arch=arch, loss="cce", seed=seed)
                out.append(X.Run(f"{arch}/benchmark/s{seed}", cfg,
                                     tags={"setting": "camus", "method": "benchmark"}))
            if "pseudo_label" in baselines:
                base = options.config([partial], arch=arch, loss="cce", seed=seed)
                out += X.pseudo_label_runs(base, ("lvm",), teacher_name=f"{arch}/pseudo_teacher/s{seed}",
                                           student_name=f"{arch}/pseudo_label/s{seed}", tags=tags)
    return X.with_grid_search(out, options)


def report(inp):
    o = inp.options
    order = list(X.ARCHS) + list(o.losses) + ["pseudo_label", "benchmark"]
    res = [r for r in inp.results if r["method"] != "pseudo_teacher"]
    table = R.structure_table(res, group=("arch", "method"), test_source="camus", order=order)
    lines = ["## Dice per structure on CAMUS test images (Figures 3-4)", "",
             "Cells: mean ± std over seeds of each run's mean Dice over the test images.", "",
             table, ""]
    images = [i for i in inp.per_image if i["method"] != "pseudo_teacher"]
    for arch in o.archs:
        arch_images = [i for i in images if i["arch"] == arch]
        arch_rows = [r for r in res if r["arch"] == arch]
        if not arch_rows:
            continue
        F.plot_boxes(arch_images, os.path.join(inp.figures_dir, f"fig3_boxes_{arch}.png"),
                     order=order, title=f"{arch}: per-image Dice on CAMUS (all seeds)")
        F.plot_mean_std(arch_rows, os.path.join(inp.figures_dir, f"fig4a_mean_std_{arch}.png"),
                        order=order, title=f"{arch}: mean vs std of Dice")
        lines += [f"![Figure 3, {arch}](figures/fig3_boxes_{arch}.png)",
                  f"![Figure 4a, {arch}](figures/fig4a_mean_std_{arch}.png)", ""]
        chosen = {}
        for m in order[len(X.ARCHS):]:
            run = inp.finished(f"{arch}/{m}/s{o.seeds[0]}")
            if run is not None:
                chosen[m] = run
        if chosen:
            inp.overlay_figure(chosen, "camus", f"fig4b_overlay_{arch}.png",
                               title=f"{arch}: CAMUS test images (LVM in green)")
            lines += [f"![Figure 4b, {arch}](figures/fig4b_overlay_{arch}.png)", ""]
    return "\n".join(lines), "Dice on CAMUS test images:\n" + table


EXPERIMENT = X.Experiment(
    name="exp2_intra_domain",
    title="Experiment 2: CAMUS with LVM removed from half the masks (Figures 3-4)",
    runs=runs, report=report, flags=Flags)

if __name__ == "__main__":
    sys.exit(X.main(EXPERIMENT))
