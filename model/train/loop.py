"""Training CLALA-Net on any label run of the store.

`train(TrainConfig(run=..., data=...))` reads the cohort's `train` and `valid` splits (the loader
leaves `images_to_avoid` out of training), turns the run into a label matrix under the chosen
uncertainty policy, and trains with AdamW, a linear warm-up then cosine decay, gradient clipping,
and mixed precision on CUDA. After every epoch it predicts the validation split, chooses one
threshold per lesion that maximises that lesion's region-level F1, and scores the epoch by the
mean of those F1s over the lesions present in validation (mean lesion F1); early stopping watches
that score.

Decisions, stated once:
- Cells: a lesion is trained and scored only in the regions the vocabulary allows for it
  (`Vocabulary.allows`), with a valid box, and not ignored by the uncertainty policy. Disallowed
  cells would only add certain negatives. Image-level (global) targets are derived before the
  allowed-region mask, so they keep the run's own image semantics.
- Class imbalance: per-lesion `pos_weight` = negatives / positives over the training cells,
  clipped to [1, `pos_weight_max`] (region head and global classifier each get their own).
- Thresholds: on validation, per lesion, the F1-maximising cut, placed half-way to the next lower
  score; 0.5 for a lesion without validation positives. Stored in every checkpoint.
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

Checkpoints (`last.pt` each epoch, `best.pt` on a new best) hold the model, optimizer, scheduler
and scaler states, epoch and step, RNG states, the full training and model configs, the label spec
(run, policies, findings), the vocabulary version, the thresholds and the history; the tokenizer is
saved in `tokenizer/` beside them. They load with `weights_only=True`.
"""

from __future__ import annotations

import dataclasses
import math
import os
import random
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

from labeling.core.errors import ClalaError, InputError
from model.data.dataset import (
    REGION_NAMES,
    SENTENCE_SOURCES,
    UNCERTAIN_POLICIES,
    UNLABELED_POLICIES,
    UNMENTIONED_POLICIES,
    Augment,
    RegionDataset,
    collate,
)
from model.net.clala_net import CLALANet, CLALANetConfig, image_level_labels

CHECKPOINT_FORMAT = "clala-net-checkpoint"
CHECKPOINT_VERSION = 1
TOKENIZER_DIR = "tokenizer"
TEXT_TOKENIZER_DIR = "text_tokenizer"
# CLALANetConfig fields the trainer sets itself (from the data and the tokenizer).
DERIVED_MODEL_FIELDS = (
    "lesions",
    "pos_weight",
    "global_pos_weight",
    "vocab_size",
    "pad_token_id",
    "bos_token_id",
    "eos_token_id",
)
MODEL_TENSOR_KEYS = (
    "image",
    "boxes",
    "box_mask",
    "labels",
    "label_mask",
    "image_labels",
    "image_label_mask",
    "sentence_ids",
    "sentence_mask",
    "text_ids",
)


@dataclass
class TrainConfig:
    """Everything a training run depends on. `model` holds CLALANetConfig fields to override
    (backbone, backbone_weights, text_encoder, decoder, d_model, use_lca, ..., loss weights)."""

    run: str
    data: str  # images root (MIMIC-CXR-JPG layout)
    imagenome: str | None = None  # Chest ImaGenome root (splits, scene_graph); default: data
    db: str = "clala.duckdb"
    name: str | None = None  # experiment name; default run-time
    uncertain: str = "ignore"
    unmentioned: str = "negative"
    unlabeled: str = "error"
    sentences: str = "evidence"
    findings: list[str] = field(default_factory=list)  # default: the run's findings
    dataset: str | None = None
    image_size: int = 224
    augment: bool = True
    batch_size: int = 16  # global batch (all processes together)
    epochs: int = 10
    lr: float = 3e-4
    weight_decay: float = 0.01
    warmup: float = 0.05  # fraction of all steps spent warming up
    grad_clip: float = 1.0  # max gradient norm; 0 = off
    pos_weight_max: float = 20.0
    seed: int = 0
    workers: int = 0
    device: str = "auto"  # auto (CUDA if available) | cpu | cuda | cuda:N
    amp: bool = True  # mixed precision, on CUDA only
    patience: int = 3  # epochs without a better validation mean lesion F1; 0 = off
    checkpoint_dir: str = "checkpoints"
    threads: int | None = None  # torch CPU threads (None: torch's default)
    tokenizer_vocab_size: int = 2000
    model: dict[str, Any] = field(default_factory=dict)
    resume: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> TrainConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in values.items() if k in known})

    def label_spec(self) -> dict[str, Any]:
        return {
            "run": self.run,
            "uncertain": self.uncertain,
            "unmentioned": self.unmentioned,
            "unlabeled": self.unlabeled,
            "sentences": self.sentences,
            "dataset": self.dataset,
            "findings": list(self.findings),
        }


