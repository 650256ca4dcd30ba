"""How much of the machine a graph uses: the floating-point work ``attribute`` does and the work
a graph needs, divided by the time it takes, beside this machine's own matmul rate.

    python bench/roofline.py                                  # Qwen3-0.6B shape, 16,384 features, 17 tokens
    python bench/roofline.py --model smollm2 --features 2048

On the real-size case of ``bench/compare_circuit_tracer.py`` (built there, offline; random
weights, calibrated JumpReLU transcoders), 2 threads, float32:

1. **probe**: ``torch.matmul`` at the shapes the row phase multiplies (a batch of prompt copies
   through a projection, the batched decoder products), best of 5 — what this machine does;
2. **time**: ``attribute`` (defaults, all features, after one warm-up), with its phases;
3. **work done**: the same call with every operation torch dispatches counted by torch's own
   flop formulas (matmuls, attention, forward and backward, as torch executes them);
4. **work needed**: counted from the graph — for every row computed, the backward pass through
   the frozen layers below its target at positions up to its own (the value and output
   projections and the fixed attention mixing: the MLPs are replaced by the frozen
   transcoders and errors, norms and patterns pass no gradient), and the dot product of the
   gradient with every source's write; plus the forward capture (every projection, the MLPs,
   the encoders at every position, the unembedding);
5. **where the time goes**: ``torch.profiler``'s self time by operator, top 12.

It prints done/s and needed/s against the probe, the share of the row phase each explains.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

import numpy as np
import torch

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import compare_circuit_tracer as cct  # noqa: E402  (the real-size cases are built there)


def probe(d: int, d_attn: int, T: int, batch: int, repeats: int = 5) -> dict:
    """GFLOP/s of torch.matmul at the row phase's shapes (best of ``repeats``)."""
    shapes = {
        f"[{batch}·{T}, {d_attn}] × [{d_attn}, {d}] (output projection)": (
            (batch * T, d_attn),
            (d_attn, d),
        ),
        f"[{batch}·{T}, {d}] × [{d}, {d}] (value projection)": ((batch * T, d), (d, d)),
        f"[{T}, 16, {d}] × [{T}, {d}, {batch}] (decoder products, bmm)": (
            (T, 16, d),
            (T, d, batch),
        ),
        "[1024, 1024] × [1024, 1024] (square)": ((1024, 1024), (1024, 1024)),
    }
    out = {}
    for name, (a, b) in shapes.items():
        x, y = torch.randn(a), torch.randn(b)
        flops = 2 * np.prod(a) * b[-1]
        reps = max(3, int(2e9 / flops))
        best = float("inf")
        for _ in range(repeats):
            t = time.perf_counter()
            for _ in range(reps):
                torch.matmul(x, y)
            best = min(best, (time.perf_counter() - t) / reps)
        out[name] = flops / best / 1e9
    return out


class CountFlops:
    """Floating-point operations torch runs while inside (its ``flop_registry``: matmuls,
    convolutions, attention), counted as the ops are dispatched, forward and backward alike.
    (torch's ``FlopCounterMode`` also tracks modules with backward hooks, which autograd.grad on
    leaf tensors refuses.)"""

    def __enter__(self):
        from torch.utils._python_dispatch import TorchDispatchMode
        from torch.utils.flop_counter import flop_registry

        counter = self

        class _Mode(TorchDispatchMode):
            def __torch_dispatch__(self, func, types, args=(), kwargs=None):
                kwargs = kwargs or {}
                out = func(*args, **kwargs)
                rule = flop_registry.get(func._overloadpacket)
                if rule is not None:
                    counter.total += int(rule(*args, **kwargs, out_val=out))
                return out

        self.total, self._mode = 0, _Mode()
        self._mode.__enter__()
        return self

    def __exit__(self, *exc):
        self._mode.__exit__(*exc)

    def get_total_flops(self) -> int:
        return self.total


