"""Training jobs from their database row: bad data fails before training, a good job trains,
evaluates through the runtime, registers and promotes, a cancelled job stops."""

from __future__ import annotations

import pytest
from sqlmodel import select

from invoicechain.db.session import session_scope
from invoicechain.db.tables import AdapterVersion, PromotionDecision, TrainingJob
from tests.factories import invoice_records
from training.data import write_jsonl
from training.jobs import job_cancel_requested, run_dir, run_training_job

TINY_PARAMS = {
    "max_steps": 4, "batch_size": 4, "learning_rate": 3e-3, "lora_r": 4, "lora_alpha": 8,
    "eval_every": 2, "checkpoint_every": 2, "attention_examples": 1, "eval_max_records": 2,
    "eval_fraction": 0.1, "device": "cpu", "eval_documents": 2,
}


@pytest.fixture
def tiny_settings(settings, tiny_model_dir):
    settings.base_model = str(tiny_model_dir)
    settings.max_new_tokens = 48  # a random model would ramble to the limit in the final evaluation
    return settings


def make_job(settings, **kw) -> str:
    with session_scope(settings) as s:
        job = TrainingJob(adapter=kw.pop("adapter", "extract"), **kw)
        s.add(job)
        s.flush()
        return job.id


def get_job(settings, job_id) -> TrainingJob:
    with session_scope(settings) as s:
        return s.get(TrainingJob, job_id)


def test_bad_upload_fails_before_training_with_line_numbers(tiny_settings, tmp_path):
    path = tmp_path / "bad.jsonl"
    good = invoice_records(2)
    write_jsonl(good, path)
    path.write_text(path.read_text() + '{"instruction": "x"}\nnot json\n')
    job_id = make_job(tiny_settings, data_source="upload", data_path=str(path), params=TINY_PARAMS)
    out = run_training_job(job_id, tiny_settings)
    job = get_job(tiny_settings, job_id)
    assert out["status"] == job.status == "failed"
    assert "line 3: missing key(s): 'input', 'output'" in job.error
    assert "line 4: malformed JSON" in job.error
    assert [p["line"] for p in job.metrics["problems"]] == [3, 4]
    assert not (run_dir(tiny_settings, job_id) / "checkpoints").exists()
    assert job.finished_at is not None


def test_unknown_params_fail_the_job(tiny_settings, tmp_path):
    path = write_jsonl(invoice_records(10), tmp_path / "d.jsonl")
    job_id = make_job(tiny_settings, data_source="upload", data_path=str(path), params={"lora_rank": 8})
    assert run_training_job(job_id, tiny_settings)["status"] == "failed"
    assert "lora_rank" in get_job(tiny_settings, job_id).error


def test_upload_job_trains_registers_and_promotes(tiny_settings, tmp_path):
    path = write_jsonl(invoice_records(24), tmp_path / "d.jsonl")
    job_id = make_job(tiny_settings, data_source="upload", data_path=str(path), params=TINY_PARAMS)
    seen = []
    out = run_training_job(job_id, tiny_settings, progress=seen.append)
    assert out["status"] == "done", out
    job = get_job(tiny_settings, job_id)
    assert job.status == "done" and job.adapter_version == 1 and job.promoted is True
    assert job.progress["phase"] == "done" and job.progress["step"] == 4
    assert 0.0 <= job.metrics["field_exact_match"] <= 1.0
    assert job.metrics["eval"]["extraction"]["count"] >= 1
    assert "history" not in job.metrics  # curves stay with the adapter
    steps = [p["step"] for p in seen if p.get("phase") == "training"]
    assert steps[-1] == 4 and any(p.get("eval_loss") is not None for p in seen)
    with session_scope(tiny_settings) as s:
        [version] = s.exec(select(AdapterVersion).where(AdapterVersion.name == "extract")).all()
        assert version.status == "active" and version.training_job_id == job_id
        assert version.dataset_fingerprint and version.params["lora_r"] == 4
        [decision] = s.exec(select(PromotionDecision)).all()
        assert decision.promoted and decision.candidate_version == 1

    # A redelivered message for the finished job repeats nothing.
    again = run_training_job(job_id, tiny_settings)
    assert again["status"] == "done" and again["adapter_version"] == 1

    # Nor does one for a job cut off after it registered its version.
    with session_scope(tiny_settings) as s:
        s.get(TrainingJob, job_id).status = "running"
    again = run_training_job(job_id, tiny_settings)
    assert again["status"] == "done" and again["adapter_version"] == 1
    with session_scope(tiny_settings) as s:
        assert len(s.exec(select(AdapterVersion)).all()) == 1


