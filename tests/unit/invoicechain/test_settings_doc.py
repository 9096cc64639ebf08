from pathlib import Path

from invoicechain.config import Settings
from invoicechain.settings_doc import settings_table


def test_every_setting_is_documented():
    doc = (Path(__file__).resolve().parents[3] / "docs" / "configuration.md").read_text()
    assert settings_table() in doc, "regenerate the table: python -m invoicechain.settings_doc"
    assert all(field.description for field in Settings.model_fields.values())


def test_shipped_adapters_are_found_from_any_working_directory(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("INVOICECHAIN_ADAPTERS_DIR", raising=False)
    shipped = Settings().adapters_dir
    assert shipped.is_absolute() and (shipped / "extract" / "adapter_config.json").is_file()
    monkeypatch.setenv("INVOICECHAIN_ADAPTERS_DIR", str(tmp_path / "mine"))
    assert Settings().adapters_dir == tmp_path / "mine"
