"""Stage ``refine`` (optional): fine-tune the UNet for the pipeline's img2img start, the saliency map.

    python -m neuroimagen.train refine --config configs/tiny.json [--resume]

Needs the ``vae``, ``unet``, ``encoder`` and ``saliency`` stages (or ``init_from``: a pipeline folder such as
checkpoints/neuroimagen-tiny, whose components are used instead and which is then written again with the
refined UNet to ``<out>/refine/pipeline/``).

Why: the pipeline does not start its diffusion from a noised stimulus, as the ``unet`` stage trained for, but
from a noised saliency map: at strength s, DDIM starts at t_s ~ s * 1000 from x = a_s z_map + s_s eps, with
``z_map`` the VAE latent of the map (a, s: the square roots of alpha-bar and 1 - alpha-bar). The UNet reads the
map's blobs as the image it is denoising and keeps them. This stage teaches it the step from a map to the trial's
stimulus. Along a deterministic DDIM path from that start, every state has the form

    x_t = a_t z_img + s_t (eps + r (z_map - z_img)),    r = a_{t_s} / s_{t_s},

(at t = t_s it is the start above; each DDIM step keeps the bracket, the "noise" that the model predicts). So for
``map_prob`` of each batch we draw a training trial, its map latent and its stimulus latent, a start t_s for a
strength in [``min_strength``, 1) and a t in [0, t_s], and train the UNet to predict that bracket from x_t. The
rest of the batch is the ``unet`` stage's own objective on the stimulus set, so text-to-image stays as it was.
Maps come from the trials of ``map_split`` (the saliency GAN was trained on ``train``; the test split is never
used). Writes ``<out>/refine/`` (the EMA UNet, ``resume.pt``, ``metrics.json``); ``assemble`` ships it with
``refined_unet: true``.
"""

from __future__ import annotations

import shutil
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from diffusers import DDIMScheduler, UNet2DConditionModel
from safetensors import safe_open

from ..data.stimuli import load_stimulus_metadata
from ..models import EEGEncoder, SaliencyGenerator
from ..models.diffusion import load_autoencoder
from .common import caption_states, logger, make_accelerator, progress, training_stage
from .config import Paths
from .denoising import (
    caption_condition,
    noised,
    sample_latents,
    save_point,
    trained_scheduler,
    training_state,
    unet_step,
)
from .eeg_data import embed_all, load_split
from .images import encode_latents, generate_maps, stimulus_images


@dataclass
class Config:
    map_prob: float = 0.5  # share of each batch that starts from a saliency map; the rest is the unet objective
    min_strength: float = 0.5  # start timesteps are drawn for strengths in [min_strength, 1)
    batch_size: int = 32
    lr: float = 1e-4  # AdamW, linear warm-up, constant, then a cosine to zero over the last decay_steps
    warmup_steps: int = 100
    max_steps: int = 3000
    decay_steps: int = 1000
    ema_decay: float = 0.999
    caption_dropout: float = 0.1  # as the unet stage: keeps classifier-free guidance working
    label_caption_prob: float = 0.5
    map_split: str = "train"  # the trials whose saliency maps are the starts ("train" or "val"; never "test")
    save_every: int = 250
    seed: int = 0
    num_threads: int = 0  # torch CPU threads (0: leave torch's default)
    init_from: str = ""  # a pipeline folder whose EEG encoder, saliency generator, VAE and UNet are used


def component_dirs(cfg: Config, paths: Paths) -> dict[str, Path]:
    """Where the stage reads its four components: the run's stage folders, or the ``init_from`` pipeline folder."""
    if cfg.init_from:
        src = Path(cfg.init_from)
        dirs = {"encoder": src / "eeg_encoder", "generator": src / "saliency_generator", "vae": src / "vae",
                "unet": src / "unet", "scheduler": src / "scheduler"}
    else:
        dirs = {"encoder": paths.stage_dir("encoder"), "generator": paths.stage_dir("saliency") / "generator",
                "vae": paths.stage_dir("vae"), "unet": paths.stage_dir("unet")}
    missing = [f"{k} ({d})" for k, d in dirs.items() if not (d / ("scheduler_config.json" if k == "scheduler"
                                                                     else "config.json")).is_file()]
    if missing:
        raise FileNotFoundError(f"refine: expected trained components, missing {', '.join(missing)}: run the vae, unet, "
                                "encoder and saliency stages first, or set init_from to a pipeline folder "
                                "(e.g. checkpoints/neuroimagen-tiny).")
    return dirs


