"""Writing result files so that a reader never sees a half-written one.

Every file echojax writes for a reader (``config.json``, evaluation CSVs and summaries,
``results.csv``, ``report.md``, figures) goes through :func:`write_atomic`: the bytes go
to a temporary file in the target's folder, are flushed and fsynced, and the temporary
file is renamed over the target (``os.replace``, atomic on POSIX). A process killed
mid-write leaves the previous file (or none), never a truncated one.

CSV goes through the standard ``csv`` module (quoting, one format for every table):
floats as their shortest round-trip ``repr``, NaN as an empty cell.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import math
import os
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from typing import Any


def _read_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


# Read once at import: os.umask can only be read by setting it, which must not happen
# while other threads (a progress.png drawing thread, writers) create files.
_UMASK = _read_umask()


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, *, suffix: str = "") -> Iterator[str]:
    """Yields a temporary path beside ``path``; renames it to ``path`` when the block ends
    without an exception (after fsyncing it), removes it otherwise.

    For writers that want a file name (e.g. ``matplotlib``'s ``savefig``); ``suffix``
    keeps an extension that such writers read the format from.
    """
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=folder, prefix="." + os.path.basename(path) + ".",
                               suffix=suffix + ".tmp")
    os.close(fd)
    try:
        yield tmp
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp's 0600 -> what open() would give
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def write_atomic(path: str | os.PathLike, data: str | bytes) -> None:
    """Writes ``data`` (text as UTF-8) to ``path`` atomically (see the module doc)."""
    raw = data.encode() if isinstance(data, str) else bytes(data)
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            f.write(raw)


def write_json(path: str | os.PathLike, value: Any) -> None:
    """Writes ``value`` as indented JSON with sorted keys (NaN/Inf become ``null``)."""
    write_atomic(path, json.dumps(json_safe(value), indent=2, sort_keys=True,
                                  allow_nan=False) + "\n")


def json_safe(value: Any) -> Any:
    """``value`` with non-finite floats replaced by None, recursively (JSON has no NaN)."""
    if isinstance(value, Mapping):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def format_cell(value: Any) -> str:
    """A CSV cell: floats as their shortest ``repr`` (exact round trip), NaN/Inf as an
    empty cell, everything else as ``str``."""
    if isinstance(value, float):
        return repr(value) if math.isfinite(value) else ""
    return str(value)


def csv_text(rows: Sequence[Mapping[str, Any]], columns: Sequence[str], *,
             where: str = "csv") -> str:
    """CSV text of ``rows`` (dicts holding at least ``columns``; other keys ignored)."""
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(columns), extrasaction="ignore",
                            lineterminator="\n")
    writer.writeheader()
    for i, row in enumerate(rows):
        missing = [c for c in columns if c not in row]
        if missing:
            raise ValueError(f"{where}: row {i} lacks columns {missing}")
        writer.writerow({c: format_cell(row[c]) for c in columns})
    return buf.getvalue()


def write_csv(path: str | os.PathLike, rows: Sequence[Mapping[str, Any]],
              columns: Sequence[str]) -> None:
    """Writes ``rows`` as CSV with a header of ``columns``, atomically."""
    write_atomic(path, csv_text(rows, columns, where=os.fspath(path)))


def read_csv(path: str | os.PathLike, required: Sequence[str] = ()) -> list[dict[str, str]]:
    """Rows of a CSV file as dicts of text; raises naming the file if a column of
    ``required`` is missing from its header."""
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        missing = [c for c in required if c not in (reader.fieldnames or ())]
        if missing:
            raise ValueError(f"{os.fspath(path)}: missing columns {missing}; expected "
                             f"{list(required)}")
        return [dict(row) for row in reader]


def parse_float(text: str, *, where: str) -> float:
    """A CSV cell back to a float: empty (or ``nan``) is NaN; anything else not a
    number raises naming ``where``."""
    if text.strip() == "" or text.strip().lower() == "nan":
        return math.nan
    try:
        return float(text)
    except ValueError:
        raise ValueError(f"{where}: expected a number, got {text!r}") from None


__all__ = ["atomic_path", "write_atomic", "write_json", "json_safe", "format_cell",
           "csv_text", "write_csv", "read_csv", "parse_float"]
