"""The frame geometry and the output files of ``echojax.predict``.

Geometry (the model's pre-processing spec, ``echojax.export.preprocessing_spec``):

- frames become ``uint8`` grey levels (:func:`to_uint8_frames`: other types only when
  their values already lie in 0..255; never rescaled or clipped);
- **aspect: stretch.** Each frame is resized directly to ``R x R``, rows and columns
  separately (:func:`to_model_grid`), exactly as the dataset builders resize the
  training images (``echojax.data.preprocess``: area averaging when shrinking along
  both axes, bilinear otherwise), so the model sees the anatomy stretched as in
  training. Padding to a square first would show it anatomy at another scale and
  aspect than it was trained on.
- masks go back to the frame's own ``H x W`` (:func:`to_frame_grid`) by centre-aligned
  nearest neighbour, the inverse of that geometric map: original pixel ``(i, j)``
  takes the class of model pixel ``(floor((i + 0.5) R / H), floor((j + 0.5) R / W))``,
  the one whose area holds its centre. Class ids are never blended.

Outputs: masks (NIfTI or PNG), colour overlays (GIF, PNG) and the area-curve plot.
"""

from __future__ import annotations

import os
from pathlib import Path

import cv2
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import SimpleITK as sitk
from PIL import Image

from echojax.data import preprocess
from echojax.recordings import RecordingError

# Overlay colours (RGB) per class: LV red, myocardium green, LA blue (as docs/phantoms.png).
COLOURS = np.array([[0, 0, 0], [230, 40, 40], [40, 200, 60], [50, 110, 255]], np.float32)
OVERLAY_ALPHA = 0.4
OVERLAY_MAX_SIDE = 320  # larger frames are shrunk for the GIF (our choice: file size)


def to_uint8_frames(frames: np.ndarray, *, where: str) -> tuple[np.ndarray, int]:
    """``[T, H, W]`` grey frames as ``uint8``, and how many float pixels were rounded.

    ``uint8`` passes unchanged; other integer types must hold values 0..255; floats
    (e.g. NIfTI images stored as float32 0..255) are rounded to the nearest level.
    Anything else (16-bit images using their range, negative values) raises
    ``RecordingError`` naming ``where``: rescaling would be a guess about the scanner's
    grey map, so it is left to the user.
    """
    f = np.asarray(frames)
    if f.dtype == np.uint8:
        return f, 0
    if not np.issubdtype(f.dtype, np.number) or np.iscomplexobj(f):
        raise RecordingError(f"{where}: frames of type {f.dtype}; expected grey levels")
    values = f.astype(np.float64)
    lo, hi = (float(values.min()), float(values.max())) if values.size else (0.0, 0.0)
    if not np.all(np.isfinite(values)) or lo < 0 or hi > 255:
        raise RecordingError(
            f"{where}: grey levels span [{lo:g}, {hi:g}] ({f.dtype}); the model expects "
            f"8-bit grey levels 0..255. Convert the recording to 8 bits first")
    rounded = np.floor(values + 0.5)
    return rounded.astype(np.uint8), int((rounded != values).sum())


def to_model_grid(frames: np.ndarray, resolution: int) -> np.ndarray:
    """``uint8[T, H, W] -> uint8[T, R, R, 1]``, each frame stretched to ``R x R``."""
    return np.stack([preprocess.resize_image(f, resolution) for f in frames])[..., None]


