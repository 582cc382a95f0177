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
the dialect chosen here. Transport retries are clala's own (`OpenAICompatibleBackend.ask`, the
openai client's own retries are off): exponential backoff with jitter on 408, 409, 429, 5xx,
timeouts and connection errors, honouring Retry-After, as the openai client does; done here so
that each attempt is seen by the backend's `TransportWatch`, which tells a run when the server
is gone (GIVE_UP_AFTER failures in a row) long before every request has used up its retries.
"""

from __future__ import annotations

import asyncio
import email.utils
import ipaddress
import itertools
import json
import logging
import math
import os
import random
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, NoReturn, cast
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


# A run gives up after this many transport failures in a row (`--give-up-after`), once the
# streak is at least GIVE_UP_SECONDS old: a server restarting for a second is ridden out.
GIVE_UP_AFTER = 5
GIVE_UP_SECONDS = 3.0
# The openai client's backoff: 0.5 s doubling up to 8 s, a quarter of jitter; Retry-After up to 60 s.
RETRY_DELAY = (0.5, 8.0)
MAX_RETRY_AFTER = 60.0


class TransportWatch:
    """Transport failures in a row, over every request a backend makes.

    An attempt that got no HTTP response at all (connection refused or reset, a timeout) counts
    at once; a request still answered 408/409/429/5xx after its retries counts once; any other
    answer ends the streak. After `limit` failures in a row, the first at least GIVE_UP_SECONDS
    ago, the watch trips: `reason` says why and `on_trip(reason)` is called, once."""

    def __init__(self, limit: int = GIVE_UP_AFTER, on_trip: Callable[[str], None] | None = None):
        self.limit, self.on_trip = limit, on_trip
        self.streak = 0
        self.streak_started = 0.0
        self.reason: str | None = None

    def failed(self, why: str) -> None:
        now = time.monotonic()
        if self.streak == 0:
            self.streak_started = now
        self.streak += 1
        if self.reason is None and self.streak >= self.limit and now - self.streak_started >= GIVE_UP_SECONDS:
            self.reason = f"{why}; {self.streak} transport failures in a row over {now - self.streak_started:.1f} s"
            if self.on_trip:
                self.on_trip(self.reason)

    def answered(self) -> None:
        self.streak = 0


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
        self.transport_retries = transport_retries
        self.watch = TransportWatch()  # a run replaces it with its own (its limit, its stop)
        mode = instructor.Mode.MD_JSON if dialect == "none" else instructor.Mode.JSON_SCHEMA
        # A local server needs no key, but the client insists on one. No redirect is followed
        # (the openai client's default follows them, to any origin): a 3xx is an error (`_describe`).
        # Retries are made in `ask`, so that the watch sees every attempt.
        self._openai = [
            AsyncOpenAI(
                base_url=url,
                api_key=api_key or "no-key",
                timeout=timeout,
                max_retries=0,
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
        request = {
            "model": self.model,
            "messages": cast("list[ChatCompletionMessageParam]", messages),  # role/content dicts
            "response_model": answer_model,
            "max_retries": reasks,
            "temperature": temperature,
            "max_tokens": max_tokens,
            **extra,
        }
        for attempt in range(self.transport_retries + 1):
            try:
                # each attempt goes to the next server: a retry may find one that is up
                parsed, completion = await next(self._next).chat.completions.create_with_completion(**request)
            except IncompleteOutputException as exc:
                self.watch.answered()
                completion = exc.last_completion
                raise UnitFailed(
                    f"answer cut off at max_tokens={max_tokens}",
                    _text_of(completion),
                    *_usage(getattr(completion, "usage", None)),
                ) from None
            except InstructorRetryException as exc:
                cause = exc.__cause__
                if not _retryable(cause):
                    self.watch.answered()  # the server answered, if not usefully
                    _raise_final(exc, cause)
                no_response = isinstance(cause, openai.APIConnectionError)  # refused, reset, timed out
                if no_response:
                    self.watch.failed(_describe(cause or exc))
                if attempt == self.transport_retries:
                    if not no_response:
                        self.watch.failed(_describe(cause or exc))
                    raise TransportFailed(_describe(cause or exc)) from None
                await asyncio.sleep(_retry_delay(attempt, cause))
                continue
            self.watch.answered()
            total = getattr(parsed, "_total_usage", None) or getattr(completion, "usage", None)
            return Answer(
                parsed=parsed,
                raw=_text_of(completion) or "",
                prompt_tokens=_usage(total)[0],
                completion_tokens=_usage(total)[1],
                mean_logprob=_mean_logprob(completion),
            )
        raise AssertionError("unreachable: the last attempt returns or raises")

    async def close(self) -> None:
        for client in self._openai:
            await client.close()


def _retryable(cause: BaseException | None) -> bool:
    """Whether a request that failed this way is tried again (what the openai client retries)."""
    import openai

    if isinstance(cause, openai.APIConnectionError):  # timeouts included
        return True
    return isinstance(cause, openai.APIStatusError) and (
        cause.status_code in (408, 409, 429) or cause.status_code >= 500
    )


def _raise_final(exc: BaseException, cause: BaseException | None) -> NoReturn:
    """The error of a request that is not retried: refused by the server, or answered invalidly."""
    import openai

    if isinstance(cause, openai.APIStatusError):
        raise ServerRefused(_describe(cause)) from None
    if isinstance(cause, openai.OpenAIError):
        raise TransportFailed(_describe(cause or exc)) from None
    error = " ".join(str(cause or exc).split())[:2000]
    raise UnitFailed(
        f"invalid after {getattr(exc, 'n_attempts', 1)} attempt(s): {error}",
        _text_of(getattr(exc, "last_completion", None)),
        *_usage(getattr(exc, "total_usage", None)),
    ) from None


def _retry_delay(attempt: int, cause: BaseException | None) -> float:
    """Seconds before try `attempt + 2`: the server's Retry-After (up to a minute), else backoff."""
    import openai

    if isinstance(cause, openai.APIStatusError):
        headers = cause.response.headers
        try:
            if headers.get("retry-after-ms"):
                wait = float(headers["retry-after-ms"]) / 1000
            elif headers.get("retry-after"):
                value = headers["retry-after"]
                try:
                    wait = float(value)
                except ValueError:
                    wait = email.utils.parsedate_to_datetime(value).timestamp() - time.time()
            else:
                wait = None
        except (TypeError, ValueError):
            wait = None
        if wait is not None and math.isfinite(wait) and 0 < wait <= MAX_RETRY_AFTER:
            return wait
    first, most = RETRY_DELAY
    return min(first * 2.0**attempt, most) * (1 - 0.25 * random.random())


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
