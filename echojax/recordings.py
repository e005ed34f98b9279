"""Read echo recordings (videos, DICOM, NIfTI/MetaImage, PNG/JPEG frames) into grey frames.

One entry point, :func:`read_recording`, turns a file (or a folder of frames) into a
:class:`Recording`: ``frames [T, H, W]`` (grey, the file's own numeric type), the pixel
spacing where the file states it, and the frame rate where known. Formats:

- Videos ``.avi``, ``.mp4``, ``.mov``, ``.mkv`` (OpenCV): colour frames become grey
  (ITU-R BT.601 luma, OpenCV's ``COLOR_BGR2GRAY``); no spacing (video files carry none).
- DICOM ``.dcm``/``.dicom`` or any file with the DICOM preamble (pydicom), single- or
  multi-frame. Spacing from the ultrasound region calibration
  (``SequenceOfUltrasoundRegions``: the largest 2-D region whose physical units are
  centimetres, ``PhysicalDeltaY``/``PhysicalDeltaX`` in cm -> mm), else
  ``PixelSpacing`` (mm, row/column), else unknown. RGB, YBR and palette colour become
  grey (BT.601 luma of the RGB pixels); MONOCHROME1 is inverted to MONOCHROME2 so
  brighter always means more echo. Frame rate from ``FrameTime`` (ms), else
  ``RecommendedDisplayFrameRate``, else ``CineRate``.
- NIfTI ``.nii``/``.nii.gz`` and MetaImage ``.mhd`` (SimpleITK, as the CAMUS builder
  reads them): 2-D images are one frame, 3-D volumes are ``[T, H, W]`` sequences
  (CAMUS ``*_half_sequence``); spacing from the header, ``(y, x)`` = (row, column).
- PNG/JPEG/BMP/TIFF images (OpenCV, 8 or 16 bit): one frame each. A folder that holds
  only such images is one recording, frames in natural order of their names
  (``frame2.png`` before ``frame10.png``); that is our choice for exported cine
  frames, as Unity Imaging's png-cache keeps them. No spacing.

:func:`find_recordings` lists the recordings under a folder (recursively): every file of
a known format (DICOM also without a suffix), every folder of frames as one recording;
CAMUS ground-truth masks (``*_gt.nii.gz``/``*_gt.mhd``) and MetaImage ``.raw`` data files
are not recordings; anything else is returned as skipped, with the reason.

Bad input raises :class:`RecordingError` (a ``ValueError``) whose message names the file
and says what was expected; nothing is guessed or dropped silently.
"""

from __future__ import annotations

import dataclasses
import math
import re
from pathlib import Path

import cv2
import numpy as np
import pydicom
import pydicom.errors
import pydicom.pixels
import SimpleITK as sitk

VIDEO_SUFFIXES = (".avi", ".mp4", ".mov", ".mkv")
DICOM_SUFFIXES = (".dcm", ".dicom")
VOLUME_SUFFIXES = (".nii", ".nii.gz", ".mhd")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")
_CM_UNITS = 3  # PhysicalUnitsX/YDirection code for centimetres (DICOM PS3.3 C.8.5.5.1.1)
_REGION_2D = 1  # RegionSpatialFormat: 2-D tissue or flow


class RecordingError(ValueError):
    """A file that cannot be read as an echo recording; the message names it."""


@dataclasses.dataclass(frozen=True)
class Recording:
    """Grey frames of one recording and what its file says about them.

    Attributes:
      path: the file or frame folder read.
      frames: ``[T, H, W]`` grey frames (``T >= 1``), the file's numeric type
        (``uint8`` for videos and 8-bit images and DICOM).
      spacing_mm: ``(row, column)`` pixel spacing in mm, or ``None`` when unknown.
      spacing_source: where the spacing came from: ``"ultrasound_region"``,
        ``"pixel_spacing"``, ``"header"`` (NIfTI/MetaImage) or ``"none"``.
      fps: frames per second, or ``None`` when unknown.
      kind: ``"video"``, ``"dicom"``, ``"volume"``, ``"image"`` or ``"frames"``.
      geometry: for NIfTI/MetaImage files, the header's ``origin``, ``spacing`` and
        ``direction`` (SimpleITK's order, as many axes as the file has), so that masks can
        be written on the same grid in physical space; ``None`` for other kinds.
    """
    path: Path
    frames: np.ndarray
    spacing_mm: tuple[float, float] | None
    spacing_source: str
    fps: float | None
    kind: str
    geometry: dict[str, tuple[float, ...]] | None = None

    @property
    def num_frames(self) -> int:
        return int(self.frames.shape[0])


