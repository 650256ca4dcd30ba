"""Attribution graphs as data: tidy tables, influence, pruning and scores.

An ``AttributionGraph`` keeps its nodes in one order (features, error nodes, token nodes,
logit nodes) and a dense adjacency ``A`` with ``A[target, source]`` = the direct effect of
the source on the target.  The maths lives in pure functions on tensors:

* ``normalize_rows``: |A| with each row summing to one (a node's input shares);
* ``compute_influence``: ``w·(Â + Â² + …)`` for the logit-probability vector ``w``, i.e.
  how much each node matters to the logits through every path (``Â`` is nilpotent: the
  graph is acyclic, so the series ends after at most n_layers + 2 terms);
* ``prune_masks``: the fewest nodes holding ``node_threshold`` of the influence, then the
  fewest edges holding ``edge_threshold`` of the influence-weighted edge mass, then drop
  features left without an incoming or an outgoing edge; tokens and logits always stay;
* ``replacement_score`` and ``completeness_score``.
"""

from __future__ import annotations

import json
import os

import numpy as np
import pandas as pd
import torch
from safetensors.torch import save_file

from .transcoders import read_safetensors

KINDS = ("feature", "error", "token", "logit")
FORMAT = "attribution_nb.graph"
FORMAT_VERSION = 1


# -- pure functions -------------------------------------------------------------------
def normalize_rows(adjacency: torch.Tensor) -> torch.Tensor:
    """|A| with every non-empty row scaled to sum to one."""
    a = adjacency.abs()
    return a / a.sum(1, keepdim=True).clamp(min=1e-30)


def compute_influence(adjacency: torch.Tensor, logit_weights: torch.Tensor, max_iter: int | None = None) -> torch.Tensor:
    """Influence of every node on the logits: ``w·(Â + Â² + …)`` with ``Â = normalize_rows(A)``."""
    a = normalize_rows(adjacency.double())
    x = logit_weights.double() @ a
    total = x.clone()
    for _ in range(max_iter or adjacency.shape[0] + 1):
        if not x.any():
            return total
        x = x @ a
        total += x
    raise ValueError("the adjacency has a cycle: influence does not converge (an attribution graph is acyclic)")


def _check_threshold(name: str, value: float) -> float:
    if not isinstance(value, (int, float)) or not 0.0 <= float(value) <= 1.0:
        raise ValueError(f"{name} must be in [0, 1], got {value!r}")
    return float(value)


def _fewest_holding(scores: torch.Tensor, threshold: float) -> torch.Tensor:
    """Mask of the fewest entries (largest first) whose sum holds ``threshold`` of the total."""
    mask = torch.zeros_like(scores, dtype=torch.bool)
    total = scores.sum()
    if threshold == 0.0 or total <= 0:
        return mask if threshold == 0.0 else torch.ones_like(mask)
    order = scores.argsort(descending=True, stable=True)
    cum = scores[order].cumsum(0) / total
    k = min(int((cum < threshold).sum()) + 1, len(order))
    mask[order[:k]] = True
    return mask


def prune_masks(adjacency: torch.Tensor, logit_weights: torch.Tensor, kinds: np.ndarray,
                node_threshold: float = 0.8, edge_threshold: float = 0.98) -> tuple[torch.Tensor, torch.Tensor]:
    """Node and edge masks of the pruned graph (see the module docstring).

    Both masks shrink monotonically as either threshold drops, because edge scores are
    ranked once on the whole graph and the final clean-up keeps the largest set in which
    every feature has an incoming and an outgoing edge.
    """
    node_threshold = _check_threshold("node_threshold", node_threshold)
    edge_threshold = _check_threshold("edge_threshold", edge_threshold)
    kinds = np.asarray(kinds)
    always = torch.from_numpy(np.isin(kinds, ("token", "logit")))
    prunable = ~always
    influence = compute_influence(adjacency, logit_weights)
    node_mask = always.clone()
    node_mask[prunable] = _fewest_holding(influence[prunable], node_threshold)

    edge_scores = normalize_rows(adjacency.double()) * (influence + logit_weights.double())[:, None]
    nonzero = adjacency != 0
    edge_mask = torch.zeros_like(nonzero)
    edge_mask[nonzero] = _fewest_holding(edge_scores[nonzero], edge_threshold)
    is_feature = torch.from_numpy(kinds == "feature")
    is_error = torch.from_numpy(kinds == "error")
    while True:
        edge_mask &= node_mask[:, None] & node_mask[None, :]
        has_in, has_out = edge_mask.any(1), edge_mask.any(0)
        keep = always | (is_feature & has_in & has_out) | (is_error & has_out)
        new_mask = node_mask & keep
        if torch.equal(new_mask, node_mask):
            return node_mask, edge_mask
        node_mask = new_mask


def replacement_score(adjacency: torch.Tensor, logit_weights: torch.Tensor, kinds: np.ndarray) -> float:
    """Share of the logits' influence that reaches token nodes rather than error nodes."""
    influence = compute_influence(adjacency, logit_weights)
    kinds = np.asarray(kinds)
    tok = float(influence[torch.from_numpy(kinds == "token")].sum())
    err = float(influence[torch.from_numpy(kinds == "error")].sum())
    return tok / (tok + err) if tok + err > 0 else float("nan")


