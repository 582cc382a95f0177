"""The status file beside a database, `<db>.status.json`: what the process writing the database
is doing, for readers that DuckDB's lock keeps out (one writing process, no readers alongside).

The writer's run methods (labeling/store/runs.py: a run created, its status set, its work added
or advanced) call `note_run`, so every source that stores a run (LLM, rules, imports, derived
runs, predictions) keeps it current without doing anything: at each change of status at once,
as work advances at most every WRITE_EVERY_S seconds. It is written whole (a temporary file
renamed over it) and holds counts only: run id, name and kind, the writer's pid and host, times,
reports done/failed/pending, status. No report text, no parameters, no keys. `clala runs show`,
`runs list` and `stats` read it when the database is in use."""

from __future__ import annotations

import json
import os
import socket
import time
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

from labeling.core.errors import ClalaError, StoreError
from labeling.core.files import write_text_atomically

if TYPE_CHECKING:
    from labeling.store.connection import Connection

STATUS_FORMAT = "clala-run-status/1"
WRITE_EVERY_S = 2.0  # progress writes while work advances; status changes are written at once

# Per database file of this process: (run id, when this process began on it, last write).
_WRITERS: dict[str, tuple[int, str, float]] = {}


def status_path(db: str | Path) -> Path:
    """`<db>.status.json`, beside the database."""
    db = Path(db)
    return db.with_name(db.name + ".status.json")


@dataclass(frozen=True)
class RunStatusRecord:
    """One status file: the run its writer works on and how far it got."""

    format: str
    run_id: int
    name: str
    kind: str
    status: str
    pid: int
    host: str
    created: str  # the run's creation (ISO 8601)
    started: str  # when this writer began on it (a resumed run: the resume)
    updated: str
    reports: int
    done: int
    failed: int
    pending: int

    def age_seconds(self, now: float | None = None) -> float:
        return max(0.0, (now or time.time()) - datetime.fromisoformat(self.updated).timestamp())

    def writer_alive(self) -> bool | None:
        """Whether the writing process still runs (None: written on another host, cannot tell)."""
        if self.host != socket.gethostname():
            return None
        try:
            os.kill(self.pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:  # another user's live process
            return True
        return True


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds")


def note_run(store: Connection, run_id: int, *, force: bool = False) -> None:
    """Write the status file of run `run_id` for `store`'s database: now when `force` (the run
    created, resumed or finished; its work added), else when WRITE_EVERY_S have passed since the
    last write. Advisory: a file that cannot be written never stops the run."""
    key = str(store.path.resolve())
    held = _WRITERS.get(key)
    monotonic = time.monotonic()
    if not force and held is not None and held[0] == run_id and monotonic - held[2] < WRITE_EVERY_S:
        return
    started = held[1] if held is not None and held[0] == run_id else _now()
    name, kind, status, created = store.con.execute(
        "SELECT name, kind, status, created_at FROM runs WHERE run_id = ?", [run_id]
    ).fetchall()[0]
    work = dict(
        store.con.execute("SELECT state, count(*) FROM work WHERE run_id = ? GROUP BY state", [run_id]).fetchall()
    )
    record = RunStatusRecord(
        format=STATUS_FORMAT,
        run_id=run_id,
        name=name,
        kind=kind,
        status=status,
        pid=os.getpid(),
        host=socket.gethostname(),
        created=created.astimezone(UTC).isoformat(timespec="seconds") if created else started,
        started=started,
        updated=_now(),
        reports=sum(work.values()),
        done=work.get("done", 0),
        failed=work.get("failed", 0),
        pending=work.get("pending", 0),
    )
    try:
        write_text_atomically(status_path(store.path), json.dumps(asdict(record), indent=1) + "\n")
    except (OSError, ClalaError):
        return  # the database was written; a reader will say the status file is missing or old
    _WRITERS[key] = (run_id, started, monotonic)


def read_status(db: str | Path) -> RunStatusRecord | None:
    """The status file of database `db`, None when there is none; StoreError naming the file when
    it is not one clala wrote."""
    path = status_path(db)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError) as exc:
        raise StoreError(f"{path}: cannot read the status file: {exc}") from None
    try:
        data = json.loads(text)
        if not isinstance(data, dict) or data.get("format") != STATUS_FORMAT:
            raise ValueError(f"not a {STATUS_FORMAT} file")
        record = RunStatusRecord(**data)
        datetime.fromisoformat(record.updated)
    except (ValueError, TypeError) as exc:
        raise StoreError(f"{path}: not a clala status file ({' '.join(str(exc).split())[:120]})") from None
    return record


def provenance(record: RunStatusRecord, db: str | Path, lock_pid: int | None) -> str:
    """The one line that says where shown figures come from and how fresh they are."""
    path, age = status_path(db), f"updated {record.age_seconds():.0f} s ago"
    other = (
        f"; the database is in use by pid {lock_pid}, which wrote no status"
        if lock_pid is not None and lock_pid != record.pid
        else ""
    )
    alive = record.writer_alive()
    if alive is None:
        return f"from the status file {path}, written by pid {record.pid} on host {record.host}, {age}{other}"
    if not alive and record.status == "running":
        return (
            f"from the status file {path}, stale: its writer pid {record.pid} has ended ({age}); the run shows as "
            f"interrupted once the database is opened for writing{other}"
        )
    if not alive:
        return f"from the status file {path}, written by pid {record.pid}, which has ended ({age}){other}"
    if other:
        return f"from the status file {path}, written by pid {record.pid}, {age}{other}"
    return f"from the status file {path}, database in use by pid {record.pid}, {age}"
