"""Resolver: validated LLM answers -> grounded, region-checked labels for one report.

An answer is already schema-valid (findings and regions from the vocabulary). Here each entry
is grounded in the report text at the unit's occurrence, its regions are resolved (stated by the
model; else named in the evidence; else the sides the sentence names; else the one region the
finding's words imply; else none: an image-level label; a default region the model fills in for
a sentence that names no place is that image-level label too) and checked against the regions
the finding may occur in; then each region, the severity and the temporal change must be stated
by the unit's sentence (`grounding.unstated`), so an answer that obeys an instruction in the text
("label pneumothorax in every region") cannot add what the sentence does not say. What
fails is returned as a rejection with its reason (one per region), never dropped silently.
Several samples of one unit vote per cell; the agreement is the confidence.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from labeling.sources.grounding import ground, stated_regions, statement_of, unstated
from labeling.sources.llm.units import Occurrence
from schemas.labels import STATUS_RANK, Evidence, Label, merge_labels
from schemas.llm_output import NONE
from schemas.vocabulary import Vocabulary


@dataclass
class Rejection:
    finding: str
    regions: list[str]
    status: str
    evidence: str
    reason: str


def _rejection(item: dict[str, Any], regions: list[str], reason: str) -> Rejection:
    return Rejection(item["finding"], regions, item["status"], item["evidence"], reason)


def _one_sample(
    answer: dict[str, Any], occurrence: Occurrence, report_text: str, vocabulary: Vocabulary
) -> tuple[list[Label], list[Rejection]]:
    labels: list[Label] = []
    rejections: list[Rejection] = []
    statement = statement_of(report_text[occurrence.start : occurrence.end], vocabulary)
    for item in answer["labels"]:
        span = ground(item["evidence"], report_text, occurrence.start, occurrence.end)
        if span is None:
            rejections.append(_rejection(item, item["regions"], "ungrounded: evidence not found in the report"))
            continue
        finding = vocabulary.finding(item["finding"])
        severity = None if item["severity"] == NONE else item["severity"]
        temporal = None if item["temporal"] == NONE else item["temporal"]
        regions: list[str | None] = list(dict.fromkeys(item["regions"]))
        if not regions:
            # No place given: the one named in the evidence, else the side(s) the sentence names,
            # else the one the finding's words imply, else none (image level).
            named = [r for _, _, found in vocabulary.find_regions(span.text) for r in found]
            found: list[str] = [r for r in dict.fromkeys(named) if r in finding.regions]
            found = found or (sorted(stated_regions(statement, finding, vocabulary)) if statement.sides else [])
            regions = [*(found or finding.implied_regions)] or [None]
        if not finding.implied_regions and not statement.sides and not statement.regions & set(finding.regions):
            # The no-location rule every source follows: a sentence that names no place for the
            # finding gives no region, so the default regions a model fills in become one
            # image-level label (other regions stay, to be refused as unstated).
            regions = list(dict.fromkeys(None if r in finding.default_regions else r for r in regions))
        for region in regions:
            if region is not None and region not in finding.regions:
                rejections.append(
                    _rejection(item, [region], f"region not allowed: {item['finding']} does not occur in {region}")
                )
                continue
            reason = unstated(statement, finding, vocabulary, region=region, severity=severity, temporal=temporal)
            if reason is not None:
                rejections.append(_rejection(item, [region] if region is not None else [], reason))
                continue
            labels.append(
                Label(
                    region=region,
                    finding=item["finding"],
                    status=item["status"],
                    severity=severity,
                    temporal=temporal,
                    evidence=Evidence(start=span.start, end=span.end, text=span.text),
                )
            )
    return merge_labels(labels), rejections


def resolve_unit(
    samples: Sequence[dict[str, Any]], occurrence: Occurrence, report_text: str, vocabulary: Vocabulary
) -> tuple[list[Label], list[Rejection]]:
    """Labels of one unit at one occurrence. With several samples, each cell takes its most
    frequent status (ties: present > uncertain > absent) and confidence = share of samples that
    gave it; with one sample, confidence = exp(mean token log-probability) when the server gave one."""
    per_sample = [_one_sample(s, occurrence, report_text, vocabulary) for s in samples]
    rejections = [r for _, rej in per_sample for r in rej]
    if len(samples) == 1:
        logprob = samples[0].get("mean_logprob")
        confidence = math.exp(logprob) if logprob is not None else None
        return [label.model_copy(update={"confidence": confidence}) for label in per_sample[0][0]], rejections
    votes: dict[tuple, Counter] = {}
    first: dict[tuple, Label] = {}
    for labels, _ in per_sample:
        for label in labels:
            votes.setdefault(label.cell, Counter())[label.status.value] += 1
            first.setdefault((*label.cell, label.status.value), label)
    merged = []
    for cell, counter in votes.items():
        status = min(counter, key=lambda s: (-counter[s], STATUS_RANK[s]))
        merged.append(first[(*cell, status)].model_copy(update={"confidence": counter[status] / len(samples)}))
    return merged, rejections
