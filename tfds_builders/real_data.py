"""What the manual-download builders (camus, echonet_dynamic, unity_imaging) share:
checking the manual folder, the patient-level 80/10/10 split, and turning a raw frame +
mask into a checked example (array_record as the default file format comes with
``tfds_builders.base.EchoBuilder``, the base class of every builder).
"""

from __future__ import annotations

import hashlib
import itertools
import logging
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path

import numpy as np

from echojax import labels
from echojax.data import cone, preprocess
from echojax.data import features as features_lib

SPLITS = ("train", "validation", "test")
MAX_LISTED_FALLBACKS = 100


def require_paths(root: Path, relpaths: Iterable[str], *, dataset: str) -> None:
    """Raises FileNotFoundError listing every missing ``root/relpath``."""
    root = Path(root)
    missing = [str(root / p) for p in relpaths if not (root / p).exists()]
    if missing:
        shown = "\n  ".join(missing[:20])
        more = f"\n  ... and {len(missing) - 20} more" if len(missing) > 20 else ""
        raise FileNotFoundError(
            f"{dataset}: {len(missing)} expected path(s) missing under the manual "
            f"directory {root}:\n  {shown}{more}\nSee the MANUAL_DOWNLOAD_INSTRUCTIONS of "
            f"the {dataset} builder (tfds_builders/{dataset}/README.md) for what to "
            f"download and where to put it.")


def hash_split(patient_id: str) -> str:
    """Deterministic 80/10/10 train/validation/test split by patient.

    The bucket is ``sha256(patient_id) mod 10`` (0-7 train, 8 validation, 9 test): it
    depends on the patient alone, so adding patients never moves existing ones, and
    all frames of a patient land in the same split.
    """
    bucket = int(hashlib.sha256(patient_id.encode("utf-8")).hexdigest(), 16) % 10
    return "train" if bucket < 8 else ("validation" if bucket == 8 else "test")


def make_example(*, image: np.ndarray, mask: np.ndarray, spacing_mm, resolution: int,
                 label_mask: np.ndarray, source: str, patient_id: str, view: str,
                 phase: str, ef: float, where: str, mask_where: str | None = None) -> dict:
    """Resizes a raw frame and its mask to ``resolution`` and returns the checked
    feature dict (see ``echojax.data.features``).

    ``mask`` must carry zeros for the classes whose ``label_mask`` entry is False.
    """
    img, seg, spacing = preprocess.resize_pair(
        image, mask, spacing_mm, resolution, where=where, mask_where=mask_where)
    label_mask = np.asarray(label_mask, dtype=bool)
    raw_classes = [int(c) for c in np.unique(preprocess.as_class_mask(mask, where=where))]
    for c in raw_classes:
        if c and not label_mask[c]:
            raise ValueError(
                f"{mask_where or where}: class {labels.CLASS_NAMES[c]} has pixels but is "
                f"not marked as annotated")
    example = {
        "image": img[..., None],
        "segmentation": seg[..., None],
        "label_mask": label_mask,
        "source": source,
        "patient_id": patient_id,
        "view": view,
        "phase": phase,
        "ef": np.float32(ef),
        "pixel_spacing_mm": spacing,
    }
    features_lib.check_example(example, resolution, where=where)
    return example


def round_image(array: np.ndarray, *, where: str, metadata: dict | None = None,
                dataset: str) -> np.ndarray:
    """A grey frame read from a file as ``uint8[H, W]``: floats (CAMUS 2023 NIfTI images
    load as float32 with values 0-255) by ``preprocess.round_to_uint8_image``; pixels
    that needed rounding are logged per file and summed in
    ``metadata["rounded_image_pixels"] = {"files": n, "pixels": n}``. Values outside
    0..255 are an error naming ``where``."""
    image, rounded = preprocess.round_to_uint8_image(array, where=where)
    if rounded:
        counts = {"files": 0, "pixels": 0}
        if metadata is not None:
            counts = metadata.setdefault("rounded_image_pixels", counts)
        counts["files"] += 1
        counts["pixels"] += int(rounded)
        logging.warning("%s: %s: %d pixels with non-integer grey levels (%s) rounded to the "
                        "nearest integer (%d files, %d pixels so far)", dataset, where, rounded,
                        np.asarray(array).dtype, counts["files"], counts["pixels"])
    return image


