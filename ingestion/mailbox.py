"""Mailbox ingestion over IMAP (imap-tools): every PDF / image / e-invoice XML attachment of a
mail, and of mails attached to it, becomes an invoice with the mail's message id, sender,
subject and received time; the mail is then flagged or moved. A mail with nothing usable,
a mail bomb, an oversized or malformed mail goes to the quarantine folder, its reason in the
ledger.

The processed-message ledger (table `mailmessage`, unique on mailbox + message key) is claimed
before a mail is read: two pollers never take the same mail, and a mail seen again after a
restart (its move was lost with the poller) is only moved, never read twice. A claim left by
a poller that died is taken over after `mail_claim_lease_s`; taking it again is harmless,
since documents are unique by content hash.
"""

from __future__ import annotations

import functools
import logging
import os
import socket
from dataclasses import dataclass, field
from datetime import timedelta, timezone
from typing import Any

from sqlalchemy import delete, update
from sqlalchemy.exc import DBAPIError, IntegrityError
from sqlmodel import select

from ingestion import backpressure
from ingestion.intake import Enqueue, take_document
from ingestion.mail import MailContent, message_key, read_mail
from invoicechain.config import Settings, get_settings
from invoicechain.db.session import session_scope
from invoicechain.db.tables import MailMessage
from invoicechain.clock import utcnow
from invoicechain.enums import MailStatus

log = logging.getLogger(__name__)

#: The keyword set on a processed mail when no done folder is configured.
PROCESSED_KEYWORD = "$Processed"
#: Mails fetched with their bodies per IMAP round trip.
FETCH_CHUNK = 25
#: Mail headers fetched per IMAP round trip while looking for mails to take.
HEADER_CHUNK = 200


@dataclass
class MailboxConfig:
    name: str
    host: str
    user: str
    password: str
    port: int = 993
    ssl: bool = True
    starttls: bool = False
    folder: str = "INBOX"
    done_folder: str | None = None
    quarantine_folder: str = "Quarantine"
    timeout_s: float = 60.0

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> MailboxConfig:
        known = {k: v for k, v in data.items() if k in cls.__dataclass_fields__}
        known.setdefault("name", f"{data.get('user')}@{data.get('host')}/{data.get('folder', 'INBOX')}")
        return cls(**known)


def configured_mailboxes(settings: Settings | None = None) -> list[MailboxConfig]:
    settings = settings or get_settings()
    return [MailboxConfig.from_dict(m) for m in settings.mailboxes]


@dataclass
class PollReport:
    mailbox: str
    paused: bool = False
    mails: int = 0
    taken: int = 0  # mails whose documents were stored
    invoices: int = 0  # new invoices
    duplicates: int = 0  # documents that were already an invoice
    quarantined: int = 0
    finished_again: int = 0  # mails already in the ledger, moved / flagged again
    busy: int = 0  # mails another poller holds
    reasons: list[str] = field(default_factory=list)


def _connect(cfg: MailboxConfig):
    from imap_tools import MailBox, MailBoxStartTls, MailBoxUnencrypted

    if cfg.ssl:
        box = MailBox(cfg.host, cfg.port, timeout=cfg.timeout_s)
    elif cfg.starttls:
        box = MailBoxStartTls(cfg.host, cfg.port, timeout=cfg.timeout_s)
    else:
        box = MailBoxUnencrypted(cfg.host, cfg.port, timeout=cfg.timeout_s)
    box.email_message_class = _raw_message_class()
    return box.login(cfg.user, cfg.password, initial_folder=cfg.folder)


@functools.lru_cache(maxsize=1)
def _raw_message_class():
    from imap_tools import MailMessage

    class RawMessage(MailMessage):
        """imap-tools' message that keeps its raw bytes (the ledger hashes them)."""

        def __init__(self, fetch_data: list) -> None:
            raw, _, _ = self._get_message_data_parts(fetch_data)
            super().__init__(fetch_data)
            self.raw = raw

    return RawMessage


def _ensure_folder(box, name: str) -> None:
    from imap_tools.errors import MailboxFolderCreateError

    if not box.folder.exists(name):
        try:
            box.folder.create(name)
        except MailboxFolderCreateError:
            if not box.folder.exists(name):  # not a poller beside this one creating it first
                raise


def _poller_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"[:100]




# --- the ledger --------------------------------------------------------------------------------


