"""LCA, lesion cross-attention: image-level lesion context injected into every region feature.

Each lesion has a learned embedding. Scaled by the image's global probability of that lesion, the
embeddings become the image's lesion cue tokens [B, L, d]: a lesion the global classifier does not
see contributes a near-zero cue. Each region feature (query) attends to the cues (keys and values)
with multi-head cross-attention, followed by residual + LayerNorm and a feed-forward block with
residual + LayerNorm (post-norm, as in the original Transformer decoder's cross-attention block).

Regions attend only to the cues, never to each other, so a region's output depends on its own
feature and the image's cues alone; invalid regions cannot leak into valid ones.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn


@dataclass
class LCAConfig:
    d_model: int = 256
    num_lesions: int = 1
    num_heads: int = 4
    num_layers: int = 1
    feedforward_dim: int = 512
    dropout: float = 0.1


class LesionCrossAttentionLayer(nn.Module):
    """One block: regions attend to cues; residual + LayerNorm; feed-forward; residual + LayerNorm."""

    def __init__(self, config: LCAConfig):
        super().__init__()
        self.cross_attention = nn.MultiheadAttention(
            config.d_model, config.num_heads, dropout=config.dropout, batch_first=True
        )
        self.attention_norm = nn.LayerNorm(config.d_model)
        self.feed_forward = nn.Sequential(
            nn.Linear(config.d_model, config.feedforward_dim),
            nn.GELU(),
            nn.Dropout(config.dropout),
            nn.Linear(config.feedforward_dim, config.d_model),
        )
        self.feed_forward_norm = nn.LayerNorm(config.d_model)
        self.dropout = nn.Dropout(config.dropout)

    def forward(self, regions: torch.Tensor, cues: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        attended, weights = self.cross_attention(regions, cues, cues, need_weights=True, average_attn_weights=True)
        regions = self.attention_norm(regions + self.dropout(attended))
        regions = self.feed_forward_norm(regions + self.dropout(self.feed_forward(regions)))
        return regions, weights


class LesionCrossAttention(nn.Module):
    """region_features [B, R, d] + global lesion probabilities [B, L] -> region features [B, R, d]."""

    def __init__(self, config: LCAConfig):
        super().__init__()
        self.config = config
        self.lesion_embeddings = nn.Parameter(torch.randn(config.num_lesions, config.d_model) * 0.02)
        self.layers = nn.ModuleList(LesionCrossAttentionLayer(config) for _ in range(config.num_layers))

    def cue_tokens(self, lesion_probabilities: torch.Tensor) -> torch.Tensor:
        """[B, L] probabilities -> [B, L, d] cues: each lesion embedding scaled by its probability."""
        return lesion_probabilities[..., None] * self.lesion_embeddings

    def forward(
        self, region_features: torch.Tensor, lesion_probabilities: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Returns the updated region features and the last layer's attention [B, R, L] (head mean)."""
        cues = self.cue_tokens(lesion_probabilities)
        weights = None
        for layer in self.layers:
            region_features, weights = layer(region_features, cues)
        assert weights is not None, "LesionCrossAttention has at least one layer"
        return region_features, weights
