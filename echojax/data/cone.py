"""Removal of everything outside the ultrasound sector (cone).

Islam et al. (MELBA 2026) removed text, ECG traces and other markings outside the cone
with a trained cone segmenter. This is a deterministic geometric estimate instead, made
to tolerate lossy-codec noise (JPEG/MJPG ringing and blocking) and faint noise outside
the sector:

1. Signal: the image, or for a clip the mean frame with pixels that never change set to
   0 (markings are static; a codec encodes a static block identically in every frame).
2. Noise floor: the median and spread (MAD) of the darkest 30% of the smoothed signal
   (the background is >= ~40% of a sector image); "signal" is what lies 6 spreads (at
   least 2 grey levels) above it. A threshold between the background and sector levels
   would cut the sector's dim lateral and deep parts.
3. Coarse support (for the axis and the arc): the thresholded signal opened with a
   small square (cuts ringing bridges to markings and thin markings), its largest piece
   with holes (blood pools) filled.
4. Edges: per row, the two entries into the signal (3x3 smoothed, so markings a few
   pixels away do not spread onto the edge) nearest the axis on each side; a line
   ``col = m * row + q`` through them by consensus (the line through a sampled pair of
   points that most points agree on, then least squares on those), so rows bridged to
   markings, holes and the arc are outliers. Each edge is then refined along each row:
   the signal in a +-3 pixel band is split into an outer and an inner level by the
   single step that fits it best; codec ringing blurs the step about equally to both
   sides, so its position is unbiased where a fixed threshold is not. Scanners show the
   sector apex up with a vertical axis, so when the two slopes do not mirror each other
   (one edge faded into the noise), the edge seen on fewer rows is refitted with the
   other's mirrored slope. The lines' intersection is the apex.
5. The arc: along 64 rays from the apex, where the coarse support ends (if inside the
   image), refined by the same step fit along the ray; an axis-aligned ellipse centred
   on the apex (resized images have anisotropic pixels) is fitted by consensus. If the
   arc is cut by the image bottom, none.
6. The mask is the wedge below the apex and inside the arc, grown by ``margin_px``.

A geometric estimate can be wrong on a real recording (on real EchoNet-Dynamic clips
this one zeroed 0.3-99 % of the echo signal, see tfds_builders/echonet_dynamic/README.md),
so builders do not apply it blindly: ``clear_outside_sector`` validates it per recording
and falls back to a safe mask where it fails (see its docstring).
"""

from __future__ import annotations

import dataclasses

import numpy as np
from scipy import ndimage
from skimage.morphology import convex_hull_image

# Grey level above which a pixel counts as echo signal (or a marking) in the
# validation of a sector estimate; our choice: above the codec noise of the black
# background of real recordings (EchoNet-Dynamic MJPEG: 0-15) and below the dimmest
# tissue at the sector edges.
SIGNAL_LEVEL = 20


