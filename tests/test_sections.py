from labeling.ingest.sections import canonical_header, detect_sections

MIMIC = (
    "                                 FINAL REPORT\n"
    " EXAMINATION:  CHEST (PA AND LAT)\n"
    "\n"
    " INDICATION:  ___ with fever.\n"
    "\n"
    " COMPARISON:  None.\n"
    "\n"
    " FINDINGS:\n"
    " \n"
    " The lungs are clear.  Note: the patient is rotated.\n"
    " \n"
    " IMPRESSION:\n"
    " \n"
    " No acute cardiopulmonary process.\n"
)


def test_mimic_sections_in_order_with_bodies():
    sections = detect_sections(MIMIC)
    assert [s.name for s in sections] == [
        "final report",
        "examination",
        "indication",
        "comparison",
        "findings",
        "impression",
    ]
    findings = sections[4]
    assert MIMIC[findings.start : findings.end].strip() == "The lungs are clear.  Note: the patient is rotated."
    assert findings.header == "FINDINGS:"
    assert MIMIC[sections[5].start : sections[5].end].strip() == "No acute cardiopulmonary process."
    # sections tile the text after the first header, in order, without overlap
    for before, after in zip(sections, sections[1:]):
        assert before.end <= after.start


def test_report_without_headers_is_one_unnamed_section():
    text = "Heart size normal. Lungs are clear."
    sections = detect_sections(text)
    assert len(sections) == 1 and sections[0].name is None
    assert (sections[0].start, sections[0].end) == (0, len(text))


def test_text_before_first_header_is_kept():
    text = "Portable chest.\nIMPRESSION: Clear lungs."
    names = [(s.name, text[s.start : s.end].strip()) for s in detect_sections(text)]
    assert names == [(None, "Portable chest."), ("impression", "Clear lungs.")]


def test_header_synonyms_and_unknown_capitals():
    assert canonical_header("Impression") == "impression"
    assert canonical_header("CONCLUSION") == "impression"
    assert canonical_header("Clinical History") == "indication"
    assert canonical_header("PA AND LATERAL VIEWS") == "pa and lateral views"
    assert canonical_header("Note") is None  # an ordinary word with a colon is not a header


def test_inline_header_and_lowercase_known_header():
    text = "Findings: Small effusion.\nImpression: Effusion."
    sections = detect_sections(text)
    assert [(s.name, text[s.start : s.end].strip()) for s in sections] == [
        ("findings", "Small effusion."),
        ("impression", "Effusion."),
    ]
