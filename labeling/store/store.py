"""The DuckDB store: one database file holds reports, sentences, runs and their labels, the
resumable-work state, failures, the LLM cache and experiments.

Writes go in batches through Arrow registration inside one transaction per batch, so a batch is
stored whole or not at all. Queries take parameters; nothing from the user is formatted into SQL.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from labeling.core.errors import StoreError
from labeling.core.formatting import finite
from labeling.store.migrations import LATEST_VERSION, MIGRATIONS
from schemas.labels import CODE_PRECEDENCE, STATUS_CODE, UNMENTIONED
from schemas.runs import RunInfo, RunSpec, RunStatus

DEFAULT_DB = "clala.duckdb"

LABEL_COLUMNS: dict[str, pa.DataType] = {
    "report_key": pa.int64(),
    "region": pa.string(),
    "finding": pa.string(),
    "status": pa.string(),
    "severity": pa.string(),
    "temporal": pa.string(),
    "evidence_start": pa.int32(),
    "evidence_end": pa.int32(),
    "evidence_text": pa.string(),
    "confidence": pa.float32(),
}
REQUIRED_LABEL_COLUMNS = ("report_key", "finding", "status")


def _json(value: Any) -> str:
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


@dataclass
class LabelMatrix:
    """A run's labels as codes[report, region, finding] (PRESENT, ABSENT, UNCERTAIN, UNMENTIONED),
    or codes[report, finding] at image level (regions empty)."""

    report_keys: np.ndarray
    regions: tuple[str, ...]
    findings: tuple[str, ...]
    codes: np.ndarray


def collapse_regions(codes: np.ndarray) -> np.ndarray:
    """Image-level codes from region-level ones ([n, R, F] -> [n, F]): any present -> present;
    else any uncertain -> uncertain; else any absent -> absent; else unmentioned."""
    precedence = np.asarray(CODE_PRECEDENCE, dtype=np.int8)
    rank_of_code = np.zeros(256, dtype=np.int8)
    rank_of_code[precedence.astype(np.uint8)] = np.arange(len(precedence), dtype=np.int8)
    ranks = rank_of_code[codes.astype(np.uint8)]
    if codes.shape[1] == 0:
        return np.full((codes.shape[0], codes.shape[2]), UNMENTIONED, dtype=np.int8)
    return precedence[ranks.min(axis=1)]


class Store:
    """A clala database. Open it with `Store(path)`; read-only opens allow concurrent readers."""

    def __init__(self, path: str | Path = DEFAULT_DB, read_only: bool = False):
        self.path = Path(path)
        self.read_only = read_only
        if read_only and not self.path.exists():
            raise StoreError(f"{self.path}: no database here yet (run `clala ingest` first, or pass --db)")
        if not read_only and not self.path.parent.exists():
            raise StoreError(f"{self.path}: folder {self.path.parent} does not exist")
        self._depth = 0
        self.con = self._connect(read_only)
        try:
            if read_only and self.schema_version() < LATEST_VERSION:
                # An older database: migrate it once through a writing connection, then read.
                self.con.close()
                self.con = self._connect(False)
                self._migrate()
                self.con.close()
                self.con = self._connect(True)
            self._migrate()
        except BaseException:
            self.con.close()
            raise

    def _connect(self, read_only: bool) -> duckdb.DuckDBPyConnection:
        try:
            return duckdb.connect(str(self.path), read_only=read_only)
        except duckdb.Error as exc:
            raise _open_error(self.path, exc) from None

    def close(self) -> None:
        self.con.close()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # --- schema ------------------------------------------------------------------------------
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

    # --- transactions ------------------------------------------------------------------------
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

    # --- reports -----------------------------------------------------------------------------
    def latest_versions(self, dataset: str, report_ids: Sequence[str]) -> dict[str, tuple[int, str]]:
        """report_id -> (latest version, text sha256) for the ids already stored."""
        if not report_ids:
            return {}
        ids = pa.table({"report_id": pa.array(list(report_ids), pa.string())})
        self.con.register("_ids", ids)
        try:
            rows = self.con.execute(
                """SELECT r.report_id, r.version, r.text_sha256 FROM current_reports r
                   JOIN _ids USING (report_id) WHERE r.dataset = ?""",
                [dataset],
            ).fetchall()
        finally:
            self.con.unregister("_ids")
        return {report_id: (version, sha) for report_id, version, sha in rows}

    def next_report_key(self) -> int:
        return self.con.execute("SELECT coalesce(max(report_key), 0) + 1 FROM reports").fetchall()[0][0]

    def add_reports(self, reports: pa.Table, sentences: pa.Table) -> None:
        """Store reports with their sentences, atomically."""
        with self.transaction():
            self._insert_arrow("reports", reports)
            if sentences.num_rows:
                self._insert_arrow("sentences", sentences)

    def start_ingest(self, source: str, fmt: str, dataset: str, read: int) -> int:
        return self.con.execute(
            """INSERT INTO ingests (source, format, dataset, read, added, changed, unchanged, skipped, started_at)
               VALUES (?, ?, ?, ?, 0, 0, 0, 0, ?) RETURNING ingest_id""",
            [source, fmt, dataset, read, datetime.now()],
        ).fetchall()[0][0]

    def finish_ingest(self, ingest_id: int, added: int, changed: int, unchanged: int, skipped: int) -> None:
        self.con.execute(
            """UPDATE ingests SET added = ?, changed = ?, unchanged = ?, skipped = ?, finished_at = ?
               WHERE ingest_id = ?""",
            [added, changed, unchanged, skipped, datetime.now(), ingest_id],
        )

    def find_reports(self, report_id: str, dataset: str | None = None) -> list[dict[str, Any]]:
        """All stored versions of a report id (in any dataset unless one is given)."""
        return self._dicts(
            """SELECT * FROM reports WHERE report_id = ? AND (? IS NULL OR dataset = ?)
               ORDER BY dataset, version""",
            [report_id, dataset, dataset],
        )

    def list_reports(
        self, dataset: str | None = None, limit: int = 20, offset: int = 0, all_versions: bool = False
    ) -> list[dict[str, Any]]:
        table = "reports" if all_versions else "current_reports"
        return self._dicts(
            f"""SELECT r.report_key, r.dataset, r.report_id, r.version, r.patient_id, r.study_id,
                       length(r.text) AS chars,
                       (SELECT count(*) FROM sentences s WHERE s.report_key = r.report_key) AS sentences,
                       r.ingested_at
                FROM {table} r WHERE (? IS NULL OR r.dataset = ?)
                ORDER BY r.dataset, r.report_key LIMIT ? OFFSET ?""",
            [dataset, dataset, limit, offset],
        )

    def report_keys(
        self, values: Sequence[str], by: str = "report_id", dataset: str | None = None
    ) -> dict[str, list[tuple[str, int]]]:
        """value -> [(dataset, report_key)] of the current report versions whose `by` column
        (report_id or study_id) has that value; values that match nothing are absent."""
        if by not in ("report_id", "study_id"):
            raise ValueError(f"cannot look reports up by {by!r}")
        if not values:
            return {}
        self.con.register("_values", pa.table({"value": pa.array(sorted(set(values)), pa.string())}))
        try:
            rows = self.con.execute(
                f"""SELECT v.value, r.dataset, r.report_key FROM current_reports r
                    JOIN _values v ON v.value = r.{by}
                    WHERE (? IS NULL OR r.dataset = ?) ORDER BY r.dataset""",
                [dataset, dataset],
            ).fetchall()
        finally:
            self.con.unregister("_values")
        found: dict[str, list[tuple[str, int]]] = {}
        for value, ds, key in rows:
            found.setdefault(value, []).append((ds, key))
        return found

    def report_texts(self, report_keys: Sequence[int]) -> dict[int, str]:
        if not report_keys:
            return {}
        rows = self.con.execute(
            "SELECT report_key, text FROM reports WHERE report_key IN (SELECT unnest(?))", [list(report_keys)]
        ).fetchall()
        return dict(rows)

    def sentences(self, report_key: int) -> list[dict[str, Any]]:
        return self._dicts(
            """SELECT sentence_index, section, start_char, end_char, text, norm_sha256
               FROM sentences WHERE report_key = ? ORDER BY sentence_index""",
            [report_key],
        )

    # --- runs --------------------------------------------------------------------------------
    def create_run(self, spec: RunSpec) -> int:
        if self.con.execute("SELECT count(*) FROM runs WHERE name = ?", [spec.name]).fetchall()[0][0]:
            raise StoreError(f"{self.path}: a run named {spec.name!r} already exists; choose another --name")
        return self.con.execute(
            """INSERT INTO runs (name, kind, status, backend, model, prompt_name, prompt_sha256,
                                 vocabulary_version, decoding, params, source, created_at)
               VALUES (?, ?, 'running', ?, ?, ?, ?, ?, ?, ?, ?, ?) RETURNING run_id""",
            [
                spec.name,
                spec.kind.value,
                spec.backend,
                spec.model,
                spec.prompt_name,
                spec.prompt_sha256,
                spec.vocabulary_version,
                json.dumps(spec.decoding),
                json.dumps(spec.params),
                spec.source,
                datetime.now(),
            ],
        ).fetchall()[0][0]

    def run(self, ref: str | int) -> RunInfo:
        """A run by name or id."""
        rows = self._dicts("SELECT * FROM runs WHERE name = ? OR CAST(run_id AS VARCHAR) = ?", [str(ref), str(ref)])
        if not rows:
            raise StoreError(f"{self.path}: no run named {ref!r} (see `clala stats` for the runs)")
        row = rows[0]
        row["decoding"] = json.loads(row["decoding"] or "{}")
        row["params"] = json.loads(row["params"] or "{}")
        return RunInfo.model_validate(row)

    def run_exists(self, name: str) -> bool:
        return bool(self.con.execute("SELECT count(*) FROM runs WHERE name = ?", [name]).fetchall()[0][0])

    def runs(self) -> list[RunInfo]:
        names = [r[0] for r in self.con.execute("SELECT name FROM runs ORDER BY run_id").fetchall()]
        return [self.run(name) for name in names]

    def set_run_status(self, run_id: int, status: RunStatus) -> None:
        finished = None if status is RunStatus.running else datetime.now()
        self.con.execute(
            "UPDATE runs SET status = ?, finished_at = ? WHERE run_id = ?", [status.value, finished, run_id]
        )

    def add_run_tokens(self, run_id: int, prompt_tokens: int, completion_tokens: int) -> None:
        self.con.execute(
            """UPDATE runs SET prompt_tokens = prompt_tokens + ?, completion_tokens = completion_tokens + ?
                            WHERE run_id = ?""",
            [prompt_tokens, completion_tokens, run_id],
        )

    # --- resumable work: one row per report of a run --------------------------------------------
    def add_work(self, run_id: int, report_keys: Sequence[int]) -> None:
        keys = pa.array(list(report_keys), pa.int64())
        self._insert_arrow(
            "work",
            pa.table(
                {
                    "run_id": pa.array([run_id] * len(keys), pa.int32()),
                    "unit_key": pa.array([f"r{k}" for k in keys.to_pylist()], pa.string()),
                    "report_key": keys,
                    "state": pa.array(["pending"] * len(keys), pa.string()),
                }
            ),
        )

    def work(self, run_id: int, states: Sequence[str] = ("pending",)) -> list[int]:
        """Report keys of a run's work in the given states, in report order."""
        rows = self.con.execute(
            "SELECT report_key FROM work WHERE run_id = ? AND list_contains(?, state) ORDER BY report_key",
            [run_id, list(states)],
        ).fetchall()
        return [r[0] for r in rows]

    def set_work(self, run_id: int, report_keys: Sequence[int], state: str, error: str | None = None) -> None:
        if not report_keys:
            return
        self.con.execute(
            """UPDATE work SET state = ?, attempts = attempts + 1, last_error = ?, updated_at = ?
               WHERE run_id = ? AND report_key IN (SELECT unnest(?))""",
            [state, error, datetime.now(), run_id, list(report_keys)],
        )

    def add_done_work(self, run_id: int, report_keys: Sequence[int]) -> None:
        """Record reports a run has covered in full (sources that finish each report at once)."""
        keys = pa.array(sorted(set(report_keys)), pa.int64())
        now = datetime.now()
        self._insert_arrow(
            "work",
            pa.table(
                {
                    "run_id": pa.array([run_id] * len(keys), pa.int32()),
                    "unit_key": pa.array([f"r{k}" for k in keys.to_pylist()], pa.string()),
                    "report_key": keys,
                    "state": pa.array(["done"] * len(keys), pa.string()),
                    "attempts": pa.array([1] * len(keys), pa.int32()),
                    "updated_at": pa.array([now] * len(keys), pa.timestamp("us")),
                }
            ),
        )

    def covered_reports(self, run: str | int) -> np.ndarray:
        """Report keys a run has finished (labeled, possibly with no label at all), sorted."""
        run_id = self.run(run).run_id
        rows = self.con.execute(
            "SELECT report_key FROM work WHERE run_id = ? AND state = 'done' ORDER BY report_key", [run_id]
        ).fetchall()
        return np.asarray([r[0] for r in rows], dtype=np.int64)

    def work_counts(self, run_id: int) -> dict[str, int]:
        rows = self.con.execute("SELECT state, count(*) FROM work WHERE run_id = ? GROUP BY state", [run_id]).fetchall()
        return {state: n for state, n in rows}

    # --- failures and rejected labels ---------------------------------------------------------
    def add_failures(self, run_id: int, failures: Sequence[Mapping[str, Any]]) -> None:
        """Units that still failed validation after re-asking: unit_key, report_key, raw_output, error."""
        if failures:
            self._insert_arrow(
                "failures",
                pa.table(
                    {
                        "run_id": pa.array([run_id] * len(failures), pa.int32()),
                        "unit_key": [f["unit_key"] for f in failures],
                        "report_key": pa.array([f.get("report_key") for f in failures], pa.int64()),
                        "raw_output": pa.array([f.get("raw_output") for f in failures], pa.string()),
                        "error": [f["error"] for f in failures],
                    }
                ),
            )

    def add_rejections(self, run_id: int, rejections: Sequence[Mapping[str, Any]]) -> None:
        """Labels an answer gave that were not stored (ungrounded, region not allowed), with why."""
        if rejections:
            self._insert_arrow(
                "rejected_labels",
                pa.table(
                    {
                        "run_id": pa.array([run_id] * len(rejections), pa.int32()),
                        "unit_key": [r["unit_key"] for r in rejections],
                        "report_key": pa.array([r["report_key"] for r in rejections], pa.int64()),
                        "finding": pa.array([r.get("finding") for r in rejections], pa.string()),
                        "regions": pa.array([list(r.get("regions") or []) for r in rejections], pa.list_(pa.string())),
                        "status": pa.array([r.get("status") for r in rejections], pa.string()),
                        "evidence": pa.array([r.get("evidence") for r in rejections], pa.string()),
                        "reason": [r["reason"] for r in rejections],
                    }
                ),
            )

    def failures(self, run: str | int) -> list[dict[str, Any]]:
        run_id = self.run(run).run_id
        return self._dicts(
            """SELECT f.unit_key, r.dataset, r.report_id, f.error, f.raw_output, f.created_at
               FROM failures f LEFT JOIN reports r USING (report_key) WHERE f.run_id = ?
               ORDER BY f.created_at""",
            [run_id],
        )

    def rejection_counts(self, run_id: int) -> dict[str, int]:
        rows = self.con.execute(
            """SELECT split_part(reason, ':', 1), count(*) FROM rejected_labels
                                   WHERE run_id = ? GROUP BY ALL ORDER BY 2 DESC""",
            [run_id],
        ).fetchall()
        return {reason: n for reason, n in rows}

    # --- LLM cache ---------------------------------------------------------------------------------
    def cache_get(self, keys: Sequence[str], run_id: int | None = None) -> dict[str, dict[str, Any]]:
        """Cached answers by key; with `run_id`, only those that run made (a --no-cache run resuming)."""
        if not keys:
            return {}
        rows = self._dicts(
            """SELECT cache_key, response, prompt_tokens, completion_tokens FROM llm_cache
               WHERE cache_key IN (SELECT unnest(?)) AND (? IS NULL OR run_id = ?)""",
            [list(keys), run_id, run_id],
        )
        return {r["cache_key"]: {**r, "response": json.loads(r["response"])} for r in rows}

    def cache_put(self, entries: Sequence[Mapping[str, Any]], run_id: int, replace: bool = False) -> None:
        """Store validated answers: cache_key, model, response (dict), prompt/completion tokens.
        A key already present keeps its first answer, unless `replace` (a --no-cache run)."""
        if not entries:
            return
        batch = pa.table(
            {
                "cache_key": [e["cache_key"] for e in entries],
                "model": [e["model"] for e in entries],
                "response": [json.dumps(e["response"]) for e in entries],
                "prompt_tokens": pa.array([e.get("prompt_tokens") for e in entries], pa.int32()),
                "completion_tokens": pa.array([e.get("completion_tokens") for e in entries], pa.int32()),
                "run_id": pa.array([run_id] * len(entries), pa.int32()),
            }
        )
        self.con.register("_cache", batch)
        try:
            verb = "INSERT OR REPLACE" if replace else "INSERT OR IGNORE"
            self.con.execute(f"""{verb} INTO llm_cache (cache_key, model, response, prompt_tokens,
                                                                completion_tokens, run_id)
                                SELECT cache_key, model, response, prompt_tokens, completion_tokens, run_id
                                FROM _cache""")
        finally:
            self.con.unregister("_cache")

    def mean_completion_tokens(self, model: str) -> float | None:
        value = self.con.execute("SELECT avg(completion_tokens) FROM llm_cache WHERE model = ?", [model]).fetchall()[0][
            0
        ]
        return float(value) if value is not None else None

    # --- labels ------------------------------------------------------------------------------
    def write_labels(self, run_id: int, labels: pa.Table | Mapping[str, Sequence[Any]]) -> int:
        """Store a batch of labels for a run, atomically; returns the rows stored.

        Rows naming the same (report, region, finding) cell are merged by precedence
        (present > uncertain > absent). A cell the run already holds, an unknown report or an
        invalid status rejects the whole batch.
        """
        table = pa.table(dict(labels)) if isinstance(labels, Mapping) else labels
        missing = [c for c in REQUIRED_LABEL_COLUMNS if c not in table.column_names]
        if missing:
            raise StoreError(f"labels batch lacks column(s) {missing}")
        unknown = [c for c in table.column_names if c not in LABEL_COLUMNS]
        if unknown:
            raise StoreError(f"labels batch has unknown column(s) {unknown}")
        columns = {}
        for name, dtype in LABEL_COLUMNS.items():
            columns[name] = table[name].cast(dtype) if name in table.column_names else pa.nulls(table.num_rows, dtype)
        batch = pa.table(columns)
        known = pc.is_in(batch["status"], pa.array(list(STATUS_CODE)))  # pyright: ignore[reportAttributeAccessIssue]  # pyarrow.compute's functions are generated at import
        bad_status = pc.invert(pc.fill_null(known, False))  # pyright: ignore[reportAttributeAccessIssue]  # pyarrow.compute's functions are generated at import
        if pc.any(bad_status).as_py():  # pyright: ignore[reportAttributeAccessIssue]  # pyarrow.compute's functions are generated at import
            value = pc.filter(batch["status"], bad_status)[0].as_py()  # pyright: ignore[reportAttributeAccessIssue]  # pyarrow.compute's functions are generated at import
            raise StoreError(f"labels batch: status {value!r} is not one of {list(STATUS_CODE)}")
        empty = pc.or_(pc.is_null(batch["finding"]), pc.is_null(batch["report_key"]))  # pyright: ignore[reportAttributeAccessIssue]  # pyarrow.compute's functions are generated at import
        if pc.any(empty).as_py():  # pyright: ignore[reportAttributeAccessIssue]  # pyarrow.compute's functions are generated at import
            raise StoreError("labels batch: report_key and finding must not be empty")

        self.con.register("_labels", batch)
        try:
            with self.transaction():
                orphan = self.con.execute(
                    """SELECT b.report_key FROM _labels b ANTI JOIN reports r ON r.report_key = b.report_key
                       LIMIT 1"""
                ).fetchall()
                if orphan:
                    raise StoreError(f"labels batch: report_key {orphan[0][0]} is not in the database")
                clash = self.con.execute(
                    """SELECT b.report_key, b.region, b.finding FROM _labels b
                       SEMI JOIN (SELECT * FROM labels WHERE run_id = ?) l
                         ON l.report_key = b.report_key AND l.finding = b.finding
                        AND l.region IS NOT DISTINCT FROM b.region
                       LIMIT 1""",
                    [run_id],
                ).fetchall()
                if clash:
                    raise StoreError(
                        f"run {run_id} already has a label for report_key {clash[0][0]}, "
                        f"region {clash[0][1]!r}, finding {clash[0][2]!r}"
                    )
                stored = self.con.execute(
                    """INSERT INTO labels
                       SELECT ?, report_key, region, finding, status, severity, temporal,
                              evidence_start, evidence_end, evidence_text, confidence
                       FROM _labels
                       QUALIFY row_number() OVER (
                           PARTITION BY report_key, region, finding
                           ORDER BY CASE status WHEN 'present' THEN 0 WHEN 'uncertain' THEN 1 ELSE 2 END) = 1""",
                    [run_id],
                ).fetchall()[0][0]
        finally:
            self.con.unregister("_labels")
        return stored

    def labels(self, run: str | int) -> pa.Table:
        """A run's labels with the report identity, as Arrow."""
        run_id = self.run(run).run_id
        return self._arrow(
            """SELECT r.dataset, r.report_id, r.version, l.report_key, l.region, l.finding, l.status,
                      l.severity, l.temporal, l.evidence_start, l.evidence_end, l.evidence_text, l.confidence
               FROM labels l JOIN reports r USING (report_key)
               WHERE l.run_id = ? ORDER BY l.report_key, l.region, l.finding""",
            [run_id],
        )

    def _coded_labels(self, run_id: int, regions: Sequence[str], findings: Sequence[str]) -> pa.Table:
        names = pa.table(
            {"region": pa.array(list(regions), pa.string()), "region_index": pa.array(range(len(regions)), pa.int32())}
        )
        finds = pa.table(
            {
                "finding": pa.array(list(findings), pa.string()),
                "finding_index": pa.array(range(len(findings)), pa.int32()),
            }
        )
        self.con.register("_regions", names)
        self.con.register("_findings", finds)
        try:
            return self._arrow(
                """SELECT l.report_key, coalesce(g.region_index, -1) AS region_index, f.finding_index,
                          CASE l.status WHEN 'present' THEN 1 WHEN 'absent' THEN 0 ELSE -1 END AS code
                   FROM labels l JOIN _findings f USING (finding)
                   LEFT JOIN _regions g ON g.region = l.region
                   WHERE l.run_id = ? AND (l.region IS NULL OR g.region_index IS NOT NULL)""",
                [run_id],
            )
        finally:
            self.con.unregister("_regions")
            self.con.unregister("_findings")

    @staticmethod
    def _report_rows(report_keys: Sequence[int] | None, coded: pa.Table) -> tuple[np.ndarray, np.ndarray]:
        """The matrix's report keys, and each coded label's row in it (-1: not asked for)."""
        labelled = coded["report_key"].to_numpy()
        keys = np.asarray(report_keys, dtype=np.int64) if report_keys is not None else np.unique(labelled)
        if len(keys) == 0:
            return keys, np.full(len(labelled), -1, dtype=np.int64)
        order = np.argsort(keys, kind="stable")
        position = np.clip(np.searchsorted(keys[order], labelled), 0, len(keys) - 1)
        found = keys[order][position] == labelled
        return keys, np.where(found, order[position], -1)

    def label_matrix(
        self, run: str | int, regions: Sequence[str], findings: Sequence[str], report_keys: Sequence[int] | None = None
    ) -> LabelMatrix:
        """Region-level codes[report, region, finding] for a run (reports: the run's, or those given).

        Image-level rows (region None) and rows outside the given regions/findings are left out.
        """
        coded = self._coded_labels(self.run(run).run_id, regions, findings)
        keys, rows = self._report_rows(report_keys, coded)
        region_index = coded["region_index"].to_numpy()
        keep = (rows >= 0) & (region_index >= 0)
        codes = np.full((len(keys), len(regions), len(findings)), UNMENTIONED, dtype=np.int8)
        codes[rows[keep], region_index[keep], coded["finding_index"].to_numpy()[keep]] = coded["code"].to_numpy()[keep]
        return LabelMatrix(keys, tuple(regions), tuple(findings), codes)

    def image_matrix(
        self, run: str | int, regions: Sequence[str], findings: Sequence[str], report_keys: Sequence[int] | None = None
    ) -> LabelMatrix:
        """Image-level codes[report, finding]: region labels collapsed together with image-level rows."""
        coded = self._coded_labels(self.run(run).run_id, regions, findings)
        keys, rows = self._report_rows(report_keys, coded)
        region_index = coded["region_index"].to_numpy()
        # Image-level rows take an extra last "region" slot, then all slots collapse together.
        slot = np.where(region_index < 0, len(regions), region_index)
        keep = rows >= 0
        codes = np.full((len(keys), len(regions) + 1, len(findings)), UNMENTIONED, dtype=np.int8)
        codes[rows[keep], slot[keep], coded["finding_index"].to_numpy()[keep]] = coded["code"].to_numpy()[keep]
        return LabelMatrix(keys, (), tuple(findings), collapse_regions(codes))

    # --- experiments (model training and evaluation) -------------------------------------------
    def add_experiment(
        self,
        name: str,
        label_spec: Mapping[str, Any],
        config: Mapping[str, Any],
        checkpoint_path: str | None = None,
        metrics: Mapping[str, Any] | None = None,
        status: str = "running",
    ) -> int:
        """A new experiments row; returns its id. JSON values are written with NaN as null."""
        return self.con.execute(
            """INSERT INTO experiments (name, label_spec, config, metrics, checkpoint_path, status, updated_at)
               VALUES (?, ?, ?, ?, ?, ?, ?) RETURNING experiment_id""",
            [name, _json(label_spec), _json(config), _json(metrics or {}), checkpoint_path, status, datetime.now()],
        ).fetchall()[0][0]

    def update_experiment(
        self,
        experiment_id: int,
        metrics: Mapping[str, Any] | None = None,
        status: str | None = None,
        checkpoint_path: str | None = None,
    ) -> None:
        """Replace the metrics, status or checkpoint path of an experiment (what is None stays)."""
        if not self.con.execute("SELECT count(*) FROM experiments WHERE experiment_id = ?", [experiment_id]).fetchall()[
            0
        ][0]:
            raise StoreError(f"{self.path}: no experiment {experiment_id}")
        self.con.execute(
            """UPDATE experiments SET metrics = coalesce(?, metrics), status = coalesce(?, status),
                      checkpoint_path = coalesce(?, checkpoint_path), updated_at = ?
               WHERE experiment_id = ?""",
            [None if metrics is None else _json(metrics), status, checkpoint_path, datetime.now(), experiment_id],
        )

    def experiments(self) -> list[dict[str, Any]]:
        """Every experiment, oldest first, with its JSON columns parsed."""
        rows = self._dicts("SELECT * FROM experiments ORDER BY experiment_id")
        for row in rows:
            for column in ("label_spec", "config", "metrics"):
                row[column] = json.loads(row[column]) if row[column] is not None else None
        return rows

    # --- statistics --------------------------------------------------------------------------
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

    def dataset_counts(self) -> list[dict[str, Any]]:
        return self._dicts(
            """WITH s AS (SELECT r.dataset, count(*) AS sentences, count(DISTINCT s.norm_sha256) AS distinct_sentences
                         FROM sentences s JOIN reports r USING (report_key) GROUP BY r.dataset)
               SELECT r.dataset, count(DISTINCT r.report_id) AS reports, count(*) AS versions,
                      coalesce(any_value(s.sentences), 0) AS sentences,
                      coalesce(any_value(s.distinct_sentences), 0) AS distinct_sentences
               FROM reports r LEFT JOIN s USING (dataset) GROUP BY r.dataset ORDER BY r.dataset"""
        )

    def run_counts(self) -> list[dict[str, Any]]:
        return self._dicts(
            """SELECT r.run_id, r.name, r.kind, r.status, r.created_at,
                      count(l.report_key) AS labels, count(DISTINCT l.report_key) AS reports,
                      count(*) FILTER (WHERE l.status = 'present') AS present,
                      count(*) FILTER (WHERE l.status = 'absent') AS absent,
                      count(*) FILTER (WHERE l.status = 'uncertain') AS uncertain,
                      (SELECT count(*) FROM failures f WHERE f.run_id = r.run_id) AS failures
               FROM runs r LEFT JOIN labels l USING (run_id)
               GROUP BY ALL ORDER BY r.run_id"""
        )

    # --- queries for labeling/ (ingest, sources, review) ---------------------------------------------
    def current_report_keys(self, dataset: str | None = None) -> list[int]:
        """Keys of the current report versions (of `dataset`, or all), in key order."""
        rows = self.con.execute(
            "SELECT report_key FROM current_reports WHERE (? IS NULL OR dataset = ?) ORDER BY report_key",
            [dataset, dataset],
        ).fetchall()
        return [r[0] for r in rows]

    def current_report_ids(self, dataset: str | None = None, report_ids: Sequence[str] = ()) -> list[tuple[int, str]]:
        """(report_key, report_id) of the current report versions, of `dataset` and of `report_ids`
        when given, in key order."""
        ids = list(report_ids)
        return self.con.execute(
            """SELECT report_key, report_id FROM current_reports
               WHERE (? IS NULL OR dataset = ?) AND (len(?) = 0 OR list_contains(?, report_id))
               ORDER BY report_key""",
            [dataset, dataset, ids, ids],
        ).fetchall()

    def report_rows(self, report_keys: Sequence[int]) -> list[dict[str, Any]]:
        """report_key, dataset, report_id, version and text of the given reports, in key order."""
        return self._dicts(
            """SELECT report_key, dataset, report_id, version, text FROM reports
               WHERE report_key IN (SELECT unnest(?)) ORDER BY report_key""",
            [list(report_keys)],
        )

    def report_patients(self, report_keys: Sequence[int]) -> dict[int, str | None]:
        if not report_keys:
            return {}
        rows = self.con.execute(
            "SELECT report_key, patient_id FROM reports WHERE report_key IN (SELECT unnest(?))", [list(report_keys)]
        ).fetchall()
        return dict(rows)

    def report_sentences(self, report_keys: Sequence[int]) -> list[tuple[int, int, str | None, int, int, str]]:
        """(report_key, sentence_index, section, start_char, end_char, text) of the given reports."""
        return self.con.execute(
            """SELECT report_key, sentence_index, section, start_char, end_char, text FROM sentences
               WHERE report_key IN (SELECT unnest(?)) ORDER BY report_key, sentence_index""",
            [list(report_keys)],
        ).fetchall()

    def reading_sentences(self, report_keys: Sequence[int], sections: Sequence[str]) -> pa.Table:
        """report_key, start_char, text of the sentences of `sections` where a report has any,
        else of all its sentences; in report and text order."""
        self.con.register("_keys", pa.table({"report_key": pa.array(list(report_keys), pa.int64())}))
        try:
            return self._arrow(
                """WITH s AS (SELECT s.report_key, s.start_char, s.text, s.section FROM sentences s
                              JOIN _keys USING (report_key)),
                        has AS (SELECT report_key, coalesce(bool_or(list_contains(?, section)), false) AS has_findings
                                FROM s GROUP BY report_key)
                   SELECT s.report_key, s.start_char, s.text FROM s JOIN has USING (report_key)
                   WHERE NOT has.has_findings OR coalesce(list_contains(?, s.section), false)
                   ORDER BY s.report_key, s.start_char""",
                [list(sections), list(sections)],
            )
        finally:
            self.con.unregister("_keys")

    def report_labels(self, report_key: int) -> list[tuple[str, str | None, str, str, str | None]]:
        """(run name, region, finding, status, evidence text) of every run's labels of a report."""
        return self.con.execute(
            """SELECT ru.name, l.region, l.finding, l.status, l.evidence_text FROM labels l
               JOIN runs ru USING (run_id) WHERE l.report_key = ? ORDER BY ru.name, l.finding, l.region""",
            [report_key],
        ).fetchall()

    def label_status_counts(self, run_id: int) -> dict[str, int]:
        """A run's labels per status."""
        rows = self.con.execute(
            "SELECT status, count(*) FROM labels WHERE run_id = ? GROUP BY ALL ORDER BY 1", [run_id]
        ).fetchall()
        return dict(rows)

    def label_audit(
        self, run_id: int, report_keys: Sequence[int], findings: Sequence[str], regions: Sequence[str]
    ) -> dict[str, int]:
        """Counts of a run's labels on `report_keys`: regional, image-level of a known finding, of an
        unknown finding, in an unknown region; and of all its labels: regional and in total."""
        self.con.register("_compared", pa.table({"report_key": pa.array(list(report_keys), pa.int64())}))
        try:
            row = self.con.execute(
                """SELECT count(*) FILTER (WHERE region IS NOT NULL),
                          count(*) FILTER (WHERE region IS NULL AND list_contains(?, finding)),
                          count(*) FILTER (WHERE NOT list_contains(?, finding)),
                          count(*) FILTER (WHERE region IS NOT NULL AND NOT list_contains(?, region))
                   FROM labels WHERE run_id = ? AND report_key IN (SELECT report_key FROM _compared)""",
                [list(findings), list(findings), list(regions), run_id],
            ).fetchall()[0]
            total = self.con.execute(
                "SELECT count(*) FILTER (WHERE region IS NOT NULL), count(*) FROM labels WHERE run_id = ?", [run_id]
            ).fetchall()[0]
        finally:
            self.con.unregister("_compared")
        return {
            "regional": row[0],
            "image_level": row[1],
            "unknown_finding": row[2],
            "unknown_region": row[3],
            "run_regional": total[0],
            "run_labels": total[1],
        }

    def cell_evidence(self, run_id: int, cells: pa.Table, level: str) -> pa.Table:
        """cell, evidence_text, evidence_start, evidence_end of a run's label for each of `cells`
        (cell, report_key, region, finding, status). At image level: the label of the cell's status
        with the earliest span."""
        self.con.register("_cells", cells)
        try:
            if level == "region":
                sql = """SELECT c.cell, l.evidence_text, l.evidence_start, l.evidence_end FROM _cells c
                         JOIN labels l ON l.run_id = ? AND l.report_key = c.report_key AND l.finding = c.finding
                          AND l.region = c.region"""
            else:
                sql = """SELECT c.cell, l.evidence_text, l.evidence_start, l.evidence_end FROM _cells c
                         JOIN labels l ON l.run_id = ? AND l.report_key = c.report_key AND l.finding = c.finding
                          AND l.status = c.status
                         QUALIFY row_number() OVER (PARTITION BY c.cell
                             ORDER BY l.evidence_start IS NULL, l.evidence_start, l.region NULLS LAST) = 1"""
            return self._arrow(sql, [run_id])
        finally:
            self.con.unregister("_cells")

    def cache_responses(self, run_id: int) -> list[dict[str, Any]]:
        """The answers a run added to the LLM cache."""
        rows = self.con.execute("SELECT response FROM llm_cache WHERE run_id = ?", [run_id]).fetchall()
        return [json.loads(r[0]) for r in rows]

    # --- queries for model/ training, evaluation, labels, experiments ---------------------------------
    def run_findings(
        self, run: str | int, order: Sequence[str] = (), *, region_level: bool = False, present: bool = False
    ) -> tuple[str, ...]:
        """The findings run `run` has a label for: in the order of `order` (a vocabulary's finding
        names), findings not in `order` after them by name. `region_level`: only region-level
        labels count; `present`: only present labels count."""
        rows = self.con.execute(
            """SELECT DISTINCT finding FROM labels WHERE run_id = ?
                 AND (NOT ? OR region IS NOT NULL) AND (NOT ? OR status = 'present') ORDER BY finding""",
            [self.run(run).run_id, region_level, present],
        ).fetchall()
        rank = {name: i for i, name in enumerate(order)}
        return tuple(sorted((r[0] for r in rows), key=lambda f: rank.get(f, len(rank))))

    def label_level_counts(self, run: str | int) -> tuple[int, int]:
        """(region-level labels, image-level labels) of a run."""
        regional, image_level = self.con.execute(
            """SELECT count(*) FILTER (WHERE region IS NOT NULL), count(*) FILTER (WHERE region IS NULL)
               FROM labels WHERE run_id = ?""",
            [self.run(run).run_id],
        ).fetchall()[0]
        return int(regional), int(image_level)

    def region_evidence(self, run: str | int, report_keys: Sequence[int]) -> list[tuple[int, str, str]]:
        """(report_key, region, evidence text) of a run's region-level labels that quote evidence,
        over `report_keys`, by report, region and evidence position."""
        return self.con.execute(
            """SELECT report_key, region, evidence_text FROM labels
               WHERE run_id = ? AND evidence_text IS NOT NULL AND region IS NOT NULL
                 AND report_key IN (SELECT unnest(?))
               ORDER BY report_key, region, evidence_start""",
            [self.run(run).run_id, list(report_keys)],
        ).fetchall()

    def current_report_count(self) -> int:
        """Reports stored (current versions, every dataset)."""
        return self.con.execute("SELECT count(*) FROM current_reports").fetchall()[0][0]

    def first_report_ids(self, limit: int, *, exclude_prefix: str | None = None) -> list[str]:
        """The ids of the first `limit` current reports by report key, leaving out the datasets
        whose name starts with `exclude_prefix`."""
        return [
            r[0]
            for r in self.con.execute(
                """SELECT report_id FROM current_reports WHERE (? IS NULL OR NOT starts_with(dataset, ?))
                   ORDER BY report_key LIMIT ?""",
                [exclude_prefix, exclude_prefix, limit],
            ).fetchall()
        ]

    def experiment_status(self, experiment_id: int) -> str | None:
        """The status of an experiment (None: no such experiment)."""
        row = self.con.execute("SELECT status FROM experiments WHERE experiment_id = ?", [experiment_id]).fetchall()
        return row[0][0] if row else None

    # --- queries for model/reports and model/synth -----------------------------------------------------
    @classmethod
    def open_existing(cls, path: str | Path) -> Store:
        """A writing connection to a database that must exist already: a command that adds to
        what earlier commands stored fails as a read-only open would, instead of creating an
        empty database."""
        if not Path(path).exists():
            raise StoreError(f"{path}: no database here yet (run `clala ingest` first, or pass --db)")
        return cls(path)

    def dataset_report_count(self, dataset: str) -> int:
        """How many report rows (every version) dataset `dataset` has; 0 for an unknown dataset."""
        return self.con.execute("SELECT count(*) FROM reports WHERE dataset = ?", [dataset]).fetchall()[0][0]

    def dataset_reports(self, dataset: str) -> list[dict[str, Any]]:
        """The current reports of `dataset` in report order: report_key, report_id, text, and
        sections and metadata parsed from their JSON (empty when unset)."""
        rows = self._dicts(
            """SELECT report_key, report_id, text, sections, metadata FROM current_reports
               WHERE dataset = ? ORDER BY report_key""",
            [dataset],
        )
        for row in rows:
            row["sections"] = json.loads(row["sections"] or "[]")
            row["metadata"] = json.loads(row["metadata"] or "{}")
        return rows

    def report_identities(self, report_keys: Sequence[int]) -> dict[int, tuple[str | None, str | None]]:
        """report_key -> (patient_id, study_id) of the given reports; unknown keys are absent."""
        if not report_keys:
            return {}
        rows = self.con.execute(
            "SELECT report_key, patient_id, study_id FROM reports WHERE report_key IN (SELECT unnest(?))",
            [list(report_keys)],
        ).fetchall()
        return {key: (patient, study) for key, patient, study in rows}

    def report_texts_and_sections(self, report_keys: Sequence[int]) -> dict[int, tuple[str, list[dict[str, Any]]]]:
        """report_key -> (text, sections parsed from their JSON) of the given reports."""
        if not report_keys:
            return {}
        rows = self.con.execute(
            "SELECT report_key, text, sections FROM reports WHERE report_key IN (SELECT unnest(?))",
            [list(report_keys)],
        ).fetchall()
        return {key: (text, json.loads(sections or "[]")) for key, text, sections in rows}

    def has_region_labels(self, run: str | int) -> bool:
        """Whether run `run` has any label placed in a region (not only image-level labels)."""
        run_id = self.run(run).run_id
        return bool(
            self.con.execute(
                "SELECT count(*) FROM labels WHERE run_id = ? AND region IS NOT NULL", [run_id]
            ).fetchall()[0][0]
        )

    # --- SQL helpers -------------------------------------------------------------------------------------
    def _arrow(self, sql: str, params: Sequence[Any] = ()) -> pa.Table:
        """A query's result as an Arrow table (fully fetched, so the connection is free again)."""
        return self.con.sql(sql, params=list(params)).to_arrow_table()

    def _dicts(self, sql: str, params: Sequence[Any] = ()) -> list[dict[str, Any]]:
        cursor = self.con.execute(sql, list(params))
        names = [d[0] for d in cursor.description]
        return [dict(zip(names, row)) for row in cursor.fetchall()]
