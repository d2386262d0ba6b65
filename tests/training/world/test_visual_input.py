"""The training pipeline feeds each example its own clip's pixels, the visual path carries
information and receives gradients, and the batched forward equals the inference wrapper
on examples from *different* clips (issue 4: world models that seemed to ignore the video).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from evspec.data.loading import load_clip_inputs
from evspec.data.manifest import ClipEntry
from evspec.models.request import Request
from evspec.training.world.batching import collate
from evspec.training.world.dataset import Example, load_split, split_entries
from evspec.training.world.forward import WorldForward, encode_events_batched
from evspec.training.world.world_models import build_world_model, world_tokenizers

ROLES = ("target", "drafter")


def _one_per_clip(examples: list[Example], n: int) -> list[Example]:
    """The first example of each of the first ``n`` clips (distinct clips, in order)."""
    seen: dict[int, Example] = {}
    for ex in examples:
        seen.setdefault(ex.clip, ex)
    picked = list(seen.values())[:n]
    assert len(picked) == n, f"the micro world has only {len(picked)} clips in this split"
    return picked


@pytest.fixture(scope="module")
def splits(micro_world: Path) -> dict[str, tuple]:
    """Per role: (a fresh model, its train split)."""
    out = {}
    for role in ROLES:
        model = build_world_model(role, "world-micro", world_tokenizers(micro_world), seed=2)
        out[role] = (model, load_split(micro_world, "train", model, role, workers=1, progress=False))
    return out


@pytest.mark.parametrize("role", ROLES)
def test_predecoded_rows_are_the_clip_files(micro_world: Path, splits: dict, role: str) -> None:
    """Row i of the pixel array is clip ``clip_ids[i]`` as the loader reads it, and the
    clips differ from one another."""
    model, split = splits[role]
    entries = {e.id: e for e in split_entries(micro_world, "train")}
    for row in (0, len(split.clip_ids) - 1):
        e = entries[split.clip_ids[row]]
        if role == "target":
            ref, _ = load_clip_inputs(ClipEntry(e.id, None, e.video), micro_world,
                                      num_frames=model.num_frames, warn_window=False)
        else:
            _, ref = load_clip_inputs(ClipEntry(e.id, e.events, None, e.window_us), micro_world,
                                      n_event_images=model.n_event_images, canvas="sensor",
                                      warn_window=False)
        np.testing.assert_array_equal(split.pixels[row], ref)
    flat = split.pixels.reshape(len(split.pixels), -1)
    assert len({row.tobytes() for row in flat}) == len(flat), "two clips decoded to the same pixels"
    counts = np.bincount([ex.clip for ex in split.examples], minlength=len(flat))
    assert (counts > 0).all(), "a clip has no examples: the clip index of the examples is off"


@pytest.mark.parametrize("role", ROLES)
def test_batch_features_are_each_examples_own_clip(splits: dict, role: str) -> None:
    """The features the training forward splices in for row i are those the inference
    wrapper computes for example i's clip, and they differ between clips."""
    model, split = splits[role]
    fwd = WorldForward(model)
    pixels = torch.from_numpy(split.pixels)
    exs = _one_per_clip(split.examples, 3)[::-1]  # reversed: row order != clip order
    batch = collate(exs, pad_id=fwd.pad_id, expand=fwd.expand)
    assert batch.clips.tolist() == [ex.clip for ex in exs]
    with torch.no_grad():
        embeds = fwd.embed(batch, pixels).embeds  # [B, L', H]
    rows = []
    for i, ex in enumerate(exs):
        with torch.no_grad():
            if role == "target":
                ref = model.video_features(model.preprocess_video(split.pixels[ex.clip]))  # [T*P, H]
                ours = embeds[i][batch.input_ids[i] == model.video_token_id]  # [T*P, H]
            else:
                ref = model.model.encode_events(model.preprocess(split.pixels[ex.clip]))  # [E, H]
                at = int(batch.placeholders[i])
                ours = embeds[i, at : at + ref.shape[0]]  # [E, H]
        torch.testing.assert_close(ours, ref, atol=1e-5, rtol=1e-5)
        rows.append(ours)
    for a in range(len(rows)):
        for b in range(a + 1, len(rows)):
            rel = float((rows[a] - rows[b]).norm() / rows[a].norm())
            assert rel > 1e-2, f"features of two different clips are almost equal ({rel:.2e})"


@pytest.mark.parametrize("role", ROLES)
def test_gradients_reach_the_vision_tower_and_projector(splits: dict, role: str) -> None:
    model, split = splits[role]
    fwd = WorldForward(model)
    fwd.module.train()
    batch = collate(_one_per_clip(split.examples, 4), pad_id=fwd.pad_id, expand=fwd.expand)
    loss, _ = fwd.loss(batch, torch.from_numpy(split.pixels))
    fwd.module.zero_grad(set_to_none=True)
    loss.backward()
    groups = (
        ("video_tower.embeddings.patch_embedding", "video_tower.embeddings.position_embedding",
         "video_tower.encoder.layers.0.", "multi_modal_projector")  # the last layer is unused (-2)
        if role == "target"
        else ("visual_tower.visual_tower.vision_model.embeddings.patch_embedding",
              "visual_tower.visual_tower.vision_model.embeddings.position_embedding",
              "visual_tower.visual_tower.vision_model.encoder.layers", "visual_projector",
              "feature_adaptor")
    )
    norms = {}
    for key in groups:
        grads = [p.grad for n, p in fwd.module.named_parameters() if key in n and p.requires_grad]
        assert grads, f"no trainable parameter matches {key!r}"
        assert all(g is not None for g in grads), f"{key}: some parameters got no gradient"
        norms[key] = float(torch.stack([g.norm() for g in grads]).norm())
    assert all(v > 1e-6 for v in norms.values()), norms
    fwd.module.zero_grad(set_to_none=True)
    fwd.module.eval()


