"""Architecture: imports point down the layers, never in a circle, and no file names a machine path.

Every module under ``probgen/`` is parsed with ``ast`` (nothing is imported), so a violation is
found even in code no test runs. The layers (DESIGN.md, "imports point down this list"):

    core                    imports nothing else of probgen
    data, nn, distributions, diffusion, guides, infer, evaluate
                            generic: never a bundled family (probgen.models), the demo or the CLI
    models                  families: never the demo or the CLI
    plots, demo, cli, probgen/__init__.py   the face on top

Run this file alone to see every violation at once: each check prints its whole list.
"""

from __future__ import annotations

import ast
import re
import subprocess
from collections import defaultdict, deque
from dataclasses import dataclass
from pathlib import Path

import pytest
from radon.complexity import cc_visit

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = "probgen"
GENERIC = ("probgen.core", "probgen.data", "probgen.nn", "probgen.distributions",
           "probgen.diffusion", "probgen.guides", "probgen.infer", "probgen.evaluate",
           "probgen.metrics")
FAMILY_FREE = ("probgen.models", "probgen.demo", "probgen.cli")  # what generic code never names
FACE = ("probgen.demo", "probgen.cli")  # what families never name
MAX_LOCAL_IMPORTS = 6  # function-local `from probgen...` imports in the whole package


@dataclass(frozen=True)
class Import:
    """One static import of a probgen module: ``source`` imports ``target`` at ``where``."""

    source: str  # dotted name of the importing module (a package is its __init__)
    target: str  # the deepest probgen module named (``from a import b``: a.b when b is a module)
    where: str  # path:line
    local: bool  # inside a function body: runs on call, not on import
    runtime: bool  # False under ``if TYPE_CHECKING:``

    def __str__(self) -> str:
        return f"{self.where} imports {self.target}"


def is_within(name: str, prefix: str) -> bool:
    return name == prefix or name.startswith(prefix + ".")


