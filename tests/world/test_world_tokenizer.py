"""The world tokenizer pair: roles, exact round trips, one token per word, determinism."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from evspec.data.manifest import SPLITS, load_manifest
from evspec.data.world.generate import load_world_extra
from evspec.data.world.questions import world_texts
from evspec.data.world.tables import EVENTGPT_PROMPT, TARGET_PROMPT
from evspec.data.world.tokenizer import (
    TARGET_EXTRA,
    build_vocab,
    build_world_tokenizers,
    load_world_tokenizers,
    save_world_tokenizers,
    word_pieces,
    world_corpus,
)


@pytest.fixture(scope="module")
def pair():
    return build_world_tokenizers()


def test_roles_and_layout(pair) -> None:
    from evspec.models.tokenizer import shared_vocab_size

    drafter, target = pair
    for tok in pair:
        assert (tok.unk_token_id, tok.bos_token_id, tok.eos_token_id) == (0, 1, 2)
    n = len(drafter)
    assert 150 <= n <= 400  # a small vocabulary
    assert len(target) == n + 3
    assert target.convert_tokens_to_ids(list(TARGET_EXTRA)) == [n, n + 1, n + 2]
    assert target.pad_token_id == n + 2
    assert shared_vocab_size(drafter, target) == n
    assert drafter.encode("The red circle.") == target.encode("The red circle.")


def test_every_answer_round_trips_one_token_per_word(pair, tiny_world: Path) -> None:
    drafter, target = pair
    manifest = load_manifest(tiny_world / "manifest.json")
    texts = []
    for split in SPLITS:
        extra = load_world_extra(tiny_world, split)
        for c in manifest.split(split):
            for q, x in zip(c.questions, extra[c.id]["qa"], strict=True):
                texts += [q.question, q.answer, x["answer_drafter"], " " + q.answer]
    texts += list(world_texts())
    for text in texts:
        ids = target.encode(text)
        assert 0 not in ids  # no <unk>
        assert target.convert_ids_to_tokens(ids) == word_pieces(text)  # whole words only
        assert target.decode(ids) == text
        assert drafter.decode(drafter.encode(text)) == text


def test_prompts_round_trip_and_keep_placeholders_special(pair) -> None:
    drafter, target = pair
    q = "What colour is the circle?"
    prompt = TARGET_PROMPT.format(question=q)
    ids = target.encode(prompt)
    assert ids.count(target.convert_tokens_to_ids("<video>")) == 1
    assert target.decode(ids) == prompt
    answer = " In the scene the circle has an unknown colour.</s>"
    ev_prompt = EVENTGPT_PROMPT.format(question=q) + answer
    ids = drafter.encode(ev_prompt)
    assert ids[-1] == drafter.eos_token_id
    assert drafter.decode(ids) == ev_prompt
    # Text outside the world (unknown words, odd spacing) still round-trips, letter by letter.
    odd = "  Zebra's 42 jump -- ok?\n"
    assert drafter.decode(drafter.encode(odd)) == odd


def test_deterministic_and_saved_pair_reloads(pair, tmp_path: Path) -> None:
    again = build_world_tokenizers()
    assert pair[0].backend_tokenizer.to_str() == again[0].backend_tokenizer.to_str()
    assert build_vocab(world_corpus()) == build_vocab(world_corpus())
    save_world_tokenizers(tmp_path / "tok", pair)
    drafter, target = load_world_tokenizers(tmp_path / "tok")
    text = "In the scene there is a cross moving up-right."
    assert drafter.encode(text) == pair[0].encode(text)
    assert target.encode("USER: <video>\nWhat is moving? ASSISTANT:") == pair[1].encode(
        "USER: <video>\nWhat is moving? ASSISTANT:"
    )
    assert target.decode(target.encode(text)) == text
    assert json.loads((tmp_path / "tok" / "target" / "tokenizer.json").read_text())
    with pytest.raises(FileNotFoundError, match="save_world_tokenizers"):
        load_world_tokenizers(tmp_path / "missing")


def test_generated_world_ships_the_same_tokenizer(pair, tiny_world: Path) -> None:
    drafter, target = load_world_tokenizers(tiny_world / "tokenizer")
    assert drafter.get_vocab() == pair[0].get_vocab()
    assert target.get_vocab() == pair[1].get_vocab()
