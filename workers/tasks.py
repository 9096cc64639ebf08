"""One Celery task per pipeline step. Tasks are thin: they call invoicechain.pipeline
(the same code `invoicechain process` runs in-process) and hand the invoice id on.

A step that stops the invoice (needs OCR, invalid, waiting for approval) ends the chain
by clearing `request.chain`. Transient errors (database or broker connection) are
retried with exponential backoff and jitter; anything else fails the invoice with its
reason, through `on_failure` and the chain's error callback alike.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

from celery import Task, signals
from celery.canvas import signature
from celery.exceptions import SoftTimeLimitExceeded
from celery_batches import Batches, SimpleRequest, partition
from celery_batches.trace import apply_batches_task

from invoicechain import pipeline
from invoicechain.config import get_settings
from invoicechain.decisions import Step
from workers.celery_app import app

log = logging.getLogger(__name__)


def _transient_errors() -> tuple[type[BaseException], ...]:
    import redis.exceptions
    import sqlalchemy.exc
    from kombu.exceptions import OperationalError as KombuOperationalError

    return (
        sqlalchemy.exc.OperationalError,
        sqlalchemy.exc.InterfaceError,
        redis.exceptions.ConnectionError,
        redis.exceptions.TimeoutError,
        KombuOperationalError,
        ConnectionError,
        TimeoutError,
    )


TRANSIENT = _transient_errors()
MAX_RETRIES = 5


@signals.worker_process_init.connect
def _after_fork(**_: Any) -> None:
    """Connections are per process: never share a parent's pooled sockets after fork."""
    from invoicechain.db.session import dispose_engines

    dispose_engines()


class PipelineTask(Task):
    """Base for the steps: failure leaves the invoice `failed` with the reason.

    Results are not stored in the result backend: the invoice and step tables are the
    record, and Flower reads task events.
    """

    ignore_result = True
    autoretry_for = TRANSIENT
    retry_backoff = 2
    retry_backoff_max = 120
    retry_jitter = True
    max_retries = MAX_RETRIES
    step: str | None = None

    def on_failure(self, exc, task_id, args, kwargs, einfo):
        invoice_id = args[0] if args else kwargs.get("invoice_id")
        if isinstance(invoice_id, str):
            pipeline.fail_invoice(invoice_id, self.step, _reason(self.step, exc))


def _reason(step: str | None, exc: BaseException) -> str:
    if isinstance(exc, SoftTimeLimitExceeded):
        return f"The {step} step ran past its time limit."
    return f"The {step} step failed: {type(exc).__name__}: {exc}"[:2000]


def _continue_or_stop(task: Task, result: pipeline.StepResult) -> str:
    if not result.proceed:
        task.request.chain = None  # the invoice stops here (terminal or waiting for a person)
    return result.invoice_id


@app.task(bind=True, base=PipelineTask, name="invoicechain.ingest")
def ingest(self, invoice_id: str) -> str:
    """PDF text and page count."""
    return _continue_or_stop(self, pipeline.run_ingest(invoice_id))


ingest.step = Step.INGEST


def _toolchain_task(step: str):
    @app.task(bind=True, base=PipelineTask, name=f"invoicechain.{step}")
    def run(self, invoice_id: str) -> str:
        return _continue_or_stop(self, pipeline.run_toolchain_step(invoice_id, step, proposer=toolchain_proposer(step)))

    run.step = step
    run.__doc__ = f"The {step} step: rules decide, the toolchain adapter proposes."
    return run


validate_invoice = _toolchain_task(Step.VALIDATE)
match_po = _toolchain_task(Step.MATCH_PO)
run_approval = _toolchain_task(Step.APPROVAL)
trigger_payment = _toolchain_task(Step.PAYMENT)


