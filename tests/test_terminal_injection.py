"""Issue 12, item 2: whatever comes from data is printed as literal text.

Report ids, dataset names, report text, file paths and raw model output that hold rich markup
(`[bold red]`, `[link=...]`, a stray `[/x]`, a model's `[/INST]`) or terminal escapes (ANSI
CSI, OSC 8 hyperlinks) are shown as they are: the markup as written, the control characters
made visible, never a crash, and no ESC byte on the terminal."""

from __future__ import annotations

import json
import re

from fault_server import FaultServer

MARKUP = ["[bold red]x[/bold red]", "[link=http://e]x[/link]", "[/x]", "[/INST]"]
ANSI = "\x1b[31m"
OSC = "\x1b]8;;http://e\x07"
PAYLOAD = " ".join(MARKUP) + f" {ANSI}red {OSC}link"
# How the control characters must be shown: each as its escape, visibly.
SHOWN = ["\\x1b[31m", "\\x1b]8;;http://e\\x07"]
BACKSLASHED = "trailing backslash \\"


def assert_literal(out: str, *texts: str) -> None:
    assert "\x1b" not in out and "\x07" not in out, "an escape sequence reached the terminal"
    flat = " ".join(out.split())  # a table may wrap a cell; compare without the layout
    for text in texts:
        assert " ".join(text.split()) in flat, f"{text!r} is not shown literally"


def test_the_helper_makes_any_text_literal():
    from rich.console import Console
    from rich.text import Text

    from labeling.core.terminal import literal, visible

    everything = "".join(map(chr, range(0x00, 0x100))) + "\u202e\u2066\udcff" + PAYLOAD
    console = Console(width=200, color_system="truecolor", force_terminal=True)
    with console.capture() as captured:
        console.print(f"[bold]{literal(everything)}[/bold] {literal(BACKSLASHED)}")
        console.print(Text(visible(everything)))
    out = captured.get()
    # Only rich's own styling codes remain: ESC [ ... m around the text, nothing from the data.
    assert not re.sub(r"\x1b\[[0-9;]*m", "", out).count("\x1b")
    assert "\x07" not in out and "\r" not in out and "\u202e" not in out and "\udcff" not in out
    for text in (*MARKUP, *SHOWN, "\\x00", "\\x9b", "\\u202e", "\\udcff", BACKSLASHED):
        assert text in out
    assert visible("a\tb\nc") == "a\tb\nc"  # layout characters are kept
    assert visible("a\r\nb") == "a\nb"


def ingest_payload(tmp_path, cli):
    db = tmp_path / "t.duckdb"
    path = tmp_path / "r.jsonl"
    report_id = f"id {MARKUP[0]} {MARKUP[2]} {ANSI}"
    path.write_text(
        json.dumps({"id": report_id, "text": f"FINDINGS: Small left pleural effusion {PAYLOAD}."})
        + "\n"
        + json.dumps({"id": "raw1", "text": "FINDINGS: RAWPAYLOAD effusion."})
        + "\n"
    )
    dataset = f"ds {MARKUP[1]} {MARKUP[3]} {OSC}"
    code, out, err = cli("ingest", path, "--db", db, "--dataset", dataset)
    assert code == 0, err
    return db, report_id, dataset


def test_reports_show_list_and_stats_show_data_literally(tmp_path, cli):
    db, report_id, dataset = ingest_payload(tmp_path, cli)
    code, out, err = cli("reports", "show", report_id, "--db", db)
    assert code == 0, err
    assert_literal(out, *MARKUP, *SHOWN, "id [bold red]x[/bold red] [/x] \\x1b[31m", "ds [link=http://e]x[/link]")
    code, out, err = cli("reports", "list", "--db", db)
    assert code == 0, err
    assert_literal(out, "[bold red]x[/bold red]", "[/INST]", "\\x1b]8;;http://e\\x07")
    code, out, err = cli("stats", "--db", db)
    assert code == 0, err
    assert_literal(out, "[link=http://e]x[/link]", "[/INST]", "\\x1b]8;;http://e\\x07")


def test_errors_quoting_input_are_one_literal_line(tmp_path, cli):
    db, _, _ = ingest_payload(tmp_path, cli)
    code, out, err = cli("reports", "show", f"nope {MARKUP[2]} {ANSI}", "--db", db)
    assert code == 1
    assert_literal(err, "no report with id 'nope [/x] \\x1b[31m'")
    assert len(err.strip().splitlines()) == 1


class RawServer(FaultServer):
    """The fault server, answering units marked RAWPAYLOAD with the payload as raw output."""

    def respond(self, body: dict):
        status, reply, headers = super().respond(body)
        if "RAWPAYLOAD" in json.dumps(body["messages"][-1]["content"]) and isinstance(reply, dict):
            reply["choices"][0]["message"]["content"] = f"{PAYLOAD} not json"
        return status, reply, headers


def test_failures_show_raw_model_output_literally(tmp_path, cli):
    db, _, _ = ingest_payload(tmp_path, cli)
    with RawServer() as server:
        code, out, err = cli(
            "label", "--db", db, "--backend", "openai", "--base-url", server.base_url, "--model", "fake-model",
            "--name", "inj", "--max-retries", "0", "--report", "raw1",
        )  # fmt: skip
    assert code in (0, 4), err  # the unit failed validation (the exit code of such a run is item 4's)
    assert_literal(out, "run inj")
    code, out, err = cli("failures", "inj", "--db", db)
    assert code == 0, err
    assert_literal(out, "[bold red]x[/bold red]", "[/x]", "[/INST]", "\\x1b[31m")
    code, out, err = cli("runs", "show", "inj", "--db", db)
    assert code == 0, err
    assert "\x1b" not in out


def test_ingest_of_a_path_with_markup_and_escapes(tmp_path, cli):
    folder = tmp_path / f"in {MARKUP[2]} {MARKUP[0]}"
    folder.mkdir(parents=True)  # "[/x]" holds a slash: a folder inside a folder
    path = folder / f"r [red]y {ANSI}x.jsonl"  # a file name holds no "/", so no closing tag
    path.write_text(json.dumps({"id": "a", "text": "Lungs are clear."}) + "\n")
    db = tmp_path / "p.duckdb"
    code, out, err = cli("ingest", path, "--db", db)
    assert code == 0, err
    assert_literal(out, "in [/x] [bold red]x[/bold red]", "r [red]y \\x1b[31mx.jsonl")
    assert_literal(err)
    # the default dataset is the file's stem: it is data too
    code, out, err = cli("reports", "list", "--db", db)
    assert code == 0, err
    assert_literal(out, "r [red]y \\x1b[31mx")
    code, out, err = cli("ingest", folder / f"missing {MARKUP[2]}.csv", "--db", db)
    assert code == 1
    assert_literal(err, "[/x]")
