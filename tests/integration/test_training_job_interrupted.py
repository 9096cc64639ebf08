"""A training job whose worker was killed (its message redelivered while the row says
`running`, or the task failing outside the job) ends `failed` with a reason; nothing is
registered and the active adapter stays as it was."""

from __future__ import annotations

from sqlmodel import select

from invoicechain.db.session import session_scope
from invoicechain.db.tables import AdapterVersion, TrainingJob
from training.jobs import mark_failed, run_training_job


def _job(settings, **kw) -> str:
    with session_scope(settings) as s:
        job = TrainingJob(adapter="extract", data_source="synthetic", params={"max_steps": 2}, **kw)
        s.add(job)
        s.flush()
        return job.id


def test_a_redelivered_running_job_fails_with_the_reason(settings):
    job_id = _job(settings, status="running", progress={"phase": "training", "step": 3, "total_steps": 9})
    out = run_training_job(job_id, settings)
    assert out["status"] == "failed"
    with session_scope(settings) as s:
        job = s.get(TrainingJob, job_id)
        assert job.status == "failed" and job.finished_at is not None
        assert "interrupted" in job.error and "at step 3" in job.error and "unchanged" in job.error
        assert s.exec(select(AdapterVersion)).all() == []
    # A second redelivery repeats nothing.
    assert run_training_job(job_id, settings)["status"] == "failed"


def test_a_task_that_dies_fails_its_job_once(settings):
    job_id = _job(settings, status="running")
    mark_failed(job_id, "the training task stopped: WorkerLostError", settings)
    mark_failed(job_id, "something later", settings)
    with session_scope(settings) as s:
        job = s.get(TrainingJob, job_id)
        assert job.status == "failed" and job.error == "the training task stopped: WorkerLostError"
    done = _job(settings, status="done")
    mark_failed(done, "late failure", settings)
    with session_scope(settings) as s:
        assert s.get(TrainingJob, done).status == "done"
