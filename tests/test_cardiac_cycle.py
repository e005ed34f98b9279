"""Tests of echojax.cardiac_cycle on synthetic area curves with known ED/ES frames."""

import math

import numpy as np
import pytest

from echojax import cardiac_cycle
from echojax.cardiac_cycle import Beat


def skewed_cycle(n_frames, period, ed0, systole, *, ed_area=1000.0, es_area=600.0):
    """Area curve: ED at ed0 + k*period, a cosine fall to ES ``systole`` frames later,
    a cosine rise back over the rest of the period. Returns curve, ED list, ES list."""
    t = np.arange(n_frames, dtype=np.float64)
    phase = (t - ed0) % period
    fall = phase < systole
    x = np.where(fall, phase / systole, 1 - (phase - systole) / (period - systole))
    area = es_area + (ed_area - es_area) * (1 + np.cos(math.pi * x)) / 2
    eds = [ed0 + k * period for k in range(-1, n_frames // period + 2)]
    return area, [e for e in eds if 0 < e < n_frames - 1], \
        [e + systole for e in eds if 0 < e + systole < n_frames - 1]


def test_beats_of_a_clean_three_beat_curve():
    area, eds, ess = skewed_cycle(100, period=30, ed0=7, systole=11)
    assert eds == [7, 37, 67, 97] and ess == [18, 48, 78]
    beats = cardiac_cycle.detect_beats(area, min_beat_frames=15)
    # ED 97 has no ES before the loop ends: a partial beat, not counted.
    assert beats == [Beat(7, 18), Beat(37, 48), Beat(67, 78)]


def test_partial_beat_at_the_start_is_not_counted():
    area, _, _ = skewed_cycle(70, period=30, ed0=25, systole=10)
    # Frames 0..24 descend from a previous ED at -5 to ES 5 and back: ES 5 has no ED before it.
    assert cardiac_cycle.detect_beats(area, min_beat_frames=15) == [Beat(25, 35), Beat(55, 65)]


def test_noise_does_not_split_beats_with_min_beat_length():
    rng = np.random.default_rng(0)
    area, _, _ = skewed_cycle(120, period=40, ed0=10, systole=14)
    noisy = area + rng.normal(0, 8.0, area.shape)  # 2 % of the stroke area
    beats = cardiac_cycle.detect_beats(noisy, min_beat_frames=20)
    assert len(beats) == 3
    for got, (ed, es) in zip(beats, [(10, 24), (50, 64), (90, 104)]):
        assert abs(got.ed - ed) <= 2 and abs(got.es - es) <= 2
    # Without the beat length and prominence rules, noise makes spurious beats.
    assert len(cardiac_cycle.detect_beats(noisy, min_beat_frames=1, min_prominence=0.0)) > 3


def test_flat_or_monotone_curves_have_no_beat():
    assert cardiac_cycle.detect_beats(np.full(50, 3.0), min_beat_frames=5) == []
    assert cardiac_cycle.detect_beats(np.linspace(0, 1, 50), min_beat_frames=5) == []


def test_min_beat_frames_from_frame_rate():
    assert cardiac_cycle.min_beat_frames(50) == 15       # 50 fps * 60 / 200 bpm
    assert cardiac_cycle.min_beat_frames(30, max_heart_rate_bpm=120) == 15
    assert cardiac_cycle.min_beat_frames(2) == 2
    with pytest.raises(ValueError, match="fps > 0"):
        cardiac_cycle.min_beat_frames(0)


@pytest.mark.parametrize("area,kw,match", [
    (np.zeros((4, 4)), {}, "1-D"), (np.array([1.0, 2.0]), {}, "at least 3"),
    (np.array([1.0, np.nan, 2.0, 1.0]), {}, "NaN"),
    (np.ones(10), {"min_beat_frames": 0}, "positive int"),
    (np.ones(10), {"min_prominence": -1.0}, "min_prominence"),
])
def test_detect_beats_bad_input(area, kw, match):
    kw = {"min_beat_frames": 5, **kw}
    with pytest.raises(ValueError, match=match):
        cardiac_cycle.detect_beats(area, **kw)


def disc(radius_rows, radius_cols, size=96):
    r, c = np.mgrid[:size, :size]
    return ((r - size / 2) / radius_rows) ** 2 + ((c - size / 2) / radius_cols) ** 2 <= 1


def test_ef_per_beat_and_mean():
    # Frames: ED ellipse at 0 and 4, ES ellipses of two sizes at 2 and 6.
    masks = [disc(40, 16), disc(35, 14), disc(30, 12), disc(35, 14),
             disc(40, 16), disc(33, 13), disc(26, 10), disc(30, 12)]
    beats = [Beat(0, 2), Beat(4, 6)]
    efs, mean = cardiac_cycle.ef_per_beat(masks, beats)
    from echojax import biomarkers
    want = [biomarkers.ef_from_masks(masks[0], masks[2]), biomarkers.ef_from_masks(masks[4], masks[6])]
    assert efs == want and mean == pytest.approx(np.mean(want))
    # Prolate ellipsoids a b^2: EF about 1 - 30*12^2/(40*16^2) and 1 - 26*10^2/(40*16^2).
    assert efs[0] == pytest.approx(100 * (1 - 30 * 144 / (40 * 256)), abs=2.0)
    assert efs[1] == pytest.approx(100 * (1 - 26 * 100 / (40 * 256)), abs=2.0)


def test_ef_per_beat_bad_input():
    masks = [disc(40, 16), disc(30, 12)]
    with pytest.raises(ValueError, match="no complete beat"):
        cardiac_cycle.ef_per_beat(masks, [])
    with pytest.raises(ValueError, match="outside the loop's 2 frames"):
        cardiac_cycle.ef_per_beat(masks, [Beat(0, 5)])


@pytest.mark.parametrize("style", ["camus_like", "unity_like", "echonet_like"])
def test_phantom_cine_ed_es_recovered_from_the_label_area(style):
    from echojax import labels, phantoms

    loop = phantoms.render_cine(style, 3, "4CH", shape=(96, 96), num_frames=70,
                                frames_per_beat=24, first_ed_frame=5, fps=30.0)
    area = (loop.segmentation == labels.LV).sum(axis=(1, 2))
    beats = cardiac_cycle.detect_beats(area, min_beat_frames=cardiac_cycle.min_beat_frames(30.0))
    assert loop.ed_frames == (5, 29, 53) and loop.es_frames == (13, 37, 61)
    # Near ED and ES the pixel area is flat for a frame or two: within one frame.
    assert len(beats) == 3
    for b, ed, es in zip(beats, loop.ed_frames, loop.es_frames):
        assert abs(b.ed - ed) <= 1 and abs(b.es - es) <= 1
    efs, mean = cardiac_cycle.ef_per_beat(loop.segmentation == labels.LV, beats,
                                          loop.pixel_spacing_mm)
    # Monoplane discs on one view's label vs the analytic biplane EF of the anatomy.
    assert abs(mean - loop.ef) < 4.0, (efs, loop.ef)  # 0.0-2.5 over 9 loops (3 styles x 3)
