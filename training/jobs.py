"""A training job from its database row to a registered (and maybe promoted) adapter version.

`run_training_job` is what the `train_adapter` task runs: it reads the `TrainingJob`,
builds and validates the data (bad data fails the job before training, with every
problem listed), trains into `<model store>/runs/<job id>` (a redelivered job resumes
from its last checkpoint there), evaluates through the real extraction path, registers
a candidate version and asks the registry to promote it. Status and progress are
mirrored into the job row as it goes: queued -> running -> done | failed | cancelled.

Job params: any `TrainConfig` field (lora_r, learning_rate, max_steps, ...) plus
`n`, `fault_rate` (synthetic data), `force` (promote whatever the metric),
`eval_max_records` (documents decoded for the final evaluation) and `dataset`
("extract" or "toolchain": which synthetic file; defaults to the adapter's name).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from invoicechain.config import Settings
from invoicechain.db.session import session_scope
from invoicechain.db.tables import TrainingJob

log = logging.getLogger(__name__)

JOB_ONLY_PARAMS = {
    "n", "fault_rate", "force", "eval_max_records", "dataset", "skipped_over_length", "continue_from_active",
}
#: TrainConfig fields a job may not set (a path on the worker's disk); jobs use
#: `continue_from_active` instead of `init_adapter`.
FORBIDDEN_PARAMS = {"init_adapter"}
DEFAULT_EVAL_MAX_RECORDS = 32
#: Seconds between progress writes to the job row (every evaluation is written too).
PROGRESS_WRITE_S = 2.0


def _now() -> datetime:
    return datetime.now(timezone.utc)


def run_dir(settings: Settings, job_id: str) -> Path:
    """Where a job trains (checkpoints, event files, the adapter)."""
    return settings.resolved_model_store / "runs" / job_id


def job_cancel_requested(job_id: str, settings: Settings) -> bool:
    """Whether someone asked to cancel the job (one small query)."""
    with session_scope(settings) as s:
        job = s.get(TrainingJob, job_id)
        return bool(job is None or job.cancel_requested)


def _update_job(settings: Settings, job_id: str, **values: Any) -> None:
    with session_scope(settings) as s:
        job = s.get(TrainingJob, job_id)
        if job is None:
            return
        for k, v in values.items():
            setattr(job, k, v)
        s.add(job)


def split_params(params: dict | None, adapter: str) -> tuple[dict, dict]:
    """(TrainConfig fields, job-only params); unknown keys raise ValueError."""
    from training.sft import TrainConfig

    params = dict(params or {})
    known = set(TrainConfig.model_fields)
    unknown = sorted(k for k in params if (k not in known and k not in JOB_ONLY_PARAMS) or k in FORBIDDEN_PARAMS)
    if unknown:
        raise ValueError(f"unknown training params: {', '.join(unknown)}")
    cfg = {k: v for k, v in params.items() if k in known}
    cfg["adapter"] = adapter
    return cfg, {k: v for k, v in params.items() if k in JOB_ONLY_PARAMS}


def active_adapter_path(settings: Settings, adapter: str) -> str:
    """Folder of the adapter's active version (ValueError when it has none)."""
    from models.registry import active_version

    with session_scope(settings) as s:
        row = active_version(s, adapter)
        if row is None:
            raise ValueError(f"continue_from_active: adapter {adapter!r} has no active version")
        return row.path


def corrections_records(settings: Settings, adapter: str) -> list[dict]:
    """Training records from reviewers' corrections (field corrections or decision overrides)."""
    from invoicechain.ap.corrections import correction_records

    kind = "toolchain" if adapter == "toolchain" else "extract"
    with session_scope(settings) as s:
        records, _counts = correction_records(s, kind)
    return records


