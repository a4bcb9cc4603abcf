"""The code stays clean: ruff (lint rules in pyproject.toml) and mypy pass on every change."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", *args], cwd=ROOT, capture_output=True, text=True, timeout=300)


def test_lint_ruff_finds_nothing():
    result = _run("ruff", "check", "stockcache", "bench", "tests")
    assert result.returncode == 0, result.stdout + result.stderr


def test_lint_mypy_passes_on_the_package():
    result = _run("mypy", "stockcache")
    assert result.returncode == 0, result.stdout + result.stderr
