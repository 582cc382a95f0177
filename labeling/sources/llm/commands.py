"""Vocabulary and label-schema views for the CLI: load with a clear error, print or write."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from labeling.core.cli_options import EnableOption, VocabularyOption, user_errors
from labeling.core.errors import InputError
from labeling.core.files import write_text_atomically
from labeling.core.terminal import error_console, literal, output_console, visible
from schemas.llm_output import output_json_schema
from schemas.vocabulary import Vocabulary, load_vocabulary


def vocabulary_or_error(path: Path | None, enable: list[str]) -> Vocabulary:
    try:
        return load_vocabulary(path, enable=enable)
    except (FileNotFoundError, ValueError) as exc:
        raise InputError(str(exc)) from None


def export_label_schema(out: Path | None, vocabulary_path: Path | None, enable: list[str]) -> dict:
    vocabulary = vocabulary_or_error(vocabulary_path, enable)
    schema = output_json_schema(vocabulary)
    text = json.dumps(schema, indent=2) + "\n"
    if out is None:
        print(text, end="")
    else:
        write_text_atomically(out, text)  # says which folder is missing, if one is
        error_console().print(f"wrote the label schema for {literal(vocabulary.version)} to {literal(out)}")
    return schema


def show_vocabulary(vocabulary_path: Path | None, enable: list[str]) -> Vocabulary:
    vocabulary = vocabulary_or_error(vocabulary_path, enable)
    console = output_console()
    console.print(f"[bold]{literal(vocabulary.version)}[/bold]")
    regions = Table("index", "region", "laterality", "synonyms", title="Regions", title_justify="left")
    for region in vocabulary.regions:
        regions.add_row(
            str(region.index), literal(region.name), literal(region.laterality), literal(", ".join(region.synonyms))
        )
    console.print(regions)
    findings = Table("finding", "category", "regions", "CheXpert", "synonyms", title="Findings", title_justify="left")
    for finding in vocabulary.findings:
        findings.add_row(
            literal(finding.name),
            literal(finding.category),
            str(len(finding.regions)),
            literal(", ".join(finding.chexpert)),
            literal(", ".join(finding.synonyms)),
        )
    console.print(findings)
    return vocabulary


def show_prompts() -> list[str]:
    from prompts.render import list_prompts, prompt_files

    console = output_console()
    names = list_prompts()
    table = Table("prompt", "files", title="Prompts", title_justify="left")
    for name in names:
        table.add_row(literal(name), literal(", ".join(p.name for p in prompt_files(name).values())))
    console.print(table)
    return names


def show_prompt_source(name: str) -> None:
    from prompts.render import prompt_files

    try:
        files = prompt_files(name)
    except KeyError as exc:
        raise InputError(str(exc.args[0])) from None
    console = output_console()
    for path in files.values():
        console.rule(literal(path.name))
        console.print(visible(path.read_text(encoding="utf-8")), markup=False, highlight=False)


def render_prompt(
    name: str, text: str, context: str | None, vocabulary_path: Path | None, enable: list[str]
) -> list[dict]:
    """Print the exact chat one unit would send, and the prompt's sha256."""
    from prompts.render import load_prompt

    vocabulary = vocabulary_or_error(vocabulary_path, enable)
    try:
        prompt = load_prompt(name, vocabulary)
    except KeyError as exc:
        raise InputError(str(exc.args[0])) from None
    messages = prompt.messages(text, context)
    console = output_console()
    console.print(
        f"[bold]{literal(prompt.name)}[/bold] sha256 {prompt.sha256}  vocabulary {literal(vocabulary.version)}"
    )
    for message in messages:
        console.rule(message["role"])
        console.print(visible(message["content"]), markup=False, highlight=False)
    return messages


@user_errors
def schema_export_command(
    out: Annotated[Path | None, typer.Option("--out", help="file to write (default: stdout)")] = None,
    vocabulary: VocabularyOption = None,
    enable: EnableOption = None,
) -> None:
    """Write the JSON Schema of one unit's LLM answer, as the labeling engine sends it."""
    from labeling.sources.llm.commands import export_label_schema

    export_label_schema(out, vocabulary, enable or [])


@user_errors
def schema_vocabulary_command(vocabulary: VocabularyOption = None, enable: EnableOption = None) -> None:
    """Print the regions and findings of a vocabulary."""
    from labeling.sources.llm.commands import show_vocabulary

    show_vocabulary(vocabulary, enable or [])


@user_errors
def prompts_list_command() -> None:
    """Available prompt templates."""
    from labeling.sources.llm.commands import show_prompts

    show_prompts()


@user_errors
def prompts_show_command(name: Annotated[str, typer.Argument()] = "region_labels") -> None:
    """A prompt's template files as written."""
    from labeling.sources.llm.commands import show_prompt_source

    show_prompt_source(name)


@user_errors
def prompts_render_command(
    name: Annotated[str, typer.Argument()] = "region_labels",
    text: Annotated[str, typer.Option(help="the unit text")] = "Small left pleural effusion.",
    context: Annotated[str | None, typer.Option(help="context sentences")] = None,
    vocabulary: VocabularyOption = None,
    enable: EnableOption = None,
) -> None:
    """The exact chat one unit sends, with the prompt's sha256."""
    from labeling.sources.llm.commands import render_prompt

    render_prompt(name, text, context, vocabulary, enable or [])
