"""Training CLALA-Net on any label run of the store.

`train(TrainConfig(run=..., data=...))` reads the cohort's `train` and `valid` splits (the loader
leaves `images_to_avoid` out of training; `holdout_reports`, a cross-fitting fold, out of both),
turns the run into a label matrix under the chosen uncertainty policy, and trains with AdamW, a
linear warm-up then cosine decay, gradient clipping, and mixed precision on CUDA.
After every epoch it predicts the validation split, chooses one threshold per lesion that
maximises that lesion's region-level F1, and scores the epoch by the
mean of those F1s over the lesions present in validation (mean lesion F1); early stopping watches
that score.

Decisions, stated once:
- Cells: a lesion is trained and scored only in the regions the vocabulary allows for it
  (`Vocabulary.allows`), with a valid box, and not ignored by the uncertainty policy. Disallowed
  cells would only add certain negatives. Image-level (global) targets are the run's region labels
  collapsed together with its region-less ones (`Examples.image_level`), before the allowed-region
  mask, so they keep the run's own image semantics: a region-less positive ("atelectasis", no place
  said) trains the global classifier, and leaves that lesion's unlabeled regions out of the region
  head's cells rather than making them positive (or negative).
- Class imbalance: per-lesion `pos_weight` = negatives / positives over the training cells,
  clipped to [1, `pos_weight_max`] (region head and global classifier each get their own).
- Thresholds: on validation, per lesion, the F1-maximising cut, placed half-way to the next lower
  score; 0.5 for a lesion without validation positives. Stored in every checkpoint, with the
  lesions a generated report may state (`report_lesions`: those whose validation predictions at
  their thresholds raise the micro F1 over all lesions, `metrics.reportable_lesions`).
- Determinism: python, numpy and torch are seeded; the shuffle order of epoch e is a function of
  (seed, e) (`DistributedSampler`, also with one process), augmentation of (seed, e, index), and
  the RNG states are saved at the end of each epoch, so `--resume` continues exactly: training N
  epochs straight and training k, being killed, and resuming to N give identical weights on CPU.
  A resumed run keeps its saved configuration.
- DDP (`torchrun`): the process group comes from the environment (gloo on CPU, NCCL on CUDA);
  `batch_size` is the global batch, split evenly over the processes, and the shards of one step are
  exactly the single-process batch of that step. Gradients are averaged, which equals single-process
  training when every image has the same number of scored cells and no batch-wide term is on;
  LLCL and ITCL contrast regions within each process's share of the batch. Rank 0 validates, writes
  checkpoints, logs and the experiment row; `find_unused_parameters=True` because a batch without
  sentences leaves the text encoder and decoder unused.

- Labels: a run with image-level labels only (a CheXpert CSV import) is refused: the region head
  would train on all-negative targets.

The pieces live beside this loop: `config` (TrainConfig, its checks), `checkpoint` (what a
checkpoint holds, tokenizers), `distributed` (process group, devices, seeds and RNG state).
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader
from torch.utils.data.distributed import DistributedSampler

from labeling.core.errors import InputError
from model.data.batches import BatchCollator, allowed_cells, model_inputs
from model.data.dataset import REGION_NAMES, Augment, RegionDataset, load_cohort
from model.evaluate.inference import amp_dtype, predict_probabilities
from model.evaluate.metrics import choose_thresholds, constant_baseline_f1, mean_supported, reportable_lesions
from model.net.clala_net import CLALANet, CLALANetConfig
from model.train.checkpoint import (
    CHECKPOINT_FORMAT,
    CHECKPOINT_VERSION,
    TEXT_TOKENIZER_DIR,
    TOKENIZER_DIR,
    load_checkpoint,
    needs_sentences,
    prepare_tokenizers,
    save_checkpoint,
)
from model.train.config import TrainConfig, TrainResult, check_config
from model.train.distributed import (
    Distributed,
    resolve_device,
    rng_state,
    seed_everything,
    seed_worker,
    set_rng_state,
)

Notify = Callable[[dict[str, Any]], None]


# --- data -------------------------------------------------------------------------------------------------
def positive_weights(targets: np.ndarray, masks: np.ndarray, limit: float) -> list[float]:
    """negatives / positives per lesion over the known cells of [N, ..., L] arrays, clipped to
    [1, limit]; 1 for a lesion without positives (its weight multiplies nothing)."""
    axes = tuple(range(targets.ndim - 1))
    positives = ((targets > 0.5) & masks).sum(axis=axes).astype(np.float64)
    negatives = ((targets <= 0.5) & masks).sum(axis=axes).astype(np.float64)
    ratio = np.where(positives > 0, negatives / np.maximum(positives, 1), 1.0)
    return [float(x) for x in np.clip(ratio, 1.0, limit)]


def training_weights(dataset: RegionDataset, allowed: np.ndarray, limit: float) -> tuple[list[float], list[float]]:
    """pos_weight for the region head and for the global classifier, from the training labels."""
    examples = dataset.examples
    valid = (
        np.stack([record.box_valid for record in examples.records])[..., None]
        if examples.records
        else np.zeros((0, len(REGION_NAMES), 1), bool)
    )
    region_mask = examples.masks & valid & allowed[None]
    image_targets, image_mask = examples.image_level()
    return (
        positive_weights(examples.targets, region_mask, limit),
        positive_weights(image_targets, image_mask, limit),
    )


@dataclass
class TrainingData:
    train: RegionDataset
    valid: RegionDataset
    findings: tuple[str, ...]
    vocabulary_version: str
    run_id: int


def load_training_data(config: TrainConfig) -> TrainingData:
    """The train and valid datasets of `config`, read through one read-only connection that is
    closed before training starts."""
    from labeling.store.store import Store
    from model.labels.label_specs import check_regional

    imagenome = config.imagenome or config.data
    common = dict(image_size=config.image_size, seed=config.seed)
    targets = config.targets()
    with Store(config.db, read_only=True) as store:
        run = store.run(config.run)
        check_regional(store, run.run_id, "CLALA-Net trains on region-level labels")
        train_cohort = load_cohort(config.data, imagenome, "train")
        train = RegionDataset.from_store(
            store, train_cohort, run.name, targets, augment=Augment() if config.augment else None, **common
        )
        findings = train.findings
        if not findings:
            raise InputError(f"run {run.name!r} has no labels to train on")
        valid_targets = dataclasses.replace(targets, findings=tuple(findings))
        valid_cohort = load_cohort(config.data, imagenome, "valid")
        valid = RegionDataset.from_store(store, valid_cohort, run.name, valid_targets, augment=None, **common)
    if config.holdout_reports:
        held_out = np.asarray(config.holdout_reports, np.int64)
        for dataset in (train, valid):
            dataset.examples = dataset.examples.without_reports(held_out)
    if len(train) == 0:
        raise InputError(f"{imagenome}: no training images with labels from run {run.name!r} in split 'train'")
    if len(valid) == 0:
        raise InputError(f"{imagenome}: no validation images in split 'valid'; thresholds and early stopping need them")
    if len(train) < config.batch_size:
        raise InputError(f"--batch-size {config.batch_size} is larger than the {len(train)} training images")
    return TrainingData(train, valid, tuple(findings), run.vocabulary_version, run.run_id)


# --- the optimiser -------------------------------------------------------------------------------------------
def build_optimizer(model: torch.nn.Module, config: TrainConfig) -> torch.optim.Optimizer:
    """AdamW; biases, norms, embeddings of lesions and the temperature are not decayed."""
    decay, no_decay = [], []
    for name, parameter in model.named_parameters():
        if not parameter.requires_grad:
            continue
        (decay if parameter.ndim >= 2 and "lesion_embeddings" not in name else no_decay).append(parameter)
    return torch.optim.AdamW(
        [{"params": decay, "weight_decay": config.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
        lr=config.lr,
    )


def warmup_cosine(total_steps: int, warmup_steps: int) -> Callable[[int], float]:
    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))

    return factor


# --- experiments table -------------------------------------------------------------------------------------
def _record_experiment(config: TrainConfig, action: Callable) -> Any:
    """`action(store)` on a short-lived writing connection: the trainer holds none while it trains
    (its data loaders and the other processes must not meet an open database)."""
    from labeling.store.store import Store

    with Store.open_existing(config.db) as store:
        return action(store)


def _experiment_metrics(state: dict[str, Any]) -> dict[str, Any]:
    return {
        "epochs": state["history"],
        "best_epoch": state["best_epoch"],
        "best_valid_mean_lesion_f1": state["best_f1"] if state["best_f1"] > -math.inf else None,
    }


# --- one training run -------------------------------------------------------------------------------------
@dataclass
class _Training:
    """Everything one training run works with, built by `_prepare`."""

    config: TrainConfig
    distributed: Distributed
    device: torch.device
    use_amp: bool
    data: TrainingData
    findings: list[str]
    folder: Path
    model_config: CLALANetConfig
    model: CLALANet
    trained: torch.nn.Module  # the model, or its DistributedDataParallel wrapper
    has_tokenizer: bool
    has_text_tokenizer: bool
    sampler: DistributedSampler
    generator: torch.Generator
    train_loader: DataLoader
    valid_loader: DataLoader
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LambdaLR
    scaler: torch.amp.GradScaler
    label_spec: dict[str, Any] = field(default_factory=dict)
    state: dict[str, Any] = field(default_factory=dict)

    @property
    def last_path(self) -> Path:
        return self.folder / "last.pt"

    @property
    def best_path(self) -> Path:
        return self.folder / "best.pt"

    @property
    def steps_per_epoch(self) -> int:
        return len(self.train_loader)

    def checkpoint_payload(
        self, thresholds: list[float], lesion_f1: list[float], report_lesions: list[bool] | None = None
    ) -> dict[str, Any]:
        state = self.state
        return {
            "format": CHECKPOINT_FORMAT,
            "format_version": CHECKPOINT_VERSION,
            "model_state": self.model.state_dict(),
            "optimizer_state": self.optimizer.state_dict(),
            "scheduler_state": self.scheduler.state_dict(),
            "scaler_state": self.scaler.state_dict(),
            "rng": rng_state(),
            "state": dict(state),
            "epoch": state["epoch"],
            "global_step": state["global_step"],
            "train_config": self.config.to_dict(),
            "model_config": self.model_config.to_dict(),
            "label_spec": self.label_spec,
            "vocabulary_version": self.data.vocabulary_version,
            "tokenizer_dir": TOKENIZER_DIR if self.has_tokenizer else None,
            "text_tokenizer_dir": TEXT_TOKENIZER_DIR if self.has_text_tokenizer else None,
            "lesions": list(self.model_config.lesions),
            "thresholds": [float(t) for t in thresholds],
            "valid_lesion_f1": [float(f) for f in lesion_f1],
            # The lesions a generated report may state (metrics.reportable_lesions); None: every one.
            "report_lesions": None if report_lesions is None else [bool(x) for x in report_lesions],
            "saved_at": datetime.now().isoformat(timespec="seconds"),
        }


def _check_start(config: TrainConfig, resumed: dict[str, Any] | None, distributed: Distributed) -> Path:
    if config.batch_size % distributed.world_size:
        raise InputError(
            f"--batch-size {config.batch_size} does not split evenly over {distributed.world_size} processes"
        )
    folder = Path(config.checkpoint_dir)
    last_path = folder / "last.pt"
    if distributed.main and resumed is None and last_path.exists():
        raise InputError(
            f"{folder}: holds a checkpoint already; --resume {last_path} or choose another --checkpoint-dir"
        )
    return folder


def _model_setup(
    config: TrainConfig, resumed: dict[str, Any] | None, data: TrainingData, folder: Path, distributed: Distributed
) -> tuple[CLALANetConfig, BatchCollator, bool, bool]:
    """The model's config and the batch collator (with the tokenizers, when the model has
    sentence parts); whether there is a sentence tokenizer and a text tokenizer."""
    findings = list(data.findings)
    allowed = allowed_cells(findings)
    tokenizer = text_tokenizer = None
    if needs_sentences(config.model):
        sentences = data.train.examples.sentences
        if distributed.main:
            # A resumed run reads the tokenizer it was trained with; a new one builds it first.
            prepare_tokenizers(config, sentences, folder, build=resumed is None)
        distributed.barrier()
        tokenizer, text_tokenizer = prepare_tokenizers(config, sentences, folder, build=False)
    if resumed is not None:
        model_config = CLALANetConfig.from_dict(resumed["model_config"])
    else:
        region_weights, global_weights = training_weights(data.train, allowed, config.pos_weight_max)
        model_config = CLALANetConfig(
            lesions=findings, pos_weight=region_weights, global_pos_weight=global_weights, **config.model
        )
        if tokenizer is not None:
            model_config = model_config.with_tokenizer(tokenizer)
    collator = BatchCollator(
        allowed, tokenizer, text_tokenizer, model_config.max_sentence_tokens, model_config.pad_token_id
    )
    return model_config, collator, tokenizer is not None, text_tokenizer is not None


def _loaders(
    config: TrainConfig, data: TrainingData, collator: BatchCollator, distributed: Distributed, device: torch.device
) -> tuple[DistributedSampler, torch.Generator, DataLoader, DataLoader]:
    per_process_batch = config.batch_size // distributed.world_size
    sampler = DistributedSampler(
        data.train,
        num_replicas=distributed.world_size,
        rank=distributed.rank,
        shuffle=True,
        seed=config.seed,
        drop_last=False,
    )
    generator = torch.Generator()
    # drop_last: a last batch of one image would break BatchNorm and weigh one image as much as a batch.
    train_loader = DataLoader(
        data.train,
        batch_size=per_process_batch,
        sampler=sampler,
        drop_last=True,
        num_workers=config.workers,
        collate_fn=collator,
        worker_init_fn=seed_worker,
        generator=generator,
        pin_memory=device.type == "cuda",
    )
    valid_loader = DataLoader(
        data.valid,
        batch_size=per_process_batch,
        shuffle=False,
        num_workers=config.workers,
        collate_fn=collator,
        worker_init_fn=seed_worker,
        pin_memory=device.type == "cuda",
    )
    if len(train_loader) == 0:
        raise InputError(f"--batch-size {config.batch_size}: no full batch in {len(data.train)} training images")
    return sampler, generator, train_loader, valid_loader


def _initial_state(findings: list[str]) -> dict[str, Any]:
    return {
        "epoch": 0,
        "global_step": 0,
        "history": [],
        "best_f1": -math.inf,
        "best_epoch": 0,
        "epochs_without_improvement": 0,
        "experiment_id": None,
        "thresholds": [0.5] * len(findings),
    }


def _prepare(config: TrainConfig, resumed: dict[str, Any] | None, distributed: Distributed) -> _Training:
    """Data, model, loaders, optimiser and state of a new run, or of `resumed` as it was saved."""
    device = resolve_device(config.device, distributed.local_rank)
    seed_everything(config.seed)
    folder = _check_start(config, resumed, distributed)
    data = load_training_data(config)
    # Every process has closed its read-only connection before rank 0 opens the database to write.
    distributed.barrier()
    if distributed.main:
        folder.mkdir(parents=True, exist_ok=True)  # only once the inputs are known to be usable
    model_config, collator, has_tokenizer, has_text_tokenizer = _model_setup(config, resumed, data, folder, distributed)

    torch.manual_seed(config.seed)  # the initial weights depend on the seed alone
    model = CLALANet(model_config).to(device)
    sampler, generator, train_loader, valid_loader = _loaders(config, data, collator, distributed, device)
    total_steps = len(train_loader) * config.epochs
    optimizer = build_optimizer(model, config)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, warmup_cosine(total_steps, max(1, round(config.warmup * total_steps)))
    )
    use_amp = config.amp and device.type == "cuda"
    scaler = torch.amp.GradScaler("cuda", enabled=use_amp and amp_dtype() == torch.float16)
    findings = list(data.findings)
    state = _initial_state(findings)
    if resumed is not None:
        model.load_state_dict(resumed["model_state"])
        optimizer.load_state_dict(resumed["optimizer_state"])
        scheduler.load_state_dict(resumed["scheduler_state"])
        if resumed.get("scaler_state"):
            scaler.load_state_dict(resumed["scaler_state"])
        for key in state:
            state[key] = resumed["state"][key]
        set_rng_state(resumed["rng"])
    trained: torch.nn.Module = model
    if distributed.enabled:
        from torch.nn.parallel import DistributedDataParallel

        trained = DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None, find_unused_parameters=True
        )
    return _Training(
        config=config,
        distributed=distributed,
        device=device,
        use_amp=use_amp,
        data=data,
        findings=findings,
        folder=folder,
        model_config=model_config,
        model=model,
        trained=trained,
        has_tokenizer=has_tokenizer,
        has_text_tokenizer=has_text_tokenizer,
        sampler=sampler,
        generator=generator,
        train_loader=train_loader,
        valid_loader=valid_loader,
        optimizer=optimizer,
        scheduler=scheduler,
        scaler=scaler,
        label_spec={**config.label_spec(), "findings": findings, "run_id": data.run_id},
        state=state,
    )


def _start_experiment(run: _Training) -> None:
    """Rank 0: the experiments row of a new run, or the resumed run's row set running again."""
    config, state = run.config, run.state
    name = config.name or f"{config.run}-{datetime.now():%Y%m%d-%H%M%S}"
    full_config = {"train": config.to_dict(), "model": run.model_config.to_dict()}
    if state["experiment_id"] is None:
        state["experiment_id"] = _record_experiment(
            config, lambda store: store.add_experiment(name, run.label_spec, full_config, str(run.last_path))
        )
    else:
        experiment_id = state["experiment_id"]
        _record_experiment(config, lambda store: store.update_experiment(experiment_id, status="running"))


