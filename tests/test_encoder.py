"""Image encoder: region features by RoIAlign over pixel boxes, box masking, local weights files."""

from typing import Any

import pytest
import timm
import torch
from safetensors.torch import save_file
from torchvision.ops import roi_align

from model.net.encoder import EncoderConfig, RegionImageEncoder, load_backbone_weights

BACKBONE = "test_resnet"  # timm's tiny test ResNet: 0.4M parameters, stride 32


def tiny_encoder(**overrides) -> RegionImageEncoder:
    return RegionImageEncoder(EncoderConfig(backbone=BACKBONE, d_model=16, **overrides)).eval()


def boxes_for(batch: int, regions: int = 29) -> torch.Tensor:
    generator = torch.Generator().manual_seed(1)
    corner = torch.rand(batch, regions, 2, generator=generator) * 40
    size = 8 + torch.rand(batch, regions, 2, generator=generator) * 20
    return torch.cat([corner, corner + size], dim=-1)


def test_shapes_and_stride():
    torch.manual_seed(0)
    encoder = tiny_encoder()
    image, boxes = torch.randn(2, 1, 64, 64), boxes_for(2)
    out = encoder(image, boxes, torch.ones(2, 29, dtype=torch.bool))
    assert out.region_features.shape == (2, 29, 16)
    assert out.image_feature.shape == (2, 16)
    assert encoder.feature_stride == 32 and out.feature_map.shape[-2:] == (2, 2)


def test_region_features_sample_the_right_image_at_the_right_scale():
    torch.manual_seed(0)
    encoder = tiny_encoder()
    image, boxes = torch.randn(2, 1, 64, 64), boxes_for(2)
    out = encoder(image, boxes, torch.ones(2, 29, dtype=torch.bool))
    # Boxes in feature coordinates (pixels / 32), one list per image, sampled independently.
    expected = roi_align(
        out.feature_map,
        [boxes[0] / 32, boxes[1] / 32],
        output_size=3,
        spatial_scale=1.0,
        sampling_ratio=2,
        aligned=True,
    )
    expected = encoder.region_projection(expected).reshape(2, 29, 16)
    torch.testing.assert_close(out.region_features, expected)
    # Different boxes give different features; the same box in two images too.
    assert not torch.allclose(out.region_features[0, 0], out.region_features[0, 1])


def test_invalid_boxes_are_zero_and_influence_nothing():
    torch.manual_seed(0)
    encoder = tiny_encoder()
    image, boxes = torch.randn(2, 1, 64, 64), boxes_for(2)
    box_mask = torch.ones(2, 29, dtype=torch.bool)
    box_mask[0, 3] = box_mask[1, 20] = False
    out = encoder(image, boxes, box_mask)
    garbage = boxes.clone()
    garbage[0, 3] = torch.tensor([float("nan"), -1e6, 5.0, float("inf")])
    garbage[1, 20] = torch.tensor([60.0, 60.0, 0.0, 0.0])
    out_garbage = encoder(image, garbage, box_mask)
    assert torch.equal(out.region_features, out_garbage.region_features)
    assert torch.count_nonzero(out.region_features[0, 3]) == 0 and torch.count_nonzero(out.region_features[1, 20]) == 0
    assert torch.isfinite(out_garbage.region_features).all()


def test_weights_file_round_trip(tmp_path):
    torch.manual_seed(0)
    trained = tiny_encoder()
    path = tmp_path / "backbone.pt"
    torch.save({"state_dict": trained.backbone.state_dict()}, path)
    torch.manual_seed(1)
    fresh = tiny_encoder()
    loaded = tiny_encoder(backbone_weights=str(path))
    for name, value in trained.backbone.state_dict().items():
        assert torch.equal(loaded.backbone.state_dict()[name], value), name
    assert not all(torch.equal(fresh.backbone.state_dict()[n], v) for n, v in trained.backbone.state_dict().items())

    safetensors_path = tmp_path / "backbone.safetensors"
    save_file({k: v.contiguous() for k, v in trained.backbone.state_dict().items()}, str(safetensors_path))
    again = tiny_encoder(backbone_weights=str(safetensors_path))
    assert torch.equal(again.backbone.conv1[0].weight, trained.backbone.conv1[0].weight)


def test_rgb_classifier_checkpoint_loads_into_grayscale_backbone(tmp_path):
    torch.manual_seed(0)
    rgb: Any = timm.create_model(BACKBONE, pretrained=False, in_chans=3, num_classes=7)  # timm attributes
    path = tmp_path / "rgb.pth"
    torch.save({"module." + k: v for k, v in rgb.state_dict().items()}, path)
    gray: Any = timm.create_model(BACKBONE, pretrained=False, in_chans=1, num_classes=0, global_pool="")
    unused = load_backbone_weights(gray, path)
    assert unused == []  # only the classifier was left out, and that is expected
    assert rgb.pretrained_cfg["first_conv"] == "conv1.0"
    torch.testing.assert_close(gray.conv1[0].weight, rgb.conv1[0].weight.sum(dim=1, keepdim=True))
    torch.testing.assert_close(gray.layer1[0].conv1.weight, rgb.layer1[0].conv1.weight)


def test_wrong_weights_file_is_refused(tmp_path):
    other = timm.create_model("test_efficientnet", pretrained=False, in_chans=1, num_classes=0)
    path = tmp_path / "other.pt"
    torch.save(other.state_dict(), path)
    with pytest.raises(ValueError, match="state dict for this backbone"):
        tiny_encoder(backbone_weights=str(path))
