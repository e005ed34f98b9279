"""Suite-wide settings: the suite runs on 2 CPU cores, so compile time matters more
than run time for most tests. A module that trains for many steps can turn XLA
optimisations back on with the ``optimized_xla`` fixture."""

import jax
import pytest

jax.config.update("jax_disable_most_optimizations", True)


@pytest.fixture(scope="session")
def engine_data_dir(tmp_path_factory):
    """The engine tests' tiny dataset (``fixtures_engine.DATASET``), built once per session."""
    from fixtures import tiny_echo
    from fixtures_engine import DATASET
    data_dir = str(tmp_path_factory.mktemp("engine_tfds"))
    tiny_echo.prepare(DATASET.split("/")[1], data_dir)
    return data_dir


@pytest.fixture
def optimized_xla():
    jax.config.update("jax_disable_most_optimizations", False)
    yield
    jax.config.update("jax_disable_most_optimizations", True)
