"""CLALA-Net checkpoints and the tokenizers saved beside them.

A checkpoint (`last.pt` each epoch, `best.pt` on a new best) holds the model, optimizer, scheduler
and scaler states, epoch and step, RNG states, the full training and model configs, the label spec
(run, policies, findings), the vocabulary version, the thresholds and the history; the tokenizer is
saved in `tokenizer/` beside it. Checkpoints load with `weights_only=True`."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import torch

from labeling.core.errors import InputError
from model.net.clala_net import CLALANet, CLALANetConfig
from model.train.config import TrainConfig

CHECKPOINT_FORMAT = "clala-net-checkpoint"
CHECKPOINT_VERSION = 1
TOKENIZER_DIR = "tokenizer"
TEXT_TOKENIZER_DIR = "text_tokenizer"


def save_checkpoint(path: Path, payload: dict[str, Any]) -> None:
    """Written beside and renamed over `path`: a kill never leaves half a checkpoint."""
    from labeling.core.files import atomic_path

    with atomic_path(path) as tmp:
        torch.save(payload, tmp)


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: checkpoint file not found")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types for files that are not its checkpoints
        reason = " ".join(str(exc).split())[:120]
        raise InputError(f"{path}: not a CLALA-Net checkpoint ({type(exc).__name__}: {reason})") from None
    if not isinstance(payload, dict) or payload.get("format") != CHECKPOINT_FORMAT:
        raise InputError(f"{path}: not a CLALA-Net checkpoint (no '{CHECKPOINT_FORMAT}' format field)")
    if payload.get("format_version", 0) > CHECKPOINT_VERSION:
        raise InputError(f"{path}: written by a newer clala (checkpoint format {payload['format_version']})")
    payload["path"] = str(path)
    return payload


def model_from_checkpoint(checkpoint: dict[str, Any], device: torch.device | str = "cpu") -> CLALANet:
    """The checkpoint's CLALA-Net, weights loaded, in eval mode."""
    config = CLALANetConfig.from_dict(checkpoint["model_config"])
    # Weights come from the checkpoint; do not require the original backbone weight file.
    config = dataclasses.replace(config, backbone_weights=None)
    model = CLALANet(config)
    model.load_state_dict(checkpoint["model_state"])
    return model.to(device).eval()


def resumed_config(path: str | Path) -> TrainConfig:
    """The training settings saved in checkpoint `path`, set to continue from it."""
    return TrainConfig.from_dict({**load_checkpoint(path)["train_config"], "resume": str(path)})


def load_tokenizer(checkpoint: dict[str, Any]):
    """The sentence tokenizer saved beside a checkpoint (None when the model has no sentence parts)."""
    if not checkpoint.get("tokenizer_dir"):
        return None
    from transformers import AutoTokenizer

    folder = Path(checkpoint["path"]).parent / checkpoint["tokenizer_dir"]
    if not folder.is_dir():
        raise InputError(f"{folder}: the checkpoint's tokenizer folder is missing")
    return AutoTokenizer.from_pretrained(str(folder), local_files_only=True)


def needs_sentences(model_config: dict[str, Any]) -> bool:
    defaults = CLALANetConfig(lesions=["x"])
    return bool(
        model_config.get("use_itcl", defaults.use_itcl) or model_config.get("use_decoder", defaults.use_decoder)
    )


def prepare_tokenizers(config: TrainConfig, sentences: list[list[str]], folder: Path, build: bool):
    """(sentence tokenizer, text tokenizer or None), saved in `folder` when `build` and always read
    back from there, so every process and every resume uses the same files."""
    from transformers import AutoTokenizer

    from model.net.decoder import build_sentence_tokenizer

    sentence_dir, text_dir = folder / TOKENIZER_DIR, folder / TEXT_TOKENIZER_DIR
    decoder_path, text_path = config.model.get("decoder"), config.model.get("text_encoder")
    if build:
        if decoder_path:
            tokenizer = AutoTokenizer.from_pretrained(decoder_path, local_files_only=True)
        else:
            texts = [text for row in sentences for text in row if text.strip()]
            tokenizer = build_sentence_tokenizer(texts, vocab_size=config.tokenizer_vocab_size)
        tokenizer.save_pretrained(str(sentence_dir))
        if text_path:
            AutoTokenizer.from_pretrained(text_path, local_files_only=True).save_pretrained(str(text_dir))
    tokenizer = AutoTokenizer.from_pretrained(str(sentence_dir), local_files_only=True)
    text_tokenizer = AutoTokenizer.from_pretrained(str(text_dir), local_files_only=True) if text_path else None
    return tokenizer, text_tokenizer
