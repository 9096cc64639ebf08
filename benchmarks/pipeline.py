"""Whole-pipeline throughput: N synthetic invoices submitted over HTTP, through Redis, the
Celery workers (the real model in the extract worker) and Postgres.

Prints invoices/s, per-step p50/p95 latency, and the time per invoice spent outside model
calls, two ways: as latency (HTTP submission + every step's own time minus its model time)
and as CPU time (the API, the ingest/toolchain worker, Postgres and Redis, divided by the
invoices). The extract worker's model runs on `--model-threads` threads (default 1), so on
a 2-core machine the rest of the pipeline has a core of its own.

    .venv/bin/python benchmarks/pipeline.py --n 200
"""

from __future__ import annotations

import argparse
import os
import signal
import statistics
import sys
import tempfile
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    values = sorted(values)
    return values[min(len(values) - 1, int(round(q * (len(values) - 1))))]


def service_cpu_seconds(procs) -> dict[str, float]:
    """CPU seconds used so far by the API, the ingest/toolchain worker (with its pool children),
    and the machine's Postgres and Redis server processes."""
    import psutil

    def tree(pid: int) -> list:
        try:
            p = psutil.Process(pid)
            return [p, *p.children(recursive=True)]
        except psutil.NoSuchProcess:
            return []

    def cpu(ps) -> float:
        total = 0.0
        for p in ps:
            try:
                t = p.cpu_times()
                total += t.user + t.system
            except psutil.NoSuchProcess:
                pass
        return total

    services = {"postgres": [], "redis": []}
    for p in psutil.process_iter(["name"]):
        name = (p.info.get("name") or "").lower()
        for key in services:
            if name.startswith(key):
                services[key].append(p)
    out = {"api": cpu(tree(procs[0].pid)), "toolchain worker": cpu(tree(procs[1].pid))}
    out.update({k: cpu(v) for k, v in services.items()})
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=200)
    ap.add_argument("--seed", type=int, default=2024)
    ap.add_argument("--redis-url", default="redis://127.0.0.1:6379/14")
    ap.add_argument("--pg-admin", default="postgresql://postgres@127.0.0.1:5432/postgres")
    ap.add_argument("--toolchain-concurrency", type=int, default=2)
    ap.add_argument("--model-threads", type=int, default=1, help="torch threads of the extract worker")
    ap.add_argument("--timeout", type=float, default=7200)
    ap.add_argument("--idle-probe-s", type=float, default=15.0, help="seconds to measure the services' idle CPU use")
    args = ap.parse_args()
    # A terminated benchmark still stops its API and workers and drops its database.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    signal.signal(signal.SIGINT, lambda *_: sys.exit(130))

    import httpx
    import psycopg
    import redis
    from sqlmodel import Session, create_engine, select

    from invoicechain.config import Settings
    from invoicechain.db.session import init_db, session_scope
    from invoicechain.db.tables import Invoice, StepRun
    from invoicechain.master_data import load_master_data, read_master_data
    from invoicechain.processes import free_port, spawn, stop, wait_ready
    from training.synth import generate_corpus

    work = Path(tempfile.mkdtemp(prefix="ic-bench-"))
    corpus = work / "corpus"
    generate_corpus(args.n, args.seed, corpus, fault_rate=0.3, toolchain=False)
    pdfs = sorted(corpus.glob("*.pdf"))

    db = f"ic_bench_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(args.pg_admin, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{db}"')
    pg_url = args.pg_admin.rsplit("/", 1)[0] + f"/{db}"
    redis.Redis.from_url(args.redis_url).flushdb()
    settings = Settings(database_url=pg_url, redis_url=args.redis_url, data_dir=work / "data")
    init_db(settings)
    with session_scope(settings) as session:
        load_master_data(session, read_master_data(corpus / "master_data.json"))

    env = dict(os.environ, DATABASE_URL=pg_url, REDIS_URL=args.redis_url, INVOICECHAIN_DATA_DIR=str(work / "data"),
               HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
    port = free_port()
    logs = work / "logs"
    logs.mkdir()
    procs = [
        spawn("api", ["api", "--port", str(port)], env, logs),
        spawn("toolchain", ["worker", "--queues", "ingest,toolchain", "--concurrency", str(args.toolchain_concurrency)], env, logs),
        spawn("extract", ["worker", "--queues", "extract", "--concurrency", "1"],
              dict(env, INVOICECHAIN_TORCH_THREADS=str(args.model_threads)), logs),
    ]
    base = f"http://127.0.0.1:{port}"
    try:
        wait_ready(base, procs[0], logs, timeout=60)
        # Let the extract worker load its model before the clock starts.
        time.sleep(10)

        def submit(path: Path) -> tuple[str, float]:
            t = time.perf_counter()
            with path.open("rb") as fh:
                r = httpx.post(base + "/v1/invoices", files={"file": (path.name, fh, "application/pdf")}, timeout=60)
            ms = (time.perf_counter() - t) * 1000
            r.raise_for_status()
            return r.json()["id"], ms

        # The services' CPU use while idle (polling, heartbeats), to take out of the per-invoice
        # figure: a run limited by the model lasts long enough for idle use to dominate it.
        idle_start, t_idle = service_cpu_seconds(procs[:2]), time.perf_counter()
        time.sleep(args.idle_probe_s)
        idle_end = service_cpu_seconds(procs[:2])
        idle_rate = {k: (idle_end[k] - idle_start.get(k, 0.0)) / (time.perf_counter() - t_idle) for k in idle_end}
        cpu_before = service_cpu_seconds(procs[:2])
        t0 = time.perf_counter()
        with ThreadPoolExecutor(4) as pool:
            submitted = list(pool.map(submit, pdfs))
        ids = [i for i, _ in submitted]
        submit_ms = [ms for _, ms in submitted]
        t_submitted = time.perf_counter() - t0
        engine = create_engine(settings.resolved_database_url)
        done_states = {"needs_ocr", "failed", "invalid", "rejected", "payment_held", "payment_ready", "needs_review", "pending_approval"}
        while True:
            with Session(engine) as s:  # one query a second: the benchmark must not load the database itself
                found = dict(s.exec(select(Invoice.id, Invoice.status).where(Invoice.id.in_(ids))).all())
            states = [found[i] for i in ids]
            if all(st in done_states for st in states):
                break
            if time.perf_counter() - t0 > args.timeout:
                # Report what finished rather than nothing: the unfinished are counted by status.
                print(f"timeout: {sum(st not in done_states for st in states)} invoices unfinished", file=sys.stderr)
                break
            time.sleep(1.0)
        wall = time.perf_counter() - t0
        cpu_used = {k: v - cpu_before.get(k, 0.0) for k, v in service_cpu_seconds(procs[:2]).items()}
        with Session(engine) as s:
            runs = s.exec(select(StepRun).where(StepRun.invoice_id.in_(ids))).all()
            status_counts: dict[str, int] = {}
            for st in states:
                status_counts[st] = status_counts.get(st, 0) + 1
    finally:
        stop(procs)
        with psycopg.connect(args.pg_admin, autocommit=True) as conn:
            conn.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s", (db,))
            conn.execute(f'DROP DATABASE IF EXISTS "{db}"')

    # A step's own time is its duration minus the model call it waited on (for `extract`,
    # the batched generation it took part in; see pipeline.batched_step_start).
    by_step: dict[str, list[float]] = {}
    own_by_step: dict[str, list[float]] = {}
    outside: dict[str, float] = {i: 0.0 for i in ids}
    for r in runs:
        own = max(0.0, (r.duration_ms or 0.0) - (r.model_ms or 0.0))
        by_step.setdefault(r.step, []).append(r.duration_ms or 0.0)
        own_by_step.setdefault(r.step, []).append(own)
        outside[r.invoice_id] += own
    for i, ms in zip(ids, submit_ms):
        outside[i] += ms
    order = ["ingest", "extract", "validate_invoice", "match_po", "run_approval", "trigger_payment"]
    print(f"\n{len(ids)} invoices, wall {wall:.1f} s (submitted in {t_submitted:.1f} s), statuses {status_counts}\n")
    print("| measure | value |\n|---|---|")
    finished = sum(st in done_states for st in states)
    print(f"| invoices/s (end to end) | {finished / wall:.2f} |")
    print(f"| HTTP submit p50 / p95 | {pct(submit_ms, .5):.1f} / {pct(submit_ms, .95):.1f} ms |")
    outs = list(outside.values())
    print(f"| time per invoice outside model calls, mean / p50 / p95 | {statistics.mean(outs):.1f} / {pct(outs, .5):.1f} / {pct(outs, .95):.1f} ms |")
    # pdfplumber's text extraction (inside `ingest`) is document work, like the model call.
    ingest_own = {r.invoice_id: max(0.0, (r.duration_ms or 0.0) - (r.model_ms or 0.0)) for r in runs if r.step == "ingest"}
    rest = [outside[i] - ingest_own.get(i, 0.0) for i in ids]
    print(f"| of which outside PDF reading (HTTP, queues, database, rules), mean / p50 / p95 | {statistics.mean(rest):.1f} / {pct(rest, .5):.1f} / {pct(rest, .95):.1f} ms |")
    cpu_ms = {k: 1000 * v / len(ids) for k, v in cpu_used.items()}
    parts = ", ".join(f"{k} {v:.1f}" for k, v in cpu_ms.items())
    print(f"| CPU time per invoice outside the extract worker ({parts}) | {sum(cpu_ms.values()):.1f} ms |")
    idle_ms = {k: 1000 * idle_rate.get(k, 0.0) * wall / len(ids) for k in cpu_used}
    net = {k: cpu_ms[k] - idle_ms[k] for k in cpu_ms}
    rates = ", ".join(f"{k} {1000 * v:.1f}" for k, v in idle_rate.items())
    print(f"| the same less idle use (idle CPU ms/s: {rates}) | {sum(net.values()):.1f} ms ({', '.join(f'{k} {v:.1f}' for k, v in net.items())}) |")
    print("\n| step | runs | p50 ms | p95 ms | outside model calls, p50 / p95 ms |\n|---|---|---|---|---|")
    for step in order:
        if step in by_step:
            v, own = by_step[step], own_by_step[step]
            print(f"| {step} | {len(v)} | {pct(v, .5):.1f} | {pct(v, .95):.1f} | {pct(own, .5):.1f} / {pct(own, .95):.1f} |")


if __name__ == "__main__":
    main()
