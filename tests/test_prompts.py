import json

import pytest

from prompts.render import list_prompts, load_prompt
from schemas.vocabulary import load_vocabulary


def test_prompt_renders_vocabulary_and_few_shot_turns():
    vocab = load_vocabulary()
    prompt = load_prompt("region_labels", vocab)
    assert "region_labels" in list_prompts()
    messages = prompt.messages("No pneumothorax.", context="Left effusion.")
    assert messages[0]["role"] == "system"
    assert "pleural effusion" in messages[0]["content"] and "right costophrenic angle" in messages[0]["content"]
    assert "$findings" not in messages[0]["content"]
    assert [m["role"] for m in messages[1:-1]] == ["user", "assistant"] * len(prompt.examples)
    for answer in messages[2:-1:2]:
        json.loads(answer["content"])
    assert messages[-1]["content"] == "CONTEXT (do not label):\nLeft effusion.\n\nTEXT TO LABEL:\nNo pneumothorax."
    assert len(prompt.sha256) == 64


def test_sha_changes_with_the_vocabulary():
    plain = load_prompt("region_labels", load_vocabulary()).sha256
    assert load_prompt("region_labels", load_vocabulary(enable=["device"])).sha256 != plain
    assert load_prompt("region_labels", load_vocabulary()).sha256 == plain


def test_unknown_prompt():
    with pytest.raises(KeyError, match="not found"):
        load_prompt("nope", load_vocabulary())


def test_examples_must_fit_the_vocabulary():
    only_devices = load_vocabulary(categories=["device"])
    with pytest.raises(ValueError, match="does not fit vocabulary"):
        load_prompt("region_labels", only_devices)