# Safe sector handling and partial releases. What a preparation did is kept in
# ``builder.info.metadata`` (a ``tfds.core.MetadataDict``: the builder's ``_info`` passes
# ``metadata=tfds.core.MetadataDict()``), saved as ``metadata.json`` beside
# ``dataset_info.json``:
# - "sector_handling": {"estimated_sector": n, "outside_fan_only": n, "unmasked": n,
#   "estimate_rejected": n}, recordings by what ``echojax.data.cone.clear_outside_sector``
#   did ("estimate_rejected": how many had their geometric estimate rejected), and
#   "sector_fallbacks": the first MAX_LISTED_FALLBACKS rejected recordings with the reason;
# - "skipped": {reason: count} of recordings a builder skipped;
# - "rounded_image_pixels": {"files": n, "pixels": n}, see ``round_image``;
# - "omitted_splits": {split: message} of the splits left out because empty.


def clear_sector(frames: np.ndarray, label_maps: np.ndarray | None = None, *, where: str,
                 metadata: dict, estimate: bool = True):
    """``echojax.data.cone.clear_outside_sector`` for one recording of a builder, with
    the outcome logged and counted in ``metadata`` (the builder's ``info.metadata``).

    Args:
      frames: uint8[..., H, W], all frames of the recording (the sector is judged on
        all of them).
      label_maps: optional class ids [..., H, W] of its labelled frames.
      where: the recording's file, for the log.
      metadata: ``builder.info.metadata``; ``"sector_handling"`` and
        ``"sector_fallbacks"`` are updated (see the module docstring).
      estimate: False: no geometric estimate, only what is certainly outside the fan is
        zeroed (for sources whose publishers already cleared the outside of the fan).

    Returns:
      (processed frames, ``cone.SectorReport``). Nothing is ever dropped.
    """
    out, report = cone.clear_outside_sector(frames, label_maps, estimate=estimate)
    counts = metadata.setdefault(
        "sector_handling", {**{a: 0 for a in cone.ACTIONS}, "estimate_rejected": 0})
    counts[report.action] += 1
    if report.fell_back:
        counts["estimate_rejected"] += 1
        listed = metadata.setdefault("sector_fallbacks", {})
        if len(listed) < MAX_LISTED_FALLBACKS:
            listed[str(where)] = report.describe()
        logging.warning("%s: sector estimate rejected, %s", where, report.describe())
    return out, report


def log_sector_summary(metadata: Mapping, *, dataset: str) -> None:
    """One log line with the sector counts of a preparation (if any)."""
    counts = metadata.get("sector_handling")
    if counts:
        logging.info("%s: sector handling %s (see metadata.json: sector_handling, "
                     "sector_fallbacks)", dataset, dict(counts))


def count_skipped(metadata: dict, reason: str, n: int = 1) -> None:
    """Adds ``n`` to ``metadata["skipped"][reason]``."""
    skipped = metadata.setdefault("skipped", {})
    skipped[reason] = skipped.get(reason, 0) + n


_END = object()


def drop_empty_splits(generators: Mapping[str, Iterable], *, dataset: str,
                      listed: Mapping[str, int], unit: str = "recordings",
                      metadata: dict | None = None) -> dict[str, Iterator]:
    """The split generators of ``_split_generators`` without the empty ones.

    TFDS cannot finalise a split that yields no example ("No examples were yielded"),
    which a subset of a release causes (five EchoNet-Dynamic videos, all ``TEST``;
    CAMUS patients whose hashed split has no test patient), as do recordings all
    skipped. Each generator is advanced to its first example here; a split without one
    is left out with a warning that names it and the counts, and recorded in
    ``metadata["omitted_splits"]``. If every split is empty, this stops with a
    ValueError saying so.

    Args:
      generators: ``{split: iterable of (key, example)}``.
      listed: ``{split: number of recordings the release lists for it}``.
      unit: what ``listed`` counts, for the messages.
    """
    out, omitted = {}, {}
    for split, gen in generators.items():
        it = iter(gen)
        first = next(it, _END)
        if first is _END:
            n = int(listed.get(split, 0))
            why = (f"no {unit} of the manual directory belong to it" if n == 0 else
                   f"all {n} {unit} listed for it were skipped (see the warnings above)")
            omitted[split] = f"split {split!r} has no examples: {why}"
        else:
            out[split] = itertools.chain([first], it)
    counts = ", ".join(f"{s}: {int(listed.get(s, 0))}" for s in generators)
    if not out:
        raise ValueError(f"{dataset}: no split has any example ({unit} listed per split: "
                         f"{counts}); nothing to prepare")
    for split, msg in omitted.items():
        logging.warning("%s: %s; it is left out of the prepared dataset (%s listed per "
                        "split: %s; kept splits: %s)", dataset, msg, unit, counts,
                        ", ".join(out))
        if metadata is not None:
            metadata.setdefault("omitted_splits", {})[split] = msg
    return out


