"""Chest ImaGenome labels as a run: silver scene graphs (`clala import scene-graphs`) and the gold
attributes file (`clala import imagenome-gold`).

Silver scene graphs. Each `*_SceneGraph.json` (one per image) lists, per region (`bbox_name`), the
report sentences that speak of it (`phrases`) and, aligned with them, the attribute strings
`category|yes|name` / `category|no|name` plus severity, temporal and comparison cues. A finding
attribute whose category the vocabulary has enabled becomes one label: `yes` -> present, `no` ->
absent, in that region. The phrase is grounded in the stored report text (exact, then
normalized) and becomes the label's evidence; a phrase not found keeps its label without evidence
and is counted. Cues map to severity (mild/moderate/severe) and temporal change (new, improved,
worsened, unchanged, resolved) only when a phrase carries exactly one value that maps cleanly.
`nlp|...` (normal/abnormal) and `texture|...` are descriptions, not findings, and are ignored.

Gold attributes (`gold_attributes_relations_500pts_500studies1st.txt`, tab-separated): one row per
(image, sentence, region, attribute) that annotators checked. Columns read: `study_id`, `bbox`,
`label_name`, `categoryID`, and the affirmation, `context` (`yes`/`no`) where the file has it,
else `relation` (1 affirmed / 0 negated); `sentence` (the report sentence) becomes the evidence
when present; `image_id` and `patient_id` are kept only for messages. `bbox` can be `unknown` or a
body part without a box (neck, arms, ...): such rows are skipped and counted like the 7 bbox names
outside the 29 regions.

Both: reports are matched by study id (several images of one study label one report, merged
present > uncertain > absent); studies not in the database are skipped and listed; findings the
vocabulary does not place in a region are kept (the source says so) and counted. Every input
file is read and checked before anything is written, and the run is stored in one transaction.
"""

from __future__ import annotations

import csv
import hashlib
import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa

from labeling.core.errors import InputError
from labeling.core.files import file_sha256
from labeling.sources.grounding import ground
from labeling.store.run_records import RunResult, SkipLog, check_new_run_name, record_run, status_counts
from labeling.store.store import Store
from schemas.labels import STATUS_RANK, Severity
from schemas.runs import RunKind, RunSpec
from schemas.vocabulary import CATEGORIES, Vocabulary

SCENE_GRAPH_GLOB = "*_SceneGraph.json"
REQUIRED_GRAPH_KEYS = ("image_id", "study_id", "attributes")
REQUIRED_REGION_KEYS = ("bbox_name", "attributes", "phrases")
CUE_KEYS = ("severity_cues", "temporal_cues", "comparison_cues")
GOLD_REQUIRED_COLUMNS = ("study_id", "bbox", "relation", "label_name", "categoryID")

# Categories that describe rather than name a finding: never labels, never counted as lost.
DESCRIPTIVE_CATEGORIES = ("nlp", "texture", "severity", "temporal", "comparison", "laterality")

SEVERITY_CUES = {s.value: s.value for s in Severity}
# Chest ImaGenome temporal and comparison cue names -> our temporal values; "acute", "chronic"
# and the like say nothing about change and stay unmapped.
TEMPORAL_CUES = {
    "new": "new",
    "improved": "improved",
    "worsened": "worsened",
    "no change": "unchanged",
    "unchanged": "unchanged",
    "resolved": "resolved",
}
YES_NO = {"yes": "present", "no": "absent"}

LABEL_SCHEMA = pa.schema(
    [
        ("report_key", pa.int64()),
        ("region", pa.string()),
        ("finding", pa.string()),
        ("status", pa.string()),
        ("severity", pa.string()),
        ("temporal", pa.string()),
        ("evidence_start", pa.int32()),
        ("evidence_end", pa.int32()),
        ("evidence_text", pa.string()),
    ]
)


@dataclass
class Statement:
    """One finding statement of the source, before it is matched to a stored report."""

    study: str
    region: str
    finding: str
    status: str
    phrase: str | None = None
    severity: str | None = None
    temporal: str | None = None


