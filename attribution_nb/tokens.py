"""Token strings a person can read, byte-level pieces included.

Byte-level BPE tokenizers (GPT-2, Llama 3, SmolLM2, Qwen) and SentencePiece's byte fallback
split a character such as 小 or 🙂 into several tokens, each of which decodes alone to "�".
Here a piece is read as its bytes (the tokenizer's own token string, mapped back through the
byte-to-character table byte-level BPE uses, or ``<0xE5>`` for byte fallback), and:

* in a sequence (a prompt), consecutive pieces that together form characters are shown as
  those characters with the piece's place: ``小·1/3``, ``小·2/3``, ``小·3/3``;
* alone (a logit, a top token), a piece that is not a whole character is shown as its bytes:
  ``<e5 b0>``.

Tokens that decode to text show that text, unchanged.
"""

from __future__ import annotations

import difflib
import re

import torch

from .io import encodable

REPLACEMENT = "\ufffd"
_HEX_PIECE = re.compile(r"^<0x([0-9A-Fa-f]{2})>$")
#: the longest run of pieces merged into characters (UTF-8 has at most 4 bytes a character)
MAX_MERGE = 4


def _byte_level_table() -> dict[str, int]:
    """Character → byte of the byte-level BPE alphabet (printable bytes map to themselves, the
    others to characters from U+0100 on, in byte order)."""
    printable = (
        list(range(ord("!"), ord("~") + 1))
        + list(range(ord("¡"), ord("¬") + 1))
        + list(range(ord("®"), ord("ÿ") + 1))
    )
    table, extra = {}, 0
    for b in range(256):
        if b in printable:
            table[chr(b)] = b
        else:
            table[chr(256 + extra)] = b
            extra += 1
    return table


_CHAR_TO_BYTE = _byte_level_table()


def piece_bytes(tokenizer, token_id: int) -> bytes | None:
    """The bytes token ``token_id`` stands for, when its text alone is not whole characters."""
    raw = tokenizer.convert_ids_to_tokens(int(token_id))
    if not isinstance(raw, str) or not raw:
        return None
    m = _HEX_PIECE.match(raw)
    if m:
        return bytes([int(m.group(1), 16)])
    if all(ch in _CHAR_TO_BYTE for ch in raw):
        return bytes(_CHAR_TO_BYTE[ch] for ch in raw)
    return None


def _hex(data: bytes) -> str:
    return "<" + " ".join(f"{b:02x}" for b in data) + ">"


def display_token(tokenizer, token_id: int) -> str:
    """A readable string for one token on its own (its bytes when it is part of a character)."""
    text = tokenizer.decode([int(token_id)])
    if REPLACEMENT not in text:
        return text
    data = piece_bytes(tokenizer, token_id)
    return text if data is None else _hex(data)


def display_tokens(tokenizer, token_ids) -> list[str]:
    """Readable strings for a sequence of tokens (see the module docstring)."""
    ids = [int(i) for i in token_ids]
    texts = [tokenizer.decode([i]) for i in ids]
    out = list(texts)
    i = 0
    while i < len(ids):
        if REPLACEMENT not in texts[i]:
            i += 1
            continue
        pieces = [piece_bytes(tokenizer, t) for t in ids[i : i + MAX_MERGE]]
        merged = _merge(pieces)
        if merged is None:
            out[i] = display_token(tokenizer, ids[i])
            i += 1
            continue
        text, k = merged
        out[i : i + k] = [text] if k == 1 else [f"{text}·{n + 1}/{k}" for n in range(k)]
        i += k
    return out


def _merge(pieces: list[bytes | None]) -> tuple[str, int] | None:
    """The shortest run of leading pieces whose bytes decode to whole characters: (text, run length)."""
    data = b""
    for k, piece in enumerate(pieces, start=1):
        if piece is None:
            return None
        data += piece
        try:
            return data.decode("utf-8"), k
        except UnicodeDecodeError:
            continue
    return None


def unknown_words_hint(tokenizer, words: list[str], n: int = 3) -> str:
    """``"; nearest: 'dalas' → dallas, …"`` for words a word-level vocabulary lacks ('' if none is near)."""
    vocab = [w for w in tokenizer.get_vocab() if w not in tokenizer.all_special_tokens]
    if len(vocab) > 200_000:
        return ""
    near = {
        w: difflib.get_close_matches(w.lower(), vocab, n=n, cutoff=0.6)
        for w in dict.fromkeys(words)
    }
    shown = [f"{w!r} → {', '.join(m)}" for w, m in near.items() if m]
    return f"; nearest in the vocabulary: {'; '.join(shown)}" if shown else ""


def encode_prompt(tokenizer, prompt: str, max_length: int | None) -> torch.Tensor:
    """Token ids of a prompt string, refused by name where it is empty, too long for the model's
    context (checked before tokenising), not encodable, or holds words the vocabulary lacks."""
    if not prompt.strip():
        raise ValueError("prompt is empty; give at least one word")
    limit = 64 * max_length if max_length is not None else 1 << 20
    if len(prompt) > limit:  # (checked before tokenising, which would take the memory first)
        context = (
            f"the model's context is {max_length} tokens"
            if max_length
            else "no context limit is set"
        )
        raise ValueError(
            f"prompt has {len(prompt):,} characters, more than {limit:,} ({context}); shorten it"
        )
    encodable(prompt, "the prompt")
    ids = torch.tensor(tokenizer(prompt)["input_ids"], dtype=torch.long)
    unk = getattr(tokenizer, "unk_token_id", None)
    if unk is not None and (ids == unk).any():
        unknown = unknown_words(tokenizer, prompt, unk)
        if unknown:
            raise ValueError(
                f"words not in the model's vocabulary: {unknown}"
                + unknown_words_hint(tokenizer, unknown)
            )
    return ids


def unknown_words(tokenizer, prompt: str, unk: int) -> list[str]:
    """The stretches of ``prompt`` that encode as the unknown token (a literal unknown token aside)."""
    try:
        enc = tokenizer(prompt, return_offsets_mapping=True)
    except (NotImplementedError, ValueError):  # a slow tokenizer: by words
        return [
            w
            for w in prompt.split()
            if w != tokenizer.unk_token
            and tokenizer(w, add_special_tokens=False)["input_ids"] == [unk]
        ]
    return [
        prompt[a:b]
        for i, (a, b) in zip(enc["input_ids"], enc["offset_mapping"])
        if i == unk and b > a and prompt[a:b] != tokenizer.unk_token
    ]


def single_token_id(tokenizer, token: str) -> int:
    """The id of a single-token string; refused by name where the tokenizer splits it or it is unknown."""
    if not isinstance(token, str) or not token:
        raise ValueError(f"a token is a non-empty string, got {token!r:.60}")
    ids = tokenizer(encodable(token, "the token"), add_special_tokens=False)["input_ids"]
    if len(ids) != 1:
        pieces = [tokenizer.decode([i]) for i in ids]
        raise ValueError(
            f"target token {token!r} is not a single token: the tokenizer splits it into {pieces}"
        )
    unk = getattr(tokenizer, "unk_token_id", None)
    if unk is not None and ids[0] == unk and token != tokenizer.unk_token:
        raise ValueError(
            f"target token {token!r} is not in the vocabulary (it encodes as the unknown token)"
        )
    return int(ids[0])
