"""``ReplacementModel``: the replacement model users hold, with interventions as methods.

The core (tracing, tokens, captures) is :class:`~attribution_nb.replacement.ReplacementCore`;
interventions and generation are functions in :mod:`attribution_nb.interventions` that take
the core.  This class only joins the two, so that ``model.intervene(...)`` and
``model.generate(...)`` read as the public API says, while the dependencies run one way:
core ← interventions ← model.
"""

from __future__ import annotations

import pandas as pd
import torch

from . import experiments as ex
from . import interventions as iv
from . import validation
from .replacement import ReplacementCore


class ReplacementModel(ReplacementCore):
    """A causal LM with one transcoder per layer, traced with nnsight.

    Args:
        hf_model: a Hugging Face ``*ForCausalLM`` (Llama, Mistral, Qwen2, Qwen3, Gemma-2,
            Gemma-3, GPT-2 families), or an nnsight ``TransformersModel`` wrapping one (for remote
            runs its weights may stay on the meta device: only the server holds them).
        tokenizer: its tokenizer; prompts are encoded with special tokens (BOS) as it adds them.
        transcoders: one :class:`Transcoder` per layer (a list or a :class:`TranscoderSet`).
        architecture: where the parts are (:class:`~attribution_nb.architectures.Architecture`);
            found from ``hf_model.config.model_type`` when omitted, and checked against the config.
        name: a short name shown in graphs.
        feature_labels: ``{(layer, feature): label}``.
        remote: nnsight's remote execution for :func:`~attribution_nb.attribute`, :meth:`logits`,
            interventions and generation: ``True`` runs the model's traces on NDIF
            (``nnsight.CONFIG`` holds the API key), a URL another server, ``"local"`` nnsight's
            local simulation (each request is serialized and run here as a server would run it).
            The transcoders stay here; requests carry the active features' decoder rows.

    The model and transcoders given are used in place, not copied (a copy would double the memory
    of a large model): the model is put in eval mode with its weights' gradients turned off, and the
    transcoders are moved to the model's device and dtype; :meth:`close` puts them back.
    """

    def intervened_logits(
        self, prompt, interventions, mode: str = "free"
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Last-position logits [V] before and after ``interventions`` (see :meth:`intervene`)."""
        return iv.intervened_logits(self, prompt, interventions, mode)

    def intervene(self, prompt, interventions, mode: str = "free", top_k: int = 10) -> pd.DataFrame:
        """Clamp, scale, ablate or steer features and re-run the model.

        ``interventions`` maps targets to what to do, e.g. ``{"f:L2:P5:17": 0}`` (ablate),
        ``{(2, 5, 17): Multiply(-2)}``, ``{(2, None, 17): Steer(4.0)}`` (every position), or
        ``{("f:L2:P5:17", "f:L3:P5:9"): 0}`` (a supernode). ``mode="free"`` runs the model
        normally with the clamps; ``"frozen"`` keeps attention, norms and all other feature
        activations fixed (direct effects only). Returns the top tokens before and after.
        """
        return iv.intervene(self, prompt, interventions, mode, top_k)

    def swap(
        self,
        prompt,
        remove,
        source_prompt,
        add,
        *,
        position: int | None = None,
        mode: str = "free",
        top_k: int = 10,
    ) -> pd.DataFrame:
        """Supernode swap: ablate the ``remove`` features and clamp the ``add`` features to the
        activations ``source_prompt`` gives them (e.g. Texas features out, California features in).

        ``add`` are feature node ids of ``source_prompt``'s graph; each is clamped at ``position``
        of ``prompt`` (default: the position of the ``remove`` features, which must share one).
        Returns the before/after table; :meth:`swap_interventions` gives the clamps themselves
        (for :meth:`generate`).
        """
        return self.intervene(
            prompt,
            self.swap_interventions(remove, source_prompt, add, position=position),
            mode=mode,
            top_k=top_k,
        )

    def swap_interventions(
        self, remove, source_prompt, add, *, position: int | None = None
    ) -> dict:
        """The clamps of :meth:`swap`: ``remove`` ablated, ``add`` set to their activations on
        ``source_prompt``, at ``position`` (default: where the ``remove`` features sit)."""
        return iv.swap_interventions(self, remove, source_prompt, add, position=position)

    def patch_position(
        self,
        prompt,
        source_prompt,
        position: int = -1,
        source_position: int = -1,
        layers=None,
        top_k: int = 10,
    ) -> pd.DataFrame:
        """Activation patching at one position: every feature there (of ``layers``, default all) set
        to its value at ``source_position`` of ``source_prompt`` (see :mod:`attribution_nb.experiments`).
        It moves all the position holds; a supernode claim needs :func:`~attribution_nb.swap_test`."""
        return ex.patch_position(
            self, prompt, source_prompt, position, source_position, layers, top_k
        )

    def steer(
        self, prompt, direction, layer: int, position: int = -1, scale: float = 1.0, top_k: int = 10
    ) -> pd.DataFrame:
        """Add ``scale`` × ``direction`` (a residual-stream vector, e.g. from
        :func:`~attribution_nb.mean_difference`) after ``layer`` at ``position``; the top tokens
        before and after."""
        return ex.steer(self, prompt, direction, layer, position, scale, top_k)

    def generate(
        self,
        prompt,
        interventions=None,
        max_new_tokens: int = 20,
        *,
        every_position: bool = False,
        temperature: float = 0.0,
        seed: int = 0,
        stop: str | None = None,
    ) -> dict:
        """Continue ``prompt`` with and without ``interventions`` (free mode).

        Interventions apply at the prompt positions they name; with ``every_position=True``
        those given for every position (``position=None``) also apply to each new token.
        Greedy when ``temperature`` is 0. Returns ``{"before": text, "after": text}``.
        """
        return iv.generate(
            self,
            prompt,
            interventions,
            max_new_tokens,
            every_position=every_position,
            temperature=temperature,
            seed=seed,
            stop=stop,
        )

    def validate(
        self,
        graph,
        groups=None,
        *,
        how: float = 0.0,
        mode: str = "free",
        target: str | None = None,
        tolerance: float = 0.02,
    ) -> pd.DataFrame:
        """Test ``graph``'s claims about ``groups`` of features (default: its supernodes, or its top
        features by layer and position) by inhibiting each group: the change of the target's logit
        and of every group it can reach, predicted by the graph's edges and observed in the model
        (see :mod:`attribution_nb.validation`)."""
        return validation.validate(
            graph, self, groups, how=how, mode=mode, target=target, tolerance=tolerance
        )
