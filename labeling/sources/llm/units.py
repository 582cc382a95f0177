"""Units of LLM work: the sentences (default) or whole reports to label, de-duplicated.

A sentence unit is labeled on its own, so identical sentences anywhere in the corpus (same
normalized text) are one unit and one model call; each place it occurs is an occurrence, and
answers are grounded at every occurrence in that report's own text. With `context > 0` the
neighbouring sentences are sent as context and become part of the unit's identity.

Which sentences are read: the FINDINGS and IMPRESSION sections when a report has them;
otherwise everything except sections that describe the request rather than the image.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from labeling.ingest.sections import FINDING_SECTIONS
from labeling.ingest.sentences import normalize_sentence
from labeling.store.store import Store

# "sentences": sentence units, several per request (the engine packs them; the units are the same)
UNIT_KINDS = ("sentence", "sentences", "report")
NOT_IMAGE_SECTIONS = ("indication", "comparison", "technique", "examination", "notification", "recommendation")


@dataclass(frozen=True)
class Occurrence:
    report_key: int
    start: int  # the unit's span in this report's text
    end: int


@dataclass
class Unit:
    identity: str  # normalized text (+ context): what the cache key is built from
    text: str  # as sent to the model: the first occurrence's own text
    context: str | None
    occurrences: list[Occurrence] = field(default_factory=list)


def cache_key(
    identity: str, model: str, prompt_sha256: str, vocabulary_version: str, decoding: dict[str, Any], sample: int = 0
) -> str:
    material = json.dumps(
        {
            "model": model,
            "prompt": prompt_sha256,
            "vocabulary": vocabulary_version,
            "decoding": decoding,
            "unit": identity,
            "sample": sample,
        },
        sort_keys=True,
    )
    return hashlib.sha256(material.encode("utf-8")).hexdigest()


def _readable(sentences: list[dict]) -> list[dict]:
    described = [s for s in sentences if s["section"] in FINDING_SECTIONS]
    if described:
        return described
    return [s for s in sentences if s["section"] not in NOT_IMAGE_SECTIONS]


def build_units(
    store: Store, report_keys: Sequence[int], unit: str = "sentence", context: int = 0
) -> tuple[dict[str, Unit], dict[int, list[str]], dict[int, str]]:
    """(units by identity, each report's unit identities, report texts)."""
    if unit not in UNIT_KINDS:
        raise ValueError(f"unit must be one of {UNIT_KINDS}, not {unit!r}")
    texts = store.report_texts(report_keys)
    rows = store.report_sentences(report_keys)
    by_report: dict[int, list[dict]] = {key: [] for key in report_keys}
    for key, index, section, start, end, text in rows:
        by_report[key].append({"index": index, "section": section, "start": start, "end": end, "text": text})

    units: dict[str, Unit] = {}
    report_units: dict[int, list[str]] = {}
    for key in report_keys:
        chosen = _readable(by_report.get(key, []))
        identities: list[str] = []
        if unit == "report" and chosen:
            start, end = chosen[0]["start"], chosen[-1]["end"]
            pieces = [(normalize_sentence(texts[key][start:end]), texts[key][start:end], None, start, end)]
        else:
            pieces = []
            for i, sentence in enumerate(chosen):
                around = None
                if context:
                    before = [s["text"] for s in chosen[max(0, i - context) : i]]
                    after = [s["text"] for s in chosen[i + 1 : i + 1 + context]]
                    around = " ".join(before + ["[...]"] + after) if before or after else None
                identity = normalize_sentence(sentence["text"])
                if around:
                    identity += "\n--context--\n" + normalize_sentence(around)
                pieces.append((identity, sentence["text"], around, sentence["start"], sentence["end"]))
        for identity, text, around, start, end in pieces:
            entry = units.setdefault(identity, Unit(identity=identity, text=text, context=around))
            entry.occurrences.append(Occurrence(key, start, end))
            if identity not in identities:
                identities.append(identity)
        report_units[key] = identities
    return units, report_units, texts
