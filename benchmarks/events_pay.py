"""Do events pay?  target-only vs target-head vs event-head vs event-router on the world's
held-out clips, on the fast engine, paired per request (one GPU, a few minutes).

    PYTHONPATH=src HF_HUB_OFFLINE=1 python3 benchmarks/events_pay.py --out "$OUT"

Phases:

1. the world: the first ``--val-clips`` validation and ``--test-clips`` test clips of the
   world the shipped checkpoints were trained on (regenerated from the assets README, each
   clip byte-identical to the full world's), or ``--world MANIFEST``;
2. the models (the target on the fast engine with its prefix cache; EventGPT only encodes
   events), the heads (shipped, or ``--heads DIR``), every fixed-shape step made ready on
   the first request;
3. validation: target-head and event-head at each γ, per request; the event-router's
   question-type table is learned from these times (``learn_qtype_table``): validation only,
   the test clips are never used to choose anything;
4. test: every configuration on every test request.  Clip by clip: first an untimed warm
   pass of every configuration on the clip's first question (prefix caches, event memory,
   graphs: no configuration alone pays a cold cache), then each question timed under every
   configuration, in an order rotated per request;
5. ``events_pay.json`` (every record, the tables, the learned routers, provenance) and
   ``events_pay.md`` (speedups with 95 % bootstrap intervals over requests, paired).

``--budget-s`` caps the timed phases (whole requests only: pairs stay complete).  A CPU
rehearsal at tiny size: ``tests/bench/test_events_pay_script.py``.
"""

from __future__ import annotations

import argparse
import json
import platform
import re
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

ASSETS = Path(__file__).resolve().parents[1] / "src" / "evspec" / "assets" / "world"
HEADS = ("target-head", "event-head")


@dataclass(frozen=True)
class Config:
    """One measured configuration: a drafter name (``none`` = target-only) at γ."""

    drafter: str
    gamma: int

    @property
    def label(self) -> str:
        return "target-only" if self.drafter == "none" else f"{self.drafter} γ{self.gamma}"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True, help="folder for events_pay.json and events_pay.md")
    ap.add_argument("--target", default=str(ASSETS / "target"),
                    help="target checkpoint folder or preset")
    ap.add_argument("--draft-model", default=str(ASSETS / "drafter"),
                    help="EventGPT checkpoint folder or preset")
    ap.add_argument("--heads", default=None,
                    help="folder with target-head/ and event-head/ (default: the shipped heads); "
                    "'untrained' = random heads (rehearsals only)")
    ap.add_argument("--world", default=None,
                    help="a world manifest.json (default: regenerate the subset)")
    ap.add_argument("--val-clips", type=int, default=20, help="validation clips (router learning)")
    ap.add_argument("--test-clips", type=int, default=100,
                    help="held-out test clips (the measurement)")
    ap.add_argument("--gammas", default="4,6", help="comma-separated γ values")
    ap.add_argument("--max-new-tokens", type=int, default=48)
    ap.add_argument("--router-margin", type=float, default=0.02,
                    help="the event-head must beat the target-head by this fraction on a question "
                    "type's validation time to get that type")
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--dtype", default="float32", help="float32 keeps greedy SD exactly lossless")
    ap.add_argument("--engine", choices=("fast", "plain"), default="fast")
    ap.add_argument("--canvas", choices=("sensor", "data"), default="sensor",
                    help="event image canvas (as the heads were trained)")
    ap.add_argument("--device-preprocess", action=argparse.BooleanOptionalAction, default=None,
                    help="frames and event images preprocessed with torch on the device "
                    "(default: on CUDA); --no-device-preprocess keeps the HF processors on the CPU")
    ap.add_argument("--fold-memory", action=argparse.BooleanOptionalAction, default=None,
                    help="the event-head's memory cross-attention folded into one kernel per "
                    "drafted token (default: where Triton runs and the head is small enough)")
    ap.add_argument("--budget-s", type=float, default=330.0,
                    help="wall-time cap of phases 3-4 together")
    ap.add_argument("--resamples", type=int, default=2000, help="bootstrap resamples")
    a = ap.parse_args(argv)
    a.gammas = tuple(int(g) for g in a.gammas.split(","))
    if not a.gammas or min(a.gammas) < 1:
        ap.error("--gammas: integers >= 1")
    if a.val_clips < 1 or a.test_clips < 1:
        ap.error("--val-clips and --test-clips must be >= 1")
    return a


