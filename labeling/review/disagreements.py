"""Review queues: every cell on which two runs disagree, ordered so that a reviewer's first
decisions are the ones that matter most.

A cell disagrees when the runs give it different classes among present, uncertain and
absent-or-unmentioned (absent and unmentioned agree: both read as "not present"). The statuses
themselves are shown as stored, "unmentioned" where a run has no row.

Order of the queue:
1. Reports, so that a reviewer opens each report once, by report priority (the sum of its cells'
   priorities) descending, then report key.
2. Within a report, cells by kind: present vs absent/unmentioned first (it moves tp, fp or fn),
   then present vs uncertain, then uncertain vs absent/unmentioned; then by rarity; then by
   evidence (both runs quote a span, one does, none does); then region and finding order.

A cell's priority is kind weight (4, 2, 1 in that order) x rarity x evidence factor (1, 0.75,
0.5). Rarity is 1 / (2 tp + fp + fn) of the cell's finding between the two runs (present vs
present, at the queue's level): the denominator of that finding's F1, so one corrected cell moves
a rare finding's F1 more than a common one's, by this factor.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa

from labeling.core.errors import InputError
from labeling.review.compare import (
    check_options,
    common_reports,
    comparison_vocabulary,
    run_matrices,
    select_names,
)
from labeling.store.export import write_table
from labeling.store.store import Store
from schemas.labels import PRESENT, UNCERTAIN
from schemas.vocabulary import Vocabulary

QUEUE_FORMATS = {".csv": "csv", ".jsonl": "jsonl"}
KINDS = ("present vs absent", "present vs uncertain", "uncertain vs absent")
KIND_WEIGHT = np.asarray([4.0, 2.0, 1.0])
EVIDENCE_FACTOR = np.asarray([1.0, 0.75, 0.5])  # indexed by spans missing: 0, 1, 2
QUEUE_COLUMNS = (
    "rank",
    "dataset",
    "report_id",
    "report_key",
    "region",
    "finding",
    "kind",
    "status_a",
    "status_b",
    "evidence_a",
    "start_a",
    "end_a",
    "evidence_b",
    "start_b",
    "end_b",
    "priority",
    "report_priority",
)


def _kind(class_a: np.ndarray, class_b: np.ndarray) -> np.ndarray:
    """0 present vs absent, 1 present vs uncertain, 2 uncertain vs absent (classes: 0 not present,
    1 present, 2 uncertain)."""
    pair = {frozenset((1, 0)): 0, frozenset((1, 2)): 1, frozenset((2, 0)): 2}
    table = np.zeros((3, 3), dtype=np.int8)
    for a in range(3):
        for b in range(3):
            if a != b:
                table[a, b] = pair[frozenset((a, b))]
    return table[class_a, class_b]


def _classes(codes: np.ndarray) -> np.ndarray:
    return np.select([codes == PRESENT, codes == UNCERTAIN], [1, 2], 0).astype(np.int8)


def _evidence(store: Store, run: str, cells: pa.Table, level: str) -> pa.Table:
    """Evidence text and span of `run` for each cell (by row number `cell`). At image level, the
    evidence of a label whose status is the cell's collapsed status (the earliest span)."""
    return store.cell_evidence(store.run(run).run_id, cells, level)


def _spread(n: int, found: pa.Table, column: str) -> np.ndarray:
    values = np.full(n, None, dtype=object)
    values[found["cell"].to_numpy()] = np.asarray(found[column].to_pylist(), dtype=object)
    return values


@dataclass(frozen=True)
class QueueOptions:
    """Which cells a review queue holds: at `level`, of `findings` (default: all of the
    vocabulary), the first `limit` of them (default: all), in `vocabulary`'s cells."""

    level: str = "region"
    findings: Sequence[str] | None = None
    limit: int | None = None
    vocabulary: Vocabulary | str | None = None


