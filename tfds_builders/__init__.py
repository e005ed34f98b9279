"""TFDS builders of echojax. Importing this package registers every builder, so that
``tfds.builder("camus", data_dir=...)`` works from any project that installed echojax.
"""

from tfds_builders.camus import camus_dataset_builder  # noqa: F401  (registers "camus")
from tfds_builders.echo_folder import echo_folder_dataset_builder  # noqa: F401  (a user folder)
from tfds_builders.echonet_dynamic import echonet_dynamic_dataset_builder  # noqa: F401
from tfds_builders.synthetic_echo import synthetic_echo_dataset_builder  # noqa: F401
from tfds_builders.unity_imaging import unity_imaging_dataset_builder  # noqa: F401
