"""Feature labels and top-activating contexts from Neuronpedia, for published transcoder sets.

Neuronpedia serves one JSON document per feature (``GET /api/feature/{model}/{source}/{index}``):
its ``explanations`` (each with a ``description``), its top ``activations`` (each a list of
``tokens`` with per-token ``values``, its ``maxValue`` and ``maxValueTokenIndex``) and its top
positive and negative output tokens (``pos_str`` / ``neg_str``).  :func:`neuronpedia_features`
fetches the features asked for (a graph's, typically), keeps every response as a JSON file under
``cache_dir`` (read again without network), and fills ``model.feature_labels`` and
``model.feature_contexts`` — what graph labels and the widget's panel show.
"""

from __future__ import annotations

import json
import os
import urllib.request
from collections.abc import Callable, Iterable

import pandas as pd

from .io import write_text

API = "https://www.neuronpedia.org/api/feature/{model}/{source}/{index}"
DEFAULT_CACHE = os.path.join(os.path.expanduser("~"), ".cache", "attribution_nb", "neuronpedia")


def fetch_json(url: str, timeout: float = 20.0) -> dict:
    """GET ``url`` as JSON (network), with an error that names the URL."""
    request = urllib.request.Request(
        url, headers={"User-Agent": "attribution_nb", "Accept": "application/json"}
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return json.loads(response.read().decode("utf-8"))
    except (OSError, ValueError) as err:
        raise RuntimeError(
            f"could not fetch {url}: {err} (offline? the cache holds what was fetched before)"
        ) from None


def neuronpedia_features(
    model,
    features,
    *,
    model_id: str,
    source: str,
    cache_dir: str | None = None,
    fetch: Callable[[str], dict] | None = None,
    n_contexts: int = 5,
    before: int = 12,
) -> pd.DataFrame:
    """Labels and contexts of ``features`` from Neuronpedia, stored on ``model``.

    Args:
        features: ``(layer, feature)`` pairs, or a graph (its feature nodes).
        model_id: Neuronpedia's model name, e.g. ``"gemma-2-2b"``.
        source: its source name for a layer, with ``{layer}``, e.g. ``"{layer}-gemmascope-transcoder-16k"``.
        cache_dir: where responses are kept (default ``~/.cache/attribution_nb/neuronpedia``).
        fetch: ``url -> parsed JSON`` (default: an HTTP GET); not called for cached features.
    Returns a table: ``layer``, ``feature``, ``label``, ``top_context``, ``from_cache``.
    """
    _check_source(source)
    pairs = _pairs(features)
    cache = cache_dir or DEFAULT_CACHE
    rows = []
    for layer, feature in pairs:
        data, cached = _response(
            cache, model_id, source.replace("{layer}", str(layer)), feature, fetch or fetch_json
        )
        label, contexts = parse_feature(data, n_contexts, before)
        if label:
            model.feature_labels[(layer, feature)] = label
        if contexts:
            model.feature_contexts[(layer, feature)] = contexts
        rows.append(
            {
                "layer": layer,
                "feature": feature,
                "label": label,
                "top_context": contexts[0][0] if contexts else "",
                "from_cache": cached,
            }
        )
    return pd.DataFrame(rows, columns=["layer", "feature", "label", "top_context", "from_cache"])


def _check_source(source) -> None:
    """A source template is text with ``{layer}`` and no other braces (no format specs: it is never ``.format``-ed)."""
    if not isinstance(source, str) or len(source) > 200:
        raise ValueError(
            f"source must be a string of at most 200 characters with '{{layer}}', got {source!r:.80}"
        )
    rest = source.replace("{layer}", "")
    if "{layer}" not in source or "{" in rest or "}" in rest:
        raise ValueError(
            f"source must contain '{{layer}}' and no other braces (e.g. '{{layer}}-gemmascope-transcoder-16k'), "
            f"got {source!r:.80}"
        )


def _pairs(features) -> list[tuple[int, int]]:
    nodes = getattr(features, "nodes", None)
    if nodes is not None:
        feats = nodes[nodes["kind"] == "feature"]
        return list(
            dict.fromkeys((int(l), int(f)) for l, f in zip(feats["layer"], feats["feature"]))
        )
    if isinstance(features, Iterable):
        pairs = [tuple(p) for p in features]
        bad = [p for p in pairs if len(p) != 2 or not all(isinstance(x, int) and x >= 0 for x in p)]
        if not bad:
            return list(dict.fromkeys(pairs))
        raise ValueError(
            f"features must be (layer, feature) pairs of non-negative ints, got {bad[0]!r}"
        )
    raise ValueError(
        f"features must be (layer, feature) pairs or a graph, got {type(features).__name__}"
    )


def _response(cache: str, model_id: str, source: str, feature: int, fetch) -> tuple[dict, bool]:
    """The feature's JSON: from the cache, or fetched and cached."""
    for part in (model_id, source):
        if not part or "/" in part or "\\" in part or part in (".", ".."):
            raise ValueError(
                f"Neuronpedia model and source names hold no path separators, got {part!r}"
            )
    path = os.path.join(cache, model_id, source, f"{feature}.json")
    if os.path.isfile(path):
        try:
            with open(path, encoding="utf-8") as f:
                return json.load(f), True
        except (OSError, ValueError) as err:
            raise ValueError(
                f"{path}: not a readable cached Neuronpedia response ({err}); delete it to fetch again"
            ) from None
    data = fetch(API.format(model=model_id, source=source, index=feature))
    if not isinstance(data, dict):
        raise ValueError(
            f"Neuronpedia answered {type(data).__name__} for {model_id}/{source}/{feature}, not a feature"
        )
    os.makedirs(os.path.dirname(path), exist_ok=True)
    write_text(path, json.dumps(data))
    return data, False


def parse_feature(data: dict, n_contexts: int = 5, before: int = 12) -> tuple[str, list]:
    """``(label, [[context, activation], …])`` from one feature's Neuronpedia JSON; the context
    is the tokens before the strongest one and that token in brackets, as elsewhere here."""
    explanations = [
        e.get("description", "") for e in data.get("explanations") or [] if isinstance(e, dict)
    ]
    label = next((e.strip() for e in explanations if e and e.strip()), "")
    contexts: list[list] = []
    for act in data.get("activations") or []:
        tokens, i = act.get("tokens") or [], act.get("maxValueTokenIndex")
        if not isinstance(i, int) or not 0 <= i < len(tokens):
            continue
        text = "".join(tokens[max(0, i - before) : i])
        token = tokens[i]
        lead = token[: len(token) - len(token.lstrip())]
        contexts.append(
            [f"{text}{lead}[{token.strip()}]", round(float(act.get("maxValue", 0.0)), 3)]
        )
        if len(contexts) == n_contexts:
            break
    return label, contexts
