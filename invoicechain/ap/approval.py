"""The run_approval step: may the invoice be paid without a person, and if not, who approves?

The policy (see `policy.yaml`) is read in layers: the packaged file, the file named by
`settings.approval_policy`, then the master data's values stored in `PolicySetting`
(`approval_policy` and `fx_to_eur`). Amounts are compared in EUR.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date
from decimal import Decimal
from functools import lru_cache
from pathlib import Path

from sqlmodel import Session, select

from invoicechain.ap.findings import RuleResult, dec, money, reason
from invoicechain.ap.vendors import resolve_vendor
from invoicechain.config import Settings
from invoicechain.db.tables import Invoice, PolicySetting, PurchaseOrder, done_decisions, utcnow
from invoicechain.decisions import Decision, Reason, Step

DEFAULT_POLICY = Path(__file__).with_name("policy.yaml")


@dataclass(frozen=True)
class Tier:
    up_to: Decimal | None
    approvers: int
    roles: tuple[str, ...]


@dataclass
class Policy:
    auto_approve_limit: Decimal
    tiers: list[Tier]
    reject_above: Decimal | None
    vendor_risk: dict[str, Decimal] = field(default_factory=dict)
    department_limits: dict[str, Decimal] = field(default_factory=dict)
    po_exceptions: frozenset[str] = frozenset({Decision.PARTIAL, Decision.NO_MATCH})
    no_po: str = "auto"
    exception_roles: tuple[str, ...] = ()
    fx_to_eur: dict[str, Decimal] = field(default_factory=dict)

    def to_eur(self, amount: Decimal, currency: str | None) -> tuple[Decimal | None, Decimal | None]:
        """(amount in EUR, rate used); (None, None) when there is no rate for the currency."""
        rate = self.fx_to_eur.get((currency or "EUR").upper())
        if rate is None:
            return None, None
        return (amount * rate).quantize(Decimal("0.01")), rate

    def tier_for(self, amount_eur: Decimal) -> Tier | None:
        for tier in self.tiers:
            if tier.up_to is None or amount_eur <= tier.up_to:
                return tier
        return None


@lru_cache(maxsize=8)
def _read_yaml(path: str, mtime: float) -> dict:
    import yaml

    with open(path, encoding="utf-8") as fh:
        data = yaml.safe_load(fh) or {}
    if not isinstance(data, dict):
        raise ValueError(f"approval policy {path} is not a mapping")
    return data


def _yaml(path: Path) -> dict:
    return _read_yaml(str(path), path.stat().st_mtime)


def _merge(base: dict, over: dict) -> dict:
    out = dict(base)
    for key, value in (over or {}).items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = value
    return out


def master_policy_values(policy: dict | None) -> dict:
    """Master-data approval values as policy keys: `auto_approve_limit_eur` → `auto_approve_limit`."""
    out = {}
    for key, value in (policy or {}).items():
        out[key[: -len("_eur")] if key.endswith("_eur") else key] = value
    return out


def store_master_policy(session: Session, master_data: dict) -> None:
    """Keep the master data's `approval_policy` and `fx_to_eur` so run_approval applies them."""
    for key in ("approval_policy", "fx_to_eur"):
        if key not in master_data:
            continue
        row = session.get(PolicySetting, key) or PolicySetting(key=key)
        row.value = dict(master_data[key] or {})
        row.updated_at = utcnow()
        session.add(row)
    session.flush()


def policy_document(session: Session | None, settings: Settings) -> dict:
    """The merged policy as plain data (packaged file, settings file, master data)."""
    doc = _yaml(DEFAULT_POLICY)
    if settings.approval_policy:
        doc = _merge(doc, _yaml(Path(settings.approval_policy)))
    if session is not None:
        stored = {row.key: row.value for row in session.exec(select(PolicySetting)).all()}
        if stored.get("approval_policy"):
            doc = _merge(doc, master_policy_values(stored["approval_policy"]))
        if stored.get("fx_to_eur"):
            doc = _merge(doc, {"fx_to_eur": stored["fx_to_eur"]})
    return doc


def load_policy(session: Session | None, settings: Settings) -> Policy:
    """The approval policy in force (see `policy_document`)."""
    doc = policy_document(session, settings)

    def amount(value) -> Decimal | None:
        return None if value is None else Decimal(str(value))

    tiers = [
        Tier(amount(t.get("up_to")), int(t.get("approvers", 1)), tuple(t.get("roles") or ()))
        for t in doc.get("tiers") or []
    ]
    return Policy(
        auto_approve_limit=amount(doc.get("auto_approve_limit", "0")),
        tiers=tiers,
        reject_above=amount(doc.get("reject_above")),
        vendor_risk={k: amount(v) for k, v in (doc.get("vendor_risk") or {}).items() if v is not None},
        department_limits={k: amount(v) for k, v in (doc.get("department_limits") or {}).items() if v is not None},
        po_exceptions=frozenset(doc.get("po_exceptions") or ()),
        no_po=str(doc.get("no_po", "auto")),
        exception_roles=tuple(doc.get("exception_roles") or ()),
        fx_to_eur={k.upper(): amount(v) for k, v in (doc.get("fx_to_eur") or {}).items()},
    )


def prior_decision(session: Session, invoice: Invoice, step: str) -> str | None:
    return done_decisions(session, invoice.id).get(step)


