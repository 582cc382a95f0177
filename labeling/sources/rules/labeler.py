"""The rules labeler: medspaCy target rules built from the vocabulary's synonyms, ConText
for negation, uncertainty, history and hypotheticals, and region resolution from the region,
laterality and zone words of the same sentence. Deterministic; no model.

Speed comes from three choices, none of which changes a label:
- sentences were split at ingest and are stored with offsets, so no sentence splitter runs here
  (each stored sentence is one spaCy doc, and ConText's scope is that sentence);
- the sections were found at ingest too: only FINDINGS and IMPRESSION sentences are read when a
  report has them (all sentences of a report without headers), which is what a sectionizer is for;
- a sentence's labels depend on its text alone, so each distinct sentence text is processed once
  per run and its labels are placed at every occurrence's offsets.

Cost stays linear in text length: a sentence longer than MAX_PIECE_CHARS (no real report
sentence comes near it) is labeled in pieces cut at clause boundaries, because medspaCy's
entity setting, ConText's modifier-target pairs and the region assignment all grow with the
square of a doc's length (a 99,000-character sentence took 99.5 s).
"""

from __future__ import annotations

import re
import warnings
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from functools import cached_property

from labeling.sources.rules.bones import bone_finding
from labeling.sources.rules.calcifications import calcification_finding
from labeling.sources.rules.hedges import HEDGE_BREAK, HEDGE_CONTEXT_RULES, alternatives
from labeling.sources.rules.locations import compared_sides, region_phrases
from labeling.sources.rules.mentions import Mention, PlaceWords, RegionWords, SideWord
from schemas.vocabulary import Vocabulary

# Bump when a change to the rules below changes labels; it is part of the run's provenance.
RULES_VERSION = "8"

# ConText rules added to medspaCy's defaults: how radiology reports state normal and hedged findings.
EXTRA_CONTEXT_RULES: list[tuple[str, str, str]] = [
    ("is normal", "NEGATED_EXISTENCE", "BACKWARD"),
    ("are normal", "NEGATED_EXISTENCE", "BACKWARD"),
    ("appears normal", "NEGATED_EXISTENCE", "BACKWARD"),
    ("appear normal", "NEGATED_EXISTENCE", "BACKWARD"),
    ("within normal limits", "NEGATED_EXISTENCE", "BACKWARD"),
    ("is unremarkable", "NEGATED_EXISTENCE", "BACKWARD"),
    ("are unremarkable", "NEGATED_EXISTENCE", "BACKWARD"),
    ("is not enlarged", "NEGATED_EXISTENCE", "BACKWARD"),
    ("are not enlarged", "NEGATED_EXISTENCE", "BACKWARD"),
    ("is not significantly enlarged", "NEGATED_EXISTENCE", "BACKWARD"),
    ("is not grossly enlarged", "NEGATED_EXISTENCE", "BACKWARD"),
    ("within limits of normal", "NEGATED_EXISTENCE", "BACKWARD"),
    ("has resolved", "NEGATED_EXISTENCE", "BACKWARD"),
    ("have resolved", "NEGATED_EXISTENCE", "BACKWARD"),
    ("no longer seen", "NEGATED_EXISTENCE", "BACKWARD"),
    ("no longer visualized", "NEGATED_EXISTENCE", "BACKWARD"),
    ("not identified", "NEGATED_EXISTENCE", "BACKWARD"),
    ("is not seen", "NEGATED_EXISTENCE", "BACKWARD"),
    ("are not seen", "NEGATED_EXISTENCE", "BACKWARD"),
    ("may represent", "POSSIBLE_EXISTENCE", "BIDIRECTIONAL"),
    ("could represent", "POSSIBLE_EXISTENCE", "BIDIRECTIONAL"),
    ("may reflect", "POSSIBLE_EXISTENCE", "BIDIRECTIONAL"),
    ("could reflect", "POSSIBLE_EXISTENCE", "BIDIRECTIONAL"),
    ("concerning for", "POSSIBLE_EXISTENCE", "FORWARD"),
    ("suggestive of", "POSSIBLE_EXISTENCE", "FORWARD"),
    ("questionable", "POSSIBLE_EXISTENCE", "FORWARD"),
    ("possibly", "POSSIBLE_EXISTENCE", "BIDIRECTIONAL"),
    ("likely", "POSSIBLE_EXISTENCE", "BIDIRECTIONAL"),
    ("cannot be excluded", "POSSIBLE_EXISTENCE", "BACKWARD"),
    ("can not be excluded", "POSSIBLE_EXISTENCE", "BACKWARD"),
    ("not excluded", "POSSIBLE_EXISTENCE", "BACKWARD"),
]
# Hedges, alternatives ("versus"), differentials and history cues with their scopes: hedges.py.

