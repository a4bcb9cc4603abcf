"""Meta-tests that keep the layout honest: imports point one way, each library lives in one place."""

from __future__ import annotations

import ast
import json
from pathlib import Path

import pytest

from stockcache.errors import ERRORS_BY_CODE
from stockcache.web import openapi

PACKAGE = Path(__file__).resolve().parents[2] / "stockcache"

# What each part of the package may import from stockcache (besides itself).
ALLOWED = {
    "settings": {"errors"},
    "errors": set(),
    "clock": set(),
    "models": {"errors"},
    "sqlitefile": {"errors"},
    "usage": {"errors", "clock", "sqlitefile"},
    "metrics": set(),
    "budget": {"errors", "usage", "clock"},
    "cache": {"settings", "errors", "models", "sqlitefile"},
    "providers": {"settings", "errors", "models", "clock"},
    "fetcher": {"budget", "errors", "metrics", "providers"},
    "store": {"settings", "errors", "models", "sqlitefile"},
    "auth": {"settings", "errors", "models", "store"},
}
FORBIDDEN_EVERYWHERE_BELOW_WEB = {"web", "cli", "runtime"}

# Third-party libraries and the only modules that may import them.
OWNERS = {
    "bottle": ("web/",),
    "waitress": ("web/server.py",),
    "sqlitedict": ("cache/sqlite.py",),
    "requests_futures": ("fetcher.py",),
    "jwt": ("auth.py",),
    "argon2": ("auth.py",),
    "redis": ("cache/redis.py", "redisshared.py"),
    "prometheus_client": ("web/prometheus.py",),
    "orjson": ("web/plugins.py",),
    "psycopg": ("store/postgres.py",),
    "psycopg_pool": ("store/postgres.py",),
}


def _modules():
    for path in sorted(PACKAGE.rglob("*.py")):
        yield path.relative_to(PACKAGE).as_posix(), ast.parse(path.read_text(), str(path))


def _imports(tree: ast.AST, rel: str):
    """(stockcache part or None for third-party, absolute module name) for every import."""
    package = ["stockcache", *rel.split("/")[:-1]]
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield _owner(alias.name.split(".")), alias.name
        elif isinstance(node, ast.ImportFrom):
            if node.level == 0:
                base = (node.module or "").split(".")
            else:
                base = package[: len(package) - (node.level - 1)] + (node.module.split(".") if node.module else [])
            if node.module is None and len(base) == 1:
                for alias in node.names:  # from . import x, at the package's top level
                    yield alias.name, f"stockcache.{alias.name}"
            else:
                yield _owner(base), ".".join(base)


def _owner(parts: list[str]) -> str | None:
    if parts[0] != "stockcache":
        return None
    return parts[1] if len(parts) > 1 else "__init__"


def _part(rel: str) -> str:
    return rel.split("/")[0].removesuffix(".py")


@pytest.mark.parametrize("rel", [rel for rel, _ in _modules()])
def test_architecture_imports_point_one_way(rel):
    tree = dict(_modules())[rel]
    part = _part(rel)
    for target, _ in _imports(tree, rel):
        if target is None or target == part or target == "__init__":
            continue
        if part in ALLOWED:
            assert target in ALLOWED[part], f"{rel} imports stockcache.{target}"
        if part not in ("web", "cli", "__main__", "runtime"):
            assert target not in FORBIDDEN_EVERYWHERE_BELOW_WEB, f"{rel} imports stockcache.{target}"


def test_architecture_each_library_is_imported_in_one_place():
    for rel, tree in _modules():
        for target, name in _imports(tree, rel):
            if target is not None:
                continue
            top = name.split(".")[0]
            if top in OWNERS:
                assert rel.startswith(OWNERS[top]), f"{rel} imports {top}; only {OWNERS[top]} may"


def test_every_client_error_code_is_documented_in_openapi():
    text = json.dumps(openapi.spec())
    for code, klass in ERRORS_BY_CODE.items():
        if klass.status == 500:
            continue  # internal, config and cache errors never reach a client as such
        assert code in text, f"error code {code} is not described in /openapi.json"
