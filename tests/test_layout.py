"""The layout's rules (the README's "Layout"): the inference library stands alone, export/ and benchmarks/ use
it without the server, and no module imports one that imports it back."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

from conftest import REPO

PACKAGES = ("train", "export", "webapp", "benchmarks")


def module_name(path: Path) -> str:
    parts = path.relative_to(REPO).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def project_imports() -> dict[str, set[str]]:
    """Each project module's imports of other project modules (at any depth in the file: an
    import inside a function still ties the two), resolved to module names."""
    modules = {module_name(p): p for package in PACKAGES for p in (REPO / package).rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        found = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    base = ".".join(
                        [*package.split(".")[: len(package.split(".")) - node.level + 1], *([base] if base else [])]
                    )
                targets = [f"{base}.{alias.name}" for alias in node.names] + [base]
            else:
                continue
            found |= {t for t in targets if t in modules and t != name}
        graph[name] = found
    return graph


def test_no_module_imports_one_that_imports_it_back():
    graph = project_imports()
    cycles = []

    def visit(module: str, path: list[str]):
        for target in graph[module]:
            if target in path:
                cycles.append(path[path.index(target) :] + [target])
            elif target not in seen:
                seen.add(target)
                visit(target, [*path, target])

    for start in sorted(graph):
        seen = {start}
        visit(start, [start])
    assert cycles == []


def test_the_inference_library_stands_alone():
    """webapp.inference imports only itself (and onnxruntime, numpy and the standard library)."""
    graph = project_imports()
    library = {name for name in graph if name.startswith("webapp.inference")}
    assert {"webapp.inference.loop", "webapp.inference.engine", "webapp.inference.sampling"} <= library
    assert {
        name: sorted(t for t in graph[name] if not t.startswith("webapp.inference"))
        for name in library
        if any(not t.startswith("webapp.inference") for t in graph[name])
    } == {}


def test_export_and_the_benchmarks_load_without_the_server():
    script = (
        "import sys, export.cli, benchmarks.generation, benchmarks.drafts, benchmarks.load, webapp.inference.engine\n"
        "print(sorted(m for m in ('gradio', 'webapp.server') if m in sys.modules))"
    )
    result = subprocess.run([sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"
