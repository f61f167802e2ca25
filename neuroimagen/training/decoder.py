"""Stage ``decoder``: a new decoder for the trained VAE's frozen encoder: wider (``AsymmetricAutoencoderKL``)
or the VAE's own, fine-tuned (``from_vae``, optionally against a discriminator).

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

``from_vae`` fine-tunes a copy of the VAE's own decoder instead (the folder stays an ``AutoencoderKL``), and
``adversarial_weight`` adds a PatchGAN hinge loss with taming-transformers' adaptive weight, as Stable
Diffusion's autoencoders were trained but without their LPIPS term (its VGG weights do not install from a
registry), so that edges need not be the pixel loss's blurred average. The discriminator acts from the first
step (no warm-up: the decoder starts trained). Measured (``configs/tiny-gan.json``: 2000 steps, batch 16,
lr 1e-4, weight 0.5; 3,781 s CPU, 1,927 s wall on 2 cores): validation L1 6.19/255 against 5.66, and on the
240 trials of ``scripts/reconstruct_grid.py --per-class 6 --split val`` class accuracy 52.1 % against 55.4 %,
SSIM 0.531 against 0.538; the reconstructions look the same to the eye. Not shipped.
"""

from __future__ import annotations

import copy
import math
import time
from dataclasses import asdict, dataclass, field

import torch
import torch.nn.functional as F
from diffusers import AsymmetricAutoencoderKL, AutoencoderKL
from torch import nn

from ..models.diffusion import load_autoencoder
from .autoencoding import (
    FrozenEncoder,
    any_background_error,
    evaluate_vae,
    optimizer_step,
    pixel_loss,
    save_point,
    vae_split,
    with_any_background,
)
from .common import (
    descend,
    load_resume,
    logger,
    make_accelerator,
    optimizer_and_resume,
    progress,
    training_stage,
    write_metrics,
)
from .config import Paths
from .images import stimulus_images


@dataclass
class Config:
    block_out_channels: list[int] = field(default_factory=lambda: [32, 128, 128])  # decoder's, 64 px first
    layers_per_block: int = 1  # the decoder's up blocks have layers_per_block + 1 resnets, as in AutoencoderKL
    batch_size: int = 16
    lr: float = 1e-3  # AdamW, 2 % warm-up then cosine to 5 % over max_steps
    max_steps: int = 4000
    color_weight: float = 1.0  # as the vae stage's: L1 between 8 x 8 average-pooled input and output
    from_vae: bool = False  # fine-tune a copy of the VAE's own decoder (an AutoencoderKL; block_out_channels unused)
    adversarial_weight: float = 0.0  # > 0: add a PatchGAN hinge loss, weighted adaptively (Esser et al., 2021)
    disc_channels: int = 32  # the discriminator's first layer's channels (x 4 after its 3 stride-2 layers)
    disc_lr: float = 2e-4  # AdamW (0.5, 0.9), constant
    # Also train on this many renders per class on random RGB backgrounds (neuroimagen.data.stimuli.render_stimuli
    # with any_background; seed any_background_seed, none of them in the stimulus set): colours no stimulus has,
    # as the start images' flat backgrounds, which a decoder trained on the 8 stimulus backgrounds snaps to them.
    any_background_per_class: int = 0
    any_background_seed: int = 2
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


def patch_discriminator(channels: int = 32) -> torch.nn.Module:
    """The PatchGAN discriminator of taming-transformers (Isola et al., 2017), with GroupNorm: 64 x 64 RGB -> 6 x 6
    logits. Each logit's receptive field (70 px) covers the whole 64 px stimulus and GroupNorm pools over the image,
    so at this size it judges the whole image, 36 times, as a stimulus or a decoded one."""
    layers, c = [nn.Conv2d(3, channels, 4, 2, 1), nn.LeakyReLU(0.2)], channels
    for _ in range(2):
        layers += [nn.Conv2d(c, 2 * c, 4, 2, 1), nn.GroupNorm(min(32, 2 * c), 2 * c), nn.LeakyReLU(0.2)]
        c *= 2
    layers += [nn.Conv2d(c, c, 4, 1, 1), nn.GroupNorm(min(32, c), c), nn.LeakyReLU(0.2), nn.Conv2d(c, 1, 4, 1, 1)]
    return nn.Sequential(*layers)


