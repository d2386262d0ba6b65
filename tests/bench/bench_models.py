"""Tiny real models (random LLaMA) for controlled-drafting and end-to-end tests on CPU."""

from __future__ import annotations

import time

import numpy as np
import torch
from transformers import LlamaConfig, LlamaForCausalLM

from evspec.models.causal_lm import CausalLMWrapper
from evspec.models.request import Request
from evspec.models.state import TargetState

EOS = 2


class TinyLM(CausalLMWrapper):
    """A random tiny LLaMA reading the question as ids; sharpened so greedy has no ties."""

    def __init__(self, vocab: int = 40, seed: int = 0, max_context: int = 256) -> None:
        torch.manual_seed(seed)
        cfg = LlamaConfig(
            vocab_size=vocab, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
            num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=max_context,
            bos_token_id=1, eos_token_id=EOS, pad_token_id=0,
        )
        self.model = LlamaForCausalLM(cfg).eval()
        with torch.no_grad():
            self.model.lm_head.weight.mul_(8.0)
        self.decoder, self.lm_head = self.model.model, self.model.lm_head
        self.tokenizer = None
        self.eos_token_id, self.max_context, self.vocab_size = EOS, max_context, vocab

    def prompt_ids(self, request: Request) -> torch.Tensor:
        return torch.tensor([1] + [3 + ord(c) % (self.vocab_size - 3) for c in request.question])  # [L]

    def prefill(self, request: Request, *, return_hidden: bool = False) -> TargetState:
        ids = self.prompt_ids(request)
        with torch.inference_mode():
            emb = self.decoder.embed_tokens(ids)  # [L, H]
        return self._prefill_embeds(emb, ids, return_hidden=return_hidden, timings={})

    def decode_text(self, ids: list[int]) -> str:
        return " ".join(map(str, ids))

    @torch.inference_mode()
    def hf_generate(self, request: Request, max_new_tokens: int) -> tuple[list[int], float]:
        ids = self.prompt_ids(request)[None]  # [1, L]
        t0 = time.perf_counter()
        out = self.model.generate(ids, max_new_tokens=max_new_tokens, do_sample=False,
                                  eos_token_id=EOS, pad_token_id=0)
        ms = (time.perf_counter() - t0) * 1e3
        return out[0, ids.shape[1]:].tolist(), ms


def random_request(i: int) -> Request:
    rng = np.random.default_rng(i)
    words = ["what", "moves", "left", "red", "circle", "fast"]
    return Request(" ".join(rng.choice(words, 4)) + "?", clip_id=f"c{i}", qtype="t")
