"""Sensitivity analysis: how model quality moves with label quality (label quality as a knob:
see `model.labels.label_specs`).

A grid is a base run corrupted at several rates (`drop`, `add`, `shift`), plus real label sources,
each repeated over seeds. Every grid cell:
1. derives its training labels as a `LabelSpec` stored as a run of kind `derived`
   (`derive_run`), or reuses a derived run that already holds the same spec;
2. measures that matrix's quality against the reference run (`spec_quality`, region and image
   level, over the trained lesions);
3. trains CLALA-Net on the derived run (`train`) and evaluates its best checkpoint on the test
   split against the reference (`evaluate`);
4. is stored as one experiments row: label_spec = the cell (its key, series, setting, seed, spec,
   derived run, reference, split, lesions), config = the training configuration, metrics = label
   quality, model metrics, training summary.

Decisions, stated once:
- Seeds: seed s corrupts the labels (the spec's seed) and seeds training, so the spread over seeds
  covers both. A clean spec (rate 0, or a real source) does not depend on its seed, so its derived
  run is shared by every seed (stored with seed 0); only training differs.
- Rate 0 of every corruption kind is the same clean base spec: one cell, shown in each series.
  A real source equal to the base is that same cell too.
- Lesions: by default the findings the reference run has present at region level, for every cell,
  so that every cell is trained and scored on the same lesion set.
- The cell key is a hash of what decides the result: the spec (source run by name and id), the
  training settings that change the weights (not the device, threads, workers or folders), the
  seed, the reference, the split and the lesions. It is stored in label_spec["sensitivity_cell"].
- Resuming: a cell whose row is `complete` is not touched; a cell whose training finished (its
  training experiment is complete) is only evaluated; a cell killed mid-training continues from
  its `last.pt` (`train(resume=...)`), so a resumed grid gives the same numbers.
- Spread: the sample standard deviation over seeds (NaN with one seed: no spread to show).
- The decoder is off unless asked for: it writes sentences and does not change lesion recognition.
- The database: the grid trains in this process, and the trainer opens the database itself
  (`TrainConfig.db`), so the grid holds no connection while a cell trains; it opens one for the
  work before training (derived run, quality, the cell's row) and one after (evaluation, row).
"""

from __future__ import annotations

import csv
import dataclasses
import hashlib
import json
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from labeling.core.errors import InputError
from labeling.core.files import atomic_path
from labeling.core.formatting import finite
from labeling.store.store import Store
from model.evaluate.evaluate import csv_value
from model.evaluate.metrics import mean_supported
from model.labels.label_specs import DERIVATION_VERSION, DeriveRequest, LabelSpec, derive_run, spec_quality
from schemas.runs import RunKind

if TYPE_CHECKING:
    from model.train.config import TrainConfig

CORRUPTIONS = ("drop", "add", "shift")
SOURCE_SERIES = "source"
CELL_KEY_FIELD = "sensitivity_cell"
DERIVED_PREFIX = "sens"
# TrainConfig fields that do not change the trained weights (or are set per cell): left out of the key.
_KEY_EXCLUDED = (
    "run",
    "data",
    "imagenome",
    "db",
    "name",
    "checkpoint_dir",
    "resume",
    "workers",
    "threads",
    "device",
    "seed",
    "findings",
    "uncertain",
)
CSV_NAME, CELLS_CSV_NAME, PNG_NAME = "sensitivity.csv", "sensitivity_cells.csv", "sensitivity.png"
SUMMARY_COLUMNS = (
    "series",
    "setting",
    "rate",
    "seeds",
    "label_precision_mean",
    "label_recall_mean",
    "label_f1_mean",
    "label_f1_std",
    "model_f1_mean",
    "model_f1_std",
    "baseline_f1_mean",
    "image_f1_mean",
    "auroc_mean",
)
CELL_COLUMNS = (
    "cell_key",
    "series",
    "setting",
    "rate",
    "seed",
    "derived_run",
    "label_precision",
    "label_recall",
    "label_f1",
    "label_kappa",
    "model_mean_lesion_f1",
    "baseline_mean_lesion_f1",
    "image_mean_f1",
    "mean_auroc",
    "best_valid_mean_lesion_f1",
    "train_seconds",
    "experiment_id",
)


