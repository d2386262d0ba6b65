"""Cold and warm start: how long a fresh process takes to answer its first question.

Runs ``--processes`` child processes one after the other, all with the same compile cache
folder (``--cache-dir``, emptied first unless ``--keep-cache``): the first is a cold start
(compiles everything and fills the inductor and Triton caches), the next ones start warm
(they reuse the compiled artifacts).  Each child, through ``evspec.Pipeline``, times: the
imports, loading the models, the first answer (compilation and graph capture included),
a second answer (steady state).  The parent adds the wall time from spawning the child to
its first answer (Python start-up included).

    # GPU, the 7B target-only answer of 128 tokens (random weights, EOS ignored)
    PYTHONPATH=src HF_HUB_OFFLINE=1 python3 benchmarks/cold_start.py --target 7b \
        --fast --compile --kernels triton --new-tokens 128
    # CPU, tiny and quick (what the tests run)
    PYTHONPATH=src HF_HUB_OFFLINE=1 python3 benchmarks/cold_start.py --target tiny-random \
        --device cpu --new-tokens 8

Prints a markdown table; writes ``$OUT/cold_start.json`` (or ``--json``).  Needs only the
package's core dependencies (no server extras).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

_T0 = time.perf_counter()  # the child's clock starts before its heavy imports


def child(args: argparse.Namespace) -> dict[str, Any]:
    """One process: imports, load, first and second answer (seconds)."""
    import torch

    from evspec.api.pipeline import Pipeline
    from evspec.models.causal_lm import sync

    t_import = time.perf_counter()
    pipe = Pipeline.from_pretrained(
        args.target, drafter=args.drafter, device=args.device, dtype=args.dtype, fast=args.fast,
        compile=args.compile, kernels=args.kernels, gamma=args.gamma,
        max_new_tokens=args.new_tokens)
    sync(pipe.target.device)
    t_load = time.perf_counter()
    events = "random" if pipe.draft_model is not None else None
    answers = []
    for question in ("What is moving in the scene?", "What is moving in the scene?"):
        start = time.perf_counter()
        result = pipe(video="random", events=events, question=question, stop_at_eos=False)
        answers.append((time.perf_counter() - start, result))
        if len(answers) == 1:
            first_at = time.time()  # wall clock, comparable with the parent's
    (first_s, first), (second_s, second) = answers
    return {
        "first_answer_at": first_at, "import_s": t_import - _T0, "load_s": t_load - t_import,
        "first_answer_s": first_s, "second_answer_s": second_s,
        "first_ttft_ms": first.stats.ttft_ms, "second_ttft_ms": second.stats.ttft_ms,
        "tokens": len(first.tokens), "same_answer": first.tokens == second.tokens,
        "device": torch.cuda.get_device_name() if pipe.target.device.type == "cuda" else "cpu",
        "torch": torch.__version__,
    }


def run_children(args: argparse.Namespace, argv: list[str]) -> list[dict[str, Any]]:
    cache = Path(args.cache_dir)
    if cache.exists() and not args.keep_cache:
        shutil.rmtree(cache)
    env = dict(os.environ, EVSPEC_CACHE_DIR=str(cache))
    for key in ("TORCHINDUCTOR_CACHE_DIR", "TRITON_CACHE_DIR"):  # the cache folder decides
        env.pop(key, None)
    rows = []
    for n in range(args.processes):
        spawn = time.time()
        proc = subprocess.run([sys.executable, __file__, "--child", *argv], env=env,
                              capture_output=True, text=True, timeout=args.timeout)
        if proc.returncode != 0:
            raise SystemExit(f"child {n + 1} failed ({proc.returncode}):\n{proc.stderr[-4000:]}")
        row = json.loads(proc.stdout.strip().splitlines()[-1])
        row["process_to_first_answer_s"] = row.pop("first_answer_at") - spawn
        row["process"] = "cold" if n == 0 and not args.keep_cache else "warm"
        rows.append(row)
    return rows


def table(rows: list[dict[str, Any]]) -> str:
    head = ("| process | start → first answer (s) | import (s) | load (s) | first answer (s) | "
            "second answer (s) | tokens |\n|---|---|---|---|---|---|---|")
    lines = [head]
    for n, r in enumerate(rows, 1):
        lines.append(f"| {n} ({r['process']}) | {r['process_to_first_answer_s']:.2f} | "
                     f"{r['import_s']:.2f} | {r['load_s']:.2f} | {r['first_answer_s']:.2f} | "
                     f"{r['second_answer_s']:.2f} | {r['tokens']} |")
    return "\n".join(lines)


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--target", default="7b", help="target preset or folder")
    ap.add_argument("--drafter", default="none", help="drafter (none: target-only)")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--dtype", default="auto")
    ap.add_argument("--fast", action="store_true")
    ap.add_argument("--compile", action="store_true")
    ap.add_argument("--kernels", default="torch", choices=("torch", "triton"))
    ap.add_argument("--gamma", type=int, default=4)
    ap.add_argument("--new-tokens", type=int, default=128, help="answer length (EOS ignored)")
    ap.add_argument("--processes", type=int, default=2, help="processes in a row (>= 2)")
    ap.add_argument("--cache-dir", default=os.path.join(tempfile.gettempdir(), "evspec-cold-start"),
                    help="the compile cache folder the processes share")
    ap.add_argument("--keep-cache", action="store_true",
                    help="start from the cache as it is (every process warm)")
    ap.add_argument("--timeout", type=float, default=900, help="seconds per process")
    ap.add_argument("--json", default=None, help="output file (default $OUT/cold_start.json)")
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.processes < 1:
        ap.error("--processes must be >= 1")
    return args


def main(argv: list[str] | None = None) -> list[dict[str, Any]] | None:
    argv = sys.argv[1:] if argv is None else argv
    args = parse(argv)
    if args.child:
        print(json.dumps(child(args)))
        return None
    rows = run_children(args, [a for a in argv if a != "--child"])
    print(table(rows))
    out = Path(args.json or os.path.join(os.environ.get("OUT", "."), "cold_start.json"))
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"argv": argv, "rows": rows}, indent=1))
    return rows


if __name__ == "__main__":
    main()
