"""Public transcoder layouts, written here in each layout and read back by the loaders."""

import json
import os

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import PROMPT
from safetensors.torch import save_file

import attribution_nb as anb
from attribution_nb.demo import tiny_model
from attribution_nb.transcoders import formats, load_transcoder, load_transcoders

D, F = 8, 24


def _reference_tc(skip=True, seed=0) -> anb.Transcoder:
    g = torch.Generator().manual_seed(seed)
    return anb.Transcoder(
        torch.randn(D, F, generator=g),
        0.1 * torch.randn(F, generator=g),
        torch.randn(F, D, generator=g),
        0.1 * torch.randn(D, generator=g),
        "jumprelu",
        threshold=0.5 + torch.rand(F, generator=g),
        W_skip=0.1 * torch.randn(D, D, generator=g) if skip else None,
    )


def _same(a: anb.Transcoder, b: anb.Transcoder):
    x = torch.randn(50, a.d_model, generator=torch.Generator().manual_seed(9))
    torch.testing.assert_close(a.encode(x), b.encode(x))
    torch.testing.assert_close(a(x), b(x))
    assert a.activation == b.activation


def test_gemmascope_npz(tmp_path):
    tc = _reference_tc(skip=False)
    path = tmp_path / "params.npz"
    np.savez(
        path,
        W_enc=tc.W_enc.numpy(),
        W_dec=tc.W_dec.numpy(),
        b_enc=tc.b_enc.numpy(),
        b_dec=tc.b_dec.numpy(),
        threshold=tc.threshold.numpy(),
    )
    _same(load_transcoder(path), tc)


def test_circuit_tracer_safetensors(tmp_path):
    tc = _reference_tc()
    path = tmp_path / "layer_0.safetensors"
    save_file(
        {
            "W_enc": tc.W_enc.T.contiguous(),
            "W_dec": tc.W_dec.contiguous(),
            "b_enc": tc.b_enc.contiguous(),
            "b_dec": tc.b_dec.contiguous(),
            "activation_function.threshold": tc.threshold.contiguous(),
            "W_skip": tc.W_skip.T.contiguous(),
        },
        path,
    )
    _same(load_transcoder(path), tc)
    # a ReLU one without a threshold, recognised by W_enc's orientation
    relu = anb.Transcoder(tc.W_enc, tc.b_enc, tc.W_dec, tc.b_dec, "relu")
    save_file(
        {
            "W_enc": tc.W_enc.T.contiguous(),
            "W_dec": tc.W_dec.contiguous(),
            "b_enc": tc.b_enc.contiguous(),
            "b_dec": tc.b_dec.contiguous(),
        },
        tmp_path / "relu.safetensors",
    )
    _same(load_transcoder(tmp_path / "relu.safetensors"), relu)


def test_gemmascope_2_safetensors(tmp_path):
    tc = _reference_tc()
    path = tmp_path / "gs2.safetensors"
    save_file(
        {
            "w_enc": tc.W_enc.contiguous(),
            "w_dec": tc.W_dec.contiguous(),
            "b_enc": tc.b_enc.contiguous(),
            "b_dec": tc.b_dec.contiguous(),
            "threshold": tc.threshold.contiguous(),
            "affine_skip_connection": tc.W_skip.T.contiguous(),
        },
        path,
    )
    _same(load_transcoder(path), tc)


def test_saelens_folder_with_input_centering(tmp_path):
    tc = _reference_tc(skip=False)
    folder = tmp_path / "sae"
    folder.mkdir()
    (folder / "cfg.json").write_text(
        json.dumps(
            {
                "architecture": "jumprelu",
                "d_in": D,
                "d_sae": F,
                "apply_b_dec_to_input": True,
                "hook_name": "blocks.0.hook_mlp_in",
            }
        )
    )
    save_file(
        {
            "W_enc": tc.W_enc.contiguous(),
            "W_dec": tc.W_dec.contiguous(),
            "b_enc": tc.b_enc.contiguous(),
            "b_dec": tc.b_dec.contiguous(),
            "threshold": tc.threshold.contiguous(),
        },
        folder / "sae_weights.safetensors",
    )
    loaded = load_transcoder(folder)
    x = torch.randn(40, D, generator=torch.Generator().manual_seed(2))
    pre = (x - tc.b_dec) @ tc.W_enc + tc.b_enc  # sae-lens: the input is centred by b_dec
    acts = pre * (pre > tc.threshold)
    torch.testing.assert_close(loaded.encode(x), acts)
    torch.testing.assert_close(loaded(x), acts @ tc.W_dec + tc.b_dec)


