"""`invoicechain train`: fine-tune a LoRA adapter on JSONL files with a progress bar."""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path
from typing import Annotated

import typer
from invoicechain.clock import utcnow
from invoicechain.enums import AdapterName


def train(
    adapter: Annotated[str, typer.Option(help="Adapter name: extract, toolchain, or a new one.")] = AdapterName.EXTRACT,
    data: Annotated[
        list[Path], typer.Option(help="JSONL training file ({instruction, input, output}); repeat for several.")
    ] = [],  # noqa: B006 - typer needs a literal default
    base: Annotated[Path | None, typer.Option(help="Base model folder; default the configured base.")] = None,
    lora_r: Annotated[int, typer.Option(help="LoRA rank.")] = 16,
    lora_alpha: Annotated[int, typer.Option(help="LoRA alpha (scale = alpha / r).")] = 32,
    lora_dropout: Annotated[float, typer.Option(help="Dropout on the LoRA input.")] = 0.05,
    target_modules: Annotated[
        list[str], typer.Option(help="Modules to adapt (repeat, or comma-separated); 'all-linear' for every linear layer.")
    ] = ["q_proj", "v_proj"],  # noqa: B006
    epochs: Annotated[float, typer.Option(help="Passes over the training split.")] = 1.0,
    max_steps: Annotated[int | None, typer.Option(help="Optimizer steps; overrides --epochs.")] = None,
    out: Annotated[Path | None, typer.Option(help="Run folder; rerun into it to resume. Default: model store/runs/.")] = None,
    learning_rate: Annotated[float, typer.Option("--lr", "--learning-rate", help="Peak learning rate.")] = 2e-4,
    batch_size: Annotated[int, typer.Option(help="Examples per micro-batch.")] = 8,
    grad_accum: Annotated[int, typer.Option(help="Micro-batches per optimizer step.")] = 1,
    max_seq_len: Annotated[int, typer.Option(help="Longest record in tokens (longer ones are rejected).")] = 1536,
    eval_every: Annotated[int, typer.Option(help="Evaluate every N steps (0: at the end only).")] = 50,
    eval_fraction: Annotated[float, typer.Option(help="Share of records held out for evaluation.")] = 0.1,
    patience: Annotated[int | None, typer.Option(help="Early stopping: evaluations without improvement.")] = 3,
    batch_layout: Annotated[str, typer.Option(help="'length' (group by length) or 'pack'.")] = "length",
    seed: Annotated[int, typer.Option(help="Seed of the split, data order and LoRA init.")] = 0,
    device: Annotated[str, typer.Option(help="auto, cpu or cuda.")] = "auto",
    evaluate: Annotated[bool, typer.Option(help="Score the eval split through the extraction runtime at the end.")] = True,
    eval_max_records: Annotated[int, typer.Option(help="Eval documents decoded for the final score.")] = 32,
    register: Annotated[bool, typer.Option(help="Register the adapter as a candidate version and try to promote it.")] = False,
    force: Annotated[bool, typer.Option(help="With --register: promote whatever the metric.")] = False,
    init_adapter: Annotated[
        Path | None, typer.Option(help="Continue from this adapter folder's weights (its rank and targets are used).")
    ] = None,
) -> None:
    """Fine-tune a LoRA adapter on JSONL data (resumable: rerun with the same --out after a crash).

    Long because it declares one command-line option per training setting; the body itself is short."""
    import json

    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    from invoicechain.config import get_settings
    from training.data import DatasetError, load_datasets

    console = Console()
    if not data:
        console.print("[red]Give at least one --data FILE.jsonl[/]")
        raise typer.Exit(2)
    settings = get_settings()
    if base is None:
        from models.store import resolve_base

        base = resolve_base(settings)
    modules: list[str] | str = [m.strip() for t in target_modules for m in t.split(",") if m.strip()]
    from pydantic import ValidationError

    from training.sft import TrainConfig, init_adapter_shape, train_lora

    try:
        config = TrainConfig(
            adapter=adapter, lora_r=lora_r, lora_alpha=lora_alpha, lora_dropout=lora_dropout,
            target_modules=modules, learning_rate=learning_rate, epochs=epochs, max_steps=max_steps,
            batch_size=batch_size, grad_accum=grad_accum, max_seq_len=max_seq_len, eval_every=eval_every,
            eval_fraction=eval_fraction, early_stopping_patience=patience, batch_layout=batch_layout,
            seed=seed, device=device, init_adapter=str(init_adapter) if init_adapter else None,
        )
        config = init_adapter_shape(config)
    except (ValidationError, ValueError) as exc:
        console.print(f"[red]Bad option:[/] {exc}")
        raise typer.Exit(2) from exc

    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(base)
    try:
        records = load_datasets(data, tokenizer, config.max_seq_len)
    except DatasetError as exc:
        console.print(f"[red]Bad training data[/] ({len(exc.problems)} problem(s)):")
        for n, why in exc.problems[:50]:
            console.print(f"  line {n}: {why}" if n else f"  {why}")
        raise typer.Exit(1) from exc
    if out is None:
        stamp = utcnow().strftime("%Y%m%d-%H%M%S")
        out = settings.resolved_model_store / "runs" / f"{adapter}-{stamp}"
    console.print(f"{len(records)} records from {len(data)} file(s); base {base}; run folder {out}")

    columns = (
        TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
        TextColumn("loss {task.fields[loss]}  eval {task.fields[eval]}  {task.fields[tps]} tok/s"),
        TimeRemainingColumn(),
    )
    with Progress(*columns, console=console) as bar:
        task = bar.add_task("training", total=None, loss="-", eval="-", tps="-")

        def on_progress(info: dict) -> None:
            fmt = lambda v, p=4: "-" if v is None else f"{v:.{p}f}"  # noqa: E731
            bar.update(
                task, completed=info["step"], total=info["total_steps"], loss=fmt(info.get("loss")),
                eval=fmt(info.get("eval_loss")), tps=fmt(info.get("tokens_per_s"), 0),
            )

        result = train_lora(config, records, base, out, progress=on_progress)

    m = result.metrics
    console.print(
        f"{result.stopped} after {result.steps}/{result.total_steps} steps"
        + (f" (resumed from step {result.resumed_from_step})" if result.resumed_from_step else "")
        + f"; eval loss {m.get('eval_loss_first')} -> best {m.get('best_eval_loss')}; "
        f"{m.get('tokens_per_s')} tokens/s; adapter in {result.adapter_dir}"
    )
    evaluation = None
    if (evaluate or register) and result.adapter_dir is not None:
        from training.evaluate import evaluate_adapter
        from training.jobs import _write_eval

        with console.status("evaluating through the extraction runtime ..."):
            evaluation = evaluate_adapter(
                base, adapter, result.adapter_dir, result.eval_records, device=device, max_records=eval_max_records,
                max_new_tokens=settings.max_new_tokens, max_input_tokens=settings.max_input_tokens,
            )
        _write_eval(result.adapter_dir, evaluation)
        console.print(json.dumps({k: v for k, v in evaluation.items() if not isinstance(v, dict)}, indent=2))
    if register and result.adapter_dir is not None:
        from invoicechain.db.session import init_db, session_scope
        from models import registry
        from models.store import base_fingerprint

        init_db(settings)
        metrics = {k: v for k, v in m.items() if k not in ("history", "eval_history")}
        metrics["eval"] = evaluation
        if evaluation and "field_exact_match" in evaluation:
            metrics["field_exact_match"] = evaluation["field_exact_match"]
        with session_scope(settings) as s:
            version = registry.register_version(
                s, adapter, result.adapter_dir, base_fingerprint(base), result.dataset_fingerprint,
                metrics, config.model_dump(),
            )
            decision = registry.promote(s, adapter, version.version, force=force)
            console.print(
                f"registered {adapter} v{version.version}; "
                + ("promoted" if decision.promoted else "not promoted") + f": {decision.reason}"
            )
