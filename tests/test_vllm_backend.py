"""The in-process vLLM backend: runs only where vllm is importable, a GPU is present, and a
local model folder is named in CLALA_VLLM_MODEL (weights cannot be downloaded in tests)."""

import json
import os

import pytest

vllm = pytest.importorskip("vllm")
torch = pytest.importorskip("torch")
MODEL = os.environ.get("CLALA_VLLM_MODEL")
pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="vLLM needs a GPU"),
    pytest.mark.skipif(not MODEL, reason="set CLALA_VLLM_MODEL to a local model folder"),
]


def test_vllm_labels_are_valid_and_grounded(tmp_path):
    from conftest import ingest_file

    from labeling.sources.llm import LabelOptions, LlmRequest, label_with_llm
    from labeling.store.store import Store

    path = tmp_path / "r.jsonl"
    path.write_text(json.dumps({"id": "a", "text": "FINDINGS: Small left pleural effusion. No pneumothorax."}) + "\n")
    db = tmp_path / "v.duckdb"
    ingest_file(db, path)
    with Store(db) as store:
        summary = label_with_llm(store, LlmRequest(name="vllm-run", options=LabelOptions(backend="vllm", model=MODEL)))
    assert summary.status.value == "complete" and summary.counts["model_calls"] == 2
    with Store(db, read_only=True) as store:
        rows = store.con.execute("""SELECT l.evidence_start, l.evidence_end, l.evidence_text, r.text
                                    FROM labels l JOIN reports r USING (report_key)""").fetchall()
    assert rows
    assert all(text[start:end] == evidence for start, end, evidence, text in rows)
