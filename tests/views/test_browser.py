"""The widget and the standalone page in a real browser: Debian's chromium driven by
Playwright, against a real JupyterLab server on localhost.  What a person sees is asserted from
the DOM and from plotly's own layout: node centres apart, buttons not truncated, the legend and
the logit labels there, messages shown.  Screenshots go to
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

import numpy as np
import pytest

import attribution_nb as anb

CHROMIUM = "/usr/bin/chromium"
PROMPT = "fact : the capital of the state containing dallas is"
COUPLET = "poem : a dog sat by the cat ,"
SIZES = {"laptop": (1400, 900), "large": (1920, 1080)}
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
        b = p.chromium.launch(
            executable_path=CHROMIUM,
            headless=True,
            args=[
                "--no-sandbox",
                "--disable-gpu",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--no-first-run",
            ],
        )
        yield b
        b.close()


@pytest.fixture(scope="module")
def shots(tmp_path_factory):
    folder = os.environ.get("ANB_SCREENSHOTS") or str(tmp_path_factory.mktemp("screenshots"))
    os.makedirs(folder, exist_ok=True)
    return folder


@pytest.fixture(scope="module")
def demo():
    model = anb.load_model()
    return model, {
        PROMPT: anb.attribute(model, PROMPT, progress=False),
        COUPLET: anb.attribute(model, COUPLET, progress=False),
    }


@pytest.fixture(scope="module")
def demo_graph(demo):
    model, graphs = demo
    return model, graphs[PROMPT]


def _counts(text: str) -> tuple[int, int]:
    words = text.replace(",", "").split()
    return int(words[0]), int(words[2])


HOSTILE = [
    "<img src=x onerror=alert(1)>",
    "</script><script>alert(2)</script>",
    "<!--<script>",
    "\"'&amp;",
]


def _hostile_graph():
    """A tiny graph whose prompt, tokens, labels, ids and supernode names hold markup."""
    import pandas as pd
    import torch

    ids = [f"f:L0:P1:7{HOSTILE[0]}", "f:L1:P1:3", "e:L0:P1", "t:P0:1", "t:P1:5", "l:P1:5"]
    A = torch.zeros(6, 6)
    A[0, 3], A[0, 4], A[1, 0], A[1, 2], A[5, 1], A[5, 4] = 2.0, -1.0, 3.0, 1.0, -4.0, 1.0
    nodes = pd.DataFrame(
        {
            "node_id": ids,
            "kind": ["feature", "feature", "error", "token", "token", "logit"],
            "layer": [0, 1, 0, -1, -1, 2],
            "position": [1, 1, 1, 0, 1, 1],
            "token": [HOSTILE[1], HOSTILE[1], HOSTILE[1], HOSTILE[2], HOSTILE[1], HOSTILE[3]],
            "token_id": pd.array([None, None, None, 1, 5, 5], dtype="Int64"),
            "feature": pd.array([7, 3, None, None, None, None], dtype="Int64"),
            "activation": [1.0, 2.0, 0.5, 1.0, 1.0, 3.0],
            "influence": 0.0,
            "label": [HOSTILE[0], HOSTILE[2], "", "", "", ""],
        }
    )
    logits = pd.DataFrame(
        {"token": [HOSTILE[3]], "token_id": [5], "probability": [0.5], "logit": [3.0]}
    )
    return anb.AttributionGraph(
        prompt=HOSTILE[1] + HOSTILE[2],
        tokens=[HOSTILE[2], HOSTILE[1]],
        token_ids=[1, 5],
        nodes=nodes,
        adjacency=A,
        logits=logits,
        n_layers=2,
        supernodes={HOSTILE[0]: ids[:2]},
    )


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def jupyterlab(tmp_path_factory):
    _need_browser()
    root = tmp_path_factory.mktemp("lab")
    nb = {
        "cells": [
            {
                "cell_type": "code",
                "id": "widget",
                "metadata": {},
                "execution_count": None,
                "outputs": [],
                "source": [
                    "import attribution_nb as anb\n",
                    "model = anb.load_model()\n",
                    f"graph = anb.attribute(model, {PROMPT!r}, progress=False)\n",
                    "widget = anb.GraphWidget(graph, model)\n",
                    "widget",
                ],
            }
        ],
        "metadata": {
            "kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"}
        },
        "nbformat": 4,
        "nbformat_minor": 5,
    }
    (root / "widget.ipynb").write_text(json.dumps(nb))
    # a second notebook: the widget on a graph whose strings hold markup
    import inspect

    hostile_code = (
        f"import attribution_nb as anb\nHOSTILE = {HOSTILE!r}\n"
        + inspect.getsource(_hostile_graph)
        + "graph = _hostile_graph()\nwidget = anb.GraphWidget(graph, node_threshold=1.0, edge_threshold=1.0)\n"
        + "widget"
    )
    hostile = dict(
        nb, cells=[dict(nb["cells"][0], id="hostile", source=hostile_code.splitlines(True))]
    )
    (root / "hostile.ipynb").write_text(json.dumps(hostile))
    # a third: two widgets in one notebook (plotly.js must be fetched once)
    two = dict(
        nb,
        cells=[
            dict(nb["cells"][0], id="first"),
            dict(
                nb["cells"][0],
                id="second",
                source=["anb.GraphWidget(graph.prune(0.9, 0.9), model)"],
            ),
        ],
    )
    (root / "two.ipynb").write_text(json.dumps(two))
    port = _free_port()
    cmd = [
        sys.executable,
        "-m",
        "jupyter",
        "lab",
        "--no-browser",
        f"--port={port}",
        "--ip=127.0.0.1",
        "--ServerApp.token=",
        "--ServerApp.password=",
        f"--ServerApp.root_dir={root}",
        "--LabApp.news_url=",
        "--ServerApp.disable_check_xsrf=True",
    ]
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


def _run_first_cell(page, url):
    """Open a notebook and run its first cell: wait until the kernel is idle; on a busy machine a
    keypress can land before the notebook is ready, so run it again while its prompt shows "[ ]"."""
    page.goto(url)
    page.wait_for_selector(".jp-Notebook .jp-Cell .jp-InputArea-editor", timeout=60_000)
    page.wait_for_function(
        "document.querySelector('.jp-StatusBar-Widget, #jp-main-statusbar')"
        " && document.body.innerText.includes('Idle')",
        timeout=120_000,
    )
    prompt = page.locator(".jp-Cell .jp-InputPrompt").first
    for _ in range(4):
        page.click(".jp-Cell .jp-InputArea-editor")
        page.keyboard.press("Shift+Enter")
        try:
            page.wait_for_function(
                "(el) => !/\\[\\s*\\]/.test(el.textContent)",
                arg=prompt.element_handle(),
                timeout=15_000,
            )
            return
        except Exception:
            continue


# ---- what a person sees, read from the DOM and plotly's layout -------------------------
# every drawn node of a view: [x px, y px, marker radius px, id]
_NODES_JS = """
(root) => {
  const gd = document.querySelector(root + " .anb-plot");
  const data = gd._fullData[gd._fullData.length - 1];
  const xa = gd._fullLayout.xaxis, ya = gd._fullLayout.yaxis;
  const box = gd.querySelector(".nsewdrag").getBoundingClientRect();
  const s = data.marker.size, size = i => (Array.isArray(s) || ArrayBuffer.isView(s)) ? s[i] : s;
  return Array.from(data.x, (x, i) =>
    [box.left + xa.l2p(x), box.top + ya.l2p(data.y[i]), size(i) / 2, data.customdata[i]]);
}
"""

# what a reader checks at a glance: truncated buttons, the legend, labels, boxes that overlap
_READABLE_JS = """
(root) => {
  const r = document.querySelector(root);
  const visible = e => e.offsetParent !== null && e.getClientRects().length > 0;
  const buttons = Array.from(r.querySelectorAll("button, select")).filter(visible);
  const cut = buttons.filter(b => b.scrollWidth > b.clientWidth + 1 ||
                                  b.getBoundingClientRect().right > window.innerWidth)
                     .map(b => b.textContent);
  const gd = r.querySelector(".anb-plot");
  const plot = gd.getBoundingClientRect(), side = r.querySelector(".anb-side").getBoundingClientRect();
  const overlap = side.top < plot.bottom - 1 && side.left < plot.right - 1;
  const legend = Array.from(gd.querySelectorAll(".legendtext")).map(e => e.textContent);
  const notes = (gd._fullLayout.annotations || []).map(a => a.text);
  const ticks = Array.from(gd.querySelectorAll(".xtick text")).map(t => t.getBoundingClientRect())
                     .filter(b => b.width > 0).map(b => [b.left, b.right, b.top, b.bottom]);
  return {cut, overlap, legend, notes, ticks, plotWidth: plot.width, sideWidth: side.width,
          sideBelow: side.top >= plot.bottom - 1, rootRight: r.getBoundingClientRect().right};
}
"""


def _assert_readable(page, root: str, graph) -> dict:
    nodes = page.evaluate(_NODES_JS, root)
    xy = np.array([[x, y] for x, y, _, _ in nodes])
    radius = np.array([r for _, _, r, _ in nodes])
    d = np.sqrt(((xy[:, None] - xy[None]) ** 2).sum(-1))
    need = np.maximum(radius[:, None], radius[None])
    np.fill_diagonal(d, np.inf)
    close = np.argwhere(d < need)
    assert len(close) == 0, (
        f"node centres closer than a marker radius: {[(nodes[i][3], nodes[j][3]) for i, j in close[:5]]}"
    )
    seen = page.evaluate(_READABLE_JS, root)
    assert seen["cut"] == [], f"buttons cut off: {seen['cut']}"
    assert not seen["overlap"], "the side panel overlaps the plot"
    for item in ("feature", "error (residual)", "token", "logit", "excites", "inhibits"):
        assert item in seen["legend"], seen["legend"]
    top = graph.logits.iloc[0]
    assert any(n.startswith(f"{top.token} p={top.probability:.2f}") for n in seen["notes"]), seen[
        "notes"
    ]
    ticks = seen["ticks"]
    assert len(ticks) == len(graph.tokens)  # every token on the axis, punctuation included
    return seen


def _set_slider(page, root: str, key: str, value: float) -> None:
    page.eval_on_selector(
        f"{root} input[data-key={key}]",
        f"e => {{ e.value = {value}; e.dispatchEvent(new Event('input')); }}",
    )


def _open_page(browser, graph, path, size, model=None):
    graph.to_html(path, model=model)
    page = browser.new_page(viewport=dict(zip(("width", "height"), size)))
    errors = []
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.goto(f"file://{path}")
    page.wait_for_function("document.querySelector('.anb-counts')?.textContent.includes('drawn')")
    page.wait_for_timeout(300)
    return page, errors


def _nodes_of(page, root):
    return lambda: [(x, y, i) for x, y, _, i in page.evaluate(_NODES_JS, root)]


@pytest.mark.parametrize("size", list(SIZES))
@pytest.mark.parametrize("prompt", [PROMPT, COUPLET], ids=["dallas", "couplet"])
def test_the_page_reads_at_a_glance(browser, demo, tmp_path, shots, size, prompt):
    model, graphs = demo
    graph = graphs[prompt]
    page, errors = _open_page(browser, graph, tmp_path / "g.html", SIZES[size], model)
    seen = _assert_readable(page, "#anb-root", graph)
    assert seen["plotWidth"] > (0.5 if size == "laptop" else 0.65) * SIZES[size][0], (
        seen
    )  # the plot fills the width
    name = "dallas" if prompt == PROMPT else "couplet"
    page.screenshot(path=os.path.join(shots, f"page-{name}-{size}.png"))
    assert errors == []


def test_the_page_prunes_like_python_over_the_full_range(browser, demo_graph, tmp_path):
    _, graph = demo_graph
    page, errors = _open_page(browser, graph, tmp_path / "g.html", SIZES["laptop"])
    for nt, et in [(0.8, 0.98), (0.8, 0.5), (0.5, 0.9), (1.0, 1.0), (0.3, 0.3), (1.0, 0.995)]:
        _set_slider(page, "#anb-root", "node_threshold", nt)
        _set_slider(page, "#anb-root", "edge_threshold", et)
        node_mask, edge_mask = graph.prune_masks(nt, et)
        assert _counts(page.inner_text(".anb-counts")) == (
            int(node_mask.sum()),
            int(edge_mask.sum()),
        ), (nt, et)
    assert errors == []


def test_the_panel_walks_the_graph_and_follows_the_sliders(browser, demo_graph, tmp_path, shots):
    model, graph = demo_graph
    page, errors = _open_page(browser, graph, tmp_path / "g.html", SIZES["laptop"], model)
    top = graph.prune(0.8, 0.98).top_features(10)
    node, latent = next(
        (n.node_id, model.feature_latents[(n.layer, n.feature)])
        for n in top.itertuples()
        if (n.layer, n.feature) in model.feature_latents
    )
    _click_until_shown(page, node, _nodes_of(page, "#anb-root"), ".anb-node-title")
    panel = page.inner_text(".anb-panel")
    assert "promotes" in panel and "suppresses" in panel and "where it fires most" in panel
    assert f"detects {latent}" in panel  # the measured latent, beside the contexts
    assert page.locator(".anb-context mark").count() > 0  # the active token is marked
    # the inputs listed are the drawn ones, and stay so after a slider move
    for et in (0.98, 0.6):
        _set_slider(page, "#anb-root", "edge_threshold", et)
        pruned = graph.prune(0.8, et)
        want = int((pruned.edges.target == node).sum())
        assert f"inputs ({want} drawn)" in page.inner_text(".anb-panel"), (et, want)
    # a neighbour row names the node readably, with a signed, coloured weight; clicking it walks there
    row = page.locator(".anb-neighbour").first
    target = row.get_attribute("data-node")
    assert row.locator(".anb-pos, .anb-neg").count() == 1 and "·" in row.inner_text()
    row.click()
    page.wait_for_function(
        "id => document.querySelector('.anb-node-title')?.textContent === id", arg=target
    )
    page.screenshot(path=os.path.join(shots, "page-panel.png"))
    assert errors == []


def test_invalid_actions_say_why_and_the_pinned_subgraph_exports(
    browser, demo_graph, tmp_path, shots
):
    model, graph = demo_graph
    page, errors = _open_page(browser, graph, tmp_path / "g.html", SIZES["laptop"], model)
    assert page.locator("button", has_text="group pinned").is_disabled()  # nothing pinned yet
    top = graph.prune(0.8, 0.98).top_features(3).node_id
    for node in top:
        _click_until_shown(page, node, _nodes_of(page, "#anb-root"), ".anb-node-title")
        page.locator("button.anb-pin").click()
    page.locator("button", has_text="group pinned").click()
    status = page.locator(".anb-status")
    assert status.is_visible() and "give the supernode a name" in status.inner_text()
    assert status.get_attribute("data-level") == "error"
    page.locator("button", has_text="subgraph").click()
    page.wait_for_selector(".anb-subgraph .anb-subplot .main-svg")
    assert page.locator(".anb-subgraph").get_attribute("data-nodes") == "3"
    page.locator(".anb-subgraph").scroll_into_view_if_needed()
    page.locator(".anb-subgraph").screenshot(path=os.path.join(shots, "page-subgraph.png"))
    with page.expect_download() as download:
        page.locator(".anb-subgraph button", has_text="SVG").click()
    svg = open(download.value.path(), encoding="utf-8").read()
    assert (
        svg.lstrip().startswith("<svg")
        and graph.node(top[0]).label[:10].replace("&", "&amp;") in svg
    )
    assert errors == []


def test_the_page_shows_hostile_strings_as_text(browser, tmp_path, shots):
    """Markup in tokens, labels, ids, the prompt and supernode names never runs: every node can be
    clicked, its id shows literally in the panel, no dialog opens and no error is logged."""
    graph = _hostile_graph()
    path = graph.to_html(tmp_path / "hostile.html", node_threshold=1.0, edge_threshold=1.0)
    page = browser.new_page(viewport={"width": 1400, "height": 900})
    dialogs, errors = [], []
    page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.goto(f"file://{path}")
    page.wait_for_function("document.querySelector('.anb-counts')?.textContent.includes('drawn')")
    assert page.title() == f"Attribution graph: {graph.prompt}"
    ids = [i for _, _, i in _nodes_of(page, "#anb-root")()]
    assert sorted(ids) == sorted(graph.nodes.node_id)
    for node_id in ids:
        _click_until_shown(page, node_id, _nodes_of(page, "#anb-root"), ".anb-node-title")
        assert page.locator("#anb-root img, #anb-root script").count() == 0
    page.screenshot(path=os.path.join(shots, "page-hostile.png"))
    assert dialogs == [] and errors == [], (dialogs, errors)


def _click_until_shown(page, node_id, places, title, tries=5, timeout=5_000):
    """Click a node until the panel's ``title`` element shows its id.  ``places()`` gives every
    drawn node's pixel place and id, read from plotly's layout again before each click."""
    from playwright.sync_api import TimeoutError as PlaywrightTimeout

    for attempt in range(tries):
        x, y = next((x, y) for x, y, i in places() if i == node_id)
        # plotly clicks the point it last hovered: move there first and let the hover land
        page.mouse.move(x + attempt % 2, y)
        page.wait_for_timeout(300)
        page.mouse.click(x + attempt % 2, y)
        try:
            page.wait_for_function(
                f"id => document.querySelector({title!r})?.textContent === id",
                arg=node_id,
                timeout=timeout,
            )
            return
        except PlaywrightTimeout:
            continue
    raise AssertionError(f"clicking {node_id!r} never showed it in the panel")


# ---- the widget in JupyterLab -------------------------------------------------------------
def _open_lab(browser, url, size):
    page = browser.new_page(viewport=dict(zip(("width", "height"), size)))
    errors = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    _run_first_cell(page, url)
    page.wait_for_function(
        "document.querySelector('.anb-graph-widget .anb-counts')?.textContent.includes('drawn')",
        timeout=180_000,
    )
    page.evaluate(
        "document.querySelector('.anb-graph-widget .anb-plot').scrollIntoView({block: 'center'})"
    )
    page.wait_for_timeout(800)
    return page, errors


@pytest.mark.parametrize("size", list(SIZES))
def test_the_widget_reads_at_a_glance_in_jupyterlab(browser, jupyterlab, demo_graph, shots, size):
    _, graph = demo_graph
    page, errors = _open_lab(
        browser, f"{jupyterlab}/lab/workspaces/{size}/tree/widget.ipynb?reset", SIZES[size]
    )
    assert page.locator("#filebrowser").is_visible()  # with the file browser open
    node_mask, edge_mask = graph.prune_masks(0.8, 0.98)
    assert _counts(page.inner_text(".anb-graph-widget .anb-counts")) == (
        int(node_mask.sum()),
        int(edge_mask.sum()),
    )
    _assert_readable(page, ".anb-graph-widget", graph)
    page.screenshot(path=os.path.join(shots, f"lab-{size}.png"))
    assert errors == []


def test_the_widget_intervenes_and_says_why_not(browser, jupyterlab, demo_graph, shots):
    _, graph = demo_graph
    page, errors = _open_lab(
        browser, f"{jupyterlab}/lab/workspaces/run/tree/widget.ipynb?reset", SIZES["laptop"]
    )
    root = ".anb-graph-widget"
    assert page.get_by_role(
        "button", name="ablate", exact=True
    ).is_disabled()  # nothing selected yet
    _set_slider(page, root, "edge_threshold", 0.6)
    node_mask, edge_mask = graph.prune_masks(0.8, 0.6)
    page.wait_for_function(
        f"document.querySelector('{root} .anb-counts').textContent.startsWith('{int(node_mask.sum())} nodes')"
    )
    assert _counts(page.inner_text(f"{root} .anb-counts")) == (
        int(node_mask.sum()),
        int(edge_mask.sum()),
    )
    pruned = graph.prune(
        0.8, 0.6
    )  # the most influential feature with a drawn input from an earlier position
    pos = dict(zip(pruned.nodes.node_id, pruned.nodes.position))
    node = next(
        n
        for n in pruned.top_features(30).node_id
        if any(pos[s] < pos[n] for s in pruned.edges.source[pruned.edges.target == n])
    )
    _click_until_shown(page, node, _nodes_of(page, root), f"{root} .anb-node-title")
    # a refusal from the kernel shows in the status line
    page.fill(f"{root} input.anb-value", "1e9")
    page.get_by_role("button", name="set", exact=True).click()
    page.wait_for_function(
        f"document.querySelector('{root} .anb-status').textContent.includes('must be in')"
    )
    assert page.locator(f"{root} .anb-status").get_attribute("data-level") == "error"
    # queue an ablation: the code to repeat it is shown; run it: the run history opens
    page.get_by_role("button", name="ablate", exact=True).click()
    page.wait_for_selector(f"{root} .anb-code")
    assert f"'{node}': 0.0" in page.inner_text(f"{root} .anb-code")
    page.get_by_role("button", name="run", exact=True).click()
    page.wait_for_selector(f"{root} .anb-run table.anb-before-after", timeout=60_000)
    run = page.inner_text(f"{root} .anb-run")
    assert "free" in run and "p before" in run and "after: …" in run
    assert page.inner_text(f"{root} .anb-node-title") == node  # the node's panel is still there
    page.screenshot(path=os.path.join(shots, "lab-intervention.png"), full_page=True)
    # an input from an earlier position: the heads that carry it, and why the strongest looks there
    page.locator(f"{root} .anb-neighbour button.anb-heads").first.click()
    page.wait_for_selector(f"{root} .anb-carried", timeout=60_000)
    carried = page.inner_text(f"{root} .anb-carried")
    assert "heads carrying" in carried and "looks there" in carried and " × " in carried
    assert "carries" in page.inner_text(f"{root} .anb-status")
    page.locator(f"{root} .anb-carried").scroll_into_view_if_needed()
    page.screenshot(path=os.path.join(shots, "lab-heads.png"))
    assert errors == []


_BOX_JS = """root => { const box = e => e.getBoundingClientRect();
  const status = document.querySelector(root + ' .anb-status'), widget = document.querySelector(root);
  const s = box(status), w = box(widget), p = box(document.querySelector(root + ' .anb-plot'));
  return {status: [s.left, s.top, s.right, s.bottom], widget: [w.left, w.right],
          plot: [p.left, p.top, p.right, p.bottom], scroll: [status.scrollWidth, status.clientWidth,
          status.scrollHeight, status.clientHeight],
          lines: Math.round(s.height / parseFloat(getComputedStyle(status).lineHeight))}; }"""


@pytest.mark.parametrize("size", list(SIZES))
def test_the_status_line_says_where_rows_are_missing(browser, jupyterlab, demo_graph, shots, size):
    """The demo graph has adaptive rows (some features without rows): with a slider away from
    the thresholds they were proved for, the status line says so, whole and wrapped, beside
    the plot rather than over it; back at those thresholds the note goes."""
    _, graph = demo_graph
    assert graph.info["features_without_rows"] > 0
    page, errors = _open_lab(
        browser, f"{jupyterlab}/lab/workspaces/rows-{size}/tree/widget.ipynb?reset", SIZES[size]
    )
    root = ".anb-graph-widget"
    assert page.locator("#filebrowser").is_visible()
    status = page.locator(f"{root} .anb-status")
    assert "no rows" not in status.inner_text()
    _set_slider(page, root, "edge_threshold", 0.6)
    page.wait_for_function(
        f"document.querySelector('{root} .anb-status').textContent.includes('no rows')"
    )
    text = status.inner_text()
    assert f"{graph.info['features_without_rows']} features of this graph have no rows" in text
    assert "rows='all'" in text and status.get_attribute("data-level") == "info"
    seen = page.evaluate(_BOX_JS, root)
    sx0, sy0, sx1, sy1 = seen["status"]
    assert seen["widget"][0] - 1 <= sx0 and sx1 <= seen["widget"][1] + 1, seen  # inside the widget
    assert (
        seen["scroll"][0] <= seen["scroll"][1] + 1 and seen["scroll"][2] <= seen["scroll"][3] + 1
    ), seen  # not cut
    px0, py0, px1, py1 = seen["plot"]
    assert sx1 <= px0 or sx0 >= px1 or sy1 <= py0 or sy0 >= py1, seen  # not over the plot
    assert seen["lines"] >= 2, seen  # wrapped, not one long line
    page.locator(f"{root} .anb-status").scroll_into_view_if_needed()
    page.screenshot(path=os.path.join(shots, f"lab-rows-note-{size}.png"))
    _set_slider(page, root, "edge_threshold", 0.98)
    page.wait_for_function(
        f"!document.querySelector('{root} .anb-status').textContent.includes('no rows')"
    )
    assert errors == []


def test_plotly_is_fetched_once_per_page(browser, jupyterlab):
    page = browser.new_page(viewport={"width": 1400, "height": 900})
    page.goto(f"{jupyterlab}/lab/workspaces/two/tree/two.ipynb?reset")
    page.wait_for_selector(".jp-Notebook .jp-Cell .jp-InputArea-editor", timeout=60_000)
    page.wait_for_function("document.body.innerText.includes('Idle')", timeout=120_000)
    page.click(".jp-Cell .jp-InputArea-editor")
    page.keyboard.press("Shift+Enter")
    page.wait_for_function(
        "document.querySelectorAll('.anb-graph-widget .anb-counts').length === 1", timeout=180_000
    )
    page.keyboard.press("Shift+Enter")
    page.wait_for_function(
        "document.querySelectorAll('.anb-graph-widget .anb-counts').length === 2", timeout=180_000
    )
    assert page.evaluate("globalThis.__anbPlotlyRequests") == 1


def test_the_widget_shows_hostile_strings_as_text(browser, jupyterlab, shots):
    """The same hostile graph in the JupyterLab widget: every node clicked shows its id as text."""
    page = browser.new_page(viewport={"width": 1400, "height": 900})
    dialogs, errors = [], []
    page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
    page.on("pageerror", lambda e: errors.append(str(e)))
    _run_first_cell(page, f"{jupyterlab}/lab/workspaces/hostile/tree/hostile.ipynb?reset")
    page.wait_for_function(
        "document.querySelector('.anb-graph-widget .anb-counts')?.textContent.includes('drawn')",
        timeout=180_000,
    )
    page.evaluate(
        "document.querySelector('.anb-graph-widget .anb-plot').scrollIntoView({block: 'center'})"
    )
    page.wait_for_timeout(500)
    places = _nodes_of(page, ".anb-graph-widget")
    assert sorted(i for _, _, i in places()) == sorted(_hostile_graph().nodes.node_id)
    for node_id in [i for _, _, i in places()]:
        _click_until_shown(page, node_id, places, ".anb-graph-widget .anb-node-title")
        assert page.locator(".anb-graph-widget img, .anb-graph-widget script").count() == 0
    page.screenshot(path=os.path.join(shots, "lab-hostile.png"))
    assert dialogs == [] and errors == [], (dialogs, errors)