def test_cancel_before_start_and_during_training(tiny_settings, tmp_path):
    path = write_jsonl(invoice_records(24), tmp_path / "d.jsonl")
    early = make_job(tiny_settings, data_source="upload", data_path=str(path), params=TINY_PARAMS,
                     cancel_requested=True)
    assert job_cancel_requested(early, tiny_settings)
    assert run_training_job(early, tiny_settings)["status"] == "cancelled"
    assert get_job(tiny_settings, early).status == "cancelled"

    during = make_job(tiny_settings, data_source="upload", data_path=str(path),
                      params={**TINY_PARAMS, "max_steps": 50})
    calls = []

    def should_cancel():
        calls.append(1)
        return len(calls) > 2

    out = run_training_job(during, tiny_settings, should_cancel=should_cancel)
    job = get_job(tiny_settings, during)
    assert out["status"] == job.status == "cancelled" and out["step"] == 2
    assert job.adapter_version is None
    with session_scope(tiny_settings) as s:
        assert s.exec(select(AdapterVersion)).all() == []


def test_synthetic_job_generates_its_corpus(tiny_settings):
    job_id = make_job(tiny_settings, data_source="synthetic",
                      params={**TINY_PARAMS, "n": 12, "seed": 3, "max_steps": 2, "eval_every": 0})
    out = run_training_job(job_id, tiny_settings)
    assert out["status"] == "done", out
    assert (run_dir(tiny_settings, job_id) / "data" / "extract.jsonl").is_file()
    job = get_job(tiny_settings, job_id)
    assert job.adapter_version == 1
    with session_scope(tiny_settings) as s:
        [version] = s.exec(select(AdapterVersion)).all()
        # Generated documents too long for max_seq_len are left out and counted.
        assert version.params["skipped_over_length"] >= 0 and version.params["n"] == 12


def test_continue_from_active_trains_from_the_active_version(tiny_settings, tmp_path):
    path = write_jsonl(invoice_records(24), tmp_path / "d.jsonl")
    # No active version yet: a clear failure before any training.
    job_id = make_job(tiny_settings, data_source="upload", data_path=str(path),
                      params={**TINY_PARAMS, "continue_from_active": True})
    assert run_training_job(job_id, tiny_settings)["status"] == "failed"
    assert "has no active version" in get_job(tiny_settings, job_id).error
    # A path on the worker's disk is not a job parameter.
    job_id = make_job(tiny_settings, data_source="upload", data_path=str(path),
                      params={**TINY_PARAMS, "init_adapter": str(tmp_path)})
    assert run_training_job(job_id, tiny_settings)["status"] == "failed"
    assert "init_adapter" in get_job(tiny_settings, job_id).error

    first = make_job(tiny_settings, data_source="upload", data_path=str(path), params=TINY_PARAMS)
    assert run_training_job(first, tiny_settings)["status"] == "done"
    job_id = make_job(tiny_settings, data_source="upload", data_path=str(path),
                      params={**TINY_PARAMS, "lora_r": 2, "continue_from_active": True})
    out = run_training_job(job_id, tiny_settings)
    assert out["status"] == "done", out
    with session_scope(tiny_settings) as s:
        v1, v2 = s.exec(select(AdapterVersion).order_by(AdapterVersion.version)).all()
        assert v2.params["init_adapter"] == v1.path
        assert v2.params["lora_r"] == 4  # the rank of the adapter it continued from
