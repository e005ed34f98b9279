"""aBCE's two decision rules on the same trained weights: sigmoid (our default) vs softmax.

Islam et al., MELBA 2026 (Sec. 6.1) say aBCE "uses the Softmax during inference";
``LossConfig.abce_inference`` offers both rules (``echojax.losses.get``). Our aBCE never
trains channel 0 (Eq. 5 sums over c >= 1), so under the softmax rule background is
decided by an untrained logit. This script measures what that costs.

For every finished aBCE run under the given experiment folders (a run folder holds
``config.json`` and ``eval/test/summary.json``; ``external/`` folders are skipped) it
restores the best checkpoint once (``echojax.inference.restore``), evaluates the test
split of the run's own sources with each rule (``echojax.evaluate.evaluate_model``:
the project's per-image Dice, nothing written), and prints, per experiment folder,
architecture and label-dropout rate, the mean ± sample std across seeds of each run's
mean and median Dice per structure and test source, for both rules; and the share of
test pixels the two rules label differently. The sigmoid rule's numbers are checked
against the run's own ``eval/test/summary.json`` (same weights, same rule).

  python bench/abce_decision_rule.py /work/runs/abce_exp2 /work/runs/abce_exp3
  python bench/abce_decision_rule.py RUNS... --json out.json   # also every run's numbers

With ``--json``, runs already in that file (same folder, checkpoint and step) are not
measured again, so the table can be refreshed while a sweep is still training.
"""

from __future__ import annotations

import argparse
import collections
import dataclasses
import json
import math
import os
import sys

import numpy as np

from echojax import evaluate as evaluate_lib
from echojax import files, inference, rundir
from echojax.checkpoint import Checkpoints
from echojax.data import pipeline
from echojax.train import eval_mixture

RULES = ("sigmoid", "softmax")
STRUCTURES = ("lv", "lvm", "la")


def find_runs(workdir: str) -> list[str]:
    """Finished aBCE run folders under ``workdir`` (sorted; external folders skipped)."""
    out = []
    for root, dirs, names in os.walk(workdir):
        dirs[:] = sorted(d for d in dirs if d not in ("external", "checkpoints", "eval"))
        if "config.json" not in names:
            continue
        run = rundir.RunDir(root)
        if run.load_config().loss.name == "abce" and run.evaluated("test"):
            out.append(root)
    return sorted(out)


def with_rule(model: inference.Model, rule: str) -> inference.Model:
    loss = dataclasses.replace(model.config.loss, abce_inference=rule)
    return dataclasses.replace(model, config=dataclasses.replace(model.config, loss=loss))


def disagreement(models: dict[str, inference.Model]) -> float:
    """Share of the test pixels (all sources) the two rules label differently."""
    config = models["sigmoid"].config
    predictors = {r: m.predictor() for r, m in models.items()}
    differ = total = 0
    for batch in pipeline.eval_batches(eval_mixture(config, "test"),
                                       batch_size=config.eval_batch_size):
        images = np.asarray(batch["image"])[np.asarray(batch["valid"])]
        a, b = (predictors[r](images) for r in RULES)
        differ += int((a != b).sum())
        total += a.size
    return differ / max(total, 1)


