"""Tests of echojax.phantoms: contract, anatomy, analytic EF, styles, bad input."""

import dataclasses
import math

import numpy as np
import pytest

from echojax import labels, phantoms
from echojax.data import features

STYLES = sorted(phantoms.STYLES)


def _ring(mask):
    """4-neighbour outer boundary of a boolean mask."""
    grown = mask.copy()
    grown[1:] |= mask[:-1]
    grown[:-1] |= mask[1:]
    grown[:, 1:] |= mask[:, :-1]
    grown[:, :-1] |= mask[:, 1:]
    return grown & ~mask


@pytest.mark.parametrize("style", STYLES)
def test_examples_follow_the_feature_contract(style):
    st = phantoms.STYLES[style]
    for i in range(3):
        examples = phantoms.generate_subject(style, i, resolution=64)
        assert len(examples) == st.examples_per_subject
        for ex in examples:
            features.check_example(ex, 64, where=f"{style}/{i}")
            assert ex["source"] == f"synthetic_echo/{style}"
            np.testing.assert_array_equal(ex["label_mask"], st.label_mask)
            assert ex["pixel_spacing_mm"].dtype == np.float32
            assert 0.3 < ex["pixel_spacing_mm"].min() and ex["pixel_spacing_mm"].max() < 5
        assert {ex["phase"] for ex in examples} == {"ED", "ES"}
        assert len({ex["patient_id"] for ex in examples}) == 1
        assert len({float(ex["ef"]) for ex in examples}) == 1


def test_label_sets_follow_the_real_datasets():
    assert phantoms.STYLES["echonet_like"].label_mask == (True, True, False, False)
    assert phantoms.STYLES["camus_like"].label_mask == (True, True, True, True)
    assert phantoms.STYLES["unity_like"].label_mask == (True, True, True, True)
    r = phantoms.render_view("echonet_like", 0, "4CH", "ED", shape=(64, 64))
    assert set(np.unique(r.classes)) == {0, 1, 2, 3}      # anatomy is all there ...
    assert set(np.unique(r.segmentation)) == {0, 1}       # ... only the LV is labelled
    np.testing.assert_array_equal(r.segmentation == 1, r.classes == 1)


def test_views_per_style():
    views = {s: [phantoms.sample_subject(s, i).views for i in range(60)] for s in STYLES}
    assert all(v == ("2CH", "4CH") for v in views["camus_like"])
    assert all(v == ("4CH",) for v in views["echonet_like"])
    n_2ch = sum(v == ("2CH",) for v in views["unity_like"])
    assert 36 <= n_2ch < 60          # mostly 2-chamber (p = 0.8)


def test_deterministic_by_seed():
    a = phantoms.generate_subject("camus_like", 5, resolution=64, seed=1)
    b = phantoms.generate_subject("camus_like", 5, resolution=64, seed=1)
    c = phantoms.generate_subject("camus_like", 5, resolution=64, seed=2)
    for x, y in zip(a, b):
        np.testing.assert_array_equal(x["image"], y["image"])
        np.testing.assert_array_equal(x["segmentation"], y["segmentation"])
    assert not np.array_equal(a[0]["image"], c[0]["image"])
    assert a[0]["patient_id"] != c[0]["patient_id"]


