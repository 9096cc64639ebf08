"""Backpressure: when more documents wait for extraction than `settings.extract_queue_limit`,
uploads answer 429 with Retry-After and pollers (mail, drop folder) pause, so Redis and
memory stay bounded under a flood.

The depth is what waits on the broker for the ingest and extract queues (Redis list
lengths; a document passes ingest on its way to extraction). With the embedded filesystem
transport there is no shared depth to read, and no backpressure.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

from invoicechain.config import Settings, get_settings
from invoicechain.enums import Queue

log = logging.getLogger(__name__)

#: Queues whose waiting messages count toward the limit (names as routed in workers/celery_app.py).
QUEUES = (Queue.INGEST, Queue.EXTRACT)
#: Seconds a measured depth is reused: a burst of uploads costs one Redis round trip.
CACHE_S = 0.5

_clients: dict[str, object] = {}
_cache: dict[str, tuple[float, int]] = {}


@dataclass(frozen=True)
class Pressure:
    depth: int
    limit: int

    @property
    def over(self) -> bool:
        return self.limit > 0 and self.depth > self.limit


def _client(url: str):
    import redis

    client = _clients.get(url)
    if client is None:
        client = _clients[url] = redis.Redis.from_url(url, socket_timeout=2, socket_connect_timeout=2)
    return client


def queue_depth(settings: Settings | None = None) -> int:
    """Messages waiting on the broker in QUEUES (0 without Redis or when Redis cannot answer)."""
    settings = settings or get_settings()
    if not settings.redis_url:
        return 0
    now = time.monotonic()
    cached = _cache.get(settings.redis_url)
    if cached and now - cached[0] < CACHE_S:
        return cached[1]
    try:
        pipe = _client(settings.redis_url).pipeline(transaction=False)
        for queue in QUEUES:
            pipe.llen(queue)
        depth = int(sum(pipe.execute()))
    except Exception as exc:  # the broker being down is the enqueue's error to report, not ours
        log.warning("queue depth unknown: %s", exc)
        depth = 0
    _cache[settings.redis_url] = (now, depth)
    return depth


def pressure(settings: Settings | None = None) -> Pressure:
    settings = settings or get_settings()
    if settings.extract_queue_limit <= 0:
        return Pressure(0, 0)
    return Pressure(queue_depth(settings), settings.extract_queue_limit)


class Backpressure(Exception):
    """Too much is waiting: try again after `retry_after` seconds."""

    def __init__(self, depth: int, limit: int, retry_after: int):
        super().__init__(f"{depth} documents wait for extraction, over the limit of {limit}: try again in {retry_after} s.")
        self.depth, self.limit, self.retry_after = depth, limit, retry_after


def check_cached(settings: Settings | None = None) -> bool:
    """`check` without a round trip: raise Backpressure from a depth measured within CACHE_S.
    False when no such depth is known (call `check`, which asks Redis); True when it is under."""
    settings = settings or get_settings()
    if settings.extract_queue_limit <= 0 or not settings.redis_url:
        return True
    cached = _cache.get(settings.redis_url)
    if not cached or time.monotonic() - cached[0] >= CACHE_S:
        return False
    p = Pressure(cached[1], settings.extract_queue_limit)
    if p.over:
        raise Backpressure(p.depth, p.limit, settings.backpressure_retry_after_s)
    return True


def check(settings: Settings | None = None) -> None:
    """Raise Backpressure when the queues are over the limit (the API turns it into 429)."""
    settings = settings or get_settings()
    p = pressure(settings)
    if p.over:
        raise Backpressure(p.depth, p.limit, settings.backpressure_retry_after_s)
