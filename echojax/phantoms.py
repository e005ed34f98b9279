"""Apical 2- and 4-chamber echocardiography phantoms with an analytically known EF.

The real datasets of Islam et al. (MELBA 2026) — CAMUS, Unity Imaging, EchoNet-Dynamic —
need registration, so every command of echojax can also run on these phantoms. They
reproduce what the paper's phenomena depend on: the anatomy the classes describe, the
label sets of each dataset, and domain shift between datasets.

Geometry (millimetres; ``x`` lateral, ``y`` depth from the transducer at (0, 0)):

- Sector (cone): ``r <= depth_mm`` and ``|x| <= y tan(half_angle)``.
- LV cavity: a truncated prolate half-ellipsoid seen in its long-axis plane. In the LV
  frame (``u`` along the long axis from the endocardial apex, ``v`` across it) the
  cavity is ``((u - a) / a)^2 + (v / b)^2 <= 1`` and ``u <= L`` with ``L = a (1 + tau)``:
  a bullet whose widest point lies a little above the mitral plane ``u = L``.
  ``b`` is ``b_2ch`` or ``b_4ch``: the two apical views cut the LV along different planes.
- LV myocardium: the band between the cavity and the epicardial ellipse (thickness
  ``t`` at the sides, ``apex_thinning * t`` at the apex), open at the mitral plane.
- LA: an ellipse hanging below the mitral plane (only ``u >= L`` belongs to it).
- 4-chamber views add the RV (a crescent beside the septum) and the RA: dark blood
  pools that no dataset labels (distractors).

Volume of the cavity (biplane, exact for this shape; the method of discs recovers it):

    V = pi * a * b_2ch * b_4ch * (2/3 + tau - tau^3 / 3)

End-systole scales ``a`` by ``sl`` and both ``b`` by ``sb`` (``tau`` fixed), so
``EF = 1 - sl * sb^2`` whichever view(s) one measures. EF is drawn uniformly from
[15, 75] % per subject; the wall thickens and the LA fills at end-systole.

Appearance: echogenicity map (blood dark, myocardium bright, tissue grey with low
frequency texture), boundary blur, multiplicative speckle (magnitude of a correlated
complex Gaussian field: Rayleigh distributed), depth attenuation with lateral fall-off,
near-field haze, gamma/gain, additive noise; outside the sector, text, depth ticks and
an ECG trace (what cone masking must remove).

Annotation conventions differ by style (``Style.lv_label_offset_mm``,
``lvm_label_scale``, ``la_cut_mm``): the label is drawn from the same anatomy by a
different rule, as different annotation protocols do. The analytic EF is that of the
imaged anatomy, not of the label.

Entry points: ``STYLES``, ``generate_subject`` (feature-dict examples for the TFDS
builder) and ``render_view`` (one view/phase at any ``(H, W)``, with the raw image
before cone masking, the class map, the cone and the volumes: for fixture writers).

Cine loops: ``render_cine`` renders a view through several beats (``cardiac_phase``
gives each frame's phase fraction, so ED and ES frames are known exactly), and
``write_video`` / ``write_dicom`` save a loop as AVI/MP4 (OpenCV) or as a multi-frame
ultrasound DICOM whose ultrasound region calibration states the pixel spacing.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import os
from pathlib import Path

import cv2
import numpy as np
import pydicom
import pydicom.uid
from pydicom.dataset import Dataset, FileMetaDataset

from echojax import labels

VIEWS = ("2CH", "4CH")
PHASES = {"ED": 0.0, "ES": 1.0}


@dataclasses.dataclass(frozen=True)
class Style:
    """How one imaging domain looks and how its annotators draw.

    Appearance values are nominal; each subject jitters them by ``+-jitter`` (relative).
    Ranges ``(lo, hi)`` are drawn uniformly per subject.
    """

    name: str
    description: str
    label_mask: tuple[bool, ...]
    num_subjects: int           # default subject count of the TFDS builder
    views_per_subject: int      # 2: both apical views; 1: one, drawn from ``p_2ch``
    p_2ch: float
    # Sector geometry.
    half_angle_deg: tuple[float, float]
    depth_mm: tuple[float, float]
    top_margin: float           # field of view above the transducer, fraction of depth
    # Appearance.
    gain: float
    gamma: float
    tissue: float
    myocardium: float
    blood: float
    speckle_mm: tuple[float, float]   # (axial, lateral) speckle grain
    speckle_strength: float           # 0: none, 1: fully developed speckle
    blur_mm: float
    noise: float
    attenuation_at_depth: float       # intensity factor reached at full depth
    haze: float                       # near-field clutter next to the transducer
    # Annotation convention.
    lv_label_offset_mm: float   # endocardial contour drawn this far out (+) or in (-)
    lvm_label_scale: float      # labelled wall thickness / imaged wall thickness
    la_cut_mm: float            # LA label starts this far below the mitral plane
    jitter: float = 0.12

    @property
    def examples_per_subject(self) -> int:
        return self.views_per_subject * len(PHASES)

    @property
    def num_examples(self) -> int:
        return self.num_subjects * self.examples_per_subject


_FULL = tuple(bool(x) for x in labels.FULL_LABEL_MASK)
_LV_ONLY = tuple(bool(x) for x in labels.LV_ONLY_LABEL_MASK)

STYLES: dict[str, Style] = {
    s.name: s
    for s in (
        Style(
            name="camus_like",
            description="CAMUS-like: both apical views, ED/ES, LV/LVM/LA; narrow deep "
            "sector, moderate contrast, fine speckle; LA cut at the annulus.",
            label_mask=_FULL, num_subjects=250, views_per_subject=2, p_2ch=0.5,
            half_angle_deg=(36.0, 40.0), depth_mm=(150.0, 165.0), top_margin=0.0,
            gain=1.0, gamma=0.8, tissue=0.33, myocardium=0.75, blood=0.05,
            speckle_mm=(0.9, 2.2), speckle_strength=0.85, blur_mm=1.0, noise=0.03,
            attenuation_at_depth=0.5, haze=0.25,
            lv_label_offset_mm=0.0, lvm_label_scale=1.0, la_cut_mm=0.0),
        Style(
            name="unity_like",
            description="Unity-Imaging-like: mostly 2-chamber, LV/LVM/LA; wide sector "
            "below a header band, high gain and contrast, fine grain, noisy; endocardium "
            "drawn 1 mm out, thinner myocardium, LA starting 2 mm below the annulus.",
            label_mask=_FULL, num_subjects=200, views_per_subject=1, p_2ch=0.8,
            half_angle_deg=(42.0, 46.0), depth_mm=(140.0, 160.0), top_margin=0.07,
            gain=1.25, gamma=1.25, tissue=0.25, myocardium=0.8, blood=0.08,
            speckle_mm=(0.6, 1.4), speckle_strength=0.95, blur_mm=0.6, noise=0.06,
            attenuation_at_depth=0.35, haze=0.4,
            lv_label_offset_mm=1.0, lvm_label_scale=0.8, la_cut_mm=2.0),
        Style(
            name="echonet_like",
            description="EchoNet-Dynamic-like: 4-chamber, ED/ES, LV only; wide shallow "
            "sector (LV fills the frame), low contrast, coarse blurred grain of a "
            "low-resolution video; LV traced 0.5 mm inside the endocardium.",
            label_mask=_LV_ONLY, num_subjects=1000, views_per_subject=1, p_2ch=0.0,
            half_angle_deg=(44.0, 48.0), depth_mm=(125.0, 145.0), top_margin=0.0,
            gain=0.85, gamma=0.65, tissue=0.42, myocardium=0.7, blood=0.12,
            speckle_mm=(1.6, 3.5), speckle_strength=0.7, blur_mm=2.0, noise=0.05,
            attenuation_at_depth=0.6, haze=0.15,
            lv_label_offset_mm=-0.5, lvm_label_scale=1.0, la_cut_mm=0.0),
    )
}
_STYLE_IDS = {name: i for i, name in enumerate(sorted(STYLES))}

_SIDE_MARGIN = 0.07     # field of view beyond the sector edges, fraction of half width
_BOTTOM_MARGIN = 0.10   # below the sector arc (room for the ECG trace), fraction of depth
_MARKING_GAP_PX = 2.0   # markings keep at least this many pixels away from the sector


@dataclasses.dataclass(frozen=True)
class Rendering:
    """One view at one phase of one subject, at ``(H, W)``.

    image_raw: uint8[H, W], the sector image plus markings outside it (before cone
      masking; what a scanner exports).
    image: uint8[H, W], ``image_raw`` with everything outside ``cone`` zeroed.
    classes: uint8[H, W], all classes (0 bg, 1 LV, 2 LVM, 3 LA) by the style's
      annotation convention, whatever the style's label mask.
    segmentation: uint8[H, W], ``classes`` with the unannotated classes set to 0.
    label_mask: bool[4]. cone: bool[H, W], the true sector. markings: bool[H, W].
    pixel_spacing_mm: float32[2], (row, column).
    edv_ml, esv_ml, volume_ml: analytic LV volumes (ED, ES, this phase), biplane.
    ef: percent, ``100 (1 - esv / edv)``.
    landmarks: pixel (row, col) float coordinates: ``apex`` (endocardial apex),
      ``mitral_left`` / ``mitral_right`` (ends of the mitral plane, annotation contour),
      ``transducer`` (sector apex).
    """

    image_raw: np.ndarray
    image: np.ndarray
    classes: np.ndarray
    segmentation: np.ndarray
    label_mask: np.ndarray
    cone: np.ndarray
    markings: np.ndarray
    pixel_spacing_mm: np.ndarray
    edv_ml: float
    esv_ml: float
    volume_ml: float
    ef: float
    view: str
    phase: str
    landmarks: dict


# --------------------------------------------------------------------------- anatomy


@dataclasses.dataclass(frozen=True)
class _Chambers:
    """Per-view anatomy at end-diastole (mm, radians)."""

    apex_x: float       # epicardial apex
    apex_y: float
    phi: float          # long-axis tilt from vertical (+: base to the right)
    b: float            # cavity half-width parameter in this view
    la_a: float
    la_w: float
    la_phi: float
    rv: tuple | None    # (offset_u, offset_v, phi, a, b, tau) in the LV frame; 4CH only


@dataclasses.dataclass(frozen=True)
class Subject:
    """Random but plausible anatomy and acquisition of one subject (both views)."""

    style: Style
    index: int
    views: tuple[str, ...]
    depth: float
    half_angle: float
    a: float
    tau: float
    b2: float
    b4: float
    wall: float
    apex_thinning: float
    sl: float
    sb: float
    thickening: float
    ef: float           # fraction
    chambers: dict      # view -> _Chambers, for both views whatever ``views`` is
    look: dict          # jittered appearance parameters
    seed: tuple

    def volume_ml(self, s: float) -> float:
        """Biplane cavity volume at phase fraction ``s`` (0 ED, 1 ES), mL."""
        a = self.a * (1 - s * (1 - self.sl))
        f = 1 - s * (1 - self.sb)
        shape = 2 / 3 + self.tau - self.tau**3 / 3
        return math.pi * a * (self.b2 * f) * (self.b4 * f) * shape / 1000.0


def _u(rng, lo, hi):
    return float(rng.uniform(lo, hi))


def sample_subject(style: Style | str, subject_index: int, *, seed: int = 0) -> Subject:
    """Draws one subject's anatomy and acquisition; deterministic in (style, index, seed)."""
    style = _style(style)
    if subject_index < 0 or seed < 0:
        raise ValueError(f"subject_index and seed must be >= 0, got {subject_index}, {seed}")
    key = (int(seed), _STYLE_IDS[style.name], int(subject_index))
    rng = np.random.default_rng(key)
    draw_2ch = rng.random() < style.p_2ch
    if style.views_per_subject == 2:
        views = VIEWS
    else:
        views = ("2CH",) if draw_2ch else ("4CH",)
    depth = _u(rng, *style.depth_mm)
    half_angle = math.radians(_u(rng, *style.half_angle_deg))
    # Sizes scale with the sector depth so that every style frames the heart alike.
    k = depth / 155.0
    ef = _u(rng, 0.15, 0.75)
    sl = 1.0 - ef * _u(rng, 0.1, 0.2)
    sb = math.sqrt((1.0 - ef) / sl)
    j = style.jitter
    look = {
        name: getattr(style, name) * _u(rng, 1 - j, 1 + j)
        for name in ("gain", "gamma", "tissue", "myocardium", "blood", "blur_mm",
                     "noise", "haze", "speckle_strength")
    }
    look["speckle_strength"] = min(look["speckle_strength"], 1.0)
    look["attenuation_at_depth"] = style.attenuation_at_depth
    look["speckle_mm"] = tuple(s * _u(rng, 1 - j, 1 + j) for s in style.speckle_mm)
    for _ in range(200):
        a = _u(rng, 46, 60) * k
        tau = _u(rng, 0.15, 0.35)
        b2, b4 = _u(rng, 21, 28) * k, _u(rng, 21, 28) * k
        wall = _u(rng, 7.5, 11.5) * k
        chambers = {}
        for view in VIEWS:   # both views always, so either can be rendered
            if view == "2CH":
                ax, phi = _u(rng, -5, 5) * k, math.radians(_u(rng, -8, 8))
                rv = None
            else:
                ax, phi = _u(rng, 0, 8) * k, math.radians(_u(rng, 0, 10))
                rv = (_u(rng, 6, 14) * k, -_u(rng, 1.2, 1.6) * b4,
                      phi - math.radians(_u(rng, 8, 20)),
                      a * _u(rng, 0.7, 0.9), b4 * _u(rng, 0.6, 0.8), _u(rng, 0.1, 0.3))
            chambers[view] = _Chambers(
                apex_x=ax, apex_y=_u(rng, 22, 36) * k, phi=phi,
                b=b2 if view == "2CH" else b4,
                la_a=_u(rng, 17, 24) * k, la_w=_u(rng, 16, 22) * k,
                la_phi=phi + math.radians(_u(rng, -10, 10)), rv=rv)
        subject = Subject(
            style=style, index=int(subject_index), views=views, depth=depth,
            half_angle=half_angle, a=a, tau=tau, b2=b2, b4=b4, wall=wall,
            apex_thinning=_u(rng, 0.6, 0.85), sl=sl, sb=sb,
            thickening=_u(rng, 0.15, 0.3) + 0.6 * ef, ef=ef, chambers=chambers,
            look=look, seed=key)
        if all(_lv_inside_sector(subject, v, s, margin=3.0 * k)
               for v in VIEWS for s in (0.0, 0.5, 1.0)):
            return subject
    raise RuntimeError(f"could not place an LV inside the sector for {key}")  # pragma: no cover