def bridge_batch(z_map: torch.Tensor, z_img: torch.Tensor, alphas_cumprod: torch.Tensor, min_strength: float,
                 gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Noisy latents, timesteps and targets for starts from maps (see the module's docstring).

    Returns ``(x_t, t, target, t_start)`` with ``x_t = a_t z_img + s_t target``, ``target = eps + r (z_map - z_img)``
    and ``t <= t_start``: at ``t = t_start``, ``x_t`` is the noised map ``a z_map + s eps`` img2img starts from.
    """
    n, steps = len(z_map), len(alphas_cumprod)
    t_start = torch.randint(int(min_strength * steps), steps, (n,), generator=gen)
    t = (torch.rand(n, generator=gen) * (t_start + 1)).long().clamp(max=steps - 1)
    ab_s = alphas_cumprod[t_start]
    r = (ab_s / (1 - ab_s)).sqrt()[:, None, None, None]
    target = torch.randn(z_map.shape, generator=gen) + r * (z_map - z_img)
    return noised(alphas_cumprod, t, z_img, target), t, target, t_start


@torch.no_grad()
def trial_maps(encoder, generator, eeg, seed: int, batch: int = 256) -> torch.Tensor:
    """The saliency maps (n, 3, H, W) in [-1, 1] of trials ``eeg``, one noise draw each, as the pipeline makes them."""
    return generate_maps(generator, embed_all(encoder, eeg, batch), seed, batch).clamp(-1, 1)


def map_latents(vae, dirs: dict[str, Path], paths: Paths, cfg: Config) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The VAE posteriors (mean, std) of the saliency maps of the ``map_split`` trials, and each trial's stimulus."""
    split = load_split(paths, cfg.map_split)
    encoder = EEGEncoder.from_pretrained(dirs["encoder"]).eval()
    maps = trial_maps(encoder, SaliencyGenerator.from_pretrained(dirs["generator"]).eval(), split["eeg"], cfg.seed)
    return (*encode_latents(vae, maps), torch.from_numpy(split["stim_index"]))


def check_config(cfg: Config) -> None:
    if cfg.map_split == "test":
        raise ValueError("refine: map_split must be 'train' or 'val', not 'test': the test split is for evaluation.")
    if not 0.0 <= cfg.map_prob <= 1.0 or not 0.0 < cfg.min_strength < 1.0:
        raise ValueError(f"refine: expected 0 <= map_prob <= 1 and 0 < min_strength < 1, got map_prob={cfg.map_prob}, "
                         f"min_strength={cfg.min_strength}.")


@training_stage
def train(cfg: Config, paths: Paths, resume: bool = False) -> dict:
    check_config(cfg)
    acc = make_accelerator(cfg.seed, stage="refine")
    out = paths.stage_dir("refine")
    dirs = component_dirs(cfg, paths)
    vae = load_autoencoder(dirs["vae"]).eval().requires_grad_(False)
    sf = vae.config.scaling_factor
    sched = DDIMScheduler.from_pretrained(dirs["scheduler"]) if "scheduler" in dirs else trained_scheduler(dirs["unet"])
    if sched.config.prediction_type != "epsilon":
        raise ValueError(f"refine trains a UNet that predicts the noise (prediction_type 'epsilon'), but the UNet of "
                         f"{dirs['unet']} predicts {sched.config.prediction_type!r}.")
    alphas = sched.alphas_cumprod

    img_mean, img_std = encode_latents(vae, stimulus_images(paths.stimuli))
    map_mean, map_std, trial_img = map_latents(vae, dirs, paths, cfg)
    caps = caption_states(paths.stimuli, paths.out, captions=paths.captions)
    label_states, detailed_states, empty = caps["label"], caps["detailed"], caps["empty"][0]
    classes = torch.tensor([r.class_index for r in load_stimulus_metadata(paths.stimuli)])

    unet = UNet2DConditionModel.from_pretrained(dirs["unet"]).float()
    ema, opt, lr_sched, step, history, before = training_state(unet, cfg, out / "resume.pt", resume)
    unet, opt = acc.prepare(unet, opt)
    gen = torch.Generator().manual_seed(cfg.seed * 100003 + step)
    n_map = int(round(cfg.batch_size * cfg.map_prob))

    t0, c0 = time.perf_counter(), time.process_time()
    bar = progress(total=cfg.max_steps, initial=step, desc="refine")
    running: list[tuple[float, float]] = []
    while step < cfg.max_steps:
        unet.train()
        # Starts from maps: trial j's map latent towards its stimulus' latent.
        j = torch.randint(len(map_mean), (n_map,), generator=gen)
        x_map, t_map, y_map, _ = bridge_batch(sample_latents(map_mean, map_std, j, sf, gen),
                                              sample_latents(img_mean, img_std, trial_img[j], sf, gen), alphas,
                                              cfg.min_strength, gen)
        # The unet stage's objective on stimuli.
        i = torch.randint(len(img_mean), (cfg.batch_size - n_map,), generator=gen)
        z = sample_latents(img_mean, img_std, i, sf, gen)
        noise = torch.randn(z.shape, generator=gen)
        t_img = torch.randint(0, len(alphas), (len(i),), generator=gen)
        x_img = noised(alphas, t_img, z, noise)
        img_idx = torch.cat([trial_img[j], i])
        cond = caption_condition(classes[img_idx], detailed_states[img_idx], label_states, empty, cfg, gen)
        pred = unet(torch.cat([x_map, x_img]).to(acc.device), torch.cat([t_map, t_img]).to(acc.device),
                    cond.to(acc.device)).sample
        err = (pred - torch.cat([y_map, noise]).to(acc.device)).pow(2).mean((1, 2, 3))
        loss = err.mean()
        step = unet_step(acc, unet, loss, opt, lr_sched, ema, step, cfg.ema_decay)
        running.append((err[:n_map].mean().item() if n_map else float("nan"),
                        err[n_map:].mean().item() if n_map < cfg.batch_size else float("nan")))
        bar.update(1)
        if step % cfg.save_every == 0 or step == cfg.max_steps:
            m_loss, i_loss = np.mean(running[-cfg.save_every:], axis=0)
            history.append({"step": step, "map_loss": round(float(m_loss), 5), "stimulus_loss": round(float(i_loss), 5),
                            "lr": float(f"{opt.param_groups[0]['lr']:.3g}"), "wall_s": round(time.perf_counter() - t0, 1)})
            logger.info("refine %s", history[-1])
            save_point(out, ema, acc.unwrap_model(unet), opt, lr_sched, step, history, before, (c0, t0),
                       {"stage": "refine", "config": asdict(cfg), "n_map_trials": len(map_mean)})
    bar.close()
    if cfg.init_from:
        write_pipeline(Path(cfg.init_from), out, out / "pipeline")
    return {"steps": step, "final": history[-1] if history else None}


def write_pipeline(src: Path, unet_dir: Path, dest: Path) -> None:
    """Copy the pipeline folder ``src`` to ``dest`` with the UNet of ``unet_dir`` (stored in ``src``'s UNet dtype)."""
    if dest.exists():
        shutil.rmtree(dest)
    shutil.copytree(src, dest, ignore=shutil.ignore_patterns("README.md"))
    with safe_open(str(src / "unet" / "diffusion_pytorch_model.safetensors"), "pt") as f:
        dtype = f.get_slice(next(iter(f.keys()))).get_dtype()
    unet = UNet2DConditionModel.from_pretrained(unet_dir)
    shutil.rmtree(dest / "unet")
    unet.to(torch.float16 if dtype == "F16" else torch.float32).save_pretrained(dest / "unet")
    logger.info("refine: wrote %s (%s with the refined UNet)", dest, src)
