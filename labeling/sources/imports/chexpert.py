"""MIMIC-CXR CheXpert labels as a run (`clala import chexpert`): image-level labels (region null).

Input: `mimic-cxr-2.0.0-chexpert.csv` or `.csv.gz`, columns `subject_id, study_id` and CheXpert
observation columns (the 14 of the vocabulary, any subset). Values: 1 -> present, 0 -> absent,
-1 -> uncertain (`1`, `1.0`, `-1.0`, ... accepted), blank -> no row (not mentioned). Anything else,
or an unknown column, is an error naming the file, line and column, and nothing is stored.

Which finding a CheXpert value speaks of. The vocabulary lists, per observation, the findings
that imply it; a broad observation covers many (`Lung Opacity`: 20). A CheXpert positive says
*some* covered finding is there, not which, so it cannot be asserted for each of them, and a
negative says the report denied the observation's own term, not each specific finding the report
never mentioned (our store's rule: unmentioned = no row). So each value is stored on the
observation's own finding only: the single finding it maps to, or else the finding the
observation's name denotes in the vocabulary (its name or a synonym: `Lung Opacity` -> lung
opacity, `Edema` -> pulmonary edema/hazy opacity, `Fracture` -> rib fracture, whose synonym
"fracture" is). Observations with no such finding (`No Finding`, `Enlarged Cardiomediastinum`,
`Support Devices` with or without devices enabled) store nothing; their values are counted in
the result's details and the run's params, and the mapping used is recorded with the run.
Two observations landing on one finding merge present > uncertain > absent.

Reports are matched by study id; when the stored report has a patient id, it must equal
`subject_id` (else the row is skipped and counted). Every matched report is covered by the run.

The CheXpert labeler's own files are read too. Its output has a column `Reports` (the report's
text) instead of ids: rows are matched to the stored reports with the same text (whitespace
aside; every report with that text, the labels being a function of the text). A file without a
header row (`--no-header`) is read by position: by default the labeler's output order
(`LABELER_ORDER`: Reports, then its 14 observations), or the positions given as
`--columns NAME=POSITION,...` (names: `study_id`, `subject_id`, `report_id`, `Reports` and the
observations; positions from 0). A row with too few fields, or a position no row has, is an
error naming the line.
"""

from __future__ import annotations

import csv
import gzip
import hashlib
import io
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa

from labeling.core.errors import InputError
from labeling.core.files import file_sha256
from labeling.sources.imports.scene_graphs import mimic_id
from labeling.store.run_records import RunResult, SkipLog, check_new_run_name, record_run, status_counts
from labeling.store.store import Store
from schemas.labels import STATUS_RANK
from schemas.runs import RunKind, RunSpec
from schemas.vocabulary import Vocabulary

ID_COLUMNS = ("subject_id", "study_id")
REPORT_TEXT = "Reports"  # the CheXpert labeler's column: the report text it labeled
REPORT_ID = "report_id"  # the report id clala stored (`clala ingest --id-col`)
KEYS = ("study_id", REPORT_ID, REPORT_TEXT)  # what names a row's report
KEY_NOUNS = {"study_id": "study", REPORT_ID: "report id", REPORT_TEXT: "report text"}
# The column order of the CheXpert labeler's output (stanfordmlgroup/chexpert-labeler, label.py).
LABELER_ORDER = (
    REPORT_TEXT,
    "No Finding",
    "Enlarged Cardiomediastinum",
    "Cardiomegaly",
    "Lung Lesion",
    "Lung Opacity",
    "Edema",
    "Consolidation",
    "Pneumonia",
    "Atelectasis",
    "Pneumothorax",
    "Pleural Effusion",
    "Pleural Other",
    "Fracture",
    "Support Devices",
)
CODE_STATUS = {1.0: "present", 0.0: "absent", -1.0: "uncertain"}
TEXT_BATCH = 5000  # stored report texts read at a time when matching by text


