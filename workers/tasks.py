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

from celery import Task, shared_task, signals
from celery.canvas import signature
from celery.exceptions import SoftTimeLimitExceeded
from celery_batches import Batches, SimpleRequest, partition
from celery_batches.trace import apply_batches_task

from invoicechain import pipeline
from ingestion import documents
from invoicechain.config import get_settings
from invoicechain.decisions import Decision, Step

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


class InvoiceFailed(Exception):
    """The step ended its invoice `failed` (a damaged PDF, say): the task fails too, so Flower
    and the result backend show FAILURE with the invoice's reason, not SUCCESS."""


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
    throws = (InvoiceFailed,)  # an expected outcome: logged as a failure without a traceback

    def on_failure(self, exc, task_id, args, kwargs, einfo):
        if isinstance(exc, InvoiceFailed):
            return  # the step has already recorded the invoice's failure and its reason
        invoice_id = args[0] if args else kwargs.get("invoice_id")
        if isinstance(invoice_id, str):
            pipeline.fail_invoice(invoice_id, self.step, _reason(self.step, exc))

    def __call__(self, *args, **kwargs):
        """Count the start in Postgres (the crash cap), run the step, clear the count when it ends
        (a step that finishes clears it in its own transaction; any other end clears it here)."""
        from invoicechain import recovery

        invoice_id = args[0] if args else kwargs.get("invoice_id")
        if not (self.step and isinstance(invoice_id, str)):
            return super().__call__(*args, **kwargs)
        try:
            verdict = recovery.start_attempt(invoice_id, self.step)
        except TRANSIENT as exc:  # the database is restarting: come back later, lose nothing
            raise self.retry(exc=exc, countdown=min(60, 2 ** (self.request.retries + 1)), max_retries=None) from exc
        if verdict.exhausted:
            self.request.chain = None  # failed with worker_crashed and dead-lettered
            return invoice_id
        try:
            result = super().__call__(*args, **kwargs)
        except BaseException:  # a handled end (failure recorded, or a retry): not a crash
            recovery.end_attempt(invoice_id, self.step)
            raise
        return result


def _reason(step: str | None, exc: BaseException) -> str:
    if isinstance(exc, SoftTimeLimitExceeded):
        return f"The {step} step ran past its time limit."
    return f"The {step} step failed: {type(exc).__name__}: {exc}"[:2000]


def _continue_or_stop(task: Task, result: pipeline.StepResult) -> str:
    if not result.proceed:
        task.request.chain = None  # the invoice stops here (terminal or waiting for a person)
    if result.decision == Decision.FAILED:
        raise InvoiceFailed(f"Invoice {result.invoice_id} failed at {result.step}: {_invoice_error(result.invoice_id)}")
    return result.invoice_id


def _invoice_error(invoice_id: str) -> str:
    from invoicechain.db.session import session_scope
    from invoicechain.db.tables import Invoice

    with session_scope() as session:
        inv = session.get(Invoice, invoice_id)
        return (inv.error if inv is not None and inv.error else "see the invoice")[:500]


@shared_task(bind=True, base=PipelineTask, name="invoicechain.ingest")
def ingest(self, invoice_id: str) -> str:
    """PDF text and page count."""
    return _continue_or_stop(self, documents.run_ingest(invoice_id))


ingest.step = Step.INGEST


def _toolchain_task(step: str):
    @shared_task(bind=True, base=PipelineTask, name=f"invoicechain.{step}")
    def run(self, invoice_id: str) -> str:
        return _continue_or_stop(self, pipeline.run_toolchain_step(invoice_id, step, proposer=toolchain_proposer(step)))

    run.step = step
    run.__doc__ = f"The {step} step: rules decide, the toolchain adapter proposes."
    return run


validate_invoice = _toolchain_task(Step.VALIDATE)
match_po = _toolchain_task(Step.MATCH_PO)
run_approval = _toolchain_task(Step.APPROVAL)
trigger_payment = _toolchain_task(Step.PAYMENT)


