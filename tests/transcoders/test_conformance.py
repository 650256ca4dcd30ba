"""Loaders against the publishers' own code: circuit-tracer and sae-lens, installed from PyPI in
environments of their own (they pin other versions of nnsight and transformers), write
transcoders with their own save functions and compute their own encode / decode on random
inputs (``publishers.py``); attribution_nb loads the files and must agree to 1e-6 relative.

The environments are built on first use under ``.conformance/`` (or ``$ANB_CONFORMANCE_DIR``):
always under ``CI=true``; elsewhere only with ``ANB_CONFORMANCE=1`` (a download of about 1 GB),
else these tests skip.  GemmaScope publishes no code to write its ``params.npz``; its key names
and shapes are checked against its model card's description in ``test_formats.py``.
"""

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from attribution_nb.transcoders import load_transcoder, load_transcoders

pytestmark = pytest.mark.conformance
ROOT = Path(__file__).resolve().parents[2]
PUBLISHERS = {
    "circuit-tracer": ["circuit-tracer==0.5.0", "nnsight==0.7.0", "transformers<=4.57.3"],
    "sae-lens": ["sae-lens==6.54.12"],
}


def _publisher_python(name: str) -> str:
    root = Path(os.environ.get("ANB_CONFORMANCE_DIR", ROOT / ".conformance"))
    python = root / name / "bin" / "python"
    if python.exists():
        return str(python)
    if os.environ.get("CI") != "true" and os.environ.get("ANB_CONFORMANCE") != "1":
        pytest.skip(
            f"no {name} environment in {root}: set ANB_CONFORMANCE=1 to build it (about 1 GB from PyPI)"
        )
    subprocess.run([sys.executable, "-m", "venv", str(root / name)], check=True)
    torch_req = "torch==" + torch.__version__.split("+")[0]  # the same torch as ours
    subprocess.run(
        [str(python), "-m", "pip", "install", "-q", torch_req, *PUBLISHERS[name]], check=True
    )
    return str(python)


@pytest.fixture(scope="module", params=sorted(PUBLISHERS))
def written(request, tmp_path_factory):
    python = _publisher_python(request.param)
    out = tmp_path_factory.mktemp(request.param)
    done = subprocess.run(
        [python, str(Path(__file__).parent / "publishers.py"), request.param, str(out)],
        capture_output=True,
        text=True,
        cwd=out,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return request.param, out


def _close(got: torch.Tensor, want: np.ndarray, what: str) -> None:
    want_t = torch.from_numpy(want).to(got.dtype)
    scale = float(want_t.abs().max()) or 1.0
    assert float((got - want_t).abs().max()) <= 1e-6 * scale, (
        f"{what}: differs by {float((got - want_t).abs().max())}"
    )


def test_per_layer_transcoders_encode_and_decode_as_their_publisher(written):
    publisher, out = written
    files = sorted(
        p for p in out.iterdir() if p.name.endswith(".expect.npz") and "clt" not in p.name
    )
    assert files, f"{publisher} wrote nothing"
    for expect in files:
        name = expect.name.removesuffix(".expect.npz")
        path = out / name if (out / name).is_dir() else out / f"{name}.safetensors"
        tc = load_transcoder(path)
        e = np.load(expect, allow_pickle=False)
        x = torch.from_numpy(e["x"]).to(tc.W_enc.dtype)
        _close(tc.encode(x), e["acts"], f"{name} encode")
        _close(tc(x), e["out"], f"{name} decode")


def test_cross_layer_transcoders_match_their_publisher(written):
    publisher, out = written
    if not (out / "ct_clt").is_dir():
        pytest.skip(f"{publisher} writes no cross-layer transcoder here")
    tcs = load_transcoders(out / "ct_clt")
    e = np.load(out / "ct_clt.expect.npz", allow_pickle=False)
    acts, reconstruction = tcs.encode_all(torch.from_numpy(e["x"]))
    _close(torch.stack(acts), e["acts"], "CLT encode")
    _close(reconstruction, e["out"], "CLT decode (every earlier layer's writes summed)")


if (
    __name__ == "__main__"
):  # CI's install step (.ci/run): build the publishers' environments before the tests
    for publisher in sorted(PUBLISHERS):
        try:
            print(f"{publisher}: {_publisher_python(publisher)}")
        except (
            pytest.skip.Exception
        ) as why:  # (not under CI=true nor ANB_CONFORMANCE=1: the tests skip too)
            print(f"{publisher}: {why}")
