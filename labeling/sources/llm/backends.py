"""LLM backends: any OpenAI-compatible server (hosted API, `vllm serve`, llama.cpp's server)
through the `openai` async client and `instructor`, the embedded local llama.cpp server, and an
optional in-process vLLM engine.

Structured output is requested in the dialect the server speaks and validated with the same
pydantic model whatever the dialect, in one place (`OpenAICompatibleBackend.ask`):

- `json_schema`: `response_format={"type": "json_schema", ...}` (OpenAI, vLLM, SGLang);
- `llama_cpp`: `response_format={"type": "json_object", "schema": ...}` (llama-cpp-python's
  grammar-constrained JSON; it answers 500 to json_schema);
- `none`: no constraint; the schema goes in the prompt and answers are validated and re-asked.

instructor owns validation and re-asking (instructor's JSON_SCHEMA mode, or MD_JSON for
`none`); the request's `response_format` is replaced through `extra_body` so that it is exactly
the dialect chosen here. The openai client owns transport retries: exponential backoff with
jitter on 429, 5xx, timeouts and connection errors, honouring Retry-After.
"""

from __future__ import annotations

import asyncio
import ipaddress
import itertools
import json
import logging
import math
import os
import urllib.request
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, cast
from urllib.parse import urlparse

from pydantic import BaseModel

from labeling.core.errors import ClalaError

if TYPE_CHECKING:
    from openai.types.chat import ChatCompletionMessageParam

DIALECTS = ("auto", "json_schema", "llama_cpp", "none")
BACKENDS = ("local", "openai", "vllm")

# instructor logs every failed attempt at ERROR with the model's text; clala records those in
# the failures table instead.
logging.getLogger("instructor").setLevel(logging.CRITICAL)


@dataclass
class Answer:
    """One validated answer to one unit."""

    parsed: BaseModel
    raw: str
    prompt_tokens: int
    completion_tokens: int
    mean_logprob: float | None = None


class UnitFailed(Exception):
    """The server answered, but not validly, even after re-asking (or the answer was cut off)."""

    def __init__(self, error: str, raw: str | None, prompt_tokens: int = 0, completion_tokens: int = 0):
        super().__init__(error)
        self.error, self.raw = error, raw
        self.prompt_tokens, self.completion_tokens = prompt_tokens, completion_tokens


class TransportFailed(Exception):
    """No usable answer from the server (down, timing out, rate-limited past the retries)."""


class ServerRefused(Exception):
    """The server rejected the request itself (authentication, unknown model, bad request):
    retrying cannot help; the run stops as incomplete so it can be resumed once fixed."""


def is_loopback(url: str) -> bool:
    host = urlparse(url).hostname or ""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_patient_data_policy(base_urls: list[str], allow_remote: bool) -> None:
    remote = [u for u in base_urls if not is_loopback(u)]
    if remote and not allow_remote:
        raise ClalaError(
            f"--base-url {remote[0]} is not on this machine; reports are patient data, so sending them "
            "elsewhere needs --allow-remote"
        )


def redirect_refused(url: str, target: str, status: int | None = None) -> str:
    """The one-line error of a redirect, naming where it pointed."""
    code = f" (HTTP {status})" if status else ""
    return (
        f"{url} redirected to {target}{code}; clala follows no redirect, so neither the reports nor the "
        "API key go anywhere but the server named: give the final address as --base-url"
    )


class _NoRedirects(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, req, fp, code, msg, headers, newurl):
        raise ClalaError(redirect_refused(req.full_url, newurl, code))


def open_url(request: str | urllib.request.Request, timeout: float) -> Any:
    """`urllib.request.urlopen`, except that a redirect is a ClalaError naming its target, not
    followed (every plain HTTP request clala makes goes through here)."""
    return urllib.request.build_opener(_NoRedirects).open(request, timeout=timeout)


def detect_dialect(base_url: str, api_key: str | None, timeout: float = 5.0) -> str:
    """`llama_cpp` for llama-cpp-python's server (its /models entries are owned by "me"),
    otherwise `json_schema`. A redirect is a ClalaError (it is not followed)."""
    request = urllib.request.Request(
        f"{base_url.rstrip('/')}/models", headers={"Authorization": f"Bearer {api_key}"} if api_key else {}
    )
    try:
        with open_url(request, timeout=timeout) as response:
            models = json.loads(response.read()).get("data", [])
    except (OSError, ValueError):
        return "json_schema"
    return "llama_cpp" if any(m.get("owned_by") == "me" for m in models) else "json_schema"


