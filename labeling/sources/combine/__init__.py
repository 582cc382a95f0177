"""Combined runs: several source runs combined cell by cell (majority vote or Dawid-Skene) into a
derived run, `combine_runs(store, CombineRequest(...))`, with each source's confusion matrices.

The names below are imported on first use, so that importing the package stays cheap."""

from __future__ import annotations

from typing import TYPE_CHECKING

from labeling.core.lazy import lazy_exports

if TYPE_CHECKING:
    from labeling.sources.combine.cells import CLASSES
    from labeling.sources.combine.combine import METHODS, CombineRequest, combine_runs

_WHERE = {
    "CLASSES": "labeling.sources.combine.cells",
    "METHODS": "labeling.sources.combine.combine",
    "CombineRequest": "labeling.sources.combine.combine",
    "combine_runs": "labeling.sources.combine.combine",
}
__all__ = ["CLASSES", "METHODS", "CombineRequest", "combine_runs"]

__getattr__ = lazy_exports(__name__, _WHERE)