def needed_flops(model, graph) -> dict:
    """The work a graph needs (see the module docstring), in FLOPs, by part."""
    cfg = model.hf_model.config
    L, d, V = cfg.num_hidden_layers, cfg.hidden_size, cfg.vocab_size
    hd = getattr(cfg, "head_dim", None) or d // cfg.num_attention_heads
    H, KV, M = cfg.num_attention_heads, cfg.num_key_value_heads, cfg.intermediate_size
    T = len(graph.tokens)
    F = model.transcoders[0].W_enc.shape[-1]
    nodes = graph.nodes
    feats = nodes[nodes.kind == "feature"]
    # active features at layer l and position ≤ p, cumulative: [L, T]
    count = np.zeros((L, T))
    np.add.at(count, (feats.layer.to_numpy(int), feats.position.to_numpy(int)), 1)
    upto = count.cumsum(1)
    rows = graph.sparse_adjacency.indptr
    has_row = np.diff(rows) > 0
    targets = nodes[has_row.astype(bool)]
    layer = np.where(targets.kind == "logit", L, targets.layer.fillna(L).to_numpy(float)).astype(
        int
    )
    pos = targets.position.to_numpy(int)
    backward = products = 0.0
    for l, p in zip(layer, pos):
        n = p + 1
        per_layer = (
            2 * n * d * KV * hd + 2 * n * H * hd * d + 2 * H * n * n * hd
        )  # v, o, fixed attention mixing
        backward += l * per_layer
        products += 2 * d * (upto[:l, p].sum() + l * n + n)  # features, errors, tokens
    forward = (
        T * (2 * L * (d * (H + 2 * KV) * hd + H * hd * d + 3 * d * M) + 2 * L * d * F + 2 * d * V)
        + 2 * L * H * T * T * hd
    )
    return {
        "rows": int(has_row.sum()),
        "backward": backward,
        "products": products,
        "capture": float(forward),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", choices=sorted(cct.REAL_MODELS), default="qwen3-0.6b")
    ap.add_argument("--features", type=int, default=16384)
    ap.add_argument("--tokens", type=int, default=17, choices=sorted(cct.REAL_PROMPTS))
    ap.add_argument(
        "--no-profile", action="store_true", help="skip the operator profile (a third run)"
    )
    args = ap.parse_args()
    torch.set_num_threads(2)
    import attribution_nb as anb
    from transformers import AutoTokenizer

    folder = cct.REAL_MODELS[args.model][1](args.features)
    tok = AutoTokenizer.from_pretrained(folder)
    ids = [tok.bos_token_id, *tok(cct.REAL_PROMPTS[args.tokens])["input_ids"]]
    model = anb.load_model(folder, transcoders=os.path.join(folder, "transcoders"))
    cfg = model.hf_model.config
    hd = getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads
    kw = {"max_feature_nodes": None, "progress": False}
    anb.attribute(model, ids, **kw)  # warm-up
    t = time.perf_counter()
    graph = anb.attribute(model, ids, **kw)
    seconds = time.perf_counter() - t
    timings, batch = graph.info["timings"], graph.info["batch_size"]
    rates = probe(cfg.hidden_size, cfg.num_attention_heads * hd, len(ids), batch)
    with CountFlops() as counter:
        anb.attribute(model, ids, **kw)
    done = counter.get_total_flops()
    with CountFlops() as counter:
        model.capture(torch.tensor(ids))
    done_capture = counter.get_total_flops()
    need = needed_flops(model, graph)
    row_s = timings["logit_rows"] + timings["feature_rows"]
    best = max(rates.values())
    print(
        f"{args.model}, {args.features} features per layer, {len(ids)} tokens, batch {batch}, 2 threads, float32: "
        f"{int((graph.nodes.kind == 'feature').sum())} active features, {need['rows']} rows, "
        f"attribute {seconds:.1f} s ("
        + ", ".join(f"{k} {v:.1f}" for k, v in timings.items() if k != "total")
        + ")"
    )
    print("matmul probe (GFLOP/s):")
    for name, rate in rates.items():
        print(f"  {rate:7.1f}  {name}")
    row_done = done - done_capture
    row_need = need["backward"] + need["products"]
    print(
        f"row phase ({row_s:.1f} s): done {row_done / 1e9:,.0f} GFLOP = {row_done / row_s / 1e9:.1f} GFLOP/s "
        f"({100 * row_done / row_s / 1e9 / best:.0f}% of the best probe); needed {row_need / 1e9:,.0f} GFLOP "
        f"(backward {need['backward'] / 1e9:,.0f}, products {need['products'] / 1e9:,.0f}) = "
        f"{row_need / row_s / 1e9:.1f} GFLOP/s ({100 * row_need / row_s / 1e9 / best:.0f}%); done/needed "
        f"{row_done / max(row_need, 1):.2f}"
    )
    print(
        f"capture ({timings['capture']:.1f} s): done {done_capture / 1e9:,.1f} GFLOP, needed "
        f"{need['capture'] / 1e9:,.1f} GFLOP = {done_capture / timings['capture'] / 1e9:.1f} GFLOP/s"
    )
    if not args.no_profile:
        from torch.profiler import ProfilerActivity, profile

        with profile(activities=[ProfilerActivity.CPU]) as prof:
            anb.attribute(model, ids, **kw)
        events = sorted(prof.key_averages(), key=lambda e: -e.self_cpu_time_total)
        total = sum(e.self_cpu_time_total for e in events)
        print("where the time goes (torch.profiler, self time by operator, one more run):")
        for e in events[:12]:
            print(
                f"  {100 * e.self_cpu_time_total / total:5.1f}%  {e.self_cpu_time_total / 1e6:6.2f} s  "
                f"{e.count:>7} calls  {e.key}"
            )
    print(
        json.dumps(
            {
                "model": args.model,
                "features": args.features,
                "tokens": len(ids),
                "seconds": seconds,
                "timings": timings,
                "probe_gflops": rates,
                "row_done_flops": row_done,
                "row_needed_flops": row_need,
                "capture_done_flops": done_capture,
                **need,
            }
        )
    )


if __name__ == "__main__":
    main()
