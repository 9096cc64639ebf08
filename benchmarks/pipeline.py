"""Whole-pipeline throughput and the pipeline's own cost: N synthetic invoices submitted over
HTTP, through Redis, the Celery workers and Postgres.

Two phases. First the uploads, with only the API running: accepted uploads/s (`--clients`
concurrent keep-alive clients on the same machine) and the API's CPU per upload. Then the
workers start and drain the queued chains (ingest, extract, validate_invoice, match_po,
run_approval, trigger_payment): invoices/s, per-step latency, and the CPU per invoice of every
service outside the model and the PDF parse: the API, the ingest/toolchain worker, the extract
worker, Postgres and Redis, less the PDF parse (pdfplumber, timed in process on the same
files) and less the services' idle use (measured after the drain).

`--extractor model` (the default) runs the shipped `extract` adapter in the extract worker on
`--model-threads` threads. `--extractor stub` replaces only the model call with a stub that
answers each document's synthetic gold fields at once (named so in the output): the rest of
the extract step (batching, Postgres, the chain hand-off) runs as shipped, so the run measures
the pipeline outside the model in minutes instead of hours.

    .venv/bin/python benchmarks/pipeline.py --n 200 --extractor stub
    .venv/bin/python benchmarks/pipeline.py --n 200 --model-threads 2
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


def tree_cpu(pid: int) -> float:
    """CPU seconds (user + system) of a process and its children so far."""
    import psutil

    try:
        root = psutil.Process(pid)
        procs = [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return 0.0
    total = 0.0
    for p in procs:
        try:
            t = p.cpu_times()
            total += t.user + t.system
        except psutil.NoSuchProcess:
            pass
    return total


class Meter:
    """CPU seconds of named services: process trees by pid, the Postgres backends serving the
    benchmark's database (other databases on a shared server are left out), and the Redis
    server. A backend's CPU is kept as last seen when it exits."""

    def __init__(self, pg_admin: str, db: str) -> None:
        self.pids: dict[str, int] = {}
        self.pg_admin, self.db = pg_admin, db
        self.backends: dict[int, float] = {}

    def _postgres(self) -> float:
        import psutil
        import psycopg

        with psycopg.connect(self.pg_admin, autocommit=True) as conn:
            pids = [r[0] for r in conn.execute("SELECT pid FROM pg_stat_activity WHERE datname = %s", (self.db,))]
        for pid in pids:
            try:
                t = psutil.Process(pid).cpu_times()
                self.backends[pid] = max(self.backends.get(pid, 0.0), t.user + t.system)
            except psutil.NoSuchProcess:
                pass
        return sum(self.backends.values())

    @staticmethod
    def _redis() -> float:
        import psutil

        total = 0.0
        for p in psutil.process_iter(["name"]):
            if (p.info.get("name") or "").lower().startswith("redis"):
                try:
                    t = p.cpu_times()
                    total += t.user + t.system
                except psutil.NoSuchProcess:
                    pass
        return total

    def read(self) -> dict[str, float]:
        out = {name: tree_cpu(pid) for name, pid in self.pids.items()}
        out["postgres"], out["redis"] = self._postgres(), self._redis()
        return out

    @staticmethod
    def diff(after: dict[str, float], before: dict[str, float]) -> dict[str, float]:
        return {k: v - before.get(k, 0.0) for k, v in after.items()}


# --- the stub extractor -------------------------------------------------------------------


def run_stub_extract_worker(gold_path: str, worker_args: list[str]) -> None:
    """The extract worker with the model call replaced by the synthetic gold answer (no torch)."""
    import json

    from models.runtime import ExtractionResult
    from workers import tasks

    gold = {}
    with open(gold_path, encoding="utf-8") as fh:
        for line in fh:
            rec = json.loads(line)
            gold[rec["input"]] = rec["output"]
    empty = dict.fromkeys(("invoice_id", "vendor_name", "vendor_address", "client_name", "invoice_date", "due_date",
                           "currency", "subtotal", "discount", "shipping", "tax", "total_amount", "po_number",
                           "payment_terms", "bank"))

    class StubRuntime:
        def extract(self, texts: list[str]) -> list[ExtractionResult]:
            out = []
            for text in texts:
                fields = gold.get(text) or {**empty, "line_items": []}
                out.append(ExtractionResult(fields=fields, confidence=dict.fromkeys(fields, 1.0), grounding={},
                                            adapter_version="stub", model_ms=0.0))
            return out

    stub = StubRuntime()
    tasks.model_runtime = lambda: stub
    from cli.run import worker

    worker(**worker_args)


