"""The label vocabulary: the 29 Chest ImaGenome regions and the findings, loaded from a
versioned data file.

A vocabulary is data, not code: `vocabulary_data/chest_imagenome.json` ships with clala and any
file of the same shape can replace it (`--vocabulary PATH`). Its identity, recorded with every
run, is `name@version` plus the enabled categories and the sha256 of the file's bytes, so two
runs can only be compared cell for cell when they were made under the same vocabulary.
"""

from __future__ import annotations

import hashlib
import json
import re
from functools import cached_property
from importlib import resources
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from schemas.labels import Severity, Temporal

Laterality = Literal["right", "left", "midline"]
CATEGORIES = ("anatomicalfinding", "disease", "technicalassessment", "tubesandlines", "device")
Category = Literal["anatomicalfinding", "disease", "technicalassessment", "tubesandlines", "device"]

DEFAULT_VOCABULARY = "chest_imagenome.json"


def normalize_phrase(text: str) -> str:
    """Lower-case and single-space a phrase, the form in which synonyms are stored."""
    return " ".join(text.lower().split())


class Region(BaseModel):
    model_config = ConfigDict(frozen=True)
    index: int
    name: str
    laterality: Laterality
    parent: str | None = Field(
        default=None, description="the region that contains this one (right lower lung zone -> right lung)"
    )
    synonyms: tuple[str, ...] = ()


class MultiRegionPhrase(BaseModel):
    model_config = ConfigDict(frozen=True)
    phrase: str
    regions: tuple[str, ...]


class FindingWording(BaseModel):
    """How a generated report names a finding (model/reports/wording.py)."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    phrase: str = Field(description='the noun phrase radiologists write ("patchy atelectasis"); one of its synonyms')
    plural: str | None = Field(default=None, description="the phrase for lesions on both sides, when it differs")
    system: str = Field(description="the FINDINGS paragraph it belongs to (one of report.systems)")
    size_words: bool = Field(default=False, description='severity said as size: "small", "moderate", "large"')
    sided: bool = Field(default=False, description='a whole lung said by its side alone: "right pleural effusion"')
    placed: dict[str, str] = Field(
        default={},
        description='region, or regions joined by " + ", -> the words for the finding there ("elevated right '
        'hemidiaphragm"; "cardiac silhouette + mediastinum" -> "enlarged cardiomediastinal silhouette")',
    )

    def placed_words(self, regions: tuple[str, ...]) -> str | None:
        """The words for the finding in exactly `regions` (any order), if the vocabulary has them."""
        wanted = frozenset(regions)
        return next((words for key, words in self.placed.items() if frozenset(key.split(" + ")) == wanted), None)


class Finding(BaseModel):
    model_config = ConfigDict(frozen=True)
    name: str
    category: Category
    synonyms: tuple[str, ...] = ()
    regions: tuple[str, ...] = Field(description="region names (group references resolved)")
    default_regions: tuple[str, ...] = Field(
        default=(), description='where an unlocalized mention applies ("no pneumothorax" -> both lungs)'
    )
    chexpert: tuple[str, ...] = ()
    parent: str | None = Field(
        default=None,
        description="the more generic finding this one is a kind of (Chest ImaGenome attribute hierarchy: "
        '"mass/nodule (not otherwise specified)" -> "lung lesion" -> "lung opacity")',
    )
    report: FindingWording | None = None

    @property
    def implied_regions(self) -> tuple[str, ...]:
        """Where a mention that names no place is: the one default region of a finding whose
        words name its place ("cardiomegaly" -> cardiac silhouette, "scoliosis" -> spine); empty
        (image level, no region) for a finding that may be on either side or anywhere in the
        lungs ("no pneumothorax", "atelectasis"). The no-location rule of every label source."""
        return self.default_regions if len(self.default_regions) == 1 else ()


class ReportSystem(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")
    name: str
    normal: str | None = Field(description="the statement for the system when it has no finding (None: nothing)")
    negatives: tuple[str, ...] = Field(default=(), description="findings the normal statement says are absent")
    regions: tuple[str, ...] = Field(
        default=(),
        description="its anatomy: a lesion of another system there (opacity in the hila) makes the normal "
        "statement untrue, and only the negatives are said",
    )


class ReportLocation(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")
    regions: tuple[str, ...] = Field(min_length=1)
    phrase: str = Field(description='after the noun: "at the right base"')
    adjective: str | None = Field(default=None, description='before the noun: "bibasilar"')


class ReportWording(BaseModel):
    """The words of generated reports: FINDINGS paragraphs in order, region terms, severity and
    temporal words, the impression's clinical priority."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    systems: tuple[ReportSystem, ...] = Field(min_length=1)
    covers: dict[str, tuple[str, ...]] = Field(default={}, description="zones that together are the whole lung")
    locations: tuple[ReportLocation, ...]
    severity_words: dict[Severity, str]
    size_words: dict[Severity, str]
    temporal_words: dict[Temporal, str]
    uncertain_word: str
    impression_priority: tuple[str, ...] = Field(description="findings, most urgent first")
    incidental: tuple[str, ...] = Field(default=(), description="findings listed last in the impression, in order")