def _sparsify_folder(folder, k, transcode=True, skip=True, seed=3):
    """A folder as EleutherAI sparsify's ``SparseCoder.save_to_disk`` writes it: the module's
    state dict (``encoder`` is a ``torch.nn.Linear`` [F, d_in]) and its config plus ``d_in``."""
    g = torch.Generator().manual_seed(seed)
    t = {
        "encoder.weight": torch.randn(F, D, generator=g),
        "encoder.bias": 0.1 * torch.randn(F, generator=g),
        "W_dec": torch.randn(F, D, generator=g),
        "b_dec": 0.1 * torch.randn(D, generator=g),
    }
    if skip:
        t["W_skip"] = 0.1 * torch.randn(D, D, generator=g)
    folder.mkdir()
    save_file(t, folder / "sae.safetensors")
    (folder / "cfg.json").write_text(
        json.dumps(
            {
                "activation": "topk",
                "expansion_factor": 32,
                "normalize_decoder": True,
                "num_latents": F,
                "k": k,
                "multi_topk": False,
                "skip_connection": skip,
                "transcode": transcode,
                "d_in": D,
            }
        )
    )
    return t


def _sparsify_forward(t, x, k, transcode=True):
    """sparsify's encode/decode, written out: top-k of relu(x W^T + b), decoder rows summed."""
    h = x if transcode else x - t["b_dec"]
    pre = torch.relu(h @ t["encoder.weight"].T + t["encoder.bias"])
    top = pre.topk(k, dim=-1)
    out = torch.einsum("nk,nkd->nd", top.values, t["W_dec"][top.indices]) + t["b_dec"]
    if "W_skip" in t:
        out = out + x @ t["W_skip"].T
    return torch.zeros_like(pre).scatter(-1, top.indices, top.values), out


