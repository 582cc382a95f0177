"""Queries of labels: writing a run's labels, reading them back as rows or as label matrices."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from labeling.core.errors import StoreError
from labeling.store.runs import RunQueries
from schemas.labels import ABSENT, CODE_PRECEDENCE, STATUS_CODE, UNMENTIONED

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


def absent_everywhere(region_codes: np.ndarray, placeless_codes: np.ndarray) -> np.ndarray:
    """Region codes [n, R, F] with each unmentioned cell of a finding the run states absent without
    a place (its region-less codes [n, F]: "no pneumothorax") made absent: absent in the image is
    absent in every region. A region-less present or uncertain finding does not say where it is, so
    its cells stay as they are. The no-location rule (README, "Label semantics")."""
    filled = region_codes.copy()
    filled[(filled == UNMENTIONED) & (placeless_codes == ABSENT)[:, None, :]] = ABSENT
    return filled


class LabelQueries(RunQueries):
    """Queries of labels: writing a run's labels, reading them back as rows or as label matrices."""

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

    def placeless_matrix(
        self, run: str | int, findings: Sequence[str], report_keys: Sequence[int] | None = None
    ) -> LabelMatrix:
        """Image-level codes[report, finding] of a run's region-less labels only."""
        return self.image_matrix(run, (), findings, report_keys)

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
