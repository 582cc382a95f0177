"""`clala label --dry-run`: requests, the static/dynamic token split and the cost, before running."""

import re

from fault_server import FaultServer
from test_llm_source import label_reports, make_db, options, plan_of

from labeling.sources.llm import LabelOptions
from labeling.sources.llm.run import Prices, dry_run
from labeling.store.store import Store

REPORTS = {f"r{i}": f"FINDINGS: Left effusion {i}. No pneumothorax {i}. Stable atelectasis {i}." for i in range(5)}


def offline(**overrides):
    return LabelOptions(
        **{
            "backend": "openai",
            "base_urls": ["http://127.0.0.1:9/v1"],
            "model": "fake-model",
            "structured_output": "json_schema",
            **overrides,
        }
    )


def test_packing_divides_the_calls_and_the_static_tokens(tmp_path):
    db = make_db(tmp_path, REPORTS)
    alone = plan_of(db, offline())
    packed = plan_of(db, offline(unit="sentences", per_call=4))
    assert (alone.units, alone.calls_needed, packed.calls_needed, packed.units_per_call) == (15, 15, 4, 4)
    assert alone.est_static_tokens + alone.est_dynamic_tokens in range(
        alone.est_prompt_tokens - 1, alone.est_prompt_tokens + 2
    )
    assert alone.static_fraction > 0.95  # one sentence carries the whole prefix
    assert packed.est_static_tokens < alone.est_static_tokens / 3  # the prefix is paid once a request
    assert packed.est_prompt_tokens / 15 < alone.est_prompt_tokens / 15 / 3
    assert packed.est_dynamic_tokens > alone.est_dynamic_tokens / 2  # each sentence is still sent once


def test_the_estimate_matches_what_a_run_sends(tmp_path):
    db = make_db(tmp_path, REPORTS)
    plan = plan_of(db, offline(unit="sentences", per_call=4, batch_size=100))
    with FaultServer() as server:
        label_reports(db, "run", options(server, unit="sentences", per_call=4, batch_size=100))
        requests = server.chat_requests()
    assert len(requests) == plan.calls_needed
    static = sum(sum(len(m["content"]) for m in r["body"]["messages"][:-1]) for r in requests)
    dynamic = sum(len(r["body"]["messages"][-1]["content"]) for r in requests)
    assert (plan.est_static_tokens, plan.est_dynamic_tokens) == (static // 4, dynamic // 4)
    assert plan_of(db, offline(unit="sentences", per_call=4)).calls_needed == 0  # all cached now


def test_cost_from_prices(tmp_path):
    db = make_db(tmp_path, REPORTS)
    with Store(db, read_only=True) as store:
        plan = dry_run(store, offline(unit="sentences"), prices=Prices(input_per_million=2.5, output_per_million=10))
        free = dry_run(store, offline(unit="sentences"))
    assert free.est_cost is None
    assert plan.est_cost == (plan.est_prompt_tokens * 2.5 + plan.est_completion_tokens * 10) / 1e6
    assert plan.est_completion_tokens == 15 * 60  # no cached answers yet: 60 a unit


def test_dry_run_command_prints_the_split_and_cost(tmp_path, cli):
    db = make_db(tmp_path, REPORTS)
    base = ("label", "--db", db, "--backend", "openai", "--base-url", "http://127.0.0.1:9/v1", "--model", "m")
    code, out, err = cli(
        *base, "--unit", "sentences", "--per-call", "8", "--dry-run", "--price-in", "3", "--price-out", "15"
    )
    assert code == 0, err
    calls_found = re.search(r"model calls needed\s*│?\s*([\d,]+)", out)
    cost_found = re.search(r"est\. cost: ([\d.,]+)", out)
    assert calls_found and cost_found, out
    calls = int(calls_found.group(1))
    assert calls == 2 and "static (same on every call)" in out and "units per call" in out
    cost = float(cost_found.group(1).replace(",", ""))
    with Store(db, read_only=True) as store:
        plan = dry_run(
            store,
            offline(unit="sentences", per_call=8, model="m"),
            prices=Prices(input_per_million=3, output_per_million=15),
        )
    assert plan.est_cost is not None and abs(cost - plan.est_cost) < 1e-4
    code, _, err = cli(*base, "--price-in", "3")
    assert code == 1 and "--price-in and --price-out go with --dry-run" in err
    code, _, err = cli(*base, "--dry-run", "--price-out", "-1")
    assert code == 1 and "must not be negative" in err
