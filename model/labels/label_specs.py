"""Label specs: a training label matrix defined as a source run + an uncertainty policy + seeded
corruptions, so that label quality becomes an experimental knob (see docs/architecture.md).

A `LabelSpec` is applied to the source run's labels: its region-level code matrix and its
region-less labels (the no-location rule, README "Label semantics": "no pneumothorax", "mild
atelectasis" have no region, one image-level code per finding), in this order:

1. keep: a fraction `keep` of the reports stays labeled (exactly round(keep * n), at least one);
   the others leave the matrix.
2. uncertainty policy (`model.labels.targets.apply_uncertainty`, the one definition): uncertain
   cells and region-less labels become present (`positive`) or absent (`negative`), or stay
   uncertain and are masked out of training (`ignore`).
3. corruptions, all decided on the matrix of step 2 (so they never act on each other's output):
   - drop: each present cell, and each present region-less label, becomes unmentioned with
     probability `drop` (omissions);
   - shift: each present cell that was not dropped moves, with probability `shift`, to a
     neighbouring region (see `SAME_SIDE_NEIGHBOURS` and `--shift-side`) that the vocabulary
     allows for its finding, chosen uniformly among those; the cell it leaves becomes
     unmentioned. A label whose region has no allowed neighbour stays (counted in `counts`), and
     so does a region-less label: it has no region to move from (it is not `shift_eligible`);
   - add: each absent or unmentioned region cell that the vocabulary allows becomes present with
     probability `add` (false positives). Additions are region cells only: a false positive is
     placed, and a region-less label is never made up.

Every random decision is a hash of (seed, decision kind, report key, region name, finding name),
with region name "" for a region-less label, not a draw from a stream, so a cell's fate does not
depend on which other findings are in the matrix or how its rows are ordered: over the same
reports, the matrix built for a trainer's lesion subset agrees cell for cell with the derived run
saved for all the source's findings; and a grid is nested (the labels dropped at p = 0.1 are among
those dropped at p = 0.2 with the same seed).

The training mask is False exactly where a cell is still uncertain (policy `ignore`); unmentioned
cells count as negative, as `model.data.dataset.build_examples` reads them by default. A derived run
stores the matrix after the policy, region-less labels as region-less rows, so training on it with
`uncertain="ignore"` reproduces the same targets and masks, region and image level
(`DerivedMatrix.training_targets`: both through `model.labels.targets.label_targets`). Quality
against a reference (`matrix_quality`) counts the region-less labels at image level, collapsed
with the region cells, as `Store.image_matrix` reads a stored run.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

import numpy as np
import pyarrow as pa
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from labeling.core.errors import InputError
from labeling.core.formatting import finite
from labeling.review import bin_counts, cell_bins, comparison_vocabulary, metrics_from_counts
from labeling.store.run_records import RunHooks, RunResult, check_new_run_name, record_run, status_counts
from labeling.store.store import LABEL_COLUMNS, LabelMatrix, Store, collapse_regions
from model.labels.corrections import CorrectionCounts, check_corrections, correct_matrix
from model.labels.targets import UNCERTAIN_POLICIES, apply_uncertainty, label_targets
from schemas.labels import ABSENT, PRESENT, UNCERTAIN, UNMENTIONED
from schemas.runs import RunKind, RunSpec
from schemas.vocabulary import Vocabulary

__all__ = ["UNCERTAIN_POLICIES", "DeriveRequest", "LabelSpec", "derive_run", "derive_matrix", "spec_quality"]

SHIFT_SIDES = ("same", "other")
# How the reference's uncertain cells are read when a spec's quality is measured: the way the
# spec reads its own (compare.py's policy names).
QUALITY_POLICY = {"positive": "positive", "negative": "negative", "ignore": "exclude"}
# What a spec derives from its source, stored with every derived run (`derivation`): bump when the
# same spec comes to mean other labels, so that runs derived before are not reused for it
# (2: the source's region-less labels are carried through the spec; 1, unmarked: they were dropped).
DERIVATION_VERSION = 2

# Regions next to each region on the same side of a frontal film (midline structures: the
# adjacent midline structures). Listed one way; the table is made symmetric below. The whole
# lungs have no same-side neighbour: they contain the zones rather than border them.
_ADJACENT: tuple[tuple[str, str], ...] = tuple(
    pair
    for side in ("right", "left")
    for pair in (
        (f"{side} apical zone", f"{side} upper lung zone"),
        (f"{side} upper lung zone", f"{side} mid lung zone"),
        (f"{side} mid lung zone", f"{side} lower lung zone"),
        (f"{side} mid lung zone", f"{side} hilar structures"),
        (f"{side} lower lung zone", f"{side} costophrenic angle"),
        (f"{side} costophrenic angle", f"{side} hemidiaphragm"),
        (f"{side} clavicle", f"{side} apical zone"),
    )
) + (
    ("trachea", "carina"),
    ("trachea", "upper mediastinum"),
    ("upper mediastinum", "aortic arch"),
    ("upper mediastinum", "svc"),
    ("upper mediastinum", "mediastinum"),
    ("aortic arch", "mediastinum"),
    ("carina", "mediastinum"),
    ("svc", "cavoatrial junction"),
    ("cavoatrial junction", "right atrium"),
    ("right atrium", "cardiac silhouette"),
    ("cardiac silhouette", "mediastinum"),
)


def _symmetric(pairs: Sequence[tuple[str, str]]) -> dict[str, tuple[str, ...]]:
    table: dict[str, list[str]] = {}
    for a, b in pairs:
        table.setdefault(a, []).append(b)
        table.setdefault(b, []).append(a)
    return {region: tuple(neighbours) for region, neighbours in table.items()}


SAME_SIDE_NEIGHBOURS: dict[str, tuple[str, ...]] = _symmetric(_ADJACENT)


def other_side_neighbours(vocabulary: Vocabulary) -> dict[str, tuple[str, ...]]:
    """Each lateral region's mirror image ("right lower lung zone" <-> "left lower lung zone");
    midline regions have none."""
    table = {}
    for region in vocabulary.regions:
        if region.laterality == "midline":
            continue
        mirror = region.name.replace(region.laterality, "left" if region.laterality == "right" else "right", 1)
        if mirror in vocabulary.region_names:
            table[region.name] = (mirror,)
    return table


def neighbour_table(vocabulary: Vocabulary, side: str) -> dict[str, tuple[str, ...]]:
    """Region -> the regions a label in it may be shifted to, for --shift-side `side`."""
    if side not in SHIFT_SIDES:
        raise InputError(f"--shift-side: {side!r} is not one of {', '.join(SHIFT_SIDES)}")
    if side == "other":
        return other_side_neighbours(vocabulary)
    known = set(vocabulary.region_names)
    return {r: tuple(n for n in ns if n in known) for r, ns in SAME_SIDE_NEIGHBOURS.items() if r in known}


# --- the spec ----------------------------------------------------------------------------------
class LabelSpec(BaseModel):
    """A training label matrix: source run + uncertainty policy + seeded corruptions."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    source: str = Field(min_length=1, description="run name or id the labels come from")
    uncertain: Literal["positive", "negative", "ignore"] = "ignore"
    drop: float = Field(default=0.0, ge=0.0, le=1.0, description="rate at which present labels are omitted")
    add: float = Field(
        default=0.0, ge=0.0, le=1.0, description="rate at which allowed absent/unmentioned cells turn present"
    )
    shift: float = Field(
        default=0.0, ge=0.0, le=1.0, description="rate at which present labels move to a neighbouring region"
    )
    shift_side: Literal["same", "other"] = "same"
    keep: float = Field(default=1.0, gt=0.0, le=1.0, description="fraction of the source's reports kept labeled")
    seed: int = 0

    @classmethod
    def checked(cls, **values: Any) -> LabelSpec:
        """A spec from option values, or an InputError naming the first bad option."""
        try:
            return cls(**values)
        except ValidationError as exc:
            error = exc.errors()[0]
            option = "--" + "-".join(str(p) for p in error["loc"]).replace("_", "-")
            raise InputError(f"{option}: {error.get('input')!r} is invalid: {error['msg']}") from None

    @property
    def is_clean(self) -> bool:
        """No corruption and every report kept: the matrix is the source's after the policy."""
        return self.drop == 0 and self.add == 0 and self.shift == 0 and self.keep == 1

    def describe(self) -> str:
        parts = [f"{self.source}", f"uncertain={self.uncertain}"]
        for name in ("drop", "add", "shift", "keep"):
            value = getattr(self, name)
            if value != (1.0 if name == "keep" else 0.0):
                parts.append(f"{name}={value:g}")
        if self.shift:
            parts.append(f"shift_side={self.shift_side}")
        parts.append(f"seed={self.seed}")
        return " ".join(parts)


