"""Ingest of the real IU X-ray reports (skipped where ../shared/data is absent)."""

import pytest
from conftest import IU_REPORTS, ingest_file, needs_iu_xray

from labeling.store.store import Store

pytestmark = [needs_iu_xray, pytest.mark.dataset]


def test_iu_xray_ingest_and_reingest(tmp_path):
    db = tmp_path / "iu.duckdb"
    first = ingest_file(db, IU_REPORTS)
    assert first.format == "iu-xray" and first.read == 3851
    # 25 rows of the collection carry no report text at all (only MeSH "normal"): skipped, listed
    assert len(first.skipped_blank) == 25 and "16" in first.skipped_blank
    assert len(first.added) == 3851 - 25
    with Store(db, read_only=True) as s:
        sentences, findings_impression, bad_offsets = s.con.execute("""
            SELECT count(*), count(*) FILTER (WHERE section IN ('findings', 'impression')),
                   count(*) FILTER (WHERE substr(r.text, s.start_char + 1, s.end_char - s.start_char) != s.text)
            FROM sentences s JOIN reports r USING (report_key)""").fetchall()[0]
        with_images = s.con.execute("SELECT count(*) FROM reports WHERE len(image_paths) > 0").fetchall()[0][0]
    assert bad_offsets == 0
    assert 20_000 < findings_impression < 27_000  # a naive split gives 23,630
    assert sentences > findings_impression
    assert with_images > 3_700
    second = ingest_file(db, IU_REPORTS)
    assert (len(second.added), len(second.changed), second.unchanged) == (0, 0, 3851 - 25)
