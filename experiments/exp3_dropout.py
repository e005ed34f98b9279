"""Experiment 3 (inter-domain, label dropout) of Islam et al., MELBA 2026.

CAMUS (fully labelled) + Unity with the LA removed from every Unity train/validation
mask. Each loss is trained with label dropout on the LA at each rate of the preset
(paper: 0 to 100 % in steps of 10 %), beside a fully-labelled benchmark (CCE, Unity's
LA kept) and the pseudo-labelling baseline (a CCE teacher on CAMUS labels Unity's LA).
Reported: LA Dice on Unity against the dropout rate (Figure 6) and each loss at rate
0 and at its best rate against the baselines (Figure 7), with sample predictions.

    python experiments/exp3_dropout.py --loss=acce            # quick preset, phantoms
    python experiments/exp3_dropout.py --preset=paper --data=real --data_dir=...
"""

import dataclasses
import math
import os
import sys

from echojax import experiment as X
from echojax import figures as F
from echojax import report as R

BASELINES = ("benchmark", "pseudo_label")


@dataclasses.dataclass(frozen=True)
class Flags:
    rates: tuple[float, ...] | None = X.flag(
        None, "comma list of label-dropout rates in [0, 1] (default: the preset's)")
    baselines: tuple[str, ...] = X.flag(
        BASELINES, "comma list of %(default)s, or '' for none", choices=BASELINES)

    def __post_init__(self):
        if self.rates is not None and any(not 0.0 <= r <= 1.0 for r in self.rates):
            raise ValueError(f"--rates must lie in [0, 1], got {self.rates}")


def runs(options):
    rates = options.flags.rates or options.preset.dropout_rates
    baselines = options.flags.baselines
    camus = options.source("camus")
    unity_partial = options.source("unity", remove=("la",))
    unity_full = options.source("unity")
    tags = {"setting": "camus+unity(no LA)"}
    out = []
    for arch in options.archs:
        for seed in options.seeds:
            for loss in options.losses:
                for rate in rates:
                    cfg = options.config([camus, unity_partial], arch=arch, loss=loss, seed=seed,
                                         dropout=rate, dropout_classes=("la",))
                    out.append(X.Run(f"{arch}/{loss}/d{rate:g}/s{seed}", cfg, tags=tags))
            if "benchmark" in baselines:
                cfg = options.config([camus, unity_full], arch=arch, loss="cce", seed=seed)
                out.append(X.Run(f"{arch}/benchmark/s{seed}", cfg,
                                     tags={"setting": "camus+unity", "method": "benchmark"}))
            if "pseudo_label" in baselines:
                base = options.config([camus, unity_partial], arch=arch, loss="cce", seed=seed)
                out += X.pseudo_label_runs(base, ("la",), teacher_name=f"{arch}/pseudo_teacher/s{seed}",
                                           student_name=f"{arch}/pseudo_label/s{seed}", tags=tags)
    return X.with_grid_search(out, options)


def best_rates(results, *, losses):
    """Per (arch, loss): the dropout rate with the highest mean (over seeds) LA Dice on
    Unity's test set. Chosen on the test set, as a figure of what each loss can reach."""
    sel = [r for r in results if r["structure"] == "la" and r["test_source"] == "unity"
           and r["method"] in losses]
    cells = R.across_seeds(sel, lambda r: (r["arch"], r["method"], r["dropout"]),
                           lambda rs: rs[0]["dice_mean"])
    best = {}
    for (arch, loss, rate), (m, _, _) in cells.items():
        if not math.isnan(m) and ((arch, loss) not in best or m > best[(arch, loss)][1]):
            best[(arch, loss)] = (rate, m)
    return {k: v[0] for k, v in best.items()}