# Phrases that name an organ rather than a finding: they carry a label in a normal statement
# ("heart size is normal" -> enlarged cardiac silhouette absent) or with a word of ANCHOR_ABNORMAL
# ("the heart is mildly enlarged" -> present, mild); otherwise they say nothing.
NORMAL_ANCHORS: dict[str, str] = {
    "heart size": "enlarged cardiac silhouette",
    "cardiac size": "enlarged cardiac silhouette",
    "cardiac silhouette": "enlarged cardiac silhouette",
    "cardiomediastinal silhouette": "enlarged cardiac silhouette",
    "heart": "enlarged cardiac silhouette",
    "mediastinal contour": "mediastinal widening",
    "mediastinal contours": "mediastinal widening",
    "mediastinal silhouette": "mediastinal widening",
    "mediastinum": "mediastinal widening",
    "hilar contours": "enlarged hilum",
    "hila": "enlarged hilum",
}

# Findings whose generic synonyms also name a sibling finding elsewhere in the body.
SPECIFIC_FINDINGS: dict[str, tuple[str, ...]] = {
    "rib fracture": ("clavicle fracture", "spinal fracture"),
}

# What makes an organ phrase abnormal ("the heart is mildly enlarged", "the hila are prominent").
ANCHOR_ABNORMAL: dict[str, re.Pattern[str]] = {
    "enlarged cardiac silhouette": re.compile(
        r"\b(?:enlarged|enlargement|increased in size|cardiomegaly|borderline)\b", re.I
    ),
    "mediastinal widening": re.compile(r"\b(?:widened|widening|wide)\b", re.I),
    "enlarged hilum": re.compile(r"\b(?:enlarged|enlargement|prominent|prominence|full|fullness)\b", re.I),
}

# Severity and temporal words are the vocabulary's (severity_words, temporal_words); when a
# sentence says several, the first of these orders wins ("resolved" over "unchanged": a finding
# that resolved is absent whatever else the sentence says).
SEVERITY_ORDER = ("mild", "moderate", "severe")
TEMPORAL_ORDER = ("resolved", "new", "worsened", "improved", "unchanged")
# Comparatives among the temporal words describe a distribution ("right greater than left",
# "more prominent in the bases") unless the sentence refers to an earlier study; "more likely" /
# "less likely" weigh a diagnosis and are never a change.
COMPARATIVES = frozenset({"more", "less", "greater", "larger", "smaller", "worse"})
_EARLIER_STUDY = re.compile(r"\b(?:prior|previous(?:ly)?|interval|since|compared|comparison|earlier|before)\b", re.I)
_LIKELIHOOD = re.compile(r"\b(?:more|less)\s+likely\b", re.I)
# The longest doc the pipeline sees: sentences above it are cut into pieces at clause
# boundaries. IU X-ray's longest sentence is 293 characters; at 1,000 a piece costs about twice
# a short sentence per character (bench/rules_long_text.py).
MAX_PIECE_CHARS = 1000
# Where a clause ends: after a comma, semicolon or colon and its space (the text's whitespace is
# collapsed to single spaces before it is cut).
_CLAUSE_END = re.compile(r"[,;:] ")
LATERALITY = re.compile(r"\b(?:(?P<left>left)|(?P<right>right)|(?P<both>bilateral(?:ly)?|both))\b", re.I)