@dataclass(frozen=True)
class ChexpertColumns:
    """Where a CheXpert CSV's columns are: named by its header row (the default), or with
    `no_header` by position, `positions` (name -> index from 0) or else `LABELER_ORDER`."""

    no_header: bool = False
    positions: dict[str, int] | None = None

    def __post_init__(self) -> None:
        if self.positions is not None and not self.no_header:
            raise InputError("--columns: needs --no-header (a header row names the columns itself)")


def parse_positions(spec: str) -> dict[str, int]:
    """`--columns "Reports=0,Cardiomegaly=3"` -> {name: position}; names are checked against the
    vocabulary when the file is read."""
    positions: dict[str, int] = {}
    for part in spec.split(","):
        name, equals, number = (p.strip() for p in part.partition("="))
        if not equals or not name:
            raise InputError(f"--columns: {part.strip()!r} is not NAME=POSITION (e.g. Reports=0,Cardiomegaly=3)")
        if not number.isdigit():
            raise InputError(f"--columns: {name!r}: position {number!r} is not a whole number from 0")
        if name in positions:
            raise InputError(f"--columns: {name!r} is given twice")
        if int(number) in positions.values():
            other = next(n for n, p in positions.items() if p == int(number))
            raise InputError(f"--columns: position {number} is given to both {other!r} and {name!r}")
        positions[name] = int(number)
    return positions


@dataclass(frozen=True)
class Layout:
    """A file's columns once read: name -> position, the key naming each row's report, the
    observation columns in file order, and how many fields a row has (None: at least enough)."""

    positions: dict[str, int]
    key: str
    observations: list[str]
    width: int | None
    by_position: bool

    def label(self, column: str) -> str:
        return f"{column!r} (position {self.positions[column]})" if self.by_position else repr(column)


@dataclass(frozen=True)
class Row:
    line: int
    key: str  # study id, report id or report text
    subject: str | None
    codes: dict[str, float]


LABEL_SCHEMA = pa.schema(
    [("report_key", pa.int64()), ("region", pa.string()), ("finding", pa.string()), ("status", pa.string())]
)


def observation_findings(vocabulary: Vocabulary) -> dict[str, str | None]:
    """Each CheXpert observation -> the one finding its values are stored on, or None."""
    mapping: dict[str, str | None] = {}
    for observation in vocabulary.data.chexpert_observations:
        covered = vocabulary.chexpert_findings(observation)
        if len(covered) == 1:
            mapping[observation] = covered[0]
        else:
            named = vocabulary.resolve_finding(observation)
            mapping[observation] = named if named in covered else None
    return mapping


def _open_text(path: Path) -> io.TextIOBase:
    if path.name.endswith(".gz"):
        return io.TextIOWrapper(gzip.open(path, "rb"), encoding="utf-8-sig", newline="")
    return path.open(encoding="utf-8-sig", newline="")


def _code(path: Path, line: int, column: str, value: str) -> float | None:
    """The code of one value; `column` as the error shows it (`'Edema'`, `'Edema' (position 6)`)."""
    text = value.strip()
    if not text:
        return None
    try:
        number = float(text)
    except ValueError:
        number = None
    if number not in CODE_STATUS:
        raise InputError(f"{path}: line {line}: column {column}: {value!r} is not 1, 0, -1 or blank")
    return number


def _is_code(value: str) -> bool:
    try:
        return not value.strip() or float(value) in CODE_STATUS
    except ValueError:
        return False


def _check_names(path: Path, names: list[str], observations: list[str], where: str) -> str:
    """The key column among `names` (a header's or --columns'), after checking every name."""
    known = (*ID_COLUMNS, *KEYS)
    for column in names:
        if column not in known and column not in observations:
            raise InputError(
                f"{path}: {where}: column {column!r} is not a CheXpert observation ({', '.join(observations)})"
            )
    duplicated = sorted({c for c in names if names.count(c) > 1})
    if duplicated:
        raise InputError(f"{path}: {where}: column {duplicated[0]!r} appears twice")
    keys = [k for k in KEYS if k in names]
    if len(keys) > 1:
        raise InputError(f"{path}: {where}: columns {keys[0]!r} and {keys[1]!r} both name the report; keep one")
    if not keys:
        raise InputError(
            f"{path}: {where}: no column names the report (study_id, report_id or Reports, the report text)"
        )
    if "subject_id" in names and keys[0] != "study_id":
        raise InputError(f"{path}: {where}: column 'subject_id' goes with 'study_id' (MIMIC-CXR's file)")
    return keys[0]


