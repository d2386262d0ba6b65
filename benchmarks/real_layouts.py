"""Random-weight checkpoints in the exact folder layouts of the two releases, plus a set of
recordings in the DSEC layout: what a user with the real weights and DSEC has on disk, so
the whole journey (``benchmarks/journey.py``) runs on the real layouts without the weights.

Written under ``--out``:

* ``Video-LLaVA-7B-hf/`` -- the ``LanguageBind/Video-LLaVA-7B-hf`` layout: ``config.json``
  (``video_llava``), ``generation_config.json``, sharded ``model-0000i-of-0000N.safetensors``
  with ``model.safetensors.index.json``, the LLaMA tokenizer (``tokenizer.model``,
  ``tokenizer.json``, ``tokenizer_config.json``, ``special_tokens_map.json``, with
  ``<image>`` ``<video>`` ``<pad>`` at 32000-32002) and ``preprocessor_config.json``;
* ``EventGPT-7b/`` -- the EventGPT release layout: ``config.json`` with
  ``model_type: "EventChat_llama"`` and only the release's keys (LLaMA keys,
  ``mm_visual_tower``, ``mm_hidden_size``, ``event_feature_adaptor``,
  ``mm_use_im_start_end``; no ``mm_use_im_patch_token``, so loading adds ``<ev_patch>``),
  weight shards with their index (the CLIP tower inside), and the SentencePiece
  ``tokenizer.model`` with ``tokenizer_config.json`` / ``special_tokens_map.json``
  (``tokenizer.json`` too on a machine without the ``sentencepiece`` package, which reading
  ``tokenizer.model`` needs, or with ``--eventgpt-tokenizer-json``);
* ``dsec/{train,val,test}/<sequence>/`` -- ``events/left/events.h5`` (DSEC's HDF5 layout:
  ``events/{x,y,t,p}``, ``ms_to_idx``, ``t_offset``), ``images/left/rectified/*.png`` at
  20 Hz and ``images/timestamps.txt`` (µs).

Both tokenizers are one LLaMA-style SentencePiece BPE vocabulary made here (byte fallback,
``<unk> <s> </s>`` = 0, 1, 2, whole-word pieces for common English), so prompts tokenise to
realistic lengths and the two models share their first 32000 ids as the real pair does.
Weights are random (normal, std 0.02): answers mean nothing, time and memory are real.

Sizes: ``7b`` (the releases' shapes, bf16 by default, ~14 GB per model; build on a GPU) and
``tiny`` (the tiny presets' shapes, for CPU tests).

    PYTHONPATH=src python3 benchmarks/real_layouts.py --out /tmp/real --size tiny
"""

from __future__ import annotations

import argparse
import json
import re
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

from layout_tokenizer import (  # a sibling module: benchmarks/ is the script's folder
    fast_tokenizer, write_sentencepiece, write_tokenizer_config,
)

SIZES = ("tiny", "7b")
#: base vocabulary (ids shared by both models) per size; Video-LLaVA appends 3 tokens and pads
#: its logits to a multiple of 64, as the release does (32000 -> 32064)
BASE_VOCAB = {"tiny": 512, "7b": 32000}


# -- the checkpoints -----------------------------------------------------------------------


def _shard_size(size: str) -> str:
    return "5GB" if size == "7b" else "200KB"  # tiny: several shards too, as the release


