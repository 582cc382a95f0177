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
- **Intervals** (all are computed and stored; `interval` picks the one shown):
  - `beta` (default, the one that held its coverage over the benchmark grid: BENCHMARKS.md):
    the sample is cut into strata of one predicted class each (overall: the class, or class x
    suspect, pooled over findings; per finding: finding x class), so that each stratum's
    unknown is one rate (true positives among predicted positives, misses among the rest). Each
    rate is drawn from the Beta whose quantiles are the Clopper-Pearson bounds, on the side that
    lowers every metric (for the lower bound) or raises it (for the upper), the unsampled cells'
    events drawn from it (binomial), and precision, recall and F1 taken over the summed totals:
    a stratum with no event seen still carries its Clopper-Pearson upper bound, and a stratum
    sampled whole is exact. A Poisson (suspicion) sample's strata are also split by inclusion
    probability (finding x class x pi level, pooled over findings overall), each level's
    population cells recorded at sample time: within a level every cell has the same pi, so the
    cells drawn from it, given how many, are a simple random sample of it, and the level is a
    stratum of known size like a stratified sample's (estimating the levels' sizes from the
    weights instead was tried and under-covered: BENCHMARKS.md). Only a Poisson sample stored
    without that record (before issue 29) has weights that differ within a stratum; they enter
    as Kish's effective counts, an approximation. The interval is widened to hold its own
    estimate.
  - `jeffreys`: the same with each rate from its Jeffreys posterior (failed: too narrow where
    misses are rare, as they are in a good run's predicted-absent cells).
  - `wilson`: each metric is a weighted proportion over a domain of cells (precision:
    the predicted positives; recall: the true positives; F1: TP, FP and FN cells with TP counted
    twice), so the Wilson score interval is taken at the proportion's estimate with Kish's
    effective sample size (sum w)^2 / sum w^2 of the domain's sampled cells (failed: the domain
    of recall is the true positives the sample saw, so misses it never saw cannot widen it).
  - `bootstrap`: percentile interval of `replicates` design bootstrap replicates: Rao-Wu
    rescaling within each stratum (n_h - 1 draws with replacement, weights scaled by
    n_h / (n_h - 1)); strata sampled whole (pi = 1) or with one cell are kept fixed. A Poisson
    (suspicion) sample is resampled as one stratum, its certain cells (pi = 1) fixed (failed: a
    stratum with no event seen never varies).
  - A metric with no sampled cell in its domain is undefined: estimate None, interval [0, 1].
- **Cannot tell**: an overall beta interval wider than `max_width` (0.2) is reported in one line:
  its lower bound, what the sample saw where the metric is decided (the misses among the sampled
  predicted-negative cells, for recall), and how many more cells of which strata (in proportion to
  those sampled) would bring it to `max_width` if the rates seen so far held.
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
INTERVALS = ("beta", "jeffreys", "wilson", "bootstrap")
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
    max_width: float = 0.2  # an overall interval wider than this is reported as "cannot tell"

    def check(self) -> None:
        if self.uncertain not in UNCERTAIN_POLICIES:
            raise InputError(f"--uncertain: {self.uncertain!r} is not one of {', '.join(UNCERTAIN_POLICIES)}")
        if not 0 < self.confidence < 1:
            raise InputError(f"--confidence: must lie in (0, 1), not {self.confidence}")
        if self.replicates < 10:
            raise InputError(f"--replicates: must be at least 10, not {self.replicates}")
        if not 0 < self.max_width <= 1:
            raise InputError(f"--max-width: must lie in (0, 1], not {self.max_width}")


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
    predicted_class: np.ndarray | None = None  # object[n]: present | uncertain | absent | unmentioned
    # "finding | class" (stratified: "| suspect" too; Poisson: "| pi=<level>") -> cells in the population
    population_strata: dict[str, int] | None = None

    def strata_keys(self) -> np.ndarray:
        """Each cell's finding x predicted class ("finding | class"), the strata of the beta interval."""
        if self.predicted_class is None:  # no class recorded: predicted positive or not
            classes = np.where(self.predicted, "present", "absent").astype(object)
        else:
            classes = self.predicted_class
        keys = np.char.add(np.char.add(self.finding.astype(str), " | "), classes.astype(str)).astype(object)
        if self.population_strata is not None:  # the sample's own strata (finer with --suspect, or pi levels)
            own = np.isin(self.stratum, list(self.population_strata))
            keys[own] = self.stratum[own]
        return keys


