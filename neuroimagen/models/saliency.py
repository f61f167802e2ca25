"""Saliency map generator G(z, f) and its discriminator (Lan et al. 2023, pixel-level semantics).

G turns the EEG features f (from :class:`~neuroimagen.models.EEGEncoder`) and noise z into a coarse
3 x 64 x 64 image that carries the seen image's layout and colour. It is trained as a conditional GAN:
hinge loss with DiffAugment (Zhao et al. 2020) for the discriminator, and for G an adversarial term, the
mode-seeking regulariser (Mao et al. 2019, MSGAN) and (1 - SSIM) to the stimulus. The discriminator is a
projection discriminator (Miyato & Koyama 2018) conditioned on f.
"""

from __future__ import annotations

import math

import torch
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.modeling_utils import ModelMixin
from torch import nn
from torch.nn.utils.parametrizations import spectral_norm


def _n_doublings(image_size: int) -> int:
    """How many times 4 x 4 doubles to ``image_size`` (a power of two >= 8, else ``ValueError``)."""
    if image_size < 8 or image_size & (image_size - 1):
        raise ValueError(f"image_size must be a power of two >= 8, got {image_size!r}.")
    return int(math.log2(image_size // 4))


def _up(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(nn.Upsample(scale_factor=2, mode="nearest"), nn.Conv2d(cin, cout, 3, padding=1),
                         nn.BatchNorm2d(cout), nn.ReLU(inplace=True))


class SaliencyGenerator(ModelMixin, ConfigMixin):
    """G(features, noise) -> saliency map (batch, 3, image_size, image_size) in [-1, 1].

    Parameters
    ----------
    feature_dim : int
        Size of the EEG features f.
    noise_dim : int
        Size of z ~ N(0, I).
    image_size : int
        Output side (a power of two >= 8).
    base_channels : int
        Channels at the 4 x 4 start; halved at each upsampling (not below 16).
    """

    @register_to_config
    def __init__(self, feature_dim: int = 128, noise_dim: int = 32, image_size: int = 64, base_channels: int = 128):
        super().__init__()
        n_up = _n_doublings(image_size)
        chans = [max(16, base_channels // 2**k) for k in range(n_up + 1)]
        self.stem = nn.Sequential(nn.Linear(feature_dim + noise_dim, chans[0] * 16), nn.ReLU(inplace=True))
        self.blocks = nn.Sequential(*[_up(chans[k], chans[k + 1]) for k in range(n_up)])
        self.final_layer = nn.Conv2d(chans[-1], 3, 3, padding=1)

    def forward(self, features: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        """Saliency maps (batch, 3, image_size, image_size) in [-1, 1] from features and noise z ~ N(0, I)."""
        h = self.stem(torch.cat([features, noise], dim=1)).view(len(features), -1, 4, 4)
        return torch.tanh(self.final_layer(self.blocks(h)))


class SaliencyDiscriminator(ModelMixin, ConfigMixin):
    """Projection discriminator D(image, features) -> realness score (batch,) (Miyato & Koyama 2018).

    Strided 4 x 4 convolutions with spectral norm down to 4 x 4; the score is ``final_layer(h)`` plus the
    inner product of ``h`` with a projection of the EEG features, so D judges whether the image fits the
    trial, not only whether it looks like a stimulus. Used only to train the generator.

    Parameters
    ----------
    feature_dim : int
        Size of the EEG features f.
    image_size : int
        Input side (a power of two >= 8).
    base_channels : int
        Width of the first convolution, doubled at each downsampling.
    """

    @register_to_config
    def __init__(self, feature_dim: int = 128, image_size: int = 64, base_channels: int = 32):
        super().__init__()
        layers, c = [], 3
        n_down = _n_doublings(image_size)
        for k in range(n_down):
            cout = base_channels * 2**k
            layers += [spectral_norm(nn.Conv2d(c, cout, 4, stride=2, padding=1)), nn.LeakyReLU(0.2, True)]
            c = cout
        self.body = nn.Sequential(*layers, nn.Flatten())
        self.final_layer = spectral_norm(nn.Linear(c * 16, 1))
        self.embed = spectral_norm(nn.Linear(feature_dim, c * 16, bias=False))

    def forward(self, images: torch.Tensor, features: torch.Tensor) -> torch.Tensor:
        """Scores (batch,) of images (batch, 3, H, W) in [-1, 1] given features (batch, feature_dim)."""
        h = self.body(images)
        return self.final_layer(h).squeeze(1) + (self.embed(features) * h).sum(dim=1)
