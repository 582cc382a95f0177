"""Inference with a CLALA-Net checkpoint, shared by `evaluate`, `predict` and `generate`.

Decided once, here, for all three:
- the images go through ONE loader (`inference_loader`): the checkpoint's image size, no
  augmentation, split order, the batch size and DataLoader workers of the options (default 0:
  the main process; workers only pay off for large splits);
- AMP: on CUDA, mixed precision as the checkpoint was trained (its `amp` setting, default on),
  in the dtype training used (`amp_dtype`); full precision on CPU.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader

from labeling.core.errors import InputError
from model.data.batches import BatchCollator, allowed_cells, model_inputs
from model.data.dataset import REGION_NAMES, Cohort, Examples, ImageRecord, RegionDataset, load_cohort
from model.net.clala_net import CLALANet
from model.train.checkpoint import load_checkpoint, model_from_checkpoint
from model.train.distributed import resolve_device


@dataclass
class InferenceOptions:
    """Which checkpoint predicts which images, and how: the images root, the Chest ImaGenome root
    (default: the images root), the split (None: every split), batch size, device, workers."""

    checkpoint: str | Path
    data: str | Path
    imagenome: str | Path | None = None
    split: str | None = "test"
    batch_size: int = 16
    device: str = "auto"
    workers: int = 0

    @property
    def imagenome_root(self) -> str | Path:
        return self.imagenome or self.data

    def cohort(self, exclude_avoided: bool | None = False) -> Cohort:
        """The images of the split: every one by default (prediction leaves nothing out);
        `exclude_avoided=None`: images_to_avoid left out of the train split, as for training."""
        return load_cohort(self.data, self.imagenome_root, self.split, exclude_avoided=exclude_avoided)


@dataclass
class Inference:
    """A loaded checkpoint, ready to predict."""

    checkpoint: dict[str, Any]
    model: CLALANet
    device: torch.device
    amp: bool  # mixed precision (see the module doc)
    lesions: list[str]
    allowed: np.ndarray  # [R, L] cells the vocabulary allows

    @property
    def train_config(self) -> dict[str, Any]:
        return self.checkpoint["train_config"]


def load_inference(options: InferenceOptions) -> Inference:
    """The checkpoint of `options`, its model on the device, and the AMP decision."""
    checkpoint = load_checkpoint(options.checkpoint)
    device = resolve_device(options.device)
    lesions = list(checkpoint["lesions"])
    amp = device.type == "cuda" and bool(checkpoint["train_config"].get("amp", True))
    return Inference(
        checkpoint, model_from_checkpoint(checkpoint, device), device, amp, lesions, allowed_cells(lesions)
    )


def unlabeled_examples(records: list[ImageRecord], lesions: list[str]) -> Examples:
    """Images to predict without labels: empty targets, every cell kept."""
    shape = (len(records), len(REGION_NAMES), len(lesions))
    return Examples(
        records,
        tuple(lesions),
        np.full(len(records), -1, np.int64),
        np.zeros(shape, np.float32),
        np.ones(shape, bool),
        [[""] * len(REGION_NAMES) for _ in records],
    )


def inference_loader(examples: Examples, inference: Inference, options: InferenceOptions) -> DataLoader:
    """THE loader of every inference (see the module doc)."""
    dataset = RegionDataset(examples, image_size=inference.train_config["image_size"], augment=None)
    return DataLoader(
        dataset,
        batch_size=options.batch_size,
        shuffle=False,
        num_workers=options.workers,
        collate_fn=BatchCollator(inference.allowed),
    )


def check_images(examples: Examples, options: InferenceOptions, run: str | None = None) -> None:
    if not examples.records:
        where = f"split {options.split!r}" if options.split else "any split"
        covered = f" with a report that run {run!r} covers" if run else ""
        raise InputError(f"{options.imagenome_root}: no images in {where}{covered}")


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
        with torch.autocast(device_type=device.type, dtype=amp_dtype(), enabled=amp):
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


def amp_dtype() -> torch.dtype:
    return torch.bfloat16 if torch.cuda.is_available() and torch.cuda.is_bf16_supported() else torch.float16


@dataclass
class PredictedSplit:
    """A checkpoint's region probabilities [N, R, L] and valid boxes [N, R] on the images of
    `dataset` (in its order), with the cells it speaks for [R, L]."""

    checkpoint: dict[str, Any]
    dataset: RegionDataset
    probabilities: np.ndarray
    box_mask: np.ndarray
    allowed: np.ndarray


def predict_split(options: InferenceOptions, inference: Inference | None = None) -> PredictedSplit:
    """Every image of the split predicted, without labels (`inference`: the loaded checkpoint of
    `options`, when the caller has it already)."""
    inference = inference or load_inference(options)
    examples = unlabeled_examples(options.cohort().records, inference.lesions)
    check_images(examples, options)
    loader = inference_loader(examples, inference, options)
    predictions = predict_probabilities(inference.model, loader, inference.device, inference.amp, with_losses=False)
    dataset = loader.dataset
    assert isinstance(dataset, RegionDataset)
    return PredictedSplit(
        inference.checkpoint, dataset, predictions.probabilities, predictions.box_mask, inference.allowed
    )
