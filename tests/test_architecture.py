"""The layout's rules, checked on the source (docs/design.md, "Layers").

Each folder says in its ``__init__`` what it owns and may import; these tests hold
the package to the rules a reviewer would otherwise check by hand: small modules,
a pure core, no HTTP status in the domain, no module speaking both HTTP and SQL,
a sans-IO protocol layer, tiers that never import each other.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "diskname"
ENGINE = PACKAGE / "engine"
MAX_LINES = 400
SQL = re.compile(r"\b(SELECT|INSERT INTO|UPDATE|DELETE FROM|CREATE TABLE)\b")


def modules(root: Path = PACKAGE) -> Iterator[Path]:
    yield from sorted(p for p in root.rglob("*.py") if "__pycache__" not in p.parts)


def dotted(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported(path: Path) -> set[str]:
    """Every module ``path`` imports, absolute, relative imports resolved."""
    tree = ast.parse(path.read_text())
    package = dotted(path) if path.name == "__init__.py" else dotted(path).rsplit(".", 1)[0]
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*parent, *([base] if base else [])])
            found.add(base)
            found |= {f"{base}.{alias.name}" for alias in node.names}
    return found


def uses(path: Path, prefix: str) -> bool:
    return any(m == prefix or m.startswith(prefix + ".") for m in imported(path))


def strings(path: Path) -> Iterator[str]:
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            yield node.value


def test_no_module_is_over_400_lines() -> None:
    long = {
        str(p.relative_to(PACKAGE)): n
        for p in modules()
        if (n := len(p.read_text().splitlines())) > MAX_LINES
    }
    assert long == {}


def test_the_engine_top_level_holds_at_most_8_modules_beside_its_packages() -> None:
    top = sorted(p.name for p in ENGINE.glob("*.py"))
    assert len(top) <= 8, top


def test_every_package_says_what_it_owns() -> None:
    for init in PACKAGE.rglob("__init__.py"):
        doc = ast.get_docstring(ast.parse(init.read_text()))
        assert doc and len(doc) > 40, f"{init.relative_to(PACKAGE)} needs a docstring"


def http_status_literals(path: Path) -> list[str]:
    """``status = 404``, ``status=409`` or ``.status = 502``: an HTTP status in code."""
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        pairs: list[tuple[str, ast.expr]] = []
        if isinstance(node, ast.Assign | ast.AnnAssign):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            for target in targets:
                name = (
                    target.attr if isinstance(target, ast.Attribute) else getattr(target, "id", "")
                )
                if node.value is not None:
                    pairs.append((name, node.value))
        elif isinstance(node, ast.keyword) and node.arg:
            pairs.append((node.arg, node.value))
        for name, value in pairs:
            literal = value.value if isinstance(value, ast.Constant) else None
            if "status" in name.lower() and isinstance(literal, int) and 400 <= literal < 600:
                found.append(f"line {value.lineno}: {name} = {literal}")
    return found


@pytest.mark.parametrize("path", list(modules(ENGINE)), ids=lambda p: str(p.relative_to(ENGINE)))
def test_the_domain_knows_no_http_status(path: Path) -> None:
    if uses(path, "aiohttp"):
        return  # the HTTP edges: statuses are theirs
    assert http_status_literals(path) == []
    assert "http_status" not in path.read_text()


@pytest.mark.parametrize("path", list(modules(ENGINE)), ids=lambda p: str(p.relative_to(ENGINE)))
def test_no_module_speaks_both_http_and_sql(path: Path) -> None:
    if not uses(path, "aiohttp"):
        return
    assert not uses(path, "asyncpg"), "an HTTP module imports asyncpg"
    assert not any(SQL.search(s) for s in strings(path)), "an HTTP module holds SQL"


LAYERS = {
    # folder: engine sub-packages it must not import
    "core": ("db", "hosts", "actions", "http", "ovirt", "service", "events", "metrics"),
    "db": ("hosts", "actions", "http", "ovirt", "service"),
    "hosts": ("actions", "http", "ovirt", "service"),
    "actions": ("http", "ovirt", "service"),
}


@pytest.mark.parametrize("layer", sorted(LAYERS))
def test_engine_layers_import_only_downwards(layer: str) -> None:
    for path in modules(ENGINE / layer):
        for forbidden in LAYERS[layer]:
            assert not uses(path, f"diskname.engine.{forbidden}"), (path.name, forbidden)
        assert not uses(path, "aiohttp"), path.name
        if layer == "core":
            for io in ("asyncio", "asyncpg", "socket"):
                assert not uses(path, io), (path.name, io)


def test_protocol_is_sans_io() -> None:
    for path in modules(PACKAGE / "protocol"):
        for io in ("asyncio", "socket", "asyncpg", "aiohttp", "diskname.engine", "diskname.host"):
            assert not uses(path, io), (path.name, io)


@pytest.mark.parametrize(
    ("tier", "others"),
    [
        ("agent", ("diskname.host", "diskname.engine", "diskname.client")),
        ("host", ("diskname.agent", "diskname.engine", "diskname.client")),
        ("engine", ("diskname.agent", "diskname.host", "diskname.client")),
        ("client", ("diskname.agent", "diskname.host", "diskname.engine")),
    ],
)
def test_tiers_never_import_each_other(tier: str, others: tuple[str, ...]) -> None:
    for path in modules(PACKAGE / tier):
        for other in others:
            assert not uses(path, other), (str(path.relative_to(PACKAGE)), other)


def test_the_checks_see_what_they_look_for(tmp_path: Path) -> None:
    """The rules above would fail on a breach (they are not vacuous)."""
    assert uses(ENGINE / "http" / "app.py", "aiohttp")
    assert uses(ENGINE / "db" / "pool.py", "asyncpg")
    assert uses(ENGINE / "hosts" / "monitor.py", "diskname.engine.core")
    breach = tmp_path / "breach.py"
    breach.write_text("class E(Exception):\n    status = 409\n\nraise web.HTTPError(status=502)\n")
    assert len(http_status_literals(breach)) == 2
