"""Training jobs on the `training` queue: submit (synthetic data, an uploaded JSONL or the
reviewers' corrections), watch progress, cancel."""

from __future__ import annotations

import json
import uuid
from datetime import datetime, timezone
from typing import Annotated

from fastapi import APIRouter, HTTPException, Query, Request, Response, status
from sqlmodel import select

from api.deps import ReadAccess, SessionDep, SettingsDep, require_scope
from invoicechain.auth import Scope

TrainAccess = require_scope(Scope.TRAIN)
from api.schemas import TrainingJobIn, TrainingJobOut
from invoicechain.db.tables import TrainingJob
from invoicechain.clock import utcnow
from invoicechain.enums import FINISHED_JOB_STATUSES, AdapterName, TrainingJobStatus

router = APIRouter(prefix="/v1/training-jobs", tags=["training"])
TERMINAL = FINISHED_JOB_STATUSES


def _discard(path) -> None:
    """A refused upload leaves no file behind."""
    if path is not None:
        path.unlink(missing_ok=True)


EMPTY_BODY = ("The request body is empty: send a JSON object with `data_source` (synthetic, dataset or "
              "corrections), `adapter` and `params`, or a multipart upload with the JSONL `file`. No job was started.")


def _check_jsonl(path, settings) -> None:
    """Reject bad data before anything is queued: every problem with its line number, too few rows."""
    from training.data import DatasetError
    from training.jobs import JobRequestError, check_dataset

    try:
        check_dataset(path, settings)
    except JobRequestError as exc:
        raise HTTPException(422, {"message": f"{exc}; nothing was queued.", "problems": []}) from exc
    except DatasetError as exc:
        raise HTTPException(
            422,
            {
                "message": f"The training data has {len(exc.problems)} problem(s); nothing was queued.",
                "problems": [{"line": n, "reason": r} for n, r in exc.problems[:200]],
            },
        ) from exc


def _check_params(body: TrainingJobIn, settings) -> None:
    """Params, adapter and data source within bounds (training.jobs.check_params) or 422."""
    from training.jobs import JobRequestError, check_params

    try:
        check_params(body.params, body.adapter, body.data_source, settings)
    except JobRequestError as exc:
        raise HTTPException(422, f"Bad training params: {exc}. No job was started.") from exc