@dataclass
class CorruptionCounts:
    """What a spec did to the source matrix (rates here are the realized ones). `present`,
    `dropped` and `uncertain_masked` count region cells and region-less labels together (the
    `region_less_` fields say how many of them are region-less); shift and add act on region cells
    only."""

    reports_source: int = 0
    reports_kept: int = 0
    present: int = 0  # present cells and region-less labels after the policy, before corruption
    dropped: int = 0
    shift_eligible: int = 0  # present region cells, not dropped, with an allowed neighbour
    shifted: int = 0
    add_candidates: int = 0  # allowed absent/unmentioned region cells
    added: int = 0
    uncertain_masked: int = 0  # cells and region-less labels left out of training by policy `ignore`
    region_less_present: int = 0  # of `present`
    region_less_dropped: int = 0  # of `dropped`

    def as_dict(self) -> dict[str, int]:
        return asdict(self)


@dataclass
class DerivedMatrix:
    """The matrix a spec defines, with where each cell came from (for provenance): region cells
    (`matrix`, `mask`) and, over the same reports and findings, the region-less labels
    (`placeless`, `placeless_mask`: codes [n, F] after the policy and the drop)."""

    matrix: LabelMatrix
    mask: np.ndarray  # [n, R, F] bool: True = trained on
    counts: CorruptionCounts
    origin_region: np.ndarray  # [n, R, F] int16: source region of the cell's label; -1 = none (added or empty)
    placeless: np.ndarray  # [n, F] int8: region-less codes
    placeless_mask: np.ndarray  # [n, F] bool: True = trained on
    corrected: np.ndarray | None = None  # [n] bool: the report's cells come from a reviewed run (corrections)

    def training_targets(self, unmentioned: str = "negative") -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """(region targets, region mask, image targets, image mask) under the no-location rule
        (`model.labels.targets.label_targets`): what training on the derived run stored from this
        matrix reads (the policy is already applied; uncertain codes left are masked)."""
        return label_targets(self.matrix.codes, self.placeless, "ignore", unmentioned)


