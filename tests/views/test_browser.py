"""The widget and the standalone page in a real browser: Debian's chromium driven by
Playwright, against a real JupyterLab server on localhost.  Screenshots go to
``$ANB_SCREENSHOTS`` (default: the test's tmp folder).

Skipped when chromium or Playwright is missing, except under CI=true, where they must
be there (``.ci/run`` installs them).
"""

import json
import os
import socket
import subprocess
import sys
import time
import urllib.request

import pytest

import attribution_nb as anb

CHROMIUM = "/usr/bin/chromium"
PROMPT = "fact : the capital of the state containing dallas is"
pytestmark = pytest.mark.browser


def _need_browser():
    missing = []
    if not os.path.exists(CHROMIUM):
        missing.append(CHROMIUM)
    try:
        import playwright  # noqa: F401
    except ImportError:
        missing.append("playwright (pip)")
    if missing:
        if os.environ.get("CI") == "true":
            pytest.fail(f"browser tests need {missing}; .ci/run installs them")
        pytest.skip(f"browser tests need {missing}")


@pytest.fixture(scope="module")
def browser():
    _need_browser()
    from playwright.sync_api import sync_playwright
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, headless=True,
                              args=["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                                    "--disable-component-update", "--disable-sync", "--no-first-run"])
        yield b
        b.close()


@pytest.fixture(scope="module")
def shots(tmp_path_factory):
    folder = os.environ.get("ANB_SCREENSHOTS") or str(tmp_path_factory.mktemp("screenshots"))
    os.makedirs(folder, exist_ok=True)
    return folder


@pytest.fixture(scope="module")
def demo_graph():
    model = anb.load_model()
    return model, anb.attribute(model, PROMPT, progress=False)


def _counts(text: str) -> tuple[int, int]:
    words = text.replace(",", "").split()
    return int(words[0]), int(words[2])


def test_standalone_page_prunes_like_python(browser, demo_graph, tmp_path, shots):
    _, graph = demo_graph
    path = graph.to_html(tmp_path / "graph.html", node_threshold=0.8, edge_threshold=0.98)
    page = browser.new_page(viewport={"width": 1400, "height": 900})
    errors = []
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.goto(f"file://{path}")
    page.wait_for_function("document.getElementById('anb-counts').textContent.includes('drawn')")
    seen = {}
    for nt, et in [(0.8, 0.98), (0.8, 0.5), (0.5, 0.9), (0.95, 0.99), (0.3, 0.3)]:
        page.eval_on_selector("#anb-node", f"e => {{ e.value = {nt}; e.dispatchEvent(new Event('input')); }}")
        page.eval_on_selector("#anb-edge", f"e => {{ e.value = {et}; e.dispatchEvent(new Event('input')); }}")
        got = _counts(page.inner_text("#anb-counts"))
        node_mask, edge_mask = graph.prune_masks(nt, et)
        assert got == (int(node_mask.sum()), int(edge_mask.sum())), f"page and Python disagree at {nt, et}"
        seen[nt, et] = got
    assert seen[0.8, 0.5][1] < seen[0.8, 0.98][1]
    # the plot is there, drawn with WebGL, and clicking a node fills the panel
    assert page.locator("#anb-plot .js-plotly-plot canvas, #anb-plot canvas").count() > 0
    page.eval_on_selector("#anb-node", "e => { e.value = 0.8; e.dispatchEvent(new Event('input')); }")
    page.eval_on_selector("#anb-edge", "e => { e.value = 0.98; e.dispatchEvent(new Event('input')); }")
    x, y = page.evaluate(_NODE_PIXEL_JS, {"plot": "#anb-plot", "trace": -1})
    page.mouse.click(x, y)
    page.wait_for_function("document.querySelector('#anb-panel h4') !== null", timeout=10_000)
    assert page.inner_text("#anb-panel h4").startswith("f:")
    page.screenshot(path=os.path.join(shots, "standalone.png"))
    assert errors == []


HOSTILE = ["<img src=x onerror=alert(1)>", "</script><script>alert(2)</script>", "<!--<script>", "\"'&amp;"]


def _hostile_graph():
    """A tiny graph whose prompt, tokens, labels, ids and supernode names hold markup."""
    import pandas as pd
    import torch
    ids = [f"f:L0:P1:7{HOSTILE[0]}", "f:L1:P1:3", "e:L0:P1", "t:P0:1", "t:P1:5", "l:P1:5"]
    A = torch.zeros(6, 6)
    A[0, 3], A[0, 4], A[1, 0], A[1, 2], A[5, 1], A[5, 4] = 2.0, -1.0, 3.0, 1.0, -4.0, 1.0
    nodes = pd.DataFrame({
        "node_id": ids, "kind": ["feature", "feature", "error", "token", "token", "logit"],
        "layer": [0, 1, 0, -1, -1, 2], "position": [1, 1, 1, 0, 1, 1],
        "token": [HOSTILE[1], HOSTILE[1], HOSTILE[1], HOSTILE[2], HOSTILE[1], HOSTILE[3]],
        "token_id": pd.array([None, None, None, 1, 5, 5], dtype="Int64"),
        "feature": pd.array([7, 3, None, None, None, None], dtype="Int64"),
        "activation": [1.0, 2.0, 0.5, 1.0, 1.0, 3.0], "influence": 0.0, "label": [HOSTILE[0], HOSTILE[2], "", "", "", ""]})
    logits = pd.DataFrame({"token": [HOSTILE[3]], "token_id": [5], "probability": [0.5], "logit": [3.0]})
    return anb.AttributionGraph(prompt=HOSTILE[1] + HOSTILE[2], tokens=[HOSTILE[2], HOSTILE[1]], token_ids=[1, 5],
                                nodes=nodes, adjacency=A, logits=logits, n_layers=2,
                                supernodes={HOSTILE[0]: ids[:2]})


def test_the_page_shows_hostile_strings_as_text(browser, tmp_path, shots):
    """Markup in tokens, labels, ids, the prompt and supernode names never runs: every node can be
    clicked, its id shows literally in the panel, no dialog opens and no error is logged."""
    graph = _hostile_graph()
    path = graph.to_html(tmp_path / "hostile.html", node_threshold=0.95, edge_threshold=0.99)
    page = browser.new_page(viewport={"width": 1400, "height": 900})
    dialogs, errors = [], []
    page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.goto(f"file://{path}")
    page.wait_for_function("document.getElementById('anb-counts').textContent.includes('drawn')")
    assert page.title() == f"Attribution graph: {graph.prompt}"
    ids = [node_id for _, _, node_id in page.evaluate(_ALL_NODE_PIXELS_JS, {"plot": "#anb-plot"})]
    assert sorted(ids) == sorted(graph.nodes.node_id)
    for node_id in ids:
        _click_until_shown(page, node_id, lambda: page.evaluate(_ALL_NODE_PIXELS_JS, {"plot": "#anb-plot"}),
                           "#anb-panel h4")
        assert page.locator("#anb-panel img, #anb-panel script").count() == 0
    page.screenshot(path=os.path.join(shots, "standalone-hostile.png"))
    assert dialogs == [] and errors == [], (dialogs, errors)


def _click_until_shown(page, node_id, places, title, tries=5, timeout=5_000):
    """Click a node until the panel's ``title`` element shows its id.  ``places()`` gives every
    drawn node's pixel place and id, read from plotly's layout again before each click (the plot
    may be re-laid out when the panel fills)."""
    from playwright.sync_api import TimeoutError as PlaywrightTimeout
    for attempt in range(tries):
        x, y = next((x, y) for x, y, i in places() if i == node_id)
        # plotly clicks the point it last hovered: move there first and let the hover land; two clicks
        # within its double-click delay would reset the axes
        page.mouse.move(x + attempt % 2, y)
        page.wait_for_timeout(400)
        page.mouse.click(x + attempt % 2, y)
        try:
            page.wait_for_function(f"id => document.querySelector({title!r})?.textContent === id", arg=node_id,
                                   timeout=timeout)
            return
        except PlaywrightTimeout:
            continue
    page.screenshot(path=os.path.join(os.environ.get("ANB_SCREENSHOTS", "/tmp"), "click-failed.png"))
    raise AssertionError(f"clicking {node_id!r} never showed it in the panel: {page.inner_text(title)!r}")


# pixel position and id of every node of the page's node trace
_ALL_NODE_PIXELS_JS = """
({plot}) => {
  const gd = document.querySelector(plot + " .js-plotly-plot") || document.querySelector(plot);
  const data = gd._fullData[gd._fullData.length - 1];
  const G = JSON.parse(document.getElementById("anb-data").textContent);
  const xa = gd._fullLayout.xaxis, ya = gd._fullLayout.yaxis;
  const box = gd.querySelector(".nsewdrag").getBoundingClientRect();
  return data.x.map((x, i) => [box.left + xa.l2p(x), box.top + ya.l2p(data.y[i]), G.nodes.id[data.customdata[i]]]);
}
"""


# pixel position of the largest circle (a feature) of a plotly node trace
_NODE_PIXEL_JS = """
({plot, trace}) => {
  const gd = document.querySelector(plot + " .js-plotly-plot") || document.querySelector(plot);
  const data = gd._fullData[trace < 0 ? gd._fullData.length + trace : trace];
  let best = -1;
  data.marker.symbol.forEach((s, i) => {
    if (s === "circle" && (best < 0 || data.marker.size[i] > data.marker.size[best])) best = i;
  });
  const xa = gd._fullLayout.xaxis, ya = gd._fullLayout.yaxis;
  const box = gd.querySelector(".nsewdrag").getBoundingClientRect();
  return [box.left + xa.l2p(data.x[best]), box.top + ya.l2p(data.y[best])];
}
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def jupyterlab(tmp_path_factory):
    _need_browser()
    root = tmp_path_factory.mktemp("lab")
    nb = {"cells": [{"cell_type": "code", "id": "widget", "metadata": {}, "execution_count": None, "outputs": [], "source": [
        "import attribution_nb as anb\n",
        "model = anb.load_model()\n",
        f"graph = anb.attribute(model, {PROMPT!r}, progress=False)\n",
        "widget = anb.GraphWidget(graph, model)\n",
        "widget"]}],
        "metadata": {"kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"}},
        "nbformat": 4, "nbformat_minor": 5}
    (root / "widget.ipynb").write_text(json.dumps(nb))
    # a second notebook: the widget on a graph whose strings hold markup
    import inspect
    hostile_code = (f"import attribution_nb as anb\nHOSTILE = {HOSTILE!r}\n" + inspect.getsource(_hostile_graph)
                    + "graph = _hostile_graph()\nwidget = anb.GraphWidget(graph, node_threshold=0.95, edge_threshold=0.99)\n"
                    + "widget")
    hostile = dict(nb, cells=[dict(nb["cells"][0], id="hostile", source=hostile_code.splitlines(True))])
    (root / "hostile.ipynb").write_text(json.dumps(hostile))
    port = _free_port()
    cmd = [sys.executable, "-m", "jupyter", "lab", "--no-browser", f"--port={port}", "--ip=127.0.0.1",
           "--ServerApp.token=", "--ServerApp.password=", f"--ServerApp.root_dir={root}",
           "--LabApp.news_url=", "--ServerApp.disable_check_xsrf=True"]
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        cmd.append("--allow-root")
    env = dict(os.environ, JUPYTER_CONFIG_DIR=str(root / ".jupyter"))
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    url = f"http://127.0.0.1:{port}"
    deadline = time.time() + 90
    while time.time() < deadline:
        try:
            urllib.request.urlopen(url + "/api", timeout=2)
            break
        except OSError:
            time.sleep(0.5)
    else:
        proc.terminate()
        pytest.fail("JupyterLab did not start within 90 s")
    yield url
    proc.terminate()
    try:
        proc.wait(20)
    except subprocess.TimeoutExpired:
        proc.kill()


def test_widget_in_jupyterlab(browser, jupyterlab, shots):
    page = browser.new_page(viewport={"width": 1600, "height": 1000})
    errors = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    _run_first_cell(page, f"{jupyterlab}/lab/tree/widget.ipynb")
    # the plot renders (WebGL canvas inside the plotly div) with its counts line
    page.wait_for_selector(".anb-graph-widget .js-plotly-plot", timeout=180_000)
    page.wait_for_function("document.querySelector('.anb-counts') !== null", timeout=60_000)
    assert page.locator(".anb-graph-widget .js-plotly-plot canvas").count() > 0
    before = _counts(page.inner_text(".anb-counts"))
    assert before[0] > 0 and before[1] > 0
    page.screenshot(path=os.path.join(shots, "lab-1-rendered.png"))

    # move the edge-threshold slider: click at 40% of its track
    slider = page.locator(".widget-slider", has_text="edge threshold").locator(".slider-container, .noUi-target").first
    box = slider.bounding_box()
    page.mouse.click(box["x"] + 0.4 * box["width"], box["y"] + box["height"] / 2)
    page.wait_for_function(f"!document.querySelector('.anb-counts').textContent.startsWith('{before[0]} nodes, {before[1]} edges')",
                           timeout=30_000)
    after = _counts(page.inner_text(".anb-counts"))
    assert after[1] < before[1], (before, after)
    page.screenshot(path=os.path.join(shots, "lab-2-slider.png"))

    # click the largest feature node: its panel opens
    x, y = page.evaluate(_NODE_PIXEL_JS, {"plot": ".anb-graph-widget", "trace": -1})
    page.mouse.click(x, y)
    page.wait_for_selector(".anb-panel .anb-node-title", timeout=30_000)
    title = page.inner_text(".anb-panel .anb-node-title")
    assert title.startswith("f:L")
    assert "incoming +" in page.inner_text(".anb-panel")
    page.screenshot(path=os.path.join(shots, "lab-3-panel.png"))

    # ablate it and run: the before/after table and a continuation appear
    page.get_by_role("button", name="ablate", exact=True).click()
    page.get_by_role("button", name="run", exact=True).click()
    page.wait_for_selector(".anb-result table.anb-before-after", timeout=60_000)
    text = page.inner_text(".anb-result")
    assert title in text and "p_before" in text and "after: …" in text
    page.screenshot(path=os.path.join(shots, "lab-4-intervention.png"), full_page=True)
    assert errors == []


def _run_first_cell(page, url):
    """Open a notebook and run its first cell: wait until the kernel is idle; on a busy machine a
    keypress can land before the notebook is ready, so run it again while its prompt shows "[ ]"."""
    page.goto(url)
    page.wait_for_selector(".jp-Notebook .jp-Cell .jp-InputArea-editor", timeout=60_000)
    page.wait_for_function("document.querySelector('.jp-StatusBar-Widget, #jp-main-statusbar')"
                           " && document.body.innerText.includes('Idle')", timeout=120_000)
    prompt = page.locator(".jp-Cell .jp-InputPrompt").first
    for _ in range(4):
        page.click(".jp-Cell .jp-InputArea-editor")
        page.keyboard.press("Shift+Enter")
        try:
            page.wait_for_function("(el) => !/\\[\\s*\\]/.test(el.textContent)", arg=prompt.element_handle(),
                                   timeout=15_000)
            return
        except Exception:
            continue


# pixel position of every node of the widget's node trace, with its id
_WIDGET_NODES_JS = """
() => {
  const gd = document.querySelector(".anb-graph-widget .js-plotly-plot");
  const data = gd._fullData[gd._fullData.length - 1];
  const xa = gd._fullLayout.xaxis, ya = gd._fullLayout.yaxis;
  const box = gd.querySelector(".nsewdrag").getBoundingClientRect();
  // (the widget sends typed arrays, whose map() would keep numbers only)
  return Array.from(data.x, (x, i) => [box.left + xa.l2p(x), box.top + ya.l2p(data.y[i]), data.customdata[i]]);
}
"""


def test_the_widget_shows_hostile_strings_as_text(browser, jupyterlab, shots):
    """The same hostile graph in the JupyterLab widget: every node clicked shows its id as text."""
    page = browser.new_page(viewport={"width": 1400, "height": 900})
    dialogs, errors = [], []
    page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
    page.on("pageerror", lambda e: errors.append(str(e)))
    _run_first_cell(page, f"{jupyterlab}/lab/workspaces/hostile/tree/hostile.ipynb?reset")   # (no restored tabs)
    page.wait_for_selector(".anb-graph-widget .js-plotly-plot", timeout=180_000)
    page.wait_for_function("document.querySelector('.anb-counts') !== null", timeout=60_000)
    # bring the whole plot into the window (the cell's code is above it)
    page.evaluate("document.querySelector('.anb-graph-widget .js-plotly-plot').scrollIntoView({block: 'center'})")
    page.wait_for_timeout(500)
    ids = [i for _, _, i in page.evaluate(_WIDGET_NODES_JS)]
    assert sorted(ids) == sorted(_hostile_graph().nodes.node_id)
    for node_id in ids:
        _click_until_shown(page, node_id, lambda: page.evaluate(_WIDGET_NODES_JS), ".anb-panel .anb-node-title")
        assert page.locator(".anb-graph-widget img, .anb-panel script").count() == 0
    page.screenshot(path=os.path.join(shots, "lab-hostile.png"))
    assert dialogs == [] and errors == [], (dialogs, errors)
