"""Helpers every training stage shares: seeding, threads, logging, caption states, resume files, and the epoch loop
with early stopping of the EEG stages (:class:`EpochLoop`)."""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import os
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


MIXED_PRECISION = ("no", "fp16", "bf16")
MIXED_PRECISION_ENV = "ACCELERATE_MIXED_PRECISION"  # accelerate's own: 'accelerate launch --mixed_precision' sets it


def resolve_mixed_precision(mixed_precision: str | None, device_type: str) -> str:
    """The mixed precision a stage runs with on ``device_type``: ``mixed_precision``, or (None) the environment's
    ``ACCELERATE_MIXED_PRECISION`` (what ``accelerate launch --mixed_precision`` and ``python -m neuroimagen.train
    --mixed-precision`` set), else ``"no"``.

    ``"fp16"`` needs a GPU: on a CPU accelerate would accept it and silently train in float32 (it autocasts to
    float16 on CUDA only), so it falls back to ``"no"`` here with a warning that says so. ``"bf16"`` stays: accelerate
    autocasts to bfloat16 on a CPU too.
    """
    mp = os.environ.get(MIXED_PRECISION_ENV, "no") if mixed_precision is None else mixed_precision
    mp = str(mp).lower()
    if mp not in MIXED_PRECISION:
        raise ValueError(f"Invalid value for 'mixed_precision': expected one of {list(MIXED_PRECISION)}, but got {mp!r}.")
    if mp == "fp16" and device_type == "cpu":
        logger.warning("mixed_precision 'fp16' needs a CUDA GPU; this stage runs on the CPU, so it trains in float32 "
                       "('no'). Use 'bf16' for mixed precision on a CPU.")
        return "no"
    return mp


def make_accelerator(seed: int, mixed_precision: str | None = None, stage: str | None = None):
    """An ``accelerate.Accelerator`` (CPU here, one or more GPUs under ``accelerate launch``), seeded.

    Every process gets the same seed (the same initial weights, the same batch order); :class:`EpochLoop` gives
    each process its own share of every batch. Processes other than the main one log warnings only (for the
    rest of the stage: :func:`~neuroimagen._logging.verbose` restores the level after it). ``mixed_precision``:
    ``"no"``, ``"fp16"`` or ``"bf16"``; None: the run's (:func:`resolve_mixed_precision`). ``stage``: the name of
    a stage that does not share its batches (the step-counted ones), for a warning when several processes run it.
    """
    from accelerate import Accelerator, PartialState
    from accelerate.utils import parse_flag_from_env, set_seed

    device = PartialState(cpu=parse_flag_from_env("ACCELERATE_USE_CPU")).device
    mp = resolve_mixed_precision(mixed_precision, device.type)
    _allow_mixed_precision(mp)
    acc = Accelerator(mixed_precision=mp)
    launched = int(os.environ.get("WORLD_SIZE", 1))
    if launched != acc.num_processes:  # else each process would train alone on every batch and write the same files
        raise RuntimeError(f"{launched} processes were launched (WORLD_SIZE) but accelerate set up "
                           f"{acc.num_processes}: without a GPU, launch with ACCELERATE_USE_CPU=1 in the environment, "
                           "e.g. 'ACCELERATE_USE_CPU=1 accelerate launch --multi_gpu --num_processes 2 -m neuroimagen.train "
                           "...' (docs/TRAINING.md).")
    set_seed(seed)  # seeds python, numpy and torch in this process: a training run is reproducible
    if not acc.is_main_process:
        logger.setLevel(logging.WARNING)
    if stage is not None and acc.num_processes > 1 and acc.is_main_process:
        logger.warning("%s: every one of the %d processes trains on the same batches (this stage does not share "
                       "them yet): it gains nothing from several processes.", stage, acc.num_processes)
    return acc


def _allow_mixed_precision(mp: str) -> None:
    """Let this process's next ``Accelerator`` use ``mp`` after one with another mixed precision.

    accelerate keeps one ``AcceleratorState`` per process and refuses to change its mixed precision, but one
    ``python -m neuroimagen.train`` process can run stages with different ones (the ``finetune`` stage's autoencoder
    phases in bf16, its UNet phases in float32). Only the accelerator part of the state is cleared, as accelerate's
    own tests do between accelerators; the process group (``PartialState``) is kept."""
    from accelerate.state import AcceleratorState

    if AcceleratorState._shared_state and AcceleratorState().mixed_precision != mp:
        logger.info("mixed precision: %s -> %s for this stage", AcceleratorState().mixed_precision, mp)
        AcceleratorState._reset_state(reset_partial_state=False)


