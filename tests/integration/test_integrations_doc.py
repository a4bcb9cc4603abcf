"""Each recipe of docs/integrations.md, driven exactly as written against the real service (issue 18, point 5).

The requests come from the doc's own code blocks, with only the placeholder
server and token swapped for the live ones, so the doc cannot drift from
what the service answers.
"""

from __future__ import annotations

import csv
import io
import json
import os
import re
import shlex
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
import yaml
from prometheus_client.parser import text_string_to_metric_families

from bench.fake_upstream import FakeUpstream
from tests.integration.conftest import Live, start_service, upstream_settings
from tests.integration.test_cli_users import run

DOC = Path(__file__).resolve().parents[2] / "docs" / "integrations.md"
PLACEHOLDER_HOST = "stockcache.local:8080"
PLACEHOLDER_TOKEN = "sc_YOUR_MARKET_TOKEN"
HELD = ("AAPL", "SAP.DE")


def sections() -> dict[str, list[tuple[str, str]]]:
    """The doc's code blocks by the ``##`` heading they stand under: (language, text)."""
    out: dict[str, list[tuple[str, str]]] = {}
    heading = ""
    for part in re.split(r"^(## .*)$", DOC.read_text(encoding="utf-8"), flags=re.M):
        if part.startswith("## "):
            heading = part[3:].strip()
            continue
        out.setdefault(heading, []).extend(re.findall(r"^```(\w*)\n(.*?)^```$", part, flags=re.M | re.S))
    return out


def blocks(heading_start: str, language: str) -> list[str]:
    found = [text for heading, items in sections().items() if heading.startswith(heading_start)
             for lang, text in items if lang == language]
    assert found, f"no {language} block under a heading starting {heading_start!r}"
    return found


@pytest.fixture
def svc(tmp_path, upstream: FakeUpstream) -> Iterator[Live]:
    live = start_service(upstream_settings(tmp_path, upstream))
    try:
        yield live
    finally:
        live.stop()


@pytest.fixture
def token(svc: Live) -> str:
    """A market token of a user holding AAPL and SAP.DE, made as the doc says (below: the CLI test)."""
    user = svc.runtime.store.create_user("alice", "not-a-password-hash")
    svc.runtime.store.add_position(user.id, HELD[0], 1, 1)
    svc.runtime.store.add_watch(user.id, HELD[1])
    return svc.runtime.auth.create_api_token("alice", scope="market")[0]


def live_text(text: str, svc: Live, token: str) -> str:
    """A doc snippet with the placeholder server and token swapped for the live ones."""
    return text.replace(f"http://{PLACEHOLDER_HOST}", svc.url).replace(
        PLACEHOLDER_HOST, svc.url.removeprefix("http://")).replace(PLACEHOLDER_TOKEN, token)


def formula_urls(text: str, function: str) -> list[str]:
    urls = re.findall(rf'{function}\("([^"]+)"', text)
    assert urls, f"no {function} formula in {text!r}"
    return urls


def json_price(svc: Live, token: str, symbol: str) -> float:
    return float(svc.api.get(f"/api/quote/{symbol}", token=token).json()["price"])


def test_integrations_doc_market_token_command_works(tmp_path: Path) -> None:
    (command,) = blocks("A token for apps", "sh")
    args = shlex.split(command)
    assert args[:3] == ["python", "-m", "stockcache"]
    data = tmp_path / "data"
    assert run(data, "users", "add", "alice", stdin="Cli-Test-Passw0rd-5e6f\n").returncode == 0
    made = run(data, *args[3:])
    assert made.returncode == 0 and made.stdout.startswith("sc_") and "market scope" in made.stderr


def test_integrations_doc_google_sheets_importdata(svc: Live, token: str) -> None:
    table_block, cell_block = blocks("Google Sheets", "text")
    (table_url,) = formula_urls(live_text(table_block, svc, token), "IMPORTDATA")
    answer = requests.get(table_url, timeout=10)  # no headers: as Google's fetcher sends it
    assert answer.status_code == 200 and answer.headers["Content-Type"].startswith("text/csv")
    table = list(csv.reader(io.StringIO(answer.text)))
    asked = re.search(r"symbols=([^&]+)", table_url).group(1).split(",")  # type: ignore[union-attr]
    assert table[0][:2] == ["symbol", "price"] and [row[0] for row in table[1:]] == asked
    assert all(float(row[1]) == json_price(svc, token, row[0]) for row in table[1:])

    (cell_url,) = formula_urls(live_text(cell_block, svc, token), "IMPORTDATA")
    cell = list(csv.reader(io.StringIO(requests.get(cell_url, timeout=10).text)))
    assert len(cell) == 1 and len(cell[0]) == 1 and float(cell[0][0]) == json_price(svc, token, "AAPL")


