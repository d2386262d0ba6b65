"""The evaluation's figures (``summarize_eval``) and their markdown (``render_eval``):
one main table (α, τ, c, speedup at the report γ, beside the offline top-1), τ at every γ,
acceptance by draft position and by question type, seeds aggregated per group, and the
two questions the issue asks: do the goals hold, and does event memory help?"""

from __future__ import annotations

import math
from typing import Any

GROUP_ORDER = ("eventgpt", "note-adapter", "bottleneck", "attention", "aligner", "eventgpt-lora",
               "target-head", "event-head")


def _mean_std(xs: list[float]) -> tuple[float | None, float | None]:
    xs = [x for x in xs if x is not None and math.isfinite(x)]
    if not xs:
        return None, None
    m = sum(xs) / len(xs)
    sd = math.sqrt(sum((x - m) ** 2 for x in xs) / (len(xs) - 1)) if len(xs) > 1 else 0.0
    return m, sd


def _cell(s: Any) -> dict[str, Any]:
    sp = s.vs_target
    return {
        "alpha": s.alpha, "tau": s.tau, "c": s.c, "n_ok": s.n_ok, "n_failed": s.n_failed,
        "speedup": None if sp is None else sp.ratio_of_means,
        "speedup_ci95": None if sp is None else list(sp.ci95),
        "decode_speedup": s.decode_speedup, "match_rate": s.match_rate,
        "position_alpha": s.position_alpha, "ms_per_token": s.ms_per_token,
        "errors": s.errors,
    }


def summarize_eval(
    cfg: Any, drafters: list[Any], names: dict[str, str], by_name: dict, offline: dict[str, dict],
    qtypes: dict[str, dict[str, dict]], *, n_requests: int,
) -> dict[str, Any]:
    """Plain-data summary (JSON-ready) from the bench summaries ``by_name[(engine name, γ)]``."""
    base = by_name.get(("none", 0))
    rows = []
    for d in drafters:
        per_gamma = {}
        for g in cfg.gammas:
            s = by_name.get((names[d.label], g))
            if s is not None:
                per_gamma[str(g)] = _cell(s)
        rows.append({"label": d.label, "group": d.group, "kind": d.kind or d.drafter, "drafter": d.drafter,
                     "offline": offline.get(d.label, {}), "per_gamma": per_gamma})
    groups: dict[str, dict[str, Any]] = {}
    for r in rows:
        grp = groups.setdefault(r["group"], {"members": [], "per_gamma": {}})
        grp["members"].append(r["label"])
    for name, grp in groups.items():
        members = [r for r in rows if r["group"] == name]
        grp["offline_top1"] = _mean_std([m["offline"].get("top1") for m in members])
        for g in cfg.gammas:
            cells = [m["per_gamma"].get(str(g)) for m in members if m["per_gamma"].get(str(g))]
            grp["per_gamma"][str(g)] = {
                key: _mean_std([c[key] for c in cells if c.get(key) is not None])
                for key in ("alpha", "tau", "c", "speedup")
            }
    label_of = {v: k for k, v in names.items()}
    by_qtype = {qt: {label_of.get(n, n): v for n, v in per.items()} for qt, per in qtypes.items()}
    result = {
        "n_requests": n_requests,
        "main_gamma": cfg.main_gamma,
        "target_only": None if base is None else {"ms_per_token": base.ms_per_token,
                                                  "mean_total_ms": base.mean_total_ms, "n_ok": base.n_ok},
        "rows": rows,
        "groups": groups,
        "by_qtype": by_qtype,
    }
    result["answers"] = _answers(result, cfg.main_gamma)
    return result


