"""The numbers Islam et al., MELBA 2026 publish, and tables that set ours beside them.

The values live once, in ``paper_numbers.json`` next to this module, each entry with
the table, figure or section it comes from (Figure 2's cross-domain drop, every cell
of Table 2, Tables 3 and 4, the best label-dropout rates, Sec. 5.3.2's annotation
consistency, the seeds the text states). Every report reads them from here, so a
figure quoted in one report cannot drift from another.

>>> numbers()["table2"]["cells"]["unet"]["acce"]["0"]["100"]
[0.658, 0.06]
>>> table3_cell("unet", "full", "marginal")["lvm"]
0.701
"""

from __future__ import annotations

import functools
import json
import math
from collections.abc import Mapping, Sequence
from importlib import resources

from echojax import report

LOSS_NAMES = {"acce": "aCCE", "marginal": "marginal", "abce": "aBCE", "cce": "CCE"}
TABLE2_CAMUS = (100, 200, 400, 1000)
TABLE2_UNITY = (0, 100, 200, 400)
TABLE3_COLUMNS = ("lv", "lvm", "la", "mean", "ef_mae")


@functools.cache
def numbers() -> dict:
    """The parsed ``paper_numbers.json`` (cached; do not modify it)."""
    return json.loads(resources.files("echojax").joinpath("paper_numbers.json").read_text())


def table2_cell(arch: str, loss: str, unity: int, camus: int) -> tuple[float, float] | None:
    """Table 2's (mean, std) of the median LA Dice on Unity for the paper's dataset
    sizes (whole-dataset counts, Table 1), or None where the paper has no such cell."""
    cell = (numbers()["table2"]["cells"].get(arch, {}).get(loss, {})
            .get(str(unity), {}).get(str(camus)))
    return None if cell is None else (float(cell[0]), float(cell[1]))


def table3_cell(arch: str, setting: str, loss: str) -> dict[str, float] | None:
    """Table 3's row (LV, LVM, LA, mean Dice on 20 annotated EchoNet images, EF MAE)."""
    return numbers()["table3"]["cells"].get(arch, {}).get(setting, {}).get(loss)


def _setting_sizes(setting: str) -> tuple[int, int] | None:
    # Table 2's run settings carry the paper's counts: "c<CAMUS>_u<Unity>".
    try:
        c, u = setting.split("_")
        return int(c.removeprefix("c")), int(u.removeprefix("u"))
    except ValueError:
        return None


def table2_beside_ours(rows: Sequence[Mapping], *, arch: str, losses: Sequence[str]) -> str:
    """Table 2 with the paper's cell under ours: blocks of rows per loss, Unity sizes
    down and CAMUS sizes across as the paper counts them (run settings ``c<N>_u<M>``);
    each cell ``ours`` then ``(paper mean ± std)``. ``rows`` are results rows of the
    LA on Unity's test set; ours is the mean ± std across runs of each run's median."""
    rows = [r for r in rows if r["arch"] == arch and r["structure"] == "la"
            and r["test_source"] == "unity" and _setting_sizes(r["setting"])]
    ours = report.across_seeds(rows, lambda r: (r["method"],) + _setting_sizes(r["setting"]),
                               lambda rs: rs[0]["dice_median"])
    camus = sorted({k[1] for k in ours} | set(TABLE2_CAMUS))
    unity = sorted({k[2] for k in ours} | set(TABLE2_UNITY))
    body = []
    for loss in losses:
        for u in unity:
            cells = []
            for c in camus:
                mine = ours.get((loss, c, u))
                theirs = table2_cell(arch, loss, u, c)
                text = report.fmt(*mine[:2]) if mine else "–"
                text += f" ({report.fmt(*theirs)})" if theirs else " (–)"
                cells.append(text)
            if any(ours.get((loss, c, u)) for c in camus):
                body.append([LOSS_NAMES.get(loss, loss), str(u)] + cells)
    return report.markdown_table(["loss", "unity \\ camus"] + [str(c) for c in camus], body)


def table2_trends(rows: Sequence[Mapping], *, arch: str, losses: Sequence[str]) -> str:
    """Per loss and CAMUS column, the change from the no-Unity cell to the largest
    Unity cell, ours beside the paper's (the trend Table 2's conclusion rests on)."""
    rows = [r for r in rows if r["arch"] == arch and r["structure"] == "la"
            and r["test_source"] == "unity" and _setting_sizes(r["setting"])]
    ours = report.across_seeds(rows, lambda r: (r["method"],) + _setting_sizes(r["setting"]),
                               lambda rs: rs[0]["dice_median"])
    body = []
    for loss in losses:
        for c in sorted({k[1] for k in ours if k[0] == loss}):
            us = sorted(k[2] for k in ours if k[0] == loss and k[1] == c)
            if 0 not in us or len(us) < 2:
                continue
            top = us[-1]
            d_ours = ours[(loss, c, top)][0] - ours[(loss, c, 0)][0]
            p0, p1 = table2_cell(arch, loss, 0, c), table2_cell(arch, loss, top, c)
            d_paper = p1[0] - p0[0] if p0 and p1 else math.nan
            body.append([LOSS_NAMES.get(loss, loss), str(c), f"0 -> {top}", f"{d_ours:+.3f}",
                         "–" if math.isnan(d_paper) else f"{d_paper:+.3f}"])
    return report.markdown_table(
        ["loss", "camus", "unity", "ours: change of median LA Dice", "paper: change"], body)


def table3_beside_ours(rows: Sequence[Mapping], *, dice_source: str, ef_source: str,
                       order: Sequence[str] = ()) -> str:
    """Table 3: per set-up, architecture and method, Dice per structure on
    ``dice_source`` (the annotated EchoNet images), their mean and the EF MAE on
    ``ef_source`` (EchoNet's test set), ours (mean ± std over seeds) with the paper's
    value in brackets where the paper has the row (the paper's aCCE row is aCCE with
    label dropout, the methods are matched by loss)."""
    ours = report.structure_ef_cells(rows, dice_sources=(dice_source,), ef_sources=(ef_source,))
    keys = sorted(ours, key=lambda k: tuple(report.order_key(v, order) for v in k))
    body = []
    for setting, arch, method in keys:
        theirs = table3_cell(arch, setting, method) or {}
        line = [setting, arch, method]
        for col in TABLE3_COLUMNS:
            mean, std, n = ours[(setting, arch, method)][col]
            text = "–" if n == 0 else report.fmt(mean, std, digits=2 if col == "ef_mae" else 3)
            if col in theirs:
                text += f" ({theirs[col]:g})"
            line.append(text)
        body.append(line)
    return report.markdown_table(
        ["setting", "arch", "method", "LV", "LVM", "LA", "mean", "EF MAE (%)"], body)
