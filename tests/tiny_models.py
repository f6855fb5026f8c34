"""Tiny random scoring models written as the published folders are, for the tests (pytest puts tests/
on sys.path): what `--clip-model` reads."""

from __future__ import annotations

import json
from pathlib import Path


def write_tiny_clip(d: Path, fast_tokenizer: bool = False) -> Path:
    """A tiny random CLIP (model, tokenizer, image processor) saved in folder `d`; `fast_tokenizer`:
    also tokenizer.json, as the real repo has."""
    import torch
    from transformers import CLIPConfig, CLIPModel, CLIPTokenizer, CLIPTokenizerFast

    from fmu.core.scoring.clip_score import _image_processor_class

    d.mkdir(parents=True, exist_ok=True)
    chars = [chr(c) for c in range(ord("a"), ord("z") + 1)] + [" ", ","]
    vocab = {}
    for c in chars:
        vocab.setdefault(c, len(vocab))
        vocab.setdefault(c + "</w>", len(vocab))
    for special in ("<|startoftext|>", "<|endoftext|>"):
        vocab[special] = len(vocab)
    (d / "vocab.json").write_text(json.dumps(vocab))
    (d / "merges.txt").write_text("#version: 0.2\n")
    CLIPTokenizer(str(d / "vocab.json"), str(d / "merges.txt"), model_max_length=77).save_pretrained(d)
    if fast_tokenizer:
        CLIPTokenizerFast.from_pretrained(d).save_pretrained(d)
    torch.manual_seed(0)
    config = CLIPConfig(
        text_config=dict(vocab_size=len(vocab), hidden_size=32, intermediate_size=37, num_hidden_layers=2,
                         num_attention_heads=4, max_position_embeddings=77,
                         bos_token_id=vocab["<|startoftext|>"], eos_token_id=vocab["<|endoftext|>"]),
        vision_config=dict(hidden_size=32, intermediate_size=37, num_hidden_layers=2, num_attention_heads=4,
                           image_size=32, patch_size=8),
        projection_dim=16)
    CLIPModel(config).eval().save_pretrained(d)
    _image_processor_class()(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}).save_pretrained(d)
    return d
