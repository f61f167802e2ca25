"""Stage ``classifier``: the evaluation's image classifier (ACC and IS), as the paper's ImageNet classifier.

    python -m neuroimagen.train classifier --config configs/tiny.json [--resume]

Trained on a freshly rendered stimulus set (``per_class`` images per class, another seed, cached in
``<out>/classifier/own_stimuli/``) with augmentation, so it never sees the images of the EEG data set;
validated (early stopping) on the train-split stimuli, never on test images; ``metrics.json`` reports its
accuracy on the test-split stimuli (the images whose reconstructions are scored). Writes ``<out>/classifier/``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from ..data.stimuli import load_stimulus_images, load_stimulus_metadata, make_stimulus_set
from ..models import ImageClassifier
from .common import EpochLoop, descend, make_accelerator, training_stage, write_metrics
from .config import Paths
from .eeg_data import load_split
from .images import images_to_tensor, stimulus_images


@dataclass
class Config:
    per_class: int = 100  # images per class in the classifier's own training set (rendered once, cached)
    render_seed: int = 1  # != the stimulus set's seed (0): other draws of scale, position, rotation, background
    base_channels: int = 32  # width of the first of four conv blocks, doubled in each
    batch_size: int = 64  # per process: N processes (accelerate launch) step on N x this (docs/TRAINING.md)
    lr: float = 2e-3  # AdamW
    epochs: int = 15  # at most
    patience: int = 4  # epochs without validation improvement before stopping
    seed: int = 0
    num_threads: int = 0  # torch CPU threads (0: leave torch's default)


def _split_images(paths: Paths, split: str) -> np.ndarray:
    """Rows of the stimulus metadata whose images are shown in the trials of ``split``."""
    return np.unique(load_split(paths, split)["stim_index"])


@torch.no_grad()
def accuracy(model, x: torch.Tensor, y: torch.Tensor) -> float:
    model.eval()
    pred = torch.cat([model(x[i:i + 256]).argmax(1) for i in range(0, len(x), 256)])
    return round(float((pred == y).float().mean()), 4)


def augment(x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    """Per image: horizontal flip, shift up to 8 px (edge padding), brightness and contrast, and sometimes a
    blur, so the classifier does not rely on exact pixels (reconstructions are blurrier than stimuli)."""
    n = len(x)
    flip = torch.rand(n, generator=g) < 0.5
    x = torch.where(flip[:, None, None, None], x.flip(-1), x)
    theta = torch.zeros(n, 2, 3)
    theta[:, 0, 0] = theta[:, 1, 1] = 1
    theta[:, :, 2] = (torch.rand(n, 2, generator=g) - 0.5) * (16 / x.shape[-1])
    x = F.grid_sample(x, F.affine_grid(theta, list(x.shape), align_corners=False), padding_mode="border",
                      align_corners=False)
    mean = x.mean((1, 2, 3), keepdim=True)
    x = (x - mean) * (0.8 + 0.4 * torch.rand(n, 1, 1, 1, generator=g)) + mean
    x = x + (torch.rand(n, 1, 1, 1, generator=g) - 0.5) * 0.3
    blur = torch.rand(n, generator=g) < 0.3
    x = torch.where(blur[:, None, None, None], F.avg_pool2d(x, 3, stride=1, padding=1, count_include_pad=False), x)
    return x.clamp(-1, 1)


@training_stage
def train(cfg: Config, paths: Paths, resume: bool = False) -> dict | None:
    acc = make_accelerator(cfg.seed)
    out = paths.stage_dir("classifier")
    stim = stimulus_images(paths.stimuli)
    stim_y = torch.tensor([r.class_index for r in load_stimulus_metadata(paths.stimuli)])
    own = out / "own_stimuli"  # the classifier's own training images, rendered once
    with acc.main_process_first():  # by the main process; the others read them
        meta = json.loads((own / "metadata.json").read_text()) if (own / "metadata.json").is_file() else {}
        if (meta.get("per_class"), meta.get("seed"), meta.get("size")) != (cfg.per_class, cfg.render_seed, stim.shape[-1]):
            make_stimulus_set(own, size=stim.shape[-1], per_class=cfg.per_class, seed=cfg.render_seed)
    recs = load_stimulus_metadata(own)
    x_tr, y_tr = images_to_tensor(load_stimulus_images(own, recs)), torch.tensor([r.class_index for r in recs])
    val_i, test_i = torch.from_numpy(_split_images(paths, "train")), torch.from_numpy(_split_images(paths, "test"))
    model = ImageClassifier(n_outputs=len(set(y_tr.tolist())), base_channels=cfg.base_channels)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=1e-4)
    loop = EpochLoop("classifier", out, cfg.epochs, cfg.patience, resume, acc)
    loop.restore(model=model, optimizer=opt)
    model, opt = acc.prepare(model, opt)
    for epoch in loop:
        g = torch.Generator().manual_seed(cfg.seed * 1000 + epoch)
        model.train()
        losses = []
        for idx in loop.shuffled(len(x_tr), cfg.batch_size, g):
            loss = F.cross_entropy(model(augment(x_tr[idx], g).to(acc.device)), y_tr[idx].to(acc.device))
            descend(acc, opt, loss)
            losses.append(loss.item())
        m = acc.unwrap_model(model)
        v = accuracy(m, stim[val_i], stim_y[val_i])
        loop.end_epoch(v, {"loss": round(float(loop.mean(losses)), 4), "val_acc": v},
                       save_best={out: m}, model=m, optimizer=opt)
    if not loop.is_main:
        return None  # the main process measures and writes
    model = ImageClassifier.from_pretrained(out)
    metrics = {**loop.summary(cfg), "best_val_acc": loop.best,
               "test_stimuli_acc": accuracy(model, stim[test_i], stim_y[test_i]), "n_test_stimuli": len(test_i),
               **loop.cost(model)}
    write_metrics(out, metrics)
    return {"best_val_acc": loop.best, "test_stimuli_acc": metrics["test_stimuli_acc"]}