def claim(mailbox: str, key: str, uid: str | None, settings: Settings) -> tuple[str, MailMessage | None]:
    """('new' | 'taken_over', row) to process the mail; ('finished', row) when the ledger already
    holds it done or quarantined; ('busy', None) when another live poller holds it."""
    me = _poller_id()
    try:
        with session_scope(settings) as session:
            row = MailMessage(mailbox=mailbox, message_key=key, uid=uid, claimed_by=me)
            session.add(row)
            session.flush()
            return "new", row
    except IntegrityError:
        pass
    with session_scope(settings) as session:
        row = session.exec(select(MailMessage).where(MailMessage.mailbox == mailbox, MailMessage.message_key == key)).one()
        if row.status in (MailStatus.DONE, MailStatus.QUARANTINED):
            return "finished", row
        stale = utcnow() - timedelta(seconds=settings.mail_claim_lease_s)
        claimed_at = row.claimed_at if row.claimed_at.tzinfo else row.claimed_at.replace(tzinfo=timezone.utc)
        if claimed_at > stale:
            return "busy", None
        # Take over a dead poller's claim: only one of several pollers wins the update.
        won = session.execute(
            update(MailMessage)
            .where(MailMessage.id == row.id, MailMessage.status == MailStatus.CLAIMED, MailMessage.claimed_at == row.claimed_at)
            .values(claimed_by=me, claimed_at=utcnow(), uid=uid)
        ).rowcount
        return ("taken_over", row) if won == 1 else ("busy", None)


def claim_many(mailbox: str, items: list[tuple[str, str | None]], settings: Settings) -> dict[str, tuple[str, MailMessage | None]]:
    """`claim` for many mails at once (one INSERT ... ON CONFLICT DO NOTHING and one SELECT):
    message key -> (state, row). A key twice in `items` is claimed for its first mail."""
    from sqlalchemy.dialects.postgresql import insert as pg_insert
    from sqlalchemy.dialects.sqlite import insert as sqlite_insert

    first: dict[str, str | None] = {}
    for key, uid in items:
        first.setdefault(key, uid)
    if not first:
        return {}
    table, me, now = MailMessage.__table__, _poller_id(), utcnow()
    out: dict[str, tuple[str, MailMessage | None]] = {}
    with session_scope(settings) as session:
        insert = pg_insert if session.get_bind().dialect.name == "postgresql" else sqlite_insert
        stmt = (
            insert(table)
            .values([{"mailbox": mailbox, "message_key": k, "uid": u, "status": MailStatus.CLAIMED, "claimed_by": me,
                      "claimed_at": now, "invoice_ids": []} for k, u in first.items()])
            .on_conflict_do_nothing(index_elements=["mailbox", "message_key"])
            .returning(table.c.message_key)
        )
        new = {row[0] for row in session.execute(stmt)}
        rows = session.exec(select(MailMessage).where(MailMessage.mailbox == mailbox,
                                                      MailMessage.message_key.in_(list(first)))).all()
    for row in rows:
        if row.message_key in new:
            out[row.message_key] = ("new", row)
        elif row.status in (MailStatus.DONE, MailStatus.QUARANTINED):
            out[row.message_key] = ("finished", row)
    for key in first:
        if key not in out:  # claimed by someone: busy, or a dead poller's to take over
            out[key] = claim(mailbox, key, first[key], settings)
    return out


def _finish(row_id: int, status: str, settings: Settings, *, reason: str | None = None,
            content: MailContent | None = None, invoice_ids: list[str] | None = None) -> None:
    with session_scope(settings) as session:
        row = session.get(MailMessage, row_id)
        row.status, row.reason, row.finished_at = status, (reason or None), utcnow()
        if content is not None:
            row.sender = (content.sender or "")[:300] or None
            row.subject = (content.subject or "")[:500] or None
            row.received_at = content.received_at
        row.invoice_ids = invoice_ids or []
        session.add(row)


# --- one mail ----------------------------------------------------------------------------------


def process_mail(raw: bytes, mailbox: str, settings: Settings, *, enqueue: Enqueue | None = None,
                 enqueued: set[str] | None = None) -> tuple[str, str | None, MailContent, list]:
    """Store the documents of one mail: ('done' | 'quarantined', reason, content, taken)."""
    content = read_mail(raw)
    if content.problem:
        return MailStatus.QUARANTINED, content.problem, content, []
    if len(content.documents) > settings.mail_max_attachments:
        reason = (f"the mail has {len(content.documents)} attachments, over the limit of "
                  f"{settings.mail_max_attachments} (a mail bomb)")
        return MailStatus.QUARANTINED, reason, content, []
    taken = [
        take_document(data, name, source="mail", intake=content.intake(mailbox), enqueue=enqueue,
                      enqueued=enqueued, settings=settings)
        for name, data in content.documents
    ]
    refused = [t.reason for t in taken if t.reason] + content.skipped
    if not any(t.invoice_id for t in taken):
        reason = "nothing usable: " + ("; ".join(refused) if refused else "the mail has no attachment")
        return MailStatus.QUARANTINED, reason[:4000], content, taken
    return MailStatus.DONE, ("; ".join(refused)[:4000] or None), content, taken


