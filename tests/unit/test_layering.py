"""Dependencies point one way: cli → verifier → adapters → core; core stays pure."""

from __future__ import annotations

import ast
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
    """Absolute names of every module ``source`` (a module of ``package``) imports."""
    tree = ast.parse(source)
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = package.rsplit(".", node.level - 1)[0] if node.level else ""
            module = ".".join(part for part in (base, node.module or "") if part)
            names.add(module)
            if node.level:
                names.update(f"{module}.{alias.name}" for alias in node.names)
    return names


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
