"""Stage ``vae``: a small diffusers ``AutoencoderKL`` on the stimulus set (64 x 64 -> 16 x 16 x 4).

    python -m neuroimagen.train vae --config configs/tiny.json [--stimuli DIR --out DIR] [--resume]

Writes ``<out>/vae/`` (``config.json`` + safetensors, ``metrics.json``) and a resume file. The loss is
L1 + MSE on pixels plus an L1 on 8 x 8 average-pooled colours: without that colour term the background
colours drift (measured here: beige backgrounds after 400 steps), and the saliency map's colour only
reaches the reconstruction through this autoencoder. A tiny KL keeps the latent space smooth; after
training, ``scaling_factor`` is set so the latents have unit variance, as diffusers expects.
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from ..data.stimuli import load_stimulus_images
from .common import load_resume, make_accelerator, save_resume, write_metrics
from .config import Paths


@dataclass
class Config:
    block_out_channels: list[int] = field(default_factory=lambda: [32, 64, 64])  # 3 blocks: 64 px -> 16 x 16 latents
    layers_per_block: int = 1  # 1 is 20 % faster than 2 at the same quality here
    latent_channels: int = 4
    batch_size: int = 32
    lr: float = 1e-3  # AdamW, cosine decay to 5 % over max_steps
    max_steps: int = 2500
    kl_weight: float = 1e-6
    color_weight: float = 1.0  # L1 between 8 x 8 average-pooled input and output
    val_images: int = 128  # held out (the last ones of a seeded permutation) to report reconstruction error
    save_every: int = 250  # steps between resume points
    seed: int = 0
    num_threads: int = 0  # torch CPU threads (0: leave torch's default)


def build_vae(cfg: Config, sample_size: int = 64):
    from diffusers import AutoencoderKL

    n = len(cfg.block_out_channels)
    return AutoencoderKL(in_channels=3, out_channels=3, down_block_types=("DownEncoderBlock2D",) * n,
                         up_block_types=("UpDecoderBlock2D",) * n, block_out_channels=tuple(cfg.block_out_channels),
                         layers_per_block=cfg.layers_per_block, latent_channels=cfg.latent_channels,
                         norm_num_groups=min(32, cfg.block_out_channels[0]), sample_size=sample_size)


def images_to_tensor(images: np.ndarray) -> torch.Tensor:
    """uint8 (n, H, W, 3) -> float (n, 3, H, W) in [-1, 1]."""
    return torch.from_numpy(images).permute(0, 3, 1, 2).float().div(127.5).sub(1.0)


def vae_loss(vae, x: torch.Tensor, cfg: Config, generator: torch.Generator | None = None):
    post = vae.encode(x).latent_dist
    rec = vae.decode(post.sample(generator)).sample
    color = F.l1_loss(F.avg_pool2d(rec, 8), F.avg_pool2d(x, 8))
    loss = F.l1_loss(rec, x) + F.mse_loss(rec, x) + cfg.color_weight * color + cfg.kl_weight * post.kl().mean()
    return loss, rec


def train(cfg: Config, paths: Paths, resume: bool = False) -> dict:
    if cfg.num_threads:
        torch.set_num_threads(cfg.num_threads)
    acc = make_accelerator(cfg.seed)
    out = paths.stage_dir("vae")
    images = images_to_tensor(load_stimulus_images(paths.stimuli))
    perm = torch.randperm(len(images), generator=torch.Generator().manual_seed(cfg.seed))
    train_x, val_x = images[perm[cfg.val_images:]], images[perm[:cfg.val_images]]

    vae = build_vae(cfg, sample_size=images.shape[-1])
    opt = torch.optim.AdamW(vae.parameters(), lr=cfg.lr, weight_decay=0.0)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: 0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * min(s, cfg.max_steps) / cfg.max_steps)))
    step, history = 0, []
    state = load_resume(out / "resume.pt") if resume else None
    if state is not None:
        vae.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        sched.load_state_dict(state["scheduler"])
        step, history = int(state["step"]), list(state["history"])
    vae, opt = acc.prepare(vae, opt)
    gen = torch.Generator().manual_seed(cfg.seed + step)
    t0 = time.perf_counter()
    bar = tqdm(total=cfg.max_steps, initial=step, desc="vae", mininterval=10)
    while step < cfg.max_steps:
        vae.train()
        idx = torch.randint(len(train_x), (cfg.batch_size,), generator=gen)
        x = train_x[idx].to(acc.device)
        flip = torch.rand(len(x), generator=gen) < 0.5
        x = torch.where(flip[:, None, None, None], x.flip(-1), x)
        loss, _ = vae_loss(acc.unwrap_model(vae), x, cfg)
        acc.backward(loss)
        opt.step()
        sched.step()
        opt.zero_grad(set_to_none=True)
        step += 1
        bar.update(1)
        if step % 50 == 0:
            bar.set_postfix(loss=f"{loss.item():.4f}")
        if step % cfg.save_every == 0 or step == cfg.max_steps:
            val = evaluate_vae(acc.unwrap_model(vae), val_x)
            history.append({"step": step, "train_loss": round(loss.item(), 5), **val})
            tqdm.write(f"vae step {step}: {history[-1]}")
            save_resume(out / "resume.pt", model=acc.unwrap_model(vae).state_dict(), optimizer=opt.state_dict(),
                        scheduler=sched.state_dict(), step=step, history=history)
    bar.close()
    vae = acc.unwrap_model(vae).eval()
    with torch.no_grad():
        lat = torch.cat([vae.encode(train_x[i:i + 256]).latent_dist.mean for i in range(0, len(train_x), 256)])
    vae.register_to_config(scaling_factor=float(1.0 / lat.std()))
    vae.save_pretrained(out)
    metrics = {"stage": "vae", "steps": step, "config": asdict(cfg), "history": history,
               "val": evaluate_vae(vae, val_x), "latent_std": float(lat.std()),
               "train_wall_s_this_run": round(time.perf_counter() - t0, 1)}
    write_metrics(out, metrics)
    return metrics["val"]


@torch.no_grad()
def evaluate_vae(vae, x: torch.Tensor) -> dict:
    """Reconstruction error on held-out images: pixel L1 and the mean colour error (8 x 8 pooled), in [0, 255]."""
    vae.eval()
    rec = torch.cat([vae.decode(vae.encode(x[i:i + 64]).latent_dist.mean).sample for i in range(0, len(x), 64)])
    rec = rec.clamp(-1, 1)
    l1 = (rec - x).abs().mean().item() * 127.5
    color = (F.avg_pool2d(rec, 8) - F.avg_pool2d(x, 8)).abs().mean().item() * 127.5
    return {"val_l1_255": round(l1, 3), "val_color_l1_255": round(color, 3)}
