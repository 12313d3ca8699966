"""Dependencies point one way: cli → pipeline → verifier → adapters → core; core stays pure.

Every import counts: at the top, inside a function, under ``if TYPE_CHECKING:``.
"""

from __future__ import annotations

import ast
import functools
import sys
from collections.abc import Iterator, Mapping
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "streams"

# Modules core/ may never import (I/O, concurrency, clocks, our outer layers).
FORBIDDEN_IN_CORE = {
    "asyncio",
    "socket",
    "ssl",
    "selectors",
    "threading",
    "time",
    "aiosmtplib",
    "dns",
    "faust",
    "fastavro",
    "aiokafka",
    "click",
    "rich",
    "pydantic",
    "pydantic_settings",
}
OUTER_LAYERS = (
    "streams.adapters",
    "streams.verifier",
    "streams.cli",
    "streams.settings",
    "streams.sandbox",
    "streams.pipeline",
)


def imports_of(path: Path) -> set[str]:
    """Absolute names of every module ``path`` imports (relative imports resolved)."""
    package = ".".join(path.relative_to(PACKAGE.parent).with_suffix("").parts[:-1])
    return imports_in(path.read_text(encoding="utf-8"), package)


def imports_in(source: str, package: str) -> set[str]:
    """Absolute names of every module ``source`` (a module of ``package``) imports.

    ``from a import b`` gives ``a`` and ``a.b``: ``b`` may be a module of ``a``.
    """
    names: set[str] = set()
    for module, members in import_statements(source, package):
        names.add(module)
        names.update(f"{module}.{member}" for member in members)
    return names


def import_statements(source: str, package: str) -> Iterator[tuple[str, tuple[str, ...]]]:
    """``(module, names)`` of every import in ``source``, relative ones resolved.

    ``import a.b`` gives ``("a.b", ())``; ``from .a import b, c`` in package
    ``p`` gives ``("p.a", ("b", "c"))``.
    """
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name, ()
        elif isinstance(node, ast.ImportFrom):
            base = package.rsplit(".", node.level - 1)[0] if node.level else ""
            module = ".".join(part for part in (base, node.module or "") if part)
            yield module, tuple(alias.name for alias in node.names)


def module_of(path: str) -> str:
    """The module name of a file path: ``streams/core/mx.py`` → ``streams.core.mx``."""
    parts = Path(path).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_graph(sources: Mapping[str, str]) -> dict[str, set[str]]:
    """Which of these modules each one imports, from ``{file path: source}``.

    ``from p import m`` is an import of the module ``p.m`` when there is one,
    else of ``p``. The packages around an imported module are not counted
    (Python runs their ``__init__`` first, but that makes no loop of its own).
    """
    paths = {module_of(path): path for path in sources}
    graph: dict[str, set[str]] = {}
    for module, path in paths.items():
        package = module if Path(path).stem == "__init__" else module.rpartition(".")[0]
        imported: set[str] = set()
        for name, members in import_statements(sources[path], package):
            submodules = {f"{name}.{member}" for member in members} & paths.keys()
            imported |= submodules
            if name in paths and len(submodules) < max(len(members), 1):
                imported.add(name)  # ``import p`` or ``from p import <not a module>``
        graph[module] = imported - {module}
    return graph


def import_cycles(graph: Mapping[str, set[str]]) -> list[tuple[str, ...]]:
    """One loop for every group of modules that import each other, e.g. ``("a", "b", "a")``.

    The groups are the strongly connected components of ``graph`` (Tarjan);
    each loop starts and ends at the group's first module by name.
    """
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    groups: list[set[str]] = []

    def visit(module: str) -> None:
        index[module] = low[module] = len(index)
        stack.append(module)
        for target in sorted(graph.get(module, ())):
            if target not in index:
                visit(target)
                low[module] = min(low[module], low[target])
            elif target in stack:
                low[module] = min(low[module], index[target])
        if low[module] == index[module]:
            group: set[str] = set()
            while module not in group:
                group.add(stack.pop())
            if len(group) > 1:
                groups.append(group)

    for module in sorted(graph):
        if module not in index:
            visit(module)
    return sorted(_loop_in(graph, group) for group in groups)


