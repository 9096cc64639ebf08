"""`invoicechain train`: several data files, a progress bar, registration; bad data exits with line numbers."""

from __future__ import annotations

import typer
from sqlmodel import select
from typer.testing import CliRunner

from invoicechain.db.session import session_scope
from invoicechain.db.tables import AdapterVersion
from tests.factories import invoice_records
from cli.train import train
from training.data import write_jsonl


def cli() -> typer.Typer:
    app = typer.Typer()
    app.command("train")(train)
    app.command("noop")(lambda: None)  # two commands, so typer keeps the sub-command name
    return app


def test_train_two_files_and_register(settings, tiny_model_dir, tmp_path, monkeypatch):
    # A random model would ramble to the token limit in the final evaluation.
    monkeypatch.setattr(settings, "max_new_tokens", 48)
    a = write_jsonl(invoice_records(12), tmp_path / "a.jsonl")
    b = write_jsonl(invoice_records(8, seed=4), tmp_path / "b.jsonl")
    out = tmp_path / "run"
    result = CliRunner().invoke(cli(), [
        "train", "--adapter", "extract", "--data", str(a), "--data", str(b), "--base", str(tiny_model_dir),
        "--lora-r", "4", "--lora-alpha", "8", "--target-modules", "q_proj,v_proj", "--max-steps", "3",
        "--batch-size", "4", "--eval-every", "0", "--out", str(out), "--eval-max-records", "1",
        "--device", "cpu", "--register", "--force",
    ])
    assert result.exit_code == 0, result.output + repr(result.exception)
    assert "20 records from 2 file(s)" in result.output
    assert "completed after 3/3 steps" in result.output
    assert "registered extract v1; promoted" in result.output
    assert (out / "adapter" / "adapter_model.safetensors").is_file()
    with session_scope(settings) as s:
        [version] = s.exec(select(AdapterVersion)).all()
        assert version.status == "active" and version.params["lora_r"] == 4
        assert "field_exact_match" in version.metrics


def test_bad_data_exits_with_line_numbers(tiny_model_dir, tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"instruction": "x", "input": "y", "output": "z"}\n{"instruction": "x"}\n')
    result = CliRunner().invoke(cli(), ["train", "--data", str(bad), "--base", str(tiny_model_dir)])
    assert result.exit_code == 1
    assert "line 2: missing key(s): 'input', 'output'" in result.output
