"""The spec file of an ``echo_folder`` dataset (``echo_folder.json`` in the folder) and
the list of records it describes: which image goes with which mask, and each image's
patient, view, phase, EF, spacing and split.

Everything here is checked before any pixel is read: a bad spec, a mask without an image,
an image without a mask, a CSV row naming a missing file or a patient in two splits is a
``ValueError`` naming the file or value.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import logging
import math
import re
from pathlib import Path

from echojax import labels
from echojax.data import features as features_lib
from tfds_builders import real_data

SPEC_FILE = "echo_folder.json"
KEYS = {"name", "source", "images", "masks", "labels", "annotated", "pixel_spacing_mm",
        "filename_regex", "csv", "defaults", "split"}
FIELDS = ("patient_id", "view", "phase", "ef", "split", "frame", "pixel_spacing_row_mm",
          "pixel_spacing_col_mm", "annotated")
SPLIT_RULES = ("hash", "csv", "train", "validation", "test")
_SPLIT_NAMES = {"train": "train", "training": "train", "val": "validation",
                "valid": "validation", "validation": "validation", "test": "test",
                "testing": "test"}
_NAME = re.compile(r"^[a-z][a-z0-9_]*$")


@dataclasses.dataclass(frozen=True)
class Record:
    """One image of the folder and everything known about it."""
    image: Path
    mask: Path
    patient_id: str
    view: str
    phase: str
    ef: float
    split: str
    frame: int | None
    spacing_mm: tuple[float, float] | None  # None: read from the image header
    label_mask: tuple[bool, ...]


@dataclasses.dataclass(frozen=True)
class Spec:
    """A parsed spec (see the README for every key)."""
    path: Path
    name: str
    source: str
    images: str
    masks: str
    lut: dict[int, int]  # mask value -> class id
    label_mask: tuple[bool, ...]
    spacing: object  # [row, col], "header" or None
    regex: re.Pattern | None
    csv: Path | None
    defaults: dict
    split: str

    @property
    def root(self) -> Path:
        return self.path.parent


def _err(path, message):
    return ValueError(f"{path}: {message}")


def load(path: Path) -> Spec:
    """Reads and checks a spec file."""
    path = Path(path)
    try:
        raw = json.loads(path.read_text())
    except FileNotFoundError:
        raise FileNotFoundError(f"{path}: no spec file; an echo_folder dataset needs "
                                f"{SPEC_FILE} in its folder (see tfds_builders/echo_folder/"
                                f"README.md)") from None
    except json.JSONDecodeError as e:
        raise _err(f"{path}:{e.lineno}", f"not valid JSON ({e.msg})") from None
    if not isinstance(raw, dict):
        raise _err(path, "the spec must be a JSON object")
    unknown = sorted(set(raw) - KEYS)
    missing = sorted({"name", "images", "masks", "labels", "annotated"} - set(raw))
    if unknown or missing:
        raise _err(path, f"unknown keys {unknown} / missing keys {missing}; keys are "
                         f"{sorted(KEYS)}")
    name = raw["name"]
    if not isinstance(name, str) or not _NAME.match(name):
        raise _err(path, f"name must match {_NAME.pattern}, got {name!r}")
    classes = {n: i for i, n in enumerate(labels.CLASS_NAMES)}

    def class_id(value, what):
        if not isinstance(value, str) or value.lower() not in classes:
            raise _err(path, f"{what}: class must be one of {list(labels.CLASS_NAMES)}, "
                             f"got {value!r}")
        return classes[value.lower()]

    if not isinstance(raw["labels"], dict) or not raw["labels"]:
        raise _err(path, "labels must map mask values to class names, e.g. "
                         "{\"0\": \"background\", \"1\": \"lv\"}")
    lut = {}
    for key, value in raw["labels"].items():
        try:
            v = int(key)
        except ValueError:
            raise _err(path, f"labels: mask value {key!r} is not an integer") from None
        lut[v] = class_id(value, f"labels[{key!r}]")
    if not isinstance(raw["annotated"], list):
        raise _err(path, "annotated must be a list of class names")
    label_mask = [False] * labels.NUM_CLASSES
    label_mask[labels.BACKGROUND] = True
    for value in raw["annotated"]:
        label_mask[class_id(value, "annotated")] = True
    not_annotated = sorted({labels.CLASS_NAMES[c] for c in lut.values() if not label_mask[c]})
    if not_annotated:
        raise _err(path, f"labels map values to {not_annotated}, which annotated does not "
                         f"list (pixels of a class must mean it is annotated)")
    spacing = raw.get("pixel_spacing_mm")
    if spacing is not None and spacing != "header":
        if (not isinstance(spacing, list) or len(spacing) != 2
                or not all(isinstance(s, (int, float)) and s > 0 for s in spacing)):
            raise _err(path, f"pixel_spacing_mm must be [row, col] in mm, \"header\" or "
                             f"null, got {spacing!r}")
        spacing = (float(spacing[0]), float(spacing[1]))
    regex = None
    if raw.get("filename_regex") is not None:
        try:
            regex = re.compile(raw["filename_regex"])
        except (re.error, TypeError) as e:
            raise _err(path, f"filename_regex: {e}") from None
        bad = sorted(set(regex.groupindex) - set(FIELDS))
        if bad:
            raise _err(path, f"filename_regex: groups {bad} are not fields {list(FIELDS)}")
    defaults = raw.get("defaults", {})
    if not isinstance(defaults, dict) or set(defaults) - {"view", "phase", "ef"}:
        raise _err(path, f"defaults may give view, phase and ef, got {defaults!r}")
    split = raw.get("split", "hash")
    if split not in SPLIT_RULES:
        raise _err(path, f"split must be one of {SPLIT_RULES}, got {split!r}")
    for key in ("images", "masks"):
        if not isinstance(raw[key], str) or Path(raw[key]).is_absolute():
            raise _err(path, f"{key} must be a path pattern relative to the folder")
    if "{stem}" not in raw["masks"]:
        raise _err(path, "masks must contain {stem} (the image file name without its "
                         "extension), e.g. \"masks/{stem}_gt.png\"")
    return Spec(path=path, name=name, source=raw.get("source", name), images=raw["images"],
                masks=raw["masks"], lut=lut, label_mask=tuple(label_mask), spacing=spacing,
                regex=regex, csv=path.parent / raw["csv"] if raw.get("csv") else None,
                defaults=defaults, split=split)


def stem(path: Path) -> str:
    """File name without its extension(s) (``a.nii.gz`` -> ``a``)."""
    name = path.name
    for ext in (".nii.gz", ".tar.gz"):
        if name.lower().endswith(ext):
            return name[:-len(ext)]
    return path.stem


def _read_csv(spec: Spec) -> tuple[str, dict[str, dict]]:
    """(key column, {key: row}) of the spec's CSV; keyed by ``image`` or ``patient_id``."""
    try:
        with spec.csv.open(newline="") as f:
            reader = csv.DictReader(f)
            columns = reader.fieldnames or []
            rows = list(reader)
    except FileNotFoundError:
        raise _err(spec.path, f"csv: {spec.csv} does not exist") from None
    key = "image" if "image" in columns else "patient_id" if "patient_id" in columns else None
    unknown = sorted(set(columns) - set(FIELDS) - {"image"})
    if key is None or unknown:
        raise _err(spec.csv, f"columns must be 'image' or 'patient_id' (the key) and any of "
                             f"{list(FIELDS)}; got {columns}")
    out = {}
    for line, row in enumerate(rows, start=2):
        k = (row.get(key) or "").strip()
        if not k or k in out:
            raise _err(f"{spec.csv}:{line}", f"{key} {k!r} is empty or repeated")
        out[k] = {c: v.strip() for c, v in row.items() if c in FIELDS and v and v.strip()}
    return key, out


