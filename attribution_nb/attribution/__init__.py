"""Attribution: exact direct effects in the local replacement model, batched on nnsight.

The algorithm, for one prompt (:func:`attribute`; one module a step):

1. **Capture** (:meth:`ReplacementCore.capture`).  One clean forward pass records every
   MLP's input and output.  Each transcoder encodes its MLP input; ``error = true output −
   reconstruction`` is held fixed, so the replacement model reproduces the model's logits.
   The logit targets are chosen (:mod:`.targets`).
2. **Linearise** (:mod:`.rows`).  A second trace runs ``batch_size`` copies of the prompt
   with attention patterns and norm scales frozen, token embeddings replaced by a leaf
   tensor and each MLP output replaced by a constant leaf (decoder outputs + b_dec + error)
   plus the transcoder's skip term.  The residual stream is now linear in its sources.
3. **Logit rows.**  For each target logit, the gradient of its demeaned logit (unembedding
   row minus the mean row, read at the unembedding input) at each leaf, dotted with what each
   source writes there, is that source's direct effect.  Copy ``b`` of the batch carries
   target ``b``, so one backward pass gives ``batch_size`` rows (:mod:`.store` keeps them).
4. **Feature rows.**  The same, for each feature's pre-activation (its encoder vector read
   at its layer's MLP input), in the order of :mod:`.schedule`: all of them, or, with
   ``max_feature_nodes``, the most influential ones on the logits estimated so far.
5. **Graph** (:mod:`.assemble`).  Rows for features and logits, columns for features,
   error nodes and token nodes; tokens and errors have no incoming edges.
"""

from __future__ import annotations

import math
import time

import numpy as np
import torch
from tqdm.auto import tqdm

from ..checks import as_float, as_int
from ..graph import AttributionGraph
from ..replacement import ReplacementCore
from .assemble import assemble
from .rows import ActiveFeatures, RowEngine, RowRunner
from .schedule import greedy_rounds, sweep_order
from .store import RowStore
from .targets import resolve_targets


def attribute(model: ReplacementCore, prompt, *, targets=None, max_n_logits: int = 10,
              desired_logit_prob: float = 0.95, batch_size: int = 32, max_feature_nodes: int | None = 8192,
              progress: bool | None = None) -> AttributionGraph:
    """Build the attribution graph of ``prompt`` (see the module docstring for the algorithm).

    Args:
        model: a :class:`~attribution_nb.ReplacementModel`.
        prompt: a string (tokenized with the model's tokenizer, BOS included) or token ids.
        targets: what the graph explains: token strings or ids (their logits), custom targets
            (:class:`LogitDiff`, :class:`Direction`, :class:`Logit`, weighted mixes of them; see
            :mod:`attribution_nb.attribution.targets`), or a list of these; default: the top
            logits until their cumulative probability reaches ``desired_logit_prob``, at most
            ``max_n_logits``.
        batch_size: targets per backward pass (and copies of the prompt in the linear trace).
        max_feature_nodes: keep at most this many features, the most influential ones.
        progress: show a progress bar (default: when there are more than 8 backward passes).
    """
    batch_size, max_feature_nodes, max_n_logits, desired_logit_prob = _check(
        batch_size, max_feature_nodes, max_n_logits, desired_logit_prob)
    if model.hf_model.training:
        raise ValueError("the model is in training mode (dropout on): its graph would change from run to run; "
                         "call model.hf_model.eval() first")
    clock = _Clock()
    cap = model.capture(model.tokenize(prompt))                                     # 1. capture
    if not torch.isfinite(cap.logits[-1]).all():
        raise ValueError("the model's logits are not finite for this prompt")
    goals = resolve_targets(model, cap, targets, max_n_logits, desired_logit_prob)
    active = ActiveFeatures.of(cap.activations)
    n_keep = len(active) if max_feature_nodes is None else min(max_feature_nodes, len(active))
    clock.lap("capture")
    batch = min(batch_size, len(goals) + n_keep)                                    # 2. linearise
    n_passes = math.ceil(len(goals) / batch) + math.ceil(n_keep / batch)
    bar = tqdm(total=len(goals) + n_keep, desc="attribution rows", leave=False,
               disable=not (progress if progress is not None else n_passes > 8))
    engine, store = RowEngine(model, cap, active, batch), RowStore()
    rows = RowRunner(model.backend, engine, store, bar)
    model.backend.prepare(engine)
    clock.lap("linear_trace")
    last = rows([("logit", i) for i in range(len(goals))],                           # 3. target rows
                torch.tensor([g.layer for g in goals]), torch.tensor([g.position for g in goals]),
                torch.stack([g.vector.double() for g in goals]), logits=True)
    replacement_diff = float((model.softcap(last.to(cap.logits.device)) - cap.logits[-1]).abs().max())
    clock.lap("logit_rows")
    weights = np.array([g.weight for g in goals])
    visited = _feature_rows(model, rows, cap, active, n_keep, weights)              # 4. feature rows
    bar.close()
    clock.lap("feature_rows")
    info = {"n_active_features": len(active), "max_feature_nodes": max_feature_nodes, "batch_size": batch,
            "timings": clock.timings, "replacement_logits_max_abs_diff": replacement_diff}
    graph = assemble(model, prompt, cap, active, visited, store, engine.n_sources, goals, info)   # 5. graph
    clock.lap("assemble", total=True)
    return graph


def _feature_rows(model, rows: RowRunner, cap, active: ActiveFeatures, n_keep: int, weights: np.ndarray) -> np.ndarray:
    """Compute the feature rows in the schedule's order; returns the visited features."""
    engine = rows.engine
    if n_keep < len(active):        # the greedy order jumps between positions: it keeps the full trace
        engine.buckets = [engine.T]
        rounds = greedy_rounds(rows.store, weights, len(active), n_keep, engine.n_sources, engine.batch)
    else:
        rounds = iter([sweep_order(active.layer.numpy(), active.position.numpy(), engine.buckets)])
    visited = [np.zeros(0, dtype=np.int64)]
    for chosen in rounds:
        c = torch.from_numpy(chosen)
        layers, index = active.layer[c], active.index[c]

        def encoders(s: slice, layers=layers, index=index) -> torch.Tensor:
            return torch.stack([model.transcoders[int(l)].W_enc[:, int(f)] for l, f in zip(layers[s], index[s])])
        rows(chosen.tolist(), layers, active.position[c], encoders)
        visited.append(chosen)
    return np.concatenate(visited)


def _check(batch_size, max_feature_nodes, max_n_logits, desired_logit_prob) -> tuple:
    """The numeric arguments, checked (numpy and tensor scalars accepted)."""
    if max_feature_nodes is not None:
        max_feature_nodes = as_int("max_feature_nodes (non-negative or None)", max_feature_nodes, minimum=0)
    return (as_int("batch_size", batch_size, minimum=1), max_feature_nodes,
            as_int("max_n_logits", max_n_logits, minimum=1), as_float("desired_logit_prob", desired_logit_prob, 0.0, 1.0))


class _Clock:
    """Seconds per phase (``graph.info["timings"]``)."""

    def __init__(self):
        self.timings: dict[str, float] = {}
        self.start = self.last = time.perf_counter()

    def lap(self, name: str, total: bool = False) -> None:
        now = time.perf_counter()
        self.timings[name] = now - self.last
        self.last = now
        if total:
            self.timings["total"] = now - self.start


__all__ = ["attribute"]
