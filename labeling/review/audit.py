"""Audit: a run's region-level cells ranked by how likely their label is wrong, by confident
learning (cleanlab) on out-of-sample probabilities that the cell is present.

The cells are those `clala sample` draws from: every report the run finished x every (region,
finding) pair the vocabulary allows, over the findings the run has a region-level label for. Each
cell's given label is binary: present, or not present (absent, and unmentioned: no label there,
which training also reads as negative). Cells the run calls uncertain are not audited (they state
neither; they are counted and left out of the queue), nor are cells no source has a probability for.

Probabilities come from one or more sources (`ProbabilitySource`: p[report, region, finding] that
the cell is present, NaN where the source says nothing): K-fold CLALA-Net predictions or a
checkpoint's (model layer), or another run's labels (`run_probabilities`, here). Several sources
are averaged (the mean of the probabilities the cell has).

Ranking, per finding (each finding is its own binary task, with its own class balance):
- pred_probs = [1 - p, p] clipped to [1e-4, 1 - 1e-4], labels = given present;
- `cleanlab.filter.find_label_issues` (prune by noise rate) marks the cells confident learning
  counts as label issues (`flagged`);
- `cleanlab.rank.get_label_quality_scores(method="self_confidence")` scores each cell: the
  probability of its given label; suspicion = 1 - that score. Not `adjust_pred_probs`: in a binary
  task with rare positives, subtracting the class thresholds (about 0.99 for "not present", 0.05
  for "present") puts every given-absent cell's quality near 0.5, above every cell the model
  merely doubts (bench/audit_synth.py: precision at k 0.00 with it, 0.19 without).
A finding whose audited cells hold one class only gets no flags (confident learning needs both
classes). The queue: flagged cells first, then by suspicion descending (ties: report, region,
finding order), so that the cells confident learning counts as issues, per finding with its own
thresholds, come before those that are merely unlikely.
"""

from __future__ import annotations

import json
import warnings
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from labeling.core.errors import InputError
from labeling.core.files import refuse_database, write_text_atomically
from labeling.review.disagreements import queue_format
from labeling.review.labelstudio import CONFIG_FILE, TASKS_FILE, build_task, labeling_config
from labeling.store.export import write_table
from labeling.store.store import Store
from schemas.labels import PRESENT, UNCERTAIN, UNMENTIONED
from schemas.runs import RunInfo
from schemas.vocabulary import Vocabulary

# p(present) of a cell a --by run finished but has no label for: it did not mention the finding
# there, which is weak evidence of absence, not certainty.
UNMENTIONED_PROBABILITY = 0.05
UNCERTAIN_PROBABILITY = 0.5  # a --by run's "uncertain" says nothing either way
PROBABILITY_CLIP = 1e-4
STATUS_NAMES = {PRESENT: "present", 0: "absent", UNCERTAIN: "uncertain", UNMENTIONED: "unmentioned"}
QUEUE_COLUMNS = (
    "rank",
    "dataset",
    "report_id",
    "study_id",
    "report_key",
    "region",
    "finding",
    "given",
    "suspicion",
    "label_quality",
    "flagged",
    "p_present",
    "disagrees_most",
    "reason",
)  # then one p_present:<source> column per source


@dataclass
class AuditCells:
    """The audited run's cells: codes[report, region, finding] over its finished reports, the
    vocabulary's regions, its region-level findings; allowed[region, finding]; the vocabulary."""

    run: RunInfo
    report_keys: np.ndarray
    regions: tuple[str, ...]
    findings: tuple[str, ...]
    allowed: np.ndarray
    codes: np.ndarray
    vocabulary: Vocabulary

    @property
    def shape(self) -> tuple[int, int, int]:
        return (len(self.report_keys), len(self.regions), len(self.findings))

    @property
    def audited(self) -> np.ndarray:
        """bool[report, region, finding]: allowed cells with a binary given label (not uncertain)."""
        return self.allowed[None] & (self.codes != UNCERTAIN)


@dataclass
class ProbabilitySource:
    """One source's p(present) per cell (NaN: it says nothing there), under a name for the queue;
    `note` says where it comes from (shown in the command's summary)."""

    name: str
    p_present: np.ndarray
    note: str = ""


