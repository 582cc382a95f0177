"""The LLM label source: a run over reports, resumable, cached, concurrent.

A run is created with one `work` row per report. Reports are processed in batches: the batch's
units are looked up in the cache, the rest are asked of the backend concurrently, and then, in
one transaction, the new answers are cached and every report of the batch is settled: its
labels written and its work marked done, or its failure recorded, or (server unreachable) left
pending. A killed run resumes with `--resume RUN` from the reports not yet done; the answers
already cached are not asked again, so the labels equal those of an uninterrupted run.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from labeling.core.errors import ClalaError
from labeling.sources.llm.backends import (
    BACKENDS,
    DIALECTS,
    OpenAICompatibleBackend,
    ServerRefused,
    TransportFailed,
    UnitFailed,
    VllmBackend,
    api_key_from_env,
    check_patient_data_policy,
    detect_dialect,
)
from labeling.sources.llm.local_server import LocalLlamaServer
from labeling.sources.llm.resolver import resolve_unit
from labeling.sources.llm.units import UNIT_KINDS, Unit, build_units, cache_key
from labeling.store.store import Store
from prompts.render import DEFAULT_PROMPT, load_prompt
from schemas.labels import merge_labels
from schemas.llm_output import build_output_model, output_json_schema
from schemas.runs import RunKind, RunSpec, RunStatus, run_name_problem
from schemas.vocabulary import load_vocabulary


class BackendOptions(BaseModel):
    """Which LLM server to use and how to reach it (labeling, report writing, judging)."""

    model_config = ConfigDict(extra="forbid")
    backend: str = "local"
    base_urls: list[str] = []
    model: str | None = None
    model_path: str | None = None
    api_key_env: str | None = "OPENAI_API_KEY"
    structured_output: str = "auto"
    transport_retries: int = Field(4, ge=0, le=20)
    timeout: float = Field(120.0, gt=0)
    n_ctx: int = 4096


class LabelOptions(BackendOptions):
    """Everything that defines an LLM run; stored with the run (no secrets) so it can resume."""

    unit: str = "sentence"
    context: int = Field(0, ge=0, le=5)
    prompt: str = DEFAULT_PROMPT
    samples: int = Field(1, ge=1, le=20)
    temperature: float | None = None
    max_tokens: int | None = None
    seed: int | None = 0
    max_retries: int = Field(2, ge=0, le=10)
    concurrency: int = Field(4, ge=1, le=512)
    batch_size: int = Field(16, ge=1)
    use_cache: bool = True
    vocabulary: str | None = None
    enable: list[str] = []
    # which reports
    dataset: str | None = None
    report_ids: list[str] = []
    limit: int | None = None

    def decoding(self, dialect: str) -> dict[str, Any]:
        temperature = self.temperature if self.temperature is not None else (0.7 if self.samples > 1 else 0.0)
        max_tokens = self.max_tokens or (2048 if self.unit == "report" else 384)
        return {
            "temperature": temperature,
            "max_tokens": max_tokens,
            "seed": self.seed,
            "samples": self.samples,
            "structured_output": dialect,
            "unit": self.unit,
            "context": self.context,
        }


@dataclass
class RunSummary:
    run_id: int
    name: str
    status: RunStatus
    reports: int = 0
    reports_done: int = 0
    reports_failed: int = 0
    reports_pending: int = 0
    units: int = 0
    model_calls: int = 0
    cache_hits: int = 0
    unit_failures: int = 0
    labels: int = 0
    rejected: dict[str, int] = field(default_factory=dict)
    prompt_tokens: int = 0
    completion_tokens: int = 0
    seconds: float = 0.0
    stopped_because: str | None = None


@dataclass
class DryRun:
    reports: int
    sentences: int
    units: int
    cache_hits: int
    calls_needed: int
    est_prompt_tokens: int
    est_completion_tokens: int


@dataclass
class PreparedBatch:
    batch: list[int]
    units: dict[str, Unit]
    report_units: dict[int, list[str]]
    texts: dict[int, str]
    keys: dict[str, list[str]]
    cached: dict[str, dict[str, Any]]
    todo: list[tuple[str, int]]
    calls: list[asyncio.Future]


def select_reports(store: Store, options: LabelOptions) -> list[int]:
    rows = store.con.execute(
        """SELECT report_key, report_id FROM current_reports
           WHERE (? IS NULL OR dataset = ?) AND (len(?) = 0 OR list_contains(?, report_id))
           ORDER BY report_key""",
        [options.dataset, options.dataset, options.report_ids, options.report_ids],
    ).fetchall()
    if options.report_ids:
        missing = sorted(set(options.report_ids) - {r[1] for r in rows})
        if missing:
            raise ClalaError(f"{store.path}: no report with id {', '.join(missing[:5])}")
    keys = [r[0] for r in rows]
    if options.limit is not None:
        keys = keys[: options.limit]
    if not keys:
        raise ClalaError(f"{store.path}: no reports to label (ingest some first, or check --dataset)")
    return keys


@contextmanager
def open_backend(options: BackendOptions, allow_remote: bool) -> Iterator[tuple[Any, str]]:
    """(backend, model id) for the options; the local server lives as long as the context."""
    if options.backend not in BACKENDS:
        raise ClalaError(f"--backend must be one of {', '.join(BACKENDS)}")
    if options.structured_output not in DIALECTS:
        raise ClalaError(f"--structured-output must be one of {', '.join(DIALECTS)}")
    if options.backend == "vllm":
        if not options.model:
            raise ClalaError("--backend vllm needs --model (a Hugging Face id or a local folder)")
        yield VllmBackend(options.model), options.model
        return
    if options.backend == "local":
        with LocalLlamaServer(options.model_path, n_ctx=options.n_ctx) as server:
            dialect = "llama_cpp" if options.structured_output == "auto" else options.structured_output
            yield (
                OpenAICompatibleBackend(
                    [server.base_url], server.model_name, dialect, None, options.timeout, options.transport_retries
                ),
                server.model_name,
            )
        return
    if not options.base_urls or not options.model:
        raise ClalaError("--backend openai needs --base-url and --model")
    check_patient_data_policy(options.base_urls, allow_remote)
    api_key = api_key_from_env(options.api_key_env)
    dialect = options.structured_output
    if dialect == "auto":
        dialect = detect_dialect(options.base_urls[0], api_key)
    yield (
        OpenAICompatibleBackend(
            options.base_urls, options.model, dialect, api_key, options.timeout, options.transport_retries
        ),
        options.model,
    )


class LabelRun:
    """One LLM run being executed (new or resumed)."""

    def __init__(
        self,
        store: Store,
        run_id: int,
        options: LabelOptions,
        backend: Any,
        model: str,
        on_progress: Callable[[RunSummary, int], None] | None = None,
    ):
        self.store, self.run_id, self.options, self.backend, self.model = store, run_id, options, backend, model
        self.vocabulary = load_vocabulary(options.vocabulary, enable=options.enable)
        self.prompt = load_prompt(options.prompt, self.vocabulary)
        self.answer_model = build_output_model(self.vocabulary)
        self.schema = output_json_schema(self.vocabulary)
        self.decoding = options.decoding(backend.dialect)
        self.on_progress = on_progress
        run = store.run(run_id)
        self.summary = RunSummary(run_id, run.name, RunStatus.running)
        self.failed_units: dict[str, UnitFailed] = {}
        self.inflight: dict[str, asyncio.Future] = {}  # cache key -> call, shared by overlapping batches
        self.settled: set[str] = set()  # cache keys whose call was already accounted for

    def keys_of(self, unit: Unit) -> list[str]:
        return [
            cache_key(unit.identity, self.model, self.prompt.sha256, self.vocabulary.version, self.decoding, s)
            for s in range(self.options.samples)
        ]

    async def _ask(self, unit: Unit, sample: int, semaphore: asyncio.Semaphore) -> Any:
        async with semaphore:
            try:
                return await self.backend.ask(
                    self.prompt.messages(unit.text, unit.context),
                    self.answer_model,
                    self.schema,
                    temperature=self.decoding["temperature"],
                    max_tokens=self.decoding["max_tokens"],
                    reasks=self.options.max_retries,
                    seed=None if self.decoding["seed"] is None else self.decoding["seed"] + sample,
                )
            except (UnitFailed, TransportFailed, ServerRefused) as exc:
                return exc

    async def execute(self) -> RunSummary:
        started = time.monotonic()
        pending = self.store.work(self.run_id, ("pending",))
        self.summary.reports = sum(self.store.work_counts(self.run_id).values())
        semaphore = asyncio.Semaphore(self.options.concurrency)
        size = max(self.options.batch_size, self.options.concurrency)  # a batch keeps every slot busy
        batches = [pending[i : i + size] for i in range(0, len(pending), size)]
        # The next batch's calls start before this batch is settled, so the server is not left
        # idle while the slowest call of a batch finishes and its batch is committed.
        prepared = deque([self._prepare(batches[0], semaphore)] if batches else [])
        for i, batch in enumerate(batches):
            if i + 1 < len(batches):
                prepared.append(self._prepare(batches[i + 1], semaphore))
            current = prepared.popleft()
            stop = self._settle(current, await asyncio.gather(*current.calls))
            self.summary.seconds = time.monotonic() - started
            if self.on_progress:
                self.on_progress(self.summary, len(batch))
            if stop:
                self.summary.stopped_because = stop
                break
        leftover = [call for batch in prepared for call in batch.calls]
        for call in leftover:
            call.cancel()
        await asyncio.gather(*leftover, return_exceptions=True)
        counts = self.store.work_counts(self.run_id)
        self.summary.reports_done = counts.get("done", 0)
        self.summary.reports_failed = counts.get("failed", 0)
        self.summary.reports_pending = counts.get("pending", 0)
        self.summary.status = RunStatus.incomplete if self.summary.reports_pending else RunStatus.complete
        self.store.set_run_status(self.run_id, self.summary.status)
        self.summary.rejected = self.store.rejection_counts(self.run_id)
        self.summary.seconds = time.monotonic() - started
        return self.summary

    def _prepare(self, batch: list[int], semaphore: asyncio.Semaphore) -> PreparedBatch:
        """Read a batch's units and cached answers and start the calls it still needs."""
        units, report_units, texts = build_units(self.store, batch, self.options.unit, self.options.context)
        keys = {identity: self.keys_of(unit) for identity, unit in units.items()}
        all_keys = [k for ks in keys.values() for k in ks]
        cached = self.store.cache_get(all_keys, None if self.options.use_cache else self.run_id)
        todo = [
            (identity, sample)
            for identity, ks in keys.items()
            for sample, k in enumerate(ks)
            if k not in cached and identity not in self.failed_units
        ]
        calls = []
        for identity, sample in todo:
            key = keys[identity][sample]
            if key not in self.inflight:
                self.inflight[key] = asyncio.ensure_future(self._ask(units[identity], sample, semaphore))
                self.summary.model_calls += 1
            calls.append(self.inflight[key])
        self.summary.units += len(units)
        self.summary.cache_hits += len(all_keys) - len(todo)
        return PreparedBatch(batch, units, report_units, texts, keys, cached, todo, calls)

    def _settle(self, prepared: PreparedBatch, outcomes: list[Any]) -> str | None:
        """Commit a batch whose calls have all returned; a reason to stop, or None."""
        batch, units, report_units, texts = prepared.batch, prepared.units, prepared.report_units, prepared.texts
        keys, cached = prepared.keys, prepared.cached
        fresh, failures, transport, refused = [], [], {}, None
        prompt_tokens = completion_tokens = 0
        for (identity, sample), outcome in zip(prepared.todo, outcomes):
            key = keys[identity][sample]
            first_time = key not in self.settled  # a call shared with the previous batch counts once
            self.settled.add(key)
            self.inflight.pop(key, None)
            if isinstance(outcome, (UnitFailed, TransportFailed, ServerRefused)):
                if isinstance(outcome, UnitFailed):
                    if first_time:
                        prompt_tokens += outcome.prompt_tokens
                        completion_tokens += outcome.completion_tokens
                    if identity not in self.failed_units:
                        self.failed_units[identity] = outcome
                        failures.append(
                            {
                                "unit_key": keys[identity][sample],
                                "report_key": units[identity].occurrences[0].report_key,
                                "raw_output": outcome.raw,
                                "error": outcome.error,
                            }
                        )
                elif isinstance(outcome, ServerRefused):
                    refused = str(outcome)
                    transport[identity] = str(outcome)
                else:
                    transport[identity] = str(outcome)
                continue
            response = {**outcome.parsed.model_dump(), "mean_logprob": outcome.mean_logprob}
            cached[key] = {"response": response}
            if first_time:
                prompt_tokens += outcome.prompt_tokens
                completion_tokens += outcome.completion_tokens
                fresh.append(
                    {
                        "cache_key": key,
                        "model": self.model,
                        "response": response,
                        "prompt_tokens": outcome.prompt_tokens,
                        "completion_tokens": outcome.completion_tokens,
                    }
                )

        with self.store.transaction():
            self.store.cache_put(fresh, self.run_id, replace=not self.options.use_cache)
            self.store.add_failures(self.run_id, failures)
            done, failed, waiting = [], [], []
            rows: list[dict[str, Any]] = []
            rejections: list[dict[str, Any]] = []
            for report_key in batch:
                identities = report_units[report_key]
                if any(i in transport for i in identities):
                    waiting.append(report_key)
                    continue
                if any(i in self.failed_units for i in identities):
                    failed.append(report_key)
                    continue
                labels = []
                for identity in identities:
                    samples = [cached[k]["response"] for k in keys[identity] if k in cached]
                    occurrence = next(o for o in units[identity].occurrences if o.report_key == report_key)
                    unit_labels, unit_rejections = resolve_unit(samples, occurrence, texts[report_key], self.vocabulary)
                    labels.extend(unit_labels)
                    rejections.extend(
                        {"unit_key": keys[identity][0], "report_key": report_key, **r.__dict__} for r in unit_rejections
                    )
                for label in merge_labels(labels):
                    rows.append(
                        {
                            "report_key": report_key,
                            "region": label.region,
                            "finding": label.finding,
                            "status": label.status.value,
                            "severity": label.severity.value if label.severity else None,
                            "temporal": label.temporal.value if label.temporal else None,
                            "evidence_start": label.evidence.start,
                            "evidence_end": label.evidence.end,
                            "evidence_text": label.evidence.text,
                            "confidence": label.confidence,
                        }
                    )
                done.append(report_key)
            if rows:
                self.summary.labels += self.store.write_labels(self.run_id, {k: [r[k] for r in rows] for k in rows[0]})
            self.store.add_rejections(self.run_id, rejections)
            self.store.set_work(self.run_id, done, "done")
            self.store.set_work(self.run_id, failed, "failed", "a unit failed validation; see `clala failures`")
            self.store.set_work(self.run_id, waiting, "pending", next(iter(transport.values()), None))
            self.store.add_run_tokens(self.run_id, prompt_tokens, completion_tokens)
        self.summary.unit_failures += len(failures)
        self.summary.prompt_tokens += prompt_tokens
        self.summary.completion_tokens += completion_tokens
        if refused:
            return f"the server refused the request ({refused}); fix it and resume"
        if prepared.todo and all(identity in transport for identity, _ in prepared.todo):
            return f"the server is unreachable ({next(iter(transport.values()))}); resume when it is back"
        return None


