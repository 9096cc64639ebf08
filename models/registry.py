"""Adapter registry: versioned LoRA adapters in the AdapterVersion / PromotionDecision tables.

A version moves candidate -> active -> retired. Registering copies the adapter's files
into the model store (`<store>/adapters/<name>/v<N>`), so a version stays loadable after
its training folder is gone. Promotion is gated: an `extract` version is compared with the
active one on the fixed evaluation set (`training.evalset`: the same set hash, the same
documents) and activated only if it beats it by `promotion_margin` with no field dropping
more than `promotion_field_tolerance`; otherwise it stays a candidate. Every decision is
recorded with its comparison table and who asked (forced promotions and rollbacks too).
Rollback re-activates the version that was active before the current one.

Adapters shipped with the code (`adapters/<name>/`: adapter_config.json,
adapter_model.safetensors, metrics.json) are registered as version 1, active, for any
name that has no version yet (`seed_defaults`).
"""

from __future__ import annotations

import filecmp
import json
import shutil
import uuid
from pathlib import Path
from typing import TYPE_CHECKING

from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, func, select

from invoicechain.db.tables import AdapterVersion, PromotionDecision
from invoicechain.clock import utcnow
from invoicechain.enums import AdapterName, AdapterStatus

if TYPE_CHECKING:  # pragma: no cover
    from invoicechain.config import Settings

CANDIDATE, ACTIVE, RETIRED = AdapterStatus.CANDIDATE, AdapterStatus.ACTIVE, AdapterStatus.RETIRED
DEFAULT_METRIC = "field_exact_match"
#: Key of the evaluation-set scores in a version's metrics (training.evalset.score_adapter).
EVAL_SET_KEY = "eval_set"
#: Files that make an adapter folder (anything else in the folder is copied along).
ADAPTER_FILES = ("adapter_config.json", "adapter_model.safetensors")


class RegistryError(ValueError):
    """A registry operation that cannot be done (unknown version, nothing to roll back to)."""




def _settings(settings: Settings | None) -> Settings:
    from invoicechain.config import get_settings

    return settings or get_settings()


def _read_json(path: Path) -> dict:
    if not path.is_file():
        return {}
    data = json.loads(path.read_text())
    return data if isinstance(data, dict) else {}


def is_adapter_dir(path: Path) -> bool:
    return all((Path(path) / f).is_file() for f in ADAPTER_FILES)


def metric_value(metrics: dict | None, metric: str) -> float | None:
    """A metric from a metrics dict; dotted names reach into nested dicts ("eval.f1")."""
    node = metrics or {}
    for part in metric.split("."):
        if not isinstance(node, dict) or part not in node:
            return None
        node = node[part]
    try:
        return float(node)
    except (TypeError, ValueError):
        return None


# --- queries -----------------------------------------------------------------------------


def list_versions(session: Session, name: str | None = None) -> list[AdapterVersion]:
    """All versions (of one name, or of every name), by name then version."""
    q = select(AdapterVersion)
    if name is not None:
        q = q.where(AdapterVersion.name == name)
    return list(session.exec(q.order_by(AdapterVersion.name, AdapterVersion.version)))


def get_version(session: Session, name: str, version: int) -> AdapterVersion:
    row = session.exec(
        select(AdapterVersion).where(AdapterVersion.name == name, AdapterVersion.version == int(version))
    ).first()
    if row is None:
        raise RegistryError(f"adapter {name!r} has no version {version}")
    return row


def active_version(session: Session, name: str) -> AdapterVersion | None:
    """The active version of an adapter, or None."""
    return session.exec(
        select(AdapterVersion).where(AdapterVersion.name == name, AdapterVersion.status == ACTIVE)
    ).first()


def active_versions(session: Session) -> dict[str, AdapterVersion]:
    """Every adapter name's active version."""
    rows = session.exec(select(AdapterVersion).where(AdapterVersion.status == ACTIVE))
    return {row.name: row for row in rows}


# --- changes -----------------------------------------------------------------------------


