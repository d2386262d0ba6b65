"""What training optimises for each module kind: a *task* turns a :class:`Batch` into a
loss (``adapters.objectives``) and offline statistics (top-1 agreement with the target).

Positions (see ``adapters.store``): ``j`` = the state that predicts ``x_j``.

* adapters: ``adapter(g_j)`` slot ``e`` -> ``lm_head`` -> ``x_{j+e}`` (slot 0 = the drafter's
  next token); logits restricted to the shared vocabulary (what the drafter may propose);
* heads: ``f_j`` of training-time-test step ``s`` -> ``lm_head`` -> ``x_{j+1}``, for
  ``j >= s`` (draft depth ``s + 1``); feature target ``h_{j+1}``;
* LoRA: EventGPT (with adapters) re-run on its prompt + the answer; its own logits at ``j``
  -> ``x_j``.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from evspec.modules.adapter_base import HiddenAdapter
from evspec.training.heads.batch import Batch
from evspec.modules.head import DraftHead
from evspec.training.heads.objectives import LossWeights, token_objective

Stats = dict[str, float]


def merge_stats(into: dict[str, float], stats: Stats, prefix: str = "") -> None:
    for k, v in stats.items():
        into[prefix + k] = into.get(prefix + k, 0.0) + float(v)


class Task:
    """Base: ``module`` holds the trainable parameters; ``memory`` / ``video`` say what
    :func:`~evspec.training.heads.batch.collate` must load."""

    kind: str = ""
    memory: str = "none"
    video: bool = False
    module: nn.Module

    def loss(self, batch: Batch) -> tuple[torch.Tensor, Stats]:
        raise NotImplementedError

    def trainable(self) -> list[nn.Parameter]:
        return [p for p in self.module.parameters() if p.requires_grad]

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {k: v.detach().cpu() for k, v in self.module.state_dict().items()}

    def load_state(self, state: dict[str, torch.Tensor]) -> None:
        self.module.load_state_dict(state)

    def train(self, mode: bool = True) -> None:
        self.module.train(mode)


class AdapterTask(Task):
    def __init__(self, kind: str, adapter: HiddenAdapter, lm_head: torch.Tensor, shared: int, weights: LossWeights) -> None:
        self.kind, self.module, self.weights = kind, adapter, weights
        self.lm_head, self.shared = lm_head, shared  # [V_t, H_t] frozen
        self.video = adapter.needs_context

    def loss(self, batch: Batch) -> tuple[torch.Tensor, Stats]:
        out = self.module(batch.draft_hidden, batch.video, batch.video_mask)  # [B, T, E, H_t]
        t = out.shape[1]
        total = out.sum() * 0.0
        stats: Stats = {}
        for e in range(min(self.module.slots, t)):
            valid = batch.mask[:, e:]  # [B, T - e]: x_{j+e} exists
            feats = out[:, : t - e, e][valid]  # [N, H_t]
            logits = (feats @ self.lm_head.T)[:, : self.shared]  # [N, V_s]
            loss_e, s = token_objective(
                self.weights, logits, batch.tokens[:, e:][valid], batch.topk_ids[:, e:][valid],
                batch.topk_logp[:, e:][valid], features=feats,
                target_features=batch.target_hidden[:, e:][valid], vocab_limit=self.shared,
            )
            total = total + self.weights.decay**e * loss_e
            merge_stats(stats, s, "" if e == 0 else f"slot{e}_")
        return total, stats


class HeadTask(Task):
    def __init__(
        self, kind: str, head: DraftHead, lm_head: torch.Tensor, embed: torch.Tensor,
        weights: LossWeights, depth: int,
    ) -> None:
        self.kind, self.module, self.weights, self.depth = kind, head, weights, depth
        self.lm_head, self.embed = lm_head, embed  # [V_t, H_t] each, frozen
        self.memory = head.config.memory_source

    def loss(self, batch: Batch) -> tuple[torch.Tensor, Stats]:
        emb = F.embedding(batch.tokens, self.embed)  # [B, T, H_t]
        outs = self.module.forward_train(
            batch.target_hidden, emb, memory=batch.memory, memory_mask=batch.memory_mask, depth=self.depth
        )
        t = batch.tokens.shape[1]
        total = outs[0].sum() * 0.0
        stats: Stats = {}
        for s, f in enumerate(outs):
            valid = batch.mask[:, 1:].clone()  # [B, T - 1]: x_{j+1} exists
            valid[:, : min(s, t - 1)] = False  # no round reaches depth s + 1 before j = s
            feats = f[:, :-1][valid]  # [N, H_t]
            logits = feats @ self.lm_head.T  # [N, V_t]
            loss_s, st = token_objective(
                self.weights, logits, batch.tokens[:, 1:][valid], batch.topk_ids[:, 1:][valid],
                batch.topk_logp[:, 1:][valid], features=feats,
                target_features=batch.target_hidden[:, 1:][valid],
            )
            total = total + self.weights.decay**s * loss_s
            merge_stats(stats, st, "" if s == 0 else f"depth{s + 1}_")
        return total, stats


class LoraTask(Task):
    """Distil EventGPT (LoRA on its decoder) toward the target on the collected answers."""

    def __init__(self, model: nn.Module, shared: int, weights: LossWeights) -> None:
        self.kind, self.module, self.shared, self.weights = "lora", model, shared, weights

    def _inputs(self, batch: Batch) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Padded EventGPT inputs ``[B, S, H_d]``, attention mask ``[B, S]`` and, per
        answer position ``[B, T]``, the sequence index of the state that predicts it."""
        net = self.module
        dev = net.lm_head.weight.device
        dtype = net.lm_head.weight.dtype
        seqs, where = [], torch.zeros_like(batch.tokens)
        for b, ex in enumerate(batch.examples or []):
            prompt = net.embed_prompt(ex.draft_prompt_ids.to(dev), ex.event_embeds.to(dev, dtype))  # [L_p, H_d]
            fed = net.model.embed_tokens(ex.draft_answer_ids[:-1].to(dev))  # [m - 1, H_d]
            seqs.append(torch.cat([prompt, fed], dim=0))
            m = ex.length
            where[b, :m] = torch.arange(prompt.shape[0] - 1, prompt.shape[0] - 1 + m)
        s = max(int(x.shape[0]) for x in seqs)
        embeds = torch.zeros(len(seqs), s, seqs[0].shape[1], device=dev, dtype=dtype)
        attn = torch.zeros(len(seqs), s, dtype=torch.long, device=dev)
        for b, x in enumerate(seqs):
            embeds[b, : x.shape[0]] = x
            attn[b, : x.shape[0]] = 1
        return embeds, attn, where

    def loss(self, batch: Batch) -> tuple[torch.Tensor, Stats]:
        if not batch.examples:
            raise ValueError("LoRA training needs the batch's source examples")
        embeds, attn, where = self._inputs(batch)
        hidden = self.module.model(inputs_embeds=embeds, attention_mask=attn, use_cache=False).last_hidden_state
        picked = hidden.gather(1, where[..., None].expand(-1, -1, hidden.shape[-1]))  # [B, T, H_d]
        h = picked[batch.mask]  # [N, H_d]
        logits = self.module.lm_head(h)[:, : self.shared]  # [N, V_s]
        return token_objective(
            self.weights, logits, batch.tokens[batch.mask], batch.topk_ids[batch.mask],
            batch.topk_logp[batch.mask], vocab_limit=self.shared,
        )

    def state_dict(self) -> dict[str, torch.Tensor]:
        from evspec.modules.lora import lora_state_dict

        return {k: v.cpu() for k, v in lora_state_dict(self.module).items()}

    def load_state(self, state: dict[str, torch.Tensor]) -> None:
        from evspec.modules.lora import load_lora_state

        load_lora_state(self.module, {k: v.to(self.module.lm_head.weight.device) for k, v in state.items()})


@torch.no_grad()
def evaluate_task(task: Task, batch_iter: Any) -> dict[str, float]:
    """Sum the statistics of every batch; returns means: ``loss``, ``top1`` (depth/slot 0)
    and ``top1_<prefix>`` for deeper steps/slots, plus ``n`` positions."""
    task.train(False)
    sums: dict[str, float] = defaultdict(float)
    n_batches, loss_sum = 0, 0.0
    for batch in batch_iter:
        loss, stats = task.loss(batch)
        loss_sum += float(loss)
        n_batches += 1
        merge_stats(sums, stats)
    task.train(True)
    out: dict[str, float] = {"loss": loss_sum / max(n_batches, 1), "n": sums.get("n", 0.0)}
    for key, value in sums.items():
        if key.endswith("correct"):
            prefix = key[: -len("correct")]
            n = sums.get(prefix + "n", 0.0)
            out["top1" if not prefix else f"top1_{prefix.rstrip('_')}"] = value / n if n else 0.0
    return out
