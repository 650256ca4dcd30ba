"""Transcoders by hand, and bad input: each gets a clear error that names the bad value."""

import re
import math

import pytest
import torch
from conftest import PROMPT

import attribution_nb as anb
from attribution_nb.demo import tiny_model
from attribution_nb.transcoders import random_transcoders


def test_activations_by_hand():
    W_enc = torch.tensor([[1.0, -1.0, 2.0], [0.5, 1.0, -1.0]])  # d_model 2, 3 features
    b_enc = torch.tensor([0.0, 0.5, -0.5])
    W_dec, b_dec = torch.ones(3, 2), torch.zeros(2)
    x = torch.tensor([[1.0, 2.0]])  # pre = [2.0, 1.5, -0.5]
    relu = anb.Transcoder(W_enc, b_enc, W_dec, b_dec, "relu")
    assert relu.encode(x).tolist() == [[2.0, 1.5, 0.0]]
    jump = anb.Transcoder(
        W_enc, b_enc, W_dec, b_dec, "jumprelu", threshold=torch.tensor([2.5, 1.0, 0.0])
    )
    assert jump.encode(x).tolist() == [[0.0, 1.5, 0.0]]
    topk = anb.Transcoder(W_enc, b_enc, W_dec, b_dec, "topk", k=1)
    assert topk.encode(x).tolist() == [[2.0, 0.0, 0.0]]
    skip = anb.Transcoder(W_enc, b_enc, W_dec, b_dec, "relu", W_skip=2 * torch.eye(2))
    assert skip(x).tolist() == [[3.5 + 2.0, 3.5 + 4.0]]
    idx, vals = relu.encode_sparse(x)
    assert idx.tolist() == [[0, 0], [0, 1]] and vals.tolist() == [2.0, 1.5]


def test_transcoder_file_round_trip(tmp_path):
    for tc in random_transcoders(8, 1, 16, activation="topk", skip=True, k=3, seed=1):
        tc.save(tmp_path / "tc.safetensors")
        back = anb.Transcoder.load(tmp_path / "tc.safetensors")
        assert back.activation == "topk" and back.k == 3
        for name, t in tc.state().items():
            assert torch.equal(back.state()[name], t), name


def test_transcoder_shape_errors_name_the_tensor():
    with pytest.raises(ValueError, match=r"W_dec has shape \(4, 3\), expected \(5, 3\)"):
        anb.Transcoder(torch.zeros(3, 5), torch.zeros(5), torch.zeros(4, 3), torch.zeros(3))
    with pytest.raises(ValueError, match="activation must be one of"):
        anb.Transcoder(torch.zeros(3, 5), torch.zeros(5), torch.zeros(5, 3), torch.zeros(3), "gelu")
    with pytest.raises(ValueError, match="needs threshold"):
        anb.Transcoder(
            torch.zeros(3, 5), torch.zeros(5), torch.zeros(5, 3), torch.zeros(3), "jumprelu"
        )
    with pytest.raises(ValueError, match=r"k \(activation 'topk'\) must be in \[1, 5\], got 9"):
        anb.Transcoder(
            torch.zeros(3, 5), torch.zeros(5), torch.zeros(5, 3), torch.zeros(3), "topk", k=9
        )


def test_corrupt_or_truncated_transcoder_file(tmp_path):
    tc = random_transcoders(8, 1, 16, seed=1)[0]
    tc.save(tmp_path / "tc.safetensors")
    data = (tmp_path / "tc.safetensors").read_bytes()
    (tmp_path / "cut.safetensors").write_bytes(data[:-100])
    with pytest.raises(ValueError, match="cut.safetensors.*corrupt or truncated"):
        anb.Transcoder.load(tmp_path / "cut.safetensors")
    from safetensors.torch import save_file

    save_file({"W_enc": torch.zeros(8, 16)}, tmp_path / "partial.safetensors")
    with pytest.raises(
        ValueError, match=r"partial.safetensors: missing tensors \['b_enc', 'W_dec', 'b_dec'\]"
    ):
        anb.Transcoder.load(tmp_path / "partial.safetensors")
    save_file(
        {
            "W_enc": torch.zeros(8, 16),
            "b_enc": torch.zeros(16),
            "W_dec": torch.zeros(16, 7),
            "b_dec": torch.zeros(8),
        },
        tmp_path / "shape.safetensors",
    )
    with pytest.raises(ValueError, match=r"shape.safetensors: W_dec has shape \(16, 7\)"):
        anb.Transcoder.load(tmp_path / "shape.safetensors")


