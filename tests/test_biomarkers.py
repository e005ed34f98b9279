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


# --- apex-to-base long axis, unknown spacing, EF from masks -------------------------

def half_ellipse(a_mm, b_mm, *, angle_deg, spacing=(0.4, 0.4), size=256, cut_slope=0.0):
    """bool mask of a bullet: the apical half of an ellipse (semi-axes a along the
    axis, b across), apex at ``-a`` along the axis, base cut at ``along = cut_slope *
    across`` (an oblique mitral plane for ``cut_slope != 0``), rotated by ``angle_deg``.

    Returns the mask and the true apex and base midpoint (row, column) in mm.
    """
    rows, cols = np.meshgrid(np.arange(size) * spacing[0], np.arange(size) * spacing[1],
                             indexing="ij")
    cy, cx = 0.5 * size * spacing[0], 0.5 * size * spacing[1]
    th = math.radians(angle_deg)
    u = np.array([math.cos(th), math.sin(th)])  # along the axis, apex at -a
    v = np.array([-u[1], u[0]])
    along = (rows - cy) * u[0] + (cols - cx) * u[1]
    across = (rows - cy) * v[0] + (cols - cx) * v[1]
    mask = ((along / a_mm) ** 2 + (across / b_mm) ** 2 <= 1.0) & (along <= cut_slope * across)
    centre = np.array([cy, cx])
    apex = centre - a_mm * u
    # The cut line meets the ellipse at across = +-w; its midpoint is the base point.
    w = b_mm / math.sqrt(1 + (cut_slope * b_mm / a_mm) ** 2)
    base = centre + 0.5 * ((cut_slope * w) * u + w * v + (-cut_slope * w) * u - w * v)
    return mask, apex, base


@pytest.mark.parametrize("angle", [0.0, 20.0, -35.0, 160.0])
def test_volume_of_half_prolate_ellipsoid(angle):
    # Apical half of a prolate ellipsoid, flat base: V = 2/3 pi a b^2 (hand formula).
    a, b = 45.0, 13.0
    mask, _, _ = half_ellipse(a, b, angle_deg=angle)
    truth = 2 / 3 * math.pi * a * b * b / 1000.0
    for long_axis in biomarkers.LONG_AXES:
        got = biomarkers.lv_volume(mask, (0.4, 0.4), long_axis=long_axis)
        assert abs(got / truth - 1) < 0.03, (long_axis, got, truth)


@pytest.mark.parametrize("angle,slope,tol_mm", [
    (0.0, 0.3, 0.8), (25.0, -0.4, 0.8), (-60.0, 0.35, 0.8), (-60.0, 0.5, 0.8),
    (0.0, 0.6, 1.6), (30.0, -0.7, 0.8)])  # mitral plane 17-35 degrees off square
def test_apex_base_axis_finds_apex_and_mitral_midpoint_of_oblique_base(angle, slope, tol_mm):
    mask, apex, base = half_ellipse(45.0, 13.0, angle_deg=angle, cut_slope=slope)
    got_apex, got_base = biomarkers.lv_long_axis(mask, (0.4, 0.4))
    assert np.linalg.norm(got_base - base) < tol_mm  # 2 (or 4) pixels on a 26 mm base
    # The apex is the outline point farthest from the base point: on the rounded tip it
    # may slide a little from the ellipse's vertex; the axis must keep length and angle.
    want, got = base - apex, got_base - got_apex
    assert abs(np.linalg.norm(got) - np.linalg.norm(want)) < 0.8
    cos = got @ want / np.linalg.norm(got) / np.linalg.norm(want)
    assert math.degrees(math.acos(min(1.0, cos))) < 4.0
    # The principal axis of the same mask does not run to the mitral midpoint.
    p_apex, p_base = biomarkers.lv_long_axis(mask, (0.4, 0.4), long_axis="principal")
    assert np.linalg.norm(p_base - base) > 2.0


def test_lv_long_axis_in_pixels_without_spacing():
    mask, apex, base = half_ellipse(45.0, 13.0, angle_deg=10.0, cut_slope=0.2)
    got_apex, got_base = biomarkers.lv_long_axis(mask, None)
    np.testing.assert_allclose(got_apex * 0.4, biomarkers.lv_long_axis(mask, (0.4, 0.4))[0])
    np.testing.assert_allclose(got_base * 0.4, biomarkers.lv_long_axis(mask, (0.4, 0.4))[1])