# --- polling -----------------------------------------------------------------------------------


def poll_mailbox(cfg: MailboxConfig, *, enqueue: Enqueue | None = None, settings: Settings | None = None,
                 limit: int | None = None) -> PollReport:
    """Take up to `limit` (settings.mail_batch) mails of one mailbox. Pauses (takes nothing)
    while the extraction queue is over its limit.

    A poll that breaks off (the IMAP connection drops, the database goes away) releases the
    claims it has not finished, so the next poll takes those mails at once."""
    settings = settings or get_settings()
    report = PollReport(cfg.name)
    if backpressure.pressure(settings).over:
        report.paused = True
        return report
    limit = limit or settings.mail_batch
    enqueued: set[str] = set()
    held: set[int] = set()  # ledger rows this poll claimed and has not finished yet
    try:
        with _connect(cfg) as box:
            _poll_box(box, cfg, settings, report, limit, enqueue, enqueued, held)
    finally:
        if held:  # a poll that broke off: its unread claims are free for the next poll at once
            _release(held, settings)
    return report


def _release(row_ids: set[int], settings: Settings) -> None:
    try:
        with session_scope(settings) as session:
            session.execute(delete(MailMessage).where(MailMessage.id.in_(list(row_ids)),
                                                      MailMessage.status == MailStatus.CLAIMED))
    except Exception:  # the database is down: the claims are retaken after their lease
        log.exception("could not release %d mail claims", len(row_ids))


def _poll_box(box, cfg: MailboxConfig, settings: Settings, report: PollReport, limit: int,
              enqueue: Enqueue | None, enqueued: set[str], held: set[int]) -> None:
    """The body of `poll_mailbox` inside one IMAP session; every claim it makes is in `held`
    until the mail is finished.

    Long because claiming, reading, finishing and flagging the mails all happen inside one IMAP session."""
    from imap_tools import AND, MailMessageFlags

    _ensure_folder(box, cfg.quarantine_folder)
    if cfg.done_folder:
        _ensure_folder(box, cfg.done_folder)
        criteria = AND(all=True)
    else:
        criteria = AND(no_keyword=PROCESSED_KEYWORD)
    done_uids: list[str] = []
    quarantine_uids: list[str] = []
    to_read: list[tuple[str, int]] = []  # (uid, ledger row id; -1: no Message-ID, claimed once read)
    # Headers first, in chunks, until `limit` mails are claimed: mails another poller holds
    # (or a dead poller held, until its lease ends) never fill the window.
    uids = box.uids(criteria)
    for start in range(0, len(uids), HEADER_CHUNK):
        if len(to_read) >= limit:
            break
        heads = []
        for head in box.fetch(uid_list=uids[start:start + HEADER_CHUNK], mark_seen=False, headers_only=True, bulk=True):
            if len(to_read) + len(heads) >= limit:
                break
            report.mails += 1
            size = head.size_rfc822
            oversize = (f"the mail is {size} bytes, over the {settings.mail_max_bytes}-byte limit"
                        if size and size > settings.mail_max_bytes else None)
            mid = head.headers.get("message-id", ("",))[0] if head.headers else ""
            if not mid and not oversize:
                to_read.append((head.uid, -1))  # keyed by the hash of the whole mail, read below
                continue
            heads.append((head.uid, message_key(head.raw, mid or None), oversize))
        claims = claim_many(cfg.name, [(key, uid) for uid, key, _ in heads], settings)
        for uid, key, oversize in heads:
            state, row = claims[key]
            if state == "new" and row.uid != uid:
                state = "busy"  # the same Message-ID twice in one chunk: the first is taken now
            if state == "busy":
                report.busy += 1
            elif state == "finished":
                report.finished_again += 1
                if _settled_by_its_poller(row):
                    (quarantine_uids if row.status == MailStatus.QUARANTINED else done_uids).append(uid)
            elif oversize:
                _finish(row.id, MailStatus.QUARANTINED, settings, reason=oversize)
                quarantine_uids.append(uid)
                report.quarantined += 1
                report.reasons.append(oversize)
            else:
                to_read.append((uid, row.id))
                held.add(row.id)
    for start in range(0, len(to_read), FETCH_CHUNK):
        chunk = dict(to_read[start:start + FETCH_CHUNK])
        for msg in box.fetch(uid_list=list(chunk), mark_seen=False, bulk=True):
            row_id = chunk.get(msg.uid)
            if row_id is None:
                continue
            if row_id == -1:
                state, row = claim(cfg.name, message_key(msg.raw, None), msg.uid, settings)
                if state == "busy":
                    report.busy += 1
                    continue
                if state == "finished":
                    report.finished_again += 1
                    if _settled_by_its_poller(row):
                        (quarantine_uids if row.status == MailStatus.QUARANTINED else done_uids).append(msg.uid)
                    continue
                row_id = row.id
                held.add(row_id)
            try:
                status, reason, content, taken = process_mail(msg.raw, cfg.name, settings, enqueue=enqueue,
                                                              enqueued=enqueued)
            except DBAPIError:
                raise  # the database, not the mail: the claim is retaken after its lease
            except Exception as exc:  # a mail that breaks a library must not block the mailbox
                log.exception("mail %s of %s could not be processed", msg.uid, cfg.name)
                status, reason, content, taken = (
                    MailStatus.QUARANTINED, f"the mail could not be processed ({type(exc).__name__}: {str(exc)[:300]})",
                    read_mail(b""), [])
            ids = [t.invoice_id for t in taken if t.invoice_id]
            _finish(row_id, status, settings, reason=reason, content=content, invoice_ids=ids)
            held.discard(row_id)
            if status == MailStatus.QUARANTINED:
                quarantine_uids.append(msg.uid)
                report.quarantined += 1
                report.reasons.append(reason or "")
            else:
                done_uids.append(msg.uid)
                report.taken += 1
                report.invoices += sum(1 for t in taken if t.created)
                report.duplicates += sum(1 for t in taken if t.invoice_id and not t.created)
        # The ledger is committed: now the mails leave the inbox (a lost move is redone next poll).
        _settle(box, cfg, done_uids, quarantine_uids, MailMessageFlags)
        done_uids, quarantine_uids = [], []
    _settle(box, cfg, done_uids, quarantine_uids, MailMessageFlags)


