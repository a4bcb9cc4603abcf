"""Every ``curl`` example in the README, run as written with bash and curl against the real service in demo mode.

Only the address (``localhost:8080`` becomes the test server's port), the
password (``your-password``) and the placeholder token (``sc_...``) are
filled in; each command must answer 2xx (curl ``--fail-with-body``).
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from stockcache.settings import Settings
from tests.integration.conftest import start_service

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"
PASSWORD = "your-password"

pytestmark = pytest.mark.skipif(shutil.which("curl") is None, reason="needs curl")


def _shell_blocks(text: str) -> list[str]:
    return re.findall(r"```sh\n(.*?)```", text, flags=re.S)


def _curl_commands(block: str) -> list[str]:
    """The block's commands that call curl, with their continuation lines joined."""
    commands, current = [], ""
    for line in block.splitlines():
        current += line + "\n"
        if line.rstrip().endswith("\\"):
            continue
        if "curl " in current:
            commands.append(current)
        current = ""
    return commands


def test_readme_curl_examples_all_answer_as_written(tmp_path: Path) -> None:
    commands = [c for block in _shell_blocks(README.read_text()) for c in _curl_commands(block)]
    routes = " ".join(commands)
    for route in ("/api/watchlist", "/api/history/", "/api/news/", "/api/profile/", "/api/portfolio"):
        assert route in routes, route  # issue 17, point 16: the README shows each of these
    live = start_service(Settings(data_dir=tmp_path / "data", port=0, refresh=False))
    try:
        assert live.runtime.settings.demo
        live.add_user("admin", PASSWORD, admin=True)
        done = subprocess.run([sys.executable, "-m", "stockcache", "tokens", "create", "admin",
                               "--data-dir", str(tmp_path / "data")], cwd=ROOT, capture_output=True,
                              text=True, timeout=60)
        token = done.stdout.strip()
        assert token.startswith("sc_")
        address = live.url.removeprefix("http://")
        script = ["set -euo pipefail", 'curl() { command curl --fail-with-body --max-time 20 "$@"; echo; }']
        for command in commands:
            script.append(command.replace("localhost:8080", address).replace("sc_...", token))
        done = subprocess.run(["bash", "-c", "\n".join(script)], cwd=tmp_path, capture_output=True, text=True,
                              timeout=300)
        assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    finally:
        live.stop()


def test_readme_dashboard_hint_is_the_readme_command() -> None:
    page = (ROOT / "stockcache" / "static" / "index.html").read_text()
    (hint,) = re.findall(r"<code>([^<]*users add[^<]*)</code>", page)
    prefix = hint.split(" users add")[0]
    assert prefix == ".venv/bin/python -m stockcache"
    assert f"{prefix} users add admin --admin" in README.read_text()