def _header_layout(path: Path, header: list[str], observations: list[str]) -> Layout:
    if not any(c in (*ID_COLUMNS, *KEYS) or c in observations for c in header):
        why = (
            "it reads as a report and label values"
            if all(_is_code(c) for c in header[1:])
            else "none of its columns is subject_id, study_id, report_id, Reports or a CheXpert observation"
        )
        raise InputError(
            f"{path}: line 1 is not a header row ({why}); for a file without one pass --no-header "
            f"(positions in the CheXpert labeler's order: {', '.join(LABELER_ORDER)}) or "
            "--no-header --columns NAME=POSITION,..."
        )
    if "study_id" in header and "subject_id" not in header:
        raise InputError(f"{path}: line 1: column 'subject_id' is missing")
    if not any(k in header for k in KEYS) and "subject_id" in header:
        raise InputError(f"{path}: line 1: column 'study_id' is missing")
    key = _check_names(path, header, observations, "line 1")
    return Layout(
        positions={c: i for i, c in enumerate(header)},
        key=key,
        observations=[c for c in header if c in observations],
        width=len(header),
        by_position=False,
    )


def _position_layout(path: Path, columns: ChexpertColumns, observations: list[str]) -> Layout:
    if columns.positions is None:
        positions = {name: index for index, name in enumerate(LABELER_ORDER)}
        width: int | None = len(LABELER_ORDER)
    else:
        positions, width = columns.positions, None
    names = sorted(positions, key=positions.__getitem__)
    key = _check_names(path, names, observations, "--columns")
    return Layout(positions, key, [c for c in names if c in observations], width, by_position=True)


def _row_key(path: Path, line: int, layout: Layout, fields: list[str]) -> tuple[str, str | None]:
    """(study id, report id or report text; subject id or None) of one data row, checked."""
    where = f"{path}: line {line}: column"
    value = fields[layout.positions[layout.key]]
    if layout.key == "study_id":
        key = mimic_id(value)
        if key is None:
            raise InputError(f"{where} {layout.label('study_id')}: {value!r} is not a study id")
    elif not value.strip():
        raise InputError(f"{where} {layout.label(layout.key)}: is blank; it names the report")
    else:
        key = value.strip() if layout.key == REPORT_ID else value
    subject = None
    if "subject_id" in layout.positions:
        raw = fields[layout.positions["subject_id"]]
        subject = mimic_id(raw)
        if subject is None:
            raise InputError(f"{where} {layout.label('subject_id')}: {raw!r} is not a subject id")
    return key, subject


def _parse_row(path: Path, line: int, layout: Layout, fields: list[str]) -> Row:
    """One data row, checked."""
    if layout.width is not None and len(fields) != layout.width:
        has = "the header has" if not layout.by_position else "the CheXpert labeler's order has"
        raise InputError(f"{path}: line {line}: {len(fields)} fields, {has} {layout.width}")
    needed = max(layout.positions.values()) + 1
    if len(fields) < needed:
        last = max(layout.positions, key=layout.positions.__getitem__)
        raise InputError(
            f"{path}: line {line}: {len(fields)} fields, but --columns reads position "
            f"{needed - 1} ({last}); positions count from 0"
        )
    key, subject = _row_key(path, line, layout, fields)
    codes = {}
    for column in layout.observations:
        code = _code(path, line, layout.label(column), fields[layout.positions[column]])
        if code is not None:
            codes[column] = code
    return Row(line, key, subject, codes)


