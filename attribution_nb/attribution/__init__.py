"""Attribution: exact direct effects in the local replacement model, batched on nnsight.

The algorithm, for one prompt (:func:`attribute`; one module a step):

1. **Capture** (:meth:`ReplacementCore.capture`).  One clean forward pass records every
   MLP's input and output.  Each transcoder encodes its MLP input; ``error = true output −
   reconstruction`` is held fixed, so the replacement model reproduces the model's logits.
   The features at a BOS position are folded into its error nodes (unless ``bos_features``).
   The logit targets are chosen (:mod:`.targets`).
2. **Linearise** (:mod:`.rows`).  A second trace runs ``batch_size`` copies of the prompt
   with attention patterns and norm scales frozen, token embeddings replaced by a leaf
   tensor and each MLP output replaced by a constant leaf (decoder outputs + b_dec + error)
   plus the transcoder's skip term; the MLPs themselves are skipped and attention runs
   eagerly.  The residual stream is now linear in its sources.
3. **Logit rows.**  For each target logit, the gradient of its demeaned logit (unembedding
   row minus the mean row, read at the unembedding input) at each leaf, dotted with what each
   source writes there, is that source's direct effect.  Copy ``b`` of the batch carries
   target ``b``, so one backward pass gives ``batch_size`` rows (:mod:`.store` keeps them).
4. **Feature rows.**  The same, for each feature's pre-activation (its encoder vector read
   at its layer's MLP input): by default those the graph pruned at ``prune_thresholds``
   needs, with a proof (:mod:`.adaptive`); with ``rows="all"`` every one; with
   ``max_feature_nodes`` below the number of active features, the most influential ones on
   the logits estimated so far (:mod:`.schedule`).
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
from .assemble import AttributionRun, assemble
from .cpu import fitted_threads, mlp_pages_given_back
from .rows import ActiveFeatures, RowEngine, RowRunner
from .adaptive import Sweep
from .schedule import greedy_rounds
from .store import RowStore
from .targets import resolve_targets


def attribute(
    model: ReplacementCore,
    prompt,
    *,
    targets=None,
    max_n_logits: int = 10,
    desired_logit_prob: float = 0.95,
    batch_size: int | None = None,
    max_feature_nodes: int | None = 8192,
    rows: str = "adaptive",
    bos_features: bool = False,
    prune_thresholds: tuple[float, float] = (0.8, 0.98),
    progress: bool | None = None,
) -> AttributionGraph:
    """Build the attribution graph of ``prompt`` (see the module docstring for the algorithm).

    Args:
        model: a :class:`~attribution_nb.ReplacementModel`.
        prompt: a string (tokenized with the model's tokenizer, BOS included) or token ids.
        targets: what the graph explains: token strings or ids (their logits), custom targets
            (:class:`LogitDiff`, :class:`Direction`, :class:`Logit`, weighted mixes of them; see
            :mod:`attribution_nb.attribution.targets`), or a list of these; default: the top
            logits until their cumulative probability reaches ``desired_logit_prob``, at most
            ``max_n_logits``.
        batch_size: targets per backward pass (and copies of the prompt in the linear trace);
            default: chosen from the model's size and device (:func:`default_batch_size`).
        max_feature_nodes: keep at most this many features, the most influential ones.
        rows: ``"adaptive"`` (default): compute a feature's incoming edges only where the graph
            pruned at ``prune_thresholds`` needs them, with a proof that it keeps the same
            nodes as with every row (:mod:`.adaptive`; features left without rows stay as
            sources, with no incoming edges); ``"all"``: every feature's row.
        bos_features: keep the features at the first position when it holds a special token
            (BOS).  By default they are left out, as circuit-tracer does (attention-sink artefacts,
            the same on every prompt): what they write is folded into that position's error nodes.
        prune_thresholds: the ``(node_threshold, edge_threshold)`` the adaptive rows are proved for;
        progress: show a progress bar (default: when there are more than 8 backward passes).
    """
    prune_thresholds = _check_flags(bos_features, progress, prune_thresholds)
    checked = _check(model, batch_size, max_feature_nodes, max_n_logits, desired_logit_prob, rows)
    with fitted_threads(model) as threads:  # no more threads than the cores others leave free
        graph = _attribute(
            model, prompt, targets, checked, rows, bos_features, prune_thresholds, progress
        )
    graph.info["cpu_threads"] = threads
    return graph


def _attribute(model, prompt, targets, checked, rows, bos_features, prune_thresholds, progress):
    """:func:`attribute`'s five phases, its arguments checked."""
    batch_size, max_feature_nodes, max_n_logits, desired_logit_prob = checked
    clock = _Clock()
    with mlp_pages_given_back(model) as mlp_pages:  # the rows never run the MLPs
        cap, n_bos = graph_capture(model, model.tokenize(prompt), bos_features)  # 1. capture
    goals = resolve_targets(model, cap, targets, max_n_logits, desired_logit_prob)
    run = AttributionRun(model, prompt, cap, ActiveFeatures.of(cap.activations), goals)
    n_keep = (
        len(run.active) if max_feature_nodes is None else min(max_feature_nodes, len(run.active))
    )
    clock.lap("capture")
    runner = _linearise(run, batch_size, n_keep, progress)  # 2. linearise
    clock.lap("linear_trace")
    replacement_diff = _target_rows(run, runner)  # 3. target rows
    clock.lap("logit_rows")
    notes = _feature_rows(run, runner, n_keep, rows, prune_thresholds)  # 4. feature rows
    clock.lap("feature_rows")
    run.info = _info(run, runner.engine.batch, rows, max_feature_nodes, prune_thresholds, n_bos)
    run.info.update(notes, timings=clock.timings, replacement_logits_max_abs_diff=replacement_diff)
    run.info["mlp_pages_given_back_mb"] = round(mlp_pages[0] / 2**20, 1)
    graph = assemble(run)  # 5. graph
    clock.lap("assemble", total=True)
    return graph


def _linearise(run: AttributionRun, batch_size: int | None, n_keep: int, progress):
    """The row engine on the frozen linear model (``batch`` prompt copies) and its runner, which
    files rows into ``run.store`` and counts them on a progress bar (closed by the last rows)."""
    model, n_rows = run.model, len(run.goals) + n_keep
    batch = min(batch_size or default_batch_size(model, len(run.cap.tokens)), n_rows)
    n_passes = math.ceil(len(run.goals) / batch) + math.ceil(n_keep / batch)
    show = progress if progress is not None else n_passes > 8
    bar = tqdm(total=n_rows, desc="attribution rows", leave=False, disable=not show)
    engine, run.store = RowEngine(model, run.cap, run.active, batch), RowStore()
    run.layout = engine.layout
    model.backend.prepare(engine)
    return RowRunner(model.backend, engine, run.store, bar)


def _target_rows(run: AttributionRun, runner: RowRunner) -> float:
    """The targets' rows; returns how far the replacement model's logits (from the linear
    trace) are from the model's own (largest absolute difference)."""
    goals, cap = run.goals, run.cap
    last = runner(
        [("logit", i) for i in range(len(goals))],
        torch.tensor([g.layer for g in goals]),
        torch.tensor([g.position for g in goals]),
        torch.stack([g.vector.double() for g in goals]),
        logits=True,
    )
    return float((run.model.softcap(last.to(cap.logits.device)) - cap.logits[-1]).abs().max())


def graph_capture(model, tokens: torch.Tensor, bos_features: bool = False):
    """The clean capture as a graph sees it, and how many features were left out: those at the
    BOS position are folded into its error nodes unless ``bos_features`` (see :func:`attribute`)."""
    cap = model.capture(tokens)
    if not torch.isfinite(cap.logits[-1]).all():
        raise ValueError("the model's logits are not finite for this prompt")
    if bos_features or not _starts_special(model, tokens):
        return cap, 0
    n_bos = sum(int((a[0] != 0).sum()) for a in cap.activations)
    return cap.without_features_at(model.transcoders, 0), n_bos


def _info(
    run: AttributionRun, batch: int, rows: str, max_feature_nodes, thresholds, n_bos: int
) -> dict:
    """What ``graph.info`` says of the run (then its notes, timings and logit check)."""
    return {
        "n_active_features": len(run.active),
        "max_feature_nodes": max_feature_nodes,
        "batch_size": batch,
        "rows": rows,
        "feature_rows": len(run.visited),
        "features_without_rows": len(run.rowless),
        "prune_thresholds": list(thresholds),
        "bos_features_left_out": n_bos,
    }


def _feature_rows(
    run: AttributionRun, runner: RowRunner, n_keep: int, rows: str, thresholds
) -> dict:
    """Feature rows: the greedy order under a feature cap, else the sweep (adaptive or all).
    Sets the features with rows (``run.visited``) and those kept without (``run.rowless``);
    returns what to note in ``info``."""
    model, active, goals = run.model, run.active, run.goals
    weights = np.array([g.weight for g in goals])
    if n_keep < len(active):
        run.visited = _greedy_rows(model, runner, active, n_keep, weights)
        runner.bar.close()
        return {}
    sweep = Sweep(
        runner.store,
        _computer(model, runner, active),
        active,
        runner.engine,
        weights,
        np.array([g.position for g in goals]),
        rows == "adaptive",
        thresholds,
    )
    sweep.run()
    if rows == "adaptive":
        sweep.finish()
    run.visited, run.rowless = np.flatnonzero(sweep.visited), np.flatnonzero(~sweep.visited)
    runner.bar.close()
    reason = sweep.certificate.reason or "proved" if sweep.certificate else "every row computed"
    return {"certificate": reason}


#: the linear trace keeps about this many float32 [layers, tokens, d_model] tensors per prompt copy
TRACE_TENSORS_PER_COPY = 15
#: on a CPU, the batch is the most copies whose trace fits this many bytes (16 to 32 copies)
CPU_TRACE_BYTES = 256 * 2**20
#: on a CPU, the linear trace may take at most this share of the memory available when
#: ``attribute`` starts (the batch shrinks below 16 copies where a long prompt needs it to)
CPU_MEMORY_SHARE = 0.5


def available_memory() -> int | None:
    """Bytes this machine has available now (``MemAvailable`` of /proc/meminfo); None where unknown."""
    try:
        with open("/proc/meminfo", encoding="ascii") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    return None


def default_batch_size(model, n_tokens: int | None = None) -> int:
    """Targets per backward pass.  On a CPU: as many prompt copies as fit
    :data:`CPU_TRACE_BYTES` of linear trace, between 16 and 32 (measured on SmolLM2-135M: at 17
    tokens 16 and 32 copies run within 3% of each other and 8 is 30% slower; at 64 tokens 4
    copies take 1.7× as long as 16; the trace's memory grows with the batch; tiny models get
    32), and no more than :data:`CPU_MEMORY_SHARE` of the memory available holds (at least
    one).  On a GPU: as many as a quarter of its free memory holds, at most 512."""
    cfg = model.hf_model.config
    d, n_layers = cfg.hidden_size, cfg.num_hidden_layers
    per_copy = TRACE_TENSORS_PER_COPY * n_layers * (n_tokens or 64) * d * 4
    device = (
        torch.device(model.device) if not isinstance(model.device, torch.device) else model.device
    )
    if device.type != "cuda" or not torch.cuda.is_available():
        batch = max(16, min(32, CPU_TRACE_BYTES // per_copy))
        free = available_memory()
        budget = batch if free is None else int(CPU_MEMORY_SHARE * free // per_copy)
        return int(max(1, min(batch, budget)))
    free, _ = torch.cuda.mem_get_info(device)
    return int(max(32, min(512, free // 4 // per_copy)))


def _starts_special(model, tokens: torch.Tensor) -> bool:
    """Whether the prompt's first token is one of the tokenizer's special tokens (BOS and the like)."""
    special = set(getattr(model.tokenizer, "all_special_ids", []) or [])
    return len(tokens) > 1 and int(tokens[0]) in special


def _mapped_encoders(model, active: ActiveFeatures) -> torch.Tensor | None:
    """With memory-mapped transcoders, every active feature's encoder column [n_active, d], read
    one layer at a time (its pages given back after); else None (columns read when needed)."""
    tcs = model.transcoders
    if not any(getattr(tc, "mapped", False) for tc in tcs):
        return None
    out = torch.empty(len(active.layer), tcs[0].d_model, dtype=tcs[0].W_enc.dtype)
    for layer in torch.unique(active.layer).tolist():
        rows = (active.layer == layer).nonzero().squeeze(1)
        out[rows] = tcs[layer].W_enc[:, active.index[rows]].T
        tcs[layer].drop_pages()
    return out


def _computer(model, runner: RowRunner, active: ActiveFeatures):
    """``compute(indices)``: the rows of these active features, in the given order."""
    table = _mapped_encoders(model, active)

    def compute(chosen: np.ndarray) -> None:
        c = torch.from_numpy(np.asarray(chosen, dtype=np.int64))
        layers, index = active.layer[c], active.index[c]

        def encoders(s: slice) -> torch.Tensor:
            if table is not None:
                return table[c[s]]
            return torch.stack(
                [model.transcoders[int(l)].W_enc[:, int(f)] for l, f in zip(layers[s], index[s])]
            )

        runner(c.tolist(), layers, active.position[c], encoders)

    return compute


def _greedy_rows(
    model, runner: RowRunner, active: ActiveFeatures, n_keep: int, weights: np.ndarray
) -> np.ndarray:
    """At most ``n_keep`` features, the most influential on the targets first (the greedy
    order jumps between positions: it keeps the full trace)."""
    engine = runner.engine
    engine.buckets = [engine.T]
    compute = _computer(model, runner, active)
    visited = [np.zeros(0, dtype=np.int64)]
    for chosen in greedy_rounds(
        runner.store, weights, len(active), n_keep, engine.n_sources, engine.batch
    ):
        compute(chosen)
        visited.append(chosen)
    return np.concatenate(visited)


def _check(model, batch_size, max_feature_nodes, max_n_logits, desired_logit_prob, rows) -> tuple:
    """The numeric arguments, checked (numpy and tensor scalars accepted), and the mode."""
    if rows not in ("adaptive", "all"):
        raise ValueError(f"rows must be 'adaptive' or 'all', got {rows!r}")
    if model.hf_model.training:
        raise ValueError(
            "the model is in training mode (dropout on): its graph would change from run to run; "
            "call model.hf_model.eval() first"
        )
    if max_feature_nodes is not None:
        max_feature_nodes = as_int(
            "max_feature_nodes (non-negative or None)", max_feature_nodes, minimum=0
        )
    if batch_size is not None:
        batch_size = as_int("batch_size", batch_size, minimum=1)
    return (
        batch_size,
        max_feature_nodes,
        as_int("max_n_logits", max_n_logits, minimum=1),
        as_float("desired_logit_prob", desired_logit_prob, 0.0, 1.0),
    )


def _check_flags(bos_features, progress, prune_thresholds) -> tuple[float, float]:
    """``bos_features`` and ``progress`` are booleans (``progress`` may be None); the thresholds
    two numbers in [0, 1]."""
    if not isinstance(bos_features, bool | np.bool_):
        raise ValueError(f"bos_features must be True or False, got {bos_features!r}")
    if progress is not None and not isinstance(progress, bool | np.bool_):
        raise ValueError(f"progress must be True, False or None, got {progress!r}")
    if (
        isinstance(prune_thresholds, str)
        or not hasattr(prune_thresholds, "__len__")
        or len(prune_thresholds) != 2
    ):
        raise ValueError(
            f"prune_thresholds must be (node_threshold, edge_threshold), got {prune_thresholds!r}"
        )
    bos_features = bool(bos_features)
    return (
        as_float("prune_thresholds[0] (node_threshold)", prune_thresholds[0], 0.0, 1.0),
        as_float("prune_thresholds[1] (edge_threshold)", prune_thresholds[1], 0.0, 1.0),
    )


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


__all__ = ["attribute", "default_batch_size", "graph_capture"]