def caption_states(stimuli_dir: str | Path, cache_dir: str | Path, text_encoder: str = MINILM,
                   captions: str | Path | None = None, data: str | Path | None = None
                   ) -> dict[str, torch.Tensor | list[str] | str]:
    """Text-encoder states of every caption of a stimulus set, computed once and cached as safetensors.

    Parameters
    ----------
    stimuli_dir : str | Path
        The stimulus folder: ``metadata.json``, or real images read with ``data`` (the data file), whose detailed
        captions must come from ``captions``.
    cache_dir : str | Path
        Where the states are cached: ``caption_states.safetensors`` for MiniLM, ``caption_states-<name>.safetensors``
        for another encoder (recomputed when the captions or the encoder's name change).
    text_encoder : str
        ``"minilm"`` or a folder / hub id (:class:`~neuroimagen.data.captions.CaptionEncoder`).
    captions : str | Path | None
        A captions file (``python -m neuroimagen.data captions``: BLIP's, as the paper; the stages pass
        ``paths.captions``): the detailed captions from it, else (None) from the stimulus metadata. Every stimulus
        must have a caption in the file (:func:`~neuroimagen.data.image_captions.captions_for`).
    data : str | Path | None
        The EEG-ImageNet data file: it names the images of a folder without ``metadata.json``.

    Returns
    -------
    states : dict
        ``label`` (40, L, D) for the 40 label captions, ``detailed`` (n_images, L, D) in stimulus order, ``empty``
        (1, L, D) for the empty caption (classifier-free guidance), the texts ``label_texts`` / ``detailed_texts``,
        and the encoder's ``text_encoder`` (name) and ``text_encoder_type`` (its ``model_type``).
    """
    records = load_stimulus_metadata(stimuli_dir, data)
    label_texts = [label_caption(c.index) for c in CLASSES]
    if captions is None and not all(r.detailed_caption for r in records):
        raise ValueError(f"The stimulus folder {stimuli_dir} has no metadata.json, so its detailed captions must come "
                         f"from a captions file: 'python -m neuroimagen.data captions --images {stimuli_dir} --captioner "
                         f"Salesforce/blip-image-captioning-large --out captions.json', then train with "
                         f"--captions captions.json (or \"captions\" in the config's paths).")
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
    captions_for([r.file for r in load_stimulus_metadata(paths.stimuli, paths.data)], captions,
                 source=str(paths.captions))
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


RECORD_BATCHES = "NEUROIMAGEN_RECORD_BATCHES"  # a folder: each process appends its batches' indices there (tests)


def record_batches(stage: str, rank: int, batches, **fields) -> None:
    """When the environment variable ``NEUROIMAGEN_RECORD_BATCHES`` names a folder, append one line
    ``{**fields, "batches": [...]}`` to ``<folder>/<stage>-rank<rank>.jsonl``: what process ``rank`` trained on."""
    folder = os.environ.get(RECORD_BATCHES)
    if folder:
        Path(folder).mkdir(parents=True, exist_ok=True)
        with open(Path(folder) / f"{stage}-rank{rank}.jsonl", "a") as f:
            f.write(json.dumps({**fields, "batches": [np.asarray(b).tolist() for b in batches]}) + "\n")


def process_share(acc, per_process: int) -> slice:
    """This process's rows of a global batch of ``per_process`` x N items that every process drew alike (the same
    seed, the same draws): the ``rank``-th block of ``per_process`` (one process: all of them)."""
    rank = acc.process_index if acc is not None else 0
    return slice(rank * per_process, (rank + 1) * per_process)