@pytest.mark.parametrize("transcode, skip", [(True, True), (True, False), (False, False)])
def test_sparsify_folder(tmp_path, transcode, skip):
    t = _sparsify_folder(tmp_path / "layers.3.mlp", k=5, transcode=transcode, skip=skip)
    loaded = load_transcoder(tmp_path / "layers.3.mlp")
    assert loaded.activation == "topk" and loaded.k == 5 and (loaded.W_skip is not None) == skip
    x = torch.randn(30, D, generator=torch.Generator().manual_seed(4))
    acts, out = _sparsify_forward(t, x, 5, transcode)
    torch.testing.assert_close(loaded.encode(x), acts, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(loaded(x), out, rtol=1e-5, atol=1e-5)


def test_sparsify_refuses_what_it_cannot_read(tmp_path):
    _sparsify_folder(tmp_path / "a", k=5)
    cfg = json.loads((tmp_path / "a" / "cfg.json").read_text())
    (tmp_path / "a" / "cfg.json").write_text(json.dumps(dict(cfg, activation="groupmax")))
    with pytest.raises(ValueError, match="activation 'groupmax' is not supported"):
        load_transcoder(tmp_path / "a")
    (tmp_path / "a" / "cfg.json").write_text(json.dumps(dict(cfg, d_in=D + 1)))
    with pytest.raises(ValueError, match=f"cfg.json says d_in={D + 1}"):
        load_transcoder(tmp_path / "a")
    save_file({"encoder.weight": torch.zeros(F, D)}, tmp_path / "a" / "sae.safetensors")
    with pytest.raises(
        ValueError, match=r"sae.safetensors: a sparsify coder needs .*missing \['encoder.bias'"
    ):
        load_transcoder(tmp_path / "a")


def test_every_registered_format_is_detected_without_a_layout_name(tmp_path):
    """Each layout's files are recognised by the registry alone (no layout=)."""
    _sparsify_folder(tmp_path / "sp", k=3)
    tc = _reference_tc(skip=False)
    tc.save(tmp_path / "native.safetensors")
    np.savez(
        tmp_path / "params.npz",
        W_enc=tc.W_enc.numpy(),
        W_dec=tc.W_dec.numpy(),
        b_enc=tc.b_enc.numpy(),
        b_dec=tc.b_dec.numpy(),
        threshold=tc.threshold.numpy(),
    )
    probes = {
        "sparsify": tmp_path / "sp",
        "attribution_nb": tmp_path / "native.safetensors",
        "gemmascope": tmp_path / "params.npz",
    }
    for name, path in probes.items():
        found = [f.name for f in formats.FORMATS.values() if f.detect(formats.Probe(path))]
        assert found[0] == name, (name, found)


def test_saelens_topk_needs_k(tmp_path):
    tc = _reference_tc(skip=False)
    folder = tmp_path / "topk"
    folder.mkdir()
    save_file(
        {k: getattr(tc, k).contiguous() for k in ("W_enc", "W_dec", "b_enc", "b_dec")},
        folder / "sae_weights.safetensors",
    )
    (folder / "cfg.json").write_text(json.dumps({"architecture": "topk", "d_in": D, "d_sae": F}))
    with pytest.raises(ValueError, match="activation_fn_kwargs.k"):
        load_transcoder(folder)
    (folder / "cfg.json").write_text(
        json.dumps(
            {"architecture": "topk", "d_in": D, "d_sae": F, "activation_fn_kwargs": {"k": 4}}
        )
    )
    loaded = load_transcoder(folder)
    assert loaded.activation == "topk" and loaded.k == 4
    x = torch.randn(5, D)
    assert ((loaded.encode(x) > 0).sum(-1) <= 4).all()
    (folder / "cfg.json").write_text(
        json.dumps(
            {"architecture": "topk", "d_in": D + 1, "d_sae": F, "activation_fn_kwargs": {"k": 4}}
        )
    )
    with pytest.raises(ValueError, match="d_in=9"):
        load_transcoder(folder)


def test_bad_files_say_what_is_wrong(tmp_path):
    tc = _reference_tc(skip=False)
    path = tmp_path / "bad.safetensors"
    save_file(
        {
            "W_enc": tc.W_enc.T.contiguous(),
            "b_enc": tc.b_enc.contiguous(),
            "b_dec": tc.b_dec.contiguous(),
            "activation_function.threshold": tc.threshold.contiguous(),
        },
        path,
    )
    with pytest.raises(ValueError, match=r"bad.safetensors.*missing \['W_dec'\]"):
        load_transcoder(path)
    save_file(
        {
            "W_enc": tc.W_enc.T.contiguous(),
            "W_dec": torch.zeros(F, D + 1),
            "b_enc": tc.b_enc.contiguous(),
            "b_dec": tc.b_dec.contiguous(),
            "activation_function.threshold": tc.threshold.contiguous(),
        },
        path,
    )
    with pytest.raises(ValueError, match=r"bad.safetensors.*W_dec has shape \(24, 9\)"):
        load_transcoder(path)
    save_file(
        {
            "W_enc": torch.zeros(5, 7),
            "W_dec": torch.zeros(F, D),
            "b_enc": tc.b_enc.contiguous(),
            "b_dec": tc.b_dec.contiguous(),
        },
        path,
    )
    with pytest.raises(ValueError, match=r"W_enc has shape \(5, 7\), which fits neither"):
        load_transcoder(path)
    save_file({"weights": torch.zeros(3)}, path)
    with pytest.raises(ValueError, match="unknown transcoder layout"):
        load_transcoder(path)
    folder = tmp_path / "a folder"
    folder.mkdir()
    (folder / "weights.bin").write_bytes(b"\0" * 8)
    with pytest.raises(
        ValueError, match=r"a folder holding \['weights.bin'\]; expected sae_weights.safetensors"
    ):
        load_transcoder(folder)  # no layout claims a folder without its weights file
    np.savez(tmp_path / "params.npz", W_enc=np.zeros((D, F)), W_dec=np.zeros((F, D)))
    with pytest.raises(ValueError, match=r"params.npz.*missing \['b_enc', 'b_dec', 'threshold'\]"):
        load_transcoder(tmp_path / "params.npz")
    np.save(tmp_path / "obj.npy", np.array([{"a": 1}], dtype=object))
    os.replace(tmp_path / "obj.npy", tmp_path / "evil.npz")
    with pytest.raises(ValueError, match="evil.npz"):  # never unpickled
        load_transcoder(tmp_path / "evil.npz")
    with pytest.raises(ValueError, match="layout 'nope'"):
        load_transcoder(tmp_path / "params.npz", layout="nope")


def _write_hub_like(tmp_path, model):
    """A circuit-tracer style repository: config.yaml listing hf:// per-layer files."""
    hub = tmp_path / "hub" / "someone" / "tiny-transcoders"
    hub.mkdir(parents=True)
    lines = [
        "model_name: tiny",
        "feature_input_hook: mlp.hook_in",
        "feature_output_hook: mlp.hook_out",
        "transcoders:",
    ]
    for i, tc in enumerate(model.transcoders):
        save_file(
            {
                "W_enc": tc.W_enc.T.contiguous(),
                "W_dec": tc.W_dec.contiguous(),
                "b_enc": tc.b_enc.contiguous(),
                "b_dec": tc.b_dec.contiguous(),
                "activation_function.threshold": tc.threshold.contiguous(),
            },
            hub / f"layer_{i}.safetensors",
        )
        lines.append(f"  - hf://someone/tiny-transcoders/layer_{i}.safetensors   # layer {i}")
    (hub / "config.yaml").write_text("\n".join(lines) + "\n")
    downloads = []

    def download(repo_id, filename):
        downloads.append((repo_id, filename))
        return str(tmp_path / "hub" / repo_id / filename)

    return hub, download, downloads


def test_config_yaml_set_from_hf_paths_and_a_preset(tmp_path, monkeypatch):
    model = tiny_model("llama", seed=4, d_features=32)
    hub, download, downloads = _write_hub_like(tmp_path, model)
    tcs = load_transcoders("hf://someone/tiny-transcoders/config.yaml", download=download)
    assert downloads[0] == ("someone/tiny-transcoders", "config.yaml") and len(
        downloads
    ) == 1 + len(model.transcoders)
    for a, b in zip(tcs, model.transcoders):
        _same(a, b)
    # a preset goes through the same code, with huggingface_hub's download replaced
    monkeypatch.setitem(
        formats.PRESETS,
        "tiny",
        {"model": "someone/tiny", "transcoders": "hf://someone/tiny-transcoders/config.yaml"},
    )
    monkeypatch.setattr(formats, "hub_download", download)
    assert len(load_transcoders("tiny")) == len(model.transcoders)


def test_load_model_from_a_folder_with_config_yaml(tmp_path):
    model = tiny_model("llama", seed=4, d_features=32)
    folder = tmp_path / "model"
    model.hf_model.save_pretrained(folder)
    model.tokenizer.save_pretrained(folder)
    hub, download, _ = _write_hub_like(tmp_path, model)
    # the same repository, with local relative paths instead of hf://
    text = (hub / "config.yaml").read_text().replace("hf://someone/tiny-transcoders/", "")
    (hub / "config.yaml").write_text(text)
    loaded = anb.load_model(str(folder), transcoders=str(hub))
    a = anb.attribute(model, PROMPT, progress=False)
    b = anb.attribute(loaded, PROMPT, progress=False)
    np.testing.assert_allclose(b.logits.logit, a.logits.logit, rtol=1e-5)
    assert b.n_edges == a.n_edges
    np.testing.assert_allclose(
        b.sparse_adjacency.data, a.sparse_adjacency.data, rtol=1e-4, atol=1e-6
    )
    with pytest.raises(ValueError, match="neither a local folder nor a preset"):
        anb.load_model("no/such-model", transcoders=str(hub))


def test_neuronpedia_export_matches_the_pruned_graph(llama_graph, tmp_path):
    g = llama_graph.subgraph(np.ones(len(llama_graph.nodes), dtype=bool))  # a copy we may label
    g.supernodes["top two"] = list(g.top_features(2).node_id)
    data = g.to_neuronpedia(node_threshold=0.8, edge_threshold=0.98, slug="dallas")
    pruned = g.prune(0.8, 0.98)
    assert set(data) == {"metadata", "qParams", "nodes", "links"}
    assert {"slug", "scan", "prompt_tokens", "prompt", "node_threshold"} <= set(data["metadata"])
    assert data["metadata"]["prompt_tokens"] == g.tokens and data["metadata"]["slug"] == "dallas"
    node_keys = {
        "node_id",
        "feature",
        "layer",
        "ctx_idx",
        "feature_type",
        "token_prob",
        "is_target_logit",
        "jsNodeId",
        "clerp",
        "influence",
        "activation",
    }
    assert all(node_keys <= set(n) for n in data["nodes"])
    assert len(data["nodes"]) == len(pruned.nodes) and len(data["links"]) == pruned.n_edges
    ids = [n["node_id"] for n in data["nodes"]]
    assert len(set(ids)) == len(ids)
    assert all(link["source"] in ids and link["target"] in ids for link in data["links"])
    kinds = pruned.nodes.kind.value_counts()
    types = pd.Series([n["feature_type"] for n in data["nodes"]]).value_counts()
    assert types["cross layer transcoder"] == kinds["feature"] and types["logit"] == kinds["logit"]
    assert sum(n["is_target_logit"] for n in data["nodes"]) == 1
    # a feature keeps its (layer, index, position) in its id, and its edges' weights
    f = pruned.top_features(1).iloc[0]
    fid = f"{f.layer}_{f.feature}_{f.position}"
    out = {l["target"]: l["weight"] for l in data["links"] if l["source"] == fid}
    assert len(out) == (pruned.edges.source == f.node_id).sum()
    assert data["qParams"]["supernodes"][0][0] == "top two"
    path = g.to_neuronpedia(tmp_path / "graphs", slug="dallas")
    assert json.load(open(path))["metadata"]["slug"] == "dallas"
    listing = json.load(open(tmp_path / "graphs" / "graph-metadata.json"))
    assert [x["slug"] for x in listing["graphs"]] == ["dallas"]


def test_circuit_tracer_cross_layer_folder(tmp_path):
    model = tiny_model("llama", seed=4, d_features=32, cross_layer=True)
    L = model.n_layers
    folder = tmp_path / "clt"
    folder.mkdir()
    for i, tc in enumerate(model.transcoders):
        enc = {
            f"W_enc_{i}": tc.W_enc.T.contiguous(),
            f"b_enc_{i}": tc.b_enc.contiguous(),
            f"b_dec_{i}": tc.b_dec.contiguous(),
            f"threshold_{i}": tc.threshold.contiguous(),
        }
        save_file(enc, folder / f"W_enc_{i}.safetensors")
        dec = (
            tc.W_dec[:, None]
            if tc.W_dec_later is None
            else torch.cat([tc.W_dec[:, None], tc.W_dec_later], 1)
        )
        assert dec.shape[1] == L - i
        save_file({f"W_dec_{i}": dec.contiguous()}, folder / f"W_dec_{i}.safetensors")
    tcs = load_transcoders(folder)
    for a, b in zip(tcs, model.transcoders):
        _same(a, b)
        assert a.n_later == b.n_later
        if b.n_later:
            torch.testing.assert_close(a.W_dec_later, b.W_dec_later)
    loaded = anb.ReplacementModel(model.hf_model, model.tokenizer, tcs)
    g1, g2 = (
        anb.attribute(model, PROMPT, progress=False),
        anb.attribute(loaded, PROMPT, progress=False),
    )
    # (the loaded decoders are views of one file tensor: float32 sums may round differently)
    scale = float(np.abs(g1.sparse_adjacency.data).max())
    np.testing.assert_allclose(
        g2.sparse_adjacency.data, g1.sparse_adjacency.data, rtol=1e-5, atol=1e-6 * scale
    )
    save_file({"W_dec_2": torch.zeros(32, 3, 64)}, folder / "W_dec_2.safetensors")
    with pytest.raises(
        ValueError, match=r"W_dec_2 has shape \(32, 3, 64\), expected \(32, 2, 64\)"
    ):
        load_transcoders(folder)
    # and our own folder layout keeps the later decoders
    model.transcoders.save(tmp_path / "ours")
    back = anb.TranscoderSet.load(tmp_path / "ours")
    assert [tc.n_later for tc in back] == [tc.n_later for tc in model.transcoders]
    torch.testing.assert_close(back[0].W_dec_later, model.transcoders[0].W_dec_later)


@pytest.mark.parametrize(
    "slug", ["../x", "/tmp/abs", "graph-metadata", "a/b", "", ".hidden", "x" * 101, 3]
)
def test_a_slug_that_would_write_outside_the_folder_is_refused(llama_graph, tmp_path, slug):
    with pytest.raises(ValueError, match="slug must be letters, digits"):
        llama_graph.to_neuronpedia(tmp_path / "graphs", slug=slug)
    assert not (tmp_path / "graphs").exists() or os.listdir(tmp_path / "graphs") == []
