"""Queries of experiments: model trainings and evaluations with their label spec, config and metrics."""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from labeling.core.errors import StoreError
from labeling.store.connection import Connection, json_text


class ExperimentQueries(Connection):
    """Queries of experiments: model trainings and evaluations with their label spec, config and metrics."""

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
            [
                name,
                json_text(label_spec),
                json_text(config),
                json_text(metrics or {}),
                checkpoint_path,
                status,
                datetime.now(),
            ],
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
            [None if metrics is None else json_text(metrics), status, checkpoint_path, datetime.now(), experiment_id],
        )

    def experiments(self) -> list[dict[str, Any]]:
        """Every experiment, oldest first, with its JSON columns parsed."""
        rows = self._dicts("SELECT * FROM experiments ORDER BY experiment_id")
        for row in rows:
            for column in ("label_spec", "config", "metrics"):
                row[column] = json.loads(row[column]) if row[column] is not None else None
        return rows

    def experiment_status(self, experiment_id: int) -> str | None:
        """The status of an experiment (None: no such experiment)."""
        row = self.con.execute("SELECT status FROM experiments WHERE experiment_id = ?", [experiment_id]).fetchall()
        return row[0][0] if row else None
