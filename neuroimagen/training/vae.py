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
from pathlib import Path

import torch
from diffusers import AutoencoderKL

from ..models.diffusion import build_vae, load_autoencoder
from .autoencoding import (
    VAL_IMAGES,
    FrozenEncoder,
    any_background_error,
    evaluate_vae,
    optimizer_step,
    pixel_loss,
    save_point,
    split_images,
    with_any_background,
)
from .common import logger, make_accelerator, optimizer_and_resume, progress, training_stage, write_metrics
from .config import Paths
from .images import encode_latents, stimulus_images


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
    # Also train on this many renders per class on random RGB backgrounds (seed any_background_seed; none in the
    # stimulus set): a VAE trained on the 8 stimulus backgrounds maps other colours onto them, as the start images'
    # flat backgrounds (the saliency map's mean colour; docs/EXPERIMENTS.md).
    any_background_per_class: int = 0
    any_background_seed: int = 2
    # Fine-tune: start from this AutoencoderKL (a pipeline folder's vae/ or a VAE folder; its architecture, not
    # block_out_channels and the rest). Its latents move, so a UNet must be trained (or fine-tuned) on them after.
    init_from: str = ""
    val_images: int = VAL_IMAGES  # held out (the last ones of a seeded permutation) to report reconstruction error
    save_every: int = 250  # steps between resume points
    seed: int = 0
    num_threads: int = 0  # torch CPU threads (0: leave torch's default)


def vae_loss(vae, x: torch.Tensor, cfg: Config, generator: torch.Generator | None = None):
    post = vae.encode(x).latent_dist
    rec = vae.decode(post.sample(generator)).sample
    return pixel_loss(rec.float(), x, cfg.color_weight) + cfg.kl_weight * post.kl().float().mean(), rec


@training_stage
def train(cfg: Config, paths: Paths, resume: bool = False) -> dict:
    acc = make_accelerator(cfg.seed, stage="vae")
    out = paths.stage_dir("vae")
    images = stimulus_images(paths.stimuli)
    train_x, val_x = split_images(images, cfg.seed, cfg.val_images)
    train_x, val_any = with_any_background(train_x, cfg.any_background_per_class, cfg.any_background_seed, "vae")

    vae = (_warm_start(cfg.init_from) if cfg.init_from else
           build_vae(cfg.block_out_channels, cfg.layers_per_block, cfg.latent_channels, sample_size=images.shape[-1]))
    opt, sched, step, history, _ = optimizer_and_resume(vae, vae.parameters(), cfg.lr, lambda s: lr_factor(s, cfg),
                                                        out / "resume.pt" if resume else None)
    vae, opt = acc.prepare(vae, opt)
    gen = torch.Generator().manual_seed(cfg.seed + step)
    t0 = time.perf_counter()
    total = cfg.max_steps + cfg.decoder_steps
    bar = progress(total=total, initial=step, desc="vae")
    frozen = None  # the frozen encoder's posteriors, once the decoder-only steps begin
    while step < total:
        vae.train()
        if step >= cfg.max_steps and frozen is None:
            frozen = FrozenEncoder(acc.unwrap_model(vae), train_x)
            logger.info("vae: step %d: encoder frozen, training the decoder for %d more steps", step, total - step)
        if frozen is None:
            idx = torch.randint(len(train_x), (cfg.batch_size,), generator=gen)
            x = train_x[idx].to(acc.device)
            flip = torch.rand(len(x), generator=gen) < 0.5
            x = torch.where(flip[:, None, None, None], x.flip(-1), x)
            # the run's mixed precision (--mixed-precision bf16: 1.4 x faster per step on a CPU with AMX, measured
            # here); encode and decode bypass the prepared forward, so the autocast is explicit
            with acc.autocast():
                loss, _ = vae_loss(acc.unwrap_model(vae), x, cfg)
        else:
            idx = torch.randint(len(frozen), (cfg.batch_size,), generator=gen)
            with acc.autocast():
                rec, target = frozen.decode(acc.unwrap_model(vae), idx, gen)
                loss = pixel_loss(rec.float(), target, cfg.color_weight)
        step = optimizer_step(acc, loss, opt, sched, bar, step)
        if step % cfg.save_every == 0 or step in (cfg.max_steps, total):
            history.append({"step": step, "train_loss": round(loss.item(), 5), **evaluate_vae(acc.unwrap_model(vae), val_x),
                            **any_background_error(acc.unwrap_model(vae), val_any)})
            logger.info("vae step %d: %s", step, history[-1])
            save_point(out, acc.unwrap_model(vae), opt, sched, step, history)
    bar.close()
    vae = acc.unwrap_model(vae).eval()
    lat = encode_latents(vae, train_x)[0]
    vae.register_to_config(scaling_factor=float(1.0 / lat.std()))  # decoder-only steps keep the encoder: same value
    vae.save_pretrained(out)
    metrics = {"stage": "vae", "steps": step, "config": asdict(cfg), "history": history,
               "val": evaluate_vae(vae, val_x), "val_any_background": any_background_error(vae, val_any),
               "latent_std": float(lat.std()),
               "train_wall_s_this_run": round(time.perf_counter() - t0, 1)}
    write_metrics(out, metrics)
    return metrics["val"]


def _warm_start(init_from: str) -> AutoencoderKL:
    src = Path(init_from)
    folder = src / "vae" if (src / "vae" / "config.json").is_file() else src
    vae = load_autoencoder(folder)
    if type(vae) is not AutoencoderKL:
        raise ValueError(f"vae init_from: expected an AutoencoderKL (a pipeline folder with vae/ or a VAE folder), got "
                         f"a {type(vae).__name__} in {folder}")
    logger.info("vae: fine-tuning %s", folder)
    return vae


def lr_factor(step: int, cfg: Config) -> float:
    """Cosine from 1 to 0.05 over ``max_steps``; restarted over ``decoder_steps`` for the decoder-only phase."""
    if step < cfg.max_steps or not cfg.decoder_steps:
        s, n = min(step, cfg.max_steps), cfg.max_steps
    else:
        s, n = min(step - cfg.max_steps, cfg.decoder_steps), cfg.decoder_steps
    return 0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * s / n))
