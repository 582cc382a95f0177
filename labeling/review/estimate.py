"""`clala estimate`: a run's precision, recall and F1, per finding and overall (micro), from a
reviewed sample of its cells (`labeling.review.sample`), with 95 % intervals that respect how the
sample was drawn.

- **Truth** of a sampled cell is the reviewed run's region-level status there; no label there is
  "not present". Every sampled report must be covered by the reviewed run (a Label Studio task
  with a submitted annotation); otherwise the estimate is refused, naming how many are not.
- **Positive** is present. Uncertain counts as not present (`uncertain="negative"`, the default)
  or as present (`"positive"`), on both sides alike.
- **Estimates** are Horvitz-Thompson totals of true positives, false positives and misses, each
  sampled cell weighing 1/pi (its inclusion probability); precision = TP/(TP+FP), recall =
  TP/(TP+FN), F1 = 2TP/(2TP+FP+FN): ratio estimators, consistent under every strategy.
- **Intervals** (both are computed and stored; `interval` picks the one shown):
  - `wilson` (default): each metric is a weighted proportion over a domain of cells (precision:
    the predicted positives; recall: the true positives; F1: TP, FP and FN cells with TP counted
    twice), so the Wilson score interval is taken at the proportion's estimate with Kish's
    effective sample size (sum w)^2 / sum w^2 of the domain's sampled cells. It stays honest when
    a sample holds no error at all (an interval reaching below 1), which is the usual case for a
    good run, where a bootstrap collapses to a point.
  - `bootstrap`: percentile interval of `replicates` design bootstrap replicates: Rao-Wu
    rescaling within each stratum (n_h - 1 draws with replacement, weights scaled by
    n_h / (n_h - 1)); strata sampled whole (pi = 1) or with one cell are kept fixed. A Poisson
    (suspicion) sample is resampled as one stratum, its certain cells (pi = 1) fixed.
  - A metric with no sampled cell in its domain is undefined: estimate None, interval [0, 1].
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy.stats import norm

from labeling.core.errors import InputError
from labeling.store.store import Store
from schemas.labels import PRESENT, UNCERTAIN

UNCERTAIN_POLICIES = ("negative", "positive")
INTERVALS = ("wilson", "bootstrap")
METRICS = ("precision", "recall", "f1")


@dataclass(kw_only=True)
class EstimateRequest:
    """Estimate run `run`'s quality from its sample `sample_id` (default: its latest), reviewed as run `reviewed`."""

    run: str
    reviewed: str
    sample_id: int | None = None
    uncertain: str = "negative"
    confidence: float = 0.95
    replicates: int = 1000
    seed: int = 0

    def check(self) -> None:
        if self.uncertain not in UNCERTAIN_POLICIES:
            raise InputError(f"--uncertain: {self.uncertain!r} is not one of {', '.join(UNCERTAIN_POLICIES)}")
        if not 0 < self.confidence < 1:
            raise InputError(f"--confidence: must lie in (0, 1), not {self.confidence}")
        if self.replicates < 10:
            raise InputError(f"--replicates: must be at least 10, not {self.replicates}")


@dataclass
class SampledCells:
    """A reviewed sample as arrays: per cell its finding, stratum, inclusion probability, and
    whether the run and the truth say positive."""

    finding: np.ndarray  # object[n]
    stratum: np.ndarray  # object[n]
    pi: np.ndarray  # float64[n]
    predicted: np.ndarray  # bool[n]
    truth: np.ndarray  # bool[n]
    poisson: bool  # drawn by Poisson sampling (strategy suspicion)


def wilson_interval(p: float, n_eff: float, confidence: float) -> tuple[float, float]:
    """The Wilson score interval of a proportion `p` seen over `n_eff` (effective) cells."""
    if not n_eff > 0 or not np.isfinite(p):
        return 0.0, 1.0
    z = float(norm.ppf(0.5 + confidence / 2))
    scale = 1 + z * z / n_eff
    centre = (p + z * z / (2 * n_eff)) / scale
    half = z * np.sqrt(p * (1 - p) / n_eff + z * z / (4 * n_eff * n_eff)) / scale
    return max(0.0, centre - half), min(1.0, centre + half)


