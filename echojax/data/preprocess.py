"""Bringing real echo frames and masks to the square training resolution.

The paper resized every image to 256 x 256 (Islam et al., MELBA 2026, Sec. 4.4).
The real datasets are not square (CAMUS frames are about 778 x 549 pixels, Unity
frames vary), so a rule is needed:

- **Aspect**: frames are resized *directly* to R x R, as the paper did, without
  cropping or padding. The anatomy is stretched differently along rows and columns;
  ``pixel_spacing_mm`` records this, row and column spacing being updated separately
  (``new_row_spacing = row_spacing * H / R``, ``new_col_spacing = col_spacing * W / R``),
  so areas and volumes computed in millimetres stay right.
- **Image**: area averaging (``cv2.INTER_AREA``) when the frame shrinks along both
  axes (the usual case: it low-pass filters the speckle instead of aliasing it);
  bilinear (``cv2.INTER_LINEAR``) otherwise (EchoNet's 112 x 112 frames growing to
  128 or 256).
- **Mask**: nearest neighbour with pixel-centre alignment: output pixel ``i`` takes
  input pixel ``floor((i + 0.5) * H / R)``. Class ids are never blended.

Errors name the file (``where=``) and what was expected.
"""

from __future__ import annotations

import cv2
import numpy as np

from echojax import labels


def _squeeze_2d(array: np.ndarray, *, what: str, where: str) -> np.ndarray:
    """Drops singleton axes (e.g. a NIfTI z axis of 1) and demands a 2-D array."""
    array = np.asarray(array)
    squeezed = np.squeeze(array) if array.ndim > 2 else array
    if squeezed.ndim != 2 or min(squeezed.shape) < 2:
        raise ValueError(
            f"{where}: {what} must be a 2-D frame (singleton axes allowed), "
            f"got shape {list(array.shape)}")
    return squeezed


def as_uint8_image(array: np.ndarray, *, where: str) -> np.ndarray:
    """A grey-level frame as ``uint8[H, W]``.

    Accepts any numeric dtype whose values are whole numbers in 0..255 (NIfTI readers
    often return float64); anything else is an error, never clipped.
    """
    image = _squeeze_2d(array, what="image", where=where)
    if image.dtype == np.uint8:
        return image
    if not (np.issubdtype(image.dtype, np.number) and not np.iscomplexobj(image)):
        raise ValueError(f"{where}: image must be numeric, got dtype {image.dtype}")
    values = image.astype(np.float64)
    if not np.all(np.isfinite(values)):
        raise ValueError(f"{where}: image has non-finite values")
    lo, hi = float(values.min()), float(values.max())
    if lo < 0 or hi > 255 or not np.all(values == np.round(values)):
        raise ValueError(
            f"{where}: image values must be whole numbers in 0..255, "
            f"found range [{lo}, {hi}] (dtype {image.dtype})")
    return values.astype(np.uint8)


def round_to_uint8_image(array: np.ndarray, *, where: str) -> tuple[np.ndarray, int]:
    """A grey-level frame stored as floats (CAMUS 2023 NIfTI images load as float32
    with values 0-255) as ``uint8[H, W]``, and how many pixels had to be rounded.

    Whole numbers in 0..255 become uint8 exactly; other values in [0, 255] are rounded
    to the nearest integer (halves up) and counted, for the caller to log; a value
    outside [0, 255], or not finite, is an error naming ``where``. Integer dtypes go
    through ``as_uint8_image`` (0 rounded).
    """
    image = _squeeze_2d(array, what="image", where=where)
    if not np.issubdtype(image.dtype, np.floating):
        return as_uint8_image(image, where=where), 0
    values = image.astype(np.float64)
    if not np.all(np.isfinite(values)):
        raise ValueError(f"{where}: image has {int((~np.isfinite(values)).sum())} "
                         f"non-finite values (dtype {image.dtype})")
    lo, hi = float(values.min()), float(values.max())
    if lo < 0 or hi > 255:
        raise ValueError(
            f"{where}: image values must lie in 0..255, found range [{lo}, {hi}] "
            f"(dtype {image.dtype})")
    rounded = np.floor(values + 0.5)
    return rounded.astype(np.uint8), int((rounded != values).sum())


