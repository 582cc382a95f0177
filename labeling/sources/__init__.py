"""Label sources: each makes runs of labels in the store (LLM, rules, imports); every one is
called as `verb(store, request, *, hooks=None) -> RunResult`.

The names below are imported on first use, so that importing the package stays cheap."""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

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


def __getattr__(name: str) -> Any:
    if name not in _WHERE:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(_WHERE[name]), name)
