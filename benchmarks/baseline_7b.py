"""The real-size path: the 7B presets (random weights, bf16) through evspec's
plain (dynamic-cache, eager) engine, beside HF ``generate``.

    PYTHONPATH=src HF_HUB_OFFLINE=1 python3 benchmarks/baseline_7b.py [--new-tokens 64]

Prints a markdown table; writes ``$OUT/baseline_7b.json`` when ``OUT`` is set.  Timing
does not depend on weight values; EOS is ignored so every run decodes the same length.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time

import torch

from evspec.decoding.drafters import make_drafter
from evspec.decoding.engine import generate
from evspec.models.request import Request
from evspec.loading import ModelSpec, load_models, random_images


def env() -> dict:
    import transformers

    return {
        "gpu": torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu",
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "dtype": "bfloat16",
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--new-tokens", type=int, default=64)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--gamma", type=int, default=4)
    ap.add_argument("--preset", default="7b")
    ap.add_argument("--device", default="cuda")
    args = ap.parse_args()
    t0 = time.perf_counter()
    loaded = load_models(ModelSpec(target=args.preset, draft_model=args.preset, device=args.device))
    target, eventgpt, dev = loaded.target, loaded.draft, loaded.device
    build_s = time.perf_counter() - t0
    req = Request(
        "What is happening in the scene?",
        video=random_images(target.num_frames, target.config.vision_config.image_size, 0),
        event_images=random_images(eventgpt.config.n_event_images, eventgpt.config.image_size, 1),
        clip_id="random-0",
    )
    n = args.new_tokens
    out: dict = {"env": env(), "preset": args.preset, "new_tokens": n, "build_s": build_s,
                 "prompt_tokens": int(target.build_prompt_ids(req.question).numel())}

    # HF generate (what users run today), eager default cache
    hf_tokens, _ = target.hf_generate(req, 4)  # warm-up
    hf = []
    for _ in range(args.repeats):
        toks, ms = target.hf_generate(req, n)
        hf.append(ms)
    out["hf_generate_total_ms"] = statistics.median(hf)
    out["hf_generate_tokens"] = len(toks)

    def run(drafter_name: str) -> list:
        runs = []
        generate(target, req, make_drafter(drafter_name, target=target, draft_model=eventgpt),
                 gamma=args.gamma, max_new_tokens=4, stop_at_eos=False)  # warm-up
        for _ in range(args.repeats):
            d = make_drafter(drafter_name, target=target, draft_model=eventgpt)
            runs.append(generate(target, req, d, gamma=args.gamma, max_new_tokens=n, stop_at_eos=False))
        return runs

    base = run("none")
    s = [r.stats for r in base]
    out["target_only"] = {
        "total_ms": statistics.median(x.total_ms for x in s),
        "ttft_ms": statistics.median(x.ttft_ms for x in s),
        "vision_ms": statistics.median(x.target_vision_ms for x in s),
        "prefill_ms": statistics.median(x.target_prefill_ms for x in s),
        "ms_per_token": statistics.median((x.total_ms - x.ttft_ms) / (x.new_tokens - 1) for x in s),
    }
    spec = run("eventgpt")
    s2 = [r.stats for r in spec]
    draft_ms_tok = statistics.median(sum(r.draft_ms for r in x.rounds) / max(x.drafted, 1) for x in s2)
    score_ms = statistics.median(statistics.median(r.score_ms for r in x.rounds if r.drafted == args.gamma) for x in s2)
    out["eventgpt"] = {
        "gamma": args.gamma,
        "total_ms": statistics.median(x.total_ms for x in s2),
        "draft_prefill_ms": statistics.median(x.draft_prefill_ms for x in s2),
        "draft_vision_ms": statistics.median(x.draft_vision_ms for x in s2),
        "draft_ms_per_token": draft_ms_tok,
        "score_ms_gamma_plus_1": score_ms,
        "alpha": statistics.median(x.alpha for x in s2),
        "tokens_identical_to_target_only": sum(a.tokens == b.tokens for a, b in zip(spec, base)) / len(base),
        "c": draft_ms_tok / score_ms,
    }
    out["peak_mem_gib"] = torch.cuda.max_memory_allocated() / 2**30 if dev.type == "cuda" else None
    t = out["target_only"]
    e = out["eventgpt"]
    print(json.dumps(out, indent=1))
    print("\n| what | value |\n|---|---|")
    print(f"| prompt tokens (target) | {out['prompt_tokens']} |")
    print(f"| HF generate eager, {n} tokens | {out['hf_generate_total_ms']:.0f} ms ({out['hf_generate_total_ms']/n:.1f} ms/token incl. prefill) |")
    print(f"| evspec target-only (dynamic cache, eager) | {t['ms_per_token']:.1f} ms/token decode, prefill {t['prefill_ms']:.1f} ms + vision {t['vision_ms']:.1f} ms, total {t['total_ms']:.0f} ms |")
    print(f"| EventGPT drafter (eager) | {e['draft_ms_per_token']:.1f} ms/token; prefill {e['draft_prefill_ms']:.1f} ms + vision {e['draft_vision_ms']:.1f} ms |")
    print(f"| target score of γ+1 = {args.gamma + 1} tokens | {e['score_ms_gamma_plus_1']:.1f} ms (c = {e['c']:.2f}) |")
    print(f"| SD total with EventGPT (random weights, α = {e['alpha']:.2f}) | {e['total_ms']:.0f} ms; identical tokens: {e['tokens_identical_to_target_only']:.2f} |")
    print(f"| peak GPU memory | {out['peak_mem_gib']} GiB |")
    if os.environ.get("OUT"):
        with open(os.path.join(os.environ["OUT"], "baseline_7b.json"), "w") as f:
            json.dump(out, f, indent=1)


if __name__ == "__main__":
    main()