def _answers(result: dict[str, Any], gamma: int) -> dict[str, Any]:
    """The issue's questions, answered from the numbers (None where not measured)."""
    g = str(gamma)
    groups = result["groups"]

    def stat(group: str, key: str) -> tuple[float | None, float | None, int]:
        grp = groups.get(group)
        if not grp:
            return None, None, 0
        m, sd = grp["per_gamma"].get(g, {}).get(key, (None, None))
        return m, sd, len(grp["members"])

    out: dict[str, Any] = {}
    eh, eh_sd, eh_n = stat("event-head", "tau")
    th, th_sd, th_n = stat("target-head", "tau")
    if eh is not None:
        out["event_head_tau_goal"] = {"gamma": gamma, "tau": eh, "goal": 3.5, "met": eh >= 3.5}
    naive, _, _ = stat("eventgpt", "alpha")
    lora, _, _ = stat("eventgpt-lora", "alpha")
    if naive is not None and lora is not None:
        out["distilled_alpha_goal"] = {"naive": naive, "distilled": lora, "ratio": lora / naive if naive else None,
                                       "met": lora >= 2 * naive}
    if eh is not None and th is not None:
        diff = eh - th
        se = math.sqrt((eh_sd or 0) ** 2 / max(eh_n, 1) + (th_sd or 0) ** 2 / max(th_n, 1))
        if min(eh_n, th_n) < 2:
            verdict = "undetermined: one seed per head gives no spread; train more seeds"
        elif se == 0 or abs(diff) > 2 * se:
            verdict = "event memory helps" if diff > 0 else "event memory hurts"
        else:
            verdict = "no measurable difference (within 2 standard errors)"
        out["event_memory"] = {"gamma": gamma, "event_head_tau": [eh, eh_sd, eh_n],
                               "target_head_tau": [th, th_sd, th_n], "difference": diff,
                               "standard_error": se, "verdict": verdict}
    ph, _, ph_n = stat("event-head-prefill", "tau")
    if ph is not None and eh is not None:
        out["prefill_memory"] = {"gamma": gamma, "prefill_tau": ph, "prefill_n": ph_n, "events_tau": eh,
                                 "difference": ph - eh}
    return out


# -- markdown ------------------------------------------------------------------------------------


def _f(x: Any, spec: str = ".2f") -> str:
    return "–" if x is None else format(x, spec)


def _ms(pair: Any, spec: str = ".2f") -> str:
    if not pair or pair[0] is None:
        return "–"
    m, sd = pair
    return f"{m:{spec}}" if not sd else f"{m:{spec}} ± {sd:{spec}}"


def _order(label: str, group: str) -> tuple:
    return (GROUP_ORDER.index(group) if group in GROUP_ORDER else len(GROUP_ORDER), label)


