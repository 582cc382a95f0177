"""LLM backends: any OpenAI-compatible server (hosted API, `vllm serve`, llama.cpp's server)
over a pooled aiohttp session, the embedded local llama.cpp server, and an optional in-process
vLLM engine.

Structured output is requested in the dialect the server speaks and validated with the same
pydantic model whatever the dialect, in one place (`OpenAICompatibleBackend.ask`):

- `json_schema`: `response_format={"type": "json_schema", ...}` (OpenAI, vLLM, SGLang);
- `llama_cpp`: `response_format={"type": "json_object", "schema": ...}` (llama-cpp-python's
  grammar-constrained JSON; it answers 500 to json_schema);
- `none`: no constraint; the schema goes at the end of the system message and answers are
  validated (the JSON of a ```json block, or from the first brace to the last) and re-asked.

The lean request path (issue 16): the openai client and instructor cost about 10 and 5 ms of CPU
a call (their per-call request transform and schema handling), more than a fast server takes to
answer. So the request body is built here as the exact JSON the server gets, sent over one pooled
aiohttp session, parsed once and validated once with the answer's pydantic model; an invalid
answer is re-asked with its validation errors, as instructor did. Transport retries are clala's
own: exponential backoff with jitter on 408, 409, 429, 5xx, timeouts and connection errors,
honouring Retry-After, as the openai client does; each attempt is seen by the backend's
`TransportWatch`, which tells a run when the server is gone (GIVE_UP_AFTER failures in a row)
long before every request has used up its retries.
"""

from __future__ import annotations

import asyncio
import email.utils
import ipaddress
import itertools
import json
import math
import os
import random
import re
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urljoin, urlparse

from pydantic import BaseModel

from labeling.core.errors import ClalaError

DIALECTS = ("auto", "json_schema", "llama_cpp", "none")
BACKENDS = ("local", "openai", "openai-batch", "ray", "vllm")


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
    ago, the watch trips: `reason` says why and `on_trip(reason)` is called, once. A backend whose
    server clala started itself gives `diagnose` (the server's crash report, None while it runs):
    a failure while that server is dead trips at once, with the crash as the reason (`fault`)."""

    def __init__(
        self,
        limit: int = GIVE_UP_AFTER,
        on_trip: Callable[[str], None] | None = None,
        diagnose: Callable[[], str | None] | None = None,
    ):
        self.limit, self.on_trip, self.diagnose = limit, on_trip, diagnose
        self.streak = 0
        self.streak_started = 0.0
        self.reason: str | None = None
        self.fault: str | None = None  # the diagnosed cause (a crash), not a guess

    def failed(self, why: str) -> None:
        now = time.monotonic()
        if self.streak == 0:
            self.streak_started = now
        self.streak += 1
        self.fault = self.fault or (self.diagnose() if self.diagnose else None)
        if self.reason is not None:
            return
        if self.fault or (self.streak >= self.limit and now - self.streak_started >= GIVE_UP_SECONDS):
            self.reason = self.fault or (
                f"{why}; {self.streak} transport failures in a row over {now - self.streak_started:.1f} s"
            )
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


def _usage(usage: Any) -> tuple[int, int]:
    if not isinstance(usage, dict):
        return 0, 0
    return int(usage.get("prompt_tokens") or 0), int(usage.get("completion_tokens") or 0)


def _mean_logprob(choice: dict) -> float | None:
    logprobs = choice.get("logprobs")
    tokens = logprobs.get("content") if isinstance(logprobs, dict) else None
    values = [
        t["logprob"]
        for t in tokens or []
        if isinstance(t, dict) and isinstance(t.get("logprob"), int | float) and math.isfinite(t["logprob"])
    ]
    return sum(values) / len(values) if values else None


class OpenAICompatibleBackend:
    """Chat completions against one or more OpenAI-compatible servers (round robin), over one
    pooled aiohttp session.

    The lean path: the request body is the exact JSON the server gets (the response format of a
    schema serialized once, then reused), the answer is parsed once with `json.loads` and
    validated once with the answer's pydantic model. No redirect is followed (a 3xx is
    ServerRefused naming the target)."""

    def __init__(
        self,
        base_urls: list[str],
        model: str,
        dialect: str,
        api_key: str | None = None,
        timeout: float = 60.0,
        transport_retries: int = 4,
        diagnose: Callable[[], str | None] | None = None,
    ):
        if dialect not in DIALECTS[1:]:
            raise ClalaError(f"--structured-output must be one of {', '.join(DIALECTS)}")
        self.model, self.dialect = model, dialect
        self.transport_retries = transport_retries
        self.timeout = timeout
        # diagnose: why the server is gone, where clala can tell (its own server's crash); a run
        # replaces the watch with its own (its limit, its stop) and keeps the diagnosis
        self.watch = TransportWatch(diagnose=diagnose)
        self._urls = itertools.cycle([f"{url.rstrip('/')}/chat/completions" for url in base_urls])
        # A local server needs no key, but some insist on a header.
        self._headers = {"Content-Type": "application/json", "Authorization": f"Bearer {api_key or 'no-key'}"}
        self._formats: dict[int, tuple[dict, str]] = {}  # id(schema) -> (schema, its response_format as JSON)
        self._session: Any = None  # made in the running loop, on the first request
        self.logprobs = dialect == "json_schema"  # llama-cpp-python's chat endpoint (dialect llama_cpp) returns none

    def _format_json(self, schema: dict) -> str:
        """The dialect's response_format for `schema`, serialized once per schema object."""
        known = self._formats.get(id(schema))
        if known is None or known[0] is not schema:
            known = self._formats[id(schema)] = (schema, json.dumps(response_format(self.dialect, schema)))
        return known[1]

    def _body(self, chat: list[dict], schema: dict, temperature: float, max_tokens: int, seed: int | None) -> bytes:
        head = {"model": self.model, "temperature": temperature, "max_tokens": max_tokens}
        if self.logprobs:
            head["logprobs"] = True
        if seed is not None:
            head["seed"] = seed
        fields = json.dumps(head)[:-1]
        if self.dialect != "none":
            fields += ', "response_format": ' + self._format_json(schema)
        return (fields + ', "messages": ' + json.dumps(chat) + "}").encode("utf-8")

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
        """One validated answer; an invalid one is re-asked `reasks` times with its errors."""
        chat = _schema_in_prompt(messages, schema) if self.dialect == "none" else list(messages)
        prompt_tokens = completion_tokens = 0
        raw, error = "", ""
        for _attempt in range(reasks + 1):
            completion = await self._complete(self._body(chat, schema, temperature, max_tokens, seed))
            used = _usage(completion.get("usage"))
            prompt_tokens, completion_tokens = prompt_tokens + used[0], completion_tokens + used[1]
            choice = _first_choice(completion)
            message = choice.get("message") if isinstance(choice, dict) else None
            raw = (message.get("content") if isinstance(message, dict) else None) or ""
            if not isinstance(raw, str):
                raw = json.dumps(raw)
            if choice.get("finish_reason") == "length":
                raise UnitFailed(f"answer cut off at max_tokens={max_tokens}", raw, prompt_tokens, completion_tokens)
            try:
                parsed = answer_model.model_validate_json(_json_part(raw) if self.dialect == "none" else raw)
            except ValueError as exc:
                error = " ".join(str(exc).split())[:2000]
                chat = [
                    *chat,
                    {"role": "assistant", "content": raw},
                    {"role": "user", "content": f"Correct your JSON answer, which has these errors: {error}"},
                ]
                continue
            return Answer(parsed, raw, prompt_tokens, completion_tokens, _mean_logprob(choice))
        raise UnitFailed(f"invalid after {reasks + 1} attempt(s): {error}", raw, prompt_tokens, completion_tokens)

    async def _complete(self, body: bytes) -> dict:
        """POST one chat completion, with clala's transport retries; the parsed JSON answer."""
        import aiohttp

        if self._session is None:
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=0, ttl_dns_cache=300),  # the run's semaphore limits
                timeout=aiohttp.ClientTimeout(total=self.timeout),
                headers=self._headers,
                skip_auto_headers=("User-Agent",),
            )
        for attempt in range(self.transport_retries + 1):
            url = next(self._urls)  # each attempt goes to the next server: a retry may find one that is up
            headers: Any = None
            try:
                async with self._session.post(url, data=body, allow_redirects=False) as response:
                    status, headers, data = response.status, response.headers, await response.read()
            except TimeoutError:
                why = "request timed out"
                self.watch.failed(why)
            except (aiohttp.ClientError, OSError):  # refused, reset, closed mid-answer
                why = "could not connect to the server"
                self.watch.failed(why)
            else:
                if 300 <= status < 400:
                    self.watch.answered()
                    location = headers.get("location")
                    target = urljoin(str(response.url), location) if location else "(no Location header)"
                    raise ServerRefused(redirect_refused(str(response.url), target, status))
                why = f"HTTP {status} from the server"
                if not (status in (408, 409, 429) or status >= 500):
                    self.watch.answered()  # the server answered, if not usefully
                    if status >= 400:
                        raise ServerRefused(why)
                    return _completion_of(data)
                if attempt == self.transport_retries:
                    self.watch.failed(why)
            if attempt == self.transport_retries:
                raise TransportFailed(why)
            await asyncio.sleep(_retry_delay(attempt, headers))
        raise AssertionError("unreachable: the last attempt returns or raises")

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None


