"""Prompt templates as files, rendered with a vocabulary and versioned by content hash.

A prompt NAME is three files in `templates/`: `NAME.system.md` (instructions; `$findings` and
`$regions` are filled from the vocabulary), `NAME.user.md` (`$text` and `$context_block` are
filled per unit) and `NAME.examples.json` (few-shot pairs of text and answer, sent as earlier
turns of the chat). The sha256 of the rendered system text, the examples and the user template
identifies the prompt in a run and in the LLM cache: change a word and the cache misses.
"""

from __future__ import annotations

import hashlib
import json
import string
from collections.abc import Mapping
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from schemas.llm_output import build_output_model, unknown_key_count
from schemas.vocabulary import Vocabulary

DEFAULT_PROMPT = "region_labels"
PARTS = ("system.md", "user.md", "examples.json")


def _templates() -> Path:
    return Path(str(resources.files("prompts").joinpath("templates")))


def list_prompts() -> list[str]:
    return sorted(p.name.removesuffix(".system.md") for p in _templates().glob("*.system.md"))


def prompt_files(name: str) -> dict[str, Path]:
    files = {part: _templates() / f"{name}.{part}" for part in PARTS}
    missing = [str(p) for p in files.values() if not p.is_file()]
    if missing:
        raise KeyError(
            f"prompt {name!r} not found (missing {', '.join(missing)}); available: {', '.join(list_prompts())}"
        )
    return files


@dataclass(frozen=True)
class Prompt:
    name: str
    system: str
    user_template: str
    examples: tuple[dict, ...]
    sha256: str

    def user_message(self, text: str, context: str | None = None) -> str:
        block = f"CONTEXT (do not label):\n{context}\n" if context else ""
        return string.Template(self.user_template).substitute(text=text, context_block=block).strip()

    def messages(self, text: str, context: str | None = None) -> list[dict[str, str]]:
        """The chat for one unit: instructions, the few-shot turns, then the unit."""
        chat = [{"role": "system", "content": self.system}]
        for example in self.examples:
            chat.append({"role": "user", "content": self.user_message(example["text"])})
            chat.append({"role": "assistant", "content": json.dumps({"labels": example["labels"]})})
        chat.append({"role": "user", "content": self.user_message(text, context)})
        return chat


def load_prompt(name: str, vocabulary: Vocabulary, *, values: Mapping[str, str] | None = None) -> Prompt:
    """`values`: more `$name` fields of the system text (the aggregator's `$structure`)."""
    files = prompt_files(name)
    system = (
        string.Template(files["system.md"].read_text(encoding="utf-8"))
        .substitute(
            dict(values or {}), findings="; ".join(vocabulary.finding_names), regions="; ".join(vocabulary.region_names)
        )
        .strip()
    )
    user_template = files["user.md"].read_text(encoding="utf-8")
    examples = tuple(json.loads(files["examples.json"].read_text(encoding="utf-8")))
    answer_model = build_output_model(vocabulary)
    for number, example in enumerate(examples, start=1):
        try:
            if unknown_key_count(answer_model.model_validate({"labels": example["labels"]})):
                raise ValueError("a label has keys outside the schema")  # examples stay strict
        except ValueError as exc:
            raise ValueError(
                f"{files['examples.json']}: example {number} does not fit vocabulary "
                f"{vocabulary.version}: {str(exc).splitlines()[0]}"
            ) from None
        for label in example["labels"]:
            if label["evidence"] not in example["text"]:
                raise ValueError(
                    f"{files['examples.json']}: example {number}: evidence {label['evidence']!r} is not in its text"
                )
    digest = hashlib.sha256(json.dumps([system, examples, user_template]).encode("utf-8")).hexdigest()
    return Prompt(name=name, system=system, user_template=user_template, examples=examples, sha256=digest)
