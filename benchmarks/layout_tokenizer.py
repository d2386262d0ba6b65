"""The tokenizer of ``real_layouts.py``: one LLaMA-style SentencePiece BPE vocabulary (byte
fallback, ``<unk> <s> </s>`` = 0, 1, 2, whole-word pieces for common English), written as
``tokenizer.model`` and as a transformers fast tokenizer, so prompts tokenise to realistic
lengths."""

from __future__ import annotations

import json
from pathlib import Path

SPACE = "\u2581"  # SentencePiece's whitespace mark
WORDS = """
a an the this that these those is are was were be been being am do does did have has had
what which who whom whose where when why how can could would should will may might must
you your yours we our they their them he she it its his her i me my not no yes and or but
of in on at to from by for with about into over under between behind near left right front
back top bottom side road street lane lanes car cars vehicle vehicles truck trucks bus
bicycle bike pedestrian pedestrians person people man woman building buildings tree trees
sky traffic light lights sign signs scene view camera image video event events moving move
motion stationary parked driving drive turn turning straight ahead intersection crossing
sidewalk curb wall fence pole poles line lines marking markings road's city urban night day
dark bright shadow there here some many few several one two three four five key elements
element layout type types present positioned position describe following going happening
see think elaborate provided about chat between curious human artificial intelligence
assistant gives helpful detailed polite answers questions question human's user answer
also appears appear seems likely visible shows showing show area space large small big
little long short wide narrow other another each both all any most more less very just
only than then so as if while during after before up down out off again further once
""".split()



def vocabulary(size: int) -> list[tuple[str, float, str]]:
    """``[(piece, score, kind)]`` of a LLaMA-style SentencePiece BPE vocabulary of ``size``:
    the three specials, the 256 byte pieces, single characters, whole words with every
    ``▁``-prefix on the way (so BPE can build them), then unreachable fillers."""
    pieces: list[tuple[str, float, str]] = [
        ("<unk>", 0.0, "unknown"), ("<s>", 0.0, "control"), ("</s>", 0.0, "control"),
    ]  # fmt: skip
    pieces += [(f"<0x{b:02X}>", 0.0, "byte") for b in range(256)]
    seen = {p for p, _, _ in pieces}
    normal: list[str] = []

    def add(piece: str) -> None:
        if piece not in seen:
            seen.add(piece)
            normal.append(piece)

    for ch in SPACE + "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789.,?!'\":;-()":
        add(ch)
    for word in WORDS:
        for word_form in (word, word.capitalize()):
            marked = SPACE + word_form
            for end in range(2, len(marked) + 1):  # ▁w, ▁wo, ▁wor, ...: the merge path
                add(marked[:end])
    room = size - len(pieces)
    if room < 1:
        raise ValueError(f"vocabulary size {size} leaves no room after the 259 fixed pieces")
    normal = normal[:room]
    normal += [f"{SPACE}qz{i:05d}" for i in range(room - len(normal))]  # never produced
    pieces += [(p, -float(i), "normal") for i, p in enumerate(normal)]
    return pieces


def sentencepiece_model(size: int) -> bytes:
    """The serialized SentencePiece ``ModelProto`` (``tokenizer.model``) of
    :func:`vocabulary`, with LLaMA's normaliser settings; needs only ``protobuf``."""
    from transformers.convert_slow_tokenizer import import_protobuf

    pb2 = import_protobuf()
    proto = pb2.ModelProto()
    kinds = {
        "normal": pb2.ModelProto.SentencePiece.NORMAL,
        "unknown": pb2.ModelProto.SentencePiece.UNKNOWN,
        "control": pb2.ModelProto.SentencePiece.CONTROL,
        "byte": pb2.ModelProto.SentencePiece.BYTE,
    }
    for piece, score, kind in vocabulary(size):
        entry = proto.pieces.add()
        entry.piece, entry.score, entry.type = piece, score, kinds[kind]
    spec = proto.trainer_spec
    spec.model_type = pb2.TrainerSpec.BPE
    spec.vocab_size = size
    spec.byte_fallback = True
    spec.unk_id, spec.bos_id, spec.eos_id, spec.pad_id = 0, 1, 2, -1
    norm = proto.normalizer_spec
    norm.name = "identity"
    norm.add_dummy_prefix = True
    norm.remove_extra_whitespaces = False
    norm.escape_whitespaces = True
    return proto.SerializeToString()


def write_sentencepiece(folder: Path, size: int) -> bool:
    """``folder/tokenizer.model``; False (nothing written) without the ``protobuf`` package."""
    try:
        data = sentencepiece_model(size)
    except (ImportError, AttributeError):
        return False
    (folder / "tokenizer.model").write_bytes(data)
    return True


def fast_tokenizer(size: int, extra: tuple[str, ...] = ()):
    """The same vocabulary as a transformers fast tokenizer (what transformers builds from
    ``tokenizer.model``), with BOS added on encode and ``extra`` special tokens appended."""
    from tokenizers import Tokenizer, decoders, models, normalizers, processors
    from transformers import PreTrainedTokenizerFast

    vocab = vocabulary(size)
    ids = {piece: i for i, (piece, _, _) in enumerate(vocab)}
    merges = [
        (piece[:-1], piece[-1])
        for piece, _, kind in vocab
        if kind == "normal" and len(piece) > 1 and piece[:-1] in ids and piece[-1] in ids
    ]
    model = models.BPE(
        vocab=ids, merges=merges, unk_token="<unk>", byte_fallback=True, fuse_unk=True
    )
    tok = Tokenizer(model)
    tok.normalizer = normalizers.Sequence(
        [normalizers.Prepend(SPACE), normalizers.Replace(" ", SPACE)]
    )
    tok.decoder = decoders.Sequence(
        [
            decoders.Replace(SPACE, " "), decoders.ByteFallback(), decoders.Fuse(),
            decoders.Strip(" ", 1, 0),
        ]  # fmt: skip
    )
    tok.post_processor = processors.TemplateProcessing(
        single="<s> $A", pair="<s> $A <s> $B", special_tokens=[("<s>", 1)]
    )
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, unk_token="<unk>", bos_token="<s>", eos_token="</s>",
        clean_up_tokenization_spaces=False,
    )  # fmt: skip
    if extra:
        fast.add_special_tokens({"additional_special_tokens": list(extra)})
    if "<pad>" in extra:
        fast.pad_token = "<pad>"
    return fast


def write_tokenizer_config(folder: Path, *, extra: dict | None = None) -> None:
    """``tokenizer_config.json`` and ``special_tokens_map.json`` as the LLaMA releases have."""
    config = {
        "tokenizer_class": "LlamaTokenizer", "add_bos_token": True, "add_eos_token": False,
        "bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>", "pad_token": None,
        "legacy": True, "clean_up_tokenization_spaces": False, "model_max_length": 2048,
        "sp_model_kwargs": {},
    }  # fmt: skip
    config.update(extra or {})
    (folder / "tokenizer_config.json").write_text(json.dumps(config, indent=2))
    specials = {"bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>"}
    (folder / "special_tokens_map.json").write_text(json.dumps(specials, indent=2))
