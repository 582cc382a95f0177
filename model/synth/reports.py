"""MIMIC-CXR-style report text for a phantom, and the report truth: what the text says.

Each reported lesion becomes a noun phrase from several paraphrases per finding, a location
phrase from several per region (or none, where the finding has a default place), an optional
severity word and comparison word, in one of several sentence frames; some are hedged (the report
truth marks them uncertain), some pairs share a sentence. Findings not reported may be negated,
normal statements fill in, and an IMPRESSION restates the main findings. Every statement records
its sentence's character span in the final text, so the report truth has exact evidence.

Realistic imperfection is the caller's choice (`reported=False` lesions are simply left out; a
lesion drawn `subtle` is hedged more often).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from model.synth.render import Lesion

# --- phrase tables ---------------------------------------------------------------------------------
# Region (or region pair) -> (prepositional phrases, adjective phrases). Every phrase names exactly
# those regions in the vocabulary's terms except the bare side words ("right", "left"), which a
# reader resolves by laterality.
LOCATIONS: dict[tuple[str, ...], tuple[list[str], list[str]]] = {
    ("right upper lung zone",): (
        ["in the right upper lobe", "in the right upper lung", "in the right upper zone"],
        ["right upper lobe", "right upper lung"],
    ),
    ("right mid lung zone",): (
        ["in the right middle lobe", "in the right mid lung", "in the right midlung"],
        ["right middle lobe", "right mid lung"],
    ),
    ("right lower lung zone",): (
        ["in the right lower lobe", "at the right lung base", "at the right base"],
        ["right lower lobe", "right basilar", "right base"],
    ),
    ("left upper lung zone",): (
        ["in the left upper lobe", "in the left upper lung", "in the left upper zone"],
        ["left upper lobe", "left upper lung"],
    ),
    ("left mid lung zone",): (
        ["in the lingula", "in the left mid lung", "in the left midlung"],
        ["lingular", "left mid lung"],
    ),
    ("left lower lung zone",): (
        ["in the left lower lobe", "at the left lung base", "at the left base", "in the retrocardiac region"],
        ["left lower lobe", "left basilar", "retrocardiac"],
    ),
    ("right lower lung zone", "left lower lung zone"): (
        ["at both lung bases", "in both lower lobes"],
        ["bibasilar", "bibasal", "bilateral lower lobe"],
    ),
    ("right upper lung zone", "left upper lung zone"): (
        ["in both upper lobes", "in the upper lungs"],
        ["bilateral upper lobe"],
    ),
    ("right mid lung zone", "left mid lung zone"): (["in the mid lungs", "in both mid lungs"], ["bilateral mid lungs"]),
    ("right lung",): (["in the right lung", "in the right hemithorax"], ["right"]),
    ("left lung",): (["in the left lung", "in the left hemithorax"], ["left"]),
    ("right lung", "left lung"): (["in both lungs", "bilaterally"], ["bilateral"]),
    ("right hilar structures",): (["at the right hilum"], ["right"]),
    ("left hilar structures",): (["at the left hilum"], ["left"]),
    ("right hilar structures", "left hilar structures"): (["at both hila"], ["bilateral"]),
}

SEVERITY_WORDS = {
    "size": {
        "mild": ["small", "trace", "small"],
        "moderate": ["moderate", "moderate-sized"],
        "severe": ["large", "large"],
    },
    "degree": {"mild": ["mild", "minimal", "slight"], "moderate": ["moderate"], "severe": ["severe", "marked"]},
}

# finding -> (singular nouns, plural nouns, severity scale or None, location kind)
NOUNS: dict[str, tuple[list[str], list[str], str | None, str]] = {
    "lung opacity": (
        ["opacity", "patchy opacity", "ill-defined opacity", "focal opacity", "opacification"],
        ["opacities", "patchy opacities"],
        "degree",
        "zone",
    ),
    "consolidation": (
        ["consolidation", "focal consolidation", "airspace consolidation", "dense consolidation"],
        ["consolidations"],
        None,
        "zone",
    ),
    "atelectasis": (["atelectasis", "atelectatic changes", "volume loss"], ["atelectasis"], "degree", "zone"),
    "linear/patchy atelectasis": (
        ["linear atelectasis", "plate-like atelectasis", "subsegmental atelectasis", "patchy atelectasis"],
        ["linear atelectasis", "subsegmental atelectasis"],
        None,
        "zone",
    ),
    "pulmonary edema/hazy opacity": (
        ["pulmonary edema", "interstitial edema", "interstitial pulmonary edema"],
        ["pulmonary edema"],
        "degree",
        "diffuse",
    ),
    "pleural effusion": (
        ["pleural effusion", "effusion", "pleural effusion"],
        ["pleural effusions", "effusions"],
        "size",
        "side",
    ),
    "pneumothorax": (["pneumothorax"], ["pneumothoraces"], "size", "side"),
    "enlarged cardiac silhouette": (
        ["cardiomegaly", "enlargement of the cardiac silhouette", "cardiac enlargement"],
        [],
        "degree",
        "none",
    ),
    # "nodular density" is a lung opacity with a nodular shape (the vocabulary's hierarchy decision).
    "mass/nodule (not otherwise specified)": (["nodule", "pulmonary nodule", "lung nodule"], [], None, "zone"),
    "calcified nodule": (["calcified nodule", "calcified pulmonary nodule", "calcified lung nodule"], [], None, "zone"),
    "enlarged hilum": (
        ["hilar enlargement", "hilar prominence", "hilar fullness"],
        ["hilar enlargement"],
        None,
        "hilum",
    ),
    "scoliosis": (["scoliosis", "scoliosis of the thoracic spine"], [], "degree", "none"),
    "mediastinal widening": (
        ["mediastinal widening", "widening of the mediastinum", "widened mediastinum"],
        [],
        None,
        "none",
    ),
}

# Frames: {np} is the noun phrase with its modifiers; {be} agrees with it.
FRAMES = ["{NP}.", "There is {np}.", "{NP} is noted.", "{NP} {be} present.", "{NP} {be} seen."]
HEDGED_FRAMES = [
    "Possible {np}.",
    "{NP} cannot be excluded.",
    "There may be {np}.",
    "Findings could reflect {np}.",
    "Questionable {np}.",
    "Probable {np}.",
]
TEMPORAL_WORDS = {
    "new": ["new", "newly developed"],
    "worsened": ["increased", "worsening"],
    "improved": ["decreased", "improving"],
    "unchanged": ["unchanged", "stable", "persistent"],
}
PNEUMONIA_TAILS = [
    ", concerning for pneumonia",
    ", which may represent pneumonia",
    "; pneumonia is not excluded",
    ", possibly pneumonia",
]

NEGATIONS: list[tuple[str, tuple[str, ...]]] = [
    ("No pleural effusion or pneumothorax.", ("pleural effusion", "pneumothorax")),
    ("There is no pleural effusion or pneumothorax.", ("pleural effusion", "pneumothorax")),
    ("No pneumothorax is seen.", ("pneumothorax",)),
    ("There is no pneumothorax.", ("pneumothorax",)),
    ("No focal consolidation.", ("consolidation",)),
    ("There is no focal consolidation to suggest pneumonia.", ("consolidation", "pneumonia")),
    (
        "No focal consolidation, pleural effusion or pneumothorax.",
        ("consolidation", "pleural effusion", "pneumothorax"),
    ),
    ("No pulmonary edema.", ("pulmonary edema/hazy opacity",)),
    ("There is no evidence of pulmonary edema.", ("pulmonary edema/hazy opacity",)),
    ("No large pleural effusion.", ("pleural effusion",)),
    ("No pleural effusions.", ("pleural effusion",)),
    ("Heart size is normal.", ("enlarged cardiac silhouette",)),
    ("The heart is not enlarged.", ("enlarged cardiac silhouette",)),
    ("No cardiomegaly.", ("enlarged cardiac silhouette",)),
    ("No displaced rib fracture is identified.", ("rib fracture",)),
    ("No suspicious nodule or mass is seen.", ("mass/nodule (not otherwise specified)",)),
]
NORMAL_LUNGS = [
    "The lungs are clear.",
    "Lungs are well expanded and clear.",
    "The lungs are clear without focal opacity.",
]
BONE_FINDINGS = {"rib fracture", "clavicle fracture", "scoliosis", "spinal fracture", "bone lesion"}
# Normal statements with the findings they deny: one is left out when the report describes any of them.
NORMAL_OTHER: dict[str, set[str]] = {
    "The cardiomediastinal silhouette is within normal limits.": {
        "enlarged cardiac silhouette",
        "mediastinal widening",
    },
    "Hilar contours are normal.": {"enlarged hilum"},
    "No acute osseous abnormality.": BONE_FINDINGS,
    "The mediastinal contours are unremarkable.": {"mediastinal widening"},
    "Osseous structures are unremarkable.": BONE_FINDINGS,
}
NORMAL_IMPRESSIONS = [
    "No acute cardiopulmonary process.",
    "No acute intrathoracic abnormality.",
    "Normal chest radiograph.",
    "No evidence of acute disease.",
]
LUNG_FINDINGS = {
    "lung opacity",
    "consolidation",
    "atelectasis",
    "linear/patchy atelectasis",
    "pulmonary edema/hazy opacity",
    "mass/nodule (not otherwise specified)",
    "calcified nodule",
    "pneumonia",
}
# Negation sentences with this wording lose the absent label when the finding is reported
# (a report does not say "no X" of an X it describes).
NEGATION_RATE = 0.75


@dataclass
class Statement:
    """One thing the report says: finding, regions, status, and the sentence that says it."""

    finding: str
    regions: tuple[str, ...]
    status: str  # present | absent | uncertain
    severity: str | None = None
    temporal: str | None = None
    lesion: int | None = None  # index of the image lesion it describes (None: none)
    start: int = 0
    end: int = 0
    text: str = ""


@dataclass
class Sentence:
    text: str
    statements: list[Statement] = field(default_factory=list)


@dataclass
class ReportDraft:
    text: str
    statements: list[Statement]
    has_prior: bool


def _cap(text: str) -> str:
    return text[:1].upper() + text[1:]


def _pick(rng: np.random.Generator, options: list[str]) -> str:
    return options[int(rng.integers(len(options)))]


def _location(
    rng: np.random.Generator, lesion: Lesion, vocabulary_defaults: dict[str, tuple[str, ...]]
) -> tuple[tuple[str, ...], str | None, str | None]:
    """(regions, prepositional phrase, adjective phrase) for a lesion; phrases None when unlocalized."""
    kind = NOUNS[lesion.finding][3] if lesion.finding in NOUNS else "special"
    home = tuple(lesion.home)
    if kind == "none" or (kind == "diffuse" and rng.random() < 0.5):
        return vocabulary_defaults[lesion.finding], None, None
    if kind == "zone" and rng.random() < 0.2:
        home = tuple(f"{s} lung" for s in lesion.sides)  # a coarser reader: just the side
    key = home if home in LOCATIONS else tuple(sorted(home))
    if key not in LOCATIONS:
        return home, None, None
    ins, adjs = LOCATIONS[key]
    loc_in, loc_adj = _pick(rng, ins), _pick(rng, adjs)
    if kind in ("side", "hilum"):
        loc_in = None  # "small right pleural effusion", "right hilar enlargement"
    elif loc_adj in ("right", "left", "bilateral") and kind == "zone":
        loc_adj = None  # "opacity in the right lung", never "right opacity"
    return home, loc_in, loc_adj


def _noun_phrase(
    rng: np.random.Generator,
    lesion: Lesion,
    plural: bool,
    loc_in: str | None,
    loc_adj: str | None,
    temporal: str | None,
) -> tuple[str, str | None]:
    """(noun phrase, severity stated) for a lesion."""
    singular, plurals, scale, _ = NOUNS[lesion.finding]
    noun = _pick(rng, plurals if plural and plurals else singular)
    severity = None
    words = []
    if temporal:
        words.append(_pick(rng, TEMPORAL_WORDS[temporal]))
    if scale and rng.random() < 0.7:
        words.append(_pick(rng, SEVERITY_WORDS[scale][lesion.severity]))
        severity = lesion.severity
    if loc_adj and (loc_in is None or rng.random() < 0.5):
        words.append(loc_adj)
        return " ".join(words + [noun]), severity
    phrase = " ".join(words + [noun])
    return (f"{phrase} {loc_in}" if loc_in else phrase), severity


def _special_sentence(rng: np.random.Generator, lesion: Lesion, temporal: str | None) -> tuple[str, str | None]:
    """Sentences for findings described with a verb rather than a noun phrase."""
    side = lesion.sides[0] if lesion.sides else ""
    if lesion.finding == "elevated hemidiaphragm":
        return _pick(
            rng,
            [
                f"Elevation of the {side} hemidiaphragm.",
                f"The {side} hemidiaphragm is elevated.",
                f"Elevated {side} hemidiaphragm.",
                f"{_cap(side)} hemidiaphragm elevation is again noted."
                if temporal == "unchanged"
                else f"Mild elevation of the {side} hemidiaphragm.",
            ],
        ), None
    if lesion.finding == "rib fracture":
        ordinal = ["first", "second", "third", "fourth", "fifth", "sixth", "seventh", "eighth", "ninth", "tenth"][
            lesion.params["rib"]
        ]
        age = "new" if temporal == "new" else _pick(rng, ["acute-appearing", "nondisplaced", "healing"])
        return _pick(
            rng,
            [
                f"{_cap(age)} fracture of the {side} {ordinal} posterior rib.",
                f"There is a {age} {side} {ordinal} rib fracture.",
                f"{_cap(side)} posterior {ordinal} rib fracture is noted.",
            ],
        ), None
    if lesion.finding == "clavicle fracture":
        return _pick(
            rng,
            [
                f"There is a fracture of the {side} clavicle.",
                f"{_cap(side)} clavicle fracture.",
                f"A {side} clavicle fracture is noted.",
            ],
        ), None
    if lesion.finding == "enlarged cardiac silhouette" and rng.random() < 0.4:
        adverb = {"mild": "mildly", "moderate": "moderately", "severe": "markedly"}[lesion.severity]
        return _pick(
            rng, [f"The heart is {adverb} enlarged.", f"The cardiac silhouette is {adverb} enlarged."]
        ), lesion.severity
    return "", None


@dataclass
class _Described:
    """The FINDINGS being written: sentences so far, the positive statements the impression may
    restate, what the report mentions, and the plain clauses still to frame."""

    sentences: list[Sentence] = field(default_factory=list)
    positives: list[tuple[Sentence, Statement, str]] = field(default_factory=list)  # (sentence, first, noun phrase)
    mentioned: set[str] = field(default_factory=set)
    lung_finding_reported: bool = False
    clauses: list[tuple[str, bool, list[Statement]]] = field(default_factory=list)  # (noun phrase, plural, said)


def compose_report(
    rng: np.random.Generator,
    lesions: list[Lesion],
    reported: list[bool],
    defaults: dict[str, tuple[str, ...]],
    indication: str,
) -> ReportDraft:
    """The report text and its statements for `lesions` (those with `reported` False are left out)."""
    has_prior = rng.random() < 0.45
    described = _Described()
    for index, lesion in enumerate(lesions):
        if reported[index]:
            _describe(rng, described, index, lesion, defaults, has_prior)
    _frame_clauses(rng, described)
    rng.shuffle(described.sentences)  # pyright: ignore[reportArgumentType] - numpy's stubs say ArrayLike; any list works
    _add_negations_and_normals(rng, described, defaults)
    impression = _impression(rng, described.positives)
    return _assemble(described.sentences, impression, has_prior, indication, rng)


def _describe(
    rng: np.random.Generator,
    described: _Described,
    index: int,
    lesion: Lesion,
    defaults: dict[str, tuple[str, ...]],
    has_prior: bool,
) -> None:
    """One reported lesion: its own sentence (special or hedged), or a plain clause to frame later."""
    described.mentioned.add(lesion.finding)
    described.lung_finding_reported |= lesion.finding in LUNG_FINDINGS
    hedged = rng.random() < (0.45 if lesion.subtle else 0.12)
    status = "uncertain" if hedged else "present"
    temporal = _pick(rng, list(TEMPORAL_WORDS)) if has_prior and rng.random() < 0.4 else None
    special, severity = _special_sentence(rng, lesion, temporal)
    if special:
        region = lesion.home if lesion.finding != "enlarged cardiac silhouette" else defaults[lesion.finding]
        statement = Statement(lesion.finding, tuple(region), "present", severity, temporal, index)
        sentence = Sentence(special, [statement])
        described.sentences.append(sentence)
        described.positives.append((sentence, statement, ""))
        return
    regions, loc_in, loc_adj = _location(rng, lesion, defaults)
    plural = len(lesion.sides) > 1 and lesion.finding in ("pleural effusion", "lung opacity")
    noun_phrase, severity = _noun_phrase(rng, lesion, plural, loc_in, loc_adj, temporal)
    statements = [Statement(lesion.finding, regions, status, severity, temporal, index)]
    if lesion.finding in ("consolidation", "lung opacity") and rng.random() < 0.35:
        noun_phrase += _pick(rng, PNEUMONIA_TAILS)
        statements.append(Statement("pneumonia", regions, "uncertain", None, None, None))
    if hedged:
        frame = _pick(rng, HEDGED_FRAMES)
        text = frame.format(np=noun_phrase, NP=_cap(noun_phrase))
        sentence = Sentence(text, statements)
        described.sentences.append(sentence)
        described.positives.append((sentence, statements[0], noun_phrase))
    else:
        described.clauses.append((noun_phrase, plural, statements))


def _frame_clauses(rng: np.random.Generator, described: _Described) -> None:
    """Plain positive clauses: alone in a frame, or two to a sentence."""
    clauses = described.clauses
    rng.shuffle(clauses)  # pyright: ignore[reportArgumentType] - numpy's stubs say ArrayLike; any list works
    i = 0
    while i < len(clauses):
        noun_phrase, plural, statements = clauses[i]
        if i + 1 < len(clauses) and rng.random() < 0.35:
            other, _, other_statements = clauses[i + 1]
            joiner = _pick(rng, [" with ", " and ", ", with "])
            text = f"{_cap(noun_phrase)}{joiner}{other}."
            sentence = Sentence(text, statements + other_statements)
            described.positives.append((sentence, statements[0], noun_phrase))
            described.positives.append((sentence, other_statements[0], other))
            described.sentences.append(sentence)
            i += 2
            continue
        frame = _pick(rng, FRAMES)
        text = frame.format(np=noun_phrase, NP=_cap(noun_phrase), be="are" if plural else "is")
        sentence = Sentence(text, statements)
        described.sentences.append(sentence)
        described.positives.append((sentence, statements[0], noun_phrase))
        i += 1


def _add_negations_and_normals(
    rng: np.random.Generator, described: _Described, defaults: dict[str, tuple[str, ...]]
) -> None:
    """Negations of findings the report does not describe, and normal statements."""
    mentioned, sentences = described.mentioned, described.sentences
    negations = [
        n
        for n in NEGATIONS
        if not set(n[1]) & mentioned and not ("pneumonia" in n[1] and {"consolidation", "lung opacity"} & mentioned)
    ]
    rng.shuffle(negations)  # pyright: ignore[reportArgumentType] - numpy's stubs say ArrayLike; any list works
    used: set[str] = set()
    for text, findings in negations[: int(rng.integers(1, 4))]:
        if set(findings) & used:
            continue
        used |= set(findings)
        sentences.append(Sentence(text, [Statement(f, defaults[f], "absent") for f in findings]))
    if "pleural effusion" not in mentioned | used and rng.random() < 0.08:
        # A hedged finding with no lesion behind it: readers do this too.
        side = _pick(rng, ["right", "left"])
        sentences.append(
            Sentence(
                f"Cannot exclude a trace {side} pleural effusion.",
                [Statement("pleural effusion", (f"{side} lung",), "uncertain", "mild")],
            )
        )
    if not described.lung_finding_reported and rng.random() < 0.85:
        sentences.insert(0, Sentence(_pick(rng, NORMAL_LUNGS)))
    for text in rng.permutation(list(NORMAL_OTHER))[: int(rng.integers(0, 3))]:
        if NORMAL_OTHER[str(text)] & mentioned:
            continue
        sentences.append(Sentence(str(text)))


def _impression(rng: np.random.Generator, positives: list[tuple[Sentence, Statement, str]]) -> list[Sentence]:
    """The main positive findings again, or a normal line."""
    if not positives:
        return [Sentence(_pick(rng, NORMAL_IMPRESSIONS))]
    impression = []
    for sentence, statement, noun_phrase in positives[: int(rng.integers(1, 3))]:
        if not noun_phrase:
            impression.append(Sentence(sentence.text, [Statement(**{**statement.__dict__})]))
            continue
        hedge = statement.status == "uncertain"
        text = (
            f"{_cap(noun_phrase)}, {_pick(rng, ['possibly', 'likely', 'questionably'])} present."
            if hedge
            else f"{_cap(noun_phrase)}."
        )
        copied = [
            Statement(**{**s.__dict__})
            for s in sentence.statements
            if s.lesion == statement.lesion or (s.finding == "pneumonia" and s.regions == statement.regions)
        ]
        impression.append(Sentence(text, copied))
    return impression


def _wrap(sentences: list[Sentence], offset: int, width: int = 76) -> str:
    """Sentences as one MIMIC-style paragraph: lines of at most `width` characters, each starting
    with a space; every statement gets its sentence's span in the final text."""
    out: list[str] = [" "]
    line = 1
    pos = offset + 1
    for index, sentence in enumerate(sentences):
        words = sentence.text.split(" ")
        start = None
        for w, word in enumerate(words):
            sep = "" if (index == 0 and w == 0) else " "
            if line + len(sep) + len(word) > width and line > 1:
                out.append("\n ")
                pos += 2
                line = 1
                sep = ""
            out.append(sep + word)
            pos += len(sep)
            if start is None:
                start = pos
            pos += len(word)
            line += len(sep) + len(word)
        assert start is not None  # every sentence has a first word, if an empty one
        for statement in sentence.statements:
            statement.start, statement.end = start, pos
    return "".join(out)