@dataclass
class Parsed:
    """What an input yields: statements per study, and the input it could not use."""

    statements: list[Statement] = field(default_factory=list)
    studies: dict[str, str] = field(default_factory=dict)  # study -> where it came from (for messages)
    skipped: SkipLog = field(default_factory=SkipLog)
    units: int = 0  # graphs or rows read
    params: dict[str, Any] = field(default_factory=dict)  # the input's provenance, stored with the run
    details: dict[str, Any] = field(default_factory=dict)  # what the import shows about the input


# --- shared helpers ---------------------------------------------------------------------------
def mimic_id(value: Any) -> str | None:
    """MIMIC-CXR study (or subject) ids as ingest stores them: digits, without the folder
    prefix 's' (or 'p'); None if `value` is not one."""
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, float):
        if not value.is_integer():
            return None
        value = int(value)
    text = str(value).strip()
    if text[:1] in ("s", "S", "p", "P"):
        text = text[1:]
    if text.endswith(".0"):  # a study id written out by a float column
        text = text[:-2]
    return text if text.isdigit() else None


def parse_attribute(value: Any) -> tuple[str, str, str] | None:
    """`category|yes|name` -> (category, yes/no, name); None when malformed."""
    if not isinstance(value, str):
        return None
    parts = value.split("|")
    if len(parts) != 3 or parts[1] not in YES_NO or not parts[0] or not parts[2]:
        return None
    return parts[0], parts[1], parts[2]


def finding_skip_reason(category: str, name: str, vocabulary: Vocabulary) -> str | None:
    """Why a category|name attribute is no label of this vocabulary (None: it is one)."""
    if category not in CATEGORIES:
        return f"attribute category {category!r} is not a finding category"
    if category not in vocabulary.categories:
        return f"category {category} not enabled in the vocabulary (--enable {category})"
    if name not in vocabulary.finding_names or vocabulary.finding(name).category != category:
        return "finding not in the vocabulary"
    return None


def _single_cue(cues: Iterable[Any], table: dict[str, str]) -> str | None:
    """The one value a phrase's cues map to; None if none or several distinct ones."""
    values = set()
    for cue in cues:
        parsed = parse_attribute(cue)
        if parsed and parsed[1] == "yes" and parsed[2] in table:
            values.add(table[parsed[2]])
    return values.pop() if len(values) == 1 else None


def match_studies(store: Store, studies: dict[str, str], dataset: str | None, skipped: SkipLog) -> dict[str, int]:
    """study -> report_key of the current report with that study id; studies not stored are
    skipped and listed; a study found in several datasets needs --dataset."""
    found = store.report_keys(list(studies), by="study_id", dataset=dataset)
    keys: dict[str, int] = {}
    for study in sorted(studies):
        matches = found.get(study, [])
        datasets = sorted({ds for ds, _ in matches})
        if len(datasets) > 1:
            raise InputError(
                f"{studies[study]}: study {study} matches reports of several datasets "
                f"({', '.join(datasets)}); pass --dataset"
            )
        if not matches:
            skipped.add("study not in the database", f"{study} ({studies[study]})")
            continue
        # One report per study in a dataset; should a source hold several, the first one is used.
        keys[study] = min(key for _, key in matches)
    return keys


