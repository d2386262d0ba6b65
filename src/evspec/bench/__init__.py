"""Benchmarking: the harness (runs requests, records JSONL), the cost-model theory, the
summary of a run, and its report (markdown tables, plots).  See docs/bench.md."""

from evspec.bench.backend import BenchBackend, EngineBackend
from evspec.bench.config import HF_GENERATE, TARGET_ONLY, BenchConfig, BenchItem
from evspec.bench.harness import BenchOutcome, run_bench
from evspec.bench.report import build_report
from evspec.bench.summary import ConfigSummary, summarize
from evspec.bench.theory import best_gamma, expected_tokens_per_round, speedup

__all__ = [
    "HF_GENERATE",
    "TARGET_ONLY",
    "BenchBackend",
    "BenchConfig",
    "BenchItem",
    "BenchOutcome",
    "ConfigSummary",
    "EngineBackend",
    "best_gamma",
    "build_report",
    "expected_tokens_per_round",
    "run_bench",
    "speedup",
    "summarize",
]