def register_version(
    session: Session,
    name: str,
    path: Path | str,
    base_fingerprint: str,
    dataset_fingerprint: str | None,
    metrics: dict | None,
    params: dict | None,
    training_job_id: str | None = None,
    *,
    status: str = CANDIDATE,
    settings: Settings | None = None,
) -> AdapterVersion:
    """Record a new version of `name` (next number) and copy its files into the store."""
    src = Path(path)
    if not is_adapter_dir(src):
        raise RegistryError(f"{src} is not an adapter folder (needs {', '.join(ADAPTER_FILES)})")
    store = _settings(settings).resolved_model_store / "adapters" / name
    for _ in range(5):  # concurrent registrations of one name race for the next number
        latest = session.exec(select(func.max(AdapterVersion.version)).where(AdapterVersion.name == name)).one()
        version = (latest or 0) + 1
        dest = store / f"v{version}"
        row = AdapterVersion(
            name=name, version=version, status=status, path=str(dest.resolve()),
            base_fingerprint=base_fingerprint, dataset_fingerprint=dataset_fingerprint,
            metrics=metrics or {}, params=params or {}, training_job_id=training_job_id,
            promoted_at=utcnow() if status == ACTIVE else None,
        )
        try:
            with session.begin_nested():
                session.add(row)
                session.flush()
        except IntegrityError:
            continue
        break
    else:
        raise RegistryError(f"could not allocate a version number for {name!r}")
    _install(src, dest)
    return row


def _same_adapter(a: Path, b: Path) -> bool:
    return all((b / f).is_file() and filecmp.cmp(a / f, b / f, shallow=False) for f in ADAPTER_FILES)


def _install(src: Path, dest: Path) -> None:
    """Copy an adapter folder to `dest` unless an identical adapter is already there.

    Several processes seed the same shipped adapter at start-up (every worker does): the
    first one's copy is kept and read by the others, never replaced under them. Each
    writer stages under its own name, so concurrent writers do not mix their files.
    """
    if dest.is_dir() and _same_adapter(src, dest):
        return
    staging = dest.with_name(f".{dest.name}.{uuid.uuid4().hex}.tmp")
    shutil.copytree(src, staging, ignore=shutil.ignore_patterns("checkpoint-*", "optimizer.pt", "*.lock"))
    if dest.is_dir() and _same_adapter(src, dest):  # another process installed it meanwhile
        shutil.rmtree(staging, ignore_errors=True)
        return
    shutil.rmtree(dest, ignore_errors=True)
    try:
        staging.rename(dest)
    except OSError:  # another process renamed its copy into place first
        shutil.rmtree(staging, ignore_errors=True)


def _eval_block(metrics: dict | None) -> dict | None:
    block = (metrics or {}).get(EVAL_SET_KEY)
    return block if isinstance(block, dict) and isinstance(block.get("per_document"), dict) else None


def compare_on_eval_set(candidate: dict | None, active: dict | None, margin: float, tolerance: float) -> dict:
    """The gate: two versions' evaluation-set scores on the same set and the same documents.

    Passes when the candidate's field exact match beats the active one's by at least
    `margin` and no field drops by more than `tolerance`. Returns the comparison table
    (what the API, the UI and `invoicechain models list` show) with `passes` and `reason`.
    """
    from training.evalset import summarise
    from training.evaluate import EVAL_FIELDS

    cand, act = _eval_block(candidate), _eval_block(active)
    out: dict = {"margin": margin, "field_tolerance": tolerance, "passes": False}
    if cand is None:
        return {**out, "reason": "the candidate has no score on the evaluation set"}
    out["set"] = cand.get("set")
    if act is None:
        return {**out, "reason": "the active version has no score on the evaluation set (score it first)"}
    c_sha, a_sha = (cand.get("set") or {}).get("sha256"), (act.get("set") or {}).get("sha256")
    if not c_sha or c_sha != a_sha:
        return {**out, "reason": f"scored on different evaluation sets ({str(c_sha)[:12]} vs {str(a_sha)[:12]})"}
    ids = [i for i in cand["per_document"] if i in act["per_document"]]
    if not ids:
        return {**out, "reason": "no document scored for both versions"}
    c, a = summarise(cand["per_document"], ids), summarise(act["per_document"], ids)
    delta = c["field_exact_match"] - a["field_exact_match"]
    fields = {f: {"candidate": round(c["per_field"][f], 4), "active": round(a["per_field"][f], 4),
                  "delta": round(c["per_field"][f] - a["per_field"][f], 4)} for f in EVAL_FIELDS}
    regressions = {f: v["delta"] for f, v in fields.items() if -v["delta"] > tolerance + 1e-9}
    out.update(documents=len(ids), candidate=round(c["field_exact_match"], 4),
               active=round(a["field_exact_match"], 4), delta=round(delta, 4), fields=fields,
               regressions=regressions)
    if delta < margin - 1e-9:
        out["reason"] = (f"field exact match {c['field_exact_match']:.4f} vs active {a['field_exact_match']:.4f} "
                         f"on {len(ids)} documents: {delta:+.4f} does not beat the margin {margin:.4f}")
    elif regressions:
        worst = ", ".join(f"{f} {d:+.3f}" for f, d in sorted(regressions.items(), key=lambda kv: kv[1])[:4])
        out["reason"] = f"fields regress by more than {tolerance:.3f}: {worst}"
    else:
        out["passes"] = True
        out["reason"] = (f"field exact match {c['field_exact_match']:.4f} vs active {a['field_exact_match']:.4f} "
                         f"on {len(ids)} documents ({delta:+.4f} >= margin {margin:.4f}), no field regresses "
                         f"by more than {tolerance:.3f}")
    return out