def report(inp):
    o = inp.options
    losses = [m for m in o.losses]
    res = [r for r in inp.results if r["method"] != "pseudo_teacher"]
    lines = ["## LA Dice on Unity against the label-dropout rate (Figure 6)", "",
             "Rows: architecture and loss; columns: dropout rate on the LA; cells: mean ± std "
             "over seeds of the mean LA Dice over Unity's test images.", ""]
    dropout_rows = [r for r in res if r["method"] in losses]
    fig6 = R.dropout_table(dropout_rows, test_source="unity", order=list(X.ARCHS) + losses)
    lines += [fig6, ""]
    base = [r for r in res if r["method"] in ("benchmark", "pseudo_label")]
    if base:
        lines += ["Baselines, LA Dice on Unity:", "",
                  R.structure_table(base, group=("arch", "method"), test_source="unity",
                                    structures=("la",),
                                    order=list(X.ARCHS) + ["pseudo_label", "benchmark"]), ""]
    for arch in o.archs:
        rows = [r for r in res if r["arch"] == arch]
        if rows:
            refs = R.across_seeds(
                [r for r in rows if r["method"] in ("benchmark", "pseudo_label")
                 and r["structure"] == "la" and r["test_source"] == "unity"],
                lambda r: (r["method"],), lambda rs: rs[0]["dice_mean"])
            F.plot_dropout_curve([r for r in rows if r["method"] in losses],
                                 os.path.join(inp.figures_dir, f"fig6_dropout_{arch}.png"),
                                 test_source="unity", order=losses, title=f"{arch}: LA on Unity",
                                 references={k[0]: v[0] for k, v in sorted(refs.items())})
            lines += [f"![Figure 6, {arch}](figures/fig6_dropout_{arch}.png)", ""]

    best = best_rates(res, losses=losses)
    picked, fig7_order = [], []
    for r in res:
        if r["method"] in losses:
            if r["dropout"] == 0.0:
                picked.append({**r, "method": f"{r['method']} d=0"})
            if best.get((r["arch"], r["method"])) == r["dropout"] and r["dropout"] != 0.0:
                picked.append({**r, "method": f"{r['method']} d={r['dropout']:g} (best)"})
        elif r["method"] in ("benchmark", "pseudo_label"):
            picked.append(r)
    for loss in losses:  # each loss without, then with its best dropout; baselines last
        fig7_order += [f"{loss} d=0"] + sorted({p["method"] for p in picked
                                                if p["method"].startswith(f"{loss} d=") and
                                                p["method"] != f"{loss} d=0"})
    fig7_order += ["pseudo_label", "benchmark"]
    lines += ["## Each loss without and with its best label dropout (Figure 7)", "",
              "Best rate per loss chosen on Unity's test LA Dice (so optimistic, as a "
              "ceiling). Dice per structure on each test source:", ""]
    for source in ("unity", "camus"):
        lines += [f"Test source: {source}", "",
                  R.structure_table(picked, group=("arch", "method"), test_source=source,
                                    order=list(X.ARCHS) + fig7_order), ""]
    for arch in o.archs:
        chosen = {}
        for loss in losses:
            for rate in dict.fromkeys((0.0, best.get((arch, loss), 0.0))):
                run = inp.finished(f"{arch}/{loss}/d{rate:g}/s{o.seeds[0]}")
                if run is not None:
                    chosen[f"{loss} d={rate:g}"] = run
        for m in ("benchmark", "pseudo_label"):
            run = inp.finished(f"{arch}/{m}/s{o.seeds[0]}")
            if run is not None:
                chosen[m] = run
        if chosen:
            inp.overlay_figure(chosen, "unity", f"fig7_overlay_{arch}.png",
                               title=f"{arch}: Unity test images (LA in blue)")
            lines += [f"![Figure 7b, {arch}](figures/fig7_overlay_{arch}.png)", ""]
    return "\n".join(lines), "LA Dice on Unity by label-dropout rate:\n" + fig6


EXPERIMENT = X.Experiment(
    name="exp3_dropout",
    title="Experiment 3: CAMUS + Unity without LA, label dropout (Figures 6-7)",
    runs=runs, report=report, flags=Flags)

if __name__ == "__main__":
    sys.exit(X.main(EXPERIMENT))
