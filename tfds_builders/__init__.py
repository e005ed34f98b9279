"""TFDS builders of echojax. Importing this package registers every builder, so that
``tfds.builder("camus", data_dir=...)`` works from any project that installed echojax.
"""

from tfds_builders.synthetic_echo import synthetic_echo_dataset_builder  # noqa: F401
