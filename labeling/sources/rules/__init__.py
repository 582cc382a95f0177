"""The rules label source: `label_with_rules(store, RulesRequest(...))` and the medspaCy labeler.

The names below are imported on first use, so that importing the package stays cheap."""

from __future__ import annotations

from typing import TYPE_CHECKING

from labeling.core.lazy import lazy_exports

if TYPE_CHECKING:
    from labeling.sources.rules.labeler import RULES_VERSION, RulesLabeler, silence_pyrush
    from labeling.sources.rules.run import RulesRequest, label_with_rules, reading_sentences

_WHERE = {
    "RulesRequest": "labeling.sources.rules.run",
    "label_with_rules": "labeling.sources.rules.run",
    "reading_sentences": "labeling.sources.rules.run",
    "RULES_VERSION": "labeling.sources.rules.labeler",
    "RulesLabeler": "labeling.sources.rules.labeler",
    "silence_pyrush": "labeling.sources.rules.labeler",
}
__all__ = [
    "RULES_VERSION",
    "RulesLabeler",
    "RulesRequest",
    "label_with_rules",
    "reading_sentences",
    "silence_pyrush",
]

__getattr__ = lazy_exports(__name__, _WHERE)
