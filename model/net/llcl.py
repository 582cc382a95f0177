"""LLCL, lesion-level contrastive learning: supervised contrastive loss over region embeddings.

Region features from the whole batch (every image, every valid region) are projected by a small
MLP and L2-normalised. For an anchor region i, positives are the other regions sharing at least
one known-present lesion with it; the loss is the SupCon "L_out" form (Khosla et al. 2020):

    l_i = -1/|P(i)| * sum_{p in P(i)} log( exp(s_ip / t) / sum_{a in A(i)} exp(s_ia / t) )

averaged over anchors, with s the cosine similarity and t the temperature.

How regions are treated:
- Invalid boxes (box_mask False) take no part at all: not anchors, not in any denominator.
- Normal regions (valid box, no known-present lesion) are negatives only: they sit in the
  abnormal anchors' denominators, pushing lesion embeddings away from normal anatomy, but are not
  anchors themselves. Normal anatomy is as diverse as the 29 regions (a normal clavicle and a
  normal lung base have nothing to share), and normal regions outnumber abnormal ones many times,
  so a "normal" pseudo-class would dominate the loss and pull unrelated regions together.
- Ignored labels (label_mask False, e.g. uncertain under the "ignore" policy) are never read as
  present or absent. A pair is left out of the anchor's denominator when its relation is unknown:
  it shares no known-present lesion, but one side's present lesion is ignored on the other side
  (an "uncertain effusion" region is neither a positive nor a negative for an effusion anchor).
- A batch without any anchor gives a zero loss that stays connected to the graph.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn


@dataclass
class LLCLConfig:
    d_model: int = 256
    projection_dim: int = 128
    temperature: float = 0.1


def supervised_contrastive_loss(
    embeddings: torch.Tensor, labels: torch.Tensor, label_mask: torch.Tensor, valid: torch.Tensor, temperature: float
) -> torch.Tensor:
    """embeddings [N, D] (L2-normalised), labels [N, L] in {0, 1}, label_mask [N, L] bool, valid [N] bool."""
    known = label_mask & valid[:, None]
    present = ((labels > 0.5) & known).float()
    ignored = (~label_mask).float()

    positive = (present @ present.T) > 0
    # Unknown relation: a present lesion on one side is an ignored cell on the other.
    unknown = ((present @ ignored.T) + (ignored @ present.T)) > 0
    others = valid[:, None] & valid[None, :] & ~torch.eye(len(valid), dtype=torch.bool, device=valid.device)
    positive &= others
    contrast = others & (positive | ~unknown)

    anchors = positive.any(dim=1)
    if not anchors.any():
        return embeddings.sum() * 0.0
    logits = embeddings[anchors] @ embeddings.T / temperature
    logits = logits.masked_fill(~contrast[anchors], float("-inf"))
    log_probability = logits - torch.logsumexp(logits, dim=1, keepdim=True)
    anchor_positive = positive[anchors]
    positive_log_probability = torch.where(anchor_positive, log_probability, torch.zeros_like(log_probability))
    per_anchor = -positive_log_probability.sum(dim=1) / anchor_positive.sum(dim=1)
    return per_anchor.mean()


class LesionContrastiveLoss(nn.Module):
    """Projection head + supervised contrastive loss over all valid regions of the batch."""

    def __init__(self, config: LLCLConfig):
        super().__init__()
        self.config = config
        self.projection = nn.Sequential(
            nn.Linear(config.d_model, config.d_model),
            nn.ReLU(),
            nn.Linear(config.d_model, config.projection_dim),
        )

    def forward(
        self, region_features: torch.Tensor, labels: torch.Tensor, label_mask: torch.Tensor, box_mask: torch.Tensor
    ) -> torch.Tensor:
        """region_features [B, R, d]; labels, label_mask [B, R, L]; box_mask [B, R] -> scalar loss."""
        # float32: the softmax over a few hundred regions is too fine for half precision.
        embeddings = F.normalize(self.projection(region_features.flatten(0, 1)).float(), dim=-1)
        return supervised_contrastive_loss(
            embeddings, labels.flatten(0, 1), label_mask.flatten(0, 1), box_mask.flatten(), self.config.temperature
        )
