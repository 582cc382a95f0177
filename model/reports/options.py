"""The LLM option blocks of `clala generate` (the aggregator, `--llm-*`) and `clala score-reports`
(the judge, `--judge-*`), each declared once, and the one function that turns a block's values
into `LLMOptions`. `--api-key-env` and `--allow-remote`, shared with `clala label`, are in
`labeling.core.cli_options`."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from labeling.core.errors import ClalaError

if TYPE_CHECKING:
    from model.reports.writer import LLMOptions

STRUCTURED_OUTPUT_HELP = "auto | json_schema | llama_cpp | none"

LlmBackendOption = Annotated[
    str, typer.Option("--llm-backend", help="aggregator: none (deterministic) | local | openai | vllm")
]
LlmBaseUrlOption = Annotated[list[str] | None, typer.Option("--llm-base-url", help="server URL (repeat)")]
LlmModelOption = Annotated[str | None, typer.Option("--llm-model", help="model name on the server")]
LlmModelPathOption = Annotated[Path | None, typer.Option("--llm-model-path", help="GGUF for --llm-backend local")]
LlmStructuredOutputOption = Annotated[str, typer.Option("--llm-structured-output", help=STRUCTURED_OUTPUT_HELP)]

JudgeBackendOption = Annotated[
    str | None,
    typer.Option(
        "--judge-backend",
        help="LLM judge for the consistency score out of 20: local | openai | vllm (default: no judge)",
    ),
]
JudgeBaseUrlOption = Annotated[list[str] | None, typer.Option("--judge-base-url", help="judge server URL (repeat)")]
JudgeModelOption = Annotated[str | None, typer.Option("--judge-model", help="judge model name on the server")]
JudgeModelPathOption = Annotated[Path | None, typer.Option("--judge-model-path", help="GGUF for --judge-backend local")]
JudgeStructuredOutputOption = Annotated[str, typer.Option("--judge-structured-output", help=STRUCTURED_OUTPUT_HELP)]


def llm_options(
    backend: str,
    base_urls: list[str] | None,
    model: str | None,
    model_path: Path | None,
    structured_output: str,
    api_key_env: str,
    *,
    role: str,
) -> LLMOptions:
    """One LLM block's values as `LLMOptions`; a value the options refuse is a one-line error
    naming the block's `role` ("LLM", "judge")."""
    from model.reports.writer import LLMOptions

    try:
        return LLMOptions(
            backend=backend,
            base_urls=base_urls or [],
            model=model,
            model_path=str(model_path) if model_path else None,
            structured_output=structured_output,
            api_key_env=api_key_env,
        )
    except ValueError as exc:
        raise ClalaError(f"invalid {role} option: {' '.join(str(exc).split())}") from None