# --- seeded per-cell decisions -------------------------------------------------------------------
_MASK64 = np.uint64(0xFFFFFFFFFFFFFFFF)


def _splitmix(x: np.ndarray) -> np.ndarray:
    x = (x + np.uint64(0x9E3779B97F4A7C15)) & _MASK64
    x = ((x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)) & _MASK64
    x = ((x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)) & _MASK64
    return x ^ (x >> np.uint64(31))


def _name_code(name: str) -> np.uint64:
    return np.uint64(int.from_bytes(hashlib.sha256(name.encode("utf-8")).digest()[:8], "little"))


def _uniform(seed: int, kind: str, *parts: np.ndarray) -> np.ndarray:
    """A uniform [0, 1) number per element, a pure function of (seed, kind, parts)."""
    with np.errstate(over="ignore"):
        h = _splitmix(np.asarray([_name_code(f"{seed}:{kind}")], dtype=np.uint64))
        for part in parts:
            h = _splitmix(h ^ np.asarray(part, dtype=np.uint64))
    return (h >> np.uint64(11)).astype(np.float64) * (1.0 / (1 << 53))


def _cell_uniform(
    seed: int,
    kind: str,
    keys: np.ndarray,
    region_codes: np.ndarray,
    finding_codes: np.ndarray,
    cells: tuple[np.ndarray, ...],
) -> np.ndarray:
    rows, regions, findings = cells
    return _uniform(seed, kind, keys[rows].astype(np.uint64), region_codes[regions], finding_codes[findings])