def wilson_interval(p: float, n_eff: float, confidence: float) -> tuple[float, float]:
    """The Wilson score interval of a proportion `p` seen over `n_eff` (effective) cells."""
    if not n_eff > 0 or not np.isfinite(p):
        return 0.0, 1.0
    z = float(norm.ppf(0.5 + confidence / 2))
    scale = 1 + z * z / n_eff
    centre = (p + z * z / (2 * n_eff)) / scale
    half = z * np.sqrt(p * (1 - p) / n_eff + z * z / (4 * n_eff * n_eff)) / scale
    return max(0.0, centre - half), min(1.0, centre + half)


@dataclass
class Strata:
    """Per stratum of a metric's domain: population cells N, sampled cells n and events x (the true
    positives among predicted-positive strata, the misses among the others; non-integer where
    weights differ within a stratum: Kish's effective counts), and which strata predict positive."""

    names: np.ndarray  # str[H]
    cells: np.ndarray  # float64[H]: N_h
    sampled: np.ndarray  # float64[H]: n_h (effective)
    events: np.ndarray  # float64[H]: x_h (effective)
    positive: np.ndarray  # bool[H]
    equal: np.ndarray  # bool[H]: equal weights within the stratum (finite-population draw)


def domain_strata(cells: SampledCells, rows: np.ndarray, *, by_class: bool) -> Strata:
    """The strata of the cells `rows`: finding x predicted class (x suspect), or the same pooled
    over findings (`by_class`: overall). Strata of the population the sample missed count too
    (N_h known from the sample's record, n_h = 0)."""
    keys = cells.strata_keys()[rows]
    findings = {str(f) for f in cells.finding[rows]}
    sizes: dict[str, float] = {}
    if cells.population_strata is not None:
        for key, count in cells.population_strata.items():
            if _finding(key) in findings or rows.all():
                sizes[key] = sizes.get(key, 0.0) + count
    weights = 1.0 / cells.pi[rows]
    for key in np.unique(keys):  # no record of the population (older samples): N_h from the weights
        if str(key) not in sizes:
            sizes[str(key)] = float(weights[keys == key].sum())
    if by_class:
        merged: dict[str, float] = {}
        for key, count in sizes.items():
            merged[_pool(key)] = merged.get(_pool(key), 0.0) + count
        sizes = merged
        keys = np.array([_pool(k) for k in keys], dtype=object)
    names = np.array(sorted(sizes), dtype=object)
    predicted, truth = cells.predicted[rows], cells.truth[rows]
    sampled, events, equal = np.zeros(len(names)), np.zeros(len(names)), np.ones(len(names), dtype=bool)
    positive = np.zeros(len(names), dtype=bool)
    for h, name in enumerate(names):
        member = keys == name
        w = weights[member]
        if len(w) == 0:
            # a stratum with no sampled cell: its class says whether it predicts positive
            positive[h] = _pool(name).split(" | ")[0] in _positive_classes(cells)
            continue
        positive[h] = bool(predicted[member][0])
        equal[h] = bool(np.allclose(w, w[0]))
        n_eff = _kish(w)
        share = float((w * truth[member]).sum() / w.sum())
        sampled[h], events[h] = (len(w), float(truth[member].sum())) if equal[h] else (n_eff, share * n_eff)
    return Strata(names, np.array([sizes[n] for n in names]), sampled, events, positive, equal)