def _box_mean(x: np.ndarray, k: int) -> np.ndarray:
    """Mean of ``x`` over the k x k window around each pixel (zero padded)."""
    m = np.pad(x.astype(np.float32), k // 2 + 1)
    c = m.cumsum(0).cumsum(1)
    h, w = x.shape
    s = c[k:k + h, k:k + w] - c[:h, k:k + w] - c[k:k + h, :w] + c[:h, :w]
    return s / float(k * k)


def _consensus_line(rows: np.ndarray, cols: np.ndarray, tol: float, *, min_rows: float):
    """``col = m * row + q`` that most points agree on (within ``tol``), or None.

    Candidate lines through 400 pairs of points drawn with a fixed seed (so the result
    is deterministic) at least a tenth of the row range apart; the one with most points
    within ``tol`` wins, if they lie on at least ``min_rows`` rows, and is refitted by
    least squares on those points. Returns (m, q, bool mask of the agreeing points).
    """
    n = len(rows)
    if n < 4:
        return None
    rng = np.random.default_rng(0)
    i, j = rng.integers(0, n, (2, 400))
    dr = rows[j] - rows[i]
    ok = np.abs(dr) >= max(2.0, 0.1 * float(rows.max() - rows.min()))
    if not ok.any():
        return None
    i, j, dr = i[ok], j[ok], dr[ok]
    m = (cols[j] - cols[i]) / dr
    q = cols[i] - m * rows[i]
    steep = np.abs(m) <= 4.0                      # within ~76 degrees of vertical
    if not steep.any():
        return None
    m, q = m[steep], q[steep]
    counts = (np.abs(cols[None, :] - (m[:, None] * rows[None, :] + q[:, None])) <= tol).sum(1)
    best = int(np.argmax(counts))
    m, q = float(m[best]), float(q[best])
    for _ in range(3):
        keep = np.abs(cols - (m * rows + q)) <= tol
        if keep.sum() < 3:
            return None
        m, q = (float(v) for v in np.polyfit(rows[keep], cols[keep], 1))
    keep = np.abs(cols - (m * rows + q)) <= tol
    if np.unique(rows[keep]).size < min_rows:
        return None
    return m, q, keep


def _step_positions(profiles: np.ndarray) -> np.ndarray:
    """Per profile (rows of ``float[N, L]``, outside first), where the best single step
    between two constant levels lies, as a fractional index (between two samples).

    Only steps that go up (inner level above the outer one) count.
    """
    n, length = profiles.shape
    c1 = np.concatenate([np.zeros((n, 1)), profiles.cumsum(1)], 1)
    c2 = np.concatenate([np.zeros((n, 1)), (profiles * profiles).cumsum(1)], 1)
    s = np.arange(1, length)                       # split: [0, s) outside, [s, L) inside
    a1, a2 = c1[:, s], c2[:, s]
    b1, b2 = c1[:, -1:] - a1, c2[:, -1:] - a2
    sse = (a2 - a1 * a1 / s) + (b2 - b1 * b1 / (length - s))
    up = b1 / (length - s) > a1 / s
    sse = np.where(up, sse, np.inf)
    return np.argmin(sse, 1) + 0.5                  # between samples s-1 and s


def _fit_arc(dr: np.ndarray, dc: np.ndarray, tol: float):
    """Consensus fit of ``p dr^2 + q dc^2 = 1`` (an ellipse centred on the apex)."""
    a_mat = np.stack([dr * dr, dc * dc], 1)
    n = len(dr)
    if n < 5:
        return None
    order = np.argsort(dc)
    best, best_count = None, -1
    for t in np.unique(np.linspace(0, n // 2 - 1, min(n // 2, 40)).astype(int)):
        i, j = order[t], order[t + n // 2]
        m = a_mat[[i, j]]
        if abs(np.linalg.det(m)) < 1e-9 * np.abs(m).max() ** 2:
            continue
        coef = np.linalg.solve(m, np.ones(2))
        if (coef <= 0).any():
            continue
        res = np.abs(np.sqrt(a_mat @ coef) - 1) * np.sqrt(1 / coef).mean()
        count = int((res <= tol).sum())
        if count > best_count:
            best, best_count = coef, count
    if best is None or best_count < 5:
        return None
    coef = best
    for _ in range(3):
        res = np.abs(np.sqrt(a_mat @ coef) - 1) * np.sqrt(1 / coef).mean()
        keep = res <= tol
        new, *_ = np.linalg.lstsq(a_mat[keep], np.ones(keep.sum()), rcond=None)
        if (new <= 0).any():
            break
        coef = new
    return coef


def _signal(flat: np.ndarray) -> np.ndarray:
    """float32[H, W]: the image, or a clip's mean frame with never-changing pixels at 0."""
    if flat.shape[0] == 1:
        return flat[0].astype(np.float32)
    lo, hi = flat.min(0), flat.max(0)
    varying = hi != lo
    mean = flat.mean(0, dtype=np.float32)
    if varying.mean() <= 0.01:          # a static clip: treat as one image
        return mean
    return np.where(varying, mean, np.float32(0))


def cone_mask(frames: np.ndarray, *, margin_px: float = 1.0) -> np.ndarray:
    """Estimates the ultrasound sector of an image or a clip.

    Works on uncompressed and lossy-compressed (JPEG, MJPG) images with faint noise
    outside the sector; markings (text, ECG traces, depth ticks) may surround it.

    Args:
      frames: uint8[..., H, W]: one image, or frames of one clip (any leading dims).
      margin_px: how far the estimated boundary is pushed out, in pixels (against the
        estimate's error; markings start a few pixels outside the sector).

    Returns:
      bool[H, W], True inside the sector.

    Raises:
      ValueError: wrong dtype/shape, or no sector-shaped signal found (the message says
        what was seen).
    """
    f = np.asarray(frames)
    if f.dtype != np.uint8 or f.ndim < 2:
        raise ValueError(f"cone_mask: frames must be uint8[..., H, W], got {f.dtype}{list(f.shape)}")
    h, w = f.shape[-2:]
    if h < 16 or w < 16:
        raise ValueError(f"cone_mask: image must be at least 16x16, got {h}x{w}")
    sig = _signal(f.reshape(-1, h, w))
    k = max(3, (min(h, w) // 40) | 1)
    sm = _box_mean(sig, k)

    # Coarse support: above the noise floor. The background (>= ~40% of a sector image)
    # is the lowest third of the smoothed signal; its median and spread set the floor.
    # (A threshold between background and sector levels would cut the sector's dim
    # lateral edges.) Dark regions inside (blood pools) become holes, which are filled.
    sub = sm[::2, ::2].ravel()
    lo, hi = (float(v) for v in np.percentile(sub, [30, 90]))
    bg = sub[sub <= lo]
    med = float(np.median(bg))
    spread = 1.4826 * float(np.median(np.abs(bg - med)))
    thr = med + max(2.0, 6.0 * spread)
    if hi <= thr:
        raise ValueError(
            f"cone_mask: no ultrasound signal above the noise floor (background "
            f"{med:.1f} +- {spread:.1f}, 90th percentile {hi:.1f} after {k}x{k} smoothing)")
    above = sm > thr
    # Markings are separated from the sector by a few pixels, which codec ringing can
    # bridge: an opening with a (k + 2)-square cuts such bridges and thin markings
    # (ticks, ECG traces); the largest piece left is the sector.
    s = k + 2
    opened = _box_mean(_box_mean(above, s) > 1 - 1e-3, s) > 1e-3
    lab, n = ndimage.label(opened)
    if n == 0:
        raise ValueError(
            f"cone_mask: no region of ultrasound signal wider than {s} pixels (background "
            f"{med:.1f} +- {spread:.1f}, threshold {thr:.1f})")
    biggest = 1 + int(np.argmax(np.bincount(lab.ravel())[1:]))
    support = ndimage.binary_fill_holes(lab == biggest)
    if support.mean() < 0.05:
        raise ValueError(
            f"cone_mask: less than 5% of the image has ultrasound signal "
            f"({100 * support.mean():.1f}%)")

    # Sector axis: the column with the longest vertical extent of support.
    colsum = np.convolve(support.sum(0), np.ones(k) / k, mode="same")
    c_ax = int(np.argmax(colsum))
    rows_ax = np.flatnonzero(support[:, c_ax])
    if rows_ax.size < 8:
        raise ValueError(
            f"cone_mask: no sector found (signal on only {rows_ax.size} rows of its axis, "
            f"column {c_ax})")
    # Edge candidates: every entry into the thresholded signal from the outside, left
    # (right) of the axis. The sector's edges are the lines most rows agree on; entries
    # into markings, into ringing bridges and along the arc do not line up.
    # On a 3x3 smoothing: more smoothing would spread markings near the edge onto it.
    sm3 = _box_mean(sig, 3)
    sub = sm3[::2, ::2].ravel()
    bg = sub[sub <= np.percentile(sub, 30)]
    med3 = float(np.median(bg))
    edge_sig = sm3 > med3 + max(2.0, 6.0 * 1.4826 * float(np.median(np.abs(bg - med3))))
    rise = edge_sig[:, 1:] & ~edge_sig[:, :-1]    # entry at column c + 1 from the left
    fall = edge_sig[:, :-1] & ~edge_sig[:, 1:]    # entry at column c from the right
    tol = 1.5
    lines = []
    for side, cand in (("left", rise[:, :c_ax]), ("right", fall[:, c_ax:])):
        # Per row, only the two entries nearest the axis: the sector's edge, or when
        # the sector has a hole there, the next one (markings lie further out).
        near = cand[:, ::-1] if side == "left" else cand
        near = near & (np.cumsum(near, 1) <= 2)
        cand = near[:, ::-1] if side == "left" else near
        r_, c_ = np.nonzero(cand)
        c_ = c_ + (1 if side == "left" else c_ax)
        fit = _consensus_line(r_.astype(float), c_.astype(float), tol, min_rows=0.15 * h)
        if fit is None:
            raise ValueError(
                f"cone_mask: no straight {side} sector edge (no line through entries into "
                f"the signal on at least {0.15 * h:.0f} rows; {len(r_)} entries seen, signal "
                f"covers {100 * support.mean():.0f}% of the image)")
        m, q, keep = fit
        # Refine: the best step in a band of +-b pixels around the coarse edge, per row.
        b = 3
        offs = np.arange(-b, b + 1)
        r_in = np.unique(r_[keep])
        c0 = np.rint(m * r_in + q).astype(int)
        cols = c0[:, None] + (offs if side == "left" else -offs)[None, :]
        ok = (cols.min(1) >= 0) & (cols.max(1) < w)
        if ok.sum() >= 4:
            prof = sig[r_in[ok][:, None], cols[ok]]
            step = _step_positions(prof) - b        # offset of the edge from c0, inward
            edge_c = c0[ok] + (step if side == "left" else -step)
            refit = _consensus_line(r_in[ok].astype(float), edge_c, tol, min_rows=0.5 * ok.sum())
            if refit is not None:
                m, q = refit[0], refit[1]
        lines.append((m, q, np.unique(r_[keep]).size, r_.astype(float), c_.astype(float)))
    (mL, qL, nL, _, _), (mR, qR, nR, _, _) = lines
    # Scanners display the sector apex up with a vertical axis, so the edges mirror
    # each other. Where the fits disagree with that (one edge faded into the noise and
    # a line through markings won), the edge seen on fewer rows is refitted with the
    # other's mirrored slope: its offset is the one most of its entries agree on.
    if abs(mL + mR) > 0.15 * max(abs(mR - mL), 1e-3):
        weak = 0 if nL < nR else 1
        m = -(mR if weak == 0 else mL)
        _, _, _, r_w, c_w = lines[weak]
        if len(r_w):
            offs = c_w - m * r_w
            votes = (np.abs(offs[:, None] - offs[None, :]) <= tol).sum(1)
            q = float(np.median(offs[np.abs(offs - offs[int(np.argmax(votes))]) <= tol]))
            if weak == 0:
                mL, qL = m, q
            else:
                mR, qR = m, q
    if mR - mL <= 0.1:      # an opening angle below ~6 degrees is no sector
        raise ValueError(
            f"cone_mask: the sector edges do not diverge with depth (left slope {mL:.3f}, "
            f"right slope {mR:.3f} columns per row; a sector's differ by more than 0.1)")
    r_apex = (qL - qR) / (mR - mL)
    c_apex = mL * r_apex + qL
    mid = 0.5 * (rows_ax[0] + rows_ax[-1])
    if r_apex > mid:
        raise ValueError(
            f"cone_mask: the sector edges meet at row {r_apex:.0f}, below the middle "
            f"(row {mid:.0f}) of the signal on the sector axis")

    rr = np.arange(h, dtype=np.float32)[:, None]
    cc = np.arange(w, dtype=np.float32)[None, :]
    # Offsets perpendicular to each line (the margin is a distance, not a column shift).
    wedge = ((cc - (mL * rr + qL)) / np.hypot(1, mL) >= -margin_px) & (
        ((mR * rr + qR) - cc) / np.hypot(1, mR) >= -margin_px) & (rr >= r_apex - margin_px)

    # The arc: rays from the apex between the edges (kept off them by a few degrees).
    aL, aR = np.arctan(mL), np.arctan(mR)      # angle from the downward axis, +col
    pad = 0.08 * (aR - aL)
    ang = np.linspace(aL + pad, aR - pad, 64)
    diag = float(np.hypot(h, w))
    t = np.arange(0.0, diag + max(0.0, -r_apex) * 2, 0.5)
    pr = r_apex + np.cos(ang)[:, None] * t[None, :]
    pc = c_apex + np.sin(ang)[:, None] * t[None, :]
    inside_img = (pr >= 0) & (pr <= h - 1) & (pc >= 0) & (pc <= w - 1)
    ir, ic = np.clip(np.rint(pr), 0, h - 1).astype(int), np.clip(np.rint(pc), 0, w - 1).astype(int)
    on = support[ir, ic] & inside_img
    entered = np.maximum.accumulate(on, 1)
    gone = entered & ~on
    has_end = gone.any(1)
    end = np.argmax(gone, 1)
    # A ray that leaves the image while still in the support has no arc point.
    still_inside = inside_img[np.arange(len(ang)), end]
    arc_rays = has_end & still_inside
    coef = None
    if arc_rays.sum() >= 8:
        tb = t[end[arc_rays]]
        a = ang[arc_rays]
        b = 2 * k + 2                               # in half pixels: +-(k + 1) px
        offs = np.arange(-b, b + 1) * 0.5
        tt = tb[:, None] - offs[None, :]            # outside first
        qr = r_apex + np.cos(a)[:, None] * tt
        qc = c_apex + np.sin(a)[:, None] * tt
        ok = (qr.min(1) >= 0) & (qr.max(1) <= h - 1) & (qc.min(1) >= 0) & (qc.max(1) <= w - 1)
        if ok.sum() >= 8:
            prof = ndimage.map_coordinates(sig, [qr[ok].ravel(), qc[ok].ravel()], order=1)
            step = (_step_positions(prof.reshape(ok.sum(), -1)) - b) * 0.5
            tr = tb[ok] - step
            coef = _fit_arc(np.cos(a[ok]) * tr, np.sin(a[ok]) * tr, max(1.5, 0.5 * k))
        if coef is None:
            coef = _fit_arc(np.cos(a) * tb, np.sin(a) * tb, max(1.5, 0.6 * k))
    if coef is not None:
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


# --------------------------------------------------------------------------------------
# Safe sector handling of a recording: estimate, validate, fall back.

ESTIMATED = "estimated_sector"
OUTSIDE_FAN_ONLY = "outside_fan_only"
UNMASKED = "unmasked"
ACTIONS = (ESTIMATED, OUTSIDE_FAN_ONLY, UNMASKED)


@dataclasses.dataclass(frozen=True)
class SectorReport:
    """What ``clear_outside_sector`` did to a recording, and why.

    Attributes:
      action: ``"estimated_sector"`` (the geometric estimate passed validation and was
        applied), ``"outside_fan_only"`` (it failed; only signal outside the convex hull
        of the fan's own signal was zeroed) or ``"unmasked"`` (nothing zeroed).
      reason: why the estimate was rejected ("" when it was applied, or when no masking
        was asked for).
      kept: bool[H, W], True where pixels were kept (all True when unmasked).
      zeroed_signal_fraction: of the pixels above ``SIGNAL_LEVEL`` in the input frames
        (all frames together), the fraction set to 0.
    """

    action: str
    reason: str
    kept: np.ndarray
    zeroed_signal_fraction: float

    @property
    def fell_back(self) -> bool:
        """True when the geometric estimate was rejected."""
        return self.action != ESTIMATED and bool(self.reason)

    def describe(self) -> str:
        text = f"{self.action} ({100 * self.zeroed_signal_fraction:.2f}% of the signal zeroed)"
        return f"{text}: {self.reason}" if self.reason else text


def _components(signal: np.ndarray) -> tuple[np.ndarray, int]:
    return ndimage.label(signal, structure=np.ones((3, 3), bool))


def _gap(shape, gap_px):
    return max(2, round(0.03 * min(shape))) if gap_px is None else int(gap_px)


def _disk(radius: int) -> np.ndarray:
    return np.hypot(*np.mgrid[-radius:radius + 1, -radius:radius + 1]) <= radius


def sector_problems(kept: np.ndarray, signal: np.ndarray, labelled: np.ndarray | None, *,
                    max_cut_fraction: float, gap_px: int = 1) -> str:
    """Why the mask ``kept`` is not a safe sector for this recording ("" if it is).

    A safe sector contains every labelled pixel, and cuts through no echo signal: of
    the connected pieces (8-connected) of ``signal`` (bool[H, W], pixels above
    ``SIGNAL_LEVEL`` in some frame), those that reach inside ``kept`` or come within
    ``gap_px`` of it may belong to the fan (a far-field arc cut off by dropout is
    such a piece), and their part outside ``kept`` must stay below
    ``max_cut_fraction`` of the signal (codec ringing at the fan's edge). Pieces
    farther away are markings, unless the largest piece (the fan) is among them.
    ``gap_px`` is small (our choice: 1): markings are often drawn 2-3 pixels off the
    fan, and a larger one would reject every estimate near them.
    """
    if labelled is not None and (labelled & ~kept).any():
        return (f"{int((labelled & ~kept).sum())} labelled pixels lie outside the "
                f"estimated sector")
    total = int(signal.sum())
    if total == 0:
        return ""
    lab, n = _components(signal)
    near = ndimage.binary_dilation(kept, structure=_disk(gap_px)) if gap_px else kept
    inside = np.bincount(lab[kept & signal], minlength=n + 1)
    close = np.bincount(lab[near & signal], minlength=n + 1)
    outside = np.bincount(lab[~kept & signal], minlength=n + 1)
    inside[0] = outside[0] = 0
    biggest = int(np.argmax(inside + outside))
    if inside[biggest] == 0:
        return (f"the largest piece of echo signal ({int(outside[biggest])} pixels) lies "
                f"entirely outside the estimated sector")
    cut = int(outside[close > 0].sum())
    if cut > max_cut_fraction * total:
        return (f"the estimated sector cuts through the echo signal: {cut} of {total} "
                f"signal pixels ({100 * cut / total:.1f}%, more than "
                f"{100 * max_cut_fraction:.1f}%) lie outside it in pieces that reach inside "
                f"or come within {gap_px} pixel(s) of it")
    return ""


def outside_fan_mask(signal: np.ndarray, labelled: np.ndarray | None = None, *,
                     gap_px: int | None = None) -> np.ndarray:
    """bool[H, W]: a mask that zeroes only what is certainly outside the fan.

    The fan is convex (a wedge inside an arc), so nothing of it lies outside the convex
    hull of its own signal. The fan's signal is grown from the largest piece of
    ``signal`` (and the labelled pixels): every piece within ``gap_px`` of the hull
    joins it and the hull is recomputed, until nothing changes. Markings farther than
    ``gap_px`` from the fan stay outside; a piece that touches the hull is kept whole.
    ``gap_px`` defaults to 3% of the shorter image side (our choice: 3 pixels at 112,
    markings on real scanners are drawn at least that far from the fan).
    """
    h, w = signal.shape
    gap = _gap(signal.shape, gap_px)
    lab, n = _components(signal)
    seed = np.zeros((h, w), bool) if labelled is None else labelled.copy()
    if n:
        seed |= lab == 1 + int(np.argmax(np.bincount(lab.ravel())[1:]))
    if not seed.any():
        return np.ones((h, w), bool)
    hull = convex_hull_image(seed)
    disk = _disk(gap)
    while True:
        near = ndimage.binary_dilation(hull, structure=disk)
        touching = np.unique(lab[near & signal])
        grown = hull | np.isin(lab, touching[touching > 0])
        new = convex_hull_image(grown)
        if (new == hull).all():
            return hull
        hull = new


def clear_outside_sector(frames: np.ndarray, labels: np.ndarray | None = None, *,
                         estimate: bool = True, max_cut_fraction: float = 0.005,
                         margin_px: float = 1.0) -> tuple[np.ndarray, SectorReport]:
    """Safe sector handling of one recording: zeroes what lies outside the ultrasound
    fan, never the fan's echo signal nor a labelled pixel.

    1. The geometric estimate (``cone_mask`` over all frames) is validated
       (``sector_problems``): it must contain every labelled pixel and cut through no
       more than ``max_cut_fraction`` of the echo signal (pixels above ``SIGNAL_LEVEL``
       in any frame).
    2. Where it fails (or ``estimate=False``), only what is certainly outside the fan is
       zeroed (``outside_fan_mask``), if that passes the same validation.
    3. Else nothing is zeroed.
    The report says which, and why; the frames are never dropped.

    Args:
      frames: uint8[..., H, W]: one image or the frames of one recording.
      labels: optional [..., H, W] class ids (or bools) of labelled frames of this
        recording; every nonzero pixel must be kept.
      estimate: False skips the geometric estimate (step 2 at once).
      max_cut_fraction: tolerated fraction of the signal cut off the fan (ringing).
      margin_px: passed to ``cone_mask``.

    Returns:
      (frames with the pixels outside the kept region set to 0, same shape and dtype;
      the ``SectorReport``).
    """
    f = np.asarray(frames)
    if f.dtype != np.uint8 or f.ndim < 2:
        raise ValueError(
            f"clear_outside_sector: frames must be uint8[..., H, W], got {f.dtype}{list(f.shape)}")
    h, w = f.shape[-2:]
    flat = f.reshape(-1, h, w)
    signal = flat.max(0) > SIGNAL_LEVEL
    labelled = None
    if labels is not None:
        lab = np.asarray(labels)
        if lab.ndim < 2 or lab.shape[-2:] != (h, w):
            raise ValueError(f"clear_outside_sector: labels must be [..., {h}, {w}], got "
                             f"{list(lab.shape)}")
        labelled = (lab.reshape(-1, h, w) != 0).any(0)
    reason = ""
    if estimate:
        try:
            kept = cone_mask(f, margin_px=margin_px)
        except ValueError as e:
            reason = f"no sector estimate ({e})"
        else:
            reason = sector_problems(kept, signal, labelled, max_cut_fraction=max_cut_fraction)
            if not reason:
                return _report(flat, f, kept, ESTIMATED, "")
    kept = outside_fan_mask(signal, labelled)
    problem = sector_problems(kept, signal, labelled, max_cut_fraction=max_cut_fraction)
    if not problem and not kept.all():
        return _report(flat, f, kept, OUTSIDE_FAN_ONLY, reason)
    return _report(flat, f, np.ones((h, w), bool), UNMASKED,
                   reason if not problem else f"{reason}; outside-fan mask: {problem}".lstrip("; "))


def _report(flat, frames, kept, action, reason):
    signal = flat > SIGNAL_LEVEL
    total = int(signal.sum())
    zeroed = int((signal & ~kept[None]).sum())
    out = np.where(kept, frames, np.zeros((), frames.dtype))
    return out, SectorReport(action=action, reason=reason, kept=kept,
                             zeroed_signal_fraction=zeroed / total if total else 0.0)
