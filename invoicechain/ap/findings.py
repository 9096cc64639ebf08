"""What a rule check produces: a decision, reasons (code + one sentence), and the facts it
looked up. The facts are what the toolchain adapter sees in its prompt (see `context`)."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import date
from decimal import Decimal, InvalidOperation
from typing import Any

CENT = Decimal("0.01")


@dataclass
class RuleResult:
    """The rules' verdict on one step for one invoice."""

    decision: str
    reasons: list[dict] = field(default_factory=list)
    facts: dict[str, Any] = field(default_factory=dict)

    @property
    def codes(self) -> list[str]:
        return [r["code"] for r in self.reasons]

    def summary(self) -> dict:
        """`{"decision", "reasons": [codes]}`: the shape the adapter is trained to answer.

        Each code appears once (in the order first found): ten over-priced lines are one
        PRICE_OVER_TOLERANCE for the adapter; the per-line sentences stay in `reasons`.
        """
        return {"decision": str(self.decision), "reasons": list(dict.fromkeys(self.codes))}


def reason(code: str, message: str) -> dict:
    return {"code": str(code), "message": message}


def dec(value: Any) -> Decimal | None:
    """A Decimal from a schema amount string (or number); None when absent or unparsable."""
    if value is None or value == "":
        return None
    try:
        d = Decimal(str(value).strip())
    except (InvalidOperation, ValueError):
        return None
    return d if d.is_finite() else None


def money(value: Decimal | None) -> str | None:
    """Two-decimal string of an amount (what messages and contexts show)."""
    return None if value is None else str(value.quantize(CENT))


def qty(value: Decimal | None) -> str | None:
    """A quantity without trailing zeros ("3", "2.5")."""
    if value is None:
        return None
    text = format(value.normalize(), "f")
    return text


def parse_date(value: Any) -> date | None:
    """A date from ISO `YYYY-MM-DD`; None when absent or not a real calendar date."""
    if isinstance(value, date):
        return value
    if not value:
        return None
    try:
        return date.fromisoformat(str(value).strip()[:10])
    except ValueError:
        return None


_NON_ALNUM = re.compile(r"[^0-9A-Z]")


def normalize_ref(value: str | None) -> str:
    """A document reference (invoice or PO number) for comparison: upper case, letters and digits only."""
    return _NON_ALNUM.sub("", (value or "").upper())


def normalize_account(value: str | None) -> str:
    """A bank account (IBAN, account number) for comparison: no spaces or dashes, upper case."""
    return _NON_ALNUM.sub("", (value or "").upper())


def short(text: str | None, limit: int = 40) -> str | None:
    """Free text cut for a compact prompt."""
    if text is None:
        return None
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[: limit - 1] + "…"
