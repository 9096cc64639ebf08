"""The promotion gate on a real Postgres registry: a candidate is compared with the active
version on the same evaluation-set documents; worse, barely better, or better with one field
collapsing stays a candidate with the comparison stored; unscored versions never slip through;
forced promotions and rollbacks are recorded with who asked; the shipped adapter's stored
scores are learned by a registry seeded before they existed."""

from __future__ import annotations

import json
import shutil

import pytest

from invoicechain.db.session import session_scope
from models import registry
from tests.factories import eval_block, make_lora_adapter
from training.evaluate import EVAL_FIELDS


@pytest.fixture(scope="module")
def adapters(tiny_model_dir, tmp_path_factory):
    root = tmp_path_factory.mktemp("gate-lora")
    return [make_lora_adapter(tiny_model_dir, root / f"a{i}", seed=20 + i) for i in range(3)]


@pytest.fixture
def gate_settings(settings, tmp_path):
    settings.model_store = tmp_path / "models"
    settings.adapters_dir = tmp_path / "shipped"
    settings.promotion_margin = 0.01
    settings.promotion_field_tolerance = 0.02
    return settings


def _register(session, s, path, metrics):
    return registry.register_version(session, "extract", path, base_fingerprint="f" * 64,
                                     dataset_fingerprint=None, metrics=metrics, params={}, settings=s)


def test_gate_compares_on_the_same_documents_margin_and_field_tolerance(gate_settings, adapters):
    s = gate_settings
    with session_scope(s) as session:
        active = _register(session, s, adapters[0], {"eval_set": eval_block(0.80)})
        assert registry.promote(session, "extract", active.version, settings=s).promoted

        # Better by less than the margin: stays a candidate, the table says why.
        close = eval_block(0.80)
        close["per_document"]["doc-16"] = [1] + [0] * (len(EVAL_FIELDS) - 1)  # one more field right
        v2 = _register(session, s, adapters[1], {"eval_set": close})
        d = registry.promote(session, "extract", v2.version, settings=s)
        assert not d.promoted and "margin" in d.reason
        assert d.comparison["documents"] == 20 and d.comparison["active"] == 0.8
        assert registry.active_version(session, "extract").version == active.version
        assert registry.get_version(session, "extract", v2.version).status == "candidate"

        # Much better overall, but one field collapses: refused for that field.
        collapsing = eval_block(1.0)
        for doc in collapsing["per_document"].values():
            doc[EVAL_FIELDS.index("invoice_date")] = 0
        v3 = _register(session, s, adapters[2], {"eval_set": collapsing})
        d = registry.promote(session, "extract", v3.version, settings=s)
        assert not d.promoted and "invoice_date" in d.reason
        assert d.comparison["regressions"] == {"invoice_date": -0.8}
        assert d.comparison["delta"] > 0.1

        # A candidate scored on a subset is compared with the active version on that subset.
        subset = eval_block(1.0)
        subset["per_document"] = {k: v for k, v in subset["per_document"].items() if k in ("doc-00", "doc-19")}
        v4 = _register(session, s, adapters[1], {"eval_set": subset})
        d = registry.promote(session, "extract", v4.version, settings=s)
        assert d.promoted and d.comparison["documents"] == 2
        assert (d.comparison["candidate"], d.comparison["active"]) == (1.0, 0.5)


def test_unscored_or_differently_scored_versions_are_not_promoted(gate_settings, adapters):
    s = gate_settings
    with session_scope(s) as session:
        active = _register(session, s, adapters[0], {"field_exact_match": 0.5})  # no eval-set scores
        registry.promote(session, "extract", active.version, settings=s)
        good = _register(session, s, adapters[1], {"field_exact_match": 0.99, "eval_set": eval_block(0.99)})
        d = registry.promote(session, "extract", good.version, settings=s)
        assert not d.promoted and "active version has no score" in d.reason

        registry.set_eval_scores(session, "extract", active.version, eval_block(0.5, sha="0" * 64))
        d = registry.promote(session, "extract", good.version, settings=s)
        assert not d.promoted and "different evaluation sets" in d.reason

        unscored = _register(session, s, adapters[2], {"field_exact_match": 0.99})
        d = registry.promote(session, "extract", unscored.version, settings=s)
        assert not d.promoted and "candidate has no score" in d.reason

        # --force still works and is recorded as forced, with the gate's verdict and who asked.
        d = registry.promote(session, "extract", unscored.version, force=True, settings=s, actor="cli:ops")
        assert d.promoted and d.forced and d.actor == "cli:ops" and "candidate has no score" in d.reason
        back = registry.rollback(session, "extract", actor="api:ops")
        assert back.version == active.version
        [last] = registry.decisions(session, "extract", limit=1)
        assert last.metric == "rollback" and last.actor == "api:ops"


def test_shipped_scores_are_seeded_and_learned_later(gate_settings, adapters):
    s = gate_settings
    shipped = s.adapters_dir / "extract"
    shutil.copytree(adapters[0], shipped)
    (shipped / "metrics.json").write_text(json.dumps({"field_exact_match": 0.9}))
    with session_scope(s) as session:
        [row] = registry.seed_defaults(session, settings=s)
        assert registry.eval_summary(row.metrics) is None
    # A newer release ships the adapter's evaluation-set scores: an existing registry learns them.
    (shipped / "metrics.json").write_text(json.dumps({"field_exact_match": 0.9, "eval_set": eval_block(0.9)}))
    with session_scope(s) as session:
        assert registry.seed_defaults(session, settings=s) == []
        row = registry.active_version(session, "extract")
        assert registry.eval_summary(row.metrics)["field_exact_match"] == 0.9
        assert row.metrics["eval_set_field_exact_match"] == 0.9