def start_run(store: Store, name: str, options: LabelOptions, model: str, dialect: str, reports: list[int]) -> int:
    vocabulary = load_vocabulary(options.vocabulary, enable=options.enable)
    prompt = load_prompt(options.prompt, vocabulary)
    with store.transaction():
        run_id = store.create_run(
            RunSpec(
                name=name,
                kind=RunKind.llm,
                vocabulary_version=vocabulary.version,
                backend=options.backend,
                model=model,
                prompt_name=prompt.name,
                prompt_sha256=prompt.sha256,
                decoding=options.decoding(dialect),
                params=options.model_dump(),
                source=",".join(options.base_urls) or None,
            )
        )
        store.add_work(run_id, reports)
    return run_id


def label_reports(
    db: str | Path,
    name: str | None,
    options: LabelOptions,
    resume: str | None = None,
    allow_remote: bool = False,
    on_progress: Callable[[RunSummary, int], None] | None = None,
    on_start: Callable[[RunSummary], None] | None = None,
) -> RunSummary:
    """Label reports with an LLM as a new run `name`, or finish run `resume`."""
    if options.unit not in UNIT_KINDS:
        raise ClalaError(f"--unit must be one of {', '.join(UNIT_KINDS)}")
    with Store(db) as store:
        if resume:
            run = store.run(resume)
            if run.kind is not RunKind.llm:
                raise ClalaError(f"run {run.name!r} is a {run.kind.value} run, not an LLM run")
            options = LabelOptions.model_validate(run.params)
        else:
            # everything that can be wrong is checked before a server is started
            try:
                load_vocabulary(options.vocabulary, enable=options.enable)
            except (ValueError, FileNotFoundError) as exc:
                raise ClalaError(str(exc)) from None
            if name and run_name_problem(name):
                raise ClalaError(f"--name: {run_name_problem(name)}")
            if name and any(r.name == name for r in store.runs()):
                raise ClalaError(
                    f"{store.path}: a run named {name!r} already exists; choose another --name "
                    f"or finish it with --resume {name}"
                )
            reports = select_reports(store, options)
        with open_backend(options, allow_remote) as (backend, model):
            if resume:
                run_id = run.run_id
                if model != run.model:
                    raise ClalaError(f"run {run.name!r} was made with model {run.model!r}, not {model!r}")
                store.set_run_status(run_id, RunStatus.running)
            else:
                run_name = name or f"{options.backend}-{model}-{time.strftime('%Y%m%d-%H%M%S')}"
                run_id = start_run(store, run_name, options, model, backend.dialect, reports)
            job = LabelRun(store, run_id, options, backend, model, on_progress)
            if on_start:
                job.summary.reports = sum(store.work_counts(run_id).values())
                on_start(job.summary)

            async def main() -> RunSummary:
                try:
                    return await job.execute()
                finally:
                    await backend.close()

            try:
                return asyncio.run(main())
            except KeyboardInterrupt:
                store.set_run_status(run_id, RunStatus.incomplete)
                raise


