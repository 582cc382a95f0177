"""The structure of a deterministic report: FINDINGS by system and IMPRESSION by clinical priority.

FINDINGS: one paragraph per system of the vocabulary's `report.systems`, in their order (lines and
tubes when those categories are enabled, lungs, pleura, heart and mediastinum, hila, bones and
soft tissues, other). A system with findings has their sentences; lesions of one system with the
same location and the same certainty, severity and temporal words share a sentence
("Bibasilar atelectasis and consolidation."), and a pleural effusion takes a basal lung lesion
with the same words ("Small bilateral pleural effusions with bibasilar atelectasis."). A system
without a finding gets its normal statement ("The lungs are clear."); one with findings but not
all of its `negatives` states the rest ("No pleural effusion."). Normal statements are negative
statements: a reader labels them `absent`, for findings that were not written.

IMPRESSION: one line per lesion in the order of `report.impression_priority` then
`report.incidental` (pneumothorax first, incidental findings last), numbered when there is more
than one, or NORMAL_IMPRESSION when there is none.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace

from model.reports.grouping import report_wording
from model.reports.wording import LesionWords, as_sentence, clause, noun
from schemas.vocabulary import Vocabulary

NORMAL_IMPRESSION = "No acute cardiopulmonary process."
# The finding that takes a basal lung lesion with the same words into its sentence.
EFFUSION = "pleural effusion"
BASAL_ZONES = frozenset({"right lower lung zone", "left lower lung zone"})


@dataclass(frozen=True)
class SaidSentence:
    """A sentence written elsewhere (the region decoder's, checked by the rules) that says
    `findings`: placed in the system of its first finding, before the writer's sentences there."""

    text: str
    findings: tuple[str, ...]


def system_of(words: LesionWords, vocabulary: Vocabulary) -> str:
    return finding_system(words.finding, vocabulary)


def finding_system(finding: str, vocabulary: Vocabulary) -> str:
    spec = vocabulary.finding(finding).report
    assert spec is not None
    return spec.system


def _shared(lesions: Sequence[LesionWords]) -> list[list[LesionWords]]:
    groups: dict[tuple, list[LesionWords]] = {}
    for words in lesions:
        groups.setdefault(words.shares_with, []).append(words)
    return list(groups.values())


def findings_sentences(
    lesions: Sequence[LesionWords], vocabulary: Vocabulary, said: Sequence[SaidSentence] = ()
) -> list[str]:
    """FINDINGS, system by system (see the module doc); `said`: sentences already written for some
    lesions (their findings count as written: no normal statement or negative contradicts them)."""
    wording = report_wording(vocabulary)
    by_system = {s.name: [w for w in lesions if system_of(w, vocabulary) == s.name] for s in wording.systems}
    said_in: dict[str, list[str]] = {s.name: [] for s in wording.systems}
    for sentence in said:
        said_in[finding_system(sentence.findings[0], vocabulary)].append(sentence.text)
    every_finding = {w.finding for w in lesions} | {f for sentence in said for f in sentence.findings}
    with_findings = {finding_system(f, vocabulary) for f in every_finding}
    basal = [w for w in by_system.get("lungs", []) if set(w.regions) <= BASAL_ZONES and len(w.terms) == 1]
    joined: dict[int, LesionWords] = {}  # id of an effusion -> the lung lesion its sentence takes
    for effusion in (w for w in by_system.get("pleura", []) if w.finding == EFFUSION and len(w.terms) == 1):
        taken_now = {id(v) for v in joined.values()}
        partner = next((w for w in basal if _same_values(w, effusion) and id(w) not in taken_now), None)
        if partner is not None:
            joined[id(effusion)] = partner
    taken = {id(w) for w in joined.values()}
    sentences: list[str] = []
    for system in wording.systems:
        mine = by_system[system.name]
        touched = any(set(w.regions) & set(system.regions) for w in lesions)
        if not mine and not said_in[system.name] and system.name not in with_findings and not touched:
            if system.normal:
                sentences.append(system.normal)
            continue
        sentences += said_in[system.name]
        for group in _shared([w for w in mine if id(w) not in taken]):
            text = clause(group, vocabulary)
            partner = joined.get(id(group[0])) if len(group) == 1 else None
            if partner is not None:
                text += " with " + clause([_unqualified(partner)], vocabulary)
            sentences.append(as_sentence(text))
        missing = [
            vocabulary.finding(n) for n in system.negatives if n not in every_finding and n in vocabulary.finding_names
        ]
        if missing:
            sentences.append(as_sentence("No " + " or ".join(f.report.phrase for f in missing if f.report)))
    return sentences


def _same_values(one: LesionWords, other: LesionWords) -> bool:
    return (one.status, one.severity, one.temporal) == (other.status, other.severity, other.temporal)


def _unqualified(words: LesionWords) -> LesionWords:
    # The partner's words are the effusion's (that is why they share the sentence): said once.
    return replace(words, qualifiers=())


def impression_lines(lesions: Sequence[LesionWords], vocabulary: Vocabulary) -> list[str]:
    """IMPRESSION lines by clinical priority, numbered when more than one (see the module doc)."""
    wording = report_wording(vocabulary)
    order = {name: i for i, name in enumerate((*wording.impression_priority, *wording.incidental))}
    ranked = sorted(lesions, key=lambda w: order.get(w.finding, len(order)))
    lines = [as_sentence(clause([w], vocabulary)) for w in ranked]
    if len(lines) > 1:
        return [f"{i}. {line}" for i, line in enumerate(lines, start=1)]
    return lines


def names_only(lesions: Sequence[LesionWords], vocabulary: Vocabulary) -> list[str]:
    """The impression without places, for a model that predicts lesions in many regions."""
    wording = report_wording(vocabulary)
    order = {name: i for i, name in enumerate((*wording.impression_priority, *wording.incidental))}
    ranked = sorted(lesions, key=lambda w: order.get(w.finding, len(order)))
    return [as_sentence(noun(w, vocabulary)) for w in ranked]


def prompt_structure(vocabulary: Vocabulary) -> str:
    """The structure above in words, for the LLM aggregator's prompt: the systems in order with
    their normal statements, the impression's priority order and its normal line."""
    wording = report_wording(vocabulary)
    systems = []
    for system in wording.systems:
        negatives = [vocabulary.finding(n).report for n in system.negatives if n in vocabulary.finding_names]
        named = " or ".join(spec.phrase for spec in negatives if spec)
        said = [f'none: "{system.normal}"' if system.normal else "only when there is one"]
        said += [f"with other findings, say there is no {named} unless predicted"] if named else []
        systems.append(f"{system.name} ({'; '.join(said)})")
    enabled = set(vocabulary.finding_names)
    priority = [n for n in wording.impression_priority if n in enabled]
    incidental = [n for n in wording.incidental if n in enabled]
    return "\n".join(
        [
            "  - FINDINGS goes system by system in this order, with the normal statement of every system"
            " that has no finding: " + ", ".join(systems) + ".",
            "  - IMPRESSION lists every predicted finding, most urgent first in this order: "
            + "; ".join(priority)
            + (f"; incidental findings last: {'; '.join(incidental)}" if incidental else "")
            + f'. Number the lines when there is more than one; write "{NORMAL_IMPRESSION}" when there is none.',
        ]
    )