def disagreement_queue(
    store: Store, run_a: str, run_b: str, options: QueueOptions | None = None
) -> tuple[pa.Table, int]:
    """The review queue of `run_a` vs `run_b` (ordered, see the module docstring) and the number
    of disagreeing cells before `limit`."""
    options = options or QueueOptions()
    level, findings, limit, vocabulary = options.level, options.findings, options.limit, options.vocabulary
    check_options(level, "own-class")
    if limit is not None and limit < 1:
        raise InputError(f"--limit: {limit} must be at least 1")
    a, b = store.run(run_a).name, store.run(run_b).name
    if a == b:
        raise InputError(f"run {a!r} given twice; compare two different runs")
    vocab = comparison_vocabulary(vocabulary)
    chosen = select_names("findings", findings, vocab.finding_names, vocab) or vocab.finding_names
    report_keys, _ = common_reports(store, [a, b])
    matrices, _ = run_matrices(store, [a, b], report_keys, level, vocab, vocab.region_names)
    index = np.asarray([vocab.finding_names.index(f) for f in chosen], dtype=np.intp)
    codes_a, codes_b = matrices[a].codes[..., index], matrices[b].codes[..., index]
    class_a, class_b = _classes(codes_a), _classes(codes_b)

    # Rarity per finding: 1 / (2 tp + fp + fn), present against present.
    pos_a, pos_b = class_a == 1, class_b == 1
    other_axes = tuple(range(codes_a.ndim - 1))
    f1_denominator = 2 * (pos_a & pos_b).sum(axis=other_axes) + (pos_a ^ pos_b).sum(axis=other_axes)
    rarity = 1.0 / np.maximum(f1_denominator, 1)

    where = np.nonzero(class_a != class_b)
    total = len(where[0])
    report_row, finding_col = where[0], where[-1]
    region_col = where[1] if level == "region" else np.full(total, -1)
    kind = _kind(class_a[where], class_b[where])
    status_names = np.asarray(["unmentioned", "uncertain", "absent", "present"], dtype=object)  # code + 2
    names_a = status_names[codes_a[where].astype(np.intp) + 2]
    names_b = status_names[codes_b[where].astype(np.intp) + 2]
    finding_names = np.asarray(chosen, dtype=object)[finding_col]
    region_names = (
        np.asarray(vocab.region_names, dtype=object)[region_col]
        if level == "region"
        else np.full(total, None, dtype=object)
    )
    keys = report_keys[report_row]

    cells = pa.table(
        {
            "cell": pa.array(np.arange(total), pa.int64()),
            "report_key": pa.array(keys, pa.int64()),
            "region": pa.array(region_names.tolist(), pa.string()),
            "finding": pa.array(finding_names.tolist(), pa.string()),
        }
    )
    evidence = {}
    for side, run, names in (("a", a, names_a), ("b", b, names_b)):
        found = _evidence(store, run, cells.append_column("status", pa.array(names.tolist(), pa.string())), level)
        evidence[side] = {
            col: _spread(total, found, src)
            for col, src in (("evidence", "evidence_text"), ("start", "evidence_start"), ("end", "evidence_end"))
        }
    missing = np.zeros(total, dtype=np.intp)  # spans missing per cell: 0, 1 or 2
    for side in ("a", "b"):
        missing += np.fromiter((v is None for v in evidence[side]["start"]), bool, total)
    priority = KIND_WEIGHT[kind] * rarity[finding_col] * EVIDENCE_FACTOR[missing]

    # Report priority: sum of its cells' priorities; reports in descending report priority.
    unique_rows, inverse = np.unique(report_row, return_inverse=True)
    report_priority = np.bincount(inverse, weights=priority, minlength=len(unique_rows))[inverse] if total else priority
    order = np.lexsort((finding_col, region_col, missing, -rarity[finding_col], kind, keys, -report_priority))
    if limit is not None:
        order = order[:limit]

    identity = (
        {r["report_key"]: (r["dataset"], r["report_id"]) for r in store.report_rows(sorted(set(keys[order].tolist())))}
        if len(order)
        else {}
    )
    ordered_keys = keys[order].tolist()
    table = pa.table(
        {
            "rank": pa.array(np.arange(1, len(order) + 1), pa.int64()),
            "dataset": pa.array([identity[k][0] for k in ordered_keys], pa.string()),
            "report_id": pa.array([identity[k][1] for k in ordered_keys], pa.string()),
            "report_key": pa.array(ordered_keys, pa.int64()),
            "region": pa.array(region_names[order].tolist(), pa.string()),
            "finding": pa.array(finding_names[order].tolist(), pa.string()),
            "kind": pa.array([KINDS[k] for k in kind[order]], pa.string()),
            "status_a": pa.array(names_a[order].tolist(), pa.string()),
            "status_b": pa.array(names_b[order].tolist(), pa.string()),
            "evidence_a": pa.array(evidence["a"]["evidence"][order].tolist(), pa.string()),
            "start_a": pa.array(evidence["a"]["start"][order].tolist(), pa.int32()),
            "end_a": pa.array(evidence["a"]["end"][order].tolist(), pa.int32()),
            "evidence_b": pa.array(evidence["b"]["evidence"][order].tolist(), pa.string()),
            "start_b": pa.array(evidence["b"]["start"][order].tolist(), pa.int32()),
            "end_b": pa.array(evidence["b"]["end"][order].tolist(), pa.int32()),
            "priority": pa.array(np.round(priority[order], 6), pa.float64()),
            "report_priority": pa.array(np.round(report_priority[order], 6), pa.float64()),
        }
    )
    return table, total


def queue_format(out: Path) -> str:
    try:
        return QUEUE_FORMATS[out.suffix.lower()]
    except KeyError:
        raise InputError(f"--out {out}: a review queue is written as .csv or .jsonl") from None


def write_disagreements(
    store: Store, run_a: str, run_b: str, out: str | Path, options: QueueOptions | None = None
) -> tuple[pa.Table, int]:
    """Build the queue and write it to `out` (.csv or .jsonl) atomically."""
    out = Path(out)
    fmt = queue_format(out)
    table, total = disagreement_queue(store, run_a, run_b, options)
    write_table(table, out, fmt)
    return table, total
