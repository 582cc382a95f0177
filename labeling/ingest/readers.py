"""Readers for report files: generic CSV and JSONL, a MIMIC-CXR reports folder, and the IU X-ray
CSV. Each returns `SourceReport`s or raises `InputError` naming the file and the row or field."""

from __future__ import annotations

import csv
import io
import json
import re
from dataclasses import dataclass
from pathlib import Path

from labeling.core.errors import InputError
from schemas.reports import SourceReport

FORMATS = ("auto", "csv", "jsonl", "mimic", "iu-xray")
IU_XRAY_COLUMNS = {"uid", "MeSH", "findings", "impression"}
# IU X-ray report parts in reading order, with the header each becomes in the stored text.
IU_XRAY_SECTIONS = (
    ("indication", "INDICATION"),
    ("comparison", "COMPARISON"),
    ("findings", "FINDINGS"),
    ("impression", "IMPRESSION"),
)
MIMIC_REPORT = re.compile(r"^p(\d+)$"), re.compile(r"^s(\d+)\.txt$")
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".dcm")

csv.field_size_limit(1 << 30)  # long reports are judged by --max-chars, not by the csv module


@dataclass(frozen=True)
class Columns:
    """Which fields of a CSV row or JSON object hold what."""

    id: str = "id"
    text: str = "text"
    patient: str | None = None
    study: str | None = None
    images: str | None = None  # a list (JSONL) or ';'-separated paths (CSV)


def read_text_file(path: Path, encoding: str = "utf-8") -> str:
    """A whole file as text, with a line-numbered error for bytes that are not `encoding`."""
    if not path.exists():
        raise InputError(f"{path}: file not found")
    if path.is_dir():
        raise InputError(f"{path}: is a folder, not a file (use --format mimic for a MIMIC-CXR folder)")
    data = path.read_bytes()
    if not data.strip():
        raise InputError(f"{path}: file is empty")
    try:
        return data.decode("utf-8-sig" if encoding.lower().replace("_", "-") in ("utf-8", "utf8") else encoding)
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise InputError(
            f"{path}: line {line}: byte 0x{data[exc.start]:02x} at offset {exc.start} is not valid "
            f"{encoding}; re-encode the file as UTF-8 or pass --encoding"
        ) from None
    except LookupError:
        raise InputError(f"--encoding: unknown encoding {encoding!r}") from None


def detect_format(path: Path) -> str:
    if path.is_dir():
        return "mimic"
    if path.suffix.lower() in (".jsonl", ".ndjson"):
        return "jsonl"
    if path.suffix.lower() in (".csv", ".tsv"):
        if path.exists():
            with path.open("r", encoding="utf-8", errors="replace", newline="") as handle:
                header = next(csv.reader(handle), [])
            if IU_XRAY_COLUMNS <= set(header):
                return "iu-xray"
        return "csv"
    raise InputError(f"{path}: cannot tell the format from the name; pass --format ({', '.join(FORMATS[1:])})")


def _optional(value: object) -> str | None:
    if value is None:
        return None
    text = str(value).strip()
    return text or None


class _LineCounter:
    """The lines of a text, counted as the csv module reads them: `read` is how many it has taken."""

    def __init__(self, text: str):
        self._lines = io.StringIO(text, newline="")
        self.read = 0

    def __iter__(self) -> _LineCounter:
        return self

    def __next__(self) -> str:
        line = self._lines.readline()
        if not line:
            raise StopIteration
        self.read += 1
        return line


def _nul_error(path: Path, line: int) -> InputError:
    return InputError(f"{path}: line {line}: a NUL byte (\\x00); reports are text, remove it")


def _has_nul(value: object) -> bool:
    """Whether a parsed JSON value holds a NUL character anywhere (JSON writes one as \\u0000)."""
    if isinstance(value, str):
        return "\x00" in value
    if isinstance(value, dict):
        return any(_has_nul(k) or _has_nul(v) for k, v in value.items())
    if isinstance(value, list):
        return any(_has_nul(v) for v in value)
    return False


