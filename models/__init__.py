"""Language-model runtime: base model store, prompts, adapters, constrained batched generation."""
