"""The store: one DuckDB file with every report, label run and experiment (see docs/architecture.md).

`Store` is imported on first use, so that importing the package (a command module) loads no duckdb."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from labeling.store.store import Store

__all__ = ["Store"]


def __getattr__(name: str) -> Any:
    if name == "Store":
        from labeling.store.store import Store

        return Store
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
