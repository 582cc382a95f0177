"""The LLM label source: a run over reports, resumable, cached, concurrent.

A run is created with one `work` row per report. Reports are processed in batches: the batch's
units are looked up in the cache, the rest are asked of the backend concurrently. Each valid
answer is cached (with its tokens) the moment it arrives, so a kill loses at most the calls in
flight. Once a batch's calls have all returned, every report of the batch is settled in one
transaction: its labels written and its work marked done, or its failure recorded, or (server
unreachable) left pending. A killed run resumes with `--resume RUN` from the reports not yet
done; the answers already cached are not asked again, so the labels equal those of an
uninterrupted run. Resuming also retries the reports that failed validation, each at most
MAX_REPORT_ATTEMPTS times in all, and may change how the server is reached (TRANSPORT_OPTIONS),
never what the labels mean. After `give_up_after` transport failures in a row (the backend's
TransportWatch) the calls in flight are cancelled and the run stops. A run ends `complete` when
every report is done, `partial` when some failed validation, and `incomplete` when some are still
pending.

With `--unit sentences` the distinct uncached sentences of a batch are packed `per_call` to a
request (`_ask_pack`), each after a short id; the answer is split by id and each sentence's part
validated, grounded and cached on its own, under the same cache key as when it is asked alone.
A sentence whose part is missing or invalid is re-asked alone (with the usual re-asks); the rest
of the pack is kept.
"""

from __future__ import annotations

import asyncio
import json
import statistics
import time
from collections import deque
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from labeling.core.errors import ClalaError, InputError
from labeling.sources.llm.backends import (
    BACKENDS,
    DIALECTS,
    Answer,
    OpenAICompatibleBackend,
    ServerRefused,
    TransportFailed,
    TransportWatch,
    UnitFailed,
    VllmBackend,
    api_key_from_env,
    check_patient_data_policy,
    detect_dialect,
)
from labeling.sources.llm.batch_api import BatchApiBackend, RunBatchJournal, open_batch_backend
from labeling.sources.llm.local_server import LocalLlamaServer
from labeling.sources.llm.options import (
    TRANSPORT_OPTIONS,
    BackendOptions,
    LabelOptions,
    LlmRequest,
    option_flag,
)
from labeling.sources.llm.resolver import resolve_unit
from labeling.sources.llm.units import UNIT_KINDS, Unit, build_units, cache_key
from labeling.sources.llm.waves import WaveBackend
from labeling.sources.selection import select_reports
from labeling.store.run_records import RunHooks, RunResult, check_new_run_name, resume_or_create
from labeling.store.store import Store
from prompts.render import CHARS_PER_TOKEN, CHARS_PER_TOKEN_AT_LEAST, load_prompt
from schemas.labels import merge_labels
from schemas.llm_output import (
    PackedEnvelope,
    build_output_model,
    output_json_schema,
    packed_json_schema,
    unknown_key_count,
)
from schemas.runs import RunInfo, RunKind, RunSpec, RunStatus
from schemas.vocabulary import load_vocabulary

# The engine's own figures, kept in RunResult.counts.
ENGINE_COUNTS = (
    "units",
    "model_calls",
    "cache_hits",
    "unit_failures",
    "unknown_keys",
    "prompt_tokens",
    "completion_tokens",
    "packed_calls",
    "packed_units",
    "lone_reasks",
)
# When calls are short (more than FAST_WAVES * concurrency answers in FAST_WINDOW seconds), at
# most one flush of the cache in FLUSH_EVERY seconds (`LabelRun._unsaved_now`). Whatever the
# calls' length, at most one flush in half the median call time (HOLD_FRACTION), up to HOLD_MAX
# seconds: slow calls arrive one by one, and a commit each (4 to 6 ms of CPU) would be most of
# clala's cost per call. Under a call's time, so a slot has at most one answer in a held commit.
FLUSH_EVERY = 0.05
HOLD_FRACTION = 0.5
HOLD_MAX = 0.5
FAST_WAVES = 3
FAST_WINDOW = 0.25
# Tries of a report, counted in its work row (`attempts`): a report that failed validation is
# retried by `--resume` until it has been tried this many times.
MAX_REPORT_ATTEMPTS = 3
FAILURES = (UnitFailed, TransportFailed, ServerRefused)
# Options that say which reports a run covers: fixed when it is created.
SELECTION_OPTIONS = ("dataset", "report_ids", "limit")


@dataclass(frozen=True)
class Prices:
    """What a hosted model charges, in any currency, per million tokens (`--price-in/--price-out`)."""

    input_per_million: float = 0.0
    output_per_million: float = 0.0


