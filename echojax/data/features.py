"""The one feature dict every echojax TFDS builder emits (see DESIGN.md, "Data").

Images and masks are zlib-compressed uint8 tensors: they decode without TensorFlow
or an image codec, several times faster than PNG, and compress masks well.
"""

from __future__ import annotations

import numpy as np
import tensorflow_datasets as tfds

from echojax import labels

RESOLUTIONS = (256, 128, 64)
VIEWS = ("2CH", "4CH")
PHASES = ("ED", "ES", "unknown")  # "unknown": a frame not at ED or ES


def features(resolution: int) -> tfds.features.FeaturesDict:
    """Feature spec for square ``resolution`` x ``resolution`` examples.

    - image: uint8[R, R, 1], grey levels (cone-masked where the builder says so).
    - segmentation: uint8[R, R, 1], class ids 0..3 (see ``echojax.labels``).
    - label_mask: bool[4], True where the class is annotated in ``segmentation``.
    - source: dataset name, e.g. ``camus`` or ``synthetic_echo/camus_like``.
    - patient_id: subject identifier, unique within ``source``.
    - view: ``2CH`` or ``4CH`` (apical views). phase: ``ED``, ``ES`` or ``unknown``.
    - ef: ejection fraction in percent, NaN when unknown.
    - pixel_spacing_mm: float32[2], (row, column) spacing after resizing.
    """
    if resolution <= 0:
        raise ValueError(f"resolution must be positive, got {resolution}")
    zlib = tfds.features.Encoding.ZLIB
    return tfds.features.FeaturesDict({
        "image": tfds.features.Tensor(
            shape=(resolution, resolution, 1), dtype=np.uint8, encoding=zlib),
        "segmentation": tfds.features.Tensor(
            shape=(resolution, resolution, 1), dtype=np.uint8, encoding=zlib),
        "label_mask": tfds.features.Tensor(shape=(labels.NUM_CLASSES,), dtype=np.bool_),
        "source": tfds.features.Text(),
        "patient_id": tfds.features.Text(),
        "view": tfds.features.Text(),
        "phase": tfds.features.Text(),
        "ef": tfds.features.Scalar(dtype=np.float32),
        "pixel_spacing_mm": tfds.features.Tensor(shape=(2,), dtype=np.float32),
    })


def check_example(example: dict, resolution: int, *, where: str) -> None:
    """Raises ValueError naming ``where`` if an example breaks the contract."""
    img, seg, lm = example["image"], example["segmentation"], example["label_mask"]
    want = (resolution, resolution, 1)
    for key, arr in (("image", img), ("segmentation", seg)):
        arr = np.asarray(arr)
        if arr.shape != want or arr.dtype != np.uint8:
            raise ValueError(
                f"{where}: {key} must be uint8{list(want)}, got {arr.dtype}{list(arr.shape)}")
    seg = np.asarray(seg)
    if seg.max(initial=0) >= labels.NUM_CLASSES:
        raise ValueError(
            f"{where}: segmentation values must be in 0..{labels.NUM_CLASSES - 1}, "
            f"found {int(seg.max())}")
    lm = np.asarray(lm)
    if lm.shape != (labels.NUM_CLASSES,) or lm.dtype != bool or not lm[0]:
        raise ValueError(f"{where}: label_mask must be bool[4] with background True, got {lm!r}")
    present = np.unique(seg)
    unannotated = [int(c) for c in present if c and not lm[c]]
    if unannotated:
        raise ValueError(
            f"{where}: segmentation has pixels of classes {unannotated} that label_mask "
            f"marks as not annotated")
    if example["view"] not in VIEWS:
        raise ValueError(f"{where}: view must be one of {VIEWS}, got {example['view']!r}")
    if example["phase"] not in PHASES:
        raise ValueError(f"{where}: phase must be one of {PHASES}, got {example['phase']!r}")
