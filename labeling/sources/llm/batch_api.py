"""`--backend openai-batch`: waves of requests answered by the OpenAI Batch API (half price, within
24 hours).

A wave's requests become a JSONL file (one `{"custom_id", "method", "url", "body"}` line each, the
body the exact JSON the online path would send), uploaded (`POST /files`, purpose `batch`) and
submitted as a batch job (`POST /batches`); the job is polled (`GET /batches/{id}`) until it ends,
then its output and error files are read and each answer handed to its request by custom_id. A
line the server answered with an error becomes the online path's exception for that answer
(TransportFailed for 408/409/429/5xx or no response, ServerRefused for another 4xx, UnitFailed for
a 200 that is not a chat completion), so a run's failed, pending and `--resume` logic applies.

Paying twice is what must not happen: every job is written to the run (its `batch_jobs`
parameter: the input file, the batch id and the request ids it covers) before it is waited for,
the input file even before the batch is created. A resumed run asks the same requests (their ids
are hashes of their bodies), finds the job that covers them and collects it; a job whose batch id
was never written (killed while creating it) is found by its input file among the server's
batches. A batch that ended failed, expired or cancelled stops the run as incomplete, with a
one-line reason; `--resume` submits what it did not answer again.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol
from urllib.parse import urljoin

from labeling.core.errors import ClalaError
from labeling.sources.llm.backends import (
    ServerRefused,
    TransportFailed,
    UnitFailed,
    _retry_delay,
    api_key_from_env,
    check_patient_data_policy,
    redirect_refused,
)
from labeling.sources.llm.waves import WaveBackend, request_id

if TYPE_CHECKING:
    from labeling.sources.llm.options import BackendOptions
    from labeling.store.store import Store

BATCH_URL = "/v1/chat/completions"  # the `url` of each line and the batch's `endpoint`
COMPLETION_WINDOW = "24h"
# OpenAI's limits on one batch: 50,000 requests and a 200 MB input file.
MAX_REQUESTS_PER_JOB = 50_000
MAX_BYTES_PER_JOB = 190_000_000
ENDED_UNANSWERED = ("failed", "expired", "cancelled")  # ends with requests left unanswered
FINISHED = ("completed", *ENDED_UNANSWERED)
# Polls start quick (a small batch may be done in a minute) and slow down to --poll-interval.
FIRST_POLL_SECONDS = 1.0
# Pages of `GET /batches` searched for a job whose batch id was not written (killed creating it).
LISTED_PAGES = 5


@dataclass(frozen=True)
class BatchApiSettings:
    """Where the Batch API is and how to use it."""

    base_url: str
    api_key: str | None = None
    poll_interval: float = 60.0  # seconds between polls once they have slowed down
    timeout: float = 120.0  # seconds per HTTP request (an upload of a large file included)
    transport_retries: int = 4


class BatchJournal(Protocol):
    """Where a run's batch jobs are written, so that a resumed run collects them."""

    def load(self) -> list[dict[str, Any]]: ...

    def save(self, jobs: list[dict[str, Any]]) -> None: ...


class MemoryJournal:
    """Jobs kept in memory only (a backend used outside a run)."""

    def __init__(self) -> None:
        self.jobs: list[dict[str, Any]] = []

    def load(self) -> list[dict[str, Any]]:
        return [dict(job) for job in self.jobs]

    def save(self, jobs: list[dict[str, Any]]) -> None:
        self.jobs = [dict(job) for job in jobs]


class RunBatchJournal:
    """A run's batch jobs, in its parameters (`batch_jobs`, shown by `clala runs show`)."""

    def __init__(self, store: Store, run_id: int):
        self.store, self.run_id = store, run_id

    def load(self) -> list[dict[str, Any]]:
        return list(self.store.run(self.run_id).params.get("batch_jobs") or [])

    def save(self, jobs: list[dict[str, Any]]) -> None:
        params = self.store.run(self.run_id).params
        self.store.set_run_params(self.run_id, {**params, "batch_jobs": jobs})


