"""LoRA supervised fine-tuning: a custom loop over answer-only losses, resumable after a crash.

The loop computes logits only at positions that carry a loss (the answer tokens): the
vocabulary projection is the largest single matrix in a small model, and the prompt
positions would be thrown away by the -100 labels anyway. Batches are grouped by length
(or packed), never padded to the maximum. bf16 autocast is used where the hardware has
it (CUDA with bf16, or a CPU with AVX512-BF16/AMX), with fp32 master weights.

Layout of a run directory::

    out_dir/
      run.json                 config + dataset fingerprint (a rerun must match to resume)
      checkpoints/latest.json  -> checkpoints/step-000040/{trainable.safetensors, state.pt}
      tensorboard/             event files (train/eval loss, lr, tokens/s, attention)
      adapter/                 adapter_config.json, adapter_model.safetensors,
                               metrics.json, attention.json, plots/*.png
"""

from __future__ import annotations

import json
import logging
import math
import os
import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from invoicechain.enums import AdapterName
from training.data import (
    IGNORE_INDEX,
    Batch,
    DatasetError,
    Example,
    collate,
    dataset_fingerprint,
    encode_records,
    plan_epoch,
    split_train_eval,
)

log = logging.getLogger(__name__)

ProgressFn = Callable[[dict], None]
CancelFn = Callable[[], bool]


class TrainConfig(BaseModel):
    """Everything that determines a training run (saved with the adapter as its params)."""

    model_config = ConfigDict(extra="forbid")

    adapter: str = Field(AdapterName.EXTRACT, min_length=1, max_length=60)
    lora_r: int = Field(16, ge=1, le=512)
    lora_alpha: int = Field(32, ge=1)
    lora_dropout: float = Field(0.05, ge=0.0, lt=1.0)
    #: Module names to adapt, or "all-linear" (every linear layer but the output head).
    target_modules: list[str] | Literal["all-linear"] = Field(default_factory=lambda: ["q_proj", "v_proj"])
    learning_rate: float = Field(2e-4, gt=0)
    weight_decay: float = Field(0.0, ge=0)
    epochs: float = Field(1.0, gt=0)
    #: Optimizer steps; overrides epochs when set.
    max_steps: int | None = Field(None, ge=1)
    batch_size: int = Field(8, ge=1)
    grad_accum: int = Field(1, ge=1)
    max_seq_len: int = Field(1536, ge=16)
    warmup_ratio: float = Field(0.05, ge=0, lt=1)
    schedule: Literal["cosine", "linear", "constant"] = "cosine"
    max_grad_norm: float | None = 1.0
    #: Evaluate (eval loss + attention metrics) every N optimizer steps; 0 = at the end only.
    eval_every: int = Field(50, ge=0)
    eval_fraction: float = Field(0.1, ge=0, lt=1)
    #: Stop after this many evaluations without a better eval loss; None = never.
    early_stopping_patience: int | None = Field(3, ge=1)
    checkpoint_every: int = Field(50, ge=1)
    seed: int = 0
    bf16: bool | Literal["auto"] = "auto"
    batch_layout: Literal["length", "pack"] = "length"
    device: Literal["auto", "cpu", "cuda"] = "auto"
    attention_metrics: bool = True
    #: Eval examples used for the attention metrics at each evaluation.
    attention_examples: int = Field(4, ge=1)
    #: Adapter folder to start from instead of a fresh LoRA (continued training, e.g. on
    #: corrections): its rank, alpha and target modules replace the ones above.
    init_adapter: str | None = None

    @field_validator("target_modules", mode="before")
    @classmethod
    def _all_linear(cls, v: Any) -> Any:
        if isinstance(v, (list, tuple)) and len(v) == 1 and v[0] == "all-linear":
            return "all-linear"
        if isinstance(v, str) and v != "all-linear":
            return [m.strip() for m in v.split(",") if m.strip()]
        return v

    def resume_key(self) -> dict:
        """Fields that must match for a rerun to continue a checkpoint (device and logging may change)."""
        return self.model_dump(exclude={"device", "attention_metrics", "attention_examples"})


