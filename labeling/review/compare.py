"""Comparison of label runs: percent agreement, Cohen's kappa, precision, recall and F1 of one run
against a reference, per finding, per region and overall, at region or image level.

Semantics, fixed here and recorded with every result:
- Only reports both runs finished (`Store.covered_reports`) are compared.
- A cell is (report, region, finding) at region level, (report, finding) at image level, over
  the vocabulary's regions x the compared findings. Unmentioned (no row) counts as absent, the
  way a report that says nothing about a finding is read; so agreement and kappa include the
  many negative/negative cells, while precision, recall and F1 do not depend on them.
- Image level collapses each run's regions (and its image-level rows) first: any present ->
  present, else any uncertain -> uncertain, else absent (`schemas.labels.CODE_PRECEDENCE`).
- The uncertain policy says what an uncertain label becomes: `positive`, `negative`,
  `exclude` (a cell uncertain on either side leaves that finding's statistics, and is counted as
  excluded), or `own-class` (three classes for agreement and kappa; precision, recall and F1 are
  about `present`, uncertain counting as not present).
- Micro: counts pooled over all compared cells. Macro: the mean over findings with any positive
  in the run or the reference (tp + fp + fn > 0); there an undefined precision or recall (no
  positive on one side) counts as 0, as scikit-learn's zero_division=0 does, and agreement and
  kappa are averaged over the same findings, leaving out an undefined kappa.
- Kappa is undefined (NaN, shown as "—") when both sides put every cell in the same one class.

Everything is computed on the int8 code arrays with numpy: each cell gets one of ten joint bins
(3 x 3 classes of run and reference, plus "excluded"), and one `bincount` gives every cell
group's confusion counts; all metrics are derived from those counts.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from labeling.core.errors import InputError
from labeling.review.hierarchy import roll_up
from labeling.review.no_location import NO_LOCATION_CHOICES, in_default_regions
from labeling.store.store import LabelMatrix, Store
from schemas.labels import ABSENT, PRESENT, UNCERTAIN, UNMENTIONED
from schemas.vocabulary import CATEGORIES, Vocabulary, load_vocabulary

UNCERTAIN_POLICIES = ("exclude", "positive", "negative", "own-class")
LEVELS = ("region", "image")
METRICS = ("f1", "kappa", "agreement", "precision", "recall")

# Classes of a cell after the uncertain policy; bins are run_class * 3 + reference_class.
NEGATIVE, POSITIVE, UNCERTAIN_CLASS = 0, 1, 2
EXCLUDED_BIN = 9
N_BINS = 10
TP_BIN = POSITIVE * 3 + POSITIVE
FP_BINS = (POSITIVE * 3 + NEGATIVE, POSITIVE * 3 + UNCERTAIN_CLASS)
FN_BINS = (NEGATIVE * 3 + POSITIVE, UNCERTAIN_CLASS * 3 + POSITIVE)
AGREE_BINS = (0, 4, 8)
_CODES = (UNMENTIONED, UNCERTAIN, ABSENT, PRESENT)  # code + 2 indexes this order


def _class_of_code(policy: str) -> dict[int, int | None]:
    """Code -> class under an uncertain policy (None: the cell is excluded)."""
    uncertain = {"positive": POSITIVE, "negative": NEGATIVE, "own-class": UNCERTAIN_CLASS, "exclude": None}[policy]
    return {UNMENTIONED: NEGATIVE, ABSENT: NEGATIVE, PRESENT: POSITIVE, UNCERTAIN: uncertain}


def joint_bin_table(policy: str) -> np.ndarray:
    """16 entries: bin of the cell whose run code is a and reference code is b, at index
    ((a + 2) << 2) | (b + 2)."""
    classes = _class_of_code(policy)
    table = np.empty(16, dtype=np.uint8)
    for a in _CODES:
        for b in _CODES:
            ca, cb = classes[a], classes[b]
            table[((a + 2) << 2) | (b + 2)] = EXCLUDED_BIN if ca is None or cb is None else ca * 3 + cb
    return table


def cell_bins(codes_run: np.ndarray, codes_reference: np.ndarray, policy: str) -> np.ndarray:
    """Joint bin (0-9) of every cell, same shape as the code arrays."""
    index = ((codes_run.astype(np.uint8) + 2) & 3) << 2 | ((codes_reference.astype(np.uint8) + 2) & 3)
    return joint_bin_table(policy)[index]


def bin_counts(bins: np.ndarray) -> np.ndarray:
    """Confusion counts per cell group: bins[report, *group] -> counts[*group, N_BINS]."""
    groups = int(np.prod(bins.shape[1:], dtype=np.int64))
    flat = bins.reshape(bins.shape[0], groups).astype(np.int32)
    flat += (np.arange(groups, dtype=np.int32) * N_BINS)[None, :]
    counts = np.bincount(flat.ravel(), minlength=groups * N_BINS)
    return counts.reshape(*bins.shape[1:], N_BINS).astype(np.int64)


def metrics_from_counts(counts: np.ndarray) -> dict[str, np.ndarray]:
    """Every metric for each group of counts[..., N_BINS] (vectorized over the leading axes)."""
    counts = np.asarray(counts, dtype=np.int64)
    joint = counts[..., :9].reshape(*counts.shape[:-1], 3, 3)
    n = joint.sum(axis=(-1, -2))
    tp = counts[..., TP_BIN]
    fp = counts[..., list(FP_BINS)].sum(axis=-1)
    fn = counts[..., list(FN_BINS)].sum(axis=-1)
    agree = counts[..., list(AGREE_BINS)].sum(axis=-1)
    # Kappa in integers: (N * agree - sum_k row_k col_k) / (N^2 - sum_k row_k col_k).
    chance = (joint.sum(axis=-1) * joint.sum(axis=-2)).sum(axis=-1)
    kappa_den = n * n - chance
    with np.errstate(divide="ignore", invalid="ignore"):
        return {
            "cells": n,
            "excluded": counts[..., EXCLUDED_BIN],
            "tp": tp,
            "fp": fp,
            "fn": fn,
            "tn": n - tp - fp - fn,
            "support": tp + fn,
            "agreement": np.where(n > 0, agree / np.maximum(n, 1), np.nan),
            "kappa": np.where(kappa_den > 0, (n * agree - chance) / np.where(kappa_den > 0, kappa_den, 1), np.nan),
            "precision": np.where(tp + fp > 0, tp / np.maximum(tp + fp, 1), np.nan),
            "recall": np.where(tp + fn > 0, tp / np.maximum(tp + fn, 1), np.nan),
            "f1": np.where(tp + fp + fn > 0, 2 * tp / np.maximum(2 * tp + fp + fn, 1), np.nan),
            # Cells where either side says something other than "negative": where a metric means something.
            "informative": n - counts[..., 0],
        }


@dataclass(frozen=True)
class MetricRow:
    """One row of a comparison table: a finding, a region, or the micro/macro summary."""

    scope: str  # finding | region | micro | macro
    name: str
    cells: int  # compared cells (excluded ones not counted)
    excluded: int  # cells left out by --uncertain exclude
    tp: int
    fp: int
    fn: int
    tn: int
    support: int  # reference positives (tp + fn)
    agreement: float
    kappa: float
    precision: float
    recall: float
    f1: float


def _rows(scope: str, names: Sequence[str], counts: np.ndarray) -> list[MetricRow]:
    m = metrics_from_counts(counts)
    return [
        MetricRow(
            scope,
            name,
            *(int(m[k][i]) for k in ("cells", "excluded", "tp", "fp", "fn", "tn", "support")),
            *(float(m[k][i]) for k in ("agreement", "kappa", "precision", "recall", "f1")),
        )
        for i, name in enumerate(names)
    ]


def macro_row(rows: Sequence[MetricRow]) -> MetricRow:
    """Mean over findings with any positive on either side (see the module docstring)."""
    used = [r for r in rows if r.tp + r.fp + r.fn > 0]
    if not used:
        return MetricRow("macro", "macro", 0, 0, 0, 0, 0, 0, 0, *([float("nan")] * 5))

    def zero_if_nan(values):
        return float(np.mean(np.nan_to_num(np.asarray(values, dtype=float), nan=0.0)))

    kappas = np.asarray([r.kappa for r in used], dtype=float)
    return MetricRow(
        "macro",
        f"macro ({len(used)} findings)",
        sum(r.cells for r in used),
        sum(r.excluded for r in used),
        sum(r.tp for r in used),
        sum(r.fp for r in used),
        sum(r.fn for r in used),
        sum(r.tn for r in used),
        sum(r.support for r in used),
        float(np.mean([r.agreement for r in used])),
        float(np.nanmean(kappas)) if np.isfinite(kappas).any() else float("nan"),
        zero_if_nan([r.precision for r in used]),
        zero_if_nan([r.recall for r in used]),
        zero_if_nan([r.f1 for r in used]),
    )


@dataclass
class Comparison:
    """`run` scored against `reference` over the reports both finished."""

    run: str
    reference: str
    level: str
    uncertain: str
    vocabulary: str
    reports: int  # reports compared (covered by both)
    reports_run: int  # reports each run covers
    reports_reference: int
    findings: tuple[str, ...]
    regions: tuple[str, ...]  # empty at image level
    cell_counts: np.ndarray  # [region, finding, N_BINS] (region level) or [finding, N_BINS]
    findings_left_out: tuple[str, ...] = ()  # vocabulary findings not compared
    notes: list[str] = field(default_factory=list)
    roll_up: bool = False  # specific findings were rolled up to their ancestors (hierarchy.py)

    @property
    def finding_counts(self) -> np.ndarray:
        return self.cell_counts.sum(axis=0) if self.level == "region" else self.cell_counts

    @property
    def region_counts(self) -> np.ndarray:
        return self.cell_counts.sum(axis=1) if self.level == "region" else np.zeros((0, N_BINS), np.int64)

    @property
    def by_finding(self) -> list[MetricRow]:
        return _rows("finding", self.findings, self.finding_counts)

    @property
    def by_region(self) -> list[MetricRow]:
        return _rows("region", self.regions, self.region_counts) if self.level == "region" else []

    @property
    def micro(self) -> MetricRow:
        row = _rows("micro", ["micro"], self.finding_counts.sum(axis=0, keepdims=True))[0]
        return row

    @property
    def macro(self) -> MetricRow:
        return macro_row(self.by_finding)

    @property
    def excluded(self) -> int:
        return int(self.cell_counts[..., EXCLUDED_BIN].sum())

    def finding_values(self, metric: str) -> np.ndarray:
        """`metric` per finding, NaN where no cell has a positive (or an uncertain, under
        own-class) on either side: nothing there to score."""
        _check_metric(metric)
        m = metrics_from_counts(self.finding_counts)
        return np.where(m["informative"] > 0, m[metric], np.nan).astype(float)

    def grid(self, metric: str) -> np.ndarray:
        """findings x regions of `metric` per cell group (region level), NaN where no cell has a
        positive (or an uncertain, under own-class) on either side."""
        _check_metric(metric)
        if self.level != "region":
            raise InputError("a findings x regions grid needs a region-level comparison")
        m = metrics_from_counts(self.cell_counts)
        values = np.where(m["informative"] > 0, m[metric], np.nan)
        return values.T.astype(float)

    def settings(self) -> dict:
        return {
            "run": self.run,
            "reference": self.reference,
            "level": self.level,
            "uncertain": self.uncertain,
            "vocabulary": self.vocabulary,
            "reports": self.reports,
            "reports_run": self.reports_run,
            "reports_reference": self.reports_reference,
            "findings": list(self.findings),
            "findings_left_out": list(self.findings_left_out),
            "excluded_cells": self.excluded,
            "notes": list(self.notes),
            "unmentioned": "absent",
            "roll_up": self.roll_up,
            "macro": "mean over findings with tp+fp+fn > 0",
        }


def _check_metric(metric: str) -> None:
    if metric not in METRICS:
        raise InputError(f"--metric: {metric!r} is not one of {', '.join(METRICS)}")


@dataclass(frozen=True)
class CompareOptions:
    """How runs are compared: at `level` (region or image), over `findings` (default: those present
    or uncertain in any run) and `regions` (region level; default: all), reading uncertain labels
    by the `uncertain` policy, in `vocabulary`'s cells (default: the shipped one, every category)."""

    level: str = "region"
    findings: Sequence[str] | None = None
    regions: Sequence[str] | None = None
    uncertain: str = "exclude"
    vocabulary: Vocabulary | str | None = None
    roll_up: bool = False  # a specific finding present implies its generic ancestors (hierarchy.py)
    # region level: region-less labels are left out (clala's rule) or read in their finding's default
    # regions, the other choice, to measure it (no_location.py)
    no_location: str = "region-less"


