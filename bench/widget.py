"""What the graph view costs, in the kernel and in a real browser, on the demo model's Dallas graph.

    python bench/widget.py [--edges 5000] [--base REV]

Kernel: building a ``GraphWidget`` (the payload the browser prunes) on a graph pruned to about
``--edges`` edges and on the full graph; ``graph.to_html``.

Browser (Debian's chromium through Playwright, as in the tests):
- slider move at ~``--edges`` drawn edges: from the slider's input event to plotly's
  ``afterplot`` (pruning, layout and drawing all happen in the page), median of 10 moves, on the
  standalone page and in the JupyterLab widget;
- first widget in a fresh kernel: from running the cell ``anb.GraphWidget(graph, model)`` (the
  graph built by the cell before; default thresholds) to the drawn plot in JupyterLab, plotly.js
  included; then the same widget's slider moves as on the page.

``--base REV`` measures the first widget of an older revision too (a git worktree under
``bench/.work``, imported by the same JupyterLab), printed next to this one: the same machine,
the same run.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PROMPT = "fact : the capital of the state containing dallas is"
CHROMIUM = "/usr/bin/chromium"

# time from a slider's input event to plotly's afterplot, median of the given moves (ms)
_MOVE_JS = """
async ([root, values]) => {
  const input = document.querySelector(root + " input[data-key=edge_threshold]");
  const plot = document.querySelector(root + " .anb-plot");
  const nodes = document.querySelector(root + " input[data-key=node_threshold]");
  const ready = new Promise(resolve => plot.once("plotly_afterplot", resolve));
  nodes.value = 1; nodes.dispatchEvent(new Event("input"));       // every node: the drawn edges follow the edge slider
  await ready;
  const times = [], edges = [];
  for (const v of values) {
    if (Math.abs(Number(input.value) - v) < 1e-9) continue;
    const done = new Promise(resolve => plot.once("plotly_afterplot", resolve));
    const t0 = performance.now();
    input.value = v; input.dispatchEvent(new Event("input"));
    await done;
    times.push(performance.now() - t0);
    edges.push(Number(document.querySelector(root + ".anb-view, " + root + " .anb-view").dataset.edges));
  }
  times.sort((a, b) => a - b);
  return [times[Math.floor(times.length / 2)], Math.min(...edges), Math.max(...edges)];
}
"""


def loosest_threshold(graph, edges: int) -> float:
    """The loosest edge threshold whose pruned graph has at most ``edges`` edges."""
    lo, hi = 0.0, 1.0
    for _ in range(30):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if graph.prune_masks(1.0, mid)[1].sum() <= edges else (lo, mid)
    return lo


def kernel_side(model, full, graph) -> None:
    from attribution_nb.views.widget import GraphWidget

    GraphWidget(graph, model)  # warm-up: imports
    for name, g in (
        (f"{graph.n_edges}-edge graph", graph),
        (f"full graph ({full.n_edges} edges)", full),
    ):
        times = []
        for _ in range(3):
            t = time.perf_counter()
            GraphWidget(g, model)
            times.append(time.perf_counter() - t)
        print(
            f"kernel: GraphWidget on the {name:<26} {statistics.median(times) * 1000:7.0f} ms (payload, median of 3)"
        )
    with tempfile.TemporaryDirectory() as tmp:
        t = time.perf_counter()
        path = full.to_html(os.path.join(tmp, "g.html"), model=model)
        print(
            f"kernel: to_html of the full graph           {(time.perf_counter() - t) * 1000:7.0f} ms, "
            f"{os.path.getsize(path) / 1e6:.1f} MB"
        )


def page_slider(browser, graph, model, threshold: float) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = graph.to_html(
            os.path.join(tmp, "g.html"), model=model, node_threshold=1.0, edge_threshold=threshold
        )
        page = browser.new_page(viewport={"width": 1400, "height": 900})
        page.goto(f"file://{path}")
        page.wait_for_function(
            "document.querySelector('.anb-counts')?.textContent.includes('drawn')"
        )
        values = [round(threshold + d, 3) for d in (-0.001, 0.001, -0.002, 0.0, 0.002)] * 2
        median, lo, hi = page.evaluate(_MOVE_JS, ["#anb-root", values])
        print(
            f"browser: page slider move at {lo}–{hi} drawn edges    {median:7.1f} ms (input → drawn, median of 10)"
        )
        page.close()


def _notebook(path: str, cells: list[str]) -> None:
    nb = {
        "cells": [
            {
                "cell_type": "code",
                "id": f"c{i}",
                "metadata": {},
                "execution_count": None,
                "outputs": [],
                "source": src,
            }
            for i, src in enumerate(cells)
        ],
        "metadata": {
            "kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"}
        },
        "nbformat": 4,
        "nbformat_minor": 5,
    }
    with open(path, "w") as f:
        json.dump(nb, f)


def lab(folder: str):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
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
        f"--ServerApp.root_dir={folder}",
        "--LabApp.news_url=",
        "--allow-root",
    ]
    proc = subprocess.Popen(
        cmd,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=dict(os.environ, JUPYTER_CONFIG_DIR=os.path.join(folder, ".jupyter")),
    )
    url = f"http://127.0.0.1:{port}"
    for _ in range(180):
        try:
            urllib.request.urlopen(url + "/api", timeout=2)
            return proc, url
        except OSError:
            time.sleep(0.5)
    proc.terminate()
    raise RuntimeError("JupyterLab did not start")


def first_widget(
    browser, url: str, name: str, rendered: str, threshold: float | None = None
) -> float:
    """Seconds from running the widget cell (the second) to ``rendered`` in the page."""
    page = browser.new_page(viewport={"width": 1400, "height": 900})
    page.goto(f"{url}/lab/workspaces/{name}/tree/{name}.ipynb?reset")
    page.wait_for_selector(".jp-Notebook .jp-Cell .jp-InputArea-editor", timeout=60_000)
    page.wait_for_function("document.body.innerText.includes('Idle')", timeout=120_000)
    page.click(".jp-Cell .jp-InputArea-editor")
    page.keyboard.press("Shift+Enter")  # the set-up cell
    page.wait_for_function(
        "document.querySelector('.jp-Cell .jp-InputPrompt').textContent.includes('[1]')",
        timeout=300_000,
    )
    t = time.perf_counter()
    start = page.evaluate("performance.now()")
    page.keyboard.press("Shift+Enter")  # the widget cell
    page.wait_for_function(
        f"document.querySelector({rendered!r}) !== null", timeout=300_000, polling=20
    )
    seconds = time.perf_counter() - t
    page.wait_for_timeout(200)
    times = page.evaluate("globalThis.__anbTimes || null")
    if times:
        a, b, c = (v - start for v in times[0])
        print(
            f"         (from the keypress: the view starts at {a:.0f} ms, has plotly.js at {b:.0f} ms, "
            f"has drawn at {c:.0f} ms)"
        )
    if threshold is not None:
        page.evaluate("document.querySelector('.anb-graph-widget .anb-plot').scrollIntoView()")
        values = [round(threshold + d, 3) for d in (-0.001, 0.001, -0.002, 0.0, 0.002)] * 2
        median, lo, hi = page.evaluate(_MOVE_JS, [".anb-graph-widget", values])
        print(
            f"browser: widget slider move at {lo}–{hi} drawn edges  {median:7.1f} ms (input → drawn, median of 10)"
        )
    page.close()
    return seconds


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--edges", type=int, default=5000)
    ap.add_argument("--base", help="a git revision whose first widget to time next to this one")
    args = ap.parse_args()

    import torch
    from playwright.sync_api import sync_playwright

    import attribution_nb as anb

    torch.set_num_threads(2)
    model = anb.load_model()
    full = anb.attribute(model, PROMPT, progress=False)
    threshold = loosest_threshold(full, args.edges)
    graph = full.prune(1.0, threshold)
    print(
        f"graph: {len(full.nodes)} nodes, {full.n_edges} edges; at edge threshold {threshold:.4f} "
        f"{graph.n_edges} edges are drawn; {os.cpu_count()} cores"
    )
    kernel_side(model, full, graph)

    folder = tempfile.mkdtemp(prefix="anb-bench-")
    setup = [
        "import attribution_nb as anb\n",
        "model = anb.load_model()\n",
        f"graph = anb.attribute(model, {PROMPT!r}, progress=False)\n",
    ]
    _notebook(
        os.path.join(folder, "now.ipynb"),
        [
            f"import sys; sys.path.insert(0, {ROOT!r})\n" + "".join(setup),
            "anb.GraphWidget(graph, model)",
        ],
    )
    if args.base:
        base = os.path.join(ROOT, "bench", ".work", f"widget-{args.base}")
        if not os.path.isdir(base):
            subprocess.run(
                ["git", "-C", ROOT, "worktree", "add", "--detach", base, args.base],
                check=True,
                stdout=subprocess.DEVNULL,
            )
        _notebook(
            os.path.join(folder, "base.ipynb"),
            [
                f"import sys; sys.path.insert(0, {base!r})\n" + "".join(setup),
                "anb.GraphWidget(graph, model)",
            ],
        )
    proc, url = lab(folder)
    try:
        with sync_playwright() as p:
            browser = p.chromium.launch(
                executable_path=CHROMIUM, headless=True, args=["--no-sandbox"]
            )
            page_slider(browser, full, model, threshold)
            now = first_widget(browser, url, "now", ".anb-graph-widget .anb-counts", threshold)
            print(
                f"browser: first widget in a fresh kernel          {now:7.2f} s (this revision)",
                flush=True,
            )
            if args.base:
                old = first_widget(browser, url, "base", ".anb-graph-widget .js-plotly-plot canvas")
                print(
                    f"browser: first widget in a fresh kernel          {old:7.2f} s at {args.base} "
                    f"(plotly FigureWidget: {old / now:.1f}× this revision's time)"
                )
            browser.close()
    finally:
        proc.terminate()


if __name__ == "__main__":
    main()
