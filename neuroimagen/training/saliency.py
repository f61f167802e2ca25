"""Stage ``saliency``: the saliency map generator G(z, f) and its discriminator (a conditional GAN).

    python -m neuroimagen.train saliency --config configs/tiny.json [--resume]

Needs the ``encoder`` stage: the encoder is loaded from ``<out>/encoder/`` and frozen, so its features
f are computed once. The target of each trial is the stimulus it was shown. As the paper: hinge loss
with DiffAugment (colour, translation, cutout) on real and fake images for D, a projection discriminator
conditioned on f; for G, ``adv_weight`` x adversarial + ``ms_weight`` x mode seeking (MSGAN) +
``ssim_weight`` x (1 - SSIM(G(z, f), stimulus)), plus one term of ours: ``thumb_weight`` x L1 between the
8 x 8 average-pooled map and stimulus. Without it the maps came out as one generic beige image whatever
the trial (measured on the demo data after 300 steps: SSIM 0.535 to the trial's stimulus vs 0.527 to
another trial's, mean-colour error 64/255); with it (weight 3) the background's lightness and colour
follow the trial (SSIM 0.649 vs 0.511, colour error 25/255, as low as a ridge read-out of the colour from
the raw EEG gets). Validation each epoch: SSIM of the maps to the held-out trials' stimuli; early
stopping on it. Writes ``<out>/saliency/generator/`` (the pipeline's component),
``<out>/saliency/discriminator/``, ``samples.png`` (test maps under their stimuli) and ``metrics.json``
with the test SSIM next to two references: the SSIM to another trial's stimulus (what the map would get
without the EEG) and to the mean stimulus of the true class (what a perfect class decoder gets).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from ..models import EEGEncoder, SaliencyDiscriminator, SaliencyGenerator
from .common import EpochLoop, descend, make_accelerator, training_stage, write_metrics
from .config import Paths
from .eeg_data import embed_all, latency_ms, load_split
from .images import generate_maps, stimulus_images
from .losses import d_hinge, diff_augment, mode_seeking, ssim


@dataclass
class Config:
    image_size: int = 0  # side of the maps, a power of two (0: the stimuli's own, 128 for real photos); stimuli are
    #                      resized to it (real photos of any size centre-cropped first)
    noise_dim: int = 32  # size of z
    base_channels: int = 128  # generator width at 4 x 4, halved at each upsampling
    disc_channels: int = 16  # discriminator width at 32 x 32, doubled at each downsampling (32 is 2x slower)
    batch_size: int = 64  # per process: N processes (accelerate launch) step on N x this (docs/TRAINING.md)
    lr_g: float = 5e-4  # Adam(0.5, 0.999), as most GANs (2e-4 learned slower here)
    lr_d: float = 2e-4
    adv_weight: float = 0.1  # a1: adversarial
    ms_weight: float = 0.01  # a2: mode seeking
    ssim_weight: float = 1.0  # a3: (1 - SSIM) to the stimulus
    thumb_weight: float = 3.0  # ours: L1 between 8 x 8 thumbnails of map and stimulus (layout and colour; 0: off)
    mse_weight: float = 0.0  # ours: pixel MSE to the stimulus (its optimum is the mean stimulus given f; 0: off)
    epochs: int = 12  # at most
    patience: int = 4  # epochs without validation improvement before stopping
    seed: int = 0
    num_threads: int = 0  # torch CPU threads (0: leave torch's default)

    def __post_init__(self):
        if self.image_size and (self.image_size < 8 or self.image_size & (self.image_size - 1)):
            raise ValueError(f"Invalid value for the saliency stage's 'image_size': expected 0 (the stimuli's own "
                             f"size) or a power of two >= 8, but got {self.image_size!r}.")


def map_metrics(maps: torch.Tensor, stimuli: torch.Tensor, labels: np.ndarray, ref_images: torch.Tensor,
                ref_labels: np.ndarray, seed: int = 0) -> dict:
    """Held-out quality of saliency maps (n, 3, H, W) against the trials' stimuli (all images in [-1, 1]).

    ``ref_images`` with their classes ``ref_labels`` (training stimuli) give the class-mean reference.

    ``ssim``; ``ssim_other_stimulus`` (each map against a random other trial's stimulus: the level
    without information); ``ssim_class_mean`` (the true class's mean stimulus as the map: the level of
    a perfect class decoder with no layout); ``thumb_corr``: correlation of 8 x 8 colour thumbnails (layout
    and colour); ``color_err_255``: mean absolute error of the image's mean colour, in [0, 255].
    """
    perm = np.random.default_rng(seed).permutation(len(maps))
    class_mean = torch.stack([ref_images[torch.from_numpy(ref_labels == c)].mean(0) for c in range(40)])
    ta = F.adaptive_avg_pool2d(maps, 8).flatten(1)
    tb = F.adaptive_avg_pool2d(stimuli, 8).flatten(1)
    ta, tb = ta - ta.mean(1, keepdim=True), tb - tb.mean(1, keepdim=True)
    corr = (ta * tb).sum(1) / (ta.norm(dim=1) * tb.norm(dim=1) + 1e-8)
    return {"ssim": round(float(ssim(maps, stimuli)), 4),
            "ssim_other_stimulus": round(float(ssim(maps, stimuli[perm])), 4),
            "ssim_class_mean": round(float(ssim(class_mean[torch.from_numpy(labels)], stimuli)), 4),
            "thumb_corr": round(float(corr.mean()), 4),
            "color_err_255": round(float((maps.mean((2, 3)) - stimuli.mean((2, 3))).abs().mean() * 127.5), 2)}


def save_samples(maps: torch.Tensor, stimuli: torch.Tensor, path, n: int = 16) -> None:
    """A PNG of ``n`` maps (top row) under their stimuli (bottom row)."""
    grid = torch.cat([torch.cat(list(stimuli[:n]), dim=2), torch.cat(list(maps[:n]), dim=2)], dim=1)
    arr = ((grid.clamp(-1, 1) + 1) * 127.5).round().byte().permute(1, 2, 0).numpy()
    Image.fromarray(arr).save(path)


@training_stage
def train(cfg: Config, paths: Paths, resume: bool = False) -> dict | None:
    acc = make_accelerator(cfg.seed)
    out = paths.stage_dir("saliency")
    encoder = EEGEncoder.from_pretrained(paths.stage_dir("encoder")).eval().requires_grad_(False)
    images = stimulus_images(paths.stimuli, paths.data, size=cfg.image_size or None)  # real photos: cropped, resized
    if cfg.image_size and cfg.image_size != images.shape[-1]:
        images = F.interpolate(images, size=(cfg.image_size, cfg.image_size), mode="bilinear", antialias=True,
                               align_corners=False).clamp(-1, 1)
    with acc.main_process_first():  # the main process writes the caches, the others read them
        tr, va = load_split(paths, "train"), load_split(paths, "val")
    f_tr, f_va = embed_all(encoder, tr["eeg"]), embed_all(encoder, va["eeg"])
    s_tr, s_va = images[torch.from_numpy(tr["stim_index"])], images[torch.from_numpy(va["stim_index"])]
    gen = SaliencyGenerator(feature_dim=f_tr.shape[1], noise_dim=cfg.noise_dim, image_size=images.shape[-1],
                            base_channels=cfg.base_channels)
    disc = SaliencyDiscriminator(feature_dim=f_tr.shape[1], image_size=images.shape[-1], base_channels=cfg.disc_channels)
    opt_g = torch.optim.Adam(gen.parameters(), lr=cfg.lr_g, betas=(0.5, 0.999))
    opt_d = torch.optim.Adam(disc.parameters(), lr=cfg.lr_d, betas=(0.5, 0.999))
    loop = EpochLoop("saliency", out, cfg.epochs, cfg.patience, resume, acc)
    loop.restore(gen=gen, disc=disc, opt_g=opt_g, opt_d=opt_d)
    gen, disc, opt_g, opt_d = acc.prepare(gen, disc, opt_g, opt_d)
    for epoch in loop:
        g = torch.Generator().manual_seed(cfg.seed * 1000 + epoch)
        gen.train()
        disc.train()
        logs = []
        for idx in loop.shuffled(len(f_tr), cfg.batch_size, g, drop_last=True):
            f, real = f_tr[idx].to(acc.device), s_tr[idx].to(acc.device)
            z1 = torch.randn(len(idx), cfg.noise_dim, generator=g).to(acc.device)
            z2 = torch.randn(len(idx), cfg.noise_dim, generator=g).to(acc.device)
            # 1. Discriminator: hinge loss on DiffAugment-ed real and fake images.
            fake = gen(f, z1)
            d_loss = d_hinge(disc(diff_augment(real, g), f), disc(diff_augment(fake.detach(), g), f))
            descend(acc, opt_d, d_loss)
            # 2. Generator: adversarial + mode seeking + (1 - SSIM) and thumbnail L1 to the stimulus.
            fake2 = gen(f, z2)
            adv = -disc(diff_augment(fake, g), f).mean()
            sim = ssim(fake, real)
            thumb = F.l1_loss(F.adaptive_avg_pool2d(fake, 8), F.adaptive_avg_pool2d(real, 8))
            g_loss = (cfg.adv_weight * adv + cfg.ms_weight * mode_seeking(fake, fake2, z1, z2)
                      + cfg.ssim_weight * (1 - sim) + cfg.thumb_weight * thumb)
            if cfg.mse_weight:
                g_loss = g_loss + cfg.mse_weight * F.mse_loss(fake, real)
            descend(acc, opt_g, g_loss)
            logs.append((d_loss.item(), g_loss.item(), sim.item()))
        m, d = acc.unwrap_model(gen), acc.unwrap_model(disc)
        v = round(float(ssim(generate_maps(m, f_va, cfg.seed), s_va)), 4)
        d_l, g_l, s_l = loop.mean(logs)
        loop.end_epoch(v, {"d_loss": round(float(d_l), 4), "g_loss": round(float(g_l), 4),
                           "train_ssim": round(float(s_l), 4), "val_ssim": v},
                       save_best={out / "generator": m, out / "discriminator": d},
                       gen=m, disc=d, opt_g=opt_g, opt_d=opt_d)
    if not loop.is_main:
        return None  # the main process measures and writes
    gen = SaliencyGenerator.from_pretrained(out / "generator").eval()
    te = load_split(paths, "test")
    maps, s_te = generate_maps(gen, embed_all(encoder, te["eeg"]), cfg.seed), images[torch.from_numpy(te["stim_index"])]
    test = map_metrics(maps, s_te, te["labels"], images[tr["stim_index"]], tr["labels"], cfg.seed)
    save_samples(maps[::max(1, len(maps) // 16)], s_te[::max(1, len(maps) // 16)], out / "samples.png")
    metrics = {**loop.summary(cfg), "best_val_ssim": loop.best, **{f"test_{k}": v for k, v in test.items()},
               "inference_ms": latency_ms(gen, embed_all(encoder, te["eeg"][:1]), torch.zeros(1, cfg.noise_dim)),
               **loop.cost(gen)}
    write_metrics(out, metrics)
    return {k: metrics[k] for k in ("best_val_ssim", "test_ssim", "test_ssim_other_stimulus", "test_ssim_class_mean",
                                    "test_thumb_corr")}
