"""The structured answer an LLM must give for one unit (a sentence or a report).

The model is built from the vocabulary, so the JSON Schema sent to a server enumerates exactly
the enabled findings and the 29 regions: a constrained decoder cannot produce anything else, and
pydantic rejects anything else from servers that do not constrain. The schema is kept to the
keywords every structured-output backend supports (object, array, string enum, required): no
anyOf, no nulls; "none" stands for an absent severity or temporal change.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, create_model

from schemas.labels import Severity, Status, Temporal
from schemas.vocabulary import Vocabulary

NONE = "none"


def _non_empty(text: str) -> str:
    if not text.strip():
        raise ValueError("evidence must quote the text, not be empty")
    return text


def build_output_model(vocabulary: Vocabulary) -> type[BaseModel]:
    """A pydantic model for one unit's answer: {"labels": [{finding, regions, status, ...}]}."""
    finding_type = Literal[vocabulary.finding_names]  # type: ignore[valid-type]
    region_type = Literal[vocabulary.region_names]  # type: ignore[valid-type]
    status_type = Literal[tuple(s.value for s in Status)]  # type: ignore[valid-type]
    severity_type = Literal[(NONE, *(s.value for s in Severity))]  # type: ignore[valid-type]
    temporal_type = Literal[(NONE, *(t.value for t in Temporal))]  # type: ignore[valid-type]

    statement = create_model(
        "StatementLabel",
        __config__=ConfigDict(extra="forbid"),
        finding=(finding_type, Field(description="finding name, exactly as in the vocabulary")),  # pyright: ignore[reportArgumentType]  # a Literal built from the vocabulary at run time
        regions=(list[region_type], Field(description="regions the statement places it in; empty if not stated")),  # pyright: ignore[reportInvalidTypeForm]  # built at run time
        status=(status_type, Field(description="present, absent (negated) or uncertain (hedged)")),  # pyright: ignore[reportArgumentType]  # a Literal built from the vocabulary at run time
        severity=(severity_type, Field(description="severity if stated, else none")),  # pyright: ignore[reportArgumentType]  # a Literal built from the vocabulary at run time
        temporal=(temporal_type, Field(description="change against a prior exam if stated, else none")),  # pyright: ignore[reportArgumentType]  # a Literal built from the vocabulary at run time
        # Non-empty is checked here rather than with minLength, which strict OpenAI schemas reject.
        evidence=(
            Annotated[str, AfterValidator(_non_empty)],
            Field(description="the exact words of the text that support the label"),
        ),
    )
    return create_model(
        "UnitLabels",
        __config__=ConfigDict(extra="forbid"),
        labels=(list[statement], Field(description="one entry per finding mentioned; empty if none")),  # pyright: ignore[reportInvalidTypeForm]  # built at run time
    )


def output_json_schema(vocabulary: Vocabulary) -> dict:
    schema = build_output_model(vocabulary).model_json_schema()
    schema["description"] = f"clala label output for one unit; vocabulary {vocabulary.version}"
    return schema