def build_records(job: TrainingJob, settings: Settings, work: Path, job_params: dict, seed: int, tokenizer, max_len: int) -> list[dict]:
    """The job's training records, validated (raises DatasetError with every problem)."""
    from training.data import DatasetError, check_lengths, load_jsonl

    if job.data_source == "synthetic":
        from training.synth import generate_corpus

        data_dir = work / "data"
        which = job_params.get("dataset") or ("toolchain" if job.adapter == "toolchain" else "extract")
        target = data_dir / f"{which}.jsonl"
        if not target.is_file():  # a resumed job keeps the corpus it started with
            kw = {"fault_rate": job_params["fault_rate"]} if "fault_rate" in job_params else {}
            generate_corpus(int(job_params.get("n", 200)), seed, data_dir, **kw)
        records = load_jsonl(target)
        # Generated documents are ours, not a user's upload: the few that do not fit are
        # left out (and counted) instead of failing the job.
        too_long = {n for n, _ in check_lengths(list(enumerate(records, start=1)), tokenizer, max_len)}
        kept = [r for i, r in enumerate(records, start=1) if i not in too_long]
        job_params["skipped_over_length"] = len(too_long)
        if not kept:
            raise DatasetError([(0, f"every generated record is over {max_len} tokens")], source=str(target))
        return kept
    if job.data_source in ("upload", "corrections") and job.data_path:
        return load_jsonl(job.data_path, tokenizer, max_len)
    if job.data_source == "corrections":
        records = corrections_records(settings, job.adapter)
        if not records:
            raise DatasetError([(0, "no reviewer corrections to train on")], source="corrections")
        problems = check_lengths(list(enumerate(records, start=1)), tokenizer, max_len)
        if problems:
            raise DatasetError(problems, source="corrections")
        return records
    raise DatasetError([(0, f"data source {job.data_source!r} has no data (data_path is empty)")])


def _compact_metrics(metrics: dict) -> dict:
    """Run metrics without the per-step curves (those live with the adapter)."""
    return {k: v for k, v in metrics.items() if k not in ("history", "eval_history")}


