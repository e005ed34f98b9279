"""Writes the tiny ``dummy_data/`` of the camus, echonet_dynamic and unity_imaging
builders from phantoms (``echojax.phantoms.render_view``), in each dataset's true raw
layout and file formats. No real patient data.

    python -m tfds_builders.make_dummy_data        # rewrites the three dummy_data/

The same functions write variants (the CAMUS 2019 MetaImage release, broken files)
into temporary folders for the builder tests.
"""

from __future__ import annotations

import csv
import hashlib
import json
import shutil
import tempfile
from pathlib import Path

import cv2
import nibabel as nib
import numpy as np
import SimpleITK as sitk
import skimage.measure
from PIL import Image

from echojax import labels, phantoms
from tfds_builders import real_data

HERE = Path(__file__).resolve().parent

# CAMUS: (patient, split); frames are taller than wide, like the real 778 x 549.
CAMUS_PATIENTS = (("patient0001", "train"), ("patient0002", "train"),
                  ("patient0003", "validation"), ("patient0004", "test"))
CAMUS_SHAPE = (56, 40)
ECHONET_SHAPE = (32, 32)
# Phase fraction of each video frame (0 = ED, 1 = ES): ED at frame 1, ES at frame 4.
ECHONET_PHASES = (0.2, 0.0, 0.35, 0.7, 1.0, 0.6)
ECHONET_ED, ECHONET_ES = 1, 4
UNITY_SHAPE = (40, 48)


def _camus_arrays(index: int):
    for view in ("2CH", "4CH"):
        for phase in ("ED", "ES"):
            r = phantoms.render_view("camus_like", index, view, phase, shape=CAMUS_SHAPE,
                                     seed=7)
            yield view, phase, r


def _info_cfg(r, *, release: int) -> str:
    ef_key = "EF" if release == 2023 else "LVef"
    lines = ["ED: 1", "ES: 12", "NbFrame: 12", "Sex: F", "Age: 60", "ImageQuality: Good",
             f"LVedv: {r.edv_ml:.2f}", f"LVesv: {r.esv_ml:.2f}", f"{ef_key}: {r.ef:.2f}"]
    if release == 2023:
        lines.append("FrameRate: 40")
    return "\n".join(lines) + "\n"


def write_nifti(path: Path, array: np.ndarray, spacing_rc) -> None:
    """As CAMUS stores it: voxel axes (x, y) = (column, row), zooms (col, row)."""
    affine = np.diag([float(spacing_rc[1]), float(spacing_rc[0]), 1.0, 1.0])
    image = nib.Nifti1Image(np.ascontiguousarray(array.T), affine)
    image.header.set_zooms((float(spacing_rc[1]), float(spacing_rc[0])))
    image.header.set_xyzt_units("mm")
    nib.save(image, str(path))


def write_mhd(path: Path, array: np.ndarray, spacing_rc) -> None:
    """A MetaImage ``.mhd`` + ``.raw`` pair, 3-D with one slice as in CAMUS 2019."""
    image = sitk.GetImageFromArray(array[None])
    image.SetSpacing((float(spacing_rc[1]), float(spacing_rc[0]), 1.0))
    sitk.WriteImage(image, str(path), useCompression=False)


def write_camus(root: Path, *, release: int = 2023, patients=CAMUS_PATIENTS,
                image_dtype=np.uint8, image_edit=None) -> None:
    """CAMUS 2023 (``database_nifti/``, ``database_split/``) or 2019 (``training/``).

    ``image_dtype``: the stored dtype of the images (the 2023 NIfTI images load as
    float32 with values 0-255 for users of the release: ``np.float32``).
    ``image_edit(name, array) -> array``: changes an image before it is written
    (``name`` like ``patient0001_2CH_ED``), for fixtures with non-integer or
    out-of-range grey levels.
    """
    root = Path(root)
    folder = root / ("database_nifti" if release == 2023 else "training")
    for index, (patient, _) in enumerate(patients):
        pdir = folder / patient
        pdir.mkdir(parents=True, exist_ok=True)
        for view, phase, r in _camus_arrays(index):
            # CAMUS has no markings outside the sector: the exported image is masked.
            image = r.image.astype(image_dtype)
            if image_edit is not None:
                image = image_edit(f"{patient}_{view}_{phase}", image)
            for suffix, array in (("", image), ("_gt", r.segmentation)):
                name = f"{patient}_{view}_{phase}{suffix}"
                if release == 2023:
                    write_nifti(pdir / f"{name}.nii.gz", array, r.pixel_spacing_mm)
                else:
                    write_mhd(pdir / f"{name}.mhd", array, r.pixel_spacing_mm)
            (pdir / f"Info_{view}.cfg").write_text(_info_cfg(r, release=release))
    if release == 2023:
        split_dir = root / "database_split"
        split_dir.mkdir(parents=True, exist_ok=True)
        for split, fname in (("train", "subgroup_training.txt"),
                             ("validation", "subgroup_validation.txt"),
                             ("test", "subgroup_testing.txt")):
            names = [p for p, s in patients if s == split]
            (split_dir / fname).write_text("".join(f"{p}\n" for p in names))