@pytest.mark.parametrize("style", STYLES)
def test_anatomy(style):
    for i in range(8):
        for view in phantoms.VIEWS:
            for phase in ("ED", "ES"):
                r = phantoms.render_view(style, i, view, phase, shape=(96, 96))
                lv, lvm = r.classes == labels.LV, r.classes == labels.LVM
                assert lv.sum() > 100 and lvm.sum() > 50
                # LV and myocardium lie inside the sector (never clipped by it).
                assert not (r.classes > 0)[~r.cone].any()
                # The myocardium surrounds the LV except along the mitral plane.
                ring = _ring(lv)
                rows, cols = np.nonzero(ring & ~lvm)
                (r0, c0), (r1, c1) = r.landmarks["mitral_left"], r.landmarks["mitral_right"]
                dist = np.abs((c1 - c0) * (rows - r0) - (r1 - r0) * (cols - c0)) / math.hypot(
                    r1 - r0, c1 - c0)
                assert dist.max(initial=0) <= 2.0, (style, i, view, phase)
                assert (ring & lvm).sum() > 0.7 * ring.sum()
                # The LA lies beyond the mitral plane, away from the apex.
                la_rows = np.nonzero(r.classes == labels.LA)[0]
                assert la_rows.mean() > np.nonzero(lv)[0].mean()
                assert r.landmarks["apex"][0] < np.nonzero(lv)[0].mean()


@pytest.mark.parametrize("style", STYLES)
def test_blood_darker_than_myocardium_and_markings_outside_the_cone(style):
    for i in range(4):
        r = phantoms.render_view(style, i, "4CH", "ED", shape=(128, 128))
        img = r.image.astype(float)
        assert img[r.classes == labels.LV].mean() < 0.6 * img[r.classes == labels.LVM].mean()
        assert r.markings.sum() > 50
        assert not (r.markings & r.cone).any()
        assert (r.image[~r.cone] == 0).all()
        np.testing.assert_array_equal(r.image_raw[r.cone], r.image[r.cone])
        assert (r.image_raw[r.markings] > 0).all()


def test_volume_formula_by_hand():
    s = phantoms.sample_subject("camus_like", 0)
    # tau = 0: a half ellipsoid, V = 2/3 pi a b c.
    half = dataclasses.replace(s, a=60.0, b2=20.0, b4=25.0, tau=0.0)
    assert half.volume_ml(0.0) == pytest.approx(2 / 3 * math.pi * 60 * 20 * 25 / 1000)
    # tau = 1: the whole ellipsoid, V = 4/3 pi a b c.
    whole = dataclasses.replace(half, tau=1.0)
    assert whole.volume_ml(0.0) == pytest.approx(4 / 3 * math.pi * 60 * 20 * 25 / 1000)
    # ES scales a by sl and both short axes by sb.
    assert half.volume_ml(1.0) == pytest.approx(half.volume_ml(0.0) * s.sl * s.sb**2)


@pytest.mark.parametrize("style", STYLES)
def test_ef_in_range_and_matches_volumes(style):
    efs = []
    for i in range(40):
        r = phantoms.render_view(style, i, "2CH", "ES", shape=(32, 32))
        assert r.ef == pytest.approx(100 * (1 - r.esv_ml / r.edv_ml))
        assert r.volume_ml == pytest.approx(r.esv_ml)
        assert 40 < r.edv_ml < 260
        efs.append(r.ef)
    assert 15 <= min(efs) and max(efs) <= 75
    assert max(efs) - min(efs) > 30     # spread over the range, not one value


def test_label_ef_agrees_with_analytic_ef():
    # Area-length volume 8 A^2 / (3 pi L) scales as a b^2, like the analytic volume,
    # so the EF from the camus_like LV masks must match the analytic EF.
    for i in range(6):
        areas, lengths = [], []
        for phase in ("ED", "ES"):
            r = phantoms.render_view("camus_like", i, "4CH", phase, shape=(192, 192))
            dy, dx = r.pixel_spacing_mm
            areas.append((r.classes == labels.LV).sum() * dx * dy)
            (ar, ac), (lr, lc), (rr, rc) = (r.landmarks[k] for k in
                                            ("apex", "mitral_left", "mitral_right"))
            lengths.append(math.hypot(((lr + rr) / 2 - ar) * dy, ((lc + rc) / 2 - ac) * dx))
        v = [a * a / length for a, length in zip(areas, lengths)]
        assert 100 * (1 - v[1] / v[0]) == pytest.approx(r.ef, abs=3.0)


