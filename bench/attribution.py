"""Time and peak memory of ``attribute`` on one fixed tiny model as the prompt grows.

    python bench/attribution.py [--lengths 8 32 128] [--features 512]
    python bench/attribution.py --device cuda --d-model 1024 --layers 16 --features 4096
    python bench/attribution.py --qk

``--qk``: on the demo model's Dallas prompt, the time of one QK table (``attribute_attention``),
of one head's edge loadings (``edge_heads``) and of one ``attribute`` call, median of 5 each,
and their ratios.

Prints one row per prompt length: active features, graph nodes and edges, wall time of
``attribute`` (split into its phases) and of ``prune``, and peak resident memory added
by the run (measured in a fresh subprocess per length, so runs do not share a peak).
With ``--device cuda`` each length runs on the CPU and on the GPU (same model, same
prompt) and the GPU's speed-up is printed beside its time.

"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time


def one(
    length: int,
    features: int,
    device: str = "cpu",
    d_model: int = 64,
    layers: int = 4,
    threads: int = 2,
) -> dict:
    import torch

    import attribution_nb as anb
    from attribution_nb.demo import WORDS, tiny_model

    torch.set_num_threads(threads)
    model = tiny_model("llama", seed=0, d_features=features, d_model=d_model, n_layers=layers)
    if device != "cpu":
        model = anb.ReplacementModel(
            model.hf_model.to(device), model.tokenizer, list(model.transcoders), name=model.name
        )
    words = [w for w in WORDS if w.isalpha()]
    prompt = " ".join(words[i % len(words)] for i in range(length - 1))  # + <bos> = length tokens
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    anb.attribute(model, " ".join(words[:4]), progress=False)  # warm-up
    sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)
    sync()
    t = time.perf_counter()
    graph = anb.attribute(model, prompt, progress=False)
    sync()
    t_attr = time.perf_counter() - t
    t = time.perf_counter()
    graph.prune(0.8, 0.98)
    t_prune = time.perf_counter() - t
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    gpu_peak = torch.cuda.max_memory_allocated() / 2**20 if device.startswith("cuda") else 0.0
    return {
        "tokens": len(graph.tokens),
        "features": int((graph.nodes.kind == "feature").sum()),
        "nodes": len(graph.nodes),
        "edges": graph.n_edges,
        "attribute_s": t_attr,
        "prune_s": t_prune,
        "peak_mb": peak / 1024,
        "gpu_peak_mb": gpu_peak,
        "added_mb": (peak - base) / 1024,
        **{f"{k}_s": v for k, v in graph.info["timings"].items() if k != "total"},
    }


def qk_timing(threads: int) -> None:
    import statistics

    import torch

    import attribution_nb as anb

    torch.set_num_threads(threads)
    model = anb.load_model()
    prompt = "fact : the capital of the state containing dallas is"
    graph = anb.attribute(model, prompt, progress=False)  # warm-up
    source = graph.nodes.node_id[(graph.nodes.kind == "token") & (graph.nodes.position == 9)].iloc[
        0
    ]  # "dallas"
    target = graph.logits.node_id[0]

    def median(fn) -> float:
        times = []
        for _ in range(5):
            t = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t)
        return statistics.median(times)

    t_attr = median(lambda: anb.attribute(model, prompt, progress=False))
    t_qk = median(lambda: anb.attribute_attention(model, prompt, 2, 0, -1, 9))
    t_heads = median(lambda: anb.edge_heads(model, prompt, source, target))
    print(
        f"demo model, Dallas prompt ({len(graph.tokens)} tokens), {threads} threads, median of 5:"
    )
    print(f"  attribute               {t_attr * 1000:8.0f} ms")
    print(f"  attribute_attention     {t_qk * 1000:8.0f} ms  ({t_qk / t_attr:.2f}x attribute)")
    print(
        f"  edge_heads              {t_heads * 1000:8.0f} ms  ({t_heads / t_attr:.2f}x attribute; {source} → {target})"
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--lengths", type=int, nargs="+", default=[8, 32, 128])
    ap.add_argument("--features", type=int, default=512, help="transcoder features per layer")
    ap.add_argument(
        "--device", default="cpu", help="also run on this device (e.g. cuda) and print the speed-up"
    )
    ap.add_argument("--threads", type=int, default=2, help="CPU threads")
    ap.add_argument("--d-model", type=int, default=64)
    ap.add_argument("--layers", type=int, default=4)
    ap.add_argument("--qk", action="store_true", help="time QK attributions against attribute")
    ap.add_argument("--one", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--on", default="cpu", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.qk:
        qk_timing(args.threads)
        return
    if args.one:
        print(
            json.dumps(
                one(args.one, args.features, args.on, args.d_model, args.layers, args.threads)
            )
        )
        return
    print(
        f"random Llama: {args.layers} layers, d_model {args.d_model}, {args.features} JumpReLU features/layer, "
        f"CPU with {args.threads} threads{'' if args.device == 'cpu' else ', and ' + args.device}"
    )
    head = (
        f"{'tokens':>6} {'features':>8} {'edges':>10} {'attribute s':>11} {'capture':>8} {'trace':>7} "
        f"{'logit rows':>10} {'feat rows':>9} {'prune s':>8} {'peak MB':>8}"
    )
    print(head)
    rows = []
    devices = ["cpu"] if args.device == "cpu" else ["cpu", args.device]
    for n in args.lengths:
        by_device = {}
        for dev in devices:
            out = subprocess.run(
                [
                    sys.executable,
                    __file__,
                    "--one",
                    str(n),
                    "--features",
                    str(args.features),
                    "--on",
                    dev,
                    "--d-model",
                    str(args.d_model),
                    "--layers",
                    str(args.layers),
                    "--threads",
                    str(args.threads),
                ],
                capture_output=True,
                text=True,
                check=True,
            )
            r = by_device[dev] = json.loads(out.stdout.strip().splitlines()[-1])
            label = "" if len(devices) == 1 else f"  {dev}"
            if dev != "cpu":
                label += (
                    f" {by_device['cpu']['attribute_s'] / r['attribute_s']:.1f}x faster than cpu, "
                    f"GPU peak {r['gpu_peak_mb']:.0f} MB"
                )
            print(
                f"{r['tokens']:>6} {r['features']:>8} {r['edges']:>10} {r['attribute_s']:>11.3f} "
                f"{r['capture_s']:>8.3f} {r['linear_trace_s']:>7.3f} {r['logit_rows_s']:>10.3f} "
                f"{r['feature_rows_s']:>9.3f} {r['prune_s']:>8.3f} "
                f"{r['peak_mb']:>8.0f}{label}"
            )
        rows.append(by_device["cpu"])
    if len(rows) > 1:
        a, b = rows[0], rows[-1]
        print(
            f"\n{b['tokens'] / a['tokens']:.0f}x the tokens -> {b['features'] / a['features']:.1f}x the features, "
            f"{b['attribute_s'] / a['attribute_s']:.1f}x the attribute time"
        )


if __name__ == "__main__":
    main()
