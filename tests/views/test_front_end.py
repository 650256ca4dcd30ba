"""The front end's modules as code: one concern a file, none over 250 lines, each a valid ES
module, joined into a valid module (the widget's) and a valid classic script (the page's) with
no name defined twice; and the browser's own pruning and supernode collapse (run in node on a
real payload) against the graph's and the kernel's account of what is drawn."""

import copy
import re
import subprocess

import numpy as np
import pytest
from front_end import JS, node, run_js

from attribution_nb.views.drawing import draw_data
from attribution_nb.views.page import MODULES, front_end
from attribution_nb.views.payload import graph_payload


def test_every_module_is_joined_and_short():
    on_disk = sorted(p.stem for p in JS.glob("*.js"))
    assert on_disk == sorted(MODULES)
    for name in MODULES:
        lines = (JS / f"{name}.js").read_text().splitlines()
        assert len(lines) <= 250, f"static/js/{name}.js has {len(lines)} lines"
        assert lines[0].startswith("// "), f"static/js/{name}.js does not open with what it is for"
        widest = max(
            map(len, lines)
        )  # prettier, with static/js/.prettierrc.json, keeps them at 110
        assert widest <= 120, f"static/js/{name}.js has a line of {widest} characters"


@pytest.mark.parametrize("name", MODULES)
def test_each_module_is_valid_javascript(name):
    proc = subprocess.run(
        [node(), "--check", str(JS / f"{name}.js")], capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stderr


def test_the_joined_script_is_valid_both_ways(tmp_path):
    module, page = tmp_path / "widget.mjs", tmp_path / "page.cjs"
    module.write_text(front_end(module=True))
    page.write_text(front_end(module=False))
    for path in (module, page):  # a module refuses a top-level name declared twice
        proc = subprocess.run([node(), "--check", str(path)], capture_output=True, text=True)
        assert proc.returncode == 0, proc.stderr
    assert re.search(r"^export default ", module.read_text(), re.M)
    assert not re.search(r"^export ", page.read_text(), re.M)
    assert not re.search(r"^import ", module.read_text(), re.M)
    # the page calls these two by name (page.html)
    assert re.search(r"^function anbMount\(", page.read_text(), re.M)
    assert re.search(r"^function anbPageHost\(", page.read_text(), re.M)


def test_a_module_that_imports_a_later_one_is_refused(monkeypatch):
    import attribution_nb.views.page as page

    monkeypatch.setattr(page, "MODULES", ("state", "prune"))  # state.js imports prune.js
    with pytest.raises(RuntimeError, match="state.js imports prune.js"):
        page.front_end()


@pytest.mark.parametrize(
    "nt,et,collapse", [(0.8, 0.98, False), (0.5, 0.9, True), (1.0, 1.0, True), (0.3, 0.0, False)]
)
def test_the_browser_draws_what_the_kernel_says(llama_graph, nt, et, collapse):
    """prune.js's kept nodes and drawnNodes' boxes and summed edges, run in node, against
    AttributionGraph.prune_masks and views.drawing (the kernel's account the browser tests use)."""
    graph = copy.copy(llama_graph)
    kept, _ = graph.prune_masks(nt, et)  # supernodes of drawn features (so they show)
    feats = graph.nodes.node_id[(graph.nodes.kind == "feature") & kept].tolist()
    graph.supernodes = {"first three": feats[:3], "next two": feats[3:5]} if collapse else {}
    p = graph_payload(graph)
    got = run_js(
        "prune.js",
        "const {node, edge} = m.prune(data.G, data.nt, data.et); "
        "const {D, edges} = m.drawnNodes(data.G, node, edge, data.groups); "
        "return {node: Array.from(node), ids: D.map(d => d.id), influence: D.map(d => d.influence), "
        "edges: edges.map(e => [D[e.s].id, D[e.t].id, e.w])};",
        {"G": p, "nt": nt, "et": et, "groups": graph.supernodes},
    )
    node_mask, _ = graph.prune_masks(nt, et)
    kept = np.array(p["nodes"]["id"])[np.array(got["node"], dtype=bool)]
    assert sorted(kept) == sorted(graph.nodes.node_id[node_mask])
    want = draw_data(graph, nt, et, collapse=collapse)
    assert list(got["ids"]) == list(want["ids"])  # the same boxes, in the same order
    assert np.allclose(
        got["influence"], np.maximum(want["influence"].astype(float), 0), rtol=1e-5, atol=1e-7
    )
    kernel = {
        (want["ids"][s], want["ids"][t]): w
        for s, t, w in zip(want["source"], want["target"], want["weight"])
    }
    browser = {(s, t): w for s, t, w in got["edges"]}
    assert kernel.keys() == browser.keys()
    assert np.allclose([browser[k] for k in kernel], list(kernel.values()), rtol=1e-5, atol=1e-6)
    if collapse:
        assert any(i.startswith("s:") for i in got["ids"])
