"""Tokenizers for the small presets, built offline from code.

The real pair shares the LLaMA SentencePiece vocabulary: ids ``0..31999`` are identical,
``<unk>`` = 0, ``<s>`` = 1, ``</s>`` = 2, and Video-LLaVA appends ``<image>``, ``<video>``,
``<pad>`` (its logits are padded to 32064).  The tiny presets keep those roles with a
byte-level vocabulary: 3 specials + 256 bytes = 259 shared ids; the target appends its three
tokens after them.  Drafted ids can therefore be passed to the target unchanged.
"""

from __future__ import annotations

from functools import lru_cache

from tokenizers import Tokenizer, decoders, models, pre_tokenizers
from transformers import PreTrainedTokenizerFast

BASE_SPECIALS = ("<unk>", "<s>", "</s>")
TARGET_EXTRA = ("<image>", "<video>", "<pad>")


def _byte_vocab() -> dict[str, int]:
    alphabet = pre_tokenizers.ByteLevel.alphabet()  # 256 printable stand-ins for bytes
    vocab = {tok: i for i, tok in enumerate(BASE_SPECIALS)}
    for ch in sorted(alphabet):
        vocab[ch] = len(vocab)
    return vocab


@lru_cache(maxsize=4)
def byte_tokenizer(extra_tokens: tuple[str, ...] = ()) -> PreTrainedTokenizerFast:
    """A byte-level tokenizer with LLaMA's special-token roles (``<s>`` = 1, ``</s>`` = 2).

    ``extra_tokens`` are appended as special tokens (e.g. :data:`TARGET_EXTRA`).
    """
    tok = Tokenizer(models.BPE(vocab=_byte_vocab(), merges=[], unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    tok.decoder = decoders.ByteLevel()
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        unk_token="<unk>",
        bos_token="<s>",
        eos_token="</s>",
    )
    if extra_tokens:
        fast.add_special_tokens({"additional_special_tokens": list(extra_tokens)})
    if "<pad>" in extra_tokens:
        fast.pad_token = "<pad>"
    return fast


def _byte_pieces() -> list[str]:
    """The byte-level pre-tokenizer's stand-in character for each byte 0..255, in byte
    order (printable Latin-1 maps to itself, every other byte to code points from 256)."""
    printable = set(range(ord("!"), ord("~") + 1))
    printable |= set(range(ord("¡"), ord("¬") + 1)) | set(range(ord("®"), ord("ÿ") + 1))
    pieces, shifted = [], 0
    for b in range(256):
        if b in printable:
            pieces.append(chr(b))
        else:
            pieces.append(chr(256 + shifted))
            shifted += 1
    return pieces


@lru_cache(maxsize=4)
def llama_standin_tokenizer(extra_tokens: tuple[str, ...] = ()) -> PreTrainedTokenizerFast:
    """A 32000-entry stand-in for the LLaMA/Vicuna tokenizer of the real 7B pair, offline.

    ``<unk> <s> </s>`` = 0, 1, 2; text is encoded byte by byte at LLaMA's byte-fallback ids
    (byte b -> id 3 + b); ids 259..31999 are placeholders ``<unused_i>``; ``extra_tokens``
    follow from 32000 (Video-LLaVA: ``<image>`` 32000, ``<video>`` 32001, ``<pad>`` 32002).
    Prompts have the right structure and length, but with random weights the generated text
    means nothing: use real checkpoint folders for text.
    """
    vocab = {tok: i for i, tok in enumerate(BASE_SPECIALS)}
    for b, piece in enumerate(_byte_pieces()):
        vocab[piece] = len(BASE_SPECIALS) + b
    for i in range(len(vocab), 32000):
        vocab[f"<unused_{i}>"] = i
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[], unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    tok.decoder = decoders.ByteLevel()
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, unk_token="<unk>", bos_token="<s>", eos_token="</s>"
    )
    if extra_tokens:
        fast.add_special_tokens({"additional_special_tokens": list(extra_tokens)})
    if "<pad>" in extra_tokens:
        fast.pad_token = "<pad>"
    return fast


def shared_vocab_size(a: PreTrainedTokenizerFast, b: PreTrainedTokenizerFast) -> int:
    """Length of the common id prefix on which two tokenizers agree token for token.

    Raises ``ValueError`` when the specials' roles differ or the prefix does not cover the
    smaller base vocabulary (added tokens such as ``<video>`` or ``<ev_start>`` may differ):
    drafts would then be meaningless.
    """
    va, vb = a.get_vocab(), b.get_vocab()
    ia = {i: t for t, i in va.items()}
    ib = {i: t for t, i in vb.items()}
    n = 0
    while n in ia and n in ib and ia[n] == ib[n]:
        n += 1
    for role in ("bos_token_id", "eos_token_id"):
        if getattr(a, role) != getattr(b, role):
            raise ValueError(
                f"drafter and target tokenizers disagree on {role}: "
                f"{getattr(a, role)} vs {getattr(b, role)}"
            )
    base = min(a.vocab_size, b.vocab_size)  # vocab_size excludes added tokens
    if n < base:
        raise ValueError(
            f"drafter and target vocabularies disagree at id {n} ({ia.get(n)!r} vs "
            f"{ib.get(n)!r}); they must share one base vocabulary of {base} ids"
        )
    return n