def kept_reports(report_keys: np.ndarray, keep: float, seed: int) -> np.ndarray:
    """Positions of the reports a spec keeps: the round(keep * n) (at least one) with the lowest
    seeded draw, in their original order."""
    n = len(report_keys)
    if keep >= 1 or n == 0:
        return np.arange(n)
    count = max(1, int(round(keep * n)))
    draws = _uniform(seed, "keep", np.asarray(report_keys, dtype=np.int64).astype(np.uint64))
    return np.sort(np.argsort(draws, kind="stable")[:count])


# --- building the matrix -----------------------------------------------------------------------
def check_regional(store: Store, run: str | int, purpose: str = "a label spec corrupts region-level labels") -> None:
    """Refuse a run whose labels are all image-level (a CheXpert CSV import, say): `purpose`
    says what needs regions."""
    regional, image_level = store.label_level_counts(run)
    if image_level and not regional:
        raise InputError(f"run {store.run(run).name!r} has image-level labels only (no regions); {purpose}")


def run_findings(store: Store, run: str, vocabulary: Vocabulary) -> tuple[str, ...]:
    """The vocabulary findings a run has any label for, in a region or region-less, in vocabulary
    order (a derived matrix is laid out over the vocabulary, so another vocabulary's findings are
    left out)."""
    names = set(vocabulary.finding_names)
    found = store.run_findings(run, vocabulary.finding_names)
    return tuple(f for f in found if f in names)


