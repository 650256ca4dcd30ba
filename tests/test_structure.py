"""The package's shape, checked: every module imports on its own, imports of sibling modules
sit at the top of a module (none hidden in functions to break a cycle), the import graph has
no cycle and runs down the data flow (no module imports one on a floor above its own), no
function is over 60 lines nor any class over 250, and ruff and mypy (configured in
pyproject.toml) are clean."""

import ast
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

PACKAGE = Path(__file__).resolve().parents[1] / "attribution_nb"
MAX_FUNCTION, MAX_CLASS = 60, 250


def _modules() -> dict[str, Path]:
    out = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        out[name] = path
    return out


MODULES = _modules()


def _resolve(module: str, node: ast.ImportFrom, is_package: bool) -> str:
    if node.level == 0:
        return node.module or ""
    base = module.split(".") if is_package else module.split(".")[:-1]
    base = base[: len(base) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def _package_imports(module: str, path: Path):
    """(imported module, the import node, the function it sits in or None) for every import of
    this package's modules."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    is_package = path.name == "__init__.py"
    found = []

    def visit(node, function):
        for child in ast.iter_child_nodes(node):
            inner = (
                child.name
                if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef))
                else function
            )
            if isinstance(child, ast.ImportFrom):
                target = _resolve(module, child, is_package)
                if target.split(".")[0] == "attribution_nb":
                    names = [f"{target}.{a.name}" for a in child.names]
                    found.extend((n if n in MODULES else target, child, function) for n in names)
            elif isinstance(child, ast.Import):
                found.extend(
                    (a.name, child, function)
                    for a in child.names
                    if a.name.split(".")[0] == "attribution_nb"
                )
            visit(child, inner)

    visit(tree, None)
    return found


def test_no_sibling_module_is_imported_inside_a_function():
    hidden = [
        f"{m}:{node.lineno} imports {target} inside {fn}()"
        for m, p in MODULES.items()
        for target, node, fn in _package_imports(m, p)
        if fn is not None
    ]
    assert not hidden, "\n".join(hidden)


def test_the_import_graph_has_no_cycle():
    graph = {
        m: {t for t, _, _ in _package_imports(m, p) if t in MODULES and t != m}
        for m, p in MODULES.items()
    }
    state, stack, cycles = {}, [], []

    def walk(m):
        state[m] = "open"
        stack.append(m)
        for t in sorted(graph[m]):
            if state.get(t) == "open":
                cycles.append(stack[stack.index(t) :] + [t])
            elif t not in state:
                walk(t)
        stack.pop()
        state[m] = "done"

    for m in sorted(graph):
        if m not in state:
            walk(m)
    assert not cycles, "import cycles:\n" + "\n".join(" -> ".join(c) for c in cycles)


#: the package's floors, bottom first (as its docstring lists them): a module imports only from its
#: own floor or floors below
FLOORS = [
    ["checks", "ids", "io", "tokens"],
    ["architectures", "transcoders", "dashboards"],
    ["backend"],
    ["tracing"],
    ["replacement"],
    ["contexts", "interventions"],
    ["latents"],
    ["graph", "validation", "experiments"],
    ["attribution", "model"],
    ["attention", "pretrained", "demo"],
    ["loading", "views"],
    ["cli"],
    ["__main__", "__init__"],
]
FLOOR = {unit: i for i, units in enumerate(FLOORS) for unit in units}


def _unit(module: str) -> str:
    return module.split(".")[1] if "." in module else "__init__"


def test_imports_run_down_the_data_flow():
    """Every unit has a floor and the package docstring names it; no import goes up a floor."""
    units = {_unit(m) for m in MODULES}
    assert units == set(FLOOR), f"units without a floor: {sorted(units - set(FLOOR))}"
    import attribution_nb

    assert all(f"``{u}``" in attribution_nb.__doc__ for u in units - {"__init__", "__main__"})
    up = [
        f"{m} (floor {FLOOR[_unit(m)]}) imports {t} (floor {FLOOR[_unit(t)]})"
        for m, p in MODULES.items()
        for t, _, _ in _package_imports(m, p)
        if FLOOR[_unit(t)] > FLOOR[_unit(m)]
    ]
    assert not up, "imports up the house:\n" + "\n".join(up)


#: run in a fresh interpreter: load the third-party libraries once, then import each module
#: of this package in a forked child that has none of the package loaded
_IMPORT_EACH = """
import os, sys, traceback
import numpy, pandas, scipy.sparse, torch, transformers, nnsight, safetensors, tqdm.auto  # noqa: F401
failed = []
for name in sys.argv[1:]:
    pid = os.fork()
    if pid == 0:
        try:
            __import__(name)
        except BaseException:
            traceback.print_exc()
            os._exit(1)
        os._exit(0)
    if os.waitpid(pid, 0)[1] != 0:
        failed.append(name)
print("FAILED:" + ",".join(failed))
"""


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_each_module_imports_alone_in_a_fresh_interpreter():
    done = subprocess.run(
        [sys.executable, "-c", _IMPORT_EACH, *sorted(MODULES)],
        capture_output=True,
        text=True,
        env=dict(os.environ, PYTHONWARNINGS="ignore"),
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.strip().splitlines()[-1] == "FAILED:", (
        done.stdout[-500:] + done.stderr[-3000:]
    )


def test_no_function_over_60_lines_nor_class_over_250():
    long = []
    for m, path in MODULES.items():
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            limit = (
                MAX_CLASS
                if isinstance(node, ast.ClassDef)
                else MAX_FUNCTION
                if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))
                else None
            )
            if limit is not None and node.end_lineno - node.lineno + 1 > limit:
                long.append(
                    f"{m}.{node.name}: {node.end_lineno - node.lineno + 1} lines (at most {limit})"
                )
    assert not long, "\n".join(long)


def _tool(name: str, *args: str):
    """Run a checker installed with the test extra (``CI=true``: it must be there)."""
    import shutil

    exe = shutil.which(name) or (
        str(Path(sys.executable).parent / name)
        if (Path(sys.executable).parent / name).exists()
        else None
    )
    if exe is None:
        if os.environ.get("CI") == "true":
            pytest.fail(f"{name} is not installed (pip install -e '.[test]')")
        pytest.skip(f"{name} is not installed")
    return subprocess.run([exe, *args], cwd=ROOT, capture_output=True, text=True, timeout=600)


def test_ruff_is_clean():
    done = _tool("ruff", "check", "attribution_nb", "tests", "bench")
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]


def test_ruff_format_is_clean():
    """Formatting is ruff format's, at the line length pyproject.toml sets (100)."""
    done = _tool("ruff", "format", "--check", "attribution_nb", "tests", "bench")
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]


def test_mypy_is_clean():
    done = _tool("mypy")
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]