class EpochLoop:
    """The epochs of a stage that keeps its best epoch: resume, early stopping, save-best, history, resume points.

    ::

        loop = EpochLoop("encoder", out, cfg.epochs, cfg.patience, resume, acc)
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
    acc : accelerate.Accelerator | None
        The stage's accelerator. With N processes (``accelerate launch --num_processes N``), a batch of
        :meth:`shuffled` is one process's share of a global batch N times as large (``batch_size`` is per
        process), :meth:`mean` averages over all processes, and only the main process logs and writes files.
        ``None``: one process.

    Notes
    -----
    Several processes: the gradients of the N shares are averaged (DDP, through ``acc.prepare``), so a step
    is one step on the global batch, as one process would take it with ``batch_size`` x N (exactly so for a loss
    that is a mean over trials, up to batch-norm statistics, which each process takes over its own share, and
    dropout and augmentation draws). N processes take 1/N as many steps per epoch; keep ``lr`` to follow a
    one-process run with the N-times batch, or raise it (linearly, with care for Adam) to follow the
    one-process run with the same per-process batch. Every process validates; the main process's score decides
    when to stop for all.
    """

    def __init__(self, stage: str, out: str | Path, epochs: int, patience: int, resume: bool = False, acc=None):
        self.stage, self.resume_file = stage, Path(out) / "resume.pt"
        self.acc = acc
        self.rank, self.n_processes = (acc.process_index, acc.num_processes) if acc is not None else (0, 1)
        self.is_main = self.rank == 0
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
        """This process's ``batches`` (of indices) with a progress bar named after the stage and the epoch.

        When the environment variable ``NEUROIMAGEN_RECORD_BATCHES`` names a folder, the epoch's indices are
        appended to ``<folder>/<stage>-rank<process>.jsonl`` first (one line per epoch): what each process trained on.
        """
        record_batches(self.stage, self.rank, batches, epoch=self.epoch)
        return progress(batches, desc=f"{self.stage} epoch {self.epoch + 1}", leave=False)

    def shuffled(self, n: int, batch_size: int, generator: torch.Generator, drop_last: bool = False):
        """This process's batches of indices of ``n`` items this epoch, with a progress bar: the global batches of
        ``batch_size`` x N (N processes; :func:`epoch_batches`, the order ``generator`` draws), each cut into N
        consecutive shares, this process's share of each (one process: the batches themselves). A last global
        batch with fewer than N items is left out (every process must take the same number of steps)."""
        batches = epoch_batches(n, batch_size * self.n_processes, generator, drop_last)
        if self.n_processes > 1:
            batches = [b[self.rank * len(b) // self.n_processes:(self.rank + 1) * len(b) // self.n_processes]
                       for b in batches if len(b) >= self.n_processes]
        return self.progress(batches)

    def mean(self, values) -> np.ndarray:
        """The mean of this epoch's per-batch ``values`` (a list of numbers or of tuples: the mean of each) over the
        batches of all processes (each process has as many batches)."""
        local = np.mean(values, axis=0)
        if self.n_processes == 1:
            return local
        total = self.acc.reduce(torch.as_tensor(local, dtype=torch.float64, device=self.acc.device).reshape(-1), "mean")
        return total.cpu().numpy().reshape(np.shape(local))

    def end_epoch(self, score: float, record: dict, save_best: dict, **objects) -> None:
        """Record the epoch (``record`` after its number); when ``score`` is the best yet, save each model of
        ``save_best`` (folder -> model) with ``save_pretrained``; write the resume point with the state dicts
        of ``objects``. Only the main process logs and writes; its ``score`` decides for every process."""
        if self.n_processes > 1:
            # Batch-norm running statistics differ a little between processes (each updates them on its share), so
            # their validation scores may too: the main process's decides, and all stop at the same epoch.
            from accelerate.utils import broadcast

            score = float(broadcast(torch.tensor([score], dtype=torch.float64, device=self.acc.device), 0)[0])
        self.epoch += 1
        self.history.append({"epoch": self.epoch, **record})
        logger.info("%s %s", self.stage, self.history[-1])
        better = score > self.best
        if better:
            self.best, self.bad = score, 0
        else:
            self.bad += 1
        if not self.is_main:
            return
        if better:
            for folder, model in save_best.items():
                model.save_pretrained(folder)
        save_resume(self.resume_file, **{k: v.state_dict() for k, v in objects.items()}, epoch=self.epoch,
                    best=self.best, history=self.history, bad=self.bad)

    def summary(self, cfg) -> dict:
        """The start of the stage's ``metrics.json``: its name, config, mixed precision, epochs and history."""
        return {"stage": self.stage, "config": asdict(cfg),
                "mixed_precision": self.acc.mixed_precision if self.acc is not None else "no",
                "epochs": self.epoch, "history": self.history}

    def cost(self, model) -> dict:
        """The model's parameter count and this run's wall time, for ``metrics.json``."""
        return {"n_params": sum(p.numel() for p in model.parameters()),
                "train_wall_s_this_run": round(time.perf_counter() - self.started, 1)}
