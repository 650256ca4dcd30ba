"""Write a graph with circuit-tracer's own ``create_graph_files`` (run with the Python of an
environment that has circuit-tracer: ``python ct_export.py IN.npz IN.json OUT_DIR``).

``IN.npz`` holds the graph in circuit-tracer's node order (features, error nodes layer by layer,
tokens, logits): ``adjacency`` [targets, sources], ``active_features`` (layer, pos, feature),
``activation_values``, ``input_tokens``, ``logit_ids``, ``logit_probabilities``; ``IN.json`` the
prompt, the logits' strings, the config numbers, the tokenizer folder and the thresholds.
Nothing here imports attribution_nb.
"""

import json
import sys

import numpy as np
import torch
from circuit_tracer.attribution.targets import LogitTarget
from circuit_tracer.graph import Graph
from circuit_tracer.utils.create_graph_files import create_graph_files
from circuit_tracer.utils.tl_nnsight_mapping import UnifiedConfig


def main(npz_path, json_path, out_dir):
    a = np.load(npz_path, allow_pickle=False)
    meta = json.load(open(json_path))
    cfg = UnifiedConfig(
        n_layers=meta["n_layers"],
        d_model=meta["d_model"],
        d_head=meta["d_head"],
        n_heads=meta["n_heads"],
        d_mlp=meta["d_mlp"],
        d_vocab=meta["d_vocab"],
        tokenizer_name=meta["tokenizer"],
        model_name="demo",
        original_architecture="LlamaForCausalLM",
    )
    n_features = len(a["active_features"])
    graph = Graph(
        input_string=meta["prompt"],
        input_tokens=torch.from_numpy(a["input_tokens"]),
        active_features=torch.from_numpy(a["active_features"]),
        adjacency_matrix=torch.from_numpy(a["adjacency"]),
        cfg=cfg,
        selected_features=torch.arange(n_features),
        activation_values=torch.from_numpy(a["activation_values"]),
        logit_targets=[
            LogitTarget(s, int(i)) for s, i in zip(meta["logit_strings"], a["logit_ids"])
        ],
        logit_probabilities=torch.from_numpy(a["logit_probabilities"]),
        scan="demo",
    )
    create_graph_files(
        graph,
        slug="ct",
        output_path=out_dir,
        scan="demo",
        node_threshold=meta["node_threshold"],
        edge_threshold=meta["edge_threshold"],
    )


if __name__ == "__main__":
    main(*sys.argv[1:4])
