"""Tests of echojax.biomarkers on rasterised ellipses with analytic volumes."""

import math

import numpy as np
import pytest

from echojax import biomarkers

SPACING = (0.4, 0.35)  # mm (row, column): anisotropic on purpose


def ellipse(a_mm, b_mm, *, angle_deg=15.0, spacing=SPACING, size=256, centre=(0.5, 0.5)):
    """bool[size, size]: pixel centres inside an ellipse with semi-axes a (long), b.

    The long axis is rotated ``angle_deg`` from the row axis; coordinates in mm.
    """
    rows, cols = np.meshgrid(np.arange(size) * spacing[0], np.arange(size) * spacing[1],
                             indexing="ij")
    y = rows - centre[0] * size * spacing[0]
    x = cols - centre[1] * size * spacing[1]
    th = math.radians(angle_deg)
    along = y * math.cos(th) + x * math.sin(th)
    across = -y * math.sin(th) + x * math.cos(th)
    return (along / a_mm) ** 2 + (across / b_mm) ** 2 <= 1.0


def prolate_ml(a, b, c=None):
    """Ellipsoid volume 4/3 pi a b c in mL (c = b: revolved about the long axis)."""
    return 4 / 3 * math.pi * a * b * (b if c is None else c) / 1000.0


@pytest.mark.parametrize("a,b,angle", [(42.0, 21.0, 0.0), (42.0, 21.0, 25.0),
                                       (36.0, 15.0, 70.0), (30.0, 18.0, -40.0)])
def test_monoplane_volume_of_rasterised_prolate_ellipsoid_within_3_percent(a, b, angle):
    got = biomarkers.lv_volume(ellipse(a, b, angle_deg=angle), SPACING)
    assert isinstance(got, float)
    assert abs(got / prolate_ml(a, b) - 1) < 0.03, (got, prolate_ml(a, b))


def test_long_axis_length_and_disc_diameters():
    # Axis-aligned, isotropic: diameters of the midpoint discs are 2b sqrt(1 - t^2/a^2).
    a, b = 40.1, 16.1
    d, length = biomarkers.lv_discs(ellipse(a, b, angle_deg=0.0, spacing=(0.4, 0.4)), (0.4, 0.4))
    assert abs(length - 2 * a) <= 0.4  # within a pixel
    t = -a + (np.arange(20) + 0.5) * (2 * a / 20)
    np.testing.assert_allclose(d, 2 * b * np.sqrt(1 - (t / a) ** 2), atol=0.5)


def test_biplane_volume_of_rasterised_ellipsoid_within_3_percent():
    a, b1, b2 = 42.0, 21.0, 16.0
    got = biomarkers.lv_volume(ellipse(a, b1, angle_deg=10.0), SPACING,
                               other_view=ellipse(a, b2, angle_deg=-20.0, spacing=(0.3, 0.3)),
                               other_spacing_mm=(0.3, 0.3))
    assert abs(got / prolate_ml(a, b1, b2) - 1) < 0.03


def test_biplane_with_the_same_view_twice_equals_monoplane():
    mask = ellipse(40.0, 18.0)
    mono = biomarkers.lv_volume(mask, SPACING)
    assert biomarkers.lv_volume(mask, SPACING, other_view=mask) == pytest.approx(mono, rel=1e-12)


def test_biplane_pairs_base_with_base():
    # A bullet (half ellipse + rectangle): the wide base must meet the other view's
    # base whichever way each principal axis points.
    def bullet(flip):
        m = ellipse(30.0, 15.0, angle_deg=0.0, spacing=(0.4, 0.4))
        m[128:170] = m[127]  # straight-walled base below the centre
        m[170:] = False
        return m[::-1] if flip else m

    same = biomarkers.lv_volume(bullet(False), (0.4, 0.4), other_view=bullet(False))
    flipped = biomarkers.lv_volume(bullet(False), (0.4, 0.4), other_view=bullet(True))
    assert flipped == pytest.approx(same, rel=1e-9)


def test_ejection_fraction_of_ellipsoids_within_2_points():
    edv = biomarkers.lv_volume(ellipse(42.0, 21.0), SPACING)
    esv = biomarkers.lv_volume(ellipse(36.0, 15.0), SPACING)
    truth = biomarkers.ejection_fraction(prolate_ml(42.0, 21.0), prolate_ml(36.0, 15.0))
    assert abs(biomarkers.ejection_fraction(edv, esv) - truth) < 2.0


def test_ejection_fraction_values():
    assert biomarkers.ejection_fraction(120.0, 48.0) == pytest.approx(60.0)
    assert biomarkers.ejection_fraction(100.0, 100.0) == 0.0
    assert biomarkers.ejection_fraction(50.0, 60.0) == pytest.approx(-20.0)  # not clipped


@pytest.mark.parametrize("edv,esv", [(0.0, 10.0), (-5.0, 1.0), (100.0, -1.0),
                                     (float("nan"), 10.0), (100.0, float("inf"))])
def test_ejection_fraction_bad_values(edv, esv):
    with pytest.raises(ValueError, match="EDV > 0 and ESV >= 0"):
        biomarkers.ejection_fraction(edv, esv)


@pytest.mark.parametrize("mask,spacing,match", [
    (np.zeros((8, 8), bool), (1.0, 1.0), "LV mask is empty"),
    (np.ones((8, 8), np.uint8), (1.0, 1.0), r"bool\[H, W\].*uint8\[8, 8\]"),
    (np.ones((8, 8, 1), bool), (1.0, 1.0), r"bool\[8, 8, 1\]"),
    (np.ones((8, 8), bool), (0.0, 1.0), "positive finite"),
    (np.ones((8, 8), bool), (1.0, float("nan")), "positive finite"),
    (np.ones((8, 8), bool), (1.0,), "two positive finite"),
])
def test_lv_volume_bad_inputs(mask, spacing, match):
    with pytest.raises(ValueError, match=match):
        biomarkers.lv_volume(mask, spacing)


def test_lv_volume_bad_other_view():
    mask = ellipse(20.0, 10.0, size=64)
    with pytest.raises(ValueError, match="LV mask is empty"):
        biomarkers.lv_volume(mask, SPACING, other_view=np.zeros_like(mask))
    with pytest.raises(ValueError, match="other_spacing_mm given without other_view"):
        biomarkers.lv_volume(mask, SPACING, other_spacing_mm=SPACING)
    with pytest.raises(ValueError, match="positive finite"):
        biomarkers.lv_volume(mask, SPACING, other_view=mask, other_spacing_mm=(-1.0, 1.0))
