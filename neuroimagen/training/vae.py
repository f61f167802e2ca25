"""Stage ``vae``: a small diffusers ``AutoencoderKL`` on the stimulus set (64 x 64 -> 16 x 16 x 4).

    python -m neuroimagen.train vae --config configs/tiny.json [--stimuli DIR --out DIR] [--resume]

Writes ``<out>/vae/`` (``config.json`` + safetensors, ``metrics.json``) and a resume file. The loss is
L1 + MSE on pixels plus an L1 on 8 x 8 average-pooled colours: without that colour term the background
colours drift (measured here: beige backgrounds after 400 steps), and the saliency map's colour only
reaches the reconstruction through this autoencoder. A tiny KL keeps the latent space smooth; after
training, ``scaling_factor`` is set so the latents have unit variance, as diffusers expects.

``decoder_steps`` continues for that many more steps with the encoder frozen (the latent space, and so a
UNet trained on it, stays valid): the decoder alone is cheaper per step and its cosine schedule restarts.
Measured on the embedded checkpoint: after 1,200 full steps, the evaluation classifier recognised 37 % of
the VAE's round trips of held-out stimuli (86.5 % of the stimuli themselves), so the decoder capped what any
UNet could reach; ``decoder_steps`` lets an existing run improve the decoder without retraining its UNet.
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
from .common import load_resume, make_accelerator, save_resume, stage_threads, write_metrics
from .config import Paths


@dataclass
class Config:
    block_out_channels: list[int] = field(default_factory=lambda: [32, 64, 64])  # 3 blocks: 64 px -> 16 x 16 latents
    layers_per_block: int = 1  # 1 is 20 % faster than 2 at the same quality here
    latent_channels: int = 4
    batch_size: int = 32
    lr: float = 1e-3  # AdamW, cosine decay to 5 % over max_steps
    max_steps: int = 2500
    decoder_steps: int = 0  # then this many steps training the decoder alone (encoder frozen; latents unchanged)
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


def load_autoencoder(folder):
    """The autoencoder saved in ``folder``: the ``vae`` stage's ``AutoencoderKL`` or the ``decoder`` stage's
    ``AsymmetricAutoencoderKL`` (same encoder and latents, wider decoder), by the class its config.json names."""
    import json
    from pathlib import Path

    from diffusers import AsymmetricAutoencoderKL, AutoencoderKL

    f = Path(folder) / "config.json"
    if not f.is_file():
        raise FileNotFoundError(f"No autoencoder in {folder}: expected a config.json written by the vae or decoder "
                                f"stage (python -m neuroimagen.train vae --config ...).")
    classes = {c.__name__: c for c in (AutoencoderKL, AsymmetricAutoencoderKL)}
    name = json.loads(f.read_text()).get("_class_name")
    if name not in classes:
        raise ValueError(f"{f} is for {name!r}; expected one of {sorted(classes)}.")
    return classes[name].from_pretrained(folder)


def images_to_tensor(images: np.ndarray) -> torch.Tensor:
    """uint8 (n, H, W, 3) -> float (n, 3, H, W) in [-1, 1]."""
    return torch.from_numpy(images).permute(0, 3, 1, 2).float().div(127.5).sub(1.0)


def vae_loss(vae, x: torch.Tensor, cfg: Config, generator: torch.Generator | None = None):
    post = vae.encode(x).latent_dist
    rec = vae.decode(post.sample(generator)).sample
    return pixel_loss(rec, x, cfg) + cfg.kl_weight * post.kl().mean(), rec


def pixel_loss(rec: torch.Tensor, x: torch.Tensor, cfg: Config) -> torch.Tensor:
    """L1 + MSE on pixels plus ``color_weight`` x L1 between 8 x 8 average-pooled colours."""
    color = F.l1_loss(F.avg_pool2d(rec, 8), F.avg_pool2d(x, 8))
    return F.l1_loss(rec, x) + F.mse_loss(rec, x) + cfg.color_weight * color


def split_images(images: torch.Tensor, cfg: Config) -> tuple[torch.Tensor, torch.Tensor]:
    """The vae stage's training and validation images: a permutation seeded by ``cfg.seed``, ``cfg.val_images``
    held out (the decoder stage reuses it, so its validation images stay unseen too)."""
    perm = torch.randperm(len(images), generator=torch.Generator().manual_seed(cfg.seed))
    return images[perm[cfg.val_images:]], images[perm[:cfg.val_images]]


def optimizer_and_resume(model, params, lr: float, lr_fn, resume_file=None):
    """AdamW on ``params`` with the step -> factor ``lr_fn``; with ``resume_file`` (a path, or the dict it holds),
    the model, optimizer and schedule as that resume point left them. Returns (optimizer, scheduler, step, history)."""
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=0.0)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_fn)
    state = resume_file if isinstance(resume_file, dict) else load_resume(resume_file) if resume_file is not None else None
    if state is None:
        return opt, sched, 0, []
    model.load_state_dict(state["model"])
    opt.load_state_dict(state["optimizer"])
    sched.load_state_dict(state["scheduler"])
    return opt, sched, int(state["step"]), list(state["history"])


def optimizer_step(acc, loss, opt, sched, bar, step: int) -> int:
    """Backward, step the optimizer and the schedule, tick the progress bar; returns the new step count."""
    acc.backward(loss)
    opt.step()
    sched.step()
    opt.zero_grad(set_to_none=True)
    bar.update(1)
    if (step + 1) % 50 == 0:
        bar.set_postfix(loss=f"{loss.item():.4f}")
    return step + 1


@stage_threads
def train(cfg: Config, paths: Paths, resume: bool = False) -> dict:
    acc = make_accelerator(cfg.seed)
    out = paths.stage_dir("vae")
    images = images_to_tensor(load_stimulus_images(paths.stimuli))
    train_x, val_x = split_images(images, cfg)

    vae = build_vae(cfg, sample_size=images.shape[-1])
    opt, sched, step, history = optimizer_and_resume(vae, vae.parameters(), cfg.lr, lambda s: lr_factor(s, cfg),
                                                     out / "resume.pt" if resume else None)
    vae, opt = acc.prepare(vae, opt)
    gen = torch.Generator().manual_seed(cfg.seed + step)
    t0 = time.perf_counter()
    total = cfg.max_steps + cfg.decoder_steps
    bar = tqdm(total=total, initial=step, desc="vae", mininterval=10)
    frozen = None  # (images, posterior mean, posterior std) of the frozen encoder, both flips
    while step < total:
        vae.train()
        if step >= cfg.max_steps and frozen is None:
            frozen = _freeze_encoder(acc.unwrap_model(vae), train_x)
            tqdm.write(f"vae: step {step}: encoder frozen, training the decoder for {total - step} more steps")
        if frozen is None:
            idx = torch.randint(len(train_x), (cfg.batch_size,), generator=gen)
            x = train_x[idx].to(acc.device)
            flip = torch.rand(len(x), generator=gen) < 0.5
            x = torch.where(flip[:, None, None, None], x.flip(-1), x)
            loss, _ = vae_loss(acc.unwrap_model(vae), x, cfg)
        else:
            idx = torch.randint(len(frozen[0]), (cfg.batch_size,), generator=gen)
            loss = decoder_loss(acc.unwrap_model(vae), frozen[0][idx], frozen[1][idx], frozen[2][idx], cfg, gen)
        step = optimizer_step(acc, loss, opt, sched, bar, step)
        if step % cfg.save_every == 0 or step in (cfg.max_steps, total):
            val = evaluate_vae(acc.unwrap_model(vae), val_x)
            history.append({"step": step, "train_loss": round(loss.item(), 5), **val})
            tqdm.write(f"vae step {step}: {history[-1]}")
            save_resume(out / "resume.pt", model=acc.unwrap_model(vae).state_dict(), optimizer=opt.state_dict(),
                        scheduler=sched.state_dict(), step=step, history=history)
    bar.close()
    vae = acc.unwrap_model(vae).eval()
    with torch.no_grad():
        lat = torch.cat([vae.encode(train_x[i:i + 256]).latent_dist.mean for i in range(0, len(train_x), 256)])
    vae.register_to_config(scaling_factor=float(1.0 / lat.std()))  # decoder-only steps keep the encoder: same value
    vae.save_pretrained(out)
    metrics = {"stage": "vae", "steps": step, "config": asdict(cfg), "history": history,
               "val": evaluate_vae(vae, val_x), "latent_std": float(lat.std()),
               "train_wall_s_this_run": round(time.perf_counter() - t0, 1)}
    write_metrics(out, metrics)
    return metrics["val"]


def lr_factor(step: int, cfg: Config) -> float:
    """Cosine from 1 to 0.05 over ``max_steps``; restarted over ``decoder_steps`` for the decoder-only phase."""
    if step < cfg.max_steps or not cfg.decoder_steps:
        s, n = min(step, cfg.max_steps), cfg.max_steps
    else:
        s, n = min(step - cfg.max_steps, cfg.decoder_steps), cfg.decoder_steps
    return 0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * s / n))


@torch.no_grad()
def _freeze_encoder(vae, train_x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Stop the encoder's gradients; return the training images (and their mirror images) with their posteriors."""
    for module in (vae.encoder, vae.quant_conv):
        if module is not None:
            module.requires_grad_(False)
    vae.eval()
    x = torch.cat([train_x, train_x.flip(-1)])
    means, stds = [], []
    for i in range(0, len(x), 256):
        post = vae.encode(x[i:i + 256]).latent_dist
        means.append(post.mean)
        stds.append(post.std)
    vae.train()
    return x, torch.cat(means), torch.cat(stds)


def decoder_loss(vae, x: torch.Tensor, mean: torch.Tensor, std: torch.Tensor, cfg: Config,
                 generator: torch.Generator) -> torch.Tensor:
    """``pixel_loss`` of the decoder alone, on a sample of the frozen encoder's posterior (no KL: it is fixed)."""
    rec = vae.decode(mean + std * torch.randn(mean.shape, generator=generator).to(mean.device)).sample
    return pixel_loss(rec, x, cfg)


@torch.no_grad()
def evaluate_vae(vae, x: torch.Tensor) -> dict:
    """Reconstruction error on held-out images: pixel L1 and the mean colour error (8 x 8 pooled), in [0, 255]."""
    vae.eval()
    x = x.to(vae.device)
    rec = torch.cat([vae.decode(vae.encode(x[i:i + 64]).latent_dist.mean).sample for i in range(0, len(x), 64)])
    rec = rec.clamp(-1, 1)
    l1 = (rec - x).abs().mean().item() * 127.5
    color = (F.avg_pool2d(rec, 8) - F.avg_pool2d(x, 8)).abs().mean().item() * 127.5
    return {"val_l1_255": round(l1, 3), "val_color_l1_255": round(color, 3)}
