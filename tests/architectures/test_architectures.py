"""The architecture registry: every family builds a tiny model from its own config, is found
from that config, names modules that exist, and refuses what it does not handle by name."""

import pytest
import torch

import attribution_nb as anb
from attribution_nb.architectures import ARCHITECTURES, Architecture, architecture_for, get_module
from attribution_nb.demo import FAMILIES, tiny_model


@pytest.mark.parametrize("family", FAMILIES)
def test_each_family_is_found_from_its_tiny_models_config(family):
    model = tiny_model(family, seed=0, d_features=16)
    arch = architecture_for(model.hf_model)
    assert arch is ARCHITECTURES[family] and model.architecture is arch
    assert model.hf_model.config.model_type in arch.model_types
    layer = get_module(model.hf_model, arch.layers)[0]
    for path in (*arch.norms, arch.mlp_in, arch.mlp_out, *arch.queries_keys):
        assert isinstance(get_module(layer, path), torch.nn.Module)


def test_mistral_uses_the_llama_layout():
    from transformers import AutoModelForCausalLM, MistralConfig

    config = MistralConfig(
        vocab_size=50,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        sliding_window=4,
    )
    hf = AutoModelForCausalLM.from_config(config)
    assert architecture_for(hf) is ARCHITECTURES["llama"]


def test_gemma3_has_no_final_softcap_unless_its_config_sets_one():
    model = tiny_model("gemma3", seed=0, d_features=16)
    x = torch.linspace(-100, 100, 7)
    assert torch.equal(model.softcap(x), x)
    model.hf_model.config.final_logit_softcapping = 30.0
    torch.testing.assert_close(model.softcap(x), 30.0 * torch.tanh(x / 30.0))


@pytest.mark.parametrize(
    "family, field, value, says",
    [
        ("llama", "pretraining_tp", 2, "pretraining_tp=2"),
        ("gemma3", "use_bidirectional_attention", True, "use_bidirectional_attention=True"),
        ("qwen3", "num_experts", 8, "num_experts=8 (a mixture of experts"),
        ("gpt2", "add_cross_attention", True, "add_cross_attention=True"),
    ],
)
def test_a_config_field_the_family_does_not_handle_is_refused_by_name(family, field, value, says):
    model = tiny_model(family, seed=0, d_features=16)
    setattr(model.hf_model.config, field, value)
    with pytest.raises(
        ValueError, match=f"{family} architecture cannot handle .*{says}".replace("(", r"\(")
    ):
        anb.ReplacementModel(model.hf_model, model.tokenizer, list(model.transcoders))


@pytest.mark.parametrize("family", FAMILIES)
def test_a_config_field_no_one_here_knows_is_refused_by_name(family):
    """The allow-list: a field neither the family's config class nor every config defines (a
    newer transformers, a custom model) may change the computation, so it is named; special
    token ids and private keys pass."""
    model = tiny_model(family, seed=0, d_features=16)
    config = model.hf_model.config
    config.unk_token_id, config._model_name_or_path = (
        3,
        "somewhere",
    )  # (a GGUF-converted config has these)
    anb.ReplacementModel(model.hf_model, model.tokenizer, list(model.transcoders))
    config.attention_sink_tokens = 4
    with pytest.raises(
        ValueError, match="config field 'attention_sink_tokens' is not one this family understands"
    ):
        anb.ReplacementModel(model.hf_model, model.tokenizer, list(model.transcoders))


def test_an_unknown_model_type_lists_the_supported_ones():
    model = tiny_model("llama", seed=0, d_features=16)
    model.hf_model.config.model_type = "mamba"
    with pytest.raises(
        ValueError,
        match=r"unsupported architecture 'mamba'; supported model types: \[.*'gemma3_text'",
    ):
        anb.ReplacementModel(model.hf_model, model.tokenizer, list(model.transcoders))


def test_an_architecture_naming_a_missing_module_says_which():
    model = tiny_model("llama", seed=0, d_features=16)
    wrong = Architecture("custom", ("llama",), mlp_in="feed_forward", mlp_out="feed_forward")
    with pytest.raises(ValueError, match=r"expects a module at 'model.layers.0.feed_forward'"):
        anb.ReplacementModel(
            model.hf_model, model.tokenizer, list(model.transcoders), architecture=wrong
        )


def test_a_bad_norm_kind_is_refused():
    with pytest.raises(ValueError, match="norm_kind must be one of"):
        Architecture("custom", ("x",), norm_kind="batchnorm")
