"""A small CLIP-format BPE vocabulary for the offline `tiny` preset.

No real CLIP vocabulary ships offline, so the tiny preset writes its own `vocab.json` and
`merges.txt` in CLIP's byte-level format: every byte symbol (alone and as a word end `</w>`)
plus merge chains that make common prompt words single tokens. A real run loads the model's
own tokenizer; this one only has to tokenise plausibly (about one token per word).
"""

from __future__ import annotations

import json
from pathlib import Path

WORDS = [
    "a", "an", "the", "of", "in", "on", "at", "with", "and", "or", "to", "for", "by", "from", "is", "are", "this",
    "that", "photo", "portrait", "picture", "image", "person", "man", "woman", "boy", "girl", "child", "face",
    "head", "hair", "eyes", "smile", "smiling", "wearing", "shirt", "hat", "glasses", "red", "blue", "green",
    "black", "white", "yellow", "brown", "grey", "gray", "dark", "light", "bright", "soft", "studio", "outdoor",
    "indoor", "garden", "beach", "city", "street", "park", "forest", "mountain", "sky", "sunset", "night", "day",
    "background", "close", "up", "closeup", "best", "quality", "high", "detailed", "realistic", "cinematic",
    "lighting", "professional", "young", "old", "happy", "sad", "standing", "sitting", "looking", "camera",
    "astronaut", "suit", "space", "jacket", "dress", "painting", "oil", "style", "art", "sketch", "watercolor",
    "worst", "low", "blurry", "lowres", "bad", "anatomy", "deformed", "ugly", "disfigured", "text", "watermark",
    "cartoon", "anime",
]


def bytes_to_unicode() -> dict[int, str]:
    """CLIP/GPT-2's reversible byte -> printable character table."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + \
        list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, [chr(c) for c in cs]))


def write_tiny_tokenizer_files(folder: Path) -> tuple[Path, Path]:
    folder.mkdir(parents=True, exist_ok=True)
    symbols = list(bytes_to_unicode().values())
    vocab_list = symbols + [s + "</w>" for s in symbols]
    merges: list[tuple[str, str]] = []
    seen_tokens = set(vocab_list)
    for word in sorted(set(WORDS)):
        pieces = list(word[:-1]) + [word[-1] + "</w>"]
        current = pieces[0]
        for nxt in pieces[1:]:
            merged = current + nxt
            if (current, nxt) not in merges:
                merges.append((current, nxt))
            if merged not in seen_tokens:
                seen_tokens.add(merged)
                vocab_list.append(merged)
            current = merged
    vocab_list += ["<|startoftext|>", "<|endoftext|>"]
    vocab = {tok: i for i, tok in enumerate(vocab_list)}
    vocab_path, merges_path = folder / "vocab.json", folder / "merges.txt"
    vocab_path.write_text(json.dumps(vocab, ensure_ascii=False))
    merges_path.write_text("#version: 0.2\n" + "\n".join(f"{a} {b}" for a, b in merges) + "\n")
    return vocab_path, merges_path