# --- the run ------------------------------------------------------------------------------


def main() -> None:
    if len(sys.argv) > 2 and sys.argv[1] == "--stub-extract-worker":
        run_stub_extract_worker(sys.argv[2], {"queues": "extract", "concurrency": 1})
        return
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=200)
    ap.add_argument("--seed", type=int, default=2024)
    ap.add_argument("--redis-url", default="redis://127.0.0.1:6379/14")
    ap.add_argument("--pg-admin", default="postgresql://postgres@127.0.0.1:5432/postgres")
    ap.add_argument("--extractor", choices=["model", "stub"], default="model",
                    help="stub: the extract worker answers the synthetic gold fields instead of running the model")
    ap.add_argument("--clients", type=int, default=8, help="concurrent upload clients")
    ap.add_argument("--api-workers", type=int, default=1, help="uvicorn worker processes")
    ap.add_argument("--uploads-only", action="store_true", help="measure the uploads and stop (no workers)")
    ap.add_argument("--toolchain-concurrency", type=int, default=2)
    ap.add_argument("--model-threads", type=int, default=1, help="torch threads of the extract worker")
    ap.add_argument("--timeout", type=float, default=7200)
    ap.add_argument("--idle-probe-s", type=float, default=10.0, help="seconds to measure the services' idle CPU use")
    args = ap.parse_args()
    # A terminated benchmark still stops its API and workers and drops its database.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    signal.signal(signal.SIGINT, lambda *_: sys.exit(130))

    import subprocess
    import threading

    import httpx
    import psycopg
    import redis
    from sqlmodel import Session, create_engine, select

    from invoicechain.auth import issue_test_admin_key
    from invoicechain.config import Settings
    from invoicechain.db.session import init_db, session_scope
    from invoicechain.db.tables import Invoice, StepRun
    from invoicechain.master_data import load_master_data, read_master_data
    from invoicechain.pdf import pdf_text
    from cli.processes import free_port, spawn, stop, wait_ready
    from training.synth import generate_corpus

    work = Path(tempfile.mkdtemp(prefix="ic-bench-"))
    corpus = work / "corpus"
    generate_corpus(args.n, args.seed, corpus, fault_rate=0.3, toolchain=False)
    pdfs = sorted(corpus.glob("*.pdf"))
    datas = [p.read_bytes() for p in pdfs]
    # The PDF parse is document work, like the model call: its CPU is timed here, in process,
    # on the same files, and taken out of the ingest worker's CPU.
    t = time.process_time()
    for data in datas:
        pdf_text(data)
    parse_ms = 1000 * (time.process_time() - t) / len(datas)

    db = f"ic_bench_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(args.pg_admin, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{db}"')
    pg_url = args.pg_admin.rsplit("/", 1)[0] + f"/{db}"
    redis.Redis.from_url(args.redis_url).flushdb()
    settings = Settings(database_url=pg_url, redis_url=args.redis_url, data_dir=work / "data")
    init_db(settings)
    with session_scope(settings) as session:
        load_master_data(session, read_master_data(corpus / "master_data.json"))
    key = issue_test_admin_key(settings, owner="benchmark")

    env = dict(os.environ, DATABASE_URL=pg_url, REDIS_URL=args.redis_url, INVOICECHAIN_DATA_DIR=str(work / "data"),
               HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
    port = free_port()
    logs = work / "logs"
    logs.mkdir()
    meter = Meter(args.pg_admin, db)
    procs = [spawn("api", ["api", "--port", str(port), "--workers", str(args.api_workers)], env, logs)]
    meter.pids["api"] = procs[0].pid
    base = f"http://127.0.0.1:{port}"
    headers = {"Authorization": f"Bearer {key}"}
    try:
        wait_ready(base, procs[0], logs, timeout=60)

        # --- phase 1: uploads, only the API running --------------------------------------------
        local = threading.local()

        def submit(i: int) -> tuple[str, float, int]:
            client = getattr(local, "client", None)
            if client is None:
                client = local.client = httpx.Client(base_url=base, headers=headers, timeout=60)
            t0 = time.perf_counter()
            r = client.post("/v1/invoices", files={"file": (pdfs[i].name, datas[i], "application/pdf")})
            ms = (time.perf_counter() - t0) * 1000
            r.raise_for_status()
            return r.json()["id"], ms, r.status_code

        time.sleep(2)
        cpu0 = meter.read()
        t0 = time.perf_counter()
        with ThreadPoolExecutor(args.clients) as pool:
            submitted = list(pool.map(submit, range(len(pdfs))))
        t_submit = time.perf_counter() - t0
        upload_cpu = Meter.diff(meter.read(), cpu0)
        ids = [i for i, _, _ in submitted]
        submit_ms = [ms for _, ms, _ in submitted]
        accepted = sum(1 for _, _, code in submitted if code == 202)
        if args.uploads_only:
            n = len(ids)
            up = {k: 1000 * v / n for k, v in upload_cpu.items()}
            print(f"\n{n} uploads, {args.clients} clients, {args.api_workers} uvicorn worker(s): "
                  f"{accepted / t_submit:.0f} accepted/s ({accepted} in {t_submit:.2f} s); latency p50 / p95 "
                  f"{pct(submit_ms, .5):.1f} / {pct(submit_ms, .95):.1f} ms; CPU per upload "
                  + ", ".join(f"{k} {v:.1f}" for k, v in up.items()) + " ms")
            return

        # --- phase 2: the workers drain the queued chains --------------------------------------
        procs.append(spawn("toolchain", ["worker", "--queues", "ingest,toolchain", "--concurrency",
                                         str(args.toolchain_concurrency)], env, logs))
        if args.extractor == "stub":
            with open(logs / "extract.log", "w") as out:
                procs.append(subprocess.Popen(
                    [sys.executable, str(Path(__file__).resolve()), "--stub-extract-worker", str(corpus / "extract.jsonl")],
                    env=env, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT, start_new_session=True))
        else:
            procs.append(spawn("extract", ["worker", "--queues", "extract", "--concurrency", "1"],
                               dict(env, INVOICECHAIN_TORCH_THREADS=str(args.model_threads)), logs))
        # Each worker's CPU counts from the moment it is ready (its start-up, the model or
        # embedding load included, is not per-invoice work).
        ready_cpu: dict[str, float] = {}
        for name, proc in (("toolchain worker", procs[1]), ("extract worker", procs[2])):
            meter.pids[name] = proc.pid
        log_names = {"toolchain worker": "toolchain", "extract worker": "extract"}
        deadline = time.monotonic() + 300
        while len(ready_cpu) < 2 and time.monotonic() < deadline:
            for name, log_name in log_names.items():
                if name not in ready_cpu and " ready." in (logs / f"{log_name}.log").read_text(errors="replace"):
                    ready_cpu[name] = tree_cpu(meter.pids[name])
            time.sleep(0.05)
        drain_cpu0 = {**meter.read(), **ready_cpu}
        t1 = time.perf_counter()
        engine = create_engine(settings.resolved_database_url)
        done_states = {"needs_ocr", "failed", "invalid", "rejected", "payment_held", "payment_ready", "needs_review",
                       "pending_approval"}
        while True:
            with Session(engine) as s:  # one query a second: the benchmark must not load the database itself
                found = dict(s.exec(select(Invoice.id, Invoice.status).where(Invoice.id.in_(ids))).all())
            states = [found[i] for i in ids]
            if all(st in done_states for st in states):
                break
            if time.perf_counter() - t1 > args.timeout:
                print(f"timeout: {sum(st not in done_states for st in states)} invoices unfinished", file=sys.stderr)
                break
            time.sleep(1.0)
        wall = time.perf_counter() - t1
        drain_cpu = Meter.diff(meter.read(), drain_cpu0)
        # The services' idle use (polling, heartbeats, events), now that the queues are empty.
        idle0, t_idle = meter.read(), time.perf_counter()
        time.sleep(args.idle_probe_s)
        idle_rate = {k: v / (time.perf_counter() - t_idle) for k, v in Meter.diff(meter.read(), idle0).items()}
        with Session(engine) as s:
            runs = s.exec(select(StepRun).where(StepRun.invoice_id.in_(ids))).all()
        engine.dispose()
    finally:
        stop(procs)
        with psycopg.connect(args.pg_admin, autocommit=True) as conn:
            conn.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s", (db,))
            conn.execute(f'DROP DATABASE IF EXISTS "{db}"')

    n = len(ids)
    status_counts: dict[str, int] = {}
    for st in states:
        status_counts[st] = status_counts.get(st, 0) + 1
    by_step: dict[str, list[float]] = {}
    own_by_step: dict[str, list[float]] = {}
    for r in runs:
        by_step.setdefault(r.step, []).append(r.duration_ms or 0.0)
        own_by_step.setdefault(r.step, []).append(max(0.0, (r.duration_ms or 0.0) - (r.model_ms or 0.0)))
    extractor = ("STUB extractor (the model call answers the synthetic gold fields; no model runs)"
                 if args.extractor == "stub" else f"the shipped extract adapter on {args.model_threads} torch thread(s)")
    print(f"\n{n} invoices; extraction: {extractor}; statuses {status_counts}\n")
    print("| measure | value |\n|---|---|")
    print(f"| accepted uploads/s ({args.clients} clients, API alone, {args.api_workers} uvicorn worker(s)) | "
          f"{accepted / t_submit:.0f} ({accepted} accepted in {t_submit:.2f} s) |")
    print(f"| upload latency p50 / p95 | {pct(submit_ms, .5):.1f} / {pct(submit_ms, .95):.1f} ms |")
    up = {k: 1000 * v / n for k, v in upload_cpu.items() if k in ("api", "postgres", "redis")}
    print(f"| CPU per upload (API {up['api']:.1f}, Postgres {up['postgres']:.1f}, Redis {up['redis']:.1f}) | "
          f"{sum(up.values()):.1f} ms |")
    finished = sum(st in done_states for st in states)
    print(f"| invoices/s through the workers | {finished / wall:.2f} ({finished} in {wall:.1f} s) |")
    dr = {k: 1000 * v / n for k, v in drain_cpu.items()}
    idle = {k: 1000 * idle_rate.get(k, 0.0) * wall / n for k in dr}
    net = {k: max(0.0, dr[k] - idle[k]) for k in dr}
    print("| CPU per invoice in the drain, less idle use ("
          + ", ".join(f"{k} {v:.1f}" for k, v in net.items()) + f") | {sum(net.values()):.1f} ms |")
    print(f"| PDF parse (pdfplumber, in process, same files) | {parse_ms:.1f} ms per invoice |")
    outside = sum(up.values()) + sum(net.values()) - parse_ms
    if args.extractor == "model":
        model = net.get("extract worker", 0.0)
        outside -= model
        print(f"| extract worker (the model and its bookkeeping) | {model:.1f} ms, left out below |")
    print(f"| **CPU per invoice outside the model and the PDF parse** (uploads + drain - parse"
          f"{' - extract worker' if args.extractor == 'model' else ''}) | **{outside:.1f} ms** |")
    print("\n| step | runs | p50 ms | p95 ms | outside model calls, p50 / p95 ms |\n|---|---|---|---|---|")
    for step in ["ingest", "extract", "validate_invoice", "match_po", "run_approval", "trigger_payment"]:
        if step in by_step:
            v, own = by_step[step], own_by_step[step]
            print(f"| {step} | {len(v)} | {pct(v, .5):.1f} | {pct(v, .95):.1f} | {pct(own, .5):.1f} / {pct(own, .95):.1f} |")


if __name__ == "__main__":
    main()
