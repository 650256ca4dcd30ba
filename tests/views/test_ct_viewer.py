"""Our Neuronpedia export opened in circuit-tracer's own local viewer (its ``local_server`` and
front end, from the conformance environment of ``tests/transcoders/test_conformance.py``), in
Debian's chromium at 1400×900.

The viewer's page loads d3, a d3-jetpack fork, dagre and pako from CDNs.  The test serves the
same libraries from npm packages instead (d3@7, d3-collection@1, d3-jetpack@2.3.0, dagre@0.8.5,
pako@2.1.0: downloaded once from the npm registry, checked against the registry's SHA-1), with a
few lines adapting d3-jetpack 2.3.0 to the fork's ``conventions().drawAxis``; every other
outside request is refused and counted.  Asserted: the pruning slider at 0.5 shows exactly the
nodes whose cumulative influence share is at most 0.5, and they include the most influential
features; clicking the top feature shows its page from the folder (top activations whose
marked token is the feature's own context); no console error.  Screenshots go to
``$ANB_SCREENSHOTS``.
"""

import hashlib
import io
import json
import os
import socket
import subprocess
import tarfile
import time
import urllib.request
from pathlib import Path

import pytest

import attribution_nb as anb
from transcoders.test_conformance import _publisher_python
from views.test_browser import browser, shots  # noqa: F401  (fixtures)

pytestmark = [pytest.mark.browser, pytest.mark.conformance]
ROOT = Path(__file__).resolve().parents[2]
LIB = "https://transformer-circuits.pub/2025/attribution-graphs/static_js/lib/"
PACKAGES = {  # name@version: (file in the package, SHA-1 of the tarball as the npm registry lists it)
    "d3@7.9.0": ("package/dist/d3.js", "579e7acb3d749caf8860bd1741ae8d371070cd5d"),
    "d3-collection@1.0.7": (
        "package/dist/d3-collection.js",
        "349bd2aa9977db071091c13144d5e4f16b5b310e",
    ),
    "d3-jetpack@2.3.0": (
        "package/build/d3-jetpack.cjs",
        "108a69755f8937956da1039cd866462ebffbace4",
    ),
    "dagre@0.8.5": ("package/dist/dagre.min.js", "ba30b0055dac12b6c1fcc247817442777d06afee"),
    "pako@2.1.0": ("package/dist/pako.min.js", "266cc37f98c7d883545d11335c00fbd4062c9a86"),
}
#: d3-jetpack 2.3.0 exports drawAxis(c); the fork the page expects gives conventions() a drawAxis(svg) method
ADAPT_DRAW_AXIS = """(function () {
  var conventions = d3.conventions;
  d3.conventions = function (c) {
    var out = conventions(c);
    out.drawAxis = function (svg) { return d3.drawAxis(Object.assign({}, out, {svg: svg || out.svg})); };
    return out;
  };
})();"""


def _npm(spec: str) -> str:
    """The text of one file of an npm package, fetched once into the conformance folder."""
    name, version = spec.split("@")
    inner, sha1 = PACKAGES[spec]
    folder = Path(os.environ.get("ANB_CONFORMANCE_DIR", ROOT / ".conformance")) / "npm"
    tarball = folder / f"{name}-{version}.tgz"
    if not tarball.exists():
        folder.mkdir(parents=True, exist_ok=True)
        url = f"https://registry.npmjs.org/{name}/-/{name}-{version}.tgz"
        data = urllib.request.urlopen(url, timeout=60).read()
        tarball.write_bytes(data)
    data = tarball.read_bytes()
    assert hashlib.sha1(data).hexdigest() == sha1, (
        f"{tarball}: not the tarball the npm registry lists"
    )
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        return tar.extractfile(inner).read().decode("utf-8")


