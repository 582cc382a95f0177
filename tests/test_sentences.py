from labeling.ingest.sections import detect_sections
from labeling.ingest.sentences import normalize_sentence, sentence_hash, split_sentences_many


def sentences_of(text):
    return split_sentences_many([text], [detect_sections(text)])[0]


def test_offsets_are_exact_and_sections_recorded():
    text = (
        "FINDINGS: There is a 1.5 cm nodule\n in the right apex.  No pleural effusion.\n\n"
        "IMPRESSION: 1. Nodule.  2. Dr. Smith was paged at 3 p.m."
    )
    sentences = sentences_of(text)
    for s in sentences:
        assert text[s.start : s.end] == s.text
    assert [(s.section, s.text) for s in sentences] == [
        ("findings", "There is a 1.5 cm nodule\n in the right apex."),
        ("findings", "No pleural effusion."),
        ("impression", "Nodule."),
        ("impression", "Dr. Smith was paged at 3 p.m."),
    ]
    assert [s.index for s in sentences] == [0, 1, 2, 3]


def test_blank_line_is_a_boundary_and_headers_are_not_sentences():
    text = "FINDINGS:\n\nHeart size normal\n\nLungs clear"
    assert [s.text for s in sentences_of(text)] == ["Heart size normal", "Lungs clear"]


def test_abbreviations_do_not_split():
    text = "Heart size is normal (approx. 12 cm). Compare vs. prior exam."
    assert [s.text for s in sentences_of(text)] == ["Heart size is normal (approx. 12 cm).", "Compare vs. prior exam."]


def test_normalization_and_hash():
    assert normalize_sentence("  The  lungs are\nCLEAR. ") == "the lungs are clear"
    assert sentence_hash("The lungs are clear.") == sentence_hash("the lungs  are clear")
    assert sentence_hash("The lungs are clear.") != sentence_hash("The lungs are not clear.")


def test_many_matches_one_by_one():
    texts = ["FINDINGS: Lungs clear. Heart normal.", "No headers here. Second one.", "IMPRESSION: Normal."]
    batch = split_sentences_many(texts, [detect_sections(t) for t in texts])
    assert batch == [sentences_of(t) for t in texts]
    assert [len(b) for b in batch] == [2, 2, 1]
