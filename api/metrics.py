"""Prometheus metrics read at scrape time from the broker and Postgres, so every API
process reports the same truth (the work happens in worker processes, not here).

- `invoicechain_queue_depth{queue}`: messages waiting in each broker queue.
- `invoicechain_step_duration_seconds{step}`: histogram of finished steps' durations.
- `invoicechain_step_outcomes{step,decision,reason}`: finished steps by decision and reason code.
- `invoicechain_invoices{status}`: invoices by status.
- `invoicechain_review_backlog{status}` and `invoicechain_review_oldest_age_seconds{status}`:
  invoices waiting for a person, and how long the oldest has waited.
"""

from __future__ import annotations

import logging
from collections import Counter
from pathlib import Path

from prometheus_client.core import GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.registry import REGISTRY, Collector

log = logging.getLogger(__name__)

#: Upper bounds of the step latency buckets, in seconds.
STEP_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0)


def queue_depths(settings) -> dict[str, int]:
    """Messages waiting per queue: Redis list lengths, or files in the filesystem broker."""
    from workers.celery_app import QUEUES

    if settings.redis_url:
        import redis

        client = redis.Redis.from_url(settings.redis_url, socket_timeout=2, socket_connect_timeout=2)
        try:
            pipe = client.pipeline()
            for q in QUEUES:
                pipe.llen(q)
            return dict(zip(QUEUES, (int(n) for n in pipe.execute())))
        finally:
            client.close()
    folder = Path(settings.broker_dir) / "out"
    counts = Counter(p.name.rsplit(".", 2)[-2] for p in folder.glob("*.msg")) if folder.is_dir() else Counter()
    return {q: counts.get(q, 0) for q in QUEUES}


class PipelineCollector(Collector):
    """Reads the figures on each scrape; a part that is down leaves its metrics out, never the scrape."""

    def collect(self):
        from invoicechain.config import get_settings

        settings = get_settings()
        try:
            depth = GaugeMetricFamily("invoicechain_queue_depth", "Messages waiting in the broker queue.", labels=["queue"])
            for q, n in queue_depths(settings).items():
                depth.add_metric([q], n)
            yield depth
        except Exception as exc:
            log.warning("queue depth unavailable: %s", exc)
        try:
            yield from self._database(settings)
        except Exception as exc:
            log.warning("database metrics unavailable: %s", exc)

    def _database(self, settings):
        from sqlalchemy import case
        from sqlmodel import Session, func, select

        from invoicechain.db.session import get_engine
        from invoicechain.db.tables import Invoice, StepRun, utcnow
        from invoicechain.decisions import WAITING_STATUSES
        from invoicechain.enums import StepRunStatus

        with Session(get_engine(settings)) as session:
            done = StepRun.status == StepRunStatus.DONE
            cols = [func.count(case((StepRun.duration_ms <= b * 1000, 1))) for b in STEP_BUCKETS]
            rows = session.exec(
                select(StepRun.step, func.count(), func.coalesce(func.sum(StepRun.duration_ms), 0.0), *cols)
                .where(done, StepRun.duration_ms.is_not(None)).group_by(StepRun.step)
            ).all()
            hist = HistogramMetricFamily("invoicechain_step_duration_seconds", "Duration of finished pipeline steps.",
                                         labels=["step"])
            for step, count, total_ms, *le in rows:
                buckets = [(str(b), int(n)) for b, n in zip(STEP_BUCKETS, le)] + [("+Inf", int(count))]
                hist.add_metric([step], buckets, float(total_ms) / 1000.0)
            yield hist

            outcomes = Counter()
            for step, decision, reasons in session.exec(select(StepRun.step, StepRun.decision, StepRun.reasons).where(done)):
                codes = [r.get("code") if isinstance(r, dict) else str(r) for r in (reasons or [])] or ["NONE"]
                for code in dict.fromkeys(codes):
                    outcomes[(step, decision or "NONE", code or "NONE")] += 1
            fam = GaugeMetricFamily("invoicechain_step_outcomes", "Finished steps by decision and reason code.",
                                    labels=["step", "decision", "reason"])
            for labels, n in sorted(outcomes.items()):
                fam.add_metric(list(labels), n)
            yield fam

            by_status = dict(session.exec(select(Invoice.status, func.count()).group_by(Invoice.status)).all())
            fam = GaugeMetricFamily("invoicechain_invoices", "Invoices by status.", labels=["status"])
            for status, n in sorted(by_status.items()):
                fam.add_metric([status], n)
            yield fam

            backlog = GaugeMetricFamily("invoicechain_review_backlog", "Invoices waiting for a person.", labels=["status"])
            oldest = GaugeMetricFamily("invoicechain_review_oldest_age_seconds",
                                       "How long the longest-waiting invoice has waited.", labels=["status"])
            now = utcnow()
            for status in sorted(WAITING_STATUSES):
                backlog.add_metric([status], by_status.get(status, 0))
                first = session.exec(select(func.min(Invoice.updated_at)).where(Invoice.status == status)).one()
                if first is not None and first.tzinfo is None:
                    first = first.replace(tzinfo=now.tzinfo)
                oldest.add_metric([status], max(0.0, (now - first).total_seconds()) if first else 0.0)
            yield backlog
            yield oldest


_collector: PipelineCollector | None = None


def register() -> None:
    """Add the collector to the default registry once per process."""
    global _collector
    if _collector is None:
        _collector = PipelineCollector()
        REGISTRY.register(_collector)
