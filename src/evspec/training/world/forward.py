"""Batched forward passes of the two world architectures for training, the loss, and a
batched greedy decoder for validation.

The forward builds the decoder's input embeddings the same way the inference wrappers do
(``VideoLlavaTarget.embed_prompt`` / ``EventGPTModel.embed_prompt``), but for a right-padded
batch and with gradients:

* target: ``get_video_features`` of the HF model ``[B * T, P, H]`` scattered, in order, into
  the video positions of the text embeddings ``[B, L, H]``;
* drafter: CLIP (final layer incl. CLS) -> projector -> adaptor (once) per image, then
  the spatio-temporal pooling per clip ``[B, n + P, H]``, spliced at each sequence's
  placeholder ``[B, L - 1 + n + P, H]``.

Right padding keeps every real token at positions ``0 .. len - 1``, so positions and
causal attention equal the single-sequence inference pass.  Padding always comes after a
sequence's real tokens, so under causal attention no real position can see it: the
decoder therefore runs without the padding mask by default (``use_mask=False``), which
lets SDPA take its causal flash kernel; ``use_mask=True`` passes it (same logits at every
real position).  Tests check logits parity with the wrappers in both modes.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from evspec.models.eventgpt import EventGPT, EventGPTModel
from evspec.models.target import VideoLlavaTarget
from evspec.training.world.aux_heads import AuxHeads, LabelTensors
from evspec.training.world.batching import IGNORE, Batch, PixelNormalizer


@dataclass
class Embedded:
    """Decoder inputs: ``embeds`` ``[B, L', H]``, ``mask`` ``[B, L']`` (1 = real token);
    ``patches`` ``[B, K, P - 1, H]``: the per-image vision features spliced in (CLS
    dropped), for the auxiliary heads."""

    embeds: torch.Tensor
    mask: torch.Tensor
    patches: torch.Tensor | None = None


def encode_events_images(model: EventGPTModel, pixels: torch.Tensor) -> torch.Tensor:
    """``[B, n, 3, S, S]`` -> per-image event features ``[B, n, P, H]`` (tower, projector,
    adaptor once), before the pooling."""
    b, n = pixels.shape[:2]
    flat = pixels.reshape(b * n, *pixels.shape[2:])  # [B * n, 3, S, S]
    feats = model.model.visual_tower(flat)  # [B * n, P, Dv]
    feats = model.model.visual_projector(feats)  # [B * n, P, H]
    if model.model.feature_adaptor is not None:
        feats = model.model.feature_adaptor(feats)  # once
    return feats.reshape(b, n, feats.shape[1], feats.shape[2])  # [B, n, P, H]


def pool_events(feats: torch.Tensor) -> torch.Tensor:
    """EventGPT's spatio-temporal pooling: ``[B, n, P, H]`` -> ``[B, n + P, H]``."""
    temporal = feats.mean(dim=2)  # [B, n, H]
    spatial = feats.mean(dim=1)  # [B, P, H]
    return torch.cat([temporal, spatial], dim=1)  # [B, n + P, H]


def encode_events_batched(model: EventGPTModel, pixels: torch.Tensor) -> torch.Tensor:
    """``[B, n, 3, S, S]`` -> event embeddings ``[B, n + P, H]`` (as ``encode_events`` per clip)."""
    return pool_events(encode_events_images(model, pixels))


