"""The whole user journey on the real layouts, timed: checkpoints in the releases' folder
layouts and DSEC-layout recordings (``benchmarks/real_layouts.py``) -> ``evspec data dsec``
-> ``evspec collect`` (train, val) -> ``evspec train`` (event-head, target-head, aligner,
LoRA) -> ``evspec eval`` -> ``evspec bench``, each stage a fresh process exactly as a user
runs it, with its wall time, peak CPU memory (RSS) and peak GPU memory (max allocated by
torch) recorded.  Writes ``journey.json`` and ``journey.md`` (and ``logs/``) into ``--out``.

Weights are random: acceptance, answers and speedups mean nothing; time and memory are
real.  Times per 1 000 questions come from the stages that handle questions (collect,
eval, bench); the projection to a full instruction set is labelled as such.

    PYTHONPATH=src HF_HUB_OFFLINE=1 python3 benchmarks/journey.py --size tiny --out /tmp/j
"""

from __future__ import annotations

import argparse
import json
import os
import re
import resource
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from journey_report import report  # a sibling module: benchmarks/ is the script's folder

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
MODULES = ("event-head", "target-head", "aligner", "lora")
#: questions in a full instruction set, for the labelled projection: 6 400 DSEC clips (about
#: 53 minutes of driving cut into 1 s clips overlapping by half) x 10 questions each
FULL_QUESTIONS = 64_000


# -- one stage, measured in its own process ------------------------------------------------


