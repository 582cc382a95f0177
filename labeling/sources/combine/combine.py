"""`combine_runs`: several source runs combined into one derived run, cell by cell, by majority
vote or by Dawid-Skene (crowd-kit's implementations), one finding at a time, so that each source
gets its own confusion matrix per finding and each finding its own class priors.

Regional sources (those with region-level labels) decide the region-level cells; every source,
regional ones collapsed to image level, decides the image-level cell of each report and finding.
The image-level verdict is stored as an image-level row (region NULL) only where it says more
than the combined regional cells of that finding (by the label precedence), e.g. an image-level
source and the combination say "present" but no regional source located it.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from importlib.metadata import version

import numpy as np
import pandas as pd
import pyarrow as pa
from pydantic import BaseModel, ConfigDict, Field

from labeling.core.errors import InputError
from labeling.sources.combine.cells import (
    CLASSES,
    CODE_OF_CLASS,
    CombineCells,
    image_answers,
    read_cells,
    region_answers,
)
from labeling.store.run_records import RunHooks, RunResult, check_new_run_name, record_run
from labeling.store.store import Store
from schemas.labels import CODE_PRECEDENCE, UNMENTIONED
from schemas.runs import RunInfo, RunKind, RunSpec, RunStatus
from schemas.vocabulary import CATEGORIES, Vocabulary, load_vocabulary

METHODS = ("majority", "dawid-skene")
RANK_OF_CODE = {code: rank for rank, code in enumerate(CODE_PRECEDENCE)}


class CombineRequest(BaseModel):
    """Combine `runs` (names or ids, at least two) into a new derived run `name` by `method`;
    Dawid-Skene runs at most `iterations` EM steps, stopping when the likelihood gains less than
    `tolerance`. Cells are laid out in `vocabulary` (default: the shipped file, every category)."""

    model_config = ConfigDict(extra="forbid")
    name: str
    runs: list[str]
    method: str = "dawid-skene"
    vocabulary: str | None = None
    iterations: int = Field(default=100, ge=1)
    tolerance: float = Field(default=1e-5, gt=0)


@dataclass
class Aggregate:
    """One finding combined at one level: each task's class (index into CLASSES) and posterior,
    each source's confusion matrix (rows: true class, columns: what it said, both in CLASSES
    order) and the class priors."""

    classes: np.ndarray
    confidence: np.ndarray
    confusion: dict[str, list[list[float]]]
    priors: list[float]


def aggregate(answers: pd.DataFrame, request: CombineRequest) -> tuple[pd.Index, Aggregate]:
    """The tasks of `answers` (task, worker, label) and their combination by `request.method`."""
    from crowdkit.aggregation import DawidSkene, MajorityVote

    if request.method == "dawid-skene":
        model = DawidSkene(n_iter=request.iterations, tol=request.tolerance).fit(answers)
        errors, fitted, fitted_priors = model.errors_, model.probas_, model.priors_
        assert errors is not None and fitted is not None and fitted_priors is not None  # set by fit
        probas = fitted.reindex(columns=list(CLASSES), fill_value=0.0)
        confusion = {
            str(worker): _rows(errors.loc[worker].reindex(index=list(CLASSES), columns=list(CLASSES), fill_value=0.0).T)
            for worker in errors.index.get_level_values(0).unique()
        }
        priors = fitted_priors.reindex(list(CLASSES), fill_value=0.0)
    else:
        fitted = MajorityVote().fit(answers).probas_
        assert fitted is not None  # set by fit
        probas = fitted.reindex(columns=list(CLASSES), fill_value=0.0)
        confusion = _empirical_confusion(
            answers, pd.Series(np.asarray(CLASSES)[probas.to_numpy().argmax(axis=1)], index=probas.index)
        )
        priors = (probas.to_numpy().argmax(axis=1)[:, None] == np.arange(len(CLASSES))).mean(axis=0)
        priors = pd.Series(priors, index=list(CLASSES))
    values = probas.to_numpy()
    # argmax takes the first of equal posteriors: the label precedence breaks ties
    best = values.argmax(axis=1)
    result = Aggregate(best, values[np.arange(len(best)), best], confusion, [round(float(p), 4) for p in priors])
    return probas.index, result


def _rows(matrix: pd.DataFrame) -> list[list[float]]:
    return [[round(float(v), 4) for v in row] for row in matrix.to_numpy()]


def _empirical_confusion(answers: pd.DataFrame, combined: pd.Series) -> dict[str, list[list[float]]]:
    """Each source's answers against the combined labels: P(said | combined), per combined class."""
    joined = answers.assign(true=combined.reindex(answers["task"].to_numpy()).to_numpy())
    confusion = {}
    for worker, rows in joined.groupby("worker", sort=False):
        counts = pd.crosstab(rows["true"], rows["label"]).reindex(
            index=list(CLASSES), columns=list(CLASSES), fill_value=0
        )
        totals = counts.sum(axis=1).replace(0, 1)
        confusion[str(worker)] = _rows(counts.div(totals, axis=0))
    return confusion