def build_labels(
    store: Store, parsed: Parsed, keys: dict[str, int], vocabulary: Vocabulary, details: dict[str, Any]
) -> pa.Table:
    """Statements of matched studies -> one label per (report, region, finding): present >
    uncertain > absent, among equals the first one with evidence; evidence grounded in the text."""
    texts = store.report_texts(sorted(set(keys.values())))
    best: dict[tuple[int, str, str], tuple[tuple[int, int], dict[str, Any]]] = {}
    not_grounded = not_allowed = 0
    grounded_cache: dict[tuple[int, str], Any] = {}
    for statement in parsed.statements:
        report_key = keys.get(statement.study)
        if report_key is None:
            continue
        span = None
        if statement.phrase and statement.phrase.strip():
            cache_key = (report_key, statement.phrase)
            if cache_key not in grounded_cache:
                grounded_cache[cache_key] = ground(statement.phrase, texts[report_key])
            span = grounded_cache[cache_key]
        row = {
            "report_key": report_key,
            "region": statement.region,
            "finding": statement.finding,
            "status": statement.status,
            "severity": statement.severity,
            "temporal": statement.temporal,
            "evidence_start": span.start if span else None,
            "evidence_end": span.end if span else None,
            "evidence_text": span.text if span else None,
        }
        rank = (STATUS_RANK[statement.status], 0 if span else 1)
        cell = (report_key, statement.region, statement.finding)
        if cell not in best or rank < best[cell][0]:
            best[cell] = (rank, row)
    rows = [row for _, row in best.values()]
    rows.sort(key=lambda r: (r["report_key"], vocabulary.region_index(r["region"]), r["finding"]))
    for row in rows:
        if row["evidence_start"] is None:
            not_grounded += 1
        if not vocabulary.allows(row["finding"], row["region"]):
            not_allowed += 1
    details["labels without evidence (sentence not found in the report text)"] = not_grounded
    details["labels in a region the vocabulary does not list for the finding (kept)"] = not_allowed
    return pa.Table.from_pylist(rows, schema=LABEL_SCHEMA)


def store_import(
    store: Store,
    kind: str,
    path: Path,
    name: str,
    vocabulary: Vocabulary,
    dataset: str | None,
    parsed: Parsed,
) -> RunResult:
    details = parsed.details
    keys = match_studies(store, parsed.studies, dataset, parsed.skipped)
    labels = build_labels(store, parsed, keys, vocabulary, details)
    report_keys = sorted(set(keys.values()))
    statuses = status_counts(labels)
    params = {
        "kind": kind,
        **parsed.params,
        "studies": len(parsed.studies),
        "reports": len(report_keys),
        "labels": labels.num_rows,
        "statuses": dict(statuses),
        "skipped": dict(parsed.skipped.counts),
        "dataset": dataset,
    }
    spec = RunSpec(
        name=name,
        kind=RunKind.imported,
        vocabulary_version=vocabulary.version,
        params=params,
        source=str(path.resolve()),
    )
    record_run(store, spec, report_keys, labels)
    return RunResult(
        name=name,
        kind=kind,
        source=str(path.resolve()),
        reports=len(report_keys),
        labels=labels.num_rows,
        statuses=statuses,
        skipped=parsed.skipped,
        details=details,
    )


# --- silver scene graphs ----------------------------------------------------------------------
def _load_graph(path: Path) -> tuple[dict[str, Any], str]:
    """A scene graph checked for the keys we read, and the sha256 of its bytes."""
    data = path.read_bytes()
    try:
        graph = json.loads(data)
    except json.JSONDecodeError as exc:
        raise InputError(f"{path}: not valid JSON (line {exc.lineno}): {exc.msg}") from None
    except UnicodeDecodeError:
        raise InputError(f"{path}: not valid JSON (not UTF-8 text)") from None
    if not isinstance(graph, dict):
        raise InputError(f"{path}: not a scene graph (the JSON is not an object)")
    for key in REQUIRED_GRAPH_KEYS:
        if key not in graph:
            raise InputError(f"{path}: not a scene graph: key {key!r} is missing")
    if not isinstance(graph["attributes"], list):
        raise InputError(f"{path}: key 'attributes' must be a list")
    return graph, hashlib.sha256(data).hexdigest()