# --- the grid ----------------------------------------------------------------------------------------
@dataclass
class SensitivityGrid:
    """What to train: `base` corrupted at each rate of `drop` / `add` / `shift`, and each run of
    `sources` as it is, every one with each seed in `seeds`; scored against `reference`."""

    data: str
    db: str
    base: str
    reference: str
    drop: list[float] = field(default_factory=list)
    add: list[float] = field(default_factory=list)
    shift: list[float] = field(default_factory=list)
    sources: list[str] = field(default_factory=list)
    seeds: list[int] = field(default_factory=lambda: [0, 1, 2])
    uncertain: str = "ignore"
    shift_side: str = "same"
    findings: list[str] = field(default_factory=list)  # default: the reference's present findings
    split: str = "test"
    imagenome: str | None = None
    out: str = "sensitivity"


@dataclass(frozen=True)
class Cell:
    series: str  # drop | add | shift | source
    setting: str  # the rate as text, or the source run's name
    rate: float | None  # None for a source
    seed: int
    spec: LabelSpec


@dataclass
class CellResult:
    cell: Cell
    key: str
    derived_run: str
    experiment_id: int
    label_quality: dict[str, Any]
    model: dict[str, Any]
    train: dict[str, Any]
    outcome: str  # trained | evaluated (training had finished) | reused (row complete) | shared

    def row(self) -> dict[str, Any]:
        region = self.label_quality["region"]
        return {
            "cell_key": self.key,
            "series": self.cell.series,
            "setting": self.cell.setting,
            "rate": self.cell.rate,
            "seed": self.cell.seed,
            "derived_run": self.derived_run,
            "label_precision": region["precision"],
            "label_recall": region["recall"],
            "label_f1": region["f1"],
            "label_kappa": region["kappa"],
            "model_mean_lesion_f1": self.model["mean_lesion_f1"],
            "baseline_mean_lesion_f1": self.model["baseline_mean_lesion_f1"],
            "image_mean_f1": self.model["image_mean_f1"],
            "mean_auroc": self.model["mean_auroc"],
            "best_valid_mean_lesion_f1": self.train.get("best_valid_mean_lesion_f1"),
            "train_seconds": self.train.get("seconds"),
            "experiment_id": self.experiment_id,
        }


@dataclass
class SummaryRow:
    """One grid point: a (series, setting) over its seeds."""

    series: str
    setting: str
    rate: float | None
    seeds: int
    label_precision_mean: float
    label_recall_mean: float
    label_f1_mean: float
    label_f1_std: float
    model_f1_mean: float
    model_f1_std: float
    baseline_f1_mean: float
    image_f1_mean: float
    auroc_mean: float


@dataclass
class SensitivityResult:
    cells: list[CellResult]
    rows: list[SummaryRow]
    lesions: list[str]
    csv_path: Path
    cells_csv_path: Path
    png_path: Path
    plotted: dict[str, dict[str, list]]


def parse_rates(text: str | None, option: str) -> list[float]:
    """ "0,0.1,0.2" -> [0.0, 0.1, 0.2]; each a rate in [0, 1]."""
    if not text:
        return []
    rates = []
    for part in text.split(","):
        part = part.strip()
        try:
            value = float(part)
        except ValueError:
            raise InputError(f"{option}: {part!r} is not a number (write rates like 0,0.1,0.2)") from None
        if not 0 <= value <= 1 or math.isnan(value):
            raise InputError(f"{option}: {part} is not a rate in [0, 1]")
        if value not in rates:
            rates.append(value)
    return rates


