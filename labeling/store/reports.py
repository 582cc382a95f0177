"""Queries of the reports, their sentences and the ingests that stored them."""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import datetime
from typing import Any

import pyarrow as pa

from labeling.store.connection import Connection


class ReportQueries(Connection):
    """Queries of the reports, their sentences and the ingests that stored them."""

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

    def report_identities(self, report_keys: Sequence[int]) -> dict[int, tuple[str | None, str | None]]:
        """report_key -> (patient_id, study_id) of the given reports; unknown keys are absent."""
        if not report_keys:
            return {}
        rows = self.con.execute(
            "SELECT report_key, patient_id, study_id FROM reports WHERE report_key IN (SELECT unnest(?))",
            [list(report_keys)],
        ).fetchall()
        return {key: (patient, study) for key, patient, study in rows}

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

    def report_texts_and_sections(self, report_keys: Sequence[int]) -> dict[int, tuple[str, list[dict[str, Any]]]]:
        """report_key -> (text, sections parsed from their JSON) of the given reports."""
        if not report_keys:
            return {}
        rows = self.con.execute(
            "SELECT report_key, text, sections FROM reports WHERE report_key IN (SELECT unnest(?))",
            [list(report_keys)],
        ).fetchall()
        return {key: (text, json.loads(sections or "[]")) for key, text, sections in rows}

    def dataset_counts(self) -> list[dict[str, Any]]:
        return self._dicts(
            """WITH s AS (SELECT r.dataset, count(*) AS sentences, count(DISTINCT s.norm_sha256) AS distinct_sentences
                         FROM sentences s JOIN reports r USING (report_key) GROUP BY r.dataset)
               SELECT r.dataset, count(DISTINCT r.report_id) AS reports, count(*) AS versions,
                      coalesce(any_value(s.sentences), 0) AS sentences,
                      coalesce(any_value(s.distinct_sentences), 0) AS distinct_sentences
               FROM reports r LEFT JOIN s USING (dataset) GROUP BY r.dataset ORDER BY r.dataset"""
        )
