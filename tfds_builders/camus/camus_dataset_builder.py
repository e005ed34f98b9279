"""CAMUS: apical 2/4-chamber frames at ED and ES with LV, LVM and LA masks.

Reads either release, found under the manual directory:

- 2023 NIfTI: ``database_nifti/patientXXXX/patientXXXX_{2CH,4CH}_{ED,ES}[_gt].nii.gz``,
  ``Info_{2CH,4CH}.cfg``; splits from ``database_split/subgroup_{training,validation,
  testing}.txt`` (the official ones).
- 2019 MetaImage: ``training/patientXXXX/patientXXXX_{2CH,4CH}_{ED,ES}[_gt].mhd`` (+
  ``.raw``), ``Info_{2CH,4CH}.cfg``; this release has no official split: a
  ``database_split/`` folder is used if present, else the deterministic 80/10/10
  patient split of ``tfds_builders.real_data.hash_split``. ``testing/`` (no masks) is
  not read.

Both formats are read with SimpleITK, whose arrays are ``[row, col]`` (``[y, x]``) with
spacing ``(x, y)`` = (col, row) in the header: rows run along the depth of the sector
(apex at the top), as the images are displayed. (nibabel returns the same NIfTI data as
``[x, y]``, i.e. transposed; the fixture test writes NIfTI with nibabel and checks that
this builder reads it back untransposed.) Masks: 0 background, 1 LV, 2 LVM, 3 LA, as
echojax uses them. No cone masking (the CAMUS frames have no markings outside the cone).
EF from ``EF`` (2023) or ``LVef`` (2019) in ``Info_<view>.cfg``, NaN if absent.

Grey levels: images stored as floats (the 2023 NIfTI images load as float32 with values
0-255) become uint8: whole numbers exactly, other values in [0, 255] rounded (halves up)
with the count logged per file and kept in the metadata (``rounded_image_pixels``);
values outside [0, 255] are an error naming the file.

A split with no patient (a subset of a release: e.g. 2019 patients whose hashed split
has no test patient, or an empty ``subgroup_testing.txt``) is left out with a warning
naming it and the counts, and listed in the metadata (``omitted_splits``).
"""

from __future__ import annotations

import dataclasses
import logging
import re
from pathlib import Path

import numpy as np
import SimpleITK as sitk
import tensorflow_datasets as tfds

from echojax import labels
from echojax.data import features as features_lib
from echojax.data import preprocess
from tfds_builders import real_data

SOURCE = "camus"
VIEWS = ("2CH", "4CH")
PHASES = ("ED", "ES")
_PATIENT = re.compile(r"^patient\d{4}$")
_SPLIT_FILES = {"train": "subgroup_training.txt", "validation": "subgroup_validation.txt",
                "test": "subgroup_testing.txt"}


@dataclasses.dataclass(eq=False)
class CamusConfig(tfds.core.BuilderConfig):
    resolution: int = 256


def _config(resolution: int) -> CamusConfig:
    return CamusConfig(name=str(resolution), resolution=resolution,
                       description=f"frames and masks resized to {resolution}x{resolution}")


def read_cfg(path: Path) -> dict[str, str]:
    """``key: value`` lines of an ``Info_<view>.cfg``; a line without ``:`` is an error."""
    out = {}
    for n, line in enumerate(Path(path).read_text().splitlines(), start=1):
        if not line.strip():
            continue
        key, sep, value = line.partition(":")
        if not sep or not key.strip():
            raise ValueError(f"{path}:{n}: expected 'key: value', got {line!r}")
        out[key.strip()] = value.strip()
    return out


def ef_from_cfg(cfg: dict[str, str], *, where: str) -> float:
    """EF in percent from ``EF`` (2023 release) or ``LVef`` (2019), NaN if neither."""
    for key in ("EF", "LVef"):
        if key in cfg:
            try:
                return float(cfg[key])
            except ValueError:
                raise ValueError(f"{where}: {key} must be a number, got {cfg[key]!r}") from None
    return float("nan")


def read_frame(path: Path) -> tuple[np.ndarray, tuple[float, float]]:
    """Reads a NIfTI or MetaImage frame: ``(array [rows, cols], (row, col) spacing)``."""
    try:
        image = sitk.ReadImage(str(path))
        array = sitk.GetArrayFromImage(image)
    except RuntimeError as e:
        first = str(e).strip().splitlines()[-1] if str(e).strip() else type(e).__name__
        raise ValueError(f"{path}: cannot read image ({first})") from None
    spacing = image.GetSpacing()  # (x, y[, z]) = (col, row[, ...])
    return array, (float(spacing[1]), float(spacing[0]))


def read_split_file(path: Path) -> list[str]:
    patients = []
    for n, line in enumerate(Path(path).read_text().splitlines(), start=1):
        name = line.strip()
        if not name:
            continue
        if not _PATIENT.match(name):
            raise ValueError(f"{path}:{n}: expected a patient name like patient0001, "
                             f"got {name!r}")
        patients.append(name)
    return patients


