"""LV volumes by the method of discs, and ejection fraction.

Evaluation code (numpy in, Python float out; not jitted). The paper reports the EF
error of the segmentations (Islam et al., MELBA 2026, Table 3): EF from the LV masks of
an ED/ES pair by the method of discs, as recommended for echocardiography (Lang et al.,
"Recommendations for cardiac chamber quantification by echocardiography in adults",
JASE 2015).

Long axis. The recommendation measures the LV along its long axis, from the apex to
the middle of the mitral plane, and cuts it into discs perpendicular to that axis. A
mask carries no landmarks, so two rules find the axis from the mask alone:

- ``"apex_base"`` (default, our choice): the mitral plane is the longest straight edge
  of the mask's convex hull that runs across the principal axis (within 45 degrees of
  the perpendicular) in the outer quarter of the mask's extent at either end, spanning
  at least half the LV's width (a rounded end is no mitral plane, so the apical end
  never qualifies). Consecutive hull edges within 15 degrees of each other count as
  one edge, so a pixel staircase along a sloped base still reads as one line. The
  base point is that edge's midpoint; the apex is the point of the mask outline
  farthest from it. This is the clinical definition; the principal axis departs from
  it when the LV is skewed or the base is oblique (measured against the EchoNet-Dynamic
  tracings in docs/recordings_and_ef.md). Where no such edge exists (an ellipse, for
  instance) the rule falls back to the principal axis, the wider end as base.
- ``"principal"``: the first principal axis of the LV pixel positions through their
  centroid; the length is the extent of the pixel footprints along it (the rule of
  earlier versions, kept for comparison).

Outline and widths are measured on the bilinearly interpolated mask with the boundary
at 0.5 (halfway between the last pixel in and the first pixel out), so the estimate
does not step with the pixel grid. The axis (length ``L``) is cut into ``num_discs``
slabs of height ``h = L / num_discs``; each disc's diameter is the width of the mask on
the line perpendicular to the axis through the slab's middle.

- Monoplane: ``V = pi/4 * sum_i d_i^2 * h``.
- Biplane (modified Simpson's rule): ``V = pi/4 * sum_i a_i * b_i * L / num_discs``,
  ``a_i`` and ``b_i`` the i-th diameters in the two apical views and ``L`` the longer
  of their two long-axis lengths.

Pixel spacing. Volumes in millilitres need the pixel spacing: :func:`lv_volume` takes
it and raises when it is unknown or invalid. EF does not: it is a ratio of volumes,
unchanged when every length is scaled by one factor, so :func:`ef_from_masks` accepts
an unknown spacing (``None``, or NaN as datasets store it) and measures on unit
isotropic pixels. An unknown spacing must be isotropic for that to hold (EchoNet-Dynamic
and Unity frames are); with two views of unknown spacing, both are taken to share one
scale.
"""

from __future__ import annotations

import math

import numpy as np
import skimage.measure
from scipy import ndimage, spatial

NUM_DISCS = 20
LONG_AXES = ("apex_base", "principal")
_UNIT = (1.0, 1.0)
_BASE_MAX_ALONG = math.cos(math.radians(45))  # a base edge is within 45 degrees of across
_BASE_MERGE_DEG = 15.0      # hull edges this close in direction form one straight edge
_BASE_MIN_WIDTH = 0.5       # a base edge spans at least this fraction of the LV's width


def _check_spacing(spacing_mm, where: str) -> tuple[float, float]:
    try:
        s = np.asarray(spacing_mm, dtype=np.float64)
    except (TypeError, ValueError):
        s = np.zeros(0)
    if s.shape != (2,) or not np.all(np.isfinite(s)) or not np.all(s > 0):
        raise ValueError(
            f"{where}: spacing must be two positive finite floats (row, column) in mm, "
            f"got {spacing_mm!r}")
    return float(s[0]), float(s[1])


