"""Bad input gets a clear error naming the problem, before any work is done."""

from __future__ import annotations

import pytest
import torch

from engine_doubles import TinyTextLM
from evspec.decoding.drafters import DrafterError, make_drafter
from evspec.decoding.engine import generate
from evspec.models.request import Request
from evspec.models.tokenizer import TARGET_EXTRA, byte_tokenizer, shared_vocab_size


def _fake_tokenizer(vocab: dict[str, int]):
    from tokenizers import Tokenizer, models
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    return PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="<unk>", bos_token="<s>", eos_token="</s>")


def test_vocabularies_that_disagree_are_refused_by_make_drafter():
    target, draft = TinyTextLM(seed=0), TinyTextLM(seed=1)
    target.tokenizer = byte_tokenizer(TARGET_EXTRA)
    # same specials, a different base vocabulary from id 3 on
    draft.tokenizer = _fake_tokenizer({"<unk>": 0, "<s>": 1, "</s>": 2, "zebra": 3, "apple": 4})
    with pytest.raises(ValueError, match="at id 3"):
        shared_vocab_size(draft.tokenizer, target.tokenizer)
    with pytest.raises(ValueError, match="disagree"):
        make_drafter("eventgpt", target=target, draft_model=draft)
    # specials in other roles: refused as well
    draft.tokenizer = _fake_tokenizer({"</s>": 0, "<s>": 1, "<unk>": 2})
    with pytest.raises(ValueError, match="disagree"):
        make_drafter("eventgpt", target=target, draft_model=draft)


def test_matching_vocabularies_are_accepted():
    target, draft = TinyTextLM(seed=0), TinyTextLM(seed=1)
    target.tokenizer, draft.tokenizer = byte_tokenizer(TARGET_EXTRA), byte_tokenizer()
    drafter = make_drafter("eventgpt", target=target, draft_model=draft)
    assert drafter is not None and drafter._shared == 24  # min(shared 259, vocab 24)


def test_unknown_drafter_and_missing_draft_model():
    target = TinyTextLM(seed=0)
    with pytest.raises(DrafterError, match="unknown drafter"):
        make_drafter("telepathy", target=target)
    with pytest.raises(DrafterError, match="needs a draft model"):
        make_drafter("eventgpt", target=target)


def test_prompt_longer_than_context_is_refused():
    target = TinyTextLM(seed=0, max_context=16)
    with pytest.raises(ValueError, match="does not fit"):
        generate(target, Request(question="x" * 40), None)


def test_empty_question_is_refused():
    with pytest.raises(ValueError, match="non-empty"):
        Request(question="  ")
    with pytest.raises(ValueError, match="uint8"):
        Request(question="q", video=torch.zeros(8, 4, 4, 3).numpy())