def replicate_weights(cells: SampledCells, replicates: int, seed: int) -> np.ndarray:
    """Rao-Wu bootstrap weights [replicates, n] that resample within strata."""
    rng = np.random.default_rng(seed)
    weights = 1.0 / cells.pi
    out = np.tile(weights, (replicates, 1))
    groups = np.zeros(len(weights), dtype=object) if cells.poisson else cells.stratum
    for name in np.unique(groups):
        members = np.flatnonzero((groups == name) & (cells.pi < 1))
        size = len(members)
        if size < 2:
            continue
        counts = rng.multinomial(size - 1, np.full(size, 1 / size), size=replicates)
        out[:, members] = weights[members] * counts * (size / (size - 1))
    return out


def _ratios(tp: np.ndarray, fp: np.ndarray, fn: np.ndarray) -> dict[str, np.ndarray]:
    with np.errstate(invalid="ignore", divide="ignore"):
        return {
            "precision": tp / (tp + fp),
            "recall": tp / (tp + fn),
            "f1": 2 * tp / (2 * tp + fp + fn),
        }


def _kish(weights: np.ndarray) -> float:
    return float(weights.sum() ** 2 / (weights**2).sum()) if len(weights) else 0.0


def metric_block(cells: SampledCells, rows: np.ndarray, replicate: np.ndarray, confidence: float) -> dict[str, Any]:
    """Counts, estimates and both intervals of the cells `rows` (a bool mask)."""
    weights = 1.0 / cells.pi[rows]
    predicted, truth = cells.predicted[rows], cells.truth[rows]
    tp, fp, fn = predicted & truth, predicted & ~truth, ~predicted & truth
    totals = {name: float(weights[kind].sum()) for name, kind in (("tp", tp), ("fp", fp), ("fn", fn))}
    point = _ratios(*(np.array(totals[k]) for k in ("tp", "fp", "fn")))
    w = replicate[:, rows]
    boot = _ratios((w * tp).sum(axis=1), (w * fp).sum(axis=1), (w * fn).sum(axis=1))
    effective = {
        "precision": _kish(weights[predicted]),
        "recall": _kish(weights[truth]),
        "f1": _kish(np.concatenate([2 * weights[tp], weights[fp], weights[fn]])),
    }
    block: dict[str, Any] = {
        "sampled": {"cells": int(rows.sum()), "tp": int(tp.sum()), "fp": int(fp.sum()), "fn": int(fn.sum())},
        "estimated": totals,
    }
    tail = (1 - confidence) / 2 * 100
    for metric in METRICS:
        value = float(point[metric])
        defined = np.isfinite(value)
        replicates = boot[metric][np.isfinite(boot[metric])]
        bootstrap = (
            [float(np.percentile(replicates, tail)), float(np.percentile(replicates, 100 - tail))]
            if defined and len(replicates)
            else [0.0, 1.0]
        )
        block[metric] = {
            "estimate": value if defined else None,
            "wilson": list(wilson_interval(value, effective[metric], confidence)),
            "bootstrap": bootstrap,
            "effective_n": effective[metric],
        }
    return block


def estimate_cells(cells: SampledCells, *, confidence: float, replicates: int, seed: int) -> dict[str, Any]:
    """Overall (micro) and per-finding estimates of a reviewed sample."""
    replicate = replicate_weights(cells, replicates, seed)
    everything = np.ones(len(cells.pi), dtype=bool)
    return {
        "overall": metric_block(cells, everything, replicate, confidence),
        "by_finding": {
            str(f): metric_block(cells, cells.finding == f, replicate, confidence) for f in np.unique(cells.finding)
        },
    }