def _train_epoch(run: _Training, epoch: int, notify: Notify) -> dict[str, float]:
    """One epoch of optimiser steps; the sums of the loss terms over its steps."""
    config, state = run.config, run.state
    run.sampler.set_epoch(epoch)
    run.data.train.set_epoch(epoch)
    run.generator.manual_seed(config.seed * 1_000_003 + epoch)
    run.trained.train()
    dtype = amp_dtype()
    sums: dict[str, float] = {}
    for step, batch in enumerate(run.train_loader, start=1):
        inputs = model_inputs(batch, run.device)
        run.optimizer.zero_grad(set_to_none=True)
        with torch.autocast(device_type=run.device.type, dtype=dtype, enabled=run.use_amp):
            output = run.trained(inputs)
        run.scaler.scale(output.loss).backward()
        if config.grad_clip > 0:
            run.scaler.unscale_(run.optimizer)
            torch.nn.utils.clip_grad_norm_(run.model.parameters(), config.grad_clip)
        run.scaler.step(run.optimizer)
        run.scaler.update()
        run.scheduler.step()
        state["global_step"] += 1
        terms = {"loss": output.loss.item(), **{k: v.item() for k, v in output.losses.items()}}
        for key, value in terms.items():
            sums[key] = sums.get(key, 0.0) + value
        if run.distributed.main:
            notify(
                {
                    "event": "step",
                    "epoch": epoch,
                    "step": step,
                    "steps": run.steps_per_epoch,
                    "losses": terms,
                    "lr": run.scheduler.get_last_lr()[0],
                }
            )
    return sums