@shared_task(name="invoicechain.mark_failed")
def mark_failed(request, exc, traceback) -> None:
    """Error callback of every invoice chain (runs in the worker where the step failed)."""
    if isinstance(exc, InvoiceFailed) or type(exc).__name__ == "InvoiceFailed":
        return  # recorded by the step itself
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

        def on_error(einfo):
            self._batch_done()
            from billiard.exceptions import WorkerLostError

            exc = getattr(einfo, "exception", einfo)
            exc = getattr(exc, "exc", exc)  # billiard hands the pool's error wrapped with its traceback
            lost = isinstance(exc, WorkerLostError)
            for req in acks_late:
                if lost:  # the pool process died (a crash, kill -9): deliver the batch again now
                    req.reject(requeue=True)
                else:  # hard time limit: the invoices fail with the reason, the messages are done
                    pipeline.fail_invoice(req.args[0], Step.EXTRACT, f"The extract step failed: {exc!r}"[:2000])
                    req.acknowledge()

        # The time limits grow with the batch: one limit for a whole batch would fail every
        # invoice of a large batch on a slow machine.
        soft, hard = get_settings().extract_time_limits(len(requests))
        self._in_flight += 1
        return self._pool.apply_async(
            apply_batches_task, (self, (simple,), 0, None), accept_callback=on_accepted, callback=on_return,
            error_callback=on_error, soft_timeout=soft, timeout=hard,
        )


@signals.task_received.connect
def _announce_batched_request(request=None, **_: Any) -> None:
    """celery-batches buffers extract requests without the `task-received` event the default
    strategy sends, so Flower never learnt their name or invoice id: send it here."""
    if request is None or getattr(request, "name", None) != "invoicechain.extract":
        return
    request.send_event(
        "task-received", name=request.name, args=request.argsrepr, kwargs=request.kwargsrepr,
        root_id=request.root_id, parent_id=request.parent_id, retries=request.request_dict.get("retries", 0),
        eta=request.eta, expires=request.expires,
    )


def _announce_started(task: Task, requests: list[SimpleRequest]) -> None:
    """Each invoice of the batch shows as started (sent from the pool process, before its outcome)."""
    try:
        with task.app.events.default_dispatcher(hostname=requests[0].hostname if requests else None) as events:
            for req in requests:
                events.send("task-started", uuid=req.id)  # the dispatcher adds this process's pid
    except Exception as exc:  # monitoring never stops extraction
        log.warning("task-started events not sent: %s", exc)


def _finish_request(task: Task, req: SimpleRequest, result: pipeline.StepResult, runtime_s: float) -> None:
    """Record success for one request of a batch and start the rest of its chain.

    An invoice the step left failed, or one that does not exist, is a failed task."""
    if result.decision == Decision.FAILED or (result.decision is None and not result.replayed):
        reason = "no such invoice" if result.decision is None else "the invoice failed"
        with task.app.events.default_dispatcher(hostname=req.hostname) as events:
            events.send("task-failed", uuid=req.id, exception=f"InvoiceFailed('{result.invoice_id}: {reason}')", traceback="")
        return
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


