"""The base class of echojax's TFDS builders: array_record by default, no bucket look-up.

Every builder in ``tfds_builders/`` (and any dataset echojax writes itself) subclasses
:class:`EchoBuilder` instead of ``tfds.core.GeneratorBasedBuilder``::

    class Builder(base.EchoBuilder):
        VERSION = ...
        def _info(self): ...
        def _split_generators(self, dl_manager): ...
        def _generate_examples(self, ...): ...

It changes two of TFDS's defaults, nothing else:

* File format. ``tfds.builder(name, data_dir=D).download_and_prepare()`` with no
  ``file_format`` writes array_record, which ``tfds.data_source`` and grain read without
  TensorFlow (TFDS's own default, tfrecord, needs TensorFlow to write and to read). An
  explicit ``file_format`` (to ``tfds.builder`` or ``download_and_prepare``) still wins,
  and a dataset already prepared keeps the format it was written in.
* Bucket metadata. TFDS looks for pre-computed metadata of every unprepared dataset in
  its Google Cloud bucket (``DatasetInfo.initialize_from_bucket``), and makes a
  temporary folder (``tempfile.mkdtemp("tfds")``) for it each time, which it never
  removes. echojax's datasets have no metadata there, so the look-up is skipped: creating
  or preparing an echojax dataset leaves nothing in the temporary directory.
"""

from __future__ import annotations

import tensorflow_datasets as tfds

DEFAULT_FILE_FORMAT = "array_record"


def _no_bucket_metadata() -> None:
    """Stands in for ``DatasetInfo.initialize_from_bucket`` (see the module doc)."""


class EchoBuilder(tfds.core.GeneratorBasedBuilder, skip_registration=True):
    """``tfds.core.GeneratorBasedBuilder`` with array_record as the default file format
    and without TFDS's bucket look-up (see the module doc). Abstract: subclasses define
    ``_info``, ``_split_generators`` and ``_generate_examples`` as usual."""

    def __init__(self, *, file_format=None, **kwargs):
        super().__init__(file_format=file_format, **kwargs)
        prepared = tfds.core.dataset_info.dataset_info_path(self.data_path).exists()
        if file_format is None and not prepared:
            self.info.set_file_format(DEFAULT_FILE_FORMAT, override=True)

    @property
    def info(self) -> tfds.core.DatasetInfo:
        # TFDS builds the DatasetInfo once per builder and calls its
        # initialize_from_bucket() in DatasetBuilder.__init__ when the dataset is not
        # prepared; the instance attribute shadows that method before the call.
        info = super().info
        if "initialize_from_bucket" not in vars(info):
            info.initialize_from_bucket = _no_bucket_metadata
        return info