@dataclass
class TrainResult:
    """What a run produced."""

    adapter_dir: Path | None
    out_dir: Path
    metrics: dict
    steps: int
    total_steps: int
    stopped: Literal["completed", "early_stopped", "cancelled"]
    best_eval_loss: float | None
    dataset_fingerprint: str
    train_records: list[dict] = field(repr=False)
    eval_records: list[dict] = field(repr=False)
    resumed_from_step: int | None = None


class TrainingCancelled(Exception):
    """Raised inside the loop when should_cancel() answers True."""


# --- devices and precision ----------------------------------------------------------------


def resolve_device(device: str) -> str:
    """"auto" means CUDA when present, else CPU."""
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return device


def bf16_available(device: str) -> bool:
    """Whether bf16 matmuls are native here (CUDA bf16, or CPU AVX512-BF16 / AMX via oneDNN)."""
    import torch

    if device.startswith("cuda"):
        return torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except Exception:  # an older or stripped build without the probe
        return False


def autocast_context(device: str, enabled: bool):
    import contextlib

    import torch

    if not enabled:
        return contextlib.nullcontext()
    return torch.autocast(device_type="cuda" if device.startswith("cuda") else "cpu", dtype=torch.bfloat16)


# --- the loss -----------------------------------------------------------------------------


def answer_loss_sum(model, batch: Batch):
    """Summed cross-entropy over answer tokens only, and the number of those tokens.

    Logits are computed only where the next token is an answer token (transformers'
    boolean `logits_to_keep`), so prompt positions cost no vocabulary projection and
    contribute exactly zero to the loss.
    """
    import torch
    import torch.nn.functional as F

    target_mask = batch.labels[:, 1:] != IGNORE_INDEX
    keep = torch.zeros_like(batch.labels, dtype=torch.bool)
    keep[:, :-1] = target_mask
    targets = batch.labels[:, 1:][target_mask]
    out = model(
        input_ids=batch.input_ids,
        attention_mask=batch.attention_mask,
        position_ids=batch.position_ids,
        logits_to_keep=keep,
        use_cache=False,
    )
    logits = out.logits.reshape(-1, out.logits.shape[-1])
    return F.cross_entropy(logits.float(), targets, reduction="sum"), int(targets.numel())


def lr_lambda(schedule: str, warmup: int, total: int) -> Callable[[int], float]:
    """Multiplier of the base learning rate at a step: linear warm-up, then the schedule."""

    def f(step: int) -> float:
        if warmup and step < warmup:
            return (step + 1) / warmup
        if schedule == "constant":
            return 1.0
        progress = (step - warmup) / max(1, total - warmup)
        progress = min(max(progress, 0.0), 1.0)
        if schedule == "linear":
            return max(0.0, 1.0 - progress)
        return 0.5 * (1.0 + math.cos(math.pi * progress))

    return f


# --- model --------------------------------------------------------------------------------


def load_base(base_dir: Path, device: str, bf16: bool = False, attn_implementation: str = "sdpa"):
    """The frozen base causal LM and its tokenizer: bf16 weights when bf16 is on, else fp32.

    Frozen weights stored in bf16 are not cast again at every matmul (autocast would
    copy fp32 weights to bf16 on each call); the trainable LoRA weights stay fp32.
    """
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(base_dir)
    model = AutoModelForCausalLM.from_pretrained(
        base_dir, dtype=torch.bfloat16 if bf16 else torch.float32, attn_implementation=attn_implementation
    )
    model.config.use_cache = False
    return model.to(device), tokenizer


def init_adapter_shape(config: TrainConfig) -> TrainConfig:
    """The config with rank, alpha and target modules taken from `init_adapter` (when set).

    Raises ValueError when the folder holds no LoRA adapter.
    """
    if not config.init_adapter:
        return config
    folder = Path(config.init_adapter)
    cfg_file, weights = folder / "adapter_config.json", folder / "adapter_model.safetensors"
    if not (cfg_file.is_file() and weights.is_file()):
        raise ValueError(f"init_adapter {folder} holds no adapter_config.json and adapter_model.safetensors")
    cfg = json.loads(cfg_file.read_text())
    if str(cfg.get("peft_type", "LORA")).upper() != "LORA":
        raise ValueError(f"init_adapter {folder} is a {cfg.get('peft_type')} adapter, not LoRA")
    targets = cfg.get("target_modules") or config.target_modules
    if isinstance(targets, str) and targets != "all-linear":
        targets = [targets]
    return config.model_copy(update={
        "lora_r": int(cfg.get("r", config.lora_r)),
        "lora_alpha": int(cfg.get("lora_alpha", config.lora_alpha)),
        "target_modules": sorted(targets) if isinstance(targets, list) else targets,
    })