def echonet_chords(lv: np.ndarray, apex, base_mid, n_chords: int = 12) -> np.ndarray:
    """EchoNet-style tracing rows ``(X1, Y1, X2, Y2)`` of an LV region: first the long
    axis (apex to mid-annulus), then chords perpendicular to it across the cavity."""
    apex, base_mid = np.asarray(apex, float), np.asarray(base_mid, float)  # (row, col)
    axis = base_mid - apex
    normal = np.array([-axis[1], axis[0]]) / np.linalg.norm(axis)
    h, w = lv.shape

    def edge(p, direction):
        q = p.copy()
        for _ in range(4 * (h + w)):
            nxt = q + 0.25 * direction
            r, c = int(round(nxt[0])), int(round(nxt[1]))
            if not (0 <= r < h and 0 <= c < w and lv[r, c]):
                return q
            q = nxt
        return q

    rows = [(apex[1], apex[0], base_mid[1], base_mid[0])]
    for t in np.linspace(0.08, 0.97, n_chords):
        p = apex + t * axis
        a, b = edge(p, normal), edge(p, -normal)
        rows.append((a[1], a[0], b[1], b[0]))
    return np.round(np.asarray(rows), 2)


ECHONET_VIDEOS = (  # (FileName, Split, traced, file order of the two traced frames)
    ("0X1A0000000000001", "TRAIN", True, "es_first"),
    ("0X1A0000000000002", "TRAIN", True, "ed_first"),
    ("0X1A0000000000003", "VAL", True, "es_first"),
    ("0X1A0000000000004", "TEST", True, "es_first"),
    ("0X1A0000000000005", "TRAIN", False, "es_first"),  # one traced frame: skipped
)


def write_avi(path: Path, frames: np.ndarray, fps: float = 50.0) -> None:
    h, w = frames.shape[1:]
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), fps, (w, h))
    if not writer.isOpened():
        raise RuntimeError(f"cv2 cannot write MJPG AVI {path}")
    for frame in frames:
        writer.write(cv2.cvtColor(frame, cv2.COLOR_GRAY2BGR))
    writer.release()


def write_echonet(root: Path, videos=ECHONET_VIDEOS) -> None:
    root = Path(root)
    (root / "Videos").mkdir(parents=True, exist_ok=True)
    file_rows, trace_rows = [], []
    for index, (name, split, traced, order) in enumerate(videos):
        renders = [phantoms.render_view("echonet_like", index, "4CH", s, shape=ECHONET_SHAPE,
                                        seed=3) for s in ECHONET_PHASES]
        write_avi(root / "Videos" / f"{name}.avi", np.stack([r.image_raw for r in renders]))
        r = renders[ECHONET_ED]
        h, w = ECHONET_SHAPE
        file_rows.append([name, f"{r.ef:.2f}", f"{r.esv_ml:.2f}", f"{r.edv_ml:.2f}", h, w, 50,
                          len(renders), split])
        frames = [ECHONET_ES, ECHONET_ED] if order == "es_first" else [ECHONET_ED, ECHONET_ES]
        for frame in frames[:2 if traced else 1]:
            rf = renders[frame]
            lm = rf.landmarks
            mid = (np.asarray(lm["mitral_left"]) + np.asarray(lm["mitral_right"])) / 2
            for row in echonet_chords(rf.classes == labels.LV, lm["apex"], mid):
                trace_rows.append([f"{name}.avi", *[f"{v:.2f}" for v in row], frame])
    with (root / "FileList.csv").open("w", newline="") as f:
        out = csv.writer(f)
        out.writerow(["FileName", "EF", "ESV", "EDV", "FrameHeight", "FrameWidth", "FPS",
                      "NumberOfFrames", "Split"])
        out.writerows(file_rows)
    with (root / "VolumeTracings.csv").open("w", newline="") as f:
        out = csv.writer(f)
        out.writerow(["FileName", "X1", "Y1", "X2", "Y2", "Frame"])
        out.writerows(trace_rows)


def open_arc(region: np.ndarray, end_a, end_b, n_points: int = 9) -> np.ndarray:
    """Control points ``(x, y)`` of the region's boundary from near ``end_a`` to near
    ``end_b`` (row, col) the long way round (through the apex or the LA roof)."""
    contour = max(skimage.measure.find_contours(region.astype(float), 0.5), key=len)[:-1]
    ia = int(np.argmin(np.linalg.norm(contour - np.asarray(end_a), axis=1)))
    ib = int(np.argmin(np.linalg.norm(contour - np.asarray(end_b), axis=1)))
    n = len(contour)
    forward = [(ia + k) % n for k in range((ib - ia) % n + 1)]
    backward = [(ia - k) % n for k in range((ia - ib) % n + 1)]
    mid = (np.asarray(end_a) + np.asarray(end_b)) / 2
    far = lambda idx: np.linalg.norm(contour[idx] - mid, axis=1).max()  # noqa: E731
    arc = contour[max((forward, backward), key=far)]
    pick = np.round(np.linspace(0, len(arc) - 1, n_points)).astype(int)
    return arc[pick][:, ::-1]  # (row, col) -> (x, y)


