"""Tests of echojax.data.cone on phantoms with markings and on a hand-drawn sector."""

import numpy as np
import pytest

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
    assert (m & ~truth).sum() <= 0.02 * truth.sum()   # the margin only


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
    with pytest.raises(ValueError, match="5%"):
        cone_mask(np.zeros((64, 64), np.uint8))
    with pytest.raises(ValueError, match="16x16"):
        cone_mask(np.ones((8, 8), np.uint8))
    with pytest.raises(ValueError, match="bool"):
        apply_cone_mask(np.zeros((4, 4)), np.ones((4, 4)))
    with pytest.raises(ValueError, match="does not end"):
        apply_cone_mask(np.zeros((4, 5)), np.ones((4, 4), bool))
