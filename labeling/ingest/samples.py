"""The sample reports that ship with clala (written for it, not taken from any dataset), for
demonstrations and benchmarks. The quickstart itself is `model/quickstart.py` (`clala quickstart`)."""

from __future__ import annotations

from importlib import resources
from pathlib import Path

SAMPLE_REPORTS = "sample_reports.jsonl"


def sample_reports_path() -> Path:
    return Path(str(resources.files("labeling.ingest").joinpath("sample_data", SAMPLE_REPORTS)))
