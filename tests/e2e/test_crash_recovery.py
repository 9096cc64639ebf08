"""Workers killed for real: `kill -9` of the extract and toolchain worker processes with 50
invoices in flight, a document that kills its worker every time, and Postgres and Redis
restarted under running workers (a cluster and a redis-server of the test's own). Real Redis,
Postgres and Celery worker processes; the tiny random Llama keeps decoding cheap (what is checked is
delivery, not extraction quality)."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytest
from sqlalchemy import func
from sqlmodel import Session, select

from cli.processes import spawn, stop, tail
from invoicechain.db.session import get_engine
from invoicechain.db.tables import DeadLetter, Invoice, Payment, StepRun

pytestmark = [pytest.mark.e2e]

FINAL = {"needs_ocr", "failed", "invalid", "rejected", "payment_held", "payment_ready", "needs_review", "pending_approval"}
POISON = "POISON-7F3A-CRASHES-ITS-WORKER"


def _worker_cluster(database_url: str, redis_url: str, data_dir: Path, tiny_model_dir, tmp_path, monkeypatch):
    """Environment for worker processes (short visibility timeouts) and the in-process sender."""
    from invoicechain import config
    from tests.factories import make_lora_adapter
    from workers.celery_app import reconfigure

    adapters = tmp_path / "adapters"
    for name, seed in (("extract", 1), ("toolchain", 2)):
        make_lora_adapter(tiny_model_dir, adapters / name, seed)
    env = dict(
        os.environ,
        DATABASE_URL=database_url,
        REDIS_URL=redis_url,
        INVOICECHAIN_DATA_DIR=str(data_dir),
        INVOICECHAIN_MODEL_STORE=str(tmp_path / "models"),
        INVOICECHAIN_BASE_MODEL=str(tiny_model_dir),
        INVOICECHAIN_ADAPTERS_DIR=str(adapters),
        INVOICECHAIN_MAX_NEW_TOKENS="24",
        INVOICECHAIN_TORCH_THREADS="1",  # one thread per worker: no spinning threads fighting for the cores
        INVOICECHAIN_EXTRACT_BATCH_SIZE="8",
        INVOICECHAIN_EXTRACT_BATCH_WAIT_S="0.3",
        INVOICECHAIN_EXTRACT_VISIBILITY_TIMEOUT_S="25",
        INVOICECHAIN_TOOLCHAIN_VISIBILITY_TIMEOUT_S="15",
        INVOICECHAIN_UNACKED_RESTORE_INTERVAL_S="2",
        INVOICECHAIN_MAX_STEP_ATTEMPTS="3",
        INVOICECHAIN_REAPER_INTERVAL_S="5",
        INVOICECHAIN_RECEIVED_DEADLINE_S="60",
        INVOICECHAIN_CRASH_MARKER=POISON,
        HF_HUB_OFFLINE="1",
        TRANSFORMERS_OFFLINE="1",
        TOKENIZERS_PARALLELISM="false",
    )
    monkeypatch.setenv("REDIS_URL", redis_url)
    config.get_settings.cache_clear()
    reconfigure(config.get_settings())
    logs = tmp_path / "logs"
    logs.mkdir()
    procs: dict = {}

    def start(name: str, queues: str):
        procs[name] = spawn(f"{name}-{time.monotonic_ns()}", ["worker", "--queues", queues, "--concurrency", "1"], env, logs)
        return procs[name]

    def start_beat():
        """The beat with the reaper (a message lost in a kill is sent again past its step's deadline)."""
        import subprocess
        import sys

        from cli.processes import ROOT

        with open(logs / "beat.log", "w") as out:
            procs["beat"] = subprocess.Popen(
                [sys.executable, "-m", "celery", "-A", "workers.celery_app", "beat", "--loglevel=INFO",
                 f"--schedule={tmp_path / 'beat-schedule'}"],
                env=env, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        return procs["beat"]

    try:
        yield {"start": start, "start_beat": start_beat, "procs": procs, "logs": logs, "settings": config.get_settings()}
    finally:
        stop(list(procs.values()))
        config.get_settings.cache_clear()


@pytest.fixture
def cluster(settings, redis_url, tiny_model_dir, tmp_path, monkeypatch):
    yield from _worker_cluster(settings.database_url, redis_url, settings.data_dir, tiny_model_dir, tmp_path, monkeypatch)


def send(settings, texts: list[str]) -> list[str]:
    from ingestion import documents
    from workers.chain import enqueue_invoice

    ids = []
    for i, text in enumerate(texts):
        sub = documents.submit_document(text.encode(), f"inv-{i}.txt", "text/plain", settings=settings)
        enqueue_invoice(sub.invoice.id)
        ids.append(sub.invoice.id)
    return ids


def invoice_text(i: int) -> str:
    return (f"INVOICE INV-{5000 + i}\nNorthwind Traders Ltd\n12 Harbour Road, Leeds\nDate 2026-02-{1 + i % 27:02d}\n"
            f"Widget A  {1 + i % 5} x 12.50\nTotal: {12.5 * (1 + i % 5):.2f} EUR\n")


def statuses(settings, ids: list[str]) -> dict[str, str]:
    with Session(get_engine(settings)) as s:
        return {inv.id: inv.status for inv in s.exec(select(Invoice).where(Invoice.id.in_(ids))).all()}


def progress(settings) -> str:
    """Invoices by status and step runs by step and status, for a failure message."""
    from collections import Counter

    try:
        with Session(get_engine(settings)) as s:
            invoices = Counter(inv.status for inv in s.exec(select(Invoice)).all())
            runs = Counter(f"{r.step}:{r.status}" for r in s.exec(select(StepRun)).all())
        return f"invoices {dict(invoices)}; step runs {dict(runs)}"
    except Exception as exc:  # the database may be down
        return f"(progress unavailable: {type(exc).__name__})"


def wait_until(predicate, timeout: float, what: str, logs: Path, settings=None):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if predicate():
            return
        time.sleep(0.5)
    state = progress(settings) if settings is not None else ""
    raise AssertionError(f"{what} not reached in {timeout} s {state}\n" + "\n".join(
        tail(logs, p.stem, 1500) for p in sorted(logs.glob("*.log"))))


def kill9(proc) -> None:
    os.killpg(proc.pid, signal.SIGKILL)  # the worker and its pool processes, no warm shutdown
    proc.wait(timeout=30)


def test_kill_9_of_extract_and_toolchain_workers_with_50_in_flight(cluster):
    settings, logs, start = cluster["settings"], cluster["logs"], cluster["start"]
    ids = send(settings, [invoice_text(i) for i in range(50)])
    cluster["start_beat"]()
    extract, toolchain = start("extract", "extract"), start("toolchain", "ingest,toolchain")

    def extract_running() -> bool:
        with Session(get_engine(settings)) as s:
            return bool(s.exec(select(StepRun.id).where(StepRun.step == "extract", StepRun.status == "running")).first())

    wait_until(extract_running, 240, "an extract batch running", logs)
    kill9(extract)
    with Session(get_engine(settings)) as s:
        validated = s.exec(select(func.count()).select_from(StepRun).where(StepRun.step == "validate_invoice")).one()
    kill9(toolchain)
    assert sum(st in FINAL for st in statuses(settings, ids).values()) < 50  # killed mid-run

    restarted = time.time()
    start("extract", "extract")
    start("toolchain", "ingest,toolchain")
    wait_until(lambda: all(st in FINAL for st in statuses(settings, ids).values()), 180,
               "all 50 invoices final within 3 minutes of the restart", logs, settings)
    assert time.time() - restarted < 180
    with Session(get_engine(settings)) as s:
        runs = s.exec(select(StepRun).where(StepRun.invoice_id.in_(ids))).all()
        per_step: dict[tuple[str, str], int] = {}
        for run in runs:
            per_step[(run.invoice_id, run.step)] = per_step.get((run.invoice_id, run.step), 0) + 1
            assert run.status in ("done", "failed"), (run.invoice_id, run.step, run.status)
        assert set(per_step.values()) == {1}  # each step recorded once
        assert {i for i, step in per_step if step == "extract"} == set(ids)
        for invoice_id in ids:
            assert len(s.exec(select(Payment).where(Payment.invoice_id == invoice_id)).all()) <= 1
        assert s.exec(select(DeadLetter)).all() == []  # a killed worker is no poison: nothing dead-lettered
    assert validated >= 0


def test_a_document_that_kills_its_worker_fails_after_n_attempts_and_spares_its_batch(cluster):
    settings, logs, start = cluster["settings"], cluster["logs"], cluster["start"]
    texts = [invoice_text(i) for i in range(5)]
    texts.insert(2, invoice_text(99) + f"Note: {POISON}\n")
    ids = send(settings, texts)
    poison_id = ids[2]
    start("extract", "extract")
    start("toolchain", "ingest,toolchain")
    wait_until(lambda: all(st in FINAL for st in statuses(settings, ids).values()), 300,
               "every invoice final", logs, settings)
    with Session(get_engine(settings)) as s:
        poison = s.get(Invoice, poison_id)
        assert poison.status == "failed" and "worker_crashed" in poison.error
        [letter] = s.exec(select(DeadLetter)).all()
        assert (letter.invoice_id, letter.step, letter.reason, letter.attempts) == (poison_id, "extract", "worker_crashed", 3)
        others = [s.get(Invoice, i) for i in ids if i != poison_id]
        assert all(inv.status != "failed" for inv in others), [(i.status, i.error) for i in others]
        extract_rows = s.exec(select(StepRun).where(StepRun.step == "extract", StepRun.invoice_id.in_(ids))).all()
        assert {r.invoice_id for r in extract_rows if r.status == "done"} == set(ids) - {poison_id}


PG_BIN = next(iter(sorted(Path("/usr/lib/postgresql").glob("*/bin"), reverse=True)), None)


class OwnServices:
    """A throwaway Postgres cluster and redis-server of this test's own, on free ports, that the
    test may restart without touching anyone else's (Redis appends every write to its log, as
    in docker-compose.yml)."""

    def __init__(self, root: Path):
        from cli.processes import free_port

        self.root, self.pg_port, self.redis_port = root, free_port(), free_port()
        self.pg_data, self.redis_dir = root / "pg", root / "redis"
        self.redis_dir.mkdir(parents=True)
        root.chmod(0o755)
        self.redis_proc = None
        self.as_postgres = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []

    @property
    def database_url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.pg_port}/postgres"

    @property
    def redis_url(self) -> str:
        return f"redis://127.0.0.1:{self.redis_port}/0"

    def _pg(self, *args: str) -> None:
        import subprocess

        subprocess.run([*self.as_postgres, str(PG_BIN / "pg_ctl"), "-D", str(self.pg_data), "-w", "-t", "60",
                        "-l", str(self.root / "pg.log"), *args], check=True, capture_output=True)

    def start_postgres(self) -> None:
        import shutil
        import subprocess

        if not self.pg_data.exists():
            self.pg_data.mkdir()
            if self.as_postgres:
                shutil.chown(self.root, "postgres")
                shutil.chown(self.pg_data, "postgres")
            subprocess.run([*self.as_postgres, str(PG_BIN / "initdb"), "-D", str(self.pg_data), "-A", "trust",
                            "-U", "postgres", "--no-sync"], check=True, capture_output=True)
        self._pg("start", "-o", f"-p {self.pg_port} -k {self.pg_data} -c listen_addresses=127.0.0.1 -c fsync=off")

    def stop_postgres(self) -> None:
        self._pg("stop", "-m", "fast")  # every open transaction is aborted, every connection dropped

    def start_redis(self) -> None:
        import subprocess

        self.redis_proc = subprocess.Popen(
            ["redis-server", "--port", str(self.redis_port), "--bind", "127.0.0.1", "--dir", str(self.redis_dir),
             "--appendonly", "yes", "--appendfsync", "always", "--save", ""],
            stdout=open(self.root / "redis.log", "a"), stderr=subprocess.STDOUT)
        import redis as redis_lib

        deadline = time.time() + 30
        while time.time() < deadline:
            try:
                if redis_lib.Redis(port=self.redis_port).ping():
                    return
            except redis_lib.ConnectionError:
                time.sleep(0.2)
        raise RuntimeError("redis-server did not start")

    def stop_redis(self) -> None:
        self.redis_proc.terminate()
        self.redis_proc.wait(timeout=30)

    def close(self) -> None:
        import contextlib

        if self.redis_proc is not None and self.redis_proc.poll() is None:
            self.stop_redis()
        with contextlib.suppress(Exception):
            self.stop_postgres()


@pytest.fixture
def own_services():
    import shutil
    import tempfile

    assert PG_BIN is not None and (PG_BIN / "initdb").exists(), "Postgres server binaries (deploy/apt-packages.txt)"
    root = Path(tempfile.mkdtemp(prefix="invoicechain-services-"))  # reachable by the postgres user
    root.chmod(0o755)
    services = OwnServices(root / "services")
    try:
        services.start_postgres()
        services.start_redis()
        yield services
    finally:
        services.close()
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def own_cluster(own_services, tiny_model_dir, tmp_path, monkeypatch):
    from invoicechain import config
    from invoicechain.db.session import init_db

    monkeypatch.setenv("DATABASE_URL", own_services.database_url)
    monkeypatch.setenv("INVOICECHAIN_DATA_DIR", str(tmp_path / "data"))
    config.get_settings.cache_clear()
    init_db(config.get_settings())
    yield from _worker_cluster(own_services.database_url, own_services.redis_url, tmp_path / "data", tiny_model_dir,
                               tmp_path, monkeypatch)
    from invoicechain.db.session import dispose_engines

    dispose_engines()


def test_redis_and_postgres_restarts_mid_run_lose_nothing(own_services, own_cluster):
    settings, logs, start = own_cluster["settings"], own_cluster["logs"], own_cluster["start"]
    ids = send(settings, [invoice_text(i) for i in range(20)])
    own_cluster["start_beat"]()
    start("extract", "extract")
    start("toolchain", "ingest,toolchain")

    def steps_done() -> int:
        from invoicechain.db.session import dispose_engines

        try:
            with Session(get_engine(settings)) as s:
                return s.exec(select(func.count()).select_from(StepRun).where(StepRun.status == "done")).one()
        except Exception:  # the database is restarting
            dispose_engines()
            return -1

    def mid_run() -> bool:
        return sum(st in FINAL for st in statuses(settings, ids).values()) < len(ids)

    from invoicechain.db.session import dispose_engines

    wait_until(lambda: steps_done() >= 10, 300, "ten steps done", logs)
    assert mid_run()
    own_services.stop_postgres()  # open transactions aborted, connections dropped
    time.sleep(3)
    own_services.start_postgres()
    dispose_engines()
    wait_until(lambda: steps_done() >= 30, 300, "thirty steps done after the Postgres restart", logs)
    assert mid_run()
    own_services.stop_redis()  # queued and unacknowledged messages are in the append-only file
    time.sleep(3)
    own_services.start_redis()

    def all_final() -> bool:
        try:
            return all(st in FINAL for st in statuses(settings, ids).values())
        except Exception:
            dispose_engines()
            return False

    wait_until(all_final, 600, "every invoice final after the restarts", logs, settings)
    with Session(get_engine(settings)) as s:
        assert len(s.exec(select(Invoice).where(Invoice.id.in_(ids))).all()) == 20  # no invoice lost
        invoices = s.exec(select(Invoice).where(Invoice.id.in_(ids))).all()
        assert [inv.id for inv in invoices if inv.status == "failed"] == [], [(i.status, i.error) for i in invoices]
        runs = s.exec(select(StepRun).where(StepRun.invoice_id.in_(ids))).all()
        per_step: dict[tuple[str, str], int] = {}
        for run in runs:
            per_step[(run.invoice_id, run.step)] = per_step.get((run.invoice_id, run.step), 0) + 1
            assert run.status in ("done", "failed"), (run.invoice_id, run.step, run.status)
        assert set(per_step.values()) == {1}  # each step recorded once
        assert {i for i, step in per_step if step == "extract"} == set(ids)  # every invoice extracted
        for invoice_id in ids:
            assert len(s.exec(select(Payment).where(Payment.invoice_id == invoice_id)).all()) <= 1
        assert s.exec(select(DeadLetter)).all() == []