@app.task(name="invoicechain.mark_failed")
def mark_failed(request, exc, traceback) -> None:
    """Error callback of every invoice chain (runs in the worker where the step failed)."""
    args = getattr(request, "args", None) or []
    invoice_id = args[0] if args and isinstance(args[0], str) else None
    step = (getattr(request, "task", "") or "").removeprefix("invoicechain.") or None
    if invoice_id:
        pipeline.fail_invoice(invoice_id, step, _reason(step, exc))


# --- the model, once per worker process --------------------------------------------------

_runtime = None
_runtime_lock = threading.Lock()


def model_runtime():
    """The base model with its adapters, loaded on first use in this process (after fork)."""
    global _runtime
    with _runtime_lock:
        if _runtime is None:
            from models.service import load_runtime

            _runtime = load_runtime(get_settings())
        else:
            from models.service import refresh_runtime

            refresh_runtime(_runtime, get_settings())
        return _runtime


def toolchain_proposer(step: str):
    """The toolchain adapter's `propose`, only when the step's mode asks for the model."""
    settings = get_settings()
    mode = {
        Step.VALIDATE: settings.validate_mode,
        Step.MATCH_PO: settings.match_po_mode,
        Step.APPROVAL: settings.approval_mode,
        Step.PAYMENT: settings.payment_mode,
    }[step]
    if mode == "rules":
        return None
    return lambda s, context: model_runtime().propose(s, context)


# --- extract: batched ------------------------------------------------------------------


class ExtractBatches(Batches):
    """celery-batches, keeping each request's chain so the batch can continue every chain.

    Batches stay full under load: while the pool is busy with a batch, the flush timer
    leaves a partial buffer to keep filling (a full one is still handed on, to start the
    moment the pool frees), and the worker's prefetch window holds two batches (see
    `invoicechain worker`). Without this, each batch's unacknowledged messages left room
    for only part of the next, and batches alternated in size (10, 6, 10, ...).
    """

    _in_flight = 0

    def _pool_slots(self) -> int:
        return max(1, int(getattr(self._pool, "num_processes", None) or getattr(self._pool, "limit", None) or 1))

    def _do_flush(self) -> None:
        if self._in_flight >= self._pool_slots() and self._buffer.qsize() < self.flush_every:
            return  # the pool is busy: let the batch fill; the timer calls again
        super()._do_flush()

    def _batch_done(self, *_: Any) -> None:
        self._in_flight = max(0, self._in_flight - 1)

    def flush(self, requests):
        acks_early, acks_late = partition(lambda r: bool(r.task.acks_late), requests)
        simple = []
        for req in requests:
            s = SimpleRequest.from_request(req)
            _, _, embed = req._payload
            s.chain = (embed or {}).get("chain")
            s.root_id = req.root_id
            simple.append(s)

        def on_accepted(pid, time_accepted):
            for req in acks_early:
                req.acknowledge()

        def on_return(result):
            self._batch_done()
            for req in acks_late:
                req.acknowledge()

        # The time limits grow with the batch: one limit for a whole batch would fail every
        # invoice of a large batch on a slow machine.
        soft, hard = get_settings().extract_time_limits(len(requests))
        self._in_flight += 1
        return self._pool.apply_async(
            apply_batches_task, (self, (simple,), 0, None), accept_callback=on_accepted, callback=on_return,
            error_callback=self._batch_done, soft_timeout=soft, timeout=hard,
        )


def _finish_request(task: Task, req: SimpleRequest, result: pipeline.StepResult, runtime_s: float) -> None:
    """Record success for one request of a batch and start the rest of its chain."""
    with task.app.events.default_dispatcher(hostname=req.hostname) as events:
        events.send("task-succeeded", uuid=req.id, result=repr(result.invoice_id), runtime=runtime_s)
    chain = list(getattr(req, "chain", None) or [])
    if result.proceed and chain:
        nxt = signature(chain.pop(), app=task.app)
        nxt.apply_async((result.invoice_id,), chain=chain, parent_id=req.id, root_id=getattr(req, "root_id", None) or req.id)


