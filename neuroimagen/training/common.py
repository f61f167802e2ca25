"""Helpers every training stage shares: seeding, devices, caption states, resume files."""

from __future__ import annotations

import functools
import json
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from ..data.captions import CaptionEncoder
from ..data.stimuli import load_stimulus_metadata


def stage_threads(train):
    """Decorate a stage's ``train(cfg, ...)``: run it with ``cfg.num_threads`` torch threads (0: as they are)
    and give the process its own count back afterwards, so a stage run from a notebook, a test or beside
    the app does not leave torch at the stage's count (1 thread sums floats in another order than 2)."""

    @functools.wraps(train)
    def run(cfg, *args, **kwargs):
        before = torch.get_num_threads()
        if cfg.num_threads:
            torch.set_num_threads(cfg.num_threads)
        try:
            return train(cfg, *args, **kwargs)
        finally:
            torch.set_num_threads(before)

    return run


def make_accelerator(seed: int, mixed_precision: str = "no"):
    """An ``accelerate.Accelerator`` (CPU here, one or more GPUs under ``accelerate launch``), seeded."""
    from accelerate import Accelerator
    from accelerate.utils import set_seed

    acc = Accelerator(mixed_precision=mixed_precision)
    set_seed(seed)  # seeds python, numpy and torch in this process: a training run is reproducible
    return acc


def caption_states(stimuli_dir: str | Path, cache_dir: str | Path) -> dict[str, torch.Tensor | list[str]]:
    """MiniLM states of every caption of a stimulus set, computed once and cached as safetensors.

    Returns ``label`` (40, L, 384) for the 40 label captions, ``detailed`` (n_images, L, 384) in
    stimulus order, ``empty`` (1, L, 384) for the empty caption (classifier-free guidance), and the
    texts ``label_texts`` / ``detailed_texts``.
    """
    from ..data.classes import CLASSES, label_caption

    records = load_stimulus_metadata(stimuli_dir)
    label_texts = [label_caption(c.index) for c in CLASSES]
    detailed_texts = [r.detailed_caption for r in records]
    cache = Path(cache_dir) / "caption_states.safetensors"
    meta = Path(cache_dir) / "caption_texts.json"
    if cache.is_file() and meta.is_file() and json.loads(meta.read_text()) == {"label": label_texts,
                                                                                "detailed": detailed_texts}:
        states = load_file(cache)
    else:
        enc = CaptionEncoder()
        states = {"label": enc(label_texts), "detailed": enc(detailed_texts), "empty": enc([""])}
        cache.parent.mkdir(parents=True, exist_ok=True)
        save_file({k: v.contiguous() for k, v in states.items()}, cache)
        meta.write_text(json.dumps({"label": label_texts, "detailed": detailed_texts}))
    return {**states, "label_texts": label_texts, "detailed_texts": detailed_texts}


def save_resume(path: str | Path, **state) -> None:
    """Save a resume point (model/optimizer state dicts, step counters) loadable with weights_only=True."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    torch.save(state, tmp)
    tmp.replace(path)  # atomic: a run killed mid-save keeps the previous resume point


def load_resume(path: str | Path) -> dict | None:
    """Load a resume point written by :func:`save_resume` (``None`` if there is none)."""
    path = Path(path)
    return torch.load(path, weights_only=True, map_location="cpu") if path.is_file() else None


def write_metrics(stage_dir: str | Path, metrics: dict) -> None:
    Path(stage_dir).mkdir(parents=True, exist_ok=True)
    (Path(stage_dir) / "metrics.json").write_text(json.dumps(metrics, indent=1, default=_jsonable))


def _jsonable(x):
    if isinstance(x, np.generic):
        return x.item()
    if isinstance(x, torch.Tensor | np.ndarray):
        return x.tolist()
    raise TypeError(f"not JSON serialisable: {type(x).__name__}")
