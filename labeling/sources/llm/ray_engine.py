"""`--backend ray`: waves of requests answered by a Ray Data LLM pipeline (`ray.data.llm`, the
optional `clala[ray]` extra), on this machine or on a Ray cluster.

A wave's request bodies become a `ray.data` dataset, mapped by a Ray Data LLM processor:

- with `--base-url` (one or more OpenAI-compatible servers): the HTTP request processor
  (`HttpRequestProcessorConfig`), one per server, each on its share of the wave, so requests are
  spread over the servers by Ray workers, on whichever nodes have CPUs;
- with `--engine-config FILE`: vLLM engines on the cluster's GPUs (`vLLMEngineProcessorConfig`,
  the model `--model`, the engine settings from the file: tensor and pipeline parallel sizes, the
  number of engines, ...), with the answer schema as vLLM's structured output.

The driver (this process) keeps what every backend keeps: units, the cache, grounding, re-asks
and the single DuckDB writer (`WaveBackend`, `OpenAICompatibleBackend.ask`). Answers are handed
to their requests as the pipeline streams them out, so they are cached as they arrive and a kill
loses only the rows still in the pipeline. A pipeline that fails (a server down past Ray's
retries) leaves the requests it did not answer as transport failures: their reports stay pending
and `--resume` finishes them.
"""

from __future__ import annotations

import asyncio
import importlib.util
import json
import tomllib
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from labeling.core.errors import ClalaError
from labeling.sources.llm.backends import (
    ServerRefused,
    TransportFailed,
    UnitFailed,
    api_key_from_env,
    check_patient_data_policy,
    is_loopback,
    redirect_refused,
)
from labeling.sources.llm.waves import WaveBackend, request_id, settle

if TYPE_CHECKING:
    from labeling.sources.llm.options import BackendOptions

# Rows a Ray worker takes at a time: small, so that a wave is spread over every worker.
ROWS_PER_TASK = 8
# CPUs a worker of the HTTP stage (and a task turning bodies into payloads and answers into text)
# reserves: they mostly wait on the server. Ray's default, a whole CPU each, would let a small
# machine run one request at a time, or none (the workers' CPUs leave none to the other tasks).
HTTP_WORKER_CPUS = 0.1
# Reports a wave covers: answers stream out of the pipeline, so a wave may be large; it is still
# bounded so that the next one is prepared while this one runs.
REPORTS_PER_WAVE = 2_000


@dataclass(frozen=True)
class RaySettings:
    """Where the Ray pipeline runs and what answers in it."""

    model: str
    address: str | None = None  # None: RAY_ADDRESS, else a Ray started on this machine for the run
    base_urls: tuple[str, ...] = ()  # the HTTP request processor's servers
    api_key: str | None = None
    engine: dict[str, Any] | None = None  # vLLMEngineProcessorConfig settings (model_source is `model`)
    workers: int = 4  # HTTP workers in all (--concurrency), spread over the servers
    transport_retries: int = 4
    headers: dict[str, str] = field(default_factory=dict)


def read_engine_config(path: str) -> dict[str, Any]:
    """The vLLM engine settings of `--engine-config` (JSON or TOML): the fields of Ray's
    `vLLMEngineProcessorConfig`, such as `engine_kwargs` (tensor_parallel_size, max_model_len, ...),
    `concurrency` (engines), `batch_size`, `accelerator_type`."""
    file = Path(path)
    try:
        text = file.read_text(encoding="utf-8")
        settings = tomllib.loads(text) if file.suffix.lower() == ".toml" else json.loads(text)
    except (OSError, ValueError) as exc:
        raise ClalaError(f"--engine-config {path}: {exc}") from None
    if not isinstance(settings, dict):
        raise ClalaError(f"--engine-config {path}: expected a table of vLLMEngineProcessorConfig settings")
    return settings


