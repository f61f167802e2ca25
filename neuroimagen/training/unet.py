"""Stage ``unet``: a caption-conditioned diffusers ``UNet2DConditionModel`` on the VAE's latents.

    python -m neuroimagen.train unet --config configs/tiny.json [--resume]

Needs the ``vae`` stage's output. The UNet denoises 16 x 16 x 4 latents of the stimulus set,
cross-attending to the L x 384 MiniLM states of a caption: the label caption or the detailed caption
(half each), replaced by the empty caption 10 % of the time so classifier-free guidance works. Latents
are encoded once (posterior mean and std, sampled each step). An EMA of the weights is what gets saved
(``<out>/unet/``, rewritten at every save point, so the latest is always usable) and ``resume.pt`` lets a
stopped run continue (``--resume``); ``max_steps`` can be raised and the run resumed. Several processes
(``accelerate launch``): each step's global batch is ``batch_size`` x N, every process drawing it alike and
training on its own block (``batch_size`` is per process), so a step is one step on the global batch.
"""

from __future__ import annotations

import copy
import json
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from diffusers import UNet2DConditionModel
from PIL import Image
from safetensors.torch import load_file, save_file

from ..data.captions import CaptionEncoder
from ..data.stimuli import load_stimulus_metadata, render_stimuli
from ..models.diffusion import build_scheduler, build_unet, load_autoencoder
from .common import (
    caption_states,
    logger,
    make_accelerator,
    process_share,
    progress,
    record_batches,
    training_stage,
)
from .config import Paths
from .denoising import (
    caption_condition,
    diffusion_loss,
    noised,
    sample_latents,
    save_point,
    training_state,
    unet_step,
)
from .images import encode_latents, images_to_tensor, stimulus_images


@dataclass
class Config:
    block_out_channels: list[int] = field(default_factory=lambda: [64, 128, 128])  # 6.3 M parameters
    layers_per_block: int = 1  # 2 costs 65 % more per step for little gain at this size
    attention_head_dim: int = 8
    # Cross-attention per block, down order: the shipped UNet attends at 16 x 16 and 8 x 8; [false, true, true]
    # attends at 8 x 8 and 4 x 4 only, a third less CPU per step (docs/EXPERIMENTS.md).
    cross_attention: list[bool] = field(default_factory=lambda: [True, True, False])
    prediction_type: str = "epsilon"  # or "v_prediction"; the scheduler the stage saves says which
    snr_gamma: float = 0.0  # min-SNR-gamma loss weighting (Hang et al. 2023; 5 is theirs); 0: plain MSE
    # Train on this many fresh renders per class (the stimulus renderer with fresh_seed, none of them in the data
    # set) instead of the stimulus set's images; 0: the stimulus set (as the shipped UNet).
    fresh_per_class: int = 0
    fresh_seed: int = 1
    # With fresh_per_class: this many more per class on random RGB backgrounds (seed fresh_seed + 1, captions that
    # name no background), so that the start images' flat backgrounds, colours no stimulus has, are kept.
    fresh_any_background_per_class: int = 0
    batch_size: int = 32
    lr: float = 3e-4  # AdamW, linear warm-up then constant (open-ended, resumable), then decay_steps
    warmup_steps: int = 200
    max_steps: int = 20000
    # The last decay_steps of max_steps anneal the learning rate to zero (cosine); 0 keeps it constant.
    # A run stopped at a plateau can be resumed with max_steps raised by decay_steps to finish it.
    decay_steps: int = 0
    ema_decay: float = 0.999
    caption_dropout: float = 0.1  # empty caption this often: enables classifier-free guidance
    label_caption_prob: float = 0.5  # label caption this often, else the detailed caption
    num_train_timesteps: int = 1000
    beta_schedule: str = "scaled_linear"  # as Stable Diffusion
    save_every: int = 250
    sample_every: int = 1000  # write a grid of text-to-image samples (DDIM, 25 steps) to watch progress
    seed: int = 0
    snapshot_every: int = 0  # also keep the EMA weights at every this many steps in <out>/snapshots/ (0: never)
    num_threads: int = 0  # torch CPU threads (0: leave torch's default)
    # Warm start: a pipeline folder (e.g. checkpoints/neuroimagen-tiny) or a UNet folder whose weights (and
    # architecture: block_out_channels and the rest are then ignored) start this run (its VAE is copied to
    # <out>/vae when that is missing, so the latent space matches). Run folders are
    # not in the repository, so this is how training continues from the shipped checkpoint.
    init_from: str = ""