def source_runs(store: Store, refs: list[str]) -> list[RunInfo]:
    """The runs to combine: at least two different, finished ones."""
    runs = [store.run(ref) for ref in refs]
    ids = [run.run_id for run in runs]
    if len(set(ids)) != len(ids):
        twice = next(run.name for run in runs if ids.count(run.run_id) > 1)
        raise InputError(f"run {twice!r} given twice; combine different runs")
    if len(runs) < 2:
        raise InputError("give at least two runs to combine")
    for run in runs:
        if not run.status.finished:
            raise InputError(
                f"run {run.name!r} is {run.status.value}; finish it first (only finished runs are combined)"
            )
    return runs


def _vocabulary(name: str | None) -> Vocabulary:
    try:
        return load_vocabulary(name, categories=list(CATEGORIES))
    except (ValueError, FileNotFoundError) as exc:
        raise InputError(str(exc)) from None


@dataclass
class CombinedFinding:
    """One finding's combined cells: region codes[report, region] and confidences, image codes[report]."""

    region_codes: np.ndarray
    region_confidence: np.ndarray
    image_codes: np.ndarray | None
    image_confidence: np.ndarray | None


def combine_finding(
    cells: CombineCells, finding: int, request: CombineRequest, store_confusion: Callable[[str, str, Aggregate], None]
) -> CombinedFinding:
    """Combine one finding at region level (regional sources) and, where some source has
    image-level labels, at image level (all sources)."""
    n, n_regions = len(cells.report_keys), len(cells.regions)
    codes = np.full((n, n_regions), UNMENTIONED, dtype=np.int8)
    confidence = np.zeros((n, n_regions), dtype=np.float32)
    name = cells.findings[finding]
    if cells.regional:
        answers, region_index = region_answers(cells, finding)
        tasks, combined = aggregate(answers, request)
        task = tasks.to_numpy()
        rows, columns = task // len(region_index), region_index[task % len(region_index)]
        codes[rows, columns] = [CODE_OF_CLASS[CLASSES[c]] for c in combined.classes]
        confidence[rows, columns] = combined.confidence
        store_confusion("region", name, combined)
    if not cells.image_level:
        return CombinedFinding(codes, confidence, None, None)
    tasks, combined = aggregate(image_answers(cells, finding), request)
    image_codes = np.full(n, UNMENTIONED, dtype=np.int8)
    image_confidence = np.zeros(n, dtype=np.float32)
    image_codes[tasks.to_numpy()] = [CODE_OF_CLASS[CLASSES[c]] for c in combined.classes]
    image_confidence[tasks.to_numpy()] = combined.confidence
    store_confusion("image", name, combined)
    return CombinedFinding(codes, confidence, image_codes, image_confidence)


