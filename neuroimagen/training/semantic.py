"""Stage ``semantic``: EEG -> caption token states (MSE, as the paper), and the caption bank.

    python -m neuroimagen.train semantic --config configs/tiny.json [--resume]

Targets are the MiniLM states of each trial's label caption and detailed caption
(:func:`~neuroimagen.training.common.caption_states`). The decoder starts from the targets' PCA basis.
``contrastive_weight`` adds an InfoNCE term on pooled states against the 40 label captions. After
training, the readout temperature is fitted on validation trials and the :class:`CaptionBank` saved.
Writes ``<out>/semantic/decoder/`` and ``<out>/semantic/caption_bank/``.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from ..data.captions import pool
from ..data.montage import model_ch_names
from ..data.stimuli import load_stimulus_metadata
from ..models import CaptionBank, SemanticDecoder
from .common import caption_states, load_resume, make_accelerator, save_resume, write_metrics
from .config import Paths
from .eeg_data import load_split, to_tensor
from .encoder import _latency_ms


@dataclass
class Config:
    rank: int = 64  # low-rank basis per caption kind
    hidden: int = 256
    batch_size: int = 128
    lr: float = 1e-3
    weight_decay: float = 1e-3
    epochs: int = 25
    patience: int = 5
    contrastive_weight: float = 0.0  # InfoNCE on pooled states vs the 40 label captions (0: MSE only, as the paper)
    seed: int = 0
    num_threads: int = 0


def _targets(caps: dict, labels: np.ndarray, stim_index: np.ndarray) -> torch.Tensor:
    return torch.stack([caps["label"][torch.from_numpy(labels)], caps["detailed"][torch.from_numpy(stim_index)]], dim=1)


@torch.no_grad()
def predict(model, eeg: np.ndarray, batch: int = 256) -> torch.Tensor:
    model.eval()
    return torch.cat([model(to_tensor(eeg, slice(i, i + batch))) for i in range(0, len(eeg), batch)])


def evaluate(model, bank_states: torch.Tensor, caps: dict, split: dict) -> dict:
    """Class top-1/top-5 from the label readout and cosine to the true captions (pooled)."""
    pred = predict(model, split["eeg"])
    sim = pool(pred[:, 0]) @ pool(bank_states).T
    top = sim.topk(5, dim=1).indices.numpy()
    y = split["labels"]
    target = _targets(caps, split["labels"], split["stim_index"])
    return {"top1": round(float((top[:, 0] == y).mean()), 4), "top5": round(float((top == y[:, None]).any(1).mean()), 4),
            "cosine_label": round(float((pool(pred[:, 0]) * pool(target[:, 0])).sum(1).mean()), 4),
            "cosine_detailed": round(float((pool(pred[:, 1]) * pool(target[:, 1])).sum(1).mean()), 4),
            "mse": round(float(F.mse_loss(pred, target)), 5)}


def train(cfg: Config, paths: Paths, resume: bool = False) -> dict:
    if cfg.num_threads:
        torch.set_num_threads(cfg.num_threads)
    acc = make_accelerator(cfg.seed)
    out = paths.stage_dir("semantic")
    caps = caption_states(paths.stimuli, paths.out)
    tr, va = load_split(paths, "train"), load_split(paths, "val")
    model = SemanticDecoder(n_chans=tr["eeg"].shape[1], n_times=tr["eeg"].shape[2], ch_names=list(model_ch_names()),
                            seq_len=caps["label"].shape[1], hidden_dim=caps["label"].shape[2], rank=cfg.rank,
                            hidden=cfg.hidden)
    y_tr = _targets(caps, tr["labels"], tr["stim_index"])
    model.init_basis([y_tr[:, 0], y_tr[:, 1]])
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    epoch, best, history, bad = 0, -1.0, [], 0
    state = load_resume(out / "resume.pt") if resume else None
    if state is not None:
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        epoch, best, history, bad = int(state["epoch"]), float(state["best"]), list(state["history"]), int(state["bad"])
    model, opt = acc.prepare(model, opt)
    label_pooled = pool(caps["label"])
    t0 = time.perf_counter()
    while epoch < cfg.epochs and bad < cfg.patience:
        g = torch.Generator().manual_seed(cfg.seed * 1000 + epoch)
        perm = torch.randperm(len(y_tr), generator=g).numpy()
        model.train()
        losses = []
        for i in tqdm(range(0, len(perm), cfg.batch_size), desc=f"semantic epoch {epoch + 1}", mininterval=10,
                      leave=False):
            idx = np.sort(perm[i:i + cfg.batch_size])
            pred = model(to_tensor(tr["eeg"], idx).to(acc.device))
            loss = F.mse_loss(pred, y_tr[idx].to(acc.device))
            if cfg.contrastive_weight:
                logits = pool(pred[:, 0]) @ label_pooled.T.to(acc.device) / 0.05
                loss = loss + cfg.contrastive_weight * F.cross_entropy(
                    logits, torch.from_numpy(tr["labels"][idx]).to(acc.device))
            opt.zero_grad(set_to_none=True)
            acc.backward(loss)
            opt.step()
            losses.append(loss.item())
        epoch += 1
        m = acc.unwrap_model(model)
        val = evaluate(m, caps["label"], caps, va)
        history.append({"epoch": epoch, "loss": round(float(np.mean(losses)), 5), **{f"val_{k}": v for k, v in val.items()}})
        tqdm.write(f"semantic {history[-1]}")
        if val["top1"] > best:
            best, bad = val["top1"], 0
            m.save_pretrained(out / "decoder")
        else:
            bad += 1
        save_resume(out / "resume.pt", model=m.state_dict(), optimizer=opt.state_dict(), epoch=epoch, best=best,
                    history=history, bad=bad)

    model = SemanticDecoder.from_pretrained(out / "decoder").eval()
    records = load_stimulus_metadata(paths.stimuli)
    temperature = fit_temperature(predict(model, va["eeg"])[:, 0], caps["label"], va["labels"])
    bank = CaptionBank.build(caps["label_texts"], caps["label"], caps["empty"], caps["detailed_texts"], caps["detailed"],
                             [r.class_index for r in records], temperature=temperature)
    bank.save_pretrained(out / "caption_bank")
    te = load_split(paths, "test")
    metrics = {"stage": "semantic", "config": asdict(cfg), "history": history, "temperature": temperature,
               **{f"test_{k}": v for k, v in evaluate(model, caps["label"], caps, te).items()},
               "inference_ms": _latency_ms(model, te["eeg"]), "train_wall_s_this_run": round(time.perf_counter() - t0, 1)}
    write_metrics(out, metrics)
    return {k: metrics[k] for k in ("test_top1", "test_top5", "test_cosine_label", "test_cosine_detailed")}


def fit_temperature(label_pred: torch.Tensor, label_states: torch.Tensor, labels: np.ndarray) -> float:
    """The softmax temperature on cosine similarities that minimises the validation NLL (grid search)."""
    sim = pool(label_pred) @ pool(label_states).T
    y = torch.from_numpy(np.asarray(labels))
    grid = np.geomspace(0.002, 0.5, 40)
    nll = [float(F.cross_entropy(sim / t, y)) for t in grid]
    return float(grid[int(np.argmin(nll))])