def _exec_measured(stats_file: Path, argv: list[str]) -> int:
    """Run ``argv`` (``-m evspec ...`` or a script path and its arguments) in this process,
    then write its peak memory to ``stats_file``."""
    import runpy

    code = 0
    try:
        if argv[0] == "-m":
            sys.argv = [argv[1], *argv[2:]]
            runpy.run_module(argv[1], run_name="__main__", alter_sys=True)
        else:
            sys.argv = list(argv)
            runpy.run_path(argv[0], run_name="__main__")
    except SystemExit as exc:  # typer and argparse end this way
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    stats = {"rss_peak_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024}
    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_available() and torch.cuda.is_initialized():
        stats["gpu_max_allocated_bytes"] = int(torch.cuda.max_memory_allocated())
        stats["gpu_max_reserved_bytes"] = int(torch.cuda.max_memory_reserved())
    children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024
    if children:
        stats["children_rss_peak_bytes"] = children
    stats_file.write_text(json.dumps(stats))
    return code


@dataclass
class Stage:
    """One measured stage: ``questions`` it handled (0 when it handles none)."""

    name: str
    command: list[str]
    rc: int = -1
    wall_s: float = 0.0
    rss_peak_bytes: int = 0
    gpu_max_allocated_bytes: int | None = None
    questions: int = 0
    extra: dict = field(default_factory=dict)

    @property
    def per_1000_s(self) -> float | None:
        return self.wall_s / self.questions * 1000 if self.questions else None


def run_stage(name: str, argv: list[str], work: Path, env: dict[str, str]) -> Stage:
    """Run ``python3 journey.py --exec`` on ``argv``; log to ``work/logs/<name>.log``."""
    logs = work / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    stats_file = logs / f"{name}.stats.json"
    stats_file.unlink(missing_ok=True)
    cmd = [sys.executable, str(Path(__file__).resolve()), "--exec", str(stats_file), "--", *argv]
    shown = ["python3", *argv]
    print(f"[journey] {name}: {' '.join(shown)}", flush=True)
    start = time.perf_counter()
    with open(logs / f"{name}.log", "w") as log:
        proc = subprocess.run(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=REPO)
    stage = Stage(name, shown, rc=proc.returncode, wall_s=time.perf_counter() - start)
    if stats_file.is_file():
        stats = json.loads(stats_file.read_text())
        stage.rss_peak_bytes = max(stats["rss_peak_bytes"], stats.get("children_rss_peak_bytes", 0))
        stage.gpu_max_allocated_bytes = stats.get("gpu_max_allocated_bytes")
    print(f"[journey] {name}: rc {stage.rc}, {stage.wall_s:.1f} s", flush=True)
    if stage.rc != 0:
        tail = (logs / f"{name}.log").read_text().splitlines()[-25:]
        print("\n".join(tail), file=sys.stderr)
    return stage


# -- counting what a stage did -------------------------------------------------------------


def collected(data: Path, split: str) -> int:
    """Examples ``evspec collect`` wrote for ``split`` into ``data``."""
    total = 0
    for index in data.rglob(f"index-{split}*.json"):
        total += sum(int(c["n"]) for c in json.loads(index.read_text()).get("chunks", []))
    return total


def jsonl_requests(folder: Path) -> int:
    """Distinct request ids in the JSON-lines records under ``folder``."""
    ids = set()
    for path in folder.rglob("*.jsonl"):
        for line in path.read_text().splitlines():
            try:
                rec = json.loads(line)
            except json.JSONDecodeError:
                continue
            rid = rec.get("request_id") if isinstance(rec, dict) else None
            if rid is not None:
                ids.add(rid)
    return len(ids)


def collect_loop_s(log: Path) -> float | None:
    """Seconds of ``evspec collect``'s question loop (its summary line), model loading
    excluded."""
    m = re.search(r"collected \d+ new examples .* in ([0-9.]+) s", log.read_text())
    return float(m.group(1)) if m else None


def bench_wall_ms(folder: Path) -> dict[str, float]:
    """Mean wall time per answered request of each drafter in ``evspec bench``'s records."""
    times: dict[str, list[float]] = {}
    for line in (folder / "records.jsonl").read_text().splitlines():
        rec = json.loads(line)
        wall = (rec.get("timings") or {}).get("wall_ms")
        if rec.get("status") == "ok" and wall is not None:
            times.setdefault(rec["drafter"], []).append(float(wall))
    return {d: sum(v) / len(v) for d, v in times.items()}


# -- the journey ---------------------------------------------------------------------------


@dataclass
class JourneyConfig:
    """``questions``: per split (train, val: collected; test: evaluated and benched);
    ``steps`` / ``train_budget_s``: per trained module; ``gammas``: of eval (bench runs
    the last)."""

    size: str = "tiny"
    device: str = "auto"
    dtype: str = "auto"
    questions: dict[str, int] = field(default_factory=lambda: {"train": 20, "val": 10, "test": 10})
    dsec_seconds: dict[str, float] = field(
        default_factory=lambda: {"train": 3, "val": 2, "test": 2}
    )
    events_per_s: int = 400_000
    image_size: str = "1440x1080"
    duration: str = "1s"
    max_new_tokens: int = 32
    steps: int = 100
    batch_size: int = 8
    train_budget_s: float = 60.0
    gammas: tuple[int, ...] = (2, 4)
    eval_budget_s: float | None = None
    full_questions: int = FULL_QUESTIONS
    eventgpt_tokenizer_json: bool = False
    skip_write: bool = False


def journey(cfg: JourneyConfig, out: Path, work: Path) -> dict:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO / "src"), env.get("PYTHONPATH")) if p)
    ckpt, clips, data, runs = work / "checkpoints", work / "clips", work / "data", work / "runs"
    target, draft = ckpt / "Video-LLaVA-7B-hf", ckpt / "EventGPT-7b"
    models = ["--target", str(target), "--draft-model", str(draft)]
    dev = ["--device", cfg.device, "--dtype", cfg.dtype]
    stages: list[Stage] = []

    def stage(name: str, argv: list[str], questions=None) -> Stage:
        s = run_stage(name, argv, work, env)
        if questions is not None and s.rc == 0:
            s.questions = questions()
        stages.append(s)
        failed = None if s.rc == 0 else f"stage {name} failed"
        report(cfg, stages, out, work, failed, complete=False)  # what is done so far
        if s.rc != 0:
            log = work / "logs" / f"{name}.log"
            raise RuntimeError(f"stage {name} failed (rc {s.rc}); see {log}")
        return s

    failure = None
    try:
        # 1. the releases' folders and the recordings
        if not cfg.skip_write:
            shutil.rmtree(ckpt, ignore_errors=True)
            argv = [
                str(HERE / "real_layouts.py"), "--out", str(ckpt), "--size", cfg.size,
                "--dsec-seconds", ",".join(f"{k}={v}" for k, v in cfg.dsec_seconds.items()),
                "--events-per-s", str(cfg.events_per_s), "--image-size", cfg.image_size,
            ]  # fmt: skip
            if cfg.device != "auto":
                argv += ["--device", cfg.device]
            if cfg.eventgpt_tokenizer_json:
                argv.append("--eventgpt-tokenizer-json")
            stage("write-checkpoints", argv)
        # 2. evspec data dsec: one manifest per split
        parts = {}
        for split in cfg.dsec_seconds:
            stage(f"data-dsec-{split}", [
                "-m", "evspec", "data", "dsec", "--root", str(ckpt / "dsec" / split),
                "--out", str(clips / split), "--split", split, "--duration", cfg.duration,
                "--overlap", "0.5", "--no-progress",
            ])  # fmt: skip
            parts[split] = clips / split / "manifest.json"
        # 3. collect the teacher data
        for split in ("train", "val"):
            stage(f"collect-{split}", [
                "-m", "evspec", "collect", "--dataset", str(parts[split]), "--out", str(data),
                "--split", split, "--limit", str(cfg.questions[split]), "--canvas", "chunk",
                "--max-new-tokens", str(cfg.max_new_tokens), *models, *dev,
            ], questions=lambda split=split: collected(data, split))  # fmt: skip
            loop = collect_loop_s(work / "logs" / f"collect-{split}.log")
            if loop is not None and stages[-1].questions:
                stages[-1].extra["loop_s_per_1000_questions"] = loop / stages[-1].questions * 1000
        # 4. train each module
        for module in MODULES:
            batch = max(1, cfg.batch_size // 4) if module == "lora" else cfg.batch_size
            argv = [
                "-m", "evspec", "train", "--module", module, "--data", str(data),
                "--out", str(runs / module), "--steps", str(cfg.steps),
                "--batch-size", str(batch),
                "--eval-every", str(max(1, cfg.steps // 2)), "--save-every", str(cfg.steps),
                "--time-budget", str(cfg.train_budget_s), "--device", cfg.device,
            ]  # fmt: skip
            if module == "lora":
                argv += ["--draft-model", str(draft)]
            stage(f"train-{module}", argv)
        trained = {
            m: runs / m / "best" for m in MODULES if (runs / m / "best" / "config.json").is_file()
        }
        labels = {"lora": "eventgpt-lora"}
        # 5. the engine evaluation on held-out questions
        argv = [
            "-m", "evspec", "eval", "--dataset", str(parts["test"]), "--out", str(work / "eval"),
            "--drafter", "eventgpt",
            *[a for m, p in trained.items() for a in ("--drafter", f"{labels.get(m, m)}={p}")],
            "--gamma", ",".join(map(str, cfg.gammas)), "--report-gamma", str(cfg.gammas[-1]),
            "--limit", str(cfg.questions["test"]), "--max-new-tokens", str(cfg.max_new_tokens),
            "--canvas", "chunk", "--warmup", "1", *models, *dev,
        ]  # fmt: skip
        if cfg.eval_budget_s:
            argv += ["--time-budget", str(cfg.eval_budget_s)]
        stage("eval", argv, questions=lambda: jsonl_requests(work / "eval"))
        # 6. the benchmark harness
        heads = [m for m in ("event-head", "target-head") if m in trained]
        argv = [
            "-m", "evspec", "bench", "--dataset", str(parts["test"]), "--out", str(work / "bench"),
            "--split", "test", "--limit", str(cfg.questions["test"]),
            "--drafters", ",".join(["none", "eventgpt", *heads]), "--gamma", str(cfg.gammas[-1]),
            "--max-new-tokens", str(cfg.max_new_tokens), "--warmup", "1",
            *[a for m in heads for a in ("--drafter-path", f"{m}={trained[m]}")], *models, *dev,
        ]  # fmt: skip
        bench = stage("bench", argv, questions=lambda: jsonl_requests(work / "bench"))
        bench.extra["answer_s_per_1000_questions"] = {
            d: ms for d, ms in bench_wall_ms(work / "bench").items()  # ms per q = s per 1000 q
        }
        # 7. one question, as a user asks it (docs/real_checkpoints.md, step 2)
        from evspec.data.manifest import load_manifest

        test = load_manifest(parts["test"])
        entry = test.clips[0]
        drafter = ["--drafter", "eventgpt"]
        if "event-head" in trained:
            drafter = ["--drafter", "event-head", "--drafter-path", str(trained["event-head"])]
        stage("generate", [
            "-m", "evspec", "generate", "-q", "What is the layout of the road in the scene?",
            "--target", str(target), "--draft-model", str(draft), *drafter,
            "--video", str(test.root / entry.video), "--events", str(test.root / entry.events),
            "--max-new-tokens", str(cfg.max_new_tokens), *dev,
        ])  # fmt: skip
    except RuntimeError as exc:
        failure = str(exc)
    return report(cfg, stages, out, work, failure)


# -- entry point ---------------------------------------------------------------------------


def _pairs(text: str, kind, names=("train", "val", "test")) -> dict:
    out = {}
    for part in text.split(","):
        m = re.fullmatch(r"\s*(\w+)=([0-9.]+)\s*", part)
        if not m or m.group(1) not in names:
            raise SystemExit(f"expected e.g. train=20,val=10,test=10, got {text!r}")
        out[m.group(1)] = kind(m.group(2))
    missing = [n for n in names if n not in out]
    if missing:
        raise SystemExit(f"{text!r} lacks {', '.join(missing)}")
    return out


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--exec"]:  # the measured child of one stage
        if len(argv) < 4 or argv[2] != "--":
            raise SystemExit("usage: journey.py --exec STATS.json -- ARGV...")
        return _exec_measured(Path(argv[1]), argv[3:])
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument(
        "--out", type=Path, required=True,
        help="Report folder (journey.json, journey.md, logs/).",
    )
    ap.add_argument("--work", type=Path, default=None, help="Working folder (default: OUT/work).")
    ap.add_argument("--size", choices=("tiny", "7b"), default="tiny", help="Model shapes.")
    ap.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N.")
    ap.add_argument(
        "--dtype", default="auto",
        help="Model dtype of every stage (auto: bf16 on GPU).",
    )
    ap.add_argument("--questions", default="train=20,val=10,test=10", help="Questions per split.")
    ap.add_argument(
        "--dsec-seconds", default="train=3,val=2,test=2",
        help="Seconds of recording per split.",
    )
    ap.add_argument(
        "--events-per-s", type=int, default=400_000,
        help="Event rate of the recordings.",
    )
    ap.add_argument("--image-size", default="1440x1080", help="DSEC-layout image size, WxH.")
    ap.add_argument("--max-new-tokens", type=int, default=32, help="Answer length cap.")
    ap.add_argument("--steps", type=int, default=100, help="Optimiser steps per trained module.")
    ap.add_argument(
        "--batch-size", type=int, default=8,
        help="Questions per step (LoRA: a quarter).",
    )
    ap.add_argument(
        "--train-budget", type=float, default=60.0,
        help="Seconds per trained module at most.",
    )
    ap.add_argument("--gammas", default="2,4", help="Draft lengths of eval; bench runs the last.")
    ap.add_argument("--eval-budget", type=float, default=None, help="Seconds of eval at most.")
    ap.add_argument(
        "--full-questions", type=int, default=FULL_QUESTIONS,
        help="Questions of the projection.",
    )
    ap.add_argument("--eventgpt-tokenizer-json", action="store_true",
                    help="Also write tokenizer.json for EventGPT (machines without sentencepiece).")
    ap.add_argument(
        "--skip-write", action="store_true",
        help="Reuse WORK/checkpoints from an earlier run.",
    )
    args = ap.parse_args(argv)
    cfg = JourneyConfig(
        size=args.size, device=args.device, dtype=args.dtype,
        questions=_pairs(args.questions, int), dsec_seconds=_pairs(args.dsec_seconds, float),
        events_per_s=args.events_per_s, image_size=args.image_size,
        max_new_tokens=args.max_new_tokens, steps=args.steps,
        batch_size=args.batch_size, train_budget_s=args.train_budget,
        gammas=tuple(int(g) for g in args.gammas.split(",")), eval_budget_s=args.eval_budget,
        full_questions=args.full_questions, eventgpt_tokenizer_json=args.eventgpt_tokenizer_json,
        skip_write=args.skip_write,
    )  # fmt: skip
    result = journey(cfg, args.out, args.work or args.out / "work")
    print((args.out / "journey.md").read_text())
    return 1 if result["failure"] else 0


if __name__ == "__main__":
    sys.exit(main())
