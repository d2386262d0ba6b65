"""The target: Video-LLaVA through transformers ``VideoLlavaForConditionalGeneration``.

The wrapper builds the multimodal prompt itself and leaves decoding to
:class:`~evspec.models.causal_lm.CausalLMWrapper` (``score``, ``rollback``):

1. prompt ``USER: <video>\\n{question} ASSISTANT:``, BOS once at the start; the single
   ``<video>`` id is expanded to ``num_frames * tokens_per_frame`` video ids by us;
2. frames -> ``VideoLlavaImageProcessor`` (resize shortest side, centre crop, CLIP mean/std;
   no torchvision needed) -> the HF model's own ``get_video_features`` (penultimate CLIP
   layer, CLS kept: 257 tokens per frame at 224 px) -> scattered into the text embeddings
   at the video positions;
3. one decoder pass over the embeddings fills the KV cache.

Nothing goes through ``VideoLlavaForConditionalGeneration.forward`` with pixel arguments,
so the 5.17 trap of silently ignored ``pixel_values=`` cannot bite; tests check parity with
that forward (given ``pixel_values_videos``) and that changing the frames changes the logits.

The prompt ids come from :mod:`evspec.models.target_prompt` (re-exported here:
``PROMPT_TEMPLATE``, ``VIDEO_PLACEHOLDER``), the checkpoint-folder checks from
:mod:`evspec.models.target_checkpoint`; the named shapes from
:mod:`evspec.models.presets.target`.
"""

from __future__ import annotations

from contextlib import nullcontext
from pathlib import Path

import numpy as np
import torch
from transformers import (
    AutoTokenizer,
    GenerationConfig,
    PreTrainedTokenizerBase,
    VideoLlavaForConditionalGeneration,
    VideoLlavaImageProcessor,
)

from evspec.models.causal_lm import CausalLMWrapper, timed
from evspec.models.device_preprocess import DevicePixels
from evspec.models.fast.prefix_cache import PrefixKey, media_fingerprint
from evspec.models.presets.target import TARGET_PRESETS, get_preset, preset_tokenizer
from evspec.models.request import Request
from evspec.models.state import TargetState
from evspec.models.target_checkpoint import (
    check_checkpoint_folder,
    raise_on_bad_weights,
    write_processor_config,
)
from evspec.models.target_prompt import (
    PROMPT_TEMPLATE,
    VIDEO_PLACEHOLDER,
    build_video_prompt_ids,
    with_bos_on_encode,
)

__all__ = ["PROMPT_TEMPLATE", "VIDEO_PLACEHOLDER", "VideoLlavaTarget"]