def _csv_rows(path: Path, encoding: str) -> tuple[list[str], list[tuple[int, dict[str, str]]]]:
    """The header and (line, row) per record, `line` being where the record starts (a quoted field
    can span lines). An unterminated quote, a stray quote inside a field and a NUL byte are errors
    naming the line where their record starts, never rows merged or text stored with them."""
    text = read_text_file(path, encoding)
    delimiter = "\t" if path.suffix.lower() == ".tsv" else ","
    lines = _LineCounter(text)
    reader = csv.reader(lines, delimiter=delimiter, strict=True)
    records: list[tuple[int, list[str]]] = []
    while True:
        start = lines.read + 1
        try:
            record = next(reader)
        except StopIteration:
            break
        except csv.Error as exc:
            problem = "a quoted field is never closed" if "unexpected end of data" in str(exc) else exc
            raise InputError(f"{path}: line {start}: malformed CSV: {problem}") from None
        if not record:
            continue  # a blank line, as csv.DictReader skips it
        if any("\x00" in value for value in record):
            raise _nul_error(path, start)
        records.append((start, record))
    if not records:
        raise InputError(f"{path}: file is empty")
    header = records[0][1]
    rows = []
    for line, record in records[1:]:
        row: dict = dict(zip(header, record))
        if len(record) < len(header):
            row.update(dict.fromkeys(header[len(record) :]))
        elif len(record) > len(header):
            row[None] = record[len(header) :]
        rows.append((line, row))
    if not rows:
        raise InputError(f"{path}: no report rows (only a header)")
    return header, rows


def _require_columns(path: Path, header: list[str], needed: dict[str, str | None]) -> None:
    for option, column in needed.items():
        if column is not None and column not in header:
            raise InputError(f"{path}: no column {column!r} (columns: {', '.join(header)}); choose it with {option}")


def read_csv(path: Path, columns: Columns, dataset: str, encoding: str = "utf-8") -> list[SourceReport]:
    header, rows = _csv_rows(path, encoding)
    _require_columns(
        path,
        header,
        {
            "--id-col": columns.id,
            "--text-col": columns.text,
            "--patient-col": columns.patient,
            "--study-col": columns.study,
            "--image-col": columns.images,
        },
    )
    used = {c for c in (columns.id, columns.text, columns.patient, columns.study, columns.images) if c}
    reports = []
    for line, row in rows:
        report_id = _optional(row.get(columns.id))
        if report_id is None:
            raise InputError(f"{path}: line {line}: empty {columns.id!r} (report id)")
        images = _optional(row.get(columns.images)) if columns.images else None
        reports.append(
            SourceReport(
                dataset=dataset,
                report_id=report_id,
                text=row.get(columns.text) or "",
                patient_id=_optional(row.get(columns.patient)) if columns.patient else None,
                study_id=_optional(row.get(columns.study)) if columns.study else None,
                image_paths=[p.strip() for p in images.split(";") if p.strip()] if images else [],
                metadata={k: v for k, v in row.items() if k not in used and k is not None and v not in (None, "")},
                source=f"{path}: line {line}",
            )
        )
    return reports


def read_jsonl(path: Path, columns: Columns, dataset: str, encoding: str = "utf-8") -> list[SourceReport]:
    text = read_text_file(path, encoding)
    reports = []
    for number, raw in enumerate(text.splitlines(), start=1):
        if not raw.strip():
            continue
        if "\x00" in raw:
            raise _nul_error(path, number)
        try:
            row = json.loads(raw)
        except json.JSONDecodeError as exc:
            raise InputError(f"{path}: line {number}: not valid JSON: {exc.msg}") from None
        if not isinstance(row, dict):
            raise InputError(f"{path}: line {number}: expected a JSON object, got {type(row).__name__}")
        if _has_nul(row):
            raise _nul_error(path, number)
        for option, field in (("--id-col", columns.id), ("--text-col", columns.text)):
            if field not in row:
                raise InputError(
                    f"{path}: line {number}: no field {field!r} (fields: {', '.join(row)}); choose it with {option}"
                )
        text_value = row[columns.text]
        if text_value is not None and not isinstance(text_value, str):
            raise InputError(f"{path}: line {number}: field {columns.text!r} must be a string")
        report_id = _optional(row[columns.id])
        if report_id is None:
            raise InputError(f"{path}: line {number}: empty {columns.id!r} (report id)")
        images = row.get(columns.images) if columns.images else None
        if isinstance(images, str):
            images = [p.strip() for p in images.split(";") if p.strip()]
        used = {c for c in (columns.id, columns.text, columns.patient, columns.study, columns.images) if c}
        reports.append(
            SourceReport(
                dataset=dataset,
                report_id=report_id,
                text=text_value or "",
                patient_id=_optional(row.get(columns.patient)) if columns.patient else None,
                study_id=_optional(row.get(columns.study)) if columns.study else None,
                image_paths=[str(p) for p in images or []],
                metadata={k: v for k, v in row.items() if k not in used},
                source=f"{path}: line {number}",
            )
        )
    if not reports:
        raise InputError(f"{path}: no report lines")
    return reports