def _suffix(path: Path) -> str:
    name = path.name.lower()
    return ".nii.gz" if name.endswith(".nii.gz") else path.suffix.lower()


def _expected() -> str:
    return ("a video (" + ", ".join(VIDEO_SUFFIXES) + "), DICOM, NIfTI/MetaImage ("
            + ", ".join(VOLUME_SUFFIXES) + "), an image (" + ", ".join(IMAGE_SUFFIXES)
            + ") or a folder of images")


def _grey(rgb: np.ndarray) -> np.ndarray:
    """BT.601 luma of ``[..., 3]`` RGB, in the input's integer type when it has one."""
    y = rgb[..., 0] * 0.299 + rgb[..., 1] * 0.587 + rgb[..., 2] * 0.114
    if np.issubdtype(rgb.dtype, np.integer):
        return np.clip(np.rint(y), 0, np.iinfo(rgb.dtype).max).astype(rgb.dtype)
    return y.astype(rgb.dtype)


def _finite_positive(x) -> float | None:
    try:
        v = float(x)
    except (TypeError, ValueError):
        return None
    return v if math.isfinite(v) and v > 0 else None


def _is_dicom(path: Path) -> bool:
    with path.open("rb") as f:
        head = f.read(132)
    return len(head) == 132 and head[128:132] == b"DICM"


def read_recording(path) -> Recording:
    """Reads one recording (see the module docstring for the formats).

    Raises:
      RecordingError: missing path, unknown format, unreadable or empty file, a DICOM
        without pixel data, a folder without images or with images of different sizes.
    """
    path = Path(path)
    if not path.exists():
        raise RecordingError(f"{path}: no such file or folder")
    if path.is_dir():
        return _read_frame_folder(path)
    suffix = _suffix(path)
    if suffix in VIDEO_SUFFIXES:
        return _read_video(path)
    if suffix in DICOM_SUFFIXES or _is_dicom(path):
        return _read_dicom(path)
    if suffix in VOLUME_SUFFIXES:
        return _read_volume(path)
    if suffix in IMAGE_SUFFIXES:
        return Recording(path, _read_image(path)[None], None, "none", None, "image")
    raise RecordingError(f"{path}: unknown recording format {suffix or '(no suffix)'!r}; "
                         f"expected {_expected()}")


def _read_video(path: Path) -> Recording:
    capture = cv2.VideoCapture(str(path))
    frames = []
    try:
        if not capture.isOpened():
            raise RecordingError(f"{path}: OpenCV cannot open it as a video; expected a "
                                 f"readable {path.suffix} video")
        fps = _finite_positive(capture.get(cv2.CAP_PROP_FPS))
        while True:
            ok, frame = capture.read()
            if not ok:
                break
            frames.append(cv2.cvtColor(frame, cv2.COLOR_BGR2GRAY) if frame.ndim == 3 else frame)
    finally:
        capture.release()
    if not frames:
        raise RecordingError(f"{path}: no video frame could be decoded; expected a "
                             f"readable {path.suffix} video with at least one frame")
    return Recording(path, np.stack(frames), None, "none", fps, "video")


