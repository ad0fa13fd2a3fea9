"""The package's layering, enforced: the import rules the README's "How it is built" states.

* ``wsgibridge/http/`` is HTTP and PEP 3333 as values: it imports nothing from
  ``serving/``, ``lint/`` or ``testing/``, and none of ``socket``, ``select``,
  ``selectors`` or ``threading``;
* ``serving/`` never imports ``testing/``, and ``http/``, ``serving/`` never
  import ``lint/`` at module level (``--lint`` imports it when asked for);
* no module imports the package root (``from . import x`` in the root's own
  children, ``import wsgibridge``): the root only re-exports;
* no import loops between the package's modules, counting deferred imports.
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "wsgibridge"
BLOCKING = {"socket", "select", "selectors", "threading"}


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports(path: Path, *, top_level_only: bool) -> set[str]:
    """The absolute names ``path`` imports: modules, and ``module.name`` for each from-import.

    ``top_level_only``: leave out imports inside functions (deferred on purpose)
    and under ``if TYPE_CHECKING:`` (never run).
    """
    tree = ast.parse(path.read_text(encoding="utf-8"))
    package = module_name(path).split(".")
    if path.name != "__init__.py":
        package = package[:-1]  # where a relative import starts from
    names: set[str] = set()
    todo: list[ast.AST] = [tree]
    while todo:
        node = todo.pop()
        if top_level_only and (
            isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) or _is_type_checking(node)
        ):
            continue
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - node.level + 1]
                prefix = ".".join(base + ([node.module] if node.module else []))
            else:
                prefix = node.module or ""
            names.add(prefix)
            names.update(f"{prefix}.{alias.name}" for alias in node.names)
        todo.extend(ast.iter_child_nodes(node))
    return names


def _is_type_checking(node: ast.AST) -> bool:
    return (
        isinstance(node, ast.If)
        and isinstance(node.test, ast.Name)
        and node.test.id == "TYPE_CHECKING"
    )


def modules() -> dict[str, Path]:
    return {module_name(path): path for path in sorted(PACKAGE.rglob("*.py"))}


def package_modules(names: set[str], known: dict[str, Path]) -> set[str]:
    """Of imported names, the package's own modules (``from .x import y`` names x)."""
    return {name for name in names if name in known}


def test_http_is_free_of_io_and_of_the_layers_above() -> None:
    for name, path in modules().items():
        if not name.startswith("wsgibridge.http"):
            continue
        found = imports(path, top_level_only=False)
        above = {
            i
            for i in found
            if i.startswith(("wsgibridge.serving", "wsgibridge.lint", "wsgibridge.testing"))
        }
        assert not above, f"{name} imports {sorted(above)}"
        blocking = {i.split(".")[0] for i in found} & BLOCKING
        assert not blocking, f"{name} imports {sorted(blocking)}"


def test_serving_does_not_import_testing_or_lint_at_module_level() -> None:
    for name, path in modules().items():
        if not name.startswith("wsgibridge.serving"):
            continue
        found = imports(path, top_level_only=True)
        bad = {i for i in found if i.startswith(("wsgibridge.testing", "wsgibridge.lint"))}
        assert not bad, f"{name} imports {sorted(bad)}"


def test_nothing_imports_the_package_root() -> None:
    for name, path in modules().items():
        if name == "wsgibridge":
            continue
        assert "wsgibridge" not in imports(path, top_level_only=False), name


def test_no_import_loops() -> None:
    known = modules()
    # Every import counts, deferred and TYPE_CHECKING ones too: a loop hidden in a
    # function is still two modules that cannot be understood (or tested) apart.
    graph = {
        name: package_modules(imports(path, top_level_only=False), known) - {name, "wsgibridge"}
        for name, path in known.items()
    }
    # A package imports its own __init__ first: drop edges into a parent package.
    for name, deps in graph.items():
        graph[name] = {d for d in deps if not name.startswith(d + ".")}
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> None:
        state[node] = 1
        stack.append(node)
        for dep in sorted(graph[node]):
            if state.get(dep) == 1:
                cycle = [*stack[stack.index(dep) :], dep]
                raise AssertionError("import loop: " + " -> ".join(cycle))
            if dep not in state:
                visit(dep)
        stack.pop()
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node)


def test_every_subpackage_is_packaged() -> None:
    """pyproject.toml must ship every sub-package (a wheel without them imports nothing)."""
    pyproject = (PACKAGE.parent / "pyproject.toml").read_text(encoding="utf-8")
    for init in PACKAGE.rglob("__init__.py"):
        name = module_name(init)
        assert f'"{name}"' in pyproject or "packages.find" in pyproject, name
