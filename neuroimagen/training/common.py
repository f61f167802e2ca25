"""Helpers every training stage shares: seeding, threads, logging, caption states, resume files, and the epoch loop
with early stopping of the EEG stages (:class:`EpochLoop`)."""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from tqdm.auto import tqdm

from .._logging import logger, verbose
from ..data.captions import MINILM, CaptionEncoder
from ..data.classes import CLASSES, label_caption
from ..data.image_captions import captions_for, read_captions, write_captions
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


def training_stage(train):
    """Decorate a stage's ``train(cfg, paths, ...)``: :func:`stage_threads` and :func:`~neuroimagen._logging.verbose`."""
    return stage_threads(verbose(train))


def progress(iterable=None, **kwargs):
    """A ``tqdm`` progress bar (updated every 10 s at most), hidden when the log level hides progress lines."""
    return tqdm(iterable, mininterval=10, disable=not logger.isEnabledFor(logging.INFO), **kwargs)


def make_accelerator(seed: int, mixed_precision: str = "no"):
    """An ``accelerate.Accelerator`` (CPU here, one or more GPUs under ``accelerate launch``), seeded."""
    from accelerate import Accelerator
    from accelerate.utils import set_seed

    acc = Accelerator(mixed_precision=mixed_precision)
    set_seed(seed)  # seeds python, numpy and torch in this process: a training run is reproducible
    return acc


def caption_states(stimuli_dir: str | Path, cache_dir: str | Path,
                   text_encoder: str = MINILM, captions: str | Path | None = None) -> dict[str, torch.Tensor | list[str] | str]:
    """Text-encoder states of every caption of a stimulus set, computed once and cached as safetensors.

    Parameters
    ----------
    stimuli_dir : str | Path
        The stimulus folder (``metadata.json``).
    cache_dir : str | Path
        Where the states are cached: ``caption_states.safetensors`` for MiniLM, ``caption_states-<name>.safetensors``
        for another encoder (recomputed when the captions or the encoder's name change).
    text_encoder : str
        ``"minilm"`` or a folder / hub id (:class:`~neuroimagen.data.captions.CaptionEncoder`).
    captions : str | Path | None
        A captions file (``python -m neuroimagen.data captions``: BLIP's, as the paper; the stages pass
        ``paths.captions``): the detailed captions from it, else (None) from the stimulus metadata. Every stimulus
        must have a caption in the file (:func:`~neuroimagen.data.image_captions.captions_for`).

    Returns
    -------
    states : dict
        ``label`` (40, L, D) for the 40 label captions, ``detailed`` (n_images, L, D) in stimulus order, ``empty``
        (1, L, D) for the empty caption (classifier-free guidance), the texts ``label_texts`` / ``detailed_texts``,
        and the encoder's ``text_encoder`` (name) and ``text_encoder_type`` (its ``model_type``).
    """
    records = load_stimulus_metadata(stimuli_dir)
    label_texts = [label_caption(c.index) for c in CLASSES]
    if captions is None:
        detailed_texts = [r.detailed_caption for r in records]
    else:
        detailed_texts = captions_for([r.file for r in records], read_captions(captions), source=str(captions))
    name = MINILM if text_encoder in (None, "", MINILM) else str(text_encoder)
    # MiniLM keeps the original file names and contents, so caches written before other encoders stay valid.
    suffix = "" if name == MINILM else "-" + hashlib.sha256(name.encode()).hexdigest()[:12]
    cache = Path(cache_dir) / f"caption_states{suffix}.safetensors"
    meta = Path(cache_dir) / f"caption_texts{suffix}.json"
    texts = {"label": label_texts, "detailed": detailed_texts}
    known = json.loads(meta.read_text()) if cache.is_file() and meta.is_file() else None
    model_type = (known or {}).pop("model_type", "bert")
    if known is not None and known.pop("text_encoder", MINILM) == name and known == texts:
        states = load_file(cache)
    else:
        enc = CaptionEncoder(name)
        model_type = enc.model_type
        states = {"label": enc(label_texts), "detailed": enc(detailed_texts), "empty": enc([""])}
        cache.parent.mkdir(parents=True, exist_ok=True)
        save_file({k: v.contiguous() for k, v in states.items()}, cache)
        meta.write_text(json.dumps(texts if name == MINILM else {**texts, "text_encoder": name,
                                                                 "model_type": model_type}))
    return {**states, "label_texts": label_texts, "detailed_texts": detailed_texts, "text_encoder": name,
            "text_encoder_type": model_type}


RUN_CAPTIONS = "captions.json"  # the run folder's copy of its captions file: which captions a run was trained on


def use_captions(paths) -> Path | None:
    """Check ``paths.captions`` (when set) against the stimuli and copy it into the run folder as ``captions.json``,
    the record of which captions the run was trained on (the stages read ``paths.captions`` itself, never the copy:
    a later run without captions trains on the stimulus metadata's). Returns the copy's path (None: no file).
    """
    if paths.captions is None:
        return None
    captions = read_captions(paths.captions)
    captions_for([r.file for r in load_stimulus_metadata(paths.stimuli)], captions, source=str(paths.captions))
    return write_captions(captions, Path(paths.out) / RUN_CAPTIONS)


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


