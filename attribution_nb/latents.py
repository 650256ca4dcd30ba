"""Features labelled by a known truth: precision, recall, F1 and mutual information against latents.

A *probe* is a prompt, a position in it, and the values of the latent variables there that the
world (or the user) knows: ``{"prompt": "fact : the capital of the state containing dallas is",
"state": "texas", "capital": "austin"}`` (position -1, the last token, unless ``"position"`` is
given). :func:`latent_labels` runs every probe through the model, reads every transcoder feature
at the probe's position, and scores each feature as a detector of each latent value:

* a feature *fires* on a probe when its activation is above ``threshold`` (0);
* ``precision`` = P(value | fires) over *all* probes (a probe may leave a latent blank: firing there
  counts against the feature, so a feature that fires on every prompt is no treatment feature),
  ``recall`` = P(fires | value), ``f1`` their harmonic mean;
* ``mi_bits`` = the mutual information (bits) between the firing and the latent variable, "not
  defined" being one more of its values.

The table ranks what a label only suggests: a feature labelled "dallas/houston → austin" by its
contexts may fire for three states; its Texas F1 says so. :func:`attach_latent_labels` writes the
best latent of each feature into the model's labels, so graphs, the panel and exported pages show
it beside the context label.
"""

from __future__ import annotations

import math
from collections import defaultdict

import numpy as np
import pandas as pd
import torch

from .contexts import _activations
from .replacement import ReplacementCore

LATENT_COLUMNS = [
    "layer",
    "feature",
    "latent",
    "value",
    "precision",
    "recall",
    "f1",
    "mi_bits",
    "fires",
    "n_value",
]


def _probe_frame(probes) -> pd.DataFrame:
    df = pd.DataFrame(probes) if not isinstance(probes, pd.DataFrame) else probes.copy()
    if len(df) == 0:
        raise ValueError(
            "probes is empty: give a list of {'prompt': ..., '<latent>': value} dicts or a DataFrame"
        )
    if "prompt" not in df.columns:
        raise ValueError(f"probes need a 'prompt' column; got columns {list(df.columns)}")
    bad = df.prompt[~df.prompt.map(lambda p: isinstance(p, str) and bool(p.strip()))]
    if len(bad):
        raise ValueError(f"probe prompts must be non-empty strings, got {bad.iloc[0]!r}")
    df["position"] = df["position"].fillna(-1) if "position" in df.columns else -1
    bad = df.position[~df.position.map(lambda p: float(p).is_integer())]
    if len(bad):
        raise ValueError(f"probe positions must be whole numbers, got {bad.iloc[0]!r}")
    df["position"] = df.position.astype(int)
    if not [c for c in df.columns if c not in ("prompt", "position")]:
        raise ValueError(
            "probes name no latent: add columns such as 'state' or 'rhyme' beside 'prompt'"
        )
    return df.reset_index(drop=True)


@torch.no_grad()
def probe_activations(
    model: ReplacementCore, prompts, positions=-1, batch_size: int = 32
) -> list[torch.Tensor]:
    """Every layer's transcoder activations [N, F] at one position of each prompt (default the
    last). Prompts of one token length run together, so no padding enters any activation."""
    prompts = list(prompts)
    positions = (
        [positions] * len(prompts) if isinstance(positions, int) else [int(p) for p in positions]
    )
    if len(positions) != len(prompts):
        raise ValueError(f"{len(positions)} positions for {len(prompts)} prompts")
    tokens = [model.tokenize(p) for p in prompts]
    for p, t, pos in zip(prompts, tokens, positions):
        if not -len(t) <= pos < len(t):
            raise ValueError(f"position {pos} is outside the prompt {p!r} ({len(t)} tokens)")
    by_len: dict[int, list[int]] = defaultdict(list)
    for i, t in enumerate(tokens):
        by_len[len(t)].append(i)
    out = [torch.zeros(len(prompts), tc.d_features) for tc in model.transcoders]
    for idx in by_len.values():
        for s in range(0, len(idx), batch_size):
            chunk = idx[s : s + batch_size]
            acts = _activations(model, torch.stack([tokens[i] for i in chunk]))
            pos = torch.tensor([positions[i] for i in chunk])
            for layer, a in enumerate(acts):
                out[layer][chunk] = a[torch.arange(len(chunk)), pos].float()
    return out


def latent_labels(
    model: ReplacementCore,
    probes,
    *,
    threshold: float = 0.0,
    min_fires: int = 1,
    undefined: str = "negative",
    attach: bool = False,
    min_f1: float = 0.5,
) -> pd.DataFrame:
    """Score every feature against every latent value of ``probes`` (see the module's docstring).

    Returns one row per (feature, latent value) where the feature fires on at least
    ``min_fires`` probes of that value: ``layer, feature, latent, value, precision, recall, f1,
    mi_bits, fires`` (probes it fires on, among those with the latent known) and ``n_value``
    (probes with that value), sorted by F1. ``undefined="negative"`` (the default, for labels) counts
    firing on probes that leave the latent blank against precision; ``"ignore"`` scores each latent
    only among the probes that define it ("which state, among two-hop prompts?": how a case study
    picks its supernodes). :func:`best_latents` keeps each feature's best row;
    ``attach=True`` also writes labels of F1 ≥ ``min_f1`` into ``model`` (:func:`attach_latent_labels`).
    """
    if undefined not in ("negative", "ignore"):
        raise ValueError(f"undefined must be 'negative' or 'ignore', got {undefined!r}")
    df = _probe_frame(probes)
    acts = probe_activations(model, df.prompt.tolist(), df.position.tolist())
    rows = [
        _latent_scores(df, latent, acts, threshold, min_fires, undefined)
        for latent in df.columns
        if latent not in ("prompt", "position") and df[latent].notna().any()
    ]
    rows = [r for part in rows for r in part]
    out = pd.concat(rows, ignore_index=True) if rows else pd.DataFrame(columns=LATENT_COLUMNS)
    out = out.sort_values(["f1", "mi_bits"], ascending=False, kind="stable").reset_index(drop=True)
    if attach:
        attach_latent_labels(model, out, min_f1=min_f1)
    return out


