"""attribution_nb: attribution graphs (circuit tracing) for Jupyter notebooks.

    import attribution_nb as anb
    model = anb.load_model()                       # embedded demo model, CPU, offline
    graph = anb.attribute(model, "Fact: the capital of the state containing Dallas is")
    graph.nodes, graph.edges, graph.logits         # pandas DataFrames
    graph.prune(node_threshold=0.8, edge_threshold=0.98).scores()
    anb.GraphWidget(graph, model)                  # the interactive view, in JupyterLab
"""

from .attribution import attribute
from .graph import AttributionGraph
from .interventions import Multiply, Steer
from .model import ADAPTERS, Adapter, ReplacementModel, load_model
from .transcoders import Transcoder, TranscoderSet



def __getattr__(name):
    if name == "GraphWidget":   # needs the notebook extras (plotly, ipywidgets)
        from .widget import GraphWidget
        return GraphWidget
    raise AttributeError(f"module 'attribution_nb' has no attribute {name!r}")


__all__ = ["GraphWidget", "attribute", "AttributionGraph", "ReplacementModel", "Adapter", "ADAPTERS", "load_model",
           "Transcoder", "TranscoderSet", "Multiply", "Steer"]
__version__ = "0.1.0"