def test_systole_contracts_cavity_and_thickens_wall():
    for i in range(5):
        ed = phantoms.render_view("camus_like", i, "2CH", "ED", shape=(128, 128))
        es = phantoms.render_view("camus_like", i, "2CH", "ES", shape=(128, 128))
        assert (es.classes == 1).sum() < (ed.classes == 1).sum()
        s = phantoms.sample_subject("camus_like", i)
        assert phantoms._frame(s, "2CH", 1.0)["t"] > phantoms._frame(s, "2CH", 0.0)["t"]


def test_styles_differ_in_appearance():
    def stats(style):
        out = []
        for i in range(6):
            r = phantoms.render_view(style, i, "4CH", "ED", shape=(96, 96))
            img = r.image[r.cone].astype(float)
            out.append((img.mean(), img.std()))
        return np.mean(out, 0)

    s = {style: stats(style) for style in STYLES}
    for a in STYLES:
        for b in STYLES:
            if a < b:
                assert np.abs(s[a] - s[b]).max() > 4.0, (a, b, s[a], s[b])


@pytest.mark.parametrize("shape", [(112, 112), (60, 90), (300, 200)])
def test_arbitrary_shapes(shape):
    r = phantoms.render_view("unity_like", 3, "2CH", 0.5, shape=shape)
    for arr in (r.image_raw, r.image, r.classes, r.segmentation, r.cone, r.markings):
        assert arr.shape == shape
    assert r.phase == "unknown"
    s = phantoms.sample_subject("unity_like", 3)
    x0, x1, y0, y1 = phantoms.field_of_view(s)
    np.testing.assert_allclose(r.pixel_spacing_mm * np.array(shape), [y1 - y0, x1 - x0],
                               rtol=1e-5)
    ed = phantoms.render_view("unity_like", 3, "2CH", "ED", shape=shape)
    es = phantoms.render_view("unity_like", 3, "2CH", "ES", shape=shape)
    assert es.volume_ml < r.volume_ml < ed.volume_ml


def test_bad_input():
    with pytest.raises(ValueError, match="unknown phantom style"):
        phantoms.generate_subject("camus", 0, resolution=64)
    with pytest.raises(ValueError, match="view"):
        phantoms.render_view("camus_like", 0, "3CH", "ED", shape=(64, 64))
    with pytest.raises(ValueError, match="phase"):
        phantoms.render_view("camus_like", 0, "2CH", "mid", shape=(64, 64))
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        phantoms.render_view("camus_like", 0, "2CH", 1.5, shape=(64, 64))
    with pytest.raises(ValueError, match="16x16"):
        phantoms.render_view("camus_like", 0, "2CH", "ED", shape=(8, 64))
    with pytest.raises(ValueError, match=">= 0"):
        phantoms.sample_subject("camus_like", -1)


# --- cine loops ----------------------------------------------------------------------


def test_cardiac_phase_known_frames():
    phase, ed, es = phantoms.cardiac_phase(100, frames_per_beat=40, systole_fraction=0.35,
                                           first_ed_frame=10)
    assert ed == (10, 50, 90) and es == (24, 64)      # systole round(0.35 * 40) = 14 frames
    np.testing.assert_allclose(phase[list(ed)], 0.0, atol=1e-12)
    np.testing.assert_allclose(phase[list(es)], 1.0, atol=1e-12)
    assert np.all(np.diff(phase[10:25]) > 0) and np.all(np.diff(phase[24:51]) < 0)
    assert 0.0 <= phase.min() and phase.max() <= 1.0
    # Frames before the first ED continue the previous beat's diastole.
    np.testing.assert_allclose(phase[:10], phase[40:50])


@pytest.mark.parametrize("kw", [dict(num_frames=0, frames_per_beat=40),
                                dict(num_frames=10, frames_per_beat=3),
                                dict(num_frames=10, frames_per_beat=10, systole_fraction=0.01)])
