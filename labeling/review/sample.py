"""`clala sample`: a review sample of a run's cells, with the inclusion probability of every
sampled cell, so that a review of the sample estimates the whole run's quality without bias
(`labeling.review.estimate`).

The population is every region-level cell of the run: each report the run finished x each
(region, finding) pair the vocabulary allows, over the findings the run has a region-level label
for (`all_findings`: every finding of the vocabulary, so that findings the run never reports can
show up as misses). Image-level rows (region NULL) are not region-level cells and are outside the
population. Each cell has the run's predicted class: present, uncertain, absent, or unmentioned
(no label there).

Strategies (pi = a cell's inclusion probability):
- `uniform`: a simple random sample of n cells without replacement; pi = n / N.
- `stratified`: strata are finding x predicted class. Every non-empty stratum gets one cell at
  least (so every cell has pi > 0); of the rest, a share (`present_share`, 0.5) goes to the
  predicted-present strata, which hold the true and false positives (precision), and the
  remainder to the other strata, where the misses hide (recall); within each group cells are
  allocated in proportion to the stratum sizes (largest remainder). A group with fewer cells
  than its share is sampled whole and the rest moves to the other group. Within a stratum, a
  simple random sample; pi_h = n_h / N_h. With `suspect_run` (--suspect RUN), the predicted-negative
  cells that another run marks present (or uncertain) get strata of their own ("finding | class |
  suspect"), and a share (`suspect_share`, 0.5) of the predicted-negative cells' n goes to them:
  the misses are most likely there, and their pi is recorded like any stratum's. The recommended
  design when recall or F1 is the question and another run (the combined run, another labeler)
  exists.
- `suspicion`: Poisson sampling with probability proportional to a suspicion score from an
  audit queue (`clala audit --out`: a CSV, or JSONL, with at least report_key, region, finding,
  suspicion; higher is more likely wrong), mixed with a uniform floor so that every cell can be drawn:
  pi_i = n * ((1 - floor) * s_i / sum(s) + floor / N), capped at 1 (the excess is spread over
  the others). Each cell is drawn independently with pi_i: the sample size is random, n on
  average. Cells the queue does not list have suspicion 0 (the floor only). Each sampled cell's
  stratum is its finding x predicted class x pi level ("finding | class | pi=0.0123"), and the
  population's cells of each are recorded (`population_strata`): within one level every cell has
  the same pi, so the cells drawn from it, given how many, are a simple random sample of it, and
  the estimate treats each level as a stratum of known size.

The same run, strategy, options and seed give the same sample (numpy's default_rng(seed), cells
in report, region, finding order).
"""

from __future__ import annotations

import csv
import json
import math
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

import numpy as np
import pyarrow as pa

from labeling.core.errors import InputError
from labeling.store.store import Store
from schemas.labels import ABSENT, PRESENT, UNCERTAIN, UNMENTIONED
from schemas.runs import RunInfo, RunStatus
from schemas.vocabulary import Vocabulary

STRATEGIES = ("uniform", "stratified", "suspicion")
CLASS_OF_CODE = {PRESENT: "present", UNCERTAIN: "uncertain", ABSENT: "absent", UNMENTIONED: "unmentioned"}
QUEUE_COLUMNS = ("report_key", "region", "finding", "suspicion")
SUSPECT_MARK = " | suspect"
LEVEL_MARK = " | pi="  # a Poisson sample's strata: finding | class | pi=<the level's inclusion probability>