def module_files(package_dir: Path, package: str) -> dict[str, Path]:
    """Dotted module name -> file, for every .py file under ``package_dir``."""
    modules = {}
    for path in sorted(package_dir.rglob("*.py")):
        parts = list(path.relative_to(package_dir).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        modules[".".join([package, *parts])] = path
    return modules


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


class _ImportCollector(ast.NodeVisitor):
    def __init__(self, module: str, path: str, is_package: bool, known: set[str], package: str):
        self.module, self.path, self.known, self.package = module, path, known, package
        self.parent = module if is_package else module.rpartition(".")[0]
        self.functions = 0
        self.type_checking = 0
        self.found: list[Import] = []

    def _add(self, target: str, node: ast.AST) -> None:
        found = Import(self.module, target, f"{self.path}:{node.lineno}",
                       local=self.functions > 0, runtime=self.type_checking == 0)
        if found not in self.found:  # `from a import b, c` names a once
            self.found.append(found)

    def _function(self, node: ast.AST) -> None:
        self.functions += 1
        self.generic_visit(node)
        self.functions -= 1

    visit_FunctionDef = visit_AsyncFunctionDef = visit_Lambda = _function

    def visit_If(self, node: ast.If) -> None:
        if not _is_type_checking(node.test):
            return self.generic_visit(node)
        self.type_checking += 1
        for statement in node.body:
            self.visit(statement)
        self.type_checking -= 1
        for statement in node.orelse:
            self.visit(statement)

    def visit_Import(self, node: ast.Import) -> None:
        for alias in node.names:
            if is_within(alias.name, self.package):
                self._add(alias.name, node)

    def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
        if node.level:  # relative: resolve against this module's package
            base_parts = self.parent.split(".")
            base_parts = base_parts[: len(base_parts) - (node.level - 1)]
            base = ".".join(base_parts + ([node.module] if node.module else []))
        else:
            base = node.module or ""
        if not is_within(base, self.package):
            return
        for alias in node.names:
            submodule = f"{base}.{alias.name}"
            self._add(submodule if submodule in self.known else base, node)


def scan(package_dir: Path, package: str = PACKAGE, root: Path | None = None) -> list[Import]:
    """Every static import of ``package`` modules made inside ``package_dir``."""
    modules = module_files(package_dir, package)
    root = root or package_dir.parent
    imports = []
    for name, path in modules.items():
        relative = path.relative_to(root).as_posix()
        collector = _ImportCollector(name, relative, path.name == "__init__.py", set(modules),
                                     package)
        collector.visit(ast.parse(path.read_text(), filename=str(path)))
        imports += collector.found
    return imports


def import_graph(imports: list[Import], package: str = PACKAGE) -> dict[str, dict[str, Import]]:
    """Edges that run at import time: ``graph[a][b]`` is the import by which loading a loads b.

    ``import a.b.c`` also runs the ``__init__`` of a.b, so that edge is added too (a package
    re-exporting its modules is part of every path through it), except for packages the importer
    sits in (already loading) and the top package (loaded before anything else; importing it
    from inside is the separate check ``test_no_module_imports_the_top_package``).
    """
    graph: dict[str, dict[str, Import]] = defaultdict(dict)
    for edge in imports:
        if edge.local or not edge.runtime:
            continue
        parts = edge.target.split(".")
        for depth in range(2, len(parts) + 1):
            target = ".".join(parts[:depth])
            if target == package or target == edge.source:
                continue
            if depth < len(parts) and is_within(edge.source, target):
                continue  # a package above the importer: already being loaded
            graph[edge.source].setdefault(target, edge)
    return graph


def find_cycles(graph: dict[str, dict[str, object]] | dict[str, set[str]]) -> list[list[str]]:
    """One shortest cycle per strongly connected component, as [a, b, ..., a]."""
    nodes = sorted(set(graph) | {b for targets in graph.values() for b in targets})
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[list[str]] = []

    def connect(node: str) -> None:  # Tarjan (the graph has ~100 nodes: recursion is fine)
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for successor in sorted(graph.get(node, ())):
            if successor not in index:
                connect(successor)
                low[node] = min(low[node], low[successor])
            elif successor in on_stack:
                low[node] = min(low[node], index[successor])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            components.append(sorted(component))

    for node in nodes:
        if node not in index:
            connect(node)
    cycles = []
    for component in components:
        start = component[0]
        if len(component) == 1 and start not in graph.get(start, ()):
            continue
        members = set(component)
        previous: dict[str, str] = {}
        queue = deque([start])
        while queue:  # BFS back to start inside the component: the shortest cycle through it
            node = queue.popleft()
            for successor in sorted(graph.get(node, ())):
                if successor == start:
                    path = [node]
                    while path[-1] != start:
                        path.append(previous[path[-1]])
                    cycles.append([start, *reversed(path[:-1]), start] if node != start
                                  else [start, start])
                    queue.clear()
                    break
                if successor in members and successor not in previous:
                    previous[successor] = node
                    queue.append(successor)
    return cycles


def describe_cycle(cycle: list[str], graph: dict[str, dict[str, Import]]) -> str:
    steps = []
    for a, b in zip(cycle, cycle[1:]):
        edge = graph[a][b]
        via = "" if edge.target == b else f" (runs package {b}/__init__.py)"
        steps.append(f"    {a} -> {b}: {edge.where} imports {edge.target}{via}")
    return " -> ".join(cycle) + "\n" + "\n".join(steps)


def report(title: str, lines: list[str]) -> str:
    body = "\n".join(f"  {line}" for line in lines)
    message = f"{title} ({len(lines)}):\n{body}"
    print(message)  # visible with -s / in the captured output of a failure
    return message


@pytest.fixture(scope="module")
def imports() -> list[Import]:
    return scan(ROOT / PACKAGE)


# --- the detector itself can fail ------------------------------------------------------------
def test_cycle_detector_finds_a_synthetic_cycle():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}, "e": {"e"}, "f": {"g"}}
    assert find_cycles(graph) == [["a", "b", "c", "a"], ["e", "e"]]
    assert find_cycles({"a": {"b"}, "b": {"c"}, "d": {"a", "c"}}) == []


