"""`clala import KIND PATH --name NAME`: every existing label source becomes a run of the store.

Each kind lives in its own module with a function
`import_KIND(store, path, name, vocabulary, dataset) -> RunResult` that validates its whole
input first and then stores the run in one transaction (see `run_records.record_run`).
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from labeling.core.errors import InputError
from labeling.store.run_records import RunHooks, RunResult
from labeling.store.store import Store
from schemas.vocabulary import load_vocabulary

if TYPE_CHECKING:
    from labeling.sources.imports.chexpert import ChexpertColumns

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
        "labeling.sources.imports.labelstudio",
        "import_labelstudio",
        "a Label Studio JSON export of reviewed tasks (run kind human)",
    ),
    "synth-gold": (
        "labeling.sources.imports.synth_gold",
        "import_synth_gold",
        "gold labels of a `clala synth` cohort (two runs: NAME-report, NAME-image)",
    ),
}


@dataclass(frozen=True)
class ImportRequest:
    """Import the labels of `kind` at `path` as run `name`; `dataset`: match reports of this dataset
    only; `vocabulary`/`enable`: the vocabulary the labels must fit; `no_header`/`columns`
    (chexpert only): a CSV without a header row, and its column positions
    (`--columns "Reports=0,Cardiomegaly=3"`). The kind, the path and the options are checked when
    the request is made, before any database is opened."""

    kind: str
    path: Path
    name: str
    dataset: str | None = None
    vocabulary: str | None = None
    enable: list[str] = field(default_factory=list)
    no_header: bool = False
    columns: str | None = None

    def __post_init__(self) -> None:
        if self.kind not in IMPORT_KINDS:
            raise InputError(f"unknown import kind {self.kind!r}; choose one of {', '.join(IMPORT_KINDS)}")
        if (self.no_header or self.columns is not None) and self.kind != "chexpert":
            raise InputError(f"--no-header and --columns apply to `clala import chexpert` only, not {self.kind}")
        self.chexpert_columns()  # checks the options now
        object.__setattr__(self, "path", Path(self.path))
        if not self.path.exists():
            raise InputError(f"{self.path}: not found")

    def chexpert_columns(self) -> ChexpertColumns:
        from labeling.sources.imports.chexpert import ChexpertColumns, parse_positions

        positions = parse_positions(self.columns) if self.columns is not None else None
        return ChexpertColumns(no_header=self.no_header, positions=positions)


def import_labels(store: Store, request: ImportRequest, *, hooks: RunHooks | None = None) -> RunResult:
    """Store the labels a request names as a new run (or, for synth-gold, two runs). An import is
    validated whole and stored in one transaction, so `hooks` hear of it once it is stored."""
    try:
        vocab = load_vocabulary(request.vocabulary, enable=request.enable)
    except (ValueError, FileNotFoundError) as exc:
        raise InputError(str(exc)) from None
    module, function, _ = IMPORT_KINDS[request.kind]
    importer = getattr(importlib.import_module(module), function)
    options = {"columns": request.chexpert_columns()} if request.kind == "chexpert" else {}
    result: RunResult = importer(store, request.path, request.name, vocab, request.dataset, **options)
    if hooks:
        hooks.start(result)
        hooks.advance(result, result.reports)
    return result