def _frame(subject: Subject, view: str, s: float) -> dict:
    """LV geometry of one view at phase fraction ``s`` (mm)."""
    c = subject.chambers[view]
    a = subject.a * (1 - s * (1 - subject.sl))
    b = c.b * (1 - s * (1 - subject.sb))
    t = subject.wall * (1 + s * subject.thickening)
    t_apex = t * subject.apex_thinning
    d = (math.sin(c.phi), math.cos(c.phi))         # long axis, towards the base
    n = (math.cos(c.phi), -math.sin(c.phi))        # across, towards image right
    endo_apex = (c.apex_x + d[0] * t_apex, c.apex_y + d[1] * t_apex)
    return dict(a=a, b=b, t=t, t_apex=t_apex, L=a * (1 + subject.tau), d=d, n=n,
                endo_apex=endo_apex)


def _lv_inside_sector(subject: Subject, view: str, s: float, *, margin: float) -> bool:
    f = _frame(subject, view, s)
    # Epicardial contour: the outer ellipse, up to the mitral plane.
    cos_max = min(1.0, (f["L"] - f["a"]) / (f["a"] + f["t_apex"]))
    th = np.linspace(math.acos(cos_max), 2 * math.pi - math.acos(cos_max), 64)
    u = f["a"] + (f["a"] + f["t_apex"]) * np.cos(th)
    v = (f["b"] + f["t"]) * np.sin(th)
    x = f["endo_apex"][0] + u * f["d"][0] + v * f["n"][0]
    y = f["endo_apex"][1] + u * f["d"][1] + v * f["n"][1]
    ta = math.tan(subject.half_angle)
    inside = (np.hypot(x, y) <= subject.depth - margin) & (
        np.abs(x) + margin / math.cos(subject.half_angle) <= y * ta)
    return bool(inside.all())