def _value_columns(df: pd.DataFrame, latent: str, undefined: str):
    """The probes a latent is scored on (``used``), its values' names, and one column per value
    (and, with ``undefined="negative"``, one for the probes where it is not defined: they count
    against precision: firing on a capital prompt is no evidence for a treatment)."""
    known = df[latent].notna().to_numpy()
    names, codes = np.unique(df[latent][known].astype(str).to_numpy(), return_inverse=True)
    used = np.arange(len(df)) if undefined == "negative" else np.flatnonzero(known)
    onehot = torch.zeros(len(df), len(names) + 1)
    onehot[torch.from_numpy(np.flatnonzero(known)), torch.from_numpy(codes)] = 1.0
    onehot[torch.from_numpy(np.flatnonzero(~known)), len(names)] = 1.0
    onehot = onehot[torch.from_numpy(used)]
    return used, names, onehot[:, onehot.sum(0) > 0]


def _latent_scores(df, latent: str, acts, threshold: float, min_fires: int, undefined: str) -> list:
    """One frame per layer: every (feature, value of ``latent``) that fires on ≥ ``min_fires``."""
    used, names, onehot = _value_columns(df, latent, undefined)
    n_value = onehot.sum(0)  # [V (+1)]
    rows = []
    for layer, a in enumerate(acts):
        fires = (a[torch.from_numpy(used)] > threshold).float()  # [N, F]
        tp = fires.T @ onehot  # [F, V (+1)]
        n_fire = fires.sum(0)  # [F]
        precision = tp / n_fire.clamp(min=1)[:, None]
        recall = tp / n_value[None]
        f1 = 2 * tp / (n_fire[:, None] + n_value[None])
        mi = _mutual_information(tp, n_fire, n_value, len(used))  # [F]
        f, v = torch.nonzero(
            tp[:, : len(names)] >= max(min_fires, 1), as_tuple=True
        )  # defined values
        rows.append(
            pd.DataFrame(
                {
                    "layer": layer,
                    "feature": f.numpy(),
                    "latent": latent,
                    "value": names[v.numpy()],
                    "precision": precision[f, v].double().numpy(),
                    "recall": recall[f, v].double().numpy(),
                    "f1": f1[f, v].double().numpy(),
                    "mi_bits": mi[f].double().numpy(),
                    "fires": n_fire[f].long().numpy(),
                    "n_value": n_value[v].long().numpy(),
                }
            )
        )
    return rows


def _mutual_information(
    tp: torch.Tensor, n_fire: torch.Tensor, n_value: torch.Tensor, n: int
) -> torch.Tensor:
    """I(fires; latent) in bits for each feature, from the counts of the 2 × V table."""
    tp = tp.double()
    fn = n_value.double()[None] - tp  # value, not firing
    total = torch.zeros(tp.shape[0], dtype=torch.float64)
    for joint, marg in ((tp, n_fire.double()), (fn, n - n_fire.double())):
        p_xy = joint / n
        ratio = joint * n / (marg[:, None] * n_value.double()[None]).clamp(min=1e-12)
        total += torch.where(
            joint > 0, p_xy * torch.log2(ratio.clamp(min=1e-300)), torch.zeros_like(p_xy)
        ).sum(1)
    return total.clamp(min=0)


def best_latents(table: pd.DataFrame, latent: str | None = None) -> pd.DataFrame:
    """Each feature's best (highest F1) latent value, optionally of one ``latent`` only."""
    t = table if latent is None else table[table.latent == latent]
    return t.drop_duplicates(["layer", "feature"], keep="first").reset_index(drop=True)


def best_per_value(table: pd.DataFrame, latent: str | None = None) -> pd.DataFrame:
    """For each latent value, its best feature (highest F1): how well the transcoders isolate it."""
    t = table if latent is None else table[table.latent == latent]
    return t.drop_duplicates(["latent", "value"], keep="first").reset_index(drop=True)


def latent_text(row) -> str:
    """``"state=texas F1 0.91"``: a latent label as graphs show it."""
    return f"{row['latent']}={row['value']} F1 {row['f1']:.2f}"


def attach_latent_labels(model: ReplacementCore, table: pd.DataFrame, min_f1: float = 0.5) -> int:
    """Prefix each feature's label with its best latent value where that F1 ≥ ``min_f1``
    (``"state=texas F1 0.91 · dallas/houston → austin"``); returns how many labels changed.
    The latent part of an earlier call is replaced, not stacked."""
    if not 0.0 <= min_f1 <= 1.0 or math.isnan(min_f1):
        raise ValueError(f"min_f1 must be in [0, 1], got {min_f1!r}")
    latents = model.feature_latents
    for key, text in list(latents.items()):  # take an earlier call's prefix off
        label = model.feature_labels.get(key, "")
        if label.startswith(text):
            model.feature_labels[key] = label[len(text) :].removeprefix(" · ")
    latents = {}
    for _, row in best_latents(table).iterrows():
        if row.f1 >= min_f1:
            key = (int(row.layer), int(row.feature))
            latents[key] = latent_text(row)
            context = model.feature_labels.get(key, "")
            model.feature_labels[key] = latents[key] + (f" · {context}" if context else "")
    model.feature_latents = latents
    return len(latents)
