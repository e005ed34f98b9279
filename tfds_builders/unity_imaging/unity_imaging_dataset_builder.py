"""Unity Imaging: apical frames with LV, LVM and LA regions built from expert curves.

Reads the labels JSON files (``labels/*.json``) and the PNG frames of ``png-cache/``,
in the forms the Unity Imaging Collaborative's own code reads and writes (public
repositories UnityImaging/scantensus-echo and UnityImaging/unity-gls).

- Labels file: ``{frame_code: {"labels": {name: label}}}``. A label comes in one of two
  forms:

  * 2020 form, one dict ``{"type": t, "x": "x1 x2 ...", "y": "y1 y2 ..."}``: a ``curve``
    is drawn as one natural cubic spline through its control points with the
    cumulative chord length as parameter (as scantensus-echo draws it);
  * newer form, a list of drawn instances, each such a dict plus ``"straight_segment":
    "0 1 0 ..."`` (one flag per point: 1 = the segment to the next point was drawn
    straight). The label's type is that of its first instance and every instance is
    drawn (as unity-gls does). Straight segments are straight lines; each run of curved
    segments is a natural cubic spline with the point index as parameter (unity-gls's
    interpolation).

  ``t`` is ``curve``, ``point``, ``off`` (known absent: "not within the image, or would
  not be expected to be") or ``blurred`` (present but not clear: unknown). Keys are
  normalised as in the public loader (file stem, ``_(1)``-style suffixes dropped).
- JSON files beside the labels that hold no frame codes (the release's ``keys.json``,
  a ``{label name: {"rgb": ...}}`` table) are not labels: skipped and logged by name.
  A file that mixes frame codes with other keys is an error.
- Frame path: a frame code ``NN-<64 hex>-FFFF`` (dataset class, DICOM hash, frame)
  lives at ``png-cache/<code[0:2]>/<code[3:5]>/<code[5:7]>/<code>.png``.
- Regions: an open curve (mitral hinge - apex - hinge for the LV and LA) is closed by
  the straight segment joining its ends and filled. LV = inside ``curve-lv-endo``;
  LA = inside ``curve-la-endo`` where not LV or LVM; LVM as ``UnityConfig.lvm`` says:

  * ``midmyo`` (default): the apical labels have no epicardial curve but a
    mid-myocardial one (``curve-lv-midmyo``, the mid-wall line used for strain). The
    mid-wall line lies halfway between endo- and epicardium, so each endocardial point
    ``e`` is mirrored across its nearest mid-wall point ``m`` (``2 m - e``); LVM is the
    band between the endocardial curve and that outer border, closed at the base by
    straight segments. Our choice: the construction the published curves allow; the
    release the paper used is not public, so whether its LVM was drawn this way is
    unverified (see README).
  * ``epicardium``: inside an epicardial curve (``UnityConfig.lv_epi_curve``) minus the
    LV, for releases that draw one.
  * ``none``: LVM never annotated.

  Where the chosen construction has no drawn curve, LVM is not annotated (its pixels 0).
- Annotation (``label_mask``), as the publishers weight their training targets: a class
  whose curve is drawn is annotated; a curve ``off`` is annotated and empty (known
  absent); ``blurred``, missing or an empty instance list leave it unannotated. For the
  LVM the outer curve being ``off`` leaves it unannotated (a drawn LV has a wall). A
  ``curve`` with fewer than 3 points (2020 form; the public loader rejects them) is
  counted and treated as blurred; other malformed labels are errors naming file, frame
  and label.
- Curation: an optional ``curation.json`` in the manual directory, ``{"keep": [codes]}``
  and/or ``{"exclude": [codes]}``, selects frames (e.g. the paper's 400 curated
  images). Every listed code must be a labelled frame, and every kept one an apical frame
  with an LV curve; otherwise an error lists them.
- Kept frames: apical frames whose LV endocardial curve is drawn; a frame with any of
  ``UnityConfig.non_apical_labels`` drawn (parasternal long-axis curves) is dropped.
  View: 4CH if any right-heart label (``UnityConfig.four_chamber_labels``) is drawn,
  else 2CH (the labels carry no view tag: an inference). Counts are logged.
- Grey level: PNGs are converted to luminance. Sector: estimated from all frames of
  the same video found in png-cache and validated against the video's labels
  (``real_data.clear_sector``): where the estimate would cut a labelled pixel or the
  fan's signal, only what lies outside the fan is cleared; counted in metadata.json
  (``sector_handling``, ``sector_fallbacks``); no frame is skipped for its sector.
- Spacing, EF and phase are not published: NaN, NaN, ``unknown``.
- Patient: the DICOM hash (one video); Unity publishes no patient identity, so the
  deterministic 80/10/10 split is by video.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import logging
import re
from pathlib import Path

import numpy as np
import scipy.interpolate
import scipy.spatial
import tensorflow_datasets as tfds
from PIL import Image

from echojax import labels
from echojax.data import features as features_lib
from tfds_builders import base, real_data

SOURCE = "unity_imaging"
LABEL_TYPES = ("curve", "point", "off", "blurred")
LVM_CONSTRUCTIONS = ("midmyo", "epicardium", "none")
CURATION_FILE = "curation.json"
_FRAME_CODE = re.compile(r"^\d{2}-[0-9a-f]{64}-\d{4}$")
_TRUE, _FALSE = ("1", "true", "t", "yes", "y", "on"), ("0", "false", "f", "no", "n", "off")


@dataclasses.dataclass(eq=False)
class UnityConfig(tfds.core.BuilderConfig):
    """Resolution, the LVM construction and the Unity label names of each class."""
    resolution: int = 256
    lvm: str = "midmyo"
    lv_endo_curve: str = "curve-lv-endo"
    lv_midmyo_curve: str = "curve-lv-midmyo"
    lv_epi_curve: str = "curve-lv-epi"
    la_endo_curve: str = "curve-la-endo"
    four_chamber_labels: tuple[str, ...] = (
        "curve-rv-endo", "curve-ra-endo", "rv-apex-endo", "tv-ant-hinge", "tv-sep-hinge",
        "ra-roof")
    non_apical_labels: tuple[str, ...] = (
        "curve-lv-post-endo", "curve-lv-post-epi", "curve-lv-antsep-endo",
        "curve-lv-antsep-rv")

    def __post_init__(self):
        if self.lvm not in LVM_CONSTRUCTIONS:
            raise ValueError(f"UnityConfig.lvm must be one of {LVM_CONSTRUCTIONS}, "
                             f"got {self.lvm!r}")


_LVM_SUFFIX = {"midmyo": "", "epicardium": "_epicardium", "none": "_no_lvm"}
_LVM_TEXT = {"midmyo": "LVM = endocardium mirrored across the mid-myocardial curve",
             "epicardium": "LVM = inside the epicardial curve minus the LV",
             "none": "LVM never annotated"}


def _config(resolution: int, lvm: str) -> UnityConfig:
    return UnityConfig(name=f"{resolution}{_LVM_SUFFIX[lvm]}", resolution=resolution, lvm=lvm,
                       description=f"{resolution}x{resolution}; {_LVM_TEXT[lvm]}")


# ------------------------------------------------------------------ label files


@dataclasses.dataclass(frozen=True)
class Curve:
    """One drawn instance: control points ``float[n, 2]`` as (x, y), ``straight[i]``
    True where the segment from point i to i + 1 was drawn straight, and the spline
    parameter of its form (``chord`` for the 2020 form, ``index`` for the newer one)."""
    points: np.ndarray
    straight: np.ndarray
    parameter: str


@dataclasses.dataclass(frozen=True)
class Label:
    """A label of one frame: its type and its drawn instances (curves and points)."""
    type: str
    instances: tuple[Curve, ...] = ()

    @property
    def drawn(self) -> bool:
        return self.type in ("curve", "point")


def normalise_code(key: str) -> str:
    """Frame code from a labels key (``.../01-<hash>-0012.png_(1)`` -> ``01-<hash>-0012``;
    the labelling database writes ``.png`` as ``:png``)."""
    code = Path(key.replace(":", ".")).name.split(".")[0]
    return re.sub(r"_\(\d+\)$", "", code)


def frame_path(png_cache: Path, code: str) -> Path:
    return Path(png_cache) / code[0:2] / code[3:5] / code[5:7] / f"{code}.png"


def video_code(code: str) -> str:
    return code[:-5]


def _words(value) -> list[str]:
    """Space-separated text, or a JSON list (the publishers' loaders take both)."""
    return [str(v) for v in value] if isinstance(value, list) else str(value).split()


def _numbers(text, *, what: str, where: str) -> list[float]:
    try:
        return [float(v) for v in _words(text)]
    except ValueError:
        raise ValueError(f"{where}: {what} must be space-separated numbers, got "
                         f"{text!r}") from None


def _flags(text, n: int, *, where: str) -> np.ndarray:
    words = [w.lower() for w in _words(text)]
    if not words:
        return np.zeros(n, bool)
    bad = [w for w in words if w not in _TRUE + _FALSE and _as_float(w) is None]
    if bad or len(words) != n:
        raise ValueError(f"{where}: straight_segment must hold one 0/1 flag per point "
                         f"({n}), got {text!r}")
    return np.array([w in _TRUE or (_as_float(w) or 0.0) != 0.0 for w in words])


def _as_float(word: str):
    try:
        return float(word)
    except ValueError:
        return None


def _instance(value, *, parameter: str, where: str) -> tuple[str, Curve | None]:
    if not isinstance(value, dict) or value.get("type") not in LABEL_TYPES:
        raise ValueError(f"{where}: expected a label with type in {LABEL_TYPES}, got {value!r}")
    kind = value["type"]
    if kind in ("off", "blurred"):
        return kind, None
    xs = _numbers(value.get("x", ""), what="x", where=where)
    ys = _numbers(value.get("y", ""), what="y", where=where)
    if len(xs) != len(ys) or not np.all(np.isfinite(xs + ys)) or not xs:
        raise ValueError(f"{where}: x has {len(xs)} values and y {len(ys)}; they must be "
                         f"equal in number, finite and not empty")
    straight = _flags(value.get("straight_segment", ""), len(xs), where=where)
    return kind, Curve(np.stack([xs, ys], axis=1), straight, parameter)


def parse_label(value, *, where: str) -> Label:
    """A label in either form (see the module docstring) as a ``Label``."""
    if isinstance(value, dict):  # 2020 form
        kind, curve = _instance(value, parameter="chord", where=where)
        return Label(kind, (curve,) if curve is not None else ())
    if not isinstance(value, list):
        raise ValueError(f"{where}: expected a label dict or a list of instances, got "
                         f"{type(value).__name__}")
    if not value:  # no instance: nothing known about it
        return Label("blurred")
    parsed = [_instance(v, parameter="index", where=f"{where}[{i}]")
              for i, v in enumerate(value)]
    kinds = {k for k, _ in parsed}
    if len(kinds) > 1:
        raise ValueError(f"{where}: instances of one label have different types {sorted(kinds)}")
    return Label(parsed[0][0], tuple(c for _, c in parsed if c is not None))


def read_labels(paths: list[Path]) -> tuple[dict[str, dict[str, Label]], dict]:
    """Merges labels files: ``({frame_code: {name: Label}}, stats)``; stats counts the
    duplicate codes ignored (a code in several files keeps the first, in sorted file
    order) and names the JSON files skipped as not labels."""
    out, stats = {}, {"duplicates": 0, "skipped_files": []}
    for path in sorted(paths):
        try:
            data = json.loads(Path(path).read_text())
        except json.JSONDecodeError as e:
            raise ValueError(f"{path}:{e.lineno}: not valid JSON ({e.msg})") from None
        codes = ({k: normalise_code(k) for k in data} if isinstance(data, dict) else {})
        is_code = {k: bool(_FRAME_CODE.match(c)) for k, c in codes.items()}
        if not any(is_code.values()):
            stats["skipped_files"].append(str(path))
            continue
        for key, entry in data.items():
            if not is_code[key]:
                raise ValueError(f"{path}: key {key!r} is not a frame code "
                                 f"NN-<64 hex digits>-FFFF (other keys of this file are)")
            if not isinstance(entry, dict) or not isinstance(entry.get("labels"), dict):
                raise ValueError(f"{path}: {key}: expected {{\"labels\": {{...}}}}")
            code = codes[key]
            if code in out:
                stats["duplicates"] += 1
                continue
            out[code] = {name: parse_label(value, where=f"{path}: {key}: {name}")
                         for name, value in entry["labels"].items()}
    return out, stats


def read_curation(path: Path, known: set[str]) -> tuple[set[str] | None, set[str]]:
    """``(keep or None, exclude)`` frame codes from a curation file; codes that are not
    labelled frames are an error listing them."""
    try:
        data = json.loads(Path(path).read_text())
    except json.JSONDecodeError as e:
        raise ValueError(f"{path}:{e.lineno}: not valid JSON ({e.msg})") from None
    if (not isinstance(data, dict) or not data or set(data) - {"keep", "exclude"}
            or not all(isinstance(v, list) and all(isinstance(c, str) for c in v)
                       for v in data.values())):
        raise ValueError(f"{path}: expected {{\"keep\": [frame codes], \"exclude\": "
                         f"[frame codes]}} (either or both)")
    keep = {normalise_code(c) for c in data["keep"]} if "keep" in data else None
    exclude = {normalise_code(c) for c in data.get("exclude", [])}
    unknown = sorted(((keep or set()) | exclude) - known)
    if unknown:
        raise ValueError(f"{path}: {len(unknown)} listed frame code(s) have no labels: "
                         f"{', '.join(unknown[:10])}{' ...' if len(unknown) > 10 else ''}")
    return keep, exclude


# ------------------------------------------------------------------ curves to regions


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


def _index_spline(points: np.ndarray, samples_per_pixel: float) -> np.ndarray:
    """Natural cubic spline through ``points`` with the point index as parameter."""
    if len(points) == 2:
        return points
    fn = scipy.interpolate.CubicSpline(np.arange(len(points)), points, bc_type="natural")
    steps = np.sqrt((np.diff(points, axis=0) ** 2).sum(axis=1))
    t = np.concatenate([np.linspace(i, i + 1, max(int(np.ceil(s * samples_per_pixel)), 2),
                                    endpoint=False) for i, s in enumerate(steps)]
                       + [[len(points) - 1.0]])
    return fn(t)


def polyline(curve: Curve, *, samples_per_pixel: float = 2.0) -> np.ndarray:
    """The drawn line of ``curve`` sampled densely: ``float[m, 2]`` as (x, y)."""
    pts = curve.points
    if curve.parameter == "chord" and not curve.straight.any():
        return spline(pts, samples_per_pixel=samples_per_pixel)
    # Runs of curved segments between straight ones; segment i is straight[i].
    pieces, start = [], 0
    for i in range(len(pts) - 1):
        if curve.straight[i]:
            if i > start:
                pieces.append(_index_spline(pts[start:i + 1], samples_per_pixel))
            pieces.append(pts[i:i + 2])
            start = i + 1
    if start < len(pts) - 1:
        pieces.append(_index_spline(pts[start:], samples_per_pixel))
    if not pieces:
        return pts
    # Consecutive pieces share an end point; keep it once.
    return np.concatenate([pieces[0]] + [p[1:] for p in pieces[1:]])


def fill_line(line: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """bool[H, W] inside the polygon of ``line`` (x, y), closed by a straight segment."""
    return real_data.fill_polygon(line[:, 1], line[:, 0], shape)


def fill_curve(points: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """bool[H, W] inside the 2020-form spline through ``points``, closed straight."""
    return fill_line(spline(points), shape)


def mirror_across(endo: np.ndarray, midmyo: np.ndarray) -> np.ndarray:
    """Outer border ``2 m - e``: each endocardial point ``e`` (``[m, 2]``) mirrored
    across its nearest point ``m`` of the densely sampled mid-myocardial line."""
    _, nearest = scipy.spatial.cKDTree(midmyo).query(endo)
    return 2.0 * midmyo[nearest] - endo


def myocardial_band(endo: np.ndarray, outer: np.ndarray, shape) -> np.ndarray:
    """bool[H, W] between two lines run in the same direction (hinge - apex - hinge),
    closed at both ends by straight segments."""
    return fill_line(np.concatenate([endo, outer[::-1]]), shape)


def _lines(label: Label | None) -> list[np.ndarray] | None:
    """Dense lines of a drawn curve label, or None when it does not draw a region
    (``off`` gives ``[]``: drawn as nothing)."""
    if label is None or label.type in ("blurred", "point"):
        return None
    if label.type == "off":
        return []
    return [polyline(c) for c in label.instances]


def label_frame(frame_labels: dict, shape: tuple[int, int], cfg: UnityConfig, *,
                where: str) -> tuple[np.ndarray, np.ndarray, int]:
    """Mask, label_mask and the number of too-short curves treated as blurred.

    ``frame_labels`` maps label names to ``Label`` (or to raw JSON values of either
    form, parsed here)."""
    frame_labels = {n: v if isinstance(v, Label) else parse_label(v, where=f"{where}: {n}")
                    for n, v in frame_labels.items()}
    short = 0

    def lines(name):
        nonlocal short
        found = _lines(frame_labels.get(name))
        # The 2020 loader rejects curves of fewer than 3 points; the newer one draws
        # 2-point curves as lines, which enclose nothing either.
        if found and any(len(c.points) < 3 for c in frame_labels[name].instances):
            short += 1
            return None
        return found

    regions, found = {}, {}
    for cls, name in ((labels.LV, cfg.lv_endo_curve), (labels.LA, cfg.la_endo_curve)):
        found[cls] = lines(name)
        if found[cls] is not None:
            regions[cls] = np.zeros(shape, bool)
            for line in found[cls]:
                regions[cls] |= fill_line(line, shape)
    lv_lines = found[labels.LV]
    if lv_lines and cfg.lvm == "epicardium":
        epi = lines(cfg.lv_epi_curve)
        if epi:
            regions[labels.LVM] = np.zeros(shape, bool)
            for line in epi:
                regions[labels.LVM] |= fill_line(line, shape)
    elif lv_lines and cfg.lvm == "midmyo":
        mid = lines(cfg.lv_midmyo_curve)
        if mid and len(lv_lines) == 1 and len(mid) == 1:
            outer = mirror_across(lv_lines[0], mid[0])
            regions[labels.LVM] = myocardial_band(lv_lines[0], outer, shape)
    mask = np.zeros(shape, np.uint8)
    label_mask = np.zeros(labels.NUM_CLASSES, bool)
    label_mask[labels.BACKGROUND] = True
    for cls in (labels.LVM, labels.LV):  # the LV wins over its wall
        if cls in regions:
            mask[regions[cls]] = cls
            label_mask[cls] = True
    if labels.LA in regions:
        mask[regions[labels.LA] & (mask == 0)] = labels.LA
        label_mask[labels.LA] = True
    return mask, label_mask, short


def apical_view(frame_labels: dict, cfg: UnityConfig) -> str | None:
    """``2CH``/``4CH`` for an apical frame with a drawn LV curve, else None."""
    def drawn(name):
        label = frame_labels.get(name)
        return label is not None and label.drawn

    lv = frame_labels.get(cfg.lv_endo_curve)
    if lv is None or lv.type != "curve":
        return None
    if any(drawn(n) for n in cfg.non_apical_labels):
        return None
    return "4CH" if any(drawn(n) for n in cfg.four_chamber_labels) else "2CH"


def read_png(path: Path) -> np.ndarray:
    """Grey ``uint8[H, W]`` (luminance of RGB frames)."""
    try:
        with Image.open(path) as im:
            return np.asarray(im.convert("L"))
    except (OSError, SyntaxError, ValueError) as e:
        raise ValueError(f"{path}: cannot read PNG ({e})") from None


def select_frames(all_labels: dict, cfg: UnityConfig, curation_path: Path):
    """``({split: [(code, view, labels)]}, description of the curation)``: the apical
    frames with an LV curve, after the optional curation file."""
    codes = set(all_labels)
    curated = "no curation file"
    if Path(curation_path).exists():
        keep, exclude = read_curation(curation_path, codes)
        codes = (keep if keep is not None else codes) - exclude
        curated = (f"{curation_path.name}: {len(codes)} frames selected "
                   f"(keep {'all' if keep is None else len(keep)}, exclude {len(exclude)})")
    frames = {s: [] for s in real_data.SPLITS}
    not_apical = []
    for code in sorted(codes):
        view = apical_view(all_labels[code], cfg)
        if view is None:
            not_apical.append(code)
            continue
        frames[real_data.hash_split(video_code(code))].append((code, view, all_labels[code]))
    if curated != "no curation file" and not_apical:
        raise ValueError(f"{curation_path}: {len(not_apical)} selected frame(s) are not "
                         f"apical frames with an LV curve: {', '.join(not_apical[:10])}")
    return frames, curated


class Builder(base.EchoBuilder):
    """Unity Imaging Collaborative echo frames with expert curves (LV, LVM, LA)."""

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "Initial release."}
    BUILDER_CONFIGS = [_config(r, lvm) for lvm in LVM_CONSTRUCTIONS
                       for r in features_lib.RESOLUTIONS]
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
    Optional: <manual_dir>/curation.json, {"keep": [frame codes]} and/or
    {"exclude": [frame codes]}, to build a curated subset.
    """

    def _info(self) -> tfds.core.DatasetInfo:
        return self.dataset_info_from_configs(
            features=features_lib.features(self.builder_config.resolution),
            supervised_keys=("image", "segmentation"),
            homepage="https://github.com/UnityImaging",
            metadata=tfds.core.MetadataDict(),
        )

    def _split_generators(self, dl_manager: tfds.download.DownloadManager):
        root = Path(dl_manager.manual_dir)
        real_data.require_paths(root, ["labels", "png-cache"], dataset=SOURCE)
        label_files = sorted((root / "labels").glob("*.json"))
        if not label_files:
            real_data.require_paths(root, ["labels/*.json"], dataset=SOURCE)
        all_labels, stats = read_labels(label_files)
        for path in stats["skipped_files"]:
            logging.info("unity_imaging: %s holds no frame codes (not a labels file); "
                         "skipped", path)
        cfg = self.builder_config
        frames, curated = select_frames(all_labels, cfg, root / CURATION_FILE)
        kept = [c for items in frames.values() for c, _, _ in items]
        real_data.require_paths(root / "png-cache",
                                [str(frame_path(Path(), c)) for c in kept], dataset=SOURCE)
        # Provenance in the prepared dataset (metadata.json): which frames were chosen how.
        self.info.metadata.update({
            "lvm": cfg.lvm, "curation": curated, "labelled_frames": len(all_labels),
            "kept_frames": {s: len(v) for s, v in frames.items()},
            "skipped_files": [Path(f).name for f in stats["skipped_files"]]})
        logging.info("unity_imaging: %d labelled frames in %d labels file(s) (%d duplicate "
                     "codes ignored); %s; kept %d apical frames with an LV curve %s, "
                     "dropped %d", len(all_labels),
                     len(label_files) - len(stats["skipped_files"]), stats["duplicates"],
                     curated, len(kept), {s: len(v) for s, v in frames.items()},
                     len(all_labels) - len(kept))
        return real_data.drop_empty_splits(
            {s: self._generate_examples(root / "png-cache", items) for s, items in frames.items()},
            dataset=SOURCE, listed={s: len(v) for s, v in frames.items()}, unit="frames",
            metadata=self.info.metadata)

    def _generate_examples(self, png_cache: Path, items: list):
        cfg = self.builder_config
        short = no_lvm = 0
        # Items come sorted by code, so the labelled frames of one video are consecutive;
        # the sector is judged on all cached frames of the video together, validated
        # against the labels of its labelled frames (real_data.clear_sector: never skips).
        for (folder, video), group in itertools.groupby(
                items, key=lambda item: (frame_path(png_cache, item[0]).parent,
                                         video_code(item[0]))):
            group = list(group)
            paths = [frame_path(png_cache, code) for code, _, _ in group]
            images = [read_png(p) for p in paths]
            labelled = []
            for (code, _, frame_labels), image in zip(group, images, strict=True):
                mask, label_mask, n_short = label_frame(frame_labels, image.shape, cfg,
                                                        where=f"labels {code}")
                labelled.append((mask, label_mask))
                short += n_short
            for shape in dict.fromkeys(im.shape for im in images):
                siblings = [read_png(p) for p in sorted(folder.glob(f"{video}-*.png"))]
                clip = np.stack([s for s in siblings if s.shape == shape]
                                or [im for im in images if im.shape == shape])
                maps = np.stack([m for (m, _), im in zip(labelled, images, strict=True)
                                 if im.shape == shape])
                _, report = real_data.clear_sector(clip, maps, where=str(folder / video),
                                                   metadata=self.info.metadata)
                for (code, view, _), path, image, (mask, label_mask) in zip(
                        group, paths, images, labelled, strict=True):
                    if image.shape != shape:
                        continue
                    if not label_mask[labels.LV]:
                        logging.warning("unity_imaging: %s: LV curve has < 3 points; "
                                        "skipped", code)
                        real_data.count_skipped(self.info.metadata, "lv_curve_too_short")
                        continue
                    no_lvm += not label_mask[labels.LVM]
                    yield code, real_data.make_example(
                        image=np.where(report.kept, image, 0).astype(np.uint8), mask=mask,
                        spacing_mm=(np.nan, np.nan), resolution=cfg.resolution,
                        label_mask=label_mask, source=SOURCE, patient_id=video, view=view,
                        phase="unknown", ef=float("nan"), where=str(path))
        logging.info("unity_imaging: %d curves with < 3 points treated as not annotated; "
                     "LVM (%s) not annotated on %d frames", short, cfg.lvm, no_lvm)
        real_data.log_sector_summary(self.info.metadata, dataset=SOURCE)
