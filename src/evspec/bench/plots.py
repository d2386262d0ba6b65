"""Figures of a benchmark run (matplotlib, the ``plot`` extra; imported lazily).

Each function takes summaries (``bench.summary``) and writes one PNG.
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path
from typing import Any

from evspec.bench.summary import STAGES, ConfigSummary

_STAGE_LABELS = {
    "target_preprocess_ms": "target preprocess",
    "draft_preprocess_ms": "draft preprocess",
    "target_vision_ms": "target vision",
    "target_prefill_ms": "target prefill",
    "draft_vision_ms": "draft vision",
    "draft_prefill_ms": "draft prefill",
    "draft_ms": "drafting",
    "score_ms": "target scoring",
    "other_ms": "other",
}


def _pyplot() -> Any:
    try:
        import matplotlib
    except ImportError as exc:
        raise ImportError(
            "plots need matplotlib: pip install 'evspec[plot]' (or run `evspec report --no-plots`)"
        ) from exc
    matplotlib.use("Agg", force=True)  # files only, never a window
    import matplotlib.pyplot as plt

    return plt


def _save(fig: Any, path: Path) -> Path:
    """Lay out, write and close ``fig``."""
    fig.tight_layout()
    fig.savefig(path, dpi=120, bbox_inches="tight")  # legends placed outside the axes too
    _pyplot().close(fig)
    return path


def _by_drafter(summaries: list[ConfigSummary]) -> dict[str, list[ConfigSummary]]:
    groups: dict[str, list[ConfigSummary]] = defaultdict(list)
    for s in summaries:
        if s.kind == "spec" and s.n_ok:
            groups[s.drafter].append(s)
    for v in groups.values():
        v.sort(key=lambda s: s.gamma)
    return dict(groups)


def speedup_vs_gamma(summaries: list[ConfigSummary], path: Path, title: str) -> Path:
    """Speedup vs γ per drafter (one colour each): measured end to end (solid, 95 % interval)
    and in the decode phase (dotted), and the decode speedup the cost model projects from
    the measured α, c and verify cost v, τ / (v·(γ̄c + 1)) (dashed; v = 1 assumed, and said
    so, only where v was not measured)."""
    plt = _pyplot()
    from matplotlib.lines import Line2D

    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    gammas: set[int] = set()
    drafters, assumed_v = [], False
    for i, (name, rows) in enumerate(_by_drafter(summaries).items()):
        colour = f"C{i % 10}"
        drafters.append(Line2D([], [], color=colour, marker="o", label=name))
        gammas.update(s.gamma for s in rows)
        meas = [(s, s.vs_target) for s in rows if s.vs_target is not None]
        if meas:
            ys = [sp.ratio_of_means for _, sp in meas]
            err = [[y - sp.ci95[0] for (_, sp), y in zip(meas, ys)], [sp.ci95[1] - y for (_, sp), y in zip(meas, ys)]]
            ax.errorbar([s.gamma for s, _ in meas], ys, yerr=err, color=colour, marker="o",
                        capsize=3)
        dec = [(s.gamma, s.decode_speedup) for s in rows if s.decode_speedup is not None]
        if dec:
            ax.plot(*zip(*dec), color=colour, marker="s", markersize=4, linestyle=":")
        pred = []
        for s in rows:
            if s.predicted_v is not None:
                pred.append((s.gamma, s.predicted_v))
            elif s.predicted is not None:
                pred.append((s.gamma, s.predicted))
                assumed_v = True
        if pred:
            ax.plot(*zip(*pred), color=colour, linestyle="--")
    ax.axhline(1.0, color="grey", linewidth=0.8)
    ax.set_xticks(sorted(gammas))
    ax.set_xlabel("γ (drafted tokens per round)")
    ax.set_ylabel("speedup over evspec target-only")
    ax.set_title(title)
    projected = "projected decode τ/(v(γc+1))"
    if assumed_v:
        projected += " (v = 1 where unmeasured)"
    styles = [Line2D([], [], color="black", marker="o", label="measured, end to end (95 % CI)"),
              Line2D([], [], color="black", marker="s", markersize=4, linestyle=":",
                     label="measured, decode phase"),
              Line2D([], [], color="black", linestyle="--", label=projected)]
    first = ax.legend(handles=drafters, fontsize=7, title="drafter", title_fontsize=7,
                      loc="upper left", bbox_to_anchor=(1.01, 1.0))
    ax.add_artist(first)
    ax.legend(handles=styles, fontsize=7, loc="lower left", bbox_to_anchor=(1.01, 0.0))
    return _save(fig, path)


def alpha_by_position(summaries: list[ConfigSummary], path: Path, title: str) -> Path:
    """Conditional acceptance at each draft position (flat at α under the cost model)."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    for i, (name, rows) in enumerate(_by_drafter(summaries).items()):
        for j, s in enumerate(rows):
            pts = [(p + 1, a) for p, a in enumerate(s.position_alpha) if a is not None]
            if pts:
                ax.plot(*zip(*pts), color=f"C{i % 10}", marker="o", alpha=0.4 + 0.6 * (j + 1) / len(rows),
                        label=f"{name} γ={s.gamma}")
    ax.set_ylim(0, 1.02)
    ax.xaxis.get_major_locator().set_params(integer=True)
    ax.set_xlabel("draft position")
    ax.set_ylabel("P(accepted | earlier drafts accepted)")
    ax.set_title(title)
    ax.legend(fontsize=7)
    return _save(fig, path)