def write_video_llava(folder: Path, size: str, *, device: str, dtype, seed: int) -> Path:
    """The ``LanguageBind/Video-LLaVA-7B-hf`` layout at ``size`` with random weights."""
    import torch
    from transformers import VideoLlavaForConditionalGeneration, VideoLlavaImageProcessor

    from evspec.models.presets.target import get_preset

    base = BASE_VOCAB[size]
    preset = get_preset("7b" if size == "7b" else "tiny-random")
    preset = replace(
        preset, text=replace(preset.text, vocab_size=base + 64), image_token_id=base,
        video_token_id=base + 1, pad_token_id=base + 2,
    )  # fmt: skip
    torch.manual_seed(seed)
    with torch.device(device):
        model = VideoLlavaForConditionalGeneration._from_config(preset.to_config(), dtype=dtype)
    folder.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(folder, max_shard_size=_shard_size(size))
    del model
    tokenizer = fast_tokenizer(base, ("<image>", "<video>", "<pad>"))
    tokenizer.save_pretrained(folder)
    write_sentencepiece(folder, base)
    s = preset.vision.image_size
    VideoLlavaImageProcessor(
        size={"shortest_edge": s}, crop_size={"height": s, "width": s}
    ).save_pretrained(folder)
    return folder


#: the keys the EventGPT release's ``config.json`` holds besides LLaMA's
_RELEASE_KEYS = (
    "mm_visual_tower", "mm_hidden_size", "event_feature_adaptor", "mm_use_im_start_end",
)  # fmt: skip


def write_eventgpt(
    folder: Path, size: str, *, device: str, dtype, seed: int, tokenizer_json: bool | None = None
) -> Path:
    """The EventGPT release layout at ``size`` with random weights (CLIP inside).
    ``tokenizer_json``: also write ``tokenizer.json`` (None: when this machine lacks the
    ``sentencepiece`` package that reading ``tokenizer.model`` needs)."""
    from evspec.models.eventgpt import build_model
    from evspec.models.eventgpt_layout import _LLAMA_KEYS, config_to_dict
    from evspec.models.eventgpt_loader import save_eventgpt
    from evspec.models.presets.eventgpt import get_preset

    base = BASE_VOCAB[size]
    preset = get_preset("7b" if size == "7b" else "tiny-random")
    preset = replace(preset, text=replace(preset.text, vocab_size=base), prompt_style="release")
    config = preset.config()
    tokenizer = fast_tokenizer(base)
    model = build_model(config, dtype=dtype, device=device, seed=seed)
    folder.mkdir(parents=True, exist_ok=True)
    shard = 5 * 2**30 if size == "7b" else 200_000
    save_eventgpt(model, tokenizer, folder, include_vision=True, max_shard_bytes=shard)
    del model
    ours = json.loads((folder / "config.json").read_text())
    release = {k: v for k, v in ours.items() if k in _LLAMA_KEYS}
    release.update({k: ours[k] for k in _RELEASE_KEYS if k in ours})
    release.update(
        architectures=["EventChatModel"], model_type="EventChat_llama",
        torch_dtype=ours.get("torch_dtype", "bfloat16"), rope_theta=ours["rope_theta"],
    )  # fmt: skip
    if size != "7b":  # a CLIP that is not CLIP-L/14-336: its shape from a local CLIP folder
        clip = folder.parent / "clip-vit-tiny"
        config.vision.save_pretrained(clip)
        release["mm_visual_tower"] = str(clip.resolve())
    (folder / "config.json").write_text(json.dumps(release, indent=2))
    for name in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
        (folder / name).unlink(missing_ok=True)
    write_tokenizer_config(folder)
    has_model = write_sentencepiece(folder, base)
    if tokenizer_json is None:
        tokenizer_json = not _has("sentencepiece")
    if tokenizer_json or not has_model:
        (folder / "tokenizer.json").write_text(tokenizer.backend_tokenizer.to_str())
    return folder


# -- the recordings ------------------------------------------------------------------------


#: DSEC's sizes: events at VGA, rectified images at 1440 x 1080
DSEC_SENSOR = (640, 480)
DSEC_IMAGE = (1440, 1080)