def reviewed_cells(store: Store, request: EstimateRequest) -> tuple[dict[str, Any], SampledCells, dict[str, Any]]:
    """The sample (its row), its cells with their truth from the reviewed run, and what the result records."""
    run = store.run(request.run)
    reviewed = store.run(request.reviewed)
    if reviewed.run_id == run.run_id:
        raise InputError(f"--reviewed: run {reviewed.name!r} is the run being estimated; give the reviewed run")
    if request.sample_id is None:
        sample = store.latest_sample(run.run_id)
        if sample is None:
            raise InputError(f"run {run.name!r} has no sample; draw one first with `clala sample {run.name} --n N`")
    else:
        sample = store.sample(request.sample_id)
        if sample["run_id"] != run.run_id:
            raise InputError(f"--sample: sample {request.sample_id} is a sample of another run, not of {run.name!r}")
    table = store.sample_cells(sample["sample_id"])
    keys = table["report_key"].to_numpy()
    covered = store.covered_reports(reviewed.run_id)
    missing = np.unique(keys[~np.isin(keys, covered)])
    if len(missing):
        cells_missing = int((~np.isin(keys, covered)).sum())
        raise InputError(
            f"reviewed run {reviewed.name!r} does not cover {len(missing):,} of the {len(np.unique(keys)):,} sampled "
            f"reports ({cells_missing:,} of {len(keys):,} sampled cells); review every task of sample "
            f"{sample['sample_id']} (a task without a submitted annotation is not covered)"
        )
    regions = sorted(set(table["region"].to_pylist()))
    findings = sorted(set(table["finding"].to_pylist()))
    report_keys = np.unique(keys)
    codes = store.label_matrix(reviewed.run_id, regions, findings, report_keys.tolist()).codes
    region_of = {r: i for i, r in enumerate(regions)}
    finding_of = {f: i for i, f in enumerate(findings)}
    rows = np.searchsorted(report_keys, keys)
    truth_codes = codes[
        rows,
        [region_of[r] for r in table["region"].to_pylist()],
        [finding_of[f] for f in table["finding"].to_pylist()],
    ]
    uncertain_counts = request.uncertain == "positive"
    positive_codes = [PRESENT, UNCERTAIN] if uncertain_counts else [PRESENT]
    positive_classes = ["present", "uncertain"] if uncertain_counts else ["present"]
    cells = SampledCells(
        finding=np.asarray(table["finding"].to_pylist(), dtype=object),
        stratum=np.asarray(table["stratum"].to_pylist(), dtype=object),
        pi=table["inclusion_probability"].to_numpy(),
        predicted=np.isin(np.asarray(table["predicted"].to_pylist(), dtype=object), positive_classes),
        truth=np.isin(truth_codes, positive_codes),
        poisson=sample["strategy"] == "suspicion",
    )
    recorded = {
        "run": run.name,
        "reviewed": reviewed.name,
        "sample_id": sample["sample_id"],
        "strategy": sample["strategy"],
        "cells": len(keys),
        "reports": len(report_keys),
        "population": sample["params"].get("population"),
        "uncertain": request.uncertain,
        "confidence": request.confidence,
        "replicates": request.replicates,
        "bootstrap_seed": request.seed,
    }
    return sample, cells, recorded


@dataclass
class Estimate:
    estimate_id: int
    result: dict[str, Any]


def estimate_run(store: Store, request: EstimateRequest) -> Estimate:
    """Estimate a run's quality from its reviewed sample and store the estimate with the run."""
    request.check()
    sample, cells, recorded = reviewed_cells(store, request)
    result = {
        **recorded,
        **estimate_cells(cells, confidence=request.confidence, replicates=request.replicates, seed=request.seed),
    }
    reviewed_id = store.run(request.reviewed).run_id
    estimate_id = store.add_estimate(
        sample["run_id"], sample_id=sample["sample_id"], reviewed_run_id=reviewed_id, result=result
    )
    return Estimate(estimate_id, result)
