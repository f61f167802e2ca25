"""What the ``vae`` and ``decoder`` stages share: the pixel loss, the held-out images, the frozen encoder's
posteriors and the decoder on them, the reconstruction error, the optimizer step and the resume point."""

from __future__ import annotations

import json
from pathlib import Path

import torch
import torch.nn.functional as F

from ..data.stimuli import render_stimuli
from .common import logger, save_resume
from .images import encode_latents, images_to_tensor

VAL_IMAGES = 128  # stimuli the vae stage holds out (the last ones of a permutation seeded by its seed)


def pixel_loss(rec: torch.Tensor, x: torch.Tensor, color_weight: float) -> torch.Tensor:
    """L1 + MSE on pixels plus ``color_weight`` x L1 between 8 x 8 average-pooled colours."""
    color = F.l1_loss(F.avg_pool2d(rec, 8), F.avg_pool2d(x, 8))
    return F.l1_loss(rec, x) + F.mse_loss(rec, x) + color_weight * color


def split_images(images: torch.Tensor, seed: int = 0, val_images: int = VAL_IMAGES) -> tuple[torch.Tensor, torch.Tensor]:
    """The vae stage's training and validation images: a permutation seeded by ``seed``, ``val_images`` held out
    (the decoder stage reuses it, so its validation images stay unseen too)."""
    perm = torch.randperm(len(images), generator=torch.Generator().manual_seed(seed))
    return images[perm[val_images:]], images[perm[:val_images]]


class FrozenEncoder:
    """The training images (and their mirror images) with their posteriors under ``vae``'s encoder, which this
    freezes: computed once, what a decoder trained alone learns from (the latents a UNet knows stay as they are)."""

    @torch.no_grad()
    def __init__(self, vae, train_x: torch.Tensor):
        for module in (vae.encoder, vae.quant_conv):
            if module is not None:
                module.requires_grad_(False)
        vae.eval()
        self.x = torch.cat([train_x, train_x.flip(-1)])
        self.mean, self.std = encode_latents(vae, self.x)
        vae.train()

    def __len__(self) -> int:
        return len(self.x)

    def decode(self, vae, idx: torch.Tensor, generator: torch.Generator, device="cpu") -> tuple[torch.Tensor, torch.Tensor]:
        """``(reconstruction, image)`` of images ``idx``: ``vae``'s decoder on a sample of their posteriors."""
        mean, std = self.mean[idx].to(device), self.std[idx].to(device)
        rec = vae.decode(mean + std * torch.randn(mean.shape, generator=generator).to(mean.device)).sample
        return rec, self.x[idx].to(device)


def with_any_background(train_x: torch.Tensor, per_class: int, seed: int, stage: str
                        ) -> tuple[torch.Tensor, torch.Tensor | None]:
    """``train_x`` with ``per_class`` renders per class on random RGB backgrounds added (the stimulus renderer with
    ``seed``; none of them in the stimulus set), and 4 per class of the next seed held out: colours no stimulus has,
    as the start images' flat backgrounds (the saliency map's mean colour). ``(train_x, None)`` for 0."""
    if not per_class:
        return train_x, None
    size = train_x.shape[-1]
    extra = images_to_tensor(render_stimuli(per_class, size, seed, any_background=True)[0])
    logger.info("%s: %d renders on random backgrounds added to the training images", stage, len(extra))
    return torch.cat([train_x, extra]), images_to_tensor(render_stimuli(4, size, seed + 1, any_background=True)[0])


def any_background_error(vae, x: torch.Tensor | None) -> dict:
    """:func:`evaluate_vae` on the held-out renders on random backgrounds, its keys prefixed (empty without them)."""
    return {} if x is None else {f"any_background_{k}": v for k, v in evaluate_vae(vae, x).items()}


def vae_split(images: torch.Tensor, vae_dir: str | Path) -> tuple[torch.Tensor, torch.Tensor]:
    """The training and validation images of the ``vae`` run in ``vae_dir`` (its metrics.json's seed and
    ``val_images``; the stage's defaults when there is none, as for a VAE copied by a warm start)."""
    f = Path(vae_dir) / "metrics.json"
    c = json.loads(f.read_text())["config"] if f.is_file() else {}
    return split_images(images, c.get("seed", 0), c.get("val_images", VAL_IMAGES))


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


def save_point(out: Path, model, opt, sched, step: int, history: list, **extra) -> None:
    """Write ``out/resume.pt`` of a vae or decoder run at ``step``: what ``optimizer_and_resume`` reads back, and
    ``extra`` state dicts."""
    save_resume(out / "resume.pt", model=model.state_dict(), optimizer=opt.state_dict(), scheduler=sched.state_dict(),
                step=step, history=history, **extra)