# --- reading runs ------------------------------------------------------------------------------
def check_options(level: str, uncertain: str) -> None:
    if level not in LEVELS:
        raise InputError(f"--level: {level!r} is not one of {', '.join(LEVELS)}")
    if uncertain not in UNCERTAIN_POLICIES:
        raise InputError(f"--uncertain: {uncertain!r} is not one of {', '.join(UNCERTAIN_POLICIES)}")


def comparison_vocabulary(vocabulary: Vocabulary | str | None) -> Vocabulary:
    """The vocabulary cells are laid out in: by default the shipped file with every category, so
    that no run's finding is dropped because a category was not enabled."""
    if isinstance(vocabulary, Vocabulary):
        return vocabulary
    try:
        return load_vocabulary(vocabulary, categories=list(CATEGORIES))
    except (ValueError, FileNotFoundError) as exc:
        raise InputError(str(exc)) from None


def select_names(
    kind: str, asked: Sequence[str] | None, known: Sequence[str], vocab: Vocabulary
) -> tuple[str, ...] | None:
    if not asked:
        return None
    unknown = [name for name in asked if name not in known]
    if unknown:
        raise InputError(f"--{kind}: {unknown[0]!r} is not a {kind[:-1]} of vocabulary {vocab.version}")
    return tuple(dict.fromkeys(asked))


