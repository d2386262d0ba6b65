"""What the harness runs requests on: a small protocol, and its implementation over the
real engine (``evspec.decoding.engine``) and a target wrapper.

Tests drive the harness with fake backends; the CLI uses :class:`EngineBackend`.
"""

from __future__ import annotations

import gc
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from evspec.decoding.stats import Result
from evspec.models.request import Request

if TYPE_CHECKING:  # torch-free import: the harness runs (and is tested) without loading torch
    from evspec.decoding.protocols import Drafter, Target


@runtime_checkable
class BenchBackend(Protocol):
    """The calls the harness makes.  ``target`` is used by the acceptance-controlled mode
    (its ``vocab_size``)."""

    target: Target

    def make_drafter(self, name: str) -> Drafter | None:
        """The drafter called ``name`` (None for ``none``); raises if it cannot be built."""
        ...

    def generate(
        self,
        request: Request,
        drafter: Drafter | None,
        *,
        gamma: int,
        max_new_tokens: int,
        temperature: float,
        top_p: float,
        seed: int,
    ) -> Result:
        """One evspec ``generate`` call (target-only when ``drafter`` is None)."""
        ...

    def hf_generate(self, request: Request, max_new_tokens: int) -> tuple[list[int], float]:
        """transformers ``generate`` on the target, greedy: (answer ids, milliseconds).
        Backends with the other HF baselines also take ``variant=`` ``static`` or
        ``prompt-lookup`` (``config.HF_BASELINES``)."""
        ...

    def decode_text(self, ids: list[int]) -> str: ...

    def synchronize(self) -> None:
        """Wait for queued device work (so wall-clock timings are honest)."""
        ...

    def recover(self) -> None:
        """Free memory after a failed request (e.g. CUDA out of memory)."""
        ...

    def clear_caches(self, drafters: list[Drafter]) -> None:
        """Forget every per-clip cache (the models' prefix caches, the drafters' event
        memories): needed by ``--cache cold`` only."""
        ...

    def describe(self) -> dict[str, Any]:
        """Facts a resumed run must share (model, dtype, device type)."""
        ...


