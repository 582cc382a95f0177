"""The rules' identity changes when any rule changes: each module-level constant of the rules
package in turn (the three that the hand-made list missed among them), a rule module's code, the
vocabulary; and it stays the same when nothing changed, so complete runs are reused and resumed."""

from __future__ import annotations

import re
import sys

import pytest

from labeling.sources.rules import RulesLabeler
from labeling.sources.rules.identity import package_sources, rule_constants, rules_identity
from schemas.vocabulary import load_vocabulary


def _changed(value):
    """A different value of the same kind."""
    if isinstance(value, re.Pattern):
        return re.compile(value.pattern + "|zzz", value.flags)
    if isinstance(value, str):
        return value + "x"
    if isinstance(value, bool):
        return not value
    if isinstance(value, int):
        return value + 1
    if isinstance(value, dict):
        return {**value, "zzz": next(iter(value.values()))} if value else {"zzz": 1}
    if isinstance(value, frozenset):
        return value | {"zzz"}
    if isinstance(value, set):
        return value | {"zzz"}
    if isinstance(value, tuple):
        return value[:-1] if value else ("zzz",)
    if isinstance(value, list):
        return value[:-1] if value else ["zzz"]
    raise AssertionError(f"no changed value for {type(value)}")


def _identity() -> str:
    return RulesLabeler(load_vocabulary()).sha256


def test_the_same_rules_give_the_same_identity():
    assert _identity() == _identity()
    assert len(_identity()) == 64


def test_every_rule_constant_is_covered():
    names = set(rule_constants())
    # the three the hand-made list left out, and the ones it had
    for name in ("ANCHOR_ABNORMAL", "SPECIFIC_FINDINGS", "LATERALITY", "EXTRA_CONTEXT_RULES", "RULES_VERSION"):
        assert f"labeling.sources.rules.labeler.{name}" in names
    assert any(name.startswith("labeling.sources.rules.locations.") for name in names)
    assert len(names) >= 40


@pytest.mark.parametrize("name", sorted(rule_constants()))
def test_changing_any_rule_constant_changes_the_identity(name, monkeypatch):
    module_name, attribute = name.rsplit(".", 1)
    before = _identity()
    monkeypatch.setattr(sys.modules[module_name], attribute, _changed(getattr(sys.modules[module_name], attribute)))
    assert _identity() != before, name


def test_changing_a_rule_function_changes_the_identity():
    extra = ["8", "v", [], 1000]
    sources = package_sources()
    assert rules_identity(extra, sources=sources) == rules_identity(extra)
    name, text = next((n, t) for n, t in sources if n == "locations.py")
    edited = [(n, t.replace("def compared_sides", "def compared_sides_", 1) if n == name else t) for n, t in sources]
    assert edited != sources
    assert rules_identity(extra, sources=edited) != rules_identity(extra, sources=sources)


def test_the_vocabulary_is_part_of_the_identity():
    assert RulesLabeler(load_vocabulary(enable=["device"])).sha256 != _identity()