# --------------------------------------------------------------------------- helpers


def _style(style: Style | str) -> Style:
    if isinstance(style, Style):
        return style
    if style not in STYLES:
        raise ValueError(f"unknown phantom style {style!r}; expected one of {sorted(STYLES)}")
    return STYLES[style]


def _gauss_taps(sigma: float) -> np.ndarray:
    radius = max(1, int(math.ceil(2.5 * sigma)))
    k = np.exp(-0.5 * (np.arange(-radius, radius + 1) / max(sigma, 1e-3)) ** 2)
    return (k / k.sum()).astype(np.float32)


def _blur(x: np.ndarray, sigma_rows: float, sigma_cols: float) -> np.ndarray:
    """Separable Gaussian blur (edge-replicating) as a few shifted multiply-adds."""
    for axis, sigma in ((0, sigma_rows), (1, sigma_cols)):
        if sigma < 0.3:
            continue
        taps = _gauss_taps(sigma)
        rad = len(taps) // 2
        pad = [(0, 0), (0, 0)]
        pad[axis] = (rad, rad)
        xp = np.pad(x, pad, mode="edge")
        n = x.shape[axis]
        out = taps[0] * (xp[:n] if axis == 0 else xp[:, :n])
        for k in range(1, len(taps)):
            out += taps[k] * (xp[k:k + n] if axis == 0 else xp[:, k:k + n])
        x = out
    return x


