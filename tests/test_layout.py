"""The shape of the code, read from its own imports and definitions: the flow runs one way, nothing loops.

The engine (`explain`, `descriptors`) never imports the web app; no two
modules import each other, however indirectly; every module says what it
is for; no product function grows past what a reader holds in mind; every
room of the web app builds and wires itself from the context alone, and
the extension tables (backends, engines, output formats, tabs) are the only
place each one is named.
"""

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("explain", "descriptors", "web")
MAX_FUNCTION_LINES = 60


def product_files() -> list[Path]:
    files = [ROOT / "app.py"]
    for package in PACKAGES:
        files += sorted((ROOT / package).rglob("*.py"))
    return files


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imports_of(path: Path, known: set[str]) -> set[str]:
    """The project modules a file imports, anywhere in it (lazy imports inside functions count too)."""
    found = set()
    package = module_name(path) if path.name == "__init__.py" else module_name(path).rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(
                    package.split(".")[: len(package.split(".")) - node.level + 1] + ([base] if base else [])
                )
            # `from package import module` names the module; `from module import name` names the module.
            names = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in known else base for alias in node.names]
        else:
            continue
        for name in names:
            while name and name not in known:
                name = name.rpartition(".")[0]
            if name:
                found.add(name)
    return found


@pytest.fixture(scope="module")
def graph() -> dict[str, set[str]]:
    files = product_files()
    known = {module_name(path) for path in files}
    return {module_name(path): imports_of(path, known) - {module_name(path)} for path in files}


def test_the_engine_never_imports_the_web_app(graph):
    for module, imported in graph.items():
        if module.split(".")[0] in ("explain", "descriptors"):
            upward = {name for name in imported if name.split(".")[0] in ("web", "app")}
            assert not upward, f"{module} imports {sorted(upward)}"
    assert not {name for name in graph["descriptors.store"] if name.startswith("explain")}


def test_no_module_imports_itself_through_others(graph):
    """No cycles, a package's `__init__` included: every import chain ends."""
    state: dict[str, str] = {}

    def visit(module: str, path: list[str]) -> None:
        state[module] = "open"
        for imported in sorted(graph.get(module, ())):
            if state.get(imported) == "open":
                cycle = path[path.index(imported) :] + [imported] if imported in path else [module, imported]
                pytest.fail("import cycle: " + " -> ".join(cycle))
            if imported not in state:
                visit(imported, [*path, imported])
        state[module] = "done"

    for module in sorted(graph):
        if module not in state:
            visit(module, [module])


def test_every_module_opens_with_its_purpose():
    for path in product_files():
        docstring = ast.get_docstring(ast.parse(path.read_text(encoding="utf-8")))
        assert docstring and len(docstring) > 40, f"{path.relative_to(ROOT)} has no docstring saying what it is for"


def test_no_product_function_is_longer_than_a_screen():
    long = []
    for path in product_files():
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                lines = node.end_lineno - node.lineno + 1
                if lines > MAX_FUNCTION_LINES:
                    long.append(f"{path.relative_to(ROOT)}:{node.lineno} {node.name} ({lines} lines)")
    assert not long, "functions longer than 60 lines: " + "; ".join(long)


def test_the_app_entry_point_is_short():
    assert len((ROOT / "app.py").read_text(encoding="utf-8").splitlines()) < 150


def test_rooms_never_import_each_other(graph):
    """A room of the page reaches another room's components through the context, never by importing it."""
    rooms = {"web.editor", "web.tell_apart", "web.compare", "web.sharing", "web.evaluate_tab", "web.api"}
    for room in rooms:
        assert not graph[room] & rooms, f"{room} imports {sorted(graph[room] & rooms)}"


def test_extension_points_are_read_from_their_tables():
    """The CLI's choices are the tables' keys, so a new backend, engine or format needs no edit elsewhere."""
    from explain.cli import build_parser
    from explain.labelling import ENGINES, FORMATS
    from explain.models import BACKENDS
    from web.page import TABS

    label = build_parser()._subparsers._group_actions[0].choices["label"]
    choices = {action.dest: action.choices for action in label._actions if action.choices}
    assert tuple(choices["format"]) == FORMATS and tuple(choices["engine"]) == tuple(ENGINES)
    assert [backend.name for backend in BACKENDS] == ["open_clip", "transformers"]
    assert all(hasattr(tab, name) for tab in TABS for name in ("ID", "TITLE", "build", "wire"))
    # Each format's needs come from its row: only the FiftyOne layout carries every class's score.
    from explain.labelling import WRITERS

    assert {name for name, writer in WRITERS.items() if writer.keeps_logits} == {"fiftyone"}