def _read_rows(path: Path, observations: list[str], columns: ChexpertColumns) -> tuple[Layout, list[Row]]:
    """The file's layout and its rows, after checking it all."""
    rows = []
    try:
        with _open_text(path) as handle:
            reader = csv.reader(handle)
            if columns.no_header:
                layout = _position_layout(path, columns, observations)
            else:
                header = next(reader, None)
                if not header:
                    raise InputError(
                        f"{path}: file is empty (expected a header with subject_id, study_id and "
                        "CheXpert observation columns, or --no-header)"
                    )
                layout = _header_layout(path, [h.strip() for h in header], observations)
            for fields in reader:
                if any(f.strip() for f in fields):
                    rows.append(_parse_row(path, reader.line_num, layout, fields))
    except (OSError, EOFError, gzip.BadGzipFile) as exc:
        raise InputError(f"{path}: cannot read: {exc}") from None
    except UnicodeDecodeError as exc:
        raise InputError(f"{path}: not UTF-8 text ({exc.reason})") from None
    except csv.Error as exc:
        raise InputError(f"{path}: not a CSV file: {exc}") from None
    if columns.no_header and not rows:
        raise InputError(f"{path}: file is empty (no rows)")
    return layout, rows


def _text_sha(text: str) -> str:
    """Report texts are matched whitespace aside (the labeler's CSV may rewrap a report)."""
    return hashlib.sha256(" ".join(text.split()).encode("utf-8")).hexdigest()


def _single_dataset(path: Path, found: dict[str, list[tuple[str, int]]], noun: str) -> None:
    for value, matches in found.items():
        datasets = sorted({ds for ds, _ in matches})
        if len(datasets) > 1:
            shown = value if len(value) <= 40 else value[:40] + "..."
            raise InputError(
                f"{path}: {noun} {shown!r} matches reports of several datasets ({', '.join(datasets)}); pass --dataset"
            )


def _reports_by_text(store: Store, texts: set[str], dataset: str | None) -> dict[str, list[tuple[str, int]]]:
    """text sha256 -> [(dataset, report_key)] of the current reports with that text."""
    wanted = {_text_sha(t) for t in texts}
    found: dict[str, list[tuple[str, int]]] = {}
    keys = store.current_report_keys(dataset)
    for start in range(0, len(keys), TEXT_BATCH):
        for report in store.report_rows(keys[start : start + TEXT_BATCH]):
            sha = _text_sha(report["text"])
            if sha in wanted:
                found.setdefault(sha, []).append((report["dataset"], report["report_key"]))
    return found


def _match_reports(
    store: Store, path: Path, layout: Layout, rows: list[Row], dataset: str | None
) -> dict[str, list[int]]:
    """Row key -> the report keys it labels; keys that match nothing are absent."""
    values = sorted({row.key for row in rows})
    if layout.key == REPORT_TEXT:
        by_sha = _reports_by_text(store, set(values), dataset)
        found = {v: by_sha[_text_sha(v)] for v in values if _text_sha(v) in by_sha}
        _single_dataset(path, found, "report text")
        return {v: sorted(key for _, key in matches) for v, matches in found.items()}
    found = store.report_keys(values, by=layout.key, dataset=dataset)
    _single_dataset(path, found, KEY_NOUNS[layout.key])
    # One report per study (the lowest key, as before) or per report id within a dataset.
    return {value: [min(key for _, key in matches)] for value, matches in found.items()}


def _stored_subjects(store: Store, report_keys: set[int]) -> dict[int, tuple[str | None, str | None]]:
    """report_key -> (stored patient id, its MIMIC subject id or None)."""
    identities = store.report_identities(sorted(report_keys))
    # Only a patient id in MIMIC's form can be compared with subject_id.
    return {key: (patient, mimic_id(patient)) for key, (patient, _) in identities.items()}


