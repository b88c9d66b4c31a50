"""The import graph holds two rules ruff has no rule for: our packages import each other without a cycle, and no
test module imports another test module (shared helpers live in tests/support, a folder's in its conftest)."""
from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
# each top-level package and the folder it lives in (as pyproject's [tool.setuptools.package-dir] maps them)
PACKAGES = {
    "stages": ROOT / "stages",
    "stt_common": ROOT / "images/common/stt_common",
    "faster_server": ROOT / "images/faster/faster_server",
    "whisperx_server": ROOT / "images/whisperx/whisperx_server",
    "diarize_offline": ROOT / "images/diarize/diarize_offline",
    "docker_autostart": ROOT / "autostart/docker_autostart",
}


def module_name(package: str, folder: Path, path: Path) -> str:
    parts = [package, *path.relative_to(folder).with_suffix("").parts]
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def top_level_imports(path: Path, name: str, is_package: bool) -> set[str]:
    """The modules `path` imports when it is loaded: statements at module level, not inside a function (a
    function's import runs later, once every module is loaded, and breaks no cycle); relative imports resolved."""
    imported: set[str] = set()
    base = name.split(".") if is_package else name.split(".")[:-1]

    def visit(body):
        for node in body:
            if isinstance(node, ast.Import):
                imported.update(a.name for a in node.names)
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    stem = ".".join(base[: len(base) - node.level + 1] + ([node.module] if node.module else []))
                else:
                    stem = node.module or ""
                imported.add(stem)
                imported.update(f"{stem}.{a.name}" for a in node.names)   # `from pkg import submodule`
            elif isinstance(node, (ast.If, ast.Try)):   # `if TYPE_CHECKING:` excepted below
                if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
                    continue
                visit(node.body)
                visit(getattr(node, "orelse", []))
                for handler in getattr(node, "handlers", []):
                    visit(handler.body)
                visit(getattr(node, "finalbody", []))

    visit(ast.parse(path.read_text(), str(path)).body)
    return imported


def import_graph(packages: dict[str, Path]) -> dict[str, set[str]]:
    files = {module_name(p, folder, f): f for p, folder in packages.items() for f in sorted(folder.rglob("*.py"))}
    graph = {}
    for name, path in files.items():
        edges = set()
        for target in top_level_imports(path, name, path.name == "__init__.py"):
            # `import a.b.c` loads a, a.b and a.b.c: an edge to each of ours
            parts = target.split(".")
            edges.update(".".join(parts[:i]) for i in range(1, len(parts) + 1) if ".".join(parts[:i]) in files)
        edges.discard(name)
        # a package's own __init__ is loaded before its submodules: importing a submodule of your own package
        # from its __init__ is the usual shape, not a cycle, so an edge from a package to its child is dropped
        graph[name] = {e for e in edges if not e.startswith(name + ".")}
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle, as the list of modules along it, or None (depth-first search, colours)."""
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            # an edge into a module's own ancestor package is how Python loads it (the package first)
            if node.startswith(nxt + "."):
                continue
            if state.get(nxt) == 1:
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (found := visit(node)):
            return found
    return None


def test_our_packages_import_each_other_without_a_cycle():
    graph = import_graph(PACKAGES)
    assert len(graph) > 100 and "stt_common.jobs.worker" in graph
    cycle = find_cycle(graph)
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_the_cycle_check_finds_a_cycle(tmp_path):
    """The check itself: the shape whisperx_server once had (app imports jobs at the top, jobs imports from app)."""
    pkg = tmp_path / "pkg"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "app.py").write_text("from .jobs import job_spec\n")
    (pkg / "jobs.py").write_text("import os\nfrom pkg.app import Settings\n")
    (pkg / "lazy.py").write_text("def f():\n    from . import app\n")
    cycle = find_cycle(import_graph({"pkg": pkg}))
    assert cycle is not None and set(cycle) == {"pkg.app", "pkg.jobs"}
    (pkg / "jobs.py").write_text("def later():\n    from pkg.app import Settings\n")   # inside a function: fine
    assert find_cycle(import_graph({"pkg": pkg})) is None


TEST_FOLDERS = ROOT / "tests"
OUR_TEST_MODULES = {p.stem for p in TEST_FOLDERS.rglob("test_*.py")} | {"test_a"}   # test_a: the check's own check


def is_test_module(path: Path) -> bool:
    return path.name.startswith("test_") or path.name == "conftest.py"


def imported_test_modules(path: Path) -> list[str]:
    """Test modules `path` imports, at any depth of the file: test_* anywhere, and conftest of another folder
    (a test module may import its own folder's conftest: `from .conftest import ...`)."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        names = []
        if isinstance(node, ast.Import):
            names = [(0, a.name) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            names = [(node.level, node.module or "")] + [(node.level, f"{node.module or ''}.{a.name}".lstrip("."))
                                                         for a in node.names]
        for level, dotted in names:
            last = dotted.split(".")[-1] if dotted else ""
            if last.startswith("test_") and last in OUR_TEST_MODULES:
                found.append(dotted)
            elif last == "conftest" and not (level == 1 and dotted == "conftest"):
                found.append(dotted)
    return found


def test_no_test_module_imports_another():
    offenders = {str(p.relative_to(ROOT)): imported for p in sorted(TEST_FOLDERS.rglob("*.py"))
                 if (imported := imported_test_modules(p))}
    assert offenders == {}, ("test modules that import other test modules (move what they share to tests/support "
                             f"or the folder's conftest): {offenders}")


def test_the_test_import_check_finds_one(tmp_path):
    t = tmp_path / "test_b.py"
    t.write_text("from test_a import helper\n")
    assert imported_test_modules(t) == ["test_a"]
    t.write_text("from .test_a import helper\n")
    assert imported_test_modules(t) == ["test_a"]
    t.write_text("from ..faster.conftest import start_server\n")
    assert imported_test_modules(t) == ["faster.conftest"]
    t.write_text("from .conftest import start_server\nfrom support.jobs_support import Worker\n"
                 "from aiohttp.test_utils import TestClient\n")
    assert imported_test_modules(t) == []


def test_test_helpers_live_in_the_support_package():
    loose = sorted(p.name for p in TEST_FOLDERS.glob("*.py") if not is_test_module(p))
    assert loose == [], f"helper modules at tests/ root: move them into tests/support/: {loose}"
