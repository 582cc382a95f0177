"""The rules labeler's cost stays linear in text length (issue 12, item 17), measured by a
deterministic proxy, never by time: the work ConText does per doc (modifier-modifier and
modifier-target pairs) and the longest doc the real pipeline sees, recorded by a real spaCy
component added after ConText. Seconds and peak memory are in bench/rules_long_text.py."""

import pytest
from spacy.language import Language

from labeling.sources.rules.labeler import MAX_PIECE_CHARS, RulesLabeler, clause_pieces
from schemas.vocabulary import load_vocabulary

CLAUSES = [
    "small left pleural effusion with adjacent atelectasis",
    "no pneumothorax is seen",
    "the heart size is normal",
    "patchy opacity in the right lower lobe may represent pneumonia",
    "stable mild cardiomegaly",
    "bibasilar opacities and atelectasis",
    "no focal consolidation",
]

# Work of each doc the pipeline ran on, appended by the component below (one labeler per test).
RECORDED: list[dict[str, int]] = []


@Language.component("test_record_context_work")
def _record_context_work(doc):
    graph = doc._.context_graph
    modifiers, targets = len(graph.modifiers), len(graph.targets)
    RECORDED.append({"chars": len(doc.text), "pairs": modifiers * (modifiers + targets)})
    return doc


def recording_labeler(**options) -> RulesLabeler:
    labeler = RulesLabeler(load_vocabulary(), **options)
    labeler.nlp.add_pipe("test_record_context_work", last=True)
    return labeler


def run_on_clauses(n_chars: int) -> str:
    """One sentence of ~n_chars: real-style clauses joined by commas, no full stop."""
    parts, length, i = [], 0, 0
    while length < n_chars:
        parts.append(CLAUSES[i % len(CLAUSES)])
        length += len(parts[-1]) + 2
        i += 1
    return ", ".join(parts)


def context_work(labeler: RulesLabeler, text: str) -> tuple[int, int]:
    """(ConText pairs summed over the docs, longest doc in characters) of labeling `text`."""
    RECORDED.clear()
    labeler.label_sentences([text])
    return sum(r["pairs"] for r in RECORDED), max(r["chars"] for r in RECORDED)


@pytest.fixture(scope="module")
def labeler():
    return recording_labeler()


def test_context_work_grows_linearly_with_sentence_length(labeler):
    short, long = run_on_clauses(10_000), run_on_clauses(40_000)
    short_pairs, short_longest = context_work(labeler, short)
    long_pairs, long_longest = context_work(labeler, long)
    assert short_longest <= MAX_PIECE_CHARS and long_longest <= MAX_PIECE_CHARS
    # 4x the text: 4x the work (quadratic would be 16x); the pieces cut differently at the ends.
    assert 3.6 <= long_pairs / short_pairs <= 4.4, (short_pairs, long_pairs)


def test_unbounded_pieces_are_quadratic_so_the_proxy_measures_the_bound():
    # The same proxy without the bound (one doc per sentence, as before the fix) grows ~16x
    # over 4x the text: it is the bound that makes the work linear.
    unbounded = recording_labeler(max_piece_chars=10**9)
    short_pairs, short_longest = context_work(unbounded, run_on_clauses(2_500))
    long_pairs, long_longest = context_work(unbounded, run_on_clauses(10_000))
    assert long_longest > 9_000 and short_longest > 2_000
    assert long_pairs / short_pairs > 12, (short_pairs, long_pairs)


def test_clause_pieces_cover_the_text_and_cut_at_clause_ends():
    text = run_on_clauses(40_000)
    pieces = clause_pieces(text)
    assert pieces[0][0] == 0 and pieces[-1][1] == len(text)
    assert all(a[1] == b[0] for a, b in zip(pieces, pieces[1:]))  # contiguous, nothing lost
    assert all(0 < end - start <= MAX_PIECE_CHARS for start, end in pieces)
    assert all(text[end - 2 : end] == ", " for _, end in pieces[:-1])
    assert len(pieces) <= len(text) // (MAX_PIECE_CHARS - 100) + 1  # a cut gives up at most one clause
    # no clause end: after the last space; no space at all: at the limit
    words = " ".join(["effusion"] * 300)
    assert all(words[end - 1] == " " for _, end in clause_pieces(words)[:-1])
    assert clause_pieces("x" * 2_500) == [(0, 1_000), (1_000, 2_000), (2_000, 2_500)]
    assert clause_pieces("Small left pleural effusion.") == [(0, 28)]
    assert clause_pieces("") == [(0, 0)]


def test_labels_of_normal_sentences_are_those_of_the_unbounded_labeler(labeler):
    unbounded = RulesLabeler(load_vocabulary(), max_piece_chars=10**9)
    sentences = [
        "No pleural effusion or pneumothorax.",
        "Retrocardiac opacity could represent atelectasis or pneumonia.",
        "Heart size is normal; the mediastinal contours are unremarkable.",
        "Interval increase in moderate right pleural effusion with adjacent atelectasis.",
        # a long real-style sentence just under the bound: still one doc
        (", ".join(CLAUSES) + ", ") * 2 + "small right pneumothorax.",
    ]
    assert len(sentences[-1]) <= MAX_PIECE_CHARS
    assert labeler.label_sentences(sentences) == unbounded.label_sentences(sentences)


def test_a_long_sentence_gets_every_clause_labeled_at_its_own_offsets(labeler):
    # Line breaks and double spaces are collapsed before cutting: offsets still point into the text.
    clause = "small left pleural effusion"
    joins = [", ", ",\n  ", ",  "]
    text = "".join(clause + joins[i % 3] for i in range(1_200)).rstrip(", \n")
    [[single]] = labeler.label_sentences([clause])
    [labels] = labeler.label_sentences([text])
    assert len(text) > 30_000 and len(labels) == 1_200
    starts = []
    position = text.find(clause)
    while position >= 0:
        starts.append(position)
        position = text.find(clause, position + 1)
    assert [label.start for label in labels] == [s + single.start for s in starts]
    assert {text[label.start : label.end] for label in labels} == {"pleural effusion"}
    assert {(label.region, label.finding, label.status, label.severity) for label in labels} == {
        (single.region, single.finding, single.status, single.severity)
    }