class VocabularyFile(BaseModel):
    """The data file as written; `Vocabulary` is the resolved, queryable form."""

    model_config = ConfigDict(extra="forbid")
    name: str
    version: str
    description: str = ""
    default_categories: list[Category]
    chexpert_observations: list[str]
    regions: list[Region]
    region_groups: dict[str, list[str]] = {}
    multi_region_phrases: list[MultiRegionPhrase] = []
    # Words that state a severity or a temporal change ("small" -> mild, "stable" -> unchanged),
    # per value; the value's own name always counts too. Labels are grounded on them.
    severity_words: dict[Severity, list[str]] = {}
    temporal_words: dict[Temporal, list[str]] = {}
    report: ReportWording | None = None
    findings: list[Finding]

    @model_validator(mode="before")
    @classmethod
    def _resolve_groups(cls, data: dict) -> dict:
        # "@group" references in finding regions expand to the group's region names.
        groups = data.get("region_groups", {})
        findings = []

        def expand(finding: dict, key: str) -> list[str]:
            names: list[str] = []
            for ref in finding.get(key, []):
                if isinstance(ref, str) and ref.startswith("@"):
                    if ref[1:] not in groups:
                        raise ValueError(f"finding {finding.get('name')!r}: unknown region group {ref!r}")
                    names.extend(groups[ref[1:]])
                else:
                    names.append(ref)
            return list(dict.fromkeys(names))

        for finding in data.get("findings", []):
            regions = expand(finding, "regions")
            findings.append(
                {**finding, "regions": regions, "default_regions": expand(finding, "default_regions") or regions}
            )
        return {**data, "findings": findings}

    @model_validator(mode="after")
    def _check_consistency(self) -> VocabularyFile:
        region_names = [r.name for r in self.regions]
        if [r.index for r in self.regions] != list(range(len(self.regions))):
            raise ValueError("regions must be listed in index order 0..N-1")
        known = set(region_names)
        for group, names in self.region_groups.items():
            for name in names:
                if name not in known:
                    raise ValueError(f"region group {group!r}: unknown region {name!r}")
        for phrase in self.multi_region_phrases:
            for name in phrase.regions:
                if name not in known:
                    raise ValueError(f"multi-region phrase {phrase.phrase!r}: unknown region {name!r}")
        _check_parents(self.regions, "region")
        _check_parents(self.findings, "finding")
        seen_findings: set[str] = set()
        for finding in self.findings:
            if finding.name in seen_findings:
                raise ValueError(f"finding {finding.name!r} listed twice")
            seen_findings.add(finding.name)
            for name in finding.regions:
                if name not in known:
                    raise ValueError(f"finding {finding.name!r}: unknown region {name!r}")
            outside = [name for name in finding.default_regions if name not in finding.regions]
            if outside:
                raise ValueError(f"finding {finding.name!r}: default regions {outside} are not among its regions")
            for obs in finding.chexpert:
                if obs not in self.chexpert_observations:
                    raise ValueError(f"finding {finding.name!r}: unknown CheXpert observation {obs!r}")
        _check_unique_phrases(
            [(normalize_phrase(s), r.name) for r in self.regions for s in (r.name, *r.synonyms)]
            + [(normalize_phrase(p.phrase), p.phrase) for p in self.multi_region_phrases],
            "region phrase",
        )
        _check_unique_phrases(
            [(normalize_phrase(s), f.name) for f in self.findings for s in (f.name, *f.synonyms)],
            "finding phrase",
        )
        _check_value_words(self)
        _check_report_wording(self)
        return self


