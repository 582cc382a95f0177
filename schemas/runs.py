"""Runs: one execution of a label source, with everything needed to trace its labels."""

from __future__ import annotations

from datetime import datetime
from enum import Enum
from typing import Any

from pydantic import BaseModel, Field

RUN_NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.:@+-]*$"


def run_name_problem(name: str) -> str | None:
    """Why `name` cannot name a run, or None."""
    import re

    if not (1 <= len(name) <= 200) or not re.match(RUN_NAME_PATTERN, name):
        return f"run name {name!r}: use up to 200 letters, digits and _ . : @ + -, starting with a letter or digit"
    if re.fullmatch(r"[0-9]+", name):
        return (
            f"run name {name!r}: a name of digits only would be read as a run id (digits always mean "
            "an id); add a letter, e.g. 'run-" + name + "'"
        )
    return None


class RunKind(str, Enum):
    llm = "llm"
    rules = "rules"
    imported = "import"
    human = "human"
    derived = "derived"
    model = "model"


class RunStatus(str, Enum):
    running = "running"
    complete = "complete"  # every report done
    partial = "partial"  # every report tried, some failed validation; resuming retries them
    incomplete = "incomplete"  # stopped with work left (server down, interrupted); resumable
    interrupted = "interrupted"  # its writer died while running (killed); resumable
    failed = "failed"

    @property
    def finished(self) -> bool:
        """Every report was tried: complete, or partial (some failed validation)."""
        return self in (RunStatus.complete, RunStatus.partial)


class RunSpec(BaseModel):
    """What a run is, fixed when it is created."""

    name: str = Field(min_length=1, max_length=200, pattern=RUN_NAME_PATTERN)
    kind: RunKind
    vocabulary_version: str
    backend: str | None = None
    model: str | None = None
    prompt_name: str | None = None
    prompt_sha256: str | None = None
    decoding: dict[str, Any] = {}
    params: dict[str, Any] = {}
    source: str | None = Field(default=None, description="input file or parent run, for imports and derived runs")


class RunInfo(RunSpec):
    """A run as stored, with its state and totals."""

    run_id: int
    status: RunStatus
    created_at: datetime
    finished_at: datetime | None = None
    prompt_tokens: int = 0
    completion_tokens: int = 0
    unknown_keys: int = Field(default=0, description="keys of model answers outside the schema, dropped")
