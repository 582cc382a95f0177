"""CLALA-Net end to end on a tiny configuration: batch contract, masks, switches, losses, config."""

import json
from typing import Any

import pytest
import torch

from model.net.clala_net import CLALANet, CLALANetConfig, image_level_labels

LESIONS = ["pleural effusion", "pneumothorax", "atelectasis"]
B, R, L, T = 4, 29, 3, 6


def tiny_config(**overrides) -> CLALANetConfig:
    values: dict[str, Any] = (
        dict(
            lesions=LESIONS,
            backbone="test_resnet",
            d_model=32,
            dropout=0.0,
            lca_heads=2,
            lca_feedforward_dim=64,
            llcl_projection_dim=16,
            itcl_projection_dim=16,
            text_hidden_size=32,
            text_layers=1,
            text_heads=2,
            decoder_hidden_size=32,
            decoder_layers=1,
            decoder_heads=2,
            prefix_tokens=2,
            max_sentence_tokens=12,
            vocab_size=40,
        )
        | overrides
    )
    return CLALANetConfig(**values)


def tiny_batch(seed: int = 0) -> dict[str, torch.Tensor]:
    """Four 64 px images whose labels are learnable: each region keeps its place from image to image
    (as anatomy does), and regions 0-11 carry their image's lesions, the others none."""
    generator = torch.Generator().manual_seed(seed)
    corner = torch.rand(1, R, 2, generator=generator) * 40 + torch.rand(B, R, 2, generator=generator) * 2
    boxes = torch.cat([corner, corner + 10 + torch.rand(1, R, 2, generator=generator) * 14], dim=-1)
    box_mask = torch.ones(B, R, dtype=torch.bool)
    box_mask[0, 5] = box_mask[2, 11] = False
    image_lesions = torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [1.0, 0.0, 1.0], [0.0, 0.0, 0.0]])
    labels = image_lesions[:, None, :] * (torch.arange(R) < 12).float()[None, :, None]
    label_mask = torch.rand(B, R, L, generator=generator) > 0.1
    sentence_mask = torch.rand(B, R, generator=generator) > 0.6
    sentence_ids = torch.randint(4, 40, (B, R, T), generator=generator)
    sentence_ids[..., -1] = 2  # EOS
    return dict(
        image=torch.randn(B, 1, 64, 64, generator=generator),
        boxes=boxes,
        box_mask=box_mask,
        labels=labels,
        label_mask=label_mask,
        sentence_ids=sentence_ids,
        sentence_mask=sentence_mask,
    )


def test_forward_contract():
    torch.manual_seed(0)
    model = CLALANet(tiny_config())
    out = model(tiny_batch())
    assert out.region_logits.shape == (B, R, L)
    assert out.global_logits.shape == (B, L)
    assert out.region_features.shape == (B, R, 32)
    assert out.lca_attention.shape == (B, R, L)
    assert set(out.losses) == {"region", "global", "llcl", "itcl", "decoder"}
    config = model.config
    expected = (
        config.region_loss_weight * out.losses["region"]
        + config.global_loss_weight * out.losses["global"]
        + config.llcl_loss_weight * out.losses["llcl"]
        + config.itcl_loss_weight * out.losses["itcl"]
        + config.decoder_loss_weight * out.losses["decoder"]
    )
    torch.testing.assert_close(out.loss, expected)
    without_labels = model({k: v for k, v in tiny_batch().items() if k in ("image", "boxes", "box_mask")})
    assert without_labels.loss is None and without_labels.losses == {}


