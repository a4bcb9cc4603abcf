"""Settings: every contract variable is read, bad values stop start-up naming the setting."""

from __future__ import annotations

import dataclasses
import re
import subprocess
import sys
from pathlib import Path

import pytest

from stockcache.errors import ConfigError
from stockcache.settings import Settings, markdown_table, settings_table

CONTRACT = Path(__file__).resolve().parents[2] / "docs" / "contract.md"


def test_settings_defaults_match_the_contract():
    s = Settings.from_env({})
    assert (s.host, s.port, s.data_dir) == ("127.0.0.1", 8080, Path("data"))
    assert s.ttls == {"quote": 300, "news": 1800, "history": 3600, "fundamentals": 86400,
                      "ai_analysis": 604800, "fx": 3600}
    assert (s.get("finnhub_per_minute"), s.get("finnhub_per_second")) == (60, 30)
    assert (s.get("alphavantage_per_day"), s.get("alphavantage_per_second")) == (25, 1)
    assert (s.upstream_timeout, s.workers, s.max_batch, s.memory_max_items) == (10.0, 32, 100, 10_000)
    assert (s.refresh, s.refresh_hours, s.redis_url) == (True, "market", "")
    assert s.demo


def test_settings_read_every_variable_from_the_environment():
    env = {
        "STOCKCACHE_HOST": "0.0.0.0", "STOCKCACHE_PORT": "9000", "STOCKCACHE_DATA_DIR": "/tmp/x",
        "STOCKCACHE_THREADS": "4", "FINNHUB_API_KEY": "k1", "STOCKCACHE_TTL_QUOTE": "60",
        "STOCKCACHE_REFRESH": "off", "STOCKCACHE_REFRESH_HOURS": "always",
        "STOCKCACHE_REDIS_URL": "redis://127.0.0.1:6379/0", "STOCKCACHE_FINNHUB_URL": "http://127.0.0.1:1/api/v1/",
    }
    s = Settings.from_env(env)
    assert (s.host, s.port, s.data_dir, s.threads) == ("0.0.0.0", 9000, Path("/tmp/x"), 4)
    assert s.get("finnhub_api_key") == "k1" and not s.demo
    assert s.ttl_quote == 60 and s.refresh is False and s.refresh_hours == "always"
    assert s.redis_url == "redis://127.0.0.1:6379/0"
    assert s.get("finnhub_url") == "http://127.0.0.1:1/api/v1"


def test_settings_flags_override_the_environment():
    s = Settings.from_env({"STOCKCACHE_PORT": "9000"}, port="9100", host=None)
    assert s.port == 9100 and s.host == "127.0.0.1"


@pytest.mark.parametrize(
    ("var", "value", "named"),
    [
        ("STOCKCACHE_PORT", "http", "STOCKCACHE_PORT"),
        ("STOCKCACHE_PORT", "70000", "STOCKCACHE_PORT"),
        ("STOCKCACHE_TTL_QUOTE", "-5", "STOCKCACHE_TTL_QUOTE"),
        ("STOCKCACHE_REFRESH_HOURS", "weekends", "STOCKCACHE_REFRESH_HOURS"),
        ("STOCKCACHE_REFRESH", "maybe", "STOCKCACHE_REFRESH"),
        ("STOCKCACHE_WORKERS", "0", "STOCKCACHE_WORKERS"),
        ("STOCKCACHE_UPSTREAM_TIMEOUT", "nan", "STOCKCACHE_UPSTREAM_TIMEOUT"),
        ("STOCKCACHE_FINNHUB_URL", "ftp://x", "STOCKCACHE_FINNHUB_URL"),
        ("REDIS_URL", "localhost:6379", "REDIS_URL"),
    ],
)
def test_settings_bad_value_names_the_setting(var, value, named):
    with pytest.raises(ConfigError) as info:
        Settings.from_env({var: value})
    assert info.value.message.startswith(named + ":")


def test_settings_never_show_secrets():
    s = Settings.from_env({"FINNHUB_API_KEY": "SECRET_fh_123", "REDIS_URL": "redis://:pw_777@h:1/0"})
    assert "SECRET_fh_123" not in repr(s) and "pw_777" not in repr(s)
    assert "SECRET_fh_123" not in repr(s.sections) and "SECRET_fh_123" not in str(s.values()).replace(
        "'finnhub_api_key': 'SECRET_fh_123'", "")
    assert "SECRET_fh_123" not in str(s.public()) and s.public()["finnhub_api_key"] == "(set)"


def test_settings_table_covers_every_contract_variable():
    documented = set(re.findall(r"`((?:STOCKCACHE|FINNHUB|ALPHAVANTAGE|REDIS)_[A-Z_]+)`", CONTRACT.read_text()))
    known = {var for row in settings_table() for var in row.env}
    assert documented, "contract not found"
    assert documented <= known, documented - known


def test_settings_table_is_derived_from_the_fields_each_default_written_once():
    rows = settings_table()
    core = {row.name for row in rows if row.section is None and not row.name.startswith("route_")}
    assert core == {f.name for f in dataclasses.fields(Settings) if f.name not in ("sections", "routes")}
    assert len({row.name for row in rows}) == len(rows)  # no setting twice
    defaults = Settings()
    for row in rows:
        assert defaults.get(row.name) == row.default, row.name
    # A provider's settings live in its own section and read back flat.
    assert {row.name for row in rows if row.section == "finnhub"} >= {"finnhub_api_key", "finnhub_url"}
    assert Settings(finnhub_per_minute=7).get("finnhub_per_minute") == 7


def test_cli_bad_setting_exits_2_with_one_line(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "stockcache", "serve", "--port", "nope"],
        capture_output=True, text=True, env={"PATH": "/usr/bin:/bin", "STOCKCACHE_DATA_DIR": str(tmp_path)},
        timeout=30,
    )
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "--port" in lines[0] and "must be a number" in lines[0]


def test_every_setting_is_documented():
    doc = (Path(__file__).resolve().parents[2] / "docs" / "configuration.md").read_text()
    for row in settings_table():
        for var in row.env:
            assert f"`{var}`" in doc, f"{var} is missing from docs/configuration.md"


def test_configuration_doc_table_is_the_settings_table():
    doc = (Path(__file__).resolve().parents[2] / "docs" / "configuration.md").read_text()
    assert markdown_table() in doc, "regenerate with: python -m stockcache config --markdown"


def test_symbols_doc_table_is_the_venue_table_of_the_code():
    from stockcache.upstream.providers import venues_markdown

    doc = (Path(__file__).resolve().parents[2] / "docs" / "symbols.md").read_text()
    assert venues_markdown() in doc, "regenerate with: python -m stockcache venues"