def _completion_of(data: bytes) -> dict:
    """A chat completion's JSON; anything else (a proxy's HTML page) fails the unit."""
    try:
        completion = json.loads(data)
    except ValueError:
        completion = None
    if not isinstance(completion, dict) or not isinstance(completion.get("choices"), list):
        text = data.decode("utf-8", "replace")
        raise UnitFailed("the server's answer is not a chat completion", text[:2000])
    return completion


def _first_choice(completion: dict) -> dict:
    choices = completion.get("choices") or [{}]
    return choices[0] if isinstance(choices[0], dict) else {}


SCHEMA_INSTRUCTION = "Answer with one JSON object that fits this JSON Schema, in a ```json block:\n"


def _schema_in_prompt(messages: list[dict], schema: dict) -> list[dict]:
    """Dialect `none`: the schema goes at the end of the system message (static: the prefix
    stays the same on every call)."""
    instruction = SCHEMA_INSTRUCTION + json.dumps(schema)
    if messages and messages[0].get("role") == "system":
        return [{**messages[0], "content": f"{messages[0]['content']}\n\n{instruction}"}, *messages[1:]]
    return [{"role": "system", "content": instruction}, *messages]


def _json_part(text: str) -> str:
    """The JSON of an unconstrained answer: a ```json block's, else from the first { to the last }."""
    fenced = re.search(r"```(?:json)?\s*(.*?)```", text, re.S)
    if fenced:
        return fenced.group(1)
    start, end = text.find("{"), text.rfind("}")
    return text[start : end + 1] if 0 <= start < end else text


def _retry_delay(attempt: int, headers: Any) -> float:
    """Seconds before try `attempt + 2`: the server's Retry-After (up to a minute), else backoff."""
    if headers is not None:
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
        self.watch = TransportWatch()  # in process: nothing to diagnose apart from clala
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
