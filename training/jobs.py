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
from invoicechain.clock import utcnow
from invoicechain.enums import FINISHED_JOB_STATUSES, AdapterName, AdapterStatus, TrainingJobStatus, TrainingPhase

log = logging.getLogger(__name__)

JOB_ONLY_PARAMS = {
    "n", "fault_rate", "force", "eval_max_records", "dataset", "skipped_over_length", "continue_from_active",
    "eval_documents",
}
#: TrainConfig fields a job may not set (a path on the worker's disk); jobs use
#: `continue_from_active` instead of `init_adapter`.
FORBIDDEN_PARAMS = {"init_adapter"}
DEFAULT_EVAL_MAX_RECORDS = 32
#: Seconds between progress writes to the job row (every evaluation is written too).
PROGRESS_WRITE_S = 2.0




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


def mark_failed(job_id: str, reason: str, settings: Settings | None = None) -> None:
    """Fail a job that is not finished yet (a task that died outside run_training_job)."""
    from invoicechain.config import get_settings

    settings = settings or get_settings()
    with session_scope(settings) as s:
        job = s.get(TrainingJob, job_id)
        if job is None or job.status in FINISHED_JOB_STATUSES:
            return
        job.status, job.finished_at, job.error = TrainingJobStatus.FAILED, utcnow(), reason[:5000]
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


#: The synthetic files a job may train on, and the data sources it may take.
ADAPTERS = tuple(AdapterName)
DATA_SOURCES = ("synthetic", "upload", "dataset", "corrections")
#: Bounds of job-only params (the settings bound steps, epochs and learning rate).
MAX_SYNTHETIC_DOCUMENTS = 5000
MAX_BATCH = 64


class JobRequestError(ValueError):
    """A training job request that must not start a job (the message says why)."""


def datasets_dir(settings: Settings) -> Path:
    """Named training datasets (`data_source: dataset`): `<data dir>/datasets/<name>.jsonl`."""
    return settings.data_dir / "datasets"


def dataset_path(settings: Settings, name: str) -> Path:
    """A named dataset's file (JobRequestError when it does not exist)."""
    import re

    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,99}", name or "") or ".." in name:
        raise JobRequestError(f"dataset name {name!r} is not a valid name (letters, digits, '_', '-', '.')")
    path = datasets_dir(settings) / f"{name.removesuffix('.jsonl')}.jsonl"
    if not path.is_file():
        known = sorted(p.stem for p in datasets_dir(settings).glob("*.jsonl")) if datasets_dir(settings).is_dir() else []
        raise JobRequestError(f"no dataset named {name!r}" + (f" (known: {', '.join(known[:20])})" if known else
                                                              " (no datasets are stored)"))
    return path


def check_params(params: dict | None, adapter: str, data_source: str, settings: Settings) -> tuple[dict, dict]:
    """Validate a job's params before anything is queued: (TrainConfig fields, job-only params).

    Raises JobRequestError with one sentence per problem: unknown keys, values TrainConfig
    refuses, steps / epochs / learning rate over the settings' bounds, a synthetic corpus
    of the evaluation set's seed (it would train on the evaluation documents).
    """
    from pydantic import ValidationError

    from training.sft import TrainConfig

    if data_source not in DATA_SOURCES:
        raise JobRequestError(f"data_source must be one of {', '.join(DATA_SOURCES)}, not {data_source!r}")
    if params is not None and not isinstance(params, dict):
        raise JobRequestError("params must be a JSON object")
    try:
        cfg, job_params = split_params(params, adapter)
    except ValueError as exc:
        raise JobRequestError(str(exc)) from exc
    try:
        config = TrainConfig(**cfg)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
        raise JobRequestError(f"bad params: {problems}") from exc
    problems = []
    if config.max_steps is not None and config.max_steps > settings.training_max_steps:
        problems.append(f"max_steps {config.max_steps} is over the limit of {settings.training_max_steps}")
    if config.epochs > settings.training_max_epochs:
        problems.append(f"epochs {config.epochs:g} is over the limit of {settings.training_max_epochs:g}")
    if config.learning_rate > settings.training_max_learning_rate:
        problems.append(f"learning_rate {config.learning_rate:g} is over the limit of "
                        f"{settings.training_max_learning_rate:g}")
    if config.batch_size > MAX_BATCH or config.grad_accum > MAX_BATCH:
        problems.append(f"batch_size and grad_accum are at most {MAX_BATCH}")
    for key, low, high in (("n", settings.training_min_rows, MAX_SYNTHETIC_DOCUMENTS),
                           ("eval_documents", 1, 100_000), ("eval_max_records", 1, 100_000)):
        if key in job_params:
            v = job_params[key]
            if isinstance(v, bool) or not isinstance(v, int) or not low <= v <= high:
                problems.append(f"{key} must be a whole number from {low} to {high}, not {v!r}")
    if "fault_rate" in job_params:
        v = job_params["fault_rate"]
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not 0 <= v <= 1:
            problems.append(f"fault_rate must be between 0 and 1, not {v!r}")
    if "dataset" in job_params and job_params["dataset"] not in ADAPTERS:
        problems.append(f"params.dataset (the synthetic file) must be one of {', '.join(ADAPTERS)}")
    if data_source == "synthetic":
        from training.evalset import SYNTH_SEED

        if config.seed == SYNTH_SEED:
            problems.append(f"seed {SYNTH_SEED} generates the evaluation set's synthetic invoices: pick another")
    if problems:
        raise JobRequestError("; ".join(problems))
    return cfg, job_params


