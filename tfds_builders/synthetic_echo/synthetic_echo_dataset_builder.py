"""synthetic_echo: apical echo phantoms in the style of CAMUS, Unity Imaging and EchoNet.

Generated, not downloaded: ``echojax.phantoms`` renders each subject. One config per
style and resolution, named ``<style>_<resolution>`` (e.g. ``camus_like_64``), plus
``echonet_like_full_<resolution>`` with EchoNet-Dynamic's 20,048 labelled frames and
``echonet_like_annotated_<resolution>``: a test split only, the first 20 images of
``echonet_like_<resolution>``'s test split (10 subjects, ED and ES) with LV, LVM and LA
annotated (the style's convention), the phantom counterpart of the paper's 20 EchoNet
images hand-annotated with LVM and LA for Table 3 (Islam et al., MELBA 2026, Exp. 4).
Its images are those of ``echonet_like_<resolution>`` pixel for pixel; only the masks
and ``label_mask`` add the LVM and LA.
Other counts: pass a ``SyntheticEchoConfig`` to ``tfds.builder(..., config=...)``.
"""

from __future__ import annotations

import dataclasses

import tensorflow_datasets as tfds

from echojax import phantoms
from echojax.data import features
from tfds_builders import base

SPLITS = ("train", "validation", "test")


def split_of(subject_index: int) -> str:
    """Deterministic 80/10/10 split by subject (never one subject in two splits)."""
    k = subject_index % 10
    return "train" if k < 8 else "validation" if k == 8 else "test"


@dataclasses.dataclass(eq=False)
class SyntheticEchoConfig(tfds.core.BuilderConfig):
    """Style, square resolution, subject count (None: the style's default) and seed.

    ``all_labels``: annotate every class (the style's annotation convention) whatever
    the style's label mask. ``test_subjects``: write only a test split of the first
    that many test subjects of ``subjects`` (same images as the full config's).
    """

    style: str = "camus_like"
    resolution: int = 256
    num_subjects: int | None = None
    seed: int = 0
    all_labels: bool = False
    test_subjects: int | None = None

    def __post_init__(self):
        if self.style not in phantoms.STYLES:
            raise ValueError(
                f"unknown style {self.style!r}; expected one of {sorted(phantoms.STYLES)}")
        if self.resolution < 16:
            raise ValueError(f"resolution must be >= 16, got {self.resolution}")
        if self.num_subjects is not None and self.num_subjects < 1:
            raise ValueError(f"num_subjects must be >= 1, got {self.num_subjects}")
        if self.test_subjects is not None and not (
                1 <= self.test_subjects <= sum(split_of(i) == "test" for i in range(self.subjects))):
            raise ValueError(f"test_subjects must be between 1 and the number of test subjects "
                             f"of {self.subjects}, got {self.test_subjects}")

    @property
    def subjects(self) -> int:
        return self.num_subjects or phantoms.STYLES[self.style].num_subjects


def _configs():
    out = []
    for style in phantoms.STYLES.values():
        for res in features.RESOLUTIONS:
            out.append(SyntheticEchoConfig(
                name=f"{style.name}_{res}", style=style.name, resolution=res,
                description=f"{style.description} {style.num_examples} images, {res}x{res}."))
    for res in features.RESOLUTIONS:
        out.append(SyntheticEchoConfig(
            name=f"echonet_like_full_{res}", style="echonet_like", resolution=res,
            num_subjects=10_024,
            description=f"echonet_like at EchoNet-Dynamic's size: 20,048 images, {res}x{res}."))
    for res in features.RESOLUTIONS:
        out.append(SyntheticEchoConfig(
            name=f"echonet_like_annotated_{res}", style="echonet_like", resolution=res,
            all_labels=True, test_subjects=10,
            description=f"Test split only: the first 20 test images of echonet_like_{res} "
                        f"with LV, LVM and LA annotated (Table 3), {res}x{res}."))
    return out


class Builder(base.EchoBuilder):
    """Apical 2CH/4CH echo phantoms with ED/ES pairs and analytic EF."""

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "First release."}
    BUILDER_CONFIGS = _configs()
    DEFAULT_CONFIG_NAME = "camus_like_64"

    def _info(self) -> tfds.core.DatasetInfo:
        return self.dataset_info_from_configs(
            features=features.features(self.builder_config.resolution),
            supervised_keys=("image", "segmentation"),
            homepage="https://doi.org/10.59275/j.melba.2026-3bfa",
        )

    def _split_generators(self, dl_manager: tfds.download.DownloadManager):
        del dl_manager  # generated data
        cfg = self.builder_config
        n = cfg.subjects
        if cfg.test_subjects is not None:
            test = [i for i in range(n) if split_of(i) == "test"][:cfg.test_subjects]
            return {"test": self._generate_examples(test)}
        return {
            split: self._generate_examples([i for i in range(n) if split_of(i) == split])
            for split in SPLITS
        }

    def _generate_examples(self, subjects):
        cfg = self.builder_config
        style = phantoms.STYLES[cfg.style]
        if cfg.all_labels:  # same subjects and images (seeded by the style's name)
            style = dataclasses.replace(style, label_mask=(True,) * len(style.label_mask))
        for i in subjects:
            for ex in phantoms.generate_subject(
                    style, i, resolution=cfg.resolution, seed=cfg.seed):
                yield f"{i:06d}_{ex['view']}_{ex['phase']}", ex
