"""Queries of label runs: the runs, their resumable work, failures, rejected labels and the LLM cache."""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

import numpy as np
import pyarrow as pa

from labeling.core.errors import StoreError
from labeling.store.connection import Connection
from labeling.store.status_file import note_run
from schemas.runs import RunInfo, RunSpec, RunStatus

# (database path, run id) of the runs this process is writing: never taken for interrupted ones.
_LIVE_RUNS: set[tuple[str, int]] = set()


class RunQueries(Connection):
    """Queries of label runs: the runs, their resumable work, failures, rejected labels and the LLM cache."""

    def create_run(self, spec: RunSpec) -> int:
        if self.con.execute("SELECT count(*) FROM runs WHERE name = ?", [spec.name]).fetchall()[0][0]:
            raise StoreError(f"{self.path}: a run named {spec.name!r} already exists; choose another --name")
        run_id = self.con.execute(
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
        _LIVE_RUNS.add((self._live_path(), run_id))
        note_run(self, run_id, force=True)  # the status file beside the database, for readers kept out
        return run_id

    def run(self, ref: str | int) -> RunInfo:
        """A run by id (an int, or a string of digits only: always an id, never a name, since run
        names may not be all digits) or else by name."""
        if isinstance(ref, int) or re.fullmatch(r"[0-9]+", ref):
            rows = self._dicts("SELECT * FROM runs WHERE run_id = ?", [int(ref)]) if int(ref) < 2**31 else []
            if not rows:
                raise StoreError(f"{self.path}: no run with id {int(ref)}{self._named_like(str(ref))}")
        else:
            rows = self._dicts("SELECT * FROM runs WHERE name = ?", [ref])
            if not rows:
                raise StoreError(f"{self.path}: no run named {ref!r} (see `clala stats` for the runs)")
        row = rows[0]
        row["decoding"] = json.loads(row["decoding"] or "{}")
        row["params"] = json.loads(row["params"] or "{}")
        return RunInfo.model_validate(row)

    def _named_like(self, ref: str) -> str:
        """For a missing id: the run named like it, from a database made before digit-only names
        were refused, and how to reach it."""
        rows = self.con.execute("SELECT run_id FROM runs WHERE name = ? ORDER BY run_id", [ref]).fetchall()
        if rows:
            return f" (digits name a run id; the run named {ref!r} has id {rows[0][0]})"
        return " (see `clala stats` for the runs)"

    def run_exists(self, name: str) -> bool:
        return bool(self.con.execute("SELECT count(*) FROM runs WHERE name = ?", [name]).fetchall()[0][0])

    def runs(self) -> list[RunInfo]:
        ids = [r[0] for r in self.con.execute("SELECT run_id FROM runs ORDER BY run_id").fetchall()]
        return [self.run(run_id) for run_id in ids]

    def set_run_status(self, run_id: int, status: RunStatus) -> None:
        finished = None if status is RunStatus.running else datetime.now()
        live = (self._live_path(), run_id)
        if status is RunStatus.running:
            _LIVE_RUNS.add(live)
        else:
            _LIVE_RUNS.discard(live)
        self.con.execute(
            "UPDATE runs SET status = ?, finished_at = ? WHERE run_id = ?", [status.value, finished, run_id]
        )
        note_run(self, run_id, force=True)

    def set_run_params(self, run_id: int, params: Mapping[str, Any]) -> None:
        """Replace a run's parameters (a resumed LLM run appends its transport to `resumes`)."""
        self.con.execute("UPDATE runs SET params = ? WHERE run_id = ?", [json.dumps(params), run_id])

    def add_run_tokens(self, run_id: int, prompt_tokens: int, completion_tokens: int) -> None:
        self.con.execute(
            """UPDATE runs SET prompt_tokens = prompt_tokens + ?, completion_tokens = completion_tokens + ?
                            WHERE run_id = ?""",
            [prompt_tokens, completion_tokens, run_id],
        )

    def add_run_unknown_keys(self, run_id: int, count: int) -> None:
        """Count keys outside the schema that were dropped from a run's answers."""
        if count:
            self.con.execute("UPDATE runs SET unknown_keys = unknown_keys + ? WHERE run_id = ?", [count, run_id])

    def mark_interrupted_runs(self) -> list[str]:
        """Runs left `running` by a writer that is gone become `interrupted`; their names.

        Called when the database is opened for writing: DuckDB's file lock lets one process write,
        so any other process that was writing a run has ended. Runs this process is writing are
        left alone."""
        live = [run_id for path, run_id in _LIVE_RUNS if path == self._live_path()]
        rows = self.con.execute(
            """UPDATE runs SET status = 'interrupted', finished_at = ?
               WHERE status = 'running' AND NOT list_contains(?, run_id) RETURNING name""",
            [datetime.now(), live],
        ).fetchall()
        return [r[0] for r in rows]

    def _live_path(self) -> str:
        return str(self.path.resolve())

    def _opened_for_writing(self) -> None:
        super()._opened_for_writing()
        self.mark_interrupted_runs()

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
        note_run(self, run_id, force=True)

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
        note_run(self, run_id)  # progress: at most every few seconds

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
        note_run(self, run_id, force=True)

    def covered_reports(self, run: str | int) -> np.ndarray:
        """Report keys a run has finished (labeled, possibly with no label at all), sorted."""
        run_id = self.run(run).run_id
        rows = self.con.execute(
            "SELECT report_key FROM work WHERE run_id = ? AND state = 'done' ORDER BY report_key", [run_id]
        ).fetchall()
        return np.asarray([r[0] for r in rows], dtype=np.int64)

    def retryable_work(self, run_id: int, max_attempts: int) -> list[int]:
        """Report keys of a run's failed work tried fewer than `max_attempts` times, in report order."""
        rows = self.con.execute(
            """SELECT report_key FROM work WHERE run_id = ? AND state = 'failed' AND attempts < ?
               ORDER BY report_key""",
            [run_id, max_attempts],
        ).fetchall()
        return [r[0] for r in rows]

    def delete_failures(self, run_id: int, unit_keys: Sequence[str]) -> None:
        """Forget a run's earlier failures of units that were asked again (a retry replaces them)."""
        if unit_keys:
            self.con.execute(
                "DELETE FROM failures WHERE run_id = ? AND list_contains(?, unit_key)", [run_id, list(unit_keys)]
            )

    def work_counts(self, run_id: int) -> dict[str, int]:
        rows = self.con.execute("SELECT state, count(*) FROM work WHERE run_id = ? GROUP BY state", [run_id]).fetchall()
        return {state: n for state, n in rows}

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
            """SELECT f.unit_key, r.dataset, r.report_id, f.error, f.raw_output, f.created_at, w.attempts
               FROM failures f LEFT JOIN reports r USING (report_key)
               LEFT JOIN work w ON w.run_id = f.run_id AND w.report_key = f.report_key
               WHERE f.run_id = ? ORDER BY f.created_at""",
            [run_id],
        )

    def rejection_counts(self, run_id: int) -> dict[str, int]:
        rows = self.con.execute(
            """SELECT split_part(reason, ':', 1), count(*) FROM rejected_labels
                                   WHERE run_id = ? GROUP BY ALL ORDER BY 2 DESC""",
            [run_id],
        ).fetchall()
        return {reason: n for reason, n in rows}

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

    def cache_responses(self, run_id: int) -> list[dict[str, Any]]:
        """The answers a run added to the LLM cache."""
        rows = self.con.execute("SELECT response FROM llm_cache WHERE run_id = ?", [run_id]).fetchall()
        return [json.loads(r[0]) for r in rows]

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