def audit_cells(store: Store, run: str, vocabulary: Vocabulary) -> AuditCells:
    """The cells of `run` to audit (see the module doc)."""
    info = store.run(run)
    keys = store.covered_reports(info.run_id)
    if len(keys) == 0:
        raise InputError(f"run {info.name!r} has finished no report; nothing to audit")
    found = store.run_findings(info.run_id, vocabulary.finding_names, region_level=True)
    unknown = [f for f in found if f not in vocabulary.finding_names]
    if unknown:
        raise InputError(f"run {info.name!r}: finding {unknown[0]!r} is not in vocabulary {vocabulary.version}")
    if not found:
        raise InputError(f"run {info.name!r} has no region-level labels; the audit ranks region-level cells")
    regions = vocabulary.region_names
    allowed = np.array([[vocabulary.allows(f, r) for f in found] for r in regions], dtype=bool)
    codes = store.label_matrix(info.run_id, regions, found, keys.tolist()).codes
    return AuditCells(info, keys, regions, tuple(found), allowed, codes, vocabulary)


def run_probabilities(
    store: Store, run: str, cells: AuditCells, *, unmentioned: float = UNMENTIONED_PROBABILITY
) -> ProbabilitySource:
    """Another run's labels as p(present): a present label -> its confidence (1 without one); an
    absent label -> 1 - its confidence (0 without one; a combined run's or a model run's
    confidence is that of the status it states); uncertain -> 0.5; a finished report without a
    label for the cell -> `unmentioned`. NaN on reports it did not finish and findings it has no
    region-level label for."""
    info = store.run(run)
    if info.run_id == cells.run.run_id:
        raise InputError(f"--by {run}: is the audited run itself; audit it by another source")
    if not 0 <= unmentioned <= 1:
        raise InputError(f"--unmentioned-p: {unmentioned} is not a probability in [0, 1]")
    p = np.full(cells.shape, np.nan)
    covered = np.isin(cells.report_keys, store.covered_reports(info.run_id))
    if not covered.any():
        raise InputError(f"--by {run}: run {info.name!r} has finished none of the {len(covered):,} audited reports")
    spoken = [
        cells.findings.index(f) for f in store.run_findings(info.run_id, region_level=True) if f in cells.findings
    ]
    if not spoken:
        raise InputError(f"--by {run}: run {info.name!r} has no region-level label of the audited findings")
    p[np.ix_(covered, np.arange(len(cells.regions)), np.asarray(spoken, np.intp))] = unmentioned
    labels = store.labels(info.run_id).select(["report_key", "region", "finding", "status", "confidence"]).to_pylist()
    row_of = {int(k): i for i, k in enumerate(cells.report_keys)}
    region_of = {r: i for i, r in enumerate(cells.regions)}
    finding_of = {f: i for i, f in enumerate(cells.findings)}
    for label in labels:
        row = row_of.get(label["report_key"])
        region, finding = region_of.get(label["region"]), finding_of.get(label["finding"])
        if row is None or region is None or finding is None or not covered[row]:
            continue
        confidence = label["confidence"]
        if label["status"] == "present":
            value = 1.0 if confidence is None else float(confidence)
        elif label["status"] == "absent":
            value = 0.0 if confidence is None else 1.0 - float(confidence)
        else:
            value = UNCERTAIN_PROBABILITY
        p[row, region, finding] = value
    return ProbabilitySource(info.name, p, f"run {info.name} ({info.kind.value})")


@dataclass
class FindingScores:
    """One finding's audited cells (flat indices into the grid) and their scores."""

    cells: np.ndarray
    quality: np.ndarray
    flagged: np.ndarray