@shared_task(
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
    _announce_started(self, requests)
    _extract_guarded(self, by_id, t0)
    return None


def _extract_guarded(task: Task, by_id: dict[str, list[SimpleRequest]], t0: float) -> None:
    """Decode with every start counted in Postgres. Invoices that never crashed a worker go in
    one batch; an invoice whose earlier start never ended (its worker died under it) is decoded
    and saved alone, counted just before, so a document that kills its worker is the only one
    charged for it and is dead-lettered past `max_step_attempts`."""
    from invoicechain import recovery
    from invoicechain.db.session import session_scope

    try:
        with session_scope() as session:
            prior = recovery.attempts_of(session, list(by_id), Step.EXTRACT)
    except TRANSIENT as exc:
        _requeue_or_fail(task, [r for reqs in by_id.values() for r in reqs], exc)
        return
    clean = [i for i in by_id if not prior.get(i)]
    suspects = sorted((i for i in by_id if prior.get(i)), key=lambda i: prior[i])
    if clean:
        _extract_group(task, {i: by_id[i] for i in clean}, t0)
    for invoice_id in suspects:
        _extract_group(task, {invoice_id: by_id[invoice_id]}, t0)


def _extract_group(task: Task, by_id: dict[str, list[SimpleRequest]], t0: float) -> None:
    """One batched, constrained generation for `by_id`, each result saved and handed on."""
    from invoicechain import recovery

    requests = [r for reqs in by_id.values() for r in reqs]
    try:
        for invoice_id in list(by_id):
            if recovery.start_attempt(invoice_id, Step.EXTRACT).exhausted:
                by_id.pop(invoice_id)  # failed with worker_crashed and dead-lettered: its chain ends
        todo = documents.extraction_inputs(list(by_id))
        _crash_if_marked(todo)
        t_model = time.perf_counter()
        results = model_runtime().extract(list(todo.values())) if todo else []
        model_s = time.perf_counter() - t_model
        _recall_vendors(todo, results)
    except TRANSIENT + (MemoryError,) as exc:
        for invoice_id in by_id:
            recovery.end_attempt(invoice_id, Step.EXTRACT)
        _requeue_or_fail(task, requests, exc)
        return
    except Exception as exc:  # the whole batch failed in the model: every invoice gets the reason
        log.exception("extraction batch of %d failed", len(requests))
        for invoice_id, reqs in by_id.items():
            for req in reqs:
                _fail_request(task, req, invoice_id, _reason(Step.EXTRACT, exc))
            recovery.end_attempt(invoice_id, Step.EXTRACT)
        return
    done = dict(zip(todo, results))
    runtime_s = time.perf_counter() - t0
    for invoice_id, reqs in by_id.items():
        try:
            if invoice_id in done:
                step_t0 = pipeline.batched_step_start(model_s, t_model - t0, len(by_id))
                result = documents.save_extraction(invoice_id, done[invoice_id], t0=step_t0, model_ms=1000 * model_s)
            else:  # already extracted (redelivery) or unknown invoice
                result = pipeline.extraction_replay(invoice_id) or pipeline.StepResult(invoice_id, Step.EXTRACT, None, False)
        except TRANSIENT as exc:  # Postgres went away: the extraction is decoded again later
            log.warning("saving extraction for %s failed for now (%s): sent again", invoice_id, exc)
            recovery.end_attempt(invoice_id, Step.EXTRACT)
            _requeue_or_fail(task, reqs, exc)
            continue
        except Exception as exc:
            log.exception("saving extraction for %s failed", invoice_id)
            for req in reqs:
                _fail_request(task, req, invoice_id, _reason(Step.EXTRACT, exc))
            recovery.end_attempt(invoice_id, Step.EXTRACT)
            continue
        for req in reqs:
            _hand_on(task, req, result, runtime_s)
        recovery.end_attempt(invoice_id, Step.EXTRACT)


#: Seconds between tries to hand a saved extraction on while the broker is away.
HAND_ON_BACKOFF_S = (0.5, 1, 2, 4, 8, 15)


def _hand_on(task: Task, req: SimpleRequest, result: pipeline.StepResult, runtime_s: float) -> None:
    """`_finish_request`, tried again while the broker is unreachable. The extraction is saved
    whatever happens: an invoice whose next step could not be sent is left in `processing`
    and the reaper sends that step past its deadline; it is never failed for the broker."""
    for pause in (*HAND_ON_BACKOFF_S, None):
        try:
            _finish_request(task, req, result, runtime_s)
            return
        except TRANSIENT as exc:
            if pause is None:
                log.error("could not hand %s on (%s): the reaper sends its next step", result.invoice_id, exc)
                return
            log.warning("handing %s on failed (%s): again in %.1f s", result.invoice_id, exc, pause)
            time.sleep(pause)


def _recall_vendors(todo: dict[str, str], results: list) -> None:
    """Per-vendor memories learned from reviewers' corrections read their vendor's fields."""
    from models.vendor_memory import load_memories, recall

    memories = load_memories(get_settings().resolved_vendor_memory_file)
    for text, result in zip(todo.values(), results):
        result.memory = recall(memories, text, result) if memories else None


def _crash_if_marked(todo: dict[str, str]) -> None:
    """Fault injection for recovery drills (settings.crash_marker): exit as a killed worker would."""
    import os

    marker = get_settings().crash_marker
    if marker and any(marker in text for text in todo.values()):
        log.error("crash marker found: this worker process exits now")
        os._exit(137)


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


class TrainingTask(Task):
    """A training task that dies (hard time limit, lost worker) leaves its job `failed` with the reason."""

    def on_failure(self, exc, task_id, args, kwargs, einfo):
        from training.jobs import mark_failed

        if args:
            mark_failed(str(args[0]), f"the training task stopped: {type(exc).__name__}: {exc}; "
                        "no version was registered and the active adapter is unchanged")


@shared_task(
    bind=True,
    base=TrainingTask,
    name="invoicechain.train_adapter",
    acks_late=True,
    soft_time_limit=get_settings().training_time_limit_s - 60,
    time_limit=get_settings().training_time_limit_s,
    max_retries=0,
)
def train_adapter(self, job_id: str) -> dict:
    """A LoRA fine-tuning job; PROGRESS states carry step, loss and eval loss for Flower and the API.

    A redelivered job (its worker was killed) ends `failed` with the reason; nothing is registered.
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