def test_scanner_finds_cycles_through_reexports_not_through_local_imports(tmp_path):
    files = {
        "__init__.py": "from fake import sub\n",
        "sub/__init__.py": "from fake.sub.x import X\n",
        "sub/x.py": "from fake.sub.y import Y\nX = 1\n",
        "sub/y.py": "from fake.sub import X  # through the package: a cycle\nY = 2\n",
        "ok/__init__.py": "from .p import P\n",
        "ok/p.py": "from fake.ok.q import Q\nP = 1\n",
        "ok/q.py": "Q = 1\ndef f():\n    from fake.ok.p import P  # local: no cycle\n    return P\n",
        "typed.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from fake.ok import p\n",
    }
    for name, text in files.items():
        (tmp_path / "fake" / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / "fake" / name).write_text(text)
    found = scan(tmp_path / "fake", "fake")
    local = [i for i in found if i.local]
    assert [(i.source, i.target) for i in local] == [("fake.ok.q", "fake.ok.p")]
    assert [i.runtime for i in found if i.source == "fake.typed"] == [False]
    graph = import_graph(found, "fake")
    assert find_cycles(graph) == [["fake.sub", "fake.sub.x", "fake.sub.y", "fake.sub"]]
    assert "runs package" not in describe_cycle(find_cycles(graph)[0], graph)


# --- the package ---------------------------------------------------------------------------
def test_no_import_cycles(imports):
    graph = import_graph(imports)
    cycles = find_cycles(graph)
    assert not cycles, report("import cycles (module-level imports)",
                              [describe_cycle(c, graph) for c in cycles])


def test_core_imports_nothing_else_of_probgen(imports):
    bad = [str(i) for i in imports
           if is_within(i.source, "probgen.core") and not is_within(i.target, "probgen.core")]
    assert not bad, report("probgen.core importing outside core", bad)


def test_generic_layers_import_no_family_demo_or_cli(imports):
    bad = [str(i) for i in imports
           if any(is_within(i.source, layer) for layer in GENERIC)
           and any(is_within(i.target, face) for face in FAMILY_FREE)]
    assert not bad, report("generic modules (infer, evaluate, data, ...) importing a family, "
                           "the demo or the CLI", bad)


def test_families_import_no_demo_or_cli(imports):
    bad = [str(i) for i in imports
           if is_within(i.source, "probgen.models") and any(is_within(i.target, f) for f in FACE)]
    assert not bad, report("probgen.models importing the demo or the CLI", bad)


def test_no_module_imports_the_top_package(imports):
    bad = [f"{i.where}: `import probgen` / `from probgen import ...` (import the defining module)"
           for i in imports if i.target == PACKAGE and i.source != PACKAGE]
    assert not bad, report("imports of the top package from inside it", bad)


def test_few_function_local_imports(imports):
    local = list({i.where: str(i) for i in imports if i.local}.values())  # one per statement
    assert len(local) <= MAX_LOCAL_IMPORTS, report(
        f"function-local probgen imports (at most {MAX_LOCAL_IMPORTS}; import at the top, or "
        "move the code to the layer it belongs to)", local)


# --- the repository ------------------------------------------------------------------------
# Built from pieces so this file does not match itself.
MACHINE_PATH = re.compile("(?<![\\w.~:/-])/(?:" + "|".join(["work", "opt", "root", "home", "Users"])
                          + ")/|\\b[A-Z]:" + re.escape("\\") + "(?=[\\w ])"
                          + "|[\"']/" + "tmp\\b")  # a literal temp path: use tmp_path/tempfile


