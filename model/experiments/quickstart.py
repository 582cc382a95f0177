"""`clala quickstart`: the whole mission on the embedded defaults, in a scratch folder, on CPU.

Steps, each through the same functions as the commands, each skipped when its result is already
in the folder (so a second run, or one after an interruption, continues instead of redoing):
 1. synthesise a small cohort (`clala synth`; written beside and renamed into place);
 2. ingest its reports (`clala ingest --format mimic`; re-ingesting adds nothing);
 3. label them with the rules (run `rules`);
 4. label a few of them with the embedded local LLM (run `llm-local`: llama.cpp's server with the
    shipped Gemma 3 270M GGUF, a tiny base model that proves the path, not a good labeler);
    `--no-llm` skips it, as does a missing `clala[local]`;
 5. import the cohort's gold (runs `gold-report`, `gold-image`);
 6. compare rules (and the LLM) against gold-report: tables, CSV and heatmap PNG;
 7. train a small CLALA-Net on two label sources, gold-report and rules (decoder on: it writes
    the report sentences); an interrupted training continues from its last.pt;
 8. evaluate both on the test split against gold-report (CSV);
 9. generate a few reports from the gold-report model (deterministic aggregator, or the local
    LLM with `--llm-aggregator`) and score them (label consistency, BLEU-4, ROUGE-L);
10. print where each result and plot is.

`small=True` (`--small`) is a seconds-scale setting for tests: a tiny cohort and model.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from labeling.core.errors import ClalaError, InputError
from labeling.core.terminal import literal, output_console
from labeling.store.store import Store

COHORT, DB = "cohort", "clala.duckdb"
RULES_RUN, LLM_RUN, GOLD = "rules", "llm-local", "gold"
REFERENCE = "gold-report"
TRAINED_SOURCES = ("gold-report", "rules")
GENERATION = "quickstart"


@dataclass(frozen=True)
class QuickstartSettings:
    studies: int = 240
    phantom_size: int = 128  # synthetic image height
    image_size: int = 96  # training image size
    epochs: int = 3
    batch_size: int = 16
    lr: float = 1e-3
    backbone: str = "resnet18"
    model: tuple[tuple[str, Any], ...] = (
        ("d_model", 128),
        ("lca_feedforward_dim", 256),
        ("use_itcl", False),
        ("decoder_hidden_size", 128),
        ("decoder_layers", 1),
        ("decoder_heads", 2),
        ("max_sentence_tokens", 32),
    )
    llm_reports: int = 4
    generate: int = 8
    seed: int = 0

    @classmethod
    def small(cls) -> QuickstartSettings:
        """Seconds, not minutes: for tests and a first look."""
        return cls(
            studies=60,
            phantom_size=64,
            image_size=64,
            epochs=1,
            batch_size=8,
            lr=3e-3,
            backbone="test_resnet",
            model=(
                ("d_model", 32),
                ("lca_heads", 2),
                ("lca_feedforward_dim", 64),
                ("llcl_projection_dim", 16),
                ("use_itcl", False),
                ("decoder_hidden_size", 32),
                ("decoder_layers", 1),
                ("decoder_heads", 2),
                ("prefix_tokens", 2),
                ("max_sentence_tokens", 24),
            ),
            llm_reports=2,
            generate=4,
        )


@dataclass
class QuickstartResult:
    workdir: Path
    db: Path
    places: list[tuple[str, str, str]]  # (step, result, where)
    evaluations: dict[str, Any]
    seconds: float


def _check_model_extra() -> None:
    """The quickstart trains CLALA-Net: fail at once, in one line, without the model extra."""
    import importlib.util

    missing = [
        name for name in ("torch", "torchvision", "timm", "transformers") if importlib.util.find_spec(name) is None
    ]
    if missing:
        raise ClalaError(
            f"the quickstart trains CLALA-Net and needs {', '.join(missing)}: pip install -e '.[local,model]'"
        )


def _run_status(db: Path, name: str) -> str | None:
    if not db.exists():
        return None
    with Store(db, read_only=True) as store:
        return next((run.status.value for run in store.runs() if run.name == name), None)


def _synthesise(cohort: Path, settings: QuickstartSettings, console: Console) -> None:
    from model.synth.writer import GOLD_FILE, generate_cohort

    if (cohort / GOLD_FILE).exists():
        console.print(f"cohort already written: {literal(cohort)}")
        return
    partial = cohort.with_name(cohort.name + ".partial")
    if partial.exists():
        import shutil

        shutil.rmtree(partial)  # an interrupted earlier attempt: start it over
    generate_cohort(partial, settings.studies, settings.seed, size=settings.phantom_size)
    partial.rename(cohort)
    console.print(f"wrote {settings.studies} synthetic studies ({settings.phantom_size} px) to {literal(cohort)}")


def _label_rules(db: Path, console: Console) -> None:
    from labeling.sources.commands import run_rules_label
    from labeling.sources.rules import RulesRequest

    status = _run_status(db, RULES_RUN)
    if status == "complete":
        console.print(f"already labeled: run {RULES_RUN}")
    else:
        request = RulesRequest(name=None if status else RULES_RUN, resume=RULES_RUN if status else None)
        with Store(db) as store:
            run_rules_label(store, request, console)


def _label_llm(db: Path, settings: QuickstartSettings, console: Console) -> bool:
    from labeling.sources.commands import run_label
    from labeling.sources.llm import LabelOptions, LlmRequest

    try:
        import llama_cpp.server  # noqa: F401
    except ImportError:
        console.print("[yellow]skipped:[/yellow] the local backend is not installed (pip install 'clala[local]')")
        return False
    status = _run_status(db, LLM_RUN)
    if status in ("complete", "partial"):  # partial: every report tried, some failed validation
        console.print(f"already labeled: run {LLM_RUN}")
        return True
    with Store(db) as store:
        if status is not None:
            run_label(store, LlmRequest(resume=LLM_RUN), console)
        else:
            ids = store.first_report_ids(settings.llm_reports, exclude_prefix="generated:")
            run_label(store, LlmRequest(name=LLM_RUN, options=LabelOptions(report_ids=ids)), console)
    return _run_status(db, LLM_RUN) in ("complete", "partial")


def _import_gold(db: Path, cohort: Path, console: Console) -> None:
    from labeling.sources.imports import ImportRequest
    from labeling.sources.imports.commands import run_import

    if _run_status(db, REFERENCE) == "complete":
        console.print(f"already imported: runs {GOLD}-report, {GOLD}-image")
        return
    with Store(db) as store:
        run_import(store, ImportRequest("synth-gold", cohort, GOLD), console)


def _train(run: str, cohort: Path, db: Path, folder: Path, settings: QuickstartSettings, console: Console) -> Path:
    """The run's model: trained, continued from last.pt, or taken as it is when finished."""
    from model.train.checkpoint import load_checkpoint
    from model.train.commands import run_train
    from model.train.config import TrainConfig

    best, last = folder / "best.pt", folder / "last.pt"
    config = TrainConfig(
        run=run,
        data=str(cohort),
        db=str(db),
        name=f"quickstart-{run}",
        image_size=settings.image_size,
        batch_size=settings.batch_size,
        epochs=settings.epochs,
        lr=settings.lr,
        patience=0,
        seed=settings.seed,
        checkpoint_dir=str(folder),
        tokenizer_vocab_size=500,
        model={"backbone": settings.backbone, **dict(settings.model)},
    )
    if last.exists():
        if load_checkpoint(last)["epoch"] >= settings.epochs and best.exists():
            console.print(f"already trained: {literal(best)}")
            return best
        config = dataclasses.replace(config, resume=str(last))
    return Path(run_train(config, console).best_checkpoint)