def optimizer_and_resume(model, params, lr: float, lr_fn, resume_file=None, weight_decay: float = 0.0):
    """AdamW on ``params`` with the step -> factor ``lr_fn``; with ``resume_file`` (a path, or the dict it holds),
    the model, optimizer and schedule as that resume point left them.

    Returns ``(optimizer, scheduler, step, history, state)``, ``state`` being the resume point (``None``: none).
    """
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_fn)
    state = resume_file if isinstance(resume_file, dict) else load_resume(resume_file) if resume_file is not None else None
    if state is None:
        return opt, sched, 0, [], None
    model.load_state_dict(state["model"])
    opt.load_state_dict(state["optimizer"])
    sched.load_state_dict(state["scheduler"])
    return opt, sched, int(state["step"]), list(state["history"]), state


def epoch_batches(n: int, batch_size: int, generator: torch.Generator, drop_last: bool = False) -> list[torch.Tensor]:
    """One epoch of index batches: a permutation of ``n`` drawn from ``generator``, cut into ``batch_size`` pieces
    (``drop_last``: without the last, shorter one)."""
    perm = torch.randperm(n, generator=generator)
    return [perm[i:i + batch_size] for i in range(0, n - batch_size + 1 if drop_last else n, batch_size)]


def descend(acc, opt, loss: torch.Tensor) -> None:
    """One optimizer step on ``loss`` (gradients cleared first, backward through the accelerator)."""
    opt.zero_grad(set_to_none=True)
    acc.backward(loss)
    opt.step()


class EpochLoop:
    """The epochs of a stage that keeps its best epoch: resume, early stopping, save-best, history, resume points.

    ::

        loop = EpochLoop("encoder", out, cfg.epochs, cfg.patience, resume)
        loop.restore(model=model, optimizer=opt)  # from out/resume.pt when resuming
        for epoch in loop:  # 0, 1, ...: until cfg.epochs, or cfg.patience epochs without a better score
            ...  # train one epoch, validate
            loop.end_epoch(score, {"loss": ...}, save_best={out: model},  # folder: model, at a better score
                           model=model, optimizer=opt)  # the resume point: what restore() reads back

    Parameters
    ----------
    stage : str
        The stage's name (``metrics.json``'s ``stage``, the log lines).
    out : str | Path
        The stage's folder: ``resume.pt`` is written there after every epoch.
    epochs, patience : int
        At most ``epochs`` epochs; stop after ``patience`` epochs without a higher validation score.
    resume : bool
        Continue from ``out/resume.pt`` (its epoch, best score, history and state dicts).
    """

    def __init__(self, stage: str, out: str | Path, epochs: int, patience: int, resume: bool = False):
        self.stage, self.resume_file = stage, Path(out) / "resume.pt"
        self.epochs, self.patience = epochs, patience
        self.epoch, self.best, self.history, self.bad = 0, -1.0, [], 0
        self.started = time.perf_counter()
        self._state = load_resume(self.resume_file) if resume else None
        if self._state is not None:
            s = self._state
            self.epoch, self.best, self.history, self.bad = int(s["epoch"]), float(s["best"]), list(s["history"]), int(
                s["bad"])

    def restore(self, **objects) -> None:
        """Load each module's or optimizer's state dict from the resume point, by name (nothing when not resuming)."""
        if self._state is not None:
            for name, obj in objects.items():
                obj.load_state_dict(self._state[name])

    def __iter__(self):
        self.started = time.perf_counter()
        while self.epoch < self.epochs and self.bad < self.patience:
            yield self.epoch

    def progress(self, batches):
        """``batches`` with a progress bar named after the stage and the epoch."""
        return progress(batches, desc=f"{self.stage} epoch {self.epoch + 1}", leave=False)

    def shuffled(self, n: int, batch_size: int, generator: torch.Generator, drop_last: bool = False):
        """This epoch's batches of indices of ``n`` items in the order ``generator`` draws (:func:`epoch_batches`),
        with a progress bar."""
        return self.progress(epoch_batches(n, batch_size, generator, drop_last))

    def end_epoch(self, score: float, record: dict, save_best: dict, **objects) -> None:
        """Record the epoch (``record`` after its number); when ``score`` is the best yet, save each model of
        ``save_best`` (folder -> model) with ``save_pretrained``; write the resume point with the state dicts
        of ``objects``."""
        self.epoch += 1
        self.history.append({"epoch": self.epoch, **record})
        logger.info("%s %s", self.stage, self.history[-1])
        if score > self.best:
            self.best, self.bad = score, 0
            for folder, model in save_best.items():
                model.save_pretrained(folder)
        else:
            self.bad += 1
        save_resume(self.resume_file, **{k: v.state_dict() for k, v in objects.items()}, epoch=self.epoch,
                    best=self.best, history=self.history, bad=self.bad)

    def summary(self, cfg) -> dict:
        """The start of the stage's ``metrics.json``: its name, config, epochs and history."""
        return {"stage": self.stage, "config": asdict(cfg), "epochs": self.epoch, "history": self.history}

    def cost(self, model) -> dict:
        """The model's parameter count and this run's wall time, for ``metrics.json``."""
        return {"n_params": sum(p.numel() for p in model.parameters()),
                "train_wall_s_this_run": round(time.perf_counter() - self.started, 1)}