def known_spacing(spacing_mm) -> tuple[float, float] | None:
    """``(row, column)`` spacing in mm, or ``None`` where it is unknown.

    Unknown is ``None`` or a spacing whose two entries are both NaN (the datasets'
    ``pixel_spacing_mm`` for EchoNet-Dynamic and Unity). Anything else must be two
    positive finite floats.

    Raises:
      ValueError: a spacing that is neither unknown nor valid (one NaN, zero, ...).
    """
    if spacing_mm is None:
        return None
    try:
        if np.all(np.isnan(np.asarray(spacing_mm, dtype=np.float64).reshape(2))):
            return None
    except (TypeError, ValueError):
        pass  # reported below
    return _check_spacing(spacing_mm, "known_spacing")


def _check_mask(mask, where: str) -> np.ndarray:
    m = np.asarray(mask)
    if m.ndim != 2 or m.dtype != bool:
        raise ValueError(
            f"{where}: LV mask must be bool[H, W] (e.g. segmentation[..., 0] == LV), "
            f"got {m.dtype}{list(m.shape)}")
    if not m.any():
        raise ValueError(f"{where}: LV mask is empty; no volume can be measured")
    return m


def _outline(m: np.ndarray, spacing: np.ndarray) -> np.ndarray:
    """Points (mm, row/column) of the 0.5 iso-line of the mask; all components."""
    contours = skimage.measure.find_contours(np.pad(m.astype(np.float32), 1), 0.5)
    return (np.concatenate(contours) - 1.0) * spacing


def _principal(m: np.ndarray, spacing: np.ndarray):
    """Centroid, unit long axis and half-pixel reach of the LV pixel positions (mm)."""
    pts = np.stack(np.nonzero(m), axis=1) * spacing
    centroid = pts.mean(axis=0)
    centred = pts - centroid
    _, vecs = np.linalg.eigh(centred.T @ centred)
    return pts, centroid, vecs[:, -1]


def _base_edge(hull: np.ndarray, centroid: np.ndarray, u: np.ndarray, reach: float):
    """End points of the longest straight across-axis hull edge near an end of the mask.

    ``reach``: the mask's extent along ``u``; an edge counts only if its middle lies in
    the outer quarter of that extent at either end.
    """
    n = len(hull)
    edges = np.roll(hull, -1, axis=0) - hull
    angle = np.arctan2(edges[:, 0], edges[:, 1])

    def diff(a, b):
        return abs((a - b + math.pi) % (2 * math.pi) - math.pi)

    # Start at the sharpest corner so that no straight run wraps around the start.
    start = int(np.argmax([diff(angle[k], angle[k - 1]) for k in range(n)]))
    best, i = None, 0
    while i < n:
        j = i
        while j + 1 < n and diff(angle[(start + j + 1) % n],
                                 angle[(start + i) % n]) < math.radians(_BASE_MERGE_DEG):
            j += 1
        p, q = hull[(start + i) % n], hull[(start + j + 1) % n]
        length = float(np.linalg.norm(q - p))
        if (length > 0 and abs(((p + q) / 2 - centroid) @ u) >= 0.25 * reach
                and abs((q - p) @ u) / length < _BASE_MAX_ALONG
                and (best is None or length > best[0])):
            best = (length, p, q)
        i = j + 1
    return None if best is None else (best[1], best[2])