def add_lora(model, config: TrainConfig):
    """Wrap the base with a LoRA adapter named after the config's adapter: fresh, or the
    weights of `config.init_adapter` to continue from."""
    import torch
    from peft import LoraConfig, TaskType, get_peft_model, set_peft_model_state_dict

    torch.manual_seed(config.seed)  # the LoRA A matrices are random: make them reproducible
    lora = LoraConfig(
        task_type=TaskType.CAUSAL_LM,
        r=config.lora_r,
        lora_alpha=config.lora_alpha,
        lora_dropout=config.lora_dropout,
        target_modules=config.target_modules,
        bias="none",
    )
    model = get_peft_model(model, lora)
    if config.init_adapter:
        from safetensors.torch import load_file

        state = load_file(str(Path(config.init_adapter) / "adapter_model.safetensors"))
        result = set_peft_model_state_dict(model, state)
        missing = [k for k in result.missing_keys if "lora_" in k]
        if missing or result.unexpected_keys:
            raise ValueError(
                f"init_adapter {config.init_adapter} does not fit this base: "
                f"{len(missing)} LoRA weights missing, {len(result.unexpected_keys)} unexpected"
            )
    for p in model.parameters():
        if p.requires_grad and p.dtype != torch.float32:
            p.data = p.data.float()  # fp32 master weights for what the optimizer updates
    return model


def trainable_state(model) -> dict:
    return {n: p.detach().to("cpu", copy=True) for n, p in model.named_parameters() if p.requires_grad}


def load_trainable_state(model, state: dict) -> None:
    import torch

    params = dict(model.named_parameters())
    with torch.no_grad():
        for name, value in state.items():
            params[name].copy_(value.to(params[name].device))


# --- checkpoints --------------------------------------------------------------------------


def _atomic_write_json(path: Path, obj: Any) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(obj, indent=2, default=str))
    os.replace(tmp, path)


def save_checkpoint(ckpt_root: Path, model, optimizer, scheduler, state: dict) -> Path:
    """Write a checkpoint atomically (temp dir, rename, then the latest pointer); keep only the newest."""
    import random as pyrandom

    import numpy as np
    import torch
    from safetensors.torch import save_file

    ckpt_root.mkdir(parents=True, exist_ok=True)
    name = f"step-{state['step']:06d}"
    final = ckpt_root / name
    tmp = ckpt_root / f".tmp-{name}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    save_file({k: v.contiguous() for k, v in trainable_state(model).items()}, tmp / "trainable.safetensors")
    best = state.get("best_state")
    if best is not None:
        save_file({k: v.contiguous() for k, v in best.items()}, tmp / "best.safetensors")
    rng = {
        "torch": torch.get_rng_state(),
        "python": pyrandom.getstate(),
        "numpy": np.random.get_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
    }
    torch.save(
        {
            "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict(),
            "rng": rng,
            "loop": {k: v for k, v in state.items() if k != "best_state"},
        },
        tmp / "state.pt",
    )
    shutil.rmtree(final, ignore_errors=True)
    os.replace(tmp, final)
    _atomic_write_json(ckpt_root / "latest.json", {"step": state["step"], "dir": name})
    for old in ckpt_root.glob("step-*"):
        if old.name != name:
            shutil.rmtree(old, ignore_errors=True)
    return final


def latest_checkpoint(ckpt_root: Path) -> Path | None:
    """The newest complete checkpoint, or None."""
    pointer = ckpt_root / "latest.json"
    if pointer.is_file():
        try:
            cand = ckpt_root / json.loads(pointer.read_text())["dir"]
            if (cand / "state.pt").is_file():
                return cand
        except (ValueError, KeyError):
            pass
    found = sorted(p for p in ckpt_root.glob("step-*") if (p / "state.pt").is_file())
    return found[-1] if found else None


