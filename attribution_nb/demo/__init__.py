"""The embedded demo model, and tiny random models of each supported architecture.

The trained toy-world model lives in ``attribution_nb/demo_model/`` (made by
``python -m attribution_nb.demo.train``); where it is absent, ``load_demo_model()`` builds a
tiny random Llama with random JumpReLU transcoders over a small word vocabulary, and says so.
``tiny_model`` (:mod:`.tiny`) builds the same kind of model for any registered family.
The training script (:mod:`.train`) is not imported at run time.
"""

from __future__ import annotations

import json
import os
import warnings

import pandas as pd
from transformers.utils import logging as hf_logging

from ..latents import LATENT_COLUMNS, attach_latent_labels
from ..model import ReplacementModel
from ..pretrained import load_pretrained
from .tiny import FAMILIES, WORDS, tiny_config, tiny_model, word_tokenizer

DEMO_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "demo_model")


def load_demo_model(folder: str = DEMO_DIR) -> ReplacementModel:
    """The embedded demo model with its transcoders and feature labels (offline, CPU).

    Falls back to a tiny random Llama, with a warning, where the trained files are absent.
    """
    if not os.path.isfile(os.path.join(folder, "config.json")):
        warnings.warn(
            "the trained demo model is not shipped yet: using a tiny random Llama with random "
            "transcoders (graphs are well-formed but carry no meaning)",
            stacklevel=2,
        )
        return tiny_model("llama", seed=0)
    shown = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()  # a 4 MB model: no "Loading weights" bar in every notebook
    try:
        model = load_pretrained(folder, os.path.join(folder, "transcoders"), name="demo")
    finally:
        if shown:
            hf_logging.enable_progress_bar()
    with open(os.path.join(folder, "features.json"), encoding="utf-8") as f:
        features = json.load(f)

    def key(k):
        return tuple(int(x) for x in k.split(":"))

    model.feature_labels = {key(k): v for k, v in features["labels"].items()}
    model.feature_contexts = {key(k): v for k, v in features["contexts"].items()}
    if features.get("latents"):
        rows = [[*key(k), *v, None, None] for k, v in features["latents"].items()]
        best = pd.DataFrame(rows, columns=LATENT_COLUMNS).sort_values("f1", ascending=False)
        attach_latent_labels(model, best, min_f1=0.5)
    return model


__all__ = [
    "DEMO_DIR",
    "FAMILIES",
    "WORDS",
    "load_demo_model",
    "tiny_config",
    "tiny_model",
    "word_tokenizer",
]
