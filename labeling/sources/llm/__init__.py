"""The LLM label source: `label_with_llm(store, LlmRequest(...))`, its options and backends.

The names below are imported on first use, so that importing the package stays cheap."""

from __future__ import annotations

from typing import TYPE_CHECKING

from labeling.core.lazy import lazy_exports

if TYPE_CHECKING:
    from labeling.sources.llm.backends import BACKENDS, ServerRefused, TransportFailed, UnitFailed
    from labeling.sources.llm.local_server import local_backend_installed
    from labeling.sources.llm.options import BackendOptions, LabelOptions, LlmRequest
    from labeling.sources.llm.run import DryRun, dry_run, label_with_llm, open_backend

_WHERE = {
    "BackendOptions": "labeling.sources.llm.options",
    "LabelOptions": "labeling.sources.llm.options",
    "LlmRequest": "labeling.sources.llm.options",
    "DryRun": "labeling.sources.llm.run",
    "dry_run": "labeling.sources.llm.run",
    "label_with_llm": "labeling.sources.llm.run",
    "open_backend": "labeling.sources.llm.run",
    "BACKENDS": "labeling.sources.llm.backends",
    "ServerRefused": "labeling.sources.llm.backends",
    "TransportFailed": "labeling.sources.llm.backends",
    "UnitFailed": "labeling.sources.llm.backends",
    "local_backend_installed": "labeling.sources.llm.local_server",
}
__all__ = [
    "BACKENDS",
    "BackendOptions",
    "DryRun",
    "LabelOptions",
    "LlmRequest",
    "ServerRefused",
    "TransportFailed",
    "UnitFailed",
    "dry_run",
    "label_with_llm",
    "local_backend_installed",
    "open_backend",
]

__getattr__ = lazy_exports(__name__, _WHERE)
