"""Region sentence decoder and its offline tokenizer: teacher forcing, padding, greedy and beam decoding."""

from typing import Any

import torch
from transformers import PreTrainedTokenizerFast

from model.net.decoder import (
    DecoderConfig,
    RegionSentenceDecoder,
    build_sentence_tokenizer,
    decode_sentences,
    encode_sentences,
)

SENTENCES = [
    "Small left pleural effusion.",
    "No pneumothorax.",
    "Right lower lobe consolidation, likely pneumonia.",
    "The cardiac silhouette is enlarged.",
    "Small left pleural effusion is unchanged.",
] * 3


def test_tokenizer_round_trip_and_checkpoint_folder(tmp_path):
    tokenizer = build_sentence_tokenizer(SENTENCES, vocab_size=300, min_frequency=1)
    assert (tokenizer.pad_token_id, tokenizer.bos_token_id, tokenizer.eos_token_id) == (0, 1, 2)
    ids = encode_sentences(tokenizer, ["No pneumothorax.", "Small left pleural effusion."])
    assert ids.dtype == torch.long and ids.shape[0] == 2
    lengths = (ids != 0).sum(1)
    assert ids[0, lengths[0] - 1] == 2 and ids[1, lengths[1] - 1] == 2  # each ends with EOS
    assert (ids[0, lengths[0] :] == 0).all()  # then padding
    assert decode_sentences(tokenizer, ids) == ["no pneumothorax.", "small left pleural effusion."]
    # Unseen words still tokenize (byte level) and come back exactly.
    assert decode_sentences(tokenizer, encode_sentences(tokenizer, ["Hydropneumothorax!"])) == ["hydropneumothorax!"]
    truncated = encode_sentences(tokenizer, ["Right lower lobe consolidation, likely pneumonia."], max_length=4)
    assert truncated.shape == (1, 4) and truncated[0, -1] == 2

    tokenizer.save_pretrained(tmp_path / "tokenizer")
    reloaded = PreTrainedTokenizerFast.from_pretrained(tmp_path / "tokenizer")
    torch.testing.assert_close(encode_sentences(reloaded, SENTENCES[:5]), encode_sentences(tokenizer, SENTENCES[:5]))


def tiny_decoder(vocab_size: int, **overrides) -> RegionSentenceDecoder:
    values: dict[str, Any] = (
        dict(
            d_model=16,
            vocab_size=vocab_size,
            hidden_size=32,
            layers=1,
            heads=2,
            max_sentence_tokens=24,
            prefix_tokens=2,
            dropout=0.0,
        )
        | overrides
    )
    return RegionSentenceDecoder(DecoderConfig(**values))


def test_padding_is_never_a_target():
    torch.manual_seed(0)
    decoder = tiny_decoder(50).eval()
    features = torch.randn(3, 16)
    ids = torch.tensor([[5, 6, 7, 2, 0], [8, 2, 0, 0, 0], [9, 10, 11, 12, 2]])
    wider = torch.nn.functional.pad(ids, (0, 3), value=0)
    torch.testing.assert_close(decoder(features, ids), decoder(features, wider))
    assert decoder.target_mask(ids).sum() == 4 + 2 + 5


def test_target_mask_when_pad_is_eos():
    decoder = tiny_decoder(50, pad_token_id=2, eos_token_id=2)
    mask = decoder.target_mask(torch.tensor([[5, 6, 2, 2, 2]]))
    assert mask.tolist() == [[True, True, True, False, False]]


def test_overfits_one_sentence_then_decodes_it():
    torch.manual_seed(0)
    tokenizer = build_sentence_tokenizer(SENTENCES, vocab_size=300, min_frequency=1)
    decoder = tiny_decoder(len(tokenizer))
    feature = torch.randn(1, 16)
    ids = encode_sentences(tokenizer, ["Small left pleural effusion."])
    optimizer = torch.optim.Adam(decoder.parameters(), lr=1e-2)
    losses = []
    for _ in range(30):
        loss = decoder(feature, ids)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < 0.1 * losses[0]
    decoder.eval()
    greedy = decoder.generate(feature, num_beams=1, max_new_tokens=12)
    beam = decoder.generate(feature, num_beams=3, max_new_tokens=12)
    assert greedy.shape == beam.shape == (1, 12) and greedy.dtype == torch.long
    assert decode_sentences(tokenizer, greedy) == ["small left pleural effusion."]
    assert decode_sentences(tokenizer, beam) == ["small left pleural effusion."]
    length = ids.shape[1]
    pad = tokenizer.pad_token_id
    assert isinstance(pad, int)
    assert (greedy[0, length:] == pad).all()  # after EOS only padding  # after EOS only padding


def test_generate_shapes_for_many_and_no_regions():
    torch.manual_seed(0)
    decoder = tiny_decoder(50).eval()
    for beams in (1, 2):
        out = decoder.generate(torch.randn(4, 16), num_beams=beams, max_new_tokens=7)
        assert out.shape == (4, 7) and out.dtype == torch.long
        assert ((out >= 0) & (out < 50)).all()
    assert decoder.generate(torch.randn(0, 16), max_new_tokens=7).shape == (0, 7)