def _merge(where, *sources: dict) -> dict:
    """Fields from several places; the same field with two values is an error."""
    out = {}
    for src in sources:
        for k, v in src.items():
            if k in out and str(out[k]) != str(v):
                raise _err(where, f"{k} is {out[k]!r} by one source (file name / CSV) and "
                                  f"{v!r} by another")
            out[k] = v
    return out


def records(spec: Spec) -> list[Record]:
    """Pairs every image with its mask and resolves its fields; see the module docstring."""
    root = spec.root
    mask_of = {}
    images = sorted(p for p in root.glob(spec.images) if p.is_file())
    masks_found = {p for p in root.glob(spec.masks.replace("{stem}", "*")) if p.is_file()}
    image_set = set(images)
    for image in images:
        mask = root / spec.masks.replace("{stem}", stem(image))
        if mask != image:
            mask_of[image] = mask
    # A pattern that matches both images and masks: a file that is another image's mask
    # is a mask.
    masks = set(mask_of.values())
    images = [p for p in images if p not in masks and p in mask_of]
    if not images:
        raise _err(spec.path, f"no image matches {spec.images!r} under {root}")
    missing = [str(mask_of[p]) for p in images if not mask_of[p].is_file()]
    if missing:
        raise _err(spec.path, f"{len(missing)} image(s) without a mask (pattern "
                              f"{spec.masks!r}): {', '.join(missing[:10])}")
    orphans = sorted(str(m) for m in masks_found - {mask_of[p] for p in images} - image_set)
    if orphans:
        raise _err(spec.path, f"{len(orphans)} mask(s) without an image (pattern "
                              f"{spec.images!r}): {', '.join(orphans[:10])}")
    key, table = _read_csv(spec) if spec.csv else (None, {})
    used = set()
    out = []
    for image in images:
        rel = image.relative_to(root).as_posix()
        from_name = {}
        if spec.regex is not None:
            m = spec.regex.search(rel)
            if m is None:
                raise _err(image, f"file name does not match filename_regex "
                                  f"{spec.regex.pattern!r}")
            from_name = {k: v for k, v in m.groupdict().items() if v is not None}
        patient = from_name.get("patient_id") or stem(image)
        row = {}
        if key == "image":
            row = table.get(rel) or table.get(image.name) or {}
            used.update(k for k in (rel, image.name) if k in table)
        elif key == "patient_id" and patient in table:
            row = table[patient]
            used.add(patient)
        fields = dict(spec.defaults)  # overridden by the file name and the CSV
        fields.update(_merge(image, from_name, row))
        out.append(_record(spec, image, mask_of[image], fields))
    unused = sorted(set(table) - used)
    if key == "image" and unused:
        raise _err(spec.csv, f"{len(unused)} row(s) name no image matched by "
                             f"{spec.images!r}: {', '.join(unused[:10])}")
    if unused:  # a per-patient table (e.g. EF of a whole cohort) may hold more patients
        logging.info("%s: %d patient row(s) match no image", spec.csv, len(unused))
    by_patient = {}
    for r in out:
        by_patient.setdefault(r.patient_id, set()).add(r.split)
    split_patients = sorted(p for p, s in by_patient.items() if len(s) > 1)
    if split_patients:
        raise _err(spec.csv or spec.path, f"patients in several splits: "
                                          f"{', '.join(split_patients[:10])}")
    return out