class Builder(tfds.core.GeneratorBasedBuilder):
    """CAMUS (Leclerc et al. 2019), 2CH/4CH ED/ES frames, LV/LVM/LA masks."""

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "Initial release: 2023 NIfTI and 2019 MetaImage layouts."}
    BUILDER_CONFIGS = [_config(r) for r in features_lib.RESOLUTIONS]
    DEFAULT_CONFIG_NAME = "256"
    MANUAL_DOWNLOAD_INSTRUCTIONS = """\
    Register and download CAMUS from https://www.creatis.insa-lyon.fr/Challenge/camus/
    (the data are hosted on https://humanheart-project.creatis.insa-lyon.fr/database/).

    2023 release (NIfTI): from the "CAMUS_public" archive, place these two folders
    directly in the manual directory (default ~/tensorflow_datasets/downloads/manual/):
      <manual_dir>/database_nifti/patient0001/ ... patient0500/
          each with patientXXXX_{2CH,4CH}_{ED,ES}.nii.gz,
          patientXXXX_{2CH,4CH}_{ED,ES}_gt.nii.gz and Info_{2CH,4CH}.cfg
      <manual_dir>/database_split/subgroup_training.txt,
          subgroup_validation.txt, subgroup_testing.txt

    2019 release (MetaImage), instead: place the "training" folder of the challenge
    archive as <manual_dir>/training/patientXXXX/ with
    patientXXXX_{2CH,4CH}_{ED,ES}[_gt].mhd, the matching .raw files and
    Info_{2CH,4CH}.cfg. Without database_split/ the split is a deterministic
    80/10/10 by patient.
    """

    def __init__(self, *, file_format=None, **kwargs):
        super().__init__(file_format=file_format, **kwargs)
        real_data.default_to_array_record(self, file_format)

    def _info(self) -> tfds.core.DatasetInfo:
        return self.dataset_info_from_configs(
            features=features_lib.features(self.builder_config.resolution),
            supervised_keys=("image", "segmentation"),
            homepage="https://www.creatis.insa-lyon.fr/Challenge/camus/",
            metadata=tfds.core.MetadataDict(),
        )

    def _split_generators(self, dl_manager: tfds.download.DownloadManager):
        root = Path(dl_manager.manual_dir)
        if (root / "database_nifti").exists():
            folder, ext = root / "database_nifti", ".nii.gz"
        elif (root / "training").exists():
            folder, ext = root / "training", ".mhd"
        else:
            real_data.require_paths(root, ["database_nifti", "database_split"],
                                    dataset=SOURCE)
        split_dir = root / "database_split"
        if ext == ".nii.gz":
            real_data.require_paths(
                root, [f"database_split/{f}" for f in _SPLIT_FILES.values()], dataset=SOURCE)
        if split_dir.exists():
            splits = {s: read_split_file(split_dir / f) for s, f in _SPLIT_FILES.items()}
        else:
            patients = sorted(p.name for p in folder.iterdir() if _PATIENT.match(p.name))
            splits = {s: [p for p in patients if real_data.hash_split(p) == s]
                      for s in real_data.SPLITS}
        needed = []
        for patients in splits.values():
            for p in patients:
                needed += [f"{p}/Info_{v}.cfg" for v in VIEWS]
                needed += [f"{p}/{p}_{v}_{ph}{gt}{ext}" for v in VIEWS for ph in PHASES
                           for gt in ("", "_gt")]
                if ext == ".mhd":
                    needed += [f"{p}/{p}_{v}_{ph}{gt}.raw" for v in VIEWS for ph in PHASES
                               for gt in ("", "_gt")]
        real_data.require_paths(folder, needed, dataset=SOURCE)
        logging.info("camus: %s release, %s", "2023 NIfTI" if ext == ".nii.gz" else "2019 mhd",
                     {s: len(p) for s, p in splits.items()})
        return real_data.drop_empty_splits(
            {s: self._generate_examples(folder, patients, ext) for s, patients in splits.items()},
            dataset=SOURCE, listed={s: len(p) for s, p in splits.items()}, unit="patients",
            metadata=self.info.metadata)

    def _generate_examples(self, folder: Path, patients: list[str], ext: str):
        resolution = self.builder_config.resolution
        for p in patients:
            for view in VIEWS:
                cfg_path = folder / p / f"Info_{view}.cfg"
                ef = ef_from_cfg(read_cfg(cfg_path), where=str(cfg_path))
                for phase in PHASES:
                    image_path = folder / p / f"{p}_{view}_{phase}{ext}"
                    mask_path = folder / p / f"{p}_{view}_{phase}_gt{ext}"
                    raw, spacing = read_frame(image_path)
                    image, rounded = preprocess.round_to_uint8_image(raw, where=str(image_path))
                    if rounded:
                        self._count_rounded(image_path, rounded, raw.dtype)
                    mask, mask_spacing = read_frame(mask_path)
                    if not np.allclose(spacing, mask_spacing, rtol=1e-4):
                        raise ValueError(f"{mask_path}: spacing {mask_spacing} differs from "
                                         f"{spacing} of {image_path}")
                    yield f"{p}_{view}_{phase}", real_data.make_example(
                        image=image, mask=mask, spacing_mm=spacing, resolution=resolution,
                        label_mask=labels.FULL_LABEL_MASK, source=SOURCE, patient_id=p,
                        view=view, phase=phase, ef=ef, where=str(image_path),
                        mask_where=str(mask_path))

    def _count_rounded(self, path: Path, n: int, dtype) -> None:
        counts = self.info.metadata.setdefault("rounded_image_pixels", {"files": 0, "pixels": 0})
        counts["files"] += 1
        counts["pixels"] += int(n)
        logging.warning("camus: %s: %d pixels with non-integer grey levels (%s) rounded to "
                        "the nearest integer (%d files, %d pixels so far)", path, n, dtype,
                        counts["files"], counts["pixels"])