def lv_long_axis(mask, spacing_mm=None, *, long_axis: str = "apex_base"):
    """Apex and base points of the LV long axis, ``(apex, base)`` as f64[2] (row, column).

    In millimetres when ``spacing_mm`` is given, in pixels (unit spacing) when it is
    ``None``. For ``"principal"``, the two ends of the mask's extent along the principal
    axis, the narrower end as apex. See the module docstring for the rules.
    """
    if long_axis not in LONG_AXES:
        raise ValueError(f"lv_long_axis: long_axis must be one of {LONG_AXES}, got {long_axis!r}")
    m = _check_mask(mask, "lv_long_axis")
    spacing = np.asarray(_UNIT if spacing_mm is None
                         else _check_spacing(spacing_mm, "lv_long_axis"))
    pts, centroid, u = _principal(m, spacing)
    outline = _outline(m, spacing)
    along = (outline - centroid) @ u
    across = (outline - centroid) @ np.array([-u[1], u[0]])
    # Base = the wider end: compare the spread across the axis of each outer quarter.
    low, high = along <= np.quantile(along, 0.25), along >= np.quantile(along, 0.75)
    if np.ptp(across[low]) > np.ptp(across[high]):
        u, along = -u, -along
    if long_axis == "apex_base" and len(outline) >= 3:
        try:
            hull = outline[spatial.ConvexHull(outline).vertices]
        except spatial.QhullError:  # a degenerate (one-pixel-wide) mask
            hull = None
        edge = None if hull is None else _base_edge(hull, centroid, u, float(np.ptp(along)))
        if edge is not None and (np.linalg.norm(edge[1] - edge[0])
                                 >= _BASE_MIN_WIDTH * np.ptp(across)):
            base = (edge[0] + edge[1]) / 2
            apex = outline[np.argmax(np.linalg.norm(outline - base, axis=1))]
            return apex, base
    # Principal rule: the extent of the pixel centres along u, plus half a pixel's
    # footprint at each end (the extreme centres lie about half a pixel inside the edge).
    along_px = (pts - centroid) @ u
    half = 0.5 * (spacing[0] * abs(u[0]) + spacing[1] * abs(u[1]))
    return centroid + (along_px.min() - half) * u, centroid + (along_px.max() + half) * u


def lv_discs(mask, spacing_mm=None, *, long_axis: str = "apex_base",
             num_discs: int = NUM_DISCS) -> tuple[np.ndarray, float]:
    """Disc diameters and long-axis length of one apical-view LV mask.

    Args:
      mask: ``bool[H, W]`` LV cavity mask.
      spacing_mm: ``(row, column)`` pixel spacing in millimetres; ``None``: unit
        isotropic spacing (diameters and length in pixels).
      long_axis: ``"apex_base"`` or ``"principal"`` (module docstring).
      num_discs: number of discs.

    Returns:
      ``(diameters f64[num_discs], length)``, discs ordered from apex to base.
    """
    if not (isinstance(num_discs, int) and num_discs >= 1):
        raise ValueError(f"lv_discs: num_discs must be a positive int, got {num_discs!r}")
    apex, base = lv_long_axis(mask, spacing_mm, long_axis=long_axis)
    m = np.asarray(mask)
    sr, sc = _UNIT if spacing_mm is None else _check_spacing(spacing_mm, "lv_discs")
    length = float(np.linalg.norm(base - apex))
    if length == 0:
        raise ValueError("lv_discs: LV mask has zero length along its long axis")
    u = (base - apex) / length
    v = np.array([-u[1], u[0]])
    t = (np.arange(num_discs) + 0.5) * (length / num_discs)
    reach = math.hypot(m.shape[0] * sr, m.shape[1] * sc)
    step = min(sr, sc) / 10
    s = np.arange(-reach, reach + step, step)
    points = apex + t[:, None, None] * u + s[None, :, None] * v  # [discs, samples, 2] mm
    coords = np.stack([points[..., 0] / sr, points[..., 1] / sc])  # pixel indices
    inside = ndimage.map_coordinates(m.astype(np.float32), coords, order=1, cval=0.0) > 0.5
    return inside.sum(axis=1) * step, length


def _disc_volume(mask, spacing_mm, other_view, other_spacing_mm, long_axis, num_discs):
    """Volume in cubic spacing units (mm^3, or pixel^3 for unit spacing)."""
    kw = dict(long_axis=long_axis, num_discs=num_discs)
    a, length = lv_discs(mask, spacing_mm, **kw)
    if other_view is None:
        return math.pi / 4 * float(np.sum(a * a)) * length / num_discs
    b, other_length = lv_discs(other_view, other_spacing_mm, **kw)
    return math.pi / 4 * float(np.sum(a * b)) * max(length, other_length) / num_discs