def _finding(key: str) -> str:
    """A stratum's finding: its name without the class and a " | suspect" or " | pi=..." mark."""
    marked = key.endswith(" | suspect") or key.rsplit(" | ", 1)[-1].startswith("pi=")
    return key.rsplit(" | ", 2)[0] if marked else key.rsplit(" | ", 1)[0]


def _pool(key: str) -> str:
    """A stratum's name without its finding: "unmentioned", "unmentioned | suspect"."""
    return key[len(_finding(key)) + 3 :] if " | " in key else key


def _positive_classes(cells: SampledCells) -> set[str]:
    if cells.predicted_class is None:
        return {"present"}
    return {str(c) for c, p in zip(cells.predicted_class, cells.predicted) if p} or {"present"}


def _beta(a: np.ndarray, b: np.ndarray, draws: int, rng: np.random.Generator) -> np.ndarray:
    """Beta(a, b) draws [draws, H]; Beta(0, b) is 0 and Beta(a, 0) is 1 (the limits)."""
    raw = rng.beta(np.maximum(a, 1e-9), np.maximum(b, 1e-9), size=(draws, len(a)))
    return np.where(a <= 0, 0.0, np.where(b <= 0, 1.0, raw))


def beta_totals(
    strata: Strata, draws: int, rng: np.random.Generator, *, side: str
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Draws [draws] of the population's TP, FP and FN: each stratum's event rate from a Beta,
    then the events of its unsampled cells from that rate (binomial; N_h * rate where weights
    differ), summed over strata. `side` "jeffreys": Beta(x + 1/2, n - x + 1/2). "low" and "high":
    the Betas whose quantiles are Clopper-Pearson's bounds, Beta(x, n - x + 1) and
    Beta(x + 1, n - x), each stratum on the side that lowers (raises) every metric: precision,
    recall and F1 all rise with the true positives of the predicted-positive strata and fall with
    the misses of the others, so one stratum alone gives Clopper-Pearson's interval."""
    x, n = strata.events, strata.sampled
    miss = np.maximum(n - x, 0)
    if side == "jeffreys":
        rate = _beta(x + 0.5, miss + 0.5, draws, rng)
    else:
        up = strata.positive if side == "high" else ~strata.positive  # strata drawn on their upper side
        rate = _beta(np.where(up, x + 1, x), np.where(up, miss, miss + 1), draws, rng)
    rest = np.maximum(strata.cells - n, 0)
    unseen = np.where(strata.equal, rng.binomial(np.round(rest).astype(np.int64), rate), rate * strata.cells - x)
    events = np.clip(x + unseen, 0, strata.cells)
    tp = events[:, strata.positive].sum(axis=1)
    fp = (strata.cells[strata.positive] - events[:, strata.positive]).sum(axis=1)
    fn = events[:, ~strata.positive].sum(axis=1)
    return tp, fp, fn


def beta_intervals(
    strata: Strata, confidence: float, draws: int, seed: int, *, prior: str = "exact"
) -> dict[str, list[float]]:
    """Each metric's equal-tailed interval from `beta_totals` draws: `prior` "exact" takes the
    lower bound from the draws on the low side and the upper from those on the high side."""
    tail = (1 - confidence) / 2 * 100
    rng = np.random.default_rng(seed)
    if prior == "jeffreys":
        low = high = _ratios(*beta_totals(strata, draws, rng, side="jeffreys"))
    else:
        low = _ratios(*beta_totals(strata, draws, rng, side="low"))
        high = _ratios(*beta_totals(strata, draws, rng, side="high"))
    out = {}
    for metric in METRICS:
        lows, highs = low[metric][np.isfinite(low[metric])], high[metric][np.isfinite(high[metric])]
        out[metric] = [
            float(np.percentile(lows, tail)) if len(lows) else 0.0,
            float(np.percentile(highs, 100 - tail)) if len(highs) else 1.0,
        ]
    return out


def cells_needed(
    strata: Strata, metric: str, *, width: float, confidence: float, draws: int, seed: int
) -> tuple[str, int] | None:
    """The fewest more cells, in proportion to the sampled ones of the predicted-negative strata,
    the predicted-positive ones or both, that would bring `metric`'s interval to `width`, if the
    event rates stay at their posterior means: (which strata, how many more); None if not even
    reviewing every cell would (never, in principle: a census is exact)."""
    best: tuple[str, int] | None = None
    for group, mask in (
        ("predicted-negative", ~strata.positive),
        ("predicted-positive", strata.positive),
        ("all", np.ones(len(strata.names), dtype=bool)),
    ):
        if not mask.any():
            continue

        def scaled(factor: float, mask: np.ndarray = mask) -> tuple[Strata, int]:
            n = np.where(
                mask, np.minimum(strata.cells, np.ceil(np.maximum(strata.sampled, 1) * factor)), strata.sampled
            )
            rate = (strata.events + 0.5) / (strata.sampled + 1)
            x = np.where(mask, np.minimum(rate * n, n), strata.events)
            return Strata(strata.names, strata.cells, n, x, strata.positive, strata.equal), int(
                (n - strata.sampled).sum()
            )

        def narrow(factor: float, scaled=scaled) -> bool:
            low, high = beta_intervals(scaled(factor)[0], confidence, draws, seed)[metric]
            return high - low <= width

        high = 2.0
        while not narrow(high):
            if (scaled(high)[0].sampled[mask] >= strata.cells[mask]).all():
                high = 0
                break
            high *= 2
        if high == 0:
            continue
        low = high / 2 if high > 2 else 1.0
        for _ in range(8):
            middle = (low + high) / 2
            low, high = (low, middle) if narrow(middle) else (middle, high)
        more = scaled(high)[1]
        if best is None or more < best[1]:
            best = (group, more)
    return best


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


def metric_block(
    cells: SampledCells, rows: np.ndarray, replicate: np.ndarray, *, confidence: float, by_class: bool, seed: int
) -> dict[str, Any]:
    """Counts, estimates and the three intervals of the cells `rows` (a bool mask)."""
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
    strata = domain_strata(cells, rows, by_class=by_class)
    beta = beta_intervals(strata, confidence, len(replicate), seed)
    jeffreys = beta_intervals(strata, confidence, len(replicate), seed, prior="jeffreys")
    block: dict[str, Any] = {
        "sampled": {"cells": int(rows.sum()), "tp": int(tp.sum()), "fp": int(fp.sum()), "fn": int(fn.sum())},
        "estimated": totals,
        "strata": strata,  # taken out before the result is stored (estimate_cells)
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
        # the simulated interval is widened to hold its own estimate (Jeffreys: a sample with no miss, recall 1)
        held = {
            k: [min(v[metric][0], value), max(v[metric][1], value)] if defined else v[metric]
            for k, v in (("beta", beta), ("jeffreys", jeffreys))
        }
        block[metric] = {
            "estimate": value if defined else None,
            **held,
            "wilson": list(wilson_interval(value, effective[metric], confidence)),
            "bootstrap": bootstrap,
            "effective_n": effective[metric],
        }
    return block


WHAT_DECIDES = {
    "recall": ("misses", "predicted-negative"),
    "precision": ("false positives", "predicted-positive"),
    "f1": ("errors", "population"),
}


def cannot_tell(
    block: dict[str, Any], *, width: float, confidence: float, draws: int, seed: int
) -> list[dict[str, Any]]:
    """For each metric whose beta interval is wider than `width`: what the sample saw where that
    metric is decided, and how many more cells of which strata would narrow it to `width`."""
    strata: Strata = block["strata"]
    out = []
    for metric in METRICS:
        low, high = block[metric]["beta"]
        if high - low <= width:
            continue
        what, where = WHAT_DECIDES[metric]
        counts = block["sampled"]
        mask = {"recall": ~strata.positive, "precision": strata.positive}.get(metric, np.ones(len(strata.names), bool))
        seen = {"recall": counts["fn"], "precision": counts["fp"]}.get(metric, counts["fp"] + counts["fn"])
        looked = {"recall": counts["cells"] - counts["tp"] - counts["fp"], "precision": counts["tp"] + counts["fp"]}
        looked_at = looked.get(metric, counts["cells"])
        need = cells_needed(strata, metric, width=width, confidence=confidence, draws=draws, seed=seed)
        name = "F1" if metric == "f1" else metric
        line = (
            f"{name} cannot be bounded below {low:.2f} with this sample "
            f"({confidence:.0%} interval [{low:.3f}, {high:.3f}], wider than {width:g}): "
            f"{seen:,} {what} seen in {looked_at:,} of "
            f"{int(strata.cells[mask].sum()):,} {where} cells"
        )
        if need is not None:
            cells = (
                "cells (in proportion to all strata)"
                if need[0] == "all"
                else f"{need[0]} cells (in proportion to their strata)"
            )
            line += f"; review about {need[1]:,} more {cells} for width {width:g}"
        out.append(
            {
                "metric": metric,
                "interval": [low, high],
                "more_cells": None if need is None else need[1],
                "strata": None if need is None else need[0],
                "message": line,
            }
        )
    return out


def estimate_cells(
    cells: SampledCells,
    *,
    confidence: float,
    replicates: int,
    seed: int,
    max_width: float = 0.2,
    findings: list[str] | None = None,
) -> dict[str, Any]:
    """Overall (micro) and per-finding (`findings`, default every sampled one) estimates of a
    reviewed sample, and what the overall sample cannot tell. Overall, the beta interval pools
    the strata of each predicted class (x pi level for a Poisson sample) over findings: per
    finding x class, the few
    cells of each predicted-negative stratum leave its prior in charge, and summed over dozens
    of strata the priors alone push recall to near 0 (measured: BENCHMARKS.md)."""
    replicate = replicate_weights(cells, replicates, seed)
    everything = np.ones(len(cells.pi), dtype=bool)
    overall = metric_block(cells, everything, replicate, confidence=confidence, by_class=True, seed=seed)
    by_finding = {
        str(f): metric_block(cells, cells.finding == f, replicate, confidence=confidence, by_class=False, seed=seed)
        for f in (np.unique(cells.finding) if findings is None else findings)
    }
    tell = cannot_tell(overall, width=max_width, confidence=confidence, draws=min(replicates, 2000), seed=seed)
    for block in (overall, *by_finding.values()):
        del block["strata"]
    return {"overall": overall, "by_finding": by_finding, "cannot_tell": tell, "max_width": max_width}


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
    classes = np.asarray(table["predicted"].to_pylist(), dtype=object)
    cells = SampledCells(
        finding=np.asarray(table["finding"].to_pylist(), dtype=object),
        stratum=np.asarray(table["stratum"].to_pylist(), dtype=object),
        pi=table["inclusion_probability"].to_numpy(),
        predicted=np.isin(classes, positive_classes),
        truth=np.isin(truth_codes, positive_codes),
        poisson=sample["strategy"] == "suspicion",
        predicted_class=classes,
        population_strata=sample["params"].get("population_strata"),
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
        **estimate_cells(
            cells,
            confidence=request.confidence,
            replicates=request.replicates,
            seed=request.seed,
            max_width=request.max_width,
        ),
    }
    reviewed_id = store.run(request.reviewed).run_id
    estimate_id = store.add_estimate(
        sample["run_id"], sample_id=sample["sample_id"], reviewed_run_id=reviewed_id, result=result
    )
    return Estimate(estimate_id, result)
