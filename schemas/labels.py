"""Labels: one (report, region, finding) cell with its status, evidence and provenance.

Semantics: unmentioned = no row; when several statements speak of the same cell,
present > uncertain > absent; region None means an image-level label (e.g. CheXpert CSV).
"""

from __future__ import annotations

from collections.abc import Iterable
from enum import Enum

from pydantic import BaseModel, ConfigDict, Field, model_validator


class Status(str, Enum):
    present = "present"
    absent = "absent"
    uncertain = "uncertain"


class Severity(str, Enum):
    mild = "mild"
    moderate = "moderate"
    severe = "severe"


class Temporal(str, Enum):
    new = "new"
    improved = "improved"
    worsened = "worsened"
    unchanged = "unchanged"
    resolved = "resolved"


# Precedence when several statements speak of one cell: lower rank wins.
STATUS_RANK: dict[str, int] = {Status.present.value: 0, Status.uncertain.value: 1, Status.absent.value: 2}

# Integer codes used in label matrices (CheXpert's convention, plus "no row").
PRESENT, ABSENT, UNCERTAIN, UNMENTIONED = 1, 0, -1, -2
STATUS_CODE: dict[str, int] = {"present": PRESENT, "absent": ABSENT, "uncertain": UNCERTAIN}
# Precedence expressed on codes: index in this tuple = rank.
CODE_PRECEDENCE: tuple[int, ...] = (PRESENT, UNCERTAIN, ABSENT, UNMENTIONED)


class Evidence(BaseModel):
    """A span of the stored report text: text == report_text[start:end]."""

    model_config = ConfigDict(frozen=True)
    start: int = Field(ge=0)
    end: int = Field(gt=0)
    text: str = Field(min_length=1)

    @model_validator(mode="after")
    def _span_matches_text(self) -> Evidence:
        if self.end <= self.start:
            raise ValueError(f"evidence end {self.end} must be after start {self.start}")
        if self.end - self.start != len(self.text):
            raise ValueError(
                f"evidence span {self.start}:{self.end} does not match the quoted text length {len(self.text)}"
            )
        return self

    def grounded_in(self, report_text: str) -> bool:
        return report_text[self.start : self.end] == self.text


class Label(BaseModel):
    model_config = ConfigDict(frozen=True)
    region: str | None = Field(description="region name; None for an image-level label")
    finding: str
    status: Status
    severity: Severity | None = None
    temporal: Temporal | None = None
    evidence: Evidence | None = None
    confidence: float | None = Field(default=None, ge=0.0, le=1.0)

    @property
    def cell(self) -> tuple[str | None, str]:
        return (self.region, self.finding)


def merge_labels(labels: Iterable[Label]) -> list[Label]:
    """Merge labels of one report by the precedence rule: one label per cell, the strongest
    status wins; among equals the first one seen is kept (its evidence comes first)."""
    best: dict[tuple[str | None, str], Label] = {}
    for label in labels:
        kept = best.get(label.cell)
        if kept is None or STATUS_RANK[label.status.value] < STATUS_RANK[kept.status.value]:
            best[label.cell] = label
    return list(best.values())