def grid_cells(grid: SensitivityGrid) -> list[Cell]:
    """The grid's cells in order: each corruption kind by rate, then the sources; seeds innermost."""
    cells = []
    for kind in CORRUPTIONS:
        for rate in getattr(grid, kind):
            for seed in grid.seeds:
                spec = LabelSpec.checked(
                    source=grid.base, uncertain=grid.uncertain, shift_side=grid.shift_side, seed=seed, **{kind: rate}
                )
                if spec.is_clean:
                    spec = spec.model_copy(update={"seed": 0, "shift_side": "same"})
                cells.append(Cell(kind, f"{rate:g}", rate, seed, spec))
    for source in grid.sources:
        for seed in grid.seeds:
            cells.append(
                Cell(SOURCE_SERIES, source, None, seed, LabelSpec.checked(source=source, uncertain=grid.uncertain))
            )
    return cells


def check_grid(grid: SensitivityGrid) -> None:
    if not grid.seeds:
        raise InputError("--seeds: at least one seed")
    if not any(getattr(grid, kind) for kind in CORRUPTIONS) and not grid.sources:
        raise InputError("nothing to train: give rates with --drop, --add or --shift, or runs with --sources")
    for option, path in (("--data", grid.data), ("--imagenome", grid.imagenome)):
        if path is not None and not Path(path).is_dir():
            raise InputError(f"{option} {path}: folder not found")
    if not Path(grid.db).is_file():
        raise InputError(f"{grid.db}: database not found")
    out = Path(grid.out)
    if out.exists() and not out.is_dir():
        raise InputError(f"--out {out}: not a folder")
    if not out.parent.is_dir():
        raise InputError(f"--out {out}: folder {out.parent} does not exist")


def default_lesions(store: Store, reference: str) -> list[str]:
    """The findings the reference run has present at region level, in vocabulary order."""
    from schemas.vocabulary import load_vocabulary

    # Present ones only: a lesion the reference never has scores nothing (F1 undefined).
    names = load_vocabulary().finding_names
    lesions = [f for f in store.run_findings(reference, names, region_level=True, present=True) if f in names]
    if not lesions:
        raise InputError(
            f"reference run {store.run(reference).name!r} has no present region-level label; nothing to score models on"
        )
    return lesions


# --- keys and derived runs ----------------------------------------------------------------------------
def cell_key(
    cell: Cell, source_run_id: int, template: TrainConfig, reference: str, split: str, lesions: Sequence[str]
) -> str:
    """16 hex digits of sha256 over what decides the cell's numbers (see the module doc)."""
    settings = {k: v for k, v in template.to_dict().items() if k not in _KEY_EXCLUDED}
    payload = {
        "spec": cell.spec.model_dump(),
        "derivation": DERIVATION_VERSION,  # a cell trained on labels derived otherwise is another cell
        "source_run_id": source_run_id,
        "seed": cell.seed,
        "train": settings,
        "reference": reference,
        "split": split,
        "lesions": list(lesions),
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()[:16]


def derived_run_name(spec: LabelSpec) -> str:
    """A readable, deterministic name: sens:SOURCE:drop0.2:s1:<spec hash>."""
    parts = [DERIVED_PREFIX, spec.source]
    parts += [f"{kind}{getattr(spec, kind):g}" for kind in CORRUPTIONS if getattr(spec, kind)] or ["clean"]
    if spec.uncertain != "ignore":
        parts.append(f"uncertain-{spec.uncertain}")
    if not spec.is_clean:
        parts.append(f"s{spec.seed}")
    # the derivation's version in the digest: a run derived under an earlier one keeps its name
    identity = {**spec.model_dump(), "derivation": DERIVATION_VERSION}
    digest = hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:8]
    return ":".join([*parts, digest])


def find_derived_run(store: Store, spec: LabelSpec) -> str | None:
    """The name of a complete derived run that holds exactly `spec`, derived as this version derives
    it (DERIVATION_VERSION: a run derived before region-less labels were carried is not reused)."""
    wanted = spec.model_dump()
    for run in store.runs():
        if (
            run.kind is RunKind.derived
            and run.status.value == "complete"
            and run.params.get("spec") == wanted
            and run.params.get("derivation") == DERIVATION_VERSION
            and not run.params.get("corrections")  # a corrected run holds more than its spec says
        ):
            return run.name
    return None