def derive_matrix(
    store: Store,
    spec: LabelSpec,
    regions: Sequence[str],
    findings: Sequence[str],
    report_keys: Sequence[int] | None = None,
    vocabulary: Vocabulary | str | None = None,
) -> DerivedMatrix:
    """Apply `spec` to its source run's labels over `regions` x `findings` (reports: those the
    source covers, or `report_keys`, which it must all cover)."""
    vocab = comparison_vocabulary(vocabulary)
    source = store.run(spec.source).name
    check_regional(store, source)
    unknown = [r for r in regions if r not in vocab.region_names] + [
        f for f in findings if f not in vocab.finding_names
    ]
    if unknown:
        raise InputError(f"{unknown[0]!r} is not a region or finding of vocabulary {vocab.version}")
    covered = store.covered_reports(source)
    if report_keys is None:
        keys = covered
    else:
        keys = np.asarray(report_keys, dtype=np.int64)
        outside = np.setdiff1d(keys, covered)
        if len(outside):
            raise InputError(
                f"run {source!r} does not cover {len(outside):,} of the {len(keys):,} reports asked for "
                f"(e.g. report_key {int(outside[0])})"
            )
    if len(keys) == 0:
        raise InputError(f"run {source!r} covers no reports")
    counts = CorruptionCounts(reports_source=len(keys))
    keys = keys[kept_reports(keys, spec.keep, spec.seed)]
    counts.reports_kept = len(keys)
    matrix = store.label_matrix(source, regions, findings, report_keys=keys.tolist())
    codes, mask = apply_uncertainty(matrix.codes, spec.uncertain)
    placeless_source = store.placeless_matrix(source, findings, report_keys=keys.tolist())
    placeless, placeless_mask = apply_uncertainty(placeless_source.codes, spec.uncertain)

    region_codes = np.asarray([_name_code(r) for r in regions], dtype=np.uint64)
    finding_codes = np.asarray([_name_code(f) for f in findings], dtype=np.uint64)
    allowed = np.asarray([[vocab.allows(f, r) for f in findings] for r in regions], dtype=bool)  # [R, F]
    origin = np.where(codes != UNMENTIONED, np.arange(len(regions), dtype=np.int16)[None, :, None], -1).astype(np.int16)

    present = codes == PRESENT
    counts.present = int(present.sum())
    present_cells = np.nonzero(present)
    draw_drop = _cell_uniform(spec.seed, "drop", keys, region_codes, finding_codes, present_cells)
    dropped = draw_drop < spec.drop

    # Allowed neighbours of each (region, finding), padded: [R, F, K] indexes and [R, F] counts.
    table = neighbour_table(vocab, spec.shift_side)
    index_of = {r: i for i, r in enumerate(regions)}
    width = max([len(v) for v in table.values()] + [1])
    choices = np.full((len(regions), len(findings), width), -1, dtype=np.int64)
    n_choices = np.zeros((len(regions), len(findings)), dtype=np.int64)
    for r, region in enumerate(regions):
        for f, finding in enumerate(findings):
            options = [index_of[n] for n in table.get(region, ()) if n in index_of and vocab.allows(finding, n)]
            choices[r, f, : len(options)] = options
            n_choices[r, f] = len(options)
    rows, regs, finds = present_cells
    eligible = ~dropped & (n_choices[regs, finds] > 0)
    counts.shift_eligible = int(eligible.sum())
    draw_shift = _cell_uniform(spec.seed, "shift", keys, region_codes, finding_codes, present_cells)
    shifted = eligible & (draw_shift < spec.shift)
    draw_target = _cell_uniform(spec.seed, "shift-target", keys, region_codes, finding_codes, present_cells)
    pick = np.minimum(
        (draw_target * np.maximum(n_choices[regs, finds], 1)).astype(np.int64),
        np.maximum(n_choices[regs, finds] - 1, 0),
    )
    targets = choices[regs, finds, pick]

    candidates = ((codes == ABSENT) | (codes == UNMENTIONED)) & allowed[None, :, :]
    counts.add_candidates = int(candidates.sum())
    candidate_cells = np.nonzero(candidates)
    added = _cell_uniform(spec.seed, "add", keys, region_codes, finding_codes, candidate_cells) < spec.add

    vacated = dropped | shifted
    codes[rows[vacated], regs[vacated], finds[vacated]] = UNMENTIONED
    origin[rows[vacated], regs[vacated], finds[vacated]] = -1
    add_at = tuple(axis[added] for axis in candidate_cells)
    codes[add_at] = PRESENT
    origin[add_at] = -1
    moved_to = (rows[shifted], targets[shifted], finds[shifted])
    codes[moved_to] = PRESENT
    origin[moved_to] = regs[shifted]
    counts.dropped, counts.shifted, counts.added = int(dropped.sum()), int(shifted.sum()), int(added.sum())

    # Region-less labels: dropped like a region cell, on their own draw (region name "" in the
    # hash, so the region cells' draws above are untouched). They have no region to shift from,
    # and additions stay region cells.
    placeless_cells = np.nonzero(placeless == PRESENT)
    no_region = np.asarray([_name_code("")], dtype=np.uint64)
    placeless_dropped = (
        _uniform(
            spec.seed,
            "drop",
            keys[placeless_cells[0]].astype(np.uint64),
            np.broadcast_to(no_region, placeless_cells[0].shape),
            finding_codes[placeless_cells[1]],
        )
        < spec.drop
    )
    placeless[tuple(axis[placeless_dropped] for axis in placeless_cells)] = UNMENTIONED
    counts.region_less_present = len(placeless_cells[0])
    counts.region_less_dropped = int(placeless_dropped.sum())
    counts.present += counts.region_less_present
    counts.dropped += counts.region_less_dropped

    # The corruptions neither make nor move uncertain cells: the policy's mask still holds.
    counts.uncertain_masked = int((~mask).sum()) + int((~placeless_mask).sum())
    return DerivedMatrix(
        LabelMatrix(keys, tuple(regions), tuple(findings), codes),
        mask,
        counts,
        origin,
        placeless,
        placeless_mask,
    )


def build_matrix(
    store: Store,
    spec: LabelSpec,
    regions: Sequence[str],
    findings: Sequence[str],
    report_keys: Sequence[int] | None = None,
    vocabulary: Vocabulary | str | None = None,
) -> tuple[LabelMatrix, np.ndarray]:
    """The region cells of the training matrix a spec defines, and their mask (True = a cell to
    train on).

    Codes are PRESENT / ABSENT / UNMENTIONED (read as negative) and, under policy `ignore`,
    UNCERTAIN where the mask is False. Rows are the kept reports, in the order given. The spec's
    region-less labels are `derive_matrix(...).placeless`; training targets with both, under the
    no-location rule: `derive_matrix(...).training_targets()`.
    """
    derived = derive_matrix(store, spec, regions, findings, report_keys, vocabulary)
    return derived.matrix, derived.mask