def adversarial_losses(model, disc, rec: torch.Tensor, x: torch.Tensor, cfg: Config) -> tuple[torch.Tensor, torch.Tensor,
                                                                                            float]:
    """(decoder loss, discriminator loss, adaptive weight). The decoder's loss is the pixel loss plus the hinge
    generator loss times ``adversarial_weight`` x the ratio of the two losses' gradient norms at the decoder's last
    layer (taming-transformers' adaptive weight: the adversarial term never swamps the pixel term). ``rec``: the
    decoder's reconstruction of images ``x``."""
    pixel = pixel_loss(rec, x, cfg.color_weight)
    fake = -disc(rec).mean()
    last = model.decoder.conv_out.weight
    g_pixel = torch.autograd.grad(pixel, last, retain_graph=True)[0]
    g_fake = torch.autograd.grad(fake, last, retain_graph=True)[0]
    weight = (g_pixel.norm() / (g_fake.norm() + 1e-4)).clamp(0, 1e4).item() * cfg.adversarial_weight
    d_loss = 0.5 * (F.relu(1 - disc(x)).mean() + F.relu(1 + disc(rec.detach())).mean())
    return pixel + weight * fake, d_loss, weight


@training_stage
def train(cfg: Config, paths: Paths, resume: bool = False) -> dict:
    acc = make_accelerator(cfg.seed, stage="decoder")
    out = paths.stage_dir("decoder")
    vae = load_autoencoder(paths.stage_dir("vae"))
    if not isinstance(vae, AutoencoderKL):
        raise ValueError(f"The decoder stage widens the vae stage's AutoencoderKL; {paths.stage_dir('vae')} holds a "
                         f"{type(vae).__name__} (a copied pipeline VAE?): run the vae stage there first.")
    train_x, val_x = vae_split(stimulus_images(paths.stimuli), paths.stage_dir("vae"))
    train_x, val_any = with_any_background(train_x, cfg.any_background_per_class, cfg.any_background_seed, "decoder")
    model = copy.deepcopy(vae) if cfg.from_vae else widen(vae, cfg)
    frozen = FrozenEncoder(model, train_x)  # the encoder is the VAE's: its posteriors, both flips, computed once
    state = load_resume(out / "resume.pt") if resume else None
    opt, sched, step, history, _ = optimizer_and_resume(model, [p for p in model.parameters() if p.requires_grad],
                                                        cfg.lr, lambda s: lr_factor(s, cfg), state)
    disc = disc_opt = None
    if cfg.adversarial_weight > 0:
        disc = patch_discriminator(cfg.disc_channels)
        disc_opt = torch.optim.AdamW(disc.parameters(), lr=cfg.disc_lr, betas=(0.5, 0.9), weight_decay=0.0)
        if state is not None and "discriminator" in state:
            disc.load_state_dict(state["discriminator"])
            disc_opt.load_state_dict(state["discriminator_optimizer"])
        disc.to(acc.device)  # not prepared: DDP would refuse its three forward passes before two backward passes
    model, opt = acc.prepare(model, opt)
    gen = torch.Generator().manual_seed(cfg.seed + step)
    t0 = time.perf_counter()
    bar = progress(total=cfg.max_steps, initial=step, desc="decoder")
    while step < cfg.max_steps:
        m = acc.unwrap_model(model)
        m.train()
        m.encoder.eval()
        idx = torch.randint(len(frozen), (cfg.batch_size,), generator=gen)
        rec, x = frozen.decode(m, idx, gen, acc.device)
        extra = {}
        if disc is None:
            loss = pixel_loss(rec, x, cfg.color_weight)
            step = optimizer_step(acc, loss, opt, sched, bar, step)
        else:
            loss, d_loss, weight = adversarial_losses(m, disc, rec, x, cfg)
            step = optimizer_step(acc, loss, opt, sched, bar, step)
            descend(acc, disc_opt, d_loss)  # zero_grad first: drops what the decoder's loss left on the discriminator
            extra = {"disc_loss": round(d_loss.item(), 5), "adaptive_weight": round(weight, 5)}
        if step % cfg.save_every == 0 or step == cfg.max_steps:
            history.append({"step": step, "train_loss": round(loss.item(), 5), **extra, **evaluate_vae(m, val_x),
                            **any_background_error(m, val_any)})
            logger.info("decoder step %d: %s", step, history[-1])
            discs = {} if disc is None else {"discriminator": disc.state_dict(),
                                             "discriminator_optimizer": disc_opt.state_dict()}
            save_point(out, m, opt, sched, step, history, **discs)
    bar.close()
    model = acc.unwrap_model(model).eval()
    model.save_pretrained(out)
    metrics = {"stage": "decoder", "steps": step, "config": asdict(cfg), "history": history,
               "val": evaluate_vae(model, val_x), "vae_decoder_val": evaluate_vae(vae, val_x),
               "val_any_background": any_background_error(model, val_any),
               "vae_decoder_val_any_background": any_background_error(vae, val_any),
               "train_wall_s_this_run": round(time.perf_counter() - t0, 1)}
    write_metrics(out, metrics)
    return metrics["val"]
