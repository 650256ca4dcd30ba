"""attribution_nb: attribution graphs (circuit tracing) for Jupyter notebooks.

    import attribution_nb as anb
    model = anb.load_model()                       # embedded demo model, CPU, offline
    graph = anb.attribute(model, "fact : the capital of the state containing dallas is")
    graph.nodes, graph.edges, graph.logits         # pandas DataFrames
    graph.prune(node_threshold=0.8, edge_threshold=0.98).scores()
    anb.GraphWidget(graph, model)                  # the interactive view, in JupyterLab

Where each concept lives, in the order data flows (a module imports only from its own line or
lines above it; ``tests/test_structure.py`` holds the same floors):

* ``checks``, ``ids``, ``io``, ``tokens`` — argument checks, node ids, safe writes, readable tokens
* ``architectures``, ``transcoders``, ``dashboards`` — where each family reads and writes; the
  transcoder and its file formats; Neuronpedia feature pages
* ``backend`` — local or remote execution (nnsight)
* ``tracing`` — the clean capture and the frozen linear trace
* ``replacement`` — the replacement model's core (runs, logits, unembedding)
* ``contexts``, ``interventions`` — top-activating contexts; clamps, steering, frozen and free runs
* ``latents`` — features labelled by known latents (precision, recall, F1, mutual information)
* ``graph``, ``validation``, ``experiments`` — the graph's tables, maths, files and exports; its
  claims tested by perturbation; swaps and activation patching with random controls
* ``attribution``, ``model`` — ``attribute`` in phases (targets; ``SourceLayout``, the node order;
  the row engine and its schedule; ``AttributionRun``, what assembly reads; the threads a shared
  CPU leaves); the model façade
* ``attention``, ``pretrained``, ``demo`` — attention edges by head; local folders; the demo world
* ``loading``, ``views`` — ``load_model``; the widget and the standalone page (one front end: the
  ES modules of ``views/static/js``, one state object)
* ``cli`` — the command line
"""

from .architectures import ARCHITECTURES, Architecture
from .attention import (
    attention_edges,
    attention_heads,
    attention_scores,
    attribute_attention,
    edge_heads,
)
from .attribution import attribute
from .attribution.targets import Direction, Logit, LogitDiff, Target
from .contexts import feature_contexts
from .dashboards import neuronpedia_features
from .experiments import (
    SwapReport,
    feature_means,
    mean_difference,
    minimal_k,
    patch_position,
    residuals,
    steer,
    swap_test,
)
from .graph import AttributionGraph
from .ids import NodeId
from .interventions import Multiply, Steer
from .latents import (
    attach_latent_labels,
    best_latents,
    best_per_value,
    latent_labels,
    probe_activations,
)
from .loading import load_model
from .model import ReplacementModel
from .transcoders import Transcoder, TranscoderSet
from .validation import validate, validation_figure
from .views.widget import GraphWidget

__all__ = [
    "ARCHITECTURES",
    "Architecture",
    "AttributionGraph",
    "Direction",
    "GraphWidget",
    "Logit",
    "LogitDiff",
    "Multiply",
    "NodeId",
    "ReplacementModel",
    "Steer",
    "Target",
    "Transcoder",
    "TranscoderSet",
    "attribute",
    "attention_edges",
    "attention_heads",
    "attention_scores",
    "attribute_attention",
    "edge_heads",
    "feature_contexts",
    "load_model",
    "neuronpedia_features",
    "validate",
    "validation_figure",
    "SwapReport",
    "attach_latent_labels",
    "best_latents",
    "best_per_value",
    "feature_means",
    "latent_labels",
    "mean_difference",
    "minimal_k",
    "patch_position",
    "probe_activations",
    "residuals",
    "steer",
    "swap_test",
]
__version__ = "0.1.0"
