"""Stage ``classifier``: the evaluation's image classifier (ACC and IS), as the paper's ImageNet classifier.

    python -m neuroimagen.train classifier --config configs/tiny.json [--resume]
    # the robust classifier (blur, noise, colour, down-up and JPEG degradation, crops; shipped as eval_classifier_robust)
    python -m neuroimagen.train classifier --config configs/robust-classifier.json

Trained on a freshly rendered stimulus set (``per_class`` images per class, another seed, cached in
``<out>/classifier/own_stimuli/``) with augmentation, so it never sees the images of the EEG data set;
validated (early stopping) on the train-split stimuli, never on test images; ``metrics.json`` reports its
accuracy on the test-split stimuli (the images whose reconstructions are scored). Writes ``<out>/classifier/``.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from ..data.eeg_imagenet import load_eeg_imagenet
from ..data.stimuli import load_stimulus_images, load_stimulus_metadata, make_stimulus_set
from ..models import ImageClassifier
from .common import EpochLoop, descend, make_accelerator, training_stage, write_metrics
from .config import Paths
from .eeg_data import stimulus_index
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
    # Robustness (defaults: off, today's classifier). Reconstructions are blurred, noisy, colour-shifted and
    # low-resolution versions of a stimulus: each degradation below is applied to an image with probability
    # degrade_prob, at a strength drawn uniformly up to its maximum.
    crop_scale: float = 1.0  # random crops: zoom in to a side fraction drawn in [crop_scale, 1] (1: none)
    colour: float = 0.0  # per-channel gains and saturation drawn in [1 - colour, 1 + colour] (0: none)
    blur_sigma: float = 0.0  # Gaussian blur, sigma in px drawn in [0.3, blur_sigma] (0: none)
    min_side: int = 0  # downscale to a side drawn in [min_side, H) and back up (0: none)
    jpeg_quality: int = 0  # JPEG round trip at a quality drawn in [jpeg_quality, 95] (0: none)
    noise_std: float = 0.0  # Gaussian pixel noise (images in [-1, 1]), std drawn in [0, noise_std] (0: none)
    degrade_prob: float = 0.5  # probability of each degradation above, per image
    cosine_lr: bool = False  # lr decays to 0 over `epochs` with a cosine (False: constant lr)
    val_degraded: bool = False  # validation score: the mean accuracy over clean and DEGRADATIONS (False: clean)
    val_every: int = 1  # validate on every k-th train-split stimulus (1: all; the degraded score costs 8 passes)
    init_from: str | None = None  # start from this ImageClassifier folder (its width; e.g. the shipped one) or not


def split_images(paths: Paths, split: str) -> np.ndarray:
    """Rows of the stimulus metadata whose images are shown in the trials of ``split`` (the EEG is not read)."""
    ds = load_eeg_imagenet(paths.data, paths.splits, split=split, subject=paths.subject)
    return np.unique(stimulus_index(paths, ds.image_ids))


@torch.no_grad()
def accuracy(model, x: torch.Tensor, y: torch.Tensor) -> float:
    model.eval()
    pred = torch.cat([model(x[i:i + 256]).argmax(1) for i in range(0, len(x), 256)])
    return round(float((pred == y).float().mean()), 4)


def gaussian_blur(x: torch.Tensor, sigma: torch.Tensor | float) -> torch.Tensor:
    """Images (n, 3, H, W) blurred with a Gaussian of ``sigma`` px (one value, or one per image; 0: unchanged)."""
    n, c, h, w = x.shape
    sigma = torch.as_tensor(sigma, dtype=x.dtype).expand(n).clamp_min(1e-3)
    r = int(min(torch.ceil(3 * sigma.max()).item(), (min(h, w) - 1) // 2))
    t = torch.arange(-r, r + 1, dtype=x.dtype)
    k = torch.exp(-0.5 * (t / sigma[:, None]) ** 2)
    k = (k / k.sum(1, keepdim=True)).repeat_interleave(c, 0)[:, None]  # (n * c, 1, 2r + 1)
    y = F.pad(x.reshape(1, n * c, h, w), (r, r, r, r), mode="reflect")
    y = F.conv2d(y, k[..., None, :], groups=n * c)
    return F.conv2d(y, k[..., :, None], groups=n * c).reshape(n, c, h, w)


def down_up(x: torch.Tensor, side: int) -> torch.Tensor:
    """Images (n, 3, H, W) downscaled to ``side`` x ``side`` (antialiased) and back up (bilinear): lost detail."""
    small = F.interpolate(x, size=(side, side), mode="bilinear", antialias=True, align_corners=False)
    return F.interpolate(small, size=x.shape[-2:], mode="bilinear", align_corners=False)


def jpeg(x: torch.Tensor, quality: int) -> torch.Tensor:
    """Images (n, 3, H, W) in [-1, 1] through a JPEG round trip at ``quality`` (1-95, PIL)."""
    import io

    from PIL import Image

    out = []
    for img in ((x.clamp(-1, 1) + 1) * 127.5).round().byte().permute(0, 2, 3, 1).numpy():
        buf = io.BytesIO()
        Image.fromarray(img).save(buf, format="JPEG", quality=int(quality))
        out.append(np.array(Image.open(buf).convert("RGB")))
    return images_to_tensor(np.stack(out)).to(x.dtype)


def add_noise(x: torch.Tensor, std: torch.Tensor | float, g: torch.Generator) -> torch.Tensor:
    """Images plus Gaussian pixel noise of ``std`` (one value, or one per image), drawn from ``g``."""
    std = torch.as_tensor(std, dtype=x.dtype).expand(len(x))
    return x + std[:, None, None, None] * torch.randn(x.shape, generator=g, dtype=x.dtype)


# The fixed degradations the robust classifier is measured on (scripts/classifier_robustness.py) and, with
# val_degraded, validated on: name -> f(images in [-1, 1], generator) -> images in [-1, 1].
DEGRADATIONS = {
    "blur sigma 1": lambda x, g: gaussian_blur(x, 1.0),
    "blur sigma 2": lambda x, g: gaussian_blur(x, 2.0),
    "noise std 0.1": lambda x, g: add_noise(x, 0.1, g).clamp(-1, 1),
    "noise std 0.2": lambda x, g: add_noise(x, 0.2, g).clamp(-1, 1),
    "down-up 32 px": lambda x, g: down_up(x, 32),
    "down-up 16 px": lambda x, g: down_up(x, 16),
    "jpeg quality 20": lambda x, g: jpeg(x, 20),
}


def _sometimes(x: torch.Tensor, p: float, g: torch.Generator, f) -> torch.Tensor:
    """``f(x)`` for the images drawn with probability ``p``, ``x`` for the others (``f`` sees only those)."""
    pick = torch.rand(len(x), generator=g) < p
    if pick.any():
        x = x.clone()
        x[pick] = f(x[pick], int(pick.sum()))
    return x


def augment(x: torch.Tensor, g: torch.Generator, cfg: Config | None = None) -> torch.Tensor:
    """Per image: horizontal flip, shift up to 8 px (edge padding), brightness and contrast, and sometimes a
    blur, so the classifier does not rely on exact pixels (reconstructions are blurrier than stimuli).

    With ``cfg``'s robustness options (all off by default, and then the draws are today's exactly): random crops,
    colour jitter, then Gaussian blur, down-up scaling, a JPEG round trip and pixel noise, each with probability
    ``cfg.degrade_prob``. Every draw comes from ``g``.
    """
    cfg = cfg or Config()
    n = len(x)
    flip = torch.rand(n, generator=g) < 0.5
    x = torch.where(flip[:, None, None, None], x.flip(-1), x)
    theta = torch.zeros(n, 2, 3)
    theta[:, 0, 0] = theta[:, 1, 1] = 1
    theta[:, :, 2] = (torch.rand(n, 2, generator=g) - 0.5) * (16 / x.shape[-1])
    if cfg.crop_scale < 1:  # zoom in around a point that keeps the crop inside the image
        s = cfg.crop_scale + (1 - cfg.crop_scale) * torch.rand(n, generator=g)
        theta[:, 0, 0] = theta[:, 1, 1] = s
        theta[:, :, 2] = theta[:, :, 2] * s[:, None] + (1 - s[:, None]) * (2 * torch.rand(n, 2, generator=g) - 1)
    x = F.grid_sample(x, F.affine_grid(theta, list(x.shape), align_corners=False), padding_mode="border",
                      align_corners=False)
    mean = x.mean((1, 2, 3), keepdim=True)
    x = (x - mean) * (0.8 + 0.4 * torch.rand(n, 1, 1, 1, generator=g)) + mean
    x = x + (torch.rand(n, 1, 1, 1, generator=g) - 0.5) * 0.3
    blur = torch.rand(n, generator=g) < 0.3
    x = torch.where(blur[:, None, None, None], F.avg_pool2d(x, 3, stride=1, padding=1, count_include_pad=False), x)
    if cfg.colour > 0:
        def jitter(): return 1 + cfg.colour * (2 * torch.rand(n, 1, 1, 1, generator=g) - 1)  # noqa: E704
        gains = torch.cat([jitter(), jitter(), jitter()], 1)
        gray = x.mean(1, keepdim=True)
        x = (gray + (x - gray) * jitter()) * gains + (gains - 1)  # saturation, then gains about -1 (black stays)
    if cfg.blur_sigma > 0:
        x = _sometimes(x, cfg.degrade_prob, g, lambda v, m: gaussian_blur(
            v, 0.3 + (cfg.blur_sigma - 0.3) * torch.rand(m, generator=g)))
    if cfg.min_side > 0:
        x = _sometimes(x, cfg.degrade_prob, g, lambda v, m: torch.cat([down_up(v[i:i + 1], int(torch.randint(
            cfg.min_side, v.shape[-1], (), generator=g))) for i in range(m)]))
    if cfg.jpeg_quality > 0:
        x = _sometimes(x, cfg.degrade_prob, g, lambda v, m: torch.cat([jpeg(v[i:i + 1], int(torch.randint(
            cfg.jpeg_quality, 96, (), generator=g))) for i in range(m)]))
    if cfg.noise_std > 0:
        x = _sometimes(x, cfg.degrade_prob, g, lambda v, m: add_noise(
            v, cfg.noise_std * torch.rand(m, generator=g), g))
    return x.clamp(-1, 1)


def validation_score(model, x: torch.Tensor, y: torch.Tensor, degraded: bool, seed: int = 0) -> float:
    """Accuracy on ``x``, or with ``degraded`` the mean over ``x`` and each of :data:`DEGRADATIONS` of it."""
    if not degraded:
        return accuracy(model, x, y)
    g = torch.Generator().manual_seed(seed)
    accs = [accuracy(model, x, y)] + [accuracy(model, f(x, g), y) for f in DEGRADATIONS.values()]
    return round(float(np.mean(accs)), 4)


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
    val_i, test_i = torch.from_numpy(split_images(paths, "train")), torch.from_numpy(split_images(paths, "test"))
    model = ImageClassifier(n_outputs=len(set(y_tr.tolist())), base_channels=cfg.base_channels)
    if cfg.init_from:  # fine-tune: the robust classifier learns the degradations far sooner than the classes
        model = ImageClassifier.from_pretrained(cfg.init_from)
        if model.config.n_outputs != len(set(y_tr.tolist())):
            raise ValueError(f"init_from {cfg.init_from} has {model.config.n_outputs} outputs, but the stimuli have "
                             f"{len(set(y_tr.tolist()))} classes.")
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=1e-4)
    loop = EpochLoop("classifier", out, cfg.epochs, cfg.patience, resume, acc)
    loop.restore(model=model, optimizer=opt)
    model, opt = acc.prepare(model, opt)
    for epoch in loop:
        g = torch.Generator().manual_seed(cfg.seed * 1000 + epoch)
        if cfg.cosine_lr:  # a function of the epoch only, so --resume needs no scheduler state
            for group in opt.param_groups:
                group["lr"] = cfg.lr * 0.5 * (1 + math.cos(math.pi * epoch / cfg.epochs))
        model.train()
        losses = []
        for idx in loop.shuffled(len(x_tr), cfg.batch_size, g):
            loss = F.cross_entropy(model(augment(x_tr[idx], g, cfg).to(acc.device)), y_tr[idx].to(acc.device))
            descend(acc, opt, loss)
            losses.append(loss.item())
        m = acc.unwrap_model(model)
        v = validation_score(m, stim[val_i[::cfg.val_every]], stim_y[val_i[::cfg.val_every]], cfg.val_degraded)
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
