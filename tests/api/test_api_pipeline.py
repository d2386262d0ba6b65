"""evspec.Pipeline: the shipped world models answer from Python exactly as the engine does."""

from __future__ import annotations

import re
import subprocess
import sys
import numpy as np
import pytest

import evspec
from evspec.decoding.engine import generate
from evspec.loading import make_request

from api_paths import EVENTS, HAVE_WORLD, ROOT, VIDEO

pytestmark = pytest.mark.skipif(not HAVE_WORLD, reason="world assets not shipped")


@pytest.fixture
def pipe(world_pipe):
    return world_pipe


def test_import_evspec_stays_light():
    code = "import sys, evspec; assert 'torch' not in sys.modules; print(evspec.Pipeline.__name__)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                         env={"PYTHONPATH": str(ROOT / "src"), "PATH": "/usr/bin:/bin"})
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "Pipeline"


def test_answer_equals_target_only_engine(pipe):
    result = pipe(video=VIDEO, events=EVENTS, question="What is moving?")
    inputs = pipe.load_clip(VIDEO, EVENTS)
    request = make_request("What is moving?", inputs)
    baseline = generate(pipe.target, request, None, max_new_tokens=24)
    assert result.tokens == baseline.tokens
    assert result.text == baseline.text and "moving" in result.text
    assert result.stats.drafter == "event-head" and result.stats.drafted > 0
    assert result.stats.tau > 1.0  # the shipped head is accepted on a held-out clip
    assert set(result.to_dict()) == {"tokens", "text", "stats"}


def test_batch_of_questions_in_order(pipe):
    questions = ["How many objects are there?", "What is moving?"]
    results = pipe(video=VIDEO, events=EVENTS, question=questions)
    assert [r.tokens for r in results] == [
        pipe(video=VIDEO, events=EVENTS, question=q).tokens for q in questions]


def test_stream_yields_the_answer_piece_by_piece(pipe):
    stream = pipe.stream(video=VIDEO, events=EVENTS, question="What is moving?")
    pieces = list(stream)
    assert len(pieces) > 1
    assert "".join(pieces) == stream.result.text
    seen: list[str] = []
    result = pipe(video=VIDEO, events=EVENTS, question="What is moving?", on_text=seen.append)
    assert "".join(seen) == result.text == stream.result.text


def test_batched_answers_equal_one_by_one(pipe):
    questions = ["What is moving?", "How many objects are there?", "What color is the object?"]
    together = pipe(video=VIDEO, events=EVENTS, question=questions, batch=True)
    alone = pipe(video=VIDEO, events=EVENTS, question=questions)
    assert [r.tokens for r in together] == [r.tokens for r in alone]
    assert all(r.stats.drafter == "event-head" for r in together)
    with pytest.raises(ValueError, match="no on_text"):
        pipe(video=VIDEO, events=EVENTS, question=questions, batch=True, on_text=print)


def test_overrides_hold_for_every_question_of_a_list(pipe):
    results = pipe(video=VIDEO, events=EVENTS, question=["What is moving?"] * 2,
                   max_new_tokens=30, stop_at_eos=False)
    assert [len(r.tokens) for r in results] == [30, 30]


def test_arrays_and_overrides(pipe):
    inputs = pipe.load_clip(VIDEO, EVENTS)
    result = pipe(video=inputs.video, events=inputs.event_images, question="What is moving?",
                  max_new_tokens=3, stop_at_eos=False, gamma=2)
    assert len(result.tokens) == 3 and result.stats.gamma == 2


def test_bad_inputs_say_what_to_pass(pipe):
    with pytest.raises(ValueError, match="needs events"):
        pipe(video=VIDEO, question="What is moving?")
    with pytest.raises(ValueError, match="video is required"):
        pipe(video=None, events=EVENTS, question="What is moving?")
    with pytest.raises(ValueError, match=r"uint8 \[n, H, W, 3\]"):
        pipe(video=np.zeros((2, 3)), events=EVENTS, question="What is moving?")
    with pytest.raises(ValueError, match="non-empty"):
        pipe(video=VIDEO, events=EVENTS, question="  ")
    with pytest.raises(TypeError, match="unknown decoding option"):
        pipe(video=VIDEO, events=EVENTS, question="q", gama=3)
    with pytest.raises(ValueError, match="gamma must be"):
        pipe(video=VIDEO, events=EVENTS, question="q", gamma=0)
    with pytest.raises(ValueError, match="drafter must be one of"):
        evspec.Pipeline.from_pretrained("tiny-random", drafter="bogus")
    with pytest.raises(TypeError, match="unknown option"):
        evspec.Pipeline.from_pretrained("tiny-random", drafter="none", gama=3)


def test_tiny_random_preset_with_random_inputs():
    pipe = evspec.Pipeline.from_pretrained("tiny-random", drafter="eventgpt", device="cpu",
                                           max_new_tokens=6)
    a = pipe(video="random", events="random", question="what moves?", stop_at_eos=False)
    b = pipe(video="random", events="random", question="what moves?", stop_at_eos=False, gamma=1)
    assert len(a.tokens) == 6 and a.tokens == b.tokens


def test_readme_example_runs():
    """The README's Python example, executed as written."""
    readme = (ROOT / "README.md").read_text()
    block = re.search(r"<!-- python-api-example -->\s*```python\n(.*?)```", readme, re.S)
    assert block, "README lost its marked Python API example"
    namespace: dict = {}
    exec(compile(block.group(1), "README.md", "exec"), namespace)  # noqa: S102
    assert "moving" in namespace["result"].text