def test_invalid_boxes_and_ignored_labels_change_no_loss_and_no_gradient():
    torch.manual_seed(0)
    model = CLALANet(tiny_config()).eval()
    batch = tiny_batch()
    changed = {k: v.clone() for k, v in batch.items()}
    changed["boxes"][~batch["box_mask"]] = torch.tensor([float("nan"), 1e6, -3.0, float("inf")])
    ignored = ~batch["label_mask"]
    changed["labels"][ignored] = 1.0 - batch["labels"][ignored]
    # Regions without a box also lose their sentences' influence.
    changed["sentence_ids"][~batch["box_mask"]] = 7

    def losses_and_gradients(b):
        model.zero_grad()
        out = model(b)
        out.loss.backward()
        return out.losses, {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}

    losses, gradients = losses_and_gradients(batch)
    losses_changed, gradients_changed = losses_and_gradients(changed)
    for name in losses:
        torch.testing.assert_close(losses_changed[name], losses[name], rtol=0, atol=0)
    assert gradients.keys() == gradients_changed.keys()
    for name in gradients:
        torch.testing.assert_close(gradients_changed[name], gradients[name], rtol=0, atol=0)


@pytest.mark.parametrize("component,loss", [("lca", None), ("llcl", "llcl"), ("itcl", "itcl"), ("decoder", "decoder")])
def test_switching_a_component_off_removes_its_parameters_and_loss(component, loss):
    torch.manual_seed(0)
    full = CLALANet(tiny_config())
    reduced = CLALANet(tiny_config(**{f"use_{component}": False}))
    names = {name for name, _ in reduced.named_parameters()}
    assert not any(name.startswith(component + ".") for name in names)
    component_size = sum(p.numel() for p in getattr(full, component).parameters())
    assert component_size > 0
    assert sum(p.numel() for p in full.parameters()) - sum(p.numel() for p in reduced.parameters()) == component_size
    out = reduced(tiny_batch())
    if loss:
        assert loss not in out.losses
    else:
        assert out.lca_attention is None
    assert len(out.losses) == (5 if loss is None else 4)


def test_plain_model_has_only_encoder_and_heads():
    plain = CLALANet(tiny_config(use_lca=False, use_llcl=False, use_itcl=False, use_decoder=False))
    assert {name.split(".")[0] for name, _ in plain.named_parameters()} == {
        "encoder",
        "global_classifier",
        "region_head",
    }
    assert set(plain(tiny_batch()).losses) == {"region", "global"}


def llcl_floor(batch) -> float:
    """A lower bound of the LLCL value: mean over anchors of log(number of positives)."""
    present = (batch["labels"].bool() & batch["label_mask"] & batch["box_mask"][..., None]).flatten(0, 1).float()
    positives = (present @ present.T > 0) & ~torch.eye(len(present), dtype=torch.bool)
    anchors = positives.any(dim=1)
    return positives[anchors].sum(dim=1).float().log().mean().item()


def test_every_loss_decreases_on_a_fixed_batch():
    torch.manual_seed(0)
    # Equal weights, so that each term gets a real share of the 25 steps.
    model = CLALANet(tiny_config(llcl_loss_weight=1.0, itcl_loss_weight=1.0, decoder_loss_weight=1.0))
    batch = tiny_batch()
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    history = []
    for _ in range(25):
        out = model(batch)
        optimizer.zero_grad()
        out.loss.backward()
        optimizer.step()
        history.append({name: value.item() for name, value in out.losses.items()} | {"total": out.loss.item()})
    first, last = history[0], history[-1]
    for name in ("total", "region", "global", "itcl", "decoder"):
        assert last[name] < 0.7 * first[name], (name, first[name], last[name])
    # LLCL cannot fall below log(#positives) per anchor; it must close a clear part of that gap.
    floor = llcl_floor(batch)
    assert last["llcl"] - floor < 0.6 * (first["llcl"] - floor), (first["llcl"], last["llcl"], floor)


def test_pos_weight_scales_positive_cells():
    torch.manual_seed(0)
    batch = tiny_batch()
    batch["labels"] = torch.ones_like(batch["labels"])
    plain = CLALANet(tiny_config(use_llcl=False, use_itcl=False, use_decoder=False)).eval()
    weighted = CLALANet(
        tiny_config(
            use_llcl=False,
            use_itcl=False,
            use_decoder=False,
            pos_weight=[2.0, 2.0, 2.0],
            global_pos_weight=[3.0, 3.0, 3.0],
        )
    ).eval()
    weighted.load_state_dict(plain.state_dict())
    a, b = plain(batch).losses, weighted(batch).losses
    torch.testing.assert_close(b["region"], 2 * a["region"])
    torch.testing.assert_close(b["global"], 3 * a["global"])