def _check_report_wording(data: VocabularyFile) -> None:
    """Every finding worded, in a known system and in the impression order exactly once; every
    region with a term of its own; every name known."""
    wording = data.report
    if wording is None:
        return
    regions = {r.name for r in data.regions}
    findings = {f.name for f in data.findings}
    systems = [s.name for s in wording.systems]
    if len(set(systems)) != len(systems):
        raise ValueError("report.systems: a system is listed twice")
    for finding in data.findings:
        if finding.report is None:
            raise ValueError(f"finding {finding.name!r}: no report wording (the file has a report block)")
        if finding.report.system not in systems:
            raise ValueError(f"finding {finding.name!r}: unknown report system {finding.report.system!r}")
        outside = [r for key in finding.report.placed for r in key.split(" + ") if r not in finding.regions]
        if outside:
            raise ValueError(f"finding {finding.name!r}: report.placed names regions it cannot be in: {outside}")
    for system in wording.systems:
        unknown = [n for n in system.negatives if n not in findings]
        if unknown:
            raise ValueError(f"report system {system.name!r}: unknown negative findings {unknown}")
        unknown = [r for r in system.regions if r not in regions]
        if unknown:
            raise ValueError(f"report system {system.name!r}: unknown regions {unknown}")
    for lung, zones in wording.covers.items():
        unknown = [r for r in (lung, *zones) if r not in regions]
        if unknown:
            raise ValueError(f"report.covers {lung!r}: unknown regions {unknown}")
    _check_report_locations(wording, regions)
    order = [*wording.impression_priority, *wording.incidental]
    if len(set(order)) != len(order):
        raise ValueError("report.impression_priority and incidental: a finding is listed twice")
    if set(order) != findings:
        missing, unknown = sorted(findings - set(order)), sorted(set(order) - findings)
        raise ValueError(f"report.impression_priority and incidental: missing {missing}, unknown {unknown}")


def _check_report_locations(wording: ReportWording, regions: set[str]) -> None:
    seen: set[tuple[str, ...]] = set()
    for location in wording.locations:
        unknown = [r for r in location.regions if r not in regions]
        if unknown:
            raise ValueError(f"report location {location.phrase!r}: unknown regions {unknown}")
        key = tuple(sorted(location.regions))
        if key in seen:
            raise ValueError(f"report location {location.phrase!r}: its regions have a term already")
        seen.add(key)
    alone = {loc.regions[0] for loc in wording.locations if len(loc.regions) == 1}
    if regions - alone:
        raise ValueError(f"report.locations: no term for regions {sorted(regions - alone)}")


def _check_value_words(data: VocabularyFile) -> None:
    for what, words in (("severity word", data.severity_words), ("temporal word", data.temporal_words)):
        pairs = [
            (normalize_phrase(w), value.value) for value, phrases in words.items() for w in (value.value, *phrases)
        ]
        _check_unique_phrases(pairs, what)


def _check_parents(items: list[Region] | list[Finding], what: str) -> None:
    """Each parent (a region's, a finding's) is known, and no chain of parents is a cycle."""
    parent = {item.name: item.parent for item in items}
    for item in items:
        seen, current = {item.name}, item.parent
        while current is not None:
            if current not in parent:
                raise ValueError(f"{what} {item.name!r}: unknown parent {what} {current!r}")
            if current in seen:
                raise ValueError(f"{what} {item.name!r}: its parent {what}s form a cycle")
            seen.add(current)
            current = parent[current]


def _check_unique_phrases(pairs: list[tuple[str, str]], what: str) -> None:
    owner: dict[str, str] = {}
    for phrase, name in pairs:
        if phrase in owner and owner[phrase] != name:
            raise ValueError(f"{what} {phrase!r} belongs to both {owner[phrase]!r} and {name!r}")
        owner[phrase] = name


