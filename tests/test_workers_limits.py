"""Time limits of the extract batches and the broker's visibility timeout."""

from __future__ import annotations

from invoicechain.config import Settings
from workers.celery_app import broker_settings


def test_an_extract_batch_gets_time_for_each_of_its_documents():
    s = Settings(task_soft_time_limit_s=300, task_time_limit_s=360, extract_time_per_doc_s=60)
    assert s.extract_time_limits(1) == (360, 420)
    assert s.extract_time_limits(16) == (300 + 16 * 60, 360 + 16 * 60)
    soft, hard = s.extract_time_limits(9)
    assert soft < hard


def test_no_message_is_redelivered_while_a_task_may_still_run():
    s = Settings(redis_url="redis://127.0.0.1:6379/0", extract_batch_size=64, extract_time_per_doc_s=600,
                 training_time_limit_s=3600)
    visibility = broker_settings(s)["broker_transport_options"]["visibility_timeout"]
    assert visibility > s.extract_time_limits(64)[1] > s.training_time_limit_s
    assert visibility > s.task_time_limit_s


def test_the_extract_pool_gets_the_batch_limits(monkeypatch):
    """ExtractBatches.flush hands the batch's limits to the worker pool."""
    from workers import tasks

    calls = []

    class RecordingPool:
        def apply_async(self, fn, args, **kwargs):
            calls.append(kwargs)

    class Req:
        def __init__(self, i):
            self.task = tasks.extract
            self._payload = ((f"inv-{i}",), {}, {"chain": None})
            self.root_id = None

    monkeypatch.setattr(tasks.SimpleRequest, "from_request", classmethod(lambda cls, r: cls(
        id=f"t{id(r)}", name="invoicechain.extract", args=r._payload[0], kwargs={}, delivery_info={},
        hostname="h", ignore_result=True, reply_to=None, correlation_id=None, request_dict={})))
    monkeypatch.setattr(tasks.extract, "_pool", RecordingPool(), raising=False)
    tasks.extract.flush([Req(i) for i in range(5)])
    soft, hard = tasks.get_settings().extract_time_limits(5)
    assert calls and calls[0]["soft_timeout"] == soft and calls[0]["timeout"] == hard