@dataclass
class DryRun:
    reports: int
    sentences: int
    units: int
    cache_hits: int
    calls_needed: int  # requests: packed ones count once
    est_prompt_tokens: int
    est_completion_tokens: int
    units_per_call: int = 1
    est_static_tokens: int = 0  # of est_prompt_tokens: the prefix that is the same on every call
    est_dynamic_tokens: int = 0  # ... and the unit(s)
    est_cost: float | None = None  # with prices

    @property
    def static_fraction(self) -> float:
        return self.est_static_tokens / self.est_prompt_tokens if self.est_prompt_tokens else 0.0


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


@dataclass
class Outcomes:
    """A batch's answers sorted out: units that failed, transport trouble (answers were cached
    as they arrived)."""

    failures: list[dict[str, Any]] = field(default_factory=list)
    transport: dict[str, str] = field(default_factory=dict)  # unit identity -> error
    refused: str | None = None
    asked: list[str] = field(default_factory=list)  # cache keys this batch got an answer for


@dataclass
class Unsaved:
    """What arrived since the last flush: answers to cache, tokens spent, keys dropped."""

    entries: list[dict[str, Any]] = field(default_factory=list)
    prompt_tokens: int = 0
    completion_tokens: int = 0
    unknown_keys: int = 0


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
            # llama.cpp's own server takes OpenAI's json_schema response format
            dialect = "json_schema" if options.structured_output == "auto" else options.structured_output
            yield (
                OpenAICompatibleBackend(
                    [server.base_url],
                    server.model_name,
                    dialect,
                    None,
                    options.timeout,
                    options.transport_retries,
                    diagnose=server.crash,
                ),
                server.model_name,
            )
        return
    if options.backend == "openai-batch":
        yield open_batch_backend(options, allow_remote), options.model or ""
        return
    if options.backend == "ray":
        from labeling.sources.llm.ray_engine import open_ray_backend

        with open_ray_backend(options, allow_remote) as backend:
            yield backend, backend.model
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

    def __init__(self, store: Store, result: RunResult, options: LabelOptions, backend: Any, model: str):
        assert result.run_id is not None
        self.store, self.run_id, self.options, self.backend, self.model = store, result.run_id, options, backend, model
        self.vocabulary = load_vocabulary(options.vocabulary, enable=options.enable)
        self.prompt = load_prompt(options.prompt, self.vocabulary)
        self.answer_model = build_output_model(self.vocabulary)
        self.schema = output_json_schema(self.vocabulary, max_labels=options.max_labels)
        self.packed_schema = packed_json_schema(self.vocabulary, max_labels=options.max_labels)
        self.layout = {"static_chars": 0, "dynamic_chars": 0}  # message characters sent (prompts/render.py)
        self.decoding = options.decoding(backend.dialect)
        self.result = result
        self.result.counts.update(dict.fromkeys(ENGINE_COUNTS, 0))
        self.failed_units: dict[str, UnitFailed] = {}
        self.inflight: dict[str, asyncio.Future] = {}  # cache key -> call, shared by overlapping batches
        self.settled: set[str] = set()  # cache keys whose call was already accounted for
        self.gave_up: str | None = None  # why the transport watch stopped the run
        self.last_transport: str | None = None  # the latest transport failure that left a report pending
        self.unsaved: Unsaved | None = None  # arrived, not yet written
        self.flush_error: Exception | None = None
        self.arrivals: deque[float] = deque(maxlen=FAST_WAVES * options.concurrency + 1)  # latest answers' times
        self.call_seconds: deque[float] = deque(maxlen=64)  # latest calls' durations
        self.flushed_at = 0.0  # time.monotonic() of the last flush
        backend.watch = TransportWatch(options.give_up_after, on_trip=self._give_up, diagnose=backend.watch.diagnose)

    def _give_up(self, reason: str) -> None:
        """The server is gone: cancel every call in flight or waiting (their units stay pending)."""
        self.gave_up = reason
        for call in self.inflight.values():
            call.cancel()

    def keys_of(self, unit: Unit) -> list[str]:
        return [
            cache_key(unit.identity, self.model, self.prompt.sha256, self.vocabulary.version, self.decoding, s)
            for s in range(self.options.samples)
        ]

    def _sent(self, messages: list[dict[str, str]]) -> list[dict[str, str]]:
        """Count a request's static (all but the last message) and dynamic characters."""
        self.layout["static_chars"] += sum(len(m["content"]) for m in messages[:-1])
        self.layout["dynamic_chars"] += len(messages[-1]["content"])
        return messages

    def _seed(self, sample: int) -> int | None:
        return None if self.decoding["seed"] is None else self.decoding["seed"] + sample

    async def _ask(self, unit: Unit, sample: int, key: str, semaphore: asyncio.Semaphore) -> Any:
        async with semaphore:
            sent = time.monotonic()
            try:
                answer = await self.backend.ask(
                    self._sent(self.prompt.messages(unit.text, unit.context)),
                    self.answer_model,
                    self.schema,
                    temperature=self.decoding["temperature"],
                    max_tokens=self.decoding["max_tokens"],
                    reasks=self.options.max_retries,
                    seed=self._seed(sample),
                )
            except UnitFailed as exc:
                self._spent(exc.prompt_tokens, exc.completion_tokens)
                return exc
            except FAILURES as exc:
                return exc
        self.call_seconds.append(time.monotonic() - sent)
        self._keep(key, answer)
        return answer

    async def _ask_pack(
        self, units: list[Unit], sample: int, keys: list[str], semaphore: asyncio.Semaphore
    ) -> dict[str, Any]:
        """Ask several units in one request: each key's Answer, or its failure. The pack is not
        re-asked as a whole: a unit whose part is missing or invalid is asked alone."""
        ids = [str(i) for i in range(1, len(units) + 1)]
        messages = self._sent(self.prompt.packed_messages([(i, u.text, u.context) for i, u in zip(ids, units)]))
        pack: Answer | None = None
        async with semaphore:
            sent = time.monotonic()
            try:
                pack = await self.backend.ask(
                    messages,
                    PackedEnvelope,
                    self.packed_schema,
                    temperature=self.decoding["temperature"],
                    max_tokens=self._pack_max_tokens(messages, len(units)),
                    reasks=0,
                    seed=self._seed(sample),
                )
            except UnitFailed as exc:  # not JSON, or cut off: every unit is asked alone
                self._spent(exc.prompt_tokens, exc.completion_tokens)
            except FAILURES as exc:
                return dict.fromkeys(keys, exc)
        results: dict[str, Any] = {}
        alone: list[tuple[Unit, str]] = []
        items: dict[str, Any] = {}
        if pack is not None:
            self.call_seconds.append(time.monotonic() - sent)
            self._spent(pack.prompt_tokens, pack.completion_tokens)  # counted once, for the pack
            assert isinstance(pack.parsed, PackedEnvelope)
            for item in pack.parsed.answers:
                items.setdefault(item.id.strip().strip("[]"), item)  # a repeated id: its first answer
        share = len(units)
        for unit_id, unit, key in zip(ids, units, keys):
            item = items.get(unit_id)
            try:
                parsed = self.answer_model.model_validate({"labels": item.labels}) if item else None
            except ValueError:
                parsed = None
            if parsed is None or pack is None or item is None:
                alone.append((unit, key))
                continue
            answer = Answer(
                parsed=parsed,
                raw=json.dumps({"id": unit_id, "labels": item.labels}),
                prompt_tokens=pack.prompt_tokens // share,  # each unit's share, as cached
                completion_tokens=pack.completion_tokens // share,
                mean_logprob=pack.mean_logprob,
            )
            self._keep(key, answer, spent=False)
            results[key] = answer
        self.result.counts["packed_units"] += len(units) - len(alone)
        self.result.counts["lone_reasks"] += len(alone)
        self.result.counts["model_calls"] += len(alone)
        if alone:
            lone = await asyncio.gather(*(self._ask(unit, sample, key, semaphore) for unit, key in alone))
            results.update({key: outcome for (_, key), outcome in zip(alone, lone)})
        return results

    def _pack_max_tokens(self, messages: list[dict[str, str]], units: int) -> int:
        """The per-sentence budget for each unit; on the embedded server, no more than its context
        leaves beside the prompt (estimated generously: CHARS_PER_TOKEN_AT_LEAST)."""
        budget = self.decoding["max_tokens"] * units
        if self.options.backend == "local":
            prompt = sum(len(m["content"]) for m in messages) // CHARS_PER_TOKEN_AT_LEAST
            budget = max(self.decoding["max_tokens"], min(budget, self.options.n_ctx - prompt))
        return budget

    @staticmethod
    async def _member(pack: asyncio.Future, key: str) -> Any:
        """One unit's outcome of a pack (cancelling it cancels the pack)."""
        return (await pack)[key]

    def _keep(self, key: str, answer: Answer, *, spent: bool = True) -> None:
        """Cache a valid answer as it arrives, with its tokens: a kill loses at most the calls in
        flight. `spent=False`: the tokens were counted already (a pack's, counted once)."""
        unsaved = self._unsaved_now()
        unsaved.entries.append(
            {
                "cache_key": key,
                "model": self.model,
                "response": _response_of(answer),
                "prompt_tokens": answer.prompt_tokens,
                "completion_tokens": answer.completion_tokens,
            }
        )
        unsaved.unknown_keys += unknown_key_count(answer.parsed)
        if spent:
            unsaved.prompt_tokens += answer.prompt_tokens
            unsaved.completion_tokens += answer.completion_tokens

    def _spent(self, prompt_tokens: int, completion_tokens: int) -> None:
        unsaved = self._unsaved_now()
        unsaved.prompt_tokens += prompt_tokens
        unsaved.completion_tokens += completion_tokens

    def _unsaved_now(self) -> Unsaved:
        """What arrived since the last flush. The first arrival schedules the flush; answers that
        arrive until then share its commit (a commit costs 4 to 6 ms of CPU, an answer in a shared
        one well under 1 ms), and it runs before the calls their answers free up are sent.

        When the flush runs: at most one in half the median call time (up to HOLD_MAX), so a kill
        loses the calls in flight and the answers of one held commit, at most one a slot (a commit
        an answer would cost more CPU than everything else clala does for a call at 500 ms). When
        calls are short (more than FAST_WAVES waves of `concurrency` answers within FAST_WINDOW: a
        fast server), at most one in FLUSH_EVERY."""
        now = time.monotonic()
        self.arrivals.append(now)
        if self.unsaved is None:
            self.unsaved = Unsaved()
            loop = asyncio.get_running_loop()
            hold = min(HOLD_MAX, HOLD_FRACTION * statistics.median(self.call_seconds)) if self.call_seconds else 0.0
            if len(self.arrivals) == self.arrivals.maxlen and now - self.arrivals[0] < FAST_WINDOW:
                hold = max(hold, FLUSH_EVERY)
            wait = self.flushed_at + hold - now
            if wait > 0:
                loop.call_later(wait, self._flush)
            else:
                loop.call_soon(self._flush)
        return self.unsaved

    def _flush(self) -> None:
        """Write what arrived, in one transaction. One process writes the database, from this
        loop's thread, and no batch is settled while this runs, so it is the only one open."""
        unsaved, self.unsaved = self.unsaved, None
        if unsaved is None or self.flush_error:
            return
        try:
            with self.store.transaction():
                self.store.cache_put(unsaved.entries, self.run_id, replace=not self.options.use_cache)
                self.store.add_run_tokens(self.run_id, unsaved.prompt_tokens, unsaved.completion_tokens)
                self.store.add_run_unknown_keys(self.run_id, unsaved.unknown_keys)
        except Exception as exc:  # raised by `_flushed`: a loop callback's error would only be logged
            self.flush_error = exc
            return
        self.flushed_at = time.monotonic()
        self.result.counts["unknown_keys"] += unsaved.unknown_keys
        self.result.counts["prompt_tokens"] += unsaved.prompt_tokens
        self.result.counts["completion_tokens"] += unsaved.completion_tokens

    def _flushed(self) -> None:
        """Everything that arrived is written (or its error raised)."""
        self._flush()
        if self.flush_error:
            raise self.flush_error

    async def execute(self, hooks: RunHooks) -> RunResult:
        started = time.monotonic()
        result = self.result
        retried = self.store.retryable_work(self.run_id, MAX_REPORT_ATTEMPTS)
        pending = sorted(self.store.work(self.run_id, ("pending",)) + retried)
        result.reports = sum(self.store.work_counts(self.run_id).values())
        semaphore = asyncio.Semaphore(getattr(self.backend, "in_flight", self.options.concurrency))
        size = max(self.options.batch_size, self.options.concurrency)  # a batch keeps every slot busy
        if self.options.packs:  # ... with packs: at least 4 new sentences a report, say
            size = max(self.options.batch_size, self.options.concurrency * max(1, self.options.per_call // 4))
        size = getattr(self.backend, "reports_per_wave", size)  # a wave backend: one wave a batch
        batches = [pending[i : i + size] for i in range(0, len(pending), size)]
        # The next batch's calls start before this batch is settled, so the server is not left
        # idle while the slowest call of a batch finishes and its batch is committed.
        prepared = deque([self._prepare(batches[0], semaphore)] if batches else [])
        for i, batch in enumerate(batches):
            if i + 1 < len(batches):
                prepared.append(self._prepare(batches[i + 1], semaphore))
            current = prepared.popleft()
            # cancelled calls (the transport watch gave up) come back as CancelledError
            outcomes = await asyncio.gather(*current.calls, return_exceptions=True)
            for outcome in outcomes:
                if isinstance(outcome, BaseException) and not isinstance(outcome, (*FAILURES, asyncio.CancelledError)):
                    raise outcome  # not a failure of the server's: a bug or the store
            stop = self._settle(current, outcomes)
            result.seconds = time.monotonic() - started
            hooks.advance(result, len(batch))
            if stop:
                result.stopped_because = stop
                break
        leftover = [call for batch in prepared for call in batch.calls]
        for call in leftover:
            call.cancel()
        await asyncio.gather(*leftover, return_exceptions=True)
        self._flushed()  # the answers of cancelled batches that did arrive
        self._record_layout()
        counts = self.store.work_counts(self.run_id)
        result.reports_done = counts.get("done", 0)
        result.reports_failed = counts.get("failed", 0)
        result.reports_pending = counts.get("pending", 0)
        if result.reports_pending and not result.stopped_because and self.last_transport:
            # not enough failures in a row to stop the run, but some reports still wait for answers
            result.stopped_because = (
                f"{result.reports_pending} report(s) left pending after transport failures "
                f"({self.last_transport}); resume to retry them"
            )
        result.status = (
            RunStatus.incomplete
            if result.reports_pending
            else RunStatus.partial
            if result.reports_failed
            else RunStatus.complete
        )
        result.details["retryable_failed"] = len(self.store.retryable_work(self.run_id, MAX_REPORT_ATTEMPTS))
        self.store.set_run_status(self.run_id, result.status)
        result.rejected = self.store.rejection_counts(self.run_id)
        result.seconds = time.monotonic() - started
        return result

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
        new = [(identity, sample) for identity, sample in todo if keys[identity][sample] not in self.inflight]
        if self.options.packs:
            self._start_packs(new, units, keys, semaphore)
        for identity, sample in new if not self.options.packs else []:
            key = keys[identity][sample]
            self.inflight[key] = asyncio.ensure_future(self._ask(units[identity], sample, key, semaphore))
            self.result.counts["model_calls"] += 1
        for identity, sample in todo:
            calls.append(self.inflight[keys[identity][sample]])
        self.result.counts["units"] += len(units)
        self.result.counts["cache_hits"] += len(all_keys) - len(todo)
        return PreparedBatch(batch, units, report_units, texts, keys, cached, todo, calls)

    def _start_packs(
        self,
        new: list[tuple[str, int]],
        units: dict[str, Unit],
        keys: dict[str, list[str]],
        semaphore: asyncio.Semaphore,
    ) -> None:
        """Start the calls of `new` (identity, sample) pairs, `per_call` units to a request (one
        sample index a pack: its seed is the sample's)."""
        by_sample: dict[int, list[str]] = {}
        for identity, sample in new:
            by_sample.setdefault(sample, []).append(identity)
        k = self.options.per_call
        for sample, identities in by_sample.items():
            for i in range(0, len(identities), k):
                chunk = identities[i : i + k]
                chunk_keys = [keys[identity][sample] for identity in chunk]
                if len(chunk) == 1:  # a pack of one is a lone call
                    self.inflight[chunk_keys[0]] = asyncio.ensure_future(
                        self._ask(units[chunk[0]], sample, chunk_keys[0], semaphore)
                    )
                else:
                    pack = asyncio.ensure_future(
                        self._ask_pack([units[identity] for identity in chunk], sample, chunk_keys, semaphore)
                    )
                    self.result.counts["packed_calls"] += 1
                    for key in chunk_keys:
                        self.inflight[key] = asyncio.ensure_future(self._member(pack, key))
                self.result.counts["model_calls"] += 1

    def _record_layout(self) -> None:
        """Add the characters this session sent, static and dynamic, to the run's parameters."""
        if not any(self.layout.values()):
            return
        params = self.store.run(self.run_id).params
        before = params.get("prompt_layout") or {}
        static = before.get("static_chars", 0) + self.layout["static_chars"]
        dynamic = before.get("dynamic_chars", 0) + self.layout["dynamic_chars"]
        layout = {
            "static_chars": static,
            "dynamic_chars": dynamic,
            "static_fraction": round(static / (static + dynamic), 4),
        }
        self.store.set_run_params(self.run_id, {**params, "prompt_layout": layout})
        self.result.details["static_prompt_fraction"] = layout["static_fraction"]

    def _collect(self, prepared: PreparedBatch, outcomes: list[Any]) -> Outcomes:
        """Sort a batch's answers into failed units and transport trouble."""
        collected = Outcomes()
        for (identity, sample), outcome in zip(prepared.todo, outcomes):
            key = prepared.keys[identity][sample]
            first_time = key not in self.settled  # a call shared with the previous batch counts once
            self.settled.add(key)
            self.inflight.pop(key, None)
            if isinstance(outcome, asyncio.CancelledError):
                outcome = TransportFailed(self.gave_up or "cancelled")
            if first_time and not isinstance(outcome, (TransportFailed, ServerRefused)):
                collected.asked.append(key)
            if isinstance(outcome, UnitFailed):
                if identity not in self.failed_units:
                    self.failed_units[identity] = outcome
                    collected.failures.append(
                        {
                            "unit_key": key,
                            "report_key": prepared.units[identity].occurrences[0].report_key,
                            "raw_output": outcome.raw,
                            "error": outcome.error,
                        }
                    )
                continue
            if isinstance(outcome, (TransportFailed, ServerRefused)):
                if isinstance(outcome, ServerRefused):
                    collected.refused = str(outcome)
                collected.transport[identity] = str(outcome)
                continue
            prepared.cached[key] = {"response": _response_of(outcome)}
        return collected

    def _report_labels(
        self, prepared: PreparedBatch, report_key: int
    ) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        """(label rows, rejections) of one report whose units all have answers."""
        labels, rejections = [], []
        for identity in prepared.report_units[report_key]:
            keys = prepared.keys[identity]
            samples = [prepared.cached[k]["response"] for k in keys if k in prepared.cached]
            occurrence = next(o for o in prepared.units[identity].occurrences if o.report_key == report_key)
            unit_labels, unit_rejections = resolve_unit(
                samples, occurrence, prepared.texts[report_key], self.vocabulary
            )
            labels.extend(unit_labels)
            rejections.extend({"unit_key": keys[0], "report_key": report_key, **r.__dict__} for r in unit_rejections)
        rows = [
            {
                "report_key": report_key,
                "region": label.region,
                "finding": label.finding,
                "status": label.status.value,
                "severity": label.severity.value if label.severity else None,
                "temporal": label.temporal.value if label.temporal else None,
                "evidence_start": label.evidence.start if label.evidence else None,
                "evidence_end": label.evidence.end if label.evidence else None,
                "evidence_text": label.evidence.text if label.evidence else None,
                "confidence": label.confidence,
            }
            for label in merge_labels(labels)
        ]
        return rows, rejections

    def _settle(self, prepared: PreparedBatch, outcomes: list[Any]) -> str | None:
        """Commit a batch whose calls have all returned; a reason to stop, or None."""
        self._flushed()
        collected = self._collect(prepared, outcomes)
        transport = collected.transport
        if transport:
            self.last_transport = next(iter(transport.values()))
        with self.store.transaction():
            self.store.delete_failures(self.run_id, collected.asked)  # a retry replaces the earlier failure
            self.store.add_failures(self.run_id, collected.failures)
            done, failed, waiting = [], [], []
            rows: list[dict[str, Any]] = []
            rejections: list[dict[str, Any]] = []
            for report_key in prepared.batch:
                identities = prepared.report_units[report_key]
                if any(i in transport for i in identities):
                    waiting.append(report_key)
                elif any(i in self.failed_units for i in identities):
                    failed.append(report_key)
                else:
                    report_rows, report_rejections = self._report_labels(prepared, report_key)
                    rows.extend(report_rows)
                    rejections.extend(report_rejections)
                    done.append(report_key)
            if rows:
                self.result.labels += self.store.write_labels(self.run_id, {k: [r[k] for r in rows] for k in rows[0]})
            self.store.add_rejections(self.run_id, rejections)
            self.store.set_work(self.run_id, done, "done")
            self.store.set_work(self.run_id, failed, "failed", "a unit failed validation; see `clala failures`")
            self.store.set_work(self.run_id, waiting, "pending", next(iter(transport.values()), None))
        self.result.counts["unit_failures"] += len(collected.failures)
        if collected.refused:
            return f"the server refused the request ({collected.refused}); fix it and resume"
        if self.backend.watch.fault:  # clala's own server died: say so, not that it went away
            return self.backend.watch.fault
        if self.gave_up:
            return f"the server is unreachable ({self.gave_up}); resume when it is back"
        if prepared.todo and all(identity in transport for identity, _ in prepared.todo):
            return f"the server is unreachable ({next(iter(transport.values()))}); resume when it is back"
        return None


def _response_of(answer: Answer) -> dict[str, Any]:
    """An answer as cached: its labels and its mean token log-probability."""
    return {**answer.parsed.model_dump(), "mean_logprob": answer.mean_logprob}


def _new_run_spec(name: str, options: LabelOptions, model: str, dialect: str) -> RunSpec:
    vocabulary = load_vocabulary(options.vocabulary, enable=options.enable)
    prompt = load_prompt(options.prompt, vocabulary)
    return RunSpec(
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


def _checked_options(store: Store, request: LlmRequest) -> tuple[LabelOptions, list[int]]:
    """The options of the run (a resumed run's own), and for a new run its reports: everything
    that can be wrong is checked before a server is started."""
    if request.options.unit not in UNIT_KINDS:
        raise ClalaError(f"--unit must be one of {', '.join(UNIT_KINDS)}")
    if request.resume:
        return _resumed_options(store.run(request.resume), request.options), []
    options = request.options
    try:
        load_vocabulary(options.vocabulary, enable=options.enable)
    except (ValueError, FileNotFoundError) as exc:
        raise ClalaError(str(exc)) from None
    if request.name:
        check_new_run_name(store, request.name, resumable=True)
    return options, select_reports(store, options.selection())


def _resumed_options(run: RunInfo, given: LabelOptions) -> LabelOptions:
    """The options a resumed run works with: its own, with the transport of its latest resume,
    changed by the TRANSPORT_OPTIONS in `given`. Any other option given with another value than
    the run's is refused (InputError naming the option and both values), as is a prompt template
    or vocabulary file that changed since the run was made: nothing has been changed yet."""
    if run.kind is not RunKind.llm:
        raise ClalaError(f"run {run.name!r} is a {run.kind.value} run, not an LLM run")
    stored = LabelOptions.model_validate(run.params)
    fixed = sorted(given.model_fields_set - set(TRANSPORT_OPTIONS) - {"structured_output", "resumes"})
    for name in fixed:
        before, after = getattr(stored, name), getattr(given, name)
        if after != before:
            what = "which reports it covers" if name in SELECTION_OPTIONS else "what its labels mean"
            raise InputError(
                f"{option_flag(name)}: run {run.name!r} was made with {before!r}; resuming it with {after!r} "
                f"would change {what}; resume without {option_flag(name)}, or start a new run with --name"
            )
    latest = stored.resumes[-1] if stored.resumes else {}
    transport = {name: latest.get(name, getattr(stored, name)) for name in TRANSPORT_OPTIONS}
    transport.update({name: getattr(given, name) for name in given.model_fields_set if name in TRANSPORT_OPTIONS})
    if "structured_output" in given.model_fields_set:  # checked against the run's dialect once resolved
        transport["structured_output"] = given.structured_output
    options = stored.model_copy(update=transport)
    try:
        vocabulary = load_vocabulary(options.vocabulary, enable=options.enable)
    except (ValueError, FileNotFoundError) as exc:
        raise ClalaError(str(exc)) from None
    if vocabulary.version != run.vocabulary_version:
        raise InputError(
            f"run {run.name!r} was made with vocabulary {run.vocabulary_version}, which is now "
            f"{vocabulary.version} (its file changed); its labels would mean something else: start a new run"
        )
    prompt = load_prompt(options.prompt, vocabulary)
    if run.prompt_sha256 and prompt.sha256 != run.prompt_sha256:
        raise InputError(
            f"run {run.name!r} was made with prompt {options.prompt} sha256 {run.prompt_sha256[:12]}, which now "
            f"renders as {prompt.sha256[:12]} (its template changed); its labels would mean something else: "
            "start a new run"
        )
    return options


def _check_resumed_backend(run: RunInfo, model: str, dialect: str) -> None:
    """The server reached on resume must be the run's model, in the run's structured-output dialect."""
    if model != run.model:
        raise InputError(f"run {run.name!r} was made with model {run.model!r}, not {model!r}")
    made_with = run.decoding.get("structured_output")
    if made_with and dialect != made_with:
        raise InputError(
            f"--structured-output: run {run.name!r} was made with {made_with!r}; resuming it with {dialect!r} "
            f"would change what its labels mean; resume with --structured-output {made_with}"
        )


def _record_resume(store: Store, run: RunInfo, options: LabelOptions, dialect: str) -> None:
    """Append this resume, with the transport it runs with (the key variable's name, never a key),
    to the run's parameters."""
    record = {
        "at": time.strftime("%Y-%m-%dT%H:%M:%S"),
        **{name: getattr(options, name) for name in TRANSPORT_OPTIONS},
        "structured_output": dialect,
    }
    store.set_run_params(run.run_id, {**run.params, "resumes": [*options.resumes, record]})


def label_with_llm(store: Store, request: LlmRequest, *, hooks: RunHooks | None = None) -> RunResult:
    """Label reports with an LLM as a new run `request.name`, or finish run `request.resume`."""
    hooks = hooks or RunHooks()
    options, reports = _checked_options(store, request)
    with open_backend(options, request.allow_remote) as (backend, model):
        if request.resume:
            stored = store.run(request.resume)
            _check_resumed_backend(stored, model, backend.dialect)
            _record_resume(store, stored, options, backend.dialect)
        name = request.name or f"{options.backend}-{model}-{time.strftime('%Y%m%d-%H%M%S')}"
        run, _ = resume_or_create(
            store,
            resume=request.resume,
            kind=RunKind.llm,
            create=lambda: (_new_run_spec(name, options, model, backend.dialect), reports),
        )
        result = RunResult(name=run.name, kind=RunKind.llm.value, run_id=run.run_id, status=RunStatus.running)
        if isinstance(backend, BatchApiBackend):  # its jobs are written to the run, to be collected on resume
            backend.journal = RunBatchJournal(store, run.run_id)
        if isinstance(backend, WaveBackend):  # a wave's status (a batch job's) while the run waits for it
            backend.on_status = lambda text: hooks.note(result, text)
        job = LabelRun(store, result, options, backend, model)
        result.reports = sum(store.work_counts(run.run_id).values())
        hooks.start(result)

        async def main() -> RunResult:
            try:
                return await job.execute(hooks)
            finally:
                await backend.close()

        try:
            return asyncio.run(main())
        except KeyboardInterrupt:
            store.set_run_status(run.run_id, RunStatus.incomplete)
            raise


def dry_run(store: Store, options: LabelOptions, model: str | None = None, *, prices: Prices | None = None) -> DryRun:
    """Units, unique units, cache hits, requests and estimated tokens (and cost), without calling
    a model.

    The requests are made up as the run would (the uncached units, `per_call` to a request with
    `--unit sentences`), and each request's messages are rendered: its prompt tokens are its
    characters over CHARS_PER_TOKEN, split into the static prefix and the unit(s). The completion
    length is the mean of this model's cached answers, or 60 tokens per unit when there are none.
    """
    vocabulary = load_vocabulary(options.vocabulary, enable=options.enable)
    prompt = load_prompt(options.prompt, vocabulary)
    if model is None:
        model = options.model or (Path(options.model_path).name if options.model_path else None)
    if model is None and options.backend == "local":
        from labeling.sources.llm.local_server import default_model_path

        model = default_model_path().name
    dialect = options.structured_output if options.structured_output != "auto" else "json_schema"
    decoding = options.decoding(dialect)
    reports = select_reports(store, options.selection())
    units, _, _ = build_units(store, reports, options.unit, options.context)
    keys = [
        cache_key(u.identity, model or "", prompt.sha256, vocabulary.version, decoding, s)
        for u in units.values()
        for s in range(options.samples)
    ]
    cached = store.cache_get(keys) if options.use_cache else {}
    completion = store.mean_completion_tokens(model or "") or 60.0
    per_call = options.per_call if options.packs else 1
    static = dynamic = calls = 0
    for sample in range(options.samples):
        todo = [u for i, u in enumerate(units.values()) if keys[i * options.samples + sample] not in cached]
        for start in range(0, len(todo), per_call):
            chunk = todo[start : start + per_call]
            layout = prompt.layout([(str(n), u.text, u.context) for n, u in enumerate(chunk, start=1)])
            static, dynamic, calls = static + layout.static_chars, dynamic + layout.dynamic_chars, calls + 1
    to_ask = len(keys) - len(cached)
    plan = DryRun(
        reports=len(reports),
        sentences=sum(len(u.occurrences) for u in units.values()),
        units=len(units),
        cache_hits=len(cached),
        calls_needed=calls,
        est_prompt_tokens=(static + dynamic) // CHARS_PER_TOKEN,
        est_completion_tokens=int(completion * to_ask),
        units_per_call=per_call,
        est_static_tokens=static // CHARS_PER_TOKEN,
        est_dynamic_tokens=dynamic // CHARS_PER_TOKEN,
    )
    if prices is not None:
        plan.est_cost = (
            plan.est_prompt_tokens * prices.input_per_million + plan.est_completion_tokens * prices.output_per_million
        ) / 1e6
    return plan
