"""Sentence splitting with exact character offsets, and sentence normalization.

spaCy's rule-based sentencizer over its English tokenizer (which already keeps "Dr.", "p.m.",
"1.5" whole) splits about 13x faster than medspaCy's PyRuSH here (bench/ingest_iu.py) and, after the small repairs
below, as well on radiology text: blank lines are hard boundaries, list enumerators ("1.",
"2)") are not sentences, and a few radiology abbreviations do not end one.
"""

from __future__ import annotations

import hashlib
import re
import unicodedata
from collections.abc import Iterable, Sequence
from functools import lru_cache

from schemas.reports import Section, Sentence

# Abbreviations that end with a period but do not end a sentence in reports.
_ABBREVIATIONS = ("approx.", "Approx.", "vs.", "e.g.", "i.e.", "cf.", "resp.", "no.", "No.", "Fig.", "fig.")
_PARAGRAPH_BREAK = re.compile(r"\n[ \t]*\n")
_ENUMERATOR_ONLY = re.compile(r"^\(?(?:\d{1,2}|[a-hA-H])[.)]$")
_LEADING_ENUMERATOR = re.compile(r"^\(?\d{1,2}[.)][ \t\r\n]+")
_TRAILING_PUNCT = re.compile(r"[\s.;:,!?]+$")


@lru_cache(maxsize=1)
def _nlp():
    import spacy
    from spacy.attrs import ORTH

    nlp = spacy.blank("en")
    for abbreviation in _ABBREVIATIONS:
        nlp.tokenizer.add_special_case(abbreviation, [{ORTH: abbreviation}])
    nlp.add_pipe("sentencizer")
    return nlp


def normalize_sentence(text: str) -> str:
    """The form under which identical sentences are recognised across a corpus: Unicode NFKC,
    lower case, single spaces, no trailing punctuation."""
    text = " ".join(unicodedata.normalize("NFKC", text).lower().split())
    return _TRAILING_PUNCT.sub("", text)


def sentence_hash(text: str) -> str:
    return hashlib.sha256(normalize_sentence(text).encode("utf-8")).hexdigest()


def _chunks(text: str, sections: Sequence[Section]) -> list[tuple[int, str | None, str]]:
    """(offset, section name, chunk text) for each paragraph of each section body."""
    chunks = []
    for section in sections:
        start = section.start
        for brk in _PARAGRAPH_BREAK.finditer(text, section.start, section.end):
            chunks.append((start, section.name, text[start : brk.start()]))
            start = brk.end()
        chunks.append((start, section.name, text[start : section.end]))
    return [c for c in chunks if c[2].strip()]


def _trimmed(text: str, start: int, end: int) -> tuple[int, int]:
    while start < end and text[start].isspace():
        start += 1
    while end > start and text[end - 1].isspace():
        end -= 1
    return start, end


def split_sentences_many(
    texts: Iterable[str], sections_per_text: Iterable[Sequence[Section]], batch_size: int = 256
) -> list[list[Sentence]]:
    """Sentences of many reports at once (spaCy's pipe amortizes its overhead)."""
    texts = list(texts)
    chunks = [
        (i, *chunk)
        for i, (text, sections) in enumerate(zip(texts, sections_per_text))
        for chunk in _chunks(text, sections)
    ]
    results: list[list[Sentence]] = [[] for _ in texts]
    nlp = _nlp()
    # spaCy's max_length guards the memory of its parser and NER, which this tokenizer-and-
    # sentencizer pipeline does not run: the limit on report length is --max-chars alone.
    nlp.max_length = max(nlp.max_length, 1 + max((len(c[3]) for c in chunks), default=0))
    docs = nlp.pipe((c[3] for c in chunks), batch_size=batch_size)
    for (report, offset, section, _), doc in zip(chunks, docs):
        text = texts[report]
        for span in doc.sents:
            start, end = _trimmed(text, offset + span.start_char, offset + span.end_char)
            piece = text[start:end]
            if not piece or _ENUMERATOR_ONLY.match(piece) or not any(ch.isalnum() for ch in piece):
                continue
            lead = _LEADING_ENUMERATOR.match(piece)
            if lead:
                start += lead.end()
                piece = text[start:end]
            index = len(results[report])
            results[report].append(
                Sentence(
                    index=index,
                    section=section,
                    start=start,
                    end=end,
                    text=piece,
                    norm_sha256=sentence_hash(piece),
                )
            )
    return results
