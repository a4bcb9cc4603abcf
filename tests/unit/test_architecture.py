"""Meta-tests that keep the layout honest.

- Imports point one way: every module of the package is in ``ALLOWED`` with the
  parts of stockcache it may import (a new module without a row fails).
- Each third-party library is imported in one place.
- No provider is named outside its own module and the registry; adding Twelve Data or
  CoinGecko took its module, one import and one ``PROVIDERS`` line, and its fake.
- Only the read-through path reads and writes market-data cache entries.
- Every client error code is documented in the OpenAPI spec.

The package is parsed once for all of them.
"""

from __future__ import annotations

import ast
import functools
import json
import re
from pathlib import Path

import pytest

from stockcache.errors import ERRORS_BY_CODE
from stockcache.upstream.providers import provider_classes
from stockcache.web import openapi

PACKAGE = Path(__file__).resolve().parents[2] / "stockcache"

BOTTOM = {"errors", "clock", "metrics", "models", "validation", "venues"}
# What each part of the package may import from stockcache (besides itself). A part is a
# top-level module or a subpackage; upstream/ is split into its modules.
ALLOWED: dict[str, set[str]] = {
    "__init__": {"cache", "service", "settings"},
    "__main__": {"cli"},
    "errors": set(),
    "clock": set(),
    "metrics": set(),
    "models": set(),
    "validation": {"currency"},
    "venues": set(),
    "symbols": {"errors", "venues"},
    "currency": {"models", "symbols"},
    "kinds": {"models", "validation"},
    # The analysis prompt and reply reading: shared by the model provider, the demo source and the service.
    "analysis": {"validation"},
    # The settings table is built from the providers' own sections (imported late, in a function).
    "settings": {"errors", "kinds", "upstream/providers"},
    "sqlitefile": {"errors"},
    "usage": {"errors", "clock", "sqlitefile"},
    "cache": {"settings", "errors", "kinds", "clock", "sqlitefile"},
    "upstream/guard": {"errors", "clock", "usage"},
    "upstream/providers": BOTTOM | {"settings", "kinds", "symbols", "currency", "upstream/guard", "analysis"},
    "upstream/transport": {"errors", "upstream/providers"},
    "upstream/singleflight": {"errors"},
    "upstream/router": BOTTOM | {"kinds", "symbols", "upstream/guard", "upstream/providers",
                                 "upstream/singleflight", "upstream/transport"},
    "upstream/shared": {"errors", "clock", "settings", "cache", "upstream/guard"},
    "upstream/__init__": set(),
    "store": {"settings", "errors", "symbols", "validation", "currency", "sqlitefile", "models", "clock"},
    "auth": {"settings", "errors", "store", "clock"},
    "readthrough": BOTTOM | {"cache", "kinds", "settings", "symbols", "currency", "upstream/providers",
                             "upstream/router", "upstream/singleflight"},
    "portfolio": {"symbols"},
    "stats": {"metrics", "settings"},
    # from_env builds a service the way the runtime does (imported late, in that method).
    "service": BOTTOM | {"analysis", "readthrough", "portfolio", "stats", "settings", "symbols", "currency", "cache",
                         "runtime", "upstream/providers", "upstream/router"},
    "refresher": BOTTOM | {"service", "kinds", "symbols", "upstream/guard"},
    "kpis": {"clock", "errors", "metrics", "usage", "sqlitefile", "upstream/providers"},
    "notify": {"settings"},
    "alerts": {"errors", "notify", "settings", "store"},
}
# Top of the stack: these may import anything below them.
TOP = {"runtime", "web", "cli", "__main__"}
FORBIDDEN_BELOW_TOP = {"web", "cli"}

# Third-party libraries and the only modules that may import them.
OWNERS = {
    "bottle": ("web/",),
    "waitress": ("web/server.py",),
    "sqlitedict": ("cache/sqlite.py",),
    "requests_futures": ("upstream/transport.py",),
    "requests": ("upstream/transport.py",),
    "urllib3": ("upstream/transport.py",),
    "jwt": ("auth.py",),
    "argon2": ("auth.py",),
    "redis": ("cache/redis.py", "upstream/shared.py"),
    "prometheus_client": ("web/prometheus.py",),
    "orjson": ("web/plugins.py",),
    "holidays": ("venues.py",),
    "psycopg": ("store/postgres.py",),
    "psycopg_pool": ("store/postgres.py",),
}

