"""``evspec report DIR``: markdown tables (and plots) from a recorded benchmark run.

Writes ``report.md``, ``summary.json`` and ``plots/*.png`` into the run folder.  Every
measured speedup is printed beside the one the cost model predicts from the measured α and
c, so a gap between theory and measurement is visible.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import asdict
from pathlib import Path
from typing import Any

from evspec.bench.config import HF_GENERATE, HF_PROMPT_LOOKUP, HF_STATIC
from evspec.bench.mdtable import md_table
from evspec.bench.records import BENCH_FIELDS, RUN_FILE, read_json, read_records, write_json_atomic
from evspec.bench.summary import STAGES, ConfigSummary, Speedup, summarize

REPORT_FILE = "report.md"
SUMMARY_FILE = "summary.json"


def _f(x: float | None, spec: str = ".2f", suffix: str = "") -> str:
    return "–" if x is None else f"{x:{spec}}{suffix}"


def _sp(sp: Speedup | None) -> str:
    if sp is None:
        return "–"
    return f"{sp.ratio_of_means:.2f}× [{sp.ci95[0]:.2f}, {sp.ci95[1]:.2f}]"


def _mor(sp: Speedup | None) -> str:
    if sp is None:
        return "–"
    if sp.mor_ci95 is None:
        return f"{sp.mean_of_ratios:.2f} ± {sp.std_of_ratios:.2f}"
    return f"{sp.mean_of_ratios:.2f} [{sp.mor_ci95[0]:.2f}, {sp.mor_ci95[1]:.2f}]"


_HF_TITLES = {
    HF_GENERATE: "HF generate",
    HF_STATIC: "HF generate, static cache (+ compile on CUDA)",
    HF_PROMPT_LOOKUP: "HF prompt lookup (assisted)",
}


def _name(s: ConfigSummary) -> str:
    if s.kind == "hf":
        return _HF_TITLES.get(s.drafter, s.drafter)
    return "evspec target-only" if s.kind == "target" else s.drafter


def _lossless(s: ConfigSummary, greedy: bool) -> str:
    if s.kind == "target":
        return "reference"
    if s.match_rate is None:
        return "–"
    text = f"{s.match_rate:.0%} identical"
    if not greedy:
        text += " (sampled: n/a)"
    return text


def _counters(records: list[dict]) -> list[dict]:
    """The pipeline counters of the records that carry them (pipelined schedule)."""
    return [r["pipeline"] for r in records if r.get("status") == "ok" and isinstance(r.get("pipeline"), dict)]


def _placement(run: dict, records: list[dict]) -> str:
    """``schedule: S; target on D, draft on D'``: the schedule from the run (older runs:
    the records, else sequential), the devices from the backend's placement, else the
    pipeline counters, else the device type both models share."""
    backend = run.get("backend", {})
    schedule = (backend.get("schedule") or run.get("identity", {}).get("schedule")
                or next((r["schedule"] for r in records if r.get("schedule")), None) or "sequential")
    place = dict(backend.get("placement") or {})
    counters = _counters(records)
    for key, field_ in (("target", "target_device"), ("draft", "draft_device")):
        if not place.get(key):
            seen = sorted({str(c[field_]) for c in counters if c.get(field_)})
            if seen:
                place[key] = ", ".join(seen)
    same = backend.get("device_type", "?")
    target = place.get("target") or same
    draft = place.get("draft") or (same if backend.get("draft_model") else "– (no separate draft model)")
    return f"* schedule: {schedule}; target on {target}, draft on {draft}"


def _command(run: dict) -> str:
    """The command line of the run's last session."""
    sessions = run.get("sessions", [])
    return " ".join(sessions[-1].get("env", {}).get("command", [])) if sessions else ""


def _environment(run: dict, records: list[dict] | None = None) -> list[str]:
    sessions = run.get("sessions", [])
    if not sessions:
        return ["(no session recorded)", _placement(run, records or []), ""]
    env = sessions[-1].get("env", {})
    dev = env.get("device", {})
    gpus = ", ".join(g["name"] for g in dev.get("gpus", [])) or "none (CPU)"
    libs = env.get("libraries", {})
    git = env.get("git", {})
    backend = run.get("backend", {})
    rev = git.get("commit") or "unknown"
    if git.get("dirty"):
        rev += " (uncommitted changes)"
    lines = [
        f"* GPU: {gpus}; dtype: {backend.get('dtype', '?')}; models: {backend.get('target', '?')}"
        + (f" + {backend['draft_model']}" if backend.get("draft_model") else "")
        + (f"; preset: {backend['preset']}" if backend.get("preset") else ""),
        _placement(run, records or []),
        f"* torch {libs.get('torch')}, transformers {libs.get('transformers')}, "
        f"evspec {libs.get('evspec')}, Python {env.get('python')}",
        f"* git revision: {rev}",
        *_provenance_line(records or []),
        f"* command: `{' '.join(env.get('command', []))}`",
    ]
    merged = run.get("merged")
    if merged:
        hosts = sorted({s.get("env", {}).get("hostname") or "?" for s in sessions})
        kinds = sorted({g.get("name", "?") for s in sessions
                        for g in s.get("env", {}).get("device", {}).get("gpus", [])}) or ["CPU"]
        lines.append(f"* merged from {merged.get('shards')} shards ({len(sessions)} sessions) on "
                     f"{len(hosts)} host(s): {', '.join(hosts[:8])}; devices: {', '.join(kinds)}"
                     + (" (mixed: compare absolute times with care)" if len(kinds) > 1 else "")
                     + "; environment above: the last session")
    elif len(sessions) > 1:
        lines.append(f"* {len(sessions)} sessions (resumed); statuses: "
                     + ", ".join(s.get("status", "?") for s in sessions))
    return lines + [""]


