"""LLCL: supervised contrastive loss over regions; hand-computed value, masks, normal regions, fitting."""

import math

import torch
import torch.nn.functional as F

from model.net.llcl import LesionContrastiveLoss, LLCLConfig, supervised_contrastive_loss


def unit(degrees: float) -> list[float]:
    return [math.cos(math.radians(degrees)), math.sin(math.radians(degrees))]


ANGLES = (0.0, 60.0, 90.0, 180.0)
# Region 0 has lesion A, region 1 has A and B, region 2 has B, region 3 is normal.
LABELS = torch.tensor([[1.0, 0.0], [1.0, 1.0], [0.0, 1.0], [0.0, 0.0]])


def toy(extra_embedding=None, extra_labels=None, extra_mask=None, extra_valid=True):
    embeddings = torch.tensor([unit(a) for a in ANGLES])
    labels, mask, valid = LABELS, torch.ones(4, 2, dtype=torch.bool), torch.ones(4, dtype=torch.bool)
    if extra_embedding is not None:
        embeddings = torch.cat([embeddings, torch.tensor([extra_embedding])])
        labels = torch.cat([labels, torch.tensor([extra_labels])])
        mask = torch.cat([mask, torch.tensor([extra_mask])])
        valid = torch.cat([valid, torch.tensor([extra_valid])])
    return embeddings, labels, mask, valid


def test_value_by_hand():
    t = 0.5
    s = lambda i, j: math.cos(math.radians(ANGLES[i] - ANGLES[j])) / t  # noqa: E731
    denominator = lambda i: sum(math.exp(s(i, j)) for j in range(4) if j != i)  # noqa: E731
    anchor0 = -math.log(math.exp(s(0, 1)) / denominator(0))
    anchor1 = -(math.log(math.exp(s(1, 0)) / denominator(1)) + math.log(math.exp(s(1, 2)) / denominator(1))) / 2
    anchor2 = -math.log(math.exp(s(2, 1)) / denominator(2))
    # Region 3 (normal) is no anchor but sits in every denominator.
    expected = (anchor0 + anchor1 + anchor2) / 3
    loss = supervised_contrastive_loss(*toy(), temperature=t)
    assert math.isclose(loss.item(), expected, rel_tol=1e-5)
    assert math.isclose(expected, 0.4846, abs_tol=1e-3)  # the number itself, for the record


def test_invalid_regions_take_no_part():
    base = supervised_contrastive_loss(*toy(), temperature=0.5)
    with_invalid = supervised_contrastive_loss(
        *toy([0.6, 0.8], [1.0, 1.0], [True, True], extra_valid=False), temperature=0.5
    )
    assert math.isclose(with_invalid.item(), base.item(), rel_tol=1e-6)


def test_ignored_labels_are_never_read():
    # A region whose every cell is ignored has an unknown relation to every anchor: left out.
    base = supervised_contrastive_loss(*toy(), temperature=0.5)
    unknown = toy([0.6, 0.8], [1.0, 0.0], [False, False])
    assert math.isclose(supervised_contrastive_loss(*unknown, temperature=0.5).item(), base.item(), rel_tol=1e-6)
    flipped = toy([0.6, 0.8], [0.0, 1.0], [False, False])
    assert math.isclose(supervised_contrastive_loss(*flipped, temperature=0.5).item(), base.item(), rel_tol=1e-6)
    # Known absent on B but ignored on A: a negative for the B-only anchor (2), unknown for A anchors.
    partly = supervised_contrastive_loss(*toy([0.6, 0.8], [0.0, 0.0], [False, True]), temperature=0.5)
    assert partly.item() > base.item()


def test_normal_regions_are_not_anchors():
    embeddings = F.normalize(torch.randn(5, 3), dim=-1).requires_grad_()
    loss = supervised_contrastive_loss(
        embeddings,
        torch.zeros(5, 2),
        torch.ones(5, 2, dtype=torch.bool),
        torch.ones(5, dtype=torch.bool),
        temperature=0.1,
    )
    loss.backward()
    assert embeddings.grad is not None
    assert loss.item() == 0.0 and torch.count_nonzero(embeddings.grad) == 0


def test_loss_decreases_on_a_fixed_batch():
    torch.manual_seed(0)
    module = LesionContrastiveLoss(LLCLConfig(d_model=16, projection_dim=8, temperature=0.1))
    features = torch.randn(4, 29, 16)
    labels = (torch.rand(4, 29, 3) > 0.85).float()
    label_mask = torch.rand(4, 29, 3) > 0.1
    box_mask = torch.rand(4, 29) > 0.1
    optimizer = torch.optim.Adam(module.parameters(), lr=1e-2)
    losses = []
    for _ in range(25):
        loss = module(features, labels, label_mask, box_mask)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < 0.7 * losses[0]
