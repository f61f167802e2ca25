"""Stage ``decoder``: a wider decoder for the trained VAE's frozen encoder (diffusers ``AsymmetricAutoencoderKL``).

    python -m neuroimagen.train decoder --config configs/tiny.json [--resume]

Reads ``<out>/vae/`` and writes ``<out>/decoder/``: an ``AsymmetricAutoencoderKL`` whose encoder (and
``quant_conv``) are the VAE's, copied and frozen, and whose decoder has its own ``block_out_channels`` and
is trained from scratch on the frozen encoder's posteriors with the VAE's pixel loss. The latent space, the
``scaling_factor`` and so a UNet trained on the VAE's latents stay valid exactly; only the decoder grows.

Why: the reconstructions' class accuracy is bounded by the decoder's round trip (measured on the embedded
checkpoint: the evaluation classifier recognised 62.5 % of round trips of held-out stimuli against 87.5 %
of the stimuli). The (32, 64, 64) decoder plateaued (train loss = validation loss: it underfits), so the
next step is capacity. ``AsymmetricAutoencoderKL`` is the diffusers class made for this (Zhu et al., 2023,
a bigger decoder for a fixed encoder); its mask-conditioning branch is unused here (``decode(z)`` only).
Wider decoder channels sit at the low resolutions, where they are cheap: (32, 128, 128) costs 2.3 s per
step of 32 images on 2 cores against 0.9 s for (32, 64, 64).

``assemble`` ships this VAE instead of ``<out>/vae/`` when its ``wide_decoder`` is true; ``train all`` runs
this stage only when the config has a ``decoder`` entry.

Measured (README, Training): 4000 steps of (32, 128, 128) took validation L1 from 5.66 to 4.78/255 and the
round trips' class accuracy from 65.5 to 70.0 % of 200 held-out stimuli, but the reconstructions' from 54.2
to 52.5 % of 240 held-out demo trials: the UNet's latents limit them, so the embedded checkpoint keeps the
small decoder.
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, field

import torch
from tqdm.auto import tqdm

from ..data.stimuli import load_stimulus_images
from .common import make_accelerator, save_resume, stage_threads, write_metrics
from .config import Paths
from .vae import (
    _freeze_encoder,
    decoder_loss,
    evaluate_vae,
    images_to_tensor,
    load_autoencoder,
    optimizer_and_resume,
    optimizer_step,
    split_images,
)


@dataclass
class Config:
    block_out_channels: list[int] = field(default_factory=lambda: [32, 128, 128])  # decoder's, 64 px first
    layers_per_block: int = 1  # the decoder's up blocks have layers_per_block + 1 resnets, as in AutoencoderKL
    batch_size: int = 16
    lr: float = 1e-3  # AdamW, 2 % warm-up then cosine to 5 % over max_steps
    max_steps: int = 4000
    color_weight: float = 1.0  # as the vae stage's: L1 between 8 x 8 average-pooled input and output
    save_every: int = 250  # steps between resume points (and validation)
    seed: int = 0
    num_threads: int = 0  # torch CPU threads (0: leave torch's default)


def lr_factor(step: int, cfg: Config) -> float:
    warm = max(1, cfg.max_steps // 50)
    if step < warm:
        return (step + 1) / warm
    s = min(step, cfg.max_steps) - warm
    return 0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * s / max(1, cfg.max_steps - warm)))


def widen(vae, cfg: Config):
    """An ``AsymmetricAutoencoderKL`` with ``vae``'s encoder, quant convs and scaling factor, and a new decoder."""
    from diffusers import AsymmetricAutoencoderKL

    c = vae.config
    if len(cfg.block_out_channels) != len(c.block_out_channels):
        raise ValueError(f"decoder block_out_channels {cfg.block_out_channels} must have as many blocks as the VAE's "
                         f"{list(c.block_out_channels)} (the latent grid's size depends on it).")
    n = len(c.block_out_channels)
    wide = AsymmetricAutoencoderKL(
        in_channels=c.in_channels, out_channels=c.out_channels, down_block_types=tuple(c.down_block_types),
        down_block_out_channels=tuple(c.block_out_channels), layers_per_down_block=c.layers_per_block,
        up_block_types=("UpDecoderBlock2D",) * n, up_block_out_channels=tuple(cfg.block_out_channels),
        layers_per_up_block=cfg.layers_per_block, latent_channels=c.latent_channels,
        norm_num_groups=c.norm_num_groups, sample_size=c.sample_size, scaling_factor=c.scaling_factor)
    wide.encoder.load_state_dict(vae.encoder.state_dict())
    wide.quant_conv.load_state_dict(vae.quant_conv.state_dict())
    wide.post_quant_conv.load_state_dict(vae.post_quant_conv.state_dict())
    return wide