def common_reports(store: Store, runs: Sequence[str]) -> tuple[np.ndarray, dict[str, int]]:
    """Report keys every run finished, and how many each finished."""
    covered = {run: store.covered_reports(run) for run in runs}
    common = covered[runs[0]]
    for run in runs[1:]:
        common = np.intersect1d(common, covered[run])
    if len(common) == 0:
        counts = ", ".join(f"{run!r} covers {len(keys):,}" for run, keys in covered.items())
        raise InputError(f"runs have no report in common ({counts} reports)")
    return common, {run: len(keys) for run, keys in covered.items()}


def _label_audit(store: Store, run: str, report_keys: np.ndarray, vocab: Vocabulary) -> dict[str, int]:
    """Counts of a run's labels (on the compared reports) that no cell can hold, so that they are
    reported rather than silently ignored; also whether the run has regional labels at all."""
    return store.label_audit(store.run(run).run_id, report_keys.tolist(), vocab.finding_names, vocab.region_names)


def run_matrices(
    store: Store, runs: Sequence[str], report_keys: np.ndarray, level: str, vocab: Vocabulary, regions: Sequence[str]
) -> tuple[dict[str, LabelMatrix], list[str]]:
    """Each run's code matrix over all vocabulary findings on `report_keys`, with notes on labels
    that could not be placed. A region-level read of an image-level-only run is an InputError."""
    notes: list[str] = []
    matrices = {}
    for run in runs:
        audit = _label_audit(store, run, report_keys, vocab)
        if level == "region" and audit["run_labels"] and not audit["run_regional"]:
            raise InputError(
                f"run {run!r} has image-level labels only (no regions), so it cannot be compared "
                f"region by region; use --level image"
            )
        info = store.run(run)
        if info.status.value != "complete":
            notes.append(f"run {run!r} is {info.status.value}; only the reports it finished are compared")
        if audit["unknown_finding"]:
            notes.append(
                f"run {run!r}: {audit['unknown_finding']:,} labels name findings outside vocabulary "
                f"{vocab.version} and are not compared"
            )
        if audit["unknown_region"]:
            notes.append(
                f"run {run!r}: {audit['unknown_region']:,} labels name regions outside the vocabulary "
                "and are not compared"
            )
        if level == "region" and audit["image_level"]:
            notes.append(
                f"run {run!r}: {audit['image_level']:,} image-level labels (no region) are not "
                "compared at region level (use --level image)"
            )
        read = store.label_matrix if level == "region" else store.image_matrix
        matrices[run] = read(run, regions, vocab.finding_names, report_keys=report_keys.tolist())
    return matrices, notes