@dataclass(frozen=True)
class SentenceLabel:
    """A label found in one sentence; start/end are the matched text's offsets in the sentence."""

    region: str | None
    finding: str
    status: str
    severity: str | None
    temporal: str | None
    start: int
    end: int


def silence_pyrush() -> None:
    """PyRuSH logs every token at DEBUG through loguru; that floods output and costs time."""
    try:
        from loguru import logger

        logger.remove()
        logger.add(lambda message: None, level="WARNING")
    except ImportError:  # loguru comes with PyRuSH; without it there is nothing to silence
        pass


def _one_sentence(doc):
    # Each doc is one stored sentence; ConText needs sentence boundaries to bound its scope.
    for i, token in enumerate(doc):
        token.is_sent_start = i == 0
    return doc


class RulesLabeler:
    """Labels sentences with the vocabulary's findings, statuses and regions."""

    def __init__(self, vocabulary: Vocabulary, *, max_piece_chars: int = MAX_PIECE_CHARS):
        self.vocabulary = vocabulary
        self.max_piece_chars = max_piece_chars  # the longest doc the pipeline sees (see clause_pieces)
        self._finding = {f.name: f for f in vocabulary.findings}
        self._laterality = {r.name: r.laterality for r in vocabulary.regions}
        self._enabled = frozenset(self._finding)

    # --- the pipeline --------------------------------------------------------------------------
    def target_rules(self) -> list[tuple[str, str, bool]]:
        """(phrase, finding, is_normal_anchor), in a stable order."""
        rules = []
        seen = set()
        for finding in self.vocabulary.findings:
            for phrase in (finding.name, *finding.synonyms):
                key = phrase.lower()
                if key not in seen and "/" not in phrase:
                    seen.add(key)
                    rules.append((phrase, finding.name, False))
        for phrase, finding in NORMAL_ANCHORS.items():
            if finding in self._finding and phrase not in seen:
                seen.add(phrase)
                rules.append((phrase, finding, True))
        return rules

    @cached_property
    def sha256(self) -> str:
        """Identity of the rule set (rules/identity.py): every rule module's source and constants,
        the vocabulary and the target rules built from it, the piece length."""
        from labeling.sources.rules.identity import rules_identity

        return rules_identity([RULES_VERSION, self.vocabulary.version, self.target_rules(), self.max_piece_chars])

    @cached_property
    def nlp(self):
        silence_pyrush()
        import spacy
        from medspacy.context import ConTextRule
        from medspacy.target_matcher import TargetRule
        from spacy.language import Language

        if not Language.has_factory("clala_one_sentence"):
            Language.component("clala_one_sentence", func=_one_sentence)
        nlp = spacy.blank("en")
        nlp.add_pipe("clala_one_sentence")
        matcher = nlp.add_pipe("medspacy_target_matcher")
        matcher.add(
            [
                TargetRule(phrase, finding, metadata={"normal_anchor": anchor})
                for phrase, finding, anchor in self.target_rules()
            ]
        )
        context = nlp.add_pipe("medspacy_context")
        context.add(
            [
                ConTextRule(literal, category, direction=direction)
                for literal, category, direction in EXTRA_CONTEXT_RULES
            ]
            + [
                ConTextRule(
                    literal,
                    category,
                    direction=direction,
                    terminated_by={HEDGE_BREAK} if ends_at_break else None,
                    # a clause break only ends scopes: it modifies no finding
                    allowed_types={"NO_FINDING"} if category == HEDGE_BREAK else None,
                )
                for literal, category, direction, ends_at_break in HEDGE_CONTEXT_RULES
            ]
        )
        return nlp

    # --- labeling --------------------------------------------------------------------------------
    def label_sentences(
        self, texts: Iterable[str], skipped: dict[str, int] | None = None, batch_size: int = 256
    ) -> list[list[SentenceLabel]]:
        collapsed = [_collapse_whitespace(t) for t in texts]
        pieces = [clause_pieces(text, self.max_piece_chars) for text, _ in collapsed]
        with warnings.catch_warnings():
            # medspaCy keeps a token Matcher beside its PhraseMatcher; with literal rules only it
            # is empty, and spaCy warns about that on every document.
            warnings.filterwarnings("ignore", message=r"\[W036\]")
            docs = self.nlp.pipe(
                (text[start:end] for (text, _), spans in zip(collapsed, pieces) for start, end in spans),
                batch_size=batch_size,
            )
            labeled = []
            for (_, where), spans in zip(collapsed, pieces):
                labels = []
                for (offset, _), doc in zip(spans, docs):
                    labels.extend(
                        replace(label, start=where[offset + label.start], end=where[offset + label.end - 1] + 1)
                        for label in self._labels_of(doc, skipped)
                    )
                labeled.append(labels)
            return labeled

    def _labels_of(self, doc, skipped: dict[str, int] | None) -> list[SentenceLabel]:
        text = doc.text
        mentions = self._mentions_of(doc, skipped)
        return self._labels_of_mentions(text, mentions) if mentions else []

    def _mentions_of(self, doc, skipped: dict[str, int] | None) -> list[Mention]:
        """Each finding mention the sentence states."""
        text = doc.text
        mentions: list[Mention] = []
        anchored: dict[int, int] = {}  # mention index of an organ phrase read as abnormal -> its gap to the word
        for ent in doc.ents:
            if ent._.is_historical or ent._.is_hypothetical or ent._.is_family:
                if skipped is not None:
                    kind = (
                        "historical" if ent._.is_historical else "hypothetical" if ent._.is_hypothetical else "family"
                    )
                    skipped[kind] = skipped.get(kind, 0) + 1
                continue
            anchor = (ent._.target_rule.metadata or {}).get("normal_anchor", False)
            if ent._.is_negated:
                status = "absent"
            elif anchor and not ANCHOR_ABNORMAL[ent.label_].search(text):
                continue  # an organ named with neither a normal nor an abnormal statement says nothing
            elif ent._.is_uncertain:
                status = "uncertain"
            else:
                status = "present"
            finding = bone_finding(ent.label_, ent.text, text, self._enabled)
            if finding is not None:
                finding = calcification_finding(finding, ent.text, text, self._enabled)
            # None: a bone outside the vocabulary's regions (bones.py), a calcification of no finding
            # of the vocabulary (calcifications.py)
            if finding is None:
                continue
            if anchor and status != "absent":
                anchored[len(mentions)] = min(
                    _gap(ent.start_char, ent.end_char, m.start(), m.end())
                    for m in ANCHOR_ABNORMAL[ent.label_].finditer(text)
                )
            mentions.append(Mention(ent.start_char, ent.end_char, finding, status))
        return [m for i, m in enumerate(mentions) if not self._redundant_anchor(i, mentions, anchored)]

    def _labels_of_mentions(self, text: str, mentions: list[Mention]) -> list[SentenceLabel]:
        groups = alternatives(text, mentions)
        for i in (i for group in groups for i in group):
            if mentions[i].status == "present":
                mentions[i] = mentions[i]._replace(status="uncertain")
        regions = self._assign_regions(text, mentions, groups)
        # Words of the whole sentence: searched once, not once per mention.
        stated_severity = _first_value(SEVERITY_ORDER, self.vocabulary.find_severities(text))
        temporal = _first_value(TEMPORAL_ORDER, _changes(text, self.vocabulary))
        labels = []
        for (start, end, finding, status), cells in zip(mentions, regions):
            severity = stated_severity if status != "absent" else None
            if temporal == "resolved":
                status, severity = "absent", None
            for region in cells or (None,):  # no cells: a finding whose place the sentence does not say
                labels.append(SentenceLabel(region, finding, status, severity, temporal, start, end))
        return labels

    def _assign_regions(self, text: str, mentions: list[Mention], groups: list[set[int]]) -> list[tuple[str, ...]]:
        """The regions of each finding mention.

        Each region phrase of the sentence goes to its nearest finding mention; a bare left,
        right or bilateral goes the same way and selects sides of the finding's default regions.
        A finding left without a location shares the location of the nearest located finding of
        the sentence ("bibasilar opacities and atelectasis"), unless it is negated while that one
        is not or that place is not one it may occupy ("cardiac enlargement with interstitial
        edema": the edema is not cardiac), preferring one it is an alternative of ("atelectasis
        versus pneumonia at the right base"); else it has no region (image level: "no
        pneumothorax", "mild atelectasis": an empty tuple) unless its words imply one
        (`Finding.implied_regions`: "cardiomegaly" -> cardiac silhouette). Regions a finding may
        not occupy are replaced by its default regions on the same side. A region phrase inside a finding's own phrase
        ("hemidiaphragm" in "elevated hemidiaphragm") places that finding only when nothing else
        does: "elevated hemidiaphragm in the left hemidiaphragm" is on the left only.
        """
        phrases = region_phrases(text, self.vocabulary)
        taken = [(s, e) for s, e, _ in phrases] + compared_sides(text)
        sides = [
            (m.start(), m.end(), m.lastgroup)
            for m in LATERALITY.finditer(text)
            if not any(s <= m.start() < e for s, e in taken)
        ]
        assigned: list[list[PlaceWords]] = [[] for _ in mentions]
        internal: list[list[PlaceWords]] = [[] for _ in mentions]
        words: list[tuple[int, int, PlaceWords]] = [(s, e, RegionWords(tuple(r))) for s, e, r in phrases]
        words += [(s, e, SideWord(side)) for s, e, side in sides if side]
        for start, end, payload in words:
            inside = [i for i, m in enumerate(mentions) if m.start <= start and end <= m.end]
            if inside:
                internal[inside[0]].append(payload)
                continue
            nearest = min(range(len(mentions)), key=lambda i: _gap(mentions[i].start, mentions[i].end, start, end))
            assigned[nearest].append(payload)
        for i, found in enumerate(internal):
            if not assigned[i]:
                assigned[i] = found
        for i, found in enumerate(assigned):
            specific = self._specific_finding(mentions[i].finding, found)
            if specific != mentions[i].finding:
                mentions[i] = mentions[i]._replace(finding=specific)
        resolved: list[tuple[str, ...] | None] = []
        for mention, found in zip(mentions, assigned):
            resolved.append(self._regions_for(mention.finding, found) if found else None)
        # Only a place the sentence names is shared: an unlocated finding lends none.
        located = [j for j, regions in enumerate(resolved) if regions is not None]
        for i, (start, end, finding, status) in enumerate(mentions):
            if resolved[i] is not None:
                continue
            allowed = set(self._finding[finding].regions)
            donors = [
                j
                for j in located
                if not (status == "absent" and mentions[j].status != "absent")
                and allowed & set(resolved[j] or ())  # a place it cannot be in ("cardiac") is not its place
            ]
            if donors:
                alternative = next((group for group in groups if i in group), set())
                j = min(
                    donors,
                    key=lambda j: (j not in alternative, _gap(mentions[j].start, mentions[j].end, start, end)),
                )
                resolved[i] = self._regions_for(finding, [RegionWords(resolved[j] or ())])
            else:
                resolved[i] = self._finding[finding].implied_regions
        return [r if r is not None else () for r in resolved]

    @staticmethod
    def _redundant_anchor(i: int, mentions: list[Mention], anchored: dict[int, int]) -> bool:
        """An organ phrase read as abnormal says nothing when the sentence names its finding
        ("stable cardiomediastinal silhouette with borderline cardiomegaly") or when another organ
        phrase of the finding is nearer the abnormal word ("cardiomediastinal silhouette with
        borderline heart size")."""
        if i not in anchored:
            return False
        finding = mentions[i].finding
        if any(m.finding == finding and j not in anchored for j, m in enumerate(mentions)):
            return True
        return any(
            mentions[j].finding == finding and (gap, j) < (anchored[i], i) for j, gap in anchored.items() if j != i
        )

    def _specific_finding(self, finding: str, found: list[PlaceWords]) -> str:
        """A generic word ("fracture") located where its finding cannot be but a sibling finding
        can ("fracture of the right clavicle") means the sibling (clavicle fracture)."""
        named = {r for words in found if isinstance(words, RegionWords) for r in words.regions}
        if not named or named & set(self._finding[finding].regions):
            return finding
        for sibling in SPECIFIC_FINDINGS.get(finding, ()):
            if sibling in self._finding and named <= set(self._finding[sibling].regions):
                return sibling
        return finding

    def _regions_for(self, finding: str, found: list[PlaceWords]) -> tuple[str, ...]:
        spec = self._finding[finding]
        allowed = set(spec.regions)
        defaults = list(spec.default_regions)
        chosen: list[str] = []
        for words in found:
            if isinstance(words, RegionWords):
                for region in words.regions:
                    if region in allowed:
                        chosen.append(region)
                    else:
                        side = self._laterality.get(region)
                        chosen.extend(
                            d
                            for d in defaults
                            if side in (None, "midline") or self._laterality.get(d) in (side, None, "midline")
                        )
            else:
                sided = [
                    d
                    for d in defaults
                    if words.side == "both"
                    and self._laterality.get(d) in ("left", "right")
                    or self._laterality.get(d) == words.side
                ]
                chosen.extend(sided or defaults)
        return tuple(dict.fromkeys(chosen)) or tuple(defaults)


