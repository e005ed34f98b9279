"""What the manual-download builders (camus, echonet_dynamic, unity_imaging) share:
checking the manual folder, the patient-level 80/10/10 split, array_record as the
default file format, and turning a raw frame + mask into a checked example.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import tensorflow_datasets as tfds

from echojax import labels
from echojax.data import features as features_lib
from echojax.data import preprocess

SPLITS = ("train", "validation", "test")


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


def default_to_array_record(builder: tfds.core.DatasetBuilder, file_format) -> None:
    """Makes array_record the default format when preparing (reading needs no
    TensorFlow then); a dataset already prepared keeps the format it was written in."""
    if file_format is None and not (builder.data_path / "dataset_info.json").exists():
        builder.info.set_file_format("array_record", override=True)


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


def sector_mask(frames: np.ndarray, *, where: str) -> np.ndarray | None:
    """The ultrasound sector of ``frames`` (``uint8[..., H, W]``) by
    ``echojax.data.cone.cone_mask``, or None when it cannot be estimated.

    The estimator copes with codec ringing outside the sector itself (it thresholds
    against the measured noise floor), so no grey levels are altered here: zeroing dim
    pixels would also erase dim sector edges. The caller skips the file (and counts it)
    on None: a frame whose markings cannot be removed is not kept.
    """
    from echojax.data import cone  # pylint: disable=g-import-not-at-top

    try:
        return cone.cone_mask(frames)
    except ValueError as e:
        logging.warning("%s: no ultrasound sector found (%s); skipped", where, e)
        return None