def _region_lists(path: Path, index: int, entry: Any) -> tuple[str, list[list[Any]], list[Any], dict[str, list]]:
    where = f"{path}: attributes[{index}]"
    if not isinstance(entry, dict):
        raise InputError(f"{where}: must be an object")
    for key in REQUIRED_REGION_KEYS:
        if key not in entry:
            raise InputError(f"{where}: key {key!r} is missing")
    region = entry["bbox_name"]
    if not isinstance(region, str) or not region:
        raise InputError(f"{where}: 'bbox_name' must be a region name")
    attributes, phrases = entry["attributes"], entry["phrases"]
    if not isinstance(attributes, list) or not all(isinstance(a, list) for a in attributes):
        raise InputError(f"{where} ({region}): 'attributes' must be a list of lists (one per phrase)")
    if not isinstance(phrases, list) or len(phrases) != len(attributes):
        raise InputError(f"{where} ({region}): 'phrases' must be a list as long as 'attributes' ({len(attributes)})")
    cues = {}
    for key in CUE_KEYS:
        values = entry.get(key)
        if values is None:
            values = [[] for _ in phrases]
        if not isinstance(values, list) or len(values) != len(phrases) or not all(isinstance(v, list) for v in values):
            raise InputError(f"{where} ({region}): {key!r} must be a list of lists as long as 'phrases'")
        cues[key] = values
    return region, attributes, phrases, cues


def parse_scene_graph(path: Path, graph: dict[str, Any], vocabulary: Vocabulary, parsed: Parsed) -> None:
    study = mimic_id(graph["study_id"])
    if study is None:
        raise InputError(f"{path}: study_id {graph['study_id']!r} is not a MIMIC-CXR study id")
    parsed.studies.setdefault(study, path.name)
    regions = set(vocabulary.region_names)
    for index, entry in enumerate(graph["attributes"]):
        region, attributes, phrases, cues = _region_lists(path, index, entry)
        for sentence, (phrase, names) in enumerate(zip(phrases, attributes)):
            if phrase is not None and not isinstance(phrase, str):
                raise InputError(f"{path}: attributes[{index}] ({region}): phrases[{sentence}] is not text")
            severity = _single_cue(cues["severity_cues"][sentence], SEVERITY_CUES)
            temporal = _single_cue(cues["temporal_cues"][sentence] + cues["comparison_cues"][sentence], TEMPORAL_CUES)
            for value in names:
                attribute = parse_attribute(value)
                if attribute is None:
                    raise InputError(
                        f"{path}: attributes[{index}] ({region}): {value!r} is not "
                        "'category|yes|name' or 'category|no|name'"
                    )
                category, affirmed, finding = attribute
                if category in DESCRIPTIVE_CATEGORIES:
                    continue
                reason = finding_skip_reason(category, finding, vocabulary)
                if reason:
                    parsed.skipped.add(reason, value)
                    continue
                if region not in regions:
                    parsed.skipped.add("bbox name outside the 29 regions", region)
                    continue
                parsed.statements.append(
                    Statement(study, region, finding, YES_NO[affirmed], phrase, severity, temporal)
                )


def import_scene_graphs(store: Store, path: Path, name: str, vocabulary: Vocabulary, dataset: str | None) -> RunResult:
    """Import a folder (searched recursively) of Chest ImaGenome `*_SceneGraph.json` files."""
    check_new_run_name(store, name)
    path = Path(path)
    files = [path] if path.is_file() else sorted(path.rglob(SCENE_GRAPH_GLOB))
    if not files:
        raise InputError(f"{path}: no {SCENE_GRAPH_GLOB} files in this folder")
    parsed = Parsed()
    listing = hashlib.sha256()
    images: set[str] = set()
    for file in files:
        graph, sha256 = _load_graph(file)
        parse_scene_graph(file, graph, vocabulary, parsed)
        images.add(str(graph["image_id"]))
        # The run's input digest: every file's relative path and content, in path order.
        listing.update(f"{file.relative_to(path) if file != path else file.name}\0{sha256}\n".encode())
    parsed.units = len(files)
    parsed.details = {"scene graphs read": len(files), "studies in the input": len(parsed.studies)}
    parsed.params = {
        "files": len(files),
        "images": len(images),
        "sha256": listing.hexdigest(),
        "finding_statements": len(parsed.statements),
    }
    return store_import(store, "scene-graphs", path, name, vocabulary, dataset, parsed)


