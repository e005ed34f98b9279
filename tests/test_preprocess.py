"""Resizing rules of echojax.data.preprocess: hand-checked values and bad input."""

import numpy as np
import pytest

from echojax.data import preprocess


def test_nearest_indices_are_centre_aligned():
    # 4 -> 2: output pixel 0 covers input 0..1 (centre 1.0 -> floor 1), pixel 1 covers 2..3.
    np.testing.assert_array_equal(preprocess.nearest_indices(4, 2), [1, 3])
    # 2 -> 4: each input pixel is repeated twice.
    np.testing.assert_array_equal(preprocess.nearest_indices(2, 4), [0, 0, 1, 1])
    np.testing.assert_array_equal(preprocess.nearest_indices(5, 5), np.arange(5))


def test_mask_resize_keeps_class_ids_and_blocks():
    mask = np.zeros((6, 4), np.uint8)
    mask[:3, :2] = 1
    mask[3:, 2:] = 3
    out = preprocess.resize_mask(mask, 2)
    np.testing.assert_array_equal(out, [[1, 0], [0, 3]])
    big = preprocess.resize_mask(mask, 12)
    assert set(np.unique(big)) == {0, 1, 3}
    # Upsampling by whole factors is block replication.
    np.testing.assert_array_equal(preprocess.resize_mask(np.array([[0, 2], [1, 3]]), 4),
                                  np.kron([[0, 2], [1, 3]], np.ones((2, 2), int)))


def test_image_shrink_averages_blocks():
    image = np.array([[0, 100, 10, 10], [200, 100, 30, 30]], np.uint8)
    image = np.tile(image, (2, 1))  # 4 x 4: each 2 x 2 block is {0,100,200,100} or {10,10,30,30}
    out = preprocess.resize_image(image, 2)
    # INTER_AREA with an integer factor is the 2x2 block mean.
    np.testing.assert_array_equal(out, [[100, 20], [100, 20]])


def test_image_grow_is_bilinear_and_constant_preserving():
    image = np.full((3, 5), 77, np.uint8)
    out = preprocess.resize_image(image, 8)
    assert out.shape == (8, 8) and out.dtype == np.uint8
    assert np.all(out == 77)
    ramp = np.tile(np.linspace(0, 250, 4).astype(np.uint8), (4, 1))
    up = preprocess.resize_image(ramp, 8).astype(int)
    assert np.all(np.diff(up[0]) >= 0)  # monotone along the ramp, no ringing


def test_spacing_updated_per_axis():
    spacing = preprocess.resized_spacing((0.154, 0.308), (778, 549), 256)
    np.testing.assert_allclose(spacing, [0.154 * 778 / 256, 0.308 * 549 / 256], rtol=1e-6)
    unknown = preprocess.resized_spacing((np.nan, np.nan), (112, 112), 64)
    assert np.isnan(unknown).all()


def test_resize_pair_physical_area_is_preserved():
    # A 20 x 10 rectangle in a 40 x 80 frame with spacing (0.5, 0.25) mm: 25 mm^2.
    mask = np.zeros((40, 80), np.uint8)
    mask[10:30, 20:30] = 1
    image = np.zeros((40, 80), np.uint8)
    _, out, spacing = preprocess.resize_pair(image, mask, (0.5, 0.25), 16, where="x")
    area = (out == 1).sum() * spacing[0] * spacing[1]
    assert area == pytest.approx(20 * 10 * 0.5 * 0.25, rel=0.1)


def test_float_images_with_whole_values_are_accepted():
    image = np.arange(16, dtype=np.float64).reshape(1, 4, 4)  # NIfTI-like float, z=1
    out = preprocess.as_uint8_image(image, where="f.nii.gz")
    assert out.dtype == np.uint8 and out.shape == (4, 4)


def test_float32_images_are_rounded_and_counted():
    whole = np.arange(0, 256, dtype=np.float32).reshape(1, 16, 16)  # as NIfTI loads it
    out, n = preprocess.round_to_uint8_image(whole, where="p_2CH_ED.nii.gz")
    assert out.dtype == np.uint8 and out.shape == (16, 16) and n == 0
    np.testing.assert_array_equal(out.ravel(), np.arange(256))
    frac = np.array([[0.0, 0.49, 0.5, 1.5], [254.5, 254.4, 255.0, 7.0]], np.float32)
    out, n = preprocess.round_to_uint8_image(frac, where="x")
    np.testing.assert_array_equal(out, [[0, 0, 1, 2], [255, 254, 255, 7]])
    assert n == 5
    ints = np.array([[3, 4], [5, 6]], np.int16)                      # not floats: exact
    out, n = preprocess.round_to_uint8_image(ints, where="x")
    assert out.dtype == np.uint8 and n == 0 and out.tolist() == [[3, 4], [5, 6]]


@pytest.mark.parametrize("bad, match", [
    (np.array([[0.0, 255.5], [1.0, 2.0]], np.float32), r"0\.\.255, found range \[0\.0, 255\.5\]"),
    (np.array([[-0.5, 3.0], [1.0, 2.0]], np.float32), r"0\.\.255, found range \[-0\.5, 3\.0\]"),
    (np.array([[np.nan, 3.0], [1.0, 2.0]], np.float32), "1 non-finite"),
])
def test_float_images_outside_0_255_name_the_file(bad, match):
    with pytest.raises(ValueError, match=match) as err:
        preprocess.round_to_uint8_image(bad, where="patient0001_2CH_ED.nii.gz")
    assert str(err.value).startswith("patient0001_2CH_ED.nii.gz: ")


@pytest.mark.parametrize("bad, match", [
    (np.full((4, 4), 300.0), "0..255"),
    (np.full((4, 4), 1.5), "whole numbers"),
    (np.zeros((4, 4, 3)), "2-D"),
    (np.zeros((4,)), "2-D"),
])
def test_bad_images_name_the_file(bad, match):
    with pytest.raises(ValueError, match=match) as err:
        preprocess.as_uint8_image(bad, where="patient0001_2CH_ED.nii.gz")
    assert "patient0001_2CH_ED.nii.gz" in str(err.value)


def test_bad_masks_name_the_file():
    with pytest.raises(ValueError, match=r"gt\.mhd.*class ids 0\.\.3.*\[4\.0\]"):
        preprocess.as_class_mask(np.full((3, 3), 4), where="p_gt.mhd")
    with pytest.raises(ValueError, match=r"p_gt\.mhd: mask shape \[3, 3\] does not match"):
        preprocess.resize_pair(np.zeros((4, 4)), np.zeros((3, 3)), (1, 1), 2,
                               where="p.mhd", mask_where="p_gt.mhd")


def test_bad_spacing_and_size():
    with pytest.raises(ValueError, match="positive or NaN"):
        preprocess.resized_spacing((0.0, 1.0), (4, 4), 2)
    with pytest.raises(ValueError, match="size"):
        preprocess.resize_image(np.zeros((4, 4), np.uint8), 0)
