"""Hostile and corrupt module files: a pickled payload in a run's ``train_state.pt`` never
runs, a torn ``module.safetensors`` or a ``config.json`` that is not an object is named, and
a config asking for far bigger weights than the file holds is refused before allocation."""

from __future__ import annotations

import json
import shutil
from importlib import resources
from pathlib import Path

import pytest
import torch

from evspec.modules.checkpoint import load_checkpoint
from evspec.training.heads.train import STATE_FILE, train
from heads_helpers import train_config


class Payload:
    """Unpickling this runs ``exec``, which writes ``marker``: proof that code ran."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (exec, (f"open({str(self.marker)!r}, 'w').write('ran')",))


def test_resume_refuses_a_pickled_payload_unrun(collected: Path, tmp_path: Path) -> None:
    out = tmp_path / "eh"
    train(train_config("event-head", steps=2), collected, out, progress=False)
    marker = tmp_path / "ran.txt"
    torch.save({"optimizer": Payload(marker), "step": 2}, out / STATE_FILE)
    with pytest.raises(ValueError, match=rf"{STATE_FILE}: not a file of tensors .*--no-resume"):
        train(train_config("event-head", steps=4), collected, out, progress=False)
    assert not marker.exists()


@pytest.fixture()
def head(tmp_path: Path) -> Path:
    src = resources.files("evspec") / "assets" / "world" / "heads" / "event-head"
    return Path(shutil.copytree(str(src), tmp_path / "event-head"))


def test_config_asking_for_huge_weights_is_refused_before_allocation(head: Path) -> None:
    body = json.loads((head / "config.json").read_text())
    body["config"]["hidden_size"] = 2**20  # ~2 TB of fp32 weights for one layer
    (head / "config.json").write_text(json.dumps(body))
    with pytest.raises(ValueError, match=r"module\.safetensors: weight .* config\.json implies"):
        load_checkpoint(head).build()


def test_torn_weights_and_non_object_config_are_named(head: Path) -> None:
    weights = head / "module.safetensors"
    weights.write_bytes(weights.read_bytes()[:100])
    with pytest.raises(ValueError, match=r"module\.safetensors: not a readable safetensors file"):
        load_checkpoint(head)
    (head / "config.json").write_text("[]")
    with pytest.raises(ValueError, match=r"config\.json: the top level is a JSON list"):
        load_checkpoint(head)
    (head / "config.json").write_text("{oops")
    with pytest.raises(ValueError, match=r"config\.json: not valid JSON"):
        load_checkpoint(head)