# --- gold attributes --------------------------------------------------------------------------
def _gold_status(path: Path, line: int, row: dict[str, str]) -> tuple[str, bool]:
    """(status, whether `relation` disagrees with `context`): `context` yes/no decides where the
    file has it, else `relation` 1/0; each is checked when given."""
    relation = (row.get("relation") or "").strip()
    context = (row.get("context") or "").strip().lower()
    from_relation = None
    if relation:
        try:
            number = float(relation)
        except ValueError:
            number = None
        if number not in (0.0, 1.0):
            raise InputError(f"{path}: line {line}: column 'relation': {relation!r} is not 1 (affirmed) or 0 (negated)")
        from_relation = "present" if number == 1.0 else "absent"
    if context:
        if context not in YES_NO:
            raise InputError(f"{path}: line {line}: column 'context': {row['context']!r} is not yes or no")
        return YES_NO[context], from_relation not in (None, YES_NO[context])
    if from_relation is None:
        raise InputError(f"{path}: line {line}: column 'relation' is empty")
    return from_relation, False


def import_imagenome_gold(
    store: Store, path: Path, name: str, vocabulary: Vocabulary, dataset: str | None
) -> RunResult:
    """Import the Chest ImaGenome gold attributes file (tab-separated)."""
    check_new_run_name(store, name)
    path = Path(path)
    if path.is_dir():
        raise InputError(
            f"{path}: is a folder; give the gold attributes file (gold_attributes_relations_500pts_500studies1st.txt)"
        )
    parsed = Parsed()
    regions = set(vocabulary.region_names)
    disagreements = 0
    try:
        with path.open(newline="", encoding="utf-8-sig") as handle:
            reader = csv.DictReader(handle, delimiter="\t")
            header = reader.fieldnames or []
            missing = [c for c in GOLD_REQUIRED_COLUMNS if c not in header]
            if missing:
                raise InputError(
                    f"{path}: line 1: column {missing[0]!r} is missing (a gold attributes file "
                    f"has {', '.join(GOLD_REQUIRED_COLUMNS)})"
                )
            has_context, has_sentence = "context" in header, "sentence" in header
            for row in reader:
                line = reader.line_num
                if None in row:
                    raise InputError(f"{path}: line {line}: more fields than the header's {len(header)}")
                parsed.units += 1
                study = mimic_id(row["study_id"])
                if study is None:
                    raise InputError(f"{path}: line {line}: column 'study_id': {row['study_id']!r} is not a study id")
                status, disagrees = _gold_status(path, line, row)
                disagreements += disagrees
                parsed.studies.setdefault(study, f"{path.name} line {line}")
                category, finding = (row["categoryID"] or "").strip(), (row["label_name"] or "").strip()
                region = (row["bbox"] or "").strip()
                for column, value in (("categoryID", category), ("label_name", finding), ("bbox", region)):
                    if not value:
                        raise InputError(f"{path}: line {line}: column {column!r} is empty")
                if category in DESCRIPTIVE_CATEGORIES:
                    continue
                reason = finding_skip_reason(category, finding, vocabulary)
                if reason:
                    parsed.skipped.add(reason, f"{category}|{finding}")
                    continue
                if region not in regions:
                    parsed.skipped.add("bbox name outside the 29 regions", region)
                    continue
                sentence = (row.get("sentence") or "").strip() if has_sentence else ""
                parsed.statements.append(Statement(study, region, finding, status, sentence or None))
    except UnicodeDecodeError as exc:
        raise InputError(f"{path}: not UTF-8 text ({exc.reason})") from None
    except csv.Error as exc:
        raise InputError(f"{path}: not a tab-separated file: {exc}") from None
    parsed.details = {"rows read": parsed.units, "studies in the input": len(parsed.studies)}
    if disagreements:
        parsed.details["rows whose relation disagrees with context (context used)"] = disagreements
    parsed.params = {
        "rows": parsed.units,
        "sha256": file_sha256(path),
        "finding_rows": len(parsed.statements),
        "status_column": "context" if has_context else "relation",
    }
    return store_import(store, "imagenome-gold", path, name, vocabulary, dataset, parsed)