@functools.lru_cache(maxsize=256)
def _interp_index(n_out: int, n_in: int):
    """Indices and weights of cell-centred linear interpolation from n_in to n_out."""
    pos = np.clip((np.arange(n_out) + 0.5) * n_in / n_out - 0.5, 0, n_in - 1)
    lo = np.floor(pos).astype(np.intp)
    hi = np.minimum(lo + 1, n_in - 1)
    return lo, hi, (pos - lo).astype(np.float32)


def _upsample(z: np.ndarray, h: int, w: int) -> np.ndarray:
    """Separable linear interpolation of a ``[ch, cw]`` grid to ``[h, w]``."""
    lo, hi, f = _interp_index(h, z.shape[0])
    z = z[lo] * (1 - f)[:, None] + z[hi] * f[:, None]
    lo, hi, f = _interp_index(w, z.shape[1])
    return z[:, lo] * (1 - f) + z[:, hi] * f


def _smooth_field(rng, shape, cells, complex_=False) -> np.ndarray:
    """Random Gaussian field with ``cells`` (rows, cols) independent samples, upsampled."""
    h, w = shape
    ch, cw = max(2, min(h, int(cells[0]))), max(2, min(w, int(cells[1])))
    z = rng.standard_normal((ch, cw), dtype=np.float32)
    if complex_:
        z = z + 1j * rng.standard_normal((ch, cw), dtype=np.float32)
    return _upsample(z, h, w)


def field_of_view(subject: Subject) -> tuple[float, float, float, float]:
    """(x0, x1, y0, y1) mm: the sector's bounding box plus margins for the markings."""
    half = subject.depth * math.sin(subject.half_angle) * (1 + _SIDE_MARGIN)
    y0 = -subject.style.top_margin * subject.depth
    y1 = subject.depth * (1 + _BOTTOM_MARGIN)
    return -half, half, y0, y1


# --------------------------------------------------------------------------- rendering


def render_view(style: Style | str, subject_index: int, view: str, phase: str | float, *,
                shape: tuple[int, int], seed: int = 0) -> Rendering:
    """Renders one view of one subject at ``shape = (H, W)``.

    Args:
      style: a ``STYLES`` key or a ``Style``.
      subject_index: which subject (>= 0); the anatomy depends only on style, index, seed.
      view: "2CH" or "4CH". A style that images one view per subject draws which one;
        asking for the other view still renders it (same heart).
      phase: "ED", "ES", or a fraction in [0, 1] between them (0 ED, 1 ES), e.g. the
        frames of a cine clip. Markings are the same at every phase.
      shape: output (H, W); any size >= 16. The sector's bounding box fills it, so
        ``pixel_spacing_mm`` differs per axis when H/W differs from the box's aspect.
    """
    subject = sample_subject(style, subject_index, seed=seed)
    return _render(subject, view, phase, shape)


def generate_subject(style: Style | str, subject_index: int, *, resolution: int,
                     seed: int = 0) -> list[dict]:
    """Feature-dict examples (``echojax.data.features``) of one subject.

    One example per view of the subject and per phase (ED, ES), in that order; numpy
    arrays, strings as ``str``. Images are masked with the true sector.
    """
    style = _style(style)
    subject = sample_subject(style, subject_index, seed=seed)
    out = []
    for view in subject.views:
        scene = _scene(subject, view, (resolution, resolution))
        for phase in PHASES:
            r = _render(subject, view, phase, None, scene)
            out.append({
                "image": r.image[..., None],
                "segmentation": r.segmentation[..., None],
                "label_mask": r.label_mask.copy(),
                "source": f"synthetic_echo/{style.name}",
                "patient_id": f"{style.name}_{seed}_{subject_index:06d}",
                "view": view,
                "phase": phase,
                "ef": np.float32(r.ef),
                "pixel_spacing_mm": r.pixel_spacing_mm,
            })
    return out


@dataclasses.dataclass(frozen=True)
class _Scene:
    """What does not change with the phase: grids, sector, beam profile, markings."""

    shape: tuple[int, int]
    spacing: tuple[float, float]      # (dx, dy) mm
    xs: np.ndarray                    # float32[1, W] lateral position, mm
    ys: np.ndarray                    # float32[H, 1] depth, mm
    cone: np.ndarray                  # bool[H, W]
    beam: np.ndarray                  # float32[H, W] attenuation x lateral fall-off
    haze: np.ndarray                  # float32[H, W] near-field clutter
    markings: np.ndarray              # bool[H, W]
    marking_value: np.uint8


