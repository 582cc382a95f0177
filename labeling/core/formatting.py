"""Numbers for people and for JSON: one definition of "undefined" (None, NaN, infinity)."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np

UNDEFINED = "—"  # how an undefined metric is printed


def is_undefined(value: Any) -> bool:
    """True for None and for a float that is NaN or infinite (an undefined metric)."""
    if value is None:
        return True
    if isinstance(value, (float, np.floating)):
        return not math.isfinite(float(value))
    return False


def finite(value: Any) -> Any:
    """`value` with every undefined float (at any depth of dicts, lists and tuples) as None and
    numpy scalars as Python numbers, so that strict JSON writers and readers accept it."""
    if isinstance(value, Mapping):
        return {str(k): finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [finite(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def format_number(value: float | None, digits: int = 3, *, percent: bool = False) -> str:
    """A metric as printed in tables: `digits` decimals (or a percentage), "—" when undefined."""
    if is_undefined(value):
        return UNDEFINED
    assert value is not None
    return f"{100 * value:.1f}%" if percent else f"{value:.{digits}f}"


def format_mean_std(mean: float | None, std: float | None, digits: int = 3) -> str:
    """ "mean ± std", or the mean alone when the spread is undefined (one seed)."""
    if is_undefined(std):
        return format_number(mean, digits)
    return f"{format_number(mean, digits)} ± {std:.{digits}f}"


def format_counts(counts: Mapping[str, int], empty: str = "none") -> str:
    """ "a 3, b 1" for a mapping of counts, sorted by key."""
    return ", ".join(f"{k} {v:,}" for k, v in sorted(counts.items())) or empty