def _validate_epoch(run: _Training, epoch: int, sums: dict[str, float], notify: Notify) -> bool:
    """Rank 0 after an epoch: thresholds and mean lesion F1 on validation, the history, the
    checkpoints and the experiments row. Returns whether early stopping should stop now."""
    config, state, findings = run.config, run.state, run.findings
    predictions = predict_probabilities(run.model, run.valid_loader, run.device, run.use_amp)
    thresholds, lesion_f1 = choose_thresholds(predictions)
    report_lesions, report_f1 = reportable_lesions(predictions, thresholds)
    valid_f1 = mean_supported(lesion_f1)
    baseline = mean_supported(constant_baseline_f1(predictions.labels, predictions.mask))
    score = valid_f1 if not math.isnan(valid_f1) else -math.inf
    improved = score > state["best_f1"]
    if improved:
        state["best_f1"], state["best_epoch"] = score, epoch
        state["epochs_without_improvement"] = 0
    else:
        state["epochs_without_improvement"] += 1
    record = {
        "epoch": epoch,
        "step": state["global_step"],
        "lr": run.scheduler.get_last_lr()[0],
        "train": {k: v / run.steps_per_epoch for k, v in sums.items()},
        "valid": predictions.losses,
        "valid_mean_lesion_f1": valid_f1,
        "valid_baseline_f1": baseline,
        "valid_lesion_f1": dict(zip(findings, lesion_f1)),
        "thresholds": dict(zip(findings, thresholds)),
        "report_lesions": [name for name, kept in zip(findings, report_lesions) if kept],
        "valid_report_micro_f1": report_f1,
    }
    state["history"].append(record)
    state["epoch"] = epoch
    state["thresholds"] = thresholds
    payload = run.checkpoint_payload(thresholds, lesion_f1, report_lesions)
    save_checkpoint(run.last_path, payload)
    if improved:
        save_checkpoint(run.best_path, payload)
    metrics, experiment_id, best_path = _experiment_metrics(state), state["experiment_id"], str(run.best_path)
    _record_experiment(
        config, lambda store: store.update_experiment(experiment_id, metrics=metrics, checkpoint_path=best_path)
    )
    notify(
        {
            "event": "epoch",
            **record,
            "improved": improved,
            "best_epoch": state["best_epoch"],
            "best_f1": state["best_f1"],
        }
    )
    return config.patience > 0 and state["epochs_without_improvement"] >= config.patience


