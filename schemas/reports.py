"""Reports as ingested: text, sections and sentences, all spans exact offsets into the text."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field


class Section(BaseModel):
    model_config = ConfigDict(frozen=True)
    name: str | None = Field(description="canonical section name (findings, impression, ...); None before any header")
    header: str | None = Field(default=None, description="the header as written, e.g. 'FINDINGS:'")
    start: int = Field(description="first character of the section body")
    end: int


class Sentence(BaseModel):
    model_config = ConfigDict(frozen=True)
    index: int
    section: str | None
    start: int
    end: int
    text: str
    norm_sha256: str = Field(description="sha256 of the normalized text, for de-duplication")


class SourceReport(BaseModel):
    """One report as read from an input file, before it is stored."""

    dataset: str
    report_id: str
    text: str
    patient_id: str | None = None
    study_id: str | None = None
    image_paths: list[str] = []
    metadata: dict[str, Any] = {}
    source: str = Field(description="file and row (or path) the report came from, for error messages")