def check_dataset(path: Path, settings: Settings) -> int:
    """A dataset file is valid JSONL with the required keys and at least `training_min_rows`
    records (DatasetError listing each bad line, or JobRequestError); returns the count."""
    from training.data import load_jsonl

    records = load_jsonl(path)
    if len(records) < settings.training_min_rows:
        raise JobRequestError(f"the dataset holds {len(records)} record(s); at least "
                              f"{settings.training_min_rows} are needed")
    return len(records)


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
    from training.corrections import correction_records

    kind = AdapterName.TOOLCHAIN if adapter == AdapterName.TOOLCHAIN else AdapterName.EXTRACT
    with session_scope(settings) as s:
        records, _counts = correction_records(s, kind)
    return records


def build_records(job: TrainingJob, settings: Settings, work: Path, job_params: dict, seed: int, tokenizer, max_len: int) -> list[dict]:
    """The job's training records, validated (raises DatasetError with every problem)."""
    from training.data import DatasetError, check_lengths, load_jsonl

    if job.data_source == "synthetic":
        from training.synth import generate_corpus

        data_dir = work / "data"
        which = job_params.get("dataset") or (AdapterName.TOOLCHAIN if job.adapter == AdapterName.TOOLCHAIN else AdapterName.EXTRACT)
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
    if job.data_source in ("upload", "corrections", "dataset") and job.data_path:
        records = load_jsonl(job.data_path, tokenizer, max_len)
        if len(records) < settings.training_min_rows:
            raise DatasetError([(0, f"{len(records)} record(s); at least {settings.training_min_rows} are needed")],
                               source=job.data_path)
        return records
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


def _claim(job_id: str, settings: Settings) -> tuple[TrainingJob | None, dict | None]:
    """The job row moved to running (detached from its session), or, when there is nothing to
    run, the summary to return: a finished job (done, failed or cancelled), a version registered by
    this job, or a job that was running when its worker was lost (it fails with the reason)."""
    from sqlmodel import select

    from invoicechain.db.tables import AdapterVersion

    with session_scope(settings) as s:
        job = s.get(TrainingJob, job_id)
        if job is None:
            raise LookupError(f"no training job {job_id}")
        if job.status in FINISHED_JOB_STATUSES:
            # A redelivered message for a finished job (failed ones too): report, repeat nothing.
            return None, {"job_id": job_id, "status": job.status, "adapter_version": job.adapter_version,
                          "promoted": job.promoted, "metrics": job.metrics}
        if job.cancel_requested:
            job.status, job.finished_at = TrainingJobStatus.CANCELLED, utcnow()
            s.add(job)
            return None, {"job_id": job_id, "status": TrainingJobStatus.CANCELLED}
        registered = s.exec(select(AdapterVersion).where(AdapterVersion.training_job_id == job_id)).first()
        if registered is not None:
            # Cut off after registering: the version exists, finish the row and stop.
            job.status, job.finished_at, job.adapter_version = TrainingJobStatus.DONE, utcnow(), registered.version
            job.promoted = registered.status == AdapterStatus.ACTIVE
            s.add(job)
            return None, {"job_id": job_id, "status": TrainingJobStatus.DONE, "adapter_version": registered.version,
                          "promoted": job.promoted, "metrics": job.metrics}
        if job.status == TrainingJobStatus.RUNNING:
            # A redelivered message for a job that was running: its worker was killed or lost.
            # The job fails with the reason; nothing is registered, the active adapter is untouched.
            step = (job.progress or {}).get("step")
            job.status, job.finished_at = TrainingJobStatus.FAILED, utcnow()
            job.error = (f"interrupted: the worker running this job stopped"
                         f"{f' at step {step}' if step else ''} (killed or lost); no version was registered "
                         "and the active adapter is unchanged. Start a new job to train again.")
            s.add(job)
            return None, {"job_id": job_id, "status": TrainingJobStatus.FAILED, "error": job.error}
        job.status = TrainingJobStatus.RUNNING
        job.error = None
        job.started_at = job.started_at or utcnow()
        s.add(job)
        s.flush()  # written before the row leaves the session (committed on exit)
        s.expunge(job)
        return job, None


