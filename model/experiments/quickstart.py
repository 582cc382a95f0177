"""`clala quickstart`: the whole mission on the embedded defaults, in a scratch folder, on CPU.

Steps, each through the same functions as the commands, each skipped when its result is already
in the folder (so a second run, or one after an interruption, continues instead of redoing):
 1. synthesise a small cohort (`clala synth`; written beside and renamed into place);
 2. ingest its reports (`clala ingest --format mimic`; re-ingesting adds nothing);
 3. label them with the rules (run `rules`);
 4. label a few of them with the embedded local LLM (run `llm-local`: llama.cpp's server with the
    shipped Gemma 3 270M GGUF, a tiny base model that proves the path, not a good labeler);
    `--no-llm` skips it on purpose; a missing `clala[local]`, a server that crashes or a run that
    ends `incomplete`/`partial` fails the step (the other steps still run);
 5. import the cohort's gold (runs `gold-report`, `gold-image`);
 6. compare rules (and the LLM) against gold-report: tables, CSV and heatmap PNG;
 7. train a small CLALA-Net on two label sources, gold-report and rules (decoder on: it writes
    the report sentences); an interrupted training continues from its last.pt;
 8. evaluate both on the test split against gold-report (CSV): the lesions with at least
    `min_positives` positive test cells are scored (F1, AUROC per lesion, against the constant
    prediction), the others listed as not scored; where the rules model lands between the
    constant and the gold-report model, beside the rules' label F1;
 9. generate a few reports from the gold-report model (deterministic aggregator, or the local
    LLM with `--llm-aggregator`) and score them (label consistency, BLEU-4, ROUGE-L) beside the
    constant report (the most frequent training findings, model/reports/constant.py) for the
    same studies;
10. print where each result and plot is: one row per step, a failed step marked with its reason
    and the command that finishes it. `QuickstartResult.failed` is true when any step failed;
    `clala quickstart` then exits FAILED_EXIT_CODE (3), never 0.

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
from labeling.core.formatting import format_number
from labeling.core.terminal import literal, output_console
from labeling.store.store import Store

COHORT, DB = "cohort", "clala.duckdb"
RULES_RUN, LLM_RUN, GOLD = "rules", "llm-local", "gold"
REFERENCE = "gold-report"
TRAINED_SOURCES = ("gold-report", "rules")
GENERATION = "quickstart"
CONSTANT_GENERATION = "quickstart-constant"  # the constant report, for the same studies
FAILED_EXIT_CODE = 3  # some step failed or did not finish: the summary says which and how to finish it


@dataclass(frozen=True)
class QuickstartSettings:
    """The default is measured to learn in minutes on 2 CPU cores (BENCHMARKS.md, "Quickstart: a
    model that learns"): 2,000 studies give a test split with at least 10 positive cells for 14 of
    17 lesions; timm's `test_resnet` (0.4 M parameters, ~3x resnet18's images/s at 96 px) at the
    phantoms' own 96 px learns more in 3 epochs (lr 3e-3) than resnet18 does in the same time."""

    studies: int = 2000
    phantom_size: int = 96  # synthetic image height
    image_size: int = 96  # training image size
    epochs: int = 3
    batch_size: int = 16
    lr: float = 3e-3
    backbone: str = "test_resnet"
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
    min_positives: int = 10  # positive test cells a lesion needs to be scored (enter the means)

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
            min_positives=1,  # a 60-study test split: every lesion with a positive
        )


@dataclass(frozen=True)
class StepOutcome:
    """One row of the summary: what a step produced and where, or why it failed and how to finish it."""

    step: str
    result: str
    where: str  # where its result is; for a failed step, the command that finishes it
    failed: bool = False


@dataclass
class QuickstartResult:
    workdir: Path
    db: Path
    steps: list[StepOutcome]
    evaluations: dict[str, Any]
    seconds: float

    @property
    def failed(self) -> list[StepOutcome]:
        return [step for step in self.steps if step.failed]

    @property
    def places(self) -> list[tuple[str, str, str]]:
        """(step, result, where) of every row."""
        return [(step.step, step.result, step.where) for step in self.steps]


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