def write_dsec_sequence(
    seq: Path, *, seconds: float, events_per_s: int, seed: int,
    image_size: tuple[int, int] = DSEC_IMAGE,
) -> None:
    """One DSEC sequence folder: a bright blob moving over a textured road, its events on
    the 640 x 480 sensor and 20 Hz PNG images of ``image_size`` (width, height)."""
    from PIL import Image

    from evspec.data.dsec_h5 import write_dsec_events_h5
    from evspec.data.events import EventStream

    rng = np.random.default_rng(seed)
    w, h = image_size
    t0 = 50_000_000_000 + seed * 1_000_000_000  # DSEC times are large absolute µs values
    n_img = int(seconds * 20)
    stamps = t0 + 50_000 * np.arange(n_img)
    img_dir = seq / "images" / "left" / "rectified"
    img_dir.mkdir(parents=True, exist_ok=True)
    yy, xx = np.mgrid[0:h, 0:w]
    road = (96 + 40 * np.sin(xx / (0.04 * w)) * np.cos(yy / (0.035 * h))).astype(np.float32)
    for i, _t in enumerate(stamps):
        cx, cy = (w * (0.1 + 0.8 * i / max(1, n_img - 1))), h * 0.6
        blob = 120 * np.exp(-(((xx - cx) / (0.06 * w)) ** 2 + ((yy - cy) / (0.06 * h)) ** 2))
        frame = np.clip(road + blob, 0, 255).astype(np.uint8)
        Image.fromarray(np.stack([frame, frame, frame], axis=-1)).save(
            img_dir / f"{i:06d}.png", compress_level=1
        )
    (seq / "images" / "timestamps.txt").write_text("\n".join(str(int(t)) for t in stamps) + "\n")
    w, h = DSEC_SENSOR
    n = int(seconds * events_per_s)
    t = np.sort(rng.integers(t0 - 20_000, int(stamps[-1]) + 20_000, n))
    frac = (t - t0) / max(1.0, float(stamps[-1] - t0))
    cx = w * (0.1 + 0.8 * np.clip(frac, 0, 1))
    near = rng.random(n) < 0.7  # most events on the moving blob's edge, the rest noise
    x = np.where(near, cx + rng.normal(0, 30, n), rng.integers(0, w, n))
    y = np.where(near, h * 0.6 + rng.normal(0, 25, n), rng.integers(0, h, n))
    x = np.clip(x, 0, w - 1).astype(np.uint16)
    y = np.clip(y, 0, h - 1).astype(np.uint16)
    p = (rng.random(n) < np.where(x > cx, 0.8, 0.2)).astype(np.uint8)  # leading edge ON
    stream = EventStream(x, y, t, p, (w, h))
    (seq / "events" / "left").mkdir(parents=True, exist_ok=True)
    # DSEC compresses with Blosc (hdf5plugin); without that package the file is uncompressed
    write_dsec_events_h5(
        seq / "events" / "left" / "events.h5", stream, t0 - 50_000, compress=_has("hdf5plugin")
    )


def write_dsec_set(
    root: Path, seconds: dict[str, float], *, events_per_s: int, seed: int = 0,
    image_size: tuple[int, int] = DSEC_IMAGE,
) -> dict[str, list[str]]:
    """``root/<split>/<sequence>`` for each split with ``seconds[split]`` of recording (one
    sequence per split, DSEC-style names); returns the sequence names per split."""
    names = {"train": "zurich_city_00_a", "val": "zurich_city_01_a", "test": "interlaken_00_c"}
    out: dict[str, list[str]] = {}
    for i, (split, secs) in enumerate(seconds.items()):
        seq = root / split / names[split]
        write_dsec_sequence(
            seq, seconds=secs, events_per_s=events_per_s, seed=seed + i, image_size=image_size
        )
        out[split] = [names[split]]
    return out


# -- entry point ---------------------------------------------------------------------------