@dataclass(kw_only=True)
class SampleRequest:
    """What to sample: `n` cells of `run` by `strategy`, seeded."""

    run: str
    n: int
    strategy: str = "stratified"
    seed: int = 0
    all_findings: bool = False
    present_share: float = 0.5  # stratified: share of n for the predicted-present strata
    suspicion: Path | None = None  # suspicion: the audit queue CSV
    floor: float = 0.2  # suspicion: share of the probability spread uniformly
    suspect_run: str | None = None  # stratified: predicted-negative cells this run marks present are suspect
    suspect_share: float = 0.5  # stratified: share of the predicted-negative cells' n for the suspect strata

    def check(self) -> None:
        if self.strategy not in STRATEGIES:
            raise InputError(f"--strategy: {self.strategy!r} is not one of {', '.join(STRATEGIES)}")
        if self.n < 1:
            raise InputError(f"--n: must be at least 1, not {self.n}")
        if not 0 <= self.present_share <= 1:
            raise InputError(f"--present-share: must lie in [0, 1], not {self.present_share}")
        if not 0 < self.floor <= 1:
            raise InputError(f"--floor: must lie in (0, 1], so that every cell can be drawn; not {self.floor}")
        if self.strategy == "suspicion" and self.suspicion is None:
            raise InputError("--suspicion: the suspicion strategy needs an audit queue CSV (clala audit --out)")
        if not 0 <= self.suspect_share <= 1:
            raise InputError(f"--suspect-share: must lie in [0, 1], not {self.suspect_share}")
        if self.suspect_run is not None and self.strategy != "stratified":
            raise InputError(
                f"--suspect: only the stratified strategy splits strata by a suspect run, not {self.strategy}"
            )
        if self.strategy != "suspicion" and self.suspicion is not None:
            raise InputError(f"--suspicion: only the suspicion strategy reads a queue, not {self.strategy}")