def _bad_data(exc) -> tuple[str, dict]:
    """A DatasetError as the job's error text and its first 200 problems."""
    lines = "\n".join(f"line {n}: {r}" if n else r for n, r in exc.problems[:200])
    problems = [{"line": n, "reason": r} for n, r in exc.problems[:200]]
    return f"bad training data ({len(exc.problems)} problem(s)):\n{lines}", {"problems": problems}


class _JobProgress:
    """The training loop's progress and cancel callbacks for one job: progress goes to the job
    row at most every PROGRESS_WRITE_S (and at the last step or a new eval loss) with elapsed
    time and ETA, and to `progress`; a cancel seen once stays seen."""

    def __init__(self, settings: Settings, job_id: str, progress: Callable[[dict], None] | None,
                 should_cancel: Callable[[], bool] | None) -> None:
        self.settings, self.job_id, self.progress, self.should_cancel = settings, job_id, progress, should_cancel
        self.started = time.monotonic()
        self.last_write, self.last_eval = 0.0, None
        self.cancel_seen = False

    def __call__(self, info: dict) -> None:
        now = time.monotonic()
        step, total = info.get("step") or 0, info.get("total_steps") or 0
        if step and total:
            info = {**info, "elapsed_s": round(now - self.started, 1),
                    "eta_s": round((now - self.started) / step * max(0, total - step), 1)}
        new_eval = info.get("eval_loss") is not None and info.get("eval_loss") != self.last_eval
        if now - self.last_write >= PROGRESS_WRITE_S or info.get("step") == info.get("total_steps") or new_eval:
            self.last_write, self.last_eval = now, info.get("eval_loss")
            _update_job(self.settings, self.job_id, progress={**info, "phase": TrainingPhase.TRAINING})
        if self.progress is not None:
            self.progress({**info, "phase": TrainingPhase.TRAINING})

    def cancelled(self) -> bool:
        if self.should_cancel is not None and self.should_cancel():
            self.cancel_seen = True
        return self.cancel_seen


def _evaluate(settings: Settings, job_id: str, job: TrainingJob, base_dir, result, job_params: dict,
              progress: Callable[[dict], None] | None) -> dict:
    """The trained adapter's metrics: its own held-out records, and for extraction adapters the
    evaluation set that promotion compares on."""
    from training.evaluate import evaluate_adapter

    if progress is not None:
        progress({"phase": TrainingPhase.EVALUATING, "step": result.steps, "total_steps": result.total_steps})
    _update_job(settings, job_id, progress={"phase": TrainingPhase.EVALUATING, "step": result.steps,
                                            "total_steps": result.total_steps})
    evaluation = evaluate_adapter(
        base_dir, job.adapter, result.adapter_dir, result.eval_records, device=settings.device,
        max_records=int(job_params.get("eval_max_records", DEFAULT_EVAL_MAX_RECORDS)),
        max_new_tokens=settings.max_new_tokens, max_input_tokens=settings.max_input_tokens,
    )
    metrics = {**_compact_metrics(result.metrics), "eval": evaluation}
    if "field_exact_match" in evaluation:
        metrics["field_exact_match"] = evaluation["field_exact_match"]
    _write_eval(result.adapter_dir, evaluation)
    if job.adapter == AdapterName.EXTRACT:
        block = score_on_eval_set(settings, job_id, base_dir, result, job_params, progress)
        metrics["eval_set"] = block
        metrics["eval_set_field_exact_match"] = block["field_exact_match"]
    return metrics


def _register(settings: Settings, job_id: str, job: TrainingJob, base_dir, result, metrics: dict, config,
              job_params: dict) -> tuple[int, bool]:
    """Register the trained adapter as a version and put it through the promotion gate; the
    decision goes into `metrics["promotion"]`. Returns (version, promoted)."""
    from models import registry
    from models.store import DEFAULT_BASE_FINGERPRINT, base_fingerprint

    base_fp = base_fingerprint(base_dir)
    with session_scope(settings) as s:
        # On the default base the shipped adapter is the version to beat: registered first.
        if base_fp == DEFAULT_BASE_FINGERPRINT:
            registry.seed_defaults(s, settings=settings)
        version = registry.register_version(
            s, job.adapter, result.adapter_dir, base_fp, result.dataset_fingerprint,
            metrics, {**config.model_dump(), **job_params}, training_job_id=job_id,
        )
        decision = registry.promote(s, job.adapter, version.version, force=bool(job_params.get("force", False)),
                                    settings=settings, actor=f"training job {job_id}")
        version_no, promoted = version.version, bool(decision.promoted)
        reason, comparison = decision.reason, decision.comparison
    metrics["promotion"] = {"promoted": promoted, "reason": reason, "comparison": comparison}
    return version_no, promoted


