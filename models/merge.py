"""Merge a LoRA adapter into its base: a plain Hugging Face folder that needs no peft.

The merged weights are written in float32 by default, so the merged model reproduces the
adapter model's logits to float rounding (W + B·A·s computed once instead of per call).
"""

from __future__ import annotations

import json
from pathlib import Path


def merge_adapter(base_dir: Path, adapter_dir: Path, out_dir: Path, dtype: str = "float32") -> Path:
    """Write base + adapter merged into `out_dir` (weights, config, tokenizer, provenance)."""
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from models.store import base_fingerprint

    base_dir, adapter_dir, out_dir = Path(base_dir), Path(adapter_dir), Path(out_dir)
    torch_dtype = getattr(torch, dtype)
    base = AutoModelForCausalLM.from_pretrained(base_dir, dtype=torch.float32)
    peft_model = PeftModel.from_pretrained(base, str(adapter_dir))
    merged = peft_model.merge_and_unload()
    merged.to(torch_dtype)
    merged.config.dtype = dtype
    out_dir.mkdir(parents=True, exist_ok=True)
    merged.save_pretrained(out_dir)
    AutoTokenizer.from_pretrained(base_dir).save_pretrained(out_dir)
    provenance = {
        "merged_from": {"base": str(base_dir), "adapter": str(adapter_dir)},
        "base_fingerprint": base_fingerprint(base_dir),
        "dtype": dtype,
    }
    (out_dir / "merge.json").write_text(json.dumps(provenance, indent=2))
    return out_dir
