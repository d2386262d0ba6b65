"""``evspec.Pipeline``: answer questions about clips from Python in two lines.

    pipe = evspec.Pipeline.from_pretrained("world", drafter="event-head")
    result = pipe(video="clip/frames", events="clip/events.npz", question="What is moving?")
    result.text, result.tokens, result.stats.tau

The pipeline loads the models once (the same loaders as ``evspec generate``), derives the
input sizes (frames, event images, image sizes) from the model configs, keeps the inputs of
the last clips it read, and runs the speculative engine (``decoding.engine.generate``, or
the pipelined schedule) for every question.  It answers one question at a time: calls from
several threads queue on a lock.
"""

from __future__ import annotations

import os
import threading
from collections import OrderedDict
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any, Sequence

import numpy as np

from evspec.api.streaming import TextCallback, TextEmitter, TokenStream
from evspec.decoding.names import DRAFTER_NAMES, needs_draft_model
from evspec.decoding.stats import Result

if TYPE_CHECKING:
    from evspec.loading import ClipSizes, ModelSpec

#: a clip input: a path (mp4, folder of frames, event stream file, folder of event images),
#: ``"random"`` (random images, for random-weight presets), or uint8 images ``[n, H, W, 3]``
ClipInput = str | os.PathLike | np.ndarray | None


@dataclass(frozen=True)
class PipelineConfig:
    """What :meth:`Pipeline.from_pretrained` loaded and how it decodes by default."""

    target: str = "world"
    draft_model: str | None = None
    drafter: str = "event-head"
    drafter_path: str | None = None
    gamma: int = 4
    gamma_policy: str = "fixed"
    schedule: str = "sequential"
    max_new_tokens: int = 64
    temperature: float = 0.0
    top_p: float = 1.0
    seed: int = 0
    device: str = "auto"
    draft_device: str | None = None  # default: ``device``
    dtype: str = "auto"
    quant: str = "none"
    fast: bool = False
    compile: bool = False
    kernels: str = "torch"
    threads: int | None = None
    window_ms: float | None = None

    def __post_init__(self) -> None:
        if self.drafter.partition("@")[0] not in DRAFTER_NAMES:
            raise ValueError(f"drafter must be one of {', '.join(DRAFTER_NAMES)}, "
                             f"got {self.drafter!r}")
        if isinstance(self.gamma, bool) or not isinstance(self.gamma, int) or self.gamma < 1:
            raise ValueError(f"gamma must be an integer >= 1, got {self.gamma!r}")
        if self.gamma_policy not in ("fixed", "dynamic"):
            raise ValueError("gamma_policy must be 'fixed' or 'dynamic', "
                             f"got {self.gamma_policy!r}")
        if self.schedule not in ("sequential", "pipelined"):
            raise ValueError(f"schedule must be 'sequential' or 'pipelined', got {self.schedule!r}")
        if self.gamma_policy == "dynamic" and self.schedule == "pipelined":
            raise ValueError("gamma_policy='dynamic' runs with schedule='sequential' (the "
                             "pipelined schedule drafts a fixed γ ahead)")
        if self.max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be >= 1, got {self.max_new_tokens}")
        if self.threads is not None and self.threads < 1:
            raise ValueError(f"threads must be >= 1, got {self.threads}")

    @property
    def models(self) -> ModelSpec:
        """The :class:`~evspec.loading.ModelSpec` of the models this config loads (the draft
        model only when the drafter runs EventGPT)."""
        from evspec.loading import ModelSpec

        needed = needs_draft_model(self.drafter)
        spec = ModelSpec(
            target=self.target, draft_model=self.draft_model if needed else None,
            dtype=self.dtype, device=self.device, draft_device=self.draft_device,
            seed=self.seed, quant=self.quant, fast=self.fast, compile=self.compile,
            kernels=self.kernels)
        return spec.for_drafters((self.drafter,))


