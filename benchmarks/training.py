"""LoRA training throughput: this pipeline against the plain Hugging Face Trainer recipe.

Both sides get the same records (SROIE training receipts), the same base model, the same
LoRA settings (r, alpha, target modules), batch size and number of optimizer steps, one
pass over the records. The baseline is the original prototype's recipe: every example
padded to the maximum length, loss on the full sequence (padding excluded, prompt
included), fp32, `transformers.Trainer`. The pipeline is `training.sft.train_lora` with
its defaults: length-grouped batches (or packed rows), logits and loss on answer tokens
only, bf16 autocast where the hardware has it.

tokens/s counts real tokens (prompt + answer, no padding) over the time spent in
optimizer steps (model loading and evaluation excluded). On a machine shared with other
work the wall clock depends on the neighbours' load, so the CPU time of the process in
those steps is shown too (tokens per CPU-second, all threads counted). Each variant runs in its own
process, so peak RSS is that variant's own; on CUDA the peak allocated memory is shown.

    .venv/bin/python benchmarks/training.py                   # CPU or CUDA (device auto)
    .venv/bin/python benchmarks/training.py --steps 8 --batch-size 8 --variants baseline,pipeline
    .venv/bin/python benchmarks/training.py --variants baseline,pipeline,pipeline-pack,pipeline-fp32 --repeats 2
    .venv/bin/python benchmarks/training.py --variants "" --attention-cost   # eager probe vs SDPA eval pass
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

VARIANTS = {
    "baseline": "HF Trainer, pad to max length, full-sequence loss, fp32",
    "pipeline": "train_lora: length-grouped, answer-only logits, bf16 auto",
    "pipeline-pack": "train_lora: packed rows (position-id resets), answer-only, bf16 auto",
    "pipeline-fp32": "train_lora: length-grouped, answer-only logits, fp32",
}


def bench_records(n: int) -> list[dict]:
    """The first n SROIE training records (fixed order) and two held-out ones for the final eval."""
    from training import sroie

    train, held = sroie.split_records()
    if n > len(train):
        raise SystemExit(f"only {len(train)} training receipts; ask for fewer steps x batch size")
    return train[:n], held[:2]


def _peaks(device: str) -> dict:
    out = {"peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)}
    if device == "cuda":
        import torch

        out["cuda_max_allocated_mb"] = round(torch.cuda.max_memory_allocated() / 2**20, 1)
    return out


def run_baseline(args, base: Path, device: str) -> dict:
    """The prototype: Trainer over examples padded to max length, labels = input ids."""
    import torch
    from peft import LoraConfig, TaskType, get_peft_model
    from transformers import (
        AutoModelForCausalLM,
        AutoTokenizer,
        DataCollatorForLanguageModeling,
        Trainer,
        TrainerCallback,
        TrainingArguments,
    )

    from models.prompts import encode_example

    records, _ = bench_records(args.steps * args.batch_size)
    tok = AutoTokenizer.from_pretrained(base)
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    examples = []
    real_tokens = 0
    for r in records:
        ids = encode_example(tok, r).input_ids  # the same text as the pipeline trains on
        real_tokens += len(ids)
        pad = args.max_seq_len - len(ids)
        examples.append({
            "input_ids": ids + [tok.pad_token_id] * pad,
            "attention_mask": [1] * len(ids) + [0] * pad,
        })
    torch.manual_seed(args.seed)
    model = AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32)
    model = get_peft_model(model, LoraConfig(
        task_type=TaskType.CAUSAL_LM, r=args.lora_r, lora_alpha=args.lora_alpha, lora_dropout=0.05,
        target_modules=args.target_modules.split(","),
    ))

    class StepClock(TrainerCallback):
        def __init__(self):
            self.seconds, self.t0, self.losses = 0.0, None, []

        cpu_seconds = 0.0

        def on_step_begin(self, *a, **k):
            self.t0, self.c0 = time.perf_counter(), time.process_time()

        def on_step_end(self, *a, **k):
            if device == "cuda":
                torch.cuda.synchronize()
            self.seconds += time.perf_counter() - self.t0
            self.cpu_seconds += time.process_time() - self.c0

        def on_log(self, _args, _state, _control, logs=None, **k):
            if logs and "loss" in logs:
                self.losses.append(logs["loss"])

    clock = StepClock()
    targs = TrainingArguments(
        output_dir=str(args.work / "baseline"), per_device_train_batch_size=args.batch_size,
        max_steps=args.steps, learning_rate=args.lr, lr_scheduler_type="cosine", warmup_steps=0,
        logging_steps=1, save_strategy="no", eval_strategy="no", report_to=[], bf16=False, fp16=False,
        use_cpu=device == "cpu", dataloader_num_workers=0, disable_tqdm=True, seed=args.seed,
        remove_unused_columns=False,
    )
    trainer = Trainer(
        model=model, args=targs, train_dataset=examples, processing_class=tok,
        data_collator=DataCollatorForLanguageModeling(tok, mlm=False), callbacks=[clock],
    )
    trainer.train()
    return {
        "tokens": real_tokens, "padded_tokens": len(records) * args.max_seq_len,
        "seconds": round(clock.seconds, 2), "tokens_per_s": round(real_tokens / clock.seconds, 1),
        "cpu_seconds": round(clock.cpu_seconds, 2),
        "steps": args.steps, "last_loss": clock.losses[-1] if clock.losses else None, **_peaks(device),
    }


def run_pipeline(args, base: Path, device: str, layout: str, bf16) -> dict:
    from training.sft import TrainConfig, train_lora

    records, held = bench_records(args.steps * args.batch_size)
    config = TrainConfig(
        adapter="extract", lora_r=args.lora_r, lora_alpha=args.lora_alpha, lora_dropout=0.05,
        target_modules=args.target_modules.split(","), learning_rate=args.lr, epochs=1.0,
        max_steps=args.steps, batch_size=args.batch_size, max_seq_len=args.max_seq_len,
        warmup_ratio=0.0, eval_every=0, early_stopping_patience=None, checkpoint_every=10_000,
        seed=args.seed, bf16=bf16, batch_layout=layout, device=device, attention_metrics=False,
    )
    out = args.work / f"pipeline-{layout}-{bf16}"
    import shutil

    shutil.rmtree(out, ignore_errors=True)
    res = train_lora(config, records, base, out, eval_records=held)
    m = res.metrics
    return {
        "tokens": m["tokens_seen"], "padded_tokens": sum(h["tokens"] for h in m["history"]),
        "seconds": m["train_seconds"], "tokens_per_s": m["tokens_per_s"], "steps": m["steps"],
        "cpu_seconds": m["train_cpu_seconds"],
        "last_loss": m["train_loss_last"], "bf16": m["bf16"], **_peaks(device),
    }


def run_attention_cost(args, base: Path, device: str) -> dict:
    """Eval forward passes with SDPA against the attention probe's eager passes (same examples)."""
    import torch

    from training.attention import AttentionProbe
    from training.data import encode_records
    from training.sft import TrainConfig, add_lora, bf16_available, load_base

    from training import sroie

    held = sroie.split_records()[1][: args.probe_examples]
    bf16 = bf16_available(device)
    model, tok = load_base(base, device, bf16=bf16)
    model = add_lora(model, TrainConfig(lora_r=args.lora_r, lora_alpha=args.lora_alpha,
                                        target_modules=args.target_modules.split(",")))
    model.eval()
    examples = encode_records(tok, held)
    probe = AttentionProbe(tok, held, device)

    def sdpa_pass() -> float:
        t0 = time.perf_counter()
        with torch.no_grad():
            for e in examples:
                model(input_ids=torch.tensor([e.input_ids], device=device), use_cache=False, logits_to_keep=1)
        return time.perf_counter() - t0

    sdpa_pass()  # warm-up
    sdpa = min(sdpa_pass() for _ in range(2))
    probe.measure(model)
    eager = min(probe.measure(model)["seconds"] for _ in range(2))
    return {"examples": len(examples), "tokens": sum(len(e) for e in examples), "sdpa_s": round(sdpa, 3),
            "probe_s": round(eager, 3), **_peaks(device)}


