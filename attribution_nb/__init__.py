"""attribution_nb: attribution graphs (circuit tracing) for Jupyter notebooks.

    import attribution_nb as anb
    model = anb.load_model()                       # embedded demo model, CPU, offline
    graph = anb.attribute(model, "Fact: the capital of the state containing Dallas is")
    graph.nodes, graph.edges, graph.logits         # pandas DataFrames
    graph.prune(node_threshold=0.8, edge_threshold=0.98).scores()
"""

from .attribution import attribute
from .graph import AttributionGraph
from .interventions import Multiply, Steer
from .model import ADAPTERS, Adapter, ReplacementModel, load_model
from .transcoders import Transcoder, TranscoderSet

__all__ = ["attribute", "AttributionGraph", "ReplacementModel", "Adapter", "ADAPTERS", "load_model",
           "Transcoder", "TranscoderSet", "Multiply", "Steer"]
__version__ = "0.1.0"
