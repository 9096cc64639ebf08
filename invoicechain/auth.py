"""API keys and scopes: who may call which route.

A key is `ick_<prefix>_<secret>`; only the SHA-256 of the whole key is stored (keys are
random, 192 bits, so a slow password hash buys nothing). The prefix finds the row; the
hash comparison is constant-time. The key's owner and role are the caller's identity:
approvals, rejections and corrections are recorded under them, never under a name the
request body gives.

A process reuses a key it verified for `settings.api_key_cache_s` (1 s) instead of reading
its row on every request; the cache holds hashes, never keys. Revoking a key in a process
drops it from that process's cache at once; other processes refuse it once their entry
expires.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import threading
import time
from dataclasses import dataclass
from enum import StrEnum

from sqlmodel import Session, select

from invoicechain.config import Settings, get_settings
from invoicechain.db.tables import ApiKey, utcnow

KEY_PREFIX = "ick"


class Scope(StrEnum):
    """What a key may do. `admin` may do everything."""

    SUBMIT = "submit"  # send invoices
    READ = "read"  # read invoices, vendors, jobs, metrics
    REVIEW = "review"  # correct fields, override decisions, reject from review
    APPROVE = "approve"  # approve or reject pending approvals
    TRAIN = "train"  # start and cancel training jobs
    ADMIN = "admin"  # keys, dead letters, everything else


ALL_SCOPES = tuple(Scope)


class KeyError_(ValueError):
    """A key request the rules refuse (unknown scope, empty owner)."""


@dataclass(frozen=True)
class Identity:
    """The caller, as its key says."""

    key_id: str
    owner: str
    role: str | None
    scopes: frozenset[str]

    def allows(self, scope: Scope | str) -> bool:
        return Scope.ADMIN in self.scopes or str(scope) in self.scopes


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


def parse_scopes(values) -> list[str]:
    """Scope names from a list or a comma-separated string; unknown names are refused."""
    if isinstance(values, str):
        values = values.split(",")
    names = [str(v).strip().lower() for v in values if str(v).strip()]
    unknown = [n for n in names if n not in {s.value for s in Scope}]
    if unknown:
        raise KeyError_(f"Unknown scope(s): {', '.join(unknown)}; one of {', '.join(s.value for s in Scope)}.")
    if not names:
        raise KeyError_("A key needs at least one scope.")
    return sorted(set(names), key=[s.value for s in Scope].index)


def create_key(session: Session, owner: str, scopes, role: str | None = None) -> tuple[ApiKey, str]:
    """Store a new key; returns the row and the key itself (shown once, never stored)."""
    owner = (owner or "").strip()
    if not owner or len(owner) > 200:
        raise KeyError_("A key needs an owner name of 1 to 200 characters.")
    names = parse_scopes(scopes)
    prefix = secrets.token_hex(6)
    key = f"{KEY_PREFIX}_{prefix}_{secrets.token_urlsafe(24)}"
    row = ApiKey(owner=owner, role=(role or None), scopes=names, prefix=prefix, key_hash=hash_key(key))
    session.add(row)
    session.flush()
    return row, key


def list_keys(session: Session, include_revoked: bool = False) -> list[ApiKey]:
    query = select(ApiKey).order_by(ApiKey.created_at)
    if not include_revoked:
        query = query.where(ApiKey.revoked_at.is_(None))
    return list(session.exec(query).all())


def revoke_key(session: Session, key_id_or_prefix: str) -> ApiKey | None:
    """Revoke by id or prefix; returns the row, or None when there is no such key."""
    row = session.get(ApiKey, key_id_or_prefix) or session.exec(
        select(ApiKey).where(ApiKey.prefix == key_id_or_prefix)
    ).first()
    if row is not None and row.revoked_at is None:
        row.revoked_at = utcnow()
        session.add(row)
        session.flush()
    if row is not None:
        forget_key(row.key_hash)
    return row


# --- verified keys, reused for a moment ---------------------------------------------------

#: sha256 of a key -> (monotonic expiry, identity); entries are never made for refused keys.
_verified: dict[str, tuple[float, Identity]] = {}
_verified_lock = threading.Lock()
#: Entries kept at most (keys in use at once are few; an overflow starts the cache afresh).
_VERIFIED_MAX = 1024


def forget_key(key_hash: str | None = None) -> None:
    """Drop one key's cached identity (by its hash), or every one."""
    with _verified_lock:
        if key_hash is None:
            _verified.clear()
        else:
            _verified.pop(key_hash, None)


def cached_identity(key: str, settings: Settings | None = None) -> Identity | None:
    """The identity of a key verified less than `api_key_cache_s` ago in this process, else None
    (then `authenticate` asks the database). No database or network access."""
    settings = settings or get_settings()
    if not key or len(key) > 200 or settings.api_key_cache_s <= 0:
        return None
    found = _verified.get(hash_key(key))
    if found is None or found[0] < time.monotonic():
        return None
    return found[1]


def _remember(key_hash: str, identity: Identity, settings: Settings) -> None:
    if settings.api_key_cache_s <= 0:
        return
    with _verified_lock:
        if len(_verified) >= _VERIFIED_MAX:
            _verified.clear()
        _verified[key_hash] = (time.monotonic() + settings.api_key_cache_s, identity)


def bootstrap_identity(key: str, settings: Settings) -> Identity | None:
    """The key configured in settings (`INVOICECHAIN_API_KEY`) is an admin key named `admin`."""
    configured = settings.api_token
    if configured and hmac.compare_digest(hash_key(key), hash_key(configured)):
        return Identity(key_id="settings", owner=settings.api_key_owner, role=settings.api_key_role,
                        scopes=frozenset(s.value for s in Scope))
    return None


def authenticate(session: Session, key: str, settings: Settings | None = None) -> Identity | None:
    """The identity of a presented key, or None when it is unknown, malformed or revoked."""
    settings = settings or get_settings()
    if not key or len(key) > 200:
        return None
    found = bootstrap_identity(key, settings)
    if found is not None:
        return found
    parts = key.split("_")
    if len(parts) < 3 or parts[0] != KEY_PREFIX:
        return None
    digest = hash_key(key)
    row = session.exec(select(ApiKey).where(ApiKey.prefix == parts[1])).first()
    if row is None or row.revoked_at is not None or not hmac.compare_digest(row.key_hash, digest):
        forget_key(digest)
        return None
    identity = Identity(key_id=row.id, owner=row.owner, role=row.role, scopes=frozenset(row.scopes or ()))
    _remember(digest, identity, settings)
    return identity


def issue_test_admin_key(settings: Settings, owner: str = "test-admin", role: str | None = "controller") -> str:
    """A fresh admin key in the database of `settings` (for tests and first set-up)."""
    from invoicechain.db.session import session_scope

    with session_scope(settings) as session:
        _, key = create_key(session, owner, [Scope.ADMIN], role=role)
    return key
