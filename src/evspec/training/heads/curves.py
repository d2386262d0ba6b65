"""Loss curves of a training run as a PNG (matplotlib, headless)."""

from __future__ import annotations

from pathlib import Path


def _smooth(values: list[float], k: int = 21) -> list[float]:
    """Centred moving mean over ``k`` logged points (fewer at the ends): a trailing mean
    lags the curve, so while the loss falls it would sit above the validation loss."""
    half = k // 2
    out = []
    for i in range(len(values)):
        window = values[max(0, i - half): i + half + 1]
        out.append(sum(window) / len(window))
    return out


def plot_history(history: list[dict], path: Path, title: str) -> Path | None:
    """Train loss (smoothed), validation loss and validation top-1 against the step.
    Returns None when matplotlib is missing (the ``plot`` extra)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ModuleNotFoundError:
        return None
    train = [h for h in history if h.get("kind") == "train"]
    val = [h for h in history if h.get("kind") == "val"]
    fig, ax = plt.subplots(figsize=(7, 4))
    if train:
        steps, losses = [h["step"] for h in train], [h["loss"] for h in train]
        ax.plot(steps, losses, color="tab:blue", alpha=0.25, lw=0.6, label="train loss (batches)")
        ax.plot(steps, _smooth(losses), color="tab:blue", lw=1.2,
                label="train loss (centred mean)")
    if val:
        ax.plot([h["step"] for h in val], [h["loss"] for h in val], "o-", color="tab:orange",
                label="val loss", ms=3)
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    ax.set_title(title)
    if val and "top1" in val[0]:
        ax2 = ax.twinx()
        ax2.plot([h["step"] for h in val], [h["top1"] for h in val], "s--", color="tab:green",
                 label="val top-1", ms=3)
        ax2.set_ylabel("top-1 agreement")
        ax2.set_ylim(0, 1)
        ax2.legend(loc="upper right")
    ax.legend(loc="upper left")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
