"""Annotation consistency between two datasets by registration (Islam et al., MELBA 2026,
Sec. 5.3.2).

The paper registers CAMUS frames to visually similar Unity Imaging frames, carries the
CAMUS labels over with the transform and scores them against the Unity labels (Dice
0.83 +- 0.07 over 10 image pairs), to show that the two datasets annotate the same
anatomy differently. This module does the three steps:

1. ``select_pairs``: for every candidate target image, the most similar source image by
   normalised cross-correlation (our choice: the paper says "visually similar" without a
   measure), keeping the ``n`` best-matching pairs, each source image used once.
2. ``register``: a 2D affine registration of the source image onto the target with
   SimpleITK (Mattes mutual information, multi-resolution gradient descent, initialised
   by the images' centres of mass). Our choice: the paper names no transform or metric;
   affine is the richest transform that keeps a label map's topology without a
   regulariser, and mutual information tolerates the datasets' different gains.
3. ``transfer_labels``: the source label map resampled with nearest-neighbour
   interpolation through the found transform, then Dice per structure against the
   target's labels (``metrics.dice_per_class``).

Registration error and annotation difference both lower that Dice. ``within_pairs``
gives the control: the same procedure between images of the *same* dataset, whose
Dice is what registration alone reaches; the gap between the two is the annotation
difference (our addition; the paper reports the cross-dataset number only).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import numpy as np
import SimpleITK as sitk

from echojax import labels as labels_lib
from echojax import metrics


@dataclasses.dataclass(frozen=True)
class Pair:
    """One registration pair: indices into the source and target image stacks."""
    source: int
    target: int
    similarity: float  # normalised cross-correlation of the two images before registration


def ncc_matrix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """``f64[N, M]``: normalised cross-correlation of every image of ``a u8/float[N, H, W]``
    with every image of ``b [M, H, W]`` (same ``H, W``)."""
    a = np.asarray(a, np.float64)
    b = np.asarray(b, np.float64)
    if a.ndim != 3 or b.ndim != 3 or a.shape[1:] != b.shape[1:]:
        raise ValueError(f"ncc_matrix needs two [N, H, W] stacks of one size, "
                         f"got {a.shape} and {b.shape}")

    def unit(x):
        x = x.reshape(len(x), -1)
        x = x - x.mean(axis=1, keepdims=True)
        norm = np.linalg.norm(x, axis=1, keepdims=True)
        return x / np.where(norm > 0, norm, 1.0)

    return unit(a) @ unit(b).T


def select_pairs(source: np.ndarray, target: np.ndarray, n: int, *,
                 exclude_same_index: bool = False) -> list[Pair]:
    """The ``n`` target images that best match some source image, each with its best
    match; each source image is used at most once (greedy on similarity).

    ``exclude_same_index`` forbids pairing an image with itself (for ``within_pairs``,
    where source and target are one stack).
    """
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    sim = ncc_matrix(source, target)
    if exclude_same_index:
        k = min(sim.shape)
        sim[np.arange(k), np.arange(k)] = -np.inf
    pairs: list[Pair] = []
    used_s, used_t = set(), set()
    for flat in np.argsort(-sim, axis=None, kind="stable"):
        s, t = np.unravel_index(flat, sim.shape)
        if s in used_s or t in used_t or not np.isfinite(sim[s, t]):
            continue
        if exclude_same_index and (t, s) in {(p.source, p.target) for p in pairs}:
            continue  # the same two images in the other direction
        pairs.append(Pair(int(s), int(t), float(sim[s, t])))
        used_s.add(s)
        used_t.add(t)
        if len(pairs) == n:
            break
    if len(pairs) < n:
        raise ValueError(f"only {len(pairs)} pairs available, {n} requested "
                         f"({len(source)} source and {len(target)} target images)")
    return pairs


def _image(array: np.ndarray) -> sitk.Image:
    return sitk.GetImageFromArray(np.asarray(array, np.float32))


def register(fixed: np.ndarray, moving: np.ndarray, *, iterations: int = 200,
             seed: int = 0) -> sitk.Transform:
    """Affine transform mapping ``fixed [H, W]`` pixel coordinates into ``moving [H, W]``
    (SimpleITK's convention: resampling ``moving`` through it aligns it with ``fixed``)."""
    f, m = _image(fixed), _image(moving)
    initial = sitk.CenteredTransformInitializer(
        f, m, sitk.AffineTransform(2), sitk.CenteredTransformInitializerFilter.MOMENTS)
    reg = sitk.ImageRegistrationMethod()
    reg.SetMetricAsMattesMutualInformation(numberOfHistogramBins=32)
    reg.SetMetricSamplingStrategy(reg.RANDOM)
    reg.SetMetricSamplingPercentage(0.5, seed)
    reg.SetInterpolator(sitk.sitkLinear)
    reg.SetOptimizerAsRegularStepGradientDescent(
        learningRate=1.0, minStep=1e-4, numberOfIterations=iterations,
        gradientMagnitudeTolerance=1e-8)
    reg.SetOptimizerScalesFromPhysicalShift()
    reg.SetShrinkFactorsPerLevel([4, 2, 1])
    reg.SetSmoothingSigmasPerLevel([2.0, 1.0, 0.0])
    reg.SetInitialTransform(initial, inPlace=False)
    return reg.Execute(f, m)


def warp(moving: np.ndarray, transform: sitk.Transform, *, labels: bool) -> np.ndarray:
    """``moving [H, W]`` resampled onto its own grid through ``transform``: nearest
    neighbour for label maps (values stay class ids), linear for images; 0 outside."""
    m = _image(moving)
    interp = sitk.sitkNearestNeighbor if labels else sitk.sitkLinear
    out = sitk.GetArrayFromImage(sitk.Resample(m, m, transform, interp, 0.0))
    return np.rint(out).astype(np.uint8) if labels else out


@dataclasses.dataclass(frozen=True)
class PairResult:
    pair: Pair
    dice_before: np.ndarray  # f64[C]: labels compared without registration
    dice_after: np.ndarray   # f64[C]: source labels carried over by the registration
    warped_image: np.ndarray
    warped_labels: np.ndarray


def score_pair(pair: Pair, source_images, source_labels, target_images, target_labels, *,
               iterations: int = 200, seed: int = 0) -> PairResult:
    """Registers source image ``pair.source`` onto target ``pair.target`` and scores the
    carried-over labels (Dice per class, NaN where both label maps lack the class)."""
    fixed = np.asarray(target_images[pair.target], np.float32)
    moving = np.asarray(source_images[pair.source], np.float32)
    transform = register(fixed, moving, iterations=iterations, seed=seed)
    warped_labels = warp(source_labels[pair.source], transform, labels=True)
    truth = np.asarray(target_labels[pair.target])

    def dice(pred):
        return np.asarray(metrics.dice_per_class(pred[None], truth[None]))[0].astype(np.float64)

    return PairResult(pair, dice(np.asarray(source_labels[pair.source])), dice(warped_labels),
                      warp(moving, transform, labels=False), warped_labels)


def summarize(results: Sequence[PairResult]) -> dict[str, dict[str, float]]:
    """Per structure (and ``foreground``: mean of the three per pair): mean, std (ddof 1)
    and count of Dice over pairs, before and after registration."""
    out: dict[str, dict[str, float]] = {}
    for when in ("before", "after"):
        table = np.stack([getattr(r, f"dice_{when}") for r in results])
        columns = {labels_lib.CLASS_NAMES[c]: table[:, c] for c in labels_lib.FOREGROUND_CLASSES}
        columns["foreground"] = np.nanmean(table[:, list(labels_lib.FOREGROUND_CLASSES)], axis=1)
        for name, values in columns.items():
            values = values[np.isfinite(values)]
            out.setdefault(name, {})
            out[name][f"{when}_mean"] = float(values.mean()) if len(values) else float("nan")
            out[name][f"{when}_std"] = float(values.std(ddof=1)) if len(values) > 1 else float("nan")
            out[name]["n"] = len(values)
    return out