def test_transcoders_that_do_not_fit_the_model(llama):
    hf, tok = llama.hf_model, llama.tokenizer
    with pytest.raises(
        ValueError, match="transcoder 0 has d_model 32, but the model's d_model is 64"
    ):
        anb.ReplacementModel(hf, tok, random_transcoders(32, 4, 16))
    with pytest.raises(ValueError, match="got 3 transcoders for a model with 4 layers"):
        anb.ReplacementModel(hf, tok, random_transcoders(64, 3, 16))


def test_empty_prompt(llama):
    for prompt in ["", "   ", []]:
        with pytest.raises(ValueError, match="prompt is empty"):
            anb.attribute(llama, prompt)


def test_prompt_longer_than_context(llama):
    prompt = " ".join(["the"] * (llama.max_length + 5))
    says = f"prompt has {llama.max_length + 6} tokens, longer than the model's context of {llama.max_length}"
    with pytest.raises(ValueError, match=says):
        anb.attribute(llama, prompt)


def test_target_token_that_the_tokenizer_splits(llama):
    with pytest.raises(
        ValueError, match=r"'austin texas' is not a single token.*\['austin', 'texas'\]"
    ):
        anb.attribute(llama, PROMPT, targets=["austin texas"])
    with pytest.raises(ValueError, match="'zanzibar' is not in the vocabulary"):
        anb.attribute(llama, PROMPT, targets=["zanzibar"])


def test_targets_given_as_strings(llama):
    g = anb.attribute(llama, PROMPT, targets=["austin", "texas"], progress=False)
    assert list(g.logits.token) == ["austin", "texas"]
    with torch.no_grad():
        probs = torch.softmax(llama.logits(PROMPT).double(), -1)
    assert g.logits.probability[0] == pytest.approx(float(probs[llama.token_id("austin")]))


