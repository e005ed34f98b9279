"""Tests of echojax.data.cone on phantoms with markings (raw, JPEG/MJPG-compressed, with
faint noise outside the sector) and on a hand-drawn sector."""

import cv2
import numpy as np
import pytest
from scipy import ndimage

from echojax import phantoms
from echojax.data import cone
from echojax.data.cone import apply_cone_mask, cone_mask


@pytest.mark.parametrize("style", sorted(phantoms.STYLES))
@pytest.mark.parametrize("shape", [(256, 256), (112, 112), (64, 64), (240, 330)])
def test_removes_markings_and_keeps_the_sector(style, shape):
    for i in range(3):
        for view in phantoms.VIEWS:
            r = phantoms.render_view(style, i, view, "ES", shape=shape)
            m = cone_mask(r.image_raw)
            assert (~m[r.markings]).mean() >= 0.99
            assert m[r.cone].mean() >= 0.995
            masked = apply_cone_mask(r.image_raw, m)
            assert (masked[r.markings] == 0).mean() >= 0.99


def test_clip_uses_temporal_variation():
    frames = np.stack([
        phantoms.render_view("echonet_like", 4, "4CH", float(s), shape=(112, 112)).image_raw
        for s in np.linspace(0, 1, 8)])
    r = phantoms.render_view("echonet_like", 4, "4CH", "ED", shape=(112, 112))
    m = cone_mask(frames)
    assert (~m[r.markings]).mean() >= 0.99 and m[r.cone].mean() >= 0.995
    # Leading dims are free: [clips, frames, H, W].
    np.testing.assert_array_equal(cone_mask(frames[None]), m)


def _check(m, r):
    """The documented targets against the true sector of the rendering ``r``."""
    assert (~m[r.markings]).mean() >= 0.99
    assert m[r.cone].mean() >= 0.995


def _jpeg(image, quality):
    ok, buf = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, quality])
    assert ok
    return cv2.imdecode(buf, cv2.IMREAD_GRAYSCALE)


def test_mjpg_clip(tmp_path):
    # An EchoNet-like 112x112, 180-frame clip through a lossy video codec: ringing and
    # blocking around the sector and the markings change from frame to frame.
    style, view = "echonet_like", "4CH"
    phases = np.abs(np.sin(np.linspace(0, 3 * np.pi, 180)))      # three beats
    frames = np.stack([phantoms.render_view(style, 2, view, float(s), shape=(112, 112)).image_raw
                       for s in phases])
    path = str(tmp_path / "clip.avi")
    writer = cv2.VideoWriter(path, cv2.VideoWriter_fourcc(*"MJPG"), 50, (112, 112))
    assert writer.isOpened()
    for f in frames:
        writer.write(cv2.cvtColor(f, cv2.COLOR_GRAY2BGR))
    writer.release()
    cap = cv2.VideoCapture(path)
    decoded = []
    while True:
        ok, f = cap.read()
        if not ok:
            break
        decoded.append(cv2.cvtColor(f, cv2.COLOR_BGR2GRAY))
    decoded = np.stack(decoded)
    assert decoded.shape == frames.shape
    changed = decoded != frames
    assert changed[:, ~phantoms.render_view(style, 2, view, "ED", shape=(112, 112)).cone].any()
    _check(cone_mask(decoded), phantoms.render_view(style, 2, view, "ED", shape=(112, 112)))


@pytest.mark.parametrize("style", sorted(phantoms.STYLES))
@pytest.mark.parametrize("shape", [(112, 112), (256, 256), (600, 800)])
def test_jpeg_compressed_frames(style, shape):
    for view in phantoms.VIEWS:
        r = phantoms.render_view(style, 1, view, "ES", shape=shape)
        for quality in (90, 50):
            img = _jpeg(r.image_raw, quality)
            assert (img[~r.cone & ~r.markings] > 0).any()       # codec noise outside
            _check(cone_mask(img), r)


@pytest.mark.parametrize("style", sorted(phantoms.STYLES))
@pytest.mark.parametrize("shape", [(112, 112), (256, 256)])
def test_faint_noise_outside_the_sector(style, shape):
    rng = np.random.default_rng(3)
    for i in range(2):
        for view in phantoms.VIEWS:
            r = phantoms.render_view(style, i, view, "ES", shape=shape)
            img = r.image_raw.copy()
            out = ~r.cone & ~r.markings
            img[out] = np.minimum(np.abs(rng.normal(0, 3, out.sum())), 255).astype(np.uint8)
            _check(cone_mask(img), r)


