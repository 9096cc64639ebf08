"""Training data, LoRA supervised fine-tuning, evaluation and attention metrics."""
