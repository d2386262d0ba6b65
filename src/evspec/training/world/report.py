"""The world evaluation as tables: :func:`summarise` (numbers) and :func:`to_markdown`.

α = accepted drafts / drafted tokens; τ = tokens per target pass after prefill
(accepted + one target token per round); per-position acceptance at position i = rounds
whose draft i was accepted / rounds that drafted a token i (Leviathan et al. notation).
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any, Iterable

from evspec.data.world.tables import QTYPES


def _rate(hits: int, n: int) -> float | None:
    return hits / n if n else None


def _accuracy(results: Iterable[Any]) -> dict[str, dict[str, Any]]:
    rows: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    for r in results:
        for key in (r.qtype, "overall"):
            row = rows[key]
            row["n"] += 1
            for model in ("target", "drafter"):
                s = getattr(r, model)
                row[f"{model}_exact"] += bool(s["exact"])
                row[f"{model}_fields"] += bool(s["fields"])
                row[f"{model}_correct"] += bool(s["exact"] or s["fields"])
                if s["visible"] is not None:
                    row[f"{model}_visible"] += bool(s["visible"])
                    row[f"{model}_visible_n"] += 1
    out = {}
    for key in [*QTYPES, "overall"]:
        if key not in rows:
            continue
        row, n = rows[key], rows[key]["n"]
        out[key] = {"n": n}
        for model in ("target", "drafter"):
            for what in ("exact", "fields", "correct"):
                out[key][f"{model}_{what}"] = _rate(row[f"{model}_{what}"], n)
            out[key][f"{model}_visible"] = _rate(row[f"{model}_visible"], row[f"{model}_visible_n"])
    return out


def _acceptance(results: list[Any], gammas: tuple[int, ...]) -> dict[str, Any]:
    swept = [r for r in results if r.engine]
    if not swept:
        return {"questions": 0}
    tot: dict[tuple[str, int], dict[str, float]] = defaultdict(lambda: defaultdict(float))
    pos: dict[tuple[str, int], list[list[int]]] = {}
    identical = total = 0
    base_ms = 0.0
    for r in swept:
        base_ms += r.engine["target_ms"]
        for g in gammas:
            run = r.engine["gammas"][str(g)]
            identical += bool(run["identical"])
            total += 1
            for key in ((r.qtype, g), ("overall", g)):
                t = tot[key]
                t["drafted"] += run["drafted"]
                t["accepted"] += run["accepted"]
                t["rounds"] += run["rounds"]
                t["ms"] += run["total_ms"]
                acc_dra = pos.setdefault(key, [[0] * g, [0] * g])
                for i, (a, d) in enumerate(zip(run["position_accepted"], run["position_drafted"])):
                    acc_dra[0][i] += a
                    acc_dra[1][i] += d

    def cell(key: tuple[str, int]) -> dict[str, Any]:
        t = tot[key]
        acc, dra = pos[key]
        return {
            "alpha": _rate(int(t["accepted"]), int(t["drafted"])),
            "tau": (t["accepted"] + t["rounds"]) / t["rounds"] if t["rounds"] else None,
            "drafted": int(t["drafted"]),
            "accepted": int(t["accepted"]),
            "position": [_rate(a, d) for a, d in zip(acc, dra)],
        }

    types = [q for q in [*QTYPES, "overall"] if (q, gammas[0]) in tot]
    by_gamma = {}
    for g in gammas:
        c = cell(("overall", g))
        c["sd_ms"] = tot[("overall", g)]["ms"] / len(swept)
        c["target_ms"] = base_ms / len(swept)
        c["speedup"] = c["target_ms"] / c["sd_ms"] if c["sd_ms"] else None
        by_gamma[str(g)] = c
    return {
        "questions": len(swept),
        "questions_per_type": {q: sum(r.qtype == q for r in swept) for q in QTYPES},
        "lossless_runs": identical,
        "runs": total,
        "batched_equal_engine": sum(bool(r.engine["batched_equal"]) for r in swept),
        "by_gamma": by_gamma,
        "by_type": {q: {str(g): cell((q, g)) for g in gammas} for q in types},
    }


def summarise(results: list[Any], gammas: tuple[int, ...]) -> dict[str, Any]:
    """Accuracy per question type and the engine's acceptance figures."""
    return {"accuracy": _accuracy(results), "acceptance": _acceptance(results, gammas)}