class BatchApiBackend(WaveBackend):
    """Chat completions a wave at a time through the OpenAI Batch API (see the module's doc)."""

    def __init__(self, model: str, dialect: str, settings: BatchApiSettings):
        super().__init__(model, dialect, timeout=settings.timeout, transport_retries=settings.transport_retries)
        self.settings = settings
        self.base_url = settings.base_url.rstrip("/")
        self.journal: BatchJournal = MemoryJournal()  # a run gives its own (RunBatchJournal)
        self._http: Any = None  # an aiohttp session without the JSON content type (uploads are multipart)
        self._answered: dict[str, dict | BaseException] = {}  # of collected jobs, not yet asked for
        self._collected: set[str] = set()  # batch ids whose answers were handed over this session

    async def answer_wave(self, bodies: list[bytes]) -> list[dict | BaseException]:
        by_id = {request_id(body): body for body in bodies}
        outcomes = {rid: self._answered.pop(rid) for rid in list(by_id) if rid in self._answered}
        # jobs written earlier (a run killed while they ran) that asked some of these requests
        earlier = [job for job in self.journal.load() if _open(job) and not by_id.keys().isdisjoint(job["requests"])]
        covered = {rid for job in earlier for rid in job["requests"]}
        new = [rid for rid in by_id if rid not in outcomes and rid not in covered]
        jobs = earlier + [await self._submit({rid: by_id[rid] for rid in chunk}) for chunk in _chunks(new, by_id)]
        collected = await asyncio.gather(*(self._collect(job) for job in jobs), return_exceptions=True)
        for job, job_outcomes in zip(jobs, collected):
            if isinstance(job_outcomes, BaseException):  # not collected (the server went away): its requests fail so
                if not isinstance(job_outcomes, Exception):
                    raise job_outcomes
                outcomes.update({rid: job_outcomes for rid in job["requests"] if rid in by_id})
                continue
            for rid, outcome in job_outcomes.items():
                (outcomes if rid in by_id else self._answered)[rid] = outcome  # others: a later wave's
        missing = TransportFailed("the batch job has no answer for this request")
        return [outcomes[rid] if rid in outcomes else missing for rid in map(request_id, bodies)]

    async def _submit(self, bodies: dict[str, bytes]) -> dict[str, Any]:
        """Upload a job's requests and create its batch, writing the job to the journal first with
        its input file (a kill before the batch id is written is found again by that file)."""
        lines = b"".join(
            b'{"custom_id": "' + rid.encode() + b'", "method": "POST", "url": "' + BATCH_URL.encode() + b'", "body": '
            + body + b"}\n"
            for rid, body in bodies.items()
        )  # fmt: skip
        uploaded = await self._call("POST", "/files", upload=lines)
        job = {
            "input_file_id": uploaded["id"],
            "batch_id": None,
            "requests": list(bodies),
            "submitted_at": time.strftime("%Y-%m-%dT%H:%M:%S"),
            "state": "uploaded",
        }
        self._write(job)
        return await self._create_batch(job)

    async def _create_batch(self, job: dict[str, Any]) -> dict[str, Any]:
        batch = await self._call(
            "POST",
            "/batches",
            payload={
                "input_file_id": job["input_file_id"],
                "endpoint": BATCH_URL,
                "completion_window": COMPLETION_WINDOW,
                "metadata": {"made_by": "clala label"},
            },
        )
        job.update(batch_id=batch["id"], state="submitted")
        self._write(job)
        return job

    async def _batch_of(self, job: dict[str, Any]) -> dict[str, Any]:
        """The job's batch; for a job written before its batch id, the batch made from its input
        file (created now if there is none: the kill came before the batch was)."""
        if job["batch_id"] is None:
            after: str | None = None
            for _ in range(LISTED_PAGES):
                page = await self._call("GET", "/batches?limit=100" + (f"&after={after}" if after else ""))
                found = next(
                    (b for b in page.get("data") or [] if b.get("input_file_id") == job["input_file_id"]), None
                )
                if found:
                    job.update(batch_id=found["id"], state="submitted")
                    self._write(job)
                    return found
                after = page.get("last_id")
                if not page.get("has_more") or not after:
                    break
            job = await self._create_batch(job)
        return await self._call("GET", f"/batches/{job['batch_id']}")

    async def _collect(self, job: dict[str, Any]) -> dict[str, dict | BaseException]:
        """Wait for a job's batch to end; each of its requests' answer or failure."""
        batch = await self._batch_of(job)
        wait = min(FIRST_POLL_SECONDS, self.settings.poll_interval)
        while batch.get("status") not in FINISHED:
            self._tell(batch)
            await asyncio.sleep(wait)
            wait = min(wait * 2, self.settings.poll_interval)
            batch = await self._call("GET", f"/batches/{job['batch_id']}")
        self._tell(batch)
        outcomes: dict[str, dict | BaseException] = {}
        for file_id in (batch.get("output_file_id"), batch.get("error_file_id")):
            if file_id:
                content = await self._call("GET", f"/files/{file_id}/content", raw=True)
                for line in content.splitlines():
                    if line.strip():
                        entry = json.loads(line)
                        outcomes[entry.get("custom_id")] = _line_outcome(entry, batch["id"])
        status = batch.get("status")
        if status in ENDED_UNANSWERED:
            unanswered = [rid for rid in job["requests"] if not isinstance(outcomes.get(rid), dict)]
            why = ServerRefused(_ended_reason(batch, len(unanswered), len(job["requests"])))
            outcomes.update(dict.fromkeys(unanswered, why))
            job["state"] = "ended"  # a resume submits its unanswered requests again
            self._write(job)
        self._collected.add(batch["id"])
        return outcomes

    def _tell(self, batch: dict[str, Any]) -> None:
        if self.on_status is not None:
            counts = batch.get("request_counts") or {}
            self.on_status(
                f"batch {batch.get('id')} {batch.get('status')}: {counts.get('completed', 0):,} of "
                f"{counts.get('total', 0):,} answered"
            )

    def _write(self, job: dict[str, Any]) -> None:
        """Write `job` (new, or changed) to the journal."""
        jobs = self.journal.load()
        same = [i for i, known in enumerate(jobs) if known["input_file_id"] == job["input_file_id"]]
        if same:
            jobs[same[0]] = job
        else:
            jobs.append(job)
        self.journal.save(jobs)

    async def _call(
        self, method: str, path: str, *, payload: dict | None = None, upload: bytes | None = None, raw: bool = False
    ) -> Any:
        """One Batch API request with the online path's transport retries; its JSON (or bytes).
        A redirect is ServerRefused naming its target, as online; so is any other 4xx."""
        import aiohttp

        if self._http is None:
            key = {"Authorization": f"Bearer {self.settings.api_key}"} if self.settings.api_key else {}
            self._http = aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(total=self.settings.timeout),
                headers=key,
                skip_auto_headers=("User-Agent",),
            )
        url = self.base_url + path
        headers: Any = None
        why = ""
        for attempt in range(self.settings.transport_retries + 1):
            data: Any = None
            if upload is not None:  # a FormData is used up by one request
                data = aiohttp.FormData()
                data.add_field("purpose", "batch")
                data.add_field("file", upload, filename="clala-batch.jsonl", content_type="application/jsonl")
            try:
                async with self._http.request(method, url, json=payload, data=data, allow_redirects=False) as response:
                    status, headers, body = response.status, response.headers, await response.read()
            except TimeoutError:
                why = f"{method} {path}: request timed out"
            except (aiohttp.ClientError, OSError):
                why = f"{method} {path}: could not connect to the server"
            else:
                if 300 <= status < 400:
                    location = headers.get("location")
                    target = urljoin(url, location) if location else "(no Location header)"
                    raise ServerRefused(redirect_refused(url, target, status))
                if status < 300:
                    return body if raw else json.loads(body)
                why = f"HTTP {status} from {method} {path}: {_error_message(body)}"
                if not (status in (408, 409, 429) or status >= 500):
                    raise ServerRefused(why)
            if attempt < self.settings.transport_retries:
                await asyncio.sleep(_retry_delay(attempt, headers))
        raise TransportFailed(why)

    async def close(self) -> None:
        """Mark the jobs whose answers this session handed over as collected, so that a later
        resume asks their failed requests anew instead of collecting the same answers again.
        (A run killed before this collects them again: the answers it had not cached yet.)"""
        await super().close()
        if self._collected:
            jobs = self.journal.load()
            for job in jobs:
                if job.get("batch_id") in self._collected and job.get("state") == "submitted":
                    job["state"] = "collected"
            self.journal.save(jobs)
            self._collected.clear()
        if self._http is not None:
            await self._http.close()
            self._http = None