def _provenance_line(records: list[dict]) -> list[str]:
    """Engine and numerics from the records' provenance (absent in older runs)."""
    prov = check_provenance(records, allow_mixed=True)
    if prov is None:
        return []
    lines = [f"* engine: {prov.get('engine')}; numerics: {prov.get('numerics') or 'not stated'}; "
             f"triton {prov.get('triton')}"]
    mixed = [f"{k} {prov[k]}" for k in _SAME if str(prov.get(k, "")).startswith("mixed: ")]
    if mixed:  # only with --allow-mixed
        lines.append(f"* **records of different provenance reported together**: {'; '.join(mixed)}")
    return lines


def _pipeline_section(summaries: list[ConfigSummary], records: list[dict]) -> list[str]:
    """Per (drafter, γ) with pipeline counters: pre-drafts launched / used / discarded,
    cold rounds (summed over answers), and the pre-drafting ms hidden behind scoring (mean
    per answer); empty when no record carries counters."""
    groups: dict[tuple[str, int], list[dict]] = {}
    for r in records:
        if r.get("status") == "ok" and isinstance(r.get("pipeline"), dict) and r.get("kind") == "spec":
            groups.setdefault((r["drafter"], int(r["gamma"])), []).append(r["pipeline"])
    if not groups:
        return []
    rows = []
    for s in summaries:
        cs = groups.get((s.drafter, s.gamma))
        if not cs:
            continue
        total = {k: sum(int(c.get(k, 0)) for c in cs)
                 for k in ("predraft_launched", "predraft_used", "predraft_discarded", "cold_rounds")}
        used_of = total["predraft_used"] + total["predraft_discarded"]
        fallback = sorted({str(c.get("fallback")) for c in cs if c.get("fallback")})
        rows.append([
            _name(s), str(s.gamma), str(len(cs)), str(total["predraft_launched"]), str(total["predraft_used"]),
            str(total["predraft_discarded"]),
            _f(total["predraft_used"] / used_of if used_of else None, ".0%"), str(total["cold_rounds"]),
            _f(sum(float(c.get("predraft_ms", 0.0)) for c in cs) / len(cs), ".1f"),
            "; ".join(fallback).replace("|", "/") or "–",
        ])
    return ["## Pipeline (pre-drafting)", "",
            "Pre-drafts: launched while the target scored, used (the next block was ready), "
            "discarded (a rejection or a wrong guess); cold rounds launched none (EOS in the "
            "block, no room, or no pre-drafting: see fallback). Hidden ms = pre-drafting time "
            "overlapped with scoring, mean per answer.", "",
            *md_table(["drafter", "γ", "answers", "pre-drafts launched", "used", "discarded", "used share",
                     "cold rounds", "hidden pre-draft ms", "fallback"], rows)]


def label_text(run: dict) -> str:
    """The run's label, with its source when replayed."""
    label = run.get("label", "measured")
    if label == "acceptance-replayed":
        return f"{label} (source: {run.get('replay_source', '?')})"
    return label


def _fairness(ident: dict) -> str:
    """How the configurations were ordered and what cache state they saw."""
    if "order" not in ident:
        return ("Order: target-only first on every request (a run made before the order-free "
                "harness: configurations after it may find the clip cached).")
    orders = {"rotate": "rotated per request", "random": "seeded random per request"}
    caches = {
        "warm": "warm for every configuration (an untimed pass of each on a clip's first request)",
        "cold": "cold for every configuration (cleared before every timed run)",
    }
    order = orders.get(ident["order"], ident["order"])
    cache = caches.get(ident.get("cache"), "?")
    repeats = ident.get("repeats", 1)
    rep = f"; {repeats} repeats, the lower-median kept" if repeats > 1 else ""
    return f"Order: {order}; cache: {cache}{rep}."