class VideoLlavaTarget(CausalLMWrapper):
    """Video-LLaVA as a speculative-decoding target (the ``Target`` protocol).

    Attributes: ``model`` (the HF model, eval mode), ``tokenizer``, ``image_processor``,
    ``config``, ``num_frames`` (frames per video, 8 for 7B), ``tokens_per_frame``
    (257 for 7B), ``video_token_id``; from the base class: ``decoder`` (the LLaMA base
    model), ``lm_head``, ``eos_token_id``, ``max_context``, ``vocab_size`` (logits width).
    """

    def __init__(
        self,
        model: VideoLlavaForConditionalGeneration,
        tokenizer: PreTrainedTokenizerBase,
        image_processor: VideoLlavaImageProcessor,
        *,
        num_frames: int | None = None,
    ) -> None:
        self.model = model.eval()
        self.config = model.config
        self.tokenizer = tokenizer
        self.image_processor = image_processor
        text_cfg, vision_cfg = self.config.text_config, self.config.vision_config

        base = model.model  # VideoLlavaModel: video_tower, multi_modal_projector, language_model
        self._base = base
        self.decoder = base.language_model  # LlamaModel (transformers 5.x layout)
        self.lm_head = model.lm_head
        self.vocab_size = int(self.lm_head.weight.shape[0])
        self.max_context = int(text_cfg.max_position_embeddings)

        # Video keeps CLS: patches + 1 per frame (5.17 get_video_features never drops it).
        self.tokens_per_frame = (vision_cfg.image_size // vision_cfg.patch_size) ** 2 + 1
        if num_frames is None:
            seq = int(getattr(self.config, "video_seq_length", 0) or 0)
            num_frames = seq // self.tokens_per_frame if seq % self.tokens_per_frame == 0 else 8
        if num_frames < 1:
            raise ValueError(f"num_frames must be >= 1, got {num_frames}")
        self.num_frames = int(num_frames)

        self.video_token_id = int(self.config.video_token_index)
        tok_video = tokenizer.convert_tokens_to_ids(VIDEO_PLACEHOLDER)
        if tok_video != self.video_token_id:
            raise ValueError(
                f"tokenizer maps {VIDEO_PLACEHOLDER!r} to {tok_video} but the model config's "
                f"video_token_index is {self.video_token_id}; tokenizer and weights do not "
                "belong together"
            )
        eos = tokenizer.eos_token_id
        if eos is None:
            eos = text_cfg.eos_token_id
        if isinstance(eos, list):
            eos = eos[0]
        self.eos_token_id = int(eos)
        self.bos_token_id = int(
            tokenizer.bos_token_id if tokenizer.bos_token_id is not None else text_cfg.bos_token_id
        )
        pad = tokenizer.pad_token_id
        self.pad_token_id = int(pad if pad is not None else self.eos_token_id)

    # -- construction ------------------------------------------------------------------
    @classmethod
    def from_pretrained(
        cls,
        path: str | Path,
        *,
        dtype: torch.dtype = torch.float32,
        device: str | torch.device = "cpu",
        num_frames: int | None = None,
    ) -> VideoLlavaTarget:
        """Load a local folder in the ``LanguageBind/Video-LLaVA-7B-hf`` layout.

        ``num_frames`` defaults to ``video_seq_length / tokens_per_frame`` of the config
        (8 for the 7B release).

        Raises ``FileNotFoundError`` naming a missing file and ``ValueError`` naming
        missing or wrongly shaped weights (transformers would otherwise initialise them
        at random with only a log line).
        """
        folder = Path(path)
        check_checkpoint_folder(folder)
        device = torch.device(device)
        kwargs = {} if device.type == "cpu" else {"device_map": {"": str(device)}}
        model, info = VideoLlavaForConditionalGeneration.from_pretrained(
            folder,
            dtype=dtype,
            output_loading_info=True,
            ignore_mismatched_sizes=True,  # we report mismatches ourselves, by name
            **kwargs,
        )
        raise_on_bad_weights(folder, info)
        tokenizer = AutoTokenizer.from_pretrained(folder)
        image_processor = VideoLlavaImageProcessor.from_pretrained(folder)
        return cls(model, tokenizer, image_processor, num_frames=num_frames)

    @classmethod
    def from_preset(
        cls,
        name: str,
        *,
        dtype: torch.dtype = torch.float32,
        device: str | torch.device = "cpu",
        seed: int = 0,
        num_frames: int | None = None,
    ) -> VideoLlavaTarget:
        """Random weights in a preset's shapes (``tiny-random``, ``7b``), seeded.

        Weights are created directly on ``device`` in ``dtype`` (7B on a GPU never exists
        in float32 on the CPU); ``device="meta"`` builds shapes only.  ``num_frames``
        overrides the preset's frame count.
        """
        preset = get_preset(name)
        if num_frames is not None:
            preset = preset.with_frames(num_frames)
        device = torch.device(device)
        rng_devices: list[int] = []
        if device.type == "cuda":
            rng_devices = [torch.cuda.current_device() if device.index is None else device.index]
        rng = (
            nullcontext() if device.type == "meta" else torch.random.fork_rng(devices=rng_devices)
        )
        with rng, torch.device(device):
            if device.type != "meta":
                torch.manual_seed(seed)
            model = VideoLlavaForConditionalGeneration._from_config(preset.to_config(), dtype=dtype)
        size = preset.vision.image_size
        image_processor = VideoLlavaImageProcessor(
            size={"shortest_edge": size}, crop_size={"height": size, "width": size}
        )
        return cls(model, preset_tokenizer(preset), image_processor, num_frames=preset.num_frames)

    @classmethod
    def load(cls, spec: str | Path, **kw) -> VideoLlavaTarget:
        """``spec`` = a preset name (``from_preset``) or a local checkpoint folder
        (``from_pretrained``; a ``seed`` keyword is ignored there: nothing is random)."""
        if str(spec) in TARGET_PRESETS:
            return cls.from_preset(str(spec), **kw)
        if Path(spec).is_dir():
            kw.pop("seed", None)
            return cls.from_pretrained(spec, **kw)
        raise ValueError(
            f"target {str(spec)!r} is neither a preset ({', '.join(sorted(TARGET_PRESETS))}) "
            "nor an existing folder; download the weights first, e.g. "
            "`huggingface-cli download LanguageBind/Video-LLaVA-7B-hf --local-dir DIR`, "
            "and pass DIR"
        )

    def save_pretrained(self, path: str | Path) -> Path:
        """Write the HF layout: ``config.json``, ``model.safetensors``, tokenizer files,
        ``preprocessor_config.json`` and ``processor_config.json`` (the processor's patch size and
        token counts, so ``VideoLlavaProcessor`` expands ``<video>`` as evspec does; loadable
        by :meth:`from_pretrained` and by HF; the
        saved tokenizer adds BOS on encode, as LLaMA's does, so transformers' processor
        and ``generate`` see the prompt evspec builds)."""
        folder = Path(path)
        folder.mkdir(parents=True, exist_ok=True)
        self.model.save_pretrained(folder)
        with_bos_on_encode(self.tokenizer, self.bos_token_id).save_pretrained(folder)
        self.image_processor.save_pretrained(folder)
        write_processor_config(folder, self.model.config)
        return folder

    # -- prompt and pixels -------------------------------------------------------------
    @property
    def video_tokens(self) -> int:
        """Video positions in the expanded prompt (2056 for 7B)."""
        return self.num_frames * self.tokens_per_frame

    def build_prompt_ids(self, question: str) -> torch.Tensor:
        """``[L]`` int64 ids of ``USER: <video>\\n{question} ASSISTANT:`` with BOS once and
        the ``<video>`` id repeated ``num_frames * tokens_per_frame`` times."""
        return build_video_prompt_ids(
            self.tokenizer,
            question,
            bos_token_id=self.bos_token_id,
            video_token_id=self.video_token_id,
            video_tokens=self.video_tokens,
        )

    #: the image processor's steps on the device (None: the HF processor on the CPU)
    device_pixels: DevicePixels | None = None

    def enable_device_preprocess(self) -> None:
        """Preprocess frames with torch on the model's device
        (:mod:`evspec.models.device_preprocess`: bitwise the HF pixels at the tower's size,
        within one uint8 level after a resize)."""
        self.device_pixels = DevicePixels.from_processor(self.image_processor)

    def preprocess_video(self, video: np.ndarray | None) -> torch.Tensor:
        """``[T, H, W, 3]`` uint8 frames -> ``[T, 3, S, S]`` pixels on the model's device
        and dtype (S = the vision tower's image size)."""
        if video is None:
            raise ValueError(
                "Video-LLaVA needs Request.video ([T, H, W, 3] uint8 frames); got None"
            )
        if video.ndim != 4 or video.shape[-1] != 3 or video.dtype != np.uint8:
            raise ValueError(
                f"Request.video must be uint8 [T, H, W, 3]; got {video.dtype} {tuple(video.shape)}"
            )
        if video.shape[0] != self.num_frames:
            raise ValueError(
                f"Request.video has {video.shape[0]} frames but this Video-LLaVA takes exactly "
                f"{self.num_frames}; sample {self.num_frames} frames uniformly over the clip"
            )
        if self.device_pixels is not None:  # the same steps on the device
            return self.device_pixels(video, self.device, self.dtype)
        out = self.image_processor.preprocess(
            list(video), return_tensors="pt", input_data_format="channels_last"
        )
        keys = [k for k in out if k.startswith("pixel_values")]
        if len(keys) != 1:
            raise RuntimeError(f"unexpected image-processor output keys {list(out)}")
        pixels = out[keys[0]]  # [T, 3, S, S] float32
        size = self.config.vision_config.image_size
        if tuple(pixels.shape[1:]) != (3, size, size):
            raise ValueError(
                f"preprocessed frames are {tuple(pixels.shape[1:])}, the vision tower expects "
                f"(3, {size}, {size}); fix preprocessor_config.json (size/crop_size)"
            )
        return pixels.to(self.device, self.dtype)

    @torch.inference_mode()
    def video_features(self, pixels: torch.Tensor) -> torch.Tensor:
        """``[T, 3, S, S]`` pixels -> ``[T * tokens_per_frame, H]`` projected video features
        through the HF model's own ``get_video_features``."""
        out = self._base.get_video_features(
            pixel_values_videos=pixels[None],  # [1, T, 3, S, S]
            vision_feature_layer=self.config.vision_feature_layer,
            return_dict=True,
        )
        feats = out if isinstance(out, torch.Tensor) else out.pooler_output  # [T, P, H]
        feats = feats.reshape(-1, feats.shape[-1])  # [T * P, H]
        if feats.shape[0] != self.video_tokens:
            raise RuntimeError(
                f"get_video_features returned {feats.shape[0]} tokens, expected "
                f"{self.num_frames} x {self.tokens_per_frame}; this transformers version selects "
                "video features differently (see MODELS.md)"
            )
        return feats

    @torch.inference_mode()
    def embed_prompt(self, prompt_ids: torch.Tensor, features: torch.Tensor) -> torch.Tensor:
        """Text embeddings ``[L, H]`` with the video positions replaced by ``features``."""
        ids = prompt_ids.to(self.device)
        embeds = self.model.get_input_embeddings()(ids)  # [L, H]
        mask = ids == self.video_token_id  # [L]
        embeds[mask] = features.to(embeds.dtype)
        return embeds

    def _check_fits(self, prompt_ids: torch.Tensor) -> None:
        if prompt_ids.numel() >= self.max_context:
            raise ValueError(
                f"prompt of {prompt_ids.numel()} tokens ({self.video_tokens} of them video) does "
                f"not fit the context of {self.max_context}; shorten the question"
            )

    # -- the Target protocol -----------------------------------------------------------
    def prefill(self, request: Request, *, return_hidden: bool = False) -> TargetState:
        """Encode the frames, build the prompt embedding, fill the KV cache.

        ``timings``: ``preprocess_ms`` (frames -> pixels on the CPU), ``vision_ms`` (video
        tower + projector + scatter), ``prefill_ms`` (the decoder pass).  With the prefix
        cache on and a ``clip_id``, see :meth:`_prefill_clip`.
        """
        prompt_ids = self.build_prompt_ids(request.question)  # [L]
        self._check_fits(prompt_ids)
        timings: dict[str, float] = {}
        if self.prefix_cache is not None and request.clip_id is not None:
            return self._prefill_clip(request, prompt_ids, return_hidden=return_hidden, timings=timings)
        with timed(self.device, timings, "preprocess_ms"):
            pixels = self.preprocess_video(request.video)  # [T, 3, S, S]
        with timed(self.device, timings, "vision_ms"):
            embeds = self.embed_prompt(prompt_ids, self.video_features(pixels))  # [L, H]
        return self._prefill_embeds(
            embeds, prompt_ids, return_hidden=return_hidden, timings=timings
        )

    def _prefill_clip(
        self,
        request: Request,
        prompt_ids: torch.Tensor,  # [L]
        *,
        return_hidden: bool,
        timings: dict[str, float],
    ) -> TargetState:
        """Prefill through the per-clip prefix cache.

        Prefix = ``<s>USER: `` + the video positions (ids up to the last video id, split
        from the very ids :meth:`build_prompt_ids` produced, so the tokenisation is the
        one the uncached path uses); suffix = ``\n{question} ASSISTANT:``.  On a hit the
        frames are neither preprocessed nor encoded and only the suffix is prefilled
        (``timings['prefix_hit']``); ``extra['video_features']`` holds the
        ``[T * tokens_per_frame, H]`` features either way.
        """
        video_at = (prompt_ids == self.video_token_id).nonzero().flatten()  # [N]
        split = int(video_at[-1]) + 1
        prefix_ids = prompt_ids[:split]
        key = PrefixKey(request.clip_id, media_fingerprint(request.video), tuple(prefix_ids.tolist()))

        def build_prefix(t: dict[str, float]) -> tuple[torch.Tensor, dict]:
            with timed(self.device, t, "preprocess_ms"):
                pixels = self.preprocess_video(request.video)  # [T, 3, S, S]
            with timed(self.device, t, "vision_ms"):
                features = self.video_features(pixels)  # [T * P, H]
                embeds = self.embed_prompt(prefix_ids, features)  # [split, H]
            return embeds, {"video_features": features}

        def suffix_embeds() -> torch.Tensor:
            return self.model.get_input_embeddings()(prompt_ids[split:].to(self.device))

        return self._prefill_prefixed(
            key, prompt_ids, split, build_prefix, suffix_embeds,
            return_hidden=return_hidden, timings=timings,
        )

    def decode_text(self, ids: list[int]) -> str:
        """Text of ``ids``, skipping specials and the padded logits ids the tokenizer lacks."""
        n = len(self.tokenizer)
        return self.tokenizer.decode([i for i in ids if 0 <= i < n], skip_special_tokens=True)

    # -- the baseline users run today ----------------------------------------------------
    def hf_generate(
        self, request: Request, max_new_tokens: int, *, cache_implementation: str | None = None,
        prompt_lookup_num_tokens: int | None = None,
    ) -> tuple[list[int], float]:
        """Plain greedy ``model.generate`` on the same expanded prompt and pixels.

        Returns the new token ids (EOS included when produced) and the elapsed
        milliseconds from request to tokens (tokenising, frame preprocessing, vision,
        prefill and decoding; CUDA-synchronised), the same span as our own path.
        ``cache_implementation`` is passed through (e.g. ``"static"``: transformers then
        compiles the forward on CUDA), so is ``prompt_lookup_num_tokens`` (assisted
        generation by prompt lookup).
        """
        if max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be >= 1, got {max_new_tokens}")
        gen_cfg = GenerationConfig(
            max_new_tokens=max_new_tokens,
            do_sample=False,
            num_beams=1,
            eos_token_id=self.eos_token_id,
            bos_token_id=self.bos_token_id,
            pad_token_id=self.pad_token_id,
            cache_implementation=cache_implementation,
            prompt_lookup_num_tokens=prompt_lookup_num_tokens,
        )
        timing: dict[str, float] = {}
        with timed(self.device, timing, "ms"), torch.inference_mode():
            prompt_ids = self.build_prompt_ids(request.question)  # [L]
            self._check_fits(prompt_ids)
            pixels = self.preprocess_video(request.video)  # [T, 3, S, S]
            input_ids = prompt_ids[None].to(self.device)  # [1, L]
            out = self.model.generate(
                input_ids=input_ids,
                attention_mask=torch.ones_like(input_ids),
                pixel_values_videos=pixels[None],  # [1, T, 3, S, S]
                generation_config=gen_cfg,
            )
        new = out[0, input_ids.shape[1] :].tolist()
        return new, timing["ms"]
