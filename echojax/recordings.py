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
and says what was expected; nothing is guessed or dropped silently: any error of the
underlying reader (OpenCV, pydicom, SimpleITK) on a damaged file becomes a
``RecordingError`` naming the file and the reader's own error, on one line.

Truncated files: a recording that decodes fewer frames than its header declares keeps the
frames that decoded completely, and says so: ``Recording.declared_frames`` (the header's
count) and ``Recording.truncation`` (a sentence, empty when all frames decoded). The
header's count is, for videos, OpenCV's ``CAP_PROP_FRAME_COUNT`` (the AVI header's frame
total, the MP4 sample table; the last frame decoded from a cut video is the one the cut
went through, its missing part concealed by the decoder, and is dropped); for DICOM,
``NumberOfFrames`` (uncompressed pixel data cut short keeps its whole frames, compressed
pixel data the fragments that arrived whole and decode); for NIfTI, the header's
dimensions (SimpleITK reads a cut ``.nii``/``.nii.gz`` without an error, the missing
voxels as zeros: the bytes actually present are counted first). A MetaImage data file cut
short, or any file holding less than one whole frame, is an error.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import os
import re
import struct
import tempfile
import warnings
import zlib
from pathlib import Path

import cv2
import nibabel
import numpy as np
import pydicom
import pydicom.dataelem
import pydicom.encaps
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
      declared_frames: the number of frames the file's header declares, or ``None`` where
        it declares none (images, frame folders, a video container without a count).
    """
    path: Path
    frames: np.ndarray
    spacing_mm: tuple[float, float] | None
    spacing_source: str
    fps: float | None
    kind: str
    geometry: dict[str, tuple[float, ...]] | None = None
    declared_frames: int | None = None

    @property
    def num_frames(self) -> int:
        return int(self.frames.shape[0])

    @property
    def truncation(self) -> str:
        """Empty when every frame the header declares decoded; else what is missing."""
        if self.declared_frames is None or self.num_frames >= self.declared_frames:
            return ""
        return (f"truncated or damaged: decoded {self.num_frames} of the "
                f"{self.declared_frames} frames its header declares")


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


def _maybe_dicom(path: Path) -> bool:
    """``_is_dicom``, and True for a file that cannot be opened (the reader says why)."""
    try:
        return _is_dicom(path)
    except OSError:
        return True


def read_recording(path) -> Recording:
    """Reads one recording (see the module docstring for the formats).

    A file with the DICOM preamble is read as DICOM whatever its suffix.

    Raises:
      RecordingError: missing path, unknown format, unreadable, damaged or empty file, a
        DICOM without pixel data, a folder without images or with images of different
        sizes; also any other error of the reader on this file (named, on one line).
    """
    path = Path(path)
    if not path.exists():
        raise RecordingError(f"{path}: no such file or folder")
    try:
        return _read_any(path)
    except RecordingError:
        raise
    except MemoryError:
        raise RecordingError(f"{path}: too large to read into memory") from None
    except Exception as e:  # a damaged file makes readers fail in their own ways
        raise RecordingError(f"{path}: cannot be read "
                             f"({one_line(e).replace(str(path), path.name)})") from None


def one_line(error: BaseException, limit: int = 300) -> str:
    """``"Type: message"`` of an exception on one line, at most ``limit`` characters."""
    text = " ".join(str(error).split())
    text = f"{type(error).__name__}: {text}" if text else type(error).__name__
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _read_any(path: Path) -> Recording:
    if path.is_dir():
        return _read_frame_folder(path)
    suffix = _suffix(path)
    if suffix in DICOM_SUFFIXES or _is_dicom(path):
        return _read_dicom(path)
    if suffix in VIDEO_SUFFIXES:
        return _read_video(path)
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
        declared = _finite_positive(capture.get(cv2.CAP_PROP_FRAME_COUNT))
        while True:
            ok, frame = capture.read()
            if not ok:
                break
            frames.append(cv2.cvtColor(frame, cv2.COLOR_BGR2GRAY) if frame.ndim == 3 else frame)
    finally:
        capture.release()
    if not frames:
        raise RecordingError(f"{path}: no video frame could be decoded"
                             + (f" of the {int(declared)} its header declares" if declared else "")
                             + f"; expected a readable {path.suffix} video with at least one frame")
    if declared and len(frames) < declared and len(frames) > 1:
        # Cut (or damaged) inside a frame: the decoder conceals the missing part of the
        # last frame it returns (checked on cut MJPEG AVIs). Our choice: drop that frame.
        frames.pop()
    if len({f.shape for f in frames}) > 1:
        raise RecordingError(f"{path}: decoded frames of different sizes "
                             f"{sorted({f.shape for f in frames})}; expected one frame size")
    return Recording(path, np.stack(frames), None, "none", fps, "video",
                     declared_frames=int(declared) if declared else None)


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


_PIXEL_DATA = 0x7FE00010
_UNDEFINED_LENGTH = 0xFFFFFFFF
_ITEM, _SEQUENCE_END = (0xFFFE, 0xE000), (0xFFFE, 0xE0DD)


def _read_dicom(path: Path) -> Recording:
    try:
        with warnings.catch_warnings():  # a cut file: said below, in our words
            warnings.filterwarnings("ignore", message="End of file reached before delimiter")
            ds = pydicom.dcmread(path)
    except (pydicom.errors.InvalidDicomError, EOFError, OSError) as e:
        raise RecordingError(f"{path}: not a readable DICOM file ({e}); expected a DICOM "
                             f"image or cine") from None
    declared = int(ds.get("NumberOfFrames", 1) or 1)
    has_pixels = any(k in ds for k in ("PixelData", "FloatPixelData", "DoubleFloatPixelData"))
    if not has_pixels and _transfer_syntax(ds).is_compressed:
        tail = _encapsulated_tail(path)
        if tail is not None:  # cut inside compressed pixel data: pydicom returns no element
            ds = pydicom.dcmread(path, stop_before_pixels=True)
            declared = int(ds.get("NumberOfFrames", 1) or 1)
            _keep_whole_fragments(ds, tail, declared, path)
            has_pixels = True
    sop = str(getattr(ds.get("SOPClassUID"), "name", ds.get("SOPClassUID")))
    if not has_pixels and (("Rows" in ds and "Columns" in ds) or sop.endswith("Image Storage")):
        raise RecordingError(f"{path}: an image's DICOM header without its pixel data: the "
                             f"file ends before it (truncated) or is damaged")
    if not has_pixels:
        raise RecordingError(f"{path}: DICOM without pixel data (SOP class {sop}); expected "
                             f"an image or multi-frame cine")
    _keep_whole_native_frames(ds, path)
    pixels = _decode_dicom_pixels(ds, path)
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
    return Recording(path, np.ascontiguousarray(pixels), spacing, source, fps, "dicom",
                     declared_frames=declared)


def _transfer_syntax(ds) -> pydicom.uid.UID:
    meta = getattr(ds, "file_meta", None)
    return pydicom.uid.UID(str(meta.get("TransferSyntaxUID", "") if meta is not None else "")
                           or pydicom.uid.ExplicitVRLittleEndian)


def _encapsulated_tail(path: Path) -> bytes | None:
    """The bytes after the last encapsulated (undefined-length) Pixel Data element header
    of the file, or ``None`` where there is none. Encapsulated pixel data is always
    explicit VR little endian: tag, VR ``OB``, two reserved bytes, length 0xFFFFFFFF."""
    data = path.read_bytes()
    at = data.rfind(struct.pack("<HH", 0x7FE0, 0x0010) + b"OB\x00\x00\xff\xff\xff\xff")
    return None if at < 0 else data[at + 12:]


def _keep_whole_fragments(ds, tail: bytes, declared: int, path: Path) -> None:
    """Puts the frames of a cut encapsulated pixel data value into ``ds``: the items (basic
    offset table, fragments) that arrived whole, grouped into frames by pydicom (a frame
    of several fragments cut between them fails to decode and is dropped then)."""
    pos = 0
    while pos + 8 <= len(tail):
        group, element, length = struct.unpack_from("<HHI", tail, pos)
        if (group, element) != _ITEM or pos + 8 + length > len(tail):
            break
        pos += 8 + length
    frames = []
    try:
        for frame in pydicom.encaps.generate_frames(tail[:pos], number_of_frames=declared):
            frames.append(frame)
    except Exception:  # e.g. an offset table pointing past the cut: the frames before stand
        pass
    if not frames:
        raise RecordingError(f"{path}: truncated: the file ends inside its compressed pixel "
                             f"data before one whole frame ({declared} declared)")
    ds["PixelData"] = pydicom.dataelem.DataElement(
        _PIXEL_DATA, "OB", pydicom.encaps.encapsulate(frames))
    ds["PixelData"].is_undefined_length = True
    ds.NumberOfFrames = len(frames)


def _keep_whole_native_frames(ds, path: Path) -> None:
    """Uncompressed pixel data that the file cuts short (its element declares more bytes
    than the file holds; pydicom reads what is there): keeps the whole frames."""
    raw = ds.get_item("PixelData")
    if not isinstance(raw, pydicom.dataelem.RawDataElement) or raw.length == _UNDEFINED_LENGTH \
            or raw.value is None or len(raw.value) >= raw.length:
        return
    bits = int(ds.get("BitsAllocated", 8))
    frame_bytes = int(ds.Rows) * int(ds.Columns) * int(ds.get("SamplesPerPixel", 1)) * bits // 8
    whole = len(raw.value) // frame_bytes if frame_bytes > 0 and bits % 8 == 0 else 0
    if whole == 0:
        raise RecordingError(f"{path}: truncated: the file holds {len(raw.value)} of the "
                             f"{raw.length} bytes of pixel data its header declares, less "
                             f"than one frame")
    ds["PixelData"] = pydicom.dataelem.DataElement(_PIXEL_DATA, raw.VR or "OB",
                                                   raw.value[: whole * frame_bytes])
    if whole < int(ds.get("NumberOfFrames", 1) or 1):
        ds.NumberOfFrames = whole


def _decode_dicom_pixels(ds, path: Path) -> np.ndarray:
    """``pixel_array`` (as RGB where colour); where the whole decode fails on a cine, the
    frames that decode one by one from the first, with ``NumberOfFrames`` set to them."""
    try:
        return pydicom.pixels.pixel_array(ds, as_rgb=True)
    except Exception as e:  # a missing decoder, damaged data, ...
        error = e
    n = int(ds.get("NumberOfFrames", 1) or 1)
    frames = []
    if n > 1:
        for i in range(n):
            try:
                frames.append(pydicom.pixels.pixel_array(ds, as_rgb=True, index=i))
            except Exception:
                break
    if not frames:
        raise RecordingError(f"{path}: cannot decode the DICOM pixel data "
                             f"({one_line(error)})") from None
    ds.NumberOfFrames = len(frames)
    return np.stack(frames)


def _read_volume(path: Path) -> Recording:
    cut = _check_metaimage_data(path) if _suffix(path) == ".mhd" else _nifti_whole_frames(path)
    reader = sitk.ImageFileReader()
    with contextlib.ExitStack() as stack:
        reader.SetFileName(_nifti_alone(path, stack))
        try:
            reader.ReadImageInformation()
            image = reader.Execute() if cut is None else None
        except RuntimeError as e:
            first = str(e).strip().splitlines()[-1] if str(e).strip() else ""
            raise RecordingError(f"{path}: not a readable NIfTI/MetaImage file ({first})") from None
    components = reader.GetNumberOfComponents()
    if cut is None:
        array = sitk.GetArrayFromImage(image)  # [T, H, W] or [H, W]
    else:  # SimpleITK would fill the missing voxels with zeros: the whole frames only
        array = _nifti_frames(path, cut[0])
    if components == 3:
        array = _grey(array)
    elif components != 1:
        raise RecordingError(f"{path}: {components} components per pixel; expected grey or RGB")
    if array.ndim == 2:
        array = array[None]
    if array.ndim != 3 or min(array.shape) == 0:
        raise RecordingError(f"{path}: image of shape {array.shape}; expected a 2-D frame "
                             f"or a [frames, rows, columns] sequence")
    sx, sy = reader.GetSpacing()[:2]
    geometry = {"origin": tuple(map(float, reader.GetOrigin())),
                "spacing": tuple(map(float, reader.GetSpacing())),
                "direction": tuple(map(float, reader.GetDirection()))}
    declared = int(reader.GetSize()[2]) if len(reader.GetSize()) == 3 else 1
    return Recording(path, array, (float(sy), float(sx)), "header", None, "volume", geometry,
                     declared_frames=declared)


def _nifti_alone(path: Path, stack: contextlib.ExitStack) -> str:
    """The name to give SimpleITK for ``path``. Its NIfTI library, asked for ``x.nii.gz``,
    reads ``x.nii`` when that file exists beside it: such a file is read through a link of
    its own in a temporary folder (removed when ``stack`` closes)."""
    if _suffix(path) != ".nii.gz" or not path.with_name(path.name[:-3]).exists():
        return str(path)
    folder = stack.enter_context(tempfile.TemporaryDirectory(prefix="echojax-nifti-"))
    link = os.path.join(folder, path.name)
    os.symlink(path.resolve(), link)
    return link


def _data_stream(path: Path, limit: int, *, keep: bool) -> tuple[int, bytes]:
    """How many bytes the file's data stream has, counted up to ``limit`` (a ``.gz``
    file's decompressed bytes up to where its stream ends or breaks, else the file's), and
    those bytes when ``keep``."""
    kept = []
    if not path.name.lower().endswith(".gz"):
        size = min(path.stat().st_size, limit)
        if keep:
            with path.open("rb") as f:
                kept.append(f.read(size))
        return size, b"".join(kept)
    count, inflate = 0, zlib.decompressobj(wbits=31)
    with path.open("rb") as f:
        while count < limit:
            compressed = f.read(1 << 20)
            if not compressed:
                break
            try:
                out = inflate.decompress(compressed, limit - count)
            except zlib.error:  # damaged: what came before counts
                break
            count += len(out)
            if keep:
                kept.append(out)
            if inflate.eof:
                break
    return count, b"".join(kept)


def _nifti_layout(path: Path) -> tuple[tuple[int, ...], np.dtype, int, float, float]:
    """A NIfTI file's voxel layout from its header: ``(shape, dtype, offset of the voxels
    in the data stream, scl_slope, scl_inter)`` (nibabel's reading of them)."""
    try:
        proxy = nibabel.load(str(path)).dataobj
        return (tuple(int(n) for n in proxy.shape), np.dtype(proxy.dtype), int(proxy.offset),
                float(proxy.slope), float(proxy.inter))
    except Exception as e:
        raise RecordingError(f"{path}: not a readable NIfTI/MetaImage file "
                             f"({one_line(e).replace(str(path), path.name)})") from None


def _nifti_whole_frames(path: Path) -> tuple[int, int] | None:
    """``None`` when the NIfTI file holds every voxel its header declares; else ``(whole
    frames present, frames declared)`` of a ``[x, y, frames]`` volume cut short. Raises
    when less than one frame is there, or when the header cannot be read."""
    shape, dtype, offset, _, _ = _nifti_layout(path)
    itemsize = dtype.itemsize
    expected = math.prod(shape) * itemsize
    present = max(_data_stream(path, offset + expected, keep=False)[0] - offset, 0)
    if present >= expected:
        return None
    whole = present // (math.prod(shape[:2]) * itemsize) if len(shape) == 3 and itemsize else 0
    if whole == 0:
        raise RecordingError(f"{path}: truncated: the file holds {present} of the {expected} "
                             f"bytes of voxels its header declares ({'x'.join(map(str, shape))}), "
                             f"less than one whole frame")
    return whole, shape[2]


def _nifti_frames(path: Path, whole: int) -> np.ndarray:
    """The first ``whole`` frames ``[whole, y, x]`` of a NIfTI ``[x, y, frames]`` volume,
    read from its bytes (x varies fastest), with the header's intensity scaling."""
    (x, y, *_), dtype, offset, slope, inter = _nifti_layout(path)
    _, data = _data_stream(path, offset + whole * x * y * dtype.itemsize, keep=True)
    frames = np.frombuffer(data[offset:], dtype).reshape(whole, y, x)
    if (slope, inter) != (1.0, 0.0):
        return frames * np.float32(slope) + np.float32(inter)
    return frames.astype(dtype.newbyteorder("="))


_MET_BYTES = {"MET_CHAR": 1, "MET_UCHAR": 1, "MET_SHORT": 2, "MET_USHORT": 2, "MET_INT": 4,
              "MET_UINT": 4, "MET_LONG": 8, "MET_ULONG": 8, "MET_LONG_LONG": 8,
              "MET_ULONG_LONG": 8, "MET_FLOAT": 4, "MET_DOUBLE": 8}


def _check_metaimage_data(path: Path) -> None:
    """Raises when a MetaImage header's separate, uncompressed data file holds fewer bytes
    than the header declares (SimpleITK would fail on it with a message on stderr)."""
    fields = {}
    with path.open("rb") as f:
        head = f.read(1 << 16)
    for line in head.split(b"\n"):
        key, sep, value = line.partition(b"=")
        if sep:
            fields[key.strip().decode("latin-1")] = value.strip().decode("latin-1")
        if key.strip() == b"ElementDataFile":
            break
    name = fields.get("ElementDataFile", "")
    if (not name or name.upper() == "LOCAL" or name.upper().startswith("LIST") or "%" in name
            or fields.get("CompressedData", "False").lower() == "true"):
        return None
    try:
        dims = [int(v) for v in fields["DimSize"].split()]
        item = _MET_BYTES[fields["ElementType"]] * int(fields.get("ElementNumberOfChannels", 1))
        skip = max(int(fields.get("HeaderSize", 0)), 0)
    except (KeyError, ValueError):
        return None  # SimpleITK says what is wrong
    data = path.parent / name
    if not data.is_file():
        raise RecordingError(f"{path}: its data file {name} (ElementDataFile) does not exist")
    present, expected = max(data.stat().st_size - skip, 0), math.prod(dims) * item
    if present < expected:
        frames = dims[2] if len(dims) == 3 else 1
        whole = present // max(math.prod(dims[:2]) * item, 1)
        raise RecordingError(f"{path}: truncated: its data file {name} holds {present} of the "
                             f"{expected} bytes its header declares ({whole} of {frames} whole "
                             f"frames)")
    return None


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
            elif _suffix(p) in _KNOWN or _maybe_dicom(p):
                found.append(p)
            else:
                skipped.append((p, f"not a recording: unknown format; expected {_expected()}"))

    visit(path)
    return found, skipped
