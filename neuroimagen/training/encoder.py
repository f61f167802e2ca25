"""Stage ``encoder``: the EEG encoder f(x), trained with the paper's triplet loss (eq. 1).

    python -m neuroimagen.train encoder --config configs/tiny.json [--resume]
    python -m neuroimagen.train encoder --config configs/tiny.json --data data/sim_realistic.pth \
        --splits data/sim_realistic_splits.pth --out runs/tiny-realistic

Class-balanced batches (``classes_per_batch`` x ``trials_per_class``) so every anchor has positives and
negatives; online mining (``mining``: batch-hard, Hermans et al. 2017, or semi-hard, Schroff et al. 2015).
The paper's positives are trials of the same class, so the loss keeps what tells classes apart and may
drop what varies inside a class: where the object is and the background colour, which is what the
saliency map must show. ``aux_weight`` adds a linear read-out of an 8 x 8 colour thumbnail of the stimulus
from the features (MSE; the read-out layer is not part of the saved model), so f keeps the layout and
colour too (0 turns it off: the paper's loss alone). Validation each epoch: nearest-class-centroid
accuracy on the features; early stopping on it; the best epoch is saved to ``<out>/encoder/``.
``metrics.json`` holds the held-out test numbers of two probes on the features (nearest centroid and
logistic regression), the thumbnail's R^2 from a ridge probe, and the model's latency on one trial.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from ..models import EEGEncoder
from ..models.eeg_encoder import input_pool_for
from .common import EpochLoop, descend, make_accelerator, training_stage, write_metrics
from .config import Paths
from .eeg_data import (
    balanced_batches,
    centroid_accuracy,
    eeg_stage_inputs,
    embed_all,
    latency_ms,
    load_split,
    to_tensor,
)
from .images import stimulus_thumbnails
from .losses import triplet_loss


@dataclass
class Config:
    arch: str = "conv"  # "conv" (EEGNet-style; more accurate and 3x faster here) or "lstm" (the paper's)
    embed_dim: int = 128  # feature size (L2-normalised)
    hidden_size: int = 128  # LSTM state size (arch="lstm")
    margin: float = 0.2  # triplet margin on L2-normalised features (squared distances in [0, 4])
    mining: str = "semi_hard"  # "semi_hard" or "batch_hard"
    aux_weight: float = 1.0  # weight of the stimulus-thumbnail read-out that keeps layout and colour (0: off)
    classes_per_batch: int = 16  # P classes ...
    trials_per_class: int = 8  # ... x K trials per batch and process (N processes: P x N*K per step, docs/TRAINING.md)
    lr: float = 1e-3  # AdamW
    weight_decay: float = 1e-3
    dropout: float = 0.25
    epochs: int = 25  # at most
    patience: int = 5  # epochs without validation improvement before stopping
    val_subset: int = 3000  # training trials whose class centroids the validation accuracy uses
    cap_augment: float = 0.0  # probability a training trial is shown as another cap gives it (training.augment)
    seed: int = 0
    num_threads: int = 0  # torch CPU threads (0: leave torch's default)


@training_stage
def train(cfg: Config, paths: Paths, resume: bool = False) -> dict | None:
    acc = make_accelerator(cfg.seed)
    out = paths.stage_dir("encoder")
    tr, va, space, augment = eeg_stage_inputs(paths, acc, cfg.cap_augment, cfg.seed)
    thumbs = stimulus_thumbnails(paths.stimuli, data=paths.data)
    model = EEGEncoder(n_chans=tr["eeg"].shape[1], n_times=tr["eeg"].shape[2], **space,
                       arch=cfg.arch, embed_dim=cfg.embed_dim, hidden_size=cfg.hidden_size, dropout=cfg.dropout,
                       pool=input_pool_for(space["sfreq"]))
    aux = torch.nn.Linear(cfg.embed_dim, thumbs.shape[1])  # training-only read-out of the stimulus thumbnail
    opt = torch.optim.AdamW([*model.parameters(), *aux.parameters()], lr=cfg.lr, weight_decay=cfg.weight_decay)
    loop = EpochLoop("encoder", out, cfg.epochs, cfg.patience, resume, acc)
    loop.restore(model=model, aux=aux, optimizer=opt)
    model, aux, opt = acc.prepare(model, aux, opt)
    aug_gen = torch.Generator().manual_seed(cfg.seed + 17 + 1000 * loop.epoch)
    sub = np.sort(np.random.default_rng(cfg.seed).choice(len(tr["labels"]), min(cfg.val_subset, len(tr["labels"])),
                                                         replace=False))
    for epoch in loop:
        rng = np.random.default_rng([cfg.seed, epoch])
        model.train()
        logs = []
        batches = list(balanced_batches(tr["labels"], cfg.classes_per_batch, cfg.trials_per_class, rng,
                                        loop.rank, loop.n_processes))
        for idx in loop.progress(batches):
            idx = np.sort(idx)  # sorted reads from the memory-mapped cache are faster
            emb = model(augment(to_tensor(tr["eeg"], idx), aug_gen).to(acc.device))
            trip = triplet_loss(emb, torch.from_numpy(tr["labels"][idx]).to(acc.device), cfg.margin, cfg.mining)
            loss = trip
            if cfg.aux_weight:
                target = thumbs[torch.from_numpy(tr["stim_index"][idx])].to(acc.device)
                loss = loss + cfg.aux_weight * F.mse_loss(aux(emb), target)
            descend(acc, opt, loss)
            logs.append((loss.item(), trip.item()))
        m = acc.unwrap_model(model)
        top1, top5 = centroid_accuracy(embed_all(m, tr["eeg"][sub]), tr["labels"][sub], embed_all(m, va["eeg"]),
                                       va["labels"])
        loss_mean, trip_mean = loop.mean(logs)
        loop.end_epoch(top1, {"loss": round(float(loss_mean), 4), "triplet": round(float(trip_mean), 4),
                              "val_top1": round(top1, 4), "val_top5": round(top5, 4)},
                       save_best={out: m}, model=m, aux=acc.unwrap_model(aux), optimizer=opt)
    if not loop.is_main:
        return None  # the main process measures and writes the rest
    model = EEGEncoder.from_pretrained(out).eval()
    metrics = {**loop.summary(cfg), "best_val_top1": loop.best, **probe_metrics(model, paths, tr, thumbs),
               "inference_ms": latency_ms(model, to_tensor(tr["eeg"], slice(0, 1))), **loop.cost(model)}
    write_metrics(out, metrics)
    return {k: metrics[k] for k in ("best_val_top1", "test_centroid_top1", "test_logreg_top1", "test_logreg_top5",
                                    "test_thumbnail_r2", "inference_ms")}


def probe_metrics(model, paths: Paths, tr: dict, thumbs: torch.Tensor) -> dict:
    """Held-out test numbers of probes fitted on the training features.

    Class top-1/top-5 of a nearest-centroid and a logistic-regression probe, and the R^2 of a ridge
    probe from the features to the stimulus thumbnail (how much layout and colour the features keep).
    """
    from sklearn.linear_model import LogisticRegression, Ridge

    te = load_split(paths, "test")
    f_tr, f_te = embed_all(model, tr["eeg"]).numpy(), embed_all(model, te["eeg"]).numpy()
    c1, c5 = centroid_accuracy(torch.from_numpy(f_tr), tr["labels"], torch.from_numpy(f_te), te["labels"])
    clf = LogisticRegression(max_iter=1000, C=1.0).fit(f_tr, tr["labels"])
    top5 = clf.classes_[np.argsort(-clf.predict_proba(f_te), axis=1)[:, :5]]
    y_tr, y_te = thumbs[tr["stim_index"]].numpy(), thumbs[te["stim_index"]].numpy()
    pred = Ridge(alpha=1.0).fit(f_tr, y_tr).predict(f_te)
    r2 = 1 - ((pred - y_te) ** 2).sum() / ((y_te - y_tr.mean(0)) ** 2).sum()
    return {"test_centroid_top1": round(c1, 4), "test_centroid_top5": round(c5, 4),
            "test_logreg_top1": round(float((top5[:, 0] == te["labels"]).mean()), 4),
            "test_logreg_top5": round(float((top5 == te["labels"][:, None]).any(1).mean()), 4),
            "test_thumbnail_r2": round(float(r2), 4)}