def occurring_findings(matrices: Sequence[LabelMatrix]) -> np.ndarray:
    """Boolean per vocabulary finding: present or uncertain somewhere in any of the matrices."""
    occurs = np.zeros(matrices[0].codes.shape[-1], dtype=bool)
    for matrix in matrices:
        codes = matrix.codes.reshape(-1, matrix.codes.shape[-1])
        occurs |= ((codes == PRESENT) | (codes == UNCERTAIN)).any(axis=0)
    return occurs


# --- comparing ---------------------------------------------------------------------------------
@dataclass
class _Compared:
    """What every scored run shares: the reference, the matrices, the compared findings and cells."""

    reference: str
    matrices: dict[str, LabelMatrix]
    finding_index: np.ndarray
    options: CompareOptions
    vocab: Vocabulary
    regions: Sequence[str]
    reports: int
    covered: dict[str, int]
    left_out: tuple[str, ...]
    notes: list[str]


def _score(run: str, compared: _Compared) -> Comparison:
    c = compared
    codes_run = c.matrices[run].codes[..., c.finding_index]
    codes_ref = c.matrices[c.reference].codes[..., c.finding_index]
    counts = bin_counts(cell_bins(codes_run, codes_ref, c.options.uncertain))
    return Comparison(
        run=run,
        reference=c.reference,
        level=c.options.level,
        uncertain=c.options.uncertain,
        vocabulary=c.vocab.version,
        reports=c.reports,
        reports_run=c.covered[run],
        reports_reference=c.covered[c.reference],
        findings=tuple(c.vocab.finding_names[i] for i in c.finding_index),
        regions=tuple(c.regions) if c.options.level == "region" else (),
        cell_counts=counts,
        findings_left_out=c.left_out,
        notes=list(c.notes),
        roll_up=c.options.roll_up,
    )


