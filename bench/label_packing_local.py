"""Benchmark: what packing does to the labels of a real model (issue 16, item 1): the local
llama.cpp backend, one sentence a call against K a call, on the same reports.

One embedded llama.cpp server (`LocalLlamaServer()`, the shipped Gemma 3 270M GGUF unless
`--model-path`; context 8,192 tokens, so that a pack's answer fits) is started, warmed with one
request, and kept for both runs. The reports that ship with clala (or the first `--limit` of them)
are labeled twice through that server, in the same run, no cache: `--unit sentence` (the baseline)
and `--unit sentences --per-call K`. For each run: wall time, requests, prompt and completion
tokens, lone re-asks (packed: sentences whose part of the pack was missing or invalid), failed
reports. Agreement: the stored labels as (report, finding, region, status) cells; the packed run's
precision and recall against the one-a-call run, and the share of cells on which both agree.

    python bench/label_packing_local.py [--per-call 8] [--limit 8] [--concurrency 1] [--model-path M.gguf]

Prints the figures; exits 0 whichever run labels better, 1 only when a run stops with reports
pending.
"""

from __future__ import annotations

import argparse
import signal
import sys
import time
from pathlib import Path

from _common import bench_workdir
from rich.console import Console
from rich.table import Table

from labeling.ingest import Columns, IngestOptions, ingest, sample_reports_path
from labeling.sources.llm import LabelOptions, LlmRequest, label_with_llm
from labeling.sources.llm.local_server import LocalLlamaServer
from labeling.store.store import Store

console = Console(soft_wrap=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--per-call", type=int, default=8)
    parser.add_argument("--limit", type=int, default=None, help="at most this many sample reports")
    parser.add_argument("--concurrency", type=int, default=1, help="requests in flight (llama.cpp: 1 slot)")
    parser.add_argument("--model-path", type=Path, default=None)
    parser.add_argument("--keep", type=Path, default=None)
    args = parser.parse_args()
    # A plain `kill` (or `timeout`) would end Python without unwinding, leaving the llama.cpp server running.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    workdir, cleanup = bench_workdir(args.keep)
    db = workdir / "packing_local.duckdb"
    with Store(db) as store:
        ingested = ingest(store, sample_reports_path(), IngestOptions(columns=Columns(id="id", text="text")))
    console.print(f"{len(ingested.added)} sample reports, {ingested.sentences} sentences")
    # a pack's answer may take per_call times a sentence's max_tokens: room for it beside the prompt
    server = LocalLlamaServer(args.model_path, n_ctx=8192)
    started = time.perf_counter()
    server.start()
    rows = []
    try:
        base = dict(
            backend="openai",
            base_urls=[server.base_url],
            model=server.model_name,
            structured_output="json_schema",
            concurrency=args.concurrency,
            use_cache=False,
            limit=args.limit,
        )
        warm = LabelOptions.model_validate({**base, "report_ids": ingested.added[:1], "limit": None})
        with Store(db) as store:
            label_with_llm(store, LlmRequest(name="warm-up", options=warm))
        console.print(f"server up and warm in {time.perf_counter() - started:.1f} s")
        for name, unit, per_call in (("one", "sentence", 1), ("packed", "sentences", args.per_call)):
            options = LabelOptions.model_validate({**base, "unit": unit, "per_call": per_call})
            t0 = time.perf_counter()
            with Store(db) as store:
                result = label_with_llm(store, LlmRequest(name=name, options=options))
                run = store.run(name)
                table = store.labels(name).select(["report_key", "finding", "region", "status"]).to_pylist()
                cells = {tuple(row.values()) for row in table}
            wall = time.perf_counter() - t0
            if result.reports_pending:
                console.print(f"[red]{name}: {result.reports_pending} reports pending ({result.stopped_because})")
                return 1
            rows.append((name, result, run, cells, wall))
            console.print(f"{name}: {wall:.1f} s, {result.counts['model_calls']} requests, {len(cells)} label cells")
    finally:
        server.stop()
        if cleanup is not None:
            cleanup.cleanup()
    table = Table(
        "run", "wall s", "requests", "prompt tokens", "completion tokens", "lone re-asks", "reports failed",
        "label cells", title=f"Packing on the local backend ({server.model_name})", title_justify="left",
    )  # fmt: skip
    for name, result, run, cells, wall in rows:
        table.add_row(
            name, f"{wall:.1f}", str(result.counts["model_calls"]), f"{run.prompt_tokens:,}",
            f"{run.completion_tokens:,}", str(result.counts["lone_reasks"]), str(result.reports_failed),
            str(len(cells)),
        )  # fmt: skip
    console.print(table)
    one, packed = rows[0][3], rows[1][3]
    both = one & packed
    precision = len(both) / len(packed) if packed else float("nan")
    recall = len(both) / len(one) if one else float("nan")
    union = one | packed
    console.print(
        f"packed against one a call: precision {precision:.3f}, recall {recall:.3f}, "
        f"cells agreed {len(both)} of {len(union)} ({len(both) / len(union) if union else float('nan'):.3f})"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
