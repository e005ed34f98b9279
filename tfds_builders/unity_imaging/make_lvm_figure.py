"""Draws ``lvm_construction.png`` for the README: the ``midmyo`` LVM construction on a
phantom frame, beside the phantom's true myocardium.

    python -m tfds_builders.unity_imaging.make_lvm_figure [--out PATH]

The curves are made the way the fixture script makes them (``make_dummy_data``): the
endocardial curve traced on the phantom's LV, the mid-myocardial curve halfway between
it and the phantom's epicardium. The builder then rebuilds the LVM from those two
curves alone. The Dice between rebuilt and true LVM is printed and written in the title.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from echojax import labels, phantoms  # noqa: E402
from tfds_builders import make_dummy_data  # noqa: E402
from tfds_builders.unity_imaging import unity_imaging_dataset_builder as unity  # noqa: E402

SHAPE = (240, 288)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path,
                        default=Path(__file__).resolve().parent / "lvm_construction.png")
    args = parser.parse_args()
    r = phantoms.render_view("unity_like", 0, "2CH", "ED", shape=SHAPE, seed=5)
    ends = (r.landmarks["mitral_left"], r.landmarks["mitral_right"])
    lv = make_dummy_data.open_arc(r.classes == labels.LV, *ends, n_points=11)
    mid = make_dummy_data.midmyo_arc(lv, np.isin(r.classes, (1, 2)), ends)
    frame = {"curve-lv-endo": make_dummy_data._curve(lv),  # pylint: disable=protected-access
             "curve-lv-midmyo": make_dummy_data._curve(mid)}  # pylint: disable=protected-access
    cfg = unity.UnityConfig(name="figure")
    mask, _, _ = unity.label_frame(frame, SHAPE, cfg, where="figure")
    endo_line = unity.spline(lv)
    mid_line = unity.spline(mid)
    outer = unity.mirror_across(endo_line, mid_line)
    got, truth = mask == labels.LVM, r.classes == labels.LVM
    dice = 2 * (got & truth).sum() / (got.sum() + truth.sum())
    print(f"LVM Dice (midmyo construction vs phantom myocardium): {dice:.3f}")

    fig, axes = plt.subplots(1, 2, figsize=(10, 4.6))
    for ax in axes:
        ax.imshow(r.image_raw, cmap="gray")
        ax.set_axis_off()
    ax = axes[0]
    ax.plot(*endo_line.T, color="red", lw=1.2, label="curve-lv-endo (spline)")
    ax.plot(*mid_line.T, color="lime", lw=1.2, label="curve-lv-midmyo (spline)")
    ax.plot(*outer.T, color="orange", lw=1.2, ls="--", label="outer = 2 m - e")
    ax.plot(*lv.T, "o", color="red", ms=3)
    ax.plot(*mid.T, "o", color="lime", ms=3)
    ax.legend(loc="lower left", fontsize=7, framealpha=0.8)
    ax.set_title("curves: endo mirrored across mid-myocardium", fontsize=9)
    ax = axes[1]
    overlay = np.zeros(SHAPE + (4,))
    overlay[got & truth] = (1, 0.6, 0, 0.6)
    overlay[got & ~truth] = (1, 0, 0, 0.8)
    overlay[~got & truth] = (0, 0.6, 1, 0.8)
    overlay[mask == labels.LV] = (1, 1, 1, 0.25)
    ax.imshow(overlay)
    ax.set_title(f"LVM built (orange: agrees, red: extra, blue: missed); Dice {dice:.2f}",
                 fontsize=9)
    fig.tight_layout()
    tmp = args.out.with_name(args.out.name + ".tmp.png")
    fig.savefig(tmp, dpi=90)
    tmp.replace(args.out)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