def test_discs_run_from_apex_to_base():
    a, b = 45.0, 13.0
    mask, _, _ = half_ellipse(a, b, angle_deg=200.0)
    d, length = biomarkers.lv_discs(mask, (0.4, 0.4))
    assert d[0] < d[-1] and abs(length - a) < 0.8
    # Hand-computed: disc i of a half ellipse is 2b sqrt(1 - (1 - t/a)^2), t from the apex
    # (the apical disc, where the wall is steepest, within 3 pixels).
    want = 2 * b * np.sqrt(1 - (1 - (np.arange(20) + 0.5) * (a / 20) / a) ** 2)
    assert abs(d[0] - want[0]) < 1.2
    np.testing.assert_allclose(d[1:], want[1:], atol=0.6)


@pytest.mark.parametrize("spacing,expected", [
    (None, None), ((float("nan"), float("nan")), None), ([0.3, 0.5], (0.3, 0.5))])
def test_known_spacing(spacing, expected):
    assert biomarkers.known_spacing(spacing) == expected


@pytest.mark.parametrize("spacing", [(1.0, float("nan")), (0.0, 1.0), (1.0,), "ab"])
def test_known_spacing_rejects_half_known_or_bad(spacing):
    with pytest.raises(ValueError, match="positive finite"):
        biomarkers.known_spacing(spacing)


def test_lv_volume_needs_a_spacing():
    with pytest.raises(ValueError, match="positive finite"):
        biomarkers.lv_volume(ellipse(20.0, 10.0, size=64), None)


def test_ef_from_masks_is_scale_free_and_accepts_unknown_spacing():
    ed, _, _ = half_ellipse(48.0, 16.0, angle_deg=15.0)
    es, _, _ = half_ellipse(42.0, 12.0, angle_deg=15.0)
    unknown = biomarkers.ef_from_masks(ed, es, None)
    nan = biomarkers.ef_from_masks(ed, es, (float("nan"), float("nan")))
    scaled = biomarkers.ef_from_masks(ed, es, (0.37, 0.37))
    assert unknown == nan
    assert scaled == pytest.approx(unknown, abs=1e-9)
    via_volumes = biomarkers.ejection_fraction(biomarkers.lv_volume(ed, (0.37, 0.37)),
                                               biomarkers.lv_volume(es, (0.37, 0.37)))
    assert scaled == pytest.approx(via_volumes, rel=1e-12)
    # Truth: apical halves of prolate ellipsoids, 2/3 pi a b^2.
    truth = 100 * (1 - (42.0 * 12.0 ** 2) / (48.0 * 16.0 ** 2))
    assert abs(unknown - truth) < 2.0


def test_ef_from_masks_biplane_equals_volume_ratio():
    ed, es = ellipse(42.0, 21.0), ellipse(36.0, 15.0)
    ed2, es2 = ellipse(42.0, 17.0, angle_deg=-10), ellipse(36.0, 12.0, angle_deg=-10)
    got = biomarkers.ef_from_masks(ed, es, SPACING, ed_other=ed2, es_other=es2)
    want = biomarkers.ejection_fraction(
        biomarkers.lv_volume(ed, SPACING, other_view=ed2),
        biomarkers.lv_volume(es, SPACING, other_view=es2))
    assert got == pytest.approx(want, rel=1e-12)


def test_ef_from_masks_bad_inputs():
    ed, es = ellipse(42.0, 21.0, size=128), ellipse(36.0, 15.0, size=128)
    with pytest.raises(ValueError, match="both ed_other and es_other"):
        biomarkers.ef_from_masks(ed, es, None, ed_other=ed)
    with pytest.raises(ValueError, match="both must be known or both unknown"):
        biomarkers.ef_from_masks(ed, es, None, ed_other=ed, es_other=es,
                                 other_spacing_mm=(0.3, 0.3))
    with pytest.raises(ValueError, match="LV mask is empty"):
        biomarkers.ef_from_masks(ed, np.zeros_like(es), None)
    with pytest.raises(ValueError, match="long_axis must be one of"):
        biomarkers.ef_from_masks(ed, es, None, long_axis="pca")
