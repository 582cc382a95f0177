"""Imports: existing labels (scene graphs, CheXpert, MeSH, Label Studio, synthetic gold) as runs:
`import_labels(store, ImportRequest(...))`.

The names below are imported on first use, so that importing the package stays cheap."""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from labeling.sources.imports.registry import IMPORT_KINDS, ImportRequest, import_labels

_WHERE = {
    "IMPORT_KINDS": "labeling.sources.imports.registry",
    "ImportRequest": "labeling.sources.imports.registry",
    "import_labels": "labeling.sources.imports.registry",
}
__all__ = [
    "IMPORT_KINDS",
    "ImportRequest",
    "import_labels",
]


def __getattr__(name: str) -> Any:
    if name not in _WHERE:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(_WHERE[name]), name)
