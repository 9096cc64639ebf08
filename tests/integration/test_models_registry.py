"""Adapter registry on a real Postgres: versions, promotion, rollback, seeding, hot reload, CLI."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from sqlmodel import select

from invoicechain.db.session import session_scope
from invoicechain.db.tables import AdapterVersion, PromotionDecision
from models import registry
from tests.factories import eval_block, make_lora_adapter


@pytest.fixture(scope="module")
def adapters(tiny_model_dir, tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("registry-lora")
    return {k: make_lora_adapter(tiny_model_dir, root / k, seed=s) for k, s in (("a", 11), ("b", 12), ("c", 13))}


@pytest.fixture
def store_settings(settings, tmp_path):
    """The settings fixture, with a model store of this test's own (adapters are copied there)."""
    settings.model_store = tmp_path / "models"
    settings.adapters_dir = tmp_path / "shipped"
    return settings


def _register(session, s, name, path, metric, fingerprint="f" * 64):
    return registry.register_version(
        session, name, path, base_fingerprint=fingerprint, dataset_fingerprint="d" * 64,
        metrics={"field_exact_match": metric, "eval_loss": 0.1, "eval_set": eval_block(metric)},
        params={"epochs": 1}, settings=s,
    )


def test_versions_promotion_and_rollback(store_settings, adapters):
    s = store_settings
    with session_scope(s) as session:
        v1 = _register(session, s, "extract", adapters["a"], 0.90)
        v2 = _register(session, s, "extract", adapters["b"], 0.85)
        other = _register(session, s, "toolchain", adapters["c"], 0.5)
        assert (v1.version, v2.version, other.version) == (1, 2, 1)
        assert v1.status == v2.status == "candidate"
        # Files are copied into the store, one folder per version.
        assert Path(v2.path) == (s.resolved_model_store / "adapters" / "extract" / "v2").resolve()
        assert (Path(v2.path) / "adapter_model.safetensors").read_bytes() == (
            adapters["b"] / "adapter_model.safetensors").read_bytes()

        d = registry.promote(session, "extract", 1, settings=s)
        assert d.promoted and d.reason == "no active version"
        d = registry.promote(session, "extract", 2, settings=s)  # 0.85 does not beat 0.90
        assert not d.promoted and (d.candidate_metric, d.active_metric) == (0.85, 0.90)
        assert d.comparison["documents"] == 20 and not d.comparison["passes"]
        assert registry.active_version(session, "extract").version == 1
        v3 = _register(session, s, "extract", adapters["c"], 0.95)
        d = registry.promote(session, "extract", v3.version, settings=s)
        assert d.promoted and d.active_version == 1 and d.candidate_metric == 0.95
        d = registry.promote(session, "extract", 2, force=True, settings=s, actor="cli:tester")
        assert d.promoted and d.forced and d.actor == "cli:tester" and "gate:" in d.reason
        statuses = {v.version: v.status for v in registry.list_versions(session, "extract")}
        assert statuses == {1: "retired", 2: "active", 3: "retired"}

        # Rollback walks the history of activations backwards: 2 -> 3 -> 1.
        assert registry.rollback(session, "extract").version == 3
        assert registry.rollback(session, "extract").version == 1
        with pytest.raises(registry.RegistryError):
            registry.rollback(session, "extract")
        assert registry.active_version(session, "extract").version == 1
        assert registry.active_version(session, "toolchain") is None
        decisions = session.exec(select(PromotionDecision).where(PromotionDecision.adapter == "extract")).all()
        assert len(decisions) == 6


def test_shipped_adapters_are_seeded_once(store_settings, adapters):
    s = store_settings
    shipped = s.adapters_dir / "extract"
    shutil.copytree(adapters["a"], shipped)
    (shipped / "metrics.json").write_text(json.dumps(
        {"field_exact_match": 0.97, "base_fingerprint": "e" * 64, "history": [{"step": 1, "loss": 2.0}]}))
    (s.adapters_dir / "notes").mkdir()  # not an adapter folder: ignored
    with session_scope(s) as session:
        seeded = registry.seed_defaults(session, settings=s)
        assert [(v.name, v.version, v.status) for v in seeded] == [("extract", 1, "active")]
        assert seeded[0].base_fingerprint == "e" * 64
        assert seeded[0].metrics == {"field_exact_match": 0.97}
        assert registry.seed_defaults(session, settings=s) == []
        assert len(session.exec(select(AdapterVersion)).all()) == 1