def ensure_derived_run(store: Store, spec: LabelSpec, reference: str) -> str:
    """The derived run that holds `spec`: an existing one, or a new one measured against `reference`."""
    existing = find_derived_run(store, spec)
    if existing:
        return existing
    name, taken, n = derived_run_name(spec), {run.name for run in store.runs()}, 2
    while name in taken:  # a run of the same spec that cannot be reused (derived otherwise, incomplete)
        name, n = f"{derived_run_name(spec)}:{n}", n + 1
    return derive_run(store, DeriveRequest(name, spec, reference)).name


# --- the experiments rows ------------------------------------------------------------------------------
def find_cell_row(store: Store, key: str) -> dict[str, Any] | None:
    rows = [
        row
        for row in store.experiments()
        if isinstance(row["label_spec"], dict) and row["label_spec"].get(CELL_KEY_FIELD) == key
    ]
    return rows[-1] if rows else None


def _experiment_status(db: str | Path, experiment_id: int | None) -> str | None:
    if experiment_id is None:
        return None
    with Store(db, read_only=True) as store:
        return store.experiment_status(experiment_id)


# --- one cell -------------------------------------------------------------------------------------------------
def _cell_config(template: TrainConfig, cell: Cell, derived: str, lesions: Sequence[str], folder: Path, key: str):
    return dataclasses.replace(
        template,
        run=derived,
        uncertain="ignore",
        findings=list(lesions),
        seed=cell.seed,
        checkpoint_dir=str(folder),
        resume=None,
        name=f"sensitivity {cell.series} {cell.setting} seed {cell.seed} [{key}]",
    )


def _train_cell(config: TrainConfig, notify: Callable[[dict[str, Any]], None]) -> dict[str, Any]:
    """Train the cell's model, or continue it, or take it as it is when its training finished."""
    from model.train.checkpoint import load_checkpoint
    from model.train.loop import train

    folder = Path(config.checkpoint_dir)
    last = folder / "last.pt"
    if last.exists():
        saved = load_checkpoint(last)
        if (
            _experiment_status(config.db, saved["state"].get("experiment_id")) == "complete"
            and (folder / "best.pt").exists()
        ):
            best = load_checkpoint(folder / "best.pt")
            history = saved["state"]["history"]
            return {
                "experiment_id": saved["state"]["experiment_id"],
                "best_epoch": saved["state"]["best_epoch"],
                "best_valid_mean_lesion_f1": finite(saved["state"]["best_f1"]),
                "epochs_run": saved["epoch"],
                "seconds": None,
                "parameters": None,
                "best_checkpoint": str(folder / "best.pt"),
                "resumed_from": None,
                "trained": False,
                "epochs_recorded": len(history),
                "thresholds": list(best["thresholds"]),
            }
        config = dataclasses.replace(config, resume=str(last))
    result = train(config, notify)
    return {
        "experiment_id": result.experiment_id,
        "best_epoch": result.best_epoch,
        "best_valid_mean_lesion_f1": finite(result.best_valid_f1),
        "epochs_run": result.epochs_run,
        "seconds": result.seconds,
        "parameters": result.parameters,
        "best_checkpoint": str(result.best_checkpoint),
        "resumed_from": config.resume,
        "trained": True,
        "epochs_recorded": len(result.history),
        "thresholds": list(result.thresholds),
    }


def _reused(cell: Cell, key: str, row: dict[str, Any]) -> CellResult:
    metrics = row["metrics"]
    return CellResult(
        cell,
        key,
        row["label_spec"]["derived_run"],
        row["experiment_id"],
        metrics["label_quality"],
        metrics["model"],
        metrics["train"],
        "reused",
    )


@dataclass
class _CellStart:
    key: str
    derived: str
    quality: dict[str, Any]
    config: TrainConfig
    experiment_id: int


