"""Source runs as cells for combining: every (report, region, finding) cell of the reports a
source finished gets one of four classes, present / absent / uncertain / unmentioned.

Unmentioned is a class of its own, both as what a source says and as what a cell truly is: a
source that finished a report but has no label for a cell says "unmentioned" (it did not speak of
the finding there), which is different from "absent" (it said the finding is not there). A source
that did not finish a report says nothing about its cells: it is missing there, not unmentioned.
A combined cell whose class comes out "unmentioned" gets no row, as in every run.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from labeling.core.errors import InputError
from labeling.store.store import Store, absent_everywhere
from schemas.labels import ABSENT, CODE_PRECEDENCE, PRESENT, UNCERTAIN, UNMENTIONED
from schemas.runs import RunInfo
from schemas.vocabulary import Vocabulary

# The classes in the label precedence (present > uncertain > absent > unmentioned): ties go to the first.
CLASSES = ("present", "uncertain", "absent", "unmentioned")
CLASS_OF_CODE = {PRESENT: "present", UNCERTAIN: "uncertain", ABSENT: "absent", UNMENTIONED: "unmentioned"}
CODE_OF_CLASS = {name: code for code, name in CLASS_OF_CODE.items()}
assert tuple(CLASS_OF_CODE[c] for c in CODE_PRECEDENCE) == CLASSES


@dataclass
class SourceCells:
    """One source run's codes over the combined reports: region-level codes[report, region, finding]
    (regional sources only), image-level codes[report, finding], and which reports it finished."""

    run: RunInfo
    regional: bool  # it locates findings (has region-level labels); else it takes part at image level only
    image_rows: bool  # it has image-level labels (region NULL), e.g. MeSH codes without a location
    covered: np.ndarray  # bool[report]
    region_codes: np.ndarray | None
    image_codes: np.ndarray


@dataclass
class CombineCells:
    """The sources' cells on one grid: the union of the reports they finished, the vocabulary's
    regions and the findings any source labels."""

    report_keys: np.ndarray
    regions: tuple[str, ...]
    findings: tuple[str, ...]
    allowed: np.ndarray  # bool[region, finding]: the vocabulary lets the finding lie in the region
    sources: list[SourceCells]

    def outside_allowed(self) -> dict[str, int]:
        """Per source: its region-level labels in a region the vocabulary does not allow for the
        finding (left out of the combination)."""
        counts = {}
        for source in self.regional:
            assert source.region_codes is not None
            labeled = (source.region_codes != UNMENTIONED) & ~self.allowed[None, :, :]
            if labeled.any():
                counts[source.run.name] = int(labeled.sum())
        return counts

    @property
    def regional(self) -> list[SourceCells]:
        return [s for s in self.sources if s.regional]

    @property
    def image_level(self) -> bool:
        """Whether some source says something at image level only: then each report's finding is
        also combined at image level, by every source."""
        return any(s.image_rows for s in self.sources)


def read_cells(store: Store, runs: list[RunInfo], vocabulary: Vocabulary) -> CombineCells:
    """The sources' labels as codes on one grid of reports x regions x findings."""
    covered = {run.run_id: store.covered_reports(run.run_id) for run in runs}
    report_keys = np.unique(np.concatenate([keys for keys in covered.values()]))
    if len(report_keys) == 0:
        raise InputError("the source runs have finished no report; nothing to combine")
    labeled: set[str] = set()
    for run in runs:
        found = store.run_findings(run.run_id)
        unknown = sorted(set(found) - set(vocabulary.finding_names))
        if unknown:
            raise InputError(
                f"run {run.name!r}: finding {unknown[0]!r} is not in vocabulary {vocabulary.version} "
                "(pass --vocabulary)"
            )
        labeled.update(found)
    findings = tuple(f for f in vocabulary.finding_names if f in labeled)
    regions = vocabulary.region_names
    allowed = np.array([[vocabulary.allows(f, r) for f in findings] for r in regions], dtype=bool).reshape(
        len(regions), len(findings)
    )
    sources = []
    for run in runs:
        regional_labels, image_labels = store.label_level_counts(run.run_id)
        # image-level only: it has image-level labels and no regional ones (a run with no label at
        # all said "unmentioned" everywhere, regions included)
        regional = regional_labels > 0 or image_labels == 0
        region = store.label_matrix(run.run_id, regions, findings, report_keys.tolist())
        image = store.image_matrix(run.run_id, regions, findings, report_keys.tolist())
        # A finding stated absent without a place is absent in every region (the no-location rule).
        placeless = store.placeless_matrix(run.run_id, findings, report_keys.tolist())
        region_codes = np.where(allowed[None], absent_everywhere(region.codes, placeless.codes), region.codes)
        sources.append(
            SourceCells(
                run=run,
                regional=regional,
                image_rows=image_labels > 0,
                covered=np.isin(report_keys, covered[run.run_id]),
                region_codes=region_codes if regional else None,
                image_codes=image.codes,
            )
        )
    return CombineCells(report_keys, regions, findings, allowed, sources)


def region_answers(cells: CombineCells, finding: int) -> tuple[pd.DataFrame, np.ndarray]:
    """What the regional sources say of finding `finding` in each allowed region: a crowd-kit frame
    (task, worker, label), task = report x allowed region, and the region index of each task column."""
    region_index = np.flatnonzero(cells.allowed[:, finding])
    n_regions = len(region_index)
    frames = []
    for source in cells.regional:
        assert source.region_codes is not None
        rows = np.flatnonzero(source.covered)
        codes = source.region_codes[rows][:, region_index, finding]  # [covered reports, allowed regions]
        tasks = (rows[:, None] * n_regions + np.arange(n_regions)[None, :]).ravel()
        frames.append(_frame(tasks, source.run.name, codes.ravel()))
    return pd.concat(frames, ignore_index=True), region_index


def image_answers(cells: CombineCells, finding: int) -> pd.DataFrame:
    """What every source says of finding `finding` in each report (regional sources collapsed:
    any region present -> present, and so on): a crowd-kit frame, task = report."""
    frames = []
    for source in cells.sources:
        rows = np.flatnonzero(source.covered)
        frames.append(_frame(rows, source.run.name, source.image_codes[rows, finding]))
    return pd.concat(frames, ignore_index=True)


def _frame(tasks: np.ndarray, worker: str, codes: np.ndarray) -> pd.DataFrame:
    names = np.empty(len(codes), dtype=object)
    for code, name in CLASS_OF_CODE.items():
        names[codes == code] = name
    return pd.DataFrame({"task": tasks.astype(np.int64), "worker": worker, "label": names})