def response_format(dialect: str, schema: dict) -> dict | None:
    if dialect == "json_schema":
        return {"type": "json_schema", "json_schema": {"name": "UnitLabels", "schema": schema, "strict": True}}
    if dialect == "llama_cpp":
        return {"type": "json_object", "schema": schema}
    return None


def _text_of(completion: Any) -> str | None:
    try:
        return completion.choices[0].message.content
    except (AttributeError, IndexError):
        return None


def _usage(usage: Any) -> tuple[int, int]:
    if usage is None:
        return 0, 0
    return int(getattr(usage, "prompt_tokens", 0) or 0), int(getattr(usage, "completion_tokens", 0) or 0)


def _mean_logprob(completion: Any) -> float | None:
    try:
        tokens = completion.choices[0].logprobs.content
    except AttributeError:
        return None
    values = [t.logprob for t in tokens or [] if t.logprob is not None and math.isfinite(t.logprob)]
    return sum(values) / len(values) if values else None


class OpenAICompatibleBackend:
    """Chat completions against one or more OpenAI-compatible servers (round robin)."""

    def __init__(
        self,
        base_urls: list[str],
        model: str,
        dialect: str,
        api_key: str | None = None,
        timeout: float = 60.0,
        transport_retries: int = 4,
    ):
        import instructor
        from openai import AsyncOpenAI, DefaultAsyncHttpxClient

        if dialect not in DIALECTS[1:]:
            raise ClalaError(f"--structured-output must be one of {', '.join(DIALECTS)}")
        self.model, self.dialect = model, dialect
        mode = instructor.Mode.MD_JSON if dialect == "none" else instructor.Mode.JSON_SCHEMA
        # A local server needs no key, but the client insists on one. No redirect is followed
        # (the openai client's default follows them, to any origin): a 3xx is an error (`_describe`).
        self._openai = [
            AsyncOpenAI(
                base_url=url,
                api_key=api_key or "no-key",
                timeout=timeout,
                max_retries=transport_retries,
                http_client=DefaultAsyncHttpxClient(follow_redirects=False),
            )
            for url in base_urls
        ]
        self._clients = [instructor.from_openai(client, mode=mode) for client in self._openai]
        self._next = itertools.cycle(self._clients)
        self.logprobs = dialect == "json_schema"  # llama-cpp-python's chat endpoint returns none

    async def ask(
        self,
        messages: list[dict],
        answer_model: type[BaseModel],
        schema: dict,
        *,
        temperature: float,
        max_tokens: int,
        reasks: int,
        seed: int | None = None,
    ) -> Answer:
        import openai
        from instructor.core.exceptions import IncompleteOutputException, InstructorRetryException

        extra: dict[str, Any] = {}
        fmt = response_format(self.dialect, schema)
        if fmt is not None:
            extra["extra_body"] = {"response_format": fmt}
        if self.logprobs:
            extra["logprobs"] = True
        if seed is not None:
            extra["seed"] = seed
        client = next(self._next)
        try:
            parsed, completion = await client.chat.completions.create_with_completion(
                model=self.model,
                messages=cast("list[ChatCompletionMessageParam]", messages),  # role/content dicts
                response_model=answer_model,
                max_retries=reasks,
                temperature=temperature,
                max_tokens=max_tokens,
                **extra,
            )
        except IncompleteOutputException as exc:
            completion = exc.last_completion
            raise UnitFailed(
                f"answer cut off at max_tokens={max_tokens}",
                _text_of(completion),
                *_usage(getattr(completion, "usage", None)),
            ) from None
        except InstructorRetryException as exc:
            cause = exc.__cause__
            if isinstance(cause, (openai.APIConnectionError, openai.RateLimitError, openai.InternalServerError)):
                raise TransportFailed(_describe(cause)) from None
            if isinstance(cause, openai.APIStatusError):
                if cause.status_code in (408, 409) or cause.status_code >= 500:
                    raise TransportFailed(_describe(cause)) from None
                raise ServerRefused(_describe(cause)) from None
            if isinstance(cause, openai.OpenAIError):
                raise TransportFailed(_describe(cause)) from None
            error = " ".join(str(cause or exc).split())[:2000]
            raise UnitFailed(
                f"invalid after {exc.n_attempts} attempt(s): {error}",
                _text_of(exc.last_completion),
                *_usage(exc.total_usage),
            ) from None
        total = getattr(parsed, "_total_usage", None) or getattr(completion, "usage", None)
        return Answer(
            parsed=parsed,
            raw=_text_of(completion) or "",
            prompt_tokens=_usage(total)[0],
            completion_tokens=_usage(total)[1],
            mean_logprob=_mean_logprob(completion),
        )

    async def close(self) -> None:
        for client in self._openai:
            await client.close()