def render_eval(result: dict[str, Any]) -> str:
    """The evaluation as markdown (measured figures only; nothing projected)."""
    g = str(result["main_gamma"])
    rows = sorted(result["rows"], key=lambda r: _order(r["label"], r["group"]))
    lines = [f"# Drafter evaluation ({result['n_requests']} held-out requests, greedy, measured)", ""]
    base = result.get("target_only")
    if base:
        lines += [f"Target-only: {_f(base['ms_per_token'])} ms/token over {base['n_ok']} requests.", ""]
    lines += [f"## At γ = {g}", "",
              "| drafter | offline top-1 | α | τ | c | speedup vs target-only (95 % CI) | identical answers |",
              "|---|---|---|---|---|---|---|"]
    for r in rows:
        c = r["per_gamma"].get(g, {})
        ci = c.get("speedup_ci95")
        sp = "–" if c.get("speedup") is None else f"{c['speedup']:.2f}× ({ci[0]:.2f}–{ci[1]:.2f})"
        off = r["offline"].get("top1")
        lines.append(f"| {r['label']} | {_f(off, '.3f')} | {_f(c.get('alpha'), '.3f')} | {_f(c.get('tau'))} | "
                     f"{_f(c.get('c'), '.3f')} | {sp} | {_f(c.get('match_rate'), '.0%')} |")
    multi = {k: v for k, v in result["groups"].items() if len(v["members"]) > 1}
    if multi:
        lines += ["", f"### Groups (mean ± standard deviation over members, γ = {g})", "",
                  "| group | members | offline top-1 | α | τ | speedup |", "|---|---|---|---|---|---|"]
        for name, grp in sorted(multi.items(), key=lambda kv: _order(kv[0], kv[0])):
            pg = grp["per_gamma"].get(g, {})
            lines.append(f"| {name} | {len(grp['members'])} | {_ms(grp['offline_top1'], '.3f')} | "
                         f"{_ms(pg.get('alpha'), '.3f')} | {_ms(pg.get('tau'))} | {_ms(pg.get('speedup'))} |")
    gammas = sorted({int(k) for r in rows for k in r["per_gamma"]})
    lines += ["", "## τ (tokens per target pass) at each γ", "",
              "| drafter | " + " | ".join(f"γ={x}" for x in gammas) + " |",
              "|---|" + "---|" * len(gammas)]
    for r in rows:
        lines.append(f"| {r['label']} | " + " | ".join(_f(r["per_gamma"].get(str(x), {}).get("tau")) for x in gammas) + " |")
    lines += ["", f"## Acceptance by draft position (P(accept i | reached i), γ = {g})", ""]
    for r in rows:
        pa = r["per_gamma"].get(g, {}).get("position_alpha") or []
        lines.append(f"* {r['label']}: " + ", ".join(_f(x, ".2f") for x in pa))
    if result.get("by_qtype"):
        labels = [r["label"] for r in rows]
        lines += ["", f"## α / τ by question type (γ = {g})", "",
                  "| question type | " + " | ".join(labels) + " |", "|---|" + "---|" * len(labels)]
        for qt, per in sorted(result["by_qtype"].items()):
            cells = [f"{_f(per.get(lb, {}).get('alpha'), '.2f')} / {_f(per.get(lb, {}).get('tau'))}" for lb in labels]
            lines.append(f"| {qt} | " + " | ".join(cells) + " |")
    ans = result.get("answers", {})
    lines += ["", "## Answers", ""]
    if "event_head_tau_goal" in ans:
        a = ans["event_head_tau_goal"]
        lines.append(f"* event-head τ at γ = {a['gamma']}: {a['tau']:.2f} (goal ≥ {a['goal']}): "
                     f"{'met' if a['met'] else 'NOT met'}.")
    if "distilled_alpha_goal" in ans:
        a = ans["distilled_alpha_goal"]
        ratio = "–" if a["ratio"] is None else f"{a['ratio']:.2f}×"
        lines.append(f"* distilled EventGPT α {a['distilled']:.3f} vs naive {a['naive']:.3f} ({ratio}; goal ≥ 2×): "
                     f"{'met' if a['met'] else 'NOT met'}.")
    if "event_memory" in ans:
        a = ans["event_memory"]
        e, t = a["event_head_tau"], a["target_head_tau"]
        lines.append(f"* Does event memory help? event-head τ {e[0]:.2f} ± {e[1]:.2f} ({e[2]} seeds) vs "
                     f"target-head τ {t[0]:.2f} ± {t[1]:.2f} ({t[2]} seeds): difference {a['difference']:+.2f} "
                     f"± {a['standard_error']:.2f} (standard error) → **{a['verdict']}**.")
    if "prefill_memory" in ans:
        a = ans["prefill_memory"]
        lines.append(f"* Memory source: event-head with EventGPT's prompt states (prefill, {a['prefill_n']} seed(s)) "
                     f"τ {a['prefill_tau']:.2f} vs pooled event embedding τ {a['events_tau']:.2f} "
                     f"(difference {a['difference']:+.2f}).")
    errors = [(r["label"], c["errors"]) for r in rows for c in r["per_gamma"].values() if c.get("errors")]
    if errors:
        lines += ["", "## Failures", ""] + [f"* {lb}: {err}" for lb, err in errors]
    return "\n".join(lines) + "\n"
