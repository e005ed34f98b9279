"""echojax.paper: the published numbers and the tables that set ours beside them."""

import json
import math
from importlib import resources

from echojax import paper


def _row(run, setting, median, method="acce"):
    return {"run": run, "setting": setting, "method": method, "arch": "unet", "structure": "la",
            "test_source": "unity", "dice_median": median}


def test_numbers_hold_every_table2_cell_with_its_source():
    n = paper.numbers()
    cells = n["table2"]["cells"]
    # 3 architectures x 3 losses x 4 Unity sizes x 4 CAMUS sizes, each [mean, std].
    assert sum(len(c) for a in cells.values() for loss in a.values() for c in loss.values()) == 144
    assert all("source" in v for k, v in n.items() if not k.startswith("_"))
    # Values quoted in the paper's text and tables (Sec. 5.1, 5.3.2, Tables 2-3).
    assert (n["fig2_cross_domain_drop"]["min"], n["fig2_cross_domain_drop"]["max"]) == (0.08, 0.21)
    assert paper.table2_cell("swin_unet", "acce", 200, 100) == (0.464, 0.04)
    assert paper.table3_cell("attention_unet", "balanced", "abce")["ef_mae"] == 2.52
    assert paper.table2_cell("unet", "cce", 0, 100) is None
    # The file is valid JSON shipped with the package.
    json.loads(resources.files("echojax").joinpath("paper_numbers.json").read_text())


def test_table2_beside_ours_puts_the_papers_cell_under_the_paper_sizes():
    rows = [_row("r1", "c100_u0", 0.5), _row("r2", "c100_u0", 0.7), _row("r3", "c100_u400", 0.2)]
    text = paper.table2_beside_ours(rows, arch="unet", losses=["acce"])
    std = math.sqrt(((0.5 - 0.6) ** 2 + (0.7 - 0.6) ** 2) / 1)  # sample std of two runs
    assert f"| aCCE | 0 | 0.600 ± {std:.3f} (0.658 ± 0.060) |" in text
    assert "| aCCE | 400 | 0.200 (0.673 ± 0.040) |" in text
    # Rows of ours that are absent (Unity 100, 200) are left out.
    assert "| aCCE | 100 |" not in text


def test_table2_trends_compare_the_change_down_a_column():
    rows = [_row("r1", "c100_u0", 0.5), _row("r3", "c100_u400", 0.2)]
    text = paper.table2_trends(rows, arch="unet", losses=["acce"])
    # ours 0.2 - 0.5; the paper's U-Net aCCE c100: 0.673 - 0.658.
    assert "| aCCE | 100 | 0 -> 400 | -0.300 | +0.015 |" in text
