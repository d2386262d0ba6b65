"""Test doubles for the engine: tiny random LLaMA text models and fixed-distribution stubs."""

from __future__ import annotations

import torch
from transformers import LlamaConfig, LlamaForCausalLM

from evspec.models.causal_lm import CausalLMWrapper
from evspec.models.request import Request
from evspec.models.state import ScoreOutput, TargetState

EOS = 2

# tiny models are dispatch-bound: extra intra-op threads only contend (10x slower here)
torch.set_num_threads(1)


class TinyTextLM(CausalLMWrapper):
    """A random tiny LLaMA that reads the question as ids (one id per character)."""

    def __init__(self, vocab: int = 24, seed: int = 0, eos_bias: float = 0.0, max_context: int = 256):
        torch.manual_seed(seed)
        cfg = LlamaConfig(
            vocab_size=vocab, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
            num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=max_context,
            bos_token_id=1, eos_token_id=EOS,
        )
        self.model = LlamaForCausalLM(cfg).eval()
        with torch.no_grad():  # sharpen so greedy paths are not near-ties
            self.model.lm_head.weight.mul_(8.0)
            if eos_bias:  # a head with a bias that makes EOS likelier (early stops)
                head = torch.nn.Linear(cfg.hidden_size, vocab, bias=True)
                head.weight.copy_(self.model.lm_head.weight)
                head.bias.zero_()
                head.bias[EOS] = eos_bias
                self.model.lm_head = head
        self.decoder, self.lm_head = self.model.model, self.model.lm_head
        self.tokenizer = None
        self.eos_token_id, self.max_context, self.vocab_size = EOS, max_context, vocab
        self.eos_bias = eos_bias

    def prompt_ids(self, request: Request) -> torch.Tensor:
        ids = [1] + [3 + (ord(c) % (self.vocab_size - 3)) for c in request.question]
        return torch.tensor(ids, dtype=torch.long)

    def prefill(self, request: Request, *, return_hidden: bool = False) -> TargetState:
        ids = self.prompt_ids(request)
        with torch.inference_mode():
            emb = self.decoder.embed_tokens(ids)
        return self._prefill_embeds(emb, ids, return_hidden=return_hidden, timings={})

    def decode_text(self, ids: list[int]) -> str:
        return " ".join(map(str, ids))

    @torch.inference_mode()
    def full_logits(self, ids: list[int]) -> torch.Tensor:
        """Reference: logits of the last position from a cache-free full forward."""
        return self.model(torch.tensor([ids])).logits[0, -1].float()


class FixedTarget:
    """A context-free target: every position has the same logits ``log p``."""

    def __init__(self, p: torch.Tensor, eos: int = -1, max_context: int = 10_000):
        self.p = p
        self.vocab_size = p.numel()
        self.eos_token_id = eos
        self.max_context = max_context
        self.device = torch.device("cpu")
        self.tokenizer = None

    def prefill(self, request, *, return_hidden=False):
        return TargetState(cache=None, length=1, last_logits=self.p.log(), prompt_ids=torch.tensor([1]))

    def score(self, state, tokens, *, return_hidden=False):
        state.length += tokens.numel()
        return ScoreOutput(logits=self.p.log().expand(tokens.numel(), -1).clone())

    def rollback(self, state, n):
        state.length -= n

    def decode_text(self, ids):
        return ""


class FixedDrafter:
    """Samples every draft from a fixed ``q`` (or proposes one token deterministically)."""

    name = "fixed"

    def __init__(self, q: torch.Tensor | None = None, token: int | None = None):
        self.q, self.token = q, token

    def begin(self, request, target, state, first_token):
        pass

    def propose(self, k, temperature, generator):
        from evspec.decoding.protocols import Draft

        if self.token is not None:
            return Draft(tokens=torch.full((k,), self.token, dtype=torch.long), probs=None)
        toks = torch.multinomial(self.q, k, replacement=True, generator=generator)
        return Draft(tokens=toks, probs=self.q.expand(k, -1).clone())

    def accept(self, n, t):
        pass

    def end(self):
        pass
