"""Backends that answer requests a wave at a time: a hosted batch job, a Ray Data pipeline.

A run asks one request per unit (or pack) as it always does; a `WaveBackend` does not send each
one, but gathers the requests made together (those of the reports a run prepares at once) into a
wave, answers the whole wave with `answer_wave`, and hands each request its completion. The
request bodies are the exact JSON the online path would send (`OpenAICompatibleBackend._body`),
and each answer is validated and re-asked by `OpenAICompatibleBackend.ask` as online, so units,
the cache, grounding, re-asks and the single writer are the run's, whatever answers the wave.

A wave's requests are told apart by `request_id`: a hash of the body, so the same request asked
again (a resumed run) has the same id, which is what lets a batch submitted before a crash be
collected instead of paid for twice.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Callable
from typing import Any

from labeling.sources.llm.backends import OpenAICompatibleBackend

# How long a wave waits for more requests after its first one: the calls of the reports a run
# prepares together all start within a few event-loop turns.
WAVE_GATHER_SECONDS = 0.2


def request_id(body: bytes) -> str:
    """A request's id in a wave: the same body, the same id (on every run and resume)."""
    return "r-" + hashlib.sha256(body).hexdigest()[:32]


def settle(future: asyncio.Future, outcome: Any) -> None:
    """Hand a request its completion (or failure), unless it was already settled or cancelled."""
    if future.done():
        return
    if isinstance(outcome, BaseException):
        future.set_exception(outcome)
    else:
        future.set_result(outcome)


class WaveBackend(OpenAICompatibleBackend):
    """An OpenAI-compatible backend whose completions come a wave at a time from `answer_wave`.

    Subclasses implement `answer_wave(bodies)`: one chat-completion dict per body, in order, or
    an exception for a body that got none (UnitFailed, TransportFailed, ServerRefused: the run
    treats it as the online path's). `reports_per_wave` tells the run how many reports to prepare
    together (one wave), and `in_flight` how many requests may wait at once (all of them)."""

    reports_per_wave = 10_000
    in_flight = 1_000_000

    def __init__(self, model: str, dialect: str, **kwargs: Any):
        super().__init__([], model, dialect, **kwargs)
        self.logprobs = False  # a wave's answers are not scored token by token
        self._waiting: list[tuple[bytes, asyncio.Future]] = []
        self._gathering: asyncio.TimerHandle | None = None
        self._waves: set[asyncio.Task] = set()
        self.on_status: Callable[[str], None] | None = None  # told what a wave waits for (a batch job's status)

    async def _complete(self, body: bytes) -> dict:
        loop = asyncio.get_running_loop()
        future: asyncio.Future = loop.create_future()
        self._waiting.append((body, future))
        if self._gathering is None:
            self._gathering = loop.call_later(WAVE_GATHER_SECONDS, self._start_wave)
        return await future

    def _start_wave(self) -> None:
        wave, self._waiting, self._gathering = self._waiting, [], None
        wave = [(body, future) for body, future in wave if not future.cancelled()]
        if wave:
            task = asyncio.ensure_future(self._answer(wave))
            self._waves.add(task)
            task.add_done_callback(self._waves.discard)

    async def _answer(self, wave: list[tuple[bytes, asyncio.Future]]) -> None:
        try:
            outcomes = await self.answer_wave([body for body, _ in wave])
        except asyncio.CancelledError:
            for _, future in wave:
                future.cancel()
            raise
        except Exception as exc:  # the whole wave failed: every request gets the failure
            outcomes = [exc] * len(wave)
        for (_, future), outcome in zip(wave, outcomes, strict=True):
            settle(future, outcome)

    async def answer_wave(self, bodies: list[bytes]) -> list[dict | BaseException]:
        raise NotImplementedError

    async def close(self) -> None:
        if self._gathering is not None:
            self._gathering.cancel()
            self._gathering = None
        for task in list(self._waves):
            task.cancel()
        await asyncio.gather(*self._waves, return_exceptions=True)
        await super().close()