# Methods that read or write cache entries: only the read-through path calls them on the
# service's cache (the cache package itself and the cached decorator aside).
CACHE_ENTRY_METHODS = {"get", "get_many", "get_entry", "get_stale", "get_stale_many", "peek", "memory_hit",
                       "set", "set_many", "delete"}
ENTRY_OWNERS = ("readthrough.py", "cache/")


@functools.cache
def _modules() -> dict[str, ast.Module]:
    return {path.relative_to(PACKAGE).as_posix(): ast.parse(path.read_text(), str(path))
            for path in sorted(PACKAGE.rglob("*.py"))}


def _part(rel: str) -> str:
    parts = rel.removesuffix(".py").split("/")
    if parts[0] == "upstream":
        return "upstream/" + parts[1] if len(parts) > 1 else "upstream/__init__"
    return parts[0]


def _target(parts: list[str]) -> str | None:
    """The part of stockcache an import names (None for third-party)."""
    if parts[0] != "stockcache":
        return None
    if len(parts) == 1:
        return "__init__"
    if parts[1] == "upstream":
        return "upstream/" + parts[2] if len(parts) > 2 else "upstream/__init__"
    return parts[1]


def _imports(tree: ast.AST, rel: str):
    """(stockcache part or None for third-party, absolute module name) for every import."""
    package = ["stockcache", *rel.split("/")[:-1]]
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield _target(alias.name.split(".")), alias.name
        elif isinstance(node, ast.ImportFrom):
            if node.level == 0:
                base = (node.module or "").split(".")
            else:
                base = package[: len(package) - (node.level - 1)] + (node.module.split(".") if node.module else [])
            if node.module is None:
                for alias in node.names:  # from . import x
                    yield _target([*base, alias.name]), ".".join([*base, alias.name])
            else:
                yield _target(base), ".".join(base)


@pytest.mark.parametrize("rel", sorted(_modules()))
def test_architecture_every_module_imports_only_what_its_part_may(rel):
    part = _part(rel)
    if part in TOP:
        for target, _ in _imports(_modules()[rel], rel):
            assert not (part not in ("cli", "__main__") and target == "cli"), f"{rel} imports stockcache.cli"
        return
    assert part in ALLOWED, f"{rel}: add its part {part!r} to ALLOWED in this test"
    for target, name in _imports(_modules()[rel], rel):
        if target is None or target == part:
            continue
        assert target not in FORBIDDEN_BELOW_TOP, f"{rel} imports {name}"
        assert target in ALLOWED[part], f"{rel} imports {name}"


def test_architecture_each_library_is_imported_in_one_place():
    for rel, tree in _modules().items():
        for target, name in _imports(tree, rel):
            if target is not None:
                continue
            top = name.split(".")[0]
            if top in OWNERS:
                assert rel.startswith(OWNERS[top]), f"{rel} imports {top}; only {OWNERS[top]} may"


def _code_strings(tree: ast.Module) -> list[str]:
    """String constants that are not docstrings."""
    docstrings = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            body = node.body
            if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant):
                docstrings.add(id(body[0].value))
    return [node.value for node in ast.walk(tree)
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docstrings]


def test_architecture_no_provider_is_named_outside_its_module_and_the_registry():
    classes = [cls for cls in provider_classes() if not cls.local]
    homes = {cls.name: cls.__module__.removeprefix("stockcache.").replace(".", "/") for cls in classes}
    for rel, tree in _modules().items():
        if rel == "upstream/providers/__init__.py":
            continue
        for name, home in homes.items():
            if rel.removesuffix(".py").removesuffix("/__init__").startswith(home):
                continue
            pattern = re.compile(rf"(?i)\b{re.escape(name)}\b")
            found = [text for text in _code_strings(tree) if pattern.search(text)]
            assert not found, f"{rel} names the provider {name!r} in code: {found[:3]}"


# Outside the package, the code a provider's fake lives in (its own module in tests/fakes/ is a test file).
FAKE_SERVER = "bench/fake_upstream.py"
REGISTRY = "upstream/providers/__init__.py"


def _spellings(cls: type) -> re.Pattern[str]:
    """Every way code writes a provider: ``twelvedata``, ``TwelveDataProvider``, ``TWELVEDATA_API_KEY``,
    ``twelve_data``, "Twelve Data"."""
    joined = r"[\s_-]*".join(re.escape(word) for word in cls.label.split())
    return re.compile(rf"(?i){joined}|{re.escape(cls.name)}")