def test_hand_drawn_sector_with_flat_top_and_text():
    # Apex above the image (flat top), 30 degree half angle, radius 150 px, square pixels.
    h, w = 160, 200
    rr, cc = np.mgrid[:h, :w].astype(float)
    ar, ac = -20.0, 100.0
    dr, dc = rr - ar, cc - ac
    truth = (np.abs(dc) <= dr * np.tan(np.radians(30))) & (np.hypot(dr, dc) <= 150)
    rng = np.random.default_rng(0)
    img = np.where(truth, rng.integers(1, 256, (h, w)), 0).astype(np.uint8)
    img[2:12, 2:40] = 200           # text block in the corner
    img[150:153, 170:195] = 255     # a logo below the arc, outside the wedge
    m = cone_mask(img)
    assert m[truth].mean() >= 0.995
    assert not m[2:12, 2:40].any() and not m[150:153, 170:195].any()
    # The margin only: a band of about margin_px (1) around the boundary.
    boundary = (truth & ~ndimage.binary_erosion(truth)).sum()
    assert (m & ~truth).sum() <= boundary
    # A wider margin grows the mask by about the boundary length per pixel.
    grown = (cone_mask(img, margin_px=2.0) & ~truth).sum() - (m & ~truth).sum()
    assert 0.7 * boundary <= grown <= 1.3 * boundary


def test_apply_cone_mask_shapes():
    m = np.zeros((20, 30), bool)
    m[5:15, 10:20] = True
    img = np.full((20, 30), 7, np.uint8)
    out = apply_cone_mask(img, m)
    assert out.dtype == np.uint8 and out.sum() == 7 * 100
    out = apply_cone_mask(np.full((3, 20, 30), 7.0), m)       # a clip
    assert out.shape == (3, 20, 30) and out.sum() == 3 * 700
    out = apply_cone_mask(np.full((20, 30, 1), 7), m)         # channels last
    assert out.sum() == 700


def test_bad_input():
    with pytest.raises(ValueError, match="uint8"):
        cone_mask(np.zeros((64, 64), np.float32))
    with pytest.raises(ValueError, match="noise floor"):
        cone_mask(np.zeros((64, 64), np.uint8))
    with pytest.raises(ValueError, match="noise floor"):       # noise only
        cone_mask(np.random.default_rng(0).integers(0, 6, (64, 64)).astype(np.uint8))
    with pytest.raises(ValueError, match="do not diverge"):    # a rectangle is no sector
        cone_mask(np.pad(np.random.default_rng(0).integers(50, 200, (40, 40)).astype(np.uint8), 12))
    with pytest.raises(ValueError, match="16x16"):
        cone_mask(np.ones((8, 8), np.uint8))
    with pytest.raises(ValueError, match="bool"):
        apply_cone_mask(np.zeros((4, 4)), np.ones((4, 4)))
    with pytest.raises(ValueError, match="does not end"):
        apply_cone_mask(np.zeros((4, 5)), np.ones((4, 4), bool))


# ------------------------------------------- safe sector handling of a recording


def _fan(h=80, w=100, half_angle=35.0, radius=70.0, apex=(4.0, 50.0), seed=0):
    """A hand-drawn fan of signal (grey 40-200) with square pixels, and its truth."""
    rr, cc = np.mgrid[:h, :w].astype(float)
    dr, dc = rr - apex[0], cc - apex[1]
    truth = (dr >= 0) & (np.abs(dc) <= dr * np.tan(np.radians(half_angle))) & (
        np.hypot(dr, dc) <= radius)
    img = np.where(truth, np.random.default_rng(seed).integers(40, 201, (h, w)), 0)
    return img.astype(np.uint8), truth


def test_sector_problems_hand_computed():
    signal = np.zeros((40, 40), bool)
    signal[10:30, 10:30] = True                 # the fan: 400 pixels
    signal[0:2, 36:40] = True                   # a marking: 8 pixels, far from the fan
    kept = np.zeros((40, 40), bool)
    kept[10:30, 10:25] = True                   # cuts 20 x 5 = 100 fan pixels
    # 100 of 408 signal pixels are cut: 24.5%, above 20%, below 25%.
    msg = cone.sector_problems(kept, signal, None, max_cut_fraction=0.2, gap_px=2)
    assert "100 of 408" in msg and "24.5%" in msg
    assert cone.sector_problems(kept, signal, None, max_cut_fraction=0.25, gap_px=2) == ""
    # The marking entirely outside is not counted; the whole fan outside is an error.
    kept2 = np.zeros((40, 40), bool)
    kept2[0:2, 36:40] = True
    assert "largest piece" in cone.sector_problems(kept2, signal, None, max_cut_fraction=0.5)
    # A labelled pixel outside.
    lab = np.zeros((40, 40), bool)
    lab[29, 29] = True
    assert "1 labelled pixels" in cone.sector_problems(kept, signal, lab, max_cut_fraction=1.0)
    # A fan piece entirely outside but within gap_px of the kept region counts as cut.
    kept3 = np.zeros((40, 40), bool)
    kept3[10:30, 10:30] = True
    sig3 = signal.copy()
    sig3[31:33, 10:30] = True                   # 40 pixels, one row below the fan
    assert "40 of 448" in cone.sector_problems(kept3, sig3, None, max_cut_fraction=0.05,
                                               gap_px=2)
    assert cone.sector_problems(kept3, sig3, None, max_cut_fraction=0.05, gap_px=1) == ""


