"""A random LLaMA behind :class:`CausalLMWrapper` for the numerics tests (no sharpening:
near-ties in the greedy choice are common, as the contracts must survive them)."""

from __future__ import annotations

import torch
from transformers import LlamaConfig, LlamaForCausalLM

from evspec.models.causal_lm import CausalLMWrapper
from evspec.models.request import Request
from evspec.models.state import TargetState

EOS = 2


class CharLM(CausalLMWrapper):
    """A random LLaMA (seeded by ``seed``) in ``dtype`` on ``device`` that reads the question
    one id per character: BOS 1, then ``3 + ord(c) % chars``."""

    def __init__(
        self,
        seed: int,
        dtype: torch.dtype,
        *,
        vocab: int,
        hidden: int,
        intermediate: int,
        layers: int,
        heads: int,
        kv_heads: int,
        context: int,
        chars: int,
        device: torch.device | str = "cpu",
    ):
        torch.manual_seed(seed)
        cfg = LlamaConfig(
            vocab_size=vocab,
            hidden_size=hidden,
            intermediate_size=intermediate,
            num_hidden_layers=layers,
            num_attention_heads=heads,
            num_key_value_heads=kv_heads,
            max_position_embeddings=context,
            bos_token_id=1,
            eos_token_id=EOS,
            tie_word_embeddings=False,
        )
        self.model = LlamaForCausalLM(cfg).eval().to(dtype).to(device)
        self.decoder, self.lm_head = self.model.model, self.model.lm_head
        self.tokenizer = None
        self.eos_token_id, self.max_context, self.vocab_size = EOS, context, vocab
        self.chars = chars

    def prefill(self, request: Request, *, return_hidden: bool = False) -> TargetState:
        ids = [1] + [3 + ord(c) % self.chars for c in request.question]
        ids = torch.tensor(ids, device=self.device)
        with torch.inference_mode():
            emb = self.decoder.embed_tokens(ids)
        return self._prefill_embeds(emb, ids, return_hidden=return_hidden, timings={})

    def decode_text(self, ids: list[int]) -> str:
        return " ".join(map(str, ids))
