"""Generic and specific findings: rolling a label matrix up the vocabulary's finding hierarchy.

The vocabulary records each finding's `parent`, the more generic finding it is a kind of (Chest
ImaGenome's attribute hierarchy: consolidation -> airspace opacity -> lung opacity; calcified
nodule -> lung lesion -> lung opacity). A source that names the specific finding ("nodular
opacity" -> mass/nodule) and one that codes the generic term (MeSH "Opacity" -> lung opacity)
then agree on the generic one once both are rolled up.

One direction only: a specific finding present (or uncertain) implies each of its ancestors
present (uncertain) in the same cell, by the usual precedence present > uncertain > absent. A
specific finding absent says nothing of the generic one ("no nodule" does not exclude every
opacity), and a generic finding says nothing of which specific one it is.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from schemas.labels import CODE_PRECEDENCE, PRESENT, UNCERTAIN
from schemas.vocabulary import Vocabulary

# code + 2 -> rank (lower wins); codes are -2..1.
_RANK = np.empty(4, dtype=np.int8)
for _rank, _code in enumerate(CODE_PRECEDENCE):
    _RANK[_code + 2] = _rank


def precedence_rank(codes: np.ndarray) -> np.ndarray:
    """Each code's rank when statements of one cell merge (present 0 < uncertain < absent < unmentioned)."""
    return _RANK[codes + 2]


def roll_up_pairs(findings: Sequence[str], vocabulary: Vocabulary) -> list[tuple[int, int]]:
    """(specific index, ancestor index) for every finding of `findings` with an ancestor among them."""
    index = {name: i for i, name in enumerate(findings)}
    pairs = []
    for i, name in enumerate(findings):
        if name in vocabulary.finding_names:
            pairs.extend((i, index[up]) for up in vocabulary.finding_ancestors(name) if up in index)
    return pairs


def roll_up(codes: np.ndarray, findings: Sequence[str], vocabulary: Vocabulary) -> np.ndarray:
    """A copy of codes[..., finding] where each present or uncertain specific finding has made its
    ancestors at least as present in the same cell (see the module docstring)."""
    rolled = codes.copy()
    for child, ancestor in roll_up_pairs(findings, vocabulary):
        source = codes[..., child]
        stated = (source == PRESENT) | (source == UNCERTAIN)
        better = stated & (precedence_rank(source) < precedence_rank(rolled[..., ancestor]))
        rolled[..., ancestor] = np.where(better, source, rolled[..., ancestor])
    return rolled