def _scene(subject: Subject, view: str, shape) -> _Scene:
    h, w = (int(x) for x in shape)
    if h < 16 or w < 16:
        raise ValueError(f"shape must be at least 16x16, got {shape}")
    look = subject.look
    x0, x1, y0, y1 = field_of_view(subject)
    dx, dy = (x1 - x0) / w, (y1 - y0) / h
    xs = (x0 + (np.arange(w, dtype=np.float32) + 0.5) * dx)[None, :]
    ys = (y0 + (np.arange(h, dtype=np.float32) + 0.5) * dy)[:, None]
    r = np.sqrt(xs * xs + ys * ys)
    ta = math.tan(subject.half_angle)
    cone = (r <= subject.depth) & (np.abs(xs) <= ys * ta)
    beam = np.exp(r * np.float32(math.log(look["attenuation_at_depth"]) / subject.depth))
    # Lateral fall-off cos^4 of the beam angle; cos = y / r inside the sector.
    cos = np.clip(ys / np.maximum(r, 1e-3), math.cos(subject.half_angle), 1.0)
    beam *= (cos * cos) ** 2
    haze = np.float32(look["haze"]) * np.exp(-r / np.float32(0.08 * subject.depth))
    marks, val = _markings(subject, view, (h, w), xs, ys, r, (dx, dy))
    return _Scene((h, w), (dx, dy), xs, ys, cone, beam, haze, marks, val)