def tracked_text_files() -> list[Path]:
    """Text files git tracks (or will: new files that are not ignored), without .venv."""
    try:
        listed = subprocess.run(["git", "ls-files", "-z", "--cached", "--others",
                                 "--exclude-standard"], cwd=ROOT, capture_output=True,
                                check=True).stdout  # tracked, and new files not ignored
    except (OSError, subprocess.CalledProcessError):
        pytest.skip("not a git checkout")
    files = []
    for name in listed.decode().split("\0"):
        if not name or name.startswith(".venv/"):
            continue
        path = ROOT / name
        if path.is_file():
            head = path.read_bytes()[:8192]
            if b"\0" not in head:
                files.append(path)
    return files


def test_machine_path_pattern():
    assert MACHINE_PATH.search('x = "' + "/wo" + 'rk/shared/data"')
    assert MACHINE_PATH.search("ls " + "/o" + "pt/wheels")
    assert MACHINE_PATH.search("C:" + "\\" + "Users")
    assert MACHINE_PATH.search('Path("/' + 'tmp/x.json")')
    for fine in ("https://example.org/home/page", "~/.cache/probgen", "../shared/data",
                 "docs/work/notes", "/usr/share/data", "a/opt/b"):
        assert not MACHINE_PATH.search(fine), fine


def test_no_machine_paths_in_tracked_files():
    bad = []
    for path in tracked_text_files():
        for number, line in enumerate(path.read_text(errors="replace").splitlines(), 1):
            if MACHINE_PATH.search(line):
                bad.append(f"{path.relative_to(ROOT)}:{number}: {line.strip()[:100]}")
    assert not bad, report("absolute machine paths in tracked files (use probgen.core.paths, "
                           "$PROBGEN_DATA or a path relative to the checkout)", bad)


# --- layers inside the generic tier --------------------------------------------------------
def test_infer_never_imports_evaluate(imports):
    """Training takes its validation score as a callable; evaluate may use fit, not the reverse."""
    bad = [str(i) for i in imports
           if is_within(i.source, "probgen.infer") and is_within(i.target, "probgen.evaluate")]
    assert not bad, report("probgen.infer importing probgen.evaluate (pass a callable)", bad)


def test_data_imports_only_core(imports):
    """Data loading and transforms sit just above core: guides and estimators live elsewhere."""
    bad = [str(i) for i in imports
           if is_within(i.source, "probgen.data") and not is_within(i.target, "probgen.core")
           and not is_within(i.target, "probgen.data")]
    assert not bad, report("probgen.data importing beyond probgen.core", bad)


# --- size of the parts everyone passes through ---------------------------------------------
MAX_COMPLEXITY = 25  # radon's cyclomatic complexity, per function or method
EVALUATE_DISPATCH_COMPLEXITY = 15  # evaluate's dispatch: look up the estimator, call it


def complexities() -> dict[str, int]:
    """``path::Class.function`` -> radon cyclomatic complexity, for every function in probgen."""
    found = {}
    for path in sorted((ROOT / PACKAGE).rglob("*.py")):
        relative = path.relative_to(ROOT).as_posix()
        for block in cc_visit(path.read_text()):
            for item in [block, *getattr(block, "methods", []), *getattr(block, "closures", [])]:
                found[f"{relative}::{item.fullname}"] = item.complexity
    return found


def test_complexity_counter_sees_branches():
    source = "def f(x):\n" + "".join(f"    if x == {i}:\n        return {i}\n" for i in range(30))
    assert cc_visit(source)[0].complexity == 31


def test_no_function_above_the_complexity_limit():
    bad = [f"{name}: {value}" for name, value in complexities().items() if value > MAX_COMPLEXITY]
    assert not bad, report(f"functions above cyclomatic complexity {MAX_COMPLEXITY} (split them "
                           "into named steps)", bad)


def test_evaluate_dispatch_is_look_up_and_call():
    found = complexities()["probgen/evaluate/api.py::_evaluate"]
    assert found <= EVALUATE_DISPATCH_COMPLEXITY, f"_evaluate has complexity {found}"