def _vae_split(paths: Paths) -> tuple[torch.Tensor, torch.Tensor]:
    """The vae stage's own training and validation images (same seeded permutation), so validation stays held out."""
    import json

    from .vae import Config as VAEConfig

    f = paths.stage_dir("vae") / "metrics.json"
    vcfg = VAEConfig(**json.loads(f.read_text())["config"]) if f.is_file() else VAEConfig()
    return split_images(images_to_tensor(load_stimulus_images(paths.stimuli)), vcfg)


@stage_threads
def train(cfg: Config, paths: Paths, resume: bool = False) -> dict:
    from diffusers import AutoencoderKL

    acc = make_accelerator(cfg.seed)
    out = paths.stage_dir("decoder")
    vae = load_autoencoder(paths.stage_dir("vae"))
    if not isinstance(vae, AutoencoderKL):
        raise ValueError(f"The decoder stage widens the vae stage's AutoencoderKL; {paths.stage_dir('vae')} holds a "
                         f"{type(vae).__name__} (a copied pipeline VAE?): run the vae stage there first.")
    train_x, val_x = _vae_split(paths)
    model = widen(vae, cfg)
    frozen = _freeze_encoder(model, train_x)  # the encoder is the VAE's: its posteriors, both flips, computed once
    opt, sched, step, history = optimizer_and_resume(model, [p for p in model.parameters() if p.requires_grad], cfg.lr,
                                                     lambda s: lr_factor(s, cfg), out / "resume.pt" if resume else None)
    model, opt = acc.prepare(model, opt)
    gen = torch.Generator().manual_seed(cfg.seed + step)
    t0 = time.perf_counter()
    bar = tqdm(total=cfg.max_steps, initial=step, desc="decoder", mininterval=10)
    while step < cfg.max_steps:
        m = acc.unwrap_model(model)
        m.train()
        m.encoder.eval()
        idx = torch.randint(len(frozen[0]), (cfg.batch_size,), generator=gen)
        loss = decoder_loss(m, frozen[0][idx], frozen[1][idx], frozen[2][idx], cfg, gen)
        step = optimizer_step(acc, loss, opt, sched, bar, step)
        if step % cfg.save_every == 0 or step == cfg.max_steps:
            history.append({"step": step, "train_loss": round(loss.item(), 5), **evaluate_vae(m, val_x)})
            tqdm.write(f"decoder step {step}: {history[-1]}")
            save_resume(out / "resume.pt", model=m.state_dict(), optimizer=opt.state_dict(),
                        scheduler=sched.state_dict(), step=step, history=history)
    bar.close()
    model = acc.unwrap_model(model).eval()
    model.save_pretrained(out)
    metrics = {"stage": "decoder", "steps": step, "config": asdict(cfg), "history": history,
               "val": evaluate_vae(model, val_x), "vae_decoder_val": evaluate_vae(vae, val_x),
               "train_wall_s_this_run": round(time.perf_counter() - t0, 1)}
    write_metrics(out, metrics)
    return metrics["val"]