def _render(subject: Subject, view: str, phase: str | float, shape,
            scene: _Scene | None = None) -> Rendering:
    if view not in VIEWS:
        raise ValueError(f"view must be one of {VIEWS}, got {view!r}")
    if isinstance(phase, str):
        if phase not in PHASES:
            raise ValueError(f"phase must be one of {tuple(PHASES)} or a float, got {phase!r}")
        s, phase_name = PHASES[phase], phase
    else:
        s = float(phase)
        if not 0.0 <= s <= 1.0:
            raise ValueError(f"phase fraction must be in [0, 1], got {phase}")
        phase_name = "ED" if s == 0.0 else "ES" if s == 1.0 else "unknown"
    if scene is None:
        scene = _scene(subject, view, shape)
    style, look = subject.style, subject.look
    h, w = scene.shape
    xs, ys, cone = scene.xs, scene.ys, scene.cone
    x0, x1, y0, y1 = field_of_view(subject)
    dx, dy = scene.spacing

    f = _frame(subject, view, s)
    c = subject.chambers[view]
    ex, ey = f["endo_apex"]
    (dx_, dy_), (nx, ny) = f["d"], f["n"]
    px, py = xs - ex, ys - ey
    u = px * dx_ + py * dy_
    v = px * nx + py * ny
    a, b, t, t_apex, L = f["a"], f["b"], f["t"], f["t_apex"], f["L"]
    above = u <= L
    uc2 = (u - a) ** 2
    v2 = v * v

    def ellipse(au, bv):
        return uc2 / (au * au) + v2 / (bv * bv) <= 1.0

    lv = ellipse(a, b) & above
    epi = ellipse(a + t_apex, b + t) & above
    # LA: an ellipse below the mitral plane, its top slightly above it (cut there).
    la_scale = 1 + 0.15 * s
    la_a, la_w = c.la_a * la_scale, c.la_w * la_scale
    base = (ex + dx_ * L, ey + dy_ * L)
    la_d = (math.sin(c.la_phi), math.cos(c.la_phi))
    la_c = (base[0] + la_d[0] * 0.75 * la_a, base[1] + la_d[1] * 0.75 * la_a)
    qx, qy = xs - la_c[0], ys - la_c[1]
    la_u = qx * la_d[0] + qy * la_d[1]
    la_v = qx * la_d[1] - qy * la_d[0]
    la_ell = (la_u / la_a) ** 2 + (la_v / la_w) ** 2
    la = (la_ell <= 1.0) & ~above
    blood = lv | la
    if c.rv is not None:
        ou, ov, rphi, ra, rb, rtau = c.rv
        ra, rb = ra * (1 - 0.5 * s * (1 - subject.sl)), rb * (1 - 0.5 * s * (1 - subject.sb))
        rd = (math.sin(rphi), math.cos(rphi))
        rap = (ex + dx_ * ou + nx * ov, ey + dy_ * ou + ny * ov)
        sx, sy = xs - rap[0], ys - rap[1]
        ru = sx * rd[0] + sy * rd[1]
        rvv = sx * rd[1] - sy * rd[0]
        rL = ra * (1 + rtau)
        septum = ellipse(a + t_apex, b + 1.3 * t) & above   # RV stays off the LV wall
        rv = (((ru - ra) / ra) ** 2 + (rvv / rb) ** 2 <= 1.0) & (ru <= rL) & ~septum
        # RA below the tricuspid plane, kept off the LA by an interatrial septum.
        rbase = (rap[0] + rd[0] * rL, rap[1] + rd[1] * rL)
        ra_c = (rbase[0] + rd[0] * 0.7 * la_a, rbase[1] + rd[1] * 0.7 * la_a)
        tx, ty = xs - ra_c[0], ys - ra_c[1]
        ra_ = ((tx * rd[0] + ty * rd[1]) / la_a) ** 2 + (
            (tx * rd[1] - ty * rd[0]) / (0.9 * la_w)) ** 2 <= 1.0
        ra_ &= (ru > rL) & (la_ell > 1.25**2) & ~epi
        blood = blood | rv | ra_

    # --- image
    rng = np.random.default_rng(subject.seed + (VIEWS.index(view), int(round(s * 1000))))
    tissue = look["tissue"] * (1 + 0.35 * _smooth_field(rng, (h, w), (6, 6)))
    echo = np.where(blood, np.float32(look["blood"]),
                    np.where(epi & ~lv, np.float32(look["myocardium"]), tissue))
    # Mitral leaflets: bright stubs from each annulus hinge along the mitral plane.
    half_base = b * math.sqrt(max(0.0, 1 - subject.tau**2))
    leaflet = (np.abs(u - L) <= max(0.8, 0.6 * dy)) & (np.abs(v) >= 0.5 * half_base) & (
        np.abs(v) <= half_base)
    echo = np.where(leaflet, np.float32(0.8 * look["myocardium"]), echo)
    sig = look["blur_mm"] / np.array([dy, dx])
    echo = _blur(echo, sig[0], sig[1])
    # Speckle: |complex Gaussian| correlated over the speckle grain; averaging over
    # grains smaller than a pixel lowers its contrast.
    ax_mm, lat_mm = look["speckle_mm"]
    cells = ((y1 - y0) / ax_mm, (x1 - x0) / lat_mm)
    z = _smooth_field(rng, (h, w), cells, complex_=True)
    sp = np.abs(z)
    sp *= np.float32(1.0 / max(float(sp.mean()), 1e-6))
    px_per_grain = max(1.0, (ax_mm / dy) * (lat_mm / dx))
    grain_avg = min(1.0, (ax_mm / dy) * (lat_mm / dx))
    strength = look["speckle_strength"] * math.sqrt(grain_avg) * min(1.0, px_per_grain)
    sp = 1.0 + np.float32(strength) * (sp - 1.0)
    img = echo * sp * scene.beam + scene.haze
    img = look["gain"] * np.power(np.maximum(img, 0.0), look["gamma"]) + 0.012
    # Uniform noise: as good as Gaussian here and six times cheaper to draw.
    img += look["noise"] * (rng.random((h, w), dtype=np.float32) - 0.5)
    img = np.clip(img * 255.0, 0.0, 255.0).astype(np.uint8)
    image = np.where(cone, img, np.uint8(0))

    # --- labels, by the style's annotation convention
    o = style.lv_label_offset_mm
    lv_lab = ellipse(a + o, b + o) & above
    lvm_lab = ellipse(a + o + t_apex * style.lvm_label_scale,
                      b + o + t * style.lvm_label_scale) & above & ~lv_lab
    la_lab = la & (u >= L + style.la_cut_mm) & cone & ~lv_lab & ~lvm_lab
    classes = np.zeros((h, w), np.uint8)
    classes[la_lab] = labels.LA
    classes[lvm_lab] = labels.LVM
    classes[lv_lab] = labels.LV
    label_mask = np.array(style.label_mask, dtype=bool)
    lut = np.where(label_mask, np.arange(labels.NUM_CLASSES), 0).astype(np.uint8)
    segmentation = lut[classes]

    markings = scene.markings
    image_raw = np.where(markings, scene.marking_value, image)

    def to_px(pt):
        return (float((pt[1] - y0) / dy - 0.5), float((pt[0] - x0) / dx - 0.5))

    hb = (b + o) * math.sqrt(max(0.0, 1 - subject.tau**2))
    base_l = (base[0] - nx * hb, base[1] - ny * hb)
    base_r = (base[0] + nx * hb, base[1] + ny * hb)
    edv, esv = subject.volume_ml(0.0), subject.volume_ml(1.0)
    return Rendering(
        image_raw=image_raw, image=image, classes=classes, segmentation=segmentation,
        label_mask=label_mask, cone=cone, markings=markings,
        pixel_spacing_mm=np.array([dy, dx], np.float32),
        edv_ml=edv, esv_ml=esv, volume_ml=subject.volume_ml(s),
        ef=100.0 * (1.0 - esv / edv), view=view, phase=phase_name,
        landmarks={"apex": to_px((ex + dx_ * -o, ey + dy_ * -o)),
                   "mitral_left": to_px(base_l), "mitral_right": to_px(base_r),
                   "transducer": to_px((0.0, 0.0))})