def load_checkpoint(path: Path, model, optimizer, scheduler) -> dict:
    """Restore weights, optimizer, scheduler and RNG; returns the loop state."""
    import random as pyrandom

    import numpy as np
    import torch
    from safetensors.torch import load_file

    load_trainable_state(model, load_file(path / "trainable.safetensors"))
    blob = torch.load(path / "state.pt", map_location="cpu", weights_only=False)
    optimizer.load_state_dict(blob["optimizer"])
    scheduler.load_state_dict(blob["scheduler"])
    rng = blob["rng"]
    torch.set_rng_state(rng["torch"])
    pyrandom.setstate(rng["python"])
    np.random.set_state(rng["numpy"])
    if rng.get("cuda") is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(rng["cuda"])
    loop = blob["loop"]
    best = path / "best.safetensors"
    loop["best_state"] = load_file(best) if best.is_file() else None
    return loop


# --- evaluation loss ----------------------------------------------------------------------


def eval_loss(model, examples: Sequence[Example], batch_size: int, pad_id: int, device: str, bf16: bool) -> float | None:
    """Token-weighted mean answer loss over the eval examples."""
    import torch

    if not examples:
        return None
    was_training = model.training
    model.eval()
    order = sorted(range(len(examples)), key=lambda i: len(examples[i]))
    total, count = 0.0, 0
    with torch.no_grad(), autocast_context(device, bf16):
        for j in range(0, len(order), batch_size):
            batch = collate(examples, [[i] for i in order[j : j + batch_size]], pad_id, packed=False).to(device)
            s, n = answer_loss_sum(model, batch)
            total += float(s)
            count += n
    if was_training:
        model.train()
    return total / max(count, 1)


# --- the loop -----------------------------------------------------------------------------


def _peak_rss_mb() -> float:
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def _cuda_peak_mb(device: str) -> float | None:
    import torch

    if not device.startswith("cuda"):
        return None
    return round(torch.cuda.max_memory_allocated() / 2**20, 1)


