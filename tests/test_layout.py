"""The layout's rules (the README's "Layout"): the inference library stands alone, export/ and benchmarks/ use
it without the server, and no module imports one that imports it back."""

from __future__ import annotations

import ast
import re
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
        "import sys, export.export_command, export.attention_command, export.eval_command\n"
        "import benchmarks.generation, benchmarks.drafts, benchmarks.load, webapp.inference.engine\n"
        "print(sorted(m for m in ('gradio', 'webapp.server') if m in sys.modules))"
    )
    result = subprocess.run([sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


def twin_table() -> list[tuple[str, list[str], str, list[str]]]:
    """docs/architecture.md's map of Python modules to their JavaScript twins: (Python file, its
    names, JavaScript file, its names) per row."""
    page = (REPO / "docs" / "architecture.md").read_text(encoding="utf-8")
    table = page.split("| Python (`webapp/…`) |")[1].split("\n\n")[0]
    rows = []
    for line in table.splitlines()[2:]:
        python, _, javascript = (cell.strip() for cell in line.strip("|").split(" | "))
        py_file, _, py_names = python.partition(":")
        js_file, _, js_names = javascript.partition(":")
        names = lambda cell: [n.split(".")[-1] for n in re.findall(r"`(\w+(?:\.\w+)?)`", cell)]  # noqa: E731
        rows.append((py_file.strip("` "), names(py_names), re.search(r"`(\w+\.js)`", js_file)[1], names(js_names)))
    return rows


def test_the_architecture_page_maps_names_that_exist_in_both_languages():
    rows = twin_table()
    assert len(rows) >= 10
    for py_file, py_names, js_file, js_names in rows:
        python = (REPO / "webapp" / py_file).read_text(encoding="utf-8")
        javascript = (REPO / "webapp" / "web" / js_file).read_text(encoding="utf-8")
        for name in py_names:
            assert re.search(rf"^\s*(def|class) {name}\b|^{name} =", python, re.M), (py_file, name)
        for name in js_names:
            defined = rf"\b(function|class|const|let) {name}\b|^\s+(async )?\*?{name}\(|\b{name},"
            assert re.search(defined, javascript, re.M), (js_file, name)


def test_the_code_cites_only_files_inside_the_repository():
    sources = [p for package in (*PACKAGES, "tests") for p in (REPO / package).rglob("*.py")]
    sources += [p for p in (REPO / "webapp" / "web").glob("*.*js")]
    design = "DESIGN" + ".md"  # spelled in two pieces, so that this file does not cite it
    cited = {p.name for p in sources if design in p.read_text(encoding="utf-8")}
    assert not cited, f"these cite a file outside the repository (cite docs/ instead): {sorted(cited)}"