def test_image_level_labels():
    labels = torch.tensor([[[1.0, 0.0, 0.0], [0.0, 0.0, 1.0]]])  # 1 image, 2 regions, 3 lesions
    mask = torch.tensor([[[True, True, True], [True, False, False]]])
    image_labels, image_mask = image_level_labels(labels, mask)
    # Lesion 0 present; lesion 1 unknown (ignored cell, none present); lesion 2's only present cell is ignored.
    assert image_labels.tolist() == [[1.0, 0.0, 0.0]]
    assert image_mask.tolist() == [[True, False, False]]


def test_config_round_trip_and_rebuild(tmp_path):
    torch.manual_seed(0)
    config = tiny_config(pos_weight=[1.0, 2.0, 3.0])
    model = CLALANet(config).eval()
    path = tmp_path / "checkpoint.pt"
    torch.save({"config": config.to_dict(), "state_dict": model.state_dict()}, path)
    saved = torch.load(path, weights_only=True)
    rebuilt_config = CLALANetConfig.from_dict(json.loads(json.dumps(saved["config"])))
    assert rebuilt_config == config
    rebuilt = CLALANet(rebuilt_config).eval()
    rebuilt.load_state_dict(saved["state_dict"])
    batch = tiny_batch()
    torch.testing.assert_close(rebuilt(batch).loss, model(batch).loss)
    with pytest.raises(ValueError, match="unknown CLALANetConfig fields"):
        CLALANetConfig.from_dict(config.to_dict() | {"use_lcaa": False})
    with pytest.raises(ValueError, match="pos_weight"):
        tiny_config(pos_weight=[1.0])


def test_generate_sentences_per_selected_region():
    torch.manual_seed(0)
    model = CLALANet(tiny_config()).eval()
    batch = tiny_batch()
    selected = torch.zeros(B, R, dtype=torch.bool)
    selected[0, :3] = selected[1, 8] = selected[0, 5] = True  # region 5 of image 0 has no box
    ids = model.generate_sentences(batch, region_mask=selected, num_beams=2, max_new_tokens=5)
    assert ids.shape == (B, R, 5) and ids.dtype == torch.long
    produced = (ids != model.config.pad_token_id).any(-1)
    assert not produced[~(selected & batch["box_mask"])].any()
    # Each selected region's row is the decoder's output for that region's features.
    valid = selected & batch["box_mask"]
    assert model.decoder is not None
    expected = model.decoder.generate(model.encode(batch).region_features[valid], num_beams=2, max_new_tokens=5)
    assert torch.equal(ids[valid], expected)


def test_given_image_labels_override_the_derived_ones():
    torch.manual_seed(0)
    model = CLALANet(tiny_config(use_llcl=False, use_itcl=False, use_decoder=False)).eval()
    batch = tiny_batch()
    derived = model(batch).losses["global"]
    image_labels, image_mask = image_level_labels(batch["labels"], batch["label_mask"])
    same = model(batch | {"image_labels": image_labels, "image_label_mask": image_mask}).losses["global"]
    torch.testing.assert_close(same, derived)
    flipped = model(batch | {"image_labels": 1 - image_labels, "image_label_mask": image_mask}).losses["global"]
    assert not torch.isclose(flipped, derived)


def test_config_takes_the_tokenizer_facts():
    from model.net.decoder import build_sentence_tokenizer

    tokenizer = build_sentence_tokenizer(
        ["No pleural effusion.", "Small left pneumothorax."] * 2, vocab_size=280, min_frequency=1
    )
    config = tiny_config().with_tokenizer(tokenizer)
    special = (config.pad_token_id, config.bos_token_id, config.eos_token_id)
    assert config.vocab_size == len(tokenizer) and special == (0, 1, 2)
    model = CLALANet(config)
    assert model.decoder is not None and model.itcl is not None
    assert model.decoder.language_model.get_input_embeddings().num_embeddings == len(tokenizer)
    assert model.itcl.text_encoder.get_input_embeddings().num_embeddings == len(tokenizer)