@training_stage
def train(cfg: Config, paths: Paths, resume: bool = False) -> dict:
    if cfg.fresh_per_class and paths.captions is not None:
        raise ValueError("unet: fresh_per_class draws new stimuli, which have no captions in the captions file "
                         f"{paths.captions}; train on the stimulus set (fresh_per_class 0) with a captions file.")
    acc = make_accelerator(cfg.seed)
    out = paths.stage_dir("unet")
    init_unet = _warm_start(cfg.init_from, paths) if cfg.init_from and not resume else None
    vae = load_autoencoder(paths.stage_dir("vae")).eval()  # only its encoder is used: either class will do
    sf = vae.config.scaling_factor
    caps = caption_states(paths.stimuli, paths.out, captions=paths.captions)
    label_states, empty = caps["label"], caps["empty"][0]
    with acc.main_process_first():  # the main process writes the fresh renders' caption cache, the others read it
        lat_mean, lat_std, classes, detailed_states = training_images(cfg, paths, vae, caps["detailed"])

    if init_unet is not None:  # its architecture, not block_out_channels and the rest (as the vae stage's init_from)
        unet = init_unet.to(torch.float32)
    elif resume and (out / "config.json").is_file():  # the architecture the run saved (a warm start's too)
        unet = UNet2DConditionModel.from_config(UNet2DConditionModel.load_config(out))
    else:
        unet = build_unet(cfg.block_out_channels, cfg.layers_per_block, cfg.attention_head_dim,
                          sample_size=lat_mean.shape[-1], latent_channels=lat_mean.shape[1],
                          cross_attention_dim=label_states.shape[-1], cross_attention=cfg.cross_attention)
    sched = build_scheduler(cfg.num_train_timesteps, cfg.beta_schedule, cfg.prediction_type)
    ema, opt, lr_sched, step, history, before = training_state(unet, cfg, out / "resume.pt", resume)
    unet, opt = acc.prepare(unet, opt)
    gen = torch.Generator().manual_seed(cfg.seed * 100003 + step)
    alphas = sched.alphas_cumprod
    t0, c0 = time.perf_counter(), time.process_time()
    bar = progress(total=cfg.max_steps, initial=step, desc="unet")
    running = []
    share = process_share(acc, cfg.batch_size)  # N processes: each takes its block of a global batch N x batch_size
    while step < cfg.max_steps:
        unet.train()
        # Every process draws the whole global batch alike (the generators stay in step) and trains on its share;
        # DDP averages the shares' gradients: the step one process would take on the global batch.
        idx = torch.randint(len(lat_mean), (cfg.batch_size * acc.num_processes,), generator=gen)
        z = sample_latents(lat_mean, lat_std, idx, sf, gen)
        cond = caption_condition(classes[idx], detailed_states[idx], label_states, empty, cfg, gen)
        noise = torch.randn(z.shape, generator=gen)
        t = torch.randint(0, cfg.num_train_timesteps, (len(idx),), generator=gen)
        noisy = noised(alphas, t, z, noise)
        record_batches("unet", acc.process_index, [idx[share]], step=step)
        pred = unet(noisy[share].to(acc.device), t[share].to(acc.device), cond[share].to(acc.device)).sample
        loss = diffusion_loss(pred, z[share], noise[share], t[share], alphas, cfg.prediction_type, cfg.snr_gamma)
        step = unet_step(acc, unet, loss, opt, lr_sched, ema, step, cfg.ema_decay)
        running.append(float(acc.reduce(loss.detach(), "mean")) if acc.num_processes > 1 else loss.item())
        bar.update(1)
        if not acc.is_main_process:
            continue  # the main process logs and writes
        if step % 50 == 0:
            bar.set_postfix(loss=f"{np.mean(running[-50:]):.4f}")
        if step % cfg.save_every == 0 or step == cfg.max_steps:
            history.append({"step": step, "loss": round(float(np.mean(running[-cfg.save_every:])), 5),
                            "lr": float(f"{opt.param_groups[0]['lr']:.3g}"), "wall_s": round(time.perf_counter() - t0, 1),
                            "cpu_s": round(before[0] + time.process_time() - c0, 1)})
            logger.info("unet %s", history[-1])
            save_point(out, ema, acc.unwrap_model(unet), opt, lr_sched, step, history, before, (c0, t0),
                       {"stage": "unet", "config": asdict(cfg)})
        if cfg.snapshot_every and step % cfg.snapshot_every == 0:
            ema.save_pretrained(out / "snapshots" / f"step{step:06d}")
        if step % cfg.sample_every == 0:
            save_sample_grid(ema, vae, sched, label_states, empty, out / f"samples_step{step:06d}.png", cfg.seed)
    bar.close()
    return {"steps": step, "final_loss": history[-1]["loss"] if history else None}