def to_frame_grid(masks: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """``[T, R, R]`` class ids -> ``uint8[T, H, W]`` (centre-aligned nearest neighbour)."""
    masks = np.asarray(masks)
    rows = preprocess.nearest_indices(masks.shape[1], shape[0])
    cols = preprocess.nearest_indices(masks.shape[2], shape[1])
    return masks[:, rows][:, :, cols].astype(np.uint8)


# --------------------------------------------------------------------------- masks


def volume_geometry(geometry: dict[str, tuple[float, ...]]) -> dict[str, tuple[float, ...]]:
    """The input header's geometry for a ``[T, H, W]`` mask volume: a 3-D header as it is;
    a 2-D one (one frame) extended by a third axis (origin 0, spacing 1, orthogonal)."""
    origin, spacing, direction = geometry["origin"], geometry["spacing"], geometry["direction"]
    if len(origin) == 3:
        return {"origin": origin, "spacing": spacing, "direction": direction}
    if len(origin) != 2 or len(direction) != 4:
        raise ValueError(f"a header geometry of {len(origin)} axes; expected 2 or 3")
    d = direction
    return {"origin": (*origin, 0.0), "spacing": (*spacing, 1.0),
            "direction": (d[0], d[1], 0.0, d[2], d[3], 0.0, 0.0, 0.0, 1.0)}


def write_masks(folder: Path, masks: np.ndarray, *, as_png: bool,
                spacing_mm: tuple[float, float] | None,
                geometry: dict[str, tuple[float, ...]] | None = None) -> str:
    """Writes ``uint8[T, H, W]`` class ids as ``mask.png`` (``as_png``, one frame) or
    ``masks.nii.gz`` (``[T, H, W]``, x = column, y = row, z = frame; pixel spacing in
    mm where known, else 1). ``geometry`` (a NIfTI/MetaImage input's header,
    ``Recording.geometry``) puts the masks on the input's grid: same origin, spacing and
    direction, so they overlay the input in any viewer. Returns the file name."""
    if as_png:
        if masks.shape[0] != 1:
            raise ValueError(f"a PNG mask holds one frame, got {masks.shape[0]}")
        name = "mask.png"
        if not cv2.imwrite(str(folder / name), masks[0]):
            raise OSError(f"{folder / name}: cannot write the PNG")
        return name
    name = "masks.nii.gz"
    image = sitk.GetImageFromArray(masks)
    if geometry is not None:
        g = volume_geometry(geometry)
        image.SetOrigin(g["origin"])
        image.SetSpacing(g["spacing"])
        image.SetDirection(g["direction"])
    else:
        row, col = spacing_mm if spacing_mm is not None else (1.0, 1.0)
        image.SetSpacing((float(col), float(row), 1.0))
    sitk.WriteImage(image, str(folder / name), useCompression=True)
    return name


def read_masks(path: str | os.PathLike) -> np.ndarray:
    """``uint8[T, H, W]`` class ids from a file :func:`write_masks` wrote."""
    path = str(path)
    if path.endswith(".png"):
        return cv2.imread(path, cv2.IMREAD_UNCHANGED)[None]
    return sitk.GetArrayFromImage(sitk.ReadImage(path)).astype(np.uint8)


# --------------------------------------------------------------------------- pictures


def overlay(frames: np.ndarray, masks: np.ndarray) -> np.ndarray:
    """``uint8[T, H, W, 3]``: grey frames with the classes blended in colour."""
    rgb = np.repeat(frames[..., None], 3, axis=-1)
    fg = masks > 0
    blend = rgb[fg] * (1 - OVERLAY_ALPHA) + COLOURS[np.minimum(masks[fg], len(COLOURS) - 1)] \
        * OVERLAY_ALPHA
    rgb[fg] = np.clip(np.rint(blend), 0, 255).astype(np.uint8)
    return rgb


def shrunk(frames: np.ndarray, masks: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Frames and masks shrunk so that the longer side is at most ``OVERLAY_MAX_SIDE``
    (area averaging for frames, centre-aligned nearest neighbour for masks), for the GIF."""
    h, w = frames.shape[1:]
    scale = OVERLAY_MAX_SIDE / max(h, w)
    if scale >= 1:
        return frames, masks
    size = (max(1, round(h * scale)), max(1, round(w * scale)))
    small = np.stack([cv2.resize(f, size[::-1], interpolation=cv2.INTER_AREA) for f in frames])
    return small, to_frame_grid(masks, size)


def write_gif(path: Path, rgb: np.ndarray, fps: float | None) -> None:
    """An animated GIF of ``uint8[T, H, W, 3]`` at ``fps`` (25 when unknown), looping."""
    frames = [Image.fromarray(f) for f in rgb]
    duration = round(1000.0 / (fps or 25.0))
    frames[0].save(path, save_all=True, append_images=frames[1:], duration=max(duration, 20),
                   loop=0, optimize=False)


def write_png(path: Path, rgb: np.ndarray) -> None:
    Image.fromarray(rgb).save(path)


def plot_area_curve(path: Path, area: np.ndarray, *, unit: str, ed: list[int], es: list[int],
                    title: str, fps: float | None) -> None:
    """The LV area per frame with the ED (red) and ES (blue) frames marked."""
    frames = np.arange(len(area))
    fig, ax = plt.subplots(figsize=(6.4, 2.8), dpi=100)
    ax.plot(frames, area, color="0.25", lw=1.2, label="LV area")
    if ed:
        ax.plot(ed, area[ed], "v", color="tab:red", ms=7, label="ED")
    if es:
        ax.plot(es, area[es], "^", color="tab:blue", ms=7, label="ES")
    ax.set_xlabel("frame" + (f" ({fps:g} per s)" if fps else ""))
    ax.set_ylabel(f"LV area ({unit})")
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=8, loc="best")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