def render_markdown(run: dict, records: list[dict], summaries: list[ConfigSummary], plots: list[str]) -> str:
    """The report text (pure: no files touched)."""
    ident = run.get("identity", {})
    label = run.get("label", "measured")
    greedy = ident.get("temperature", 0) == 0
    n_req = len({r["request_id"] for r in records})
    n_fail = sum(r.get("status") != "ok" for r in records)
    out = [f"# evspec benchmark ({label_text(run)})", ""]
    if label == "acceptance-replayed":
        out += [
            f"> **Acceptance-replayed** (source: {run.get('replay_source', '?')}): the drafters' "
            "real "
            "compute ran, and each drafter's rounds were accepted exactly as recorded on the "
            "source run (per round, per draft position). Timings are real; acceptance is the "
            "source's, not these models'.",
            "",
        ]
    if label == "acceptance-controlled":
        out += [
            f"> **Acceptance-controlled** (α = {ident.get('controlled_alpha')}): the drafters' real "
            "compute ran, but each drafted token was replaced by the target's own greedy "
            "continuation with probability α, else by a wrong token. Timings are real; "
            "acceptance is set, not measured.",
            "",
        ]
    out += [
        f"{n_req} requests, {len(records)} measurements ({n_fail} failed); dataset "
        f"`{ident.get('dataset')}`, temperature {ident.get('temperature')}, "
        f"max new tokens {ident.get('max_new_tokens')}, seed {ident.get('seed')}.",
        "",
        "## Environment",
        "",
        *_environment(run, records),
        "## Speedup: measured and predicted",
        "",
        f"{_fairness(ident)} "
        "End to end = total time per answer including prefill, paired per request: ratio of "
        "means [bootstrap 95 % interval] and the mean of the per-request ratios [bootstrap 95 % "
        "interval over requests]. Decode = time per token "
        "after the first, which is what the cost model predicts: τ(α, γ) / (γ·c + 1) "
        "(Leviathan et al.; rounds that drafted k < γ tokens count with their k), and, as "
        "\"predicted (v)\", τ / (v·(γ̄·c + 1)) with the measured verification cost v (a round "
        "costs γ̄·c + 1 score passes of v target steps each).",
        "",
    ]
    rows = []
    for s in summaries:
        rows.append([
            _name(s), str(s.gamma) if s.kind == "spec" else "–", f"{s.n_ok}/{s.n_ok + s.n_failed}",
            _f(s.mean_total_ms, ".1f"), _f(s.ms_per_token, ".2f"),
            _sp(s.vs_target), _mor(s.vs_target), _sp(s.vs_hf),
            _f(s.decode_speedup, ".2f", "×"), _f(s.predicted, ".2f", "×"), _f(s.predicted_v, ".2f", "×"),
        ])
    out += md_table(
        ["drafter", "γ", "ok", "ms/answer", "ms/token", "vs target-only", "mean of ratios",
         "vs HF generate", "decode (measured)", "predicted", "predicted (v)"], rows)

    out += ["## Acceptance and cost", "",
            "α = accepted / drafted; α model = the cost model's per-token acceptance "
            "(maximum likelihood from the rounds); τ = tokens per target pass; γ̄ = tokens "
            "drafted per round; c = draft ms per token / score ms per pass; v = score ms per "
            "pass / target-only ms per step.", ""]
    rows = [
        [_name(s), str(s.gamma), _f(s.alpha, ".3f"), _f(s.alpha_model, ".3f"), _f(s.tau, ".2f"),
         _f(s.mean_drafted, ".2f"), _f(s.c, ".3f"), _f(s.verify_cost, ".2f"), _f(s.best_gamma, "d"),
         _lossless(s, greedy)]
        for s in summaries if s.kind == "spec"
    ]
    lossless_base = [[_name(s), _lossless(s, greedy)] for s in summaries if s.kind == "hf"]
    if rows:
        out += md_table(["drafter", "γ", "α", "α model", "τ", "γ̄", "c", "v", "best γ (theory)", "lossless check"], rows)
    for name, verdict in lossless_base:
        out += [f"{name} vs evspec target-only: {verdict}.", ""]

    out += _pipeline_section(summaries, records)

    out += ["## Time per stage (mean ms per answer)", ""]
    stage_rows = []
    for s in summaries:
        if not s.n_ok:
            continue
        if s.kind == "hf":
            stage_rows.append([_name(s), "–", *["–"] * (len(STAGES) + 1), _f(s.mean_total_ms, ".1f")])
            continue
        st = s.stages
        stage_rows.append([
            _name(s), str(s.gamma) if s.kind == "spec" else "–",
            *[_f(st.get(k), ".1f") for k in (*STAGES, "other_ms")],
            _f(s.mean_total_ms, ".1f"),
        ])
    out += md_table(["drafter", "γ", "target preprocess", "target vision", "target prefill", "draft preprocess",
                   "draft vision", "draft prefill", "drafting", "scoring", "other", "total"], stage_rows)

    qtypes = sorted({r.get("qtype") for r in records if r.get("qtype")})
    spec = [s for s in summaries if s.kind == "spec" and s.n_ok]
    if len(qtypes) > 1 and spec:
        per_type = {q: {(x.drafter, x.gamma): x for x in summarize([r for r in records if r.get("qtype") == q])}
                    for q in qtypes}
        header = ["question type", *[f"{s.drafter} γ={s.gamma}" for s in spec]]
        rows = []
        for q in qtypes:
            cells = []
            for s in spec:
                x = per_type[q].get((s.drafter, s.gamma))
                cells.append("–" if x is None else f"α {_f(x.alpha_model, '.2f')}, {_sp(x.vs_target).split(' [')[0]}")
            rows.append([q, *cells])
        out += ["## By question type (α model, speedup vs target-only)", "", *md_table(header, rows)]

    failed = [r for r in records if r.get("status") != "ok"]
    if failed:
        counts = Counter((r.get("drafter"), r.get("error_type"), r.get("error")) for r in failed)
        rows = [[str(d), str(t), str(e).replace("|", "/").replace("\n", " ")[:160], str(n)]
                for (d, t, e), n in counts.most_common(20)]
        out += ["## Failures", "", *md_table(["drafter", "error", "message", "count"], rows)]

    if plots:
        out += ["## Plots", ""] + [f"![{Path(p).stem}]({p})" for p in plots] + [""]
    return "\n".join(out)


