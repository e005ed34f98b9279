"""The `echojax` command: lists its subcommands, hands each the flags of its module's
command, and `echojax prepare` builds TFDS datasets without TensorFlow."""

import os
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from echojax import cli

REPO = Path(__file__).resolve().parents[1]
SUBCOMMANDS = ("prepare", "train", "evaluate", "export", "predict", "progress")


def test_help_lists_every_subcommand(capsys):
    assert cli.main(["--help"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("usage: echojax COMMAND")
    listed = [line.split()[0] for line in out.splitlines() if line.startswith("  ")]
    assert listed == list(SUBCOMMANDS)
    assert cli.main([]) == 2  # no command: the same listing, as an error
    assert "commands:" in capsys.readouterr().out


def test_unknown_command_is_an_error_naming_the_choices(capsys):
    assert cli.main(["trian"]) == 2
    err = capsys.readouterr().err
    assert "unknown command 'trian'" in err and "prepare, train, evaluate" in err


@pytest.mark.parametrize("name,flag", [("train", "--workdir"), ("evaluate", "--split"),
                                       ("export", "--checkpoint"), ("predict", "--model"),
                                       ("progress", "runs")])
def test_subcommand_help_is_its_module_commands_help(name, flag, capsys):
    module = __import__(f"echojax.{name}", fromlist=["main"])
    with pytest.raises(SystemExit) as direct:
        module.main(["--help"])
    want = capsys.readouterr().out
    with pytest.raises(SystemExit) as via:
        cli.main([name, "--help"])
    assert direct.value.code == via.value.code == 0
    got = capsys.readouterr().out
    assert got == want and flag in got


def test_subcommand_gets_the_flags_and_gives_back_the_status(monkeypatch):
    seen = []
    monkeypatch.setattr("echojax.predict.main", lambda argv: seen.append(argv) or 1)
    assert cli.main(["predict", "--model", "m", "a.avi", "--out", "o"]) == 1
    assert seen == [["--model", "m", "a.avi", "--out", "o"]]
    monkeypatch.setattr("echojax.progress.main", lambda argv: seen.append(argv))  # None: 0
    assert cli.main(["progress", "runs/a"]) == 0 and seen[-1] == ["runs/a"]


def test_console_script_is_declared():
    with open(REPO / "pyproject.toml", "rb") as f:
        scripts = tomllib.load(f)["project"]["scripts"]
    assert scripts == {"echojax": "echojax.cli:main"}
    module, func = scripts["echojax"].split(":")
    assert getattr(__import__(module, fromlist=[func]), func) is cli.main


def test_prepare_help_names_the_builders(capsys):
    with pytest.raises(SystemExit):
        cli.main(["prepare", "--help"])
    out = capsys.readouterr().out
    for text in ("--manual_dir", "--data_dir", "--overwrite", "camus/{256, 128, 64}",
                 "echo_folder/<spec>_<R>", "synthetic_echo/{camus_like_256"):
        assert text in out, text


_PROBE = """
import sys
from echojax import cli
status = cli.main(sys.argv[1:])
print("TENSORFLOW_IMPORTED", "tensorflow" in sys.modules)
sys.exit(status)
"""


def _prepare(tmp_path, *args):
    """`echojax prepare ARGS` in a fresh process where `import tensorflow` fails."""
    fake = tmp_path / "no_tf" / "tensorflow"
    fake.mkdir(parents=True, exist_ok=True)
    (fake / "__init__.py").write_text('raise ImportError("tensorflow is blocked in this test")\n')
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(tmp_path / "no_tf"), str(REPO)]))
    return subprocess.run([sys.executable, "-c", _PROBE, "prepare", *args], cwd=tmp_path,
                          env=env, capture_output=True, text=True, timeout=300)


def test_prepare_builds_registered_datasets_without_tensorflow(tmp_path):
    import tensorflow_datasets as tfds

    data = tmp_path / "data"
    camus = REPO / "tfds_builders" / "camus" / "dummy_data"
    proc = _prepare(tmp_path, "camus/64", "--manual_dir", str(camus), "--data_dir", str(data))
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "TENSORFLOW_IMPORTED False" in proc.stdout
    assert f"prepared camus/64 (train 8, validation 4, test 4 examples) in {data}" in proc.stdout
    assert "Generating train examples" in proc.stderr  # TFDS's progress bars
    assert len(tfds.data_source("camus/64", split="test", data_dir=str(data))) == 4
    # A user's folder (echo_folder/<spec name>_<R>) and an unknown name in one call: the
    # error is one line, the other dataset is built, the status says one failed.
    folder = REPO / "tfds_builders" / "echo_folder" / "dummy_data"
    proc = _prepare(tmp_path, "nonexistent/1", "echo_folder/phantoms_64", "--manual_dir",
                    str(folder), "--data_dir", str(data), "-q")
    assert proc.returncode == 1
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and errors[0].startswith("error: nonexistent/1: no such TFDS dataset")
    assert "prepared echo_folder/phantoms_64 (train 4 examples)" in proc.stdout
    assert "Generating" not in proc.stderr  # -q: no bars
    proc = _prepare(tmp_path, "camus/64", "--data_dir", str(data))
    assert proc.returncode == 0 and "camus/64: already prepared" in proc.stdout


def test_prepare_without_the_manual_download_says_what_is_missing(tmp_path):
    proc = _prepare(tmp_path, "camus/64", "--manual_dir", str(tmp_path / "absent"),
                    "--data_dir", str(tmp_path / "data"), "-q")
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    assert "error: camus/64:" in proc.stderr and str(tmp_path / "absent") in proc.stderr