def _run_epochs(run: _Training, notify: Notify) -> bool:
    """The epochs still to train; whether early stopping ended them."""
    stopped_early = False
    while run.state["epoch"] < run.config.epochs and not stopped_early:
        epoch = run.state["epoch"] + 1
        sums = _train_epoch(run, epoch, notify)
        if run.distributed.main:
            stop = _validate_epoch(run, epoch, sums, notify)
        else:
            run.state["epoch"] = epoch
            stop = False
        stopped_early = run.distributed.broadcast_flag(stop, run.device)
    return stopped_early


def _start_event(run: _Training) -> dict[str, Any]:
    return {
        "event": "start",
        "epochs": run.config.epochs,
        "first_epoch": run.state["epoch"] + 1,
        "steps_per_epoch": run.steps_per_epoch,
        "train_images": len(run.data.train),
        "valid_images": len(run.data.valid),
        "lesions": run.findings,
        "parameters": sum(p.numel() for p in run.model.parameters()),
        "device": str(run.device),
        "processes": run.distributed.world_size,
        "experiment_id": run.state["experiment_id"],
        "checkpoint_dir": str(run.folder),
    }


def _train(
    config: TrainConfig,
    resumed: dict[str, Any] | None,
    distributed: Distributed,
    notify: Notify,
) -> TrainResult:
    started = time.perf_counter()
    run = _prepare(config, resumed, distributed)
    state = run.state
    if distributed.main:
        _start_experiment(run)
        notify(_start_event(run))
    stopped_early = False
    status = "failed"
    try:
        stopped_early = _run_epochs(run, notify)
        status = "complete"
    except KeyboardInterrupt:
        status = "interrupted"
        raise
    finally:
        if distributed.main and state["experiment_id"] is not None:
            final = {"status": status, "metrics": {**_experiment_metrics(state), "stopped_early": stopped_early}}
            experiment_id = state["experiment_id"]
            _record_experiment(config, lambda store: store.update_experiment(experiment_id, **final))

    best = load_checkpoint(run.best_path) if distributed.main else None
    result = TrainResult(
        experiment_id=state["experiment_id"],
        checkpoint_dir=run.folder,
        best_checkpoint=run.best_path,
        last_checkpoint=run.last_path,
        lesions=run.findings,
        thresholds=list(best["thresholds"]) if best else list(state["thresholds"]),
        best_epoch=state["best_epoch"],
        best_valid_f1=state["best_f1"],
        epochs_run=state["epoch"],
        stopped_early=stopped_early,
        history=state["history"],
        parameters=sum(p.numel() for p in run.model.parameters()),
        seconds=time.perf_counter() - started,
    )
    if distributed.main:
        notify({"event": "done", "result": result})
    return result


def train(config: TrainConfig, on_progress: Notify | None = None) -> TrainResult:
    """Train CLALA-Net as `config` says (or continue `config.resume`); see the module doc."""
    notify = on_progress or (lambda event: None)
    resumed = None
    if config.resume:
        resumed = load_checkpoint(config.resume)
        config = TrainConfig.from_dict({**resumed["train_config"], "resume": config.resume})
    check_config(config)
    distributed = Distributed.from_env(config.device)
    previous_threads = torch.get_num_threads()
    if config.threads:
        torch.set_num_threads(config.threads)
    try:
        return _train(config, resumed, distributed, notify)
    finally:
        torch.set_num_threads(previous_threads)
        distributed.close()


__all__ = ["TrainConfig", "TrainResult", "TrainingData", "train", "load_training_data", "positive_weights"]
