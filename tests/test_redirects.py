"""Issue 12, item 1: no HTTP request clala makes follows a redirect.

A real server on 127.0.0.1 answers every request with `307` to a second real server on another
127.0.0.1 port (another origin) that records whatever reaches it. Whatever clala does (the
`/models` probe, chat completions of a label run, the report writer's LLM calls), the second
server must receive nothing: not the Authorization header, not one report sentence."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from labeling.core.errors import ClalaError

SECRET = "sk-test-REDIRECT-SECRET-0123456789"
SENTENCE = "Small left pleural effusion SENTINEL-SENTENCE."


class _Server:
    """A real HTTP server on 127.0.0.1: records every request; `redirect_to` makes it answer 307."""

    def __init__(self, redirect_to: str | None = None):
        self.redirect_to = redirect_to
        self.requests: list[dict] = []
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def _handle(self):
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                server.requests.append(
                    {"method": self.command, "path": self.path, "headers": dict(self.headers), "body": body}
                )
                if server.redirect_to is not None:
                    target = server.redirect_to.rstrip("/") + self.path
                    self.send_response(307)
                    self.send_header("Location", target)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                data = json.dumps({"object": "list", "data": [{"id": "m", "owned_by": "me"}]}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_POST = _handle

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    @property
    def origin(self) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}"

    def __enter__(self) -> _Server:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@contextmanager
def redirecting(target: str | None = None) -> Iterator[tuple[_Server, _Server]]:
    """(redirector, recorder): the redirector sends everything to the recorder (or to `target`)."""
    with _Server() as recorder, _Server(redirect_to=target or recorder.origin) as redirector:
        yield redirector, recorder


def assert_nothing_reached(recorder: _Server) -> None:
    assert recorder.requests == [], "a redirect was followed to another origin"


def test_the_models_probe_follows_no_redirect():
    from labeling.sources.llm.backends import detect_dialect

    with redirecting() as (redirector, recorder):
        with pytest.raises(ClalaError) as raised:
            detect_dialect(f"{redirector.origin}/v1", SECRET, timeout=5)
        assert redirector.requests and redirector.requests[0]["path"] == "/v1/models"
    assert_nothing_reached(recorder)
    message = str(raised.value)
    assert "redirect" in message and f"{recorder.origin}/v1/models" in message and "\n" not in message


def ingest_one(cli, tmp_path):
    db = tmp_path / "r.duckdb"
    path = tmp_path / "r.jsonl"
    path.write_text(json.dumps({"id": "x1", "text": f"FINDINGS: {SENTENCE}"}) + "\n")
    assert cli("ingest", path, "--db", db)[0] == 0
    return db


def label_args(db, base_url: str, *extra: str) -> list[str]:
    return ["label", "--db", str(db), "--backend", "openai", "--base-url", base_url, "--model", "m",
            "--api-key-env", "CLALA_REDIRECT_KEY", "--max-retries", "0", *extra]  # fmt: skip


def test_label_stops_at_a_redirected_probe(tmp_path, cli, monkeypatch):
    monkeypatch.setenv("CLALA_REDIRECT_KEY", SECRET)
    db = ingest_one(cli, tmp_path)
    with redirecting() as (redirector, recorder):
        code, _, err = cli(*label_args(db, f"{redirector.origin}/v1", "--name", "probe"))
    assert_nothing_reached(recorder)
    assert code == 1
    assert "redirect" in err and recorder.origin in err and len(err.strip().splitlines()) == 1


def test_chat_completions_follow_no_redirect(tmp_path, cli, monkeypatch):
    monkeypatch.setenv("CLALA_REDIRECT_KEY", SECRET)
    db = ingest_one(cli, tmp_path)
    with redirecting() as (redirector, recorder):
        code, out, _ = cli(
            *label_args(db, f"{redirector.origin}/v1", "--structured-output", "json_schema", "--name", "chat")
        )
        chats = [r for r in redirector.requests if r["path"].endswith("/chat/completions")]
    assert_nothing_reached(recorder)
    assert chats and SENTENCE.encode() in chats[0]["body"]  # the redirector got it, and nobody else
    assert code == 3 and "incomplete" in out
    assert f"redirected to {recorder.origin}/v1/chat/completions" in out
    assert "clala label --resume chat" in out


def test_a_redirect_to_a_public_address_is_not_followed(tmp_path, cli, monkeypatch):
    """TEST-NET-3 (203.0.113.0/24) is never routed: following the redirect would hang or fail as
    a connection error; clala stops at once and names the target."""
    monkeypatch.setenv("CLALA_REDIRECT_KEY", SECRET)
    db = ingest_one(cli, tmp_path)
    with redirecting("http://203.0.113.7:8000") as (redirector, _):
        code, out, _ = cli(
            *label_args(
                db, f"{redirector.origin}/v1", "--structured-output", "json_schema", "--name", "far", "--timeout", "3"
            )
        )
    assert code == 3 and "redirected to http://203.0.113.7:8000/v1/chat/completions" in out


def test_the_report_writers_llm_calls_follow_no_redirect(monkeypatch):
    from pydantic import BaseModel

    from model.reports.writer import LLMOptions, ask_all

    class Answer(BaseModel):
        findings: str

    monkeypatch.setenv("CLALA_REDIRECT_KEY", SECRET)
    with redirecting() as (redirector, recorder):
        options = LLMOptions(
            backend="openai",
            base_urls=[f"{redirector.origin}/v1"],
            model="m",
            api_key_env="CLALA_REDIRECT_KEY",
            structured_output="json_schema",
            transport_retries=0,
            timeout=5,
        )
        with pytest.raises(ClalaError, match=f"redirected to {recorder.origin}/v1/chat/completions"):
            ask_all(options, [[{"role": "user", "content": SENTENCE}]], Answer)
        # and with the probe (structured output auto) the writer stops before any chat
        with pytest.raises(ClalaError, match="redirect"):
            ask_all(
                options.model_copy(update={"structured_output": "auto"}),
                [[{"role": "user", "content": SENTENCE}]],
                Answer,
            )
    assert_nothing_reached(recorder)
