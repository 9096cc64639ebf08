"""What a mail holds: its invoice documents (attachments, and the attachments of mails attached
to it as .eml / message/rfc822), and why anything else was left out. Pure: no IMAP, no database.
"""

from __future__ import annotations

import email
import hashlib
from dataclasses import dataclass, field
from datetime import datetime, timezone
from email.header import decode_header, make_header
from email.message import Message
from email.utils import parseaddr, parsedate_to_datetime

#: Depth of attached mails inside attached mails that is still opened.
MAX_NESTING = 3
#: Parts walked in one mail before it is judged a bomb (each part costs parsing time).
MAX_PARTS = 2000


@dataclass
class MailContent:
    message_key: str
    message_id: str | None
    sender: str | None
    subject: str | None
    received_at: datetime | None
    documents: list[tuple[str, bytes]] = field(default_factory=list)
    #: Parts that are files but no document the intake takes, with the reason.
    skipped: list[str] = field(default_factory=list)
    #: Set when the mail as a whole cannot be taken (malformed, a bomb): the quarantine reason.
    problem: str | None = None

    def intake(self, mailbox: str) -> dict:
        return {
            "channel": "mail", "mailbox": mailbox, "message_id": self.message_id, "sender": self.sender,
            "subject": self.subject, "received_at": self.received_at.isoformat() if self.received_at else None,
        }


def message_key(raw: bytes, message_id: str | None) -> str:
    """The ledger key of a mail: its Message-ID, or the hash of its bytes when it has none."""
    if message_id and message_id.strip():
        return message_id.strip()[:400]
    return f"sha256:{hashlib.sha256(raw).hexdigest()}"


def _decoded(value) -> str | None:
    if value is None:
        return None
    try:
        text = str(make_header(decode_header(str(value))))
    except Exception:  # an encoded word that does not decode: keep it as sent
        text = str(value)
    return " ".join(text.split()) or None


def _header(msg: Message, name: str) -> str | None:
    try:
        return _decoded(msg.get(name))
    except Exception:
        return None


def _date(msg: Message) -> datetime | None:
    value = _header(msg, "Date")
    if not value:
        return None
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    return when if when.tzinfo else when.replace(tzinfo=timezone.utc)


def _is_file(part: Message) -> bool:
    if part.is_multipart():
        return False
    disposition = (part.get_content_disposition() or "").lower()
    ctype = part.get_content_type()
    if disposition == "attachment" or part.get_filename():
        return True
    return ctype in ("application/pdf", "application/xml", "text/xml") or ctype.startswith("image/")


def _payload(part: Message) -> bytes | None:
    try:
        return part.get_payload(decode=True)
    except Exception:
        return None


#: Defects of a part's transfer encoding (set while decoding it): its bytes are not the file sent.
_ENCODING_DEFECTS = ("InvalidBase64CharactersDefect", "InvalidBase64PaddingDefect", "InvalidBase64LengthDefect")


def _encoding_defects(part: Message) -> str | None:
    found = sorted({type(d).__name__ for d in part.defects} & set(_ENCODING_DEFECTS))
    return ", ".join(found) or None


def _walk(msg: Message, depth: int, out: MailContent, counter: list[int], seen: set[int]) -> None:
    for part in msg.walk():
        if id(part) in seen:  # walk() also descends into attached mails, read already
            continue
        seen.add(id(part))
        counter[0] += 1
        if counter[0] > MAX_PARTS:
            out.problem = f"the mail has over {MAX_PARTS} parts (a mail bomb)"
            return
        ctype = part.get_content_type()
        if ctype == "message/rfc822":
            if depth >= MAX_NESTING:
                out.skipped.append(f"an attached mail nested deeper than {MAX_NESTING}")
                continue
            inner = part.get_payload()
            for sub in inner if isinstance(inner, list) else [inner]:
                if isinstance(sub, Message):
                    _walk(sub, depth + 1, out, counter, seen)
            continue
        if part is msg and msg.is_multipart():
            continue
        if not _is_file(part):
            continue
        try:
            name = _decoded(part.get_filename())
        except Exception:
            name = None
        name = (name or f"attachment-{len(out.documents) + len(out.skipped) + 1}")[:200]
        data = _payload(part)
        if data is None:
            out.skipped.append(f"{name} cannot be decoded")
            continue
        if bad := _encoding_defects(part):
            out.skipped.append(f"{name} cannot be decoded: malformed MIME ({bad})")
            continue
        if name.lower().endswith(".eml") and ctype in ("application/octet-stream", "text/plain", "message/rfc822"):
            if depth >= MAX_NESTING:
                out.skipped.append(f"{name}: an attached mail nested deeper than {MAX_NESTING}")
                continue
            _walk(email.message_from_bytes(data), depth + 1, out, counter, seen)
            continue
        out.documents.append((name, data))


def read_mail(raw: bytes) -> MailContent:
    """Parse one raw mail (RFC 5322 bytes). Never raises: a mail that cannot be parsed comes
    back with `problem` set."""
    parts = raw.lower().count(b"\ncontent-type:")
    if parts > MAX_PARTS:  # judged before parsing: parsing a bomb is the cost it aims for
        key = message_key(raw, None)
        head = raw[: raw.find(b"\r\n\r\n") if b"\r\n\r\n" in raw else 65536]
        try:
            top = email.message_from_bytes(head)
            key = message_key(raw, _header(top, "Message-ID"))
        except Exception:
            top = None
        return MailContent(key, _header(top, "Message-ID") if top else None, None, None, None,
                           problem=f"the mail has over {MAX_PARTS} parts ({parts}): a mail bomb")
    try:
        # The compat32 parser: lenient with broken mail, and ten times faster than the
        # modern policy on mails with many parts; headers are decoded here.
        msg = email.message_from_bytes(raw)
    except Exception as exc:  # the parser is lenient; this is a last resort
        return MailContent(message_key(raw, None), None, None, None, None, problem=f"malformed MIME ({type(exc).__name__})")
    message_id = _header(msg, "Message-ID")
    sender = parseaddr(_header(msg, "From") or "")[1] or _header(msg, "From")
    out = MailContent(message_key(raw, message_id), message_id, sender, _header(msg, "Subject"), _date(msg))
    try:
        _walk(msg, 0, out, [0], set())
    except Exception as exc:
        out.problem = f"malformed MIME ({type(exc).__name__}: {str(exc)[:200]})"
    if out.problem is None and msg.defects and not out.documents:
        out.problem = "malformed MIME (" + ", ".join(sorted({type(d).__name__ for d in msg.defects})) + ")"
    return out
