"""Options of the fast engine (``CausalLMWrapper.enable_fast``), validated."""

from __future__ import annotations

from dataclasses import dataclass

from evspec.models.fast.decode_attention import EXACT_QUERIES
from evspec.models.fast.llama import KERNEL_KINDS
from evspec.models.fast.step_attention import ATTENTION_KINDS


def check_fast_options(fast: bool, compile: bool, kernels: str) -> None:
    """The CLI's engine options (``generate``, ``bench``): ``--compile`` and ``--kernels``
    other than ``torch`` only with ``--fast``, and a known kernel kind."""
    if compile and not fast:
        raise ValueError("--compile compiles the fast engine: add --fast")
    if kernels not in KERNEL_KINDS:
        raise ValueError(f"--kernels must be one of {', '.join(KERNEL_KINDS)}, got {kernels!r}")
    if kernels != "torch" and not fast:
        raise ValueError(f"--kernels {kernels} runs in the fast engine: add --fast")


@dataclass(frozen=True)
class FastConfig:
    """How a wrapper runs its decoder on the fast path.

    ``max_len``: positions one static KV cache holds (prompt + answer);
    ``cuda_graphs``: capture/replay the fixed-size steps (CUDA only);
    ``compile``: ``torch.compile`` the step before capture (``compile_mode`` passed
    through; None = torch.compile's default mode);
    ``max_score_tokens``: the most tokens one score/decode step feeds (γ_max + 1);
    ``buckets``: step sizes steps are padded up to (ascending, ending at
    ``max_score_tokens``); ``None`` = every size ``1..max_score_tokens`` (no padding);
    ``kv_granularity``: attended cache rows are rounded up to a multiple of this (each
    multiple is one more captured shape; smaller = less wasted attention);
    ``max_slots``: static caches (each with its own graphs) that may be live at once,
    e.g. 2 when a model drafts for itself;
    ``attention``: the step attention kernel, ``"sdpa"``, ``"matmul"``, ``"splitkv"``
    (split-KV Triton kernels) or ``"auto"`` (splitkv where Triton runs, else sdpa for one
    query and matmul for several; see ``evspec.models.fast.step_attention.ATTENTION_KINDS``);
    ``fuse``: fused q/k/v and gate/up weights (views shared with the HF modules) and the
    compact layer functions (``evspec.models.fast.fused`` / ``layer``); needed by
    ``compile``, which compiles those per-layer functions (``compile_backend``:
    ``"inductor"``, or e.g. ``"aot_eager"`` to debug tracing without code generation)
    for the fixed-size steps and, with ``compile_prefill``, for prefills too (token
    count dynamic: one compile for every prompt length);
    ``kernels``: the layer functions of steps: ``"torch"`` (eager or, with ``compile``,
    compiled) or ``"triton"`` (decode and score steps of up to 16 tokens as four row-invariant
    Triton kernels a layer, prefills as ``"torch"``; needs ``fuse``;
    ``evspec.models.fast.triton_layer``);
    ``prefill_buckets``: a prefill after cached positions (the question after a cached
    video prefix) of up to ``prefill_buckets[-1]`` tokens is padded to the next bucket and
    run as a fixed-shape step (a CUDA graph); ``()`` = always an exact-shape eager pass;
    ``exact``: keep the numerics contract — a position's logits are bitwise the same whether a
    one-token step, a score of up to ``max_score_tokens`` tokens or a greedy chain computed
    them: decode and score steps attend row-invariantly, and their other ops are either the
    row-invariant Triton kernels (``kernels="triton"`` where Triton runs) or run on one row
    bucket (``buckets`` a single size, every step padded to it: the same shapes every step).
    """

    max_len: int
    cuda_graphs: bool = False
    compile: bool = False
    compile_mode: str | None = None
    max_score_tokens: int = 16
    buckets: tuple[int, ...] | None = None
    kv_granularity: int = 256
    max_slots: int = 2
    attention: str = "auto"
    fuse: bool = False
    compile_backend: str = "inductor"
    compile_prefill: bool = True
    prefill_buckets: tuple[int, ...] = ()
    kernels: str = "torch"
    exact: bool = False

    def __post_init__(self) -> None:
        if self.max_len < 2:
            raise ValueError(f"FastConfig.max_len must be >= 2 (prompt + answer), got {self.max_len}")
        if self.max_score_tokens < 1:
            raise ValueError(
                f"FastConfig.max_score_tokens must be >= 1 (gamma_max + 1), got {self.max_score_tokens}"
            )
        if self.buckets is not None:
            b = tuple(int(x) for x in self.buckets)
            if not b or list(b) != sorted(set(b)) or b[0] < 1:
                raise ValueError(
                    f"FastConfig.buckets must be distinct positive sizes in ascending order, got {self.buckets}"
                )
            if b[-1] != self.max_score_tokens:
                raise ValueError(
                    f"FastConfig.buckets must end at max_score_tokens = {self.max_score_tokens} "
                    f"(got {b[-1]}); add it or change max_score_tokens"
                )
            object.__setattr__(self, "buckets", b)
        if self.kv_granularity < 1:
            raise ValueError(f"FastConfig.kv_granularity must be >= 1, got {self.kv_granularity}")
        if self.max_slots < 1:
            raise ValueError(f"FastConfig.max_slots must be >= 1, got {self.max_slots}")
        if self.attention not in ATTENTION_KINDS:
            raise ValueError(
                f"FastConfig.attention must be one of {', '.join(ATTENTION_KINDS)}, got {self.attention!r}"
            )
        if self.compile_mode is not None and not self.compile:
            raise ValueError("FastConfig.compile_mode is set but compile is False; set compile=True")
        if self.compile and not self.fuse:
            raise ValueError(
                "FastConfig.compile compiles the fused layer functions; set fuse=True (or compile=False)"
            )
        if self.kernels not in KERNEL_KINDS:
            raise ValueError(f"FastConfig.kernels must be one of {', '.join(KERNEL_KINDS)}, got {self.kernels!r}")
        if self.kernels == "triton" and not self.fuse:
            raise ValueError("FastConfig.kernels='triton' runs the fused layer; set fuse=True")
        if not self.compile_backend:
            raise ValueError("FastConfig.compile_backend must name a torch.compile backend, e.g. 'inductor'")
        p = tuple(int(x) for x in self.prefill_buckets)
        if p and (list(p) != sorted(set(p)) or p[0] < 1):
            raise ValueError(
                f"FastConfig.prefill_buckets must be distinct positive sizes in ascending order "
                f"(e.g. (16, 32, 64)), got {self.prefill_buckets}"
            )
        object.__setattr__(self, "prefill_buckets", p)
        if self.exact and self.max_score_tokens > EXACT_QUERIES:
            raise ValueError(
                f"FastConfig.exact holds for steps of up to {EXACT_QUERIES} tokens; "
                f"max_score_tokens is {self.max_score_tokens}"
            )

    @property
    def step_buckets(self) -> tuple[int, ...]:
        """The step sizes in use."""
        return self.buckets or tuple(range(1, self.max_score_tokens + 1))

    @property
    def slack(self) -> int:
        """Scratch rows after ``max_len`` for padded steps: the largest step or prefill
        bucket rounded up to 16 (aligned cache rows for the fused attention kernels)."""
        largest = max((self.step_buckets[-1], *self.prefill_buckets))
        return -(-largest // 16) * 16


def compile_buckets(max_score_tokens: int, sizes: tuple[int, ...] = ()) -> tuple[int, ...]:
    """Step sizes for a compiled engine: powers of two below ``max_score_tokens``, then
    ``max_score_tokens`` itself (each size is one ``torch.compile``; a score of 9 tokens
    pads to 16), plus ``sizes`` up to ``max_score_tokens`` (the scores a run will take,
    e.g. γ + 1: compiled as they are instead of padded; attention over 16 padded rows costs
    a 7B score of 9 tokens ~0.1 ms, benchmarks/fast_engine.md)."""
    if max_score_tokens < 1:
        raise ValueError(f"max_score_tokens must be >= 1, got {max_score_tokens}")
    out, b = {int(max_score_tokens)}, 1
    while b < max_score_tokens:
        out.add(b)
        b *= 2
    out.update(int(x) for x in sizes if 1 <= int(x) <= max_score_tokens)
    return tuple(sorted(out))
