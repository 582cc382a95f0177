"""ITCL: symmetric InfoNCE between regions and sentences, duplicates, padding, learnable temperature."""

import math

import torch
import torch.nn.functional as F

from model.net.itcl import ImageTextContrastiveLoss, ITCLConfig, symmetric_info_nce


def tiny_itcl() -> ImageTextContrastiveLoss:
    config = ITCLConfig(
        d_model=16, projection_dim=8, vocab_size=40, text_hidden_size=16, text_layers=1, text_heads=2, max_positions=16
    )
    return ImageTextContrastiveLoss(config).eval()


def distinct_sentences(n: int, length: int = 5) -> torch.Tensor:
    ids = 4 + (torch.arange(n)[:, None] * 7 + torch.arange(length)[None, :] * 3) % 36
    ids[:, -1] = 2  # EOS
    return ids


def test_value_is_clip_loss_and_symmetric():
    torch.manual_seed(0)
    regions, texts = F.normalize(torch.randn(5, 4), dim=-1), F.normalize(torch.randn(5, 4), dim=-1)
    loss = symmetric_info_nce(regions, texts, torch.arange(5), logit_scale=3.0)
    logits = 3.0 * regions @ texts.T
    by_rows = sum(-logits[i].log_softmax(0)[i] for i in range(5)) / 5
    by_columns = sum(-logits[:, j].log_softmax(0)[j] for j in range(5)) / 5
    torch.testing.assert_close(loss, (by_rows + by_columns) / 2)
    torch.testing.assert_close(symmetric_info_nce(texts, regions, torch.arange(5), 3.0), loss)


def test_uninformative_embeddings_give_log_n():
    itcl = tiny_itcl()
    with torch.no_grad():  # regions carry no information: every similarity is 0
        itcl.region_projection.weight.zero_()
        itcl.region_projection.bias.zero_()
    loss = itcl(torch.randn(6, 16), distinct_sentences(6))
    assert math.isclose(loss.item(), math.log(6), rel_tol=1e-5)


def test_identical_sentences_are_one_text_with_several_regions():
    itcl = tiny_itcl()
    with torch.no_grad():
        itcl.region_projection.weight.zero_()
        itcl.region_projection.bias.zero_()
    sentences = distinct_sentences(4)
    sentences = torch.cat([sentences, sentences[:2]])  # 6 regions, 4 distinct sentences
    loss = itcl(torch.randn(6, 16), sentences)
    # region -> text: uniform over 4 texts; text -> region: uniform over 6 regions.
    assert math.isclose(loss.item(), (math.log(4) + math.log(6)) / 2, rel_tol=1e-5)


def test_text_embedding_ignores_padding_width():
    torch.manual_seed(0)
    itcl = tiny_itcl()
    ids = distinct_sentences(3)
    wider = F.pad(ids, (0, 4), value=0)
    torch.testing.assert_close(itcl.encode_text(ids), itcl.encode_text(wider))


def test_loss_decreases_and_temperature_learns():
    torch.manual_seed(0)
    itcl = tiny_itcl().train()
    features, sentences = torch.randn(8, 16), distinct_sentences(8)
    optimizer = torch.optim.Adam(itcl.parameters(), lr=3e-3)
    start_scale = itcl.logit_scale.item()
    losses = []
    for _ in range(25):
        loss = itcl(features, sentences)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0]
    assert itcl.logit_scale.item() != start_scale


def test_no_described_region_gives_zero():
    itcl = tiny_itcl()
    features = torch.randn(0, 16, requires_grad=True)
    assert itcl(features, torch.zeros(0, 5, dtype=torch.long)).item() == 0.0
