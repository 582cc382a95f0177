"""CLALA-Net: lesion-aware region recognition and region sentence generation for chest X-rays.

    image ──timm backbone──► feature map ──RoIAlign(29 boxes)──► region features [B, R, d]
                                  │                                     │
                              avg pool ──► image feature ──► global lesion logits [B, L]
                                                                        │ sigmoid
                                        LCA: regions attend to probability-scaled lesion cues
                                                                        │
                                     region features ──► region lesion logits [B, R, L]
                                             ├──► LLCL  (supervised contrastive, across the batch)
                                             ├──► ITCL  (InfoNCE with the region's sentence)
                                             └──► sentence decoder (GPT-2 with a region prefix)

Every component after the encoder and the two lesion heads is optional (`use_lca`, `use_llcl`,
`use_itcl`, `use_decoder`); a component switched off is never built, so it has no parameters and
no cost. `CLALANetConfig` is flat (one field per user-facing knob, so the CLI maps onto it) and
round-trips through a plain dict for checkpoints.

Batch contract of `CLALANet.forward(batch)` (B images, R = 29 regions, L lesions, T tokens):
    image          [B, 1, H, W] float
    boxes          [B, R, 4] float, x1, y1, x2, y2 in pixels of `image`
    box_mask       [B, R] bool, False = no usable box (the region is ignored everywhere)
    labels         [B, R, L] float in {0, 1}               (optional: no losses without it)
    label_mask     [B, R, L] bool, False = ignore the cell (e.g. uncertain)
    image_labels, image_label_mask  [B, L]                 (optional; derived from the region labels)
    sentence_ids   [B, R, T] long, sentence + EOS, right-padded (optional; ITCL and decoder)
    sentence_mask  [B, R] bool, True where the region has a reference sentence
    text_ids       [B, R, T'] long (optional; the text encoder's own tokenization, default sentence_ids)
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from model.net.decoder import DecoderConfig, RegionSentenceDecoder
from model.net.encoder import EncoderConfig, RegionImageEncoder
from model.net.heads import GlobalLesionClassifier, HeadConfig, RegionLesionHead
from model.net.itcl import ImageTextContrastiveLoss, ITCLConfig
from model.net.lca import LCAConfig, LesionCrossAttention
from model.net.llcl import LesionContrastiveLoss, LLCLConfig

NUM_REGIONS = 29


@dataclass
class CLALANetConfig:
    lesions: list[str] = field(default_factory=list)
    num_regions: int = NUM_REGIONS

    # Image encoder and heads
    backbone: str = "resnet18"
    backbone_weights: str | None = None  # local state-dict file; None = random init
    in_chans: int = 1
    d_model: int = 256
    roi_size: int = 3
    head_hidden_dim: int = 0
    dropout: float = 0.1

    # Component switches (ablations)
    use_lca: bool = True
    use_llcl: bool = True
    use_itcl: bool = True
    use_decoder: bool = True

    # LCA
    lca_heads: int = 4
    lca_layers: int = 1
    lca_feedforward_dim: int = 512

    # LLCL
    llcl_projection_dim: int = 128
    llcl_temperature: float = 0.1

    # ITCL
    itcl_projection_dim: int = 128
    text_encoder: str | None = None  # local transformers encoder; None = small BERT from scratch
    text_hidden_size: int = 128
    text_layers: int = 2
    text_heads: int = 2
    freeze_text_encoder: bool = False

    # Sentence decoder
    decoder: str | None = None  # local transformers causal LM; None = small GPT-2 from scratch
    decoder_hidden_size: int = 256
    decoder_layers: int = 2
    decoder_heads: int = 4
    prefix_tokens: int = 4
    max_sentence_tokens: int = 64

    # Tokenizer facts (set from the tokenizer with `with_tokenizer`)
    vocab_size: int = 2000
    pad_token_id: int = 0
    bos_token_id: int = 1
    eos_token_id: int = 2

    # Losses: total = sum of weight * term. pos_weight (per lesion) counters class imbalance in
    # the BCE terms; the trainer computes it from the training label frequencies.
    region_loss_weight: float = 1.0
    global_loss_weight: float = 1.0
    llcl_loss_weight: float = 0.1
    itcl_loss_weight: float = 0.1
    decoder_loss_weight: float = 0.5
    pos_weight: list[float] | None = None
    global_pos_weight: list[float] | None = None

    def __post_init__(self):
        if not self.lesions:
            raise ValueError("CLALANetConfig needs the lesion list it is trained on")
        for name in ("pos_weight", "global_pos_weight"):
            weights = getattr(self, name)
            if weights is not None and len(weights) != len(self.lesions):
                raise ValueError(f"{name} has {len(weights)} values for {len(self.lesions)} lesions")

    @property
    def num_lesions(self) -> int:
        return len(self.lesions)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> CLALANetConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"unknown CLALANetConfig fields: {', '.join(unknown)}")
        return cls(**values)

    def with_tokenizer(self, tokenizer) -> CLALANetConfig:
        """A copy whose vocabulary size and special token ids are the tokenizer's."""
        pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
        bos = tokenizer.bos_token_id if tokenizer.bos_token_id is not None else tokenizer.eos_token_id
        return dataclasses.replace(
            self, vocab_size=len(tokenizer), pad_token_id=pad, bos_token_id=bos, eos_token_id=tokenizer.eos_token_id
        )

    # Component configs, derived so that shared sizes are stated once.
    def encoder_config(self) -> EncoderConfig:
        return EncoderConfig(
            backbone=self.backbone,
            d_model=self.d_model,
            in_chans=self.in_chans,
            backbone_weights=self.backbone_weights,
            roi_size=self.roi_size,
        )

    def head_config(self) -> HeadConfig:
        return HeadConfig(
            d_model=self.d_model, num_lesions=self.num_lesions, hidden_dim=self.head_hidden_dim, dropout=self.dropout
        )

    def lca_config(self) -> LCAConfig:
        return LCAConfig(
            d_model=self.d_model,
            num_lesions=self.num_lesions,
            num_heads=self.lca_heads,
            num_layers=self.lca_layers,
            feedforward_dim=self.lca_feedforward_dim,
            dropout=self.dropout,
        )

    def llcl_config(self) -> LLCLConfig:
        return LLCLConfig(
            d_model=self.d_model, projection_dim=self.llcl_projection_dim, temperature=self.llcl_temperature
        )

    def itcl_config(self) -> ITCLConfig:
        return ITCLConfig(
            d_model=self.d_model,
            projection_dim=self.itcl_projection_dim,
            text_encoder=self.text_encoder,
            vocab_size=self.vocab_size,
            pad_token_id=self.pad_token_id,
            text_hidden_size=self.text_hidden_size,
            text_layers=self.text_layers,
            text_heads=self.text_heads,
            max_positions=max(128, self.max_sentence_tokens),
            freeze_text_encoder=self.freeze_text_encoder,
        )

    def decoder_config(self) -> DecoderConfig:
        return DecoderConfig(
            d_model=self.d_model,
            decoder=self.decoder,
            vocab_size=self.vocab_size,
            pad_token_id=self.pad_token_id,
            bos_token_id=self.bos_token_id,
            eos_token_id=self.eos_token_id,
            hidden_size=self.decoder_hidden_size,
            layers=self.decoder_layers,
            heads=self.decoder_heads,
            max_sentence_tokens=self.max_sentence_tokens,
            prefix_tokens=self.prefix_tokens,
            dropout=self.dropout,
        )


