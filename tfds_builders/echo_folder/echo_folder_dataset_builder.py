"""echo_folder: the user's own folder of echo images and masks as an echojax dataset.

The folder holds the images (PNG or other Pillow formats, NIfTI, MetaImage; DICOM
images through SimpleITK), one mask per image, and a spec file ``echo_folder.json``
(see ``spec.py`` and the README): which mask value is which class, which classes are
annotated, the pixel spacing, where patient, view, phase, EF and split come from.

One dataset per spec: the config name is ``<spec name>_<resolution>``, e.g.
``tfds.builder("echo_folder/hospital_256", data_dir=...)``, prepared with the folder as
manual directory. Once prepared, the same name reads it back without the folder, so it
can serve as a training source, an external test set or extra annotations.

Images are used as given (no cone masking: a user's export is expected to be cleaned
already). Bad input is an error naming the file; TFDS writes into a temporary folder and
only renames it when every example is written, so no half-written dataset is left.
"""

from __future__ import annotations

import dataclasses
import logging
import re
from pathlib import Path

import numpy as np
import SimpleITK as sitk
import tensorflow_datasets as tfds
from PIL import Image

from echojax.data import features as features_lib
from tfds_builders import base, real_data

try:  # optional: the spacing of DICOM ultrasound lives in tags SimpleITK does not read
    import pydicom
except ImportError:  # pragma: no cover - depends on the environment
    pydicom = None
from tfds_builders.echo_folder import spec as spec_lib

_PILLOW = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")
_ITK = (".nii", ".nii.gz", ".mhd", ".mha", ".nrrd", ".dcm")
_CONFIG = re.compile(r"^(?P<name>[a-z][a-z0-9_]*)_(?P<resolution>\d+)$")


@dataclasses.dataclass(eq=False)
class FolderConfig(tfds.core.BuilderConfig):
    """``name`` = ``<spec name>_<resolution>``."""
    resolution: int = 256
    dataset: str = ""


def make_config(name: str) -> FolderConfig:
    """The config of ``<spec name>_<resolution>`` (e.g. ``hospital_256``)."""
    m = _CONFIG.match(name or "")
    if m is None or int(m["resolution"]) <= 0:
        raise ValueError(f"echo_folder: config must be <spec name>_<resolution> (e.g. "
                         f"hospital_256, resolutions {features_lib.RESOLUTIONS}), got "
                         f"{name!r}")
    return FolderConfig(name=name, resolution=int(m["resolution"]), dataset=m["name"],
                        description=f"folder dataset {m['name']!r} at {m['resolution']}")


def _suffix(path: Path) -> str:
    name = path.name.lower()
    return ".nii.gz" if name.endswith(".nii.gz") else path.suffix.lower()


def _grey(array: np.ndarray) -> np.ndarray:
    """Luminance (ITU-R 601) of an RGB(A) array ``[..., 3|4]``, rounded."""
    rgb = array[..., :3].astype(np.float64)
    return np.round(rgb @ np.array([0.299, 0.587, 0.114]))


def read_array(path: Path, *, is_mask: bool, frame: int | None = None):
    """``(array [H, W], (row, col) spacing from the header or None)``."""
    ext = _suffix(path)
    try:
        if ext in _PILLOW:
            with Image.open(path) as im:
                if is_mask and im.mode not in ("L", "P", "I", "I;16", "1"):
                    raise ValueError(f"a mask must be single-channel or palette, got mode "
                                     f"{im.mode}")
                array = np.asarray(im if is_mask or im.mode in ("L", "I", "I;16")
                                   else im.convert("L"))
            spacing = None
        elif ext in _ITK:
            image = sitk.ReadImage(str(path))
            array = sitk.GetArrayFromImage(image)
            if image.GetNumberOfComponentsPerPixel() > 1:
                if is_mask:
                    raise ValueError("a mask must be single-channel")
                array = _grey(array)
            sx, sy = image.GetSpacing()[:2]
            # DICOM ultrasound keeps its spacing in the ultrasound regions, which
            # SimpleITK does not read (it reports 1.0 then): read the tags instead.
            spacing = dicom_spacing(path) if ext == ".dcm" else (float(sy), float(sx))
        else:
            raise ValueError(f"unsupported file type {ext!r} (supported: "
                             f"{', '.join(_PILLOW + _ITK)})")
    except (OSError, RuntimeError, SyntaxError) as e:
        first = str(e).strip().splitlines()[-1] if str(e).strip() else type(e).__name__
        raise ValueError(f"{path}: cannot read ({first})") from None
    except ValueError as e:
        raise ValueError(f"{path}: {e}") from None
    array = np.squeeze(array)
    if array.ndim == 3:
        if frame is None:
            raise ValueError(f"{path}: holds {array.shape[0]} frames; give the frame by a "
                             f"'frame' CSV column or filename_regex group")
        if not 0 <= frame < array.shape[0]:
            raise ValueError(f"{path}: frame {frame} out of range 0..{array.shape[0] - 1}")
        array = array[frame]
    return array, spacing