def as_class_mask(array: np.ndarray, *, where: str) -> np.ndarray:
    """A segmentation as ``uint8[H, W]`` with class ids 0..NUM_CLASSES-1."""
    mask = _squeeze_2d(array, what="mask", where=where)
    values = np.asarray(mask, dtype=np.float64)
    bad = ~np.isfinite(values) | (values != np.round(values)) | (values < 0) | (
        values >= labels.NUM_CLASSES)
    if bad.any():
        found = np.unique(values[bad])[:8].tolist()
        raise ValueError(
            f"{where}: mask values must be class ids 0..{labels.NUM_CLASSES - 1} "
            f"({', '.join(labels.CLASS_NAMES)}), found {found}")
    return values.astype(np.uint8)


def _check_size(size: int) -> None:
    if not isinstance(size, (int, np.integer)) or size < 2:
        raise ValueError(f"output size must be an int >= 2, got {size!r}")


def resize_image(image: np.ndarray, size: int, *, where: str = "image") -> np.ndarray:
    """``uint8[H, W] -> uint8[size, size]``: area averaging when shrinking along both
    axes, bilinear otherwise (see the module docstring)."""
    _check_size(size)
    image = as_uint8_image(image, where=where)
    h, w = image.shape
    if (h, w) == (size, size):
        return image.copy()
    shrinking = h >= size and w >= size
    interpolation = cv2.INTER_AREA if shrinking else cv2.INTER_LINEAR
    # cv2 takes (width, height).
    return cv2.resize(image, (int(size), int(size)), interpolation=interpolation)


def nearest_indices(n_in: int, n_out: int) -> np.ndarray:
    """Source index of each output pixel for centre-aligned nearest neighbour:
    ``floor((i + 0.5) * n_in / n_out)``, ``int64[n_out]``."""
    i = np.arange(n_out, dtype=np.float64)
    return np.minimum(np.floor((i + 0.5) * n_in / n_out).astype(np.int64), n_in - 1)


def resize_mask(mask: np.ndarray, size: int, *, where: str = "mask") -> np.ndarray:
    """``uint8[H, W] -> uint8[size, size]``, nearest neighbour, class ids preserved."""
    _check_size(size)
    mask = as_class_mask(mask, where=where)
    h, w = mask.shape
    return mask[np.ix_(nearest_indices(h, size), nearest_indices(w, size))]


def resized_spacing(spacing_mm, shape, size: int) -> np.ndarray:
    """(row, col) spacing after resizing a ``shape = (H, W)`` frame to ``size``.

    NaN (unknown spacing) stays NaN; a non-positive known spacing is an error.
    """
    _check_size(size)
    spacing = np.asarray(spacing_mm, dtype=np.float64).reshape(-1)
    if spacing.shape != (2,):
        raise ValueError(f"spacing must be (row, col), got {spacing_mm!r}")
    known = spacing[~np.isnan(spacing)]
    if np.any(~np.isfinite(known)) or np.any(known <= 0):
        raise ValueError(f"spacing must be positive or NaN, got {spacing.tolist()}")
    h, w = shape
    return np.array([spacing[0] * h / size, spacing[1] * w / size], dtype=np.float32)


def resize_pair(image: np.ndarray, mask: np.ndarray, spacing_mm, size: int, *,
                where: str, mask_where: str | None = None):
    """Resizes a frame and its mask together.

    Args:
      image: grey frame, ``[H, W]`` (singleton axes allowed), values 0..255.
      mask: class ids ``[H, W]``, same shape as ``image``.
      spacing_mm: (row, col) spacing of the input in mm; NaN where unknown.
      size: output side R.
      where: the image file, for error messages; ``mask_where`` the mask file.

    Returns:
      ``(uint8[R, R], uint8[R, R], float32[2])``: image, mask, updated spacing.
    """
    mask_where = mask_where or where
    image = as_uint8_image(image, where=where)
    mask = as_class_mask(mask, where=mask_where)
    if image.shape != mask.shape:
        raise ValueError(
            f"{mask_where}: mask shape {list(mask.shape)} does not match image shape "
            f"{list(image.shape)} of {where}")
    return (resize_image(image, size, where=where), resize_mask(mask, size, where=mask_where),
            resized_spacing(spacing_mm, image.shape, size))