def _libraries() -> dict[str, str]:
    """CDN address → script text served in its place."""
    jetpack = (
        "(function () { var module = {exports: {}}; var exports = module.exports;"
        " var require = function () { return window.d3; };\n"
        + _npm("d3-jetpack@2.3.0")
        + "\nObject.assign(window.d3, module.exports); }).call(window);"
    )
    return {
        LIB + "d3.js": _npm("d3@7.9.0") + "\n" + _npm("d3-collection@1.0.7") + "\n" + jetpack,
        LIB + "jetpack_2024-07-20.js": ADAPT_DRAW_AXIS,
        LIB
        + "npy_v0.js": "window.npyjs = {parse: function () { throw new Error('no .npy files here'); }};",
        LIB + "hotserver-client-ws.js": "",
        "https://unpkg.com/dagre@0.8.5/dist/dagre.min.js": _npm("dagre@0.8.5"),
        "https://unpkg.com/pako@2.1.0/dist/pako.min.js": _npm("pako@2.1.0"),
    }


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def viewer(tmp_path_factory):
    """(folder, port, model, graph): our export with feature pages, served by circuit-tracer's server."""
    python = _publisher_python("circuit-tracer")
    if (
        os.environ.get("CI") != "true"
        and os.environ.get("ANB_CONFORMANCE") != "1"
        and not (
            Path(os.environ.get("ANB_CONFORMANCE_DIR", ROOT / ".conformance")) / "npm"
        ).exists()
    ):
        pytest.skip("set ANB_CONFORMANCE=1 to fetch the viewer's libraries from the npm registry")
    model = anb.load_model()
    graph = anb.attribute(
        model, "fact : the capital of the state containing dallas is", rows="all", progress=False
    )
    folder = tmp_path_factory.mktemp("graphs")
    graph.to_neuronpedia(folder, slug="dallas", features=True, model=model)
    port = _free_port()
    server = subprocess.Popen(
        [
            python,
            "-c",
            "import sys, time\nfrom circuit_tracer.frontend.local_server import serve\n"
            "serve(data_dir=sys.argv[1], port=int(sys.argv[2]))\ntime.sleep(3600)",
            str(folder),
            str(port),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    for _ in range(100):
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/data/graph-metadata.json", timeout=1)
            break
        except OSError:
            time.sleep(0.2)
    else:
        server.kill()
        pytest.fail(f"circuit-tracer's server did not start: {server.stderr.read()[-2000:]}")
    yield folder, port, model, graph
    server.kill()
    server.wait()


def test_our_export_in_circuit_tracer_s_viewer(viewer, browser, shots):  # noqa: F811
    folder, port, model, graph = viewer
    libraries = _libraries()
    outside, errors = [], []
    page = browser.new_page(viewport={"width": 1400, "height": 900})

    def route(r):
        url = r.request.url
        if url in libraries:
            return r.fulfill(body=libraries[url], content_type="application/javascript")
        if url.startswith(f"http://localhost:{port}/"):
            return r.continue_()
        outside.append(url)
        return r.abort()

    page.route("**/*", route)
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.goto(f"http://localhost:{port}/index.html?slug=dallas&pruningThreshold=0.5")
    page.wait_for_function(
        "document.querySelectorAll('.link-graph text.node').length > 0", timeout=30000
    )
    page.wait_for_timeout(500)
    page.screenshot(path=os.path.join(shots, "ct-viewer-dallas-0.5.png"))

    data = json.loads((folder / "dallas.json").read_text())
    want = {
        n["node_id"]
        for n in data["nodes"]
        if n["feature_type"] == "cross layer transcoder" and n["influence"] <= 0.5
    }
    shown = set(
        page.evaluate("""() => [...document.querySelectorAll('.link-graph text.node')]
        .map(e => e.__data__).filter(d => d && d.feature_type === 'cross layer transcoder').map(d => d.nodeId)""")
    )
    assert shown == want and shown, (sorted(shown), sorted(want))
    top = graph.top_features(3)
    assert {f"{r.layer}_{r.feature}_{r.position}" for r in top.itertuples()} <= shown
    # and it hides the weaker ones: every hidden feature has less influence than every shown one
    raw = {
        f"{r.layer}_{r.feature}_{r.position}": r.influence
        for r in graph.nodes[graph.nodes.kind == "feature"].itertuples()
    }
    hidden = {
        n["node_id"] for n in data["nodes"] if n["feature_type"] == "cross layer transcoder"
    } - shown
    assert hidden and max(raw[i] for i in hidden) <= min(raw[i] for i in shown)

    # click the most influential feature: its page comes from the folder
    best = top.iloc[0]
    best_id = f"{best.layer}_{best.feature}_{best.position}"
    box = page.evaluate(f"""() => {{ for (const e of document.querySelectorAll('.link-graph *')) {{
        const d = e.__data__; if (d && d.nodeId === '{best_id}' && e.tagName !== 'g') {{
        const r = e.getBoundingClientRect(); return [r.x + r.width / 2, r.y + r.height / 2]; }} }} }}""")
    assert box, f"{best_id} is not drawn"
    page.mouse.click(*box)
    page.wait_for_function(
        "document.querySelector('.feature-example-list')?.innerText.includes('Top activations')",
        timeout=15000,
    )
    page.screenshot(path=os.path.join(shots, "ct-viewer-dallas-clicked.png"))
    text = page.evaluate("document.querySelector('.feature-example-list').innerText")
    first = model.feature_contexts[(int(best.layer), int(best.feature))][0][0]
    assert first.replace("[", "").replace("]", "").split()[-1] in text and "containing" in text, (
        text[:400]
    )
    logits = page.evaluate("document.querySelector('.feature-example-logits')?.innerText || ''")
    assert "austin" in logits, logits
    assert errors == [], errors
    assert outside == [], outside
    page.close()
