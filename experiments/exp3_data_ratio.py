"""Experiment 3 (inter-domain, ratio of fully to partially labelled data) of Islam et
al., MELBA 2026.

CAMUS (fully labelled) + Unity with the LA removed from every Unity train/validation
mask, on a grid of dataset sizes: CAMUS {100, 200, 400, 1000} x Unity {0, 100, 200, 400}
(Table 2; 0: Unity not in training), 3 seeds in the paper preset. The sizes count whole
datasets as the paper's Table 1 does (CAMUS 1,000 images, Unity 400: the largest cell
is each dataset whole), so a cell trains on their 80 % training share (Sec. 4:
CAMUS 1000 -> 800 training images); validation and test splits stay whole (our
choice), see ``echojax.experiment.options.TRAIN_SHARE``. The CPU presets scale the
training counts further by their ``size_scale``. Losses: the paper's three (Table 2's
caption: aCCE, marginal and aBCE); CCE by ``--loss``. Epochs: the paper trains every
cell for 500 (Sec. 4.4), and so does the paper preset. The quick preset sizes epochs by
the CAMUS training images of the column, ``max(2, ceil(E / CAMUS images))`` with E =
``--camus_exposure`` (our choice), and gives every cell of a column those epochs, so
each cell sees its CAMUS images as often as the no-Unity cell does: adding Unity
images adds steps and never removes CAMUS exposure. Reported: the median LA Dice on
Unity's test images, mean ± std across runs, Unity sizes down the rows and CAMUS
sizes across, one block per loss, one table per architecture (Table 2), with the
paper's cells beside ours.

    python experiments/exp3_data_ratio.py --loss=acce          # quick preset, phantoms
    python experiments/exp3_data_ratio.py --preset=paper --data=real --data_dir=...
"""

import dataclasses
import sys

from echojax import experiment as X
from echojax import paper as paper_lib
from echojax import report as R

PAPER_CAMUS = (100, 200, 400, 1000)
PAPER_UNITY = (0, 100, 200, 400)


@dataclasses.dataclass(frozen=True)
class Flags:
    camus_sizes: tuple[int, ...] | None = X.flag(
        None, "comma list of CAMUS dataset sizes counted as the paper's Table 2 (whole-"
              "dataset images; training images = the preset's share, paper: 80 %%) "
              "(default: 100,200,400,1000)")
    unity_sizes: tuple[int, ...] | None = X.flag(
        None, "comma list of Unity dataset sizes as --camus_sizes, 0 = none "
              "(default: 0,100,200,400)")
    dropout: float = X.flag(0.0, "label-dropout rate on the LA for every run (default 0)")
    camus_exposure: int | None = X.flag(
        None, "presets that size epochs by images seen (quick): CAMUS training images each "
              "run sees, epochs = max(preset epochs, ceil(this / CAMUS training images)) for "
              "every cell of a column (default: the preset's examples_per_run, quick 1600; "
              "ignored by the paper preset's fixed 500 epochs and by --epochs)")

    def __post_init__(self):
        for name in ("camus_sizes", "unity_sizes"):
            sizes = getattr(self, name)
            if sizes is not None and (not sizes or any(n < 0 for n in sizes)):
                raise ValueError(f"--{name} must be a comma list of ints >= 0, got {sizes}")
        if self.camus_sizes is not None and 0 in self.camus_sizes:
            raise ValueError("--camus_sizes must be positive: CAMUS is the fully labelled source")
        if self.camus_exposure is not None and self.camus_exposure < 1:
            raise ValueError(f"--camus_exposure must be a positive number of images, "
                             f"got {self.camus_exposure}")


def runs(options):
    camus_sizes = options.flags.camus_sizes or PAPER_CAMUS
    unity_sizes = options.flags.unity_sizes or PAPER_UNITY
    dropout = options.flags.dropout
    exposure = options.flags.camus_exposure
    seeds = options.seeds if options.seeds_given else options.preset.grid_seeds
    unity_test = options.source("unity")
    out = []
    for arch in options.archs:
        for loss in options.losses:
            for seed in seeds:
                for nc in camus_sizes:
                    for nu in unity_sizes:
                        # Run names and settings carry the paper's counts; the
                        # sources' train_examples (results' train_sizes) the training images.
                        sources = [options.source("camus", train_examples=options.size(nc))]
                        if nu:
                            sources.append(options.source("unity", train_examples=options.size(nu),
                                                          remove=("la",)))
                        cfg = options.config(sources, arch=arch, loss=loss, seed=seed,
                                             dropout=dropout, dropout_classes=("la",))
                        # The column's CAMUS count sets the epochs of every cell in it.
                        cfg = options.adjust(cfg, options.size(nc), examples=exposure)
                        out.append(X.Run(
                            f"{arch}/{loss}/c{nc}_u{nu}/s{seed}", cfg,
                            tags={"setting": f"c{nc}_u{nu}"},
                            test_sources=() if nu else (unity_test,), epochs_fixed=True))
    return X.with_grid_search(out, options)


def report(inp):
    lines = ["## Median LA Dice on Unity test images by training-set sizes (Table 2)", "",
             "One block of rows per loss; rows: Unity training images (LA removed; 0 = Unity "
             "not in training), columns: CAMUS training images (fully labelled). Cells: mean ± "
             "std across runs (seeds) of each run's median LA Dice on Unity's test images, in "
             "the paper's layout (Table 2: Unity sizes down, CAMUS sizes across, a block per "
             "loss).", ""]
    res = [r for r in inp.results if r["setting"] != "grid"]
    losses = list(inp.options.losses)
    compact = ""
    for arch in inp.options.archs:
        rows = [r for r in res if r["arch"] == arch and r["method"] in losses]
        if not rows:
            continue
        table = R.data_ratio_table(rows, group=("method",), order=losses)
        lines += [f"### {arch}", "", table, "",
                  "The same cells by the paper's dataset sizes (run settings `c<CAMUS>_u<Unity>`), "
                  "ours then the paper's Table 2 value in brackets (mean ± std over its 3 runs; "
                  "the paper trains 500 epochs on 80 % of each size at 256 x 256, the quick "
                  f"preset {inp.options.preset.size_scale:g} x the size on 64 x 64 phantoms, so "
                  "compare trends, not values):", "",
                  paper_lib.table2_beside_ours(rows, arch=arch, losses=losses), "",
                  "Trend down each column, from no Unity images to the most (the change Table 2's "
                  "conclusion rests on):", "",
                  paper_lib.table2_trends(rows, arch=arch, losses=losses), ""]
        compact = compact or f"Median LA Dice on Unity ({arch}):\n{table}"
    return "\n".join(lines), compact


EXPERIMENT = X.Experiment(
    name="exp3_data_ratio",
    title="Experiment 3: CAMUS x Unity training-set sizes (Table 2)",
    runs=runs, report=report, flags=Flags, default_losses=("acce", "marginal", "abce"))

if __name__ == "__main__":
    sys.exit(X.main(EXPERIMENT))