def lv_volume(mask, spacing_mm, *, other_view=None, other_spacing_mm=None,
              long_axis: str = "apex_base", num_discs: int = NUM_DISCS) -> float:
    """LV volume in millilitres by the method of discs (see the module docstring).

    Args:
      mask: ``bool[H, W]`` LV cavity mask of one apical view (2CH or 4CH).
      spacing_mm: ``(row, column)`` pixel spacing in mm; required (an unknown
        spacing gives no volume in mL; EF needs none: :func:`ef_from_masks`).
      other_view: optional ``bool[H', W']`` LV mask of the other apical view at the
        same phase; given, the biplane formula is used.
      other_spacing_mm: spacing of ``other_view``; defaults to ``spacing_mm``.
      long_axis, num_discs: see :func:`lv_discs`.

    Returns:
      Volume in mL (1 mL = 1000 mm^3).

    Raises:
      ValueError: an empty or non-boolean mask, or a missing or bad spacing.
    """
    try:
        spacing = _check_spacing(spacing_mm, "lv_volume")
    except ValueError as e:
        raise ValueError(f"{e}; a volume in mL needs a known spacing (EF does not: "
                         f"ef_from_masks accepts an unknown one)") from None
    if other_view is None and other_spacing_mm is not None:
        raise ValueError("lv_volume: other_spacing_mm given without other_view")
    other_spacing = spacing if other_spacing_mm is None else _check_spacing(
        other_spacing_mm, "lv_volume")
    return _disc_volume(mask, spacing, other_view, other_spacing, long_axis,
                        num_discs) / 1000.0


def ejection_fraction(edv: float, esv: float) -> float:
    """Ejection fraction in percent, ``100 * (EDV - ESV) / EDV``.

    Negative when ``esv > edv`` (possible with poor segmentations; reported, not
    clipped, so the error shows up in the EF error).

    Raises:
      ValueError: ``edv`` not positive, ``esv`` negative, or either not finite.
    """
    edv, esv = float(edv), float(esv)
    if not (math.isfinite(edv) and math.isfinite(esv)) or edv <= 0 or esv < 0:
        raise ValueError(
            f"ejection_fraction: need EDV > 0 and ESV >= 0 (finite, mL), got edv={edv}, esv={esv}")
    return 100.0 * (edv - esv) / edv


def ef_from_masks(ed_mask, es_mask, spacing_mm=None, *, ed_other=None, es_other=None,
                  other_spacing_mm=None, long_axis: str = "apex_base",
                  num_discs: int = NUM_DISCS) -> float:
    """EF (percent) from the LV masks at end-diastole and end-systole.

    Monoplane from ``ed_mask``/``es_mask``; biplane when ``ed_other``/``es_other``
    (the other apical view at ED and ES) are both given.

    Args:
      ed_mask, es_mask: ``bool[H, W]`` LV masks of one view at ED and ES.
      spacing_mm: ``(row, column)`` mm, or unknown (``None`` or NaN, NaN): unit
        isotropic spacing, which leaves EF unchanged (module docstring).
      ed_other, es_other: optional masks of the other view (biplane).
      other_spacing_mm: their spacing; defaults to ``spacing_mm``. Unknown and known
        spacings cannot be mixed (the two views' scales would not match).
      long_axis, num_discs: see :func:`lv_discs`.

    Raises:
      ValueError: an empty or non-boolean mask, a bad spacing, only one of
        ``ed_other``/``es_other``, or mixed known and unknown spacings.
    """
    spacing = known_spacing(spacing_mm)
    if (ed_other is None) != (es_other is None):
        raise ValueError("ef_from_masks: give both ed_other and es_other (biplane) or neither")
    if ed_other is None and other_spacing_mm is not None:
        raise ValueError("ef_from_masks: other_spacing_mm given without ed_other/es_other")
    other = spacing if other_spacing_mm is None else known_spacing(other_spacing_mm)
    if ed_other is not None and (spacing is None) != (other is None):
        raise ValueError(
            f"ef_from_masks: one view has pixel spacing {spacing_mm!r} and the other "
            f"{other_spacing_mm!r}; both must be known or both unknown")
    vols = [_disc_volume(m, spacing, o, other, long_axis, num_discs)
            for m, o in ((ed_mask, ed_other), (es_mask, es_other))]
    return ejection_fraction(*vols)
