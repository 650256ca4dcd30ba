"""Perturbation experiments named for what they are, with their controls.

* :func:`patch_position` — **activation patching** (in the feature basis): every transcoder
  feature at one position set to what another prompt gives it there. It moves whatever the
  position holds; it says nothing about which features matter.
* :func:`swap_test` — a **supernode swap** over many items: the source value's features inhibited
  (``Multiply(-inhibit)``; 0 ablates) and the target value's features clamped to ``scale`` × their
  mean activation on reference prompts of the target value, at one position; each item's hit is
  the expected top token (or a ``check`` of a greedy continuation). Every item is run again with a
  **random control of the same size**: as many other features, from the same layers, inhibited
  (chosen among those active there) and as many clamped to the same values.
* :func:`minimal_k` — the swap with the ``k`` best features of each value, for growing ``k``.
* :func:`mean_difference` and :func:`steer` — a direction in the residual stream (the mean
  difference between two sets of prompts, e.g. one state's cities and another's in one frame)
  added at a layer and position of another prompt: the cross-frame transfer test.

Every rate here is over all the items given; the notebooks pass held-out items.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

import nnsight
import pandas as pd
import torch

from .architectures import get_module
from .checks import as_float, as_int
from .interventions import Multiply, _continue, free_logits, intervention_table, parse_interventions
from .latents import probe_activations
from .replacement import ReplacementCore

Feature = tuple[int, int]  # (layer, feature)


def _position(tokens: torch.Tensor, position: int, prompt) -> int:
    position = as_int("position", position)
    if not -len(tokens) <= position < len(tokens):
        raise ValueError(
            f"position {position} is outside the prompt {prompt!r} ({len(tokens)} tokens)"
        )
    return position % len(tokens)


# -- activation patching ---------------------------------------------------------------------
def patch_position_interventions(
    model: ReplacementCore,
    prompt,
    source_prompt,
    position: int = -1,
    source_position: int = -1,
    layers=None,
) -> dict:
    """The clamps of :func:`patch_position`: every feature of ``layers`` (default all) active at
    ``position`` of either prompt set to its activation at ``source_position`` of ``source_prompt``."""
    tokens, src = model.tokenize(prompt), model.tokenize(source_prompt)
    pos, spos = _position(tokens, position, prompt), _position(src, source_position, source_prompt)
    if layers is not None and (
        isinstance(layers, str | bytes | dict) or not hasattr(layers, "__iter__")
    ):
        raise ValueError(f"layers must be a list of layer numbers (or None: all), got {layers!r}")
    layers = (
        range(model.n_layers)
        if layers is None
        else [as_int("layer", layer, 0, model.n_layers - 1) for layer in layers]
    )
    here, there = model.capture(tokens), model.capture(src)
    clamps = {}
    for layer in layers:
        a, b = here.activations[layer][pos], there.activations[layer][spos]
        for f in torch.nonzero((a > 0) | (b > 0)).flatten().tolist():
            clamps[(layer, pos, f)] = float(b[f])
    return clamps


def patch_position(
    model: ReplacementCore,
    prompt,
    source_prompt,
    position: int = -1,
    source_position: int = -1,
    layers=None,
    top_k: int = 10,
) -> pd.DataFrame:
    """Activation patching at one position (see the module's docstring): the top tokens before and
    after every feature there takes ``source_prompt``'s value (free mode)."""
    clamps = patch_position_interventions(
        model, prompt, source_prompt, position, source_position, layers
    )
    tokens = model.tokenize(prompt)
    after = free_logits(model, tokens, parse_interventions(model, clamps, len(tokens)))[-1]
    return intervention_table(model, model.logits(tokens), after, as_int("top_k", top_k, minimum=1))


# -- supernode swaps ---------------------------------------------------------------------------
def feature_means(
    model: ReplacementCore, prompts, features, position: int = -1
) -> dict[Feature, float]:
    """Each feature's mean activation at ``position`` of ``prompts`` (the values a swap clamps to)."""
    prompts = list(prompts)
    if not prompts:
        raise ValueError("feature_means needs at least one reference prompt")
    acts = probe_activations(model, prompts, position)
    return {(int(l), int(f)): float(acts[l][:, f].mean()) for l, f in features}


def swap_clamps(
    position: int, remove, add_values: dict, *, inhibit: float = 2.0, scale: float = 4.0
) -> dict:
    """``{(layer, position, feature): how}``: ``remove`` multiplied by ``-inhibit`` (0 when
    ``inhibit`` is 0: ablated), ``add_values`` ({(layer, feature): value}) clamped to ``scale`` × value."""
    clamps: dict = {}
    for layer, f in remove:
        clamps[(layer, position, f)] = Multiply(-inhibit) if inhibit else 0.0
    for (layer, f), value in add_values.items():
        clamps[(layer, position, f)] = scale * value
    return clamps


@dataclass
class SwapReport:
    """What :func:`swap_test` measured: ``table`` (one row per item), the swap's hit ``rate`` and
    the random control's ``control_rate``, over ``n`` items."""

    table: pd.DataFrame
    settings: dict = field(default_factory=dict)

    @property
    def n(self) -> int:
        return len(self.table)

    @property
    def rate(self) -> float:
        return float(self.table.hit.mean()) if self.n else float("nan")

    @property
    def control_rate(self) -> float:
        return (
            float(self.table.control_hit.mean())
            if self.n and "control_hit" in self.table
            else float("nan")
        )

    def __repr__(self) -> str:
        ctrl = (
            f", random same-size control {self.table.control_hit.sum()}/{self.n}"
            if "control_hit" in self.table
            else ""
        )
        return f"SwapReport: {self.table.hit.sum()}/{self.n} hits ({self.rate:.0%}){ctrl}; {self.settings}"


def _items(items) -> pd.DataFrame:
    df = pd.DataFrame(items) if not isinstance(items, pd.DataFrame) else items.copy()
    for col in ("prompt", "source"):
        if col not in df.columns:
            raise ValueError(f"items need a {col!r} column; got {list(df.columns)}")
    for col, default in (("target", None), ("expected", None), ("position", -1), ("forced", "")):
        if col not in df.columns:
            df[col] = default
    return df.reset_index(drop=True)


def _outcome(model, tokens, clamps, check, item, max_new_tokens):
    ops = parse_interventions(model, clamps, len(tokens))
    if check is None:
        top = model.tokenizer.decode([int(free_logits(model, tokens, ops)[-1].argmax())]).strip()
        return top, top == item.expected
    text = _continue(model, tokens, ops, max_new_tokens, 0.0, 0, None)
    return text, bool(check(item, text))


def swap_test(
    model: ReplacementCore,
    items,
    supernodes: dict,
    reference: dict,
    *,
    inhibit: float = 2.0,
    scale: float = 4.0,
    control: bool = True,
    seed: int = 0,
    check=None,
    max_new_tokens: int = 8,
) -> SwapReport:
    """Swap (or, where an item's ``target`` is None, only inhibit) supernodes on every item.

    ``items``: rows with ``prompt``, ``source`` (the value whose supernode is inhibited),
    ``target`` (whose supernode is clamped in, or None), ``expected`` (the top token that counts as a
    hit), optionally ``position`` (-1) and ``forced`` (text appended after the prompt and kept:
    teacher forcing; the clamps stay at the prompt's position). ``supernodes``: {value: [(layer,
    feature)]}; ``reference``: {value: {(layer, feature): mean activation}} (:func:`feature_means`).
    ``check(item, continuation) -> bool`` judges a greedy continuation of ``max_new_tokens``
    instead of the top token.
    """
    inhibit, scale = as_float("inhibit", inhibit, 0.0, 1e3), as_float("scale", scale, 0.0, 1e3)
    df = _items(items)
    for v in set(df.source) | {t for t in df.target if t is not None}:
        if v not in supernodes:
            raise ValueError(f"no supernode for {v!r}; supernodes has {sorted(supernodes)}")
    rng = random.Random(seed)
    rows = [
        _swap_one(
            model,
            item,
            supernodes,
            reference,
            (inhibit, scale),
            check,
            max_new_tokens,
            control and rng,
        )
        for item in df.itertuples()
    ]
    return SwapReport(pd.DataFrame(rows), {"inhibit": inhibit, "scale": scale})


def _swap_one(model, item, supernodes, reference, strength, check, max_new_tokens, rng) -> dict:
    """One item of :func:`swap_test`: its swap and (with ``rng``) a random control of the same size."""
    inhibit, scale = strength
    tokens = model.tokenize(item.prompt)
    pos = _position(tokens, item.position, item.prompt)
    if item.forced:
        tokens = model.tokenize(f"{item.prompt} {item.forced}")
    remove = list(supernodes[item.source])
    add = (
        {}
        if item.target is None
        else {k: reference[item.target][k] for k in supernodes[item.target]}
    )
    clamps = swap_clamps(pos, remove, add, inhibit=inhibit, scale=scale)
    out, hit = _outcome(model, tokens, clamps, check, item, max_new_tokens)
    row = {
        "prompt": item.prompt,
        "source": item.source,
        "target": item.target,
        "expected": item.expected,
        "after": out,
        "hit": hit,
        "n_removed": len(remove),
        "n_added": len(add),
    }
    if rng:
        c_remove, c_add = _random_like(model, tokens, pos, remove, add, rng)
        c_clamps = swap_clamps(pos, c_remove, c_add, inhibit=inhibit, scale=scale)
        row["control_after"], row["control_hit"] = _outcome(
            model, tokens, c_clamps, check, item, max_new_tokens
        )
    return row


def _random_like(model, tokens, pos, remove, add, rng):
    """Random features from the same layers as ``remove`` (among those active at ``pos``, when
    there are enough) and ``add`` (given the same values), none of them in either set."""
    cap = model.capture(tokens)
    taken = set(remove) | set(add)
    c_remove = []
    for layer in sorted({layer for layer, _ in remove}):
        need = sum(1 for l2, _ in remove if l2 == layer)
        active = [
            f
            for f in torch.nonzero(cap.activations[layer][pos] > 0).flatten().tolist()
            if (layer, f) not in taken
        ]
        pool = (
            active
            if len(active) >= need
            else [f for f in range(model.transcoders[layer].d_features) if (layer, f) not in taken]
        )
        c_remove += [(layer, f) for f in rng.sample(pool, need)]
    c_add = {}
    for layer in sorted({layer for layer, _ in add}):
        values = [v for (l2, _), v in add.items() if l2 == layer]
        free = [f for f in range(model.transcoders[layer].d_features) if (layer, f) not in taken]
        c_add.update({(layer, f): v for f, v in zip(rng.sample(free, len(values)), values)})
    return c_remove, c_add


def minimal_k(
    model: ReplacementCore, items, ranked: dict, reference: dict, ks=(1, 2, 4, 8, 16, 32), **kwargs
) -> pd.DataFrame:
    """The swap's hit rate with only the ``k`` best features of each value (``ranked``: {value:
    [(layer, feature)] best first}), for each ``k``: how many features the effect needs."""
    rows = []
    for k in ks:
        k = as_int("k", k, minimum=1)
        report = swap_test(
            model,
            items,
            {v: fs[:k] for v, fs in ranked.items()},
            reference,
            control=False,
            **kwargs,
        )
        rows.append(
            {"k": k, "rate": report.rate, "hits": int(report.table.hit.sum()), "n": report.n}
        )
    return pd.DataFrame(rows)


# -- directions --------------------------------------------------------------------------------
def _layer_output(layer_env):
    out = layer_env.output
    return out[0] if isinstance(out, tuple) else out


@torch.no_grad()
def residuals(model: ReplacementCore, prompts, layer: int, position: int = -1) -> torch.Tensor:
    """The residual stream [N, d] after ``layer`` at ``position`` of each prompt."""
    layer = as_int("layer", layer, 0, model.n_layers - 1)
    out = []
    for prompt in prompts:
        tokens = model.tokenize(prompt)
        pos = _position(tokens, position, prompt)
        with model.trace(tokens[None]):
            h = nnsight.save(
                _layer_output(get_module(model.nn, model.architecture.layers)[layer])[0, pos].cpu()
            )
        out.append(h.float())
    if not out:
        raise ValueError("residuals needs at least one prompt")
    return torch.stack(out)


def mean_difference(
    model: ReplacementCore, prompts_to, prompts_from, layer: int, position: int = -1
) -> torch.Tensor:
    """mean residual(``prompts_to``) − mean residual(``prompts_from``) after ``layer``: a direction
    that moves the model from the second kind of prompt towards the first."""
    return residuals(model, prompts_to, layer, position).mean(0) - residuals(
        model, prompts_from, layer, position
    ).mean(0)


@torch.no_grad()
def steered_logits(
    model: ReplacementCore,
    prompt,
    direction: torch.Tensor,
    layer: int,
    position: int = -1,
    scale: float = 1.0,
) -> torch.Tensor:
    """Last-position logits [V] with ``scale`` × ``direction`` added to the residual after ``layer``
    at ``position``."""
    layer = as_int("layer", layer, 0, model.n_layers - 1)
    scale = as_float("scale", scale, -1e6, 1e6)
    direction = torch.as_tensor(direction, dtype=torch.float32).flatten()
    d = model.unembed_weight.shape[-1]
    if direction.shape[0] != d or not torch.isfinite(direction).all():
        raise ValueError(
            f"direction must be {d} finite numbers (the residual width), got shape "
            f"{tuple(direction.shape)}"
        )
    tokens = model.tokenize(prompt)
    pos = _position(tokens, position, prompt)
    arch = model.architecture
    with model.trace(tokens[None]):
        env = get_module(model.nn, arch.layers)[layer]
        h = _layer_output(env)
        h[0, pos] += (scale * direction).to(h.device, h.dtype)
        logits = nnsight.save(get_module(model.nn, arch.unembed).output[0, -1].cpu())
    return model.softcap(logits.to(model.device))


def steer(
    model: ReplacementCore,
    prompt,
    direction,
    layer: int,
    position: int = -1,
    scale: float = 1.0,
    top_k: int = 10,
) -> pd.DataFrame:
    """The top tokens before and after steering (see :func:`steered_logits`)."""
    after = steered_logits(model, prompt, direction, layer, position, scale)
    return intervention_table(model, model.logits(prompt), after, as_int("top_k", top_k, minimum=1))
