"""The identity of the rule set: what a rules run's `rules_sha256` is, so that a change to any rule
gives a different identity and a run made with other rules is never resumed or reused.

Everything that decides a label goes in: the source text of every module of this package (a
change to a function or a comment alike: a false "changed" costs a rerun, a false "same" costs
wrong labels), the value of every module-level constant as the interpreter holds it (so a rule
changed at run time counts too), the vocabulary (its version and the target rules built from
it), the section names read and the piece length. Listing constants by hand is what missed
three of them before.
"""

from __future__ import annotations

import hashlib
import json
import re
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import Any

_package = __name__.rsplit(".", 1)[0]


def _canonical(value: Any) -> Any:
    """A JSON-able form of a constant that differs whenever the constant does."""
    if isinstance(value, re.Pattern):
        return ["re", value.pattern, value.flags]
    if isinstance(value, dict):
        return ["dict", sorted(([_canonical(k), _canonical(v)] for k, v in value.items()), key=repr)]
    if isinstance(value, (set, frozenset)):
        return ["set", sorted((_canonical(v) for v in value), key=repr)]
    if isinstance(value, (list, tuple)):
        return [type(value).__name__, [_canonical(v) for v in value]]
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    return repr(value)


def rule_constants(modules: Iterable[str] | None = None) -> dict[str, Any]:
    """`module.NAME` -> value for every upper-case module-level constant of the package's modules."""
    found: dict[str, Any] = {}
    for name in sorted(modules or _modules()):
        module = sys.modules.get(name) or __import__(name, fromlist=["_"])
        for attribute, value in vars(module).items():
            if attribute.lstrip("_").isupper() and not isinstance(value, type) and not callable(value):
                found[f"{name}.{attribute}"] = value
    return found


def _modules() -> list[str]:
    folder = Path(__file__).parent
    return [f"{_package}.{p.stem}" for p in sorted(folder.glob("*.py")) if p.stem not in ("__init__", "identity")]


def package_sources(folder: Path | None = None) -> list[tuple[str, str]]:
    """(file name, text) of every module of the package, sorted by name."""
    folder = folder or Path(__file__).parent
    return [(path.name, path.read_text(encoding="utf-8")) for path in sorted(folder.glob("*.py"))]


def rules_identity(extra: list[Any], *, sources: list[tuple[str, str]] | None = None) -> str:
    """sha256 of the package's sources, its constants' values and `extra` (vocabulary, settings)."""
    from labeling.ingest.sections import FINDING_SECTIONS
    from schemas.labels import STATUS_RANK

    payload = json.dumps(
        [
            package_sources() if sources is None else sources,
            {name: _canonical(value) for name, value in rule_constants().items()},
            _canonical(FINDING_SECTIONS),
            _canonical(STATUS_RANK),
            _canonical(extra),
        ]
    )
    return hashlib.sha256(payload.encode()).hexdigest()
