"""Measured: dynamic γ, cascade, query router, tree verification, batched requests,
each beside the plain engine with the best fixed γ (chosen in hindsight over the same set).

    PYTHONPATH=src HF_HUB_OFFLINE=1 python3 benchmarks/beyond.py --setting tiny   # CPU, random weights
    PYTHONPATH=src HF_HUB_OFFLINE=1 python3 benchmarks/beyond.py --setting world  # shipped world models
    PYTHONPATH=src HF_HUB_OFFLINE=1 python3 benchmarks/beyond.py --setting 7b --alpha 0.3,0.6,0.9

Settings: ``tiny`` (tiny-random presets; acceptance meaningless, timing and losslessness
real), ``world`` (``evspec/assets/world``: real α on the held-out clips; skipped when absent),
``7b`` (7B-shaped random weights, bf16 on the GPU, *acceptance-controlled*: request i gets
α = the i-th value of ``--alpha``, cyclically, so the set mixes easy and hard requests).
Everything runs on the dynamic-cache engine (tree and batch need it), baselines included.
Prints markdown; ``--out DIR`` also writes ``beyond_<setting>.md`` and ``.json``.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import torch

from beyond_features import (  # a sibling module: benchmarks/ is the script's folder
    FEATURES, Setting, engine_fn, feature_batch, feature_cascade, feature_gamma, feature_router,
    feature_tree, main_drafter, run_set, summarise,
)
from evspec.bench.mdtable import md_table


# -- settings -------------------------------------------------------------------------------------------


def load_setting(args) -> Setting | None:
    from evspec.loading import resolve_device

    if args.setting == "world":
        from evspec.demo import load_world_cases, load_world_models, world_available

        if not world_available():
            print("world assets absent (evspec/assets/world): skipping the world setting", file=sys.stderr)
            return None
        target, draft = load_world_models()
        cases = load_world_cases(target, draft, limit=args.requests)
        return Setting("world", target, draft, [c.request for c in cases], args.max_new_tokens, True,
                       warmup=not args.no_warmup, repeats=args.repeats, drafter=args.drafter)
    from evspec.bench.datasets import dataset_items
    from evspec.models.eventgpt import EventGPT
    from evspec.models.target import VideoLlavaTarget

    preset = args.preset or ("tiny-random" if args.setting == "tiny" else "7b")
    device = resolve_device(args.device)
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    target = VideoLlavaTarget.from_preset(preset, dtype=dtype, device=device, seed=0)
    draft = EventGPT.from_preset(preset, dtype=dtype, device=device, seed=1)
    items = dataset_items(f"random:{args.requests}", num_frames=target.num_frames,
                          frame_size=target.config.vision_config.image_size,
                          n_event_images=draft.config.n_event_images, event_size=(draft.config.image_size,) * 2)
    alphas = [float(a) for a in args.alpha.split(",")] if args.setting == "7b" else None
    return Setting(args.setting, target, draft, [it.load() for it in items], args.max_new_tokens, False,
                   alphas=alphas, warmup=not args.no_warmup, repeats=args.repeats, drafter=args.drafter)


def env(s: Setting) -> dict:
    import transformers

    rev = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    dev = getattr(s.target, "device", torch.device("cpu"))
    return {"setting": s.name, "device": torch.cuda.get_device_name() if dev.type == "cuda" else "cpu",
            "dtype": str(getattr(s.target, "dtype", "")), "torch": torch.__version__,
            "transformers": transformers.__version__, "git": rev, "command": " ".join(sys.argv),
            "requests": len(s.requests), "max_new_tokens": s.max_new_tokens, "repeats": s.repeats,
            "acceptance": f"controlled, α per request cycles {s.alphas}" if s.controlled else "real (measured)"}


def run(args) -> dict | None:
    if args.repeats < 1 or args.requests < 1 or args.max_new_tokens < 1:
        raise SystemExit("--repeats, --requests and --max-new-tokens must be >= 1")
    s = load_setting(args)
    if s is None:
        return None
    feats = [f.strip() for f in args.features.split(",") if f.strip()]
    bad = [f for f in feats if f not in FEATURES]
    if bad:
        raise SystemExit(f"--features: unknown {bad}; choose from {', '.join(FEATURES)}")
    gammas = [int(g) for g in args.gammas.split(",")]
    s.main = main_drafter(s)
    base_results = run_set(s, engine_fn(s, lambda i: None))
    s.references = [r.tokens for r in base_results]
    base = summarise("none (target only)", base_results, s, None)
    base["speedup"] = 1.0
    out: dict = {"env": env(s), "baseline": base, "features": {}}
    g_rows, best_g, best_results = feature_gamma(s, base, gammas)  # always: it finds the best fixed γ
    best_row = next(r for r in g_rows if r.get("gamma") == best_g)
    if "gamma" in feats:
        out["features"]["gamma"] = g_rows  # its own target-only row, interleaved with the rest
    if "cascade" in feats:
        out["features"]["cascade"] = feature_cascade(s, base, best_g, best_row)
    if "router" in feats:
        if s.controlled:
            out["features"]["router"] = "skipped: routing needs real acceptance (world setting)"
        else:
            out["features"]["router"] = feature_router(s, base, best_g, best_row, base_results, best_results)
    if "tree" in feats:
        shapes = [tuple(int(b) for b in sh.split("x")) for sh in args.tree_shapes.split(",")]
        out["features"]["tree"] = feature_tree(s, base, best_g, best_row, shapes)
    if "batch" in feats:
        out["features"]["batch"] = feature_batch(s, best_g, [int(b) for b in args.batch_sizes.split(",")])
    return out


COLS = (("config", "configuration", "{}"), ("total_ms", "total ms", "{:.0f}"), ("tok_s", "tok/s", "{:.1f}"),
        ("speedup", "speedup", "{:.2f}×"), ("alpha", "α (acc/drafted)", "{:.2f}"), ("alpha_ml", "α ML", "{:.2f}"),
        ("tau", "τ", "{:.2f}"), ("mean_gamma", "mean γ", "{:.2f}"), ("match", "= target-only", "{:.0%}"))


def markdown(out: dict) -> str:
    e = out["env"]
    lines = [f"# Beyond the note: {e['setting']} setting", "",
             "| " + " | ".join(f"{k}: {v}" for k, v in e.items()) + " |", ""]
    for feat, rows in out["features"].items():
        lines += [f"## {feat}", ""]
        if isinstance(rows, str):
            lines += [rows, ""]
            continue
        extra = [k for k in ("routes", "label_share") if any(k in r for r in rows)]
        lines += md_table([c[1] for c in COLS] + extra,
                          [["–" if r.get(k) is None else f.format(r[k]) for k, _, f in COLS]
                           + [str(r.get(k, "")) for k in extra] for r in rows])
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict | None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--setting", choices=("tiny", "world", "7b"), default="tiny")
    ap.add_argument("--features", default=",".join(FEATURES))
    ap.add_argument("--requests", type=int, default=6)
    ap.add_argument("--max-new-tokens", type=int, default=32)
    ap.add_argument("--gammas", default="1,2,3,4,6,8")
    ap.add_argument("--tree-shapes", default="2x2x1x1,3x2x1,4x2x2x1")
    ap.add_argument("--batch-sizes", default="1,2,4,8")
    ap.add_argument("--alpha", default="0.2,0.5,0.8", help="7b: controlled α per request, cycled")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--preset", default=None, help="model preset (default: tiny-random for tiny, 7b for 7b)")
    ap.add_argument("--out", type=Path, default=None)
    ap.add_argument("--no-warmup", action="store_true", help="skip the untimed request per configuration")
    ap.add_argument("--repeats", type=int, default=1, help="timed passes; each request keeps its fastest")
    ap.add_argument("--drafter", default="eventgpt",
                    help="drafter of the gamma, router, tree and batch features (e.g. event-head, target-head: "
                         "the shipped world modules; a head grows its own trees); cascade always uses eventgpt")
    args = ap.parse_args(argv)
    torch.set_num_threads(max(1, torch.get_num_threads()) if torch.cuda.is_available() else 1)
    out = run(args)
    if out is None:
        return None
    text = markdown(out)
    print(text)
    if args.out is not None:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / f"beyond_{args.setting}.md").write_text(text + "\n")
        (args.out / f"beyond_{args.setting}.json").write_text(json.dumps(out, indent=1, default=str))
    return out


if __name__ == "__main__":
    main()