def promote(
    session: Session, name: str, version: int, force: bool = False, metric: str = DEFAULT_METRIC,
    *, settings: Settings | None = None, actor: str | None = None,
) -> PromotionDecision:
    """Activate a version if it passes the gate (or when forced); record the decision and why.

    Versions scored on the evaluation set (`metrics["eval_set"]`, every `extract` version)
    are compared there (`compare_on_eval_set`, margin and tolerance from settings). Other
    adapters compare `metric` and must beat the active value by the margin. An active
    version without a score never lets an unforced candidate through.
    """
    settings = _settings(settings)
    margin, tolerance = settings.promotion_margin, settings.promotion_field_tolerance
    candidate = get_version(session, name, version)
    active = active_version(session, name)
    cand_value = metric_value(candidate.metrics, metric)
    act_value = metric_value(active.metrics, metric) if active else None
    comparison = None
    gated_on_set = _eval_block(candidate.metrics) is not None or (active is not None and _eval_block(active.metrics))
    if active is not None and active.id != candidate.id and (gated_on_set or name == AdapterName.EXTRACT):
        comparison = compare_on_eval_set(candidate.metrics, active.metrics, margin, tolerance)
        if "candidate" in comparison:
            metric, cand_value, act_value = "eval_set.field_exact_match", comparison["candidate"], comparison["active"]
    if active is not None and active.id == candidate.id:
        promoted, reason = False, f"version {version} is already active"
    elif force:
        promoted, reason = True, "forced" + (f" (gate: {comparison['reason']})" if comparison else "")
    elif active is None:
        promoted, reason = True, "no active version"
    elif comparison is not None:
        promoted, reason = bool(comparison["passes"]), comparison["reason"]
    elif cand_value is None:
        promoted, reason = False, f"candidate has no {metric}"
    elif act_value is None:
        promoted, reason = False, f"active version has no {metric}: promote with force after checking it"
    elif cand_value >= act_value + margin:
        promoted, reason = True, f"{metric} {cand_value:.4f} >= {act_value:.4f} + margin {margin:.4f}"
    else:
        promoted, reason = False, f"{metric} {cand_value:.4f} does not beat active {act_value:.4f} by {margin:.4f}"
    if promoted:
        if active is not None:
            active.status = RETIRED
            session.add(active)
        candidate.status = ACTIVE
        candidate.promoted_at = utcnow()
        session.add(candidate)
    decision = PromotionDecision(
        adapter=name, candidate_version=candidate.version,
        active_version=active.version if active else None, metric=metric[:60],
        candidate_metric=cand_value, active_metric=act_value,
        promoted=promoted, forced=force, reason=reason[:300], comparison=comparison,
        actor=(actor or None) and actor[:200],
    )
    session.add(decision)
    session.flush()
    return decision