def test_cardiac_phase_bad_input(kw):
    with pytest.raises(ValueError):
        phantoms.cardiac_phase(**kw)


@pytest.mark.parametrize("style", STYLES)
def test_cine_frames_at_ed_and_es_equal_the_still_renderings(style):
    loop = phantoms.render_cine(style, 1, "4CH", shape=(48, 56), num_frames=30,
                                frames_per_beat=16, first_ed_frame=3)
    assert loop.frames.shape == loop.segmentation.shape == (30, 48, 56)
    assert loop.ed_frames == (3, 19) and loop.es_frames == (9, 25)
    for phase, frames in (("ED", loop.ed_frames), ("ES", loop.es_frames)):
        still = phantoms.render_view(style, 1, "4CH", phase, shape=(48, 56))
        for f in frames:
            np.testing.assert_array_equal(loop.frames[f], still.image_raw)
            np.testing.assert_array_equal(loop.segmentation[f], still.segmentation)
    still = phantoms.render_view(style, 1, "4CH", "ED", shape=(48, 56))
    assert loop.ef == pytest.approx(still.ef)
    # Volume is largest at ED and smallest at ES; EF from the curve is the subject's.
    v = loop.volume_ml
    assert v.argmax() in loop.ed_frames and v.argmin() in loop.es_frames
    assert 100 * (1 - v.min() / v.max()) == pytest.approx(loop.ef, rel=1e-9)
    # The LV label area follows the phase (ED largest, ES smallest).
    lv_area = (loop.classes == labels.LV).sum(axis=(1, 2))
    assert lv_area[3] > lv_area[6] > lv_area[9] < lv_area[14]


def test_write_video_and_dicom_round_trip(tmp_path):
    import pydicom

    loop = phantoms.render_cine("echonet_like", 0, "4CH", shape=(64, 64), num_frames=12,
                                frames_per_beat=8, fps=25.0)
    dcm = phantoms.write_dicom(loop, tmp_path / "loop.dcm")
    ds = pydicom.dcmread(dcm)
    assert ds.Modality == "US" and int(ds.NumberOfFrames) == 12
    np.testing.assert_array_equal(ds.pixel_array, loop.frames)       # lossless
    region = ds.SequenceOfUltrasoundRegions[0]
    assert region.PhysicalUnitsXDirection == 3 and region.PhysicalUnitsYDirection == 3
    assert float(region.PhysicalDeltaY) * 10 == pytest.approx(float(loop.pixel_spacing_mm[0]))
    assert float(region.PhysicalDeltaX) * 10 == pytest.approx(float(loop.pixel_spacing_mm[1]))
    assert float(ds.FrameTime) == pytest.approx(40.0)
    for suffix in (".avi", ".mp4"):
        path = phantoms.write_video(loop, tmp_path / f"loop{suffix}")
        import cv2
        cap = cv2.VideoCapture(str(path))
        frames = []
        while True:
            ok, f = cap.read()
            if not ok:
                break
            frames.append(f[..., 0])
        assert cap.get(cv2.CAP_PROP_FPS) == pytest.approx(25.0)
        cap.release()
        assert np.stack(frames).shape == loop.frames.shape
        # Lossy codecs: a few grey levels on average.
        assert np.abs(np.stack(frames).astype(int) - loop.frames).mean() < 6
    assert sorted(p.name for p in tmp_path.iterdir()) == ["loop.avi", "loop.dcm", "loop.mp4"]


def test_write_video_rejects_unknown_suffix(tmp_path):
    loop = phantoms.render_cine("camus_like", 0, "2CH", shape=(32, 32), num_frames=4,
                                frames_per_beat=4)
    with pytest.raises(ValueError, match=r"suffix must be one of \['.avi', '.mp4'\]"):
        phantoms.write_video(loop, tmp_path / "loop.gif")
    assert list(tmp_path.iterdir()) == []