def dry_run(db: str | Path, options: LabelOptions, model: str | None = None) -> DryRun:
    """Units, unique units, cache hits and estimated tokens, without calling a model.

    Token estimates: about 4 characters per token for the prompt; the completion length is the
    mean of this model's cached answers, or 60 tokens per unit when there are none.
    """
    vocabulary = load_vocabulary(options.vocabulary, enable=options.enable)
    prompt = load_prompt(options.prompt, vocabulary)
    if model is None:
        model = options.model or (Path(options.model_path).name if options.model_path else None)
    if model is None and options.backend == "local":
        from labeling.sources.llm.local_server import default_model_path

        model = default_model_path().name
    dialect = (
        options.structured_output
        if options.structured_output != "auto"
        else ("llama_cpp" if options.backend == "local" else "json_schema")
    )
    decoding = options.decoding(dialect)
    with Store(db, read_only=True) as store:
        reports = select_reports(store, options)
        units, report_units, _ = build_units(store, reports, options.unit, options.context)
        keys = [
            cache_key(u.identity, model or "", prompt.sha256, vocabulary.version, decoding, s)
            for u in units.values()
            for s in range(options.samples)
        ]
        hits = len(store.cache_get(keys)) if options.use_cache else 0
        completion = store.mean_completion_tokens(model or "") or 60.0
    base_chars = sum(len(m["content"]) for m in prompt.messages(""))
    to_call = [u for u in units.values() for _ in range(options.samples)]
    share = (len(keys) - hits) / len(keys) if keys else 0.0
    prompt_chars = sum(base_chars + len(u.text) + len(u.context or "") for u in to_call) * share
    return DryRun(
        reports=len(reports),
        sentences=sum(len(u.occurrences) for u in units.values()),
        units=len(units),
        cache_hits=hits,
        calls_needed=len(keys) - hits,
        est_prompt_tokens=int(prompt_chars / 4),
        est_completion_tokens=int(completion * (len(keys) - hits)),
    )