def test_outside_fan_mask_keeps_the_fan_and_far_markings_go():
    img, truth = _fan()
    img[0:3, 0:12] = 255                         # text in the corner, far from the fan
    img[60:62, 92:99] = 255                      # a marking 3 pixels off the fan's edge
    near = ndimage.binary_dilation(truth, iterations=4) & ~truth
    assert not near[0:3, 0:12].any()
    kept = cone.outside_fan_mask(img > cone.SIGNAL_LEVEL, gap_px=3)
    assert kept[truth].all()                     # not one fan pixel lost
    assert not kept[0:3, 0:12].any()
    assert kept[60:62, 92:99].all()              # too near to be certainly outside: kept
    # A far-field fragment cut off from the fan by a dark gap of 2 pixels is fan.
    img2, truth2 = _fan(seed=1)
    img2[60:62] = 0
    kept2 = cone.outside_fan_mask(img2 > cone.SIGNAL_LEVEL, gap_px=3)
    assert kept2[truth2].all()


def test_clear_outside_sector_applies_a_valid_estimate():
    r = phantoms.render_view("unity_like", 0, "2CH", "ED", shape=(112, 112))
    out, report = cone.clear_outside_sector(r.image_raw, r.segmentation)
    assert report.action == cone.ESTIMATED and report.reason == "" and not report.fell_back
    np.testing.assert_array_equal(out, np.where(report.kept, r.image_raw, 0))
    assert (out[r.markings] == 0).mean() >= 0.99 and report.kept[r.cone].mean() >= 0.995
    sig = r.image_raw > cone.SIGNAL_LEVEL
    assert report.zeroed_signal_fraction == pytest.approx((sig & ~report.kept).sum() / sig.sum())


def test_clear_outside_sector_falls_back_when_a_label_is_outside_the_estimate():
    r = phantoms.render_view("camus_like", 1, "4CH", "ES", shape=(112, 112))
    est = cone_mask(r.image_raw)
    rows, cols = np.nonzero(~est & ~r.markings & (r.image_raw > cone.SIGNAL_LEVEL) |
                            (~est & ndimage.binary_dilation(est, iterations=2)))
    labels = np.zeros((112, 112), np.uint8)
    labels[rows[0], cols[0]] = 1                 # a labelled pixel just outside it
    out, report = cone.clear_outside_sector(r.image_raw, labels)
    assert report.action == cone.OUTSIDE_FAN_ONLY and report.fell_back
    assert "labelled pixels lie outside" in report.reason
    assert report.kept[rows[0], cols[0]] and report.kept[r.cone].all()
    assert out[r.cone].tolist() == r.image_raw[r.cone].tolist()  # no fan pixel touched
    # estimate=False goes to the same safe mask at once, with no reason to report.
    out2, report2 = cone.clear_outside_sector(r.image_raw, labels, estimate=False)
    np.testing.assert_array_equal(report2.kept, report.kept)
    assert report2.reason == "" and not report2.fell_back


def test_clear_outside_sector_leaves_what_it_cannot_judge_alone():
    blank = np.zeros((40, 40), np.uint8)
    out, report = cone.clear_outside_sector(blank)
    assert report.action == cone.UNMASKED and "no sector estimate" in report.reason
    assert report.kept.all() and report.zeroed_signal_fraction == 0.0
    # Signal everywhere (no outside): nothing is zeroed.
    full = np.random.default_rng(0).integers(50, 200, (40, 40)).astype(np.uint8)
    out, report = cone.clear_outside_sector(full)
    assert report.action == cone.UNMASKED and (out == full).all()
    with pytest.raises(ValueError, match="uint8"):
        cone.clear_outside_sector(full.astype(np.float32))
    with pytest.raises(ValueError, match=r"labels must be \[\.\.\., 40, 40\]"):
        cone.clear_outside_sector(full, np.zeros((4, 4)))
