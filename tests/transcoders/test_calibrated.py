"""``mlp_inputs_on`` and ``calibrated_transcoders``: the seeded real-size transcoders of the
bench and the slow real-model tests, checked on a tiny model."""

import pytest
import torch

from attribution_nb.demo import tiny_model
from attribution_nb.transcoders import calibrated_transcoders, mlp_inputs_on


def test_mlp_inputs_are_the_post_attention_norms_outputs_without_bos():
    hf = tiny_model("llama", seed=1, d_features=32).hf_model
    ids = [1, 5, 9, 4, 7, 3]
    seen = []  # an independent read: each layer's post-attention norm's output
    hooks = [
        layer.post_attention_layernorm.register_forward_hook(
            lambda m, a, out: seen.append(out[0].detach())
        )
        for layer in hf.model.layers
    ]
    with torch.no_grad():
        hf(torch.tensor([ids]))
    for h in hooks:
        h.remove()
    inputs = mlp_inputs_on(hf, ids)
    assert len(inputs) == hf.config.num_hidden_layers
    for got, norm_out in zip(inputs, seen):
        torch.testing.assert_close(got, norm_out[1:])
    assert all(not layer.mlp._forward_pre_hooks for layer in hf.model.layers)  # hooks removed


def test_mlp_inputs_refuse_a_model_without_llama_style_layers():
    hf = tiny_model("gpt2", seed=1, d_features=32).hf_model
    with pytest.raises(ValueError, match="GPT2LMHeadModel has no model.layers"):
        mlp_inputs_on(hf, [1, 2, 3])


def test_calibrated_thresholds_fire_about_the_asked_number_per_token():
    gen = torch.Generator().manual_seed(0)
    inputs = [3.0 * torch.randn(400, 24, generator=gen) for _ in range(3)]
    tcs = calibrated_transcoders(inputs, 512, active_per_token=8, seed=2)
    for x, tc in zip(inputs, tcs):
        active = (tc.encode(x) > 0).sum(-1).float()
        assert 7.0 <= float(active.mean()) <= 9.0  # the quantile sets ~8 of 512 per token
        assert tc.W_dec.shape == (512, 24) and tc.activation == "jumprelu"
    again = calibrated_transcoders(inputs, 512, active_per_token=8, seed=2)
    assert torch.equal(again[1].W_enc, tcs[1].W_enc)  # seeded
    with pytest.raises(ValueError, match="mlp_inputs is empty"):
        calibrated_transcoders([], 512)


def test_calibrated_set_built_into_a_folder_has_the_same_weights(tmp_path):
    """Layer by layer into a folder (for sets larger than memory): the same seeded weights."""
    gen = torch.Generator().manual_seed(0)
    inputs = [torch.randn(20, 16, generator=gen) for _ in range(3)]
    whole = calibrated_transcoders(inputs, 64, seed=3)
    saved = calibrated_transcoders(inputs, 64, seed=3, folder=tmp_path / "tcs")
    assert sorted(p.name for p in (tmp_path / "tcs").iterdir()) == [
        "index.json",
        "layer_0.safetensors",
        "layer_1.safetensors",
        "layer_2.safetensors",
    ]
    for a, b in zip(whole, saved):
        for name in ("W_enc", "b_enc", "W_dec", "b_dec", "threshold"):
            assert torch.equal(getattr(a, name), getattr(b, name)), name
