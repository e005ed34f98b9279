"""Settings for the whole suite (tests/ and tfds_builders/), so that a run depends on
nothing left on the machine and leaves nothing behind:

* A private temporary directory for the session (``TMPDIR`` and ``tempfile.tempdir``),
  inherited by pytest-xdist's workers and by every subprocess a test starts, and removed
  when the session ends. pytest's own ``tmp_path`` folders live inside it too (pass
  ``--basetemp=DIR`` to keep them for a look after a failure).
* ``TFDS_DATA_DIR`` points into it: a test that forgot ``data_dir`` neither reads a
  dataset prepared earlier in ``~/tensorflow_datasets`` nor writes there.
"""

import atexit
import os
import shutil
import tempfile

_ENV = "ECHOJAX_TEST_TMPDIR"
_SAVED = ("TMPDIR", "TFDS_DATA_DIR", _ENV)


def pytest_configure(config):
    path = os.environ.get(_ENV)
    if path and os.path.isdir(path):
        # An xdist worker: the controller made the folder and set the variables.
        tempfile.tempdir = path
        return
    config._echojax_saved_env = {k: os.environ.get(k) for k in _SAVED}
    path = tempfile.mkdtemp(prefix="echojax-tests-")
    config._echojax_tmpdir = path
    # Removed at interpreter exit, after the handlers registered later (atexit runs them
    # last-in first-out): TensorFlow's test harness removes its own folder in there then.
    atexit.register(shutil.rmtree, path, ignore_errors=True)
    os.environ.update({_ENV: path, "TMPDIR": path,
                       "TFDS_DATA_DIR": os.path.join(path, "tensorflow_datasets")})
    tempfile.tempdir = path


def pytest_unconfigure(config):
    path = getattr(config, "_echojax_tmpdir", None)
    if path is None:
        return
    for key, value in config._echojax_saved_env.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value
    tempfile.tempdir = None