# -- markdown -----------------------------------------------------------------------------------


def _pct(x: float | None) -> str:
    return "–" if x is None else f"{100 * x:.1f}"


def _num(x: float | None, digits: int = 2) -> str:
    return "–" if x is None else f"{x:.{digits}f}"


def to_markdown(summary: dict[str, Any], *, title: str = "World models: evaluation") -> str:
    """The evaluation report (accuracy per type; α, τ per γ, per type and per position)."""
    cfg = summary.get("config", {})
    acc = summary["accuracy"]
    lines = [f"# {title}", ""]
    if cfg:
        lines += [
            f"Split `{cfg.get('split')}` of `{cfg.get('data')}`; target `{cfg.get('target')}`, "
            f"drafter `{cfg.get('drafter')}`; greedy, max {cfg.get('max_new_tokens')} new tokens.",
            "",
        ]
    lines += [
        "## Accuracy per question type (%)",
        "",
        "*exact*: equals the reference answer of the model's own style; *fields*: the asked fact "
        "(colour, count, direction, ...) matches the structured truth (lists as multisets); "
        "*correct*: exact or fields; *visible*: the event-visible part of the truth (moving "
        "objects, moving count; none for colour).",
        "",
        "| type | n | target exact | target fields | **target correct** | drafter exact "
        "(own style) | drafter fields | drafter visible |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for q, row in acc.items():
        name = f"**{q}**" if q == "overall" else q
        lines.append(
            f"| {name} | {row['n']} | {_pct(row['target_exact'])} | {_pct(row['target_fields'])} | "
            f"**{_pct(row['target_correct'])}** | {_pct(row['drafter_exact'])} | "
            f"{_pct(row['drafter_fields'])} | {_pct(row['drafter_visible'])} |"
        )
    ac = summary["acceptance"]
    if not ac.get("questions"):
        return "\n".join(lines) + "\n"
    gammas = list(ac["by_gamma"])
    lines += [
        "",
        "## Naive acceptance of the `eventgpt` drafter (the engine, greedy, float32 CPU)",
        "",
        f"{ac['questions']} questions ({', '.join(f'{q} {n}' for q, n in ac['questions_per_type'].items() if n)}); "
        f"speculative output identical to target-only in {ac['lossless_runs']}/{ac['runs']} runs; "
        f"batched-greedy accuracy answers equal the engine's in "
        f"{ac['batched_equal_engine']}/{ac['questions']}."
        + (" The sweep was cut short by its time budget." if ac.get("cut_by_time_budget") else ""),
        "",
        "| γ | α | τ | target-only ms | speculative ms | speedup |",
        "|---:|---:|---:|---:|---:|---:|",
    ]
    for g, c in ac["by_gamma"].items():
        lines.append(
            f"| {g} | {_num(c['alpha'], 3)} | {_num(c['tau'])} | {_num(c['target_ms'], 0)} | "
            f"{_num(c['sd_ms'], 0)} | {_num(c['speedup'])}× |"
        )
    lines += ["", "### α per question type and γ", "",
              "| type | " + " | ".join(f"γ={g}" for g in gammas) + " |",
              "|---|" + "---:|" * len(gammas)]
    for q, cells in ac["by_type"].items():
        lines.append(f"| {q} | " + " | ".join(_num(cells[g]["alpha"], 3) for g in gammas) + " |")
    lines += ["", "### τ per question type and γ", "",
              "| type | " + " | ".join(f"γ={g}" for g in gammas) + " |",
              "|---|" + "---:|" * len(gammas)]
    for q, cells in ac["by_type"].items():
        lines.append(f"| {q} | " + " | ".join(_num(cells[g]["tau"]) for g in gammas) + " |")
    g_max = gammas[-1]
    lines += ["", f"### Acceptance per draft position at γ = {g_max} (% of rounds that drafted it)",
              "", "| type | " + " | ".join(f"pos {i + 1}" for i in range(int(g_max))) + " |",
              "|---|" + "---:|" * int(g_max)]
    for q, cells in ac["by_type"].items():
        lines.append(f"| {q} | " + " | ".join(_pct(x) for x in cells[g_max]["position"]) + " |")
    t = summary.get("timings")
    if t:
        lines += ["", f"Evaluation time: accuracy {t['accuracy_s']:.0f} s, engine sweep "
                      f"{t['engine_s']:.0f} s."]
    return "\n".join(lines) + "\n"