@router.post("", status_code=status.HTTP_202_ACCEPTED, response_model=TrainingJobOut, dependencies=[TrainAccess])
async def create_training_job(request: Request, response: Response, session: SessionDep, settings: SettingsDep) -> TrainingJobOut:
    """JSON `{"adapter", "data_source", "params"}`, or multipart with a `file` (JSONL) and those fields."""
    ctype = request.headers.get("content-type", "")
    job_id = uuid.uuid4().hex
    data_path = None
    try:
        if ctype.startswith("multipart/form-data"):
            form = await request.form(max_files=1, max_fields=5)
            upload = form.get("file")
            if upload is None or isinstance(upload, str):
                raise HTTPException(422, "The multipart form needs a `file` part holding the JSONL data.")
            body = TrainingJobIn(
                adapter=str(form.get("adapter") or AdapterName.EXTRACT),
                data_source="upload",
                params=json.loads(str(form.get("params") or "{}")),
            )
            _check_params(body, settings)
            raw = await upload.read(settings.max_upload_bytes * 10 + 1)
            if len(raw) > settings.max_upload_bytes * 10:
                raise HTTPException(413, "The training data is too large for one upload.")
            folder = settings.data_dir / "training-data"
            folder.mkdir(parents=True, exist_ok=True)
            data_path = folder / f"{job_id}.jsonl"
            data_path.write_bytes(raw)
            _check_jsonl(data_path, settings)
        elif ctype.startswith("application/json") or not ctype:
            raw = await request.body()
            if not raw.strip():
                raise HTTPException(422, EMPTY_BODY)
            payload = json.loads(raw)
            if not isinstance(payload, dict) or not payload:
                raise HTTPException(422, EMPTY_BODY)
            if "data_source" not in payload:
                raise HTTPException(422, "`data_source` is required (synthetic, dataset or corrections); "
                                         "no job was started.")
            body = TrainingJobIn.model_validate(payload)
            if body.data_source == "upload":
                raise HTTPException(422, "data_source `upload` needs a multipart request with the JSONL file.")
            _check_params(body, settings)
            if body.data_source == "dataset":
                from training.jobs import JobRequestError, dataset_path

                if not body.dataset:
                    raise HTTPException(422, "data_source `dataset` needs `dataset`: the name of a stored dataset.")
                try:
                    named = dataset_path(settings, body.dataset)
                except JobRequestError as exc:
                    raise HTTPException(422, f"{exc}; no job was started.") from exc
                _check_jsonl(named, settings)
        else:
            raise HTTPException(415, "Send JSON or a multipart upload with the JSONL file.")
    except (ValueError, TypeError) as exc:
        _discard(data_path)
        raise HTTPException(422, f"Bad training job request: {exc}") from exc
    except HTTPException:
        _discard(data_path)
        raise

    if body.data_source == "dataset":
        from training.jobs import dataset_path

        data_path = dataset_path(settings, body.dataset)  # checked above; not discarded on failure
    job = TrainingJob(id=job_id, adapter=body.adapter, data_source=body.data_source,
                      data_path=str(data_path) if data_path else None, params=body.params)
    session.add(job)
    session.commit()
    try:
        from workers.tasks import train_adapter

        result = train_adapter.apply_async((job.id,), task_id=f"train-{job.id}")
        job.celery_task_id = result.id
    except Exception as exc:
        job.status, job.error = TrainingJobStatus.FAILED, f"The training queue is unavailable: {type(exc).__name__}."
        session.add(job)
        session.commit()
        raise HTTPException(503, job.error) from exc
    session.add(job)
    session.commit()
    response.headers["Location"] = f"/v1/training-jobs/{job.id}"
    return TrainingJobOut.model_validate(job, from_attributes=True)


@router.get("", response_model=list[TrainingJobOut], dependencies=[ReadAccess])
def list_training_jobs(session: SessionDep, limit: Annotated[int, Query(ge=1, le=200)] = 50) -> list[TrainingJobOut]:
    rows = session.exec(select(TrainingJob).order_by(TrainingJob.created_at.desc()).limit(limit)).all()
    return [TrainingJobOut.model_validate(r, from_attributes=True) for r in rows]


@router.get("/{job_id}", response_model=TrainingJobOut, dependencies=[ReadAccess])
def get_training_job(job_id: str, session: SessionDep) -> TrainingJobOut:
    """Status, progress (step, loss, eval loss), metrics and the registered adapter version."""
    job = session.get(TrainingJob, job_id)
    if job is None:
        raise HTTPException(404, f"No training job {job_id}.")
    return TrainingJobOut.model_validate(job, from_attributes=True)


@router.post("/{job_id}/cancel", response_model=TrainingJobOut, dependencies=[TrainAccess])
def cancel_training_job(job_id: str, session: SessionDep) -> TrainingJobOut:
    """Stop a queued or running job at its next step; a finished job is left as it is (409)."""
    job = session.get(TrainingJob, job_id)
    if job is None:
        raise HTTPException(404, f"No training job {job_id}.")
    if job.status in TERMINAL:
        raise HTTPException(409, f"Training job {job_id} is already {job.status}.")
    job.cancel_requested = True
    if job.status == TrainingJobStatus.QUEUED:
        job.status, job.finished_at = TrainingJobStatus.CANCELLED, utcnow()
        try:
            from workers.celery_app import app

            app.control.revoke(job.celery_task_id)
        except Exception:
            pass  # the task checks the flag when it starts anyway
    session.add(job)
    session.commit()
    return TrainingJobOut.model_validate(job, from_attributes=True)
