"""Stage ``semantic``: EEG -> caption token states (MSE, as the paper), and the caption bank.

    python -m neuroimagen.train semantic --config configs/tiny.json [--resume]
    python -m neuroimagen.train semantic --config configs/tiny.json --data data/sim_realistic.pth \
        --splits data/sim_realistic_splits.pth --out runs/tiny-realistic

Targets are the text encoder's states of each trial's label caption and detailed caption
(:func:`~neuroimagen.training.common.caption_states`): L x 384 each with MiniLM (``text_encoder: "minilm"``, the
default), 77 x 768 with Stable Diffusion 1.5's CLIP (``text_encoder: "stable-diffusion-v1-5/stable-diffusion-v1-5"``,
or any SD or CLIP text model's folder; the paper's target). The decoder's length and width are the encoder's, and
the caption bank is built in the same space and records which encoder it was (``text_encoder``, its
``text_encoder_type``): in full mode the pipeline feeds the decoded states to a Stable Diffusion whose text encoder
matches, and falls back to the caption's text otherwise. The decoder's output is
``mean + coef @ basis`` per caption kind, and starts from the training targets' mean and PCA basis.
``contrastive_weight`` adds an InfoNCE term on pooled states against the 40 label captions (0: MSE
only, as the paper). Validation each epoch: class top-1 of the label readout on held-out trials; early
stopping on it. After training, the readout temperature is fitted on validation trials and the
:class:`~neuroimagen.models.CaptionBank` saved. Writes ``<out>/semantic/decoder/``,
``<out>/semantic/caption_bank/`` and ``metrics.json`` (held-out test numbers).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from ..data.captions import pool
from ..data.stimuli import load_stimulus_metadata
from ..models import CaptionBank, SemanticDecoder
from .common import (
    EpochLoop,
    caption_states,
    descend,
    make_accelerator,
    training_stage,
    write_metrics,
)
from .config import Paths
from .eeg_data import eeg_stage_inputs, embed_all, latency_ms, load_split, to_tensor


@dataclass
class Config:
    text_encoder: str = "minilm"  # the target space: "minilm", or an SD / CLIP text model's folder or hub id
    rank: int = 48  # low-rank basis per caption kind (the 40 label captions span 39 dimensions)
    hidden: int = 256  # width of the head between the EEG trunk and the basis coefficients
    dropout: float = 0.25
    batch_size: int = 128  # per process: N processes (accelerate launch) step on N x this (docs/TRAINING.md)
    lr: float = 1e-3  # AdamW
    weight_decay: float = 1e-3
    epochs: int = 25  # at most
    patience: int = 5  # epochs without validation improvement before stopping
    contrastive_weight: float = 0.0  # InfoNCE on pooled label states vs the 40 label captions (0: MSE only)
    contrastive_temperature: float = 0.05
    cap_augment: float = 0.0  # probability a training trial is shown as another cap gives it (training.augment)
    seed: int = 0
    num_threads: int = 0  # torch CPU threads (0: leave torch's default)


def _targets(caps: dict, labels: np.ndarray, stim_index: np.ndarray) -> torch.Tensor:
    """(n, 2, L, D): each trial's label-caption and detailed-caption states (drawn per batch: for SD's 77 x 768
    states, all training trials' at once would take gigabytes)."""
    return torch.stack([caps["label"][torch.from_numpy(labels)], caps["detailed"][torch.from_numpy(stim_index)]], dim=1)


def evaluate(pred: torch.Tensor, caps: dict, split: dict) -> dict:
    """Held-out numbers of predicted states ``pred`` (n, 2, L, D) for the trials of ``split``.

    ``top1``/``top5``: class accuracy of the label readout (nearest label caption, pooled cosine);
    ``cosine_label``/``cosine_detailed``: pooled cosine to the trial's own captions; ``detailed_top1_class``:
    how often the nearest detailed caption (of the whole stimulus set) is of the right class;
    ``detailed_top5_exact``: how often the trial's own detailed caption is among the 5 nearest; ``mse``.
    """
    y = split["labels"]
    top = (pool(pred[:, 0]) @ pool(caps["label"]).T).topk(5, dim=1).indices.numpy()
    target = _targets(caps, split["labels"], split["stim_index"])
    det = (pool(pred[:, 1]) @ pool(caps["detailed"]).T).topk(5, dim=1).indices.numpy()
    classes = caps["detailed_classes"]
    return {"top1": round(float((top[:, 0] == y).mean()), 4), "top5": round(float((top == y[:, None]).any(1).mean()), 4),
            "cosine_label": round(float((pool(pred[:, 0]) * pool(target[:, 0])).sum(1).mean()), 4),
            "cosine_detailed": round(float((pool(pred[:, 1]) * pool(target[:, 1])).sum(1).mean()), 4),
            "detailed_top1_class": round(float((classes[det[:, 0]] == y).mean()), 4),
            "detailed_top5_exact": round(float((det == split["stim_index"][:, None]).any(1).mean()), 4),
            "mse": round(float(F.mse_loss(pred, target)), 5)}


