"""Benchmark: the LLM engine at corpus scale (issue 16): one sentence a call against K a call, and
both against the raw openai client, on a fast fake vLLM-like server on loopback.

The server: S processes of an aiohttp app sharing one 127.0.0.1 port (SO_REUSEPORT), each
answering every chat completion with valid, grounded labels after the latency named by the
model ("fake-50" waits 50 ms): one answer for a lone sentence, {"answers": [{id, labels}]} for
a packed request. Its prompt_tokens are the request's message characters / 4 (clala's own
estimate, prompts/render.py CHARS_PER_TOKEN). Its own ceiling is measured first: a bare aiohttp
loop sending one prebuilt request body at concurrency 64 for a few seconds.

N distinct sentences (3 per report) are ingested into a fresh database. For each latency and
concurrency, in the same run, one after the other:
  raw     `openai.AsyncOpenAI` one sentence a call: the chat clala builds, the json_schema
          response_format, the answer parsed and validated with the same pydantic model; nothing
          stored (the baseline);
  one     `label_with_llm`, `--unit sentence` (one a call), no cache: validated, grounded, stored;
  packed  `label_with_llm`, `--unit sentences --per-call K`, no cache.
Each side: sentences/s (wall), client CPU ms per sentence (this process's CPU time; the server
runs in other processes) and prompt tokens per sentence (as the server counted them).

    python bench/label_throughput.py [--sentences 3000] [--latency 0 50 500] [--concurrency 8 32 64]
        [--per-call 16] [--server-procs 3] [--sides raw one packed] [--keep DIR]

Targets: one/raw >= 0.95 in every cell; packed >= 1,000 sentences/s at 0 ms; packed prompt tokens
per sentence <= 320 (1/5 of about 1,600). Prints PASS/FAIL per target; exits 0 either way, 1 only
when a run itself fails (incomplete, or the packed run stored other labels than the one-a-call run).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import os
import re
import socket
import statistics
import sys
import time
from pathlib import Path

from _common import bench_workdir
from rich.console import Console
from rich.table import Table

from labeling.ingest import IngestOptions, ingest
from labeling.sources.llm import LabelOptions, LlmRequest, label_with_llm
from labeling.sources.llm.backends import response_format
from labeling.store.store import Store
from prompts.render import DEFAULT_PROMPT, PACKED_HEADER, load_prompt
from schemas.llm_output import build_output_model, output_json_schema
from schemas.vocabulary import load_vocabulary

console = Console(soft_wrap=True)
TARGET_ONE_OVER_RAW = 0.95
TARGET_PACKED_RATE = 1000.0
TARGET_TOKENS = 1600 / 5

SIZES = ("Small", "Moderate", "Large", "Trace", "Mild")
SIDES = ("left", "right", "bilateral")
FINDINGS = ("pleural effusion", "pneumothorax", "atelectasis", "consolidation")


def sentence(i: int) -> str:
    size, side = SIZES[i % len(SIZES)], SIDES[(i // len(SIZES)) % len(SIDES)]
    finding = FINDINGS[(i // (len(SIZES) * len(SIDES))) % len(FINDINGS)]
    return f"{size} {side} {finding} seen in case {i + 1}."


def label_of(text: str) -> dict:
    finding = next((f for f in FINDINGS if f in text), None)
    if finding is None:
        return {"labels": []}
    return {
        "labels": [
            {
                "finding": finding,
                "regions": [],
                "status": "present",
                "severity": "none",
                "temporal": "none",
                "evidence": finding,
            }
        ]
    }


# --- the fake server ------------------------------------------------------------------------------

LONE = re.compile(r"TEXT TO LABEL:\n(.*)\Z", re.S)
ITEM = re.compile(r"^\[(\w+)\] (?!CONTEXT \(do not label\))(.*)$", re.M)


def completion(body: dict) -> bytes:
    last = body["messages"][-1]["content"]
    if last.startswith(PACKED_HEADER):
        answer = {"answers": [{"id": i, **label_of(t)} for i, t in ITEM.findall(last)]}
    else:
        found = LONE.search(last)
        answer = label_of(found.group(1) if found else "")
    content = json.dumps(answer)
    prompt_tokens = sum(len(m["content"]) for m in body["messages"]) // 4
    return json.dumps(
        {
            "id": "cmpl",
            "object": "chat.completion",
            "created": 0,
            "model": body.get("model"),
            "choices": [{"index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content": content}}],
            "usage": {
                "prompt_tokens": prompt_tokens,
                "completion_tokens": len(content) // 4,
                "total_tokens": prompt_tokens + len(content) // 4,
            },
        }
    ).encode()


def serve(port: int) -> None:
    from aiohttp import web

    async def chat(request: web.Request) -> web.Response:
        body = json.loads(await request.read())
        latency = int(str(body.get("model", "fake-0")).rsplit("-", 1)[-1]) / 1000
        if latency:
            await asyncio.sleep(latency)
        return web.Response(body=completion(body), content_type="application/json")

    async def models(_request: web.Request) -> web.Response:
        return web.json_response({"object": "list", "data": [{"id": "fake-0", "owned_by": "bench"}]})

    app = web.Application(client_max_size=64 * 1024 * 1024)
    app.router.add_post("/v1/chat/completions", chat)
    app.router.add_get("/v1/models", models)
    web.run_app(app, host="127.0.0.1", port=port, reuse_port=True, print=None, access_log=None)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_server(procs: int) -> tuple[str, list[multiprocessing.Process]]:
    port = free_port()
    workers = [multiprocessing.Process(target=serve, args=(port,), daemon=True) for _ in range(procs)]
    for worker in workers:
        worker.start()
    for _ in range(100):
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                break
        except OSError:
            time.sleep(0.1)
    time.sleep(0.5)  # every process bound
    return f"http://127.0.0.1:{port}/v1", workers


async def server_ceiling(base_url: str, seconds: float = 3.0, concurrency: int = 64) -> float:
    """Calls/s of a bare aiohttp loop sending one prebuilt body (what the server can answer)."""
    import aiohttp

    prompt = load_prompt(DEFAULT_PROMPT, load_vocabulary())
    body = json.dumps({"model": "fake-0", "messages": prompt.messages(sentence(0))}).encode()
    done = 0
    deadline = time.monotonic() + seconds
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:

        async def loop() -> None:
            nonlocal done
            while time.monotonic() < deadline:
                async with session.post(f"{base_url}/chat/completions", data=body) as response:
                    await response.read()
                done += 1

        started = time.monotonic()
        await asyncio.gather(*(loop() for _ in range(concurrency)))
    return done / (time.monotonic() - started)


# --- the sides ------------------------------------------------------------------------------------


async def raw_side(base_url: str, model: str, texts: list[str], concurrency: int) -> dict:
    from openai import AsyncOpenAI

    vocabulary = load_vocabulary()
    prompt = load_prompt(DEFAULT_PROMPT, vocabulary)
    answer_model = build_output_model(vocabulary)
    fmt = response_format("json_schema", output_json_schema(vocabulary))
    decoding = LabelOptions().decoding("json_schema")
    client = AsyncOpenAI(base_url=base_url, api_key="no-key", max_retries=0)
    semaphore = asyncio.Semaphore(concurrency)
    tokens = 0

    async def one(text: str) -> None:
        nonlocal tokens
        async with semaphore:
            reply = await client.chat.completions.create(
                model=model,
                messages=prompt.messages(text),  # pyright: ignore[reportArgumentType]  # role/content dicts
                temperature=decoding["temperature"],
                max_tokens=decoding["max_tokens"],
                seed=decoding["seed"],
                logprobs=True,
                extra_body={"response_format": fmt},
            )
        answer_model.model_validate_json(reply.choices[0].message.content or "")
        tokens += reply.usage.prompt_tokens if reply.usage else 0

    try:
        await asyncio.gather(*(one(t) for t in texts))
    finally:
        await client.close()
    return {"prompt_tokens": tokens, "labels": None}


def clala_side(db: Path, base_url: str, model: str, concurrency: int, unit: str, per_call: int, name: str) -> dict:
    options = LabelOptions(
        backend="openai",
        base_urls=[base_url],
        model=model,
        structured_output="json_schema",
        unit=unit,
        per_call=per_call,
        concurrency=concurrency,
        batch_size=max(64, concurrency),
        use_cache=False,
        timeout=60,
    )
    with Store(db) as store:
        result = label_with_llm(store, LlmRequest(name=name, options=options))
        prompt_tokens = store.run(name).prompt_tokens
    if result.status.value != "complete":
        raise SystemExit(f"run {name} ended {result.status.value}")
    return {"prompt_tokens": prompt_tokens, "labels": result.labels}


def measure(
    side: str, db: Path, base_url: str, latency: int, concurrency: int, per_call: int, texts: list[str]
) -> dict:
    model = f"fake-{latency}"
    cpu, wall = time.process_time(), time.perf_counter()
    if side == "raw":
        out = asyncio.run(raw_side(base_url, model, texts, concurrency))
    else:
        unit = "sentences" if side == "packed" else "sentence"
        out = clala_side(db, base_url, model, concurrency, unit, per_call, f"{side}-{latency}-{concurrency}")
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    n = len(texts)
    return {
        "rate": n / wall,
        "cpu_ms": 1000 * cpu / n,
        "tokens": out["prompt_tokens"] / n,
        "wall": wall,
        "labels": out["labels"],
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--sentences", type=int, default=3000, help="distinct sentences (3 a report)")
    parser.add_argument("--latency", type=int, nargs="+", default=[0, 50, 500], help="server latency, ms")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[8, 32, 64])
    parser.add_argument("--per-call", type=int, default=16, help="K of the packed side")
    parser.add_argument("--server-procs", type=int, default=3, help="fake server processes")
    parser.add_argument("--sides", nargs="+", choices=("raw", "one", "packed"), default=["raw", "one", "packed"])
    parser.add_argument("--keep", type=Path, default=None, help="write the database into DIR and keep it")
    args = parser.parse_args()
    workdir, cleanup = bench_workdir(args.keep)
    base_url, workers = start_server(args.server_procs)
    console.print(
        f"cpus {os.cpu_count()}; load {' / '.join(f'{x:.2f}' for x in os.getloadavg())}; "
        f"server processes {args.server_procs}; K {args.per_call}"
    )
    try:
        ceiling = asyncio.run(server_ceiling(base_url))
        console.print(f"fake server ceiling (bare aiohttp loop, concurrency 64): {ceiling:,.0f} calls/s")
        texts = [sentence(i) for i in range(args.sentences)]
        reports = workdir / "reports.jsonl"
        with reports.open("w") as out:
            for i in range(0, len(texts), 3):
                out.write(json.dumps({"id": f"r{i}", "text": "FINDINGS: " + " ".join(texts[i : i + 3])}) + "\n")
        db = workdir / "throughput.duckdb"
        with Store(db) as store:
            ingest(store, reports, IngestOptions(dataset="bench"))
            counts = store.dataset_counts()
        distinct = sum(c["distinct_sentences"] for c in counts)
        console.print(f"{len(texts):,} sentences ingested ({distinct:,} distinct)")
        table = Table(
            "latency ms", "concurrency", "side", "sentences/s", "CPU ms/sentence", "prompt tokens/sentence",
            "vs raw", title="Label throughput", title_justify="left",
        )  # fmt: skip
        verdicts: list[str] = []
        packed_rates, packed_tokens = [], []
        for latency in args.latency:
            for concurrency in args.concurrency:
                cell = {}
                for side in args.sides:
                    cell[side] = measure(side, db, base_url, latency, concurrency, args.per_call, texts)
                    m = cell[side]
                    ratio = f"{m['rate'] / cell['raw']['rate']:.2f}" if "raw" in cell and side != "raw" else "-"
                    table.add_row(
                        str(latency), str(concurrency), side, f"{m['rate']:,.0f}", f"{m['cpu_ms']:.2f}",
                        f"{m['tokens']:,.0f}", ratio,
                    )  # fmt: skip
                    console.print(
                        f"  {latency} ms, concurrency {concurrency}, {side}: {m['rate']:,.0f} sentences/s, "
                        f"{m['cpu_ms']:.2f} CPU ms, {m['tokens']:,.0f} prompt tokens a sentence, ratio {ratio}"
                    )
                if "one" in cell and "packed" in cell and cell["one"]["labels"] != cell["packed"]["labels"]:
                    raise SystemExit(
                        f"{cell['one']['labels']} labels stored one a call, {cell['packed']['labels']} packed"
                    )
                if "raw" in cell and "one" in cell:
                    ratio = cell["one"]["rate"] / cell["raw"]["rate"]
                    verdicts.append(
                        f"{'PASS' if ratio >= TARGET_ONE_OVER_RAW else 'FAIL'} one/raw {ratio:.2f} >= "
                        f"{TARGET_ONE_OVER_RAW} at {latency} ms, concurrency {concurrency}"
                    )
                if "packed" in cell:
                    packed_tokens.append(cell["packed"]["tokens"])
                    if latency == 0:
                        packed_rates.append(cell["packed"]["rate"])
        console.print(table)
        if packed_rates:
            best = max(packed_rates)
            verdicts.append(
                f"{'PASS' if best >= TARGET_PACKED_RATE else 'FAIL'} packed {best:,.0f} sentences/s at 0 ms "
                f"(best concurrency) >= {TARGET_PACKED_RATE:,.0f}"
            )
        if packed_tokens:
            tokens = statistics.median(packed_tokens)
            verdicts.append(
                f"{'PASS' if tokens <= TARGET_TOKENS else 'FAIL'} packed prompt tokens a sentence {tokens:,.0f} "
                f"<= {TARGET_TOKENS:,.0f}"
            )
        for verdict in verdicts:
            console.print(verdict)
    finally:
        for worker in workers:
            worker.terminate()
        if cleanup is not None:
            cleanup.cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main())