def _start_cell(
    store: Store, grid: SensitivityGrid, template: TrainConfig, cell: Cell, lesions: Sequence[str]
) -> CellResult | _CellStart:
    """The cell's result when its row is complete; else its derived run, label quality, training
    config and experiments row (new, or set running again)."""
    source = store.run(cell.spec.source)
    key = cell_key(cell, source.run_id, template, grid.reference, grid.split, lesions)
    row = find_cell_row(store, key)
    if row is not None and row["status"] == "complete":
        return _reused(cell, key, row)
    derived = ensure_derived_run(store, cell.spec, grid.reference)
    quality = spec_quality(store, cell.spec, grid.reference, findings=lesions).as_dict()
    folder = Path(grid.out) / "cells" / key
    config = _cell_config(template, cell, derived, lesions, folder, key)
    label_spec = {
        CELL_KEY_FIELD: key,
        "series": cell.series,
        "setting": cell.setting,
        "rate": cell.rate,
        "seed": cell.seed,
        "spec": cell.spec.model_dump(),
        "source_run_id": source.run_id,
        "derived_run": derived,
        "reference": grid.reference,
        "split": grid.split,
        "findings": list(lesions),
    }
    if row is None:
        experiment_id = store.add_experiment(
            f"sensitivity {cell.series} {cell.setting} seed {cell.seed}",
            label_spec,
            {"train": config.to_dict()},
            str(folder / "best.pt"),
            {"label_quality": quality},
        )
    else:
        experiment_id = row["experiment_id"]
        store.update_experiment(experiment_id, metrics={"label_quality": quality}, status="running")
    return _CellStart(key, derived, quality, config, experiment_id)


def _evaluate_cell(grid: SensitivityGrid, config: TrainConfig, checkpoint: str) -> dict[str, Any]:
    """The model metrics of the cell's best checkpoint on the grid's split (CSV in its folder)."""
    from model.evaluate.evaluate import EvaluateRequest, evaluate
    from model.evaluate.inference import InferenceOptions

    options = InferenceOptions(
        checkpoint,
        grid.data,
        grid.imagenome,
        grid.split,
        batch_size=config.batch_size,
        device=config.device,
        workers=config.workers,
    )
    request = EvaluateRequest(options, grid.reference, Path(config.checkpoint_dir) / "eval.csv", record=False)
    with Store(grid.db, read_only=True) as store:
        evaluation = evaluate(store, request)
    return {
        **{k: finite(v) for k, v in evaluation.summary().items()},
        "csv": evaluation.csv_path,
        "lesions": [{k: finite(v) for k, v in dataclasses.asdict(s).items()} for s in evaluation.lesions],
    }


def run_cell(
    grid: SensitivityGrid,
    template: TrainConfig,
    cell: Cell,
    lesions: Sequence[str],
    on_event: Callable[[dict[str, Any]], None],
) -> CellResult:
    with Store.open_existing(grid.db) as store:
        start = _start_cell(store, grid, template, cell, lesions)
    if isinstance(start, CellResult):
        on_event({"event": "cell", "cell": cell, "key": start.key, "outcome": "reused"})
        return start
    key, experiment_id = start.key, start.experiment_id
    on_event(
        {
            "event": "cell",
            "cell": cell,
            "key": key,
            "outcome": "start",
            "derived_run": start.derived,
            "label_quality": start.quality,
            "experiment_id": experiment_id,
        }
    )
    Path(start.config.checkpoint_dir).mkdir(parents=True, exist_ok=True)
    try:
        trained = _train_cell(start.config, lambda event: on_event({**event, "cell": cell, "key": key}))
        model = _evaluate_cell(grid, start.config, trained["best_checkpoint"])
    except BaseException:
        with Store.open_existing(grid.db) as store:
            store.update_experiment(experiment_id, status="failed")
        raise
    metrics = {"label_quality": start.quality, "model": model, "train": trained}
    with Store.open_existing(grid.db) as store:
        store.update_experiment(
            experiment_id, metrics=metrics, status="complete", checkpoint_path=trained["best_checkpoint"]
        )
    outcome = "trained" if trained["trained"] else "evaluated"
    result = CellResult(cell, key, start.derived, experiment_id, start.quality, model, trained, outcome)
    on_event({"event": "cell", "cell": cell, "key": key, "outcome": outcome, "result": result})
    return result


