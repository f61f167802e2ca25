"""Stage ``saliency``: the saliency map generator G(z, f) and its discriminator (a conditional GAN).

    python -m neuroimagen.train saliency --config configs/tiny.json [--resume]

Needs the ``encoder`` stage (frozen: its features f are computed once). As the paper: hinge loss with
DiffAugment for D; for G, ``adv_weight`` x adversarial + ``ms_weight`` x mode seeking + ``ssim_weight`` x
(1 - SSIM(G(z, f), stimulus)). Validation: SSIM of maps to the held-out trials' stimuli. Writes
``<out>/saliency/generator/`` (the pipeline's component) and ``<out>/saliency/discriminator/``.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass

import numpy as np
import torch
from tqdm.auto import tqdm

from ..data.stimuli import load_stimulus_images
from ..models import EEGEncoder, SaliencyDiscriminator, SaliencyGenerator
from .common import load_resume, make_accelerator, save_resume, write_metrics
from .config import Paths
from .eeg_data import embed_all, load_split
from .losses import d_hinge, diff_augment, mode_seeking, ssim
from .vae import images_to_tensor


@dataclass
class Config:
    noise_dim: int = 32
    base_channels: int = 128  # generator width at 4 x 4
    disc_channels: int = 32
    batch_size: int = 64
    lr_g: float = 2e-4
    lr_d: float = 2e-4  # Adam(0.5, 0.999), as most GANs
    adv_weight: float = 0.1  # a1
    ms_weight: float = 0.01  # a2
    ssim_weight: float = 1.0  # a3: (1 - SSIM) to the stimulus
    epochs: int = 12
    patience: int = 4
    seed: int = 0
    num_threads: int = 0


@torch.no_grad()
def val_ssim(gen, feats: torch.Tensor, stimuli: torch.Tensor, seed: int = 0) -> float:
    gen.eval()
    g = torch.Generator().manual_seed(seed)
    out = []
    for i in range(0, len(feats), 256):
        z = torch.randn(len(feats[i:i + 256]), gen.config.noise_dim, generator=g)
        out.append(ssim(gen(feats[i:i + 256], z), stimuli[i:i + 256]).item() * len(feats[i:i + 256]))
    return round(float(sum(out) / len(feats)), 4)


def train(cfg: Config, paths: Paths, resume: bool = False) -> dict:
    if cfg.num_threads:
        torch.set_num_threads(cfg.num_threads)
    acc = make_accelerator(cfg.seed)
    out = paths.stage_dir("saliency")
    encoder = EEGEncoder.from_pretrained(paths.stage_dir("encoder")).eval().requires_grad_(False)
    images = images_to_tensor(load_stimulus_images(paths.stimuli))
    tr, va = load_split(paths, "train"), load_split(paths, "val")
    f_tr, f_va = embed_all(encoder, tr["eeg"]), embed_all(encoder, va["eeg"])
    s_tr, s_va = images[torch.from_numpy(tr["stim_index"])], images[torch.from_numpy(va["stim_index"])]
    gen = SaliencyGenerator(feature_dim=f_tr.shape[1], noise_dim=cfg.noise_dim, image_size=images.shape[-1],
                            base_channels=cfg.base_channels)
    disc = SaliencyDiscriminator(feature_dim=f_tr.shape[1], image_size=images.shape[-1], base_channels=cfg.disc_channels)
    opt_g = torch.optim.Adam(gen.parameters(), lr=cfg.lr_g, betas=(0.5, 0.999))
    opt_d = torch.optim.Adam(disc.parameters(), lr=cfg.lr_d, betas=(0.5, 0.999))
    epoch, best, history, bad = 0, -1.0, [], 0
    state = load_resume(out / "resume.pt") if resume else None
    if state is not None:
        gen.load_state_dict(state["gen"])
        disc.load_state_dict(state["disc"])
        opt_g.load_state_dict(state["opt_g"])
        opt_d.load_state_dict(state["opt_d"])
        epoch, best, history, bad = int(state["epoch"]), float(state["best"]), list(state["history"]), int(state["bad"])
    gen, disc, opt_g, opt_d = acc.prepare(gen, disc, opt_g, opt_d)
    t0 = time.perf_counter()
    while epoch < cfg.epochs and bad < cfg.patience:
        g = torch.Generator().manual_seed(cfg.seed * 1000 + epoch)
        perm = torch.randperm(len(f_tr), generator=g)
        gen.train()
        disc.train()
        logs = []
        for i in tqdm(range(0, len(perm) - cfg.batch_size + 1, cfg.batch_size), desc=f"saliency epoch {epoch + 1}",
                      mininterval=10, leave=False):
            idx = perm[i:i + cfg.batch_size]
            f, real = f_tr[idx].to(acc.device), s_tr[idx].to(acc.device)
            z1 = torch.randn(len(idx), cfg.noise_dim, generator=g).to(acc.device)
            z2 = torch.randn(len(idx), cfg.noise_dim, generator=g).to(acc.device)
            # Discriminator: hinge loss on DiffAugment-ed real and fake images.
            fake = gen(f, z1)
            d_loss = d_hinge(disc(diff_augment(real, g), f), disc(diff_augment(fake.detach(), g), f))
            opt_d.zero_grad(set_to_none=True)
            acc.backward(d_loss)
            opt_d.step()
            # Generator: adversarial + mode seeking + (1 - SSIM) to the stimulus.
            fake2 = gen(f, z2)
            adv = -disc(diff_augment(fake, g), f).mean()
            sim = ssim(fake, real)
            g_loss = (cfg.adv_weight * adv + cfg.ms_weight * mode_seeking(fake, fake2, z1, z2)
                      + cfg.ssim_weight * (1 - sim))
            opt_g.zero_grad(set_to_none=True)
            acc.backward(g_loss)
            opt_g.step()
            logs.append((d_loss.item(), g_loss.item(), sim.item()))
        epoch += 1
        m = acc.unwrap_model(gen)
        v = val_ssim(m, f_va, s_va)
        d_l, g_l, s_l = np.mean(logs, axis=0)
        history.append({"epoch": epoch, "d_loss": round(float(d_l), 4), "g_loss": round(float(g_l), 4),
                        "train_ssim": round(float(s_l), 4), "val_ssim": v})
        tqdm.write(f"saliency {history[-1]}")
        if v > best:
            best, bad = v, 0
            m.save_pretrained(out / "generator")
            acc.unwrap_model(disc).save_pretrained(out / "discriminator")
        else:
            bad += 1
        save_resume(out / "resume.pt", gen=m.state_dict(), disc=acc.unwrap_model(disc).state_dict(),
                    opt_g=opt_g.state_dict(), opt_d=opt_d.state_dict(), epoch=epoch, best=best, history=history, bad=bad)
    gen = SaliencyGenerator.from_pretrained(out / "generator").eval()
    te = load_split(paths, "test")
    test_ssim = val_ssim(gen, embed_all(encoder, te["eeg"]), images[torch.from_numpy(te["stim_index"])])
    metrics = {"stage": "saliency", "config": asdict(cfg), "history": history, "best_val_ssim": best,
               "test_ssim": test_ssim, "train_wall_s_this_run": round(time.perf_counter() - t0, 1)}
    write_metrics(out, metrics)
    return {"best_val_ssim": best, "test_ssim": test_ssim}