def training_images(cfg: Config, paths: Paths, vae, stimulus_captions: torch.Tensor):
    """What the UNet learns to draw: ``(latent means, latent stds, classes, detailed caption states)`` of the
    stimulus set (``stimulus_captions`` are its detailed captions' states), or of ``cfg.fresh_per_class`` fresh
    renders per class, whose caption states are computed once and cached in the run folder."""
    if not cfg.fresh_per_class:
        classes = torch.tensor([r.class_index for r in load_stimulus_metadata(paths.stimuli)])
        return *encode_latents(vae, stimulus_images(paths.stimuli)), classes, stimulus_captions
    first = load_stimulus_metadata(paths.stimuli)[0]
    with Image.open(Path(paths.stimuli) / first.file) as img:  # the renders' side: the stimulus set's
        size = img.size[0]
    images, classes, captions = render_stimuli(cfg.fresh_per_class, size=size, seed=cfg.fresh_seed)
    name = f"fresh_captions_{cfg.fresh_per_class}_{cfg.fresh_seed}_{size}"
    if cfg.fresh_any_background_per_class:
        more = render_stimuli(cfg.fresh_any_background_per_class, size=size, seed=cfg.fresh_seed + 1, any_background=True)
        images, classes = np.concatenate([images, more[0]]), np.concatenate([classes, more[1]])
        captions = captions + more[2]
        name += f"_any{cfg.fresh_any_background_per_class}"
    cache = Path(paths.out) / f"{name}.safetensors"
    if cache.is_file():
        states = load_file(cache)["detailed"]
    else:
        states = CaptionEncoder()(captions)
        save_file({"detailed": states.contiguous()}, cache)
    logger.info("unet: %d fresh renders (seed %d) instead of the stimulus set", len(images), cfg.fresh_seed)
    return *encode_latents(vae, images_to_tensor(images)), torch.as_tensor(classes), states


def _warm_start(init_from: str, paths: Paths):
    """Load the UNet of ``init_from`` (pipeline or UNet folder); copy its VAE to ``<out>/vae`` if none is there
    (and to ``<out>/decoder`` too when it is a wide-decoder ``AsymmetricAutoencoderKL``, so ``assemble`` finds it
    with either ``wide_decoder`` setting)."""
    src = Path(init_from)
    unet_dir = src / "unet" if (src / "unet" / "config.json").is_file() else src
    if not (unet_dir / "config.json").is_file():
        raise FileNotFoundError(f"init_from: expected a pipeline folder with unet/ or a UNet folder, got {src}")
    vae_out = paths.stage_dir("vae")
    if not (vae_out / "config.json").is_file():
        if not (src / "vae" / "config.json").is_file():
            raise FileNotFoundError(f"init_from: no VAE in {vae_out} and none in {src / 'vae'} to copy: the UNet "
                                    "only makes sense with the VAE it was trained with")
        shutil.copytree(src / "vae", vae_out, dirs_exist_ok=True)
        logger.info("unet: copied the VAE of %s to %s", src, vae_out)
        if "Asymmetric" in json.loads((vae_out / "config.json").read_text())["_class_name"]:
            shutil.copytree(src / "vae", paths.stage_dir("decoder"), dirs_exist_ok=True)
    logger.info("unet: warm start from %s", unet_dir)
    return UNet2DConditionModel.from_pretrained(unet_dir)


@torch.no_grad()
def sample_text_to_image(unet, vae, scheduler, cond: torch.Tensor, empty: torch.Tensor, steps: int = 25,
                         guidance_scale: float = 4.0, generator: torch.Generator | None = None) -> torch.Tensor:
    """DDIM text-to-image from pure noise; returns images in [-1, 1], shape (n, 3, 64, 64). For monitoring."""
    sched = copy.deepcopy(scheduler)
    sched.set_timesteps(steps)
    n = len(cond)
    size = unet.config.sample_size
    z = torch.randn((n, unet.config.in_channels, size, size), generator=generator)
    both = torch.cat([empty.expand_as(cond), cond])
    for t in sched.timesteps:
        eps_u, eps_c = unet(torch.cat([z, z]), t, both).sample.chunk(2)
        z = sched.step(eps_u + guidance_scale * (eps_c - eps_u), t, z).prev_sample
    return vae.decode(z / vae.config.scaling_factor).sample.clamp(-1, 1)


def save_sample_grid(unet, vae, scheduler, label_states, empty, path, seed: int) -> None:
    """A PNG of text-to-image samples of 8 classes' label captions, in a row (to watch a run's progress)."""
    unet.eval()
    classes = torch.arange(0, 40, 5)  # 8 classes
    imgs = sample_text_to_image(unet, vae, scheduler, label_states[classes], empty,
                                generator=torch.Generator().manual_seed(seed))
    arr = ((imgs + 1) * 127.5).round().clamp(0, 255).byte().permute(0, 2, 3, 1).numpy()
    Image.fromarray(np.concatenate(list(arr), axis=1)).save(path)
