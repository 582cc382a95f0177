"""The round trip: label a generated report with the rules and compare with what it was written from.

What is compared (the writer's promise):
- present and uncertain cells exactly: each written lesion's (finding, region) over its canonical
  regions (model/reports/grouping.py: a zone implies its lung; zones covering a lung are the
  lung), with its status, severity and temporal value; a read cell of a present/uncertain status
  not written is an extra, a written one not read (or read with other values) is missing;
- absent cells only for findings that were not written: the normal statements ("No pleural
  effusion or pneumothorax.") are read as absent labels, which is what they say; a written
  finding read absent anywhere is a contradiction.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from labeling.ingest import detect_sections, split_sentences_many
from labeling.sources.rules import RulesLabeler
from model.reports.wording import LesionWords
from schemas.labels import STATUS_RANK

# finding, region (None: no place), status, severity, temporal
Cell = tuple[str, str | None, str, str | None, str | None]


@dataclass(frozen=True)
class RoundTrip:
    written: frozenset[Cell]
    read: frozenset[Cell]
    missing: frozenset[Cell] = field(default=frozenset())  # written, not read so
    extra: frozenset[Cell] = field(default=frozenset())  # read present/uncertain, not written
    contradicted: frozenset[Cell] = field(default=frozenset())  # a written finding read absent

    @property
    def faithful(self) -> bool:
        return not (self.missing or self.extra or self.contradicted)


def written_cells(lesions: Iterable[LesionWords]) -> frozenset[Cell]:
    """The cells `LesionWords` promise: canonical regions x status, severity, temporal."""
    return frozenset(
        (words.finding, region, words.status, words.severity, words.temporal)
        for words in lesions
        for region in words.regions
    )


def read_cells(texts: Sequence[str], labeler: RulesLabeler) -> list[frozenset[Cell]]:
    """Each report's cells as the rules read them, split into sentences as `clala ingest` splits
    them; one cell per (finding, region): the strongest status wins, its first severity/temporal."""
    sentences = split_sentences_many(list(texts), [detect_sections(t) for t in texts])
    flat = [s.text for report in sentences for s in report]
    labels = iter(labeler.label_sentences(flat))
    read = []
    for report in sentences:
        best: dict[tuple[str, str | None], Cell] = {}
        for _ in report:
            # A region-less read ("No pneumothorax.", or a lesion written without its place) is
            # a cell too: an absent one contradicts a written finding, a present one was not written.
            for label in next(labels):
                key = (label.finding, label.region)
                kept = best.get(key)
                if kept is None or STATUS_RANK[label.status] < STATUS_RANK[kept[2]]:
                    best[key] = (label.finding, label.region, label.status, label.severity, label.temporal)
        read.append(frozenset(best.values()))
    return read


def compare(written: frozenset[Cell], read: frozenset[Cell]) -> RoundTrip:
    positive = frozenset(c for c in read if c[2] != "absent")
    findings = {c[0] for c in written}
    return RoundTrip(
        written,
        read,
        missing=written - positive,
        extra=positive - written,
        contradicted=frozenset(c for c in read if c[2] == "absent" and c[0] in findings),
    )


def check_report(text: str, lesions: Sequence[LesionWords], labeler: RulesLabeler) -> RoundTrip:
    """The round trip of one written report against the lesions it was written from."""
    return compare(written_cells(lesions), read_cells([text], labeler)[0])


def _cells_named(cells: Iterable[Cell]) -> str:
    """ "pleural effusion (right lung, mild)"; one entry per finding and values, regions joined."""
    by_finding: dict[tuple, list[str]] = {}
    for finding, region, status, severity, temporal in sorted(cells, key=lambda c: tuple(map(str, c))):
        by_finding.setdefault((finding, status, severity, temporal), []).append(region or "no place")
    named = []
    for (finding, status, severity, temporal), regions in by_finding.items():
        values = [v for v in (status if status != "present" else None, severity, temporal) if v]
        named.append(f"{finding} ({', '.join(regions + values)})")
    return "; ".join(named)


def round_trip_problem(trip: RoundTrip) -> str:
    """What a report that fails the round trip got wrong, in one line (for a re-ask and the record)."""
    parts = []
    if trip.extra:
        parts.append(f"it adds {_cells_named(trip.extra)}")
    if trip.missing:
        parts.append(f"it leaves out {_cells_named(trip.missing)}")
    if trip.contradicted:
        parts.append(f"it calls absent {_cells_named(trip.contradicted)}")
    return "; ".join(parts) or "none"