def _label_llm(db: Path, settings: QuickstartSettings, console: Console) -> StepOutcome:
    """Run (or finish) `llm-local`; its row: reports done, labels stored, rejections, or the failure."""
    from labeling.sources.commands import run_label
    from labeling.sources.llm import LabelOptions, LlmRequest, local_backend_installed

    step = "llm-local (embedded LLM)"
    finish = f"clala label --resume {LLM_RUN} --db {db}"
    if not local_backend_installed():
        return StepOutcome(
            step,
            "not run: the local backend is not installed",
            "pip install -e '.[local]', then clala quickstart again (or --no-llm to skip the LLM)",
            failed=True,
        )
    status = _run_status(db, LLM_RUN)
    stopped: str | None = None
    if status == "complete":
        console.print(f"already labeled: run {LLM_RUN}")
    else:
        try:
            with Store(db) as store:
                if status is not None:
                    result = run_label(store, LlmRequest(resume=LLM_RUN), console)
                else:
                    ids = store.first_report_ids(settings.llm_reports, exclude_prefix="generated:")
                    result = run_label(store, LlmRequest(name=LLM_RUN, options=LabelOptions(report_ids=ids)), console)
            stopped = result.stopped_because
        except ClalaError as error:  # the server could not start (or crashed while starting)
            console.print(f"[red]failed:[/red] {literal(error)}")
            again = finish if _run_status(db, LLM_RUN) else "clala quickstart (after fixing the cause)"
            return StepOutcome(step, f"failed: {error}", again, failed=True)
    with Store(db, read_only=True) as store:
        run = store.run(LLM_RUN)
        work = store.work_counts(run.run_id)
        labels = sum(store.label_status_counts(run.run_id).values())
        rejected = store.rejection_counts(run.run_id)
    total = sum(work.values())
    done = work.get("done", 0)
    why_rejected = ", ".join(f"{reason} {n}" for reason, n in rejected.items())
    figures = f"{done} of {total} reports done, {labels} labels stored, {sum(rejected.values())} rejected" + (
        f" ({why_rejected})" if why_rejected else ""
    )
    if run.status.value == "complete":
        return StepOutcome(step, f"complete: {figures}", f"clala runs show {LLM_RUN} --db {db}")
    if run.status.value == "partial":
        reason = f"{work.get('failed', 0)} report(s) failed validation (clala failures {LLM_RUN} --db {db})"
    else:
        reason = stopped or f"{total - done} report(s) not labeled"
    return StepOutcome(step, f"{run.status.value}: {figures}; {reason}", finish, failed=True)


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