def compare_to_reference(
    store: Store, runs: Sequence[str], reference: str, options: CompareOptions | None = None
) -> list[Comparison]:
    """Score each of `runs` against `reference`, all over the reports every one of them finished
    (so the comparisons are side by side) and over the same findings."""
    options = options or CompareOptions()
    level = options.level
    check_options(level, options.uncertain)
    if options.no_location not in NO_LOCATION_CHOICES:
        raise InputError(f"--no-location: {options.no_location!r} is not one of {', '.join(NO_LOCATION_CHOICES)}")
    names = [store.run(r).name for r in runs]
    reference = store.run(reference).name
    if reference in names:
        raise InputError(f"run {reference!r} is the reference; it cannot also be scored against itself")
    if not names:
        raise InputError("name at least one run to score against the reference")
    vocab = comparison_vocabulary(options.vocabulary)
    chosen_findings = select_names("findings", options.findings, vocab.finding_names, vocab)
    chosen_regions = select_names("regions", options.regions, vocab.region_names, vocab)
    if chosen_regions and level == "image":
        raise InputError("--regions applies to --level region; image level collapses every region")
    regions = chosen_regions or vocab.region_names
    all_runs = [*names, reference]
    report_keys, covered = common_reports(store, all_runs)
    matrices, notes = run_matrices(store, all_runs, report_keys, level, vocab, regions)
    if level == "region" and options.no_location == "default-regions":
        for run, m in matrices.items():
            read = store.placeless_matrix(run, m.findings, report_keys.tolist())
            row_of = {int(k): i for i, k in enumerate(read.report_keys)}
            placeless = read.codes[[row_of[int(k)] for k in m.report_keys]]
            matrices[run] = dataclasses.replace(
                m, codes=in_default_regions(m.codes, placeless, regions, m.findings, vocab)
            )
        notes.append("region-less labels read in their finding's default regions (--no-location default-regions)")
    if options.roll_up:
        matrices = {
            run: dataclasses.replace(m, codes=roll_up(m.codes, m.findings, vocab)) for run, m in matrices.items()
        }
        notes.append("findings rolled up the vocabulary's hierarchy: a specific finding implies its ancestors")
    if chosen_findings:
        finding_index = np.asarray([vocab.finding_names.index(f) for f in chosen_findings], dtype=np.intp)
    else:
        finding_index = np.flatnonzero(occurring_findings(list(matrices.values())))
    chosen = set(finding_index.tolist())
    left_out = tuple(f for i, f in enumerate(vocab.finding_names) if i not in chosen)
    compared = _Compared(
        reference, matrices, finding_index, options, vocab, regions, len(report_keys), covered, left_out, notes
    )
    return [_score(run, compared) for run in names]


def compare_runs(
    store: Store, run_a: str, run_b: str, options: CompareOptions | None = None, *, reference: str | None = None
) -> Comparison:
    """Compare two runs over the reports both finished. The reference is `run_b` unless
    `reference` names `run_a`; the other run is scored against it (its labels are the
    "predictions" of precision and recall). To score several runs against a third one, use
    `compare_to_reference`."""
    a, b = store.run(run_a).name, store.run(run_b).name
    if a == b:
        raise InputError(f"run {a!r} given twice; compare two different runs")
    ref = b if reference is None else store.run(reference).name
    if ref not in (a, b):
        raise InputError(
            f"reference {ref!r} is neither {a!r} nor {b!r}; to score several runs against a third, "
            f"use `clala compare {a} {b} --reference {ref}`"
        )
    scored = a if ref == b else b
    return compare_to_reference(store, [scored], ref, options)[0]
