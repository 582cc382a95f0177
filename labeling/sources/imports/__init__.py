"""Imports: existing labels (scene graphs, CheXpert, MeSH, Label Studio, synthetic gold) as runs:
`import_labels(store, ImportRequest(...))`.

The names below are imported on first use, so that importing the package stays cheap."""

from __future__ import annotations

from typing import TYPE_CHECKING

from labeling.core.lazy import lazy_exports

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

__getattr__ = lazy_exports(__name__, _WHERE)