@training_stage
def train(cfg: Config, paths: Paths, resume: bool = False) -> dict | None:
    acc = make_accelerator(cfg.seed)
    out = paths.stage_dir("semantic")
    with acc.main_process_first():  # the main process writes the caches, the others read them
        caps = caption_states(paths.stimuli, paths.out, cfg.text_encoder, captions=paths.captions, data=paths.data)
    tr, va, space, augment = eeg_stage_inputs(paths, acc, cfg.cap_augment, cfg.seed)
    records = load_stimulus_metadata(paths.stimuli, paths.data)
    caps["detailed_classes"] = np.array([r.class_index for r in records])
    model = SemanticDecoder(n_chans=tr["eeg"].shape[1], n_times=tr["eeg"].shape[2], **space,
                            seq_len=caps["label"].shape[1], hidden_dim=caps["label"].shape[2], rank=cfg.rank,
                            hidden=cfg.hidden, dropout=cfg.dropout)
    model.init_basis([caps["label"][torch.from_numpy(tr["labels"])], caps["detailed"][torch.from_numpy(tr["stim_index"])]])
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    loop = EpochLoop("semantic", out, cfg.epochs, cfg.patience, resume, acc)
    loop.restore(model=model, optimizer=opt)
    model, opt = acc.prepare(model, opt)
    label_pooled = pool(caps["label"]).to(acc.device)
    aug_gen = torch.Generator().manual_seed(cfg.seed + 17 + 1000 * loop.epoch)
    for epoch in loop:
        g = torch.Generator().manual_seed(cfg.seed * 1000 + epoch)
        model.train()
        losses = []
        for idx in loop.shuffled(len(tr["labels"]), cfg.batch_size, g):
            idx = np.sort(idx.numpy())  # sorted reads from the memory-mapped cache are faster
            pred = model(augment(to_tensor(tr["eeg"], idx), aug_gen).to(acc.device))
            loss = F.mse_loss(pred, _targets(caps, tr["labels"][idx], tr["stim_index"][idx]).to(acc.device))
            if cfg.contrastive_weight:
                logits = pool(pred[:, 0]) @ label_pooled.T / cfg.contrastive_temperature
                loss = loss + cfg.contrastive_weight * F.cross_entropy(
                    logits, torch.from_numpy(tr["labels"][idx]).to(acc.device))
            descend(acc, opt, loss)
            losses.append(loss.item())
        m = acc.unwrap_model(model)
        val = evaluate(embed_all(m, va["eeg"]), caps, va)
        loop.end_epoch(val["top1"], {"loss": round(float(loop.mean(losses)), 5), **{f"val_{k}": v for k, v in val.items()}},
                       save_best={out / "decoder": m}, model=m, optimizer=opt)
    if not loop.is_main:
        return None  # the main process fits the temperature, builds the caption bank, measures and writes

    model = SemanticDecoder.from_pretrained(out / "decoder").eval()
    temperature = fit_temperature(embed_all(model, va["eeg"])[:, 0], caps["label"], va["labels"])
    bank = CaptionBank.build(caps["label_texts"], caps["label"], caps["empty"], caps["detailed_texts"], caps["detailed"],
                             caps["detailed_classes"].tolist(), text_encoder_type=caps["text_encoder_type"],
                             text_encoder=caps["text_encoder"], temperature=temperature)
    bank.save_pretrained(out / "caption_bank")
    te = load_split(paths, "test")
    test = evaluate(embed_all(model, te["eeg"]), caps, te)
    metrics = {**loop.summary(cfg), "best_val_top1": loop.best, "temperature": temperature,
               **{f"test_{k}": v for k, v in test.items()},
               "inference_ms": latency_ms(model, to_tensor(te["eeg"], slice(0, 1))), **loop.cost(model)}
    write_metrics(out, metrics)
    return {k: metrics[k] for k in ("best_val_top1", "test_top1", "test_top5", "test_cosine_label",
                                    "test_cosine_detailed", "inference_ms")}


def fit_temperature(label_pred: torch.Tensor, label_states: torch.Tensor, labels: np.ndarray) -> float:
    """The softmax temperature on pooled cosine similarities that minimises the validation NLL (grid search)."""
    sim = pool(label_pred) @ pool(label_states).T
    y = torch.from_numpy(np.asarray(labels))
    grid = np.geomspace(0.002, 0.5, 40)
    nll = [float(F.cross_entropy(sim / t, y)) for t in grid]
    return round(float(grid[int(np.argmin(nll))]), 5)
