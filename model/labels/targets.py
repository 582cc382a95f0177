"""Training targets: how a run's region-level codes become what CLALA-Net trains on.

The one statement of the uncertainty policy (`apply_uncertainty`), used both by label specs
(`model.labels.label_specs.derive_matrix`) and by the training data
(`model.data.dataset.build_examples`):
- `positive`: an uncertain cell is a present one;
- `negative`: an uncertain cell is an absent one;
- `ignore`: an uncertain cell stays uncertain and is masked out of training.
Unmentioned cells are negatives, or masked out with `unmentioned="ignore"`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from labeling.core.errors import InputError
from schemas.labels import ABSENT, PRESENT, UNCERTAIN, UNMENTIONED

UNCERTAIN_POLICIES = ("positive", "negative", "ignore")
UNMENTIONED_POLICIES = ("negative", "ignore")
UNLABELED_POLICIES = ("error", "skip", "all-negative")
SENTENCE_SOURCES = ("evidence", "scene-graph", "none")


def apply_uncertainty(codes: np.ndarray, policy: str) -> tuple[np.ndarray, np.ndarray]:
    """(codes after the policy, mask): uncertain codes become PRESENT (`positive`) or ABSENT
    (`negative`), or stay UNCERTAIN (`ignore`); the mask is False exactly where a code is still
    uncertain. `codes` is not changed."""
    if policy not in UNCERTAIN_POLICIES:
        raise ValueError(f"uncertainty policy {policy!r} is not one of {', '.join(UNCERTAIN_POLICIES)}")
    codes = codes.copy()
    if policy == "positive":
        codes[codes == UNCERTAIN] = PRESENT
    elif policy == "negative":
        codes[codes == UNCERTAIN] = ABSENT
    return codes, codes != UNCERTAIN


def training_targets(
    codes: np.ndarray,
    uncertain: str = "ignore",
    unmentioned: str = "negative",
    unlabeled_rows: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """(targets as float32 0/1, mask of the cells trained on) for codes [N, ...]. `unlabeled_rows`
    ([N] bool): rows without a report, all-negative and known even under `unmentioned="ignore"`."""
    codes, mask = apply_uncertainty(codes, uncertain)
    if unmentioned == "ignore":
        known = codes != UNMENTIONED
        if unlabeled_rows is not None:
            known |= unlabeled_rows.reshape((-1,) + (1,) * (codes.ndim - 1))
        mask &= known
    return (codes == PRESENT).astype(np.float32), mask


@dataclass(frozen=True)
class TargetOptions:
    """How a run's labels become the training targets of a cohort: the lesions (default: the
    run's findings), the uncertainty and unmentioned policies, what to do with images whose report
    the run did not cover, where the region sentences come from, and the dataset of the reports
    (needed only when a study id is stored in several datasets)."""

    findings: tuple[str, ...] | None = None
    uncertain: str = "ignore"
    unmentioned: str = "negative"
    unlabeled: str = "error"
    sentences: str = "evidence"
    dataset: str | None = None

    def check(self, prefix: str = "") -> None:
        """An InputError naming the first option (`prefix` + name) whose value is not allowed."""
        for value, allowed, option in (
            (self.uncertain, UNCERTAIN_POLICIES, "uncertain"),
            (self.unmentioned, UNMENTIONED_POLICIES, "unmentioned"),
            (self.unlabeled, UNLABELED_POLICIES, "unlabeled"),
            (self.sentences, SENTENCE_SOURCES, "sentences"),
        ):
            if value not in allowed:
                raise InputError(f"{prefix}{option}: {value!r} is not one of {', '.join(allowed)}")
