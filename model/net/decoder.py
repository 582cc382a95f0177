"""Region sentence decoder of CLALA-Net and the offline sentence tokenizer it speaks.

Decoder: a `transformers` causal LM (GPT-2 style) conditioned on one region embedding as a prefix.
The region embedding is projected to `prefix_tokens` vectors in the LM's embedding space and
placed before the sentence's token embeddings (`inputs_embeds`), as in ClipCap; the LM then
continues from the prefix. Training is teacher forcing: the prefix's last position predicts the
first token, each token the next, and the sentence ends with EOS; padding is never a target.
Decoding is greedy or beam search through `generate(inputs_embeds=...)`.

The LM is a local pretrained model (`decoder` path, loaded offline, with its own tokenizer) or a
small GPT-2 built from its config and trained from scratch.

Tokenizer: nothing is downloaded, so the default vocabulary is learned from the training
sentences themselves: a byte-level BPE (`tokenizers`, lower-cased, NFKC), with [PAD]=0, [BOS]=1,
[EOS]=2, [UNK]=3. Byte-level means no sentence is ever out of vocabulary and decoding gives back
the text exactly (lower-cased). It is wrapped as a `PreTrainedTokenizerFast` so it is saved with a
checkpoint (`save_pretrained`) and reloaded from that folder, like any local tokenizer path.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

PAD, BOS, EOS, UNK = "[PAD]", "[BOS]", "[EOS]", "[UNK]"
IGNORE_INDEX = -100


def build_sentence_tokenizer(sentences: Iterable[str], vocab_size: int = 2000, min_frequency: int = 2):
    """Train a byte-level BPE on `sentences` -> PreTrainedTokenizerFast ([PAD]=0, [BOS]=1, [EOS]=2, [UNK]=3)."""
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tokenizer = Tokenizer(models.BPE())
    tokenizer.normalizer = normalizers.Sequence([normalizers.NFKC(), normalizers.Lowercase()])
    # The prefix space makes a word's first occurrence in a sentence tokenize like any other.
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=True)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=min_frequency,
        special_tokens=[PAD, BOS, EOS, UNK],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(sentences, trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=tokenizer, pad_token=PAD, bos_token=BOS, eos_token=EOS, unk_token=UNK
    )


def encode_sentences(tokenizer, sentences: Sequence[str], max_length: int = 64) -> torch.Tensor:
    """Sentences -> [N, T] long: tokens then EOS, right-padded with the pad id; T = longest, <= max_length.
    A sentence too long keeps its first max_length - 1 tokens and still ends with EOS."""
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    rows = [
        tokenizer.encode(text, add_special_tokens=False)[: max_length - 1] + [tokenizer.eos_token_id]
        for text in sentences
    ]
    width = max((len(row) for row in rows), default=1)
    return torch.tensor([row + [pad_id] * (width - len(row)) for row in rows], dtype=torch.long).reshape(-1, width)


def decode_sentences(tokenizer, token_ids: torch.Tensor) -> list[str]:
    """[N, T] generated ids -> text, cut at the first EOS."""
    texts = []
    for row in token_ids.tolist():
        if tokenizer.eos_token_id in row:
            row = row[: row.index(tokenizer.eos_token_id)]
        texts.append(tokenizer.decode(row, skip_special_tokens=True).strip())
    return texts


@dataclass
class DecoderConfig:
    d_model: int = 256
    decoder: str | None = None  # local path of a transformers causal LM; None = build GPT-2 from below
    vocab_size: int = 2000
    pad_token_id: int = 0
    bos_token_id: int = 1
    eos_token_id: int = 2
    hidden_size: int = 256
    layers: int = 2
    heads: int = 4
    max_sentence_tokens: int = 64
    prefix_tokens: int = 4
    dropout: float = 0.1


def build_language_model(config: DecoderConfig) -> nn.Module:
    from transformers import AutoModelForCausalLM, GPT2Config, GPT2LMHeadModel

    if config.decoder:
        return AutoModelForCausalLM.from_pretrained(config.decoder, local_files_only=True)
    gpt2 = GPT2Config(
        vocab_size=config.vocab_size,
        n_positions=config.prefix_tokens + config.max_sentence_tokens,
        n_embd=config.hidden_size,
        n_layer=config.layers,
        n_head=config.heads,
        resid_pdrop=config.dropout,
        embd_pdrop=config.dropout,
        attn_pdrop=config.dropout,
        bos_token_id=config.bos_token_id,
        eos_token_id=config.eos_token_id,
        pad_token_id=config.pad_token_id,
    )
    return GPT2LMHeadModel(gpt2)


class RegionSentenceDecoder(nn.Module):
    """Region embedding [N, d] -> prefix [N, k, E] -> causal LM over the region's sentence."""

    def __init__(self, config: DecoderConfig):
        super().__init__()
        self.config = config
        self.language_model: Any = build_language_model(config)  # a transformers causal LM
        self.embedding_size = self.language_model.get_input_embeddings().embedding_dim
        self.prefix_projection = nn.Linear(config.d_model, config.prefix_tokens * self.embedding_size)

    def prefix(self, region_features: torch.Tensor) -> torch.Tensor:
        return self.prefix_projection(region_features).reshape(-1, self.config.prefix_tokens, self.embedding_size)

    def target_mask(self, token_ids: torch.Tensor) -> torch.Tensor:
        """True for the tokens up to and including the first EOS that are not padding
        (correct also when pad == EOS, as with GPT-2's own tokenizer)."""
        is_eos = token_ids == self.config.eos_token_id
        before_first_eos = (is_eos.long().cumsum(dim=1) - is_eos.long()) == 0
        return before_first_eos & ((token_ids != self.config.pad_token_id) | is_eos)

    def forward(self, region_features: torch.Tensor, token_ids: torch.Tensor) -> torch.Tensor:
        """region_features [N, d]; token_ids [N, T] (sentence + EOS, right-padded) -> mean token loss."""
        prefix = self.prefix(region_features)
        targets_mask = self.target_mask(token_ids)
        token_embeddings = self.language_model.get_input_embeddings()(token_ids)
        inputs = torch.cat([prefix, token_embeddings], dim=1)
        attention_mask = torch.cat([targets_mask.new_ones(prefix.shape[:2]), targets_mask], dim=1).long()
        logits = self.language_model(inputs_embeds=inputs, attention_mask=attention_mask).logits
        # The last prefix position predicts token 0, token t predicts token t + 1.
        k, length = self.config.prefix_tokens, token_ids.shape[1]
        predictions = logits[:, k - 1 : k - 1 + length]
        targets = token_ids.masked_fill(~targets_mask, IGNORE_INDEX)
        return F.cross_entropy(
            predictions.reshape(-1, predictions.shape[-1]).float(), targets.reshape(-1), ignore_index=IGNORE_INDEX
        )

    @torch.no_grad()
    def generate(
        self, region_features: torch.Tensor, num_beams: int = 1, max_new_tokens: int | None = None
    ) -> torch.Tensor:
        """[N, d] -> [N, max_new_tokens] token ids (greedy when num_beams == 1), padded after EOS
        with the pad id. Call in eval mode (dropout off)."""
        max_new_tokens = max_new_tokens or self.config.max_sentence_tokens
        pad_id = self.config.pad_token_id
        if len(region_features) == 0:
            return region_features.new_full((0, max_new_tokens), pad_id, dtype=torch.long)
        prefix = self.prefix(region_features)
        attention_mask = torch.ones(prefix.shape[:2], dtype=torch.long, device=prefix.device)
        generated = self.language_model.generate(
            inputs_embeds=prefix,
            attention_mask=attention_mask,
            max_new_tokens=max_new_tokens,
            num_beams=num_beams,
            do_sample=False,
            eos_token_id=self.config.eos_token_id,
            pad_token_id=pad_id,
            bos_token_id=self.config.bos_token_id,
        )
        # generate() stops early when every row has ended; pad to the fixed width.
        return F.pad(generated, (0, max_new_tokens - generated.shape[1]), value=pad_id)
