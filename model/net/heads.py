"""Lesion classification heads of CLALA-Net.

- GlobalLesionClassifier: pooled image feature [B, d] -> image-level lesion logits [B, L]. Its
  probabilities also scale LCA's lesion cues.
- RegionLesionHead: region features [B, R, d] -> per-region multi-label logits [B, R, L], one
  classifier shared by all regions (region identity is already in the RoI feature). Lesion-level
  F1 is computed on these.

Both are a LayerNorm'd MLP when `hidden_dim` > 0, else a single linear layer.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn


@dataclass
class HeadConfig:
    d_model: int = 256
    num_lesions: int = 1
    hidden_dim: int = 0  # 0 = linear head
    dropout: float = 0.1


def _classifier(config: HeadConfig) -> nn.Module:
    if config.hidden_dim <= 0:
        return nn.Sequential(nn.Dropout(config.dropout), nn.Linear(config.d_model, config.num_lesions))
    return nn.Sequential(
        nn.Linear(config.d_model, config.hidden_dim),
        nn.GELU(),
        nn.LayerNorm(config.hidden_dim),
        nn.Dropout(config.dropout),
        nn.Linear(config.hidden_dim, config.num_lesions),
    )


class GlobalLesionClassifier(nn.Module):
    """[B, d] pooled image feature -> [B, L] image-level lesion logits."""

    def __init__(self, config: HeadConfig):
        super().__init__()
        self.config = config
        self.classifier = _classifier(config)

    def forward(self, image_feature: torch.Tensor) -> torch.Tensor:
        return self.classifier(image_feature)


class RegionLesionHead(nn.Module):
    """[B, R, d] region features -> [B, R, L] per-region lesion logits."""

    def __init__(self, config: HeadConfig):
        super().__init__()
        self.config = config
        self.classifier = _classifier(config)

    def forward(self, region_features: torch.Tensor) -> torch.Tensor:
        return self.classifier(region_features)
