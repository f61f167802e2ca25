"""Stage ``encoder``: the EEG encoder f(x), trained with the paper's triplet loss (batch-hard mining).

    python -m neuroimagen.train encoder --config configs/tiny.json [--resume]

Class-balanced batches (``classes_per_batch`` x ``trials_per_class``) so every anchor has positives and
negatives; validation each epoch by nearest-class-centroid accuracy on the features; early stopping;
the best epoch is saved to ``<out>/encoder/``.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass

import numpy as np
import torch
from tqdm.auto import tqdm

from ..data.montage import model_ch_names
from ..models import EEGEncoder
from .common import load_resume, make_accelerator, save_resume, write_metrics
from .config import Paths
from .eeg_data import balanced_batches, centroid_accuracy, embed_all, load_split, to_tensor
from .losses import triplet_loss


@dataclass
class Config:
    arch: str = "conv"  # "conv" (default: more accurate and faster here) or "lstm" (the paper's)
    embed_dim: int = 128
    margin: float = 0.2  # triplet margin on L2-normalised features (squared distances in [0, 4])
    classes_per_batch: int = 16
    trials_per_class: int = 8
    lr: float = 1e-3
    weight_decay: float = 1e-3
    epochs: int = 25
    patience: int = 5  # epochs without validation improvement before stopping
    seed: int = 0
    num_threads: int = 0  # torch CPU threads (0: leave torch's default)


def train(cfg: Config, paths: Paths, resume: bool = False) -> dict:
    if cfg.num_threads:
        torch.set_num_threads(cfg.num_threads)
    acc = make_accelerator(cfg.seed)
    out = paths.stage_dir("encoder")
    tr, va = load_split(paths, "train"), load_split(paths, "val")
    model = EEGEncoder(n_chans=tr["eeg"].shape[1], n_times=tr["eeg"].shape[2], ch_names=list(model_ch_names()),
                       arch=cfg.arch, embed_dim=cfg.embed_dim)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    epoch, best, history, bad = 0, -1.0, [], 0
    state = load_resume(out / "resume.pt") if resume else None
    if state is not None:
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        epoch, best, history, bad = int(state["epoch"]), float(state["best"]), list(state["history"]), int(state["bad"])
    model, opt = acc.prepare(model, opt)
    t0 = time.perf_counter()
    while epoch < cfg.epochs and bad < cfg.patience:
        rng = np.random.default_rng([cfg.seed, epoch])
        model.train()
        losses = []
        batches = list(balanced_batches(tr["labels"], cfg.classes_per_batch, cfg.trials_per_class, rng))
        for idx in tqdm(batches, desc=f"encoder epoch {epoch + 1}", mininterval=10, leave=False):
            emb = model(to_tensor(tr["eeg"], np.sort(idx)).to(acc.device))
            loss = triplet_loss(emb, torch.from_numpy(tr["labels"][np.sort(idx)]).to(acc.device), cfg.margin)
            opt.zero_grad(set_to_none=True)
            acc.backward(loss)
            opt.step()
            losses.append(loss.item())
        epoch += 1
        m = acc.unwrap_model(model)
        sub = np.random.default_rng(0).choice(len(tr["labels"]), min(3000, len(tr["labels"])), replace=False)
        sub.sort()
        f_tr = embed_all(m, tr["eeg"][sub])
        top1, top5 = centroid_accuracy(f_tr, tr["labels"][sub], embed_all(m, va["eeg"]), va["labels"])
        history.append({"epoch": epoch, "loss": round(float(np.mean(losses)), 4), "val_top1": round(top1, 4),
                        "val_top5": round(top5, 4)})
        tqdm.write(f"encoder {history[-1]}")
        if top1 > best:
            best, bad = top1, 0
            m.save_pretrained(out)
        else:
            bad += 1
        save_resume(out / "resume.pt", model=m.state_dict(), optimizer=opt.state_dict(), epoch=epoch, best=best,
                    history=history, bad=bad)
    model = EEGEncoder.from_pretrained(out).eval()
    metrics = {"stage": "encoder", "config": asdict(cfg), "history": history, "best_val_top1": best,
               **probe_metrics(model, paths, tr), "inference_ms": _latency_ms(model, tr["eeg"]),
               "train_wall_s_this_run": round(time.perf_counter() - t0, 1)}
    write_metrics(out, metrics)
    return {k: metrics[k] for k in ("best_val_top1", "test_centroid_top1", "test_logreg_top1", "inference_ms")}


def probe_metrics(model, paths: Paths, tr: dict) -> dict:
    """Held-out test accuracy of probes on the features: nearest centroid and logistic regression."""
    from sklearn.linear_model import LogisticRegression

    te = load_split(paths, "test")
    f_tr, f_te = embed_all(model, tr["eeg"]), embed_all(model, te["eeg"])
    c1, c5 = centroid_accuracy(f_tr, tr["labels"], f_te, te["labels"])
    clf = LogisticRegression(max_iter=500, C=1.0).fit(f_tr.numpy(), tr["labels"])
    p = clf.predict_proba(f_te.numpy())
    top5 = clf.classes_[np.argsort(-p, axis=1)[:, :5]]
    return {"test_centroid_top1": round(c1, 4), "test_centroid_top5": round(c5, 4),
            "test_logreg_top1": round(float((top5[:, 0] == te["labels"]).mean()), 4),
            "test_logreg_top5": round(float((top5 == te["labels"][:, None]).any(1).mean()), 4)}


@torch.no_grad()
def _latency_ms(model, eeg: np.ndarray, repeats: int = 20) -> float:
    x = to_tensor(eeg, slice(0, 1))
    model(x)
    t0 = time.perf_counter()
    for _ in range(repeats):
        model(x)
    return round((time.perf_counter() - t0) / repeats * 1000, 2)
