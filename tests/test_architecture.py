"""The house's rules, checked on the code: stage folders import only the shared base and the
stages before them, no module takes part in an import circle, and the daemon never loads the
local feed or what only the table needs."""

from __future__ import annotations

import ast
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

from tests.conftest import REPO

PACKAGE = REPO / "collector"
# The stage folders in the data's order: each may import the shared base (the modules directly
# in collector/), its own folder and the folders before it, never one after it.
STAGES = (
    "capture", "binance", "lake", "landing", "gaps", "table", "history", "audit", "daemon", "feed", "cli"
)  # fmt: skip


def _module(path: Path) -> str:
    parts = list(path.relative_to(REPO).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _modules() -> dict[str, Path]:
    return {_module(p): p for p in PACKAGE.rglob("*.py")}


def _imports(path: Path, known: set[str]) -> Iterator[tuple[str, int]]:
    """Every collector module `path` imports, lazy and TYPE_CHECKING ones too, with its line."""
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            # `from collector.binance import rest` imports the module collector.binance.rest
            names = [f"{node.module}.{a.name}" if f"{node.module}.{a.name}" in known else node.module
                     for a in node.names]  # fmt: skip
        else:
            continue
        for name in names:
            if name.startswith("collector"):
                yield name, node.lineno


def _graph() -> dict[str, set[str]]:
    modules = _modules()
    known = set(modules)
    return {
        name: {m for m, _ in _imports(path, known) if m in known and m != name}
        for name, path in modules.items()
    }


def _stage(module: str) -> str | None:
    """The stage folder a module is in; None for the shared base."""
    parts = module.split(".")
    return parts[1] if len(parts) > 2 else None


def test_every_folder_of_the_package_is_a_stage_in_the_order() -> None:
    folders = {p.name for p in PACKAGE.iterdir() if p.is_dir() and (p / "__init__.py").is_file()}
    assert folders == set(STAGES), f"add a new folder to STAGES in its place in the data's order: {folders}"


def test_no_folder_imports_one_after_it_and_the_base_imports_no_stage() -> None:
    modules = _modules()
    known = set(modules)
    wrong = []
    for name, path in modules.items():
        if name == "collector.__main__":
            continue  # `python -m collector` is the command line itself
        mine = _stage(name)
        rank = -1 if mine is None else STAGES.index(mine)
        for imported, line in _imports(path, known):
            theirs = _stage(imported) if imported in known else None
            if theirs is not None and theirs != mine and STAGES.index(theirs) > rank:
                wrong.append(f"{path.relative_to(REPO)}:{line} imports {imported}")
    assert not wrong, "upward imports (move the shared value down, or the code up):\n" + "\n".join(wrong)


def test_no_module_takes_part_in_an_import_circle() -> None:
    graph = _graph()
    circles: list[list[str]] = []
    state: dict[str, int] = {}  # 1 on the path, 2 done

    def visit(node: str, path: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                circles.append([*path[path.index(nxt) :], nxt])
            elif nxt not in state:
                visit(nxt, [*path, nxt])
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node, [node])
    assert not circles, "import circles:\n" + "\n".join(" -> ".join(c) for c in circles)


def test_the_daemon_never_loads_the_local_feed() -> None:
    """`collector run` imports what it runs and nothing else: not the local feed (nor websockets,
    which only the feed uses), whose memory a daemon would carry for months."""
    code = (
        "import sys\n"
        "import collector.cli.main, collector.cli.run, collector.daemon.app\n"
        "away = ('collector.feed', 'websockets', 'pyiceberg')\n"
        "print(sorted(m for m in sys.modules if m.startswith(away)))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120,
                          check=False)  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


def test_each_folder_names_its_modules_in_its_docstring() -> None:
    """A folder's __init__ is its map: every module it holds is named there with its job."""
    missing = []
    for stage in STAGES:
        folder = PACKAGE / stage
        doc = ast.get_docstring(ast.parse((folder / "__init__.py").read_text())) or ""
        for module in sorted(folder.glob("*.py")):
            if module.stem not in ("__init__", "__main__") and f"{module.stem}.py" not in doc:
                missing.append(f"collector/{stage}/__init__.py does not name {module.name}")
    assert not missing, "\n".join(missing)
