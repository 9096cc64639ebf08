"""docker-compose.yml publishes nothing beyond the host by default; the API and Flower need credentials."""

from __future__ import annotations

import re
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[3]


def test_published_ports_bind_to_localhost_by_default():
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    published = [(name, p) for name, svc in compose["services"].items() for p in svc.get("ports", [])]
    assert published, "the API, Flower and the UI publish ports"
    for name, port in published:
        host = re.sub(r"\$\{[A-Z_]+:-([^}]*)\}", r"\1", str(port)).rsplit(":", 2)[0]
        assert host == "127.0.0.1", f"{name} publishes {port} beyond the host"


def test_api_key_and_flower_auth_come_from_settings():
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    env = compose["x-app"]["environment"]
    assert {"INVOICECHAIN_API_KEY", "INVOICECHAIN_FLOWER_BASIC_AUTH", "INVOICECHAIN_DEV_ALLOW_NO_KEY"} <= set(env)
    assert env["INVOICECHAIN_DEV_ALLOW_NO_KEY"].endswith(":-0}")
    assert compose["services"]["flower"]["command"][:2] == ["invoicechain", "flower"]


def test_flower_refuses_to_start_without_basic_auth(monkeypatch):
    from typer.testing import CliRunner

    from invoicechain import config
    from workers.ops_cli import app

    monkeypatch.delenv("INVOICECHAIN_FLOWER_BASIC_AUTH", raising=False)
    monkeypatch.delenv("INVOICECHAIN_DEV_ALLOW_NO_KEY", raising=False)
    config.get_settings.cache_clear()
    result = CliRunner().invoke(app, ["flower"])
    assert result.exit_code == 2 and "FLOWER_BASIC_AUTH" in result.output
    monkeypatch.setenv("INVOICECHAIN_FLOWER_BASIC_AUTH", "admin:short")
    config.get_settings.cache_clear()
    result = CliRunner().invoke(app, ["flower"])
    assert result.exit_code == 2 and "8 characters" in result.output
    config.get_settings.cache_clear()