class WorldForward:
    """The training-time view of one world model: embeddings, decoder, LM head.

    ``wrapper``: a :class:`VideoLlavaTarget` or :class:`EventGPT`; ``pixels``: the split's
    pre-decoded uint8 array as a tensor ``[N, K, S, S, 3]`` (on the model's device).
    """

    def __init__(
        self,
        wrapper: VideoLlavaTarget | EventGPT,
        *,
        use_mask: bool = False,
        aux: AuxHeads | None = None,
        aux_weight: float = 1.0,
    ) -> None:
        self.wrapper = wrapper
        self.use_mask = use_mask
        self.aux, self.aux_weight = aux, aux_weight
        #: the last training loss's parts (``lm`` and the auxiliary heads'), as tensors
        self.last_parts: dict[str, torch.Tensor] = {}
        self.is_target = isinstance(wrapper, VideoLlavaTarget)
        if not self.is_target and not isinstance(wrapper, EventGPT):
            raise TypeError(f"WorldForward takes a VideoLlavaTarget or EventGPT, got {type(wrapper)}")
        self.module = wrapper.model  # the nn.Module to train
        proc = wrapper.image_processor
        self.normalize = PixelNormalizer(proc.image_mean, proc.image_std, wrapper.device)
        if self.is_target:
            self.expand = 0
            self.pad_id = int(wrapper.pad_token_id)
        else:
            self.expand = wrapper.n_event_images + wrapper.config.tokens_per_image - 1
            self.pad_id = int(wrapper.eos_token_id)
        self.lm_head = wrapper.lm_head
        self.eos_token_id = int(wrapper.eos_token_id)

    @property
    def decoder(self) -> torch.nn.Module:
        return self.wrapper.decoder

    def embed_tokens(self, ids: torch.Tensor) -> torch.Tensor:
        """``[...]`` ids -> ``[..., H]`` text embeddings."""
        if self.is_target:
            return self.module.get_input_embeddings()(ids)
        return self.module.model.embed_tokens(ids)

    def embed(self, batch: Batch, pixels_u8: torch.Tensor) -> Embedded:
        """Prompt (+ answer) embeddings of ``batch``; ``pixels_u8`` = the split's pixel
        tensor ``[N, K, S, S, 3]`` uint8."""
        device = self.wrapper.device
        images = self.normalize(pixels_u8[batch.clips.to(pixels_u8.device)].to(device))
        ids, mask = batch.input_ids, batch.attention_mask  # [B, L]
        if self.is_target:
            embeds, feats = self._embed_target(ids, images)
            b = ids.shape[0]
            patches = feats.reshape(b, self.wrapper.num_frames, feats.shape[1], feats.shape[2])
            return Embedded(embeds, mask, patches[:, :, 1:])
        return self._embed_drafter(ids, mask, images, batch.placeholders.tolist())

    def _embed_target(self, ids: torch.Tensor, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Embeddings ``[B, L, H]`` and the video features spliced in ``[B * T, P, H]``."""
        base = self.module.model
        out = base.get_video_features(
            pixel_values_videos=images.to(self.wrapper.dtype),  # [B, T, 3, S, S]
            vision_feature_layer=self.module.config.vision_feature_layer,
            return_dict=True,
        )
        feats = out if isinstance(out, torch.Tensor) else out.pooler_output  # [B * T, P, H]
        expected = (ids.shape[0] * self.wrapper.num_frames, self.wrapper.tokens_per_frame)
        if tuple(feats.shape[:2]) != expected:  # each prompt holds T * P video ids (build_prompt_ids)
            raise RuntimeError(f"the video tower gave {tuple(feats.shape[:2])} features, expected {expected}")
        embeds = self.embed_tokens(ids)  # [B, L, H]
        video = (ids == self.wrapper.video_token_id).unsqueeze(-1)  # [B, L, 1]
        return embeds.masked_scatter(video, feats.to(embeds.dtype)), feats  # [B, L, H], in order

    def _embed_drafter(
        self, ids: torch.Tensor, mask: torch.Tensor, images: torch.Tensor, pos: list[int]
    ) -> Embedded:
        """``pos``: the placeholder index of each prompt (from the collate, on the CPU)."""
        if min(pos) < 0:
            raise ValueError("every drafter prompt must hold exactly one event placeholder")
        per_image = encode_events_images(self.module, images.to(self.wrapper.dtype))  # [B, n, P, H]
        events = pool_events(per_image)  # [B, E, H]
        patches = per_image[:, :, 1:]  # CLS dropped
        text = self.embed_tokens(ids.clamp(min=0))  # [B, L, H] (placeholder row unused)
        e = events.shape[1]
        ones = torch.ones(mask.shape[0], e, dtype=mask.dtype, device=mask.device)
        if len(set(pos)) == 1:  # the usual case: one shared system prompt
            p = pos[0]
            embeds = torch.cat([text[:, :p], events.to(text.dtype), text[:, p + 1 :]], dim=1)
            full = torch.cat([mask[:, :p], ones, mask[:, p + 1 :]], dim=1)
            return Embedded(embeds, full, patches)  # [B, L - 1 + E, H]
        rows, masks = [], []
        for i, p in enumerate(pos):
            rows.append(torch.cat([text[i, :p], events[i].to(text.dtype), text[i, p + 1 :]]))
            masks.append(torch.cat([mask[i, :p], ones[i], mask[i, p + 1 :]]))
        return Embedded(torch.stack(rows), torch.stack(masks), patches)

    def hidden(self, emb: Embedded) -> torch.Tensor:
        """Last hidden states ``[B, L', H]``."""
        mask = emb.mask if self.use_mask else None  # right padding: causal attention suffices
        out = self.decoder(inputs_embeds=emb.embeds, attention_mask=mask, use_cache=False)
        return out.last_hidden_state

    def loss(
        self, batch: Batch, pixels_u8: torch.Tensor, labels: LabelTensors | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Mean cross-entropy over the answer tokens (EOS included) and their count (a
        tensor, so that training never waits for the device).  With auxiliary heads and
        ``labels`` (the split's patch labels, ``[N, K, P]`` tensors indexed by clip row),
        ``aux_weight`` times their loss is added; :attr:`last_parts` holds the parts."""
        if batch.labels is None:
            raise ValueError("loss needs a batch collated with answers")
        emb = self.embed(batch, pixels_u8)
        hidden = self.hidden(emb)  # [B, L', H]
        targets = batch.labels  # [B, L']
        if targets.shape != hidden.shape[:2]:
            raise RuntimeError(f"labels {tuple(targets.shape)} vs hidden {tuple(hidden.shape[:2])}")
        # all positions through the head (V is small): no boolean gather, so no device sync
        logits = self.lm_head(hidden).float()  # [B, L', V]
        loss = F.cross_entropy(logits.flatten(0, 1), targets.flatten(), ignore_index=IGNORE)
        self.last_parts = {"lm": loss.detach()}
        if self.aux is not None and labels is not None:
            rows = batch.clips.to(labels["shape"].device)
            picked = {k: v[rows].to(hidden.device, non_blocking=True) for k, v in labels.items()}
            assert emb.patches is not None
            video = self._video_hidden(batch, hidden, emb.patches.shape) if self.is_target else None
            aux, parts = self.aux.loss(emb.patches, picked, video)
            loss = loss + self.aux_weight * aux
            self.last_parts.update({k: v.detach() for k, v in parts.items()})
        return loss, (targets != IGNORE).sum()

    def _video_hidden(self, batch: Batch, hidden: torch.Tensor, shape: torch.Size) -> torch.Tensor:
        """The target decoder's hidden states at the video patches ``[B, K, P - 1, H]``
        (CLS positions dropped); every prompt holds its video block at the same index."""
        vid = int(self.wrapper.video_token_id)
        start = batch.examples[0].prompt.index(vid)
        b, k, p, h = shape
        span = k * (p + 1)
        for ex in batch.examples:
            if ex.prompt[start] != vid or ex.prompt[start + span - 1] != vid:
                raise ValueError("the auxiliary heads need every prompt's video block at one index")
        block = hidden[:, start : start + span].reshape(b, k, p + 1, hidden.shape[-1])
        return block[:, :, 1:]

    @torch.no_grad()
    def greedy(self, batch: Batch, pixels_u8: torch.Tensor, max_new_tokens: int) -> list[list[int]]:
        """Greedy answers of a prompts-only batch (EOS included when produced), decoding all
        sequences together without a cache (each step re-runs the padded batch)."""
        emb = self.embed(batch, pixels_u8)
        b, width, h = emb.embeds.shape
        lengths = batch.prompt_lengths.to(emb.embeds.device).clone()  # [B]
        embeds = torch.cat([emb.embeds, emb.embeds.new_zeros(b, max_new_tokens, h)], dim=1)
        mask = torch.cat([emb.mask, emb.mask.new_zeros(b, max_new_tokens)], dim=1)
        rows = torch.arange(b, device=embeds.device)
        done = torch.zeros(b, dtype=torch.bool, device=embeds.device)
        out: list[list[int]] = [[] for _ in range(b)]
        for _ in range(max_new_tokens):
            span = int(lengths.max())
            hidden = self.hidden(Embedded(embeds[:, :span], mask[:, :span]))  # [B, span, H]
            last = hidden[rows, lengths - 1]  # [B, H]
            nxt = self.lm_head(last).float().argmax(dim=-1)  # [B]
            for i in (~done).nonzero().flatten().tolist():
                out[i].append(int(nxt[i]))
            done |= nxt == self.eos_token_id
            if bool(done.all()):
                break
            live = ~done
            embeds[rows[live], lengths[live]] = self.embed_tokens(nxt[live]).to(embeds.dtype)
            mask[rows[live], lengths[live]] = 1
            lengths = lengths + live.long()
        return out
