"""A hostile ``train_state.pt``: resuming a world-model run never runs a pickled payload;
it stops with an error naming the file and how to recover."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from evspec.training.checkpoint import CONFIG_FILE, STATE_FILE, load_state
from evspec.training.world.loop import train_world_model

from training_helpers import micro_config


class Payload:
    """Unpickling this runs ``exec``, which writes ``marker``: proof that code ran."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (exec, (f"open({str(self.marker)!r}, 'w').write('ran')",))


def test_resume_refuses_a_pickled_payload_unrun(micro_world: Path, micro_runs: dict[str, Path],
                                                tmp_path: Path) -> None:
    run = tmp_path / "run"
    shutil.copytree(micro_runs["target"], run)
    saved = json.loads((run / CONFIG_FILE).read_text())
    (run / CONFIG_FILE).write_text(json.dumps({**saved, "out": str(run)}))  # a run of its own
    good = torch.load(run / STATE_FILE, weights_only=True)
    assert load_state(run).step == good["step"]  # the real state loads safely
    marker = tmp_path / "ran.txt"
    torch.save({**good, "optimizer": Payload(marker)}, run / STATE_FILE)
    torch.load(run / STATE_FILE, weights_only=False)  # the payload is live on an unsafe load
    assert marker.exists()
    marker.unlink()
    with pytest.raises(ValueError, match=rf"{STATE_FILE}: not a file of tensors .*drop --resume"):
        train_world_model(micro_config(micro_world, run, "target", steps=40), resume=True,
                          progress=False)
    assert not marker.exists()
    torch.save(["not", "a", "state"], run / STATE_FILE)
    with pytest.raises(ValueError, match="not an evspec training state"):
        load_state(run)
