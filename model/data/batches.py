"""Batches for CLALA-Net: the cells the vocabulary allows per lesion, and the collator that turns
Dataset items into the model's batch (masks, image-level targets, tokenized region sentences)."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from model.data.dataset import REGION_NAMES, collate
from model.net.clala_net import image_level_labels

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
            assert self.text_tokenizer is not None
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
        if "image_labels" not in batch:  # items without their own image-level targets
            batch["image_labels"], batch["image_label_mask"] = image_level_labels(batch["labels"], data_mask)
        batch["box_mask"] = box_mask
        batch["label_mask"] = data_mask & self.allowed & box_mask[..., None]
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
