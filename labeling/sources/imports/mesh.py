"""`clala import mesh`: the IU X-ray MeSH codes (`indiana_reports.csv`, column `MeSH`) as a run.

Each `;`-separated code is `Term/qualifier/...`. The mapping file
`schemas/vocabulary_data/iu_mesh.json` turns the term (and, for broad terms like `Lung` or
`Aorta`, a qualifier) into a finding, and the location qualifiers into regions.

Semantics, decided once here:
- A code is an affirmed finding: status present; `borderline` makes it uncertain (the indexer
  put it at the threshold), which leaves the call to the training uncertainty policy.
- Severity comes from mild / moderate / severe (the highest when several); size words such as
  small or large are descriptors, not severity.
- Location: specific zones (`base`, `upper lobe`, `apex`, `hilum`, ...) with their side
  (`right`, `left`, `bilateral` = both); else a broad location (`lung`, `pleura`) with its side;
  else a side alone on the rule's zone (lungs by default); else the region the term itself
  implies (Cardiomegaly -> cardiac silhouette, Scoliosis -> spine); else an image-level row
  (region null). A zone with no side (`base` alone) is image level too: naming both sides would
  assert a finding where the code does not. A located region the finding may not occur in falls
  back the same way (implied region, else image level).
- `normal` covers the report with no rows. `No Indexing` is not a statement about the image: the
  report is not covered, and is counted. A report whose every code maps to nothing is still
  covered (it was indexed), with its codes counted as skipped.
- A code with an empty part (`Opacity//left`, `;;`, a trailing `/`) fails the whole import with
  an InputError naming the file, line and code: the file is not what it claims to be, and a run
  missing that report's findings must not be stored as complete.
- Uids not in the database (the blank reports ingest skips) are counted and listed.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Any

from labeling.core.errors import InputError
from labeling.core.files import file_sha256
from labeling.ingest.pipeline import DEFAULT_DATASETS
from labeling.ingest.readers import _csv_rows, _require_columns
from labeling.store.run_records import RunResult, SkipLog, record_run, status_counts
from labeling.store.store import Store
from schemas.labels import STATUS_RANK
from schemas.runs import RunKind, RunSpec
from schemas.vocabulary import Vocabulary

MAPPING_FILE = "iu_mesh.json"
SEVERITY_RANK = {"mild": 0, "moderate": 1, "severe": 2}
IMAGE_LEVEL = None


def _key(text: str) -> str:
    """Terms and qualifiers compare case- and spacing-insensitively ("Subcutaneous  Emphysema")."""
    return " ".join(text.lower().split())


@dataclass(frozen=True)
class MeshMapping:
    raw_sha256: str
    version: str
    no_finding: frozenset[str]
    not_indexed: frozenset[str]
    severity: dict[str, str]
    uncertain: frozenset[str]
    sides: dict[str, tuple[str, ...]]
    locations: dict[str, dict[str, str]]
    broad_locations: dict[str, dict[str, str]]
    descriptors: frozenset[str]
    terms: dict[str, tuple[dict[str, Any], ...]]
    term_names: dict[str, str]
    unmapped: dict[str, str]

    def known_qualifier(self, qualifier: str) -> bool:
        return (
            qualifier in self.severity
            or qualifier in self.uncertain
            or qualifier in self.sides
            or qualifier in self.locations
            or qualifier in self.broad_locations
            or qualifier in self.descriptors
        )


def load_mesh_mapping(raw: bytes | None = None) -> MeshMapping:
    """The shipped mapping (or `raw` bytes of one of the same shape)."""
    if raw is None:
        raw = resources.files("schemas").joinpath("vocabulary_data", MAPPING_FILE).read_bytes()
    data = json.loads(raw)
    terms = {_key(term): tuple(rules) for term, rules in data["terms"].items()}
    return MeshMapping(
        raw_sha256=hashlib.sha256(raw).hexdigest(),
        version=f"{data['name']}@{data['version']}",
        no_finding=frozenset(_key(c) for c in data["no_finding"]),
        not_indexed=frozenset(_key(c) for c in data["not_indexed"]),
        severity={_key(k): v for k, v in data["severity"].items()},
        uncertain=frozenset(_key(q) for q in data["uncertain"]),
        sides={_key(k): tuple(v) for k, v in data["sides"].items()},
        locations={_key(k): v for k, v in data["locations"].items()},
        broad_locations={_key(k): v for k, v in data["broad_locations"].items()},
        descriptors=frozenset(_key(q) for q in data["descriptors"]),
        terms=terms,
        term_names={_key(term): term for term in data["terms"]},
        unmapped={_key(term): why for term, why in data["unmapped"].items()},
    )


@lru_cache(maxsize=1)
def shipped_mapping() -> MeshMapping:
    return load_mesh_mapping()


def check_mapping(mapping: MeshMapping, vocabulary: Vocabulary) -> None:
    """Every finding, region and zone the mapping names exists in the vocabulary file (all
    categories, so that a disabled finding is reported as such rather than as a typo)."""
    findings = {f.name for f in vocabulary.data.findings}
    regions = set(vocabulary.region_names)
    for term, rules in mapping.terms.items():
        for rule in rules:
            if "finding" in rule and rule["finding"] not in findings:
                raise ValueError(f"MeSH mapping, term {term!r}: unknown finding {rule['finding']!r}")
            for region in rule.get("implied_regions", []):
                if region not in regions:
                    raise ValueError(f"MeSH mapping, term {term!r}: unknown region {region!r}")
            zone = rule.get("zone")
            if zone and zone not in mapping.locations and zone not in mapping.broad_locations:
                raise ValueError(f"MeSH mapping, term {term!r}: unknown zone {zone!r}")
    for table in (mapping.locations, mapping.broad_locations):
        for zone, by_side in table.items():
            for region in by_side.values():
                if region not in regions:
                    raise ValueError(f"MeSH mapping, location {zone!r}: unknown region {region!r}")


@dataclass
class CodeLabels:
    """What one MeSH code says: a finding in regions (None = image level), or why nothing."""

    finding: str | None = None
    regions: tuple[str | None, ...] = ()
    status: str = "present"
    severity: str | None = None
    skip_reason: str | None = None
    unknown_qualifiers: list[str] = field(default_factory=list)


def _zone_regions(by_side: dict[str, str], sides: tuple[str, ...]) -> tuple[str, ...] | None:
    """Regions of a zone for the sides named; None when the side is needed and missing."""
    if sides:
        found = tuple(by_side[s] for s in sides if s in by_side)
        if found:
            return found
    if "unsided" in by_side:
        return (by_side["unsided"],)
    return None


def map_code(code: str, mapping: MeshMapping, vocabulary: Vocabulary) -> CodeLabels:
    parts = [p.strip() for p in code.split("/")]
    term, qualifiers = _key(parts[0]), [_key(q) for q in parts[1:]]
    name = mapping.term_names.get(term, parts[0].strip())
    result = CodeLabels(unknown_qualifiers=[q for q in qualifiers if not mapping.known_qualifier(q)])
    if term in mapping.unmapped:
        result.skip_reason = f"{name}: {mapping.unmapped[term]}"
        return result
    if term not in mapping.terms:
        result.skip_reason = f"{name}: not in the MeSH mapping"
        return result
    present = set(qualifiers)
    rule = next((r for r in mapping.terms[term] if set(map(_key, r.get("when", []))) <= present), None)
    if rule is None or "skip" in rule:
        result.skip_reason = f"{name}: {rule['skip'] if rule else 'no finding for these qualifiers'}"
        return result
    finding = rule["finding"]
    if finding not in vocabulary.finding_names:
        category = next(f.category for f in vocabulary.data.findings if f.name == finding)
        result.skip_reason = f"{name}: finding {finding!r} is not enabled (--enable {category})"
        return result
    result.finding = finding

    severities = [mapping.severity[q] for q in qualifiers if q in mapping.severity]
    if severities:
        result.severity = max(severities, key=SEVERITY_RANK.__getitem__)
    if any(q in mapping.uncertain for q in qualifiers):
        result.status = "uncertain"

    sides = tuple(dict.fromkeys(s for q in qualifiers if q in mapping.sides for s in mapping.sides[q]))
    # The mapping's implied region, else the one the finding's words imply (the no-location rule
    # every source follows: `Finding.implied_regions`), else none.
    implied = tuple(rule.get("implied_regions", ())) or (
        vocabulary.finding(finding).implied_regions if finding in vocabulary.finding_names else ()
    )
    specific = [q for q in qualifiers if q in mapping.locations]
    broad = [q for q in qualifiers if q in mapping.broad_locations]
    regions: tuple[str, ...] | None
    if specific or broad:
        zones = [mapping.locations[q] for q in specific] or [mapping.broad_locations[q] for q in broad]
        resolved = [_zone_regions(z, sides) for z in zones]
        # A zone whose side is unknown makes the whole code unlocated (see the module docstring).
        regions = (
            None
            if any(r is None for r in resolved)
            else tuple(dict.fromkeys(region for r in resolved if r is not None for region in r))
        )
    elif sides:
        zone = rule.get("zone", "lung")
        regions = _zone_regions(mapping.locations.get(zone) or mapping.broad_locations[zone], sides)
    else:
        regions = implied or None
    if regions and not all(vocabulary.allows(finding, r) for r in regions):
        regions = implied or None
    result.regions = regions if regions else (IMAGE_LEVEL,)
    return result


def split_codes(mesh: str, path: Path, line: int) -> list[str]:
    codes = mesh.split(";")
    for code in codes:
        if any(not part.strip() for part in code.split("/")):
            raise InputError(
                f"{path}: line {line}: MeSH code {code!r} in {mesh!r} has an empty part; "
                "fix the file (no partial run was stored)"
            )
    return [code.strip() for code in codes]


def _map_reports(
    parsed: list[tuple[int, str, list[str]]],
    keys: dict[str, list[tuple[str, int]]],
    mapping: MeshMapping,
    vocabulary: Vocabulary,
    skipped: SkipLog,
) -> tuple[dict[tuple[int, str | None, str], dict[str, Any]], list[int], dict[str, Any]]:
    """(one row per cell, covered report keys, figures: codes, mapped, unknown qualifiers) of the
    parsed rows whose uid is a stored report."""
    best: dict[tuple[int, str | None, str], dict[str, Any]] = {}
    covered: list[int] = []
    codes_total = mapped = 0
    unknown_qualifiers: dict[str, int] = {}
    for _line, uid, codes in parsed:
        if uid not in keys:
            skipped.add("uid not in the database (blank report or not ingested)", f"uid {uid}")
            continue
        report_key = keys[uid][0][1]
        if all(_key(c) in mapping.not_indexed for c in codes):
            skipped.add("No Indexing: the indexers coded nothing; report not covered", f"uid {uid}")
            continue
        covered.append(report_key)
        for code in codes:
            if _key(code) in mapping.no_finding or _key(code) in mapping.not_indexed:
                continue
            codes_total += 1
            labels = map_code(code, mapping, vocabulary)
            for qualifier in labels.unknown_qualifiers:
                unknown_qualifiers[qualifier] = unknown_qualifiers.get(qualifier, 0) + 1
            if labels.finding is None:
                skipped.add(labels.skip_reason or "unmapped", f"{code} (uid {uid})")
                continue
            mapped += 1
            for region in labels.regions:
                row = {
                    "report_key": report_key,
                    "region": region,
                    "finding": labels.finding,
                    "status": labels.status,
                    "severity": labels.severity,
                }
                _keep_stronger(best, row)
    return best, covered, {"codes": codes_total, "mapped": mapped, "unknown qualifiers": unknown_qualifiers}


def _parse_rows(
    path: Path, rows: list[tuple[int, dict[str, str]]], skipped: SkipLog
) -> list[tuple[int, str, list[str]]]:
    """(line, uid, codes) of every row with MeSH codes; a row without any is skipped."""
    parsed: list[tuple[int, str, list[str]]] = []
    seen: dict[str, int] = {}
    for line, row in rows:
        uid = (row.get("uid") or "").strip()
        if not uid:
            raise InputError(f"{path}: line {line}: empty 'uid'")
        if uid in seen:
            raise InputError(f"{path}: line {line}: uid {uid!r} repeats line {seen[uid]}")
        seen[uid] = line
        mesh = (row.get("MeSH") or "").strip()
        if not mesh:
            skipped.add("no MeSH codes: report not covered", f"uid {uid} (line {line})")
            continue
        parsed.append((line, uid, split_codes(mesh, path, line)))
    return parsed


def import_mesh(store: Store, path: Path, name: str, vocabulary: Vocabulary, dataset: str | None = None) -> RunResult:
    """Read every row and map every code first, then store the run in one transaction."""
    path = Path(path)
    if path.is_dir():
        raise InputError(f"{path}: is a folder; pass the IU X-ray indiana_reports.csv")
    mapping = shipped_mapping()
    check_mapping(mapping, vocabulary)
    dataset = dataset or DEFAULT_DATASETS["iu-xray"]
    header, rows = _csv_rows(path, "utf-8")
    _require_columns(path, header, {"(IU X-ray MeSH)": "uid", "(IU X-ray)": "MeSH"})

    result = RunResult(name=name, kind=RunKind.imported.value, source=str(path.resolve()))
    parsed = _parse_rows(path, rows, result.skipped)

    keys = store.report_keys([uid for _, uid, _ in parsed], by="report_id", dataset=dataset)
    if parsed and not keys:
        raise InputError(
            f"{path}: none of its {len(parsed):,} uids is a report of dataset {dataset!r} in "
            f"{store.path}; run `clala ingest {path}` first or pass --dataset"
        )

    best, covered, figures = _map_reports(parsed, keys, mapping, vocabulary, result.skipped)
    codes_total, mapped, unknown_qualifiers = figures["codes"], figures["mapped"], figures["unknown qualifiers"]
    rows_out = _drop_redundant_image_rows(list(best.values()))
    labels_table = {
        column: [r[column] for r in rows_out] for column in ("report_key", "region", "finding", "status", "severity")
    }
    spec = RunSpec(
        name=name,
        kind=RunKind.imported,
        vocabulary_version=vocabulary.version,
        source=result.source,
        params={
            "format": "iu-xray-mesh",
            "dataset": dataset,
            "file_sha256": file_sha256(path),
            "mapping": mapping.version,
            "mapping_sha256": mapping.raw_sha256,
        },
    )
    record_run(store, spec, covered, labels_table)

    result.reports = len(set(covered))
    result.labels = len(rows_out)
    result.statuses = status_counts(labels_table)
    result.details = {
        "codes": f"{codes_total:,} finding codes, {mapped:,} mapped, {codes_total - mapped:,} skipped",
        "image-level labels (no usable location)": sum(r["region"] is None for r in rows_out),
    }
    if unknown_qualifiers:
        listed = ", ".join(f"{q} ({n})" for q, n in sorted(unknown_qualifiers.items(), key=lambda kv: -kv[1])[:10])
        result.details["unrecognized qualifiers (ignored)"] = listed
    return result


def _keep_stronger(best: dict, row: dict[str, Any]) -> None:
    """One row per cell: present > uncertain; among equals a row with a severity, then the higher."""
    cell = (row["report_key"], row["region"], row["finding"])
    kept = best.get(cell)
    if kept is None:
        best[cell] = row
        return
    if STATUS_RANK[row["status"]] != STATUS_RANK[kept["status"]]:
        if STATUS_RANK[row["status"]] < STATUS_RANK[kept["status"]]:
            best[cell] = row
        return
    if row["severity"] and (not kept["severity"] or SEVERITY_RANK[row["severity"]] > SEVERITY_RANK[kept["severity"]]):
        best[cell] = row


def _drop_redundant_image_rows(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """An image-level row adds nothing when the report has the same finding located with a
    status at least as strong (`Opacity/lung;Opacity/lung/base/left`)."""
    strongest: dict[tuple[int, str], int] = {}
    for r in rows:
        if r["region"] is not None:
            cell = (r["report_key"], r["finding"])
            strongest[cell] = min(strongest.get(cell, 9), STATUS_RANK[r["status"]])
    return [
        r
        for r in rows
        if r["region"] is not None or strongest.get((r["report_key"], r["finding"]), 9) > STATUS_RANK[r["status"]]
    ]