def test_non_finite_activations(llama):
    model = tiny_model("llama", seed=0)
    model.transcoders[2].W_enc.data[:, 5] = math.nan
    with pytest.raises(
        ValueError, match="non-finite transcoder activations at layer 2, position 0"
    ):
        anb.attribute(model, PROMPT)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(batch_size=0), "batch_size must be in [1, ∞], got 0"),
        (dict(batch_size=2.5), "batch_size must be an integer, got 2.5"),
        (dict(batch_size="32"), "batch_size must be an integer, got '32'"),
        (
            dict(max_feature_nodes=-1),
            "max_feature_nodes (non-negative or None) must be in [0, ∞], got -1",
        ),
        (
            dict(max_feature_nodes=10.5),
            "max_feature_nodes (non-negative or None) must be an integer, got 10.5",
        ),
        (dict(max_n_logits=2.5), "max_n_logits must be an integer, got 2.5"),
        (dict(desired_logit_prob=float("nan")), "desired_logit_prob must be in [0, 1], got nan"),
        (dict(desired_logit_prob=-1), "desired_logit_prob must be in [0, 1], got -1"),
        (dict(desired_logit_prob=7), "desired_logit_prob must be in [0, 1], got 7"),
        (dict(targets=3.7), "a target (a token string or id) must be an integer, got 3.7"),
        (dict(targets=True), "a target (a token string or id) must be an integer, got True"),
    ],
)
def test_bad_options_are_named(llama, kwargs, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        anb.attribute(llama, PROMPT, progress=False, **kwargs)


@pytest.mark.parametrize(
    "prompt, message",
    [
        ([1, 999], "token id 999 is outside the vocabulary"),
        ([1.0, 5.0], "token ids must be integers, got dtype torch.float32"),
        ([[1, 5], [1, 6]], "token ids must be one sequence (1-D), got shape (2, 2)"),
    ],
)
def test_bad_token_ids(llama, prompt, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        anb.attribute(llama, prompt)


def test_numpy_and_tensor_numbers_are_accepted(llama, llama_graph):
    import numpy as np

    g = anb.attribute(
        llama,
        PROMPT,
        progress=False,
        batch_size=np.int64(16),
        max_n_logits=torch.tensor(10),
        desired_logit_prob=np.float32(0.95),
        targets=[np.int64(llama_graph.logits.token_id[0])],
    )
    assert g.logits.token_id.tolist() == [int(llama_graph.logits.token_id[0])]
    a, b = llama_graph.prune(np.float32(0.8), torch.tensor(0.98)), llama_graph.prune(0.8, 0.98)
    assert a.nodes.node_id.tolist() == b.nodes.node_id.tolist()
    with pytest.raises(
        ValueError, match=re.escape("node_threshold must be in [0, 1] (a number), got True")
    ):
        llama_graph.prune(node_threshold=True)
    with pytest.raises(ValueError, match=re.escape("n must be in [0, ∞], got -1")):
        llama_graph.top_features(-1)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(activation="topk", k=2.5), "k (activation 'topk') must be an integer, got 2.5"),
        (
            dict(activation="jumprelu", threshold=float("nan")),
            "threshold holds NaN or infinite values",
        ),
        (
            dict(activation="jumprelu", threshold=torch.ones(3)),
            "threshold has shape (3,); expected a scalar or (16,)",
        ),
    ],
)
def test_bad_transcoder_parameters(kwargs, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        anb.Transcoder(
            torch.zeros(8, 16), torch.zeros(16), torch.zeros(16, 8), torch.zeros(8), **kwargs
        )


def test_bad_transcoder_files_are_named(tmp_path):
    from attribution_nb.transcoders import load_transcoder, load_transcoders

    with pytest.raises(ValueError, match=re.escape("no transcoders in []: give one per layer")):
        load_transcoders([])
    (tmp_path / "sae").mkdir()
    (tmp_path / "sae" / "cfg.json").write_text("{not json")
    with pytest.raises(ValueError, match="cfg.json: not a readable sae-lens cfg.json"):
        load_transcoder(tmp_path / "sae")
    (tmp_path / "set").mkdir()
    (tmp_path / "set" / "index.json").write_text('{"n_layers": "four"}')
    with pytest.raises(
        ValueError, match="index.json: n_layers must be a positive integer, got 'four'"
    ):
        load_transcoders(tmp_path / "set")


def test_unsupported_architecture():
    from transformers import GPTNeoXConfig, GPTNeoXForCausalLM

    hf = GPTNeoXForCausalLM(
        GPTNeoXConfig(
            vocab_size=16,
            hidden_size=8,
            num_hidden_layers=1,
            num_attention_heads=2,
            intermediate_size=16,
        )
    )
    with pytest.raises(ValueError, match="unsupported architecture 'gpt_neox'"):
        anb.ReplacementModel(hf, None, [])


def test_max_feature_nodes_keeps_the_most_influential(llama, llama_graph):
    full = llama_graph
    g = anb.attribute(llama, PROMPT, max_feature_nodes=200, batch_size=32, progress=False)
    feats = g.nodes[g.nodes.kind == "feature"]
    assert len(feats) == 200 and g.info["n_active_features"] == full.info["n_active_features"]
    # rows do not depend on which features are kept: edges agree with the full graph
    rows = [full.index(n) for n in g.nodes.node_id]
    torch.testing.assert_close(g.adjacency, full.adjacency[rows][:, rows])
    # the kept features are far more influential (in the full graph) than the dropped ones
    full_feats = full.nodes[full.nodes.kind == "feature"].set_index("node_id").influence
    kept = full_feats.index.isin(feats.node_id)
    assert full_feats[kept].mean() > 3 * full_feats[~kept].mean()
    assert full_feats[kept].sum() > 0.5 * full_feats.sum()


def test_words_outside_the_vocabulary(llama):
    with pytest.raises(ValueError, match=r"words not in the model's vocabulary: \['zanzibar'\]"):
        anb.attribute(llama, "the capital of zanzibar is")


def test_a_model_in_training_mode_is_refused(llama):
    llama.hf_model.train()
    try:
        with pytest.raises(ValueError, match="training mode .*model.hf_model.eval"):
            anb.attribute(llama, PROMPT, progress=False)
    finally:
        llama.hf_model.eval()


def test_non_finite_transcoder_weights_are_named():
    W = torch.zeros(8, 16)
    W[3, 5] = float("inf")
    with pytest.raises(
        ValueError,
        match=re.escape("W_enc holds NaN or infinite values (the first at index (3, 5))"),
    ):
        anb.Transcoder(W, torch.zeros(16), torch.zeros(16, 8), torch.zeros(8))


def test_non_finite_rows_stop_attribution_naming_the_target(monkeypatch):
    from attribution_nb.attribution import rows

    model = tiny_model("llama", seed=3, d_features=64)
    real = rows.RowEngine._edges_from_grads

    def poisoned(self, grads, layers, positions):
        out = real(self, grads, layers, positions)
        out[0, 0] = float("nan")
        return out

    monkeypatch.setattr(rows.RowEngine, "_edges_from_grads", poisoned)
    with pytest.raises(
        ValueError, match=r"non-finite direct effects into the target at layer 4, position 10"
    ):
        anb.attribute(model, PROMPT, progress=False)


def test_close_gives_the_callers_objects_back():
    from transformers import AutoModelForCausalLM

    from attribution_nb.demo import tiny_config, word_tokenizer

    tok = word_tokenizer()
    hf = AutoModelForCausalLM.from_config(tiny_config("llama", vocab_size=len(tok)))
    hf.train()
    tcs = [t.to(dtype=torch.float64) for t in random_transcoders(64, 4, 16, seed=1)]
    model = anb.ReplacementModel(hf, tok, tcs)
    assert not hf.training and not any(p.requires_grad for p in hf.parameters())
    assert all(t.W_enc.dtype == torch.float32 for t in tcs)  # moved to the model's dtype, in place
    model.close()
    assert hf.training and all(p.requires_grad for p in hf.parameters())
    assert all(t.W_enc.dtype == torch.float64 for t in tcs)


def test_the_bad_input_catalogue_gives_only_clear_errors():
    """``bench/bad_inputs.py``: 131 bad inputs across the public API, each must end in a clear error."""
    import subprocess
    import sys
    from pathlib import Path

    script = Path(__file__).resolve().parents[1] / "bench" / "bad_inputs.py"
    done = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, timeout=600
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-2000:]
    assert "0 silent, 0 crashes" in done.stdout


@pytest.mark.parametrize(
    "value, ok",
    [
        (12, 12),
        (12.0, 12),
        ("12", 12),
        ("12.5", None),
        (12.5, None),
        (True, None),
        (-1, None),
        (float("inf"), None),
        (float("nan"), None),
        (None, None),
        ("١٢", None),
    ],
)
def test_config_numbers_are_whole_numbers_or_named(value, ok):
    from attribution_nb.transcoders.formats.base import whole

    if ok is not None:
        assert whole("cfg.json", "k", value) == ok
    else:
        with pytest.raises(ValueError, match=r"cfg.json: k must be a whole number, got"):
            whole("cfg.json", "k", value)
