"""Benchmark: LLM labeling: clala's engine against the raw openai client, de-duplication on IU
X-ray, and the local backend end to end.

1. Engine overhead. One embedded llama.cpp server (`LocalLlamaServer()`, the shipped Gemma 3
   270M GGUF) is started and warmed with one request (the first request evaluates the ~1,600
   token prompt prefix; later ones reuse llama.cpp's prefix cache), then kept for both sides.
   N distinct one-sentence reports are ingested into a fresh database. The raw side sends, with
   `openai.AsyncOpenAI` at concurrency C, exactly the chat clala builds for each sentence, with
   the same llama.cpp response_format and the decoding clala uses (temperature 0, seed 0 and
   clala's default max_tokens, read from `LabelOptions.decoding`), and validates
   each answer with the same pydantic model. The clala side is `label_with_llm` with backend
   "openai" pointed at the same running server (so no server start is timed), same
   concurrency, no cache. The sides alternate (raw, clala, raw, clala, ...); units/s per side is
   the median over the rounds. Target: clala/raw >= 0.9.
2. De-duplication. All IU X-ray reports are ingested and `dry_run` counts the sentences, the
   unique units and the model calls a run would make. Target: calls/sentences <= 0.40.
3. Local backend end to end. `label_with_llm` with the default `LabelOptions()` (backend local:
   starts its own server) on the 8 sample reports that ship with clala, timed with the start.
Parts 1 and 3 also print the grounded-label rate: labels stored / (stored + rejected), where a
label is rejected when its evidence is not in the report or a region, severity or temporal change
is not stated by its sentence (`labeling.sources.grounding`).

    python bench/label_overhead.py [--n 6] [--concurrency 4] [--rounds 2]
        [--iu ../shared/data/iu_xray/indiana_reports.csv] [--skip PART ...] [--keep DIR]

Exits 0 whether or not the targets hold; prints PASS/FAIL per target, and exits 1 only when a
check of the runs themselves fails (incomplete run, wrong number of model calls).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import statistics
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, cast

from _common import bench_workdir
from rich.console import Console
from rich.table import Table

from labeling.ingest import Columns, IngestOptions, ingest, sample_reports_path
from labeling.sources.llm import LabelOptions, LlmRequest, dry_run, label_with_llm
from labeling.sources.llm.backends import response_format
from labeling.sources.llm.local_server import LocalLlamaServer
from labeling.sources.llm.units import build_units
from labeling.store.store import Store

if TYPE_CHECKING:
    from openai.types.chat import ChatCompletionMessageParam
from prompts.render import DEFAULT_PROMPT, load_prompt
from schemas.llm_output import build_output_model, output_json_schema
from schemas.vocabulary import load_vocabulary

REPO = Path(__file__).resolve().parent.parent
DEFAULT_IU = REPO.parent / "shared" / "data" / "iu_xray" / "indiana_reports.csv"
TARGET_RATIO = 0.9  # clala units/s over raw units/s
TARGET_CALLS_PER_SENTENCE = 0.40
DEAD_URL = "http://127.0.0.1:9/v1"  # dry_run never calls it

console = Console(soft_wrap=True)

SIZES = ("Small", "Moderate", "Large", "Trace", "Mild")
SIDES = ("left", "right", "bilateral")
FINDINGS = ("pleural effusion", "pneumothorax", "atelectasis", "consolidation", "opacity")


def sentences(n: int) -> list[str]:
    """n distinct one-sentence findings ("Small left pleural effusion number 17.")."""
    out = []
    for i in range(n):
        size, side = SIZES[i % len(SIZES)], SIDES[(i // len(SIZES)) % len(SIDES)]
        finding = FINDINGS[(i // (len(SIZES) * len(SIDES))) % len(FINDINGS)]
        out.append(f"{size} {side} {finding} number {i + 1}.")
    return out


def load() -> str:
    return " / ".join(f"{x:.2f}" for x in os.getloadavg())


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--n", type=int, default=6, help="one-sentence reports for part 1")
    parser.add_argument("--concurrency", type=int, default=4, help="requests in flight, both sides")
    parser.add_argument("--rounds", type=int, default=2, help="rounds per side in part 1 (alternating)")
    parser.add_argument("--iu", type=Path, default=DEFAULT_IU, help="IU X-ray indiana_reports.csv (part 2)")
    parser.add_argument(
        "--skip",
        choices=("overhead", "dedup", "local"),
        action="append",
        default=[],
        help="leave out a part (repeatable)",
    )
    parser.add_argument("--keep", type=Path, default=None, help="write the databases into DIR and keep them")
    args = parser.parse_args()
    # A plain `kill` would end Python without unwinding, leaving the llama.cpp server running.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    if args.n < 1 or args.concurrency < 1 or args.rounds < 1:
        sys.exit("--n, --concurrency and --rounds must be at least 1")

    workdir, cleanup = bench_workdir(args.keep)
    for name in ("bench_overhead.duckdb", "bench_dedup.duckdb", "bench_local.duckdb"):
        if (workdir / name).exists():
            sys.exit(f"{workdir / name} already exists; choose another --keep folder")
    console.print(f"workdir: {workdir}; load average (1/5/15 min) at start: {load()}; cpus: {os.cpu_count()}")
    problems: list[str] = []
    try:
        if "overhead" not in args.skip:
            problems += part_overhead(workdir, args.n, args.concurrency, args.rounds)
        if "dedup" not in args.skip:
            problems += part_dedup(workdir, args.iu)
        if "local" not in args.skip:
            problems += part_local(workdir)
    finally:
        if cleanup is not None:
            cleanup.cleanup()
    console.print(f"load average (1/5/15 min) at end: {load()}")
    for problem in problems:
        console.print(f"[bold red]ERROR[/]: {problem}")
    return 1 if problems else 0


def grounded_rate(stored: int, rejected: dict[str, int]) -> str:
    """Labels stored over labels stored plus labels rejected (each rejected region counts once)."""
    total = stored + sum(rejected.values())
    return f"{stored / total:.3f} ({stored} of {total})" if total else "-"


# --- part 1: engine overhead ----------------------------------------------------------------------


async def raw_side(base_url: str, model: str, texts: list[str], concurrency: int, decoding: dict) -> dict:
    """Every text through the plain openai client, validated; seconds and token counts.

    `decoding` is clala's (`LabelOptions.decoding`): the same temperature, max_tokens and seed.
    """
    from openai import AsyncOpenAI

    vocabulary = load_vocabulary()
    prompt = load_prompt(DEFAULT_PROMPT, vocabulary)
    answer_model = build_output_model(vocabulary)
    fmt = response_format("llama_cpp", output_json_schema(vocabulary))
    client = AsyncOpenAI(base_url=base_url, api_key="x", timeout=120.0)
    semaphore = asyncio.Semaphore(concurrency)
    result = {"calls": 0, "invalid": 0, "labels": 0, "prompt_tokens": 0, "completion_tokens": 0, "errors": []}

    async def one(text: str) -> None:
        async with semaphore:
            completion = await client.chat.completions.create(
                model=model,
                messages=cast("list[ChatCompletionMessageParam]", prompt.messages(text)),  # role/content dicts
                temperature=decoding["temperature"],
                max_tokens=decoding["max_tokens"],
                seed=decoding["seed"],
                extra_body={"response_format": fmt},
            )
        result["calls"] += 1
        if completion.usage is not None:
            result["prompt_tokens"] += completion.usage.prompt_tokens or 0
            result["completion_tokens"] += completion.usage.completion_tokens or 0
        try:
            parsed = answer_model.model_validate_json(completion.choices[0].message.content or "")
        except ValueError as exc:
            result["invalid"] += 1
            result["errors"].append(
                f"{text!r}: finish_reason {completion.choices[0].finish_reason}, "
                f"{completion.usage.completion_tokens if completion.usage else '?'} "
                f"completion tokens: {str(exc).splitlines()[0]}"
            )
            return
        result["labels"] += len(parsed.model_dump()["labels"])  # a model built from the vocabulary

    t0 = time.perf_counter()
    try:
        await asyncio.gather(*(one(t) for t in texts))
    finally:
        result["seconds"] = time.perf_counter() - t0
        await client.close()
    return result


def part_overhead(workdir: Path, n: int, concurrency: int, rounds: int) -> list[str]:
    console.rule(f"1. clala engine vs raw openai client ({n} units, concurrency {concurrency}, {rounds} rounds)")
    problems: list[str] = []
    db = workdir / "bench_overhead.duckdb"
    reports = workdir / "overhead_reports.jsonl"
    texts = sentences(n)
    reports.write_text(
        "".join(json.dumps({"id": f"u{i + 1:05d}", "text": t}) + "\n" for i, t in enumerate(texts)), encoding="utf-8"
    )
    with Store(db) as store:
        ingested = ingest(store, reports, IngestOptions(format="jsonl"))
        # The raw side sends exactly the unit texts clala would send.
        units, _, _ = build_units(store, store.current_report_keys())
    unit_texts = [u.text for u in units.values()]
    if len(unit_texts) != n or sorted(unit_texts) != sorted(texts):
        problems.append(f"the {n} reports made {len(unit_texts)} units, not one per sentence")
    console.print(f"ingested {len(ingested.added)} reports, {ingested.sentences} sentences, {len(units)} units")

    # Import what clala imports lazily (instructor, openai), so the first clala round does not pay
    # it while the raw side already did; the import is timed and shown on its own.
    t0 = time.perf_counter()
    import instructor  # noqa: F401
    import openai  # noqa: F401

    import_seconds = time.perf_counter() - t0

    t0 = time.perf_counter()
    server = LocalLlamaServer().start()
    start_seconds = time.perf_counter() - t0
    raw_runs: list[dict] = []
    clala_runs: list[dict] = []
    try:
        options = LabelOptions(
            backend="openai",
            base_urls=[server.base_url],
            model=server.model_name,
            structured_output="llama_cpp",
            concurrency=concurrency,
            use_cache=False,
            batch_size=16,
        )
        decoding = options.decoding("llama_cpp")
        t0 = time.perf_counter()
        warm = asyncio.run(raw_side(server.base_url, server.model_name, ["Heart size is normal."], 1, decoding))
        warm_seconds = time.perf_counter() - t0
        console.print(
            f"server up in {start_seconds:.1f} s; warm-up request {warm_seconds:.1f} s "
            f"({warm['prompt_tokens']} prompt tokens); decoding both sides: temperature "
            f"{decoding['temperature']}, max_tokens {decoding['max_tokens']}, seed {decoding['seed']}"
        )
        for r in range(rounds):
            cpu = time.process_time()
            raw = asyncio.run(raw_side(server.base_url, server.model_name, unit_texts, concurrency, decoding))
            raw["cpu"] = time.process_time() - cpu
            raw_runs.append(raw)
            console.print(
                f"round {r + 1}: raw   {raw['seconds']:6.2f} s, {n / raw['seconds']:.3f} units/s, "
                f"{raw['invalid']} invalid; load {load()}"
            )
            t0, cpu = time.perf_counter(), time.process_time()
            with Store(db) as store:
                summary = label_with_llm(store, LlmRequest(name=f"bench-{r + 1}", options=options))
            wall, cpu = time.perf_counter() - t0, time.process_time() - cpu
            clala_runs.append(
                {
                    "seconds": wall,
                    "engine_seconds": summary.seconds,
                    "calls": summary.counts["model_calls"],
                    "cpu": cpu,
                    "done": summary.reports_done,
                    "failed": summary.reports_failed,
                    "prompt_tokens": summary.counts["prompt_tokens"],
                    "completion_tokens": summary.counts["completion_tokens"],
                    "labels": summary.labels,
                    "rejected": summary.rejected,
                    "failures": summary.counts["unit_failures"],
                }
            )
            console.print(
                f"round {r + 1}: clala {wall:6.2f} s, {n / wall:.3f} units/s "
                f"(engine {summary.seconds:.2f} s), {summary.counts['model_calls']} calls, "
                f"{summary.counts['unit_failures']} unit failures; load {load()}"
            )
            # A report whose one unit failed validation is settled as failed, as the raw side counts
            # the same answer invalid; the run must have settled every report.
            if summary.status.value != "complete" or summary.reports_done + summary.reports_failed != n:
                problems.append(
                    f"clala round {r + 1}: run is {summary.status.value} with "
                    f"{summary.reports_done} done and {summary.reports_failed} failed of {n} reports "
                    f"({summary.stopped_because})"
                )
            if summary.counts["model_calls"] != n:
                problems.append(f"clala round {r + 1}: {summary.counts['model_calls']} model calls, expected {n}")
    finally:
        server.stop()
    with Store(db, read_only=True) as store:
        clala_errors = [
            f"{f['report_id']}: {f['error']}" for r in range(len(clala_runs)) for f in store.failures(f"bench-{r + 1}")
        ]

    raw_rate = statistics.median(n / x["seconds"] for x in raw_runs)
    clala_rate = statistics.median(n / x["seconds"] for x in clala_runs)
    ratio = clala_rate / raw_rate

    table = Table(title="1. engine overhead: same server, same units, same concurrency")
    table.add_column("measure")
    table.add_column("raw openai client", justify="right")
    table.add_column("clala label_with_llm", justify="right")

    def row(label: str, key: str, fmt: str = "{:,}") -> None:
        table.add_row(
            label, " / ".join(fmt.format(x[key]) for x in raw_runs), " / ".join(fmt.format(x[key]) for x in clala_runs)
        )

    row("seconds per round", "seconds", "{:.2f}")
    table.add_row(
        "units/s per round",
        " / ".join(f"{n / x['seconds']:.3f}" for x in raw_runs),
        " / ".join(f"{n / x['seconds']:.3f}" for x in clala_runs),
    )
    table.add_row("units/s, median", f"{raw_rate:.3f}", f"{clala_rate:.3f}")
    table.add_row("seconds per unit, median", f"{1 / raw_rate:.3f}", f"{1 / clala_rate:.3f}")
    table.add_row(
        "client CPU ms per unit (this process, all threads)",
        " / ".join(f"{1000 * x['cpu'] / n:.1f}" for x in raw_runs),
        " / ".join(f"{1000 * x['cpu'] / n:.1f}" for x in clala_runs),
    )
    row("model calls per round", "calls")
    row("prompt tokens per round", "prompt_tokens")
    row("completion tokens per round", "completion_tokens")
    table.add_row(
        "invalid answers (raw) / unit failures (clala)",
        " / ".join(str(x["invalid"]) for x in raw_runs),
        " / ".join(str(x["failures"]) for x in clala_runs),
    )
    table.add_row(
        "labels (raw: parsed; clala: stored after grounding)",
        " / ".join(str(x["labels"]) for x in raw_runs),
        " / ".join(str(x["labels"]) for x in clala_runs),
    )
    table.add_row(
        "labels rejected (clala), by reason",
        "",
        " / ".join(", ".join(f"{k}: {v}" for k, v in x["rejected"].items()) or "0" for x in clala_runs),
    )
    table.add_row(
        "grounded-label rate (clala): stored / (stored + rejected)",
        "",
        " / ".join(grounded_rate(x["labels"], x["rejected"]) for x in clala_runs),
    )
    table.add_row(
        "clala engine seconds (RunResult.seconds)", "", " / ".join(f"{x['engine_seconds']:.2f}" for x in clala_runs)
    )
    table.add_row("reports done / failed (clala)", "", " / ".join(f"{x['done']}/{x['failed']}" for x in clala_runs))
    console.print(table)
    console.print(
        f"server start {start_seconds:.1f} s and warm-up {warm_seconds:.1f} s (not timed in the rounds); "
        f"import instructor+openai {import_seconds:.2f} s (done before the rounds)"
    )
    for error in sorted(set(e for x in raw_runs for e in x["errors"])):
        console.print(f"raw side, invalid answer: {error}")
    for error in sorted(set(clala_errors)):
        console.print(f"clala, unit failure: {error[:200]}")
    verdict = "[bold green]PASS[/]" if ratio >= TARGET_RATIO else "[bold red]FAIL[/]"
    console.print(f"clala/raw throughput ratio: {ratio:.3f} (target >= {TARGET_RATIO}) {verdict}")
    return problems


# --- part 2: de-duplication -----------------------------------------------------------------------


def part_dedup(workdir: Path, iu: Path) -> list[str]:
    console.rule("2. de-duplication on IU X-ray (dry_run)")
    if not iu.is_file():
        console.print(f"[yellow]skipped[/]: {iu} not found (put indiana_reports.csv there or pass --iu PATH)")
        return []
    db = workdir / "bench_dedup.duckdb"
    t0 = time.perf_counter()
    with Store(db) as store:
        result = ingest(store, iu)
    ingest_seconds = time.perf_counter() - t0
    table = Table(title=f"2. de-duplication: {len(result.added):,} IU X-ray reports")
    table.add_column("measure")
    table.add_column("context=0 (default)", justify="right")
    table.add_column("context=1", justify="right")
    runs = []
    for context in (0, 1):
        options = LabelOptions(
            backend="openai", base_urls=[DEAD_URL], model="any", structured_output="llama_cpp", context=context
        )
        t0 = time.perf_counter()
        with Store(db, read_only=True) as store:
            dry = dry_run(store, options)
        runs.append((dry, time.perf_counter() - t0))
    for label, get in (
        ("reports", lambda d: f"{d.reports:,}"),
        ("sentences read (occurrences)", lambda d: f"{d.sentences:,}"),
        ("unique units", lambda d: f"{d.units:,}"),
        ("cache hits", lambda d: f"{d.cache_hits:,}"),
        ("model calls needed", lambda d: f"{d.calls_needed:,}"),
        ("calls / sentences", lambda d: f"{d.calls_needed / d.sentences:.3f}"),
        ("est. prompt tokens", lambda d: f"{d.est_prompt_tokens:,}"),
        ("est. completion tokens", lambda d: f"{d.est_completion_tokens:,}"),
    ):
        table.add_row(label, *(get(d) for d, _ in runs))
    table.add_row("dry_run seconds", *(f"{s:.2f}" for _, s in runs))
    console.print(table)
    console.print(
        f"ingest: {ingest_seconds:.2f} s, {result.sentences:,} sentences stored "
        f"(dry_run reads only FINDINGS/IMPRESSION when a report has them)"
    )
    share = runs[0][0].calls_needed / runs[0][0].sentences
    verdict = "[bold green]PASS[/]" if share <= TARGET_CALLS_PER_SENTENCE else "[bold red]FAIL[/]"
    console.print(f"calls/sentences (context=0): {share:.3f} (target <= {TARGET_CALLS_PER_SENTENCE:.2f}) {verdict}")
    return []


# --- part 3: local backend end to end ---------------------------------------------------------------


def part_local(workdir: Path) -> list[str]:
    console.rule("3. local backend end to end (default LabelOptions, 8 sample reports)")
    problems: list[str] = []
    db = workdir / "bench_local.duckdb"
    options = LabelOptions()
    with Store(db) as store:
        result = ingest(store, sample_reports_path(), IngestOptions(columns=Columns(id="id", text="text")))
        dry = dry_run(store, options)
        t0 = time.perf_counter()
        summary = label_with_llm(store, LlmRequest(name="bench-local", options=options))
        wall = time.perf_counter() - t0
    # A 270M model sometimes truncates an answer: that report fails and the run is `partial`, which
    # is the truthful end; only a run that stopped with reports still pending is a problem here.
    if summary.status.value not in ("complete", "partial") or summary.reports_pending:
        problems.append(f"local run is {summary.status.value} ({summary.stopped_because})")
    with Store(db, read_only=True) as store:
        assert summary.run_id is not None
        answers = store.cache_responses(summary.run_id)
        failures = store.failures("bench-local")
    empty = sum(1 for a in answers if not a.get("labels"))
    table = Table(title="3. local backend: Gemma 3 270M Q4_K_M via the embedded llama.cpp server")
    table.add_column("measure")
    table.add_column("value", justify="right")
    table.add_row("reports / sentences stored", f"{len(result.added)} / {result.sentences}")
    table.add_row(
        "reports done / failed / pending",
        f"{summary.reports_done} / {summary.reports_failed} / {summary.reports_pending}",
    )
    table.add_row("units (sentences read) / unique units", f"{dry.sentences} / {dry.units}")
    table.add_row("model calls", f"{summary.counts['model_calls']}")
    table.add_row("valid answers / with an empty label list", f"{len(answers)} / {empty}")
    table.add_row("unit failures", f"{summary.counts['unit_failures']}")
    table.add_row("labels stored", f"{summary.labels}")
    table.add_row("rejected labels", ", ".join(f"{k}: {v}" for k, v in summary.rejected.items()) or "0")
    table.add_row("grounded-label rate: stored / (stored + rejected)", grounded_rate(summary.labels, summary.rejected))
    table.add_row("wall seconds, server start included", f"{wall:.1f}")
    table.add_row("engine seconds (RunResult.seconds)", f"{summary.seconds:.1f}")
    table.add_row("server start + teardown (wall - engine)", f"{wall - summary.seconds:.1f}")
    table.add_row("reports/s (wall)", f"{summary.reports / wall:.3f}")
    table.add_row("model calls/s (engine)", f"{summary.counts['model_calls'] / summary.seconds:.2f}")
    table.add_row("prompt tokens", f"{summary.counts['prompt_tokens']:,}")
    table.add_row("completion tokens", f"{summary.counts['completion_tokens']:,}")
    table.add_row(
        "completion tokens/s (completion_tokens / seconds)",
        f"{summary.counts['completion_tokens'] / summary.seconds:.1f}",
    )
    console.print(table)
    for failure in failures:
        console.print(f"unit failure: report {failure['report_id']}: {failure['error'][:200]}")
    console.print(
        f"note: the default model is a tiny base model (Gemma 3 270M) that proves the path end to end, "
        f"not a good labeler; here {empty} of its {len(answers)} valid answers had an empty label list. "
        f"The first call also evaluates the whole prompt prefix "
        f"(~{summary.counts['prompt_tokens'] // max(1, summary.counts['model_calls']):,} prompt tokens per call)."
    )
    return problems


if __name__ == "__main__":
    sys.exit(main())
