"""The lean request path (issue 16, item 3): exact JSON bodies over one pooled connection set,
validated once, in every dialect, against real servers on 127.0.0.1."""

import asyncio
import json

import pytest
from fault_server import FaultServer

from labeling.sources.llm.backends import (
    SCHEMA_INSTRUCTION,
    OpenAICompatibleBackend,
    ServerRefused,
    TransportFailed,
    UnitFailed,
    _json_part,
)
from prompts.render import load_prompt
from schemas.llm_output import build_output_model, output_json_schema
from schemas.vocabulary import load_vocabulary

VOCABULARY = load_vocabulary()
PROMPT = load_prompt("region_labels", VOCABULARY)
MODEL = build_output_model(VOCABULARY)
SCHEMA = output_json_schema(VOCABULARY)


def ask_all(backend, texts, reasks=1):
    async def main():
        try:
            return await asyncio.gather(
                *(
                    backend.ask(
                        PROMPT.messages(text), MODEL, SCHEMA, temperature=0.0, max_tokens=64, reasks=reasks, seed=7
                    )
                    for text in texts
                ),
                return_exceptions=True,
            )
        finally:
            await backend.close()

    return asyncio.run(main())


def keep_alive(server: FaultServer) -> set[int]:
    """Make the server speak HTTP/1.1 keep-alive; the client ports it saw, one per connection."""
    ports: set[int] = set()
    handler = server.httpd.RequestHandlerClass

    class KeepAlive(handler):  # type: ignore[valid-type, misc]
        protocol_version = "HTTP/1.1"

        def do_POST(self):
            ports.add(self.client_address[1])
            super().do_POST()

    server.httpd.RequestHandlerClass = KeepAlive  # pyright: ignore[reportAttributeAccessIssue]  # a handler class
    return ports


@pytest.mark.parametrize("dialect", ["json_schema", "llama_cpp", "none"])
def test_each_dialect_sends_its_exact_body_and_reasks(dialect):
    with FaultServer() as server:
        backend = OpenAICompatibleBackend([server.base_url], "fake-model", dialect, timeout=5, transport_retries=0)
        ok, fixed = ask_all(backend, ["Left effusion.", "FIXONRETRY right pneumothorax."])
        bodies = [r["body"] for r in server.chat_requests()]
    assert not isinstance(ok, BaseException) and not isinstance(fixed, BaseException)
    assert [(label.finding, label.regions) for label in ok.parsed.labels] == [("pleural effusion", ["left lung"])]
    assert [label.finding for label in fixed.parsed.labels] == ["pneumothorax"]
    first = next(b for b in bodies if b["messages"][-1]["content"].endswith("Left effusion."))
    messages = PROMPT.messages("Left effusion.")
    if dialect == "none":
        assert "response_format" not in first
        assert first["messages"][0]["content"] == messages[0]["content"] + "\n\n" + SCHEMA_INSTRUCTION + json.dumps(
            SCHEMA
        )
        assert first["messages"][1:] == messages[1:]
    else:
        assert first["messages"] == messages
        expected = (
            {"type": "json_schema", "json_schema": {"name": "UnitLabels", "schema": SCHEMA, "strict": True}}
            if dialect == "json_schema"
            else {"type": "json_object", "schema": SCHEMA}
        )
        assert first["response_format"] == expected
    assert (first["model"], first["temperature"], first["max_tokens"], first["seed"]) == ("fake-model", 0.0, 64, 7)
    assert first.get("logprobs") is (True if dialect == "json_schema" else None)
    assert ok.mean_logprob == (pytest.approx(-0.1) if dialect == "json_schema" else None)
    # the re-ask carries the failed answer and its errors; tokens add up over both attempts
    reasked = [b for b in bodies if len(b["messages"]) == len(first["messages"]) + 2]
    assert len(reasked) == 1 and reasked[0]["messages"][-2] == {"role": "assistant", "content": "{not json"}
    assert "Correct your JSON answer" in reasked[0]["messages"][-1]["content"]
    tries = [b for b in bodies if "FIXONRETRY" in json.dumps(b["messages"][-3:])]
    assert fixed.prompt_tokens == sum(sum(len(m["content"]) for m in b["messages"]) // 4 for b in tries)


def test_requests_share_pooled_connections():
    with FaultServer() as server:
        ports = keep_alive(server)
        backend = OpenAICompatibleBackend([server.base_url], "fake-model", "json_schema", timeout=5)

        async def main():
            try:
                for _ in range(4):  # four waves of 5 concurrent requests
                    await asyncio.gather(
                        *(
                            backend.ask(PROMPT.messages(f"Left effusion {i}."), MODEL, SCHEMA, temperature=0.0,
                                        max_tokens=64, reasks=0)
                            for i in range(5)
                        )
                    )  # fmt: skip
            finally:
                await backend.close()

        asyncio.run(main())
        assert len(server.chat_requests()) == 20
    assert len(ports) <= 5  # 20 requests over at most 5 connections, kept open between waves


def test_failures_keep_their_meaning():
    with FaultServer() as server:
        backend = OpenAICompatibleBackend(
            [server.base_url], "fake-model", "json_schema", timeout=5, transport_retries=0
        )
        bad, cut, html, down = ask_all(
            backend, ["INVALIDJSON effusion.", "TRUNCATED left effusion.", "HTMLPAGE effusion.", "SERVERERROR x."]
        )
    assert (
        isinstance(bad, UnitFailed) and bad.error.startswith("invalid after 2 attempt(s):") and bad.raw == "{not json"
    )
    assert isinstance(cut, UnitFailed) and cut.error == "answer cut off at max_tokens=64"
    assert isinstance(html, UnitFailed) and "not a chat completion" in html.error and "sign in" in (html.raw or "")
    assert isinstance(down, TransportFailed) and str(down) == "HTTP 500 from the server"
    refused = OpenAICompatibleBackend(["http://127.0.0.1:9/v1"], "m", "json_schema", timeout=2, transport_retries=0)
    [unreachable] = ask_all(refused, ["Left effusion."])
    assert isinstance(unreachable, TransportFailed) and str(unreachable) == "could not connect to the server"
    assert not isinstance(unreachable, ServerRefused)


@pytest.mark.parametrize(
    "text, expected",
    [
        ('```json\n{"labels": []}\n```', '{"labels": []}'),
        ('Here it is: {"labels": []} hope that helps', '{"labels": []}'),
        ('{"labels": []}', '{"labels": []}'),
    ],
)
def test_the_json_of_an_unconstrained_answer(text, expected):
    assert json.loads(_json_part(text)) == json.loads(expected)