def run_training_job(
    job_id: str,
    settings: Settings,
    progress: Callable[[dict], None] | None = None,
    should_cancel: Callable[[], bool] | None = None,
) -> dict:
    """Run one training job end to end; returns a summary (status, metrics, version, promoted)."""
    from training.data import DatasetError

    with session_scope(settings) as s:
        job = s.get(TrainingJob, job_id)
        if job is None:
            raise LookupError(f"no training job {job_id}")
        if job.status in ("done", "cancelled"):
            # A redelivered message for a finished job: report, repeat nothing.
            return {"job_id": job_id, "status": job.status, "adapter_version": job.adapter_version,
                    "promoted": job.promoted, "metrics": job.metrics}
        if job.cancel_requested:
            job.status, job.finished_at = "cancelled", _now()
            s.add(job)
            return {"job_id": job_id, "status": "cancelled"}
        from sqlmodel import select

        from invoicechain.db.tables import AdapterVersion

        registered = s.exec(select(AdapterVersion).where(AdapterVersion.training_job_id == job_id)).first()
        if registered is not None:
            # Cut off after registering: the version exists, finish the row and stop.
            job.status, job.finished_at, job.adapter_version = "done", _now(), registered.version
            job.promoted = registered.status == "active"
            s.add(job)
            return {"job_id": job_id, "status": "done", "adapter_version": registered.version,
                    "promoted": job.promoted, "metrics": job.metrics}
        job.status = "running"
        job.error = None
        job.started_at = job.started_at or _now()
        s.add(job)
        s.flush()  # written before the row leaves the session (committed on exit)
        s.expunge(job)

    work = run_dir(settings, job_id)
    work.mkdir(parents=True, exist_ok=True)

    def fail(message: str, extra: dict | None = None) -> dict:
        _update_job(settings, job_id, status="failed", error=message, finished_at=_now(),
                    **({"metrics": extra} if extra else {}))
        return {"job_id": job_id, "status": "failed", "error": message, **(extra or {})}

    try:
        from transformers import AutoTokenizer

        from models.store import base_fingerprint, resolve_base
        from training.sft import TrainConfig, init_adapter_shape

        cfg_params, job_params = split_params(job.params, job.adapter)
        cfg_params.setdefault("device", settings.device)
        if job_params.get("continue_from_active"):
            cfg_params["init_adapter"] = active_adapter_path(settings, job.adapter)
        config = init_adapter_shape(TrainConfig(**cfg_params))
        base_dir = resolve_base(settings)
        tokenizer = AutoTokenizer.from_pretrained(base_dir)
        records = build_records(job, settings, work, job_params, config.seed, tokenizer, config.max_seq_len)
    except DatasetError as exc:
        problems = [{"line": n, "reason": r} for n, r in exc.problems[:200]]
        lines = "\n".join(f"line {n}: {r}" if n else r for n, r in exc.problems[:200])
        return fail(f"bad training data ({len(exc.problems)} problem(s)):\n{lines}", {"problems": problems})
    except ValueError as exc:  # params that do not validate
        return fail(f"bad training params: {exc}")

    last_write: list = [0.0, None]  # time of the last row write, eval loss it carried
    cancel_seen = [False]

    def on_progress(info: dict) -> None:
        now = time.monotonic()
        new_eval = info.get("eval_loss") is not None and info.get("eval_loss") != last_write[1]
        if now - last_write[0] >= PROGRESS_WRITE_S or info.get("step") == info.get("total_steps") or new_eval:
            last_write[0], last_write[1] = now, info.get("eval_loss")
            _update_job(settings, job_id, progress={**info, "phase": "training"})
        if progress is not None:
            progress({**info, "phase": "training"})

    def cancelled() -> bool:
        if should_cancel is not None and should_cancel():
            cancel_seen[0] = True
        return cancel_seen[0]

    try:
        from training.sft import train_lora

        result = train_lora(config, records, base_dir, work, progress=on_progress, should_cancel=cancelled)
        if result.stopped == "cancelled":
            _update_job(settings, job_id, status="cancelled", finished_at=_now(),
                        metrics=_compact_metrics(result.metrics))
            return {"job_id": job_id, "status": "cancelled", "step": result.steps}

        if progress is not None:
            progress({"phase": "evaluating", "step": result.steps, "total_steps": result.total_steps})
        _update_job(settings, job_id, progress={"phase": "evaluating", "step": result.steps,
                                                "total_steps": result.total_steps})
        from training.evaluate import evaluate_adapter

        evaluation = evaluate_adapter(
            base_dir, job.adapter, result.adapter_dir, result.eval_records, device=settings.device,
            max_records=int(job_params.get("eval_max_records", DEFAULT_EVAL_MAX_RECORDS)),
            max_new_tokens=settings.max_new_tokens, max_input_tokens=settings.max_input_tokens,
        )
        metrics = {**_compact_metrics(result.metrics), "eval": evaluation}
        if "field_exact_match" in evaluation:
            metrics["field_exact_match"] = evaluation["field_exact_match"]
        _write_eval(result.adapter_dir, evaluation)

        from models import registry

        with session_scope(settings) as s:
            version = registry.register_version(
                s, job.adapter, result.adapter_dir, base_fingerprint(base_dir), result.dataset_fingerprint,
                metrics, {**config.model_dump(), **job_params}, training_job_id=job_id,
            )
            decision = registry.promote(s, job.adapter, version.version, force=bool(job_params.get("force", False)))
            version_no, promoted = version.version, bool(decision.promoted)
            reason = decision.reason
        metrics["promotion"] = {"promoted": promoted, "reason": reason}
        _update_job(settings, job_id, status="done", finished_at=_now(), metrics=metrics,
                    adapter_version=version_no, promoted=promoted,
                    progress={"phase": "done", "step": result.steps, "total_steps": result.total_steps,
                              "eval_loss": result.metrics.get("eval_loss")})
        return {"job_id": job_id, "status": "done", "adapter_version": version_no, "promoted": promoted,
                "metrics": metrics}
    except DatasetError as exc:
        lines = "\n".join(f"line {n}: {r}" if n else r for n, r in exc.problems[:200])
        return fail(f"bad training data ({len(exc.problems)} problem(s)):\n{lines}",
                    {"problems": [{"line": n, "reason": r} for n, r in exc.problems[:200]]})
    except Exception as exc:
        # Recorded for the API, then raised so the task shows as failed in Flower too.
        fail(f"{type(exc).__name__}: {exc}")
        raise


def _write_eval(adapter_dir: Path, evaluation: dict) -> None:
    import json

    path = Path(adapter_dir) / "metrics.json"
    data = json.loads(path.read_text()) if path.is_file() else {}
    data["eval"] = evaluation
    if "field_exact_match" in evaluation:
        data["field_exact_match"] = evaluation["field_exact_match"]
    path.write_text(json.dumps(data, indent=2, default=str))
