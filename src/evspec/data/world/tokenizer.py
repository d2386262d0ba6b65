"""The world tokenizer pair: a word-level vocabulary of the world's text, LLaMA roles.

The vocabulary is built (not trained by a stochastic trainer) from every sentence the
world can produce (:func:`~evspec.data.world.questions.world_texts`) plus the two prompt
templates, so it is a pure function of the code: deterministic, and the same whatever
clips were generated.

* ids ``0, 1, 2`` are ``<unk>``, ``<s>``, ``</s>`` (LLaMA's roles); then the shared
  vocabulary: every word piece of the corpus (a word with its leading space written as
  ``▁``, or a punctuation mark), most frequent first; then single printable ASCII
  characters as a fallback, so any ASCII text still round-trips (letter by letter).
* drafter (EventGPT side) = the shared vocabulary; target (Video-LLaVA side) = the shared
  vocabulary + ``<image>``, ``<video>``, ``<pad>`` appended, mirroring the real pair
  (``evspec.models.tokenizer`` does the same for the byte-level tiny presets).  Drafted
  ids can be passed to the target unchanged.
* The model is a Unigram model whose word pieces score far above single characters, so
  known words are always one token; the Metaspace pre-tokenizer / decoder keep spaces, so
  ``decode(encode(text)) == text`` exactly for ASCII text.  Like ``byte_tokenizer`` it
  adds no BOS by itself: the prompt builder adds ``<s>`` once.

``tokenizers``/``transformers`` (which imports torch) are imported lazily, inside functions.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING

from evspec.data.world.questions import world_texts
from evspec.data.world.tables import (
    EVENTGPT_PROMPT,
    PROMPT_PLACEHOLDERS,
    QUESTION_PHRASINGS,
    TARGET_PROMPT,
)

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerFast

BASE_SPECIALS: tuple[str, ...] = ("<unk>", "<s>", "</s>")
TARGET_EXTRA: tuple[str, ...] = ("<image>", "<video>", "<pad>")
SPACE = "\u2581"  # "▁", SentencePiece's visible space
DRAFTER_DIR, TARGET_DIR = "drafter", "target"

_PIECE = re.compile(f"{SPACE}?[A-Za-z]+|{SPACE}?[0-9]+|{SPACE}?[^A-Za-z0-9{SPACE}\\s]|{SPACE}|\\s")
_FALLBACK = [chr(c) for c in range(33, 127)] + [SPACE, "\n", "\t"]


def word_pieces(text: str) -> list[str]:
    """How the world tokenizer splits ``text`` when every word is known: words keep their
    leading space as ``▁``, punctuation and newlines stand alone."""
    return _PIECE.findall(text.replace(" ", SPACE))


def world_corpus(max_objects: int = 5) -> list[str]:
    """Every world sentence, plus each question inside both prompt templates (the model
    placeholders ``<video>``, ``<event>``, ... removed: the models splice or add those)."""
    texts = list(world_texts(max_objects))
    # Answers follow "ASSISTANT:" after a space, so words also occur with a leading "▁".
    texts += [" " + t for t in texts]
    for template in (TARGET_PROMPT, EVENTGPT_PROMPT):
        for phrasings in QUESTION_PHRASINGS.values():
            for q in phrasings:
                text = template.format(question=q)
                for ph in PROMPT_PLACEHOLDERS:
                    text = text.replace(ph, "")
                texts.append(text)
    return texts


def build_vocab(corpus: Iterable[str]) -> list[tuple[str, float]]:
    """``(piece, log-probability score)`` in id order: specials, corpus pieces by descending
    frequency (ties alphabetical), then fallback characters not already present."""
    counts = Counter(p for text in corpus for p in word_pieces(text))
    if not counts:
        raise ValueError("build_vocab: the corpus is empty")
    total = sum(counts.values())
    words = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))
    vocab = [(s, 0.0) for s in BASE_SPECIALS]
    vocab += [(w, math.log(c / total)) for w, c in words]
    floor = min(score for _, score in vocab) - 20.0  # any word beats spelling it out
    known = {w for w, _ in vocab}
    vocab += [(ch, floor) for ch in _FALLBACK if ch not in known]
    return vocab


def _fast_tokenizer(
    vocab: list[tuple[str, float]], extra: tuple[str, ...]
) -> PreTrainedTokenizerFast:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.Unigram(vocab, unk_id=0, byte_fallback=False))
    # prepend_scheme="never": no space is invented at the start, so decoding is exact.
    tok.pre_tokenizer = pre_tokenizers.Metaspace(SPACE, prepend_scheme="never", split=True)
    tok.decoder = decoders.Metaspace(SPACE, prepend_scheme="never", split=True)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        unk_token="<unk>",
        bos_token="<s>",
        eos_token="</s>",
        clean_up_tokenization_spaces=False,
    )
    if extra:
        fast.add_special_tokens({"additional_special_tokens": list(extra)})
    if "<pad>" in extra:
        fast.pad_token = "<pad>"
    return fast


def build_world_tokenizers(
    corpus: Iterable[str] | None = None,
) -> tuple[PreTrainedTokenizerFast, PreTrainedTokenizerFast]:
    """``(drafter, target)`` tokenizers over ``corpus`` (default: :func:`world_corpus`)."""
    vocab = build_vocab(world_corpus() if corpus is None else corpus)
    return _fast_tokenizer(vocab, ()), _fast_tokenizer(vocab, TARGET_EXTRA)


def save_world_tokenizers(
    folder: str | Path,
    tokenizers: tuple[PreTrainedTokenizerFast, PreTrainedTokenizerFast] | None = None,
) -> Path:
    """Write ``folder/drafter`` and ``folder/target`` (``save_pretrained``); builds the
    default pair when ``tokenizers`` is None.  Returns ``folder``."""
    folder = Path(folder)
    drafter, target = build_world_tokenizers() if tokenizers is None else tokenizers
    drafter.save_pretrained(str(folder / DRAFTER_DIR))
    target.save_pretrained(str(folder / TARGET_DIR))
    return folder


def load_world_tokenizers(
    folder: str | Path,
) -> tuple[PreTrainedTokenizerFast, PreTrainedTokenizerFast]:
    """``(drafter, target)`` saved by :func:`save_world_tokenizers`."""
    from transformers import PreTrainedTokenizerFast

    folder = Path(folder)
    out = []
    for name in (DRAFTER_DIR, TARGET_DIR):
        path = folder / name
        if not (path / "tokenizer.json").is_file():
            raise FileNotFoundError(
                f"{path}: no tokenizer.json; write the pair with save_world_tokenizers(folder) "
                "or `evspec world generate`"
            )
        out.append(PreTrainedTokenizerFast.from_pretrained(str(path)))
    return out[0], out[1]