class EngineBackend:
    """The real thing: evspec's engine over a target wrapper (and an optional draft model
    for model drafters such as ``eventgpt``).

    ``drafter_options`` are passed to ``make_drafter`` per drafter name; ``hf_cache`` is
    the ``cache_implementation`` of the HF baseline (None = transformers' default dynamic
    cache, what users get today; ``"static"`` = the compiled variant).  ``schedule``:
    ``sequential`` runs ``engine.generate``; ``pipelined`` runs
    ``decoding.pipeline.generate_pipelined`` (the draft model may sit on another device).
    """

    def __init__(
        self,
        target: Target,
        draft_model: Target | None = None,
        *,
        drafter_options: dict[str, dict[str, Any]] | None = None,
        info: dict[str, Any] | None = None,
        hf_cache: str | None = None,
        schedule: str = "sequential",
        hf_lookup_tokens: int = 10,
    ) -> None:
        from evspec.bench.config import SCHEDULES

        if schedule not in SCHEDULES:
            raise ValueError(f"EngineBackend schedule must be one of {', '.join(SCHEDULES)}, got {schedule!r}")
        self.schedule = schedule
        self.target = target
        self.hf_cache = hf_cache
        self.hf_lookup_tokens = hf_lookup_tokens  # prompt_lookup_num_tokens of that baseline
        self.draft_model = draft_model
        self.drafter_options = drafter_options or {}
        self.info = info or {}

    def make_drafter(self, name: str) -> Drafter | None:
        from evspec.decoding.drafters import make_drafter

        return make_drafter(
            name, target=self.target, draft_model=self.draft_model, **self.drafter_options.get(name, {})
        )

    def generate(
        self,
        request: Request,
        drafter: Drafter | None,
        *,
        gamma: int,
        max_new_tokens: int,
        temperature: float,
        top_p: float,
        seed: int,
    ) -> Result:
        if self.schedule == "pipelined":
            from evspec.decoding.pipeline import generate_pipelined as generate
        else:
            from evspec.decoding.engine import generate

        return generate(
            self.target,
            request,
            drafter,
            gamma=max(1, gamma),  # the engine wants gamma >= 1 even without a drafter
            # acceptance-controlled: verify against the target-only answer (see engine)
            forced_reference=getattr(drafter, "forced_reference", None),
            max_new_tokens=max_new_tokens,
            temperature=temperature,
            top_p=top_p,
            seed=seed,
        )

    def prepare_steps(self, request: Request, *, max_gamma: int, max_new_tokens: int) -> dict[str, int]:
        """Capture (CUDA graphs) / compile up front every decode/score step the timed runs
        may take, on each model with the fast engine (``enable_fast``): step sizes
        ``1..max_gamma + 1`` (a round that drafts k <= γ tokens scores k + 1; drafters feed
        1-2 tokens per step), at every start position from one ``kv_granularity`` before
        this request's prompt length to one after its longest answer (other questions'
        prompts differ by a few tokens).  Call after the warm-up generate calls (which made
        the cache slots).  Returns the step shapes made ready per model ("target",
        "draft"); models without the fast engine are skipped.
        """
        if isinstance(max_gamma, bool) or not isinstance(max_gamma, int) or max_gamma < 0:
            raise ValueError(f"prepare_steps: max_gamma must be an integer >= 0, got {max_gamma!r}")
        made: dict[str, int] = {}
        for label, model in (("target", self.target), ("draft", self.draft_model)):
            fast = getattr(model, "fast", None)
            if model is None or fast is None:
                continue
            state = model.prefill(request)  # a live state: its rows are kept
            try:
                g, p = fast.config.kv_granularity, int(state.length)
                made[label] = fast.prepare_steps(  # the target's greedy chains too (target-only runs)
                    range(1, max_gamma + 2), start=max(0, p - g), upto=p + max_new_tokens + max_gamma + g,
                    greedy=label == "target",
                )
            finally:
                release = getattr(model, "release", None)
                if callable(release):
                    release(state)
        return made

    def hf_generate(
        self, request: Request, max_new_tokens: int, *, variant: str = "eager"
    ) -> tuple[list[int], float]:
        """``eager``: transformers' default cache (or ``hf_cache``); ``static``: a static
        cache, which transformers compiles on CUDA (the first call compiles: the harness's
        warm passes take it); ``prompt-lookup``: assisted generation by prompt lookup."""
        fn = getattr(self.target, "hf_generate", None)
        if fn is None:
            raise NotImplementedError(
                f"{type(self.target).__name__} has no hf_generate; run with --no-hf-baseline"
            )
        if variant == "eager":
            extra = {"cache_implementation": self.hf_cache} if self.hf_cache else {}
        elif variant == "static":
            extra = {"cache_implementation": "static"}
        elif variant == "prompt-lookup":
            extra = {"prompt_lookup_num_tokens": self.hf_lookup_tokens}
        else:
            raise ValueError(
                f"hf_generate variant must be eager, static or prompt-lookup, got {variant!r}"
            )
        tokens, ms = fn(request, max_new_tokens, **extra)
        return [int(t) for t in tokens], float(ms)

    def decode_text(self, ids: list[int]) -> str:
        return self.target.decode_text(ids)

    def _device(self) -> Any:
        return getattr(self.target, "device", None)

    def synchronize(self) -> None:
        import torch

        devices = {self._device(), getattr(self.draft_model, "device", None)} - {None}
        for dev in devices:  # both models' devices (they may differ: --draft-device)
            if torch.device(dev).type == "cuda":
                torch.cuda.synchronize(dev)

    def recover(self) -> None:
        import torch

        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()

    def clear_caches(self, drafters: list[Drafter]) -> None:
        """Empty both models' prefix caches and every drafter's per-clip cache."""
        for model in (self.target, self.draft_model):
            cache = getattr(model, "prefix_cache", None)
            if cache is not None:
                cache.clear()
        for drafter in drafters:
            clear = getattr(drafter, "clear_cache", None)
            if callable(clear):
                clear()

    def describe(self) -> dict[str, Any]:
        dev = self._device()
        out: dict[str, Any] = {
            "target": type(self.target).__name__,
            "draft_model": type(self.draft_model).__name__ if self.draft_model is not None else None,
            "dtype": str(getattr(self.target, "dtype", None)),
            "device_type": str(getattr(dev, "type", dev)),
            "hf_cache": self.hf_cache,
        }
        if self.schedule != "sequential":  # absent when sequential: older run folders still resume
            out["schedule"] = self.schedule
        out.update(self.info)
        return out
