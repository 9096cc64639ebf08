"""Talking to the API from the command line: one-line errors that say how to fix them,
non-zero exit codes, and the readable view of an invoice."""

from __future__ import annotations

import json
from typing import Any

import typer

from invoicechain.config import get_settings
from invoicechain.decisions import WAITING_STATUSES, TERMINAL_STATUSES

#: Exit codes of the API commands.
EXIT_FAILED = 1  # the API answered with an error, or the invoice ended failed
EXIT_UNREACHABLE = 3  # no API at the configured URL
EXIT_TIMEOUT = 4  # `--wait` gave up


class ApiUnavailable(Exception):
    """The API cannot be reached; the message is the one line to show."""


def api_url() -> str:
    return get_settings().api_url.rstrip("/")


def headers() -> dict[str, str]:
    token = get_settings().api_token
    return {"Authorization": f"Bearer {token}"} if token else {}


def request(method: str, path: str, **kwargs: Any):
    """One API request; a connection failure becomes `ApiUnavailable` with the fix in one line."""
    import httpx

    url = api_url() + path
    try:
        return httpx.request(method, url, headers=headers(), timeout=kwargs.pop("timeout", 30), **kwargs)
    except (httpx.ConnectError, httpx.ConnectTimeout, httpx.UnsupportedProtocol, httpx.InvalidURL) as exc:
        raise ApiUnavailable(
            f"cannot reach the API at {api_url()}: is `invoicechain api` running? "
            f"set INVOICECHAIN_API_URL to its address ({type(exc).__name__})"
        ) from None
    except httpx.TimeoutException:
        raise ApiUnavailable(f"the API at {api_url()} did not answer in time; try again, or check its logs") from None


def fail(message: str, code: int = EXIT_FAILED) -> None:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(code)


def error_text(resp) -> str:
    try:
        detail = resp.json().get("detail")
    except (ValueError, AttributeError):
        detail = None
    if isinstance(detail, (dict, list)):
        detail = json.dumps(detail, ensure_ascii=False)
    return f"{resp.status_code}: {str(detail or resp.text)[:300]}"


def settled(status: str) -> bool:
    """True when the invoice's chain has stopped (final, or waiting for a person)."""
    return status in TERMINAL_STATUSES or status in WAITING_STATUSES


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, (dict, list)):
        return json.dumps(value, ensure_ascii=False)
    return str(value)


def invoice_view(body: dict) -> str:
    """An invoice as a person reads it: a header, a table of fields, a table of steps."""
    from rich.console import Console
    from rich.table import Table

    console = Console(width=120, record=True, file=open("/dev/null", "w"), force_terminal=False, color_system=None)
    console.print(f"invoice {body['id']}  status {body['status']}" + (f"  error: {body['error']}" if body.get("error") else ""))
    fields = body.get("fields") or {}
    confidence = body.get("confidence") or {}
    if fields:
        table = Table("field", "value", "confidence", title="fields", title_justify="left")
        for name, value in fields.items():
            if name == "line_items":
                value = f"{len(value or [])} line(s)"
            conf = confidence.get(name)
            table.add_row(name, _cell(value), "" if conf is None else f"{conf:.2f}")
        console.print(table)
    steps = body.get("steps") or []
    if steps:
        table = Table("step", "status", "decision", "reasons", title="steps", title_justify="left")
        for s in steps:
            reasons = "; ".join(r.get("message") or r.get("code", "") if isinstance(r, dict) else str(r) for r in s.get("reasons") or [])
            table.add_row(s["step"], s["status"], _cell(s.get("decision")), reasons or "-")
        console.print(table)
    return console.export_text()
