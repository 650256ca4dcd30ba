"""The command line and the notebooks, run as a user would run them."""

import json
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

import attribution_nb as anb
from attribution_nb.cli import main

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))


def test_cli_attribute_writes_graph_and_tables(tmp_path, capsys):
    out = tmp_path / "g.graph"
    rc = main(["attribute", "the opposite of small is", "--out", str(out), "--tables", "csv",
               "--node-threshold", "0.7", "--edge-threshold", "0.9"])
    assert rc == 0
    g = anb.AttributionGraph.load(out)
    assert g.prompt == "the opposite of small is" and g.info["node_threshold"] == 0.7
    nodes = pd.read_csv(tmp_path / "g.nodes.csv")
    assert list(nodes.node_id) == list(g.nodes.node_id)
    assert len(pd.read_csv(tmp_path / "g.edges.csv")) == len(g.edges)
    assert "replacement score" in capsys.readouterr().out


def test_cli_targets_and_contrasts(tmp_path, capsys):
    out = tmp_path / "c.graph"
    assert main(["demo", "--contrast", "austin", "sacramento", "--target", "texas", "--out", str(out)]) == 0
    g = anb.AttributionGraph.load(out)
    assert list(g.logits.token) == ["texas", "austin − sacramento"]
    model = anb.load_model()
    logits = model.logits(g.prompt).double()
    assert g.logits.logit[1] == pytest.approx(float(logits[model.token_id("austin")] - logits[model.token_id("sacramento")]),
                                              abs=1e-4)
    assert "'austin − sacramento' = " in capsys.readouterr().out
    assert main(["demo", "--contrast", "austin", "austin", "--out", str(tmp_path / "x.graph")]) == 2
    assert "compares a token with itself" in capsys.readouterr().err


def test_cli_bad_input_is_a_clear_error(tmp_path, capsys):
    assert main(["attribute", "", "--out", str(tmp_path / "x.graph")]) == 2
    assert "prompt is empty" in capsys.readouterr().err
    assert main(["attribute", "the", "--node-threshold", "2", "--out", str(tmp_path / "x.graph")]) == 2
    assert "node_threshold must be in [0, 1], got 2.0" in capsys.readouterr().err
    assert not (tmp_path / "x.graph").exists()
    (tmp_path / "a.graph").mkdir()                     # a folder where the graph file should go
    assert main(["attribute", "the", "--out", str(tmp_path / "a.graph")]) == 2
    assert "a.graph: it is a directory" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.graph"]     # no temporary file left


def test_demo_command_as_a_subprocess(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "attribution_nb", "demo", "--out", str(tmp_path / "d.graph")],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert "wrote" in proc.stdout and (tmp_path / "d.graph").exists()


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.name for p in NOTEBOOKS])
def test_notebook_is_stored_without_outputs(path):
    nb = json.loads(path.read_text())
    for cell in nb["cells"]:
        if cell["cell_type"] == "code":
            assert cell.get("outputs", []) == [] and cell.get("execution_count") is None, f"{path.name} has outputs"
    assert nb["metadata"].get("kernelspec", {}).get("name") == "python3"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.name for p in NOTEBOOKS])
def test_notebook_runs_top_to_bottom(path, tmp_path):
    import nbformat
    from nbclient import NotebookClient
    nb = nbformat.read(path, as_version=4)
    NotebookClient(nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}).execute()
    outputs = "".join(o.get("text", "") for c in nb.cells if c.cell_type == "code" for o in c.outputs)
    assert "all checks passed" in outputs
