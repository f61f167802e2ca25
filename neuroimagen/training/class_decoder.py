"""Stage ``class_decoder``: an EEGNet-style CNN trained for the class, combined with the caption readout.

    python -m neuroimagen.train class_decoder --config configs/tiny.json [--resume]

Runs after ``semantic`` (it reads ``<out>/semantic/decoder`` and ``caption_bank``). The CNN
(:class:`~neuroimagen.models.ClassDecoder`) is trained with cross-entropy on the training trials, with the
other EEG stages' channel-subset augmentation, and early stopping on validation top-1. Then the weight ``w``
of the caption readout's log probabilities against the CNN's is chosen on validation trials (the grid
``readout_weights``; the best top-1, ties broken by the lower NLL) and stored in the model's config.
``metrics.json`` holds held-out test top-1 / top-5 of the CNN alone, the readout alone and the combination.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from ..models import CaptionBank, ClassDecoder, SemanticDecoder
from ..models.class_decoder import combine
from .common import EpochLoop, descend, make_accelerator, training_stage, write_metrics
from .config import Paths
from .eeg_data import eeg_stage_inputs, embed_all, latency_ms, load_split, to_tensor


@dataclass
class Config:
    batch_size: int = 64  # per process: N processes (accelerate launch) step on N x this (docs/TRAINING.md)
    lr: float = 1e-3  # AdamW
    weight_decay: float = 1e-3
    dropout: float = 0.25
    epochs: int = 30  # at most
    patience: int = 4  # epochs without validation improvement before stopping
    readout_weights: tuple[float, ...] = (0.0, 0.25, 0.5, 0.75, 1.0)  # the grid w is chosen from (1: readout alone)
    cap_augment: float = 0.0  # probability a training trial is shown as another cap gives it (training.augment)
    seed: int = 0
    num_threads: int = 0  # torch CPU threads (0: leave torch's default)


def readout_probs(paths: Paths, eeg: np.ndarray) -> torch.Tensor | None:
    """The semantic stage's caption-readout class probabilities of ``eeg`` (None when that stage has not run)."""
    folder = paths.stage_dir("semantic")
    if not (folder / "decoder").is_dir() or not (folder / "caption_bank").is_dir():
        return None
    decoder, bank = SemanticDecoder.from_pretrained(folder / "decoder"), CaptionBank.from_pretrained(folder / "caption_bank")
    states = embed_all(decoder, eeg)
    return bank.readout(states, k=1, targets=decoder.config.targets)["class_probs"]


def scores(probs: torch.Tensor, labels: np.ndarray) -> dict:
    """Top-1, top-5 and NLL of class probabilities (n, n_classes) against ``labels``."""
    y = torch.from_numpy(np.asarray(labels)).long()
    top = probs.topk(min(5, probs.shape[1]), dim=1).indices
    return {"top1": round(float((top[:, 0] == y).float().mean()), 4),
            "top5": round(float((top == y[:, None]).any(1).float().mean()), 4),
            "nll": round(float(F.nll_loss(probs.clamp_min(1e-30).log(), y)), 4)}


def choose_weight(logp: torch.Tensor, readout: torch.Tensor | None, labels: np.ndarray,
                  grid: tuple[float, ...]) -> tuple[float, dict]:
    """The readout weight of ``grid`` with the best validation top-1 (ties: lower NLL), and every weight's scores."""
    if readout is None:
        return 0.0, {"0.0": scores(logp.softmax(-1), labels)}
    table = {f"{w:g}": scores(combine(logp, readout, w), labels) for w in grid}
    best = min(grid, key=lambda w: (-table[f"{w:g}"]["top1"], table[f"{w:g}"]["nll"]))
    return float(best), table


@training_stage
def train(cfg: Config, paths: Paths, resume: bool = False) -> dict | None:
    acc = make_accelerator(cfg.seed)
    out = paths.stage_dir("class_decoder")
    tr, va, space, augment = eeg_stage_inputs(paths, acc, cfg.cap_augment, cfg.seed)
    labels = list(torch.load(paths.data, weights_only=True, mmap=True)["labels"])
    model = ClassDecoder(n_chans=tr["eeg"].shape[1], n_times=tr["eeg"].shape[2], **space,
                         labels=labels, dropout=cfg.dropout)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    loop = EpochLoop("class_decoder", out, cfg.epochs, cfg.patience, resume, acc)
    loop.restore(model=model, optimizer=opt)
    model, opt = acc.prepare(model, opt)
    aug_gen = torch.Generator().manual_seed(cfg.seed + 17 + 1000 * loop.epoch)
    y_tr = torch.from_numpy(tr["labels"]).long()
    for epoch in loop:
        g = torch.Generator().manual_seed(cfg.seed * 1000 + epoch)
        model.train()
        losses = []
        for idx in loop.shuffled(len(y_tr), cfg.batch_size, g):
            idx = np.sort(idx.numpy())  # sorted reads from the memory-mapped cache are faster
            loss = F.cross_entropy(model(augment(to_tensor(tr["eeg"], idx), aug_gen).to(acc.device)),
                                   y_tr[idx].to(acc.device))
            descend(acc, opt, loss)
            losses.append(loss.item())
        m = acc.unwrap_model(model)
        val = scores(embed_all(m, va["eeg"]).softmax(-1), va["labels"])
        loop.end_epoch(val["top1"], {"loss": round(float(loop.mean(losses)), 4), **{f"val_{k}": v for k, v in val.items()}},
                       save_best={out: m}, model=m, optimizer=opt)
    if not loop.is_main:
        return None  # the main process chooses the readout weight, measures and writes

    model = ClassDecoder.from_pretrained(out).eval()
    weight, grid = choose_weight(embed_all(model, va["eeg"]).log_softmax(-1), readout_probs(paths, va["eeg"]),
                                 va["labels"], tuple(cfg.readout_weights))
    model.register_to_config(readout_weight=weight)
    model.save_pretrained(out)
    te = load_split(paths, "test")
    logp, readout = embed_all(model, te["eeg"]).log_softmax(-1), readout_probs(paths, te["eeg"])
    test = {"cnn": scores(logp.softmax(-1), te["labels"]), "combined": scores(combine(logp, readout, weight), te["labels"])}
    if readout is not None:
        test["readout"] = scores(readout, te["labels"])
    metrics = {**loop.summary(cfg), "best_val_top1": loop.best, "readout_weight": weight, "val_by_readout_weight": grid,
               "test": test, "test_top1": test["combined"]["top1"], "test_top5": test["combined"]["top5"],
               "inference_ms": latency_ms(model, to_tensor(te["eeg"], slice(0, 1))), **loop.cost(model)}
    write_metrics(out, metrics)
    return {k: metrics[k] for k in ("best_val_top1", "readout_weight", "test_top1", "test_top5", "inference_ms")}
