"""The experiment scripts of ``experiments/`` loaded as modules, for the tests."""

import importlib.util
import os

SCRIPTS = ("exp1_domain_shift", "exp2_intra_domain", "exp3_dropout", "exp3_data_ratio",
           "exp4_all_datasets")


def load_experiment(name):
    """The ``EXPERIMENT`` of ``experiments/<name>.py``."""
    path = os.path.join(os.path.dirname(__file__), "..", "experiments", f"{name}.py")
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.EXPERIMENT