@dataclass
class CLALANetOutput:
    region_logits: torch.Tensor  # [B, R, L]
    global_logits: torch.Tensor  # [B, L]
    region_features: torch.Tensor  # [B, R, d], after LCA when it is on
    lca_attention: torch.Tensor | None = None  # [B, R, L], regions' attention over the lesion cues
    losses: dict[str, torch.Tensor] = field(default_factory=dict)  # unweighted terms
    loss: torch.Tensor | None = None  # weighted total


def masked_bce(
    logits: torch.Tensor, targets: torch.Tensor, mask: torch.Tensor, pos_weight: torch.Tensor | None
) -> torch.Tensor:
    """Mean binary cross-entropy over the cells where mask is True (0 when there are none)."""
    # Masked targets may hold anything (e.g. -1 for uncertain); zero them so they cannot produce NaN.
    targets = torch.where(mask, targets, torch.zeros_like(targets))
    per_cell = F.binary_cross_entropy_with_logits(logits, targets, pos_weight=pos_weight, reduction="none")
    weights = mask.to(per_cell.dtype)
    return (per_cell * weights).sum() / weights.sum().clamp(min=1.0)


def image_level_labels(labels: torch.Tensor, label_mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """[B, R, L] region labels -> [B, L] image labels and mask. A lesion is present in the image when
    any region has it (known present); absent when no region has it and no cell of it is ignored;
    otherwise unknown (masked). Boxes do not matter here: a region without a box still speaks for
    the image the global classifier sees whole."""
    present = ((labels > 0.5) & label_mask).any(dim=1)
    any_ignored = (~label_mask).any(dim=1)
    return present.to(labels.dtype), present | ~any_ignored


class CLALANet(nn.Module):
    pos_weight: torch.Tensor | None  # buffers (registered in __init__)
    global_pos_weight: torch.Tensor | None

    def __init__(self, config: CLALANetConfig):
        super().__init__()
        self.config = config
        self.encoder = RegionImageEncoder(config.encoder_config())
        self.global_classifier = GlobalLesionClassifier(config.head_config())
        self.region_head = RegionLesionHead(config.head_config())
        self.lca = LesionCrossAttention(config.lca_config()) if config.use_lca else None
        self.llcl = LesionContrastiveLoss(config.llcl_config()) if config.use_llcl else None
        self.itcl = ImageTextContrastiveLoss(config.itcl_config()) if config.use_itcl else None
        self.decoder = RegionSentenceDecoder(config.decoder_config()) if config.use_decoder else None
        for name in ("pos_weight", "global_pos_weight"):
            values = getattr(config, name)
            self.register_buffer(
                name, None if values is None else torch.tensor(values, dtype=torch.float32), persistent=False
            )

    def encode(self, batch: dict[str, torch.Tensor]) -> CLALANetOutput:
        """Image and boxes -> lesion logits and final region features (no losses)."""
        box_mask = batch["box_mask"].bool()
        encoded = self.encoder(batch["image"], batch["boxes"], box_mask)
        global_logits = self.global_classifier(encoded.image_feature)
        region_features, attention = encoded.region_features, None
        if self.lca is not None:
            region_features, attention = self.lca(region_features, torch.sigmoid(global_logits))
        region_logits = self.region_head(region_features)
        return CLALANetOutput(region_logits, global_logits, region_features, attention)

    def forward(self, batch: dict[str, torch.Tensor]) -> CLALANetOutput:
        output = self.encode(batch)
        if "labels" not in batch:
            return output
        box_mask = batch["box_mask"].bool()
        labels = batch["labels"].float()
        label_mask = batch.get("label_mask", torch.ones_like(labels, dtype=torch.bool)).bool()
        weights = {}

        region_mask = label_mask & box_mask[..., None]
        output.losses["region"] = masked_bce(output.region_logits, labels, region_mask, self.pos_weight)
        weights["region"] = self.config.region_loss_weight

        if "image_labels" in batch:
            image_labels = batch["image_labels"].float()
            image_mask = batch.get("image_label_mask", torch.ones_like(image_labels, dtype=torch.bool)).bool()
        else:
            image_labels, image_mask = image_level_labels(labels, label_mask)
        output.losses["global"] = masked_bce(output.global_logits, image_labels, image_mask, self.global_pos_weight)
        weights["global"] = self.config.global_loss_weight

        if self.llcl is not None:
            output.losses["llcl"] = self.llcl(output.region_features, labels, label_mask, box_mask)
            weights["llcl"] = self.config.llcl_loss_weight

        if (self.itcl is not None or self.decoder is not None) and "sentence_ids" in batch:
            described = batch["sentence_mask"].bool() & box_mask
            described_features = output.region_features[described]  # [N, d]
            if self.itcl is not None:
                text_ids = batch.get("text_ids", batch["sentence_ids"])[described]
                output.losses["itcl"] = self.itcl(described_features, text_ids)
                weights["itcl"] = self.config.itcl_loss_weight
            if self.decoder is not None:
                sentence_ids = batch["sentence_ids"][described]
                output.losses["decoder"] = (
                    self.decoder(described_features, sentence_ids)
                    if len(sentence_ids)
                    else described_features.sum() * 0.0
                )
                weights["decoder"] = self.config.decoder_loss_weight

        total = sum(weights[name] * value for name, value in output.losses.items())
        assert isinstance(total, torch.Tensor)  # the region term is always there
        output.loss = total
        return output

    @torch.no_grad()
    def generate_sentences(
        self,
        batch: dict[str, torch.Tensor],
        region_mask: torch.Tensor | None = None,
        num_beams: int = 1,
        max_new_tokens: int | None = None,
    ) -> torch.Tensor:
        """Token ids [B, R, T] of one sentence per selected region (default: every valid box);
        unselected regions hold only the pad id. Call in eval mode."""
        if self.decoder is None:
            raise RuntimeError("this CLALA-Net was built with use_decoder=False")
        output = self.encode(batch)
        selected = batch["box_mask"].bool() if region_mask is None else region_mask.bool() & batch["box_mask"].bool()
        generated = self.decoder.generate(
            output.region_features[selected], num_beams=num_beams, max_new_tokens=max_new_tokens
        )
        result = generated.new_full((*selected.shape, generated.shape[1]), self.config.pad_token_id)
        result[selected] = generated
        return result
