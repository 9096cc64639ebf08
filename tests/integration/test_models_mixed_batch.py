"""One batch mixing two adapters, the base and an unknown adapter equals each request run alone."""

from __future__ import annotations

from pathlib import Path

import pytest

from models.prompts import EXTRACT_INSTRUCTION, render_prompt
from tests.factories import make_lora_adapter


@pytest.fixture(scope="module")
def lora_pair(tiny_model_dir, tmp_path_factory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("lora")
    return make_lora_adapter(tiny_model_dir, root / "a", seed=1), make_lora_adapter(tiny_model_dir, root / "b", seed=2)


def _schema():
    from extraction.schemas import invoice_json_schema

    return invoice_json_schema()


def test_mixed_batch_equals_separate_runs(tiny_model_dir, lora_pair):
    from models.runtime import ModelRuntime

    rt = ModelRuntime(tiny_model_dir, device="cpu", dtype="float32", max_new_tokens=600, batch_size=8)
    rt.load_adapter("extract", lora_pair[0], version="1")
    rt.load_adapter("toolchain", lora_pair[1], version="1")
    tok = rt.tokenizer
    schema = _schema()
    requests = [
        ("extract", render_prompt(tok, EXTRACT_INSTRUCTION, "Invoice INV-1 total 12.50"), schema),
        ("toolchain", render_prompt(tok, EXTRACT_INSTRUCTION, "ACME GmbH Hauptstrasse 1 Berlin"), schema),
        (None, render_prompt(tok, EXTRACT_INSTRUCTION, "Net 30 IBAN DE89370400440532013000"), schema),
        ("extract", render_prompt(tok, EXTRACT_INSTRUCTION, "a much longer document " * 12), schema),
        ("no-such-adapter", render_prompt(tok, EXTRACT_INSTRUCTION, "PO-4500012"), schema),
    ]
    together = rt.generate(requests)
    alone = [rt.generate([req])[0] for req in requests]
    assert [g.token_ids for g in together] == [g.token_ids for g in alone]
    assert [g.adapter_version for g in together] == ["extract:1", "toolchain:1", None, "extract:1", None]
    # The adapters really differ from each other and from the base on the same prompt.
    same_prompt = [(name, requests[0][1], schema) for name in ("extract", "toolchain", None)]
    assert len({g.text for g in rt.generate(same_prompt)}) == 3
