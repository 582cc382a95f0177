"""The other no-location choice, for measuring it against the one clala makes.

clala's rule (README, "Label semantics"): a label whose statement names no place has no region
(image level), unless the finding's words imply its one place. A region-level comparison then
scores located labels only. The alternative, which rules version 7 and earlier applied, puts such
a label in each of the finding's default regions ("no pneumothorax" -> absent in both lungs).
`in_default_regions` reads a run's region-less labels that way, so that `clala compare
--no-location default-regions` measures both choices on the same runs, applied to every run
alike (issue 14, item 4).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from labeling.review.hierarchy import precedence_rank
from schemas.labels import UNMENTIONED
from schemas.vocabulary import Vocabulary

NO_LOCATION_CHOICES = ("region-less", "default-regions")


def in_default_regions(
    region_codes: np.ndarray,
    placeless_codes: np.ndarray,
    regions: Sequence[str],
    findings: Sequence[str],
    vocabulary: Vocabulary,
) -> np.ndarray:
    """A copy of region codes [n, R, F] in which each region-less label (placeless codes [n, F]) is
    also in every default region of its finding among `regions`, by the usual precedence (present
    > uncertain > absent): the region-less label and a located one of the same cell merge as two
    statements of that cell would."""
    merged = region_codes.copy()
    column = {name: i for i, name in enumerate(regions)}
    for f, name in enumerate(findings):
        stated = placeless_codes[:, f]
        if name not in vocabulary.finding_names or not (stated != UNMENTIONED).any():
            continue
        for region in vocabulary.finding(name).default_regions:
            r = column.get(region)
            if r is None:
                continue
            cell = merged[:, r, f]
            better = (stated != UNMENTIONED) & (precedence_rank(stated) < precedence_rank(cell))
            merged[:, r, f] = np.where(better, stated, cell)
    return merged
