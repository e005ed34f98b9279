"""Suite-wide settings: the suite runs on 2 CPU cores, so compile time matters more
than run time for most tests. A module that trains for many steps can turn XLA
optimisations back on with the ``optimized_xla`` fixture."""

import jax
import pytest

jax.config.update("jax_disable_most_optimizations", True)


@pytest.fixture
def optimized_xla():
    jax.config.update("jax_disable_most_optimizations", False)
    yield
    jax.config.update("jax_disable_most_optimizations", True)
