"""Contact sheet of the phantom styles with mask overlays (PNG).

    python experiments/contact_sheet.py docs/phantoms.png [--resolution 128] [--subjects 2]
"""

from __future__ import annotations

import argparse
import os
import tempfile

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from echojax import labels, phantoms  # noqa: E402

_COLOURS = {labels.LV: (1.0, 0.2, 0.2), labels.LVM: (0.2, 0.9, 0.2), labels.LA: (0.3, 0.5, 1.0)}


def render_contact_sheet(path: str, *, resolution: int = 128, subjects: int = 2,
                         seed: int = 0, dpi: int = 64) -> None:
    """Writes a PNG grid: one row per style, ED/ES of ``subjects`` subjects, raw image
    (markings included) beside the cone-masked image with its annotated labels.

    The file appears atomically (written to a temporary file, then renamed).
    """
    styles = list(phantoms.STYLES)
    cols = 2 * subjects * 2
    fig, axes = plt.subplots(len(styles), cols, figsize=(1.6 * cols, 1.8 * len(styles)),
                             squeeze=False)
    for row, style in enumerate(styles):
        for j in range(subjects):
            s = phantoms.sample_subject(style, j, seed=seed)
            view = s.views[0]
            for k, phase in enumerate(("ED", "ES")):
                r = phantoms.render_view(style, j, view, phase,
                                         shape=(resolution, resolution), seed=seed)
                ax_raw, ax_lab = axes[row, 4 * j + 2 * k], axes[row, 4 * j + 2 * k + 1]
                ax_raw.imshow(r.image_raw, cmap="gray", vmin=0, vmax=255)
                ax_raw.set_title(f"{view} {phase} raw", fontsize=7)
                rgb = np.repeat(r.image[..., None] / 255.0, 3, -1)
                for c, colour in _COLOURS.items():
                    m = r.segmentation == c
                    rgb[m] = 0.55 * rgb[m] + 0.45 * np.array(colour)
                ax_lab.imshow(rgb)
                ax_lab.set_title(f"EF {r.ef:.0f}%", fontsize=7)
        axes[row, 0].set_ylabel(style, fontsize=8)
    for ax in axes.ravel():
        ax.set_xticks([])
        ax.set_yticks([])
    fig.tight_layout(pad=0.3)
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(suffix=".png", dir=directory)
    os.close(fd)
    try:
        fig.savefig(tmp, dpi=dpi)
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise
    finally:
        plt.close(fig)


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("path")
    p.add_argument("--resolution", type=int, default=128)
    p.add_argument("--subjects", type=int, default=2)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    render_contact_sheet(args.path, resolution=args.resolution, subjects=args.subjects,
                         seed=args.seed)
    print(f"wrote {args.path} ({os.path.getsize(args.path) / 1024:.0f} KB)")


if __name__ == "__main__":
    main()