def _open(job: dict[str, Any]) -> bool:
    """A job whose answers have not been handed over to a finished session."""
    return job.get("state") in ("uploaded", "submitted")


def _chunks(request_ids: list[str], bodies: dict[str, bytes]) -> Iterable[list[str]]:
    """The requests in jobs within the Batch API's limits (requests and bytes per file)."""
    chunk: list[str] = []
    size = 0
    for rid in request_ids:
        line = len(bodies[rid]) + 120  # the body and its line's other fields
        if chunk and (len(chunk) == MAX_REQUESTS_PER_JOB or size + line > MAX_BYTES_PER_JOB):
            yield chunk
            chunk, size = [], 0
        chunk.append(rid)
        size += line
    if chunk:
        yield chunk


def _error_message(body: Any) -> str:
    """The `error.message` of an OpenAI error answer (bytes or parsed), else its start."""
    if isinstance(body, bytes):
        try:
            body = json.loads(body)
        except ValueError:
            return body[:200].decode("utf-8", "replace")
    error = body.get("error") if isinstance(body, dict) else None
    if isinstance(error, dict):
        return str(error.get("message") or error.get("code") or error)
    return json.dumps(body)[:200]


def _line_outcome(entry: dict[str, Any], batch_id: str) -> dict | BaseException:
    """One output or error line: the chat completion, or the online path's failure for it."""
    response = entry.get("response")
    if not isinstance(response, dict):
        response = {}
    status = response.get("status_code")
    body = response.get("body")
    if status == 200 and not entry.get("error"):
        if isinstance(body, dict) and isinstance(body.get("choices"), list):
            return body
        return UnitFailed("the server's answer is not a chat completion", json.dumps(body)[:2000])
    error = entry.get("error")
    message = _error_message({"error": error}) if error else _error_message(body)
    why = f"{'HTTP ' + str(status) if status else 'no answer'} in batch {batch_id}: {message}"
    if isinstance(status, int) and 400 <= status < 500 and status not in (408, 409, 429):
        return ServerRefused(why)
    return TransportFailed(why)