def _evaluate_models(
    db: Path, cohort: Path, checkpoints: dict[str, Path], results: Path, settings: QuickstartSettings, console: Console
) -> tuple[dict[str, Any], list[tuple[str, str, str]]]:
    """Step 8: each model on the test split against gold-report, its means over the lesions with at
    least `settings.min_positives` positive test cells (the others listed as not scored); a table of
    the scored lesions, and where the rules model lands between the gold model and the constant
    beside the rules' own label F1. Returns ({run: Evaluation}, summary rows)."""
    from labeling.review import CompareOptions, compare_runs
    from model.evaluate.evaluate import EvaluateRequest, evaluate
    from model.evaluate.inference import InferenceOptions

    evaluations: dict[str, Any] = {}
    rows: list[tuple[str, str, str]] = []
    for run, checkpoint in checkpoints.items():
        csv = results / f"eval_{run}_vs_{REFERENCE}.csv"
        options = InferenceOptions(checkpoint, cohort, split="test", batch_size=settings.batch_size)
        request = EvaluateRequest(
            options, REFERENCE, csv, record=not csv.exists(), min_positives=settings.min_positives
        )
        with Store(db) as store:
            evaluation = evaluate(store, request)
        evaluations[run] = evaluation
        console.print(
            f"trained on {run}: test mean lesion F1 {evaluation.mean_lesion_f1:.3f} over {len(evaluation.scored)} "
            f"lesions (constant-prediction baseline {evaluation.baseline_mean_lesion_f1:.3f}, "
            f"{evaluation.ratio_to_baseline:.1f}x); mean AUROC {evaluation.mean_auroc:.3f}; image-level mean F1 "
            f"{evaluation.image_mean_f1:.3f} (constant {evaluation.image_baseline_mean_f1:.3f})"
        )
        rows.append(
            (
                f"evaluation ({run} model)",
                f"mean lesion F1 {evaluation.mean_lesion_f1:.3f} vs constant {evaluation.baseline_mean_lesion_f1:.3f} "
                f"({len(evaluation.scored)} lesions, AUROC {evaluation.mean_auroc:.3f})",
                str(csv),
            )
        )
    if not evaluations:
        return evaluations, rows
    _show_lesion_table(evaluations, settings, console)
    gold, rules = evaluations.get(REFERENCE), evaluations.get(RULES_RUN)
    if gold is not None and rules is not None and gold.scored:
        findings = [row.lesion for row in gold.scored]
        with Store(db, read_only=True) as store:
            label = compare_runs(store, RULES_RUN, REFERENCE, CompareOptions(findings=findings, uncertain="exclude"))
        constant, span = gold.baseline_mean_lesion_f1, gold.mean_lesion_f1 - gold.baseline_mean_lesion_f1
        if span > 0:
            place = f"{(rules.mean_lesion_f1 - constant) / span:.0%} of the way from constant to gold"
        else:
            place = "no scale: the gold-report model does not beat the constant"
        console.print(
            f"rules' labels vs gold-report on the scored lesions: region-level F1 {label.micro.f1:.3f}; the model "
            f"trained on them: test F1 {rules.mean_lesion_f1:.3f} ({place}: constant {constant:.3f}, "
            f"gold-report model {gold.mean_lesion_f1:.3f})"
        )
        rows.append(
            (
                "rules model vs gold model",
                f"label F1 {label.micro.f1:.3f}; model F1 {rules.mean_lesion_f1:.3f} ({place})",
                f"clala compare {RULES_RUN} {REFERENCE} --db {db}",
            )
        )
    return evaluations, rows


def _show_lesion_table(evaluations: dict[str, Any], settings: QuickstartSettings, console: Console) -> None:
    """Per scored lesion: test positives, constant F1, and each model's F1 and AUROC (region level,
    and image level: a region AUROC also credits where a lesion usually sits); then the lesions not
    scored with their positive counts."""
    from model.evaluate.metrics import mean_supported

    first = next(iter(evaluations.values()))  # every model is scored on the same test cells
    table = Table("lesion", "test positives", "constant F1", title="test split, scored lesions", title_justify="left")
    for run in evaluations:
        for column in ("F1", "AUROC", "image AUROC"):
            table.add_column(f"{run}: {column}", justify="right")
    by_run = {run: {row.lesion: row for row in evaluation.lesions} for run, evaluation in evaluations.items()}
    for row in first.scored:
        cells = []
        for run in evaluations:
            other = by_run[run].get(row.lesion)
            cells += (
                [format_number(other.f1), format_number(other.auroc), format_number(other.image_auroc)]
                if other
                else ["-"] * 3
            )
        table.add_row(literal(row.lesion), f"{row.support:,}", format_number(row.baseline_f1), *cells)
    means = []
    for evaluation in evaluations.values():
        image_auroc = [row.image_auroc for row in evaluation.scored]
        means += [
            format_number(evaluation.mean_lesion_f1),
            format_number(evaluation.mean_auroc),
            format_number(mean_supported(image_auroc)),
        ]
    table.add_row("mean", "", format_number(first.baseline_mean_lesion_f1), *means, style="bold")
    console.print(table)
    if first.not_scored:
        shown = ", ".join(f"{literal(name)} ({count})" for name, count in first.not_scored.items())
        fewer = "no positive" if settings.min_positives <= 1 else f"fewer than {settings.min_positives} positive"
        console.print(f"not scored ({fewer} test cells): {shown}")


