"""The connection to a clala database: opening it (migrating an older one), transactions, and
the SQL helpers the query classes share. Writes go in batches through Arrow registration inside
one transaction per batch, so a batch is stored whole or not at all. Queries take parameters;
nothing from the user is formatted into SQL."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Any, Self

import duckdb
import pyarrow as pa

from labeling.core.errors import StoreError
from labeling.core.formatting import finite
from labeling.store.migrations import LATEST_VERSION, MIGRATIONS

DEFAULT_DB = "clala.duckdb"


def json_text(value: Any) -> str:
    """JSON text for a JSON column: NaN and infinities (undefined metrics) become null, which
    strict JSON readers accept; numpy scalars become numbers."""
    return json.dumps(finite(value), default=str)


def _open_error(path: Path, exc: duckdb.Error) -> StoreError:
    message = str(exc).splitlines()[0]
    if "Could not set lock" in message:
        holder = re.search(r"PID (\d+)", message)
        who = f" (PID {holder.group(1)})" if holder else ""
        return StoreError(
            f"{path}: database is in use by another process{who}; wait for it to finish or use another --db"
        )
    if "not a valid DuckDB database" in message:
        return StoreError(f"{path}: not a DuckDB database file; choose another --db")
    return StoreError(f"{path}: cannot open database: {message}")


class Connection:
    """An open database file; the query classes (reports, runs, labels, experiments) build on it."""

    def __init__(self, path: str | Path = DEFAULT_DB, read_only: bool = False, *, create: bool = True):
        """Open (and migrate) the clala database at `path`. Only a writing open with `create` (the
        default, used by `clala ingest`) makes a new database; read-only opens and
        `open_existing` (every other command) refuse a missing file or an empty DuckDB file."""
        self.path = Path(path)
        self.read_only = read_only
        creates = create and not read_only
        if not creates and not self.path.exists():
            raise StoreError(f"{self.path}: no database here yet (run `clala ingest` first, or pass --db)")
        if not read_only and not self.path.parent.exists():
            raise StoreError(f"{self.path}: folder {self.path.parent} does not exist")
        self._depth = 0
        self.con = self._connect(read_only)
        try:
            version = self._clala_version()
            if not creates and version == 0:
                raise StoreError(f"{self.path}: an empty DuckDB file, no clala database yet (run `clala ingest` first)")
            if read_only and version < LATEST_VERSION:
                # An older clala database (never another program's file, never an empty one):
                # migrate it once through a writing connection, then read.
                self.con.close()
                self.con = self._connect(False)
                self._migrate()
                self.con.close()
                self.con = self._connect(True)
            self._migrate()
            if not read_only:
                self._opened_for_writing()
        except BaseException:
            self.con.close()
            raise

    def _connect(self, read_only: bool) -> duckdb.DuckDBPyConnection:
        try:
            return duckdb.connect(str(self.path), read_only=read_only)
        except duckdb.Error as exc:
            raise _open_error(self.path, exc) from None

    def _opened_for_writing(self) -> None:
        """What a query class does once the database is open for writing (runs: mark runs whose
        writer is gone as interrupted)."""

    def close(self) -> None:
        self.con.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _clala_version(self) -> int:
        """The schema version of a clala database, 0 for a DuckDB file with no tables yet. A file
        that holds tables but not clala's `schema_version` is another program's: refused before
        anything is written to it."""
        tables = [
            row[0]
            for row in self.con.execute(
                "SELECT table_name FROM information_schema.tables WHERE table_catalog = current_database() "
                "ORDER BY table_name"
            ).fetchall()
        ]
        if not tables:
            return 0
        if "schema_version" in tables:
            columns = {
                row[0]
                for row in self.con.execute(
                    "SELECT column_name FROM information_schema.columns WHERE table_name = 'schema_version' "
                    "AND table_catalog = current_database()"
                ).fetchall()
            }
            if {"version", "description"} <= columns:
                first = self.con.execute("SELECT description FROM schema_version WHERE version = 1").fetchall()
                if first and first[0][0] == MIGRATIONS[0][1]:
                    return self.schema_version()
        shown = ", ".join(tables[:5]) + (f" and {len(tables) - 5} more" if len(tables) > 5 else "")
        raise StoreError(
            f"{self.path}: a DuckDB database that is not clala's (tables {shown}; no clala schema_version); "
            "clala leaves it unchanged, choose another --db"
        )

    def schema_version(self) -> int:
        exists = self.con.execute(
            "SELECT count(*) FROM information_schema.tables WHERE table_name = 'schema_version'"
        ).fetchall()[0][0]
        if not exists:
            return 0
        return self.con.execute("SELECT coalesce(max(version), 0) FROM schema_version").fetchall()[0][0]

    def _migrate(self) -> None:
        current = self.schema_version()
        if current > LATEST_VERSION:
            raise StoreError(
                f"{self.path}: written by a newer clala (schema {current} > {LATEST_VERSION}); upgrade clala"
            )
        if current == LATEST_VERSION:
            return
        with self.transaction():
            self.con.execute("""CREATE TABLE IF NOT EXISTS schema_version (
                version INTEGER PRIMARY KEY, description VARCHAR, applied_at TIMESTAMP)""")
            for version, description, statements in MIGRATIONS:
                if version <= current:
                    continue
                for statement in statements:
                    self.con.execute(statement)
                self.con.execute("INSERT INTO schema_version VALUES (?, ?, ?)", [version, description, datetime.now()])

    @contextmanager
    def transaction(self) -> Iterator[None]:
        """One atomic unit of writes; nested uses join the outer transaction."""
        if self._depth:
            self._depth += 1
            try:
                yield
            finally:
                self._depth -= 1
            return
        self.con.execute("BEGIN TRANSACTION")
        self._depth = 1
        try:
            yield
        except BaseException:
            self._depth = 0
            self.con.execute("ROLLBACK")
            raise
        self._depth = 0
        self.con.execute("COMMIT")

    def _insert_arrow(self, table: str, data: pa.Table) -> None:
        # Registration is by Python object; the only text spliced into SQL is our own table name.
        name = f"_batch_{table}"
        self.con.register(name, data)
        try:
            columns = ", ".join(data.column_names)
            self.con.execute(f"INSERT INTO {table} ({columns}) SELECT {columns} FROM {name}")
        finally:
            self.con.unregister(name)

    def _arrow(self, sql: str, params: Sequence[Any] = ()) -> pa.Table:
        """A query's result as an Arrow table (fully fetched, so the connection is free again)."""
        return self.con.sql(sql, params=list(params)).to_arrow_table()

    def _dicts(self, sql: str, params: Sequence[Any] = ()) -> list[dict[str, Any]]:
        cursor = self.con.execute(sql, list(params))
        names = [d[0] for d in cursor.description]
        return [dict(zip(names, row)) for row in cursor.fetchall()]

    @classmethod
    def open_existing(cls, path: str | Path) -> Self:
        """A writing connection to a clala database that must exist already: every command that
        adds to what earlier commands stored (all but `clala ingest`) fails as a read-only open
        would, instead of creating an empty database."""
        return cls(path, create=False)

    def table_counts(self) -> dict[str, int]:
        tables = [
            "reports",
            "sentences",
            "runs",
            "labels",
            "work",
            "failures",
            "llm_cache",
            "experiments",
            "ingests",
            "rejected_labels",
        ]
        return {t: self.con.execute(f"SELECT count(*) FROM {t}").fetchall()[0][0] for t in tables}
