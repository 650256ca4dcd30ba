"""A graph as one standalone HTML page: plotly's offline bundle, the graph as JSON (see
:mod:`.payload`) and the same front end as the notebook widget (the ES modules in
``static/js/``, joined by :func:`front_end`), which prunes live when the sliders move.
``static/page.html`` and ``static/page.css`` are the page
around it.  With ``model=``, the panel also shows what each feature promotes, suppresses and
where it fires most.  No network is needed to open it."""

from __future__ import annotations

import html
import json
import os
import re
from string import Template

from ..checks import as_float, as_int
from ..graph.graph import PAGE_WRITERS
from ..io import write_text
from .payload import graph_payload

STATIC = os.path.join(os.path.dirname(os.path.abspath(__file__)), "static")


def script_json(data) -> str:
    """``data`` as JSON that is safe inside a ``<script>`` element: no ``<``, ``>`` or ``&`` at all
    (written as ``\\u003c`` …), so no string in it can close the script or open a comment."""
    return json.dumps(data).replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


def static_text(name: str) -> str:
    with open(os.path.join(STATIC, name), encoding="utf-8") as f:
        return f.read()


#: the front end's modules (``static/js/``), in the order they are joined (each one's imports first)
MODULES = (
    "prune",
    "state",
    "dom",
    "layout",
    "traces",
    "names",
    "draw",
    "tools",
    "panel",
    "runs",
    "subgraph",
    "hosts",
    "mount",
)
_IMPORT = re.compile(r'^import \{[^}]*\} from "\./([a-z]+)\.js";\n', re.M)
_EXPORT = re.compile(r"^export (?=(async )?function |const )", re.M)
_DEFAULT = re.compile(r"^export default .*\n", re.M)


def front_end(module: bool = True) -> str:
    """The front end as one script: the modules of ``static/js/`` joined in :data:`MODULES` order,
    their imports of each other cut (they share the one top-level scope the join makes).
    ``module``: an ES module whose default export is anywidget's ``{initialize, render}`` (the
    widget's ``_esm``); else a classic script that defines ``anbMount`` and ``anbPageHost`` (the
    standalone page)."""
    parts = []
    for name in MODULES:
        text = static_text(os.path.join("js", name + ".js"))
        for imported in _IMPORT.findall(text):
            if MODULES.index(imported) > MODULES.index(name):
                raise RuntimeError(
                    f"static/js/{name}.js imports {imported}.js, which MODULES joins after it"
                )
        parts.append(f"// ---- {name}.js\n" + _EXPORT.sub("", _IMPORT.sub("", text)))
    text = "\n".join(parts)
    return text if module else _DEFAULT.sub("", text)


def initial_state(
    node_threshold: float, edge_threshold: float, height: int, n_labels: int = 8
) -> dict:
    return {
        "node_threshold": node_threshold,
        "edge_threshold": edge_threshold,
        "collapse": False,
        "n_labels": n_labels,
        "selected": None,
        "pinned": [],
        "labels": {},
        "supernodes": {},
        "queue": [],
        "code": "",
        "mode": "free",
        "runs": [],
        "status": {},
        "details": {},
        "height": height,
    }


def graph_to_html(
    graph,
    path: str | os.PathLike,
    *,
    model=None,
    node_threshold: float = 0.8,
    edge_threshold: float = 0.98,
    height: int = 620,
    title: str | None = None,
) -> str:
    """Write ``graph`` as a standalone HTML page with working sliders (the full range, 0 to 1);
    returns the path.  ``model``: the :class:`ReplacementModel` it came from, for the panel's
    promoted and suppressed tokens and top-activating contexts."""
    from plotly.offline import get_plotlyjs

    node_threshold = as_float("node_threshold", node_threshold, 0.0, 1.0)
    height = as_int("height (pixels)", height, 200, 5000)
    edge_threshold = as_float("edge_threshold", edge_threshold, 0.0, 1.0)
    data = graph_payload(graph, model)
    state = initial_state(node_threshold, min(edge_threshold, data["max_edge_threshold"]), height)
    state["supernodes"] = data["supernodes"]
    text = Template(static_text("page.html")).substitute(
        title=html.escape(title or f"Attribution graph: {graph.prompt}"),
        plotly=get_plotlyjs(),
        css=static_text("view.css") + static_text("page.css"),
        footer=html.escape(
            f"{graph.model_name} · {len(graph.nodes)} nodes, {graph.n_edges} edges in the full graph · "
            f"made with attribution_nb"
        ),
        data=script_json(data),
        js=front_end(module=False),
        state=script_json(state),
    )
    write_text(path, text)
    return os.fspath(path)


PAGE_WRITERS["html"] = graph_to_html