def _finding_rows(cells: CombineCells, finding: int, combined: CombinedFinding) -> dict[str, list]:
    """The stored rows of one combined finding: its regional cells that are not unmentioned, and
    image-level rows where the image verdict outranks every regional cell of the report."""
    rows, columns = np.nonzero(combined.region_codes != UNMENTIONED)
    out: dict[str, list] = {
        "report_key": cells.report_keys[rows].tolist(),
        "region": [cells.regions[c] for c in columns],
        "status": [_status(code) for code in combined.region_codes[rows, columns]],
        "confidence": combined.region_confidence[rows, columns].tolist(),
    }
    if combined.image_codes is not None and combined.image_confidence is not None:
        rank = np.vectorize(RANK_OF_CODE.__getitem__)
        regional_best = rank(combined.region_codes).min(axis=1) if combined.region_codes.shape[1] else None
        image_rank = rank(combined.image_codes)
        says_more = combined.image_codes != UNMENTIONED
        if regional_best is not None:
            says_more &= image_rank < regional_best
        keep = np.flatnonzero(says_more)
        out["report_key"] += cells.report_keys[keep].tolist()
        out["region"] += [None] * len(keep)
        out["status"] += [_status(code) for code in combined.image_codes[keep]]
        out["confidence"] += combined.image_confidence[keep].tolist()
    out["finding"] = [cells.findings[finding]] * len(out["report_key"])
    return out


def _status(code: int) -> str:
    return {1: "present", 0: "absent", -1: "uncertain"}[int(code)]


def combine_runs(store: Store, request: CombineRequest, *, hooks: RunHooks | None = None) -> RunResult:
    """Combine the source runs into a new derived run, stored whole or not at all. The run's params
    record the sources, the method and its options, and each source's confusion matrix and the
    class priors per finding and level."""
    started = time.perf_counter()
    hooks = hooks or RunHooks()
    if request.method not in METHODS:
        raise InputError(f"--method: {request.method!r} is not one of {', '.join(METHODS)}")
    check_new_run_name(store, request.name)
    runs = source_runs(store, request.runs)
    vocabulary = _vocabulary(request.vocabulary)
    cells = read_cells(store, runs, vocabulary)
    result = RunResult(name=request.name, kind=RunKind.derived.value, status=RunStatus.running)
    result.source = ", ".join(run.name for run in runs)
    result.reports = len(cells.report_keys)
    result.counts.update(findings=len(cells.findings))
    left_out = cells.outside_allowed()
    for source, count in left_out.items():
        result.skipped.counts[f"{source}: label in a region its finding may not lie in"] = count
    hooks.start(result)
    confusion: dict[str, dict[str, dict[str, list[list[float]]]]] = {"region": {}, "image": {}}
    priors: dict[str, dict[str, list[float]]] = {"region": {}, "image": {}}

    def store_confusion(level: str, finding: str, combined: Aggregate) -> None:
        confusion[level][finding] = combined.confusion
        priors[level][finding] = combined.priors

    columns: dict[str, list] = {"report_key": [], "region": [], "finding": [], "status": [], "confidence": []}
    for finding in range(len(cells.findings)):
        rows = _finding_rows(cells, finding, combine_finding(cells, finding, request, store_confusion))
        for key, values in rows.items():
            columns[key] += values
        result.reports_done = result.reports
        hooks.advance(result, 1)
    table = pa.table(
        {
            "report_key": pa.array(columns["report_key"], pa.int64()),
            "region": pa.array(columns["region"], pa.string()),
            "finding": pa.array(columns["finding"], pa.string()),
            "status": pa.array(columns["status"], pa.string()),
            "confidence": pa.array(columns["confidence"], pa.float32()),
        }
    )
    spec = RunSpec(
        name=request.name,
        kind=RunKind.derived,
        vocabulary_version=vocabulary.version,
        backend="combine",
        model=f"crowd-kit-{version('crowd-kit')}",
        source=result.source,
        params={
            "method": request.method,
            "sources": [
                {"run_id": s.run.run_id, "name": s.run.name, "kind": s.run.kind.value, "level": _level(s.regional)}
                for s in cells.sources
            ],
            "options": {"iterations": request.iterations, "tolerance": request.tolerance},
            "vocabulary": request.vocabulary,
            "classes": list(CLASSES),
            "unmentioned": "own class: a finished report's cell with no label; no row when combined so",
            "left out": left_out,
            "confusion": confusion,
            "priors": priors,
        },
    )
    result.run_id = record_run(store, spec, cells.report_keys.tolist(), table)
    result.status = RunStatus.complete
    result.labels = table.num_rows
    result.statuses.update(columns["status"])
    result.details.update(sources=spec.params["sources"], confusion=confusion, priors=priors, method=request.method)
    result.seconds = time.perf_counter() - started
    return result


def _level(regional: bool) -> str:
    return "region" if regional else "image"