def run_approval(session: Session, invoice: Invoice, settings: Settings, *, today: date | None = None) -> RuleResult:
    """APPROVED, PENDING_APPROVAL (with the approvers needed) or REJECTED.

    Long because the policy reads top to bottom: amount, tiers, vendor risk, department limit and PO exception each add their reason in the order a reviewer reads them."""
    fields = invoice.fields or {}
    policy = load_policy(session, settings)
    vendor = resolve_vendor(session, fields.get("vendor_name")).vendor
    match = prior_decision(session, invoice, Step.MATCH_PO)
    total = dec(fields.get("total_amount")) or Decimal("0")
    currency = fields.get("currency") or "EUR"
    amount_eur, rate = policy.to_eur(total, currency)

    department = None
    po_number = (fields.get("po_number") or "").strip()
    if po_number:
        po = session.exec(select(PurchaseOrder).where(PurchaseOrder.po_number == po_number)).first()
        department = po.department if po else None
    department = department or (vendor.department if vendor else None)
    risk = vendor.risk if vendor else None
    risk_limit = policy.vendor_risk.get(risk) if risk else None
    dept_limit = policy.department_limits.get(department) if department else None

    facts = {
        "total": money(total),
        "currency": currency,
        "fx_rate": None if rate is None else str(rate),
        "amount_eur": money(amount_eur),
        "auto_approve_limit": money(policy.auto_approve_limit),
        "vendor_risk": risk,
        "risk_limit": money(risk_limit),
        "department": department,
        "department_limit": money(dept_limit),
        "match": match,
    }
    reasons: list[dict] = []
    approvers, roles = 0, policy.exception_roles
    shown = f"{money(total)} {currency}" + ("" if currency == "EUR" or amount_eur is None else f" = {money(amount_eur)} EUR")

    if amount_eur is None:
        approvers = 1
        reasons.append(
            reason(
                Reason.AMOUNT_ABOVE_THRESHOLD,
                f"There is no EUR rate for {currency}, so the total {money(total)} {currency} cannot be checked against the auto-approve limit: one approver is needed.",
            )
        )
    elif policy.reject_above is not None and amount_eur > policy.reject_above:
        reasons.append(
            reason(
                Reason.AMOUNT_ABOVE_THRESHOLD,
                f"The total {shown} is above the {money(policy.reject_above)} EUR that any approver may sign off.",
            )
        )
        facts.update(approvers_required=None, roles=[])
        return RuleResult(Decision.REJECTED, reasons, facts)
    else:
        if amount_eur > policy.auto_approve_limit:
            tier = policy.tier_for(amount_eur)
            if tier is None:
                reasons.append(
                    reason(Reason.AMOUNT_ABOVE_THRESHOLD, f"The total {shown} is above every approval tier of the policy.")
                )
                facts.update(approvers_required=None, roles=[])
                return RuleResult(Decision.REJECTED, reasons, facts)
            approvers, roles = tier.approvers, tier.roles
            reasons.append(
                reason(
                    Reason.AMOUNT_ABOVE_THRESHOLD,
                    f"The total {shown} is above the auto-approve limit of {money(policy.auto_approve_limit)} EUR: "
                    f"{tier.approvers} approver(s) with role {' or '.join(tier.roles)} needed.",
                )
            )
        if risk_limit is not None and amount_eur > risk_limit:
            approvers = max(approvers, 1)
            reasons.append(
                reason(
                    Reason.VENDOR_HIGH_RISK,
                    f"The vendor {vendor.name} is {risk} risk: invoices over {money(risk_limit)} EUR need an approver (this one is {money(amount_eur)} EUR).",
                )
            )
        if dept_limit is not None and amount_eur > dept_limit:
            approvers = max(approvers, 1)
            reasons.append(
                reason(
                    Reason.DEPARTMENT_LIMIT,
                    f"Department {department} approves automatically up to {money(dept_limit)} EUR; this invoice is {money(amount_eur)} EUR.",
                )
            )
    if match in policy.po_exceptions or (match == Decision.NO_PO and policy.no_po == "person"):
        approvers = max(approvers, 1)
        reasons.append(reason(Reason.PO_EXCEPTION, f"The PO match ended {match}: a person must approve the exception."))

    facts.update(approvers_required=approvers, roles=list(roles) if approvers else [])
    if approvers:
        return RuleResult(Decision.PENDING_APPROVAL, reasons, facts)
    limit = min(
        [policy.auto_approve_limit] + [x for x in (risk_limit, dept_limit) if x is not None]
    )
    via = {Decision.MATCHED: "a matched PO", Decision.NO_PO: "no PO"}.get(match, f"PO match {match}" if match else "no PO match step")
    reasons.append(
        reason(
            Reason.AUTO_APPROVED,
            f"The total {shown} is within the auto-approve limit of {money(limit)} EUR, with {via}.",
        )
    )
    return RuleResult(Decision.APPROVED, reasons, facts)


def approval_requirement(session: Session, invoice: Invoice, settings: Settings) -> tuple[int, tuple[str, ...]]:
    """How many distinct approvers the invoice needs, and which roles may approve it."""
    result = run_approval(session, invoice, settings)
    required = result.facts.get("approvers_required") or 0
    return int(required), tuple(result.facts.get("roles") or ())