def train_lora(
    config: TrainConfig,
    records: Sequence[dict],
    base_dir: str | Path,
    out_dir: str | Path,
    progress: ProgressFn | None = None,
    should_cancel: CancelFn | None = None,
    eval_records: Sequence[dict] | None = None,
) -> TrainResult:
    """Train a LoRA adapter on records; resumes from out_dir's last checkpoint when there is one.

    `records` are split deterministically into train/eval unless `eval_records` is given.
    `progress(dict)` is called after every optimizer step and evaluation with step,
    total_steps, loss, eval_loss, tokens_per_s and epoch; `should_cancel()` is checked
    before every step. Raises DatasetError for records that do not fit max_seq_len.

    Long because the optimizer, scheduler, checkpoints, early stopping and cancellation share the state of one training loop.
    """
    import torch

    base_dir, out_dir = Path(base_dir), Path(out_dir)
    config = init_adapter_shape(config)
    out_dir.mkdir(parents=True, exist_ok=True)
    device = resolve_device(config.device)
    bf16 = bf16_available(device) if config.bf16 == "auto" else bool(config.bf16)

    if eval_records is None:
        train_records, eval_records = split_train_eval(records, config.eval_fraction, config.seed)
    else:
        train_records, eval_records = list(records), list(eval_records)
    if not train_records:
        raise DatasetError([(0, "no training records left after the eval split")])
    fingerprint = dataset_fingerprint(train_records + list(eval_records))

    run_file = out_dir / "run.json"
    run_info = {"config": config.resume_key(), "dataset_fingerprint": fingerprint, "base_dir": str(base_dir)}
    ckpt_root = out_dir / "checkpoints"
    ckpt = latest_checkpoint(ckpt_root)
    if ckpt is not None:
        previous = json.loads(run_file.read_text()) if run_file.is_file() else {}
        if {k: previous.get(k) for k in run_info} != run_info:
            raise ValueError(
                f"{out_dir} holds checkpoints of a different run (config, data or base changed); "
                "use another output directory"
            )
    finished = out_dir / "adapter" / "metrics.json"
    if ckpt is None and finished.is_file() and run_file.is_file() and json.loads(run_file.read_text()) == run_info:
        # The run already finished (a job cut off after training): its adapter is the result.
        metrics = json.loads(finished.read_text())
        return TrainResult(
            out_dir / "adapter", out_dir, metrics, metrics["steps"], metrics["total_steps"], metrics["stopped"],
            metrics.get("best_eval_loss"), fingerprint, list(train_records), list(eval_records), metrics["steps"],
        )
    _atomic_write_json(run_file, run_info)

    torch.manual_seed(config.seed)
    model, tokenizer = load_base(base_dir, device, bf16=bf16)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id

    try:
        train_ex = encode_records(tokenizer, train_records)
        eval_ex = encode_records(tokenizer, eval_records)
    except ValueError as exc:  # pragma: no cover - encode_records without max_length does not raise
        raise DatasetError([(0, str(exc))]) from exc
    # Loaders check lengths against line numbers first; this guards direct callers.
    too_long = [
        (0, f"{part} record {i + 1} is {len(e)} tokens, over the maximum of {config.max_seq_len}")
        for part, exs in (("train", train_ex), ("eval", eval_ex))
        for i, e in enumerate(exs)
        if len(e) > config.max_seq_len
    ]
    if too_long:
        raise DatasetError(too_long, source="records")

    model = add_lora(model, config)
    model.train()
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=config.learning_rate, weight_decay=config.weight_decay)

    def epoch_plan(epoch: int) -> list[list[list[int]]]:
        return plan_epoch(train_ex, config.batch_layout, config.batch_size, config.max_seq_len, config.seed + epoch)

    batches_per_epoch = len(epoch_plan(0))
    if config.max_steps:
        total_steps = config.max_steps
    else:
        total_steps = max(1, math.ceil(config.epochs * batches_per_epoch / config.grad_accum))
    warmup = int(config.warmup_ratio * total_steps)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda(config.schedule, warmup, total_steps))

    state: dict[str, Any] = {
        "step": 0,
        "epoch": 0,
        "batch_pos": 0,
        "plan": epoch_plan(0),
        "history": [],
        "eval_history": [],
        "attention_history": [],
        "best_eval_loss": None,
        "best_step": None,
        "bad_evals": 0,
        "tokens_seen": 0,
        "train_seconds": 0.0,
        "stopped": None,
        "best_state": None,
    }
    resumed_from = None
    if ckpt is not None:
        state.update(load_checkpoint(ckpt, model, optimizer, scheduler))
        resumed_from = state["step"]
        log.info("resuming %s from step %d", out_dir, resumed_from)

    from torch.utils.tensorboard import SummaryWriter

    # purge_step drops events a crashed run wrote after its last checkpoint.
    writer = SummaryWriter(str(out_dir / "tensorboard"), purge_step=state["step"] + 1 if resumed_from else None)
    probe = None
    if config.attention_metrics and eval_ex:
        from training.attention import AttentionProbe

        probe = AttentionProbe(tokenizer, eval_records[: config.attention_examples], device)

    def next_micro_batches() -> list[list[list[int]]]:
        """The next grad_accum batches in the data order, moving to the next epoch as needed."""
        out = []
        while len(out) < config.grad_accum:
            if state["batch_pos"] >= len(state["plan"]):
                state["epoch"] += 1
                state["batch_pos"] = 0
                state["plan"] = epoch_plan(state["epoch"])
            out.append(state["plan"][state["batch_pos"]])
            state["batch_pos"] += 1
        return out

    def report(extra: dict | None = None) -> None:
        if progress is None:
            return
        last = state["history"][-1] if state["history"] else {}
        ev = state["eval_history"][-1]["eval_loss"] if state["eval_history"] else None
        progress(
            {
                "step": state["step"],
                "total_steps": total_steps,
                "loss": last.get("loss"),
                "eval_loss": ev,
                "tokens_per_s": last.get("tokens_per_s"),
                "epoch": last.get("epoch", 0.0),
                **(extra or {}),
            }
        )

    def evaluate_now() -> None:
        t0 = time.perf_counter()
        ev = eval_loss(model, eval_ex, config.batch_size, pad_id, device, bf16)
        eval_s = time.perf_counter() - t0
        entry = {"step": state["step"], "eval_loss": ev, "seconds": round(eval_s, 3)}
        state["eval_history"].append(entry)
        if ev is not None:
            writer.add_scalar("loss/eval", ev, state["step"])
            if state["best_eval_loss"] is None or ev < state["best_eval_loss"] - 1e-4:
                state["best_eval_loss"], state["best_step"] = ev, state["step"]
                state["best_state"] = trainable_state(model)
                state["bad_evals"] = 0
            else:
                state["bad_evals"] += 1
        if probe is not None:
            att = probe.measure(model)
            att["step"] = state["step"]
            att["eval_loss_seconds"] = round(eval_s, 3)
            state["attention_history"].append(att)
            from training.attention import log_to_tensorboard

            log_to_tensorboard(writer, att, state["step"])
        report()

    def checkpoint() -> None:
        save_checkpoint(ckpt_root, model, optimizer, scheduler, state)

    stopped = "completed"
    try:
        if state["stopped"] == "early_stopped":
            stopped = "early_stopped"
        if config.eval_every and state["step"] == 0 and not state["eval_history"]:
            evaluate_now()  # the untrained adapter's eval loss: the reference every later one beats
        while state["step"] < total_steps and stopped == "completed":
            if should_cancel is not None and should_cancel():
                raise TrainingCancelled()
            t0, c0 = time.perf_counter(), time.process_time()
            micro = next_micro_batches()
            batches = [collate(train_ex, rows, pad_id, packed=config.batch_layout == "pack") for rows in micro]
            answer_total = sum(b.answer_tokens for b in batches)
            loss_total = 0.0
            for b in batches:
                b = b.to(device)
                with autocast_context(device, bf16):
                    loss_sum, _ = answer_loss_sum(model, b)
                # Normalise by the answer tokens of the whole accumulated step, so every
                # answer token weighs the same whatever batch it fell into.
                (loss_sum / answer_total).backward()
                loss_total += float(loss_sum.detach())
            grad_norm = None
            if config.max_grad_norm:
                grad_norm = float(torch.nn.utils.clip_grad_norm_(params, config.max_grad_norm))
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            if device.startswith("cuda"):
                torch.cuda.synchronize()
            dt = time.perf_counter() - t0
            tokens = sum(b.tokens for b in batches)
            state["step"] += 1
            state["tokens_seen"] += tokens
            state["train_seconds"] += dt
            # CPU time of this process (all its threads): steadier than wall time on a shared machine.
            state["train_cpu_seconds"] = state.get("train_cpu_seconds", 0.0) + time.process_time() - c0
            epoch_f = state["epoch"] + state["batch_pos"] / max(1, len(state["plan"]))
            entry = {
                "step": state["step"],
                "loss": loss_total / answer_total,
                "lr": scheduler.get_last_lr()[0],
                "tokens": tokens,
                "answer_tokens": answer_total,
                "tokens_per_s": tokens / dt if dt > 0 else None,
                "grad_norm": grad_norm,
                "epoch": round(epoch_f, 4),
            }
            state["history"].append(entry)
            writer.add_scalar("loss/train", entry["loss"], state["step"])
            writer.add_scalar("lr", entry["lr"], state["step"])
            writer.add_scalar("throughput/tokens_per_s", entry["tokens_per_s"] or 0.0, state["step"])
            if config.eval_every and state["step"] % config.eval_every == 0 and state["step"] < total_steps:
                evaluate_now()
                if (
                    config.early_stopping_patience is not None
                    and state["bad_evals"] >= config.early_stopping_patience
                ):
                    stopped = "early_stopped"
                    state["stopped"] = stopped
            else:
                report()
            if state["step"] % config.checkpoint_every == 0 or stopped != "completed":
                checkpoint()
        if not state["eval_history"] or state["eval_history"][-1]["step"] != state["step"]:
            evaluate_now()
    except TrainingCancelled:
        checkpoint()
        writer.close()
        metrics = _summary(config, state, total_steps, device, bf16, "cancelled", train_ex, eval_ex)
        _atomic_write_json(out_dir / "metrics.json", metrics)
        return TrainResult(
            None, out_dir, metrics, state["step"], total_steps, "cancelled", state["best_eval_loss"],
            fingerprint, list(train_records), list(eval_records), resumed_from,
        )

    # The adapter kept is the one with the best eval loss (the last one can be past the optimum).
    if state["best_state"] is not None and state["best_step"] != state["step"]:
        load_trainable_state(model, state["best_state"])
    writer.close()
    adapter_dir = out_dir / "adapter"
    tmp_dir = out_dir / ".adapter-tmp"
    shutil.rmtree(tmp_dir, ignore_errors=True)
    model.save_pretrained(tmp_dir)
    # peft's generated model card is an empty template naming this machine's paths; params.json and metrics.json describe the run.
    (tmp_dir / "README.md").unlink(missing_ok=True)
    # The base is named, not located: the folder moves between machines (its fingerprint is in the registry).
    cfg_file = tmp_dir / "adapter_config.json"
    _atomic_write_json(cfg_file, {**json.loads(cfg_file.read_text()), "base_model_name_or_path": base_dir.name})
    metrics = _summary(config, state, total_steps, device, bf16, stopped, train_ex, eval_ex)
    metrics["dataset_fingerprint"] = fingerprint
    metrics["base_model"] = base_dir.name
    metrics["resumed_from_step"] = resumed_from
    _atomic_write_json(tmp_dir / "metrics.json", metrics)
    _atomic_write_json(tmp_dir / "params.json", config.model_dump())
    if state["attention_history"]:
        _atomic_write_json(tmp_dir / "attention.json", state["attention_history"])
    from training.plots import plot_attention, plot_losses

    plot_losses(state["history"], state["eval_history"], tmp_dir / "plots" / "loss.png")
    if state["attention_history"]:
        plot_attention(state["attention_history"][-1], tmp_dir / "plots")
    shutil.rmtree(adapter_dir, ignore_errors=True)
    os.replace(tmp_dir, adapter_dir)
    _atomic_write_json(out_dir / "metrics.json", metrics)
    # A finished run needs no checkpoint to resume from; the adapter is the result.
    shutil.rmtree(ckpt_root, ignore_errors=True)
    return TrainResult(
        adapter_dir, out_dir, metrics, state["step"], total_steps, stopped, state["best_eval_loss"],
        fingerprint, list(train_records), list(eval_records), resumed_from,
    )