def _dicom_spacing(ds, path: Path) -> tuple[tuple[float, float] | None, str]:
    regions = []
    for r in ds.get("SequenceOfUltrasoundRegions", []):
        dx, dy = _finite_positive(r.get("PhysicalDeltaX")), _finite_positive(r.get("PhysicalDeltaY"))
        if (r.get("RegionSpatialFormat") == _REGION_2D and dx and dy
                and r.get("PhysicalUnitsXDirection") == _CM_UNITS
                and r.get("PhysicalUnitsYDirection") == _CM_UNITS):
            area = ((int(r.get("RegionLocationMaxX1", 0)) - int(r.get("RegionLocationMinX0", 0)))
                    * (int(r.get("RegionLocationMaxY1", 0)) - int(r.get("RegionLocationMinY0", 0))))
            regions.append((area, (10.0 * dy, 10.0 * dx)))
    if regions:
        return max(regions, key=lambda a: a[0])[1], "ultrasound_region"
    ps = ds.get("PixelSpacing")
    if ps is not None and len(ps) == 2:
        row, col = _finite_positive(ps[0]), _finite_positive(ps[1])
        if row and col:
            return (row, col), "pixel_spacing"
        raise RecordingError(f"{path}: PixelSpacing {list(ps)} is not two positive numbers (mm)")
    return None, "none"


def _read_dicom(path: Path) -> Recording:
    try:
        ds = pydicom.dcmread(path)
    except (pydicom.errors.InvalidDicomError, EOFError, OSError) as e:
        raise RecordingError(f"{path}: not a readable DICOM file ({e}); expected a DICOM "
                             f"image or cine") from None
    if not any(k in ds for k in ("PixelData", "FloatPixelData", "DoubleFloatPixelData")):
        raise RecordingError(
            f"{path}: DICOM without pixel data (SOP class "
            f"{getattr(ds.get('SOPClassUID'), 'name', ds.get('SOPClassUID'))}); expected an "
            f"image or multi-frame cine")
    try:
        pixels = pydicom.pixels.pixel_array(ds, as_rgb=True)
    except Exception as e:  # a missing decoder, a truncated file, ...
        raise RecordingError(f"{path}: cannot decode the DICOM pixel data "
                             f"({type(e).__name__}: {e})") from None
    photometric = str(ds.get("PhotometricInterpretation", "MONOCHROME2")).upper()
    samples = int(ds.get("SamplesPerPixel", 1))
    frames_n = int(ds.get("NumberOfFrames", 1) or 1)
    if photometric == "PALETTE COLOR":
        pixels = pydicom.pixels.apply_color_lut(pixels, ds)
        samples = 3
    if samples == 3:
        pixels = _grey(pixels)
    elif samples != 1:
        raise RecordingError(f"{path}: {samples} samples per pixel; expected 1 (grey) or 3 (colour)")
    if photometric == "MONOCHROME1":
        pixels = pixels.max() + pixels.min() - pixels  # brighter = more echo
    pixels = pixels.reshape((frames_n,) + pixels.shape[-2:]) if pixels.ndim in (2, 3) else pixels
    if pixels.ndim != 3 or pixels.shape[0] != frames_n:
        raise RecordingError(f"{path}: pixel data of shape {pixels.shape} does not match "
                             f"NumberOfFrames {frames_n}")
    spacing, source = _dicom_spacing(ds, path)
    fps = None
    if _finite_positive(ds.get("FrameTime")):
        fps = 1000.0 / float(ds.FrameTime)
    else:
        fps = _finite_positive(ds.get("RecommendedDisplayFrameRate")) or _finite_positive(
            ds.get("CineRate"))
    return Recording(path, np.ascontiguousarray(pixels), spacing, source, fps, "dicom")


def _read_volume(path: Path) -> Recording:
    try:
        image = sitk.ReadImage(str(path))
    except RuntimeError as e:
        first = str(e).strip().splitlines()[-1] if str(e).strip() else ""
        raise RecordingError(f"{path}: not a readable NIfTI/MetaImage file ({first})") from None
    array = sitk.GetArrayFromImage(image)  # [T, H, W] or [H, W]
    if image.GetNumberOfComponentsPerPixel() == 3:
        array = _grey(array)
    elif image.GetNumberOfComponentsPerPixel() != 1:
        raise RecordingError(f"{path}: {image.GetNumberOfComponentsPerPixel()} components per "
                             f"pixel; expected grey or RGB")
    if array.ndim == 2:
        array = array[None]
    if array.ndim != 3 or min(array.shape) == 0:
        raise RecordingError(f"{path}: image of shape {array.shape}; expected a 2-D frame "
                             f"or a [frames, rows, columns] sequence")
    sx, sy = image.GetSpacing()[:2]
    geometry = {"origin": tuple(map(float, image.GetOrigin())),
                "spacing": tuple(map(float, image.GetSpacing())),
                "direction": tuple(map(float, image.GetDirection()))}
    return Recording(path, array, (float(sy), float(sx)), "header", None, "volume", geometry)