def test_hot_reload_of_a_promoted_adapter(store_settings, adapters, tiny_model_dir):
    from models.runtime import ModelRuntime

    s = store_settings
    rt = ModelRuntime(tiny_model_dir, device="cpu", dtype="float32", max_new_tokens=600, adapter_poll_s=3600)
    fingerprint = rt.base_fingerprint
    factory = lambda: session_scope(s)  # noqa: E731
    text = ["Invoice INV-2024-0007 ACME GmbH total 99.00 EUR"]
    with session_scope(s) as session:
        _register(session, s, "extract", adapters["a"], 0.90, fingerprint)
        registry.promote(session, "extract", 1)
        _register(session, s, "toolchain", adapters["c"], 0.5, "0" * 64)  # another base: never loaded
        registry.promote(session, "toolchain", 1)
    assert rt.refresh_adapters(factory, force=True) == {"extract": "1"}
    v1_output = rt.extract(text)[0]
    assert v1_output.adapter_version == "extract:1"

    with session_scope(s) as session:
        _register(session, s, "extract", adapters["b"], 0.95, fingerprint)
        assert registry.promote(session, "extract", 2).promoted
    assert rt.refresh_adapters(factory) == {}  # polled less than adapter_poll_s ago
    rt.adapter_poll_s = 0
    assert rt.refresh_adapters(factory) == {"extract": "2"}
    v2_output = rt.extract(text)[0]
    assert v2_output.adapter_version == "extract:2"
    assert rt.adapters == {"extract": "2"}
    assert list(rt.model.peft_config) == ["extract__v2"]  # v1 was unloaded, not kept around

    fresh = ModelRuntime(tiny_model_dir, device="cpu", dtype="float32", max_new_tokens=600)
    fresh.load_adapter("extract", adapters["b"], version="x")
    assert fresh.extract(text)[0].outputs == v2_output.outputs != v1_output.outputs

    with session_scope(s) as session:
        registry.rollback(session, "extract")
    assert rt.refresh_adapters(factory) == {"extract": "1"}
    assert rt.extract(text)[0].outputs == v1_output.outputs


def test_cli_list_promote_rollback_merge(store_settings, adapters, tiny_model_dir, tmp_path):
    from typer.testing import CliRunner

    from invoicechain.config import get_settings
    from cli.models import app

    s = store_settings
    s.base_model = str(tiny_model_dir)
    assert get_settings() is s  # the commands read the same settings
    with session_scope(s) as session:
        _register(session, s, "extract", adapters["a"], 0.90)
        _register(session, s, "extract", adapters["b"], 0.80)
    runner = CliRunner()
    result = runner.invoke(app, ["promote", "extract", "1"])
    assert result.exit_code == 0, result.output
    result = runner.invoke(app, ["promote", "extract", "2"])
    assert result.exit_code == 2 and "not promoted" in result.output
    result = runner.invoke(app, ["promote", "extract", "2", "--force"])
    assert result.exit_code == 0 and "promoted" in result.output
    result = runner.invoke(app, ["list"])
    assert result.exit_code == 0 and "extract" in result.output and "active" in result.output
    result = runner.invoke(app, ["rollback", "extract"])
    assert result.exit_code == 0 and "v1 is active again" in result.output
    result = runner.invoke(app, ["promote", "extract", "9"])
    assert result.exit_code == 1 and "no version 9" in result.output
    out = tmp_path / "merged"
    result = runner.invoke(app, ["merge", "extract", "--version", "2", "--out", str(out)])
    assert result.exit_code == 0, result.output
    from transformers import AutoModelForCausalLM, AutoTokenizer

    AutoModelForCausalLM.from_pretrained(out)
    assert AutoTokenizer.from_pretrained(out).chat_template
    assert json.loads((out / "merge.json").read_text())["merged_from"]["adapter"].endswith("v2")


def test_an_installed_adapter_is_not_replaced_by_an_identical_copy(adapters, tmp_path):
    """Every worker seeds the shipped adapters at start: the first copy stays, others read it."""
    src, other = list(adapters.values())[:2]
    dest = tmp_path / "store" / "extract" / "v1"
    dest.parent.mkdir(parents=True)
    registry._install(src, dest)
    weights = dest / "adapter_model.safetensors"
    inode = weights.stat().st_ino
    registry._install(src, dest)
    assert weights.stat().st_ino == inode
    # A different adapter under the same version path does replace it.
    registry._install(other, dest)
    assert (dest / "adapter_model.safetensors").read_bytes() == (other / "adapter_model.safetensors").read_bytes()
    assert not list(dest.parent.glob(".*.tmp"))
