"""Tests of echojax.data.cone on phantoms with markings (raw, JPEG/MJPG-compressed, with
faint noise outside the sector) and on a hand-drawn sector."""

import cv2
import numpy as np
import pytest
from scipy import ndimage

from echojax import phantoms
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