def run_quickstart(
    workdir: str | Path = "clala-quickstart",
    llm: bool = True,
    llm_aggregator: bool = False,
    settings: QuickstartSettings | None = None,
    console: Console | None = None,
) -> QuickstartResult:
    """Run (or continue) the quickstart in `workdir`; see the module doc."""
    from labeling.ingest import IngestOptions
    from labeling.ingest.commands import run_ingest
    from labeling.review.commands import show_comparison
    from labeling.store.commands import show_stats
    from model.evaluate.evaluate import EvaluateRequest, evaluate
    from model.evaluate.inference import InferenceOptions
    from model.reports.commands import run_generate, run_score_reports
    from model.reports.generation import GenerateRequest
    from model.reports.scoring import ScoreRequest
    from model.reports.writer import LLMOptions, generated_dataset

    started = time.perf_counter()
    _check_model_extra()
    console = console or output_console()
    settings = settings or QuickstartSettings()
    workdir = Path(workdir)
    if workdir.exists() and not workdir.is_dir():
        raise InputError(f"--workdir {workdir}: not a folder")
    workdir.mkdir(parents=True, exist_ok=True)
    cohort, db = workdir / COHORT, workdir / DB
    results, models = workdir / "results", workdir / "models"
    results.mkdir(exist_ok=True)
    models.mkdir(exist_ok=True)
    places: list[tuple[str, str, str]] = []

    console.rule("1. synthesise a cohort")
    _synthesise(cohort, settings, console)
    places.append(("cohort", f"{settings.studies} studies: images, boxes, reports, gold", str(cohort)))
    console.rule("2. ingest its reports")
    run_ingest(db, cohort / "files", IngestOptions(format="mimic"), console)
    places.append(("database", "reports, runs, labels, experiments", str(db)))
    console.rule("3. label them with the rules")
    _label_rules(db, console)
    console.rule(f"4. label {settings.llm_reports} of them with the embedded local LLM")
    labeled_by_llm = _label_llm(db, settings, console) if llm else False
    if not llm:
        console.print("skipped (--no-llm)")
    console.rule("5. import the synthetic gold")
    _import_gold(db, cohort, console)
    places.append(
        (
            "label runs",
            ", ".join([RULES_RUN, *([LLM_RUN] if labeled_by_llm else []), "gold-report", "gold-image"]),
            f"clala runs list --db {db}",
        )
    )

    console.rule("6. compare the rules with the gold")
    with Store(db, read_only=True) as store:
        compared = show_comparison(store, [RULES_RUN, REFERENCE], out=results / "compare", console=console)
    places.append(
        (
            "rules vs gold-report",
            "per finding and region: CSV + F1 heatmap",
            ", ".join(str(p) for p in compared["files"]),
        )
    )
    if labeled_by_llm:
        with Store(db, read_only=True) as store:
            show_comparison(store, [LLM_RUN, REFERENCE], console=console)
        places.append(
            (
                "llm-local vs gold-report",
                f"{settings.llm_reports} reports (tables above)",
                f"clala compare {LLM_RUN} {REFERENCE} --db {db}",
            )
        )

    evaluations: dict[str, Any] = {}
    checkpoints: dict[str, Path] = {}
    for number, run in enumerate(TRAINED_SOURCES):
        console.rule(f"7{'ab'[number]}. train CLALA-Net on {run}")
        checkpoints[run] = _train(run, cohort, db, models / run, settings, console)
        places.append((f"model ({run} labels)", "best checkpoint", str(checkpoints[run])))
    console.rule("8. evaluate both on the test split against gold-report")
    for run, checkpoint in checkpoints.items():
        csv = results / f"eval_{run}_vs_{REFERENCE}.csv"
        options = InferenceOptions(checkpoint, cohort, split="test", batch_size=settings.batch_size)
        with Store(db) as store:
            evaluation = evaluate(store, EvaluateRequest(options, REFERENCE, csv, record=not csv.exists()))
        evaluations[run] = evaluation
        console.print(
            f"trained on {run}: test mean lesion F1 {evaluation.mean_lesion_f1:.3f} (constant-prediction "
            f"baseline {evaluation.baseline_mean_lesion_f1:.3f}); image-level mean F1 "
            f"{evaluation.image_mean_f1:.3f}"
        )
        places.append(
            (
                f"evaluation ({run} model)",
                f"mean lesion F1 {evaluation.mean_lesion_f1:.3f} vs constant {evaluation.baseline_mean_lesion_f1:.3f}",
                str(csv),
            )
        )

    console.rule(f"9. generate {settings.generate} reports and score them")
    with Store(db, read_only=True) as store:
        generated = store.dataset_report_count(generated_dataset(GENERATION))
    if generated:
        console.print(f"already generated: {generated} reports in {literal(generated_dataset(GENERATION))}")
    else:
        request = GenerateRequest(
            checkpoint=checkpoints[REFERENCE],
            data=cohort,
            name=GENERATION,
            limit=settings.generate,
            llm=LLMOptions() if llm_aggregator else None,
            batch_size=settings.batch_size,
        )
        with Store(db) as store:
            run_generate(store, request, console=console)
    scores_file = results / f"{GENERATION}.scores.json"
    if not scores_file.exists():
        with Store(db) as store:
            run_score_reports(store, ScoreRequest(name=GENERATION, reference=REFERENCE, out=results), console=console)
    else:
        console.print(f"already scored: {literal(scores_file)}")
    places.append(
        (
            "generated reports",
            f"dataset {generated_dataset(GENERATION)}",
            f"clala reports list --dataset {generated_dataset(GENERATION)} --db {db}",
        )
    )
    places.append(
        (
            "report scores",
            "label consistency, BLEU-4, ROUGE-L",
            f"{scores_file}, {results / (GENERATION + '.per_report.csv')}",
        )
    )

    console.rule("10. where everything is")
    with Store(db, read_only=True) as store:
        show_stats(store, console)
    table = Table("step", "result", "where", title=f"clala quickstart in {literal(workdir)}", title_justify="left")
    for step, result, where in places:
        table.add_row(literal(step), literal(result), literal(where))
    console.print(table)
    seconds = time.perf_counter() - started
    console.print(f"done in {seconds:.0f} s; run it again to continue or to see this summary")
    return QuickstartResult(workdir, db, places, evaluations, seconds)


__all__ = ["run_quickstart", "QuickstartSettings", "QuickstartResult"]
