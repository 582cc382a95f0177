"""Global lesion classifier and region lesion head: shapes, sharing across regions, fitting."""

import torch
import torch.nn.functional as F

from model.net.heads import GlobalLesionClassifier, HeadConfig, RegionLesionHead


def test_shapes_linear_and_mlp():
    torch.manual_seed(0)
    for hidden in (0, 24):
        config = HeadConfig(d_model=16, num_lesions=5, hidden_dim=hidden, dropout=0.0)
        assert GlobalLesionClassifier(config)(torch.randn(3, 16)).shape == (3, 5)
        assert RegionLesionHead(config)(torch.randn(3, 29, 16)).shape == (3, 29, 5)
    linear = RegionLesionHead(HeadConfig(d_model=16, num_lesions=5, hidden_dim=0))
    assert sum(p.numel() for p in linear.parameters()) == 16 * 5 + 5


def test_region_head_is_shared_across_regions():
    torch.manual_seed(0)
    head = RegionLesionHead(HeadConfig(d_model=16, num_lesions=4, hidden_dim=8, dropout=0.0)).eval()
    feature = torch.randn(16)
    features = torch.randn(2, 29, 16)
    features[0, 3] = features[1, 17] = feature
    logits = head(features)
    torch.testing.assert_close(logits[0, 3], logits[1, 17])


def test_heads_fit_a_fixed_batch():
    torch.manual_seed(0)
    config = HeadConfig(d_model=16, num_lesions=4, hidden_dim=16, dropout=0.0)
    global_head, region_head = GlobalLesionClassifier(config), RegionLesionHead(config)
    image_features, region_features = torch.randn(6, 16), torch.randn(6, 29, 16)
    image_targets, region_targets = (torch.rand(6, 4) > 0.5).float(), (torch.rand(6, 29, 4) > 0.8).float()
    optimizer = torch.optim.Adam([*global_head.parameters(), *region_head.parameters()], lr=1e-2)
    first = None
    for _ in range(25):
        global_loss = F.binary_cross_entropy_with_logits(global_head(image_features), image_targets)
        region_loss = F.binary_cross_entropy_with_logits(region_head(region_features), region_targets)
        first = first or (global_loss.item(), region_loss.item())
        optimizer.zero_grad()
        (global_loss + region_loss).backward()
        optimizer.step()
    assert first is not None
    assert global_loss.item() < 0.5 * first[0]
    assert region_loss.item() < 0.8 * first[1]
