"""Stage ``classifier``: the evaluation's image classifier (ACC and IS), as the paper's ImageNet classifier.

    python -m neuroimagen.train classifier --config configs/tiny.json [--resume]

Trained on a freshly rendered stimulus set (``per_class`` images per class, another seed), so it never
sees the images of the EEG data set; validated on the train-split stimuli and tested on the test-split
stimuli (the images whose reconstructions are scored). Writes ``<out>/classifier/``.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from ..data.stimuli import load_stimulus_images, load_stimulus_metadata, make_stimulus_set
from ..models import ImageClassifier
from .common import load_resume, make_accelerator, save_resume, write_metrics
from .config import Paths
from .vae import images_to_tensor


@dataclass
class Config:
    per_class: int = 100  # images per class in the classifier's own training set
    render_seed: int = 1  # != the stimulus set's seed: different draws
    base_channels: int = 32
    batch_size: int = 64
    lr: float = 2e-3
    epochs: int = 15
    patience: int = 4
    seed: int = 0
    num_threads: int = 0


def _split_images(paths: Paths, split: str) -> np.ndarray:
    """Rows of the stimulus metadata whose images are shown in ``split``."""
    from .eeg_data import stimulus_index

    obj = torch.load(paths.splits, weights_only=True, mmap=True)
    data = torch.load(paths.data, weights_only=True, mmap=True)["dataset"]
    return np.unique(stimulus_index(paths, np.array([int(data[i]["image"]) for i in obj["splits"][0][split]])))


@torch.no_grad()
def accuracy(model, x: torch.Tensor, y: torch.Tensor) -> float:
    model.eval()
    pred = torch.cat([model(x[i:i + 256]).argmax(1) for i in range(0, len(x), 256)])
    return round(float((pred == y).float().mean()), 4)


def augment(x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    """Random shifts (up to 6 px) and brightness, so it does not rely on exact pixels."""
    n = len(x)
    dx, dy = torch.randint(-6, 7, (2,), generator=g).tolist()
    x = torch.roll(x, shifts=(dy, dx), dims=(2, 3))
    return (x + (torch.rand(n, 1, 1, 1, generator=g) - 0.5) * 0.3).clamp(-1, 1)


def train(cfg: Config, paths: Paths, resume: bool = False) -> dict:
    if cfg.num_threads:
        torch.set_num_threads(cfg.num_threads)
    acc = make_accelerator(cfg.seed)
    out = paths.stage_dir("classifier")
    own = out / "own_stimuli"
    if not (own / "metadata.json").is_file():
        make_stimulus_set(own, per_class=cfg.per_class, seed=cfg.render_seed)
    recs = load_stimulus_metadata(own)
    x_tr, y_tr = images_to_tensor(load_stimulus_images(own, recs)), torch.tensor([r.class_index for r in recs])
    stim_recs = load_stimulus_metadata(paths.stimuli)
    stim = images_to_tensor(load_stimulus_images(paths.stimuli, stim_recs))
    stim_y = torch.tensor([r.class_index for r in stim_recs])
    val_i, test_i = torch.from_numpy(_split_images(paths, "train")), torch.from_numpy(_split_images(paths, "test"))
    model = ImageClassifier(n_outputs=len(set(y_tr.tolist())), base_channels=cfg.base_channels)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=1e-4)
    epoch, best, history, bad = 0, -1.0, [], 0
    state = load_resume(out / "resume.pt") if resume else None
    if state is not None:
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        epoch, best, history, bad = int(state["epoch"]), float(state["best"]), list(state["history"]), int(state["bad"])
    model, opt = acc.prepare(model, opt)
    t0 = time.perf_counter()
    while epoch < cfg.epochs and bad < cfg.patience:
        g = torch.Generator().manual_seed(cfg.seed * 1000 + epoch)
        perm = torch.randperm(len(x_tr), generator=g)
        model.train()
        losses = []
        for i in tqdm(range(0, len(perm), cfg.batch_size), desc=f"classifier epoch {epoch + 1}", mininterval=10,
                      leave=False):
            idx = perm[i:i + cfg.batch_size]
            loss = F.cross_entropy(model(augment(x_tr[idx], g).to(acc.device)), y_tr[idx].to(acc.device))
            opt.zero_grad(set_to_none=True)
            acc.backward(loss)
            opt.step()
            losses.append(loss.item())
        epoch += 1
        m = acc.unwrap_model(model)
        v = accuracy(m, stim[val_i], stim_y[val_i])
        history.append({"epoch": epoch, "loss": round(float(np.mean(losses)), 4), "val_acc": v})
        tqdm.write(f"classifier {history[-1]}")
        if v > best:
            best, bad = v, 0
            m.save_pretrained(out)
        else:
            bad += 1
        save_resume(out / "resume.pt", model=m.state_dict(), optimizer=opt.state_dict(), epoch=epoch, best=best,
                    history=history, bad=bad)
    model = ImageClassifier.from_pretrained(out)
    metrics = {"stage": "classifier", "config": asdict(cfg), "history": history, "best_val_acc": best,
               "test_stimuli_acc": accuracy(model, stim[test_i], stim_y[test_i]),
               "train_wall_s_this_run": round(time.perf_counter() - t0, 1)}
    write_metrics(out, metrics)
    return {"best_val_acc": best, "test_stimuli_acc": metrics["test_stimuli_acc"]}