@dataclass
class Population:
    """A run's region-level cells: per cell its report, region, finding and predicted class."""

    run: RunInfo
    report_keys: np.ndarray  # int64[N]
    regions: np.ndarray  # object[N]
    findings: np.ndarray  # object[N]
    predicted: np.ndarray  # object[N]: present | uncertain | absent | unmentioned
    finding_names: tuple[str, ...]
    reports: int
    suspect: np.ndarray | None = None  # bool[N]: predicted negative here, present in the --suspect run

    @property
    def size(self) -> int:
        return len(self.report_keys)

    def level_strata(self, pi: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The finding x predicted class x pi level strata of a Poisson design with cells' `pi`:
        names, each cell's stratum, sizes (as `strata`)."""
        if self.suspect is not None:
            raise ValueError("a Poisson design's strata are not split by a suspect run")
        base, base_of, _ = self.strata
        levels, level_of = np.unique(pi, return_inverse=True)
        codes, inverse, sizes = np.unique(base_of * len(levels) + level_of, return_inverse=True, return_counts=True)
        names = np.array(
            [f"{base[c // len(levels)]}{LEVEL_MARK}{levels[c % len(levels)]:.12g}" for c in codes], dtype=object
        )
        return names, inverse, sizes  # names in code order: sorted by class stratum, then by pi

    @cached_property
    def strata(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The finding x predicted class strata: names ("finding | class"), each cell's stratum, sizes.
        Cached: a benchmark draws many samples of one population."""
        labels = np.char.add(np.char.add(self.findings.astype(str), " | "), self.predicted.astype(str))
        if self.suspect is not None:  # predicted-negative cells another run marks present: their own strata
            labels = np.where(self.suspect, np.char.add(labels, SUSPECT_MARK), labels)
        return np.unique(labels, return_inverse=True, return_counts=True)


@dataclass
class Sample:
    """A drawn sample: the indices of its cells in the population, their strata and pi."""

    population: Population
    strategy: str
    seed: int
    index: np.ndarray  # int64[n]
    stratum: np.ndarray  # object[n]
    pi: np.ndarray  # float64[n]
    strata: list[dict] = field(default_factory=list)  # stratum, population cells, sampled, pi
    params: dict = field(default_factory=dict)
    sample_id: int | None = None

    def cells(self) -> pa.Table:
        p = self.population
        return pa.table(
            {
                "report_key": pa.array(p.report_keys[self.index], pa.int64()),
                "region": pa.array(p.regions[self.index].tolist(), pa.string()),
                "finding": pa.array(p.findings[self.index].tolist(), pa.string()),
                "predicted": pa.array(p.predicted[self.index].tolist(), pa.string()),
                "stratum": pa.array(self.stratum.tolist(), pa.string()),
                "inclusion_probability": pa.array(self.pi, pa.float64()),
            }
        )


def read_population(store: Store, run: str, vocabulary: Vocabulary, *, all_findings: bool = False) -> Population:
    """Every region-level cell of a finished run, with the run's predicted class."""
    info = store.run(run)
    if info.status is not RunStatus.complete:
        raise InputError(f"run {info.name!r} is {info.status.value}; sample a complete run (finish it first)")
    keys = store.covered_reports(info.run_id)
    if len(keys) == 0:
        raise InputError(f"run {info.name!r} has finished no report; nothing to sample")
    found = store.run_findings(info.run_id, vocabulary.finding_names, region_level=True)
    unknown = [f for f in found if f not in vocabulary.finding_names]
    if unknown:
        raise InputError(
            f"run {info.name!r}: finding {unknown[0]!r} is not in vocabulary {vocabulary.version} (pass --vocabulary)"
        )
    findings = vocabulary.finding_names if all_findings else found
    if not findings:
        raise InputError(
            f"run {info.name!r} has no region-level label; its cells are all unmentioned "
            "(pass --all-findings to sample them anyway)"
        )
    regions = vocabulary.region_names
    pairs = [
        (r, f)
        for f, finding in enumerate(findings)
        for r, region in enumerate(regions)
        if vocabulary.allows(finding, region)
    ]
    region_index = np.array([r for r, _ in pairs], dtype=np.intp)
    finding_index = np.array([f for _, f in pairs], dtype=np.intp)
    codes = store.label_matrix(info.run_id, regions, findings, keys.tolist()).codes[:, region_index, finding_index]
    # cells in report, then (finding, region) vocabulary order
    predicted = np.empty(codes.shape, dtype=object)
    for code, name in CLASS_OF_CODE.items():
        predicted[codes == code] = name
    n_pairs = len(pairs)
    return Population(
        run=info,
        report_keys=np.repeat(keys, n_pairs),
        regions=np.tile(np.asarray(regions, dtype=object)[region_index], len(keys)),
        findings=np.tile(np.asarray(findings, dtype=object)[finding_index], len(keys)),
        predicted=predicted.ravel(),
        finding_names=tuple(findings),
        reports=len(keys),
    )


def population_codes(store: Store, population: Population, run: str | int) -> np.ndarray:
    """Run `run`'s label code (schemas.labels) at each of the population's cells."""
    regions, region_index = np.unique(population.regions.astype(str), return_inverse=True)
    findings, finding_index = np.unique(population.findings.astype(str), return_inverse=True)
    keys, row = np.unique(population.report_keys, return_inverse=True)
    codes = store.label_matrix(run, regions.tolist(), findings.tolist(), keys.tolist()).codes
    return codes[row, region_index, finding_index]


def suspect_cells(store: Store, population: Population, run: str) -> np.ndarray:
    """The population's predicted-negative cells that run `run` marks present (or uncertain):
    where this run's misses most likely are."""
    info = store.run(run)
    if info.run_id == population.run.run_id:
        raise InputError(f"--suspect: run {info.name!r} is the run being sampled; give another run")
    marked = np.isin(population_codes(store, population, info.run_id), [PRESENT, UNCERTAIN])
    return marked & ~np.isin(population.predicted, ["present", "uncertain"])


def sample_run(store: Store, request: SampleRequest, vocabulary: Vocabulary) -> Sample:
    """Draw a sample of a run's cells and store it (its id in `sample_id`)."""
    request.check()
    population = read_population(store, request.run, vocabulary, all_findings=request.all_findings)
    if request.suspect_run is not None:
        population.suspect = suspect_cells(store, population, request.suspect_run)
    sample = draw_sample(population, request)
    store_sample(store, sample)
    return sample


def draw_sample(population: Population, request: SampleRequest) -> Sample:
    """Draw (not store) a sample of a population's cells."""
    request.check()
    if request.n > population.size:
        raise InputError(
            f"--n: {request.n:,} is more than the {population.size:,} cells of run {population.run.name!r} "
            f"({population.reports:,} reports x {len(population.finding_names)} findings' allowed regions)"
        )
    rng = np.random.default_rng(request.seed)
    params = {
        "population": population.size,
        "reports": population.reports,
        "findings": list(population.finding_names),
        "all_findings": request.all_findings,
        "requested_n": request.n,
        # the population's finding x predicted class sizes: the estimate post-stratifies on them
        "population_strata": {str(k): int(v) for k, v in zip(population.strata[0], population.strata[2])},
    }
    if request.strategy == "uniform":
        index = np.sort(rng.choice(population.size, size=request.n, replace=False))
        pi = np.full(request.n, request.n / population.size)
        strata = [{"stratum": "all", "cells": population.size, "sampled": request.n, "pi": request.n / population.size}]
        stratum = np.full(request.n, "all", dtype=object)
    elif request.strategy == "stratified":
        index, stratum, pi, strata = _stratified(population, request, rng)
        params["present_share"] = request.present_share
        if request.suspect_run is not None:
            params.update(suspect_run=request.suspect_run, suspect_share=request.suspect_share)
    else:
        assert request.suspicion is not None
        scores = read_suspicion(request.suspicion, population)
        every = poisson_probabilities(scores, request.n, request.floor)
        index = np.flatnonzero(rng.random(len(scores)) < every)
        pi = every[index]
        if len(index) == 0:
            raise InputError(f"--n {request.n}: the Poisson draw with seed {request.seed} drew no cell; raise --n")
        names, inverse, sizes = population.level_strata(every)
        stratum = names[inverse[index]].astype(object)
        params["population_strata"] = {str(k): int(v) for k, v in zip(names, sizes)}
        drawn = np.bincount(inverse[index], minlength=len(names))
        level = every[np.unique(inverse, return_index=True)[1]]
        strata = [
            {"stratum": str(name), "cells": int(sizes[h]), "sampled": int(drawn[h]), "pi": float(level[h])}
            for h, name in enumerate(names)
        ]
        params.update(
            floor=request.floor,
            suspicion_file=str(request.suspicion.resolve()),
            scored_cells=int((scores > 0).sum()),
        )
    return Sample(population, request.strategy, request.seed, index, stratum, pi, strata, params)


def _stratified(
    population: Population, request: SampleRequest, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[dict]]:
    names, inverse, sizes = population.strata
    positive = np.array([name.endswith(" | present") for name in names])
    if len(names) > request.n:
        raise InputError(
            f"--n: {request.n:,} is fewer than the {len(names):,} strata (finding x predicted class) of run "
            f"{population.run.name!r}; stratified sampling takes one cell of each at least: raise --n, or use uniform"
        )
    allocation = np.zeros(len(names), dtype=np.int64)
    suspect = np.array([name.endswith(SUSPECT_MARK) for name in names])
    n_positive, n_other = _split(request.n, request.present_share, sizes[positive], sizes[~positive])
    n_suspect, n_rest = _split(n_other, request.suspect_share, sizes[suspect], sizes[~positive & ~suspect])
    allocation[positive] = allocate(n_positive, sizes[positive])
    allocation[suspect] = allocate(n_suspect, sizes[suspect])
    allocation[~positive & ~suspect] = allocate(n_rest, sizes[~positive & ~suspect])
    chosen, strata_of, pi = [], [], []
    strata = []
    order = np.argsort(inverse, kind="stable")
    starts = np.concatenate([[0], np.cumsum(sizes)])
    for h, name in enumerate(names):
        members = order[starts[h] : starts[h + 1]]  # the stratum's cells, in population order
        picked = np.sort(rng.choice(members, size=int(allocation[h]), replace=False))
        chosen.append(picked)
        strata_of.append(np.full(len(picked), name, dtype=object))
        pi.append(np.full(len(picked), allocation[h] / sizes[h]))
        strata.append(
            {
                "stratum": str(name),
                "cells": int(sizes[h]),
                "sampled": int(allocation[h]),
                "pi": allocation[h] / sizes[h],
            }
        )
    index = np.concatenate(chosen)
    keep = np.argsort(index, kind="stable")
    return index[keep], np.concatenate(strata_of)[keep], np.concatenate(pi)[keep], strata


def _split(total: int, share: float, first: np.ndarray, second: np.ndarray) -> tuple[int, int]:
    """`total` cells between two groups of strata: `share` to the first, each group between one
    cell a stratum and all its cells (the excess moves to the other group)."""
    n_first = min(max(round(total * share), len(first)), int(first.sum()))
    n_second = total - n_first
    if n_second > second.sum():
        n_second = int(second.sum())
    if n_second < len(second):
        n_second = len(second)
    return total - n_second, n_second


def allocate(total: int, sizes: np.ndarray) -> np.ndarray:
    """`total` cells over strata of `sizes`: one each at least, the rest in proportion to the sizes
    by largest remainder, never more than a stratum holds."""
    sizes = np.asarray(sizes, dtype=np.int64)
    if len(sizes) == 0:
        return sizes
    assert len(sizes) <= total <= sizes.sum()
    counts = np.ones(len(sizes), dtype=np.int64)
    while counts.sum() < total:
        room = sizes - counts
        left = total - counts.sum()
        share = np.where(room > 0, sizes, 0).astype(float)
        quota = left * share / share.sum()
        extra = np.minimum(np.floor(quota).astype(np.int64), room)
        if extra.sum() == 0:  # the remainders: the largest ones that have room get one each
            remainder = np.where(room > 0, quota - np.floor(quota), -1.0)
            extra = np.zeros_like(counts)
            extra[np.argsort(-remainder, kind="stable")[:left]] = 1
            extra = np.minimum(extra, room)
        counts += extra
    return counts


def poisson_probabilities(scores: np.ndarray, n: int, floor: float) -> np.ndarray:
    """Each cell's pi: n * ((1 - floor) * score share + floor / N), capped at 1 with the excess
    spread over the others, so that the pi sum to n (the expected sample size)."""
    size = len(scores)
    weight = (1 - floor) * scores / scores.sum() + floor / size
    pi = np.zeros(size)
    capped = np.zeros(size, dtype=bool)
    for _ in range(size):  # ends in a few rounds: each round caps more cells or none
        free = ~capped
        pi[free] = (n - capped.sum()) * weight[free] / weight[free].sum()
        over = free & (pi >= 1)
        if not over.any():
            break
        capped |= over
        pi[capped] = 1.0
    return pi


def _queue_rows(path: Path) -> list[tuple[int, dict]]:
    """(line number, row) of an audit queue: CSV, or JSONL (one object per line) by the suffix."""
    if not path.is_file():
        raise InputError(f"{path}: file not found (an audit queue CSV or JSONL, from clala audit --out)")
    with path.open(encoding="utf-8", newline="") as handle:
        if path.suffix.lower() == ".jsonl":
            rows = []
            for line, text in enumerate(handle, start=1):
                if text.strip():
                    try:
                        row = json.loads(text)
                    except json.JSONDecodeError as exc:
                        raise InputError(f"{path}: line {line}: not JSON ({exc.msg})") from None
                    if not isinstance(row, dict):
                        raise InputError(f"{path}: line {line}: not a JSON object")
                    rows.append((line, row))
            columns = set(rows[0][1]) if rows else set()
        else:
            reader = csv.DictReader(handle)
            rows = list(enumerate(reader, start=2))
            columns = set(reader.fieldnames or [])
    missing = [c for c in QUEUE_COLUMNS if c not in columns]
    if missing:
        raise InputError(
            f"{path}: no column {missing[0]!r} (columns: {', '.join(sorted(columns))}); "
            f"an audit queue has {', '.join(QUEUE_COLUMNS)}"
        )
    return rows


def read_suspicion(path: Path, population: Population) -> np.ndarray:
    """Each population cell's suspicion from an audit queue (0 where the queue has none)."""
    rows = _queue_rows(path)
    position = {
        (int(k), r, f): i
        for i, (k, r, f) in enumerate(zip(population.report_keys, population.regions, population.findings))
    }
    scores = np.zeros(population.size)
    for line, row in rows:
        try:
            key, score = int(row["report_key"]), float(row["suspicion"])
        except (TypeError, ValueError):
            raise InputError(
                f"{path}: line {line}: report_key {row['report_key']!r} or suspicion {row['suspicion']!r} "
                "is not a number"
            ) from None
        if not math.isfinite(score) or score < 0:
            raise InputError(f"{path}: line {line}: suspicion {row['suspicion']!r} must be a finite number >= 0")
        cell = position.get((key, row["region"], row["finding"]))
        if cell is not None:  # image-level rows and cells outside the population are not sampled
            scores[cell] = max(scores[cell], score)
    if scores.sum() == 0:
        raise InputError(
            f"{path}: no row names a cell of run {population.run.name!r} with a suspicion above 0 "
            "(is it the queue of this run?)"
        )
    return scores


def store_sample(store: Store, sample: Sample) -> int:
    """Write the sample and its cells; its id."""
    sample.sample_id = store.add_sample(
        sample.population.run.run_id,
        strategy=sample.strategy,
        seed=sample.seed,
        params={**sample.params, "strata": sample.strata},
        cells=sample.cells(),
    )
    return sample.sample_id
