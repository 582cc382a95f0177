"""`clala audit`: a run's cells ranked by how likely they are wrong, from out-of-sample
probabilities (the ranking itself, cleanlab's confident learning, is `labeling.review.audit`).

Sources of p(present), any number of them, averaged per cell:
- `--folds K`: K-fold CLALA-Net cross-fitting on the run's own images (`model.evaluate.cross_fit`),
  named "folds" in the queue; out of sample by construction.
- `--by RUN`: another run's labels (`labeling.review.run_probabilities`), named by the run.
- `--by CHECKPOINT` (an existing file): that model's predictions on the run's images, named by
  the file; out of sample only if it was not trained on these labels (or their reports).

The database is read with short-lived connections and never written, except by the trainer
(one experiments row per fold): the queue and the Label Studio tasks are files.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from labeling.core.errors import InputError
from model.train.config import TrainConfig

if TYPE_CHECKING:
    from labeling.review import AuditCells, AuditResult, ProbabilitySource
    from model.evaluate.cross_fit import CrossFit, FoldProgress

FOLDS_SOURCE = "folds"


@dataclass(kw_only=True)
class AuditRequest:
    """Audit `run` by the sources `by` (run names/ids or checkpoint files) and/or `folds`-fold
    cross-fitting with `template`'s training settings; write the ranked queue to `out` (.csv or
    .jsonl, its first `limit` rows) and, with `labelstudio`, tasks for the reports of the first
    `review` cells."""

    run: str
    db: str
    out: Path
    by: list[str] = field(default_factory=list)
    folds: int | None = None
    template: TrainConfig | None = None  # data, training settings, checkpoint_dir (folds and checkpoints)
    seed: int = 0  # the fold split
    unmentioned: float | None = None  # p(present) of a --by run's unmentioned cells (None: labeling's default)
    limit: int | None = None
    labelstudio: Path | None = None
    review: int = 100
    batch_size: int = 16  # inference
    device: str = "auto"


@dataclass
class AuditOutcome:
    result: AuditResult
    rows_written: int
    tasks: int | None
    cross_fit: CrossFit | None


def is_checkpoint(reference: str) -> bool:
    """A --by value names a checkpoint when it is an existing file or ends in .pt."""
    return Path(reference).is_file() or reference.endswith(".pt")


def check_request(request: AuditRequest) -> None:
    """Every option checked before anything is read or trained."""
    from labeling.review import check_queue_out, check_tasks_out

    check_queue_out(request.out)
    if request.labelstudio is not None:
        check_tasks_out(request.labelstudio)
    if not request.by and request.folds is None:
        raise InputError("no probability source: give --by RUN|CHECKPOINT (repeat) or --folds K with --data")
    if request.limit is not None and request.limit < 1:
        raise InputError(f"--limit: {request.limit} must be at least 1")
    if request.review < 1:
        raise InputError(f"--review: {request.review} must be at least 1")
    if request.unmentioned is not None and not 0 <= request.unmentioned <= 1:
        raise InputError(f"--unmentioned-p: {request.unmentioned} is not a probability in [0, 1]")
    needs_images = request.folds is not None or any(is_checkpoint(b) for b in request.by)
    if needs_images and (request.template is None or not request.template.data):
        raise InputError("--data: the images are needed to predict with --folds or a --by checkpoint")
    if request.template is not None and request.template.data and not Path(request.template.data).is_dir():
        raise InputError(f"--data {request.template.data}: folder not found")
    for reference in request.by:
        if is_checkpoint(reference) and not Path(reference).is_file():
            raise InputError(f"--by {reference}: checkpoint file not found")
    if len(set(request.by)) != len(request.by):
        raise InputError("--by: a source is given twice")
    if request.folds is not None:
        from model.train.config import check_config

        assert request.template is not None
        check_config(request.template)


def _checkpoint_source(request: AuditRequest, cells: AuditCells, reference: str) -> ProbabilitySource:
    from labeling.review import ProbabilitySource
    from labeling.store.store import Store
    from model.evaluate.cross_fit import audited_images, checkpoint_probabilities
    from model.evaluate.inference import InferenceOptions

    template = request.template
    assert template is not None
    options = InferenceOptions(
        checkpoint=reference, data=template.data, imagenome=template.imagenome, split=None,
        batch_size=request.batch_size, device=request.device,
    )  # fmt: skip
    with Store(request.db, read_only=True) as store:
        images = audited_images(store, cells, options, template.dataset)
    p = checkpoint_probabilities(options, images, cells)
    name = Path(reference).name if Path(reference).name != "best.pt" else f"{Path(reference).parent.name}/best.pt"
    return ProbabilitySource(
        name, p, f"checkpoint {Path(reference).resolve()} (out of sample only if not trained on these labels)"
    )


def run_audit(request: AuditRequest, on_fold: FoldProgress | None = None) -> AuditOutcome:
    """Read the run's cells and the sources, cross-fit if asked, rank, write (see the module doc)."""
    import dataclasses

    from labeling.review import (
        ProbabilitySource,
        audit_cells,
        rank_cells,
        run_probabilities,
        write_audit_tasks,
        write_queue,
    )
    from labeling.store.store import Store
    from schemas.vocabulary import load_vocabulary

    check_request(request)
    vocabulary = load_vocabulary()
    sources: list[ProbabilitySource] = []
    with Store.open_existing(request.db) as store:
        cells = audit_cells(store, request.run, vocabulary)
        for reference in request.by:
            if not is_checkpoint(reference):
                chosen = {} if request.unmentioned is None else {"unmentioned": request.unmentioned}
                sources.append(run_probabilities(store, reference, cells, **chosen))
    fitted = None
    if request.folds is not None:
        from model.evaluate.cross_fit import CrossFitRequest, cross_fit

        assert request.template is not None
        template = dataclasses.replace(request.template, db=request.db)
        fit = CrossFitRequest(
            template=template, folds=request.folds, seed=request.seed, batch_size=request.batch_size,
            device=request.device,
        )  # fmt: skip
        fitted = cross_fit(fit, cells, on_fold)
        sources.append(
            ProbabilitySource(FOLDS_SOURCE, fitted.p_present, f"{request.folds}-fold CLALA-Net cross-fitting")
        )
    for reference in request.by:
        if is_checkpoint(reference):
            sources.append(_checkpoint_source(request, cells, reference))
    with Store(request.db, read_only=True) as store:
        result = rank_cells(store, cells, sources)
        tasks = None
        if request.labelstudio is not None:
            tasks = write_audit_tasks(store, result, cells, request.labelstudio, request.review)
    rows = write_queue(result, request.out, request.limit)
    return AuditOutcome(result, rows, tasks, fitted)


__all__ = ["FOLDS_SOURCE", "AuditOutcome", "AuditRequest", "check_request", "is_checkpoint", "run_audit"]
