"""What the ``unet`` and ``refine`` stages share: the forward diffusion, the caption a batch is conditioned on, the
optimizer / learning-rate / EMA state of a UNet run, its optimizer step and its save points."""

from __future__ import annotations

import copy
import json
import math
import time
from pathlib import Path

import torch

from ..models.diffusion import build_scheduler
from .common import optimizer_and_resume, save_resume, write_metrics


def trained_scheduler(unet_dir: str | Path):
    """The DDIM scheduler of the ``unet`` run in ``unet_dir``: the one its ``metrics.json`` config names (the
    defaults when there is none)."""
    f = Path(unet_dir) / "metrics.json"
    config = json.loads(f.read_text()).get("config", {}) if f.is_file() else {}
    return build_scheduler(**{k: config[k] for k in ("num_train_timesteps", "beta_schedule", "prediction_type")
                               if k in config})


def sample_latents(mean: torch.Tensor, std: torch.Tensor, idx: torch.Tensor, scale: float,
                   gen: torch.Generator) -> torch.Tensor:
    """A draw from the VAE posteriors ``mean + std * eps`` of rows ``idx``, times the VAE's ``scale``."""
    return (mean[idx] + std[idx] * torch.randn(mean[idx].shape, generator=gen)) * scale


def noised(alphas_cumprod: torch.Tensor, t: torch.Tensor, z: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
    """The forward diffusion: ``sqrt(alpha_bar_t) z + sqrt(1 - alpha_bar_t) noise`` for a batch of timesteps ``t``."""
    a = alphas_cumprod[t].sqrt()[:, None, None, None]
    s = (1 - alphas_cumprod[t]).sqrt()[:, None, None, None]
    return a * z + s * noise


def diffusion_loss(pred: torch.Tensor, z: torch.Tensor, noise: torch.Tensor, t: torch.Tensor,
                   alphas_cumprod: torch.Tensor, prediction_type: str = "epsilon", snr_gamma: float = 0.0) -> torch.Tensor:
    """The denoising loss of a batch: mean squared error to the noise (``"epsilon"``) or to
    ``v = sqrt(alpha_bar) noise - sqrt(1 - alpha_bar) z`` (``"v_prediction"``), each sample weighted by min-SNR-gamma
    (Hang et al. 2023: ``min(SNR, gamma) / SNR`` for the noise, ``/ (SNR + 1)`` for v) when ``snr_gamma`` > 0.

    ``pred`` is the UNet's output for the noised ``z`` at timesteps ``t`` (same shape as ``z`` and ``noise``)."""
    ab = alphas_cumprod.to(pred.device)[t][:, None, None, None]
    noise, z = noise.to(pred.device), z.to(pred.device)
    if prediction_type == "epsilon":
        target = noise
    elif prediction_type == "v_prediction":
        target = ab.sqrt() * noise - (1 - ab).sqrt() * z
    else:
        raise ValueError(f"prediction_type must be 'epsilon' or 'v_prediction', got {prediction_type!r}.")
    err = (pred.float() - target).pow(2).mean((1, 2, 3))
    if snr_gamma <= 0:
        return err.mean()
    snr = (ab / (1 - ab)).flatten()
    weight = snr.clamp(max=snr_gamma) / (snr + 1 if prediction_type == "v_prediction" else snr)
    return (weight * err).mean()


def caption_condition(classes: torch.Tensor, detailed: torch.Tensor, label_states: torch.Tensor,
                      empty: torch.Tensor, cfg, gen: torch.Generator) -> torch.Tensor:
    """The caption states a training batch is conditioned on: the label caption of ``classes`` with probability
    ``cfg.label_caption_prob`` (else the ``detailed`` states), replaced by the ``empty`` caption with probability
    ``cfg.caption_dropout`` (classifier-free guidance)."""
    use_label = torch.rand(len(classes), generator=gen) < cfg.label_caption_prob
    cond = torch.where(use_label[:, None, None], label_states[classes], detailed)
    drop = torch.rand(len(classes), generator=gen) < cfg.caption_dropout
    return torch.where(drop[:, None, None], empty.expand_as(cond), cond)


def lr_factor(step: int, cfg) -> float:
    """The learning rate's multiplier at ``step``: linear warm-up (``cfg.warmup_steps``), constant, then
    (``cfg.decay_steps``) a cosine to zero at ``cfg.max_steps``. Computed from the config, so a resumed run may
    change ``max_steps``."""
    factor = 1.0 if cfg.warmup_steps <= 0 else min(1.0, (step + 1) / cfg.warmup_steps)
    start = cfg.max_steps - cfg.decay_steps
    if cfg.decay_steps > 0 and step >= start:
        factor *= 0.5 * (1 + math.cos(math.pi * min(1.0, (step - start) / cfg.decay_steps)))
    return factor


def training_state(unet, cfg, resume_file, resume: bool):
    """The EMA copy, AdamW optimizer and learning-rate schedule of a UNet run, with its step, history and the CPU
    and wall seconds of earlier runs: fresh, or restored from ``resume_file`` when ``resume`` (``unet`` too)."""
    ema = copy.deepcopy(unet).requires_grad_(False)
    opt, lr_sched, step, history, state = optimizer_and_resume(
        unet, unet.parameters(), cfg.lr, lambda s: lr_factor(s, cfg), resume_file if resume else None,
        weight_decay=1e-2)
    if state is None:
        return ema, opt, lr_sched, 0, [], (0.0, 0.0)
    ema.load_state_dict(state["ema"])
    before = (float(state.get("cpu_time_s", 0.0)), float(state.get("wall_time_s", 0.0)))
    return ema, opt, lr_sched, step, history, before


def unet_step(acc, unet, loss, opt, lr_sched, ema, step: int, ema_decay: float) -> int:
    """Backward, clip the gradients, step the optimizer and the learning rate, update the EMA; the new step count."""
    acc.backward(loss)
    acc.clip_grad_norm_(unet.parameters(), 1.0)
    opt.step()
    lr_sched.step()
    opt.zero_grad(set_to_none=True)
    ema_update(ema, acc.unwrap_model(unet), step + 1, ema_decay)
    return step + 1


@torch.no_grad()
def ema_update(ema, model, step: int, decay: float) -> None:
    """Move the EMA copy's weights towards ``model``'s (decay warms up over the first steps of a run)."""
    decay = min(decay, (1 + step) / (10 + step))
    for pe, pm in zip(ema.parameters(), model.parameters()):
        pe.lerp_(pm.detach().cpu(), 1 - decay)


def save_point(out, ema, model, opt, lr_sched, step: int, history: list, before: tuple[float, float],
               started: tuple[float, float], metrics: dict) -> None:
    """Save the EMA weights, ``resume.pt`` and ``metrics.json`` (with ``metrics``) of a UNet run at ``step``. Times
    are summed over every (resumed) run, ``before`` being the earlier runs' and ``started`` this run's
    ``(process_time, perf_counter)`` at its start, so the model card reports the stage's full cost."""
    times = {"cpu_time_s": round(before[0] + time.process_time() - started[0], 1),
             "wall_time_s": round(before[1] + time.perf_counter() - started[1], 1)}
    ema.save_pretrained(out)
    save_resume(out / "resume.pt", model=model.state_dict(), ema=ema.state_dict(), optimizer=opt.state_dict(),
                scheduler=lr_sched.state_dict(), step=step, history=history, **times)
    write_metrics(out, {**metrics, "steps": step, "history": history, **times, "times_cumulative": True})