def read_mimic(path: Path, dataset: str, encoding: str = "utf-8") -> list[SourceReport]:
    """A MIMIC-CXR reports tree: files/pXX/pNNNNNNNN/sNNNNNNNN.txt (PATH may be the tree's root,
    its `files` folder, or one pXX folder). Images beside a report (sNNNNNNNN/*.jpg) are listed."""
    if not path.exists():
        raise InputError(f"{path}: folder not found")
    if not path.is_dir():
        raise InputError(f"{path}: --format mimic needs the MIMIC-CXR reports folder, not a file")
    patient_re, study_re = MIMIC_REPORT
    reports = []
    for report_file in sorted(path.rglob("s*.txt")):
        study = study_re.match(report_file.name)
        patient = patient_re.match(report_file.parent.name)
        if not (study and patient):
            continue
        text = read_text_file(report_file, encoding) if report_file.stat().st_size else ""
        if "\x00" in text:
            raise _nul_error(report_file, text[: text.index("\x00")].count("\n") + 1)
        image_dir = report_file.with_suffix("")
        images = (
            sorted(str(p.relative_to(path)) for p in image_dir.glob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
            if image_dir.is_dir()
            else []
        )
        reports.append(
            SourceReport(
                dataset=dataset,
                report_id=study.group(1),
                text=text,
                patient_id=patient.group(1),
                study_id=study.group(1),
                image_paths=images,
                source=str(report_file),
            )
        )
    if not reports:
        raise InputError(f"{path}: no MIMIC-CXR report files (files/pXX/pNNNNNNNN/sNNNNNNNN.txt) under this folder")
    return reports


def read_iu_xray(path: Path, dataset: str, encoding: str = "utf-8") -> list[SourceReport]:
    """The IU X-ray `indiana_reports.csv`. The stored text joins the report's parts under
    MIMIC-style headers; `indiana_projections.csv` beside it, when present, gives the images."""
    header, rows = _csv_rows(path, encoding)
    missing = sorted(IU_XRAY_COLUMNS - set(header))
    if missing:
        raise InputError(
            f"{path}: missing IU X-ray column(s) {', '.join(missing)} (columns: {', '.join(header)}); "
            f"an indiana_reports.csv has {', '.join(sorted(IU_XRAY_COLUMNS))}"
        )
    images: dict[str, list[str]] = {}
    projections = path.with_name("indiana_projections.csv")
    if projections.is_file():
        _, projection_rows = _csv_rows(projections, encoding)
        for _, row in projection_rows:
            images.setdefault(row.get("uid", ""), []).append(row.get("filename", ""))
    reports = []
    for line, row in rows:
        uid = _optional(row.get("uid"))
        if uid is None:
            raise InputError(f"{path}: line {line}: empty 'uid'")
        parts = [
            f"{title}: {row[column].strip()}" for column, title in IU_XRAY_SECTIONS if (row.get(column) or "").strip()
        ]
        reports.append(
            SourceReport(
                dataset=dataset,
                report_id=uid,
                text="\n".join(parts),
                study_id=uid,
                image_paths=images.get(uid, []),
                metadata={k: row[k] for k in ("MeSH", "Problems", "image") if row.get(k)},
                source=f"{path}: line {line}",
            )
        )
    return reports
