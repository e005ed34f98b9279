"""Unity Imaging: apical frames with LV (and, where drawn, LVM and LA) from expert curves.

Reads the labels JSON files (``labels/*.json``) and the PNG frames of ``png-cache/``.

- Labels: ``{frame_code: {"labels": {name: {"type": t, "x": "x1 x2 ...", "y": "..."}}}}``
  with ``t`` one of ``curve`` (control points of a cubic spline), ``point``, ``off``
  (not in the image) or ``blurred`` (not clear). A label given as a list of such dicts
  (one per annotator) uses the first. Keys are normalised as in the public Unity
  loader (file stem, ``_(1)``-style suffixes dropped).
- Frame path: a frame code ``NN-<64 hex>-FFFF`` (dataset class, DICOM hash, frame) lives
  at ``png-cache/<code[0:2]>/<code[3:5]>/<code[5:7]>/<code>.png``.
- Curves to regions: each curve is evaluated as a natural cubic spline through its
  control points (chord-length parameter, as the public loader draws them), closed
  by the straight segment joining its two ends (the mitral plane for the LV and LA
  curves) and filled. LV = inside the LV endocardial curve; LVM = inside the
  epicardial curve but outside the endocardial one; LA = inside the LA curve where
  not LV or LVM. The curve names are fields of ``UnityConfig``.
- Annotation: a class is annotated only where its curve has type ``curve`` (``off``,
  ``blurred`` or absent -> False in ``label_mask``, its pixels stay 0). The public
  code names no epicardial curve for apical views; if the release has none, LVM is
  simply never annotated. A ``curve`` with fewer than 3 points is counted and treated
  as not annotated (as the public loader does); other malformed labels are errors.
- Kept frames: apical frames whose LV endocardial curve is drawn. A frame with any of
  ``UnityConfig.non_apical_labels`` drawn (parasternal long-axis curves) is dropped.
  View: 4CH if any right-heart label (``UnityConfig.four_chamber_labels``) is drawn,
  else 2CH (the labels carry no view tag: this is an inference). Counts are logged.
- Grey level: PNGs are converted to luminance. Cone masking: the sector is estimated
  from all frames of the same video found in png-cache (``echojax.data.cone``); a
  frame whose sector cannot be found is skipped and counted.
- Spacing, EF and phase are not published: NaN, NaN, ``unknown``.
- Patient: the DICOM hash (one video); Unity publishes no patient identity, so the
  deterministic 80/10/10 split is by video.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import re
from pathlib import Path

import numpy as np
import scipy.interpolate
import tensorflow_datasets as tfds
from PIL import Image

from echojax import labels
from echojax.data import features as features_lib
from tfds_builders import base, real_data

SOURCE = "unity_imaging"
LABEL_TYPES = ("curve", "point", "off", "blurred")
_FRAME_CODE = re.compile(r"^\d{2}-[0-9a-f]{64}-\d{4}$")


@dataclasses.dataclass(eq=False)
class UnityConfig(tfds.core.BuilderConfig):
    """Resolution and the mapping from Unity label names to echojax classes."""
    resolution: int = 256
    lv_endo_curve: str = "curve-lv-endo"
    lv_epi_curve: str = "curve-lv-epi"
    la_endo_curve: str = "curve-la-endo"
    four_chamber_labels: tuple[str, ...] = (
        "curve-rv-endo", "curve-ra-endo", "rv-apex-endo", "tv-ant-hinge", "tv-sep-hinge",
        "ra-roof")
    non_apical_labels: tuple[str, ...] = (
        "curve-lv-post-endo", "curve-lv-post-epi", "curve-lv-antsep-endo",
        "curve-lv-antsep-rv")


def _config(resolution: int) -> UnityConfig:
    return UnityConfig(name=str(resolution), resolution=resolution,
                       description=f"frames and masks resized to {resolution}x{resolution}")


def normalise_code(key: str) -> str:
    """Frame code from a labels key (``.../01-<hash>-0012.png_(1)`` -> ``01-<hash>-0012``)."""
    code = Path(key).name.split(".")[0]
    return re.sub(r"_\(\d+\)$", "", code)


def frame_path(png_cache: Path, code: str) -> Path:
    return Path(png_cache) / code[0:2] / code[3:5] / code[5:7] / f"{code}.png"


def video_code(code: str) -> str:
    return code[:-5]


def read_labels(paths: list[Path]) -> tuple[dict[str, dict], int]:
    """Merges labels files: ``({frame_code: {name: label dict}}, duplicates dropped)``.

    A code in several files keeps the first (in sorted file order)."""
    out, duplicates = {}, 0
    for path in sorted(paths):
        try:
            data = json.loads(Path(path).read_text())
        except json.JSONDecodeError as e:
            raise ValueError(f"{path}:{e.lineno}: not valid JSON ({e.msg})") from None
        if not isinstance(data, dict):
            raise ValueError(f"{path}: top level must be an object of frame codes")
        for key, entry in data.items():
            code = normalise_code(key)
            if not _FRAME_CODE.match(code):
                raise ValueError(f"{path}: key {key!r} is not a frame code "
                                 f"NN-<64 hex digits>-FFFF")
            if not isinstance(entry, dict) or not isinstance(entry.get("labels"), dict):
                raise ValueError(f"{path}: {key}: expected {{\"labels\": {{...}}}}")
            if code in out:
                duplicates += 1
                continue
            out[code] = {name: _label(value, where=f"{path}: {key}: {name}")
                         for name, value in entry["labels"].items()}
    return out, duplicates


def _label(value, *, where: str) -> dict:
    if isinstance(value, list):  # one entry per annotator
        if not value:
            return {"type": "off"}
        value = value[0]
    if not isinstance(value, dict) or value.get("type") not in LABEL_TYPES:
        raise ValueError(f"{where}: expected a label with type in {LABEL_TYPES}, got {value!r}")
    if value["type"] == "curve":
        curve_points(value, where=where)  # malformed points: fail here, naming the file
    return value


def curve_points(label: dict, *, where: str) -> np.ndarray:
    """Control points ``float[n, 2]`` as (x, y) of a ``curve`` label."""
    try:
        xs = [float(v) for v in str(label.get("x", "")).split()]
        ys = [float(v) for v in str(label.get("y", "")).split()]
    except ValueError:
        raise ValueError(f"{where}: x and y must be space-separated numbers") from None
    if len(xs) != len(ys) or not np.all(np.isfinite(xs + ys)):
        raise ValueError(f"{where}: x has {len(xs)} values and y {len(ys)}, or some are "
                         f"not finite")
    return np.stack([xs, ys], axis=1) if xs else np.zeros((0, 2))


def spline(points: np.ndarray, *, samples_per_pixel: float = 2.0) -> np.ndarray:
    """Natural cubic spline through ``points`` (``[n, 2]``, n >= 3), parametrised by
    normalised cumulative chord length, sampled densely: ``float[m, 2]``."""
    step = np.sqrt((np.diff(points, axis=0) ** 2).sum(axis=1))
    keep = np.concatenate([[True], step > 0])  # repeated points break the parametrisation
    points = points[keep]
    t = np.concatenate([[0.0], np.cumsum(step[step > 0])])
    if len(points) < 3:
        return points
    length = t[-1]
    spline_fn = scipy.interpolate.CubicSpline(t / length, points, bc_type="natural")
    return spline_fn(np.linspace(0, 1, max(int(np.ceil(length * samples_per_pixel)), 16)))


def fill_curve(points: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """bool[H, W] inside the spline through ``points``, closed by a straight segment."""
    curve = spline(points)
    return real_data.fill_polygon(curve[:, 1], curve[:, 0], shape)


def label_frame(frame_labels: dict, shape: tuple[int, int], cfg: UnityConfig, *,
                where: str) -> tuple[np.ndarray, np.ndarray, int]:
    """Mask, label_mask and the number of too-short curves treated as absent."""
    regions, short = {}, 0
    for cls, name in ((labels.LV, cfg.lv_endo_curve), (labels.LVM, cfg.lv_epi_curve),
                      (labels.LA, cfg.la_endo_curve)):
        label = frame_labels.get(name)
        if label is None or label["type"] != "curve":
            continue
        points = curve_points(label, where=f"{where}: {name}")
        if len(points) < 3:
            short += 1
            continue
        regions[cls] = fill_curve(points, shape)
    mask = np.zeros(shape, np.uint8)
    label_mask = np.zeros(labels.NUM_CLASSES, bool)
    label_mask[labels.BACKGROUND] = True
    if labels.LVM in regions and labels.LV in regions:
        mask[regions[labels.LVM]] = labels.LVM
        label_mask[labels.LVM] = True
    if labels.LV in regions:
        mask[regions[labels.LV]] = labels.LV
        label_mask[labels.LV] = True
    if labels.LA in regions:
        mask[regions[labels.LA] & (mask == 0)] = labels.LA
        label_mask[labels.LA] = True
    return mask, label_mask, short


def _drawn(frame_labels: dict, names) -> bool:
    return any(frame_labels.get(n, {}).get("type") in ("curve", "point") for n in names)


def apical_view(frame_labels: dict, cfg: UnityConfig) -> str | None:
    """``2CH``/``4CH`` for an apical frame with a drawn LV curve, else None."""
    if frame_labels.get(cfg.lv_endo_curve, {}).get("type") != "curve":
        return None
    if _drawn(frame_labels, cfg.non_apical_labels):
        return None
    return "4CH" if _drawn(frame_labels, cfg.four_chamber_labels) else "2CH"


def read_png(path: Path) -> np.ndarray:
    """Grey ``uint8[H, W]`` (luminance of RGB frames)."""
    try:
        with Image.open(path) as im:
            return np.asarray(im.convert("L"))
    except (OSError, SyntaxError, ValueError) as e:
        raise ValueError(f"{path}: cannot read PNG ({e})") from None


class Builder(base.EchoBuilder):
    """Unity Imaging Collaborative echo frames with expert curves (LV, LVM, LA)."""

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "Initial release."}
    BUILDER_CONFIGS = [_config(r) for r in features_lib.RESOLUTIONS]
    DEFAULT_CONFIG_NAME = "256"
    MANUAL_DOWNLOAD_INSTRUCTIONS = """\
    Download the Unity Imaging Collaborative echocardiography dataset: the images
    (png-cache.zip) and the labels (labels.zip), e.g. the 2020-12-05 release
    "ImperialAIEchocardiographyDataset" at
    https://academictorrents.com/details/eeb1fb0e2e0e7bb8c6873f3357e45b545cba9fac
    (code and newer releases: https://github.com/UnityImaging). Extract both into the
    manual directory (default ~/tensorflow_datasets/downloads/manual/):
      <manual_dir>/labels/*.json          every labels JSON file of labels.zip
      <manual_dir>/png-cache/01/ab/cd/01-abcd...-0000.png   the png-cache tree
    """

    def _info(self) -> tfds.core.DatasetInfo:
        return self.dataset_info_from_configs(
            features=features_lib.features(self.builder_config.resolution),
            supervised_keys=("image", "segmentation"),
            homepage="https://github.com/UnityImaging",
        )

    def _split_generators(self, dl_manager: tfds.download.DownloadManager):
        root = Path(dl_manager.manual_dir)
        real_data.require_paths(root, ["labels", "png-cache"], dataset=SOURCE)
        label_files = sorted((root / "labels").glob("*.json"))
        if not label_files:
            real_data.require_paths(root, ["labels/*.json"], dataset=SOURCE)
        all_labels, duplicates = read_labels(label_files)
        cfg = self.builder_config
        frames = {s: [] for s in real_data.SPLITS}
        dropped = 0
        for code, frame_labels in sorted(all_labels.items()):
            view = apical_view(frame_labels, cfg)
            if view is None:
                dropped += 1
                continue
            frames[real_data.hash_split(video_code(code))].append((code, view, frame_labels))
        kept = [c for items in frames.values() for c, _, _ in items]
        real_data.require_paths(root / "png-cache",
                                [str(frame_path(Path(), c)) for c in kept], dataset=SOURCE)
        logging.info("unity_imaging: %d labelled frames in %d file(s) (%d duplicate codes "
                     "ignored); kept %d apical frames with an LV curve %s, dropped %d",
                     len(all_labels), len(label_files), duplicates, len(kept),
                     {s: len(v) for s, v in frames.items()}, dropped)
        return {s: self._generate_examples(root / "png-cache", items)
                for s, items in frames.items()}

    def _generate_examples(self, png_cache: Path, items: list):
        from echojax.data import cone  # pylint: disable=g-import-not-at-top

        cfg = self.builder_config
        short = no_sector = 0
        # The sector is estimated from all cached frames of a video; items come sorted
        # by code, so a video's labelled frames are consecutive and share one estimate.
        last_video = last_sector = None
        for code, view, frame_labels in items:
            path = frame_path(png_cache, code)
            image = read_png(path)
            video = (path.parent, video_code(code), image.shape)
            if video == last_video:
                sector = last_sector
            else:
                siblings = [read_png(p) for p in sorted(path.parent.glob(f"{video[1]}-*.png"))]
                clip = np.stack([s for s in siblings if s.shape == image.shape] or [image])
                sector = real_data.sector_mask(clip, where=str(path))
                last_video, last_sector = video, sector
            if sector is None:
                no_sector += 1
                continue
            image = cone.apply_cone_mask(image, sector)
            mask, label_mask, n_short = label_frame(frame_labels, image.shape, cfg,
                                                    where=f"labels {code}")
            short += n_short
            if not label_mask[labels.LV]:
                logging.warning("unity_imaging: %s: LV curve has < 3 points; skipped", code)
                continue
            yield code, real_data.make_example(
                image=image, mask=mask, spacing_mm=(np.nan, np.nan),
                resolution=cfg.resolution, label_mask=label_mask, source=SOURCE,
                patient_id=video_code(code), view=view, phase="unknown", ef=float("nan"),
                where=str(path))
        if short or no_sector:
            logging.info("unity_imaging: %d curves with < 3 points treated as not annotated; "
                         "%d frames without a detectable sector skipped", short, no_sector)