def _fail_request(task: Task, req: SimpleRequest, invoice_id: str, reason: str) -> None:
    pipeline.fail_invoice(invoice_id, Step.EXTRACT, reason)
    with task.app.events.default_dispatcher(hostname=req.hostname) as events:
        events.send("task-failed", uuid=req.id, exception=reason[:500], traceback="")


@app.task(
    bind=True,
    base=ExtractBatches,
    name="invoicechain.extract",
    flush_every=get_settings().extract_batch_size,
    flush_interval=get_settings().extract_batch_wait_s,
    acks_late=True,
    ignore_result=True,
)
def extract(self, requests: list[SimpleRequest]) -> None:
    """Extraction for every invoice in the batch with one batched, constrained generation."""
    t0 = time.perf_counter()
    by_id: dict[str, list[SimpleRequest]] = {}
    for req in requests:
        by_id.setdefault(req.args[0], []).append(req)
    try:
        todo = pipeline.extraction_inputs(list(by_id))
        t_model = time.perf_counter()
        results = model_runtime().extract(list(todo.values())) if todo else []
        model_s = time.perf_counter() - t_model
    except TRANSIENT + (MemoryError,) as exc:
        _requeue_or_fail(self, requests, exc)
        return None
    except Exception as exc:  # the whole batch failed in the model: every invoice gets the reason
        log.exception("extraction batch of %d failed", len(requests))
        for invoice_id, reqs in by_id.items():
            for req in reqs:
                _fail_request(self, req, invoice_id, _reason(Step.EXTRACT, exc))
        return None
    done = dict(zip(todo, results))
    runtime_s = time.perf_counter() - t0
    for invoice_id, reqs in by_id.items():
        try:
            if invoice_id in done:
                step_t0 = pipeline.batched_step_start(model_s, t_model - t0, len(by_id))
                result = pipeline.save_extraction(invoice_id, done[invoice_id], t0=step_t0, model_ms=1000 * model_s)
            else:  # already extracted (redelivery) or unknown invoice
                result = pipeline.extraction_replay(invoice_id) or pipeline.StepResult(invoice_id, Step.EXTRACT, None, False)
            for req in reqs:
                _finish_request(self, req, result, runtime_s)
        except Exception as exc:
            log.exception("saving extraction for %s failed", invoice_id)
            for req in reqs:
                _fail_request(self, req, invoice_id, _reason(Step.EXTRACT, exc))
    return None


def _requeue_or_fail(task: Task, requests: list[SimpleRequest], exc: BaseException) -> None:
    """Transient failure of a whole batch: send each request again with backoff, up to a limit."""
    for req in requests:
        attempt = int(req.kwargs.get("attempt", 0)) + 1
        invoice_id = req.args[0]
        if attempt > MAX_RETRIES:
            _fail_request(task, req, invoice_id, _reason(Step.EXTRACT, exc))
            continue
        chain = getattr(req, "chain", None)
        task.apply_async((invoice_id,), {"attempt": attempt}, countdown=min(120, 2**attempt), chain=chain)


# --- training ----------------------------------------------------------------------------


@app.task(
    bind=True,
    name="invoicechain.train_adapter",
    acks_late=True,
    soft_time_limit=get_settings().training_time_limit_s - 60,
    time_limit=get_settings().training_time_limit_s,
    max_retries=0,
)
def train_adapter(self, job_id: str) -> dict:
    """A LoRA fine-tuning job; PROGRESS states carry step, loss and eval loss for Flower and the API.

    A redelivered job (worker crash) resumes from its last checkpoint.
    """
    from training.jobs import job_cancel_requested, run_training_job

    settings = get_settings()
    last_check = [0.0, False]

    def progress(info: dict) -> None:
        self.update_state(state="PROGRESS", meta=info)

    def should_cancel() -> bool:
        now = time.monotonic()
        if now - last_check[0] > 5.0:  # one small query every few seconds, not every step
            last_check[0], last_check[1] = now, job_cancel_requested(job_id, settings)
        return last_check[1]

    return run_training_job(job_id, settings, progress=progress, should_cancel=should_cancel)
