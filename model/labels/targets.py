"""Training targets: how a run's region-level codes become what CLALA-Net trains on.

The one statement of the uncertainty policy (`apply_uncertainty`), used both by label specs
(`model.labels.label_specs.derive_matrix`) and by the training data
(`model.data.dataset.build_examples`):
- `positive`: an uncertain cell is a present one;
- `negative`: an uncertain cell is an absent one;
- `ignore`: an uncertain cell stays uncertain and is masked out of training.
Unmentioned cells are negatives, or masked out with `unmentioned="ignore"`.

`label_targets` states the no-location rule for training once: how a run's region codes and its
region-less (image-level) codes become the region head's and the global classifier's targets,
whether they come from a stored run (`build_examples`) or from a label spec's matrix
(`model.labels.label_specs.DerivedMatrix.training_targets`).
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


def label_targets(
    codes: np.ndarray,
    placeless: np.ndarray,
    uncertain: str = "ignore",
    unmentioned: str = "negative",
    unlabeled_rows: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(region targets [N, R, L], region mask, image targets [N, L], image mask) from region codes
    [N, R, L] and region-less codes [N, L] (the no-location rule, README "Label semantics").

    A region-less label speaks for the whole image: absent there is absent in every region;
    present or uncertain says the lesion is somewhere, not where, so the finding's unlabeled regions
    are not trained on rather than made negative (nor made positive in every region). The image
    targets are the region codes and the region-less ones collapsed together."""
    # Here, not at the top: the store's module opens DuckDB, which the command line loads only
    # when a command runs (tests/test_architecture.py).
    from labeling.store.labels import absent_everywhere, collapse_regions

    image_codes = collapse_regions(np.concatenate([codes, placeless[:, None, :]], axis=1))
    filled = absent_everywhere(codes, placeless)
    unplaced = (filled == UNMENTIONED) & ((placeless == PRESENT) | (placeless == UNCERTAIN))[:, None, :]
    targets, masks = training_targets(filled, uncertain, unmentioned, unlabeled_rows)
    masks &= ~unplaced
    image_targets, image_masks = training_targets(image_codes, uncertain, unmentioned, unlabeled_rows)
    return targets, masks, image_targets, image_masks


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