def completeness_score(adjacency: torch.Tensor, logit_weights: torch.Tensor, kinds: np.ndarray) -> float:
    """Influence-weighted share of nodes' (absolute) inputs that do not come from error nodes."""
    a = adjacency.double().abs()
    kinds = np.asarray(kinds)
    incoming = a.sum(1)
    from_errors = a[:, torch.from_numpy(kinds == "error")].sum(1)
    weight = compute_influence(adjacency, logit_weights) + logit_weights.double()
    has_input = incoming > 0
    if not has_input.any():
        return float("nan")
    share = 1.0 - from_errors[has_input] / incoming[has_input]
    w = weight[has_input]
    return float((w * share).sum() / w.sum()) if w.sum() > 0 else float(share.mean())


# -- the graph --------------------------------------------------------------------------
NODE_COLUMNS = ["node_id", "kind", "layer", "position", "token", "feature", "activation", "influence", "label"]
LOGIT_COLUMNS = ["token", "token_id", "probability", "logit"]


class AttributionGraph:
    """An attribution graph for one prompt: ``nodes``, ``edges`` and ``logits`` tables.

    Build one with :func:`attribution_nb.attribute`; load one with :meth:`load`.
    ``adjacency[i, j]`` is the direct effect of node ``j`` on node ``i`` (rows: targets).
    """

    def __init__(self, *, prompt: str, tokens: list[str], token_ids: list[int], nodes: pd.DataFrame,
                 adjacency: torch.Tensor, logits: pd.DataFrame, n_layers: int, model_name: str = "",
                 info: dict | None = None, supernodes: dict | None = None):
        if list(nodes.columns[: len(NODE_COLUMNS)]) != NODE_COLUMNS:
            raise ValueError(f"nodes must have columns {NODE_COLUMNS}, got {list(nodes.columns)}")
        n = len(nodes)
        if tuple(adjacency.shape) != (n, n):
            raise ValueError(f"adjacency has shape {tuple(adjacency.shape)}, expected ({n}, {n}) for {n} nodes")
        self.prompt = prompt
        self.tokens = list(tokens)
        self.token_ids = [int(t) for t in token_ids]
        self.nodes = nodes.reset_index(drop=True)
        self.adjacency = adjacency
        self.logits = logits.reset_index(drop=True)
        self.n_layers = int(n_layers)
        self.model_name = model_name
        self.info = dict(info or {})
        self.supernodes = dict(supernodes or {})
        self._index = {nid: i for i, nid in enumerate(self.nodes["node_id"])}
        self._edges = None

    # -- lookups -----------------------------------------------------------------
    def __repr__(self) -> str:
        counts = self.nodes["kind"].value_counts()
        parts = ", ".join(f"{counts.get(k, 0)} {k}s" for k in KINDS)
        return (f"AttributionGraph({self.prompt!r}: {parts}, {int((self.adjacency != 0).sum())} edges; "
                f"top prediction {self.logits['token'].iloc[0]!r})")

    @property
    def kinds(self) -> np.ndarray:
        return self.nodes["kind"].to_numpy()

    @property
    def logit_weights(self) -> torch.Tensor:
        """Probability of each logit node (zeros elsewhere), in node order."""
        w = torch.zeros(len(self.nodes), dtype=torch.float64)
        w[torch.from_numpy(self.kinds == "logit")] = torch.tensor(self.logits["probability"].to_numpy(), dtype=torch.float64)
        return w

    def index(self, node_id: str) -> int:
        """Row/column of ``node_id`` in the adjacency."""
        try:
            return self._index[node_id]
        except KeyError:
            raise KeyError(f"unknown node id {node_id!r}; ids look like 'f:L1:P3:42', 'e:L1:P3', 't:P3', "
                           f"'l:<token>' (see graph.nodes.node_id)") from None

    def node(self, node_id: str) -> pd.Series:
        return self.nodes.iloc[self.index(node_id)]

    def edge(self, source: str, target: str) -> float:
        """The direct effect of ``source`` on ``target``."""
        return float(self.adjacency[self.index(target), self.index(source)])

    @property
    def edges(self) -> pd.DataFrame:
        """One row per non-zero edge: ``source``, ``target``, ``weight`` (signed direct effect)."""
        if self._edges is None:
            tgt, src = self.adjacency.nonzero(as_tuple=True)
            ids = self.nodes["node_id"].to_numpy()
            self._edges = pd.DataFrame({"source": ids[src.numpy()], "target": ids[tgt.numpy()],
                                        "weight": self.adjacency[tgt, src].numpy().astype(np.float64)})
        return self._edges

    def top_features(self, n: int = 10) -> pd.DataFrame:
        """The ``n`` feature nodes with the largest influence on the logits."""
        feats = self.nodes[self.nodes["kind"] == "feature"]
        return feats.sort_values("influence", ascending=False).head(n).reset_index(drop=True)

    # -- analysis ----------------------------------------------------------------
    def influence(self) -> torch.Tensor:
        return compute_influence(self.adjacency, self.logit_weights)

    def prune(self, node_threshold: float = 0.8, edge_threshold: float = 0.98) -> "AttributionGraph":
        """A new graph with the nodes and edges that carry most of the influence on the logits."""
        node_mask, edge_mask = prune_masks(self.adjacency, self.logit_weights, self.kinds,
                                           node_threshold, edge_threshold)
        keep = node_mask.nonzero().flatten()
        adjacency = (self.adjacency * edge_mask)[keep][:, keep]
        info = dict(self.info, node_threshold=node_threshold, edge_threshold=edge_threshold)
        keep_ids = set(self.nodes["node_id"].to_numpy()[keep.numpy()])
        supernodes = {name: [n for n in ids if n in keep_ids] for name, ids in self.supernodes.items()}
        return AttributionGraph(prompt=self.prompt, tokens=self.tokens, token_ids=self.token_ids,
                                nodes=self.nodes.iloc[keep.numpy()], adjacency=adjacency, logits=self.logits,
                                n_layers=self.n_layers, model_name=self.model_name, info=info,
                                supernodes=supernodes)

    def scores(self) -> dict[str, float]:
        """Replacement score and completeness score (both in [0, 1]; higher is fewer errors)."""
        return {"replacement": replacement_score(self.adjacency, self.logit_weights, self.kinds),
                "completeness": completeness_score(self.adjacency, self.logit_weights, self.kinds)}

    # -- files -------------------------------------------------------------------
    def save(self, path: str | os.PathLike) -> None:
        """Write the graph to one safetensors file (tensors) with its tables as JSON metadata."""
        nz = self.adjacency.nonzero().T.contiguous()
        tensors = {
            "edge_index": nz,
            "edge_weight": self.adjacency[nz[0], nz[1]].contiguous(),
            "activation": torch.tensor(self.nodes["activation"].to_numpy(dtype=np.float64)),
            "influence": torch.tensor(self.nodes["influence"].to_numpy(dtype=np.float64)),
            "probability": torch.tensor(self.logits["probability"].to_numpy(dtype=np.float64)),
            "logit": torch.tensor(self.logits["logit"].to_numpy(dtype=np.float64)),
        }
        nodes = self.nodes[["node_id", "kind", "layer", "position", "token", "feature", "label"]]
        meta = {
            "format": FORMAT, "version": FORMAT_VERSION, "prompt": self.prompt, "tokens": self.tokens,
            "token_ids": self.token_ids, "n_layers": self.n_layers, "model_name": self.model_name,
            "n_nodes": len(self.nodes), "adjacency_dtype": str(self.adjacency.dtype).removeprefix("torch."),
            "nodes": {col: [None if pd.isna(v) else v for v in nodes[col].tolist()] for col in nodes.columns},
            "logits": {"token": self.logits["token"].tolist(), "token_id": self.logits["token_id"].tolist()},
            "info": self.info, "supernodes": self.supernodes,
        }
        tmp = os.fspath(path) + ".tmp"
        save_file(tensors, tmp, metadata={FORMAT: json.dumps(meta)})
        os.replace(tmp, path)  # never leave a half-written graph behind

    @classmethod
    def load(cls, path: str | os.PathLike) -> "AttributionGraph":
        """Read a graph written by :meth:`save` (safetensors + JSON; nothing is unpickled)."""
        tensors, header = read_safetensors(path)
        if FORMAT not in header:
            raise ValueError(f"{os.fspath(path)} is a safetensors file but not an attribution_nb graph")
        meta = json.loads(header[FORMAT])
        if meta.get("version") != FORMAT_VERSION:
            raise ValueError(f"{os.fspath(path)} has graph format version {meta.get('version')!r}; "
                             f"this attribution_nb reads version {FORMAT_VERSION}")
        n = meta["n_nodes"]
        nodes = pd.DataFrame(meta["nodes"])
        nodes["feature"] = nodes["feature"].astype("Int64")
        nodes.insert(6, "activation", tensors["activation"].numpy())
        nodes.insert(7, "influence", tensors["influence"].numpy())
        dtype = getattr(torch, meta["adjacency_dtype"])
        adjacency = torch.zeros(n, n, dtype=dtype)
        adjacency[tensors["edge_index"][0], tensors["edge_index"][1]] = tensors["edge_weight"]
        logits = pd.DataFrame({"token": meta["logits"]["token"], "token_id": meta["logits"]["token_id"],
                               "probability": tensors["probability"].numpy(), "logit": tensors["logit"].numpy()})
        return cls(prompt=meta["prompt"], tokens=meta["tokens"], token_ids=meta["token_ids"], nodes=nodes,
                   adjacency=adjacency, logits=logits, n_layers=meta["n_layers"], model_name=meta["model_name"],
                   info=meta["info"], supernodes=meta["supernodes"])
