"""The chain for one invoice: ingest → extract → validate_invoice → match_po → run_approval →
trigger_payment, or the tail of it from any step (after an approval or a correction)."""

from __future__ import annotations

from celery import chain

from invoicechain.decisions import ALL_STEPS, Step
from invoicechain.pipeline import steps_from
from workers import tasks

#: Each step's task: the task of `workers.tasks` named as the step.
TASKS = {step: getattr(tasks, step.value) for step in ALL_STEPS}


def invoice_chain(invoice_id: str, start: str = Step.INGEST):
    """The signature of the chain from `start` on; every link gets the invoice id from the one before."""
    names = steps_from(start)
    sigs = [TASKS[names[0]].s(invoice_id)] + [TASKS[name].s() for name in names[1:]]
    return chain(*sigs).on_error(tasks.mark_failed.s())


def enqueue_invoice(invoice_id: str, start: str = Step.INGEST) -> str:
    """Send the chain to the broker; returns the id of its last task."""
    return invoice_chain(invoice_id, start).apply_async().id
