"""PNG plots of a training run: loss curves and attention heatmaps (layer x head)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")  # files only; workers have no display
    import matplotlib.pyplot as plt

    return plt


def plot_losses(history: Sequence[dict], eval_history: Sequence[dict], path: Path) -> Path:
    """Train loss per step and eval loss per evaluation."""
    plt = _pyplot()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig, ax = plt.subplots(figsize=(7, 4))
    if history:
        ax.plot([h["step"] for h in history], [h["loss"] for h in history], label="train loss", lw=1)
    ev = [e for e in eval_history if e.get("eval_loss") is not None]
    if ev:
        ax.plot([e["step"] for e in ev], [e["eval_loss"] for e in ev], "o-", label="eval loss")
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("cross-entropy on answer tokens (nats)")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def plot_heatmap(matrix: Sequence[Sequence[float]], title: str, path: Path, cbar: str) -> Path:
    """One layer x head heatmap."""
    plt = _pyplot()
    path.parent.mkdir(parents=True, exist_ok=True)
    layers, heads = len(matrix), len(matrix[0]) if matrix else 0
    fig, ax = plt.subplots(figsize=(max(4, 0.45 * heads + 2), max(3, 0.25 * layers + 1.5)))
    im = ax.imshow(matrix, aspect="auto", cmap="viridis", origin="lower")
    ax.set_xlabel("head")
    ax.set_ylabel("layer")
    ax.set_title(title)
    ax.set_xticks(range(heads))
    ax.set_yticks(range(0, layers, max(1, layers // 15)))
    fig.colorbar(im, ax=ax, label=cbar)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def plot_attention(metrics: dict, out_dir: Path) -> list[Path]:
    """Heatmaps of one evaluation's attention metrics."""
    step = metrics.get("step")
    return [
        plot_heatmap(metrics["entropy"], f"attention entropy (step {step})", out_dir / "attention_entropy.png", "nats"),
        plot_heatmap(
            metrics["label_mass"], f"answer->label attention mass (step {step})",
            out_dir / "attention_label_mass.png", "mass",
        ),
    ]
