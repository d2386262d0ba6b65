"""Hostile and corrupt checkpoint files: a pickled payload never runs, a torn or foreign
weight file and a config that is not a JSON object are refused with the file named, before
any model is built."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from evspec.models.eventgpt import EventGPT
from evspec.models.eventgpt_weights import read_weights
from evspec.models.safe_load import load_torch_state
from evspec.models.target import VideoLlavaTarget


class Payload:
    """Unpickling this runs ``exec``, which writes ``marker``: proof that code ran."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (exec, (f"open({str(self.marker)!r}, 'w').write('ran')",))


def plant(path: Path, marker: Path) -> None:
    """A ``torch.save`` file whose unpickling would run the payload."""
    torch.save({"model.embed_tokens.weight": torch.zeros(2), "x": Payload(marker)}, path)
    torch.load(path, weights_only=False)  # the payload is live: it runs on an unsafe load
    assert marker.read_text() == "ran"
    marker.unlink()


def test_bin_weights_with_a_payload_are_refused_unrun(tmp_path: Path) -> None:
    marker = tmp_path / "ran.txt"
    plant(tmp_path / "pytorch_model.bin", marker)
    refused = r"pytorch_model\.bin: not a file of tensors evspec can load safely \(it names exec, "
    with pytest.raises(ValueError, match=refused):
        read_weights(tmp_path / "pytorch_model.bin")
    with pytest.raises(ValueError, match="re-download"):
        load_torch_state(tmp_path / "pytorch_model.bin", "re-download it")
    assert not marker.exists()


def test_eventgpt_release_with_a_payload_bin_is_refused_unrun(tmp_path: Path) -> None:
    folder = EventGPT.from_preset("tiny-random", seed=0).save_pretrained(tmp_path / "rel")
    (folder / "model.safetensors").unlink()
    marker = tmp_path / "ran.txt"
    plant(folder / "pytorch_model.bin", marker)
    with pytest.raises(ValueError, match="pytorch_model.bin"):
        EventGPT.from_pretrained(folder)
    assert not marker.exists()


@pytest.fixture(scope="module")
def saved_target(tmp_path_factory: pytest.TempPathFactory) -> Path:
    target = VideoLlavaTarget.from_preset("tiny-random", seed=0)
    return target.save_pretrained(tmp_path_factory.mktemp("hostile_vl"))


def _copy(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


def _tear(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def test_torn_target_weights_are_named(saved_target: Path, tmp_path: Path) -> None:
    folder = _copy(saved_target, tmp_path / "vl")
    _tear(folder / "model.safetensors")
    with pytest.raises(ValueError, match=r"model\.safetensors: not a readable safetensors file"):
        VideoLlavaTarget.from_pretrained(folder)
    (folder / "model.safetensors").write_bytes(b"\x00" * 7)
    with pytest.raises(ValueError, match="re-download"):
        VideoLlavaTarget.from_pretrained(folder)


def test_target_config_that_is_a_list_is_named(saved_target: Path, tmp_path: Path) -> None:
    folder = _copy(saved_target, tmp_path / "vl")
    (folder / "config.json").write_text("[1, 2]")
    with pytest.raises(ValueError, match=r"config\.json: the top level is a JSON list"):
        VideoLlavaTarget.from_pretrained(folder)
    (folder / "config.json").write_text("{bad json")
    with pytest.raises(ValueError, match=r"config\.json: not valid JSON"):
        VideoLlavaTarget.from_pretrained(folder)


def test_torn_draft_weights_and_bad_config_are_named(tmp_path: Path) -> None:
    folder = EventGPT.from_preset("tiny-random", seed=0).save_pretrained(tmp_path / "rel")
    _tear(folder / "model.safetensors")
    with pytest.raises(ValueError, match=r"model\.safetensors: not a readable safetensors file"):
        EventGPT.from_pretrained(folder)
    (folder / "config.json").write_text(json.dumps(["EventChat_llama"]))
    with pytest.raises(ValueError, match=r"config\.json: the top level is a JSON list"):
        EventGPT.from_pretrained(folder)


def test_shard_names_outside_the_folder_are_refused(tmp_path: Path) -> None:
    folder = EventGPT.from_preset("tiny-random", seed=0).save_pretrained(tmp_path / "rel")
    index = {"weight_map": {"a": "../../etc/passwd"}}
    (folder / "model.safetensors.index.json").write_text(json.dumps(index))
    with pytest.raises(ValueError, match="plain file names"):
        EventGPT.from_pretrained(folder)
