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

from invoicechain import enums
from invoicechain.config import Settings, get_settings

QUEUES: tuple[enums.Queue, ...] = tuple(enums.Queue)

#: Task name -> queue, derived from the steps: `invoicechain.<step>` runs on its step's queue.
TASK_ROUTES = {
    **{f"invoicechain.{step}": {"queue": queue} for step, queue in enums.STEP_QUEUE.items()},
    "invoicechain.mark_failed": {"queue": enums.Queue.TOOLCHAIN},
    "invoicechain.train_adapter": {"queue": enums.Queue.TRAINING},
}
#: Modules of `workers` that define tasks (with `shared_task`), imported when the app is made.
TASK_MODULES = ("tasks", "recovery_tasks", "inbox_tasks")


def broker_settings(settings: Settings, queues: list[str] | tuple[str, ...] | None = None) -> dict:
    """Broker options; `queues`: those a worker consumes, which set its visibility timeout.

    Each queue has its own visibility timeout (extract and toolchain in minutes, training
    its own hours): Redis keeps a consumer's unacknowledged messages in one hash per
    worker group (`unacked:<queues>`), so a training job's long timeout never delays the
    redelivery of an extract batch whose worker was killed, and the extract worker's short
    one never redelivers a training job that is still running.
    """
    from invoicechain.recovery import queue_visibility_s

    names = sorted(queues) if queues else list(QUEUES)
    visibility = max(queue_visibility_s(q, settings) for q in names)
    if settings.redis_url:
        group = ",".join(names) if queues else "all"
        return {
            "broker_url": settings.redis_url,
            "result_backend": settings.redis_url,
            "broker_transport_options": {
                "visibility_timeout": visibility,
                "unacked_key": f"unacked:{group}",
                "unacked_index_key": f"unacked_index:{group}",
                "unacked_mutex_key": f"unacked_mutex:{group}",
                "unacked_restore_interval": settings.unacked_restore_interval_s,
                "unacked_restore_throttle": 1,
            },
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
    # Not made the thread's current app: a second app (a client of another broker) must never
    # capture the shared tasks that `app` below serves as the default.
    app = Celery("invoicechain", set_as_current=False)
    app.conf.update(
        broker_settings(settings),
        task_serializer="json",
        result_serializer="json",
        accept_content=["json"],
        result_accept_content=["json"],
        task_queues=[Queue(q, Exchange(q), routing_key=q) for q in QUEUES],
        task_default_queue=enums.Queue.TOOLCHAIN,
        task_routes=TASK_ROUTES,
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        task_soft_time_limit=settings.task_soft_time_limit_s,
        task_time_limit=settings.task_time_limit_s,
        task_track_started=True,
        task_send_sent_event=settings.task_sent_events,
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
# The default app of every thread (a request handler's too): `shared_task`s resolve to it.
app.set_default()


def reconfigure(settings: Settings) -> Celery:
    """Point the app at the broker of `settings` (after the environment changed, e.g. in tests)."""
    app.conf.update(broker_settings(settings))
    app._pool = None
    app.amqp._producer_pool = None
    app.__dict__.pop("backend", None)  # cached property: rebuilt for the new URL
    app._local = type(app._local)()
    return app


def configure_worker(queues: list[str], settings: Settings | None = None) -> Celery:
    """Broker options of a worker consuming `queues` (its visibility timeout and unacked hash)."""
    settings = settings or get_settings()
    app.conf.update(broker_settings(settings, queues))
    return app


# As paperless-ngx: the task modules use `shared_task` and never import this module for it;
# the app finds them here (the reaper's and the inbox poller's modules also add their beat entries).
for _module in TASK_MODULES:
    app.autodiscover_tasks(["workers"], related_name=_module, force=True)