@dataclass
class TrainResult:
    experiment_id: int | None
    checkpoint_dir: Path
    best_checkpoint: Path
    last_checkpoint: Path
    lesions: list[str]
    thresholds: list[float]  # of the best checkpoint
    best_epoch: int
    best_valid_f1: float
    epochs_run: int
    stopped_early: bool
    history: list[dict[str, Any]]
    parameters: int
    seconds: float


# --- configuration checks ----------------------------------------------------------------------------
def check_config(config: TrainConfig) -> None:
    for value, allowed, option in (
        (config.uncertain, UNCERTAIN_POLICIES, "--uncertain"),
        (config.unmentioned, UNMENTIONED_POLICIES, "--unmentioned"),
        (config.unlabeled, UNLABELED_POLICIES, "--unlabeled"),
        (config.sentences, SENTENCE_SOURCES, "--sentences"),
    ):
        if value not in allowed:
            raise InputError(f"{option}: {value!r} is not one of {', '.join(allowed)}")
    for option, value, low in (
        ("--epochs", config.epochs, 1),
        ("--batch-size", config.batch_size, 1),
        ("--image-size", config.image_size, 32),
        ("--workers", config.workers, 0),
        ("--patience", config.patience, 0),
    ):
        if value < low:
            raise InputError(f"{option}: {value} is below {low}")
    if not 0 <= config.warmup < 1:
        raise InputError(f"--warmup: {config.warmup} is not a fraction in [0, 1)")
    if config.lr <= 0:
        raise InputError(f"--lr: {config.lr} must be positive")
    if config.pos_weight_max < 1:
        raise InputError(f"--pos-weight-max: {config.pos_weight_max} is below 1")
    known = {f.name for f in dataclasses.fields(CLALANetConfig)}
    for key in config.model:
        if key not in known:
            raise InputError(f"model option {key!r} is not a CLALA-Net setting")
        if key in DERIVED_MODEL_FIELDS:
            raise InputError(f"model option {key!r} is set by the trainer from the data")