def _loop_in(graph: Mapping[str, set[str]], group: set[str]) -> tuple[str, ...]:
    """The shortest loop from the first module of ``group`` back to it, within the group."""
    start = min(group)
    paths: dict[str, tuple[str, ...]] = {start: (start,)}
    queue = [start]
    for module in queue:
        for target in sorted(graph[module] & group):
            if target == start:
                return (*paths[module], start)
            if target not in paths:
                paths[target] = (*paths[module], target)
                queue.append(target)
    raise AssertionError(f"{sorted(group)} is no strongly connected group")


@functools.cache
def package_graph() -> dict[str, set[str]]:
    """The import graph of every module of ``streams/``."""
    sources = {
        str(path.relative_to(PACKAGE.parent)): path.read_text(encoding="utf-8")
        for path in sorted(PACKAGE.rglob("*.py"))
    }
    return import_graph(sources)


def inside(name: str, package: str) -> bool:
    """Whether module ``name`` is ``package`` or one of its modules."""
    return name == package or name.startswith(package + ".")


def test_relative_imports_are_resolved() -> None:
    """The checker sees through ``from ..adapters import x`` (it could not fail otherwise)."""
    names = imports_in("from ..adapters import resolver\nfrom . import mx\n", "streams.core")
    assert "streams.adapters.resolver" in names and "streams.core.mx" in names


CORE_FILES = sorted((PACKAGE / "core").glob("*.py"))


@pytest.mark.parametrize("path", CORE_FILES, ids=lambda p: p.name)
def test_core_imports_nothing_impure(path: Path) -> None:
    """A core module imports no I/O library and no outer layer of mxprobe."""
    for name in imports_of(path):
        assert name.split(".")[0] not in FORBIDDEN_IN_CORE, f"{path.name} imports {name}"
        assert not name.startswith(OUTER_LAYERS), f"{path.name} imports {name}"


@pytest.mark.parametrize("path", CORE_FILES, ids=lambda p: p.name)
def test_core_has_no_coroutines(path: Path) -> None:
    """A core module defines no async function."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    assert not [n.name for n in ast.walk(tree) if isinstance(n, ast.AsyncFunctionDef)]


@pytest.mark.parametrize("path", sorted((PACKAGE / "adapters").glob("*.py")), ids=lambda p: p.name)
def test_adapters_do_not_import_upwards(path: Path) -> None:
    """Adapters know only the core (and the error tree)."""
    for name in imports_of(path):
        assert not name.startswith(("streams.verifier", "streams.cli", "streams.settings")), name


def test_importing_the_package_has_no_side_effects() -> None:
    """``import streams`` defines the version and nothing else."""
    tree = ast.parse((PACKAGE / "__init__.py").read_text(encoding="utf-8"))
    assert all(isinstance(n, (ast.Expr, ast.Assign)) for n in tree.body)


# ---------------------------------------------------------------- no import loops


def test_the_cycle_finder_finds_a_planted_loop() -> None:
    """A loop through a TYPE_CHECKING import and a lazy one is found and named in order."""
    graph = import_graph(
        {
            "streams/a.py": "from streams import b\n",
            "streams/b.py": (
                "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from .c import C\n"
            ),
            "streams/c.py": "def late():\n    import streams.a\n",
            "streams/d.py": "from streams.a import thing\n",
            "streams/e.py": "from streams.d import thing\n",
            "streams/f.py": "from streams.e import thing\n",
        }
    )
    assert import_cycles(graph) == [("streams.a", "streams.b", "streams.c", "streams.a")]
    two = import_graph({"streams/x.py": "import streams.y\n", "streams/y.py": "from . import x\n"})
    assert import_cycles(two) == [("streams.x", "streams.y", "streams.x")]


def test_a_package_importing_its_modules_is_no_loop() -> None:
    """``from p import m`` imports the module ``p.m``, not ``p``'s ``__init__`` that imports it."""
    graph = import_graph(
        {
            "streams/p/__init__.py": "from streams.p.a import A\n",
            "streams/p/a.py": "from streams.p import b\nA = b.B\n",
            "streams/p/b.py": "B = 1\n",
        }
    )
    assert graph == {
        "streams.p": {"streams.p.a"},
        "streams.p.a": {"streams.p.b"},
        "streams.p.b": set(),
    }
    assert import_cycles(graph) == []


def test_no_two_modules_import_each_other() -> None:
    """No modules of ``streams/`` import each other, directly or in a loop."""
    loops = [" → ".join(loop) for loop in import_cycles(package_graph())]
    assert not loops, "modules that import each other: " + "; ".join(loops)


