"""`clala import KIND PATH --name NAME`: every existing label source becomes a run of the store.

Each kind lives in its own module with a function
`import_KIND(store, path, name, vocabulary, dataset) -> ImportResult` that validates its whole
input first and then stores the run in one transaction (see `source_runs.record_run`).
"""

from __future__ import annotations

import importlib
from pathlib import Path

from labeling.core.errors import InputError
from labeling.store.run_records import ImportResult
from labeling.store.store import Store
from schemas.vocabulary import load_vocabulary

# kind -> (module, function, what it reads)
IMPORT_KINDS: dict[str, tuple[str, str, str]] = {
    "scene-graphs": (
        "labeling.sources.imports.scene_graphs",
        "import_scene_graphs",
        "Chest ImaGenome silver scene graphs: a folder of *_SceneGraph.json",
    ),
    "imagenome-gold": (
        "labeling.sources.imports.scene_graphs",
        "import_imagenome_gold",
        "Chest ImaGenome gold attributes (gold_attributes_relations_*.txt)",
    ),
    "chexpert": (
        "labeling.sources.imports.chexpert",
        "import_chexpert",
        "MIMIC-CXR CheXpert CSV (mimic-cxr-2.0.0-chexpert.csv[.gz]), image level",
    ),
    "mesh": ("labeling.sources.imports.mesh", "import_mesh", "IU X-ray MeSH codes (indiana_reports.csv)"),
    "labelstudio": (
        "labeling.review.labelstudio",
        "import_labelstudio",
        "a Label Studio JSON export of reviewed tasks (run kind human)",
    ),
    "synth-gold": (
        "labeling.sources.imports.synth_gold",
        "import_synth_gold",
        "gold labels of a `clala synth` cohort (two runs: NAME-report, NAME-image)",
    ),
}


def import_labels(
    db: str | Path,
    kind: str,
    path: str | Path,
    name: str,
    dataset: str | None = None,
    vocabulary: str | None = None,
    enable: list[str] | None = None,
) -> ImportResult:
    if kind not in IMPORT_KINDS:
        raise InputError(f"unknown import kind {kind!r}; choose one of {', '.join(IMPORT_KINDS)}")
    path = Path(path)
    if not path.exists():
        raise InputError(f"{path}: not found")
    try:
        vocab = load_vocabulary(vocabulary, enable=enable or [])
    except (ValueError, FileNotFoundError) as exc:
        raise InputError(str(exc)) from None
    module, function, _ = IMPORT_KINDS[kind]
    importer = getattr(importlib.import_module(module), function)
    with Store(db) as store:
        return importer(store, path, name, vocab, dataset)
