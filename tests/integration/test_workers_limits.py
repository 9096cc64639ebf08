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


def test_a_busy_pool_lets_the_next_batch_fill(monkeypatch):
    """The flush timer hands a partial batch on only when the pool is free; a full one goes at once."""
    from celery_batches import Batches

    from workers import tasks

    task = tasks.extract
    flushed: list[int] = []
    callbacks: list = []

    class OneSlotPool:
        num_processes = 1

        def apply_async(self, fn, args, callback=None, **kwargs):
            flushed.append(len(args[1][0]))
            callbacks.append(callback)

    class Req:
        def __init__(self, i):
            self.task = task
            self._payload = ((f"inv-{i}",), {}, {"chain": None})
            self.root_id = None
            self.eta = None
            self.acked = False

        def acknowledge(self):
            self.acked = True

    monkeypatch.setattr(tasks.SimpleRequest, "from_request", classmethod(lambda cls, r: cls(
        id=f"t{id(r)}", name="invoicechain.extract", args=r._payload[0], kwargs={}, delivery_info={},
        hostname="h", ignore_result=True, reply_to=None, correlation_id=None, request_dict={})))
    monkeypatch.setattr(task, "_pool", OneSlotPool(), raising=False)
    monkeypatch.setattr(task, "_in_flight", 0, raising=False)
    monkeypatch.setattr(task, "_tref", None, raising=False)
    Batches.__init__(task)  # fresh buffers
    task._pool = OneSlotPool()
    every = task.flush_every

    first = [Req(i) for i in range(3)]
    for r in first:
        task._buffer.put(r)
    task._do_flush()  # the pool is free: a partial batch goes
    assert flushed == [3] and task._in_flight == 1

    for i in range(3, 6):
        task._buffer.put(Req(i))
    task._do_flush()  # timer tick while the pool is busy: the batch keeps filling
    assert flushed == [3] and task._buffer.qsize() == 3

    for i in range(6, 6 + every - 3):
        task._buffer.put(Req(i))
    task._do_flush()  # a full batch is handed on even while the pool is busy
    assert flushed == [3, every] and task._in_flight == 2

    callbacks[0](None)  # the first batch returns: its messages are acknowledged
    assert all(r.acked for r in first) and task._in_flight == 1
    callbacks[1](None)
    assert task._in_flight == 0
    task._buffer.put(Req(99))
    task._do_flush()
    assert flushed == [3, every, 1]