#: A mail another poller finished less than this long ago is left for that poller to move: two
#: IMAP sessions moving one mail at once can leave two copies in the target folder.
SETTLE_GRACE_S = 120


def _settled_by_its_poller(row: MailMessage) -> bool:
    """Whether this poll should move a mail the ledger already holds finished: only once the
    poller that finished it has had its time to move it (a move lost with a crash is redone)."""
    if row.finished_at is None:
        return True
    finished = row.finished_at if row.finished_at.tzinfo else row.finished_at.replace(tzinfo=timezone.utc)
    return utcnow() - finished > timedelta(seconds=SETTLE_GRACE_S)


def _settle(box, cfg: MailboxConfig, done_uids: list[str], quarantine_uids: list[str], flags) -> None:
    """Move (or flag) finished mails. Another poller may have moved some of them first; a move
    that fails is retried with the mails still here, and a move still failing is left to the
    next poll (the ledger already says the mail is finished)."""
    if quarantine_uids:
        _retrying(box, quarantine_uids, lambda uids: box.move(uids, cfg.quarantine_folder))
    if done_uids:
        if cfg.done_folder:
            _retrying(box, done_uids, lambda uids: box.move(uids, cfg.done_folder))
        else:
            _retrying(box, done_uids, lambda uids: box.flag(uids, (flags.SEEN, PROCESSED_KEYWORD), True))


def _retrying(box, uids: list[str], act) -> None:
    from imap_tools import AND
    from imap_tools.errors import UnexpectedCommandStatusError

    try:
        act(uids)
        return
    except UnexpectedCommandStatusError as exc:
        log.info("settling %d mails: %s; retrying with the mails still in the folder", len(uids), exc)
    try:
        present = set(box.uids(AND(uid=uids)))
        left = [u for u in uids if u in present]
        if left:
            act(left)
    except UnexpectedCommandStatusError as exc:
        log.warning("settling %d mails failed (%s); the next poll settles them", len(uids), exc)


def poll_all(*, enqueue: Enqueue | None = None, settings: Settings | None = None) -> list[PollReport]:
    """One poll of every configured mailbox; one mailbox's failure does not stop the others."""
    settings = settings or get_settings()
    reports = []
    for cfg in configured_mailboxes(settings):
        try:
            reports.append(poll_mailbox(cfg, enqueue=enqueue, settings=settings))
        except Exception as exc:
            log.exception("polling %s failed", cfg.name)
            reports.append(PollReport(cfg.name, reasons=[f"poll failed: {type(exc).__name__}: {exc}"]))
    return reports
