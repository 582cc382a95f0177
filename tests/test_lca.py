"""LCA: probability-scaled lesion cues, regions attending to them, and what it lets a head learn."""

import math
from typing import Any

import torch
from torch import nn

from model.net.lca import LCAConfig, LesionCrossAttention


def tiny_lca(**overrides) -> LesionCrossAttention:
    values: dict[str, Any] = dict(d_model=16, num_lesions=3, num_heads=2, feedforward_dim=32, dropout=0.0) | overrides
    return LesionCrossAttention(LCAConfig(**values))


def test_shapes_and_attention_over_cues():
    torch.manual_seed(0)
    lca = tiny_lca(num_layers=2)
    regions, probabilities = torch.randn(2, 29, 16), torch.rand(2, 3)
    out, attention = lca(regions, probabilities)
    assert out.shape == (2, 29, 16)
    assert attention.shape == (2, 29, 3)
    torch.testing.assert_close(attention.sum(-1), torch.ones(2, 29))


def test_cues_are_embeddings_scaled_by_probabilities():
    torch.manual_seed(0)
    lca = tiny_lca()
    probabilities = torch.tensor([[0.0, 0.5, 1.0]])
    cues = lca.cue_tokens(probabilities)
    assert torch.count_nonzero(cues[0, 0]) == 0
    torch.testing.assert_close(cues[0, 1], 0.5 * lca.lesion_embeddings[1])
    torch.testing.assert_close(cues[0, 2], lca.lesion_embeddings[2])


def test_output_depends_on_probabilities_and_regions_stay_independent():
    torch.manual_seed(0)
    lca = tiny_lca()
    regions = torch.randn(1, 29, 16)
    out, _ = lca(regions, torch.tensor([[0.9, 0.1, 0.1]]))
    other_probabilities, _ = lca(regions, torch.tensor([[0.1, 0.1, 0.9]]))
    assert not torch.allclose(out, other_probabilities, atol=1e-4)
    changed = regions.clone()
    changed[0, 5] = 100.0
    out_changed, _ = lca(changed, torch.tensor([[0.9, 0.1, 0.1]]))
    keep = torch.arange(29) != 5
    torch.testing.assert_close(out_changed[0, keep], out[0, keep])


def test_lca_carries_image_level_lesion_context_into_identical_regions():
    # Every region of every image has the same feature; only the global probabilities differ.
    # A region head can fit per-image targets only through what LCA injects.
    torch.manual_seed(0)
    lca, head = tiny_lca(), nn.Linear(16, 3)
    regions = torch.randn(1, 1, 16).expand(4, 29, 16)
    probabilities = torch.tensor([[0.9, 0.1, 0.1], [0.1, 0.9, 0.1], [0.1, 0.1, 0.9], [0.9, 0.9, 0.1]])
    targets = (probabilities > 0.5).float()[:, None, :].expand(4, 29, 3)
    optimizer = torch.optim.Adam([*lca.parameters(), *head.parameters()], lr=1e-2)
    losses = []
    for _ in range(25):
        out, _ = lca(regions, probabilities)
        loss = nn.functional.binary_cross_entropy_with_logits(head(out), targets)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    # Without LCA the best a head can do is predict each lesion's base rate (1/2, 1/2, 1/4).
    entropy = lambda p: -(p * math.log(p) + (1 - p) * math.log(1 - p))  # noqa: E731
    constant_best = (entropy(0.5) + entropy(0.5) + entropy(0.25)) / 3
    assert losses[-1] < 0.5 * constant_best
    assert losses[-1] < 0.5 * losses[0]