def clause_pieces(text: str, limit: int = MAX_PIECE_CHARS) -> list[tuple[int, int]]:
    """(start, end) spans that cover `text` in order, each at most `limit` characters: the whole
    text when it fits (every real sentence), else cut after the last clause end (", ", "; ",
    ": ") within the limit, else after the last space, else at the limit."""
    if len(text) <= limit:
        return [(0, len(text))]
    spans = []
    start = 0
    while len(text) - start > limit:
        window = text[start : start + limit]
        ends = [m.end() for m in _CLAUSE_END.finditer(window)]
        cut = ends[-1] if ends else window.rfind(" ") + 1 or limit
        spans.append((start, start + cut))
        start += cut
    spans.append((start, len(text)))
    return spans


def _collapse_whitespace(text: str) -> tuple[str, Sequence[int]]:
    """`text` with each run of whitespace made one space, and where each of its characters is in
    `text`. Reports wrap lines mid-sentence ("is not\\n enlarged"); spaCy would keep the line
    break as a token of its own, and phrase rules ("is not enlarged") would miss it."""
    if _COLLAPSIBLE.search(text) is None:  # most sentences: nothing to collapse, offsets unchanged
        return text, range(len(text))
    pieces: list[str] = []
    where: list[int] = []
    for match in _WORDS_AND_SPACES.finditer(text):
        if match.group(0)[0].isspace():
            pieces.append(" ")
            where.append(match.start())
        else:
            pieces.append(match.group(0))
            where.extend(range(match.start(), match.end()))
    return "".join(pieces), where


_WORDS_AND_SPACES = re.compile(r"\s+|\S+")
_COLLAPSIBLE = re.compile(r"\s\s|[^\S ]")  # two whitespace characters in a row, or one that is not a space


def _gap(a_start: int, a_end: int, b_start: int, b_end: int) -> int:
    return max(0, b_start - a_end, a_start - b_end)


def _changes(text: str, vocabulary: Vocabulary) -> list[tuple[int, int, str]]:
    """The temporal words of a sentence that state a change (see COMPARATIVES)."""
    earlier = _EARLIER_STUDY.search(text) is not None
    likelihood = [(m.start(), m.end()) for m in _LIKELIHOOD.finditer(text)]
    return [
        (start, end, value)
        for start, end, value in vocabulary.find_temporals(text)
        if (earlier or text[start:end].lower() not in COMPARATIVES) and not any(s <= start < e for s, e in likelihood)
    ]


def _first_value(order: tuple[str, ...], found: list[tuple[int, int, str]]) -> str | None:
    values = {value for _, _, value in found}
    return next((value for value in order if value in values), None)
