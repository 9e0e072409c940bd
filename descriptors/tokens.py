"""Counting prompt tokens exactly as CLIP's text encoder does, offline.

CLIP reads at most 77 tokens, start and end markers included; longer prompts
are silently truncated. This module builds CLIP's real BPE tokenizer from
the merge list shipped in assets/tokenizer (no download) and counts tokens.
It knows nothing about descriptor files or models.
"""

from __future__ import annotations

import functools
import gzip
from collections.abc import Sequence
from pathlib import Path

CLIP_CONTEXT = 77  # tokens, including <|startoftext|> and <|endoftext|>
BPE_FILE = Path(__file__).resolve().parents[1] / "assets" / "tokenizer" / "bpe_simple_vocab_16e6.txt.gz"
_N_MERGES = 49152 - 256 - 2  # CLIP keeps this many merges: 49,408 tokens = 2 x 256 bytes + merges + 2 markers


def byte_alphabet() -> list[str]:
    """The 256 printable characters that byte-level BPE uses to stand for bytes."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    stand_ins = list(printable)
    extra = 0
    for byte in range(256):
        if byte not in printable:
            printable.append(byte)
            stand_ins.append(256 + extra)
            extra += 1
    return [chr(c) for c in stand_ins]


@functools.cache
def clip_tokenizer():
    """CLIP's tokenizer (transformers' CLIPTokenizer) built from the shipped merge list."""
    from transformers import CLIPTokenizer

    with gzip.open(BPE_FILE, "rt", encoding="utf-8") as lines:
        merges = [tuple(line.split()) for line in lines.read().split("\n")[1 : _N_MERGES + 1]]
    alphabet = byte_alphabet()
    tokens = [*alphabet, *(ch + "</w>" for ch in alphabet), *("".join(pair) for pair in merges)]
    tokens += ["<|startoftext|>", "<|endoftext|>"]
    vocab = {token: i for i, token in enumerate(tokens)}
    return CLIPTokenizer(vocab=vocab, merges=merges, model_max_length=CLIP_CONTEXT)


_counted: dict[str, int] = {}  # prompt -> tokens; the app re-checks the same prompts on every keystroke
_COUNTED_LIMIT = 200_000


def token_counts(prompts: Sequence[str]) -> list[int]:
    """How many tokens CLIP reads for each prompt, start and end markers included, before truncation."""
    new = [prompt for prompt in dict.fromkeys(prompts) if prompt not in _counted]
    if new:
        if len(_counted) + len(new) > _COUNTED_LIMIT:
            _counted.clear()
        ids = clip_tokenizer()(new, truncation=False, verbose=False)["input_ids"]
        _counted.update(zip(new, map(len, ids), strict=True))
    return [_counted[prompt] for prompt in prompts]