def run_training_job(
    job_id: str,
    settings: Settings,
    progress: Callable[[dict], None] | None = None,
    should_cancel: Callable[[], bool] | None = None,
) -> dict:
    """Run one training job end to end; returns a summary (status, metrics, version, promoted).

    The stages: claim the job row (`_claim`), build and check the training records, train with
    progress and cancellation (`_JobProgress`), evaluate (`_evaluate`), register the version and
    put it through the promotion gate (`_register`). A failure records its reason on the row."""
    from training.data import DatasetError

    job, summary = _claim(job_id, settings)
    if summary is not None:
        return summary
    work = run_dir(settings, job_id)
    work.mkdir(parents=True, exist_ok=True)

    def fail(message: str, extra: dict | None = None) -> dict:
        _update_job(settings, job_id, status=TrainingJobStatus.FAILED, error=message, finished_at=utcnow(),
                    **({"metrics": extra} if extra else {}))
        return {"job_id": job_id, "status": TrainingJobStatus.FAILED, "error": message, **(extra or {})}

    try:
        from transformers import AutoTokenizer

        from models.store import resolve_base
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
        return fail(*_bad_data(exc))
    except ValueError as exc:  # params that do not validate
        return fail(f"bad training params: {exc}")

    watch = _JobProgress(settings, job_id, progress, should_cancel)
    try:
        from training.sft import train_lora

        result = train_lora(config, records, base_dir, work, progress=watch, should_cancel=watch.cancelled)
        if result.stopped == "cancelled":
            _update_job(settings, job_id, status=TrainingJobStatus.CANCELLED, finished_at=utcnow(),
                        metrics=_compact_metrics(result.metrics))
            return {"job_id": job_id, "status": TrainingJobStatus.CANCELLED, "step": result.steps}
        metrics = _evaluate(settings, job_id, job, base_dir, result, job_params, progress)
        version_no, promoted = _register(settings, job_id, job, base_dir, result, metrics, config, job_params)
        _update_job(settings, job_id, status=TrainingJobStatus.DONE, finished_at=utcnow(), metrics=metrics,
                    adapter_version=version_no, promoted=promoted,
                    progress={"phase": TrainingPhase.DONE, "step": result.steps, "total_steps": result.total_steps,
                              "eval_loss": result.metrics.get("eval_loss")})
        return {"job_id": job_id, "status": TrainingJobStatus.DONE, "adapter_version": version_no, "promoted": promoted,
                "metrics": metrics}
    except DatasetError as exc:
        return fail(*_bad_data(exc))
    except Exception as exc:
        # Recorded for the API, then raised so the task shows as failed in Flower too.
        fail(f"{type(exc).__name__}: {exc}")
        raise


def score_on_eval_set(settings: Settings, job_id: str, base_dir, result, job_params: dict, progress=None) -> dict:
    """The candidate's scores on the fixed evaluation set (or its first `eval_documents`),
    per document, so the gate compares it with the active version on the same documents."""
    from training import evalset

    limit = int(job_params.get("eval_documents") or settings.promotion_eval_documents)

    def on_docs(done: int, n: int) -> None:
        info = {"phase": TrainingPhase.EVALUATING, "eval_set_done": done, "eval_set_documents": n}
        _update_job(settings, job_id, progress={**info, "step": result.steps, "total_steps": result.total_steps})
        if progress is not None:
            progress(info)

    return evalset.score_adapter(
        base_dir, result.adapter_dir, limit=limit, device=settings.device, progress=on_docs,
        max_new_tokens=settings.max_new_tokens, max_input_tokens=settings.max_input_tokens,
    )


def _write_eval(adapter_dir: Path, evaluation: dict) -> None:
    import json

    path = Path(adapter_dir) / "metrics.json"
    data = json.loads(path.read_text()) if path.is_file() else {}
    data["eval"] = evaluation
    if "field_exact_match" in evaluation:
        data["field_exact_match"] = evaluation["field_exact_match"]
    path.write_text(json.dumps(data, indent=2, default=str))