# --- summary, files, plot ---------------------------------------------------------------------------------
def _as_float(value: Any) -> float:
    """A stored metric as a float (None, an undefined metric, is NaN)."""
    return float("nan") if value is None else float(value)


def _std(values: Sequence[float]) -> float:
    kept = [v for v in values if not math.isnan(v)]
    return float(np.std(kept, ddof=1)) if len(kept) > 1 else float("nan")


def summarize(results: Sequence[CellResult]) -> list[SummaryRow]:
    """One row per (series, setting), in grid order, with means and spread over seeds."""
    groups: dict[tuple[str, str], list[CellResult]] = {}
    for result in results:
        groups.setdefault((result.cell.series, result.cell.setting), []).append(result)
    rows = []
    for (series, setting), members in groups.items():
        label = [m.label_quality["region"] for m in members]
        model = [m.model for m in members]
        label_f1 = [_as_float(q["f1"]) for q in label]
        model_f1 = [_as_float(m["mean_lesion_f1"]) for m in model]
        rows.append(
            SummaryRow(
                series,
                setting,
                members[0].cell.rate,
                len(members),
                mean_supported([_as_float(q["precision"]) for q in label]),
                mean_supported([_as_float(q["recall"]) for q in label]),
                mean_supported(label_f1),
                _std(label_f1),
                mean_supported(model_f1),
                _std(model_f1),
                mean_supported([_as_float(m["baseline_mean_lesion_f1"]) for m in model]),
                mean_supported([_as_float(m["image_mean_f1"]) for m in model]),
                mean_supported([_as_float(m["mean_auroc"]) for m in model]),
            )
        )
    return rows


def write_csv(path: Path, columns: Sequence[str], rows: Sequence[dict[str, Any]]) -> None:
    with atomic_path(path) as tmp:
        with tmp.open("w", newline="", encoding="utf-8") as handle:
            writer = csv.writer(handle)
            writer.writerow(columns)
            for row in rows:
                writer.writerow([csv_value(row[c]) for c in columns])


