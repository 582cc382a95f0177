"""Queries of review samples and estimates: a sample of a run's cells (strategy, seed, size, and
every sampled cell with its predicted class, stratum and inclusion probability) and the estimates
of the run's quality made from a reviewed sample. Both are append only: a sample or an estimate
is written whole, in one transaction, and never changed."""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import datetime
from typing import Any

import pyarrow as pa

from labeling.core.errors import StoreError
from labeling.store.connection import Connection, json_text

SAMPLE_CELL_COLUMNS: dict[str, pa.DataType] = {
    "report_key": pa.int64(),
    "region": pa.string(),
    "finding": pa.string(),
    "predicted": pa.string(),
    "stratum": pa.string(),
    "inclusion_probability": pa.float64(),
}


class SampleQueries(Connection):
    """Queries of review samples and the estimates made from them."""

    def add_sample(self, run_id: int, *, strategy: str, seed: int, params: Mapping[str, Any], cells: pa.Table) -> int:
        """Store a sample and its cells (columns SAMPLE_CELL_COLUMNS) in one transaction; its id."""
        missing = [c for c in SAMPLE_CELL_COLUMNS if c not in cells.column_names]
        if missing:
            raise StoreError(f"sample cells lack column(s) {missing}")
        with self.transaction():
            sample_id = self.con.execute(
                """INSERT INTO samples (run_id, strategy, seed, n, created_at, params)
                   VALUES (?, ?, ?, ?, ?, ?) RETURNING sample_id""",
                [run_id, strategy, seed, cells.num_rows, datetime.now(), json_text(params)],
            ).fetchall()[0][0]
            columns = {"sample_id": pa.array([sample_id] * cells.num_rows, pa.int32())}
            columns.update({name: cells[name].cast(dtype) for name, dtype in SAMPLE_CELL_COLUMNS.items()})
            self._insert_arrow("sample_cells", pa.table(columns))
        return sample_id

    def sample(self, sample_id: int) -> dict[str, Any]:
        """A sample's row (params parsed)."""
        rows = self._dicts("SELECT * FROM samples WHERE sample_id = ?", [sample_id])
        if not rows:
            raise StoreError(f"{self.path}: no sample with id {sample_id} (see `clala runs show RUN`)")
        return _parsed(rows[0], "params")

    def latest_sample(self, run_id: int) -> dict[str, Any] | None:
        """The newest sample of a run, or None."""
        rows = self._dicts("SELECT * FROM samples WHERE run_id = ? ORDER BY sample_id DESC LIMIT 1", [run_id])
        return _parsed(rows[0], "params") if rows else None

    def run_samples(self, run_id: int) -> list[dict[str, Any]]:
        """A run's samples, oldest first."""
        return [
            _parsed(row, "params")
            for row in self._dicts("SELECT * FROM samples WHERE run_id = ? ORDER BY sample_id", [run_id])
        ]

    def sample_cells(self, sample_id: int) -> pa.Table:
        """A sample's cells, by report, region and finding."""
        return self._arrow(
            """SELECT report_key, region, finding, predicted, stratum, inclusion_probability
               FROM sample_cells WHERE sample_id = ? ORDER BY report_key, region, finding""",
            [sample_id],
        )

    def add_estimate(self, run_id: int, *, sample_id: int, reviewed_run_id: int, result: Mapping[str, Any]) -> int:
        """Store an estimate of a run's quality (result: JSON, NaN as null); its id."""
        return self.con.execute(
            """INSERT INTO estimates (run_id, sample_id, reviewed_run_id, created_at, result)
               VALUES (?, ?, ?, ?, ?) RETURNING estimate_id""",
            [run_id, sample_id, reviewed_run_id, datetime.now(), json_text(result)],
        ).fetchall()[0][0]

    def run_estimates(self, run_id: int) -> list[dict[str, Any]]:
        """A run's estimates, oldest first, with the reviewed run's name and the sample's strategy."""
        rows = self._dicts(
            """SELECT e.estimate_id, e.sample_id, e.reviewed_run_id, r.name AS reviewed_run, s.strategy, s.n,
                      e.created_at, e.result
               FROM estimates e LEFT JOIN runs r ON r.run_id = e.reviewed_run_id
               LEFT JOIN samples s ON s.sample_id = e.sample_id
               WHERE e.run_id = ? ORDER BY e.estimate_id""",
            [run_id],
        )
        return [_parsed(row, "result") for row in rows]


def _parsed(row: dict[str, Any], column: str) -> dict[str, Any]:
    row[column] = json.loads(row[column]) if row[column] is not None else {}
    return row
