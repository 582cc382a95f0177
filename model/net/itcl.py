"""ITCL, image-text contrastive learning: symmetric InfoNCE between regions and their sentences.

Every region that has a reference sentence is paired with it. Region features and sentence
embeddings (a `transformers` encoder, mean-pooled over non-padding tokens) are projected to a
shared space and L2-normalised; similarities are scaled by a learnable temperature (CLIP's
log-parameterised logit scale, clamped at 100). The loss is the mean of the region->text and
text->region cross-entropies.

Identical sentences are encoded once: several regions often share one sentence ("bilateral
pleural effusions" for both lungs, "no pneumothorax" everywhere). Treating copies as distinct
texts would make the correct sentence a negative of itself, so the text side is de-duplicated
and a text's positives are all the regions that carry it (uniform target over them). With all
sentences distinct this is exactly CLIP's loss; with uninformative embeddings it equals log(N).

The text encoder is a local `transformers` model (`text_encoder` path, loaded offline) or a
small BERT built from its config and trained from scratch.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn


@dataclass
class ITCLConfig:
    d_model: int = 256
    projection_dim: int = 128
    text_encoder: str | None = None  # local path of a transformers encoder; None = build from config below
    vocab_size: int = 1000
    pad_token_id: int = 0
    text_hidden_size: int = 128
    text_layers: int = 2
    text_heads: int = 2
    max_positions: int = 128
    freeze_text_encoder: bool = False
    initial_temperature: float = 0.07
    max_logit_scale: float = 100.0


def build_text_encoder(config: ITCLConfig) -> nn.Module:
    from transformers import AutoModel, BertConfig, BertModel

    if config.text_encoder:
        return AutoModel.from_pretrained(config.text_encoder, local_files_only=True)
    bert = BertConfig(
        vocab_size=config.vocab_size,
        hidden_size=config.text_hidden_size,
        num_hidden_layers=config.text_layers,
        num_attention_heads=config.text_heads,
        intermediate_size=4 * config.text_hidden_size,
        max_position_embeddings=config.max_positions,
        pad_token_id=config.pad_token_id,
    )
    return BertModel(bert, add_pooling_layer=False)


def symmetric_info_nce(
    region_embeddings: torch.Tensor,
    text_embeddings: torch.Tensor,
    text_index: torch.Tensor,
    logit_scale: torch.Tensor | float,
) -> torch.Tensor:
    """region_embeddings [N, D], text_embeddings [U, D] (both normalised); text_index [N] gives each
    region's text row. Every text must be used by at least one region."""
    logits = logit_scale * region_embeddings @ text_embeddings.T  # [N, U]
    region_to_text = F.cross_entropy(logits, text_index)
    # Text u's target is uniform over the regions carrying it.
    region_log_probability = logits.log_softmax(dim=0)
    owner = F.one_hot(text_index, num_classes=len(text_embeddings)).to(logits.dtype)  # [N, U]
    text_to_region = -((region_log_probability * owner).sum(dim=0) / owner.sum(dim=0)).mean()
    return (region_to_text + text_to_region) / 2


class ImageTextContrastiveLoss(nn.Module):
    """Region features + sentence token ids -> symmetric InfoNCE with a learnable temperature."""

    def __init__(self, config: ITCLConfig):
        super().__init__()
        self.config = config
        self.text_encoder: Any = build_text_encoder(config)  # a transformers model
        if config.freeze_text_encoder:
            self.text_encoder.requires_grad_(False)
        text_size = self.text_encoder.config.hidden_size
        self.region_projection = nn.Linear(config.d_model, config.projection_dim)
        self.text_projection = nn.Linear(text_size, config.projection_dim)
        self.logit_scale = nn.Parameter(torch.tensor(math.log(1.0 / config.initial_temperature)))

    def encode_text(self, token_ids: torch.Tensor) -> torch.Tensor:
        """[U, T] token ids (right-padded with pad_token_id) -> [U, projection_dim], normalised."""
        attention_mask = token_ids != self.config.pad_token_id
        hidden = self.text_encoder(input_ids=token_ids, attention_mask=attention_mask.long()).last_hidden_state
        weights = attention_mask[..., None].to(hidden.dtype)
        pooled = (hidden * weights).sum(dim=1) / weights.sum(dim=1).clamp(min=1.0)
        return F.normalize(self.text_projection(pooled).float(), dim=-1)

    def forward(self, region_features: torch.Tensor, token_ids: torch.Tensor) -> torch.Tensor:
        """region_features [N, d] of the regions that have a sentence; token_ids [N, T] their sentences."""
        if len(token_ids) == 0:
            return region_features.sum() * 0.0
        unique_ids, text_index = torch.unique(token_ids, dim=0, return_inverse=True)
        text_embeddings = self.encode_text(unique_ids)
        region_embeddings = F.normalize(self.region_projection(region_features).float(), dim=-1)
        logit_scale = self.logit_scale.clamp(max=math.log(self.config.max_logit_scale)).exp()
        return symmetric_info_nce(region_embeddings, text_embeddings, text_index, logit_scale)