def plot_sensitivity(rows: Sequence[SummaryRow], path: Path, reference: str, split: str) -> dict[str, dict[str, list]]:
    """Model mean lesion F1 against label F1: a line with error bars per corruption kind (points
    in rate order, each marked with its rate), one labeled point per real source, and the
    constant-prediction baseline as a dashed line. Returns the data
    drawn, per series: x, y, xerr, yerr, labels (NaN spread: no bar)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    plotted: dict[str, dict[str, list]] = {}
    for row in rows:
        series = plotted.setdefault(row.series, {"x": [], "y": [], "xerr": [], "yerr": [], "labels": []})
        series["x"].append(row.label_f1_mean)
        series["y"].append(row.model_f1_mean)
        series["xerr"].append(row.label_f1_std)
        series["yerr"].append(row.model_f1_std)
        series["labels"].append(row.setting)
    fig, ax = plt.subplots(figsize=(7.5, 5.5))
    try:
        colours = {"drop": "tab:blue", "add": "tab:orange", "shift": "tab:green", SOURCE_SERIES: "tab:red"}
        for name, data in plotted.items():
            order = np.argsort([-x if not math.isnan(x) else 0 for x in data["x"]], kind="stable")
            xs, ys = np.asarray(data["x"])[order], np.asarray(data["y"])[order]
            xerr = np.nan_to_num(np.asarray(data["xerr"], float)[order])
            yerr = np.nan_to_num(np.asarray(data["yerr"], float)[order])
            is_source = name == SOURCE_SERIES
            ax.errorbar(
                xs,
                ys,
                xerr=xerr,
                yerr=yerr,
                fmt="s" if is_source else "o",
                capsize=3,
                color=colours.get(name),
                label="real sources" if is_source else f"{name} (rate marked)",
                linestyle="none" if is_source else "-",
            )
            for x, y, text in zip(xs, ys, np.asarray(data["labels"])[order]):
                ax.annotate(
                    text if is_source else f"{name} {text}",
                    (x, y),
                    textcoords="offset points",
                    xytext=(5, 5),
                    fontsize=8,
                )
        baselines = [r.baseline_f1_mean for r in rows if not math.isnan(r.baseline_f1_mean)]
        if baselines:  # the same test cells for every cell: one constant-prediction level
            ax.axhline(
                float(np.mean(baselines)),
                color="grey",
                linestyle="--",
                linewidth=1,
                label="constant prediction (every cell positive)",
            )
        ax.set_xlabel(f"label F1 vs {reference} (region level)")
        ax.set_ylabel(f"model mean lesion F1 ({split} split, vs {reference})")
        ax.set_title("CLALA-Net quality against label quality (mean ± std over seeds)")
        ax.grid(True, alpha=0.3)
        ax.legend(loc="best", fontsize=8)
        fig.tight_layout()
        with atomic_path(path) as tmp:
            fig.savefig(tmp, dpi=100, format="png")
    finally:
        plt.close(fig)
    return plotted


# --- the whole grid -------------------------------------------------------------------------------------
def run_sensitivity(
    grid: SensitivityGrid, template: TrainConfig, on_event: Callable[[dict[str, Any]], None] | None = None
) -> SensitivityResult:
    """Train and evaluate every cell of `grid` (resuming what is done) with the training settings of
    `template` (a TrainConfig; its run, seed, findings and folders are set per cell); write the
    summary CSV, the per-cell CSV and the plot into `grid.out`."""
    from model.train.config import check_config

    notify = on_event or (lambda event: None)
    check_grid(grid)
    check_config(template)
    cells = grid_cells(grid)
    with Store(grid.db, read_only=True) as store:
        # Unknown runs fail here, before anything is trained.
        grid = dataclasses.replace(grid, reference=store.run(grid.reference).name)
        names = {cell.spec.source: store.run(cell.spec.source).name for cell in cells}
        lesions = list(grid.findings) or default_lesions(store, grid.reference)
    cells = [
        dataclasses.replace(
            cell,
            spec=cell.spec.model_copy(update={"source": names[cell.spec.source]}),
            setting=names[cell.setting] if cell.series == SOURCE_SERIES else cell.setting,
        )
        for cell in cells
    ]
    out = Path(grid.out)
    out.mkdir(exist_ok=True)
    notify({"event": "grid", "cells": len(cells), "lesions": lesions})
    results = []
    done: dict[tuple, CellResult] = {}
    for index, cell in enumerate(cells, start=1):
        notify({"event": "next", "index": index, "total": len(cells), "cell": cell})
        same = (cell.spec, cell.seed)
        if same in done:  # rate 0 of another kind, or the base as a source: the cell already run
            results.append(dataclasses.replace(done[same], cell=cell, outcome="shared"))
            notify({"event": "cell", "cell": cell, "key": done[same].key, "outcome": "shared"})
            continue
        result = run_cell(grid, template, cell, lesions, notify)
        done[same] = result
        results.append(result)
    rows = summarize(results)
    csv_path, cells_path, png_path = out / CSV_NAME, out / CELLS_CSV_NAME, out / PNG_NAME
    write_csv(csv_path, SUMMARY_COLUMNS, [dataclasses.asdict(row) for row in rows])
    write_csv(cells_path, CELL_COLUMNS, [result.row() for result in results])
    plotted = plot_sensitivity(rows, png_path, grid.reference, grid.split)
    return SensitivityResult(results, rows, lesions, csv_path, cells_path, png_path, plotted)


__all__ = [
    "SensitivityGrid",
    "Cell",
    "CellResult",
    "SummaryRow",
    "SensitivityResult",
    "run_sensitivity",
    "grid_cells",
    "parse_rates",
    "cell_key",
    "derived_run_name",
    "summarize",
    "plot_sensitivity",
]