class Pipeline:
    """Loaded models + a drafter; call it with a clip and a question (or several).

    Build it with :meth:`from_pretrained`.  ``pipe(video=..., events=..., question=...)``
    returns the engine's :class:`~evspec.decoding.stats.Result` (``text``, ``tokens``,
    ``stats`` with α, τ, times); a list of questions returns a list of results, in order.
    :meth:`stream` yields the answer text piece by piece.
    """

    def __init__(self, config: PipelineConfig, target, draft_model, drafter) -> None:
        self.config = config
        self.target = target
        self.draft_model = draft_model
        self.drafter = drafter
        self._lock = threading.RLock()  # one question (and one clip read) at a time
        self._clips: OrderedDict[tuple, Any] = OrderedDict()  # recent clips' inputs
        self._max_clips = 8
        self._drafter_options: dict[str, Any] = {}  # make_drafter's options (checkpoint path)

    # -- loading -------------------------------------------------------------------------
    @classmethod
    def from_pretrained(
        cls,
        target: str | os.PathLike = "world",
        *,
        draft_model: str | os.PathLike | None = None,
        drafter: str = "event-head",
        **options: Any,
    ) -> Pipeline:
        """Load ``target`` (Video-LLaVA: ``world`` for the shipped world model, a preset such
        as ``tiny-random`` or ``7b``, or a local folder) and, when ``drafter`` runs the
        EventGPT side, ``draft_model`` (default: the same preset as the target, so ``world``
        loads the shipped world drafter; a folder target needs it named).

        ``options`` are the fields of :class:`PipelineConfig`: ``drafter_path``, ``gamma``,
        ``gamma_policy``, ``schedule``, ``max_new_tokens``, ``temperature``, ``top_p``,
        ``seed``, ``device``, ``draft_device``, ``dtype``, ``quant``, ``fast``, ``compile``,
        ``kernels``,
        ``threads`` (CPU threads; default 1 on a CPU with at most 2 cores), ``window_ms``.
        """
        unknown = set(options) - set(PipelineConfig.__dataclass_fields__)
        if unknown:
            raise TypeError(f"unknown option(s) {', '.join(sorted(unknown))}; known: "
                            f"{', '.join(sorted(PipelineConfig.__dataclass_fields__))}")
        config = PipelineConfig(target=os.fspath(target), drafter=drafter,
                                draft_model=None if draft_model is None else os.fspath(draft_model),
                                **options)
        if config.draft_model is None:  # the one the drafter needs, recorded in the config
            config = replace(config, draft_model=config.models.draft_model)
        return cls.from_config(config)

    @classmethod
    def from_config(cls, config: PipelineConfig) -> Pipeline:
        """Load the models a :class:`PipelineConfig` names."""
        from evspec.decoding.drafters import checkpoint_option, make_drafter
        from evspec.loading import apply_threads, load_models, resolve_device

        spec = config.models
        apply_threads(config.threads, resolve_device(spec.placement[0]))
        sizes = (config.gamma + 1,) if config.drafter != "none" else ()
        loaded = load_models(spec, score_sizes=sizes)
        tgt, dm = loaded.target, loaded.draft
        options = {}
        if config.drafter_path is not None:
            options[checkpoint_option(config.drafter)] = config.drafter_path
        drafter = make_drafter(config.drafter, target=tgt, draft_model=dm, **options)
        pipe = cls(config, tgt, dm, drafter)
        pipe._drafter_options = options
        return pipe

    # -- inputs --------------------------------------------------------------------------
    @property
    def sizes(self) -> ClipSizes:
        """How clips must look to the loaded models: frames, event images, and whether the
        drafter is a world model (events rendered over the whole clip on the sensor canvas)."""
        from evspec.loading import ClipSizes

        return ClipSizes.of(self.target, self.draft_model)

    def load_clip(self, video: ClipInput, events: ClipInput = None):
        """The model inputs of one clip (:class:`evspec.loading.Inputs`); paths are read once
        and kept for the next questions about the same clip."""
        if video is None:
            raise ValueError("video is required: a path (mp4 or folder of frames), uint8 frames "
                             "[T, H, W, 3], or 'random'")
        if events is None and self.draft_model is not None and self.drafter_needs_events:
            raise ValueError(f"drafter {self.config.drafter!r} needs events: a stream file "
                             "(.npz/.npy/.h5), a folder of event images, uint8 images "
                             "[n, H, W, 3], or 'random'")
        if not self.drafter_needs_events:
            events = None  # nothing reads them
        arrays = {}
        paths: dict[str, str | None] = {}
        for name, value in (("video", video), ("events", events)):
            if isinstance(value, np.ndarray):
                if value.ndim != 4 or value.shape[-1] != 3 or value.dtype != np.uint8:
                    raise ValueError(f"{name} array must be uint8 [n, H, W, 3], got "
                                     f"{value.dtype} {list(value.shape)}")
                arrays[name] = value
                paths[name] = None
            else:
                paths[name] = None if value is None else os.fspath(value)
        with self._lock:
            return self._read_clip(paths, arrays)

    def _read_clip(self, paths: dict[str, str | None], arrays: dict[str, np.ndarray]):
        from evspec.loading import Inputs, load_inputs

        key = (paths["video"], paths["events"], self.config.window_ms)
        loaded = self._clips.get(key) if not arrays else None
        if loaded is None:
            loaded = load_inputs(paths["video"], paths["events"], self.sizes,
                                 window_ms=self.config.window_ms, seed=self.config.seed)
            if not arrays:
                self._clips[key] = loaded
                while len(self._clips) > self._max_clips:
                    self._clips.popitem(last=False)
        else:
            self._clips.move_to_end(key)
        return Inputs(video=arrays.get("video", loaded.video),
                      event_images=arrays.get("events", loaded.event_images))

    @property
    def drafter_needs_events(self) -> bool:
        return needs_draft_model(self.config.drafter)

    # -- answering -----------------------------------------------------------------------
    def __call__(
        self,
        *,
        question: str | Sequence[str],
        video: ClipInput,
        events: ClipInput = None,
        on_text: TextCallback | None = None,
        batch: bool = False,
        **decode: Any,
    ) -> Result | list[Result]:
        """Answer ``question`` (a string, or a list: one result per question, in order) about
        the clip.  ``decode`` overrides the decoding defaults for this call: ``gamma``,
        ``max_new_tokens``, ``temperature``, ``top_p``, ``seed``, ``stop_at_eos``.
        ``on_text`` receives the answer text piece by piece as it is decoded.

        ``batch=True`` answers a list together, one target pass per round verifying every
        question's drafts (``decoding.batch``; the same answers in float32; default engine,
        fixed γ, sequential schedule, no ``on_text``)."""
        if isinstance(question, str):
            return self._answer(question, self.load_clip(video, events), on_text, decode)
        questions = list(question)
        if not questions or not all(isinstance(q, str) and q.strip() for q in questions):
            raise ValueError("question must be a string or a non-empty list of strings")
        inputs = self.load_clip(video, events)
        if batch:
            if on_text is not None:
                raise ValueError("batch=True streams nothing (no on_text); answer one by one")
            return self.answer_batch([(q, inputs) for q in questions], **decode)
        return [self._answer(q, inputs, on_text, decode) for q in questions]

    @property
    def can_batch(self) -> bool:
        """Whether :meth:`answer_batch` runs with this pipeline's engine settings."""
        c = self.config
        return not c.fast and c.schedule == "sequential" and c.gamma_policy == "fixed"

    def answer_batch(self, items: Sequence[tuple[str, Any]], **decode: Any) -> list[Result]:
        """Answer ``(question, inputs)`` pairs (inputs from :meth:`load_clip`; clips may
        differ) together: one target pass per round verifies every row's drafts
        (``decoding.batch``; in float32 the same answers as one by one).  Needs the default
        engine, a fixed γ and the sequential schedule (:attr:`can_batch`)."""
        from evspec.decoding.batch import generate_batch
        from evspec.decoding.drafters import make_drafter
        from evspec.loading import make_request

        if not self.can_batch:
            raise ValueError("batched answers run on the default engine (no fast), with a fixed "
                             "γ and the sequential schedule; answer one by one instead")
        if not items or any(not isinstance(q, str) or not q.strip() for q, _ in items):
            raise ValueError("answer_batch needs (question, inputs) pairs with non-empty questions")
        cfg, stop_at_eos = self._decoding(decode)
        requests = [make_request(q, inputs) for q, inputs in items]

        def drafter_for(i: int, _request):  # each row drafts with its own state
            if self.drafter is None:
                return None
            return self.drafter if i == 0 else make_drafter(
                self.config.drafter, target=self.target, draft_model=self.draft_model,
                **self._drafter_options)

        with self._lock:
            return generate_batch(self.target, requests, drafter_for, gamma=cfg.gamma,
                                  max_new_tokens=cfg.max_new_tokens, temperature=cfg.temperature,
                                  top_p=cfg.top_p, seeds=cfg.seed, stop_at_eos=stop_at_eos)

    def stream(self, *, question: str, video: ClipInput, events: ClipInput = None,
               **decode: Any) -> TokenStream:
        """Answer one question, yielding the text piece by piece as rounds are accepted;
        the finished :class:`Result` is ``stream.result`` once the iterator is exhausted."""
        inputs = self.load_clip(video, events)  # bad inputs raise here, not in the thread
        return TokenStream(lambda cb: self._answer(question, inputs, cb, decode))

    def warmup(self) -> Result:
        """Answer one short question on random inputs, so compilation, graph capture and
        the drafter's first-use costs are paid before the first real question."""
        dm = self.draft_model
        inputs = self.load_clip("random", "random" if dm is not None else None)
        return self._answer("warm up", inputs, None, {"max_new_tokens": 4})

    def _answer(self, question: str, inputs, on_text: TextCallback | None,
                decode: dict[str, Any]) -> Result:
        from evspec.loading import make_request

        if not isinstance(question, str) or not question.strip():
            raise ValueError("question must be a non-empty string")
        known = {"gamma", "max_new_tokens", "temperature", "top_p", "seed", "stop_at_eos"}
        unknown = set(decode) - known
        if unknown:
            raise TypeError(f"unknown decoding option(s) {', '.join(sorted(unknown))}; "
                            f"known: {', '.join(sorted(known))}")
        cfg, stop_at_eos = self._decoding(decode)
        request = make_request(question, inputs)
        with self._lock:
            emit = TextEmitter(self.target, on_text) if on_text is not None else None
            result = self._generate(request, cfg, stop_at_eos, emit)
            if emit is not None:
                emit.finish(result.text)
        return result

    def _decoding(self, decode: dict[str, Any]) -> tuple[PipelineConfig, bool]:
        """``(config, stop_at_eos)`` for one call's decoding overrides; the caller's dict is
        left as it is (it serves every question of a list)."""
        decode = dict(decode)
        stop_at_eos = bool(decode.pop("stop_at_eos", True))
        return replace(self.config, **decode), stop_at_eos  # validates gamma, max_new_tokens

    def _generate(self, request, cfg: PipelineConfig, stop_at_eos: bool, emit) -> Result:
        kwargs: dict[str, Any] = dict(
            gamma=cfg.gamma, max_new_tokens=cfg.max_new_tokens, temperature=cfg.temperature,
            top_p=cfg.top_p, seed=cfg.seed, stop_at_eos=stop_at_eos,
            on_token=None if emit is None else emit.tokens,
        )
        if cfg.schedule == "pipelined":
            from evspec.decoding.pipeline import generate_pipelined as generate
        else:
            from evspec.decoding.engine import generate
        if cfg.gamma_policy == "dynamic" and self.drafter is not None:
            from evspec.decoding.gamma import DynamicGamma

            kwargs["gamma_policy"] = DynamicGamma(c=0.3, max_gamma=cfg.gamma, min_gamma=0,
                                                  measure_c=True)
        return generate(self.target, request, self.drafter, **kwargs)

    def __repr__(self) -> str:
        c = self.config
        return (f"Pipeline(target={c.target!r}, draft_model={c.draft_model!r}, "
                f"drafter={c.drafter!r}, gamma={c.gamma})")