def _read_image(path: Path) -> np.ndarray:
    image = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if image is None:
        raise RecordingError(f"{path}: not a readable image; expected "
                             + ", ".join(IMAGE_SUFFIXES))
    if image.ndim == 3 and image.shape[2] == 4:
        image = image[..., :3]  # alpha carries no echo
    if image.ndim == 3:
        image = _grey(image[..., ::-1])  # OpenCV's BGR
    return image


def _natural_key(p: Path):
    return [int(t) if t.isdigit() else t.lower() for t in re.split(r"(\d+)", p.name)]


def _read_frame_folder(path: Path) -> Recording:
    files = sorted((p for p in path.iterdir() if not p.name.startswith(".")), key=_natural_key)
    images = [p for p in files if p.is_file() and _suffix(p) in IMAGE_SUFFIXES]
    others = [p.name for p in files if p not in images]
    if not images or others:
        raise RecordingError(
            f"{path}: a folder is read as one recording only when it holds image frames "
            f"({', '.join(IMAGE_SUFFIXES)}) and nothing else; found "
            + (f"{len(images)} image(s) and other entries {others[:5]}" if images or others
               else "an empty folder"))
    frames = [_read_image(p) for p in images]
    shapes = {f.shape for f in frames}
    if len(shapes) > 1 or len({f.dtype for f in frames}) > 1:
        raise RecordingError(f"{path}: frames differ in size or type {sorted(map(str, shapes))}; "
                             f"expected one frame size for the whole recording")
    return Recording(path, np.stack(frames), None, "none", None, "frames")


_GT = re.compile(r"_gt(\.nii\.gz|\.nii|\.mhd)$", re.IGNORECASE)
_KNOWN = VIDEO_SUFFIXES + DICOM_SUFFIXES + VOLUME_SUFFIXES + IMAGE_SUFFIXES


def _only_images(folder: Path) -> bool:
    entries = [p for p in folder.iterdir() if not p.name.startswith(".")]
    return bool(entries) and all(p.is_file() and _suffix(p) in IMAGE_SUFFIXES for p in entries)


def find_recordings(path) -> tuple[list[Path], list[tuple[Path, str]]]:
    """The recordings under ``path`` and the entries that are not recordings.

    A file is one recording. A folder holding only image frames is one recording (a
    frame folder); any other folder is searched recursively: files of a known format
    (or with the DICOM preamble) are recordings, each frame folder below is one, CAMUS
    ``*_gt`` masks and MetaImage ``.raw`` data are passed over, and every other file is
    returned in ``skipped`` with the reason. Hidden entries (``.name``) are ignored.
    Recordings come in natural name order.

    Raises:
      RecordingError: ``path`` does not exist.
    """
    path = Path(path)
    if not path.exists():
        raise RecordingError(f"{path}: no such file or folder")
    if path.is_file() or _only_images(path):
        return [path], []
    found, skipped = [], []

    def visit(folder: Path):
        for p in sorted(folder.iterdir(), key=_natural_key):
            if p.name.startswith("."):
                continue
            if p.is_dir():
                if _only_images(p):
                    found.append(p)
                else:
                    visit(p)
            elif _GT.search(p.name):
                continue  # a CAMUS ground-truth mask
            elif _suffix(p) == ".raw" and p.with_suffix(".mhd").exists():
                continue  # the data file of a MetaImage header
            elif _suffix(p) in _KNOWN or _is_dicom(p):
                found.append(p)
            else:
                skipped.append((p, f"not a recording: unknown format; expected {_expected()}"))

    visit(path)
    return found, skipped