# --- quality against a reference ------------------------------------------------------------------
@dataclass
class LabelQuality:
    """A derived matrix scored against a reference run over the reports both cover."""

    reference: str
    policy: str  # compare.py policy used for the reference's uncertain cells
    reports: int
    findings: tuple[str, ...]
    region: dict[str, float] = field(default_factory=dict)  # precision, recall, f1, kappa, agreement, tp, fp, fn
    image: dict[str, float] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready: an undefined metric (NaN) becomes None."""
        return {
            "reference": self.reference,
            "policy": self.policy,
            "reports": self.reports,
            "findings": list(self.findings),
            "region": finite(self.region),
            "image": finite(self.image),
        }


def _summary(counts: np.ndarray) -> dict[str, float]:
    m = metrics_from_counts(counts.reshape(-1, counts.shape[-1]).sum(axis=0))
    keys_int = ("cells", "excluded", "tp", "fp", "fn", "tn")
    keys_float = ("precision", "recall", "f1", "kappa", "agreement")
    return {**{k: int(m[k]) for k in keys_int}, **{k: float(m[k]) for k in keys_float}}


def matrix_quality(
    store: Store,
    matrix: LabelMatrix,
    reference: str,
    policy: str = "exclude",
    findings: Sequence[str] | None = None,
    placeless: np.ndarray | None = None,
) -> LabelQuality:
    """Micro precision, recall, F1, kappa and agreement of `matrix` against run `reference`, at
    region level and image level, over the matrix's reports the reference covers. `placeless`
    ([n, F] codes, rows and findings as `matrix`'s): the matrix's region-less labels, which count at
    image level (collapsed with its region cells, as the reference's are), not at region level.
    `findings` (default: those present or uncertain on either side) must be among the matrix's."""
    reference = store.run(reference).name
    common = np.intersect1d(matrix.report_keys, store.covered_reports(reference))
    if len(common) == 0:
        raise InputError(
            f"reference run {reference!r} covers none of the derived matrix's {len(matrix.report_keys):,} reports"
        )
    row_of = {int(k): i for i, k in enumerate(matrix.report_keys)}
    rows = [row_of[int(k)] for k in common]
    ours = matrix.codes[rows]
    ours_placeless = (
        placeless[rows]
        if placeless is not None
        else np.full((len(rows), len(matrix.findings)), UNMENTIONED, dtype=np.int8)
    )
    ours_image = collapse_regions(np.concatenate([ours, ours_placeless[:, None, :]], axis=1))
    keys = common.tolist()
    theirs = store.label_matrix(reference, matrix.regions, matrix.findings, report_keys=keys).codes
    theirs_image = store.image_matrix(reference, matrix.regions, matrix.findings, report_keys=keys).codes
    if findings is None:
        occurs = ((ours == PRESENT) | (ours == UNCERTAIN) | (theirs == PRESENT) | (theirs == UNCERTAIN)).any(
            axis=(0, 1)
        )
        occurs |= ((theirs_image == PRESENT) | (theirs_image == UNCERTAIN)).any(axis=0)
        occurs |= ((ours_image == PRESENT) | (ours_image == UNCERTAIN)).any(axis=0)
        chosen = np.flatnonzero(occurs)
    else:
        missing = [f for f in findings if f not in matrix.findings]
        if missing:
            raise InputError(f"finding {missing[0]!r} is not in the derived matrix")
        chosen = np.asarray([matrix.findings.index(f) for f in findings], dtype=np.intp)
    region_counts = bin_counts(cell_bins(ours[..., chosen], theirs[..., chosen], policy))
    image_counts = bin_counts(cell_bins(ours_image[..., chosen], theirs_image[..., chosen], policy))
    return LabelQuality(
        reference=reference,
        policy=policy,
        reports=len(common),
        findings=tuple(matrix.findings[i] for i in chosen),
        region=_summary(region_counts),
        image=_summary(image_counts),
    )


def spec_quality(
    store: Store,
    spec: LabelSpec,
    reference: str,
    regions: Sequence[str] | None = None,
    findings: Sequence[str] | None = None,
    report_keys: Sequence[int] | None = None,
    vocabulary: Vocabulary | str | None = None,
) -> LabelQuality:
    """The quality of the matrix `spec` defines against run `reference` (precision, recall, F1,
    kappa; region and image level). Defaults: all vocabulary regions; the findings the source
    or the reference labels; the reference's uncertain cells read the way the spec reads its own."""
    vocab = comparison_vocabulary(vocabulary)
    regions = tuple(regions) if regions else vocab.region_names
    if findings:
        layout = tuple(findings)
    else:
        # The reference's image-level labels count too: they take part in the image-level scores.
        labelled = set(run_findings(store, spec.source, vocab)) | set(store.run_findings(reference))
        layout = tuple(f for f in vocab.finding_names if f in labelled)
    derived = derive_matrix(store, spec, regions, layout, report_keys, vocab)
    return matrix_quality(
        store, derived.matrix, reference, QUALITY_POLICY[spec.uncertain], findings, placeless=derived.placeless
    )


# --- derived runs ----------------------------------------------------------------------------------
@dataclass
class DeriveRequest:
    """A derived run to create: `spec` applied to its source run, stored as run `name`; measured
    against run `reference` when one is given."""

    name: str
    spec: LabelSpec
    reference: str | None = None
    vocabulary: Vocabulary | str | None = None
    corrections: str | None = None  # a reviewed run whose reports' cells replace the source's (see corrections.py)


_STATUS_OF_CODE = {PRESENT: "present", ABSENT: "absent", UNCERTAIN: "uncertain"}


def _source_rows(store: Store, source: str, keys: np.ndarray) -> dict[tuple[int, str | None, str], dict[str, Any]]:
    """A run's label rows of `keys` by (report key, region, finding); region None: region-less."""
    labels = store.labels(source)
    wanted = set(int(k) for k in keys)
    return {
        (row["report_key"], row["region"], row["finding"]): row
        for row in labels.to_pylist()
        if row["report_key"] in wanted
    }


_CARRIED = ("severity", "temporal", "evidence_start", "evidence_end", "evidence_text", "confidence")


def derived_label_table(store: Store, derived: DerivedMatrix, source: str, reviewed: str | None = None) -> pa.Table:
    """The derived matrix as label rows: its region cells, then its region-less labels (region
    empty, as in the source). A label that keeps its source cell keeps that cell's evidence,
    severity, temporal change and confidence; a shifted label keeps those of the label it moved
    from (its evidence still quotes the statement it came from); an added one has none. In a
    corrected report every label carries the reviewed run's row."""
    matrix = derived.matrix
    origin_rows = _source_rows(store, source, matrix.report_keys)
    if reviewed is not None and derived.corrected is not None:
        corrected_keys = matrix.report_keys[derived.corrected]
        replaced = set(corrected_keys.tolist())
        origin_rows = {k: v for k, v in origin_rows.items() if k[0] not in replaced}
        origin_rows.update(_source_rows(store, reviewed, corrected_keys))
    columns: dict[str, list[Any]] = {name: [] for name in LABEL_COLUMNS}

    def add_row(key: int, region: str | None, finding: str, code: int, carried: dict[str, Any] | None) -> None:
        columns["report_key"].append(key)
        columns["region"].append(region)
        columns["finding"].append(finding)
        columns["status"].append(_STATUS_OF_CODE[code])
        for name in _CARRIED:
            columns[name].append(carried[name] if carried else None)

    rows, regs, finds = np.nonzero(matrix.codes != UNMENTIONED)
    for row, reg, fin in zip(rows.tolist(), regs.tolist(), finds.tolist()):
        key = int(matrix.report_keys[row])
        finding = matrix.findings[fin]
        from_region = int(derived.origin_region[row, reg, fin])
        carried = origin_rows.get((key, matrix.regions[from_region], finding)) if from_region >= 0 else None
        add_row(key, matrix.regions[reg], finding, int(matrix.codes[row, reg, fin]), carried)
    placeless = derived.placeless
    for row, fin in zip(*(axis.tolist() for axis in np.nonzero(placeless != UNMENTIONED))):
        key, finding = int(matrix.report_keys[row]), matrix.findings[fin]
        add_row(key, None, finding, int(placeless[row, fin]), origin_rows.get((key, None, finding)))
    return pa.table({name: pa.array(columns[name], dtype) for name, dtype in LABEL_COLUMNS.items()})


def _corrected(
    store: Store, derived: DerivedMatrix, reviewed: str, uncertain: str
) -> tuple[DerivedMatrix, CorrectionCounts]:
    matrix = derived.matrix
    layout = (matrix.regions, matrix.findings, matrix.report_keys)
    cells = (matrix.codes, derived.mask, derived.placeless, derived.placeless_mask)
    fixed = correct_matrix(store, cells, layout, reviewed=reviewed, uncertain=uncertain)
    codes, corrected = fixed.codes, fixed.corrected
    # A reviewed report's labels are its own: each comes from its own cell of the reviewed run.
    origin = derived.origin_region.copy()
    own = np.arange(len(matrix.regions), dtype=np.int16)[None, :, None]
    origin[corrected] = np.where(codes[corrected] != UNMENTIONED, own, -1)
    new_matrix = LabelMatrix(matrix.report_keys, matrix.regions, matrix.findings, codes)
    result = DerivedMatrix(
        new_matrix, fixed.mask, derived.counts, origin, fixed.placeless, fixed.placeless_mask, corrected
    )
    return result, fixed.counts


def derive_run(store: Store, request: DeriveRequest, *, hooks: RunHooks | None = None) -> RunResult:
    """Store the matrix `request.spec` defines as a new run of kind `derived` (source = the source
    run; params = the spec, the corruption counts, the findings and, given a reference run, the
    quality against it), in one transaction. Its layout: every vocabulary region x the findings
    the source run labels (in a region or region-less); it covers the kept reports. Region-less
    labels of the source go through the spec too and are stored region-less (region empty), as in
    the source. With `request.corrections`, the reviewed run's reports replace the source's cells
    and region-less labels after the spec (model/labels/corrections.py; params: `corrections`
    with what changed). The result's `counts` are the corruption
    counts; `details` hold the spec, the quality (or None) and the notes."""
    spec, reference = request.spec, request.reference
    vocab = comparison_vocabulary(request.vocabulary)
    check_new_run_name(store, request.name)
    source = store.run(spec.source)
    if reference is not None:
        store.run(reference)  # an unknown reference fails before anything is computed
    findings = run_findings(store, source.name, vocab)
    reviewed = None
    if request.corrections is not None:
        reviewed = check_corrections(store, request.corrections, source.name)
        labelled = set(findings) | set(run_findings(store, reviewed, vocab))
        findings = tuple(f for f in vocab.finding_names if f in labelled)
    derived = derive_matrix(store, spec, vocab.region_names, findings, vocabulary=vocab)
    correction_counts = None
    if reviewed is not None:
        derived, correction_counts = _corrected(store, derived, reviewed, spec.uncertain)
    quality = (
        matrix_quality(store, derived.matrix, reference, QUALITY_POLICY[spec.uncertain], placeless=derived.placeless)
        if reference is not None
        else None
    )
    table = derived_label_table(store, derived, source.name, reviewed)
    notes = []
    params = {
        "spec": spec.model_dump(),
        "derivation": DERIVATION_VERSION,
        "counts": derived.counts.as_dict(),
        "findings": list(findings),
        "quality": quality.as_dict() if quality else None,
        "notes": notes,
    }
    if reviewed is not None and correction_counts is not None:
        params["corrections"] = {"run": reviewed, "run_id": store.run(reviewed).run_id, **correction_counts.as_dict()}
        if correction_counts.outside_reports:
            notes.append(
                f"{correction_counts.outside_reports:,} reports of {reviewed!r} are not in the derived run "
                "(the source does not cover them, or keep left them out): not corrected"
            )
    run_spec = RunSpec(
        name=request.name,
        kind=RunKind.derived,
        vocabulary_version=source.vocabulary_version,
        backend="labelspec",
        params=params,
        source=source.name,
    )
    result = RunResult(
        name=request.name, kind=RunKind.derived.value, source=source.name, reports=len(derived.matrix.report_keys)
    )
    if hooks:
        hooks.start(result)
    result.run_id = record_run(store, run_spec, derived.matrix.report_keys.tolist(), table)
    result.reports_done = result.reports
    result.labels = table.num_rows
    result.statuses = status_counts(table)
    result.counts = Counter(derived.counts.as_dict())
    result.details = {"spec": spec, "quality": quality, "notes": notes, "corrections": params.get("corrections")}
    if hooks:
        hooks.advance(result, result.reports)
    return result
