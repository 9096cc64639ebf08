"""Mailbox intake under crashes: a local dovecot mailbox filled with N mails (1-3 PDFs each,
5% duplicates of earlier attachments, 3% junk, 10% forwarded as attached .eml), drained by a
poller process that is killed with SIGKILL twice and restarted. Checks that every distinct
attachment is exactly one invoice, duplicates are one, junk is quarantined and no mail is lost,
and reports the intake rate (mails/s).

Extraction does not run here: this measures intake (IMAP, ledger, storage, dedup); the
poller's enqueue is a stub that records invoice ids to a file instead of starting the chain.

    .venv/bin/python benchmarks/intake.py --mails 2000
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

PG_ADMIN_URL = os.environ.get("TEST_PG_ADMIN_URL", "postgresql://postgres@127.0.0.1:5432/postgres")


def build_mails(n: int, seed: int = 7):
    """(raw mails, expected): distinct attachment hashes, duplicate and junk message ids."""
    import hashlib

    from tests.integration.mail_factory import mail, small_pdf

    rng = random.Random(seed)
    mails, distinct, junk, dups = [], set(), set(), set()
    earlier: list[tuple[str, bytes]] = []
    for i in range(n):
        mid = f"<bench-{i}@acme.example>"
        roll = rng.random()
        if roll < 0.03:
            junk.add(mid)
            if rng.random() < 0.5:
                msg = mail(f"Hello {i}", body="Lunch on Friday?", message_id=mid)
            else:
                msg = mail(f"Archive {i}", [(f"batch-{i}.zip", b"PK\x03\x04" + os.urandom(64))], message_id=mid)
        elif roll < 0.08 and earlier:
            dups.add(mid)
            msg = mail(f"Reminder {i}", [rng.choice(earlier)], message_id=mid)
        else:
            files = [(f"inv-{i}-{k}.pdf", small_pdf(f"{i}-{k}")) for k in range(rng.randint(1, 3))]
            for _, data in files:
                distinct.add(hashlib.sha256(data).hexdigest())
            earlier.extend(files)
            if rng.random() < 0.10:
                msg = mail(f"Fwd: invoice {i}", eml_file=mail(f"Invoice {i}", files), message_id=mid)
            else:
                msg = mail(f"Invoice {i}", files, message_id=mid)
        mails.append(bytes(msg))
    return mails, {"distinct": distinct, "junk": junk, "duplicates": dups}


def poller(args) -> None:
    """The poller process: poll until the inbox is empty; enqueue = append the id to a file."""
    from ingestion.mailbox import MailboxConfig, poll_mailbox
    from invoicechain.config import get_settings

    settings = get_settings()
    cfg = MailboxConfig.from_dict(json.loads(args.mailbox))
    out = open(args.enqueued, "a", buffering=1)

    def enqueue(invoice_id: str) -> None:
        out.write(invoice_id + "\n")

    idle = 0
    while idle < 3:
        report = poll_mailbox(cfg, enqueue=enqueue, settings=settings, limit=args.batch)
        idle = idle + 1 if report.mails == 0 else 0
        if report.mails == 0 or report.busy == report.mails:
            time.sleep(0.5)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--mails", type=int, default=2000)
    ap.add_argument("--batch", type=int, default=100)
    ap.add_argument("--kills", type=int, default=2)
    ap.add_argument("--poll", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--mailbox", help=argparse.SUPPRESS)
    ap.add_argument("--enqueued", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.poll:
        return poller(args)

    import psycopg
    from sqlmodel import func, select

    from invoicechain import config
    from invoicechain.db.session import dispose_engines, init_db, session_scope
    from invoicechain.db.tables import Document, Invoice, MailMessage
    from tests.integration.imap_server import Dovecot

    db = f"ic_bench_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{db}"')
    work = Path(tempfile.mkdtemp(prefix="ic-intake-"))
    env = dict(os.environ, DATABASE_URL=f"postgresql://postgres@127.0.0.1:5432/{db}",
               INVOICECHAIN_DATA_DIR=str(work / "data"), INVOICECHAIN_MAIL_CLAIM_LEASE_S="5",
               INVOICECHAIN_EXTRACT_QUEUE_LIMIT="0")
    env.pop("REDIS_URL", None)
    os.environ.update({k: env[k] for k in ("DATABASE_URL", "INVOICECHAIN_DATA_DIR", "INVOICECHAIN_MAIL_CLAIM_LEASE_S",
                                           "INVOICECHAIN_EXTRACT_QUEUE_LIMIT")})
    config.get_settings.cache_clear()
    settings = config.get_settings()
    init_db(settings)
    try:
        t0 = time.perf_counter()
        mails, expected = build_mails(args.mails)
        build_s = time.perf_counter() - t0
        with Dovecot() as imap:
            t0 = time.perf_counter()
            imap.append_many(mails)
            fill_s = time.perf_counter() - t0
            box = imap.mailbox_settings(done_folder="Processed")
            enqueued = work / "enqueued.txt"
            cmd = [sys.executable, __file__, "--poll", "--mailbox", json.dumps(box), "--enqueued", str(enqueued),
                   "--batch", str(args.batch)]

            def ledger_rows() -> int:
                with session_scope(settings) as s:
                    return s.exec(select(func.count()).select_from(MailMessage)).one()

            kills = []
            t0 = time.perf_counter()
            proc = subprocess.Popen(cmd, env=env, cwd=ROOT)
            for k in range(args.kills):
                target = args.mails * (k + 1) // (args.kills + 1)
                while ledger_rows() < target and proc.poll() is None:
                    time.sleep(0.2)
                proc.send_signal(signal.SIGKILL)
                proc.wait()
                kills.append(ledger_rows())
                proc = subprocess.Popen(cmd, env=env, cwd=ROOT)
            proc.wait()
            drain_s = time.perf_counter() - t0
            inbox, processed, quarantine = imap.count("INBOX"), imap.count("Processed"), imap.count("Quarantine")
        with session_scope(settings) as s:
            docs = s.exec(select(Document.sha256)).all()
            invoice_ids = set(s.exec(select(Invoice.id)).all())
            invoices = len(invoice_ids)
            rows = s.exec(select(MailMessage)).all()
        ids = enqueued.read_text().split() if enqueued.exists() else []
        status = {st: sum(1 for r in rows if r.status == st) for st in ("done", "quarantined", "claimed")}
        quarantined = {r.message_key for r in rows if r.status == "quarantined"}
        checks = {
            "every distinct attachment is one invoice": set(docs) == expected["distinct"] and invoices == len(expected["distinct"]),
            "duplicates add no invoice": invoices == len(expected["distinct"]),
            "junk is quarantined (and only junk)": quarantined == expected["junk"] and quarantine == len(expected["junk"]),
            "no mail lost or taken twice": len(rows) == args.mails and status["claimed"] == 0 and inbox == 0
            and processed + quarantine == args.mails,
            "each new invoice enqueued at most once": len(ids) == len(set(ids)) and set(ids) <= invoice_ids,
        }
        print("Mailbox intake benchmark (extraction not run: the enqueue is a stub that records invoice ids)")
        print(f"  mails {args.mails}  distinct attachments {len(expected['distinct'])}  duplicate mails "
              f"{len(expected['duplicates'])}  junk mails {len(expected['junk'])}")
        print(f"  build {build_s:.1f} s  fill dovecot (IMAP APPEND) {fill_s:.1f} s")
        print(f"  poller SIGKILLed at ledger rows {kills}, restarted {len(kills)} times")
        print(f"  drained in {drain_s:.1f} s: {args.mails / drain_s:.1f} mails/s, {invoices / drain_s:.1f} invoices/s")
        print(f"  invoices {invoices}  ledger done {status['done']} quarantined {status['quarantined']} claimed {status['claimed']}"
              f"  INBOX {inbox} Processed {processed} Quarantine {quarantine}  enqueued {len(ids)} (unique {len(set(ids))})")
        missing = invoices - len(set(ids))
        print(f"  invoices stored but not enqueued (a kill between the two; the reaper enqueues them): {missing}")
        for name, ok in checks.items():
            print(f"  [{'ok' if ok else 'FAIL'}] {name}")
        if not all(checks.values()):
            sys.exit(1)
    finally:
        dispose_engines()
        with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
            conn.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s", (db,))
            conn.execute(f'DROP DATABASE IF EXISTS "{db}"')


if __name__ == "__main__":
    main()