def _summary(config, state, total_steps, device, bf16, stopped, train_ex, eval_ex) -> dict:
    from training.data import token_stats

    hist = state["history"]
    tokens, seconds = state["tokens_seen"], state["train_seconds"]
    att_s = [a.get("seconds", 0.0) for a in state["attention_history"]]
    ev_s = [e.get("seconds", 0.0) for e in state["eval_history"]]
    return {
        "adapter": config.adapter,
        "steps": state["step"],
        "total_steps": total_steps,
        "stopped": stopped,
        "epochs_done": hist[-1]["epoch"] if hist else 0.0,
        "train_loss_first": hist[0]["loss"] if hist else None,
        "train_loss_last": hist[-1]["loss"] if hist else None,
        "eval_loss_first": state["eval_history"][0]["eval_loss"] if state["eval_history"] else None,
        "eval_loss": state["eval_history"][-1]["eval_loss"] if state["eval_history"] else None,
        "best_eval_loss": state["best_eval_loss"],
        "best_step": state["best_step"],
        "tokens_seen": tokens,
        "train_seconds": round(seconds, 3),
        "tokens_per_s": round(tokens / seconds, 1) if seconds else None,
        "train_cpu_seconds": round(state.get("train_cpu_seconds", 0.0), 3),
        "eval_seconds": round(sum(ev_s), 3),
        "attention_seconds": round(sum(att_s), 3),
        "device": device,
        "bf16": bf16,
        "batch_layout": config.batch_layout,
        "peak_rss_mb": round(_peak_rss_mb(), 1),
        "cuda_max_allocated_mb": _cuda_peak_mb(device),
        "train_data": token_stats(train_ex),
        "eval_data": token_stats(eval_ex),
        "history": hist,
        "eval_history": state["eval_history"],
    }