# -- phase 1: the world --------------------------------------------------------------------------
def world_manifest(a: argparse.Namespace, work: Path) -> Path:
    if a.world:
        return Path(a.world)
    from evspec.training.heads.world_subset import write_world_subset

    readme = (ASSETS / "README.md").read_text()
    m = re.search(r"world generate --out \S+ --clips (\d+) --seed (\d+)", readme)
    if m is None:
        raise SystemExit(f"{ASSETS / 'README.md'}: cannot tell which world the checkpoints were "
                         "trained on; pass --world MANIFEST")
    report = write_world_subset(work / "world", clips=int(m[1]), seed=int(m[2]), workers=8,
                                per_split={"val": a.val_clips, "test": a.test_clips})
    print(f"world subset {report.counts} -> {report.manifest}", flush=True)
    return report.manifest


# -- phase 2: models and drafters ----------------------------------------------------------------
def load_pair(a: argparse.Namespace):
    from evspec.loading import ModelSpec, load_models

    loaded = load_models(ModelSpec(target=a.target, draft_model=a.draft_model, device=a.device,
                                   dtype=a.dtype, seed=0))
    target, draft, device = loaded.target, loaded.draft, loaded.device
    on_device = a.device_preprocess if a.device_preprocess is not None else device.type == "cuda"
    for model in (target, draft):
        if on_device:
            model.enable_device_preprocess()
    # EventGPT only encodes events here (no decoder pass): no fast engine for it; the target's
    # prefix cache also keeps the heads' event memory per clip
    if a.engine == "fast":
        target.enable_fast()
    target.enable_prefix_cache()
    return target, draft


def make_drafters(a: argparse.Namespace, target, draft) -> dict[str, object]:
    from evspec.decoding.drafters import make_drafter

    out = {}
    for name in HEADS:
        options = {} if a.heads is None else {
            "head_path": a.heads if a.heads == "untrained" else str(Path(a.heads) / name)}
        out[name] = make_drafter(name, target=target, draft_model=draft, fold_memory=a.fold_memory,
                                 **options)
    return out


def routed(router, drafters: dict[str, object]):
    from evspec.decoding.router import RoutedDrafter

    return RoutedDrafter(router, {h: drafters[h] for h in HEADS}, name="event-router")


# -- phases 3-4: measuring -----------------------------------------------------------------------
def run_one(target, request, drafter, cfg: Config, max_new: int):
    from evspec.decoding.engine import generate

    return generate(target, request, drafter, gamma=cfg.gamma, max_new_tokens=max_new)


def measure(
    target, items, configs: list[Config], drafter_of, a, deadline: float, phase: str
) -> list[dict]:
    """Clip by clip: an untimed warm pass of every configuration, then every request under
    every configuration in a rotated order; one record per (request, configuration)."""
    by_clip: dict[str, list] = defaultdict(list)
    for it in items:
        by_clip[it.clip_id].append(it)
    records: list[dict] = []
    n = 0
    for clip, group in by_clip.items():
        if time.perf_counter() > deadline:
            print(f"{phase}: time budget reached after {n} requests", flush=True)
            break
        first = group[0].load()
        for cfg in configs:  # warm: caches and graphs of this clip, for everyone
            run_one(target, first, drafter_of(cfg), cfg, a.max_new_tokens)
        for it in group:
            if time.perf_counter() > deadline:
                break
            req = first if it is group[0] else it.load()
            order = configs[n % len(configs):] + configs[: n % len(configs)]
            got = {}
            for cfg in order:
                res = run_one(target, req, drafter_of(cfg), cfg, a.max_new_tokens)
                got[cfg] = res
            base = next((res for cfg, res in got.items() if cfg.drafter == "none"), None)
            for cfg in configs:
                st = got[cfg].stats
                records.append({
                    "phase": phase, "key": it.key, "clip": clip, "qtype": it.qtype,
                    "config": cfg.label, "drafter": cfg.drafter, "gamma": cfg.gamma,
                    "total_ms": st.total_ms, "ttft_ms": st.ttft_ms, "new_tokens": st.new_tokens,
                    "alpha": st.alpha, "tau": st.tau,
                    "drafted": st.drafted, "accepted": st.accepted, "rounds": len(st.rounds),
                    "draft_ms": sum(r.draft_ms for r in st.rounds),
                    "score_ms": sum(r.score_ms for r in st.rounds),
                    "identical": None if base is None else got[cfg].tokens == base.tokens,
                    "position": order.index(cfg),
                })
            n += 1
    return records


