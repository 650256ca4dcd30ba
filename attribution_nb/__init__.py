"""attribution_nb: attribution graphs (circuit tracing) for Jupyter notebooks.

    import attribution_nb as anb
    model = anb.load_model()                       # embedded demo model, CPU, offline
    graph = anb.attribute(model, "fact : the capital of the state containing dallas is")
    graph.nodes, graph.edges, graph.logits         # pandas DataFrames
    graph.prune(node_threshold=0.8, edge_threshold=0.98).scores()
    anb.GraphWidget(graph, model)                  # the interactive view, in JupyterLab

The package, in the order data flows (each a module or a small package):
``architectures`` (where each model family reads and writes) → ``backend`` (local or remote
execution) → ``tracing`` (capture and the frozen linear trace) → ``replacement`` / ``model``
(the replacement model) → ``attribution`` (targets, rows, schedule, assembly) → ``graph``
(tables, maths, files, export) → ``views`` (widget, standalone page) and ``interventions``.
``transcoders`` (the transcoder, activations, sets, file formats), ``ids`` (node ids) and
``io`` (safetensors, atomic writes) serve them all; ``demo`` holds the embedded demo model,
tiny models of every family and the demo's training script.
"""

from .architectures import ARCHITECTURES, Architecture
from .attention import attention_edges, attention_heads, attention_scores, attribute_attention, edge_heads
from .attribution import attribute
from .attribution.targets import Direction, Logit, LogitDiff, Target
from .contexts import feature_contexts
from .dashboards import neuronpedia_features
from .experiments import (SwapReport, feature_means, mean_difference, minimal_k, patch_position, residuals, steer,
                          swap_test)
from .graph import AttributionGraph
from .ids import NodeId
from .interventions import Multiply, Steer
from .latents import attach_latent_labels, best_latents, best_per_value, latent_labels, probe_activations
from .loading import load_model
from .model import ReplacementModel
from .transcoders import Transcoder, TranscoderSet
from .validation import validate, validation_figure
from .views.widget import GraphWidget

__all__ = ["ARCHITECTURES", "Architecture", "AttributionGraph", "Direction", "GraphWidget", "Logit", "LogitDiff",
           "Multiply", "NodeId", "ReplacementModel", "Steer", "Target", "Transcoder", "TranscoderSet", "attribute",
           "attention_edges", "attention_heads", "attention_scores", "attribute_attention", "edge_heads",
           "feature_contexts", "load_model", "neuronpedia_features", "validate", "validation_figure",
           "SwapReport", "attach_latent_labels", "best_latents", "best_per_value", "feature_means", "latent_labels",
           "mean_difference", "minimal_k", "patch_position", "probe_activations", "residuals", "steer", "swap_test"]
__version__ = "0.1.0"