def _describe(exc: BaseException) -> str:
    import openai

    if isinstance(exc, openai.APIStatusError):
        if 300 <= exc.status_code < 400:
            location = exc.response.headers.get("location")
            target = str(exc.response.url.join(location)) if location else "(no Location header)"
            return redirect_refused(str(exc.response.url), target, exc.status_code)
        return f"HTTP {exc.status_code} from the server"
    if isinstance(exc, openai.APITimeoutError):
        return "request timed out"
    if isinstance(exc, openai.APIConnectionError):
        return "could not connect to the server"
    return type(exc).__name__


class VllmBackend:
    """In-process vLLM engine with structured outputs, for GPU batch relabeling (extra `vllm`).

    vLLM constrains decoding to the schema, so answers are valid by construction except when
    cut off; they are validated with the same pydantic model and re-asked the same way.
    """

    def __init__(self, model: str, dialect: str = "json_schema", **engine_args: Any):
        try:
            from vllm import LLM  # pyright: ignore[reportMissingImports]  # the optional clala[vllm] extra
        except ImportError:
            raise ClalaError("the vllm backend needs `pip install 'clala[vllm]'` on a machine with a GPU") from None
        self.model, self.dialect, self.logprobs = model, "vllm_structured_outputs", False
        self.engine = LLM(model=model, **engine_args)
        self._lock = asyncio.Lock()

    async def ask(
        self,
        messages: list[dict],
        answer_model: type[BaseModel],
        schema: dict,
        *,
        temperature: float,
        max_tokens: int,
        reasks: int,
        seed: int | None = None,
    ) -> Answer:
        from vllm import SamplingParams  # pyright: ignore[reportMissingImports]  # the optional clala[vllm] extra
        from vllm.sampling_params import (  # pyright: ignore[reportMissingImports]  # the optional clala[vllm] extra
            StructuredOutputsParams,
        )

        params = SamplingParams(
            temperature=temperature,
            max_tokens=max_tokens,
            seed=seed,
            structured_outputs=StructuredOutputsParams(json=schema),
        )
        chat, prompt_tokens, completion_tokens, raw = list(messages), 0, 0, ""
        for _attempt in range(reasks + 1):
            async with self._lock:  # one engine; it batches internally
                output = (await asyncio.to_thread(self.engine.chat, chat, params, use_tqdm=False))[0]
            prompt_tokens += len(output.prompt_token_ids or [])
            completion_tokens += len(output.outputs[0].token_ids)
            raw = output.outputs[0].text
            if output.outputs[0].finish_reason == "length":
                raise UnitFailed(f"answer cut off at max_tokens={max_tokens}", raw, prompt_tokens, completion_tokens)
            try:
                parsed = answer_model.model_validate_json(raw)
            except ValueError as exc:
                error = " ".join(str(exc).split())[:2000]
                chat += [
                    {"role": "assistant", "content": raw},
                    {"role": "user", "content": f"Correct these validation errors and answer again: {error}"},
                ]
                continue
            return Answer(parsed, raw, prompt_tokens, completion_tokens)
        raise UnitFailed(f"invalid after {reasks + 1} attempt(s): {error}", raw, prompt_tokens, completion_tokens)

    async def close(self) -> None:
        return None


def api_key_from_env(name: str | None) -> str | None:
    """The API key, from the environment only; never stored or logged."""
    return os.environ.get(name) if name else None
