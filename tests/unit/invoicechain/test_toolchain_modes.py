"""The toolchain adapter decides (`model`) or proposes (`guarded`) a step only where its recorded
agreement with the rules on held-out cases reaches the bar; the shipped adapter has not earned
any step, so settings asking for those modes are refused with the figures, and `rules` stays."""

from __future__ import annotations

import json
import shutil

import pytest
from pydantic import ValidationError

from invoicechain.config import PROJECT_ROOT, TOOLCHAIN_MODE_SETTINGS, Settings

SHIPPED = PROJECT_ROOT / "adapters"


def test_the_shipped_adapter_records_agreement_below_the_bar_for_every_step():
    recorded = json.loads((SHIPPED / "toolchain" / "metrics.json").read_text())["agreement_with_rules"]
    assert set(TOOLCHAIN_MODE_SETTINGS) <= set(recorded)
    assert all(recorded[step] < Settings().toolchain_min_agreement for step in TOOLCHAIN_MODE_SETTINGS)


@pytest.mark.parametrize("setting", sorted(TOOLCHAIN_MODE_SETTINGS.values()))
@pytest.mark.parametrize("mode", ["model", "guarded"])
def test_model_and_guarded_modes_are_refused_for_the_shipped_adapter(setting, mode, monkeypatch):
    monkeypatch.delenv("INVOICECHAIN_ADAPTERS_DIR", raising=False)
    with pytest.raises(ValidationError, match="has not earned these modes") as err:
        Settings(**{setting: mode})
    assert f"{setting}={mode}: agrees on" in str(err.value) and "needs 95%" in str(err.value)
    # From the environment too: a worker configured so does not start deciding with the adapter.
    monkeypatch.setenv(f"INVOICECHAIN_{setting.upper()}", mode)
    with pytest.raises(ValidationError, match="has not earned"):
        Settings()


def test_rules_mode_needs_no_adapter_and_an_adapter_that_earned_a_step_may_guard_it(tmp_path):
    assert Settings(adapters_dir=tmp_path).validate_mode == "rules"  # no toolchain adapter at all
    with pytest.raises(ValidationError, match="no recorded agreement"):
        Settings(adapters_dir=tmp_path, payment_mode="guarded")

    shutil.copytree(SHIPPED / "toolchain", tmp_path / "toolchain", ignore=shutil.ignore_patterns("plots"))
    metrics = json.loads((tmp_path / "toolchain" / "metrics.json").read_text())
    metrics["agreement_with_rules"]["trigger_payment"] = 0.97
    (tmp_path / "toolchain" / "metrics.json").write_text(json.dumps(metrics))
    assert Settings(adapters_dir=tmp_path, payment_mode="guarded").payment_mode == "guarded"
    with pytest.raises(ValidationError, match="validate_mode=model: agrees on 10.0%"):
        Settings(adapters_dir=tmp_path, payment_mode="guarded", validate_mode="model")
