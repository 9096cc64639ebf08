"""`invoicechain models list` shows the evaluation set (name, version, document count, sha256),
every adapter version with its scores on that set (or that it was scored on another set), and
the promotion decisions with their reasons."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from invoicechain.db.session import session_scope
from models import registry
from tests.factories import eval_block, make_lora_adapter
from training import evalset


@pytest.fixture(scope="module")
def adapters(tiny_model_dir, tmp_path_factory):
    root = tmp_path_factory.mktemp("list-lora")
    return [make_lora_adapter(tiny_model_dir, root / f"a{i}", seed=40 + i) for i in range(3)]


def test_models_list_shows_the_eval_set_its_hash_and_every_versions_scores(settings, adapters, tmp_path):
    from cli.models import app

    settings.model_store = tmp_path / "models"
    settings.adapters_dir = tmp_path / "shipped"  # nothing shipped: only the versions below
    sha = evalset.info()["sha256"]

    def register(path, share, set_sha=sha):
        block = eval_block(share, sha=set_sha)
        block.update(evalset.summarise(block["per_document"]))  # as training.evalset.score_adapter writes it
        with session_scope(settings) as s:
            return registry.register_version(
                s, "extract", path, base_fingerprint="f" * 64, dataset_fingerprint="d" * 64,
                metrics={"eval_set": block, "field_exact_match": share},
                params={}, settings=settings).version

    v1 = register(adapters[0], 0.9)
    v2 = register(adapters[1], 0.6)
    v3 = register(adapters[2], 0.95, set_sha="0" * 64)  # scored on an older set
    with session_scope(settings) as s:
        assert registry.promote(s, "extract", v1, settings=settings).promoted
        assert not registry.promote(s, "extract", v2, settings=settings).promoted

    result = CliRunner().invoke(app, ["list"], env={"COLUMNS": "260"})
    assert result.exit_code == 0, result.output
    out = result.output
    info = evalset.info()
    assert f"evaluation set: {info['name']} v{info['version']}, {info['documents']} documents, sha256 {sha}" in out
    rows = {line.split("│")[2].strip(): line for line in out.splitlines()
            if line.count("│") > 5 and line.split("│")[1].strip() == "extract"}
    assert set(rows) == {str(v1), str(v2), str(v3)}
    assert "active" in rows[str(v1)] and "0.9000" in rows[str(v1)] and sha[:12] in rows[str(v1)]
    assert "candidate" in rows[str(v2)] and "0.6000" in rows[str(v2)] and sha[:12] in rows[str(v2)]
    assert "0" * 12 + " (old)" in rows[str(v3)] and "0.9500" in rows[str(v3)]
    # Every version shows its documents and its weakest fields on the set.
    assert all(" 20 " in row and "tax 0." in row for row in rows.values()), out
    # The decisions, the refused one with the gate's reason.
    assert "does not beat the margin" in out and "no active version" in out