def score_finding(given: np.ndarray, p_present: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(label quality score, flagged) of binary `given` labels against p(present), by cleanlab."""
    from cleanlab.filter import find_label_issues
    from cleanlab.rank import get_label_quality_scores

    labels = given.astype(np.int64)
    p = np.clip(p_present, PROBABILITY_CLIP, 1 - PROBABILITY_CLIP)
    pred_probs = np.stack([1 - p, p], axis=1)
    if len(np.unique(labels)) < 2:
        return pred_probs[np.arange(len(labels)), labels], np.zeros(len(labels), bool)
    with warnings.catch_warnings():  # cleanlab warns about tiny classes; the scores stay defined
        warnings.simplefilter("ignore")
        quality = get_label_quality_scores(labels, pred_probs, method="self_confidence")
        flagged = find_label_issues(labels, pred_probs, filter_by="prune_by_noise_rate", n_jobs=1)
    return np.asarray(quality, np.float64), np.asarray(flagged, bool)


@dataclass
class AuditResult:
    """The ranked queue and what was left out."""

    queue: pa.Table
    audited: int
    uncertain: int  # cells the run calls uncertain (not audited)
    without_probability: int  # audited cells no source has a probability for
    flagged: int
    sources: list[ProbabilitySource] = field(default_factory=list)


def rank_cells(store: Store, cells: AuditCells, sources: list[ProbabilitySource]) -> AuditResult:
    """Every audited cell with a probability, ranked most suspect first (see the module doc)."""
    if not sources:
        raise InputError("no probability source: give --by RUN|CHECKPOINT or --folds K")
    stacked = np.stack([s.p_present for s in sources])  # [S, N, R, F]
    has = ~np.isnan(stacked)
    counted = has.sum(axis=0)
    with np.errstate(invalid="ignore"):
        mean = np.where(counted > 0, np.nansum(np.where(has, stacked, 0.0), axis=0) / np.maximum(counted, 1), np.nan)
    audited = cells.audited
    usable = audited & (counted > 0)
    flat_codes, flat_mean = cells.codes.reshape(-1), mean.reshape(-1)
    _, n_regions, n_findings = cells.shape
    scores = []
    for f in range(n_findings):
        index = np.flatnonzero(usable[..., f].reshape(-1)) * n_findings + f
        if len(index) == 0:
            continue
        quality, flagged = score_finding(flat_codes[index] == PRESENT, flat_mean[index])
        scores.append(FindingScores(index, quality, flagged))
    index = np.concatenate([s.cells for s in scores]) if scores else np.zeros(0, np.int64)
    quality = np.concatenate([s.quality for s in scores]) if scores else np.zeros(0)
    flagged = np.concatenate([s.flagged for s in scores]) if scores else np.zeros(0, bool)
    order = np.lexsort((index, -(1 - quality), ~flagged))
    index, quality, flagged = index[order], quality[order], flagged[order]
    queue = _queue_table(store, cells, sources, stacked, mean, (index, quality, flagged))
    return AuditResult(
        queue=queue,
        audited=int(audited.sum()),
        uncertain=int((cells.allowed[None] & (cells.codes == UNCERTAIN)).sum()),
        without_probability=int((audited & (counted == 0)).sum()),
        flagged=int(flagged.sum()),
        sources=sources,
    )


def _reason(given: str, per_source: list[tuple[str, float]], flagged: bool) -> tuple[str, str]:
    """The source that disagrees most with the given label, and the reason text."""
    present = given == "present"
    said = [(name, p) for name, p in per_source if not np.isnan(p)]
    worst, worst_p = min(said, key=lambda item: item[1] if present else -item[1])
    others = ", ".join(f"{name} {p:.3f}" for name, p in said if name != worst)
    text = f"given {given}; most against it: {worst} p(present) {worst_p:.3f}" + (f" ({others})" if others else "")
    return worst, text + ("; flagged by confident learning" if flagged else "")


def _queue_table(
    store: Store,
    cells: AuditCells,
    sources: list[ProbabilitySource],
    stacked: np.ndarray,
    mean: np.ndarray,
    ranked: tuple[np.ndarray, np.ndarray, np.ndarray],
) -> pa.Table:
    index, quality, flagged = ranked
    n_reports, n_regions, n_findings = cells.shape
    rows, rest = np.divmod(index, n_regions * n_findings)
    regions, findings = np.divmod(rest, n_findings)
    keys = cells.report_keys[rows].astype(np.int64)
    unique = sorted(set(keys.tolist()))
    identity = {r["report_key"]: (r["dataset"], r["report_id"]) for r in store.report_rows(unique)} if unique else {}
    studies = store.report_identities(unique)
    given = [STATUS_NAMES[int(c)] for c in cells.codes.reshape(-1)[index]]
    per_source = stacked.reshape(len(sources), -1)[:, index]  # [S, cells]
    disagrees, reasons = [], []
    for i, status in enumerate(given):
        worst, text = _reason(status, [(s.name, float(per_source[j, i])) for j, s in enumerate(sources)], flagged[i])
        disagrees.append(worst)
        reasons.append(text)
    columns: dict[str, pa.Array] = {
        "rank": pa.array(np.arange(1, len(index) + 1), pa.int64()),
        "dataset": pa.array([identity[k][0] for k in keys.tolist()], pa.string()),
        "report_id": pa.array([identity[k][1] for k in keys.tolist()], pa.string()),
        "study_id": pa.array([studies.get(k, (None, None))[1] for k in keys.tolist()], pa.string()),
        "report_key": pa.array(keys, pa.int64()),
        "region": pa.array([cells.regions[r] for r in regions.tolist()], pa.string()),
        "finding": pa.array([cells.findings[f] for f in findings.tolist()], pa.string()),
        "given": pa.array(given, pa.string()),
        "suspicion": pa.array(np.round(1 - quality, 6), pa.float64()),
        "label_quality": pa.array(np.round(quality, 6), pa.float64()),
        "flagged": pa.array(flagged, pa.bool_()),
        "p_present": pa.array(np.round(mean.reshape(-1)[index], 6), pa.float64()),
        "disagrees_most": pa.array(disagrees, pa.string()),
        "reason": pa.array(reasons, pa.string()),
    }
    for j, source in enumerate(sources):
        values = np.round(per_source[j], 6)
        columns[f"p_present:{source.name}"] = pa.array(values, pa.float64(), mask=np.isnan(values))
    return pa.table(columns)


def check_queue_out(out: Path) -> str:
    """The queue's format from `--out` (.csv or .jsonl), refused before any work is done."""
    fmt = queue_format(out)
    if not out.parent.is_dir():
        raise InputError(f"--out {out}: folder {out.parent} does not exist")
    refuse_database(out)
    return fmt


def check_tasks_out(out_dir: Path) -> None:
    """Refuse a --labelstudio folder that cannot take the tasks, before any work is done."""
    if out_dir.exists() and not out_dir.is_dir():
        raise InputError(f"--labelstudio {out_dir}: is a file; give a folder")
    if not out_dir.parent.is_dir():
        raise InputError(f"--labelstudio {out_dir}: folder {out_dir.parent} does not exist")
    for name in (TASKS_FILE, CONFIG_FILE):
        refuse_database(out_dir / name)


def write_queue(result: AuditResult, out: Path, limit: int | None = None) -> int:
    """The queue (its first `limit` rows) to `out` as CSV or JSONL, atomically; the rows written."""
    table = result.queue if limit is None else result.queue.slice(0, limit)
    write_table(table, out, check_queue_out(out))
    return table.num_rows


def audit_config(findings: list[str], regions: list[str]) -> str:
    """The export's labeling config with the cells to check shown above the report."""
    view = ET.fromstring(labeling_config(findings, regions))
    header = ET.Element("Header", value="Audit (best rank $audit_rank): check these cells: $check")
    view.insert(2, header)  # after the style and the report header
    ET.indent(view)
    return ET.tostring(view, encoding="unicode") + "\n"


def write_audit_tasks(store: Store, result: AuditResult, cells: AuditCells, out_dir: Path, cells_shown: int) -> int:
    """Label Studio tasks (as `clala export-labelstudio` makes them: the audited run's labels as
    the prediction) for the reports of the queue's first `cells_shown` cells, most suspect report
    first, with `data.check` listing its queued cells and why; returns the tasks written."""
    check_tasks_out(out_dir)
    top = result.queue.slice(0, cells_shown).select(["rank", "report_key", "region", "finding", "suspicion", "reason"])
    checks: dict[int, list[dict[str, Any]]] = {}
    for row in top.to_pylist():
        checks.setdefault(row["report_key"], []).append(row)  # in rank order: the first is the report's best
    keys = list(checks)
    reports = {r["report_key"]: r for r in store.report_rows(sorted(keys))}
    labels: dict[int, list[dict[str, Any]]] = {}
    for label in store.labels(cells.run.run_id).to_pylist():
        if label["report_key"] in checks:
            labels.setdefault(label["report_key"], []).append(label)
    tasks = []
    for key in keys:
        task, _ = build_task(reports[key], labels.get(key, []), cells.run.name)
        rows = checks[key]
        task["data"]["audit_rank"] = rows[0]["rank"]
        task["data"]["suspicion"] = rows[0]["suspicion"]
        task["data"]["check"] = "\n".join(
            f"#{r['rank']} {r['finding']} | {r['region']} (suspicion {r['suspicion']:.3f}): {r['reason']}" for r in rows
        )
        tasks.append(task)
    used = {label["finding"] for rows in labels.values() for label in rows}
    known = cells.vocabulary.finding_names
    findings = list(known) + sorted(used - set(known))
    out_dir.mkdir(parents=True, exist_ok=True)
    write_text_atomically(out_dir / TASKS_FILE, json.dumps(tasks, ensure_ascii=False, indent=1) + "\n")
    write_text_atomically(out_dir / CONFIG_FILE, audit_config(findings, list(cells.regions)))
    return len(tasks)