# -- phase 5: tables -----------------------------------------------------------------------------
def _times(records: list[dict], label: str) -> dict[str, float]:
    return {r["key"]: r["total_ms"] for r in records if r["config"] == label}


def compare(records: list[dict], num: str, den: str, resamples: int) -> dict | None:
    """Speedup of ``den`` over ``num`` (``num`` time / ``den`` time), paired by request."""
    from evspec.bench.summary import paired_speedup

    a, b = _times(records, num), _times(records, den)
    keys = sorted(set(a) & set(b))
    sp = paired_speedup([a[k] for k in keys], [b[k] for k in keys], resamples=resamples)
    return None if sp is None else asdict(sp)


def summarize(records: list[dict], configs: list[Config], resamples: int) -> dict:
    out: dict = {"configs": {}, "by_qtype": {}}
    for cfg in configs:
        rows = [r for r in records if r["config"] == cfg.label]
        if not rows:
            continue
        drafted = sum(r["drafted"] for r in rows)
        entry = {
            "n": len(rows),
            "ms_per_token": (sum(r["total_ms"] for r in rows)
                             / max(1, sum(r["new_tokens"] for r in rows))),
            "alpha": sum(r["accepted"] for r in rows) / drafted if drafted else None,
            "tau": (sum(r["new_tokens"] - 1 for r in rows) / max(1, sum(r["rounds"] for r in rows))
                    if cfg.drafter != "none" else 1.0),
            "identical": sum(bool(r["identical"]) for r in rows) / len(rows),
            "vs_target_only": compare(records, "target-only", cfg.label, resamples),
        }
        if cfg.drafter != "target-head" and cfg.drafter != "none":
            entry["vs_target_head"] = compare(records, f"target-head γ{cfg.gamma}", cfg.label,
                                              resamples)
        out["configs"][cfg.label] = entry
    for qtype in sorted({r["qtype"] for r in records if r["qtype"]}):
        sub = [r for r in records if r["qtype"] == qtype]
        out["by_qtype"][qtype] = {
            cfg.label: compare(sub, "target-only", cfg.label, resamples)
            for cfg in configs if cfg.drafter != "none"}
    return out


def _fmt(sp: dict | None) -> str:
    if not sp:
        return "–"
    lo, hi = sp["ci95"]
    return f"{sp['ratio_of_means']:.2f}× ({lo:.2f}–{hi:.2f})"


