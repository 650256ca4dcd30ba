"""Running the front end's own ES modules (``attribution_nb/views/static/js``) under node, so
that tests check the browser's code itself, not a re-implementation of it.  node is Debian's
``nodejs`` (``.ci/run`` installs it); without it these tests skip, except under CI=true, where
they must run."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

JS = Path(__file__).resolve().parents[2] / "attribution_nb" / "views" / "static" / "js"


def node() -> str:
    found = shutil.which("node")
    if found is None:
        if os.environ.get("CI") == "true":
            pytest.fail("node is missing: .ci/run installs Debian's nodejs for the front-end tests")
        pytest.skip("the front-end tests need node (Debian: apt-get install nodejs)")
    return found


def run_js(module: str, body: str, data) -> object:
    """Run ``body`` (JavaScript that sees the module's exports as ``m`` and ``data``, and ends
    with ``return value``) in node; returns the value, through JSON."""
    script = (
        f"import * as m from {json.dumps((JS / module).as_uri())};\n"
        "import { readFileSync } from 'node:fs';\n"
        "const data = JSON.parse(readFileSync(0, 'utf8'));\n"
        f"const out = (() => {{ {body} }})();\n"
        "process.stdout.write(JSON.stringify(out));\n"
    )
    proc = subprocess.run(
        [node(), "--input-type=module", "-e", script],
        input=json.dumps(data),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)
