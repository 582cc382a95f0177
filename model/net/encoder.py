"""Image encoder of CLALA-Net: a timm backbone, one feature per anatomical region, one per image.

The backbone is any timm model that yields a spatial feature map from `forward_features`
(ResNets, EfficientNets, ConvNeXts, ...), built for 1-channel (grayscale) input and never
downloaded: weights come from a local state-dict file when one is given, else random init.

Region features are RoIAlign (torchvision.ops.roi_align) samples of the last feature map inside
each of the 29 Chest ImaGenome boxes, flattened and projected to `d_model`. Boxes are given in
pixels of the input image; the feature map's stride turns them into feature coordinates. Regions
whose box is invalid (box_mask False) get a zero feature, so whatever their coordinates hold
(zeros, NaN, garbage) never reaches the rest of the model.

The pooled image feature (global average of the feature map, projected to `d_model`) feeds the
global lesion classifier.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import timm
import torch
from timm.models import adapt_input_conv
from torch import nn
from torchvision.ops import roi_align


@dataclass
class EncoderConfig:
    backbone: str = "resnet18"
    d_model: int = 256
    in_chans: int = 1
    # Local state dict for the backbone (.pt/.pth/.bin or .safetensors); None = random init.
    backbone_weights: str | None = None
    roi_size: int = 3  # RoIAlign output is roi_size x roi_size bins per region
    roi_sampling_ratio: int = 2
    dropout: float = 0.0


@dataclass
class EncoderOutput:
    region_features: torch.Tensor  # [B, R, d_model], zero where the box is invalid
    image_feature: torch.Tensor  # [B, d_model]
    feature_map: torch.Tensor  # [B, C, h, w], the backbone's last feature map


def load_backbone_weights(backbone: Any, path: str | Path) -> list[str]:
    """Load a local state-dict file into a timm backbone; returns the checkpoint keys left unused.

    Accepts a bare state dict or one nested under "state_dict"/"model", with or without a DDP
    "module." prefix. A first conv saved for 3 channels is summed down to the model's channel count
    (timm's adapt_input_conv), so ImageNet RGB weights serve grayscale input. Classifier weights
    in the file are ignored (the backbone has no classifier). Every backbone parameter must be in
    the file: a partial load would silently train from random init, so it raises instead.
    """
    path = Path(path)
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        state: dict[str, Any] = load_file(str(path))
    else:
        state = torch.load(path, map_location="cpu", weights_only=True)
    for nesting in ("state_dict", "model"):
        if isinstance(state.get(nesting), dict):
            state = state[nesting]
    state = {key.removeprefix("module."): value for key, value in state.items()}

    own = backbone.state_dict()
    first_conv = backbone.pretrained_cfg.get("first_conv")
    first_convs = (first_conv,) if isinstance(first_conv, str) else tuple(first_conv or ())
    for conv_name in first_convs:
        key = f"{conv_name}.weight"
        if key in state and key in own and state[key].shape[1] != own[key].shape[1]:
            state[key] = adapt_input_conv(own[key].shape[1], state[key])

    classifier = backbone.pretrained_cfg.get("classifier")
    classifiers = (classifier,) if isinstance(classifier, str) else tuple(classifier or ())
    unused = [key for key in state if key not in own]
    state = {key: value for key, value in state.items() if key in own}
    mismatched = [
        f"{key} {tuple(value.shape)} vs {tuple(own[key].shape)}"
        for key, value in state.items()
        if value.shape != own[key].shape
    ]
    if mismatched:
        raise ValueError(
            f"{path}: {len(mismatched)} weights have the wrong shape for this backbone "
            f"(e.g. {mismatched[0]}); is it a state dict for this backbone?"
        )
    result = backbone.load_state_dict(state, strict=False)
    if result.missing_keys:
        shown = ", ".join(result.missing_keys[:5])
        raise ValueError(
            f"{path}: {len(result.missing_keys)} backbone weights are not in the file "
            f"(e.g. {shown}); is it a state dict for this backbone?"
        )
    return [key for key in unused if not key.startswith(tuple(f"{c}." for c in classifiers))]


class RegionImageEncoder(nn.Module):
    """Backbone feature map -> per-region features [B, R, d] and a pooled image feature [B, d]."""

    def __init__(self, config: EncoderConfig):
        super().__init__()
        self.config = config
        # num_classes=0 and global_pool="" keep the spatial map from forward_features.
        # A timm model: beyond nn.Module it has num_features, feature_info, forward_features.
        self.backbone: Any = timm.create_model(
            config.backbone, pretrained=False, in_chans=config.in_chans, num_classes=0, global_pool=""
        )
        if config.backbone_weights:
            load_backbone_weights(self.backbone, config.backbone_weights)
        channels = self.backbone.num_features
        # The stride of the last map maps pixel boxes to feature coordinates.
        self.feature_stride = self.backbone.feature_info[-1]["reduction"]
        self.region_projection = nn.Sequential(
            nn.Flatten(1),
            nn.Linear(channels * config.roi_size**2, config.d_model),
            nn.LayerNorm(config.d_model),
            nn.Dropout(config.dropout),
        )
        self.image_projection = nn.Sequential(
            nn.Linear(channels, config.d_model),
            nn.LayerNorm(config.d_model),
            nn.Dropout(config.dropout),
        )

    def forward(self, image: torch.Tensor, boxes: torch.Tensor, box_mask: torch.Tensor) -> EncoderOutput:
        """image [B, C, H, W]; boxes [B, R, 4] as x1, y1, x2, y2 in pixels of `image`; box_mask [B, R]."""
        feature_map = self.backbone.forward_features(image)
        if feature_map.ndim != 4:
            raise ValueError(
                f"backbone {self.config.backbone!r} gives a {feature_map.ndim}-d output, "
                "not a [B, C, h, w] feature map; choose a convolutional backbone"
            )
        batch, regions = boxes.shape[:2]

        # Invalid boxes are replaced by a harmless whole-image box before sampling and their
        # features zeroed after, so their coordinates never influence anything.
        height, width = image.shape[-2:]
        whole_image = boxes.new_tensor([0.0, 0.0, width, height])
        safe_boxes = torch.where(box_mask[..., None], boxes, whole_image)
        # roi_align takes [K, 5] rows of (batch index, x1, y1, x2, y2).
        batch_index = torch.arange(batch, device=boxes.device, dtype=boxes.dtype).repeat_interleave(regions)
        rois = torch.cat([batch_index[:, None], safe_boxes.reshape(-1, 4)], dim=1)
        pooled = roi_align(
            feature_map,
            rois.to(feature_map.dtype),
            output_size=self.config.roi_size,
            spatial_scale=1.0 / self.feature_stride,
            sampling_ratio=self.config.roi_sampling_ratio,
            aligned=True,
        )
        region_features = self.region_projection(pooled).reshape(batch, regions, -1)
        region_features = region_features * box_mask[..., None].to(region_features.dtype)

        image_feature = self.image_projection(feature_map.mean(dim=(2, 3)))
        return EncoderOutput(region_features, image_feature, feature_map)
