"""Segmentation metrics: Dice per example and class, and its aggregation.

The functional form follows MONAI's ``compute_dice``: a ``[batch, class]`` array
with NaN where the ground truth of that class is empty, aggregated with a NaN-aware
mean. An unannotated class is always empty in the ground truth (its pixels carry 0),
so its Dice is NaN and it drops out of every mean without needing ``label_mask``.

Both functions accept numpy arrays (and then compute and return numpy) or JAX
arrays (and then return JAX arrays, jittable).
"""

from __future__ import annotations

from collections.abc import Sequence

import jax.numpy as jnp
import numpy as np

from echojax import labels as labels_lib


def _xp(*arrays):
    """numpy when every input is a numpy array (or scalar), else jax.numpy."""
    return np if all(isinstance(a, (np.ndarray, np.generic)) for a in arrays) else jnp


def dice_per_class(pred, labels, *, num_classes: int = labels_lib.NUM_CLASSES):
    r"""Dice coefficient per example and class.

    .. math::
        D_{b,c} = \frac{2\,|P_{b,c} \cap G_{b,c}|}{|P_{b,c}| + |G_{b,c}|}

    with ``P`` the predicted and ``G`` the ground-truth pixels of class ``c`` in
    example ``b``; NaN where ``|G_{b,c}| = 0`` (nothing to find, whatever was
    predicted: the convention of MONAI's ``ignore_empty=True``).

    Args:
      pred: ``int[B, ...]`` predicted class ids (e.g. ``[B, H, W]``).
      labels: ``int[B, ...]`` ground-truth class ids, same shape.
      num_classes: number of classes C; ids outside ``0 .. C-1`` raise for numpy
        input (they cannot be checked under ``jit`` and count for no class there).

    Returns:
      ``f32[B, C]``: numpy for numpy inputs, a JAX array otherwise.

    >>> import numpy as np
    >>> dice_per_class(np.array([[1, 1, 0, 0]]), np.array([[1, 0, 0, 0]]), num_classes=3)
    array([[0.8      , 0.6666667,       nan]], dtype=float32)
    """
    xp = _xp(pred, labels)
    if xp.shape(pred) != xp.shape(labels) or xp.ndim(pred) < 2:
        raise ValueError(
            f"dice_per_class: pred and labels must both be int[B, ...] of one shape, got "
            f"{list(xp.shape(pred))} and {list(xp.shape(labels))}")
    for name, arr in (("pred", pred), ("labels", labels)):
        if not np.issubdtype(xp.result_type(arr), np.integer):
            raise ValueError(f"dice_per_class: {name} must be integer class ids, got "
                             f"{xp.result_type(arr)}")
        if xp is np and arr.size and not (0 <= arr.min() and arr.max() < num_classes):
            raise ValueError(f"dice_per_class: {name} has ids in [{arr.min()}, {arr.max()}], "
                             f"expected 0..{num_classes - 1}")
    if num_classes < 1:
        raise ValueError(f"dice_per_class: num_classes must be positive, got {num_classes}")

    classes = xp.arange(num_classes)
    p = pred[..., None] == classes
    g = labels[..., None] == classes
    axes = tuple(range(1, xp.ndim(pred)))
    # Counts are exact in int32 up to 2**31 pixels; divide in float32 once.
    inter = xp.sum(p & g, axis=axes, dtype=xp.int32)
    total = xp.sum(p, axis=axes, dtype=xp.int32) + xp.sum(g, axis=axes, dtype=xp.int32)
    gt = xp.sum(g, axis=axes, dtype=xp.int32)
    dice = (2 * inter).astype(xp.float32) / xp.maximum(total, 1).astype(xp.float32)
    return xp.where(gt > 0, dice, xp.float32(np.nan))


def nanmean_per_class(dice):
    """``f32[C]``: mean of ``dice f32[N, C]`` over the examples where it is not NaN.

    NaN for a class with no example to average (never present in the ground truth).
    """
    xp = _xp(dice)
    if xp.ndim(dice) != 2:
        raise ValueError(f"nanmean_per_class: dice must be f32[N, C], got shape "
                         f"{list(xp.shape(dice))}")
    valid = ~xp.isnan(dice)
    total = xp.sum(xp.where(valid, dice, 0.0), axis=0)
    count = xp.sum(valid, axis=0)
    return xp.where(count > 0, total / xp.maximum(count, 1), xp.float32(np.nan)).astype(
        xp.float32)


def foreground_dice(dice, *, classes: Sequence[int] = labels_lib.FOREGROUND_CLASSES):
    """Mean over ``classes`` of the per-class mean Dice (the model-selection score).

    The paper keeps the checkpoint with the best validation foreground Dice; this is
    that score for ``dice f32[N, C]`` from :func:`dice_per_class` over the whole
    validation set: each class is averaged over the examples where it is present,
    then the classes are averaged with equal weight. Classes present in no example
    are left out; NaN if none is present.

    Returns:
      A 0-d float32 array (numpy or JAX, following the input).
    """
    xp = _xp(dice)
    per_class = nanmean_per_class(dice)
    ids = list(classes)
    if not ids or max(ids) >= xp.shape(dice)[1] or min(ids) < 0:
        raise ValueError(f"foreground_dice: classes {tuple(classes)} must be a non-empty "
                         f"subset of 0..{xp.shape(dice)[1] - 1}")
    chosen = per_class[xp.asarray(ids)]
    valid = ~xp.isnan(chosen)
    count = xp.sum(valid)
    total = xp.sum(xp.where(valid, chosen, 0.0))
    return xp.where(count > 0, total / xp.maximum(count, 1), xp.float32(np.nan)).astype(
        xp.float32)


__all__ = ["dice_per_class", "nanmean_per_class", "foreground_dice"]
