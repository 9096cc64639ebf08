from pathlib import Path

from invoicechain.config import Settings
from invoicechain.settings_doc import settings_table


def test_every_setting_is_documented_in_the_readme():
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    assert settings_table() in readme, "regenerate the table: python -m invoicechain.settings_doc"
    assert all(field.description for field in Settings.model_fields.values())