def _record(spec: Spec, image: Path, mask: Path, fields: dict) -> Record:
    patient = fields.get("patient_id") or stem(image)
    view = fields.get("view")
    if view not in features_lib.VIEWS:
        raise _err(image, f"view must be one of {features_lib.VIEWS}, got {view!r} (give it "
                          f"by filename_regex, the CSV or defaults.view)")
    phase = fields.get("phase", "unknown")
    if phase not in features_lib.PHASES:
        raise _err(image, f"phase must be one of {features_lib.PHASES}, got {phase!r}")
    try:
        ef = float(fields.get("ef", math.nan))
        frame = int(fields["frame"]) if "frame" in fields else None
        row_col = [fields.get("pixel_spacing_row_mm"), fields.get("pixel_spacing_col_mm")]
        csv_spacing = tuple(float(v) for v in row_col) if all(row_col) else None
    except ValueError as e:
        raise _err(image, f"a numeric field is not a number ({e})") from None
    if not (math.isnan(ef) or 0 <= ef <= 100):
        raise _err(image, f"ef must be a percentage in 0..100, got {ef}")
    if any(row_col) and not all(row_col):
        raise _err(image, "give both pixel_spacing_row_mm and pixel_spacing_col_mm")
    if csv_spacing is not None and not all(s > 0 for s in csv_spacing):
        raise _err(image, f"pixel spacing must be positive, got {csv_spacing}")
    if csv_spacing is not None:
        spacing = csv_spacing
    elif spec.spacing == "header":
        spacing = None
    else:
        spacing = spec.spacing or (math.nan, math.nan)
    if spec.split == "csv":
        split = _SPLIT_NAMES.get(str(fields.get("split", "")).lower())
        if split is None:
            raise _err(image, f"split {fields.get('split')!r} is not train/validation/test")
    elif spec.split == "hash":
        split = real_data.hash_split(patient)
    else:
        split = spec.split
    label_mask = spec.label_mask
    if "annotated" in fields:  # this image's own list, e.g. "lv la"
        names = [n.lower() for n in re.split(r"[\s,;]+", fields["annotated"]) if n]
        bad = sorted(set(names) - set(labels.CLASS_NAMES[1:]))
        if bad:
            raise _err(image, f"annotated: {bad} are not among {list(labels.CLASS_NAMES[1:])}")
        label_mask = tuple(c == labels.BACKGROUND or labels.CLASS_NAMES[c] in names
                           for c in range(labels.NUM_CLASSES))
    return Record(image=image, mask=mask, patient_id=patient, view=view, phase=phase, ef=ef,
                  split=split, frame=frame, spacing_mm=spacing, label_mask=label_mask)