def _markings(subject, view, shape, xs, ys, r, spacing):
    """Text blocks, depth ticks and an ECG trace outside the sector.

    Returns (bool[H, W] marking pixels, uint8[H, W] their grey levels). Every marking
    pixel lies at least ``_MARKING_GAP_PX`` pixels from the sector.
    """
    h, w = shape
    dx, dy = spacing
    rng = np.random.default_rng(subject.seed + (7, VIEWS.index(view)))
    ca, sa = math.cos(subject.half_angle), math.sin(subject.half_angle)
    x0, _, y0, _ = field_of_view(subject)
    # Lower bound of the distance to the sector (mm), max of the half-plane distances.
    dist = np.maximum(np.abs(xs) * ca - ys * sa, r - subject.depth)
    dist = np.maximum(dist, -ys)
    far = dist >= _MARKING_GAP_PX * max(dx, dy)
    marks = np.zeros((h, w), bool)
    # Text: lines of 3x5-pixel glyphs (scaled) in both upper corners.
    sc = max(1, min(h, w) // 128)
    gh, gw = 5 * sc, 4 * sc
    for side in (0, 1):
        row = 1 + sc
        while row + gh < h // 3:
            # Width free at this line's lowest row, left of the sector edge.
            y_low = y0 + (row + gh) * dy
            free_mm = max(y_low, 0.0) * math.tan(subject.half_angle) + x0
            free_cols = int(-free_mm / dx) - 4 - sc
            n = min(int(rng.integers(4, 14)), free_cols // gw, (w // 2 - 4) // gw)
            if n < 2:
                break
            glyphs = rng.random((5, 4 * n)) < 0.55
            glyphs[:, 3::4] = False
            block = glyphs.repeat(sc, 0).repeat(sc, 1)
            c0 = 1 + sc if side == 0 else w - 1 - sc - block.shape[1]
            marks[row:row + gh, c0:c0 + block.shape[1]] |= block
            row += gh + 2 * sc
    # Depth ticks every 10 mm beside the right sector edge, 3 px outside it.
    off = 3.5 * max(dx, dy) + 1.0
    for depth in np.arange(10.0, subject.depth * ca, 10.0):
        tx = depth * sa + off * ca
        ty = depth * ca - off * sa
        ci, ri = int((tx - x0) / dx), int((ty - y0) / dy)
        if 0 <= ri < h - sc and 0 <= ci < w - sc:
            marks[ri:ri + sc + 1, ci:ci + sc + 1] = True
    # ECG trace in the band below the arc.
    band0 = int((subject.depth - y0) / dy) + 3
    amp = (h - 2 - band0) * 0.5
    if amp >= 1.0:
        cols = np.arange(w)
        period = w / _u(rng, 2.5, 4.0)
        ph = (cols + _u(rng, 0, period)) % period
        qrs = np.exp(-0.5 * ((ph - 0.3 * period) / (0.012 * period)) ** 2)
        tw = 0.25 * np.exp(-0.5 * ((ph - 0.6 * period) / (0.05 * period)) ** 2)
        rows = np.round(h - 2 - amp * 0.3 - amp * 1.4 * (qrs + tw)).astype(int)
        rows = np.clip(rows, band0, h - 1)
        for k in range(max(1, sc)):
            marks[np.clip(rows + k, 0, h - 1), cols] = True
    marks &= far
    return marks, np.uint8(rng.integers(170, 256))


# --------------------------------------------------------------------------- cine loops


def cardiac_phase(num_frames: int, *, frames_per_beat: int, systole_fraction: float = 0.35,
                  first_ed_frame: int = 0) -> tuple[np.ndarray, tuple[int, ...], tuple[int, ...]]:
    """Phase fraction of each frame of a loop (0 at ED, 1 at ES) and the ED/ES frames.

    Each beat lasts ``frames_per_beat`` frames from one ED to the next: systole (ED to
    ES) takes ``round(systole_fraction * frames_per_beat)`` frames and the phase rises
    as a half cosine; diastole brings it back the same way. Frames before
    ``first_ed_frame`` belong to the previous beat. The LV volume falls monotonically
    with the phase, so the ED frames are the volume maxima and the ES frames its minima.

    Returns:
      ``(phase f64[num_frames], ed_frames, es_frames)``, the frame indices within the loop.
    """
    if num_frames < 1 or frames_per_beat < 4 or first_ed_frame < 0:
        raise ValueError(f"need num_frames >= 1, frames_per_beat >= 4, first_ed_frame >= 0; "
                         f"got {num_frames}, {frames_per_beat}, {first_ed_frame}")
    systole = int(round(systole_fraction * frames_per_beat))
    if not 1 <= systole <= frames_per_beat - 1:
        raise ValueError(f"systole_fraction {systole_fraction} leaves no systole or no "
                         f"diastole in a {frames_per_beat}-frame beat")
    k = (np.arange(num_frames) - first_ed_frame) % frames_per_beat
    phase = np.where(k <= systole, (1 - np.cos(np.pi * k / systole)) / 2,
                     (1 + np.cos(np.pi * (k - systole) / (frames_per_beat - systole))) / 2)
    ed = tuple(int(f) for f in np.nonzero(k == 0)[0])
    es = tuple(int(f) for f in np.nonzero(k == systole)[0])
    return phase, ed, es


@dataclasses.dataclass(frozen=True)
class CineLoop:
    """A rendered cine loop of one view of one subject.

    frames: uint8[T, H, W], what a scanner exports (markings outside the sector kept).
    segmentation: uint8[T, H, W], the style's labels per frame. classes: all classes.
    phase: f64[T] (0 ED, 1 ES). volume_ml: f64[T], the analytic biplane LV volume.
    ed_frames, es_frames: the frame indices of every ED and ES in the loop.
    ef: percent (the subject's; identical for every beat). fps: frames per second.
    pixel_spacing_mm: float32[2] (row, column). cone: bool[H, W].
    """

    frames: np.ndarray
    segmentation: np.ndarray
    classes: np.ndarray
    phase: np.ndarray
    volume_ml: np.ndarray
    ed_frames: tuple[int, ...]
    es_frames: tuple[int, ...]
    ef: float
    fps: float
    pixel_spacing_mm: np.ndarray
    cone: np.ndarray
    style: str
    view: str
    subject_index: int
    seed: int


def render_cine(style: Style | str, subject_index: int, view: str, *, shape: tuple[int, int],
                num_frames: int, frames_per_beat: int, fps: float = 50.0,
                systole_fraction: float = 0.35, first_ed_frame: int = 0,
                seed: int = 0) -> CineLoop:
    """Renders ``num_frames`` frames of one view through successive beats.

    The anatomy is ``render_view``'s (same style, subject, seed); each frame is that
    view at the phase ``cardiac_phase`` gives it, so frames at ED and ES equal
    ``render_view(..., "ED")`` and ``render_view(..., "ES")``. ``fps`` only labels the
    loop (e.g. for written files); 50 fps and 40-60 frames per beat match
    EchoNet-Dynamic's 50 fps at 50-75 beats per minute.
    """
    if not (math.isfinite(fps) and fps > 0):
        raise ValueError(f"fps must be positive, got {fps}")
    st = _style(style)
    if view not in VIEWS:
        raise ValueError(f"view must be one of {VIEWS}, got {view!r}")
    phase, ed, es = cardiac_phase(num_frames, frames_per_beat=frames_per_beat,
                                  systole_fraction=systole_fraction,
                                  first_ed_frame=first_ed_frame)
    subject = sample_subject(st, subject_index, seed=seed)
    scene = _scene(subject, view, shape)
    renders = [_render(subject, view, float(s), None, scene) for s in phase]
    first = renders[0]
    return CineLoop(
        frames=np.stack([r.image_raw for r in renders]),
        segmentation=np.stack([r.segmentation for r in renders]),
        classes=np.stack([r.classes for r in renders]),
        phase=phase, volume_ml=np.array([r.volume_ml for r in renders]),
        ed_frames=ed, es_frames=es, ef=first.ef, fps=float(fps),
        pixel_spacing_mm=first.pixel_spacing_mm, cone=first.cone, style=st.name, view=view,
        subject_index=int(subject_index), seed=int(seed))


_FOURCC = {".avi": "MJPG", ".mp4": "mp4v"}


def _temp_path(path: Path) -> Path:
    """A sibling name for writing, keeping the suffix (OpenCV picks the container by it)."""
    return path.with_name(f".{path.stem}.partial{path.suffix}")


def write_video(loop: CineLoop, path) -> Path:
    """Writes the loop's frames as an ``.avi`` (Motion JPEG, as EchoNet-Dynamic's
    videos) or ``.mp4`` (MPEG-4 part 2) grey video at ``loop.fps``; returns the path.

    The file appears complete or not at all (written under a temporary name, then
    renamed). Lossy codecs: frames read back differ by a few grey levels.
    """
    path = Path(path)
    fourcc = _FOURCC.get(path.suffix.lower())
    if fourcc is None:
        raise ValueError(f"{path}: video suffix must be one of {sorted(_FOURCC)}")
    t, h, w = loop.frames.shape
    tmp = _temp_path(path)
    writer = cv2.VideoWriter(str(tmp), cv2.VideoWriter_fourcc(*fourcc), loop.fps, (w, h),
                             isColor=True)
    try:
        if not writer.isOpened():
            raise OSError(f"{path}: OpenCV cannot write {fourcc} video here")
        for frame in loop.frames:
            writer.write(cv2.cvtColor(frame, cv2.COLOR_GRAY2BGR))
    except BaseException:
        writer.release()
        tmp.unlink(missing_ok=True)
        raise
    writer.release()
    os.replace(tmp, path)
    return path


# DICOM Ultrasound Multi-frame Image Storage; FrameTime is the frame increment pointer.
_US_MULTIFRAME = "1.2.840.10008.5.1.4.1.1.3.1"
_FRAME_TIME_TAG = 0x00181063


def write_dicom(loop: CineLoop, path) -> Path:
    """Writes the loop as a multi-frame ultrasound DICOM (8-bit MONOCHROME2,
    uncompressed); returns the path.

    ``SequenceOfUltrasoundRegions`` holds one 2-D tissue region over the whole image
    with ``PhysicalDeltaX``/``PhysicalDeltaY`` in cm (the phantom's pixel spacing), as
    scanners calibrate it; ``FrameTime`` gives the frame rate. Written under a
    temporary name, then renamed. Identifiers are synthetic (a phantom, no person).
    """
    path = Path(path)
    t, h, w = loop.frames.shape
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = _US_MULTIFRAME
    meta.MediaStorageSOPInstanceUID = pydicom.uid.generate_uid(
        entropy_srcs=[loop.style, loop.view, str(loop.subject_index), str(loop.seed), str(t)])
    meta.TransferSyntaxUID = pydicom.uid.ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = _US_MULTIFRAME
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.Modality = "US"
    ds.PatientName = "Phantom"
    ds.PatientID = f"{loop.style}_{loop.seed}_{loop.subject_index:06d}"
    ds.SeriesDescription = f"echojax phantom {loop.style} {loop.view}"
    ds.StudyInstanceUID = pydicom.uid.generate_uid(entropy_srcs=[ds.PatientID])
    ds.SeriesInstanceUID = pydicom.uid.generate_uid(entropy_srcs=[ds.PatientID, loop.view])
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows, ds.Columns = h, w
    ds.NumberOfFrames = t
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 8, 8, 7, 0
    ds.FrameTime = f"{1000.0 / loop.fps:.6g}"
    ds.FrameIncrementPointer = _FRAME_TIME_TAG
    ds.RecommendedDisplayFrameRate = int(round(loop.fps))
    dy, dx = (float(v) for v in loop.pixel_spacing_mm)
    region = Dataset()
    region.RegionSpatialFormat = 1      # 2-D
    region.RegionDataType = 1           # tissue
    region.RegionFlags = 0
    region.RegionLocationMinX0, region.RegionLocationMinY0 = 0, 0
    region.RegionLocationMaxX1, region.RegionLocationMaxY1 = w - 1, h - 1
    region.PhysicalUnitsXDirection = 3  # cm
    region.PhysicalUnitsYDirection = 3
    region.PhysicalDeltaX = dx / 10.0
    region.PhysicalDeltaY = dy / 10.0
    ds.SequenceOfUltrasoundRegions = [region]
    ds.PixelData = np.ascontiguousarray(loop.frames, dtype=np.uint8).tobytes()
    tmp = path.with_name(f".{path.name}.partial")
    try:
        ds.save_as(tmp, enforce_file_format=True)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path