class Vocabulary:
    """Regions and the enabled findings, with phrase lookup in both directions."""

    def __init__(self, data: VocabularyFile, categories: tuple[str, ...], sha256: str):
        unknown = [c for c in categories if c not in CATEGORIES]
        if unknown:
            raise ValueError(f"unknown finding categories {unknown}; choose from {list(CATEGORIES)}")
        self.data = data
        self.categories = tuple(c for c in CATEGORIES if c in categories)
        self.file_sha256 = sha256
        self.regions: tuple[Region, ...] = tuple(data.regions)
        self.findings: tuple[Finding, ...] = tuple(f for f in data.findings if f.category in self.categories)
        self.region_names: tuple[str, ...] = tuple(r.name for r in self.regions)
        self.finding_names: tuple[str, ...] = tuple(f.name for f in self.findings)
        self._region_by_name = {r.name: r for r in self.regions}
        self._finding_by_name = {f.name: f for f in self.findings}

    # --- identity -------------------------------------------------------------------------
    @property
    def name(self) -> str:
        return self.data.name

    @property
    def version(self) -> str:
        """The string recorded with every run: name@version+categories#file-hash."""
        return f"{self.data.name}@{self.data.version}+{'+'.join(self.categories)}#{self.file_sha256[:12]}"

    # --- lookup ---------------------------------------------------------------------------
    def region(self, name: str) -> Region:
        try:
            return self._region_by_name[name]
        except KeyError:
            raise KeyError(f"unknown region {name!r}") from None

    def finding(self, name: str) -> Finding:
        try:
            return self._finding_by_name[name]
        except KeyError:
            raise KeyError(f"finding {name!r} is not in vocabulary {self.version}") from None

    def region_index(self, name: str) -> int:
        return self.region(name).index

    def allows(self, finding: str, region: str | None) -> bool:
        """Whether `finding` may be located in `region` (None = image level, always allowed)."""
        return region is None or region in self.finding(finding).regions

    def ancestors(self, name: str) -> tuple[str, ...]:
        """The regions that contain `name`, nearest first (right lower lung zone -> right lung)."""
        chain: list[str] = []
        current = self.region(name).parent
        while current is not None:
            chain.append(current)
            current = self.region(current).parent
        return tuple(chain)

    def finding_ancestors(self, name: str) -> tuple[str, ...]:
        """The enabled findings `name` is a kind of, nearest first ("calcified nodule" -> lung
        lesion, lung opacity): a specific finding present implies each of them present."""
        chain: list[str] = []
        current = self.finding(name).parent
        while current is not None and current in self._finding_by_name:
            chain.append(current)
            current = self._finding_by_name[current].parent
        return tuple(chain)

    def chexpert_findings(self, observation: str) -> tuple[str, ...]:
        """The enabled findings that imply a CheXpert observation."""
        if observation not in self.data.chexpert_observations:
            raise KeyError(f"unknown CheXpert observation {observation!r}")
        return tuple(f.name for f in self.findings if observation in f.chexpert)

    # --- phrase resolution ------------------------------------------------------------------
    @cached_property
    def _region_phrases(self) -> dict[str, tuple[str, ...]]:
        table: dict[str, tuple[str, ...]] = {}
        for region in self.regions:
            for phrase in (region.name, *region.synonyms):
                table[normalize_phrase(phrase)] = (region.name,)
        for multi in self.data.multi_region_phrases:
            table[normalize_phrase(multi.phrase)] = tuple(multi.regions)
        return table

    @cached_property
    def _finding_phrases(self) -> dict[str, str]:
        return {normalize_phrase(p): f.name for f in self.findings for p in (f.name, *f.synonyms)}

    @cached_property
    def _severity_phrases(self) -> dict[str, str]:
        return _value_phrases(tuple(s.value for s in Severity), self.data.severity_words)

    @cached_property
    def _temporal_phrases(self) -> dict[str, str]:
        return _value_phrases(tuple(t.value for t in Temporal), self.data.temporal_words)

    @cached_property
    def _severity_pattern(self) -> re.Pattern[str]:
        return _phrase_pattern(self._severity_phrases)

    @cached_property
    def _temporal_pattern(self) -> re.Pattern[str]:
        return _phrase_pattern(self._temporal_phrases)

    @cached_property
    def _region_pattern(self) -> re.Pattern[str]:
        return _phrase_pattern(self._region_phrases)

    @cached_property
    def _finding_pattern(self) -> re.Pattern[str]:
        return _phrase_pattern(self._finding_phrases)

    def resolve_region(self, phrase: str) -> tuple[str, ...]:
        """Regions named by a whole phrase ("right base", "bibasilar"); empty if none."""
        return self._region_phrases.get(normalize_phrase(phrase), ())

    def resolve_finding(self, phrase: str) -> str | None:
        """The enabled finding a whole phrase names ("cardiomegaly"), or None."""
        return self._finding_phrases.get(normalize_phrase(phrase))

    def find_regions(self, text: str) -> list[tuple[int, int, tuple[str, ...]]]:
        """Region mentions in free text: (start, end, regions), longest phrase first."""
        return [
            (m.start(), m.end(), self._region_phrases[normalize_phrase(m.group(0))])
            for m in self._region_pattern.finditer(text)
        ]

    def find_findings(self, text: str) -> list[tuple[int, int, str]]:
        """Finding mentions in free text: (start, end, finding name), longest phrase first."""
        return [
            (m.start(), m.end(), self._finding_phrases[normalize_phrase(m.group(0))])
            for m in self._finding_pattern.finditer(text)
        ]

    def find_severities(self, text: str) -> list[tuple[int, int, str]]:
        """Severity words in free text: (start, end, severity value) ("small" -> mild)."""
        return [
            (m.start(), m.end(), self._severity_phrases[normalize_phrase(m.group(0))])
            for m in self._severity_pattern.finditer(text)
        ]

    def find_temporals(self, text: str) -> list[tuple[int, int, str]]:
        """Temporal-change words in free text: (start, end, temporal value) ("stable" -> unchanged)."""
        return [
            (m.start(), m.end(), self._temporal_phrases[normalize_phrase(m.group(0))])
            for m in self._temporal_pattern.finditer(text)
        ]

    def summary(self) -> dict:
        return {
            "version": self.version,
            "regions": len(self.regions),
            "findings": len(self.findings),
            "categories": list(self.categories),
        }