def time_breakdown(summaries: list[ConfigSummary], path: Path, title: str) -> Path:
    """Stacked mean time per stage for every configuration (HF generate as one bar)."""
    plt = _pyplot()
    rows = [s for s in summaries if s.n_ok]
    labels = [s.drafter if s.kind != "spec" else f"{s.drafter} γ={s.gamma}" for s in rows]
    fig, ax = plt.subplots(figsize=(7.2, 0.45 * len(rows) + 1.6))
    left = [0.0] * len(rows)
    keys = [*STAGES, "other_ms"]
    for i, key in enumerate(keys):
        vals = [max(s.stages.get(key, 0.0), 0.0) if s.kind != "hf" else 0.0 for s in rows]
        ax.barh(labels, vals, left=left, color=f"C{i}", label=_STAGE_LABELS[key])
        left = [a + b for a, b in zip(left, vals)]
    hf_vals = [s.stages.get("total_ms", 0.0) if s.kind == "hf" else 0.0 for s in rows]
    if any(hf_vals):
        ax.barh(labels, hf_vals, color="lightgrey", hatch="//", label="HF generate (total)")
    ax.invert_yaxis()
    ax.set_xlabel("mean ms per answer")
    ax.set_title(title)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))  # beside, hiding no bar
    return _save(fig, path)


def accepted_histogram(summaries: list[ConfigSummary], path: Path, title: str) -> Path:
    """Fraction of rounds accepting n drafts, one panel per drafter (at most three a row),
    bars per γ."""
    plt = _pyplot()
    groups = _by_drafter(summaries)
    n = max(len(groups), 1)
    cols = min(n, 3)
    nrows = (n + cols - 1) // cols
    fig, axes = plt.subplots(nrows, cols, figsize=(4.0 * cols, 3.0 * nrows + 0.6), squeeze=False)
    flat = [ax for row in axes for ax in row]
    for ax in flat[len(groups):]:
        ax.set_visible(False)
    for k, (ax, (name, rows)) in enumerate(zip(flat, groups.items())):
        width = 0.8 / max(len(rows), 1)
        most = max((len(s.accepted_hist) for s in rows), default=1)
        for j, s in enumerate(rows):
            total = sum(s.accepted_hist) or 1
            xs = [x + (j - (len(rows) - 1) / 2) * width for x in range(len(s.accepted_hist))]
            ax.bar(xs, [h / total for h in s.accepted_hist], width=width, label=f"γ={s.gamma}")
        ax.set_xticks(range(most))
        ax.set_title(name, fontsize=9)
        if k // cols == nrows - 1 or k + cols >= len(groups):
            ax.set_xlabel("drafts accepted in a round")
        if k % cols == 0:
            ax.set_ylabel("fraction of rounds")
        ax.legend(fontsize=7)
    fig.suptitle(title)
    fig.text(0.5, 0.0, "0 includes the rounds that drafted nothing", ha="center", va="top",
             fontsize=8, color="dimgrey")
    return _save(fig, path)


def make_plots(summaries: list[ConfigSummary], out_dir: Path, label: str) -> list[Path]:
    """All four figures into ``out_dir``; figures with nothing to show are skipped."""
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = [time_breakdown(summaries, out_dir / "time_breakdown.png", f"Time per stage ({label})")]
    if _by_drafter(summaries):
        paths += [
            speedup_vs_gamma(summaries, out_dir / "speedup_vs_gamma.png", f"Speedup vs γ ({label})"),
            alpha_by_position(summaries, out_dir / "alpha_by_position.png", f"Acceptance by position ({label})"),
            accepted_histogram(summaries, out_dir / "accepted_hist.png", f"Accepted drafts per round ({label})"),
        ]
    return paths