# ---------------------------------------------------------------- who may import what


def routes_from(graph: Mapping[str, set[str]], start: str) -> dict[str, tuple[str, ...]]:
    """Every module ``start`` imports, itself or through others, with the shortest route there."""
    routes: dict[str, tuple[str, ...]] = {start: (start,)}
    queue = [start]
    for module in queue:  # breadth first: the first route found is a shortest one
        for target in sorted(graph[module]):
            if target not in routes:
                routes[target] = (*routes[module], target)
                queue.append(target)
    return routes


def test_routes_lead_through_every_imported_module() -> None:
    """What a module imports through others is reached, by the shortest route; nothing else."""
    graph = {
        "streams.verifier": {"streams.a", "streams.b"},
        "streams.a": {"streams.c"},
        "streams.b": {"streams.a"},
        "streams.c": set(),
        "streams.d": {"streams.verifier"},
    }
    assert routes_from(graph, "streams.verifier") == {
        "streams.verifier": ("streams.verifier",),
        "streams.a": ("streams.verifier", "streams.a"),
        "streams.b": ("streams.verifier", "streams.b"),
        "streams.c": ("streams.verifier", "streams.a", "streams.c"),
    }


@pytest.mark.parametrize(
    ("name", "package", "expected"),
    [
        ("streams.pipeline", "streams.pipeline", True),
        ("streams.pipeline.app.Pipeline", "streams.pipeline", True),
        ("streams.pipelines", "streams.pipeline", False),
        ("faust", "faust", True),
        ("faust_streaming", "faust", False),
    ],
)
def test_inside_means_the_package_or_its_modules(name: str, package: str, expected: bool) -> None:
    """A package's modules are inside it; a name that merely starts alike is not."""
    assert inside(name, package) is expected


def test_the_verifier_knows_no_faust() -> None:
    """``streams.verifier`` imports faust neither itself nor through a module it imports."""
    for module, route in routes_from(package_graph(), "streams.verifier").items():
        path = PACKAGE.parent / Path(*module.split("."))
        path = path / "__init__.py" if path.is_dir() else path.with_suffix(".py")
        faust = sorted(name for name in imports_of(path) if inside(name, "faust"))
        assert not faust, f"{' → '.join(route)} imports {', '.join(faust)}"


@pytest.mark.parametrize("path", sorted((PACKAGE / "adapters").glob("*.py")), ids=lambda p: p.name)
def test_adapters_do_not_import_the_pipeline(path: Path) -> None:
    """An adapter imports nothing of ``streams.pipeline``."""
    wrong = sorted(name for name in imports_of(path) if inside(name, "streams.pipeline"))
    assert not wrong, f"streams/adapters/{path.name} imports {', '.join(wrong)}"


@pytest.mark.parametrize("path", sorted((PACKAGE / "pipeline").glob("*.py")), ids=lambda p: p.name)
def test_the_pipeline_does_not_import_the_cli(path: Path) -> None:
    """A pipeline module imports nothing of ``streams.cli``."""
    wrong = sorted(name for name in imports_of(path) if inside(name, "streams.cli"))
    assert not wrong, f"streams/pipeline/{path.name} imports {', '.join(wrong)}"


#: What core/ may import besides the standard library and itself.
CORE_MAY_IMPORT = ("email_validator",)


def core_may_import(name: str) -> bool:
    """Whether a core module may import ``name``."""
    root = name.split(".")[0]
    return (
        root in sys.stdlib_module_names or root in CORE_MAY_IMPORT or inside(name, "streams.core")
    )


def test_the_core_rule_refuses_a_third_party_package() -> None:
    """The standard library, email_validator and core pass; anything else does not."""
    names = imports_in(
        "import json\nfrom email_validator import validate_email\nfrom . import mx\n"
        "import idna\nfrom streams.errors import WorldError\n",
        "streams.core",
    )
    assert sorted(n for n in names if not core_may_import(n)) == [
        "idna",
        "streams.errors",
        "streams.errors.WorldError",
    ]


@pytest.mark.parametrize("path", CORE_FILES, ids=lambda p: p.name)
def test_core_imports_only_the_standard_library_and_email_validator(path: Path) -> None:
    """A core module imports the standard library, email_validator and core, nothing else."""
    foreign = sorted(name for name in imports_of(path) if not core_may_import(name))
    assert not foreign, f"streams/core/{path.name} imports {', '.join(foreign)}"