def _curve(points: np.ndarray) -> dict:
    return {"type": "curve", "x": " ".join(f"{v:.1f}" for v in points[:, 0]),
            "y": " ".join(f"{v:.1f}" for v in points[:, 1])}


def unity_code(k: int, split: str) -> str:
    """The first fixture video code (``01-<64 hex>``) after ``k`` whose patient split is
    ``split``, so that every split has frames."""
    while True:
        code = "01-" + hashlib.sha256(f"unity-fixture-{k}".encode()).hexdigest()
        if real_data.hash_split(code) == split:
            return code
        k += 1


# (video key, split, frame, view, phase, what is drawn)
UNITY_FRAMES = (
    ("a", "train", 3, "2CH", "ED", "lv lvm la"),
    ("a", "train", 7, "2CH", "ES", "lv lvm la"),
    ("a", "train", 9, "2CH", 0.5, "png only"),       # unlabelled sibling frame
    ("a", "train", 11, "2CH", 0.3, "lv blurred"),   # dropped: LV not drawn
    ("b", "validation", 10, "4CH", "ED", "lv rv"),  # LA off, no epicardial curve
    ("c", "test", 0, "2CH", "ES", "lv la"),
    ("d", "train", 5, "2CH", "ED", "plax"),         # dropped: parasternal labels
)


def write_unity(root: Path, frames=UNITY_FRAMES) -> None:
    root = Path(root)
    videos = {}
    for key, split, *_ in frames:
        videos.setdefault(key, unity_code(len(videos) * 100, split))
    labels_json = {}
    for index, (key, _, frame, view, phase, drawn) in enumerate(frames):
        subject = "abcd".index(key)
        r = phantoms.render_view("unity_like", subject, view, phase, shape=UNITY_SHAPE, seed=5)
        code = f"{videos[key]}-{frame:04d}"
        path = root / "png-cache" / code[0:2] / code[3:5] / code[5:7] / f"{code}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        rgb = np.repeat(r.image_raw[..., None], 3, axis=2)
        rgb[r.markings] = (rgb[r.markings] * np.array([1.0, 0.6, 0.2])).astype(np.uint8)
        Image.fromarray(rgb).save(path)
        if drawn == "png only":
            continue
        lm = r.landmarks
        ends = (lm["mitral_left"], lm["mitral_right"])
        lv = open_arc(r.classes == labels.LV, *ends)
        entry = {"curve-lv-endo": _curve(lv), "mv-ant-hinge": {"type": "point",
                 "x": f"{lv[0, 0]:.1f}", "y": f"{lv[0, 1]:.1f}"}}
        if "lvm" in drawn:
            entry["curve-lv-epi"] = _curve(open_arc(np.isin(r.classes, (1, 2)), *ends))
        entry["curve-la-endo"] = (_curve(open_arc(r.classes == labels.LA, *ends))
                                  if "la" in drawn else {"type": "off", "x": "", "y": ""})
        if "rv" in drawn:
            entry["curve-rv-endo"] = _curve(lv + [[6.0, 0.0]])
        if "blurred" in drawn:
            entry["curve-lv-endo"] = {"type": "blurred", "x": "", "y": ""}
        if "plax" in drawn:
            entry["curve-lv-post-endo"] = _curve(lv)
        # Annotators' entries come as lists in some exports; the first one is used.
        labels_json[f"{code}.png" if index == 0 else code] = {
            "labels": {k: ([v] if k == "curve-lv-endo" and index == 1 else v)
                       for k, v in entry.items()}}
    (root / "labels").mkdir(parents=True, exist_ok=True)
    (root / "labels" / "labels-all.json").write_text(json.dumps(labels_json, indent=1))


def rewrite(target: Path, writer) -> None:
    """Writes into a temporary sibling, then swaps it in: never half a fixture."""
    target = Path(target)
    tmp = Path(tempfile.mkdtemp(prefix=".dummy_", dir=target.parent))
    writer(tmp)
    old = target.with_name(target.name + ".old")
    if target.exists():
        target.rename(old)
    tmp.rename(target)
    shutil.rmtree(old, ignore_errors=True)


def main() -> None:
    rewrite(HERE / "camus" / "dummy_data", write_camus)
    rewrite(HERE / "echonet_dynamic" / "dummy_data", write_echonet)
    rewrite(HERE / "unity_imaging" / "dummy_data", write_unity)
    for name in ("camus", "echonet_dynamic", "unity_imaging"):
        files = [p for p in (HERE / name / "dummy_data").rglob("*") if p.is_file()]
        print(f"{name}: {len(files)} files, {sum(p.stat().st_size for p in files)} bytes")


if __name__ == "__main__":
    main()