def dicom_spacing(path: Path) -> tuple[float, float] | None:
    """(row, col) mm of a DICOM file: the one 2-D ultrasound region's physical deltas
    (stored in cm), else ``PixelSpacing``; None without pydicom or without either."""
    if pydicom is None:
        return None
    ds = pydicom.dcmread(str(path), stop_before_pixels=True)
    deltas = {(float(r.PhysicalDeltaY) * 10, float(r.PhysicalDeltaX) * 10)
              for r in ds.get("SequenceOfUltrasoundRegions", [])
              if r.get("RegionSpatialFormat") == 1 and r.get("PhysicalUnitsXDirection") == 3
              and r.get("PhysicalUnitsYDirection") == 3}
    if len(deltas) == 1:
        return deltas.pop()
    if not deltas and "PixelSpacing" in ds:
        row, col = (float(v) for v in ds.PixelSpacing)
        return row, col
    return None  # none, or 2-D regions that disagree


def map_labels(raw: np.ndarray, lut: dict[int, int], *, where: str) -> np.ndarray:
    """Mask values -> class ids by the spec's ``labels``; values it does not list, or
    values that are not whole numbers, are an error naming the file."""
    values = np.asarray(raw)
    if not np.issubdtype(values.dtype, np.integer):
        if not (np.issubdtype(values.dtype, np.floating)
                and np.all(values == np.round(values))):
            raise ValueError(f"{where}: mask values must be whole numbers, got dtype "
                             f"{values.dtype}")
        values = values.astype(np.int64)
    found = np.unique(values)
    unknown = [int(v) for v in found if int(v) not in lut]
    if unknown:
        raise ValueError(f"{where}: mask values {unknown[:8]} are not in the spec's labels "
                         f"{sorted(lut)}")
    table = np.zeros(int(found.max()) + 1 - min(int(found.min()), 0), np.uint8)
    offset = min(int(found.min()), 0)
    for v in found:
        table[int(v) - offset] = lut[int(v)]
    return table[values - offset]


class Builder(base.EchoBuilder):
    """A user's folder of echo images and masks, described by ``echo_folder.json``."""

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "Initial release."}
    MANUAL_DOWNLOAD_INSTRUCTIONS = """\
    The manual directory is your folder: it holds echo_folder.json (the spec), the
    images and the masks it names. Build with the config <spec name>_<resolution>:
      tfds.builder("echo_folder/<name>_256", data_dir=DATA_DIR).download_and_prepare(
          download_config=tfds.download.DownloadConfig(manual_dir="/path/to/folder"))
    See tfds_builders/echo_folder/README.md for the spec keys.
    """

    def __init__(self, *, config=None, file_format=None, **kwargs):
        if config is None:
            raise ValueError("echo_folder needs a config <spec name>_<resolution>, e.g. "
                             "tfds.builder('echo_folder/hospital_256'); see "
                             "tfds_builders/echo_folder/README.md")
        if isinstance(config, str):
            config = make_config(config)
        super().__init__(config=config, file_format=file_format, **kwargs)

    def _info(self) -> tfds.core.DatasetInfo:
        return self.dataset_info_from_configs(
            features=features_lib.features(self.builder_config.resolution),
            supervised_keys=("image", "segmentation"),
            metadata=tfds.core.MetadataDict(),
        )

    def _split_generators(self, dl_manager: tfds.download.DownloadManager):
        root = Path(dl_manager.manual_dir)
        spec = spec_lib.load(root / spec_lib.SPEC_FILE)
        if spec.name != self.builder_config.dataset:
            raise ValueError(f"{spec.path}: the spec's name is {spec.name!r}, but the config "
                             f"asks for {self.builder_config.dataset!r}; build it as "
                             f"echo_folder/{spec.name}_{self.builder_config.resolution}")
        records = spec_lib.records(spec)
        self.info.metadata["spec"] = spec.path.read_text()
        splits = {s: [r for r in records if r.split == s] for s in real_data.SPLITS}
        counts = {s: len(v) for s, v in splits.items()}
        logging.info("echo_folder/%s: %d images %s from %s", spec.name, len(records), counts,
                     root)
        return real_data.drop_empty_splits(
            {s: self._generate_examples(spec, items) for s, items in splits.items()},
            dataset=f"echo_folder/{spec.name}", listed=counts, unit="images",
            metadata=self.info.metadata)

    def _generate_examples(self, spec: spec_lib.Spec, items: list):
        cfg = self.builder_config
        for r in items:
            image, header = read_array(r.image, is_mask=False, frame=r.frame)
            raw, _ = read_array(r.mask, is_mask=True, frame=r.frame)
            spacing = r.spacing_mm
            if spacing is None:
                if header is None:
                    raise ValueError(f"{r.image}: pixel_spacing_mm is \"header\" but this "
                                     f"file type carries no trusted spacing; give it in the "
                                     f"spec or the CSV")
                spacing = header
            mask = map_labels(raw, spec.lut, where=str(r.mask))
            yield r.image.relative_to(spec.root).as_posix(), real_data.make_example(
                image=image, mask=mask, spacing_mm=spacing, resolution=cfg.resolution,
                label_mask=np.array(r.label_mask), source=spec.source,
                patient_id=r.patient_id, view=r.view, phase=r.phase, ef=r.ef,
                where=str(r.image), mask_where=str(r.mask))
