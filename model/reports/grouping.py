"""Anatomical grouping: the regions of one finding as the shortest correct description.

`canonical_regions` states what a description names: a whole lung is dropped when one of its
zones is there (a zone plus its lung is the zone), and the zones that cover a lung
(`report.covers` in the vocabulary: upper, mid and lower zone) become that lung. `location_terms`
then covers the canonical regions with the vocabulary's location terms, largest first, so both
lower zones read "bibasilar", both lungs "bilateral" and two adjacent zones "right mid and lower
lung zones". Both are pure functions of the vocabulary data.
"""

from __future__ import annotations

from collections.abc import Iterable

from schemas.vocabulary import ReportLocation, ReportWording, Vocabulary


def report_wording(vocabulary: Vocabulary) -> ReportWording:
    if vocabulary.data.report is None:
        raise ValueError(f"vocabulary {vocabulary.version} has no report wording (its 'report' block)")
    return vocabulary.data.report


def canonical_regions(regions: Iterable[str], vocabulary: Vocabulary) -> tuple[str, ...]:
    """The regions a report names for a finding in `regions`, in vocabulary order."""
    chosen = set(regions)
    chosen -= {lung for region in chosen for lung in vocabulary.ancestors(region)}
    for lung, zones in report_wording(vocabulary).covers.items():
        if zones and set(zones) <= chosen:
            chosen = {r for r in chosen if lung not in vocabulary.ancestors(r)} | {lung}
    return tuple(r for r in vocabulary.region_names if r in chosen)


def location_terms(regions: Iterable[str], vocabulary: Vocabulary) -> list[ReportLocation]:
    """The fewest terms (largest first, then the file's order) that name exactly the canonical
    regions, in anatomical order of their first region."""
    remaining = set(canonical_regions(regions, vocabulary))
    terms = sorted(report_wording(vocabulary).locations, key=lambda t: -len(t.regions))
    chosen = []
    for term in terms:
        if set(term.regions) <= remaining:
            chosen.append(term)
            remaining -= set(term.regions)
    index = {name: i for i, name in enumerate(vocabulary.region_names)}
    return sorted(chosen, key=lambda t: min(index[r] for r in t.regions))
