from labeling.sources.grounding import ground

REPORT = "FINDINGS: Small left pleural effusion.\n IMPRESSION: Small LEFT   pleural\n effusion, unchanged."


def test_exact_match_prefers_the_unit_span():
    start = REPORT.index("IMPRESSION")
    span = ground("pleural", REPORT, start, len(REPORT))
    assert span is not None
    assert span.start > start and span.exact  # the second mention, inside the unit


def test_exact_match_anywhere_when_not_in_unit():
    span = ground("Small left pleural effusion", REPORT, REPORT.index("IMPRESSION"), len(REPORT))
    assert span is not None
    assert (span.start, span.exact) == (10, True)


def test_normalized_alignment_corrects_offsets():
    start = REPORT.index("IMPRESSION")
    span = ground("small left pleural effusion, unchanged.", REPORT, start, len(REPORT))
    assert span is not None
    assert not span.exact
    assert REPORT[span.start : span.end] == span.text == "Small LEFT   pleural\n effusion, unchanged"


def test_ungrounded_quotes():
    assert ground("large right pneumothorax", REPORT) is None
    assert ground("", REPORT) is None
    assert ground(" . ", REPORT) is None
