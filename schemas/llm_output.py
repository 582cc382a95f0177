"""The structured answer an LLM must give for one unit (a sentence or a report).

The model is built from the vocabulary, so the JSON Schema sent to a server enumerates exactly
the enabled findings and the 29 regions: a constrained decoder cannot produce anything else, and
pydantic rejects anything else from servers that do not constrain. The schema is kept to the
keywords every structured-output backend supports (object, array, string enum, required): no
anyOf, no nulls; "none" stands for an absent severity or temporal change.

The schema is strict (`additionalProperties: false` on every object), but validating an answer
tolerates keys outside it: a model that adds "reasoning" to a label loses that key, not the label.
The dropped keys are counted (`unknown_keys`), and the known ones validated as always.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, PrivateAttr, create_model, model_validator

from schemas.labels import Severity, Status, Temporal
from schemas.vocabulary import Vocabulary

NONE = "none"


def _non_empty(text: str) -> str:
    if not text.strip():
        raise ValueError("evidence must quote the text, not be empty")
    return text


class _DropsUnknownKeys(BaseModel):
    """An answer object that drops keys outside its fields and remembers how many, while its JSON
    Schema still says `additionalProperties: false`."""

    model_config = ConfigDict(extra="ignore", json_schema_extra={"additionalProperties": False})
    _unknown_keys: int = PrivateAttr(default=0)

    @model_validator(mode="wrap")
    @classmethod
    def _count_unknown(cls, data: Any, handler: Any) -> Any:
        unknown = [k for k in data if k not in cls.model_fields] if isinstance(data, dict) else []
        model = handler(data)
        if isinstance(model, _DropsUnknownKeys):
            model._unknown_keys = len(unknown)
        return model


def unknown_key_count(answer: BaseModel) -> int:
    """Keys outside the schema that validating `answer` dropped, in it and in its labels."""
    own = answer._unknown_keys if isinstance(answer, _DropsUnknownKeys) else 0
    return own + sum(unknown_key_count(label) for label in getattr(answer, "labels", []))


def build_output_model(vocabulary: Vocabulary) -> type[BaseModel]:
    """A pydantic model for one unit's answer: {"labels": [{finding, regions, status, ...}]}."""
    finding_type = Literal[vocabulary.finding_names]  # type: ignore[valid-type]
    region_type = Literal[vocabulary.region_names]  # type: ignore[valid-type]
    status_type = Literal[tuple(s.value for s in Status)]  # type: ignore[valid-type]
    severity_type = Literal[(NONE, *(s.value for s in Severity))]  # type: ignore[valid-type]
    temporal_type = Literal[(NONE, *(t.value for t in Temporal))]  # type: ignore[valid-type]

    statement = create_model(  # pyright: ignore[reportCallIssue]  # fields built from the vocabulary at run time
        "StatementLabel",
        __base__=_DropsUnknownKeys,
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
        __base__=_DropsUnknownKeys,
        labels=(list[statement], Field(description="one entry per finding mentioned; empty if none")),  # pyright: ignore[reportInvalidTypeForm]  # built at run time
    )


# At most this many labels a sentence (`maxItems` of a sentence unit's labels, sent to the server;
# not enforced on answers from servers that do not constrain). A real sentence states far fewer
# (IU X-ray's 8,302 distinct sentences: at most 6 findings with a status, by the rules), and a
# model that repeats itself is stopped by the grammar instead of running past max_tokens: 8
# labels of about 60 tokens fit in a sentence's default 640 (options.py).
MAX_LABELS_PER_SENTENCE = 8


def output_json_schema(vocabulary: Vocabulary, *, max_labels: int | None = None) -> dict:
    schema = build_output_model(vocabulary).model_json_schema()
    schema["description"] = f"clala label output for one unit; vocabulary {vocabulary.version}"
    if max_labels is not None:
        schema["properties"]["labels"]["maxItems"] = max_labels
    return schema


# Several units in one request (`--unit sentences --per-call K`): each unit is sent after a short
# id and answered as {"answers": [{"id": ..., "labels": [...]}]}. The schema sent to the server is
# the strict one; the answer is first read with the lenient PackedEnvelope, so that one unit's
# invalid labels fail that unit alone (it is re-asked on its own), never the whole pack. Each
# unit's labels are then validated with the one-unit model, exactly as a lone answer is.


class PackedItem(BaseModel):
    id: str
    labels: list[Any]


class PackedEnvelope(BaseModel):
    """The shape of a packed answer, its labels not yet validated."""

    answers: list[PackedItem]


def build_packed_model(vocabulary: Vocabulary) -> type[BaseModel]:
    """The strict model of a packed answer: {"answers": [{"id", "labels": [StatementLabel]}]}."""
    statement = build_output_model(vocabulary).model_fields["labels"].annotation
    item = create_model(  # pyright: ignore[reportCallIssue]  # fields built from the vocabulary at run time
        "PackedUnitLabels",
        __base__=_DropsUnknownKeys,
        id=(str, Field(description="the id the text was given")),
        labels=(statement, Field(description="one entry per finding the text mentions; empty if none")),  # pyright: ignore[reportArgumentType]  # built at run time
    )
    return create_model(
        "PackedLabels",
        __base__=_DropsUnknownKeys,
        answers=(list[item], Field(description="one entry per text, in the order given")),  # pyright: ignore[reportInvalidTypeForm]  # built at run time
    )


def packed_json_schema(vocabulary: Vocabulary, *, max_labels: int | None = None) -> dict:
    schema = build_packed_model(vocabulary).model_json_schema()
    schema["description"] = f"clala label output for several units, by id; vocabulary {vocabulary.version}"
    if max_labels is not None:
        schema["$defs"]["PackedUnitLabels"]["properties"]["labels"]["maxItems"] = max_labels
    return schema
