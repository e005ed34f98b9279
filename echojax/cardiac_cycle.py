"""End-diastole / end-systole frames from an LV area curve, and EF per beat.

Evaluation code (numpy in, Python values out). In an apical cine loop the LV is
largest at end-diastole (ED) and smallest at end-systole (ES); without an ECG, ED and
ES are read from the LV size curve, as EchoNet-Dynamic's beat-by-beat assessment
(Ouyang et al., Nature 2020) does from the predicted LV area. A predicted curve jitters
by a few pixels from frame to frame, and a jitter peak must not become an ED: a
one-frame "beat" next to the true ES has an EF of a few percent and drags the loop's
mean EF down. The rules (all our choice, with the physiology that bounds them):

1. **Time scale.** ``min_beat_frames`` is the shortest beat, by default at 200 bpm
   (:func:`min_beat_frames`: 0.3 s). Two EDs are at least that far apart.
2. **Light smoothing, for finding extrema only.** ED and ES frames are located on the
   curve smoothed by a Gaussian of ``smooth_frames`` (default a fifteenth of the shortest
   beat: 20 ms at the default, one frame at 50 fps), much shorter than any systole, so
   it removes single-frame jitter without moving a real extremum by more than about a
   frame. Every value a rule compares, and the EF, come from the raw curve and the
   masks at those frames. Taking the raw curve's own maximum and minimum would pick the
   frames where noise happens to be highest at ED and lowest at ES, which biases EF up.
3. **Prominence relative to the curve and its noise.** An ED must stand out of the
   smoothed curve (``scipy.signal.find_peaks`` prominence) by ``min_prominence``:
   by default the larger of 10 % of the curve's amplitude (the 5th to 95th percentile
   range, so that one wrong frame does not set it) and 3 times the frame-to-frame noise
   (the noise's standard deviation estimated robustly from second differences of the
   raw curve: 1.4826 MAD / sqrt(6), which a smooth cardiac curve hardly touches). The
   first ED of a loop that began in diastole rose from the loop's first frame, not from
   a whole ES: with no higher point before it, it needs the prominence on its right
   (its systolic fall) and half of it on its left (a loop that began in systole falls
   from its first frame, so a jitter peak there does not rise that far).
4. **A beat's ES** is the smallest smoothed area between its ED and the next ED (or
   the loop's end: then only if the curve turned back up before the last frame; a beat
   still falling at the end is partial). A peak at the first or last frame is not a
   peak, so partial beats at the loop's ends are not counted.
5. **Minimum systole.** ED to ES lasts at least ``min_systole_frames``, by default 40 %
   of the shortest beat (0.12 s at 200 bpm). Isovolumic contraction plus ejection take
   about 0.3-0.4 s at rest; systole shortens far less than diastole as the heart rate
   rises and still fills 40-50 % of a 0.3 s cycle at 200 bpm.
6. **Minimum systolic fall.** The raw area falls from ED to ES by at least
   ``min_fall_fraction`` of the ED area (default 5 %; for a ventricle that shrinks alike
   in length and width that is an EF of about 7 %, below any ventricle still ejecting
   measurably) and by at least the prominence.

An ED whose beat breaks rule 5 or 6 is not an ED: it is dropped and the beats are
paired again (the previous beat's ES is then searched up to the next remaining ED).
:func:`analyse_beats` also returns what was rejected and why, and, when no beat is
left, one line saying why (a flat curve, no peak above the thresholds, partial beats).

EF of a beat comes from the LV masks at its ED and ES frames (``echojax.biomarkers``),
and the loop's EF is the mean over its beats.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np
from scipy import ndimage, signal

from echojax import biomarkers

MAX_HEART_RATE_BPM = 200.0  # the shortest beat a default min_beat_frames allows
RELATIVE_PROMINENCE = 0.10  # fraction of the curve's 5th-95th percentile amplitude
NOISE_PROMINENCE = 3.0      # times the frame-to-frame noise's standard deviation
MIN_SYSTOLE_FRACTION = 0.4  # of the shortest beat: 0.12 s at 200 bpm
SMOOTH_FRACTION = 1 / 15    # Gaussian sigma, of the shortest beat: 20 ms at 200 bpm
MIN_FALL_FRACTION = 0.05    # of the ED area


@dataclasses.dataclass(frozen=True)
class Beat:
    """One beat: its end-diastolic and end-systolic frame indices (``ed < es``)."""
    ed: int
    es: int


@dataclasses.dataclass(frozen=True)
class BeatAnalysis:
    """What :func:`analyse_beats` found and the thresholds it used.

    ``rejected`` holds ``(ed, es, reason)`` for candidate EDs dropped by the systole and
    fall rules and for partial beats at the loop's end; ``reason`` says why ``beats`` is
    empty ("" when it is not).
    """
    beats: list[Beat]
    rejected: list[tuple[int, int, str]]
    reason: str
    prominence: float
    amplitude: float
    noise: float
    min_beat_frames: int
    min_systole_frames: int
    smooth_frames: float
    min_fall_fraction: float


def min_beat_frames(fps: float, *, max_heart_rate_bpm: float = MAX_HEART_RATE_BPM) -> int:
    """Frames in the shortest beat at ``max_heart_rate_bpm`` (at least 2)."""
    fps, bpm = float(fps), float(max_heart_rate_bpm)
    if not (math.isfinite(fps) and fps > 0 and math.isfinite(bpm) and bpm > 0):
        raise ValueError(f"min_beat_frames: need fps > 0 and max_heart_rate_bpm > 0, "
                         f"got fps={fps}, max_heart_rate_bpm={bpm}")
    return max(2, int(fps * 60.0 / bpm))


def noise_std(area) -> float:
    """Robust frame-to-frame noise standard deviation of a curve: 1.4826 times the median
    absolute second difference over sqrt(6) (white noise of variance s^2 gives second
    differences of variance 6 s^2; a smooth curve's own curvature is small beside it)."""
    a = np.asarray(area, dtype=np.float64)
    if a.size < 3:
        return 0.0
    return float(1.4826 * np.median(np.abs(a[:-2] - 2 * a[1:-1] + a[2:])) / math.sqrt(6))


def _check_count(name, value, low):
    if not (isinstance(value, (int, np.integer)) and not isinstance(value, bool) and value >= low):
        raise ValueError(f"detect_beats: {name} must be an int >= {low}, got {value!r}")
    return int(value)


def _check_float(name, value):
    v = float(value)
    if not (math.isfinite(v) and v >= 0):
        raise ValueError(f"detect_beats: {name} must be a finite number >= 0, got {value!r}")
    return v


def analyse_beats(area, *, min_beat_frames: int, min_prominence: float | None = None,
                  min_systole_frames: int | None = None, smooth_frames: float | None = None,
                  min_fall_fraction: float = MIN_FALL_FRACTION) -> BeatAnalysis:
    """Beats of an LV area (or volume) curve with the rules of this module's docstring.

    Args:
      area: ``float[T]`` LV area per frame (any unit).
      min_beat_frames: the fewest frames between two EDs, e.g. :func:`min_beat_frames`
        of the loop's frame rate; it also sets the default systole and smoothing.
      min_prominence: how far (in ``area`` units) an ED must stand out; default the
        larger of ``RELATIVE_PROMINENCE`` times the amplitude and ``NOISE_PROMINENCE``
        times :func:`noise_std`.
      min_systole_frames: fewest frames from ED to ES; default
        ``MIN_SYSTOLE_FRACTION * min_beat_frames`` (at least 1).
      smooth_frames: Gaussian sigma in frames for locating extrema (0: none); default
        ``SMOOTH_FRACTION * min_beat_frames``.
      min_fall_fraction: the smallest ED-to-ES fall, as a fraction of the ED area.

    Raises:
      ValueError: a curve that is not 1-D, has fewer than 3 frames or non-finite values,
        or a bad parameter (each named with its value).
    """
    a = np.asarray(area, dtype=np.float64)
    if a.ndim != 1 or a.size < 3 or not np.all(np.isfinite(a)):
        raise ValueError(f"detect_beats: area must be a finite 1-D curve of at least 3 frames, "
                         f"got shape {a.shape}" + ("" if np.all(np.isfinite(a)) else " with NaN/inf"))
    beat = _check_count("min_beat_frames", min_beat_frames, 1)
    systole = (max(1, int(MIN_SYSTOLE_FRACTION * beat)) if min_systole_frames is None
               else _check_count("min_systole_frames", min_systole_frames, 1))
    sigma = (SMOOTH_FRACTION * beat if smooth_frames is None
             else _check_float("smooth_frames", smooth_frames))
    fall_fraction = _check_float("min_fall_fraction", min_fall_fraction)
    if fall_fraction >= 1:
        raise ValueError(f"detect_beats: min_fall_fraction must be < 1, got {min_fall_fraction!r}")
    amplitude = float(np.percentile(a, 95) - np.percentile(a, 5))
    noise = noise_std(a)
    prominence = (max(RELATIVE_PROMINENCE * amplitude, NOISE_PROMINENCE * noise)
                  if min_prominence is None else _check_float("min_prominence", min_prominence))

    def result(beats, rejected, reason):
        return BeatAnalysis(beats, rejected, reason, prominence, amplitude, noise, beat,
                            systole, sigma, fall_fraction)

    if np.ptp(a) == 0:
        return result([], [], f"the LV area is constant ({a[0]:g} in all {a.size} frames): "
                              "no cardiac cycle")
    s = ndimage.gaussian_filter1d(a, sigma, mode="nearest") if sigma > 0 else a
    eds = [int(e) for e in _peaks(s, beat, max(prominence, 1e-12 * np.ptp(a)))]
    if not eds:
        return result([], [], f"no peak of the LV area stands out by {prominence:.4g} (the "
                              f"larger of {RELATIVE_PROMINENCE:.0%} of its amplitude {amplitude:.4g} "
                              f"and {NOISE_PROMINENCE:g} x its frame-to-frame noise {noise:.3g}) "
                              "away from the loop's ends: no ED")
    rejected: list[tuple[int, int, str]] = []
    while True:
        beats, partial, drop = [], [], None
        for i, ed in enumerate(eds):
            end = eds[i + 1] if i + 1 < len(eds) else a.size
            es = ed + int(np.argmin(s[ed:end]))
            last = i + 1 == len(eds)
            fall = a[ed] - a[es]
            why = ""
            if es - ed < systole:
                why = f"systole of {es - ed} frames, fewer than {systole}"
            elif fall < fall_fraction * a[ed]:
                why = (f"area falls by {fall / a[ed]:.1%} of its ED value, less than "
                       f"{fall_fraction:.0%}")
            elif fall < prominence:
                why = f"area falls by {fall:.4g}, less than the prominence {prominence:.4g}"
            if last and es >= a.size - 1:
                partial.append((ed, es, "partial beat: the area still falls at the loop's end"))
            elif why:
                drop = (ed, es, why)
                break
            else:
                beats.append(Beat(ed, es))
        if drop is None:
            break
        rejected.append(drop)
        eds.remove(drop[0])
    rejected += partial
    reason = ""
    if not beats:
        reason = "no complete beat (an ED followed by its ES) in the LV area curve: " + "; ".join(
            f"ED {ed} -> ES {es}: {why}" for ed, es, why in rejected)
    return result(beats, rejected, reason)


def _peaks(s: np.ndarray, distance: int, prominence: float) -> np.ndarray:
    """Peaks at least ``distance`` apart that stand out by ``prominence``; a peak with no
    higher point before it (the loop began before it rose) needs that only on its right
    and half of it on its left, where the rise was cut by the loop's start."""
    peaks, _ = signal.find_peaks(s, distance=distance)
    if peaks.size == 0:
        return peaks
    prom, _, right_base = signal.peak_prominences(s, peaks)
    keep = prom >= prominence
    for i, p in enumerate(peaks):
        if not keep[i] and s[:p].max() < s[p]:
            keep[i] = (s[p] - s[p:right_base[i] + 1].min() >= prominence
                       and s[p] - s[:p].min() >= prominence / 2)
    return peaks[keep]


def detect_beats(area, *, min_beat_frames: int, min_prominence: float | None = None,
                 min_systole_frames: int | None = None, smooth_frames: float | None = None,
                 min_fall_fraction: float = MIN_FALL_FRACTION) -> list[Beat]:
    """ED/ES frame pairs of the beats in an LV area (or volume) curve, in time order;
    empty when the curve holds no complete ED -> ES (:func:`analyse_beats` says why).
    Arguments and errors as :func:`analyse_beats`."""
    return analyse_beats(area, min_beat_frames=min_beat_frames, min_prominence=min_prominence,
                         min_systole_frames=min_systole_frames, smooth_frames=smooth_frames,
                         min_fall_fraction=min_fall_fraction).beats


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