def markdown(summary: dict, meta: dict) -> str:
    lines = [
        "# Events that pay: world held-out set, paired per request", "",
        f"{meta['device']}, {meta['dtype']}, engine {meta['engine']}, torch {meta['torch']}, "
        f"commit {meta['commit']}; {meta['test_requests']} test requests on "
        f"{meta['test_clips']} clips, max {meta['max_new_tokens']} new tokens; device "
        f"preprocessing {'on' if meta['device_preprocess'] else 'off'}; event-head memory "
        f"folded: {meta['fold_memory']}; every configuration "
        "warmed per clip, order "
        "rotated per request.  Speedup = total time ratio over the paired requests "
        "(95 % bootstrap interval over requests).", "",
        f"    {meta['command']}", "",
        "| configuration | α | τ | ms/token | vs target-only | vs target-head (same γ) "
        "| identical |",
        "|---|---:|---:|---:|---|---|---:|",
    ]
    for label, e in summary["configs"].items():
        alpha = "–" if e["alpha"] is None else f"{e['alpha']:.3f}"
        lines.append(f"| {label} | {alpha} | {e['tau']:.2f} | {e['ms_per_token']:.3f} | "
                     f"{_fmt(e['vs_target_only'])} | {_fmt(e.get('vs_target_head'))} | "
                     f"{100 * e['identical']:.0f}% |")
    labels = [k for k in summary["configs"] if k != "target-only"]
    lines += ["", "## Speedup vs target-only per question type", "",
              "| type | " + " | ".join(labels) + " |", "|---|" + "---|" * len(labels)]
    for qtype, row in summary["by_qtype"].items():
        lines.append(f"| {qtype} | " + " | ".join(_fmt(row.get(k)) for k in labels) + " |")
    lines += ["", "## event-router tables (learned on validation)", ""]
    for g, table in meta["routers"].items():
        lines.append(f"* γ{g}: " + ", ".join(f"{q} → {d}" for q, d in table["table"].items()))
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    a = parse_args(argv)
    from evspec.training.heads.requests import manifest_requests
    from evspec.decoding.router import learn_qtype_table

    t0 = time.perf_counter()
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="events_pay_"))
    manifest = world_manifest(a, work)
    target, draft = load_pair(a)
    drafters = make_drafters(a, target, draft)
    kw = dict(num_frames=target.num_frames, n_event_images=draft.n_event_images, canvas=a.canvas)
    val = manifest_requests(manifest, ("val",), **kw)
    test = manifest_requests(manifest, ("test",), **kw)
    if not val or not test:
        raise SystemExit(f"{manifest}: needs val and test questions "
                         f"(have {len(val)} / {len(test)})")
    print(f"{len(val)} validation, {len(test)} test requests; "
          f"setup {time.perf_counter() - t0:.0f}s", flush=True)

    # every fixed-shape step ready before anything is timed
    first = test[0].load()
    g_max = max(a.gammas)
    for name, d in drafters.items():
        run_one(target, first, d, Config(name, g_max), a.max_new_tokens)
        d.prepare_steps(g_max)
    run_one(target, first, None, Config("none", 1), a.max_new_tokens)
    from evspec.bench.backend import EngineBackend  # the fast engine's step shapes (else no-op)

    EngineBackend(target, draft).prepare_steps(first, max_gamma=g_max,
                                               max_new_tokens=a.max_new_tokens)
    deadline = time.perf_counter() + a.budget_s

    # validation: learn the router per γ
    val_cfgs = [Config(h, g) for g in a.gammas for h in HEADS]
    val_records = measure(target, val, val_cfgs, lambda c: drafters[c.drafter], a,
                          time.perf_counter() + 0.3 * a.budget_s, "val")
    routers, router_meta = {}, {}
    keys = sorted({r["key"] for r in val_records})
    qtypes = {r["key"]: r["qtype"] for r in val_records}
    for g in a.gammas:
        by_head = {h: _times(val_records, Config(h, g).label) for h in HEADS}
        times = {h: [by_key[k] for k in keys] for h, by_key in by_head.items()}
        table = learn_qtype_table([qtypes[k] for k in keys], times, default="target-head",
                                  margin=a.router_margin)
        routers[g] = routed(table, drafters)
        router_meta[g] = {"table": dict(table.table), "default": table.default,
                          "val_requests": len(keys)}

    # test: everything, paired
    configs = [Config("none", 1)]
    configs += [Config(d, g) for g in a.gammas for d in (*HEADS, "event-router")]

    def drafter_of(cfg: Config):
        if cfg.drafter == "none":
            return None
        return routers[cfg.gamma] if cfg.drafter == "event-router" else drafters[cfg.drafter]

    records = measure(target, test, configs, drafter_of, a, deadline, "test")
    summary = summarize(records, configs, a.resamples)
    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True,
                                text=True, cwd=Path(__file__).parent, check=False).stdout.strip()
        commit = commit or "?"
    except OSError:
        commit = "?"
    dev = torch.device(a.device) if a.device != "auto" else None
    meta = {
        "command": "python3 benchmarks/events_pay.py "
        + " ".join(sys.argv[1:] if argv is None else argv),
        "device": torch.cuda.get_device_name(dev) if torch.cuda.is_available() and a.device != "cpu"
        else platform.processor() or "cpu",
        "dtype": a.dtype, "engine": a.engine, "device_preprocess": target.device_pixels is not None,
        "torch": torch.__version__, "commit": commit,
        "fold_memory": drafters["event-head"].memory_folded,
        "python": platform.python_version(), "max_new_tokens": a.max_new_tokens,
        "test_requests": len({r["key"] for r in records}),
        "test_clips": len({r["clip"] for r in records}),
        "val_requests": len({r["key"] for r in val_records}), "gammas": list(a.gammas),
        "routers": {str(g): m for g, m in router_meta.items()}, "wall_s": time.perf_counter() - t0,
    }
    for g, m in router_meta.items():  # ready to ship beside the heads (router.json)
        from evspec.decoding.router import save_qtype_table

        save_qtype_table(routers[g].router, out / f"router_g{g}.json",
                         about={"learned_from": "world validation split", "gamma": g, **m})
    (out / "events_pay.json").write_text(json.dumps(
        {"meta": meta, "summary": summary, "records": records, "val_records": val_records},
        indent=1))
    (out / "events_pay.md").write_text(markdown(summary, meta))
    print(markdown(summary, meta), flush=True)
    print(f"done in {time.perf_counter() - t0:.0f}s -> {out}", flush=True)


if __name__ == "__main__":
    main()