def _lines_naming(tree: ast.Module, pattern: re.Pattern[str]) -> set[int]:
    """Lines whose code (identifiers, imports, strings other than docstrings) names ``pattern``."""
    strings = {id(node) for node in _string_nodes(tree)}
    lines: set[int] = set()
    for node in ast.walk(tree):
        names: list[str] = []
        if isinstance(node, ast.Name):
            names = [node.id]
        elif isinstance(node, ast.Attribute):
            names = [node.attr]
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names = [node.name]
        elif isinstance(node, ast.arg):
            names = [node.arg]
        elif isinstance(node, ast.keyword) and node.arg:
            names = [node.arg]
        elif isinstance(node, ast.alias):
            names = [node.name, node.asname or ""]
        elif isinstance(node, ast.ImportFrom):
            names = [node.module or ""]
        elif isinstance(node, ast.Constant) and id(node) in strings:
            names = [node.value]
        if any(pattern.search(name) for name in names):
            lines.add(getattr(node, "lineno", 0))
    return lines


def _string_nodes(tree: ast.Module) -> list[ast.Constant]:
    docstrings: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            body = node.body
            if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant):
                docstrings.add(id(body[0].value))
    return [node for node in ast.walk(tree)
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docstrings]


@pytest.mark.parametrize("name", ["twelvedata", "coingecko"])
def test_architecture_adding_a_provider_took_its_module_one_registry_line_and_its_fake(name):
    """Outside tests, the only code that names the provider is its module, the registry's import of it
    and its line in PROVIDERS, and the fake server that mounts its fake (``tests/fakes/<name>.py``)."""
    cls = next(c for c in provider_classes() if c.name == name)
    pattern = _spellings(cls)
    home = cls.__module__.removeprefix("stockcache.").replace(".", "/") + ".py"
    naming: dict[str, set[int]] = {}
    for path in sorted(PACKAGE.parent.glob("*/**/*")):
        rel = path.relative_to(PACKAGE.parent).as_posix()
        if not path.is_file() or rel.split("/")[0] not in ("stockcache", "bench", "scripts") \
                or "__pycache__" in rel or rel.startswith(("bench/bench_", "bench/replay")):
            continue  # benchmarks and replays measure named providers; adding one needs none
        if path.suffix == ".py":
            lines = _lines_naming(ast.parse(path.read_text(), rel), pattern)
        else:
            lines = {n for n, line in enumerate(path.read_text(errors="replace").splitlines(), 1)
                     if pattern.search(line)}
        if lines:
            naming[rel] = lines
    assert set(naming) <= {f"stockcache/{home}", f"stockcache/{REGISTRY}", FAKE_SERVER}, sorted(naming)
    registry = ast.parse((PACKAGE / REGISTRY).read_text())
    imports = [n.lineno for n in registry.body if isinstance(n, ast.ImportFrom)
               and n.module == home.rsplit("/", 1)[-1].removesuffix(".py")]
    listed = [el.lineno for n in registry.body if isinstance(n, ast.AnnAssign) and isinstance(n.target, ast.Name)
              and n.target.id == "PROVIDERS" and isinstance(n.value, ast.List)
              for el in n.value.elts if isinstance(el, ast.Name) and el.id == cls.__name__]
    assert len(imports) == 1 and len(listed) == 1
    assert naming[f"stockcache/{REGISTRY}"] == {imports[0], listed[0]}


def test_architecture_only_the_readthrough_path_touches_market_data_entries():
    for rel, tree in _modules().items():
        if rel.startswith(ENTRY_OWNERS):
            continue
        for node in ast.walk(tree):
            if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)):
                continue
            if node.func.attr not in CACHE_ENTRY_METHODS:
                continue
            receiver = ast.unparse(node.func.value)
            assert not re.search(r"(^|\.)cache$", receiver), (
                f"{rel} calls {receiver}.{node.func.attr}(): cache entries go through readthrough.py")


def test_every_client_error_code_is_documented_in_openapi():
    text = json.dumps(openapi.spec())
    for code, klass in ERRORS_BY_CODE.items():
        if klass.status == 500:
            continue  # internal, config and cache errors never reach a client as such
        assert code in text, f"error code {code} is not described in /openapi.json"
