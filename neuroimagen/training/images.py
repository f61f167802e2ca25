"""Image and latent utilities the stages share: the stimulus set as tensors, thumbnails, VAE latents, saliency maps."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from ..data.stimuli import load_stimulus_images


def images_to_tensor(images: np.ndarray) -> torch.Tensor:
    """uint8 (n, H, W, 3) -> float (n, 3, H, W) in [-1, 1]."""
    return torch.from_numpy(images).permute(0, 3, 1, 2).float().div(127.5).sub(1.0)


def stimulus_images(stimuli_dir, data=None, size: int | None = None) -> torch.Tensor:
    """The stimulus set as float (n_images, 3, H, W) in [-1, 1], in record order. ``data`` (the data file) lets a
    folder of real images without ``metadata.json`` be read, centre-cropped and resized to ``size``
    (:func:`~neuroimagen.data.stimuli.load_stimulus_images`); a rendered set comes at its own size."""
    return images_to_tensor(load_stimulus_images(stimuli_dir, data=data, size=size))


def stimulus_thumbnails(stimuli_dir, side: int = 8, data=None) -> torch.Tensor:
    """Colour thumbnails of the stimuli (average-pooled to ``side`` x ``side``), flattened: (n_images, 3 * side**2).

    They carry what the saliency map must show (where the object is, the background colour) and nothing finer.
    Real images (read with ``data``) are loaded at 8 x ``side`` first: the thumbnail needs no more.
    """
    return F.adaptive_avg_pool2d(stimulus_images(stimuli_dir, data, size=8 * side), side).flatten(1)


@torch.no_grad()
def encode_latents(vae, images: torch.Tensor, batch: int = 256) -> tuple[torch.Tensor, torch.Tensor]:
    """The mean and standard deviation of the VAE's posterior for ``images`` (n, 3, H, W), in batches."""
    means, stds = [], []
    for i in range(0, len(images), batch):
        d = vae.encode(images[i:i + batch]).latent_dist
        means.append(d.mean)
        stds.append(d.std)
    return torch.cat(means), torch.cat(stds)


@torch.no_grad()
def generate_maps(gen, feats: torch.Tensor, seed: int = 0, batch: int = 256) -> torch.Tensor:
    """Saliency maps (n, 3, H, W) of EEG features ``feats`` (n, feature_dim), noise drawn from ``seed``."""
    gen.eval()
    g = torch.Generator().manual_seed(seed)
    z = torch.randn(len(feats), gen.config.noise_dim, generator=g)
    return torch.cat([gen(feats[i:i + batch], z[i:i + batch]) for i in range(0, len(feats), batch)])
