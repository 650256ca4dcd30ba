"""The command line and the notebooks, run as a user would run them."""

import json
import os
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
    rc = main(
        [
            "attribute",
            "the opposite of small is",
            "--out",
            str(out),
            "--tables",
            "csv",
            "--node-threshold",
            "0.7",
            "--edge-threshold",
            "0.9",
        ]
    )
    assert rc == 0
    g = anb.AttributionGraph.load(out)
    assert g.prompt == "the opposite of small is" and g.info["node_threshold"] == 0.7
    nodes = pd.read_csv(tmp_path / "g.nodes.csv")
    assert list(nodes.node_id) == list(g.nodes.node_id)
    assert len(pd.read_csv(tmp_path / "g.edges.csv")) == len(g.edges)
    assert "replacement score" in capsys.readouterr().out


def test_cli_targets_and_contrasts(tmp_path, capsys):
    out = tmp_path / "c.graph"
    assert (
        main(["demo", "--contrast", "austin", "sacramento", "--target", "texas", "--out", str(out)])
        == 0
    )
    g = anb.AttributionGraph.load(out)
    assert list(g.logits.token) == ["texas", "austin − sacramento"]
    model = anb.load_model()
    logits = model.logits(g.prompt).double()
    assert g.logits.logit[1] == pytest.approx(
        float(logits[model.token_id("austin")] - logits[model.token_id("sacramento")]), abs=1e-4
    )
    assert "'austin − sacramento' = " in capsys.readouterr().out
    assert main(["demo", "--contrast", "austin", "austin", "--out", str(tmp_path / "x.graph")]) == 2
    assert "compares a token with itself" in capsys.readouterr().err


def test_cli_bad_input_is_a_clear_error(tmp_path, capsys):
    assert main(["attribute", "", "--out", str(tmp_path / "x.graph")]) == 2
    assert "prompt is empty" in capsys.readouterr().err
    assert (
        main(["attribute", "the", "--node-threshold", "2", "--out", str(tmp_path / "x.graph")]) == 2
    )
    assert "--node-threshold must be in [0, 1], got 2.0" in capsys.readouterr().err
    assert not (tmp_path / "x.graph").exists()
    (tmp_path / "a.graph").mkdir()  # a folder where the graph file should go
    assert main(["attribute", "the", "--out", str(tmp_path / "a.graph")]) == 2
    assert "a.graph: it is a directory" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.graph"]  # no temporary file left


def test_demo_command_as_a_subprocess(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "attribution_nb", "demo", "--out", str(tmp_path / "d.graph")],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    assert "wrote" in proc.stdout and (tmp_path / "d.graph").exists()


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.name for p in NOTEBOOKS])
def test_notebook_is_stored_without_outputs(path):
    nb = json.loads(path.read_text())
    for cell in nb["cells"]:
        if cell["cell_type"] == "code":
            assert cell.get("outputs", []) == [] and cell.get("execution_count") is None, (
                f"{path.name} has outputs"
            )
    assert nb["metadata"].get("kernelspec", {}).get("name") == "python3"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.name for p in NOTEBOOKS])
def test_notebook_runs_top_to_bottom(path, tmp_path):
    import nbformat
    from nbclient import NotebookClient

    nb = nbformat.read(path, as_version=4)
    NotebookClient(
        nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}
    ).execute()
    outputs = "".join(
        o.get("text", "") for c in nb.cells if c.cell_type == "code" for o in c.outputs
    )
    assert "all checks passed" in outputs


def test_cli_outputs_are_checked_before_work_and_written_as_one_set(tmp_path, capsys):
    out = str(tmp_path / "g.graph")
    assert main(["demo", "--out", out, "--html", out]) == 2
    assert "two outputs name the same file" in capsys.readouterr().err
    (tmp_path / "victim").write_text("mine")
    (tmp_path / "d.nodes.csv").symlink_to(tmp_path / "victim")
    assert main(["demo", "--out", str(tmp_path / "d.graph"), "--tables", "csv"]) == 2
    assert "d.nodes.csv: it is a symlink" in capsys.readouterr().err
    assert (tmp_path / "victim").read_text() == "mine" and not (tmp_path / "d.graph").exists()
    os.mkfifo(tmp_path / "p.html")
    assert (
        main(["demo", "--out", str(tmp_path / "p.graph"), "--html", str(tmp_path / "p.html")]) == 2
    )
    assert "it exists and is a FIFO" in capsys.readouterr().err
    # a good run writes the graph, its three tables and the page, and they agree
    assert (
        main(
            [
                "demo",
                "--out",
                str(tmp_path / "ok.graph"),
                "--tables",
                "csv",
                "--html",
                str(tmp_path / "ok.html"),
            ]
        )
        == 0
    )
    g = anb.AttributionGraph.load(tmp_path / "ok.graph")
    nodes = pd.read_csv(tmp_path / "ok.nodes.csv")
    assert (
        list(nodes.node_id) == list(g.nodes.node_id)
        and len(pd.read_csv(tmp_path / "ok.edges.csv")) == g.n_edges
    )
    assert (tmp_path / "ok.html").stat().st_size > 1e6
    assert not [p for p in os.listdir(tmp_path) if p.endswith(".tmp")]


def test_cli_export_and_serve(tmp_path, capsys):
    assert main(["demo", "--out", str(tmp_path / "d.graph")]) == 0
    folder = tmp_path / "np"
    assert (
        main(
            [
                "export",
                str(tmp_path / "d.graph"),
                "--neuronpedia",
                str(folder),
                "--slug",
                "dallas",
                "--features",
            ]
        )
        == 0
    )
    back = anb.AttributionGraph.load(folder / "dallas.json")
    assert set(back.nodes.node_id) == set(
        anb.AttributionGraph.load(tmp_path / "d.graph").nodes.node_id
    )
    assert len(os.listdir(folder / "features" / "demo")) == (back.nodes.kind == "feature").sum()
    capsys.readouterr()
    assert main(["serve", str(tmp_path), "--python", sys.executable]) == 2
    assert "no graph-metadata.json" in capsys.readouterr().err
    assert (
        main(["export", str(tmp_path / "d.graph"), "--neuronpedia", str(folder), "--model", "demo"])
        == 2
    )
    assert "used only with --features" in capsys.readouterr().err