#: the provenance fields records of one report must share
_SAME = ("commit", "dirty", "hardware")


def check_provenance(records: list[dict], *, allow_mixed: bool = False) -> dict[str, Any] | None:
    """The provenance the records share (None when none carries one).  Raises when they
    come from different commits (or dirty/clean trees) or hardware, unless
    ``allow_mixed``; then the differing fields read ``"mixed: a, b"``."""
    seen: dict[str, set[str]] = {}
    first: dict[str, Any] | None = None
    for r in records:
        prov = r.get("provenance")
        if not isinstance(prov, dict):
            continue
        first = first or prov
        for key, value in prov.items():
            seen.setdefault(key, set()).add(str(value))
    if first is None:
        return None
    mixed = {k: sorted(seen.get(k, set())) for k in _SAME if len(seen.get(k, set())) > 1}
    if mixed and not allow_mixed:
        detail = "; ".join(f"{k}: {', '.join(v)}" for k, v in mixed.items())
        raise ValueError(
            f"the records come from different {', '.join(mixed)} ({detail}); report them apart, "
            f"or pass --allow-mixed to report them together (marked mixed)"
        )
    return {k: (f"mixed: {', '.join(sorted(v))}" if len(v) > 1 else first.get(k))
            for k, v in seen.items()}


def build_report(run_dir: Path, *, plots: bool = True, allow_mixed: bool = False) -> Path:
    """Write ``report.md``, ``summary.json`` (and plots) into ``run_dir``; returns the report
    path.  Refuses records of different commits or hardware unless ``allow_mixed``."""
    run_dir = Path(run_dir)
    if not (run_dir / RUN_FILE).exists():
        from evspec.bench.shard import shard_dirs

        if shard_dirs(run_dir):
            raise FileNotFoundError(
                f"{run_dir} holds the shards of a split run: `evspec merge {run_dir}` first, then "
                f"report the merged folder"
            )
        raise FileNotFoundError(f"{run_dir}: not a benchmark run folder (no {RUN_FILE}); run `evspec bench` first")
    run = read_json(run_dir / RUN_FILE)
    records = read_records(run_dir, fields=BENCH_FIELDS)
    if not records:
        raise ValueError(f"{run_dir}: the run has no records yet")
    prov = check_provenance(records, allow_mixed=allow_mixed)
    summaries = summarize(records)
    plot_paths: list[str] = []
    if plots:
        from evspec.bench.plots import make_plots

        made = make_plots(summaries, run_dir / "plots", run.get("label", "measured"))
        plot_paths = [str(p.relative_to(run_dir)) for p in made]
    summary: dict[str, Any] = {
        "label": run.get("label"),
        "label_text": label_text(run),
        "identity": run.get("identity"),
        "provenance": prov,
        "command": _command(run),
        "configs": [asdict(s) for s in summaries],
    }
    write_json_atomic(run_dir / SUMMARY_FILE, summary)
    path = run_dir / REPORT_FILE
    text = render_markdown(run, records, summaries, plot_paths)
    tmp = path.with_suffix(".md.tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(path)
    return path