def measure_run(path: str, checkpoint: str) -> dict:
    model = inference.restore(path, checkpoint=checkpoint)
    models = {rule: with_rule(model, rule) for rule in RULES}
    config = model.config
    out = {"run": path, "checkpoint": checkpoint, "arch": config.model.name, "seed": config.seed,
           "dropout": config.loss.dropout_rate, "step": model.step, "rules": {},
           "pixels_differ": disagreement(models)}
    for rule in RULES:
        summary, _ = evaluate_lib.evaluate_model(models[rule], split="test",
                                                 checkpoint=checkpoint)
        out["rules"][rule] = {
            alias: {s: {k: src["dice"][s][k] for k in ("mean", "median")} for s in STRUCTURES}
            for alias, src in summary["sources"].items()}
    if checkpoint == "best":  # the run's own evaluation used the sigmoid rule and "best"
        with open(rundir.RunDir(path).summary("test")) as f:
            stored = json.load(f)
        for alias, src in stored["sources"].items():
            for s in STRUCTURES:
                a, b = src["dice"][s]["mean"], out["rules"]["sigmoid"][alias][s]["mean"]
                if a is not None and not math.isclose(a, b, rel_tol=1e-5, abs_tol=1e-6):
                    print(f"warning: {path}: sigmoid {alias}/{s} mean Dice {b:.6f} differs "
                          f"from the run's eval/test/summary.json {a:.6f}", file=sys.stderr)
    return out


def _cell(values: list[float]) -> str:
    x = np.asarray([v for v in values if v is not None and not math.isnan(v)], np.float64)
    if x.size == 0:
        return "-"
    if x.size == 1:
        return f"{x[0]:.3f}"  # one run: no spread
    return f"{x.mean():.3f} ± {x.std(ddof=1):.3f}"


def table(results: list[dict], workdirs: list[str]) -> str:
    lines = []
    for workdir in workdirs:
        rows = [r for r in results if os.path.commonpath([r["run"], workdir]) == workdir]
        groups = collections.defaultdict(list)
        for r in rows:
            groups[(r["arch"], r["dropout"])].append(r)
        if not groups:
            continue
        lines += [f"### {os.path.basename(os.path.normpath(workdir))}", "",
                  "| arch | dropout | seeds | test source | Dice | rule | LV | LVM | LA |",
                  "|---|---|---|---|---|---|---|---|---|"]
        for (arch, rate), runs in sorted(groups.items()):
            sources = list(runs[0]["rules"]["sigmoid"])
            for alias in sources:
                for stat in ("mean", "median"):
                    for rule in RULES:
                        cells = [_cell([r["rules"][rule][alias][s][stat] for r in runs])
                                 for s in STRUCTURES]
                        lines.append(f"| {arch} | {rate:g} | {len(runs)} | {alias} | {stat} | "
                                     f"{rule} | " + " | ".join(cells) + " |")
            differ = [100 * r["pixels_differ"] for r in runs]
            lines.append(f"| {arch} | {rate:g} | {len(runs)} | all | pixels labelled "
                         f"differently (%) | | {_cell(differ)} | | |")
        lines.append("")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("workdirs", nargs="+", help="experiment folders holding aBCE runs")
    parser.add_argument("--checkpoint", default="best", help="best, latest or a step")
    parser.add_argument("--json", default=None, help="also write every run's numbers here")
    args = parser.parse_args(argv)
    workdirs = [os.path.abspath(w) for w in args.workdirs]
    known = {}
    if args.json and os.path.exists(args.json):
        with open(args.json) as f:
            known = {(r["run"], r.get("checkpoint"), r["step"]): r for r in json.load(f)}
    results = []
    for workdir in workdirs:
        runs = find_runs(workdir)
        if not runs:
            print(f"warning: no finished aBCE run under {workdir}", file=sys.stderr)
        for path in runs:
            ckpts = Checkpoints(rundir.RunDir(path).checkpoints, read_only=True)
            try:
                key = (path, args.checkpoint, ckpts.resolve(args.checkpoint))
            finally:
                ckpts.close()
            if key in known:
                results.append(known[key])
                continue
            results.append(measure_run(path, args.checkpoint))
            print(f"measured {os.path.relpath(path, workdir)}", file=sys.stderr)
            if args.json:
                files.write_json(args.json, results)
    print("Dice on the test split of each run's sources: mean ± sample std across seeds "
          "of each run's mean (or median) over the test images; same weights per rule.\n")
    print(table(results, workdirs))
    if args.json:
        files.write_json(args.json, results)


if __name__ == "__main__":
    main()