def child(args) -> None:
    from models.store import provision_default_base
    from training.sft import resolve_device

    device = resolve_device(args.device)
    base = args.base or provision_default_base(_model_store())
    if args.child == "baseline":
        out = run_baseline(args, base, device)
    elif args.child == "pipeline":
        out = run_pipeline(args, base, device, "length", "auto")
    elif args.child == "pipeline-pack":
        out = run_pipeline(args, base, device, "pack", "auto")
    elif args.child == "attention":
        out = run_attention_cost(args, base, device)
    elif args.child == "pipeline-fp32":
        out = run_pipeline(args, base, device, "length", False)
    else:
        raise SystemExit(f"unknown variant {args.child}")
    out["device"] = device
    print("RESULT " + json.dumps(out))


def _model_store() -> Path:
    from invoicechain.config import Settings

    return Settings().resolved_model_store


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--steps", type=int, default=4)
    p.add_argument("--batch-size", type=int, default=4)
    p.add_argument("--max-seq-len", type=int, default=None, help="default: longest record rounded up to 64")
    p.add_argument("--lora-r", type=int, default=16)
    p.add_argument("--lora-alpha", type=int, default=32)
    p.add_argument("--target-modules", default="q_proj,v_proj")
    p.add_argument("--lr", type=float, default=2e-4)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    p.add_argument("--base", type=Path, default=None, help="base model folder; default the provisioned default base")
    p.add_argument("--variants", default="baseline,pipeline", help=f"comma-separated, of: {', '.join(VARIANTS)}")
    p.add_argument("--work", type=Path, default=ROOT / ".data" / "bench-training")
    p.add_argument("--attention-cost", action=argparse.BooleanOptionalAction, default=False,
                   help="also time the attention-metrics pass (eager) against an SDPA eval pass")
    p.add_argument("--probe-examples", type=int, default=4)
    p.add_argument("--repeats", type=int, default=1, help="runs per variant (alternating); the best is shown")
    p.add_argument("--json", type=Path, default=None, help="also write the results here")
    p.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = p.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)

    if args.max_seq_len is None:
        from transformers import AutoTokenizer

        from models.prompts import encode_example
        from models.store import provision_default_base

        base = args.base or provision_default_base(_model_store())
        tok = AutoTokenizer.from_pretrained(base)
        records, held = bench_records(args.steps * args.batch_size)
        longest = max(len(encode_example(tok, r).input_ids) for r in records + held)
        args.max_seq_len = -(-longest // 64) * 64
    if args.child:
        child(args)
        return

    results: dict[str, dict] = {}
    runs: list[dict] = []
    variants = [v.strip() for v in args.variants.split(",") if v.strip()]
    # Variants alternate, and each keeps its best run: on a shared machine a neighbour's
    # load burst then slows one run, not one variant.
    for variant in [v for _ in range(args.repeats) for v in variants]:
        cmd = [sys.executable, __file__, "--child", variant, "--max-seq-len", str(args.max_seq_len)]
        for flag in ("steps", "batch_size", "lora_r", "lora_alpha", "target_modules", "lr", "seed", "device", "work"):
            cmd += [f"--{flag.replace('_', '-')}", str(getattr(args, flag))]
        if args.base:
            cmd += ["--base", str(args.base)]
        t0 = time.perf_counter()
        proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
        lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
        if proc.returncode != 0 or not lines:
            print(proc.stderr[-3000:], file=sys.stderr)
            raise SystemExit(f"variant {variant} failed ({proc.returncode})")
        run = json.loads(lines[-1][len("RESULT "):])
        run["variant"], run["wall_s"] = variant, round(time.perf_counter() - t0, 1)
        runs.append(run)
        if variant not in results or run["tokens_per_s"] > results[variant]["tokens_per_s"]:
            results[variant] = run
        print(f"{variant}: {run['tokens_per_s']} tokens/s, peak RSS {run['peak_rss_mb']} MB", file=sys.stderr)

    attention = None
    if args.attention_cost:
        cmd = [sys.executable, __file__, "--child", "attention", "--max-seq-len", str(args.max_seq_len),
               "--probe-examples", str(args.probe_examples), "--device", args.device]
        if args.base:
            cmd += ["--base", str(args.base)]
        proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
        lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
        if proc.returncode != 0 or not lines:
            print(proc.stderr[-3000:], file=sys.stderr)
            raise SystemExit("attention cost measurement failed")
        attention = json.loads(lines[-1][len("RESULT "):])

    ref = results.get("baseline", {}).get("tokens_per_s")
    device = next(iter(results.values()))["device"] if results else "?"
    print(f"\nLoRA training, {args.steps} steps x batch {args.batch_size}, max length {args.max_seq_len}, "
          f"r={args.lora_r}, modules {args.target_modules}, device {device}, best of {args.repeats}\n")
    cuda = device == "cuda"
    head = ("| variant | recipe | real tokens | tokens/s | speed-up | step time (s) | tokens per CPU-s "
            "| CPU speed-up | peak RSS (MB) |")
    head += " CUDA max allocated (MB) |" if cuda else ""
    print(head)
    print("|" + "---|" * (head.count("|") - 1))
    for name, r in results.items():
        speed = f"{r['tokens_per_s'] / ref:.2f}x" if ref else "-"
        per_cpu = r["tokens"] / r["cpu_seconds"] if r.get("cpu_seconds") else None
        ref_cpu = results.get("baseline", {})
        ref_cpu = ref_cpu["tokens"] / ref_cpu["cpu_seconds"] if ref_cpu.get("cpu_seconds") else None
        cpu_speed = f"{per_cpu / ref_cpu:.2f}x" if per_cpu and ref_cpu else "-"
        row = (f"| {name} | {VARIANTS[name]} | {r['tokens']} | {r['tokens_per_s']:.1f} | {speed} | "
               f"{r['seconds'] / max(1, r['steps']):.2f} | {per_cpu or 0:.1f} | {cpu_speed} | {r['peak_rss_mb']:.0f} |")
        row += f" {r.get('cuda_max_allocated_mb', 0):.0f} |" if cuda else ""
        print(row)
    if attention:
        print(f"\nAttention metrics cost, {attention['examples']} eval examples ({attention['tokens']} tokens), "
              f"forward only, device {attention['device']}\n")
        print("| pass | seconds | relative |")
        print("|---|---|---|")
        print(f"| SDPA eval forward (training attention) | {attention['sdpa_s']:.2f} | 1.00x |")
        print(f"| eager + attention weights + metrics (probe) | {attention['probe_s']:.2f} | "
              f"{attention['probe_s'] / attention['sdpa_s']:.2f}x |")
    if args.json:
        args.json.write_text(json.dumps({"args": {k: str(v) for k, v in vars(args).items()}, "results": results, "runs": runs,
                                          "attention": attention}, indent=2))


if __name__ == "__main__":
    main()
