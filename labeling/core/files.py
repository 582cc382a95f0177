"""Writing output files whole or not at all: a temporary file beside the target, renamed over it;
never over a database."""

from __future__ import annotations

import hashlib
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from labeling.core.errors import InputError


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


DUCKDB_MAGIC = b"DUCK"  # bytes 8-11 of every DuckDB database file


def is_duckdb_file(path: str | Path) -> bool:
    """Whether `path` (followed through symlinks) is a DuckDB database file, by its header."""
    try:
        with Path(path).open("rb") as handle:
            return handle.read(12)[8:12] == DUCKDB_MAGIC
    except OSError:  # missing, a folder, unreadable
        return False


def refuse_database(path: str | Path) -> None:
    """InputError when writing `path` would replace a DuckDB database (the --db of the command or
    any other): the file itself under any spelling (relative, absolute, `./`), a symlink or hard
    link to it, or its write-ahead log. Every output file goes through this check (`atomic_path`)."""
    path = Path(path)
    resolved = path.resolve()
    database = resolved.with_name(resolved.name[: -len(".wal")]) if resolved.name.endswith(".wal") else resolved
    if is_duckdb_file(database):
        via = "" if str(path) == str(database) else f" ({database})"
        what = "the write-ahead log of a DuckDB database" if database != resolved else "a DuckDB database"
        raise InputError(f"{path}: is {what}{via}; an output never replaces a database, choose another output path")


@contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """A temporary path beside `path` to write to; on success it replaces `path` (with the usual
    permissions, not mkstemp's private 0600), on failure it is removed and `path` is untouched.
    A `path` that is (or leads to) a database is refused before anything is written."""
    path = Path(path)
    if not path.parent.is_dir():
        raise InputError(f"{path}: folder {path.parent} does not exist")
    refuse_database(path)
    handle, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=path.suffix, dir=path.parent)
    os.close(handle)
    try:
        yield Path(tmp)
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_text_atomically(path: str | Path, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def file_sha256(path: str | Path) -> str:
    """sha256 of a file's bytes, read in blocks (inputs can be large)."""
    digest = hashlib.sha256()
    with Path(path).open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
