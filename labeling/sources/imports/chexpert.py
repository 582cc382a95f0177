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
"""

from __future__ import annotations

import csv
import gzip
import io
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
CODE_STATUS = {1.0: "present", 0.0: "absent", -1.0: "uncertain"}

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
    text = value.strip()
    if not text:
        return None
    try:
        number = float(text)
    except ValueError:
        number = None
    if number not in CODE_STATUS:
        raise InputError(f"{path}: line {line}: column {column!r}: {value!r} is not 1, 0, -1 or blank")
    return number


def _check_header(path: Path, header: list[str], observations: list[str]) -> None:
    for column in ID_COLUMNS:
        if column not in header:
            raise InputError(f"{path}: line 1: column {column!r} is missing")
    for column in header:
        if column not in ID_COLUMNS and column not in observations:
            raise InputError(
                f"{path}: line 1: column {column!r} is not a CheXpert observation ({', '.join(observations)})"
            )
    duplicated = sorted({c for c in header if header.count(c) > 1})
    if duplicated:
        raise InputError(f"{path}: line 1: column {duplicated[0]!r} appears twice")


def _parse_row(
    path: Path, line: int, header: list[str], columns: list[str], fields: list[str]
) -> tuple[int, str, str, dict[str, float]]:
    """(line, subject, study, {observation: code}) of one data row, checked."""
    if len(fields) != len(header):
        raise InputError(f"{path}: line {line}: {len(fields)} fields, the header has {len(header)}")
    row = dict(zip(header, fields))
    study = mimic_id(row["study_id"])
    if study is None:
        raise InputError(f"{path}: line {line}: column 'study_id': {row['study_id']!r} is not a study id")
    subject = mimic_id(row["subject_id"])
    if subject is None:
        raise InputError(f"{path}: line {line}: column 'subject_id': {row['subject_id']!r} is not a subject id")
    codes = {}
    for column in columns:
        code = _code(path, line, column, row[column])
        if code is not None:
            codes[column] = code
    return line, subject, study, codes


def _read_rows(path: Path, observations: list[str]) -> tuple[list[str], list[tuple[int, str, str, dict[str, float]]]]:
    """(observation columns, [(line, subject, study, {observation: code})]) after checking it all."""
    rows = []
    try:
        with _open_text(path) as handle:
            reader = csv.reader(handle)
            header = next(reader, None)
            if not header:
                raise InputError(
                    f"{path}: file is empty (expected a header with subject_id, study_id and "
                    "CheXpert observation columns)"
                )
            header = [h.strip() for h in header]
            _check_header(path, header, observations)
            columns = [c for c in header if c not in ID_COLUMNS]
            for fields in reader:
                if any(f.strip() for f in fields):
                    rows.append(_parse_row(path, reader.line_num, header, columns, fields))
    except (OSError, EOFError, gzip.BadGzipFile) as exc:
        raise InputError(f"{path}: cannot read: {exc}") from None
    except UnicodeDecodeError as exc:
        raise InputError(f"{path}: not UTF-8 text ({exc.reason})") from None
    except csv.Error as exc:
        raise InputError(f"{path}: not a CSV file: {exc}") from None
    return columns, rows


def import_chexpert(store: Store, path: Path, name: str, vocabulary: Vocabulary, dataset: str | None) -> RunResult:
    """Import a MIMIC-CXR CheXpert CSV (optionally gzipped) as an image-level run."""
    check_new_run_name(store, name)
    path = Path(path)
    if path.is_dir():
        raise InputError(f"{path}: is a folder; give mimic-cxr-2.0.0-chexpert.csv or .csv.gz")
    mapping = observation_findings(vocabulary)
    columns, rows = _read_rows(path, list(vocabulary.data.chexpert_observations))

    skipped = SkipLog()
    found = store.report_keys(sorted({study for _, _, study, _ in rows}), by="study_id", dataset=dataset)
    for study, matches in found.items():
        datasets = sorted({ds for ds, _ in matches})
        if len(datasets) > 1:
            raise InputError(
                f"{path}: study {study} matches reports of several datasets ({', '.join(datasets)}); pass --dataset"
            )
    keys = {study: min(key for _, key in matches) for study, matches in found.items()}
    patients = {key: patient for key, (patient, _) in store.report_identities(sorted(set(keys.values()))).items()}

    best: dict[tuple[int, str], str] = {}
    not_stored: dict[str, dict[str, int]] = {}
    covered: set[int] = set()
    duplicate_rows = 0
    seen_studies: set[str] = set()
    for line, subject, study, codes in rows:
        if study not in keys:
            skipped.add("study not in the database", f"{study} (line {line})")
            continue
        report_key = keys[study]
        stored_patient = patients.get(report_key)
        # Only a patient id in MIMIC's form can be compared with subject_id.
        stored_subject = mimic_id(stored_patient)
        if stored_subject is not None and stored_subject != subject:
            skipped.add(
                "subject_id differs from the stored report's patient",
                f"study {study}: subject {subject}, stored {stored_patient} (line {line})",
            )
            continue
        if study in seen_studies:
            duplicate_rows += 1
        seen_studies.add(study)
        covered.add(report_key)
        for observation, code in codes.items():
            status = CODE_STATUS[code]
            finding = mapping[observation]
            if finding is None:
                counts = not_stored.setdefault(observation, {})
                counts[status] = counts.get(status, 0) + 1
                continue
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
    used_mapping = {obs: mapping[obs] for obs in columns}
    details: dict[str, Any] = {
        "rows read": len(rows),
        "rows matched": len(rows) - skipped.total,
        "observation -> finding": ", ".join(f"{o} -> {f or '(none)'}" for o, f in used_mapping.items()),
    }
    if not_stored:
        details["observations with no single finding, not stored"] = "; ".join(
            f"{obs}: " + ", ".join(f"{s} {n}" for s, n in sorted(counts.items()))
            for obs, counts in sorted(not_stored.items())
        )
    if duplicate_rows:
        details["rows repeating a study (merged)"] = duplicate_rows
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
