"""The floor plan of docs/architecture.md holds: layers, no cycle, no private imports.

The layer contract itself is import-linter's (``[tool.importlinter]`` in pyproject.toml, run
by ``lint-imports`` in CI); these tests check the same graph with grimp, which import-linter
builds on, so that a plain ``pytest`` run catches a reverse import or a cycle too.
"""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from pathlib import Path

import grimp
import pytest

PACKAGE = "orthanc_pandas"
ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def graph():
    return grimp.build_graph(PACKAGE)


def test_the_import_graph_has_no_cycle(graph):
    # a cycle between two modules shows as each one's import chain reaching the other
    modules = sorted(m for m in graph.modules if m.startswith(PACKAGE))
    cycles = []
    for i, a in enumerate(modules):
        for b in modules[i + 1:]:
            if graph.chain_exists(importer=a, imported=b) and \
                    graph.chain_exists(importer=b, imported=a):
                cycles.append((a, b))
    # the package root imports its children to re-export them; nothing imports it back
    cycles = [c for c in cycles if PACKAGE not in c]
    assert not cycles, f"import cycles: {cycles[:5]}"


def test_nothing_imports_the_package_root_from_inside(graph):
    importers = {m for m in graph.find_modules_that_directly_import(PACKAGE)
                 if m.startswith(PACKAGE + ".")}
    assert not importers, f"modules importing {PACKAGE} itself (a cycle through the root): {importers}"


def test_no_module_imports_a_private_name_of_another():
    found = []
    for path in sorted((ROOT / PACKAGE).rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith(PACKAGE):
                found += [f"{path.relative_to(ROOT)}: {node.module}.{a.name}" for a in node.names
                          if a.name.startswith("_") and not a.name.startswith("__")
                          and not (node.module, a.name) == (PACKAGE, "_accessors")]
    assert not found, "private names imported across modules:\n" + "\n".join(found)


def test_package_imports_are_at_the_top_of_modules():
    found = []
    for path in sorted((ROOT / PACKAGE).rglob("*.py")):
        tree = ast.parse(path.read_text())
        top = set(map(id, tree.body))
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and id(node) not in top and \
                    ((node.module or "").startswith(PACKAGE) or node.level):
                found.append(f"{path.relative_to(ROOT)}:{node.lineno}")
    assert not found, "imports of the package inside functions: " + ", ".join(found)


def test_the_layer_contract_fails_on_a_reverse_import(tmp_path):
    """Plant an import of the accessors in the HTTP layer, in a copy: lint-imports must fail."""
    lint = Path(sys.executable).with_name("lint-imports")
    if not lint.exists():
        pytest.skip("import-linter is not installed (the test extra installs it)")
    copy = tmp_path / "repo"
    subprocess.run(["git", "clone", "-q", "--no-hardlinks", str(ROOT), str(copy)], check=True)
    # the working tree's package and config, so that uncommitted work is what is checked
    subprocess.run(["rm", "-rf", str(copy / PACKAGE)], check=True)
    subprocess.run(["cp", "-r", str(ROOT / PACKAGE), str(copy / PACKAGE)], check=True)
    subprocess.run(["cp", str(ROOT / "pyproject.toml"), str(copy / "pyproject.toml")], check=True)
    env = {"PYTHONPATH": str(copy), "PATH": "/usr/bin:/bin"}
    clean = subprocess.run([str(lint)], cwd=copy, env=env, capture_output=True, text=True)
    assert clean.returncode == 0, clean.stdout[-2000:]
    target = copy / PACKAGE / "_http" / "changes.py"
    target.write_text(target.read_text() + "\nfrom orthanc_pandas._accessors import frame  # noqa\n")
    planted = subprocess.run([str(lint)], cwd=copy, env=env, capture_output=True, text=True)
    assert planted.returncode != 0
    assert "orthanc_pandas._http.changes -> orthanc_pandas._accessors.frame" in planted.stdout


def test_readme_docs_and_notebooks_name_only_public_paths():
    """Users are sent to public names only; docs/architecture.md alone maps the inside."""
    internal = re.compile(r"orthanc_pandas[./]_\w+")
    found = []
    for path in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md")),
                 *sorted((ROOT / "notebooks").glob("*.ipynb"))]:
        if path.name == "architecture.md":
            continue
        for n, line in enumerate(path.read_text().splitlines(), 1):
            if internal.search(line):
                found.append(f"{path.relative_to(ROOT)}:{n}: {line.strip()[:100]}")
    assert not found, "internal module paths in user-facing docs:\n" + "\n".join(found)