def _generate_and_score(
    db: Path,
    cohort: Path,
    checkpoints: dict[str, Path],
    results: Path,
    settings: QuickstartSettings,
    llm_aggregator: bool,
    console: Console,
) -> tuple[dict[str, Any], list[tuple[str, str, str]]]:
    """Step 9: reports from the gold-report model, scored against the source reports, beside the
    constant report (the most frequent training findings of gold-report, model/reports/constant.py)
    written by the same writer for the same studies and scored the same way. Returns ({"generated":
    scores summary, "constant": scores summary, "constant_findings": [...]}, summary rows)."""
    import json

    from model.reports.commands import run_generate
    from model.reports.constant import constant_report, split_report_keys, write_constant_reports
    from model.reports.generation import GenerateRequest
    from model.reports.scoring import ScoreRequest, score_and_record
    from model.reports.writer import LLMOptions, generated_dataset, generated_reports

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
        # scored without `clala score-reports`' printout: the table below shows these figures beside
        # the constant report's (and the opt-in LLM judge, which the quickstart does not ask for,
        # is not reported as skipped)
        with Store(db) as store:
            recorded = score_and_record(store, ScoreRequest(name=GENERATION, reference=REFERENCE, out=results))
        for note in recorded.scores.notes:
            console.print(f"note: {literal(note)}", emoji=False)
    else:
        console.print(f"already scored: {literal(scores_file)}")

    constant_file = results / f"{CONSTANT_GENERATION}.scores.json"
    with Store(db) as store:
        if not store.dataset_report_count(generated_dataset(CONSTANT_GENERATION)):
            constant = constant_report(store, REFERENCE, split_report_keys(store, cohort, "train"))
            write_constant_reports(store, CONSTANT_GENERATION, GENERATION, constant)
        stored = generated_reports(store, CONSTANT_GENERATION)
        if not constant_file.exists():
            score_and_record(store, ScoreRequest(name=CONSTANT_GENERATION, reference=REFERENCE, out=results))
    findings = stored[0]["metadata"]["generation"]["constant"]["findings"]
    said = "; ".join(f"{f['finding']} ({f['frequency']:.0%} of training reports)" for f in findings)
    console.print(f"constant report (most frequent gold-report findings of the training split): {literal(said)}")
    console.print(literal(stored[0]["text"].strip()), highlight=False)
    scores = {
        "generated": json.loads(scores_file.read_text(encoding="utf-8")),
        "constant": json.loads(constant_file.read_text(encoding="utf-8")),
        "constant_findings": findings,
    }
    console.print(_report_scores_table(scores["generated"], scores["constant"]))
    f1 = {
        (name, level): (scores[name]["label_consistency"][level] or {}).get("f1")
        for name in ("generated", "constant")
        for level in ("image", "region")
    }
    consistency = "; ".join(
        f"{level} {format_number(f1['generated', level])} vs {format_number(f1['constant', level])}"
        for level in ("image", "region")
    )
    rows = [
        (
            "generated reports",
            f"dataset {generated_dataset(GENERATION)}",
            f"clala reports list --dataset {generated_dataset(GENERATION)} --db {db}",
        ),
        (
            "report scores",
            f"label consistency F1 vs the constant report: {consistency}; BLEU-4, ROUGE-L",
            f"{scores_file}, {results / (GENERATION + '.per_report.csv')}, {constant_file}",
        ),
    ]
    return scores, rows


def _report_scores_table(generated: dict[str, Any], constant: dict[str, Any]) -> Table:
    """Label consistency (image and region level), BLEU-4 and ROUGE-L of the generated reports
    beside the constant report's, from their scores summaries."""
    table = Table(
        "measure",
        f"generated ({generated['reports']})",
        f"constant report ({constant['reports']})",
        title=f"reports vs their source reports ({literal(generated['reference'])} labels)",
        title_justify="left",
    )
    for level in ("image", "region"):
        ours, theirs = (s["label_consistency"][level] for s in (generated, constant))
        if ours is None or theirs is None:
            continue
        for key, label in (("f1", "F1"), ("precision", "precision"), ("recall", "recall")):
            table.add_row(f"label consistency, {level} {label}", format_number(ours[key]), format_number(theirs[key]))
        table.add_row(
            f"label consistency, {level} tp / fp / fn", *(f"{s['tp']} / {s['fp']} / {s['fn']}" for s in (ours, theirs))
        )
    table.add_row("BLEU-4", format_number(generated["bleu4"], 2), format_number(constant["bleu4"], 2))
    table.add_row("ROUGE-L", format_number(generated["rouge_l"]), format_number(constant["rouge_l"]))
    return table