def engine_processor_config(settings: RaySettings) -> Any:
    """Ray's `vLLMEngineProcessorConfig` for the settings' engine (the model is `--model`)."""
    from ray.data.llm import vLLMEngineProcessorConfig

    engine = dict(settings.engine or {})
    source = engine.pop("model_source", settings.model)
    if source != settings.model:
        raise ClalaError(
            f"--engine-config names model_source {source!r}; the run's model is --model {settings.model!r}"
        )
    try:
        return vLLMEngineProcessorConfig(model_source=settings.model, **engine)
    except (TypeError, ValueError) as exc:
        raise ClalaError(f"--engine-config: {' '.join(str(exc).split())[:500]}") from None


def refuse_redirects(session_factory: Callable[..., Any]) -> Callable[[], Any]:
    """An aiohttp session factory for Ray's HTTP stage whose requests follow no redirect: a 3xx
    fails the request with the error that names its target, as on the online path."""

    def make() -> Any:
        async def no_redirects(request: Any, handler: Any) -> Any:
            response = await handler(request)
            if 300 <= response.status < 400:
                target = response.headers.get("location") or "(no Location header)"
                raise ServerRefused(redirect_refused(str(request.url), target, response.status))
            return response

        return session_factory(middlewares=(no_redirects,))

    return make


def _aiohttp_session(**kwargs: Any) -> Any:
    import aiohttp

    return aiohttp.ClientSession(**kwargs)


def _payload(row: dict[str, Any]) -> dict[str, Any]:
    """The HTTP stage's input: the exact body, as the JSON object it is."""
    return {"rid": row["rid"], "payload": json.loads(row["body"])}


def _http_answer(row: dict[str, Any]) -> dict[str, Any]:
    """The HTTP stage's answer, as JSON text (a completion, or a server's error)."""
    return {"rid": row["rid"], "answer": json.dumps(row["http_response"])}


def _engine_request(row: dict[str, Any]) -> dict[str, Any]:
    """A vLLM engine's input from a chat-completion body: its messages and sampling parameters,
    the answer schema as vLLM's structured output (as JSON text: rows of different schemas
    share a dataset)."""
    body = json.loads(row["body"])
    params: dict[str, Any] = {"temperature": body.get("temperature", 0.0), "max_tokens": body.get("max_tokens")}
    if body.get("seed") is not None:
        params["seed"] = body["seed"]
    response_format = body.get("response_format") or {}
    schema = (response_format.get("json_schema") or {}).get("schema") or response_format.get("schema")
    if schema:
        params["structured_outputs"] = {"json": json.dumps(schema)}
    return {
        "rid": row["rid"],
        "max_tokens": params["max_tokens"],
        "messages": body["messages"],
        "sampling_params": params,
    }


def _engine_answer(row: dict[str, Any]) -> dict[str, Any]:
    """A vLLM engine's output as a chat completion (cut off when it used every token allowed)."""
    generated = int(row.get("num_generated_tokens") or 0)
    cut = row.get("max_tokens") is not None and generated >= int(row["max_tokens"])
    completion = {
        "choices": [
            {
                "index": 0,
                "finish_reason": "length" if cut else "stop",
                "message": {"role": "assistant", "content": row.get("generated_text") or ""},
            }
        ],
        "usage": {"prompt_tokens": int(row.get("num_input_tokens") or 0), "completion_tokens": generated},
    }
    return {"rid": row["rid"], "answer": json.dumps(completion)}


def answer_of(text: str) -> dict | BaseException:
    """A row's answer: the chat completion, or the online path's failure for a server's error
    (Ray's HTTP stage keeps the error's body, not its status: an error whose code or type says
    server or rate limit is a transport failure, another is a refusal)."""
    try:
        answer = json.loads(text)
    except ValueError:
        return UnitFailed("the server's answer is not a chat completion", text[:2000])
    if isinstance(answer, dict) and isinstance(answer.get("choices"), list):
        return answer
    error = answer.get("error") if isinstance(answer, dict) else None
    if isinstance(answer, dict) and (error is not None or answer.get("object") == "error"):
        detail = error if isinstance(error, dict) else answer
        code, kind = detail.get("code"), str(detail.get("type") or "")
        message = str(detail.get("message") or error or answer)[:500]
        busy = (isinstance(code, int) and (code >= 500 or code in (408, 409, 429))) or any(
            word in kind.lower() for word in ("server", "rate", "overloaded", "timeout")
        )
        return (TransportFailed if busy else ServerRefused)(f"the server answered an error: {message}")
    return UnitFailed("the server's answer is not a chat completion", text[:2000])