def _ended_reason(batch: dict[str, Any], unanswered: int, total: int) -> str:
    """One line: why a batch ended with requests unanswered, and what to do."""
    status = batch.get("status")
    errors = (batch.get("errors") or {}).get("data") or []
    detail = f" ({_error_message({'error': errors[0]})})" if errors else ""
    return (
        f"batch {batch.get('id')} {status}{detail}: {unanswered:,} of {total:,} requests unanswered; "
        "--resume submits them again"
    )


def open_batch_backend(options: BackendOptions, allow_remote: bool) -> BatchApiBackend:
    """The Batch API backend of `--backend openai-batch` (one --base-url; the API key from the
    environment only; reports leave this machine only with --allow-remote)."""
    if len(options.base_urls) != 1 or not options.model:
        raise ClalaError(
            "--backend openai-batch needs --model and one --base-url (the Batch API's, e.g. https://api.openai.com/v1)"
        )
    check_patient_data_policy(options.base_urls, allow_remote)
    settings = BatchApiSettings(
        base_url=options.base_urls[0],
        api_key=api_key_from_env(options.api_key_env),
        poll_interval=options.poll_interval,
        timeout=options.timeout,
        transport_retries=options.transport_retries,
    )
    dialect = "json_schema" if options.structured_output == "auto" else options.structured_output
    return BatchApiBackend(options.model, dialect, settings)