def fill_polygon(rows: np.ndarray, cols: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """``bool[H, W]``: pixels whose centre ``(r, c)`` lies inside the closed polygon with
    vertices ``(rows[i], cols[i])`` by the even-odd rule, or on its boundary.

    The pixel set of ``skimage.draw.polygon(rows, cols, shape)`` (equal on polygons in
    general position; pixel centres exactly on a vertex or edge of a self-intersecting
    polygon can differ), computed one scanline per image row: the cost is
    O(rows x vertices) vectorised rather than O(bounding-box pixels x vertices), which
    matters for the densely sampled spline contours of Unity (a 3,000-vertex curve on a
    600 x 800 frame: ~20 ms instead of ~1.7 s).
    """
    h, w = shape
    vy, vx = np.asarray(rows, np.float64), np.asarray(cols, np.float64)
    if vy.shape != vx.shape or vy.ndim != 1:
        raise ValueError(f"fill_polygon: rows and cols must be 1-D of equal length, got "
                         f"{vy.shape} and {vx.shape}")
    out = np.zeros((h, w), bool)
    if vy.size == 0:
        return out
    r_lo, r_hi = max(int(np.ceil(vy.min())), 0), min(int(np.floor(vy.max())), h - 1)
    if r_lo > r_hi:
        return out
    # Edge e runs from vertex e + 1 to vertex e; x where it meets row y, computed from
    # vertex e + 1 as pnpoly does.
    y0, x0, y1, x1 = vy, vx, np.roll(vy, -1), np.roll(vx, -1)
    y = np.arange(r_lo, r_hi + 1, dtype=np.float64)[:, None]

    def x_at(ri, ei):
        return (x0[ei] - x1[ei]) * (y[ri, 0] - y1[ei]) / (y0[ei] - y1[ei]) + x1[ei]

    # Interior: a centre (y, c) is inside when an odd number of edges crossing row y
    # (half-open in y, so a vertex on the row counts once) meet it at x > c; x > c is
    # ceil(x) > c for integer c, so a reversed cumulative count over ceil(x) gives
    # every column's parity at once.
    ri, ei = np.nonzero((y0 > y) != (y1 > y))
    k = np.clip(np.ceil(x_at(ri, ei)), 0, w).astype(np.int64)
    crossings = np.zeros((r_hi - r_lo + 1, w + 1), np.int32)
    np.add.at(crossings, (ri, k), 1)
    out[r_lo:r_hi + 1] = np.cumsum(crossings[:, :0:-1], axis=1)[:, ::-1] % 2 == 1
    # Boundary: centres exactly on a slanted edge, and on horizontal edges.
    ri, ei = np.nonzero((np.minimum(y0, y1) <= y) & (y <= np.maximum(y0, y1)) & (y0 != y1))
    xs = x_at(ri, ei)
    on = (xs == np.round(xs)) & (xs >= 0) & (xs <= w - 1)
    out[ri[on] + r_lo, xs[on].astype(np.int64)] = True
    for e in np.flatnonzero((y0 == y1) & (y0 == np.round(y0)) & (y0 >= 0) & (y0 <= h - 1)):
        a = max(int(np.ceil(min(x0[e], x1[e]))), 0)
        b = min(int(np.floor(max(x0[e], x1[e]))), w - 1)
        out[int(y0[e]), a:b + 1] = True
    return out

