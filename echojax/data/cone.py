"""Removal of everything outside the ultrasound sector (cone).

Islam et al. (MELBA 2026) removed text, ECG traces and other markings outside the cone
with a trained cone segmenter. This is a deterministic geometric estimate instead:

1. Support: pixels that vary over the clip (markings are static), or, for one image
   or a static clip, non-zero pixels.
2. Dense support: a box-filter density above one half, which removes thin markings
   (ECG traces, ticks) and fills speckle zeros inside the sector.
3. Per row, the run of dense pixels through the sector axis gives a left and a right
   edge; two straight lines are fitted to them by least squares with outlier
   rejection (rows touching the image border, or below the widest row, where the arc
   begins, are left out). Their intersection is the sector apex.
4. The arc: an axis-aligned ellipse centred on the apex fitted to where, in each
   column, the dense run entering the wedge from above ends (an ellipse, not a circle, because resized
   images have anisotropic pixels). If the arc is cut by the image bottom, none.
5. The mask is the wedge below the apex and inside the arc, grown by ``margin_px``.
"""

from __future__ import annotations

import numpy as np


def _box_density(mask: np.ndarray, k: int) -> np.ndarray:
    """Fraction of True pixels in the k x k window around each pixel (zero padded)."""
    m = np.pad(mask.astype(np.float32), k // 2 + 1)
    c = m.cumsum(0).cumsum(1)
    h, w = mask.shape
    s = c[k:k + h, k:k + w] - c[:h, k:k + w] - c[k:k + h, :w] + c[:h, :w]
    return s / float(k * k)


def _robust_line(rows: np.ndarray, cols: np.ndarray, where: str):
    """Least-squares ``col = m * row + q`` with iterative rejection of outliers."""
    keep = np.ones(rows.shape, bool)
    for _ in range(5):
        if keep.sum() < 3:
            raise ValueError(f"cone_mask: too few points on the {where} sector edge")
        m, q = np.polyfit(rows[keep], cols[keep], 1)
        res = np.abs(cols - (m * rows + q))
        new = res <= max(1.5, 2.5 * float(np.median(res[keep])))
        if (new == keep).all():
            break
        keep = new
    return float(m), float(q)


def _fit_arc(dr: np.ndarray, dc: np.ndarray) -> np.ndarray:
    """Robust fit of ``p dr^2 + q dc^2 = 1`` (an ellipse centred on the apex).

    Candidate ellipses through pairs of points far apart; the one with most points
    within 1.5 px wins and is refitted by least squares on those points.
    """
    a_mat = np.stack([dr * dr, dc * dc], 1)
    n = len(dr)
    order = np.argsort(dc)
    best, best_count = None, -1
    for t in np.linspace(0, n // 2 - 1, min(n // 2, 40)).astype(int):
        i, j = order[t], order[t + n // 2]
        m = a_mat[[i, j]]
        if abs(np.linalg.det(m)) < 1e-9 * np.abs(m).max() ** 2:
            continue
        coef = np.linalg.solve(m, np.ones(2))
        if (coef <= 0).any():
            continue
        res = np.abs(np.sqrt(a_mat @ coef) - 1) * np.sqrt(1 / coef).mean()
        count = int((res <= 1.5).sum())
        if count > best_count:
            best, best_count = coef, count
    if best is None or best_count < 5:
        raise ValueError("cone_mask: could not fit the sector's arc")
    coef = best
    for _ in range(2):
        res = np.abs(np.sqrt(a_mat @ coef) - 1) * np.sqrt(1 / coef).mean()
        keep = res <= 1.5
        new, *_ = np.linalg.lstsq(a_mat[keep], np.ones(keep.sum()), rcond=None)
        if (new <= 0).any():
            break
        coef = new
    return coef


def cone_mask(frames: np.ndarray, *, margin_px: float = 1.0) -> np.ndarray:
    """Estimates the ultrasound sector of an image or a clip.

    Args:
      frames: uint8[..., H, W]: one image, or frames of one clip (any leading dims).
      margin_px: how far the estimated boundary is pushed out, in pixels (the sector
        edge lies up to half a pixel outside the outermost bright pixel centres).

    Returns:
      bool[H, W], True inside the sector.

    Raises:
      ValueError: wrong dtype/shape, or no sector-shaped support found.
    """
    f = np.asarray(frames)
    if f.dtype != np.uint8 or f.ndim < 2:
        raise ValueError(f"cone_mask: frames must be uint8[..., H, W], got {f.dtype}{list(f.shape)}")
    h, w = f.shape[-2:]
    if h < 16 or w < 16:
        raise ValueError(f"cone_mask: image must be at least 16x16, got {h}x{w}")
    flat = f.reshape(-1, h, w)
    support = flat.max(0) > 0
    if flat.shape[0] > 1:
        varying = flat.max(0) != flat.min(0)
        if varying.mean() > 0.01:
            support = varying
    k = max(3, (min(h, w) // 40) | 1)
    dense = _box_density(support, k) > 0.5
    if dense.sum() < 0.05 * h * w:
        raise ValueError("cone_mask: less than 5% of the image has ultrasound signal")
    # Sector axis: the column with the longest vertical extent of dense pixels.
    colsum = np.convolve(dense.sum(0), np.ones(k) / k, mode="same")
    c_ax = int(np.argmax(colsum))
    idx = np.arange(w)
    on_axis = dense[:, c_ax]
    left = np.where(~dense[:, :c_ax + 1], idx[:c_ax + 1], -1).max(1) + 1
    right = np.where(~dense[:, c_ax:], idx[c_ax:], w).min(1) - 1
    rows = np.flatnonzero(on_axis)
    if rows.size < 8:
        raise ValueError("cone_mask: no sector found (too few rows with signal on its axis)")
    width = right[rows] - left[rows]
    widest = rows[int(np.argmax(width))]
    # The straight edges end where the arc begins: keep rows above the widest one.
    use = rows[(rows <= widest - 1) & (rows > rows[0])]
    use_l = use[left[use] > 0]
    use_r = use[right[use] < w - 1]
    mL, qL = _robust_line(use_l.astype(float), left[use_l].astype(float), "left")
    mR, qR = _robust_line(use_r.astype(float), right[use_r].astype(float), "right")
    if mR - mL <= 1e-3:
        raise ValueError("cone_mask: the sector edges do not diverge with depth")
    r_apex = (qL - qR) / (mR - mL)
    c_apex = mL * r_apex + qL

    rr = np.arange(h, dtype=np.float32)[:, None]
    cc = idx.astype(np.float32)[None, :]
    wedge = (cc >= mL * rr + qL - margin_px) & (cc <= mR * rr + qR + margin_px) & (
        rr >= r_apex - margin_px)
    # Arc: per column, where the dense run that enters the wedge from above ends
    # (markings below the arc are separated from it by a gap, so they are skipped).
    inw = dense & wedge
    rows_h = np.arange(h)[:, None]
    top = np.where(inw.any(0), np.argmax(inw, 0), h)
    gap = ~dense & (rows_h > top[None, :])
    low = np.where(gap.any(0), np.argmax(gap, 0) - 1, h - 1)
    low = np.where(top < h, low, -1)
    inner = (idx >= mL * low + qL + 2) & (idx <= mR * low + qR - 2) & (low > 0) & (low < h - 1)
    if inner.sum() >= 5:
        dr = (low[inner] - r_apex).astype(float)
        dc = (idx[inner] - c_apex).astype(float)
        coef = _fit_arc(dr, dc)
        semi_r, semi_c = 1 / np.sqrt(coef)
        inside = ((rr - r_apex) / (semi_r + margin_px)) ** 2 + (
            (cc - c_apex) / (semi_c + margin_px)) ** 2 <= 1.0
        wedge &= inside
    return wedge


def apply_cone_mask(image: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """``image`` with pixels outside ``mask`` set to 0.

    Args:
      image: [..., H, W] or [..., H, W, C] array (a frame, a clip, channels last).
      mask: bool[H, W].
    """
    image = np.asarray(image)
    mask = np.asarray(mask)
    if mask.dtype != bool or mask.ndim != 2:
        raise ValueError(f"apply_cone_mask: mask must be bool[H, W], got {mask.dtype}{list(mask.shape)}")
    hw = mask.shape
    if image.shape[-2:] == hw:
        m = mask
    elif image.ndim >= 3 and image.shape[-3:-1] == hw:
        m = mask[:, :, None]
    else:
        raise ValueError(
            f"apply_cone_mask: image shape {image.shape} does not end in the mask's {hw} "
            f"(optionally followed by channels)")
    return np.where(m, image, np.zeros((), image.dtype))
