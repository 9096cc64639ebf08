"""The Celery app, configured from settings.

Broker: Redis when `REDIS_URL` is set, else kombu's filesystem transport under the data
dir (the embedded default: real worker processes and real messages, no service).
Reliability: JSON only, late acks, requeue on worker loss, prefetch 1 (the extract
worker raises it to its batch size, see `invoicechain worker`), and a visibility timeout
longer than every hard time limit so Redis never redelivers a task that is still running.
"""

from __future__ import annotations

from celery import Celery
from kombu import Exchange, Queue

from invoicechain.config import Settings, get_settings

QUEUES = ("ingest", "extract", "toolchain", "training")

TASK_ROUTES = {
    "invoicechain.ingest": {"queue": "ingest"},
    "invoicechain.extract": {"queue": "extract"},
    "invoicechain.validate_invoice": {"queue": "toolchain"},
    "invoicechain.match_po": {"queue": "toolchain"},
    "invoicechain.run_approval": {"queue": "toolchain"},
    "invoicechain.trigger_payment": {"queue": "toolchain"},
    "invoicechain.mark_failed": {"queue": "toolchain"},
    "invoicechain.train_adapter": {"queue": "training"},
}


def broker_settings(settings: Settings) -> dict:
    longest = max(settings.extract_time_limits(settings.extract_batch_size)[1], settings.training_time_limit_s)
    visibility = max(settings.task_time_limit_s, longest) + 600
    if settings.redis_url:
        return {
            "broker_url": settings.redis_url,
            "result_backend": settings.redis_url,
            "broker_transport_options": {"visibility_timeout": visibility},
            "result_backend_transport_options": {
                "visibility_timeout": visibility,
                "retry_policy": {"max_retries": 2, "interval_start": 0, "interval_step": 0.5, "interval_max": 1},
            },
        }
    folder = settings.broker_dir.resolve()
    for sub in ("out", "processed", "control"):
        (folder / sub).mkdir(parents=True, exist_ok=True)
    results = (settings.data_dir / "celery-results.db").resolve()
    return {
        "broker_url": "filesystem://",
        "broker_transport_options": {
            "data_folder_in": str(folder / "out"),
            "data_folder_out": str(folder / "out"),
            "processed_folder": str(folder / "processed"),
            "control_folder": str(folder / "control"),
            "store_processed": False,
            "visibility_timeout": visibility,
        },
        "result_backend": f"db+sqlite:///{results}",
    }


def make_celery(settings: Settings | None = None) -> Celery:
    settings = settings or get_settings()
    app = Celery("invoicechain")
    app.conf.update(
        broker_settings(settings),
        task_serializer="json",
        result_serializer="json",
        accept_content=["json"],
        result_accept_content=["json"],
        task_queues=[Queue(q, Exchange(q), routing_key=q) for q in QUEUES],
        task_default_queue="toolchain",
        task_routes=TASK_ROUTES,
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        task_soft_time_limit=settings.task_soft_time_limit_s,
        task_time_limit=settings.task_time_limit_s,
        task_track_started=True,
        task_send_sent_event=True,
        worker_send_task_events=True,
        result_extended=True,
        result_expires=7 * 24 * 3600,
        broker_connection_retry_on_startup=True,
        broker_connection_timeout=3,
        # Publishing from the API fails fast when the broker is down: the document is
        # already stored and the client is told to resubmit (503), not kept waiting.
        task_publish_retry_policy={"max_retries": 2, "interval_start": 0, "interval_step": 0.5, "interval_max": 1},
        worker_hijack_root_logger=False,
        timezone="UTC",
        enable_utc=True,
    )
    return app


app = make_celery()


def reconfigure(settings: Settings) -> Celery:
    """Point the app at the broker of `settings` (after the environment changed, e.g. in tests)."""
    app.conf.update(broker_settings(settings))
    app._pool = None
    app.amqp._producer_pool = None
    app.__dict__.pop("backend", None)  # cached property: rebuilt for the new URL
    app._local = type(app._local)()
    return app


import workers.tasks  # noqa: E402,F401  (registers the tasks on `app`)