def _has(module: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(module) is not None


def _dtype(name: str):
    import torch

    table = {"bfloat16": torch.bfloat16, "float16": torch.float16, "float32": torch.float32}
    if name not in table:
        raise SystemExit(f"--dtype must be one of {', '.join(table)}, got {name!r}")
    return table[name]


def write_all(
    out: Path, size: str, *, device: str, dtype: str, seed: int, dsec_seconds: dict[str, float],
    events_per_s: int, tokenizer_json: bool | None = None,
    image_size: tuple[int, int] = DSEC_IMAGE,
) -> dict:
    """Write both checkpoints and the DSEC set; returns seconds per part and the paths."""
    if size not in SIZES:
        raise ValueError(f"size must be one of {', '.join(SIZES)}, got {size!r}")
    out.mkdir(parents=True, exist_ok=True)
    times: dict[str, float] = {}
    t = time.perf_counter()
    target = write_video_llava(
        out / "Video-LLaVA-7B-hf", size, device=device, dtype=_dtype(dtype), seed=seed
    )
    times["video_llava_s"] = time.perf_counter() - t
    t = time.perf_counter()
    draft = write_eventgpt(
        out / "EventGPT-7b", size, device=device, dtype=_dtype(dtype), seed=seed + 1,
        tokenizer_json=tokenizer_json,
    )  # fmt: skip
    times["eventgpt_s"] = time.perf_counter() - t
    t = time.perf_counter()
    write_dsec_set(
        out / "dsec", dsec_seconds, events_per_s=events_per_s, seed=seed, image_size=image_size
    )
    times["dsec_s"] = time.perf_counter() - t
    return {
        "target": str(target), "draft_model": str(draft), "dsec": str(out / "dsec"), "times": times,
        "eventgpt_tokenizer_json": (draft / "tokenizer.json").is_file(),
        "dsec_compressed": _has("hdf5plugin"),
    }  # fmt: skip


def _seconds(text: str) -> dict[str, float]:
    """``train=6,val=2,test=3`` -> seconds of recording per split."""
    out = {}
    for part in text.split(","):
        m = re.fullmatch(r"\s*(train|val|test)=([0-9.]+)\s*", part)
        if not m:
            raise SystemExit(f"--dsec-seconds: expected e.g. train=6,val=2,test=3, got {text!r}")
        out[m.group(1)] = float(m.group(2))
    return out


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, required=True, help="Folder to write into.")
    ap.add_argument("--size", choices=SIZES, default="tiny", help="Model shapes: tiny or 7b.")
    ap.add_argument(
        "--device", default=None,
        help="Where to build the weights (default: cuda if present).",
    )
    ap.add_argument(
        "--dtype", default=None,
        help="Weight dtype on disk (default: bfloat16 for 7b, float32 for tiny).",
    )
    ap.add_argument(
        "--seed", type=int, default=0,
        help="Seed of the random weights and recordings.",
    )
    ap.add_argument(
        "--dsec-seconds", default="train=6,val=2,test=3",
        help="Seconds of recording per split.",
    )
    ap.add_argument(
        "--events-per-s", type=int, default=400_000,
        help="Event rate of the recordings.",
    )
    ap.add_argument(
        "--image-size", default="1440x1080",
        help="Size of the DSEC-layout images, WIDTHxHEIGHT (DSEC's rectified images: 1440x1080).",
    )  # fmt: skip
    ap.add_argument(
        "--eventgpt-tokenizer-json", action="store_true",
        default=None,
        help="Also write tokenizer.json into EventGPT-7b (default: only when this machine "
        "lacks the sentencepiece package that reading tokenizer.model needs).",
    )  # fmt: skip
    args = ap.parse_args(argv)
    m = re.fullmatch(r"(\d+)x(\d+)", args.image_size)
    if not m:
        raise SystemExit(f"--image-size: expected WIDTHxHEIGHT, got {args.image_size!r}")
    import torch

    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    dtype = args.dtype or ("bfloat16" if args.size == "7b" else "float32")
    info = write_all(
        args.out, args.size, device=device, dtype=dtype, seed=args.seed,
        dsec_seconds=_seconds(args.dsec_seconds), events_per_s=args.events_per_s,
        tokenizer_json=args.eventgpt_tokenizer_json,
        image_size=(int(m.group(1)), int(m.group(2))),
    )  # fmt: skip
    print(json.dumps(info, indent=1))


if __name__ == "__main__":
    main()
