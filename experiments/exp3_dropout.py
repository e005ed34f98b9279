"""Experiment 3 (inter-domain, label dropout) of Islam et al., MELBA 2026.

CAMUS (fully labelled) + Unity with the LA removed from every Unity train/validation
mask. Each loss is trained with label dropout on the LA at each rate of the preset
(paper: 0 to 100 % in steps of 10 %), beside a fully-labelled benchmark (CCE, Unity's
LA kept) and the pseudo-labelling baseline (a CCE teacher on CAMUS labels Unity's LA).
Reported: each loss without dropout against the baselines (Figure 5: per-image LA Dice
on Unity of one run per method, and the spread across runs), the median LA Dice on
Unity against the dropout rate, mean and std across runs (Figure 6), the best rate per
loss on that statistic, each loss at rate 0 and at its best rate against the baselines
(Figure 7: tables, 7a box plots, 7b sample predictions) and the training time per epoch
of each loss.

    python experiments/exp3_dropout.py --loss=acce            # quick preset, phantoms
    python experiments/exp3_dropout.py --preset=paper --data=real --data_dir=...
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
                                           student_name=f"{arch}/pseudo_label/s{seed}", tags=tags,
                                           teacher_test_sources=(unity_full,))
    return X.with_grid_search(out, options)


def report(inp):
    o = inp.options
    losses = list(o.losses)
    baselines = ["pseudo_label", "benchmark"]
    res = [r for r in inp.results if r["method"] != "pseudo_teacher" and r["setting"] != "grid"]
    images = [i for i in inp.per_image if i["method"] != "pseudo_teacher" and i["setting"] != "grid"]
    arch_order = list(X.ARCHS)
    dropout_rows = [r for r in res if r["method"] in losses]
    base = [r for r in res if r["method"] in baselines]
    best = R.best_dropout_rates(dropout_rows, structure="la", test_source="unity")

    # Figure 5: each loss without label dropout beside the baselines.
    no_dropout = [r for r in res if (r["method"] in losses and r["dropout"] == 0.0)
                  or r["method"] in baselines]
    no_dropout_images = [i for i in images if (i["method"] in losses and i["dropout"] == 0.0)
                         or i["method"] in baselines]
    lines = ["## Each loss without label dropout against the baselines (Figure 5)", "",
             "Exp. 3's losses at dropout rate 0 beside the fully-labelled benchmark (and "
             "pseudo-labels). Cells: mean ± std across runs of each run's mean Dice.", ""]
    lines += R.structure_tables(no_dropout, ("unity", "camus"),
                                order=arch_order + losses + baselines)
    for arch in o.archs:
        rows = [r for r in no_dropout if r["arch"] == arch]
        if rows:
            name = f"fig5_no_dropout_{arch}.png"
            drawn = F.plot_figure5(
                rows, [i for i in no_dropout_images if i["arch"] == arch],
                os.path.join(inp.figures_dir, name), test_source="unity", structure="la",
                seed=o.seeds[0], order=losses + baselines,
                title=f"{arch}: Unity test images, no label dropout")
            seeds = sorted({seed for _, seed in drawn["runs"].values()})
            caption = ("(a) as the paper's 5a, the per-image LA Dice on Unity's test images of "
                       "one run per method (seed " + (", ".join(map(str, seeds)) or "none")
                       + (", the first seed" if seeds == [o.seeds[0]] else "")
                       + "), box plots with the mean as a white diamond. ")
            if drawn["across_runs"]:
                caption += ("(b) the std across runs of each run's mean Dice per structure "
                            "(the paper's 5b plots it against the mean); (c), ours, the mean "
                            "over runs with error bars of that std.")
            else:
                caption += ("One run per method here, so the across-runs panels (the std "
                            "across runs, 5b, and our mean ± std bars) are left out: a single "
                            "run has no spread between runs.")
            lines += [f"Figure 5, {arch}: {caption}", "",
                      f"![Figure 5, {arch}](figures/{name})", ""]

    lines += ["## LA Dice on Unity against the label-dropout rate (Figure 6)", "",
              "Rows: architecture and loss; columns: dropout rate on the LA; cells: mean ± std "
              "across runs of each run's median LA Dice over Unity's test images (the paper's "
              "Figure 6: \"mean and standard deviation of the median Dice scores\").", ""]
    fig6 = R.dropout_table(dropout_rows, test_source="unity", order=arch_order + losses)
    lines += [fig6, ""]
    if best:
        lines += ["Best rate per loss: the highest mean over runs of the per-run median LA "
                  "Dice on Unity (ties: the lowest rate).", "",
                  R.markdown_table(["arch", "loss", "best rate", "median LA Dice (mean ± std)", "runs"],
                                   [[a, m, f"{best[(a, m)]['rate']:g}",
                                     R.fmt(best[(a, m)]["mean"], best[(a, m)]["std"]), str(best[(a, m)]["n"])]
                                    for a in R.ordered((k[0] for k in best), arch_order)
                                    for m in losses if (a, m) in best]), ""]
    if base:
        lines += ["Baselines, median LA Dice on Unity (mean ± std across runs):", "",
                  R.markdown_table(["arch", "method", "LA"], [
                      [a, m, R.fmt(*v[:2])] for (a, m), v in sorted(R.across_seeds(
                          R.select(base, structure="la", test_source="unity"),
                          lambda r: (r["arch"], r["method"]), lambda rs: rs[0]["dice_median"]).items())]),
                  ""]
    for arch in o.archs:
        rows = [r for r in res if r["arch"] == arch]
        if rows:
            refs = R.across_seeds(
                [r for r in rows if r["method"] in baselines
                 and r["structure"] == "la" and r["test_source"] == "unity"],
                lambda r: (r["method"],), lambda rs: rs[0]["dice_median"])
            across = F.plot_dropout_curve(
                [r for r in rows if r["method"] in losses],
                os.path.join(inp.figures_dir, f"fig6_dropout_{arch}.png"),
                test_source="unity", order=losses, title=f"{arch}: LA on Unity",
                references={k[0]: v[0] for k, v in sorted(refs.items())})
            if not across:
                lines += [f"Figure 6, {arch}: one run per loss and rate, so each point is that "
                          "run's median, without error bars, and panel (b), the std across "
                          "runs, is left out.", ""]
            lines += [f"![Figure 6, {arch}](figures/fig6_dropout_{arch}.png)", ""]

    def label(r):
        """Figure 7's name of a row: loss at rate 0, loss at its best rate, or a baseline."""
        if r["method"] in baselines:
            return r["method"]
        if r["method"] not in losses:
            return None
        rate = best.get((r["arch"], r["method"]), {}).get("rate")
        if r["dropout"] == 0.0:
            return f"{r['method']} d=0"
        if r["dropout"] == rate:
            return f"{r['method']} d={rate:g} (best)"
        return None

    picked = [{**r, "method": m} for r in res if (m := label(r)) is not None]
    picked_images = [{**i, "method": m} for i in images if (m := label(i)) is not None]
    fig7_order = []
    for loss in losses:  # each loss without, then with its best dropout; baselines last
        fig7_order += [f"{loss} d=0"] + sorted({p["method"] for p in picked
                                                if p["method"].startswith(f"{loss} d=") and
                                                p["method"] != f"{loss} d=0"})
    fig7_order += baselines
    lines += ["## Each loss without and with its best label dropout (Figure 7)", "",
              "Best rate per loss as above, chosen on Unity's test LA Dice (so optimistic, as a "
              "ceiling). Dice per structure on each test source (mean ± std across runs of each "
              "run's mean):", ""]
    lines += R.structure_tables(picked, ("unity", "camus"), order=arch_order + fig7_order)
    for arch in o.archs:
        sel = [i for i in picked_images if i["arch"] == arch and i["source"] == "unity"]
        if sel:
            name = f"fig7a_boxes_{arch}.png"
            F.plot_boxes(sel, os.path.join(inp.figures_dir, name), structures=("la",), overall=False,
                         order=fig7_order, title=f"{arch}: per-image LA Dice on Unity (all seeds)")
            lines += [f"![Figure 7a, {arch}](figures/{name})", ""]
    for arch in o.archs:
        names = {}
        for loss in losses:
            rate = best.get((arch, loss), {}).get("rate", 0.0)
            for d in dict.fromkeys((0.0, rate)):
                names[f"{loss} d={d:g}"] = f"{arch}/{loss}/d{d:g}/s{o.seeds[0]}"
        names.update({m: f"{arch}/{m}/s{o.seeds[0]}" for m in ("benchmark", "pseudo_label")})
        chosen = inp.finished_runs(names)
        if chosen:
            inp.overlay_figure(chosen, "unity", f"fig7_overlay_{arch}.png",
                               title=f"{arch}: Unity test images (LA in blue)")
            lines += [f"![Figure 7b, {arch}](figures/fig7_overlay_{arch}.png)", ""]
    lines += inp.epoch_time_section(order=arch_order + losses + baselines,
                                    note=", all dropout rates pooled")
    return "\n".join(lines), "Median LA Dice on Unity by label-dropout rate:\n" + fig6


EXPERIMENT = X.Experiment(
    name="exp3_dropout",
    title="Experiment 3: CAMUS + Unity without LA, label dropout (Figures 6-7)",
    runs=runs, report=report, flags=Flags)

if __name__ == "__main__":
    sys.exit(X.main(EXPERIMENT))
