"""Label sources: each makes runs of labels in the store (LLM, rules, imports); every one is
called as `verb(store, request, *, hooks=None) -> RunResult`.

The names below are imported on first use, so that importing the package stays cheap."""

from __future__ import annotations

from typing import TYPE_CHECKING

from labeling.core.lazy import lazy_exports

if TYPE_CHECKING:
    from labeling.sources.selection import ReportSelection, select_reports

_WHERE = {
    "ReportSelection": "labeling.sources.selection",
    "select_reports": "labeling.sources.selection",
}
__all__ = [
    "ReportSelection",
    "select_reports",
]

__getattr__ = lazy_exports(__name__, _WHERE)