def _assemble(
    findings: list[Sentence], impression: list[Sentence], has_prior: bool, indication: str, rng: np.random.Generator
) -> ReportDraft:
    view = _pick(rng, ["PA and lateral", "PA and lateral views", "Single frontal view", "AP portable"])
    head = (
        f"                                 FINAL REPORT\n"
        f" EXAMINATION:  CHEST ({'PA AND LAT' if 'lateral' in view else 'PORTABLE AP'})\n \n"
        f" INDICATION:  {indication}\n \n"
        f" TECHNIQUE:  Chest {view}\n \n"
        f" COMPARISON:  {'Chest radiograph from ___.' if has_prior else 'None.'}\n \n"
        f" FINDINGS:\n \n"
    )
    text = head
    body = _wrap(findings, len(text))
    text += body + "\n \n IMPRESSION:\n \n"
    text += _wrap(impression, len(text)) + "\n"
    statements = [s for sentence in findings + impression for s in sentence.statements]
    for statement in statements:
        statement.text = text[statement.start : statement.end]
    return ReportDraft(text, statements, has_prior)


INDICATIONS = [
    "___ year old man with cough and fever, evaluate for pneumonia.",
    "___ year old woman with shortness of breath.",
    "History: ___M with chest pain.",
    "___F with dyspnea, assess for effusion.",
    "Evaluate for interval change.",
    "___ year old man status post fall, rule out fracture.",
    "Preoperative assessment.",
]
