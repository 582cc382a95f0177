import json
from typing import Any

from conftest import ingest_file

from labeling.ingest.sentences import normalize_sentence
from labeling.sources.llm.units import build_units, cache_key
from labeling.store.store import Store

TEXTS = {
    "a": "INDICATION: Cough, evaluate for pneumonia.\nFINDINGS: No pneumothorax. Left effusion.\nIMPRESSION: Effusion.",
    "b": "FINDINGS: NO  pneumothorax",
    "c": "Heart size normal. No pneumothorax.",
}


def units_for(tmp_path, **kwargs):
    path = tmp_path / "r.jsonl"
    path.write_text("".join(json.dumps({"id": k, "text": v}) + "\n" for k, v in TEXTS.items()))
    db = tmp_path / "u.duckdb"
    ingest_file(db, path)
    with Store(db, read_only=True) as store:
        keys = [r[0] for r in store.con.execute("SELECT report_key FROM reports ORDER BY report_id").fetchall()]
        return keys, *build_units(store, keys, **kwargs)


def test_sentence_units_are_deduplicated_and_skip_indication(tmp_path):
    keys, units, report_units, texts = units_for(tmp_path)
    assert sorted(units) == ["effusion", "heart size normal", "left effusion", "no pneumothorax"]
    assert "evaluate for pneumonia" not in " ".join(units)  # indication is not read
    occurrences = units["no pneumothorax"].occurrences
    assert [o.report_key for o in occurrences] == keys  # a, b and c share one unit
    for o in occurrences:
        assert normalize_sentence(texts[o.report_key][o.start : o.end]) == "no pneumothorax"
    assert report_units[keys[0]] == ["no pneumothorax", "left effusion", "effusion"]


def test_context_makes_units_distinct(tmp_path):
    keys, units, report_units, _ = units_for(tmp_path, context=1)
    no_ptx = [u for u in units.values() if u.text.lower().startswith("no")]
    assert len(no_ptx) == 3  # same sentence, different neighbours
    assert any(u.context == "[...] Left effusion." for u in no_ptx)


def test_report_units_span_the_described_sections(tmp_path):
    keys, units, report_units, texts = units_for(tmp_path, unit="report")
    [identity] = report_units[keys[0]]
    unit = units[identity]
    assert unit.text == "No pneumothorax. Left effusion.\nIMPRESSION: Effusion."


def test_cache_key_covers_everything_that_changes_an_answer():
    base: dict[str, Any] = dict(
        identity="no pneumothorax", model="m", prompt_sha256="p", vocabulary_version="v", decoding={"temperature": 0}
    )
    key = cache_key(**base)
    assert key == cache_key(**base)
    for change in (
        dict(model="m2"),
        dict(prompt_sha256="p2"),
        dict(vocabulary_version="v2"),
        dict(decoding={"temperature": 0.5}),
        dict(identity="no effusion"),
    ):
        assert cache_key(**{**base, **change}) != key
    assert cache_key(**base, sample=1) != key
