"""Class ids and per-example label masks.

The ids are those of the CAMUS masks: 0 background, 1 LV cavity, 2 LV myocardium
(LVM), 3 left atrium (LA). Classes never overlap: one class per pixel.

Every example carries ``label_mask: bool[NUM_CLASSES]``, True where that class is
annotated in the example's mask. Background is always annotated. Pixels of a class
whose entry is False carry 0 (background) in the segmentation, as in the datasets.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np

BACKGROUND, LV, LVM, LA = 0, 1, 2, 3
NUM_CLASSES = 4
CLASS_NAMES: tuple[str, ...] = ("background", "lv", "lvm", "la")
FOREGROUND_CLASSES: tuple[int, ...] = (LV, LVM, LA)

# Spellings researchers use for the same structures.
_ALIASES = {
    "bg": BACKGROUND,
    "background": BACKGROUND,
    "lv": LV,
    "lv_endo": LV,
    "lv_cavity": LV,
    "lvm": LVM,
    "myo": LVM,
    "myocardium": LVM,
    "lv_epi": LVM,
    "la": LA,
    "left_atrium": LA,
}


def class_id(name: str | int) -> int:
    """Returns the class id for a name (case-insensitive) or a valid id.

    >>> class_id("LVM")
    2
    """
    if isinstance(name, (int, np.integer)) and not isinstance(name, bool):
        if not 0 <= int(name) < NUM_CLASSES:
            raise ValueError(f"class id {name} is outside 0..{NUM_CLASSES - 1}")
        return int(name)
    if not isinstance(name, str):
        raise ValueError(f"class must be a name or an int id, got {name!r}")
    key = name.strip().lower()
    if key not in _ALIASES:
        raise ValueError(
            f"unknown class name {name!r}; expected one of {sorted(_ALIASES)}")
    return _ALIASES[key]


def class_ids(names: Iterable[str | int]) -> tuple[int, ...]:
    """Sorted, de-duplicated class ids for names or ids.

    Strings are not iterated character by character: pass ``("lvm",)``, or a
    comma-separated string ``"lvm,la"``.
    """
    if isinstance(names, str):
        names = [n for n in names.split(",") if n.strip()]
    return tuple(sorted({class_id(n) for n in names}))


def label_mask_from_names(names: Iterable[str | int]) -> np.ndarray:
    """``bool[NUM_CLASSES]`` with background and the named classes True.

    >>> label_mask_from_names(["lv"]).tolist()
    [True, True, False, False]
    """
    mask = np.zeros(NUM_CLASSES, dtype=bool)
    mask[BACKGROUND] = True
    for c in class_ids(names):
        mask[c] = True
    return mask


def names_from_label_mask(label_mask) -> tuple[str, ...]:
    """Names of the annotated foreground classes of a ``bool[NUM_CLASSES]`` mask."""
    m = np.asarray(label_mask)
    if m.shape != (NUM_CLASSES,) or m.dtype != bool:
        raise ValueError(
            f"label_mask must be bool[{NUM_CLASSES}], got {m.dtype}{list(m.shape)}")
    return tuple(CLASS_NAMES[c] for c in FOREGROUND_CLASSES if m[c])


FULL_LABEL_MASK = label_mask_from_names(["lv", "lvm", "la"])
LV_ONLY_LABEL_MASK = label_mask_from_names(["lv"])