def _show_summary(workdir: Path, db: Path, steps: list[StepOutcome], seconds: float, console: Console) -> None:
    from labeling.store.commands import show_stats

    with Store(db, read_only=True) as store:
        show_stats(store, console)
    table = Table(title=f"clala quickstart in {literal(workdir)}", title_justify="left")
    for column in ("step", "status", "result", "where (or: to finish it)"):
        table.add_column(column, overflow="fold")  # paths and commands are shown whole, never cut
    for step in steps:
        table.add_row(
            literal(step.step),
            "[bold red]FAILED[/bold red]" if step.failed else "[green]ok[/green]",
            literal(step.result),
            literal(step.where),
        )
    console.print(table)
    failed = [step for step in steps if step.failed]
    if failed:
        console.print(
            f"[bold red]quickstart not complete:[/bold red] {len(failed)} step(s) failed "
            f"({', '.join(literal(step.step) for step in failed)}); see the rows above for why and how to "
            f"finish them (exit code {FAILED_EXIT_CODE}); {seconds:.0f} s"
        )
        for step in failed:  # one line each, to copy
            console.print(f"to finish {literal(step.step)}: {literal(step.where)}", soft_wrap=True)
    else:
        console.print(f"done in {seconds:.0f} s; run it again to continue or to see this summary")


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
    steps: list[StepOutcome] = []

    def done(step: str, result: str, where: str) -> None:
        steps.append(StepOutcome(step, result, where))

    console.rule("1. synthesise a cohort")
    _synthesise(cohort, settings, console)
    done("cohort", f"{settings.studies} studies: images, boxes, reports, gold", str(cohort))
    console.rule("2. ingest its reports")
    run_ingest(db, cohort / "files", IngestOptions(format="mimic"), console)
    done("database", "reports, runs, labels, experiments", str(db))
    console.rule("3. label them with the rules")
    _label_rules(db, console)
    console.rule(f"4. label {settings.llm_reports} of them with the embedded local LLM")
    llm_step = _label_llm(db, settings, console) if llm else None
    if llm_step is None:
        console.print("skipped (--no-llm)")
    else:
        steps.append(llm_step)
    console.rule("5. import the synthetic gold")
    _import_gold(db, cohort, console)
    labeled_by_llm = llm_step is not None and not llm_step.failed
    runs = [RULES_RUN, *([LLM_RUN] if labeled_by_llm else []), "gold-report", "gold-image"]
    done("label runs", ", ".join(runs), f"clala runs list --db {db}")

    console.rule("6. compare the rules with the gold")
    with Store(db, read_only=True) as store:
        compared = show_comparison(store, [RULES_RUN, REFERENCE], out=results / "compare", console=console)
    done("rules vs gold-report", "per finding and region: CSV + F1 heatmap", ", ".join(map(str, compared["files"])))
    if labeled_by_llm:
        with Store(db, read_only=True) as store:
            show_comparison(store, [LLM_RUN, REFERENCE], console=console)
        done(
            "llm-local vs gold-report",
            f"{settings.llm_reports} reports (tables above)",
            f"clala compare {LLM_RUN} {REFERENCE} --db {db}",
        )

    checkpoints: dict[str, Path] = {}
    for number, run in enumerate(TRAINED_SOURCES):
        console.rule(f"7{'ab'[number]}. train CLALA-Net on {run}")
        checkpoints[run] = _train(run, cohort, db, models / run, settings, console)
        done(f"model ({run} labels)", "best checkpoint", str(checkpoints[run]))
    console.rule("8. evaluate both on the test split against gold-report")
    evaluations, rows = _evaluate_models(db, cohort, checkpoints, results, settings, console)
    steps.extend(StepOutcome(*row) for row in rows)
    console.rule(f"9. generate {settings.generate} reports and score them")
    _, rows = _generate_and_score(db, cohort, checkpoints, results, settings, llm_aggregator, console)
    steps.extend(StepOutcome(*row) for row in rows)

    console.rule("10. where everything is")
    seconds = time.perf_counter() - started
    _show_summary(workdir, db, steps, seconds, console)
    return QuickstartResult(workdir, db, steps, evaluations, seconds)


__all__ = ["run_quickstart", "QuickstartSettings", "QuickstartResult", "StepOutcome", "FAILED_EXIT_CODE"]