def _failure_of(exc: BaseException) -> BaseException:
    """What a failed pipeline means for the requests it did not answer."""
    cause: BaseException | None = exc
    while cause is not None:  # Ray wraps a worker's exception; a refused redirect is the workers'
        if isinstance(cause, ServerRefused):
            return ServerRefused(str(cause))
        cause = cause.__cause__
    text = " ".join(str(exc).split())
    if "redirected to" in text:
        start = text.rfind("http", 0, text.find("redirected to"))
        return ServerRefused(text[max(start, 0) :].split("; clala follows")[0] + "; clala follows no redirect")
    return TransportFailed(f"the Ray pipeline failed: {text[-300:]}")


class RayBackend(WaveBackend):
    """Chat completions a wave at a time from a Ray Data LLM pipeline (see the module's doc)."""

    reports_per_wave = REPORTS_PER_WAVE

    def __init__(self, dialect: str, settings: RaySettings):
        super().__init__(settings.model, dialect, transport_retries=settings.transport_retries)
        self.settings = settings
        # vLLM engines: one processor for the run (building it reads the model's config); the
        # HTTP processors are made for each wave, with as many workers as its rows can keep busy.
        self._engine = self._engine_processor() if settings.engine is not None else None

    def _engine_processor(self) -> Any:
        from ray.data.llm import build_processor

        config = engine_processor_config(self.settings)
        return build_processor(config, preprocess=_engine_request, postprocess=_engine_answer)

    def _http_processor(self, url: str, workers: int) -> Any:
        """Ray's HTTP request processor for one server: a fixed pool of `workers` (an autoscaling
        pool starts at one and grows slowly), each taking ROWS_PER_TASK rows at a time."""
        from ray.data.llm import HttpRequestProcessorConfig, build_processor

        config = HttpRequestProcessorConfig(
            url=f"{url.rstrip('/')}/chat/completions",
            headers={**self.settings.headers},
            concurrency=(workers, workers),
            batch_size=ROWS_PER_TASK,
            max_retries=self.settings.transport_retries,
            base_retry_wait_time_in_s=0.5,
            session_factory=refuse_redirects(_aiohttp_session),
            http_request_stage={"num_cpus": HTTP_WORKER_CPUS},
        )
        light = {"num_cpus": HTTP_WORKER_CPUS}
        return build_processor(
            config,
            preprocess=_payload,
            postprocess=_http_answer,
            preprocess_map_kwargs=light,
            postprocess_map_kwargs=light,
        )

    def _pipeline(self, bodies: dict[str, bytes]) -> Any:
        """The wave as a dataset through the processors: the engines', or one share per server.
        A share is cut in blocks of about ROWS_PER_TASK rows, so every worker gets some."""
        import ray

        rows = [{"rid": rid, "body": body.decode("utf-8")} for rid, body in bodies.items()]
        if self._engine is not None:
            return self._engine(ray.data.from_items(rows))
        urls = self.settings.base_urls
        per_server = max(1, self.settings.workers // len(urls))
        outputs = []
        for i, url in enumerate(urls):
            share = rows[i :: len(urls)]
            if not share:
                continue
            blocks = min(-(-len(share) // ROWS_PER_TASK), 16 * per_server)
            dataset = ray.data.from_items(share, override_num_blocks=blocks)
            outputs.append(self._http_processor(url, min(per_server, blocks))(dataset))
        return outputs[0].union(*outputs[1:]) if len(outputs) > 1 else outputs[0]

    async def _answer(self, wave: list[tuple[bytes, asyncio.Future]]) -> None:
        """Run the wave's pipeline in a thread; each row's answer goes to its requests as it
        streams out (so it is cached at once), and what the pipeline did not answer fails."""
        loop = asyncio.get_running_loop()
        waiting: dict[str, list[asyncio.Future]] = {}
        bodies: dict[str, bytes] = {}
        for body, future in wave:
            rid = request_id(body)
            waiting.setdefault(rid, []).append(future)
            bodies[rid] = body

        def hand_over(rid: str, outcome: dict | BaseException) -> None:
            for future in waiting.pop(rid, []):
                settle(future, outcome)

        def run() -> None:
            for row in self._pipeline(bodies).iter_rows():
                loop.call_soon_threadsafe(hand_over, row["rid"], answer_of(row["answer"]))

        failure: BaseException = TransportFailed("the Ray pipeline gave no answer for this request")
        try:
            await asyncio.to_thread(run)
        except asyncio.CancelledError:
            for futures in waiting.values():
                for future in futures:
                    future.cancel()
            raise
        except Exception as exc:  # the pipeline failed: what it did not answer fails so
            failure = _failure_of(exc)
        await asyncio.sleep(0)  # the answers handed over from the thread first
        for rid in list(waiting):
            hand_over(rid, failure)


def _quiet_ray_data() -> None:
    """No progress bars or per-operator logs from Ray Data on clala's terminal."""
    import logging

    from ray.data import DataContext

    context = DataContext.get_current()
    context.enable_progress_bars = False
    context.print_on_execution_start = False
    logging.getLogger("ray.data").setLevel(logging.WARNING)


@contextmanager
def open_ray_backend(options: BackendOptions, allow_remote: bool) -> Iterator[RayBackend]:
    """The Ray backend of `--backend ray`: Ray joined (or started on this machine, and stopped
    afterwards), the processors built. Reports go to the cluster's nodes and the servers named, so
    a cluster or a server not on this machine needs --allow-remote."""
    if importlib.util.find_spec("ray") is None or importlib.util.find_spec("ray.data.llm") is None:
        raise ClalaError("--backend ray needs Ray Data: pip install 'clala[ray]'")
    if not options.model:
        raise ClalaError("--backend ray needs --model (the servers' model name, or the model vLLM loads)")
    engine = read_engine_config(options.engine_config) if options.engine_config else None
    if engine is None and not options.base_urls:
        raise ClalaError(
            "--backend ray needs --base-url (OpenAI-compatible servers) or --engine-config (vLLM engines on the "
            "cluster's GPUs)"
        )
    if engine is not None and options.base_urls:
        raise ClalaError("--backend ray takes --base-url or --engine-config, not both")
    if engine is not None and importlib.util.find_spec("vllm") is None:
        raise ClalaError(
            "--engine-config runs vLLM engines, and vllm is not installed here: pip install 'clala[ray,vllm]' "
            "on the driver and on every GPU node of the cluster"
        )
    check_patient_data_policy(list(options.base_urls), allow_remote)
    address = options.ray_address
    if address and address not in ("auto", "local") and not allow_remote and not is_loopback(f"ray://{address}"):
        raise ClalaError(
            f"--ray-address {address} is not on this machine; reports are patient data, so sending them to a "
            "cluster needs --allow-remote"
        )
    api_key = api_key_from_env(options.api_key_env)
    dialect = "json_schema" if options.structured_output == "auto" else options.structured_output
    settings = RaySettings(
        model=options.model,
        address=address,
        base_urls=tuple(options.base_urls),
        api_key=api_key,
        engine=engine,
        workers=getattr(options, "concurrency", 4),
        transport_retries=options.transport_retries,
        headers={"Authorization": f"Bearer {api_key}"} if api_key else {},
    )
    import ray

    started = not ray.is_initialized()
    if started:
        ray.init(address=address, include_dashboard=False, log_to_driver=False, configure_logging=False)
    try:
        _quiet_ray_data()
        yield RayBackend(dialect, settings)
    finally:
        if started:
            ray.shutdown()