def _value_phrases(values: tuple[str, ...], words: dict) -> dict[str, str]:
    # Each value's own name counts even when the file lists no words for it.
    table = {normalize_phrase(value): value for value in values}
    for value, phrases in words.items():
        table.update({normalize_phrase(p): value.value for p in phrases})
    return table


def _phrase_pattern(phrases: dict) -> re.Pattern[str]:
    # Longest alternatives first so "right lower lobe" wins over "right"; whitespace inside a
    # phrase matches any run of whitespace (reports wrap lines mid-phrase).
    alternatives = sorted(phrases, key=len, reverse=True)
    body = "|".join(r"\s+".join(re.escape(word) for word in p.split()) for p in alternatives)
    return re.compile(rf"(?<![\w/])(?:{body})(?![\w/])", re.IGNORECASE)


def load_vocabulary(
    path: str | Path | None = None,
    categories: list[str] | tuple[str, ...] | None = None,
    enable: list[str] | tuple[str, ...] = (),
) -> Vocabulary:
    """Load a vocabulary file (the shipped one by default).

    `categories` replaces the file's default categories; `enable` adds to them (for example
    `enable=["tubesandlines", "device"]`).
    """
    if path is None:
        raw = resources.files("schemas").joinpath("vocabulary_data", DEFAULT_VOCABULARY).read_bytes()
        origin = DEFAULT_VOCABULARY
    else:
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"{path}: vocabulary file not found")
        raw = path.read_bytes()
        origin = str(path)
    try:
        data = VocabularyFile.model_validate(json.loads(raw))
    except json.JSONDecodeError as exc:
        raise ValueError(f"{origin}: not valid JSON (line {exc.lineno}): {exc.msg}") from None
    except ValueError as exc:
        first = str(exc).splitlines()
        raise ValueError(f"{origin}: invalid vocabulary: {' '.join(first[:3])}") from None
    chosen = tuple(categories) if categories else tuple(data.default_categories)
    chosen = tuple(dict.fromkeys((*chosen, *enable)))
    return Vocabulary(data, chosen, hashlib.sha256(raw).hexdigest())