def decisions(session: Session, name: str | None = None, limit: int = 50) -> list[PromotionDecision]:
    """Promotion decisions (and rollbacks), newest first."""
    q = select(PromotionDecision)
    if name is not None:
        q = q.where(PromotionDecision.adapter == name)
    return list(session.exec(q.order_by(PromotionDecision.at.desc(), PromotionDecision.id.desc()).limit(limit)))


def set_eval_scores(session: Session, name: str, version: int, block: dict) -> AdapterVersion:
    """Store a version's evaluation-set scores (`training.evalset.score_adapter`'s block)."""
    row = get_version(session, name, version)
    row.metrics = {**(row.metrics or {}), EVAL_SET_KEY: block,
                   "eval_set_field_exact_match": block.get("field_exact_match")}
    session.add(row)
    session.flush()
    return row


def eval_summary(metrics: dict | None) -> dict | None:
    """A version's evaluation-set figures without the per-document detail (for listings)."""
    block = _eval_block(metrics)
    if block is None:
        return None
    return {k: v for k, v in block.items() if k != "per_document"}


def rollback(session: Session, name: str, actor: str | None = None) -> AdapterVersion:
    """Re-activate the version that was active before the current one; the current is retired."""
    current = active_version(session, name)
    if current is None:
        raise RegistryError(f"adapter {name!r} has no active version")
    q = select(AdapterVersion).where(AdapterVersion.name == name, AdapterVersion.status == RETIRED,
                                     AdapterVersion.promoted_at.is_not(None))
    if current.promoted_at is not None:
        q = q.where(AdapterVersion.promoted_at < current.promoted_at)
    previous = session.exec(q.order_by(AdapterVersion.promoted_at.desc())).first()
    if previous is None:
        raise RegistryError(f"adapter {name!r} has no earlier active version to roll back to")
    current.status = RETIRED
    previous.status = ACTIVE  # keeps its promotion time: a second rollback goes further back
    session.add_all([current, previous])
    session.add(PromotionDecision(
        adapter=name, candidate_version=previous.version, active_version=current.version,
        metric="rollback", promoted=True, forced=True, reason=f"rollback from version {current.version}",
        actor=(actor or None) and actor[:200],
    ))
    session.flush()
    return previous


def seed_defaults(
    session: Session, adapters_dir: Path | None = None, settings: Settings | None = None
) -> list[AdapterVersion]:
    """Register the shipped adapters as version 1, active, for names with no version yet."""
    from models.store import DEFAULT_BASE_FINGERPRINT

    settings = _settings(settings)
    root = Path(adapters_dir or settings.adapters_dir)
    if not root.is_dir():
        return []
    seeded = []
    for folder in sorted(p for p in root.iterdir() if p.is_dir() and is_adapter_dir(p)):
        info = _read_json(folder / "metrics.json")
        existing = session.exec(select(AdapterVersion).where(AdapterVersion.name == folder.name)
                                .order_by(AdapterVersion.version)).first()
        if existing is not None:
            # A registry seeded before the shipped folder knew its evaluation-set scores learns them.
            shipped_block = _eval_block(info)
            if (shipped_block is not None and _eval_block(existing.metrics) is None
                    and (existing.params or {}).get("source") == "shipped"
                    and _same_adapter(folder, Path(existing.path))):
                set_eval_scores(session, existing.name, existing.version, shipped_block)
            continue
        metrics = info.get("metrics", info)
        # Training histories are long lists; the registry keeps the summary figures.
        metrics = {k: v for k, v in metrics.items()
                   if k not in ("base_fingerprint", "dataset_fingerprint", "params", "base_dir")
                   and not isinstance(v, list)}
        if _eval_block(metrics) is not None:
            metrics["eval_set_field_exact_match"] = metrics[EVAL_SET_KEY].get("field_exact_match")
        params = info.get("params") or _read_json(folder / "params.json") or {}
        row = register_version(
            session, folder.name, folder,
            base_fingerprint=info.get("base_fingerprint") or DEFAULT_BASE_FINGERPRINT,
            dataset_fingerprint=info.get("dataset_fingerprint"),
            metrics=metrics, params={**params, "source": "shipped"},
            status=ACTIVE, settings=settings,
        )
        seeded.append(row)
    return seeded