def resolve_device(name: str, local_rank: int = 0) -> torch.device:
    if name == "auto":
        return torch.device(f"cuda:{local_rank}") if torch.cuda.is_available() else torch.device("cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise InputError(f"--device {name}: CUDA is not available on this machine")
    if name not in ("cpu",) and not name.startswith("cuda"):
        raise InputError(f"--device {name!r}: use auto, cpu, cuda or cuda:N")
    return torch.device(name if name != "cuda" else f"cuda:{local_rank}")


# --- seeds and RNG state -----------------------------------------------------------------------------
def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def rng_state() -> dict[str, Any]:
    """Every RNG's state, in types `torch.load(weights_only=True)` accepts."""
    kind, keys, position, has_gauss, gauss = np.random.get_state()
    python_version, python_state, python_gauss = random.getstate()
    state = {
        "torch": torch.get_rng_state(),
        "numpy": {
            "kind": kind,
            "keys": torch.from_numpy(keys.astype(np.int64)),
            "position": int(position),
            "has_gauss": int(has_gauss),
            "gauss": float(gauss),
        },
        "python": {"version": python_version, "state": list(python_state), "gauss": python_gauss},
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    n = state["numpy"]
    np.random.set_state((n["kind"], n["keys"].numpy().astype(np.uint32), n["position"], n["has_gauss"], n["gauss"]))
    p = state["python"]
    random.setstate((p["version"], tuple(p["state"]), p["gauss"]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _seed_worker(worker_id: int) -> None:
    seed = torch.initial_seed() % 2**32
    np.random.seed(seed)
    random.seed(seed)


# --- distributed ------------------------------------------------------------------------------------------
@dataclass
class Distributed:
    world_size: int = 1
    rank: int = 0
    local_rank: int = 0
    owns_group: bool = False  # this call initialised the process group (and so tears it down)

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def main(self) -> bool:
        return self.rank == 0

    @classmethod
    def from_env(cls, device_name: str) -> Distributed:
        """The process group `torchrun` describes in the environment (WORLD_SIZE, RANK, LOCAL_RANK,
        MASTER_ADDR, MASTER_PORT); one process when there is none."""
        import torch.distributed as dist

        world = int(os.environ.get("WORLD_SIZE", "1"))
        if world <= 1:
            return cls()
        local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        owns = False
        if not dist.is_initialized():
            cuda = device_name != "cpu" and torch.cuda.is_available()
            if cuda:
                torch.cuda.set_device(local_rank)
            dist.init_process_group(backend="nccl" if cuda else "gloo")
            owns = True
        return cls(dist.get_world_size(), dist.get_rank(), local_rank, owns)

    def barrier(self) -> None:
        if self.enabled:
            import torch.distributed as dist

            dist.barrier()

    def broadcast_flag(self, value: bool, device: torch.device) -> bool:
        """Rank 0's value, on every rank."""
        if not self.enabled:
            return value
        import torch.distributed as dist

        flag = torch.tensor([1 if value else 0], device=device)
        dist.broadcast(flag, src=0)
        return bool(flag.item())

    def close(self) -> None:
        if self.owns_group:
            import torch.distributed as dist

            dist.destroy_process_group()


# --- data -------------------------------------------------------------------------------------------------
def allowed_cells(findings: tuple[str, ...] | list[str], regions: tuple[str, ...] = REGION_NAMES) -> np.ndarray:
    """[R, L] bool: the vocabulary allows lesion l in region r. A finding the shipped vocabulary does
    not know (another vocabulary's run) is allowed everywhere."""
    from schemas.vocabulary import load_vocabulary

    vocabulary = load_vocabulary()
    allowed = np.ones((len(regions), len(findings)), bool)
    for j, finding in enumerate(findings):
        if finding in vocabulary.finding_names:
            allowed[:, j] = [vocabulary.allows(finding, region) for region in regions]
    return allowed


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
    image_targets = ((examples.targets > 0.5) & examples.masks).any(axis=1)
    image_mask = image_targets | examples.masks.all(axis=1)
    return (
        positive_weights(examples.targets, region_mask, limit),
        positive_weights(image_targets.astype(np.float32), image_mask, limit),
    )


class BatchCollator:
    """Dataset items -> the model's batch: `box_valid` becomes `box_mask`, the label mask keeps the
    allowed cells only, image-level targets are derived from the unrestricted mask, and the region
    sentences are tokenized (sentence + EOS, right-padded). Picklable, so DataLoader workers run it."""

    def __init__(
        self, allowed: np.ndarray, tokenizer=None, text_tokenizer=None, max_tokens: int = 64, pad_token_id: int = 0
    ):
        self.allowed = torch.from_numpy(allowed)
        self.tokenizer = tokenizer
        self.text_tokenizer = text_tokenizer
        self.max_tokens = max_tokens
        self.pad_token_id = pad_token_id

    def _tokens(self, flat: list[str], described: torch.Tensor, text_encoder: bool) -> torch.Tensor:
        """[len(flat), T] ids of the described sentences; the rest hold only the pad id."""
        from model.net.decoder import encode_sentences

        rows = described.nonzero().flatten().tolist()
        texts = [flat[i] for i in rows]
        if not rows:
            return torch.full((len(flat), 1), self.pad_token_id, dtype=torch.long)
        if text_encoder:
            # The text encoder's own special tokens ([CLS] ... [SEP]); padded with the model's pad
            # id, which is what ITCL masks.
            encoded = [
                self.text_tokenizer(text, add_special_tokens=True, truncation=True, max_length=self.max_tokens)[
                    "input_ids"
                ]
                for text in texts
            ]
            width = max(len(row) for row in encoded)
            encoded = torch.tensor([row + [self.pad_token_id] * (width - len(row)) for row in encoded])
        else:
            encoded = encode_sentences(self.tokenizer, texts, self.max_tokens)
        ids = torch.full((len(flat), encoded.shape[1]), self.pad_token_id, dtype=torch.long)
        ids[rows] = encoded
        return ids

    def __call__(self, items: list[dict[str, Any]]) -> dict[str, Any]:
        batch = collate(items)
        box_mask = batch.pop("box_valid")
        data_mask = batch["label_mask"]
        image_labels, image_label_mask = image_level_labels(batch["labels"], data_mask)
        batch["box_mask"] = box_mask
        batch["label_mask"] = data_mask & self.allowed & box_mask[..., None]
        batch["image_labels"], batch["image_label_mask"] = image_labels, image_label_mask
        if self.tokenizer is not None:
            flat = [text for sentences in batch["sentences"] for text in sentences]
            described = torch.tensor([bool(text.strip()) for text in flat])
            shape = box_mask.shape
            batch["sentence_mask"] = described.reshape(shape)
            batch["sentence_ids"] = self._tokens(flat, described, text_encoder=False).reshape(*shape, -1)
            if self.text_tokenizer is not None:
                batch["text_ids"] = self._tokens(flat, described, text_encoder=True).reshape(*shape, -1)
        return batch


def model_inputs(batch: dict[str, Any], device: torch.device) -> dict[str, torch.Tensor]:
    non_blocking = device.type == "cuda"
    return {key: batch[key].to(device, non_blocking=non_blocking) for key in MODEL_TENSOR_KEYS if key in batch}


@dataclass
class TrainingData:
    train: RegionDataset
    valid: RegionDataset
    findings: tuple[str, ...]
    vocabulary_version: str
    run_id: int


def load_training_data(config: TrainConfig) -> TrainingData:
    from labeling.store.store import Store

    imagenome = config.imagenome or config.data
    with Store(config.db, read_only=True) as store:
        run = store.run(config.run)
    common = dict(
        findings=config.findings or None,
        uncertain=config.uncertain,
        unmentioned=config.unmentioned,
        unlabeled=config.unlabeled,
        sentences=config.sentences,
        dataset=config.dataset,
        image_size=config.image_size,
        seed=config.seed,
    )
    train = RegionDataset.from_store(
        config.db,
        config.data,
        imagenome,
        run.name,
        split="train",
        augment=Augment() if config.augment else None,
        **common,
    )
    findings = train.findings
    if not findings:
        raise InputError(f"run {run.name!r} has no labels to train on")
    valid = RegionDataset.from_store(
        config.db, config.data, imagenome, run.name, split="valid", augment=None, **{**common, "findings": findings}
    )
    if len(train) == 0:
        raise InputError(f"{imagenome}: no training images with labels from run {run.name!r} in split 'train'")
    if len(valid) == 0:
        raise InputError(f"{imagenome}: no validation images in split 'valid'; thresholds and early stopping need them")
    if len(train) < config.batch_size:
        raise InputError(f"--batch-size {config.batch_size} is larger than the {len(train)} training images")
    return TrainingData(train, valid, tuple(findings), run.vocabulary_version, run.run_id)


# --- tokenizers ---------------------------------------------------------------------------------------------
def needs_sentences(model_config: dict[str, Any]) -> bool:
    defaults = CLALANetConfig(lesions=["x"])
    return bool(
        model_config.get("use_itcl", defaults.use_itcl) or model_config.get("use_decoder", defaults.use_decoder)
    )


def prepare_tokenizers(config: TrainConfig, data: TrainingData, folder: Path, build: bool):
    """(sentence tokenizer, text tokenizer or None), saved in `folder` when `build` and always read
    back from there, so every process and every resume uses the same files."""
    from transformers import AutoTokenizer

    from model.net.decoder import build_sentence_tokenizer

    sentence_dir, text_dir = folder / TOKENIZER_DIR, folder / TEXT_TOKENIZER_DIR
    decoder_path, text_path = config.model.get("decoder"), config.model.get("text_encoder")
    if build:
        if decoder_path:
            tokenizer = AutoTokenizer.from_pretrained(decoder_path, local_files_only=True)
        else:
            sentences = [text for row in data.train.examples.sentences for text in row if text.strip()]
            tokenizer = build_sentence_tokenizer(sentences, vocab_size=config.tokenizer_vocab_size)
        tokenizer.save_pretrained(str(sentence_dir))
        if text_path:
            AutoTokenizer.from_pretrained(text_path, local_files_only=True).save_pretrained(str(text_dir))
    tokenizer = AutoTokenizer.from_pretrained(str(sentence_dir), local_files_only=True)
    text_tokenizer = AutoTokenizer.from_pretrained(str(text_dir), local_files_only=True) if text_path else None
    return tokenizer, text_tokenizer


# --- checkpoints --------------------------------------------------------------------------------------------
def save_checkpoint(path: Path, payload: dict[str, Any]) -> None:
    """Written beside and renamed over `path`: a kill never leaves half a checkpoint."""
    from labeling.core.files import atomic_path

    with atomic_path(path) as tmp:
        torch.save(payload, tmp)


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: checkpoint file not found")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types for files that are not its checkpoints
        reason = " ".join(str(exc).split())[:120]
        raise InputError(f"{path}: not a CLALA-Net checkpoint ({type(exc).__name__}: {reason})") from None
    if not isinstance(payload, dict) or payload.get("format") != CHECKPOINT_FORMAT:
        raise InputError(f"{path}: not a CLALA-Net checkpoint (no '{CHECKPOINT_FORMAT}' format field)")
    if payload.get("format_version", 0) > CHECKPOINT_VERSION:
        raise InputError(f"{path}: written by a newer clala (checkpoint format {payload['format_version']})")
    payload["path"] = str(path)
    return payload


def model_from_checkpoint(checkpoint: dict[str, Any], device: torch.device | str = "cpu") -> CLALANet:
    """The checkpoint's CLALA-Net, weights loaded, in eval mode."""
    config = CLALANetConfig.from_dict(checkpoint["model_config"])
    # Weights come from the checkpoint; do not require the original backbone weight file.
    config = dataclasses.replace(config, backbone_weights=None)
    model = CLALANet(config)
    model.load_state_dict(checkpoint["model_state"])
    return model.to(device).eval()


# --- validation: predictions, thresholds, mean lesion F1 --------------------------------------------------
@dataclass
class Predictions:
    probabilities: np.ndarray  # [N, R, L] region-level lesion probabilities
    labels: np.ndarray  # [N, R, L] targets
    mask: np.ndarray  # [N, R, L] scored cells (allowed, valid box, not ignored)
    box_mask: np.ndarray  # [N, R]
    losses: dict[str, float]  # mean validation loss terms (when labels were given)


@torch.no_grad()
def predict_probabilities(
    model: CLALANet, loader: DataLoader, device: torch.device, amp: bool = False, with_losses: bool = True
) -> Predictions:
    was_training = model.training
    model.eval()
    probabilities, labels, masks, boxes = [], [], [], []
    totals: dict[str, float] = {}
    batches = 0
    for batch in loader:
        inputs = model_inputs(batch, device)
        if not with_losses:
            inputs = {k: v for k, v in inputs.items() if k in ("image", "boxes", "box_mask")}
        with torch.autocast(device_type=device.type, dtype=_amp_dtype(), enabled=amp):
            output = model(inputs)
        probabilities.append(torch.sigmoid(output.region_logits.float()).cpu().numpy())
        labels.append(batch["labels"].numpy())
        masks.append(batch["label_mask"].numpy())
        boxes.append(batch["box_mask"].numpy())
        for name, value in output.losses.items():
            totals[name] = totals.get(name, 0.0) + float(value)
        if output.loss is not None:
            totals["loss"] = totals.get("loss", 0.0) + float(output.loss)
        batches += 1
    model.train(was_training)
    return Predictions(
        np.concatenate(probabilities),
        np.concatenate(labels),
        np.concatenate(masks),
        np.concatenate(boxes),
        {k: v / max(batches, 1) for k, v in totals.items()},
    )


def best_f1_threshold(truth: np.ndarray, scores: np.ndarray) -> tuple[float, float]:
    """(threshold, F1) maximising F1 of `scores >= threshold`; the cut sits half-way between the
    lowest score kept and the highest one dropped. (0.5, nan) without positives."""
    from sklearn.metrics import precision_recall_curve

    truth = truth.astype(bool)
    if not truth.any():
        return 0.5, float("nan")
    precision, recall, cuts = precision_recall_curve(truth, scores)
    f1 = np.where(precision + recall > 0, 2 * precision * recall / np.maximum(precision + recall, 1e-12), 0.0)[:-1]
    best = int(np.argmax(f1))
    threshold = float(cuts[best])
    lower = scores[scores < threshold]
    if len(lower):
        threshold = float((threshold + lower.max()) / 2)
    return threshold, float(f1[best])


def choose_thresholds(predictions: Predictions) -> tuple[list[float], list[float]]:
    """Per lesion: the validation F1-maximising threshold and that F1 (nan without positives)."""
    thresholds, scores = [], []
    for lesion in range(predictions.probabilities.shape[-1]):
        cells = predictions.mask[..., lesion]
        threshold, f1 = best_f1_threshold(
            predictions.labels[..., lesion][cells] > 0.5, predictions.probabilities[..., lesion][cells]
        )
        thresholds.append(threshold)
        scores.append(f1)
    return thresholds, scores


def constant_baseline_f1(labels: np.ndarray, mask: np.ndarray) -> list[float]:
    """Per lesion, F1 of predicting every scored cell positive, the best constant prediction
    (all-negative scores 0): 2P / (P + N) with P positives among N cells; nan without positives."""
    scores = []
    for lesion in range(labels.shape[-1]):
        cells = mask[..., lesion]
        positives, total = float((labels[..., lesion][cells] > 0.5).sum()), float(cells.sum())
        scores.append(2 * positives / (positives + total) if positives else float("nan"))
    return scores


def mean_supported(values: list[float]) -> float:
    kept = [v for v in values if not math.isnan(v)]
    return float(np.mean(kept)) if kept else float("nan")


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


def _amp_dtype() -> torch.dtype:
    return torch.bfloat16 if torch.cuda.is_available() and torch.cuda.is_bf16_supported() else torch.float16


# --- experiments table -------------------------------------------------------------------------------------
def _record_experiment(config: TrainConfig, action: Callable) -> Any:
    from labeling.store.store import Store

    with Store(config.db) as store:
        return action(store)


# --- training -------------------------------------------------------------------------------------------------
def train(config: TrainConfig, on_progress: Callable[[dict[str, Any]], None] | None = None) -> TrainResult:
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


def _train(
    config: TrainConfig,
    resumed: dict[str, Any] | None,
    distributed: Distributed,
    notify: Callable[[dict[str, Any]], None],
) -> TrainResult:
    started = time.perf_counter()
    device = resolve_device(config.device, distributed.local_rank)
    use_amp = config.amp and device.type == "cuda"
    amp_dtype = _amp_dtype()
    if config.batch_size % distributed.world_size:
        raise InputError(
            f"--batch-size {config.batch_size} does not split evenly over {distributed.world_size} processes"
        )
    seed_everything(config.seed)

    folder = Path(config.checkpoint_dir)
    last_path, best_path = folder / "last.pt", folder / "best.pt"
    if distributed.main and resumed is None and last_path.exists():
        raise InputError(
            f"{folder}: holds a checkpoint already; --resume {last_path} or choose another --checkpoint-dir"
        )
    data = load_training_data(config)
    # Every process has closed its read-only connection before rank 0 opens the database to write.
    distributed.barrier()
    if distributed.main:
        folder.mkdir(parents=True, exist_ok=True)  # only once the inputs are known to be usable
    findings = list(data.findings)
    allowed = allowed_cells(findings)

    tokenizer = text_tokenizer = None
    if needs_sentences(config.model):
        if distributed.main:
            # A resumed run reads the tokenizer it was trained with; a new one builds it first.
            prepare_tokenizers(config, data, folder, build=resumed is None)
        distributed.barrier()
        tokenizer, text_tokenizer = prepare_tokenizers(config, data, folder, build=False)

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

    torch.manual_seed(config.seed)  # the initial weights depend on the seed alone
    model = CLALANet(model_config).to(device)
    parameters = sum(p.numel() for p in model.parameters())

    per_process_batch = config.batch_size // distributed.world_size
    sampler = DistributedSampler(
        data.train,
        num_replicas=distributed.world_size,
        rank=distributed.rank,
        shuffle=True,
        seed=config.seed,
        drop_last=False,
    )
    loader_generator = torch.Generator()
    # drop_last: a last batch of one image would break BatchNorm and weigh one image as much as a batch.
    train_loader = DataLoader(
        data.train,
        batch_size=per_process_batch,
        sampler=sampler,
        drop_last=True,
        num_workers=config.workers,
        collate_fn=collator,
        worker_init_fn=_seed_worker,
        generator=loader_generator,
        pin_memory=device.type == "cuda",
    )
    valid_loader = DataLoader(
        data.valid,
        batch_size=per_process_batch,
        shuffle=False,
        num_workers=config.workers,
        collate_fn=collator,
        worker_init_fn=_seed_worker,
        pin_memory=device.type == "cuda",
    )
    steps_per_epoch = len(train_loader)
    if steps_per_epoch == 0:
        raise InputError(f"--batch-size {config.batch_size}: no full batch in {len(data.train)} training images")
    total_steps = steps_per_epoch * config.epochs

    optimizer = build_optimizer(model, config)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, warmup_cosine(total_steps, max(1, round(config.warmup * total_steps)))
    )
    scaler = torch.amp.GradScaler("cuda", enabled=use_amp and amp_dtype == torch.float16)

    state = {
        "epoch": 0,
        "global_step": 0,
        "history": [],
        "best_f1": -math.inf,
        "best_epoch": 0,
        "epochs_without_improvement": 0,
        "experiment_id": None,
        "thresholds": [0.5] * len(findings),
    }
    if resumed is not None:
        model.load_state_dict(resumed["model_state"])
        optimizer.load_state_dict(resumed["optimizer_state"])
        scheduler.load_state_dict(resumed["scheduler_state"])
        if resumed.get("scaler_state"):
            scaler.load_state_dict(resumed["scaler_state"])
        for key in state:
            state[key] = resumed["state"][key]
        set_rng_state(resumed["rng"])

    label_spec = {**config.label_spec(), "findings": findings, "run_id": data.run_id}
    name = config.name or f"{config.run}-{datetime.now():%Y%m%d-%H%M%S}"
    full_config = {"train": config.to_dict(), "model": model_config.to_dict()}
    if distributed.main:
        if state["experiment_id"] is None:
            state["experiment_id"] = _record_experiment(
                config, lambda store: store.add_experiment(name, label_spec, full_config, str(last_path))
            )
        else:
            _record_experiment(config, lambda store: store.update_experiment(state["experiment_id"], status="running"))

    trained = model
    if distributed.enabled:
        from torch.nn.parallel import DistributedDataParallel

        trained = DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None, find_unused_parameters=True
        )

    if distributed.main:
        notify(
            {
                "event": "start",
                "epochs": config.epochs,
                "first_epoch": state["epoch"] + 1,
                "steps_per_epoch": steps_per_epoch,
                "train_images": len(data.train),
                "valid_images": len(data.valid),
                "lesions": findings,
                "parameters": parameters,
                "device": str(device),
                "processes": distributed.world_size,
                "experiment_id": state["experiment_id"],
                "checkpoint_dir": str(folder),
            }
        )

    stopped_early = False
    status = "failed"
    try:
        while state["epoch"] < config.epochs and not stopped_early:
            epoch = state["epoch"] + 1
            sampler.set_epoch(epoch)
            data.train.set_epoch(epoch)
            loader_generator.manual_seed(config.seed * 1_000_003 + epoch)
            trained.train()
            sums: dict[str, float] = {}
            for step, batch in enumerate(train_loader, start=1):
                inputs = model_inputs(batch, device)
                optimizer.zero_grad(set_to_none=True)
                with torch.autocast(device_type=device.type, dtype=amp_dtype, enabled=use_amp):
                    output = trained(inputs)
                scaler.scale(output.loss).backward()
                if config.grad_clip > 0:
                    scaler.unscale_(optimizer)
                    torch.nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip)
                scaler.step(optimizer)
                scaler.update()
                scheduler.step()
                state["global_step"] += 1
                terms = {"loss": output.loss.item(), **{k: v.item() for k, v in output.losses.items()}}
                for key, value in terms.items():
                    sums[key] = sums.get(key, 0.0) + value
                if distributed.main:
                    notify(
                        {
                            "event": "step",
                            "epoch": epoch,
                            "step": step,
                            "steps": steps_per_epoch,
                            "losses": terms,
                            "lr": scheduler.get_last_lr()[0],
                        }
                    )

            improved = False
            if distributed.main:
                predictions = predict_probabilities(model, valid_loader, device, use_amp)
                thresholds, lesion_f1 = choose_thresholds(predictions)
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
                    "lr": scheduler.get_last_lr()[0],
                    "train": {k: v / steps_per_epoch for k, v in sums.items()},
                    "valid": predictions.losses,
                    "valid_mean_lesion_f1": valid_f1,
                    "valid_baseline_f1": baseline,
                    "valid_lesion_f1": dict(zip(findings, lesion_f1)),
                    "thresholds": dict(zip(findings, thresholds)),
                }
                state["history"].append(record)
                state["epoch"] = epoch
                state["thresholds"] = thresholds
                stop = config.patience > 0 and state["epochs_without_improvement"] >= config.patience
                payload = _checkpoint_payload(
                    config,
                    model_config,
                    model,
                    optimizer,
                    scheduler,
                    scaler,
                    state,
                    label_spec,
                    data.vocabulary_version,
                    tokenizer is not None,
                    text_tokenizer is not None,
                    thresholds,
                    lesion_f1,
                )
                save_checkpoint(last_path, payload)
                if improved:
                    save_checkpoint(best_path, payload)
                metrics = _experiment_metrics(state)
                _record_experiment(
                    config,
                    lambda store: store.update_experiment(
                        state["experiment_id"], metrics=metrics, checkpoint_path=str(best_path)
                    ),
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
            else:
                state["epoch"] = epoch
                stop = False
            stopped_early = distributed.broadcast_flag(stop, device)
        status = "complete"
    except KeyboardInterrupt:
        status = "interrupted"
        raise
    finally:
        if distributed.main and state["experiment_id"] is not None:
            final_status = status
            _record_experiment(
                config,
                lambda store: store.update_experiment(
                    state["experiment_id"],
                    status=final_status,
                    metrics={**_experiment_metrics(state), "stopped_early": stopped_early},
                ),
            )

    best = load_checkpoint(best_path) if distributed.main else None
    result = TrainResult(
        experiment_id=state["experiment_id"],
        checkpoint_dir=folder,
        best_checkpoint=best_path,
        last_checkpoint=last_path,
        lesions=findings,
        thresholds=list(best["thresholds"]) if best else list(state["thresholds"]),
        best_epoch=state["best_epoch"],
        best_valid_f1=state["best_f1"],
        epochs_run=state["epoch"],
        stopped_early=stopped_early,
        history=state["history"],
        parameters=parameters,
        seconds=time.perf_counter() - started,
    )
    if distributed.main:
        notify({"event": "done", "result": result})
    return result


def _experiment_metrics(state: dict[str, Any]) -> dict[str, Any]:
    return {
        "epochs": state["history"],
        "best_epoch": state["best_epoch"],
        "best_valid_mean_lesion_f1": state["best_f1"] if state["best_f1"] > -math.inf else None,
    }


def _checkpoint_payload(
    config: TrainConfig,
    model_config: CLALANetConfig,
    model: CLALANet,
    optimizer,
    scheduler,
    scaler,
    state: dict[str, Any],
    label_spec: dict[str, Any],
    vocabulary_version: str,
    has_tokenizer: bool,
    has_text_tokenizer: bool,
    thresholds: list[float],
    lesion_f1: list[float],
) -> dict[str, Any]:
    return {
        "format": CHECKPOINT_FORMAT,
        "format_version": CHECKPOINT_VERSION,
        "model_state": model.state_dict(),
        "optimizer_state": optimizer.state_dict(),
        "scheduler_state": scheduler.state_dict(),
        "scaler_state": scaler.state_dict(),
        "rng": rng_state(),
        "state": dict(state),
        "epoch": state["epoch"],
        "global_step": state["global_step"],
        "train_config": config.to_dict(),
        "model_config": model_config.to_dict(),
        "label_spec": label_spec,
        "vocabulary_version": vocabulary_version,
        "tokenizer_dir": TOKENIZER_DIR if has_tokenizer else None,
        "text_tokenizer_dir": TEXT_TOKENIZER_DIR if has_text_tokenizer else None,
        "lesions": list(model_config.lesions),
        "thresholds": [float(t) for t in thresholds],
        "valid_lesion_f1": [float(f) for f in lesion_f1],
        "saved_at": datetime.now().isoformat(timespec="seconds"),
    }


def load_tokenizer(checkpoint: dict[str, Any]):
    """The sentence tokenizer saved beside a checkpoint (None when the model has no sentence parts)."""
    if not checkpoint.get("tokenizer_dir"):
        return None
    from transformers import AutoTokenizer

    folder = Path(checkpoint["path"]).parent / checkpoint["tokenizer_dir"]
    if not folder.is_dir():
        raise InputError(f"{folder}: the checkpoint's tokenizer folder is missing")
    return AutoTokenizer.from_pretrained(str(folder), local_files_only=True)


__all__ = [
    "TrainConfig",
    "TrainResult",
    "train",
    "load_checkpoint",
    "model_from_checkpoint",
    "load_tokenizer",
    "predict_probabilities",
    "choose_thresholds",
    "best_f1_threshold",
    "constant_baseline_f1",
    "allowed_cells",
    "BatchCollator",
    "Predictions",
    "ClalaError",
]
