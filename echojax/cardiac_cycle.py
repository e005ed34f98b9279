"""End-diastole / end-systole frames from an LV area curve, and EF per beat.

Evaluation code (numpy in, Python values out). In an apical cine loop the LV is
largest at end-diastole (ED) and smallest at end-systole (ES); without an ECG, ED and
ES are read from the LV size curve, as EchoNet-Dynamic's beat-by-beat assessment
(Ouyang et al., Nature 2020) does from the predicted LV area. Rules (our choice where
the sources are silent):

- ED frames are the peaks of the area curve (``scipy.signal.find_peaks``), at least
  ``min_beat_frames`` apart and standing out by at least ``min_prominence`` (default:
  10 % of the curve's range, so that noise does not split a beat).
- A beat's ES is the smallest area between its ED and the next ED. After the last ED,
  the smallest area counts only if the curve turned back up before the loop ended
  (not at the last frame) and fell by at least the prominence from ED. A peak at the
  very first or last frame is not a peak (the curve may still be rising), so partial
  beats at the loop's ends are not counted.
- EF of a beat from the LV masks at its ED and ES frames (``echojax.biomarkers``),
  and the mean over the loop's beats.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np
from scipy import signal

from echojax import biomarkers

DEFAULT_PROMINENCE = 0.10   # fraction of the curve's range
MAX_HEART_RATE_BPM = 200.0  # the shortest beat a default min_beat_frames allows


@dataclasses.dataclass(frozen=True)
class Beat:
    """One beat: its end-diastolic and end-systolic frame indices (``ed < es``)."""
    ed: int
    es: int


def min_beat_frames(fps: float, *, max_heart_rate_bpm: float = MAX_HEART_RATE_BPM) -> int:
    """Frames in the shortest beat at ``max_heart_rate_bpm`` (at least 2)."""
    fps, bpm = float(fps), float(max_heart_rate_bpm)
    if not (math.isfinite(fps) and fps > 0 and math.isfinite(bpm) and bpm > 0):
        raise ValueError(f"min_beat_frames: need fps > 0 and max_heart_rate_bpm > 0, "
                         f"got fps={fps}, max_heart_rate_bpm={bpm}")
    return max(2, int(fps * 60.0 / bpm))


def detect_beats(area, *, min_beat_frames: int, min_prominence: float | None = None) -> list[Beat]:
    """ED/ES frame pairs of the beats in an LV area (or volume) curve.

    Args:
      area: ``float[T]`` LV area per frame (any unit).
      min_beat_frames: the fewest frames between two EDs (or two ESs); e.g.
        :func:`min_beat_frames` of the loop's frame rate.
      min_prominence: how far (in ``area`` units) a peak or trough must stand out;
        default ``DEFAULT_PROMINENCE`` times the curve's range.

    Returns:
      The beats in time order; empty when the curve holds no complete ED -> ES.

    Raises:
      ValueError: a curve that is not 1-D, has fewer than 3 frames or non-finite
        values, or a bad ``min_beat_frames``/``min_prominence``.
    """
    a = np.asarray(area, dtype=np.float64)
    if a.ndim != 1 or a.size < 3 or not np.all(np.isfinite(a)):
        raise ValueError(f"detect_beats: area must be a finite 1-D curve of at least 3 frames, "
                         f"got shape {a.shape}" + ("" if np.all(np.isfinite(a)) else " with NaN/inf"))
    if not (isinstance(min_beat_frames, (int, np.integer)) and min_beat_frames >= 1):
        raise ValueError(f"detect_beats: min_beat_frames must be a positive int, "
                         f"got {min_beat_frames!r}")
    prominence = DEFAULT_PROMINENCE * float(np.ptp(a)) if min_prominence is None else float(min_prominence)
    if not (math.isfinite(prominence) and prominence >= 0):
        raise ValueError(f"detect_beats: min_prominence must be >= 0, got {min_prominence!r}")
    if np.ptp(a) == 0:
        return []
    eds, _ = signal.find_peaks(a, distance=int(min_beat_frames),
                               prominence=max(prominence, 1e-12 * np.ptp(a)))
    beats = []
    for i, ed in enumerate(eds):
        if i + 1 < len(eds):
            es = ed + int(np.argmin(a[ed:eds[i + 1]]))
        else:
            # After the last ED: a trough only if the curve turned back up before the
            # loop ended and fell by at least the prominence from ED.
            es = ed + int(np.argmin(a[ed:]))
            if es >= a.size - 1 or a[ed] - a[es] < prominence:
                continue
        beats.append(Beat(int(ed), int(es)))
    return beats


def ef_per_beat(lv_masks, beats, spacing_mm=None, **disc_options) -> tuple[list[float], float]:
    """EF (percent) of each beat from the LV masks of its ED and ES frames, and their mean.

    Args:
      lv_masks: ``bool[T, H, W]`` (or a sequence of ``bool[H, W]``) LV mask per frame.
      beats: from :func:`detect_beats`.
      spacing_mm: pixel spacing or unknown (``None``/NaN): EF is scale-free
        (``biomarkers.ef_from_masks``).
      **disc_options: ``long_axis``, ``num_discs`` for ``biomarkers.ef_from_masks``.

    Raises:
      ValueError: no beat, a beat frame outside the loop, or an empty mask at ED/ES.
    """
    if not beats:
        raise ValueError("ef_per_beat: no complete beat (ED followed by ES) in the loop")
    n = len(lv_masks)
    efs = []
    for b in beats:
        if not (0 <= b.ed < n and 0 <= b.es < n):
            raise ValueError(f"ef_per_beat: beat {b} outside the loop's {n} frames")
        efs.append(biomarkers.ef_from_masks(lv_masks[b.ed], lv_masks[b.es], spacing_mm,
                                            **disc_options))
    return efs, float(np.mean(efs))
