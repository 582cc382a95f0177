"""Prompt templates as files, rendered with a vocabulary and versioned by content hash.

A prompt NAME is three files in `templates/`: `NAME.system.md` (instructions; `$findings` and
`$regions` are filled from the vocabulary), `NAME.user.md` (`$text` and `$context_block` are
filled per unit) and `NAME.examples.json` (few-shot pairs of text and answer, sent as earlier
turns of the chat). The sha256 of the rendered system text, the examples and the user template
identifies the prompt in a run and in the LLM cache: change a word and the cache misses.

Layout, for the servers' prefix caches (vLLM's automatic prefix caching, hosted providers'
prompt caching): everything that is the same on every call (the instructions with the
vocabulary, the few-shot turns) comes first and is byte-identical from call to call; only the
last user message carries the unit(s). A packed request (`packed_messages`, several units each
after a short id) has its own static prefix: the same instructions plus PACK_RULES, and the
few-shot examples as one packed turn. PACK_RULES is part of the code, not of the template
files, so the prompt's sha256 (and with it the cache key of each sentence) is the same whether
a sentence was labeled alone or in a pack: a sentence labeled in a pack is not asked again
alone, and the other way round.
"""

from __future__ import annotations

import hashlib
import json
import string
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from schemas.llm_output import build_output_model, unknown_key_count
from schemas.vocabulary import Vocabulary

DEFAULT_PROMPT = "region_labels"
PARTS = ("system.md", "user.md", "examples.json")
# What a packed request adds to the instructions (see the module's docstring).
PACK_RULES = (
    "Several texts are given at once, each after its id in brackets, one per line: [1] text. Label each "
    "text on its own, exactly as if it were the only TEXT TO LABEL (a text's CONTEXT line, when given, "
    'only explains that text). Answer with one JSON object and nothing else: {"answers": [{"id": "1", '
    '"labels": [...]}, ...]}, one entry per id, in the order given.'
)
PACKED_HEADER = "TEXTS TO LABEL, EACH AFTER ITS ID:"
# About this many characters per token, for estimates made without a tokenizer (cost, dry runs).
CHARS_PER_TOKEN = 4
# At least this many: a bound on a prompt's tokens that a context budget can trust (medical words
# split into more tokens than average English).
CHARS_PER_TOKEN_AT_LEAST = 3


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

    def packed_user_message(self, units: Sequence[tuple[str, str, str | None]]) -> str:
        """The last message of a packed request: (id, text, context) of each unit."""
        lines = [PACKED_HEADER]
        for unit_id, text, context in units:
            if context:
                lines.append(f"[{unit_id}] CONTEXT (do not label): {context}")
            lines.append(f"[{unit_id}] {text}")
        return "\n".join(lines)

    def packed_prefix(self) -> list[dict[str, str]]:
        """The static part of every packed request: instructions, PACK_RULES, the few-shot
        examples as one packed turn."""
        examples = [(str(i), e["text"], None) for i, e in enumerate(self.examples, start=1)]
        answers = [{"id": i, "labels": e["labels"]} for (i, _, _), e in zip(examples, self.examples)]
        chat = [{"role": "system", "content": f"{self.system}\n\n{PACK_RULES}"}]
        if examples:
            chat.append({"role": "user", "content": self.packed_user_message(examples)})
            chat.append({"role": "assistant", "content": json.dumps({"answers": answers})})
        return chat

    def packed_messages(self, units: Sequence[tuple[str, str, str | None]]) -> list[dict[str, str]]:
        """The chat for several units at once: the static packed prefix, then the units."""
        return [*self.packed_prefix(), {"role": "user", "content": self.packed_user_message(units)}]

    def layout(self, units: Sequence[tuple[str, str, str | None]]) -> PromptLayout:
        """Characters of a request that are the same on every call (static) and that carry the
        unit(s) (dynamic): one unit is sent alone, several packed."""
        if len(units) == 1:
            _, text, context = units[0]
            chat = self.messages(text, context)
        else:
            chat = self.packed_messages(units)
        return PromptLayout(
            static_chars=sum(len(m["content"]) for m in chat[:-1]), dynamic_chars=len(chat[-1]["content"])
        )


@dataclass(frozen=True)
class PromptLayout:
    """How much of a request's message text is the static, cacheable prefix."""

    static_chars: int
    dynamic_chars: int

    @property
    def static_fraction(self) -> float:
        total = self.static_chars + self.dynamic_chars
        return self.static_chars / total if total else 0.0


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