def import_chexpert(
    store: Store,
    path: Path,
    name: str,
    vocabulary: Vocabulary,
    dataset: str | None,
    *,
    columns: ChexpertColumns | None = None,
) -> RunResult:
    """Import a CheXpert CSV (MIMIC-CXR's, optionally gzipped, or the CheXpert labeler's, with or
    without a header row) as an image-level run."""
    check_new_run_name(store, name)
    path = Path(path)
    columns = columns or ChexpertColumns()
    if path.is_dir():
        raise InputError(f"{path}: is a folder; give mimic-cxr-2.0.0-chexpert.csv or .csv.gz")
    mapping = observation_findings(vocabulary)
    layout, rows = _read_rows(path, list(vocabulary.data.chexpert_observations), columns)
    noun = KEY_NOUNS[layout.key]

    skipped = SkipLog()
    matched = _match_reports(store, path, layout, rows, dataset)
    subjects = (
        _stored_subjects(store, {k for keys in matched.values() for k in keys}) if layout.key == "study_id" else {}
    )

    best: dict[tuple[int, str], str] = {}
    not_stored: dict[str, dict[str, int]] = {}
    covered: set[int] = set()
    duplicate_rows = 0
    seen: set[str] = set()
    for row in rows:
        shown = row.key if len(row.key) <= 40 else row.key[:40] + "..."
        if row.key not in matched:
            skipped.add(f"{noun} not in the database", f"{shown} (line {row.line})")
            continue
        report_keys = matched[row.key]
        stored_patient, stored_subject = subjects.get(report_keys[0], (None, None))
        if row.subject is not None and stored_subject is not None and stored_subject != row.subject:
            skipped.add(
                "subject_id differs from the stored report's patient",
                f"study {row.key}: subject {row.subject}, stored {stored_patient} (line {row.line})",
            )
            continue
        if row.key in seen:
            duplicate_rows += 1
        seen.add(row.key)
        covered.update(report_keys)
        for observation, code in row.codes.items():
            status = CODE_STATUS[code]
            finding = mapping[observation]
            if finding is None:
                counts = not_stored.setdefault(observation, {})
                counts[status] = counts.get(status, 0) + 1
                continue
            for report_key in report_keys:
                cell = (report_key, finding)
                if cell not in best or STATUS_RANK[status] < STATUS_RANK[best[cell]]:
                    best[cell] = status

    cells = sorted(best.items())
    labels = pa.table(
        {
            "report_key": [k for (k, _), _ in cells],
            "region": [None] * len(cells),
            "finding": [f for (_, f), _ in cells],
            "status": [s for _, s in cells],
        },
        schema=LABEL_SCHEMA,
    )
    statuses = status_counts(labels)
    used_mapping = {obs: mapping[obs] for obs in layout.observations}
    details: dict[str, Any] = {
        "rows read": len(rows),
        "rows matched": len(rows) - skipped.total,
        "reports matched by": noun + (" (whitespace aside)" if layout.key == REPORT_TEXT else ""),
        "observation -> finding": ", ".join(f"{o} -> {f or '(none)'}" for o, f in used_mapping.items()),
    }
    if not_stored:
        details["observations with no single finding, not stored"] = "; ".join(
            f"{obs}: " + ", ".join(f"{s} {n}" for s, n in sorted(counts.items()))
            for obs, counts in sorted(not_stored.items())
        )
    if layout.by_position:
        details["column positions"] = ", ".join(
            f"{c}={p}" for c, p in sorted(layout.positions.items(), key=lambda kv: kv[1])
        )
    if duplicate_rows:
        details[f"rows repeating a {noun} (merged)"] = duplicate_rows
    source = str(path.resolve())
    params = {
        "kind": "chexpert",
        "sha256": file_sha256(path),
        "rows": len(rows),
        "reports": len(covered),
        "labels": labels.num_rows,
        "statuses": dict(statuses),
        "mapping": used_mapping,
        "not_stored": not_stored,
        "skipped": dict(skipped.counts),
        "dataset": dataset,
        "matched_by": layout.key,
        "header": not layout.by_position,
        "positions": layout.positions if layout.by_position else None,
    }
    spec = RunSpec(
        name=name, kind=RunKind.imported, vocabulary_version=vocabulary.version, params=params, source=source
    )
    record_run(store, spec, sorted(covered), labels)
    return RunResult(
        name=name,
        kind="chexpert",
        source=source,
        reports=len(covered),
        labels=labels.num_rows,
        statuses=statuses,
        skipped=skipped,
        details=details,
    )
