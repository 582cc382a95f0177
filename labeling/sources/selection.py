"""Which reports a label run covers: the one report selection of the LLM and rules sources."""

from __future__ import annotations

from typing import TYPE_CHECKING

from pydantic import BaseModel, ConfigDict

from labeling.core.errors import ClalaError

if TYPE_CHECKING:
    from labeling.store.store import Store


class ReportSelection(BaseModel):
    """The current report versions of `dataset` (or all), only `report_ids` when given, at most
    `limit`; or exactly `report_keys` (a caller that already knows them, e.g. generated reports)."""

    model_config = ConfigDict(extra="forbid")
    dataset: str | None = None
    report_ids: list[str] = []
    limit: int | None = None
    report_keys: list[int] | None = None


def select_reports(store: Store, selection: ReportSelection) -> list[int]:
    """The selected report keys in key order, or ClalaError when an id is unknown or none is left."""
    if selection.report_keys is not None:
        return list(selection.report_keys)
    rows = store.current_report_ids(selection.dataset, selection.report_ids)
    if selection.report_ids:
        missing = sorted(set(selection.report_ids) - {r[1] for r in rows})
        if missing:
            raise ClalaError(f"{store.path}: no report with id {', '.join(missing[:5])}")
    keys = [r[0] for r in rows]
    if selection.limit is not None:
        keys = keys[: selection.limit]
    if not keys:
        raise ClalaError(f"{store.path}: no reports to label (ingest some first, or check --dataset)")
    return keys
