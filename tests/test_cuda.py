"""The same graphs and interventions on a CUDA device as on the CPU (skipped without a GPU).

Each case builds one tiny model, copies it to the GPU, and checks the GPU run against the
CPU run: the same nodes, the same sparse structure, edges equal to float32 rounding; the
same free and frozen intervention logits; the same greedy generation; and a bfloat16 copy on
the GPU within half precision of the float32 graph.
"""

import copy

import numpy as np
import pytest
import torch
from conftest import PROMPT

import attribution_nb as anb
from attribution_nb.demo import tiny_model

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")

CASES = ["llama-skip", "qwen3", "gemma2-clt", "gpt2-skip"]


def to_device(
    model: anb.ReplacementModel, device: str, dtype=torch.float32
) -> anb.ReplacementModel:
    hf = copy.deepcopy(model.hf_model).to(device=device, dtype=dtype)
    return anb.ReplacementModel(
        hf, model.tokenizer, copy.deepcopy(list(model.transcoders)), name=model.name
    )


@pytest.fixture(scope="module", params=CASES)
def pair(request):
    family, _, kind = request.param.partition("-")
    cpu = tiny_model(family, seed=4, d_features=128, skip=kind == "skip", cross_layer=kind == "clt")
    gpu = to_device(cpu, "cuda")
    assert gpu.device.type == "cuda" and gpu.transcoders[0].W_enc.device.type == "cuda"
    return cpu, gpu


def test_graph_on_cuda_equals_cpu(pair):
    cpu, gpu = pair
    a = anb.attribute(cpu, PROMPT, progress=False, batch_size=16)
    b = anb.attribute(gpu, PROMPT, progress=False, batch_size=16)
    assert list(a.nodes.node_id) == list(b.nodes.node_id)
    np.testing.assert_allclose(b.nodes.activation, a.nodes.activation, rtol=1e-4, atol=1e-5)
    A, B = a.sparse_adjacency, b.sparse_adjacency
    # a product can round to exactly zero on one device only: compare on the union
    diff = abs(A - B)
    scale = float(np.abs(A.data).max())
    assert diff.max() < 1e-4 * scale, diff.max() / scale
    assert abs(A.nnz - B.nnz) <= 1e-3 * A.nnz
    assert b.info["replacement_logits_max_abs_diff"] < 1e-4
    np.testing.assert_allclose(b.logits.probability, a.logits.probability, rtol=1e-4, atol=1e-6)
    # the graph itself lives on the CPU whatever the model's device
    assert b.adjacency.device.type == "cpu"


def test_interventions_on_cuda_equal_cpu(pair):
    cpu, gpu = pair
    graph = anb.attribute(cpu, PROMPT, progress=False)
    feats = graph.nodes[graph.nodes.kind == "feature"].sort_values("influence", ascending=False)
    clamps = {feats.node_id.iloc[0]: 0.0, feats.node_id.iloc[1]: anb.Multiply(-2)}
    for mode in ("free", "frozen"):
        before_c, after_c = cpu.intervened_logits(PROMPT, clamps, mode=mode)
        before_g, after_g = gpu.intervened_logits(PROMPT, clamps, mode=mode)
        torch.testing.assert_close(before_g.cpu().float(), before_c.float(), rtol=1e-4, atol=1e-4)
        torch.testing.assert_close(after_g.cpu().float(), after_c.float(), rtol=1e-4, atol=1e-4)
        assert (after_c - before_c).abs().max() > 1e-3  # the clamp did something
    gen_c = cpu.generate(PROMPT, clamps, max_new_tokens=4)
    gen_g = gpu.generate(PROMPT, clamps, max_new_tokens=4)
    assert gen_c == gen_g


def test_bfloat16_on_cuda_is_close_to_float32(pair):
    cpu, _ = pair
    half = to_device(cpu, "cuda", torch.bfloat16)
    g32 = anb.attribute(cpu, PROMPT, progress=False)
    g = anb.attribute(half, PROMPT, progress=False)
    assert g.logits.token.iloc[0] == g32.logits.token.iloc[0]
    e32 = g32.edges.set_index(["source", "target"]).weight
    e = g.edges.set_index(["source", "target"]).weight
    common = e32.index.intersection(e.index)
    assert len(common) > 0.8 * len(e32)
    diff = (e.loc[common] - e32.loc[common]).abs() / float(e32.abs().max())
    from_errors = np.array([s.startswith("e:") for s, _ in common])
    assert diff[~from_errors].max() < 0.05 and diff.quantile(0.99) < 0.02


def test_demo_model_on_cuda():
    cpu = anb.load_model()
    gpu = to_device(cpu, "cuda")
    prompt = "fact : the capital of the state containing dallas is"
    a = anb.attribute(cpu, prompt, progress=False)
    b = anb.attribute(gpu, prompt, progress=False)
    assert b.logits.token.iloc[0] == a.logits.token.iloc[0]
    pa, pb = a.prune(0.8, 0.98), b.prune(0.8, 0.98)
    assert set(pa.nodes.node_id) == set(pb.nodes.node_id)
    assert abs(pa.scores()["replacement"] - pb.scores()["replacement"]) < 1e-4