@pytest.mark.parametrize("role", ROLES)
def test_forward_matches_the_wrapper_on_different_clips(splits: dict, role: str) -> None:
    """Teacher-forced logits of the batched forward equal the wrapper's prefill + score for
    examples of three different clips in one batch."""
    model, split = splits[role]
    fwd = WorldForward(model)
    pixels = torch.from_numpy(split.pixels)
    exs = _one_per_clip(split.examples, 3)
    batch = collate(exs, pad_id=fwd.pad_id, expand=fwd.expand)
    with torch.no_grad():
        hidden = fwd.hidden(fwd.embed(batch, pixels))  # [B, L', H]
    for i, ex in enumerate(exs):
        images = split.pixels[ex.clip]
        req = Request(ex.question, video=images) if role == "target" else Request(ex.question, event_images=images)
        state = model.prefill(req)
        ref = torch.cat([state.last_logits[None], model.score(state, torch.tensor(ex.answer[:-1])).logits])
        start = int(batch.prompt_lengths[i]) - 1
        with torch.no_grad():
            ours = model.lm_head(hidden[i, start : start + len(ex.answer)]).float()
        torch.testing.assert_close(ours, ref, atol=1e-5, rtol=1e-5)


def test_encode_events_batched_equals_per_clip(splits: dict) -> None:
    model, split = splits["drafter"]
    px = torch.stack([model.preprocess(split.pixels[i]) for i in range(3)])  # [3, n, 3, S, S]
    with torch.no_grad():
        ours = encode_events_batched(model.model, px)  # [3, E, H]
        for i in range(3):
            torch.testing.assert_close(ours[i], model.model.encode_events(px[i]), atol=1e-5, rtol=1e-5)


def _shuffle_patches(images: np.ndarray, patch: int, perm: np.ndarray) -> np.ndarray:
    """``[K, S, S, 3]`` -> the same images with their ``patch``-sized tiles permuted."""
    k, s = images.shape[:2]
    g = s // patch
    tiles = images.reshape(k, g, patch, g, patch, 3).transpose(0, 1, 3, 2, 4, 5)  # [K, g, g, p, p, 3]
    tiles = tiles.reshape(k, g * g, patch, patch, 3)[:, perm]
    return tiles.reshape(k, g, g, patch, patch, 3).transpose(0, 1, 3, 2, 4, 5).reshape(images.shape)


@pytest.mark.parametrize("role", ROLES)
def test_fresh_towers_see_the_spatial_layout(role: str) -> None:
    """Issue 4: with CLIP's 0.02 position init a tower trained from scratch stayed nearly
    permutation-equivariant (shuffling the patches only shuffled the features, ~10 %
    change), and the trained world models answered from the bag of colours.  A fresh world
    model's features must depend on where things are."""
    from evspec.training.world.world_models import POSITION_INIT_STD, vision_position_embeddings

    model = build_world_model(role, "world-micro", world_tokenizers(None), seed=0)
    for emb in vision_position_embeddings(model):
        assert float(emb.weight.detach().std()) == pytest.approx(POSITION_INIT_STD, rel=0.3)
    rng = np.random.default_rng(0)
    k = model.num_frames if role == "target" else model.n_event_images
    size = model.config.vision_config.image_size if role == "target" else model.config.image_size
    images = np.full((k, size, size, 3), 60, dtype=np.uint8)
    for _ in range(2):  # two coloured squares on a grey background
        y, x = rng.integers(0, size - 6, 2)
        images[:, y : y + 6, x : x + 6] = rng.integers(0, 256, 3)
    g = size // 8
    perm = np.roll(np.arange(g * g), 1)  # every tile moves
    shuffled = _shuffle_patches(images, 8, perm)
    with torch.no_grad():
        if role == "target":
            feats = [model.video_features(model.preprocess_video(x)).reshape(k, g * g + 1, -1)
                     for x in (images, shuffled)]  # [K, 1 + g*g, H]
        else:
            tower = model.model.model.visual_tower
            feats = [tower(model.preprocess(x)) for x in (images, shuffled)]  # [K, 1 + g*g, Dv]
    moved = feats[0][:, 1:][:, perm]  # the original patches' features, in shuffled order
    gap = float((feats[1][:, 1:] - moved).norm() / moved.norm())
    assert gap > 0.3, f"patch features barely depend on their position (relative change {gap:.3f})"


def test_position_embeddings_are_not_weight_decayed() -> None:
    from evspec.training.world.loop import _param_groups

    model = build_world_model("target", "world-micro", world_tokenizers(None), seed=0)
    decay, keep = _param_groups(model.model, 0.05)
    pos = {id(e.weight) for e in (model.model.model.video_tower.embeddings.position_embedding,
                                  model.model.model.image_tower.embeddings.position_embedding)}
    assert pos <= {id(p) for p in keep["params"]}
    assert not pos & {id(p) for p in decay["params"]}
    assert decay["weight_decay"] == 0.05 and keep["weight_decay"] == 0.0