def test_integrations_doc_libreoffice_webservice(svc: Live, token: str) -> None:
    (block,) = blocks("LibreOffice", "text")
    assert block.startswith("=NUMBERVALUE(CLEAN(WEBSERVICE(")
    (url,) = formula_urls(live_text(block, svc, token), "WEBSERVICE")
    body = requests.get(url, timeout=10).text
    cleaned = "".join(ch for ch in body if ord(ch) >= 32)  # what CLEAN keeps
    symbol = re.search(r"symbols=([^&]+)", url).group(1)  # type: ignore[union-attr]
    assert float(cleaned) == json_price(svc, token, symbol)


def test_integrations_doc_ghostfolio_manual_scraper(svc: Live, token: str) -> None:
    (block,) = blocks("Ghostfolio", "json")
    config = json.loads(live_text(block, svc, token))
    assert set(config) == {"url", "selector"} and config["selector"].startswith("$.")
    answer = requests.get(config["url"], timeout=10)
    assert answer.status_code == 200 and answer.headers["Content-Type"] == "application/json"
    value = answer.json()
    for step in config["selector"][2:].split("."):  # a JSONPath of plain member names
        value = value[step]
    symbol = config["url"].split("/api/price/")[1].split("?")[0]
    assert isinstance(value, float) and value == json_price(svc, token, symbol)


def test_integrations_doc_home_assistant_rest_sensor(svc: Live, token: str) -> None:
    (block,) = blocks("Home Assistant", "yaml")
    (rest,) = yaml.safe_load(live_text(block, svc, token))["rest"]
    answer = requests.get(rest["resource"], headers=rest["headers"], timeout=10)
    assert answer.status_code == 200
    body = answer.json()
    for sensor in rest["sensor"]:
        path = re.fullmatch(r"\{\{ value_json\.(\w+) \}\}", sensor["value_template"])
        assert path is not None and isinstance(body[path.group(1)], float)
        assert sensor["unit_of_measurement"] == body["currency"]
        missing = [name for name in sensor["json_attributes"] if name not in body]
        assert not missing, missing


def test_integrations_doc_prometheus_scrape(svc: Live, token: str) -> None:
    (block,) = blocks("Prometheus", "yaml")
    (job,) = yaml.safe_load(live_text(block, svc, token))["scrape_configs"]
    (target,) = job["static_configs"][0]["targets"]
    auth = job["authorization"]
    answer = requests.get(f"{job.get('scheme', 'http')}://{target}{job['metrics_path']}",
                          headers={"Authorization": f"{auth.get('type', 'Bearer')} {auth['credentials']}"},
                          timeout=10)
    assert answer.status_code == 200
    families = {family.name: family for family in text_string_to_metric_families(answer.text)}
    prices = {s.labels["symbol"]: s.value for s in families["stockcache_quote_price"].samples}
    assert prices == {symbol: json_price(svc, token, symbol) for symbol in HELD}
    documented = set(re.findall(r"`(stockcache_quote_\w+)", DOC.read_text(encoding="utf-8")))
    assert documented == set(families), "the doc's list of gauges differs from what is served"


def test_integrations_doc_shell_one_liner(svc: Live, token: str) -> None:
    (command,) = blocks("A shell one-liner", "sh")
    environ = {**os.environ, "STOCKCACHE_TOKEN": token}
    done = subprocess.run(["sh", "-c", live_text(command, svc, "unused")], capture_output=True, text=True,
                          env=environ, timeout=30)
    assert done.returncode == 0, done.stderr
    assert float(done.stdout) == json_price(svc, token, "AAPL") and done.stdout.strip() == done.stdout
    failing = subprocess.run(["sh", "-c", live_text(command, svc, "unused").replace("AAPL", "ZZZZ1")],
                             capture_output=True, text=True, env=environ, timeout=30)
    assert failing.returncode == 22  # -f: an error answer is a failed command, as the doc says
