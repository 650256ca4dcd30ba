"""Readable tokens and unique node ids on a byte-level tokenizer: characters split into byte
pieces (Chinese, emoji) are shown merged in a prompt and as bytes alone, and node ids never
collide, since they are built from token ids."""

import pytest
import torch

import attribution_nb as anb
from attribution_nb.demo import tiny_model
from attribution_nb.tokens import display_token, display_tokens, piece_bytes

CORPUS = [
    "the cat sat on the mat",
    "dallas is in texas",
    "a small dog",
    "the opposite of small is big",
] * 50


def joined(shown: list[str]) -> str:
    """The text back from display strings: a merged character (``小·1/3`` …) counts once."""
    out = []
    for s in shown:
        head, sep, part = s.rpartition("·")
        if sep and "/" in part and part.split("/")[0].isdigit():
            out.append(head if part.startswith("1/") else "")
        else:
            out.append(s)
    return "".join(out)


@pytest.fixture(scope="module")
def byte_tokenizer():
    """A byte-level BPE tokenizer (GPT-2's scheme) trained here on a little English: any
    non-Latin character is split into single-byte pieces."""
    from tokenizers import ByteLevelBPETokenizer
    from transformers import PreTrainedTokenizerFast

    tok = ByteLevelBPETokenizer()
    tok.train_from_iterator(
        CORPUS, vocab_size=300, min_frequency=1, special_tokens=["<unk>", "<bos>", "<pad>"]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=tok._tokenizer, bos_token="<bos>", pad_token="<pad>"
    )


def test_pieces_of_a_character_are_its_utf8_bytes(byte_tokenizer):
    ids = byte_tokenizer("小", add_special_tokens=False)["input_ids"]
    assert len(ids) == 3 and all(byte_tokenizer.decode([i]) == "\ufffd" for i in ids)
    assert b"".join(piece_bytes(byte_tokenizer, i) for i in ids) == "小".encode()
    assert display_token(byte_tokenizer, ids[0]) == "<e5>"


@pytest.mark.parametrize("text", ["小 dog", "a 🙂 cat", "é is small", "the cat"])
def test_a_sequence_shows_whole_characters_with_their_piece_number(byte_tokenizer, text):
    ids = byte_tokenizer(text, add_special_tokens=False)["input_ids"]
    shown = display_tokens(byte_tokenizer, ids)
    assert len(shown) == len(ids) and not any("\ufffd" in s for s in shown)
    assert joined(shown) == text
    for char in text:
        n = len(char.encode())
        if n > 1:
            assert [f"{char}·{k}/{n}" for k in range(1, n + 1)] == [
                s for s in shown if s.startswith(char)
            ]


def test_node_ids_are_unique_when_logits_are_byte_pieces(byte_tokenizer):
    """Logit targets that all decode to "�" get distinct ids (position and token id)."""
    base = tiny_model("llama", seed=1, d_features=32)
    from transformers import AutoModelForCausalLM
    from attribution_nb.demo import tiny_config

    config = tiny_config("llama", vocab_size=len(byte_tokenizer))
    hf = AutoModelForCausalLM.from_config(config)
    model = anb.ReplacementModel(hf, byte_tokenizer, list(base.transcoders), name="byte-level")
    pieces = [i for i in range(len(byte_tokenizer)) if byte_tokenizer.decode([i]) == "\ufffd"][:6]
    graph = anb.attribute(model, "小 dog", targets=pieces, progress=False)
    assert len(pieces) == 6 and graph.nodes.node_id.is_unique
    logits = graph.nodes[graph.nodes.kind == "logit"]
    assert (
        logits.token_id.tolist() == pieces
        and logits.node_id.tolist() == graph.logits.node_id.tolist()
    )
    assert all(t.startswith("<") and "\ufffd" not in t for t in logits.token)
    T = len(graph.tokens)
    assert logits.node_id.tolist() == [f"l:P{T - 1}:{i}" for i in pieces]
    # each logit keeps its own row: ablating nothing, rows differ (no merged edges)
    rows = graph.adjacency[torch.from_numpy(graph.kinds == "logit")]
    assert len({tuple(r.tolist()) for r in rows}) == len(pieces)
